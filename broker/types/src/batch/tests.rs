//! Tests of the batch codec: round trips, the byte layout, and every way a batch can lie.

use super::*;

fn record(key: Option<&str>, value: &str, ts: i64) -> Record {
    Record {
        key: key.map(|k| Bytes::copy_from_slice(k.as_bytes())),
        value: Bytes::copy_from_slice(value.as_bytes()),
        headers: vec![Header {
            key: "h".into(),
            value: Bytes::from_static(b"v"),
        }],
        timestamp_ms: ts,
        tombstone: false,
    }
}

fn tombstone(key: &str, ts: i64) -> Record {
    Record {
        key: Some(Bytes::copy_from_slice(key.as_bytes())),
        timestamp_ms: ts,
        tombstone: true,
        ..Record::default()
    }
}

fn three() -> Vec<Record> {
    vec![
        record(Some("k1"), "one", 1_000),
        record(None, "two", 900),
        record(Some(""), "", 5_000),
    ]
}

/// Recomputes the CRC after a test changed a field it covers, so the check under test is the
/// one that fires.
fn resealed(mut bytes: Vec<u8>) -> Bytes {
    header::seal(&mut bytes);
    Bytes::from(bytes)
}

const PRODUCER: ProducerStamp = ProducerStamp {
    producer_id: 77,
    producer_epoch: 3,
    base_sequence: 10,
};

#[test]
fn encode_verify_round_trip_keeps_every_field() {
    let records = three();
    let batch = BatchEncoder::new(BatchLimits::default())
        .with_producer(Some(PRODUCER))
        .encode(&records)
        .unwrap();
    let stamped = batch.stamped(Offset(42), 7);
    let verified = EncodedBatch::verify(stamped.bytes().clone()).unwrap();
    let header = verified.header();
    assert_eq!(header.record_count, 3);
    assert_eq!(header.last_offset_delta, 2);
    assert_eq!(header.base_offset, Offset(42));
    assert_eq!(header.partition_leader_epoch, 7);
    assert_eq!(header.base_timestamp_ms, 1_000);
    assert_eq!(header.max_timestamp_ms, 5_000);
    assert_eq!(header.producer(), Some(PRODUCER));
    assert_eq!(header.next_offset(), Offset(45));
    assert_eq!(header.crc, batch.header().crc, "stamping keeps the CRC");
    let decoded: Vec<_> = verified.records().map(Result::unwrap).collect();
    assert_eq!(decoded.len(), 3);
    for (i, (offset, rec)) in decoded.iter().enumerate() {
        assert_eq!(*offset, Offset(42 + i as u64));
        assert_eq!(rec, &records[i]);
    }
}

#[test]
fn a_batch_can_be_re_sequenced_without_re_encoding() {
    let batch = BatchEncoder::new(BatchLimits::default())
        .with_producer(Some(PRODUCER))
        .encode(&three())
        .unwrap();
    let moved = ProducerStamp {
        producer_id: 77,
        producer_epoch: 4,
        base_sequence: 0,
    };
    let again = batch.with_producer(moved);
    let verified = EncodedBatch::verify(again.bytes().clone()).unwrap();
    assert_eq!(verified.header().producer(), Some(moved));
    assert_eq!(verified.header(), again.header());
    assert_eq!(
        again.bytes()[BATCH_HEADER_LEN..],
        batch.bytes()[BATCH_HEADER_LEN..],
        "the records are untouched"
    );
}

#[test]
fn verifying_and_decoding_in_one_pass_gives_the_same_records() {
    let batch = EncodedBatch::encode(&three(), BatchLimits::default())
        .unwrap()
        .stamped(Offset(9), 2);
    let (verified, records) = EncodedBatch::verify_and_decode(batch.bytes().clone()).unwrap();
    assert_eq!(verified.header(), batch.header());
    let twice: Vec<_> = verified.records().map(Result::unwrap).collect();
    assert_eq!(records, twice);
    assert_eq!(records[2].0, Offset(11));
    let mut damaged = batch.bytes().to_vec();
    *damaged.last_mut().unwrap() ^= 1;
    assert!(EncodedBatch::verify_and_decode(Bytes::from(damaged)).is_err());
}

