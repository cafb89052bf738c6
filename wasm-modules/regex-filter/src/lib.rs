//! `regex-filter`: a filter keeping the records whose value (or key, or a header) matches a
//! regular expression.
//!
//! | parameter | meaning |
//! | --- | --- |
//! | `pattern` (required) | the regular expression ([`regex_lite`] syntax, unanchored: add `^…$` to match the whole text) |
//! | `on` | what to match: `value` (default), `key`, or `header:NAME` (the first header of that name) |
//! | `invert` | `true` keeps the records that do *not* match (default `false`) |
//!
//! Text that is not UTF-8, a missing key and a missing header never match (so `invert=true` keeps
//! them).
//!
//! Example: `pattern=^user-[0-9]+$ on=key` keeps the records keyed `user-17`.

use regex_lite::Regex;
use weir_module::{Error, Params, Record, Result};

/// What part of the record the pattern is matched against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// The value.
    Value,
    /// The key.
    Key,
    /// The first header of this name.
    Header(String),
}

impl std::str::FromStr for Target {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "value" => Ok(Target::Value),
            "key" => Ok(Target::Key),
            _ => match s.strip_prefix("header:") {
                Some(name) if !name.is_empty() => Ok(Target::Header(name.to_owned())),
                _ => Err(Error::new("expected `value`, `key` or `header:NAME`")),
            },
        }
    }
}

/// The compiled pattern and where to apply it.
pub struct Matcher {
    regex: Regex,
    target: Target,
    invert: bool,
}

impl Matcher {
    /// Reads `pattern=...`, `on=...` and `invert=...`.
    pub fn from_params(params: &Params) -> Result<Self> {
        params.allow_only(&["pattern", "on", "invert"])?;
        let pattern: String = params.require("pattern")?;
        let regex =
            Regex::new(&pattern).map_err(|e| Error::new(e).context("parameter `pattern`"))?;
        Ok(Matcher {
            regex,
            target: params.parse_or("on", Target::Value)?,
            invert: params.parse_or("invert", false)?,
        })
    }

    fn text<'r>(&self, record: &'r Record) -> Option<&'r [u8]> {
        match &self.target {
            Target::Value => Some(&record.value),
            Target::Key => record.key.as_deref(),
            Target::Header(name) => record.header(name),
        }
    }
}

/// Keeps `record` if the pattern matches (or, inverted, does not).
pub fn keep(matcher: &Matcher, record: &Record) -> bool {
    let matched = matcher
        .text(record)
        .and_then(|text| std::str::from_utf8(text).ok())
        .is_some_and(|text| matcher.regex.is_match(text));
    matched != matcher.invert
}

weir_module::filter!(keep, config = Matcher::from_params);

#[cfg(test)]
mod tests {
    use weir_module::{Record, testing};

    use super::WeirModule;

    fn records() -> Vec<Record> {
        vec![
            Record::new("user-17 logged in").with_key("user-17"),
            Record::new("order 42 shipped").with_header("kind", "order"),
            Record::new(b"user-\xff".to_vec()),
            Record::new("user-9")
                .with_key("admin")
                .with_header("kind", "user"),
        ]
    }

    fn kept(params: &[(&str, &str)]) -> Vec<u32> {
        testing::run::<WeirModule>(params, records())
            .unwrap()
            .kept()
    }

    #[test]
    fn matches_value_key_or_header() {
        assert_eq!(kept(&[("pattern", r"user-\d+")]), [0, 3]);
        assert_eq!(kept(&[("pattern", r"^user-\d+$"), ("on", "key")]), [0]);
        assert_eq!(kept(&[("pattern", "^order$"), ("on", "header:kind")]), [1]);
    }

    #[test]
    fn invert_keeps_the_non_matching() {
        assert_eq!(
            kept(&[("pattern", r"user-\d+"), ("invert", "true")]),
            [1, 2]
        );
        assert_eq!(
            kept(&[("pattern", "."), ("on", "key"), ("invert", "true")]),
            [1, 2],
            "records without a key never match"
        );
    }

    #[test]
    fn bad_parameters_are_refused() {
        let error = testing::run::<WeirModule>(&[("pattern", "(")], vec![]).unwrap_err();
        assert!(
            error.message().starts_with("parameter `pattern`: "),
            "{error}"
        );
        let error =
            testing::run::<WeirModule>(&[("pattern", "a"), ("on", "body")], vec![]).unwrap_err();
        assert_eq!(
            error.message(),
            "parameter `on`: cannot parse `body`: expected `value`, `key` or `header:NAME`"
        );
        let error =
            testing::run::<WeirModule>(&[("pattern", "a"), ("invert", "yes")], vec![]).unwrap_err();
        assert_eq!(
            error.message(),
            "parameter `invert`: cannot parse `yes`: provided string was not `true` or `false`"
        );
    }
}
