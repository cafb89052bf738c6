//! `split`: a flat-map splitting each value on a separator, one record per non-empty part. Each
//! part keeps its input's key, headers, timestamp and offset.
//!
//! | parameter | meaning |
//! | --- | --- |
//! | `separator` | the separator, one or more bytes (default a newline); `\n`, `\t`, `\r` and `\\` stand for a newline, a tab, a carriage return and a backslash |
//! | `trim` | `true` trims ASCII whitespace around each part before dropping empty ones (default `false`) |
//!
//! Values need not be UTF-8. Example: `separator=,` turns `a,b,,c` into `a`, `b`, `c`.

use weir_module::{Error, Params, Record, Result};

/// The separator and whether to trim, from the parameters.
pub struct Splitter {
    separator: Vec<u8>,
    trim: bool,
}

impl Splitter {
    /// Reads `separator=...` and `trim=...`.
    pub fn from_params(params: &Params) -> Result<Self> {
        params.allow_only(&["separator", "trim"])?;
        let separator = match params.get("separator") {
            None => b"\n".to_vec(),
            Some(raw) => unescape(raw).map_err(|e| e.context("parameter `separator`"))?,
        };
        if separator.is_empty() {
            return Err(Error::new("parameter `separator`: must not be empty"));
        }
        Ok(Splitter {
            separator,
            trim: params.parse_or("trim", false)?,
        })
    }

    /// The non-empty parts of `value`.
    pub fn parts<'v>(&'v self, value: &'v [u8]) -> impl Iterator<Item = &'v [u8]> + 'v {
        let mut start = 0;
        let ends = memchr::memmem::find_iter(value, &self.separator)
            .map(|at| (at, at + self.separator.len()))
            .chain(std::iter::once((value.len(), value.len())));
        ends.map(move |(end, next)| {
            let part = &value[start..end];
            start = next;
            if self.trim { part.trim_ascii() } else { part }
        })
        .filter(|part| !part.is_empty())
    }
}

fn unescape(raw: &str) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(raw.len());
    let mut chars = raw.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            let mut buf = [0; 4];
            out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            continue;
        }
        out.push(match chars.next() {
            Some('n') => b'\n',
            Some('t') => b'\t',
            Some('r') => b'\r',
            Some('\\') => b'\\',
            Some(other) => return Err(Error::new(format!("unknown escape `\\{other}`"))),
            None => return Err(Error::new("ends with a lone `\\`")),
        });
    }
    Ok(out)
}

/// One record per non-empty part of `record`'s value.
pub fn split(splitter: &Splitter, record: Record) -> Result<Vec<Record>> {
    Ok(splitter
        .parts(&record.value)
        .map(|part| Record {
            value: part.to_vec(),
            key: record.key.clone(),
            headers: record.headers.clone(),
            ..record
        })
        .collect())
}

weir_module::flat_map!(split, config = Splitter::from_params);

#[cfg(test)]
mod tests {
    use weir_module::testing::{self, Output};
    use weir_module::{Record, testing::Outcome};

    use super::WeirModule;

    fn run(params: &[(&str, &str)], values: &[&str]) -> Outcome {
        let records = values
            .iter()
            .enumerate()
            .map(|(i, v)| Record::new(*v).with_key("k").with_offset(100 + i as u64))
            .collect();
        testing::run::<WeirModule>(params, records).unwrap()
    }

    #[test]
    fn splits_on_newlines_by_default() {
        let outcome = run(&[], &["a\nb\n\nc\n", "", "single"]);
        assert_eq!(outcome.values(), ["a", "b", "c", "single"]);
        let origins: Vec<_> = outcome
            .entries
            .iter()
            .map(|e| match e {
                Output::Record { index, record } => (*index, record.offset, record.key.clone()),
                other => panic!("unexpected {other:?}"),
            })
            .collect();
        assert_eq!(origins[2], (0, 100, Some(b"k".to_vec())));
        assert_eq!(origins[3], (2, 102, Some(b"k".to_vec())));
    }

    #[test]
    fn separators_and_trimming() {
        assert_eq!(
            run(&[("separator", ", ")], &["a, b,c, , d"]).values(),
            ["a", "b,c", "d"]
        );
        assert_eq!(
            run(&[("separator", ","), ("trim", "true")], &["a , b,, ,c "]).values(),
            ["a", "b", "c"]
        );
        assert_eq!(
            run(&[("separator", r"\t")], &["x\ty\\tz"]).values(),
            ["x", "y\\tz"]
        );
    }

    #[test]
    fn bad_separators_are_refused() {
        for (separator, message) in [
            ("", "parameter `separator`: must not be empty"),
            (r"\q", "parameter `separator`: unknown escape `\\q`"),
            ("a\\", "parameter `separator`: ends with a lone `\\`"),
        ] {
            let error =
                testing::run::<WeirModule>(&[("separator", separator)], vec![]).unwrap_err();
            assert_eq!(error.message(), message);
        }
    }
}
