//! Kafka's varints: LEB128 with zig-zag, for the `int32` fields of a record (`varint`, at most 5
//! bytes) and its timestamp delta (`varlong`, at most 10 bytes).
//!
//! Decoding is strict, as Kafka's is: an encoding longer than its type allows, or a `varint`
//! whose value does not fit an `int32`, is refused rather than truncated.

/// Appends `v` as an unsigned LEB128 varint.
fn put_u64(buf: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        buf.push((v as u8) | 0x80);
        v >>= 7;
    }
    buf.push(v as u8);
}

/// Appends `v` zig-zag encoded (Kafka's `varlong`).
pub(crate) fn put_varlong(buf: &mut Vec<u8>, v: i64) {
    put_u64(buf, ((v << 1) ^ (v >> 63)) as u64);
}

/// Appends `v` zig-zag encoded (Kafka's `varint`).
pub(crate) fn put_varint(buf: &mut Vec<u8>, v: i32) {
    put_u64(buf, u64::from(((v << 1) ^ (v >> 31)) as u32));
}

/// Bytes `put_varint(v)` writes.
pub(crate) fn varint_len(v: i32) -> usize {
    let zigzag = ((v << 1) ^ (v >> 31)) as u32;
    match zigzag {
        0..=0x7f => 1,
        0x80..=0x3fff => 2,
        0x4000..=0x1f_ffff => 3,
        0x20_0000..=0xfff_ffff => 4,
        _ => 5,
    }
}

/// Bytes `put_varlong(v)` writes.
pub(crate) fn varlong_len(v: i64) -> usize {
    let zigzag = ((v << 1) ^ (v >> 63)) as u64;
    (64 - (zigzag | 1).leading_zeros() as usize).div_ceil(7)
}

/// Reads an unsigned LEB128 varint of at most `max_bytes` from the front of `buf`, advancing it.
fn get_u64(buf: &mut &[u8], max_bytes: usize) -> Option<u64> {
    let mut v: u64 = 0;
    for (i, &byte) in buf.iter().enumerate().take(max_bytes) {
        v |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            *buf = &buf[i + 1..];
            return Some(v);
        }
    }
    None
}

/// Reads a zig-zag `varlong` from the front of `buf`, advancing it. `None` if truncated or
/// longer than ten bytes.
pub(crate) fn get_varlong(buf: &mut &[u8]) -> Option<i64> {
    get_u64(buf, 10).map(|u| ((u >> 1) as i64) ^ -((u & 1) as i64))
}

/// Reads a zig-zag `varint` from the front of `buf`, advancing it. `None` if truncated, longer
/// than five bytes, or outside `int32`.
pub(crate) fn get_varint(buf: &mut &[u8]) -> Option<i32> {
    let u = u32::try_from(get_u64(buf, 5)?).ok()?;
    Some(((u >> 1) as i32) ^ -((u & 1) as i32))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varlongs_round_trip_edge_values() {
        for v in [0i64, 1, -1, 63, -64, 64, i64::MAX, i64::MIN, 300, -300] {
            let mut buf = Vec::new();
            put_varlong(&mut buf, v);
            let mut slice = buf.as_slice();
            assert_eq!(get_varlong(&mut slice), Some(v));
            assert!(slice.is_empty());
            assert_eq!(buf.len(), varlong_len(v), "{v}");
        }
    }

    #[test]
    fn varints_round_trip_and_know_their_length() {
        for v in [
            0i32,
            1,
            -1,
            63,
            -64,
            64,
            -65,
            8191,
            8192,
            i32::MAX,
            i32::MIN,
        ] {
            let mut buf = Vec::new();
            put_varint(&mut buf, v);
            assert_eq!(buf.len(), varint_len(v), "{v}");
            let mut slice = buf.as_slice();
            assert_eq!(get_varint(&mut slice), Some(v));
            assert!(slice.is_empty());
        }
    }

    #[test]
    fn kafka_encodings_of_known_values() {
        // Zig-zag: -1 is 1, 1 is 2, 300 is 600 = 0xd8 0x04.
        let mut buf = Vec::new();
        put_varint(&mut buf, -1);
        put_varint(&mut buf, 1);
        put_varint(&mut buf, 300);
        assert_eq!(buf, [0x01, 0x02, 0xd8, 0x04]);
    }

    #[test]
    fn truncated_overlong_and_out_of_range_input_is_refused() {
        let mut slice: &[u8] = &[0x80, 0x80];
        assert_eq!(get_varint(&mut slice), None);
        let mut endless: &[u8] = &[0xff; 11];
        assert_eq!(get_varlong(&mut endless), None);
        // Six bytes is too long for a varint even when the value is small.
        let mut overlong: &[u8] = &[0x82, 0x80, 0x80, 0x80, 0x80, 0x00];
        assert_eq!(get_varint(&mut overlong), None);
        // Five bytes whose value exceeds 32 bits.
        let mut too_big: &[u8] = &[0xff, 0xff, 0xff, 0xff, 0x7f];
        assert_eq!(get_varint(&mut too_big), None);
    }
}
