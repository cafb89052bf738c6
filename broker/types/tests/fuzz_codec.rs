//! Property tests of the record batch codec, run on stable Rust in every `cargo test`: what
//! comes from the network or the disk (arbitrary bytes, and valid batches with bytes flipped,
//! cut, or spliced) never makes it panic, and whatever it accepts decodes; whatever it encodes
//! verifies and decodes back to the same records.

use bytes::Bytes;
use proptest::prelude::*;
use weir_types::{BatchEncoder, BatchLimits, EncodedBatch, Header, Offset, Record};

fn record() -> impl Strategy<Value = Record> {
    (
        proptest::option::of(proptest::collection::vec(any::<u8>(), 0..16)),
        // `None`: a tombstone (a null value).
        proptest::option::of(proptest::collection::vec(any::<u8>(), 0..64)),
        proptest::collection::vec(
            ("[a-z]{0,8}", proptest::collection::vec(any::<u8>(), 0..8)),
            0..3,
        ),
        0..i64::MAX / 2,
    )
        .prop_map(|(key, value, headers, timestamp_ms)| Record {
            key: key.map(Bytes::from),
            tombstone: value.is_none(),
            value: value.map(Bytes::from).unwrap_or_default(),
            headers: headers
                .into_iter()
                .map(|(key, value)| Header {
                    key,
                    value: Bytes::from(value),
                })
                .collect(),
            timestamp_ms,
        })
}

fn records() -> impl Strategy<Value = Vec<Record>> {
    proptest::collection::vec(record(), 1..8)
}

/// What a reader does with bytes: verify, and if they pass, decode every record.
fn read(bytes: Bytes) {
    if let Ok(batch) = EncodedBatch::verify(bytes.clone()) {
        for record in batch.records() {
            let _ = record;
        }
    }
    let _ = EncodedBatch::verify_and_decode(bytes.clone());
    let _ = EncodedBatch::validate_produced(bytes, BatchLimits::default());
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        read(Bytes::from(bytes));
    }

    #[test]
    fn encoded_records_verify_and_decode_back(records in records()) {
        let batch = EncodedBatch::encode(&records, BatchLimits::default()).unwrap();
        let (verified, decoded) = EncodedBatch::verify_and_decode(batch.bytes().clone()).unwrap();
        prop_assert_eq!(verified.header().record_count as usize, records.len());
        let values: Vec<Record> = decoded.into_iter().map(|(_, r)| r).collect();
        prop_assert_eq!(values, records);
    }

    #[test]
    fn records_at_offsets_with_gaps_keep_their_offsets(
        records in records(),
        gaps in proptest::collection::vec(1u64..1000, 8),
        base in 0u64..1 << 40,
    ) {
        let mut offset = base;
        let at: Vec<(Offset, Record)> = records
            .into_iter()
            .zip(gaps)
            .map(|(r, gap)| {
                offset += gap;
                (Offset(offset), r)
            })
            .collect();
        let batch = BatchEncoder::new(BatchLimits::default()).encode_at_offsets(&at).unwrap();
        let (_, decoded) = EncodedBatch::verify_and_decode(batch.bytes().clone()).unwrap();
        prop_assert_eq!(decoded, at);
    }

    #[test]
    fn damaged_batches_never_panic(
        records in records(),
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
        cut in any::<prop::sample::Index>(),
        splice in proptest::collection::vec(any::<u8>(), 0..16),
    ) {
        let batch = EncodedBatch::encode(&records, BatchLimits::default()).unwrap();
        let original = batch.bytes().to_vec();
        let mut flipped = original.clone();
        for (at, byte) in &flips {
            let i = at.index(flipped.len());
            flipped[i] ^= byte | 1;
        }
        read(Bytes::from(flipped));
        let at = cut.index(original.len());
        read(Bytes::copy_from_slice(&original[..at]));
        let mut spliced = original[..at].to_vec();
        spliced.extend_from_slice(&splice);
        spliced.extend_from_slice(&original[at..]);
        read(Bytes::from(spliced));
    }
}
