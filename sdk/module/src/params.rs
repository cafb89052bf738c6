//! [`Params`]: the `key=value` parameters a module is attached or called with.

use std::cell::RefCell;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use crate::error::{Error, Result};

/// The parameters given where the module is attached to a topic or named in a consume request:
/// `key=value` pairs in the order given. A name given twice takes its last value in [`get`]
/// and the typed accessors; [`iter`] shows every pair.
///
/// Cloning is cheap (the pairs are shared).
///
/// [`get`]: Params::get
/// [`iter`]: Params::iter
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Params {
    pairs: Arc<[(String, String)]>,
}

impl Params {
    /// The value of `name`, if given.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.pairs
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Whether `name` was given.
    pub fn contains(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    /// The value of `name` parsed as a `T`; `Ok(None)` if it was not given, an error naming the
    /// parameter if it does not parse.
    pub fn parse<T>(&self, name: &str) -> Result<Option<T>>
    where
        T: FromStr,
        T::Err: fmt::Display,
    {
        self.get(name)
            .map(|value| {
                value.parse::<T>().map_err(|e| {
                    Error::new(format!("parameter `{name}`: cannot parse `{value}`: {e}"))
                })
            })
            .transpose()
    }

    /// The value of `name` parsed as a `T`, or `default` if it was not given.
    pub fn parse_or<T>(&self, name: &str, default: T) -> Result<T>
    where
        T: FromStr,
        T::Err: fmt::Display,
    {
        Ok(self.parse(name)?.unwrap_or(default))
    }

    /// The value of `name` parsed as a `T`; an error naming the parameter if it was not given or
    /// does not parse.
    pub fn require<T>(&self, name: &str) -> Result<T>
    where
        T: FromStr,
        T::Err: fmt::Display,
    {
        self.parse(name)?
            .ok_or_else(|| Error::new(format!("missing required parameter `{name}`")))
    }

    /// The value of `name` as a comma-separated list: items trimmed, empty items skipped; empty
    /// if not given.
    pub fn list(&self, name: &str) -> Vec<&str> {
        self.get(name)
            .map(|value| {
                value
                    .split(',')
                    .map(str::trim)
                    .filter(|item| !item.is_empty())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// An error naming the first parameter that is not in `known`, to catch misspelt names.
    pub fn allow_only(&self, known: &[&str]) -> Result<()> {
        match self.iter().find(|(name, _)| !known.contains(name)) {
            None => Ok(()),
            Some((name, _)) => Err(Error::new(format!(
                "unknown parameter `{name}` (known: {})",
                known.join(", ")
            ))),
        }
    }

    /// Every pair, in the order given.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.pairs.iter().map(|(n, v)| (n.as_str(), v.as_str()))
    }

    /// Number of pairs.
    pub fn len(&self) -> usize {
        self.pairs.len()
    }

    /// Whether no parameter was given.
    pub fn is_empty(&self) -> bool {
        self.pairs.is_empty()
    }
}

impl<K: Into<String>, V: Into<String>> FromIterator<(K, V)> for Params {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(pairs: I) -> Self {
        Params {
            pairs: pairs
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        }
    }
}

impl From<Vec<(String, String)>> for Params {
    fn from(pairs: Vec<(String, String)>) -> Self {
        Params {
            pairs: pairs.into(),
        }
    }
}

impl From<&[(&str, &str)]> for Params {
    fn from(pairs: &[(&str, &str)]) -> Self {
        pairs.iter().copied().collect()
    }
}

thread_local! {
    // The parameters of the instance being called. A wasm instance is single-threaded and calls
    // are never re-entered; the native test harness runs each instance on its caller's thread, so
    // tests running in parallel each see their own.
    static CURRENT: RefCell<Params> = RefCell::new(Params::default());
}

/// The parameters of the running instance: those its init hook received, during init and every
/// later call. Empty outside of a module call (or before init).
pub fn params() -> Params {
    CURRENT.with_borrow(Params::clone)
}

/// Makes `params` the current parameters until the guard drops, restoring the previous ones.
pub(crate) fn enter(params: &Params) -> CurrentGuard {
    let previous = CURRENT.with_borrow_mut(|current| std::mem::replace(current, params.clone()));
    CurrentGuard { previous }
}

/// Restores the previous current parameters on drop.
pub(crate) struct CurrentGuard {
    previous: Params,
}

impl Drop for CurrentGuard {
    fn drop(&mut self) {
        let previous = std::mem::take(&mut self.previous);
        CURRENT.with_borrow_mut(|current| *current = previous);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Params {
        Params::from(
            &[
                ("digits", "12"),
                ("name", "x"),
                ("digits", "4"),
                ("bad", "1.5"),
            ][..],
        )
    }

    #[test]
    fn typed_access() {
        let p = sample();
        assert_eq!(p.get("digits"), Some("4"), "the last value wins");
        assert_eq!(p.parse::<u32>("digits"), Ok(Some(4)));
        assert_eq!(p.parse::<u32>("absent"), Ok(None));
        assert_eq!(p.parse_or::<u32>("absent", 9), Ok(9));
        assert_eq!(p.require::<String>("name"), Ok("x".to_owned()));
        assert_eq!(p.len(), 4);
        assert!(p.contains("bad") && !p.contains("absent") && !p.is_empty());
        assert_eq!(
            p.iter().map(|(n, _)| n).collect::<Vec<_>>(),
            ["digits", "name", "digits", "bad"]
        );
    }

    #[test]
    fn errors_name_the_parameter() {
        let p = sample();
        assert_eq!(
            p.parse::<u32>("bad").unwrap_err().message(),
            "parameter `bad`: cannot parse `1.5`: invalid digit found in string"
        );
        assert_eq!(
            p.require::<u32>("field").unwrap_err().message(),
            "missing required parameter `field`"
        );
        assert_eq!(
            p.parse_or::<bool>("name", false).unwrap_err().message(),
            "parameter `name`: cannot parse `x`: provided string was not `true` or `false`"
        );
        assert_eq!(
            p.allow_only(&["digits", "name"]).unwrap_err().message(),
            "unknown parameter `bad` (known: digits, name)"
        );
        assert_eq!(p.allow_only(&["digits", "name", "bad"]), Ok(()));
    }

    #[test]
    fn lists() {
        let p: Params = [("fields", " a, b,,c ,"), ("empty", "")]
            .into_iter()
            .collect();
        assert_eq!(p.list("fields"), ["a", "b", "c"]);
        assert!(p.list("empty").is_empty());
        assert!(p.list("absent").is_empty());
    }

    #[test]
    fn current_params_are_scoped() {
        assert!(params().is_empty());
        {
            let _outer = enter(&sample());
            assert_eq!(params().get("name"), Some("x"));
            {
                let _inner = enter(&Params::default());
                assert!(params().is_empty());
            }
            assert_eq!(params().get("name"), Some("x"));
        }
        assert!(params().is_empty());
    }
}
