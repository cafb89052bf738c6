//! `KEY=VALUE` arguments: module parameters, topic configs.

/// A `KEY=VALUE` argument, split at the first '=' (the value may hold '=' and ',').
pub(crate) fn parse_key_value(arg: &str) -> Result<(String, String), String> {
    match arg.split_once('=') {
        Some(("", _)) => Err(format!("{arg:?} has an empty key")),
        Some((key, value)) => Ok((key.to_owned(), value.to_owned())),
        None => Err(format!("{arg:?} has no '=': write KEY=VALUE")),
    }
}
