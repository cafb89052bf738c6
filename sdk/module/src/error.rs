//! What a module's functions return when something goes wrong: [`Error`] (the module or its
//! parameters failed) and [`Reject`] (a validator refuses one record).

use std::fmt;

/// `Result` with [`Error`] as the default error type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A module error: a message for the broker, which shows it to whoever attached or called the
/// module. Returned by init hooks (the parameters are refused), by `map`, `filter_map` and
/// `flat_map` functions (the record is rejected with this message) and by parameter accessors.
///
/// Any [`std::error::Error`] converts into it with `?` (its sources are appended to the message);
/// anything else that displays becomes one through [`Error::new`].
#[derive(Clone, PartialEq, Eq)]
pub struct Error {
    message: String,
}

impl Error {
    /// An error with this message.
    pub fn new(message: impl fmt::Display) -> Self {
        Error {
            message: message.to_string(),
        }
    }

    /// The message.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// Prefixes the message with `context` (`"{context}: {message}"`).
    pub fn context(self, context: impl fmt::Display) -> Self {
        Error {
            message: format!("{context}: {}", self.message),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

// Debug shows the message as is, so a failed `unwrap()` in a module's test reads well.
impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

// `Error` deliberately does not implement `std::error::Error`: that would make this blanket
// conversion overlap with `From<Error> for Error`.
impl<E: std::error::Error> From<E> for Error {
    fn from(error: E) -> Self {
        let mut message = error.to_string();
        let mut source = error.source();
        while let Some(cause) = source {
            message.push_str(": ");
            message.push_str(&cause.to_string());
            source = cause.source();
        }
        Error { message }
    }
}

/// A validator's verdict against one record: the record is rejected with this reason, which the
/// producer receives (with the record's index) and which a dead-letter record carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reject {
    reason: String,
}

impl Reject {
    /// A rejection with this reason.
    pub fn new(reason: impl fmt::Display) -> Self {
        Reject {
            reason: reason.to_string(),
        }
    }

    /// The reason.
    pub fn reason(&self) -> &str {
        &self.reason
    }
}

impl fmt::Display for Reject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.reason)
    }
}

impl From<Error> for Reject {
    fn from(error: Error) -> Self {
        Reject {
            reason: error.message,
        }
    }
}

impl From<String> for Reject {
    fn from(reason: String) -> Self {
        Reject { reason }
    }
}

impl From<&str> for Reject {
    fn from(reason: &str) -> Self {
        Reject::new(reason)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Outer(std::num::ParseIntError);

    impl fmt::Display for Outer {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("bad count")
        }
    }

    impl std::error::Error for Outer {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }

    #[test]
    fn std_errors_convert_with_their_causes() {
        fn parse(s: &str) -> Result<u32> {
            Ok(s.parse::<u32>().map_err(Outer)?)
        }
        assert_eq!(
            parse("x").unwrap_err().message(),
            "bad count: invalid digit found in string"
        );
        assert_eq!(parse("7"), Ok(7));
    }

    #[test]
    fn context_and_reject_conversions() {
        let e = Error::new("no such field").context("parameter `field`");
        assert_eq!(e.to_string(), "parameter `field`: no such field");
        assert_eq!(format!("{e:?}"), "parameter `field`: no such field");
        assert_eq!(Reject::from(e).reason(), "parameter `field`: no such field");
        assert_eq!(Reject::from("short").to_string(), "short");
        assert_eq!(Reject::from(String::from("s")).reason(), "s");
    }
}
