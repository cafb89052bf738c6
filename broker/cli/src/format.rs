//! `--format` templates of `weir consume`, in the style of kcat's `-f`.
//!
//! Directives: `%v` value (also `%s`, kcat's spelling; `NULL` for a tombstone, as kcat's `-Z`
//! prints a null value, while an empty value prints nothing), `%S` value size in bytes (`-1` for
//! a tombstone, Kafka's null length: unambiguous where a value may be the text `NULL`), `%k` key
//! (empty when absent), `%o` offset, `%p` partition, `%t` topic, `%T` timestamp (ms since the
//! Unix epoch), `%h` headers as `k=v,k=v`, `%%` a percent sign.
//! Escapes: `\n`, `\t`, `\r`, `\\`. Keys, values and headers print as UTF-8, with invalid bytes
//! replaced. Anything else is refused when the template is parsed, not silently printed.

use std::fmt;
use std::str::FromStr;

use weir_client::ConsumedRecord;

/// What `%v` prints for a tombstone (a null value), as kcat's `-Z`.
pub const TOMBSTONE_VALUE: &str = "NULL";

/// The default template: the value and a newline.
pub const DEFAULT_FORMAT: &str = "%v\\n";

/// A parsed output template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Format {
    parts: Vec<Part>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Literal(String),
    Key,
    Value,
    ValueSize,
    Offset,
    Partition,
    Topic,
    Timestamp,
    Headers,
}

/// Why a template was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FormatError {
    message: String,
}

impl fmt::Display for FormatError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for FormatError {}

impl FromStr for Format {
    type Err = FormatError;

    fn from_str(template: &str) -> Result<Self, Self::Err> {
        let refuse = |message: String| FormatError { message };
        let mut parts = Vec::new();
        let mut literal = String::new();
        let mut chars = template.chars();
        while let Some(c) = chars.next() {
            let directive = match c {
                '%' => match chars.next() {
                    Some('v' | 's') => Part::Value,
                    Some('S') => Part::ValueSize,
                    Some('k') => Part::Key,
                    Some('o') => Part::Offset,
                    Some('p') => Part::Partition,
                    Some('t') => Part::Topic,
                    Some('T') => Part::Timestamp,
                    Some('h') => Part::Headers,
                    Some('%') => {
                        literal.push('%');
                        continue;
                    }
                    Some(other) => {
                        return Err(refuse(format!(
                            "unknown directive %{other} (use %v %S %k %o %p %t %T %h or %%)"
                        )));
                    }
                    None => return Err(refuse("the format ends with a lone %".to_owned())),
                },
                '\\' => {
                    literal.push(match chars.next() {
                        Some('n') => '\n',
                        Some('t') => '\t',
                        Some('r') => '\r',
                        Some('\\') => '\\',
                        Some(other) => {
                            return Err(refuse(format!(
                                "unknown escape \\{other} (use \\n \\t \\r or \\\\)"
                            )));
                        }
                        None => return Err(refuse("the format ends with a lone \\".to_owned())),
                    });
                    continue;
                }
                other => {
                    literal.push(other);
                    continue;
                }
            };
            if !literal.is_empty() {
                parts.push(Part::Literal(std::mem::take(&mut literal)));
            }
            parts.push(directive);
        }
        if !literal.is_empty() {
            parts.push(Part::Literal(literal));
        }
        Ok(Self { parts })
    }
}

impl Format {
    /// Appends `record`, read from `topic`/`partition`, to `out` as the template says.
    pub fn write(&self, out: &mut Vec<u8>, topic: &str, partition: u32, record: &ConsumedRecord) {
        for part in &self.parts {
            match part {
                Part::Literal(text) => out.extend_from_slice(text.as_bytes()),
                Part::Value if record.tombstone => {
                    out.extend_from_slice(TOMBSTONE_VALUE.as_bytes())
                }
                Part::Value => push_lossy(out, &record.value),
                Part::ValueSize if record.tombstone => out.extend_from_slice(b"-1"),
                Part::ValueSize => out.extend_from_slice(record.value.len().to_string().as_bytes()),
                Part::Key => push_lossy(out, record.key.as_deref().unwrap_or_default()),
                Part::Offset => out.extend_from_slice(record.offset.to_string().as_bytes()),
                Part::Partition => out.extend_from_slice(partition.to_string().as_bytes()),
                Part::Topic => out.extend_from_slice(topic.as_bytes()),
                Part::Timestamp => {
                    out.extend_from_slice(record.timestamp_ms.to_string().as_bytes())
                }
                Part::Headers => {
                    for (i, (key, value)) in record.headers.iter().enumerate() {
                        if i > 0 {
                            out.push(b',');
                        }
                        out.extend_from_slice(key.as_bytes());
                        out.push(b'=');
                        push_lossy(out, value);
                    }
                }
            }
        }
    }
}

/// Appends `bytes` as UTF-8, replacing invalid sequences with U+FFFD.
fn push_lossy(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(String::from_utf8_lossy(bytes).as_bytes());
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    fn record() -> ConsumedRecord {
        ConsumedRecord {
            offset: 42,
            key: Some(Bytes::from_static(b"k1")),
            value: Bytes::from_static(b"hello"),
            headers: vec![
                ("a".to_owned(), Bytes::from_static(b"1")),
                ("b".to_owned(), Bytes::from_static(b"2")),
            ],
            timestamp_ms: 1_700_000_000_000,
            tombstone: false,
        }
    }

    fn render(template: &str, record: &ConsumedRecord) -> String {
        let format: Format = template.parse().expect("valid template");
        let mut out = Vec::new();
        format.write(&mut out, "orders", 3, record);
        String::from_utf8(out).expect("output is UTF-8")
    }

    #[test]
    fn default_prints_the_value_on_its_own_line() {
        assert_eq!(render(DEFAULT_FORMAT, &record()), "hello\n");
    }

    #[test]
    fn every_directive_and_escape_renders() {
        assert_eq!(
            render("%t/%p@%o %T\\t%k=%v [%h] 100%%\\r\\\\\\n", &record()),
            "orders/3@42 1700000000000\tk1=hello [a=1,b=2] 100%\r\\\n"
        );
    }

    #[test]
    fn absent_keys_print_empty_and_invalid_utf8_is_replaced() {
        let mut record = record();
        record.key = None;
        record.value = Bytes::from_static(b"a\xffb");
        assert_eq!(render("[%k] %v", &record), "[] a\u{fffd}b");
    }

    #[test]
    fn tombstones_print_apart_from_empty_values() {
        let mut empty = record();
        empty.value = Bytes::new();
        let mut tombstone = empty.clone();
        tombstone.tombstone = true;
        assert_eq!(render(DEFAULT_FORMAT, &tombstone), "NULL\n");
        assert_eq!(render(DEFAULT_FORMAT, &empty), "\n");
        assert_eq!(render("%k %S [%v]", &tombstone), "k1 -1 [NULL]");
        assert_eq!(render("%k %S [%v]", &empty), "k1 0 []");
        assert_eq!(render("%S", &record()), "5");
    }

    #[test]
    fn unknown_directives_and_dangling_escapes_are_refused() {
        for bad in ["%x", "%", "\\q", "abc\\"] {
            assert!(bad.parse::<Format>().is_err(), "{bad:?} should be refused");
        }
        let err = "%q".parse::<Format>().expect_err("%q is not a directive");
        assert!(err.to_string().contains("%q"), "{err}");
        assert_eq!(render("%s", &record()), "hello", "kcat's %s is the value");
    }
}