/// Decoding into a caller's vector appends what the caller makes of each record after what it
/// held, and a damaged batch leaves the vector as it was, even when records before the damage
/// had been decoded.
#[test]
fn decoding_into_a_vector_appends_and_a_damaged_batch_leaves_it_as_it_was() {
    let batch = EncodedBatch::encode(&three(), BatchLimits::default())
        .unwrap()
        .stamped(Offset(9), 2);
    let mut out = vec![1];
    let verified =
        EncodedBatch::verify_and_decode_into(batch.bytes().clone(), &mut out, |offset, record| {
            (offset.0 >= 10).then_some(offset.0 * 100 + record.value.len() as u64)
        })
        .unwrap();
    assert_eq!(verified.header(), batch.header());
    let values: Vec<u64> = three().iter().map(|r| r.value.len() as u64).collect();
    assert_eq!(out, [1, 1000 + values[1], 1100 + values[2]]);

    // A header claiming a fourth record, with a CRC made to match: the three records decode
    // before the count shows the batch is damaged.
    let mut lying = batch.bytes().to_vec();
    lying[57..61].copy_from_slice(&4i32.to_be_bytes());
    let crc = crc32c::crc32c(&lying[CRC_COVERS_FROM..]);
    lying[17..21].copy_from_slice(&crc.to_be_bytes());
    let mut made = 0;
    let err = EncodedBatch::verify_and_decode_into(Bytes::from(lying), &mut out, |offset, _| {
        made += 1;
        Some(offset.0)
    });
    assert!(err.is_err());
    assert_eq!(made, 3);
    assert_eq!(out, [1, 1000 + values[1], 1100 + values[2]]);
}

/// A header that claims two billion records, with a CRC made to match (anyone can compute
/// one), must be refused without allocating for them: decoding reserved room for the claimed
/// count up front, 200 GB here, and aborted the process (found by `cargo fuzz`, target
/// record_batch).
#[test]
fn a_header_claiming_billions_of_records_is_refused_without_reserving_for_them() {
    let batch = EncodedBatch::encode(&three(), BatchLimits::default()).unwrap();
    let mut lying = batch.bytes().to_vec();
    lying[57..61].copy_from_slice(&i32::MAX.to_be_bytes());
    let crc = crc32c::crc32c(&lying[CRC_COVERS_FROM..]);
    lying[17..21].copy_from_slice(&crc.to_be_bytes());
    let err = EncodedBatch::verify_and_decode(Bytes::from(lying)).unwrap_err();
    assert!(err.to_string().contains("record"), "{err}");
}

#[test]
fn the_header_has_kafkas_layout() {
    let batch = EncodedBatch::encode(&three(), BatchLimits::default()).unwrap();
    let bytes = batch
        .stamped(Offset(0x0102_0304_0506_0708), 0x0a0b_0c0d)
        .into_bytes();
    assert_eq!(
        &bytes[0..8],
        &[1, 2, 3, 4, 5, 6, 7, 8],
        "base offset, big-endian"
    );
    assert_eq!(
        i32::from_be_bytes(bytes[8..12].try_into().unwrap()) as usize,
        bytes.len() - 12,
        "batch length counts the bytes after it"
    );
    assert_eq!(
        &bytes[12..16],
        &[0x0a, 0x0b, 0x0c, 0x0d],
        "partition leader epoch"
    );
    assert_eq!(bytes[16], 2, "magic");
    assert_eq!(
        u32::from_be_bytes(bytes[17..21].try_into().unwrap()),
        crc32c::crc32c(&bytes[21..]),
        "CRC-32C of attributes..end"
    );
    assert_eq!(
        &bytes[21..23],
        &[0, 0],
        "attributes: uncompressed, create time"
    );
    assert_eq!(&bytes[23..27], &[0, 0, 0, 2], "last offset delta");
    assert_eq!(&bytes[43..51], &[0xff; 8], "no producer id");
    assert_eq!(&bytes[51..53], &[0xff; 2], "no producer epoch");
    assert_eq!(&bytes[53..57], &[0xff; 4], "no base sequence");
    assert_eq!(&bytes[57..61], &[0, 0, 0, 3], "record count");
}

