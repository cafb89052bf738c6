//! LEB128 varints with zig-zag for signed values, as in protobuf and Kafka's record format.

/// Appends `v` as an unsigned LEB128 varint.
pub(crate) fn put_u64(buf: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        buf.push((v as u8) | 0x80);
        v >>= 7;
    }
    buf.push(v as u8);
}

/// Appends `v` zig-zag encoded, so small negative numbers stay short.
pub(crate) fn put_i64(buf: &mut Vec<u8>, v: i64) {
    put_u64(buf, ((v << 1) ^ (v >> 63)) as u64);
}

/// Reads an unsigned varint from the front of `buf`, advancing it. `None` if truncated or longer
/// than ten bytes.
pub(crate) fn get_u64(buf: &mut &[u8]) -> Option<u64> {
    let mut v: u64 = 0;
    for (i, &byte) in buf.iter().enumerate().take(10) {
        v |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            *buf = &buf[i + 1..];
            return Some(v);
        }
    }
    None
}

/// Reads a zig-zag varint from the front of `buf`, advancing it.
pub(crate) fn get_i64(buf: &mut &[u8]) -> Option<i64> {
    get_u64(buf).map(|u| ((u >> 1) as i64) ^ -((u & 1) as i64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_edge_values() {
        for v in [0i64, 1, -1, 63, -64, 64, i64::MAX, i64::MIN, 300, -300] {
            let mut buf = Vec::new();
            put_i64(&mut buf, v);
            let mut slice = buf.as_slice();
            assert_eq!(get_i64(&mut slice), Some(v));
            assert!(slice.is_empty());
        }
        let mut buf = Vec::new();
        put_u64(&mut buf, u64::MAX);
        assert_eq!(buf.len(), 10);
        assert_eq!(get_u64(&mut buf.as_slice()), Some(u64::MAX));
    }

    #[test]
    fn truncated_input_is_refused() {
        let mut slice: &[u8] = &[0x80, 0x80];
        assert_eq!(get_u64(&mut slice), None);
        let mut endless: &[u8] = &[0xff; 11];
        assert_eq!(get_u64(&mut endless), None);
    }
}
