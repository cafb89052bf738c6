//! [`Record`] and [`Header`]: what a module's functions receive and return.

use weir_abi::RecordView;

use crate::error::{Error, Result};

/// A record header: a name (UTF-8, may repeat within a record) and a byte value.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Header {
    /// The header's name.
    pub name: String,
    /// The header's value.
    pub value: Vec<u8>,
}

impl Header {
    /// A header with this name and value.
    pub fn new(name: impl Into<String>, value: impl Into<Vec<u8>>) -> Self {
        Header {
            name: name.into(),
            value: value.into(),
        }
    }

    /// The value as UTF-8 text.
    pub fn value_str(&self) -> Result<&str> {
        utf8(&self.value, || format!("header `{}`", self.name))
    }
}

/// One record, as a module sees it.
///
/// Records a module returns (from `map`, `filter_map`, `flat_map`) keep the offset of the input
/// they derive from, whatever their `offset` field says.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Record {
    /// On the consume path, the record's offset in its partition; on the produce path (offsets are
    /// not assigned yet), its index in the produce request.
    pub offset: u64,
    /// Milliseconds since the Unix epoch.
    pub timestamp_ms: i64,
    /// The key, if any (an empty key is a key).
    pub key: Option<Vec<u8>>,
    /// The value.
    pub value: Vec<u8>,
    /// Headers, in order; names may repeat.
    pub headers: Vec<Header>,
}

impl Record {
    /// A record with this value, no key, no headers, offset and timestamp 0.
    pub fn new(value: impl Into<Vec<u8>>) -> Self {
        Record {
            value: value.into(),
            ..Record::default()
        }
    }

    /// This record with `value` as its value.
    pub fn with_value(mut self, value: impl Into<Vec<u8>>) -> Self {
        self.value = value.into();
        self
    }

    /// This record with `key` as its key.
    pub fn with_key(mut self, key: impl Into<Vec<u8>>) -> Self {
        self.key = Some(key.into());
        self
    }

    /// This record with one more header (existing headers of that name stay).
    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<Vec<u8>>) -> Self {
        self.headers.push(Header::new(name, value));
        self
    }

    /// This record with `timestamp_ms` as its timestamp.
    pub fn with_timestamp(mut self, timestamp_ms: i64) -> Self {
        self.timestamp_ms = timestamp_ms;
        self
    }

    /// This record with `offset` as its offset (useful in tests).
    pub fn with_offset(mut self, offset: u64) -> Self {
        self.offset = offset;
        self
    }

    /// The value as UTF-8 text.
    pub fn value_str(&self) -> Result<&str> {
        utf8(&self.value, || "the value".to_owned())
    }

    /// The key as UTF-8 text, `None` if the record has no key.
    pub fn key_str(&self) -> Result<Option<&str>> {
        self.key
            .as_deref()
            .map(|key| utf8(key, || "the key".to_owned()))
            .transpose()
    }

    /// The value of the first header named `name`.
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|h| h.name == name)
            .map(|h| h.value.as_slice())
    }

    /// The value of the first header named `name`, as UTF-8 text.
    pub fn header_str(&self, name: &str) -> Result<Option<&str>> {
        self.headers
            .iter()
            .find(|h| h.name == name)
            .map(Header::value_str)
            .transpose()
    }

    /// The values of every header named `name`, in order.
    pub fn headers_named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.headers
            .iter()
            .filter(move |h| h.name == name)
            .map(|h| h.value.as_slice())
    }

    /// Replaces every header named `name` with one header of this value.
    pub fn set_header(&mut self, name: impl Into<String>, value: impl Into<Vec<u8>>) {
        let name = name.into();
        self.remove_headers(&name);
        self.headers.push(Header::new(name, value));
    }

    /// Removes every header named `name`, returning how many there were.
    pub fn remove_headers(&mut self, name: &str) -> usize {
        let before = self.headers.len();
        self.headers.retain(|h| h.name != name);
        before - self.headers.len()
    }

    /// A record owning a copy of `view`'s fields.
    pub(crate) fn from_view(offset: u64, view: &RecordView<'_>) -> Self {
        Record {
            offset,
            timestamp_ms: view.timestamp_ms,
            key: view.key.map(<[u8]>::to_vec),
            value: view.value.to_vec(),
            headers: view
                .headers
                .iter()
                .map(|(name, value)| Header::new(*name, *value))
                .collect(),
        }
    }

    /// Overwrites this record with `view`'s fields, reusing its buffers: the functions that only
    /// borrow a record (filter, validate, aggregate) see every input through one scratch record,
    /// so a batch costs copies but no allocation once the buffers have grown.
    pub(crate) fn fill_from(&mut self, offset: u64, view: &RecordView<'_>) {
        self.offset = offset;
        self.timestamp_ms = view.timestamp_ms;
        match (view.key, &mut self.key) {
            (None, key) => *key = None,
            (Some(from), Some(key)) => {
                key.clear();
                key.extend_from_slice(from);
            }
            (Some(from), key) => *key = Some(from.to_vec()),
        }
        self.value.clear();
        self.value.extend_from_slice(view.value);
        self.headers.truncate(view.headers.len());
        for (i, (name, value)) in view.headers.iter().enumerate() {
            match self.headers.get_mut(i) {
                Some(header) => {
                    header.name.clear();
                    header.name.push_str(name);
                    header.value.clear();
                    header.value.extend_from_slice(value);
                }
                None => self.headers.push(Header::new(*name, *value)),
            }
        }
    }

    /// The record's fields borrowed, for encoding.
    pub(crate) fn view(&self) -> RecordView<'_> {
        RecordView {
            timestamp_ms: self.timestamp_ms,
            key: self.key.as_deref(),
            value: &self.value,
            headers: self
                .headers
                .iter()
                .map(|h| (h.name.as_str(), h.value.as_slice()))
                .collect(),
        }
    }
}

