//! The key partitioner: which partition a keyed record belongs to.
//!
//! Weir uses Kafka's default partitioner, `(murmur2(key) & 0x7fffffff) % partitions`, so a key
//! lands on the same partition number as it would in Kafka, and equal keys always share a
//! partition (for a fixed partition count). Clients and the broker both call this function.

use crate::names::PartitionId;

/// The partition of a record with `key` in a topic of `partitions` partitions (at least 1).
pub fn partition_for_key(key: &[u8], partitions: u32) -> PartitionId {
    PartitionId((murmur2(key) & 0x7fff_ffff) % partitions.max(1))
}

/// MurmurHash2, 32-bit, with Kafka's seed `0x9747b28c`.
pub fn murmur2(data: &[u8]) -> u32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    let mut h = SEED ^ data.len() as u32;
    let mut chunks = data.chunks_exact(4);
    for chunk in &mut chunks {
        let mut k = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let tail = chunks.remainder();
    if tail.len() >= 3 {
        h ^= u32::from(tail[2]) << 16;
    }
    if tail.len() >= 2 {
        h ^= u32::from(tail[1]) << 8;
    }
    if !tail.is_empty() {
        h ^= u32::from(tail[0]);
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_kafkas_published_murmur2_values() {
        // The values Kafka's own test suite checks its murmur2 against.
        let cases: [(&[u8], i32); 6] = [
            (b"21", -973_932_308),
            (b"foobar", -790_332_482),
            (b"a-little-bit-long-string", -985_981_536),
            (b"a-little-bit-longer-string", -1_486_304_829),
            (
                b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8",
                -58_897_971,
            ),
            (b"abc", 479_470_107),
        ];
        for (input, expected) in cases {
            assert_eq!(
                murmur2(input) as i32,
                expected,
                "{:?}",
                String::from_utf8_lossy(input)
            );
        }
    }

    #[test]
    fn equal_keys_share_a_partition_and_all_partitions_are_used() {
        assert_eq!(
            partition_for_key(b"user-7", 12),
            partition_for_key(b"user-7", 12)
        );
        let mut seen = [false; 6];
        for i in 0..200 {
            seen[partition_for_key(format!("k{i}").as_bytes(), 6).0 as usize] = true;
        }
        assert!(seen.iter().all(|s| *s));
        assert_eq!(partition_for_key(b"x", 0), PartitionId(0));
    }
}
