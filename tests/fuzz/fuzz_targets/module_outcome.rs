//! What a module hands back: the outcome of a batch (keep, replace, reject, per input record),
//! read by the broker, and the batch a module reads. Arbitrary bytes from a hostile module
//! never panic the reader; every index it yields is one of the batch's.

#![no_main]

use libfuzzer_sys::fuzz_target;
use weir_abi::{BatchReader, OutcomeReader};

fuzz_target!(|data: &[u8]| {
    let Some((&inputs, outcome)) = data.split_first() else {
        return;
    };
    let inputs = u32::from(inputs);
    if let Ok(reader) = OutcomeReader::new(outcome, inputs) {
        for entry in reader.take(1 << 16) {
            if let Ok(entry) = entry {
                assert!(
                    entry.index() < inputs,
                    "index {} of {inputs}",
                    entry.index()
                );
            }
        }
    }
    if let Ok(reader) = BatchReader::new(data) {
        for record in reader.take(1 << 16) {
            let _ = record;
        }
    }
});