#[test]
fn every_flipped_byte_the_crc_or_length_covers_is_refused() {
    let batch = EncodedBatch::encode(&three(), BatchLimits::default()).unwrap();
    let bytes = batch.bytes().to_vec();
    for at in 0..bytes.len() {
        let mut damaged = bytes.clone();
        damaged[at] ^= 0x01;
        let result = EncodedBatch::verify(Bytes::from(damaged));
        let stamped_by_the_log = (0..8).contains(&at) || (12..16).contains(&at);
        if stamped_by_the_log {
            // Not the batch's to check: storage compares these with its offset index.
            assert!(result.is_ok(), "byte {at}");
        } else {
            assert!(result.is_err(), "flipping byte {at} went unnoticed");
        }
    }
}

#[test]
fn headers_that_lie_are_refused_even_with_a_matching_crc() {
    let batch = EncodedBatch::encode(&three(), BatchLimits::default()).unwrap();
    let bytes = batch.bytes().to_vec();
    let with = |at: usize, value: &[u8]| {
        let mut b = bytes.clone();
        b[at..at + value.len()].copy_from_slice(value);
        EncodedBatch::verify(resealed(b)).unwrap_err()
    };
    assert_eq!(
        with(57, &2i32.to_be_bytes()),
        BatchError::CountMismatch {
            header: 2,
            decoded: 3
        }
    );
    assert_eq!(
        with(57, &4i32.to_be_bytes()),
        BatchError::CountMismatch {
            header: 4,
            decoded: 3
        }
    );
    assert_eq!(
        with(23, &1i32.to_be_bytes()),
        BatchError::LastOffsetDeltaMismatch {
            header: 1,
            decoded: 2
        }
    );
    // A stored batch may span offsets past its last record (compaction removed the records
    // there); a producer's may not.
    let mut spans_more = bytes.clone();
    spans_more[23..27].copy_from_slice(&5i32.to_be_bytes());
    let spans_more = resealed(spans_more);
    assert_eq!(
        EncodedBatch::verify(spans_more.clone())
            .unwrap()
            .header()
            .offset_count(),
        6
    );
    assert_eq!(
        EncodedBatch::validate_produced(spans_more, BatchLimits::default()).unwrap_err(),
        BatchError::LastOffsetDeltaMismatch {
            header: 5,
            decoded: 2
        }
    );
    assert_eq!(
        with(35, &4_999i64.to_be_bytes()),
        BatchError::MaxTimestampMismatch {
            header: 4_999,
            decoded: 5_000
        }
    );
    assert_eq!(with(16, &[1]), BatchError::WrongMagic(1));
    assert!(matches!(
        with(8, &0i32.to_be_bytes()),
        BatchError::LengthMismatch { header: 0, .. }
    ));
    // A producer epoch without a producer id.
    assert!(matches!(with(51, &[0, 1]), BatchError::Malformed(_)));
    // Trailing bytes after the last record, with the length and CRC made to match.
    let mut longer = bytes.clone();
    longer.push(0);
    let len = (longer.len() - 12) as i32;
    longer[8..12].copy_from_slice(&len.to_be_bytes());
    assert!(EncodedBatch::verify(resealed(longer)).is_err());
}

#[test]
fn log_append_time_is_the_logs_to_set_and_readers_give_it_to_every_record() {
    let batch = BatchEncoder::new(BatchLimits::default())
        .with_producer(Some(PRODUCER))
        .encode(&three())
        .unwrap();
    let appended = batch.with_log_append_time(7_777).stamped(Offset(10), 2);
    let verified = EncodedBatch::verify(appended.bytes().clone()).unwrap();
    let header = verified.header();
    assert!(header.attributes.is_log_append_time());
    assert_eq!(header.max_timestamp_ms, 7_777);
    assert_eq!(
        header.producer(),
        Some(PRODUCER),
        "the producer fields stay"
    );
    let decoded: Vec<_> = verified.records().map(Result::unwrap).collect();
    let (_, decoded_once) = EncodedBatch::verify_and_decode(appended.bytes().clone()).unwrap();
    assert_eq!(decoded, decoded_once);
    for ((offset, record), (i, original)) in decoded.iter().zip(three().iter().enumerate()) {
        assert_eq!(*offset, Offset(10 + i as u64));
        assert_eq!(record.timestamp_ms, 7_777);
        assert_eq!(record.value, original.value);
    }
    // A producer may not claim it: the log sets it.
    let err = EncodedBatch::validate_produced(appended.bytes().clone(), BatchLimits::default())
        .unwrap_err();
    assert!(
        matches!(err, BatchError::Unsupported(reason) if reason.contains("log-append-time")),
        "{err}"
    );
}

