//! `contains`: a filter keeping the records whose value contains a byte string.
//!
//! | parameter | meaning |
//! | --- | --- |
//! | `needle` (required) | the text to look for, compared byte for byte (case-sensitive) |
//!
//! An empty needle keeps every record. The benchmarks run [`contains_logic`] natively to compare
//! the module with the same logic compiled into the client.

use weir_module::{Params, Record, Result};

/// Whether `value` contains `needle`: the module's whole logic.
///
/// Scans for the needle's first byte with `memchr` and compares the rest there: no per-call setup
/// (a `memmem` searcher costs more to build than searching a short record takes), so the module and
/// a native caller pay the same for each record.
pub fn contains_logic(value: &[u8], needle: &[u8]) -> bool {
    let Some((&first, rest)) = needle.split_first() else {
        return true;
    };
    let mut from = 0;
    while let Some(found) = memchr::memchr(first, &value[from..]) {
        let at = from + found;
        if value[at + 1..].starts_with(rest) {
            return true;
        }
        from = at + 1;
    }
    false
}

/// The needle, from the parameters.
pub struct Needle(Vec<u8>);

impl Needle {
    /// Reads `needle=...`.
    pub fn from_params(params: &Params) -> Result<Self> {
        params.allow_only(&["needle"])?;
        Ok(Needle(params.require::<String>("needle")?.into_bytes()))
    }
}

/// Keeps `record` if its value contains the needle.
pub fn keep(needle: &Needle, record: &Record) -> bool {
    contains_logic(&record.value, &needle.0)
}

weir_module::filter!(keep, config = Needle::from_params);

#[cfg(test)]
mod tests {
    use weir_module::{Record, testing};

    use super::*;

    #[test]
    fn keeps_values_containing_the_needle() {
        let records = vec![
            Record::new("an error occurred"),
            Record::new("all fine"),
            Record::new("ERROR in caps"),
            Record::new(b"binary \xff error".to_vec()),
        ];
        let outcome = testing::run::<WeirModule>(&[("needle", "error")], records).unwrap();
        assert_eq!(outcome.kept(), [0, 3]);
    }

    #[test]
    fn needle_is_required() {
        let error = testing::run::<WeirModule>(&[], vec![]).unwrap_err();
        assert_eq!(error.message(), "missing required parameter `needle`");
        assert!(contains_logic(b"abc", b""));
        assert!(!contains_logic(b"", b"a"));
        assert!(contains_logic(b"aab", b"ab"));
        assert!(contains_logic(b"xyz", b"z"));
        assert!(!contains_logic(b"xyz", b"za"));
        assert!(!contains_logic(b"ab", b"abc"));
    }
}
