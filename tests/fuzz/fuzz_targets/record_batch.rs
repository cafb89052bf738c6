//! Record batches as they come from a producer, a peer or the disk: verifying and decoding
//! never panic, whatever verifies decodes the same way both ways (in one pass or record by
//! record), and encodes back into a batch that decodes to the same records at the same offsets.
//!
//! Each input is read as it is, and once more "sealed": its batch length and CRC-32C made
//! right, so the fuzzer reaches the records instead of stopping at the checksum.

#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use weir_types::{BatchEncoder, BatchLimits, EncodedBatch};

/// Kafka's record batch v2: batch length at 8..12, CRC at 17..21 covering 21.., a 61-byte
/// header.
const HEADER_LEN: usize = 61;

fuzz_target!(|data: &[u8]| {
    read(Bytes::copy_from_slice(data));
    if data.len() >= HEADER_LEN {
        let mut sealed = data.to_vec();
        let len = (sealed.len() - 12) as u32;
        sealed[8..12].copy_from_slice(&len.to_be_bytes());
        let crc = crc32c::crc32c(&sealed[21..]);
        sealed[17..21].copy_from_slice(&crc.to_be_bytes());
        read(Bytes::from(sealed));
    }
});

fn read(bytes: Bytes) {
    let _ = EncodedBatch::validate_produced(bytes.clone(), BatchLimits::default());
    let Ok((batch, records)) = EncodedBatch::verify_and_decode(bytes) else {
        return;
    };
    assert_eq!(records.len(), batch.header().record_count as usize);
    let one_by_one: Vec<_> = batch
        .records()
        .collect::<Result<_, _>>()
        .expect("a batch that verified decodes record by record");
    assert_eq!(one_by_one, records);
    let limits = BatchLimits {
        max_batch_bytes: usize::MAX,
        ..BatchLimits::default()
    };
    if let Ok(again) = BatchEncoder::new(limits).encode_at_offsets(&records) {
        let (_, back) = EncodedBatch::verify_and_decode(again.bytes().clone())
            .expect("what the encoder writes verifies");
        assert_eq!(back, records);
    }
}