fn utf8(bytes: &[u8], what: impl FnOnce() -> String) -> Result<&str> {
    std::str::from_utf8(bytes).map_err(|e| Error::new(format!("{} is not UTF-8: {e}", what())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builders_and_accessors() {
        let mut r = Record::new("héllo")
            .with_key("k")
            .with_header("a", "1")
            .with_header("b", vec![0xff])
            .with_header("a", "2")
            .with_timestamp(42)
            .with_offset(7);
        assert_eq!(r.value_str().unwrap(), "héllo");
        assert_eq!(r.key_str().unwrap(), Some("k"));
        assert_eq!(r.header("a"), Some(&b"1"[..]));
        assert_eq!(r.headers_named("a").collect::<Vec<_>>(), [b"1", b"2"]);
        assert_eq!(r.header_str("missing").unwrap(), None);
        assert_eq!(
            r.header_str("b").unwrap_err().message(),
            "header `b` is not UTF-8: invalid utf-8 sequence of 1 bytes from index 0"
        );
        r.set_header("a", "3");
        assert_eq!(r.headers_named("a").collect::<Vec<_>>(), [b"3"]);
        assert_eq!(r.remove_headers("b"), 1);
        assert_eq!((r.offset, r.timestamp_ms), (7, 42));
        assert_eq!(Record::new("x").key_str().unwrap(), None);
        assert!(Record::new(vec![0xc3]).value_str().is_err());
    }

    #[test]
    fn fill_from_overwrites_every_field() {
        let rich = Record::new("a long value")
            .with_key("key")
            .with_header("h1", "v1")
            .with_header("h2", "v2");
        let plain = Record::new("v").with_header("x", "y");
        let mut scratch = Record::default();
        scratch.fill_from(3, &rich.view());
        assert_eq!(scratch, rich.clone().with_offset(3));
        scratch.fill_from(4, &plain.view());
        assert_eq!(scratch, plain.clone().with_offset(4));
        scratch.fill_from(5, &rich.view());
        assert_eq!(scratch, rich.clone().with_offset(5));
        assert_eq!(Record::from_view(5, &rich.view()), scratch);
    }
}