#[test]
fn unsupported_features_are_refused_by_name() {
    let batch = EncodedBatch::encode(&three(), BatchLimits::default()).unwrap();
    for (attributes, what) in [
        (0x0001u16, "gzip"),
        (0x0004, "zstd"),
        (0x0010, "transactional"),
        (0x0020, "control"),
        (0x0040, "delete horizon"),
    ] {
        let mut b = batch.bytes().to_vec();
        b[21..23].copy_from_slice(&attributes.to_be_bytes());
        let err = EncodedBatch::verify(resealed(b)).unwrap_err();
        assert!(
            matches!(err, BatchError::Unsupported(reason) if reason.contains(what)),
            "{attributes:#x}: {err}"
        );
    }
    let mut b = batch.bytes().to_vec();
    b[21..23].copy_from_slice(&0x0100u16.to_be_bytes());
    assert!(matches!(
        EncodedBatch::verify(resealed(b)),
        Err(BatchError::Malformed(_))
    ));
}

#[test]
fn produced_batches_must_have_contiguous_offsets_and_sane_records() {
    let limits = BatchLimits::default();
    let gapped = BatchEncoder::new(limits)
        .encode_at_offsets(&[
            (Offset(10), record(None, "a", 1)),
            (Offset(12), record(None, "b", 1)),
        ])
        .unwrap();
    assert_eq!(gapped.header().base_offset, Offset(10));
    assert_eq!(gapped.header().last_offset_delta, 2);
    assert_eq!(gapped.header().next_offset(), Offset(13));
    // A stored (compacted or filtered) batch may have gaps...
    let offsets: Vec<u64> = EncodedBatch::verify(gapped.bytes().clone())
        .unwrap()
        .records()
        .map(|r| r.unwrap().0.0)
        .collect();
    assert_eq!(offsets, [10, 12]);
    // ...a producer's may not.
    assert!(matches!(
        EncodedBatch::validate_produced(gapped.bytes().clone(), limits),
        Err(BatchError::InvalidRecord { index: 1, .. })
    ));
    let negative = EncodedBatch::encode(&[record(None, "a", -5)], limits).unwrap();
    assert_eq!(
        EncodedBatch::validate_produced(negative.into_bytes(), limits).unwrap_err(),
        BatchError::InvalidRecord {
            index: 0,
            reason: "negative timestamp"
        }
    );
    let fine = EncodedBatch::encode(&three(), limits).unwrap();
    assert!(EncodedBatch::validate_produced(fine.bytes().clone(), limits).is_ok());
    let small = BatchLimits {
        max_record_bytes: 10,
        max_batch_bytes: 1_000,
    };
    assert!(matches!(
        EncodedBatch::validate_produced(fine.bytes().clone(), small),
        Err(BatchError::RecordTooLarge { index: 0, .. })
    ));
    let tiny = BatchLimits {
        max_record_bytes: 1_000,
        max_batch_bytes: 50,
    };
    assert!(matches!(
        EncodedBatch::validate_produced(fine.into_bytes(), tiny),
        Err(BatchError::BatchTooLarge { limit: 50, .. })
    ));
}

#[test]
fn tombstones_round_trip_distinct_from_empty_values() {
    let records = vec![
        tombstone("gone", 1_000),
        record(Some("gone"), "", 1_000),
        record(None, "kept", 1_001),
    ];
    let limits = BatchLimits::default();
    let batch = EncodedBatch::encode(&records, limits).unwrap();
    // Both gates accept a null value.
    EncodedBatch::validate_produced(batch.bytes().clone(), limits).unwrap();
    let (verified, decoded) = EncodedBatch::verify_and_decode(batch.bytes().clone()).unwrap();
    let decoded: Vec<Record> = decoded.into_iter().map(|(_, r)| r).collect();
    assert_eq!(decoded, records);
    assert!(decoded[0].tombstone && decoded[0].value.is_empty());
    assert!(!decoded[1].tombstone && decoded[1].value.is_empty());
    let iterated: Vec<Record> = verified.records().map(|r| r.unwrap().1).collect();
    assert_eq!(iterated, records);
    // A consume chain's survivors keep their tombstones too.
    let gapped = BatchEncoder::new(limits)
        .encode_at_offsets(&[
            (Offset(3), tombstone("a", 5)),
            (Offset(9), tombstone("b", 5)),
        ])
        .unwrap();
    let again: Vec<_> = EncodedBatch::verify(gapped.into_bytes())
        .unwrap()
        .records()
        .map(|r| r.unwrap())
        .collect();
    assert_eq!(
        again,
        [
            (Offset(3), tombstone("a", 5)),
            (Offset(9), tombstone("b", 5))
        ]
    );
}

#[test]
fn a_tombstone_with_a_value_is_refused_naming_the_record() {
    let mut bad = tombstone("k", 0);
    bad.value = Bytes::from_static(b"v");
    assert_eq!(
        EncodedBatch::encode(&[record(None, "a", 0), bad], BatchLimits::default()).unwrap_err(),
        BatchError::InvalidRecord {
            index: 1,
            reason: "a tombstone carries no value"
        }
    );
}

#[test]
fn a_kafka_batch_with_a_null_value_verifies_as_a_tombstone() {
    // A hand-built batch with one record whose value is null (length -1), as any Kafka client
    // writes a tombstone.
    let batch = EncodedBatch::encode(&[record(None, "", 0)], BatchLimits::default()).unwrap();
    let mut bytes = batch.bytes()[..BATCH_HEADER_LEN].to_vec();
    // length 6: attributes, ts 0, offset 0, no key, null value, 0 headers.
    bytes.extend_from_slice(&[12, 0, 0, 0, 1, 1, 0]);
    let len = (bytes.len() - 12) as i32;
    bytes[8..12].copy_from_slice(&len.to_be_bytes());
    let bytes = resealed(bytes);
    EncodedBatch::validate_produced(bytes.clone(), BatchLimits::default()).unwrap();
    let (_, decoded) = EncodedBatch::verify_and_decode(bytes).unwrap();
    assert_eq!(
        decoded,
        [(
            Offset(0),
            Record {
                key: None,
                value: Bytes::new(),
                headers: vec![],
                timestamp_ms: 0,
                tombstone: true,
            }
        )]
    );
}

#[test]
fn null_header_values_are_still_refused_with_the_record() {
    let batch = EncodedBatch::encode(&[record(None, "", 0)], BatchLimits::default()).unwrap();
    let mut bytes = batch.bytes()[..BATCH_HEADER_LEN].to_vec();
    // length 9: attributes, ts 0, offset 0, no key, empty value, 1 header "h" with a null value.
    bytes.extend_from_slice(&[18, 0, 0, 0, 1, 0, 2, 2, b'h', 1]);
    let len = (bytes.len() - 12) as i32;
    bytes[8..12].copy_from_slice(&len.to_be_bytes());
    let err = EncodedBatch::verify(resealed(bytes)).unwrap_err();
    assert!(
        matches!(err, BatchError::InvalidRecord { index: 0, reason } if reason.contains("header has a null value")),
        "{err}"
    );
}

#[test]
fn truncated_and_garbage_bytes_are_errors_not_panics() {
    let batch = EncodedBatch::encode(&three(), BatchLimits::default()).unwrap();
    for cut in 0..batch.bytes().len() {
        assert!(EncodedBatch::verify(batch.bytes().slice(..cut)).is_err());
    }
    assert!(EncodedBatch::verify(Bytes::from_static(&[0xff; 64])).is_err());
    assert!(EncodedBatch::verify(Bytes::new()).is_err());
}

#[test]
fn limits_are_enforced_when_encoding_and_name_the_record() {
    let limits = BatchLimits {
        max_record_bytes: 100,
        max_batch_bytes: 1_000,
    };
    let big = record(None, &"x".repeat(200), 0);
    assert!(matches!(
        EncodedBatch::encode(&[record(None, "a", 0), big], limits).unwrap_err(),
        BatchError::RecordTooLarge {
            index: 1,
            limit: 100,
            ..
        }
    ));
    let many: Vec<_> = (0..50).map(|_| record(None, &"y".repeat(50), 0)).collect();
    assert!(matches!(
        EncodedBatch::encode(&many, limits),
        Err(BatchError::BatchTooLarge { .. })
    ));
    assert_eq!(
        EncodedBatch::encode(&[], limits).unwrap_err(),
        BatchError::Empty
    );
    assert!(matches!(
        BatchEncoder::new(limits).encode_at_offsets(&[
            (Offset(5), record(None, "a", 0)),
            (Offset(5), record(None, "b", 0)),
        ]),
        Err(BatchError::InvalidRecord { index: 1, .. })
    ));
}

#[test]
fn sequences_wrap_from_the_largest_int32_to_zero() {
    assert_eq!(ProducerStamp::sequence_after(0, 5), 5);
    assert_eq!(ProducerStamp::sequence_after(i32::MAX, 1), 0);
    assert_eq!(ProducerStamp::sequence_after(i32::MAX - 1, 3), 1);
    assert_eq!(ProducerStamp::sequence_after(7, 1 << 31), 7, "a whole turn");
}

#[test]
fn compaction_keeps_offsets_producer_fields_and_the_span_of_a_batch() {
    let records: Vec<Record> = (0..5)
        .map(|i| record(Some(&format!("k{i}")), &format!("v{i}"), 1_000 + i))
        .collect();
    let batch = BatchEncoder::new(BatchLimits::default())
        .with_producer(Some(PRODUCER))
        .encode(&records)
        .unwrap()
        .stamped(Offset(40), 7);
    let seen: Vec<(Offset, Option<&[u8]>, bool, i64)> = batch
        .compaction_records()
        .map(|r| r.map(|r| (r.offset, r.key, r.tombstone, r.timestamp_ms)))
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(seen.len(), 5);
    assert_eq!(seen[3], (Offset(43), Some(&b"k3"[..]), false, 1_003));

    assert!(
        batch.retaining(|_| true).unwrap().is_none(),
        "nothing to rewrite"
    );

    // Keep offsets 41 and 43: the newest record (44) goes, so the maximum timestamp drops.
    let kept = batch
        .retaining(|r| r.offset == Offset(41) || r.offset == Offset(43))
        .unwrap()
        .unwrap();
    let verified = EncodedBatch::verify(kept.bytes().clone()).unwrap();
    let h = *verified.header();
    assert_eq!(h, *kept.header());
    assert_eq!(
        (h.base_offset, h.partition_leader_epoch, h.offset_count()),
        (Offset(40), 7, 5)
    );
    assert_eq!((h.record_count, h.max_timestamp_ms), (2, 1_003));
    assert_eq!(h.producer(), batch.header().producer());
    assert_eq!(h.base_timestamp_ms, batch.header().base_timestamp_ms);
    let decoded: Vec<(Offset, Record)> = verified.records().collect::<Result<_, _>>().unwrap();
    assert_eq!(
        decoded,
        vec![
            (Offset(41), records[1].clone()),
            (Offset(43), records[3].clone())
        ]
    );

    // Keep nothing: the batch stays, empty, spanning the same offsets; the same bytes as one
    // built from the header alone.
    let empty = batch.retaining(|_| false).unwrap().unwrap();
    assert_eq!(EncodedBatch::emptied(batch.header()), empty);
    let verified = EncodedBatch::verify(empty.bytes().clone()).unwrap();
    assert_eq!(verified.header().record_count, 0);
    assert_eq!(verified.header().next_offset(), Offset(45));
    assert_eq!(verified.header().max_timestamp_ms, 1_004);
    assert_eq!(verified.records().count(), 0);
    // A producer may not send an empty batch, nor one with gaps.
    assert_eq!(
        EncodedBatch::validate_produced(empty.bytes().clone(), BatchLimits::default()).unwrap_err(),
        BatchError::Empty
    );
    let gappy = batch
        .retaining(|r| r.offset != Offset(42))
        .unwrap()
        .unwrap();
    assert!(
        EncodedBatch::validate_produced(gappy.bytes().clone(), BatchLimits::default()).is_err()
    );
}

#[test]
fn compaction_of_a_log_append_time_batch_keeps_the_append_time() {
    let batch = EncodedBatch::encode(&three(), BatchLimits::default())
        .unwrap()
        .with_log_append_time(9_999);
    let kept = batch.retaining(|r| r.offset == Offset(0)).unwrap().unwrap();
    let verified = EncodedBatch::verify(kept.bytes().clone()).unwrap();
    assert_eq!(verified.header().max_timestamp_ms, 9_999);
    let records: Vec<(Offset, Record)> = verified.records().collect::<Result<_, _>>().unwrap();
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].1.timestamp_ms, 9_999);
}
