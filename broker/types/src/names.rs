//! Names and positions: topic names, partition ids and offsets as domain types.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Longest topic or group name accepted, in bytes (Kafka's limit, so names move between the systems).
pub const MAX_TOPIC_NAME_LEN: usize = 249;

/// A validated topic name: 1 to 249 characters of `[A-Za-z0-9._-]`, and not `.` or `..`.
///
/// The character set is Kafka's, so names are safe as file names, metric labels and URL parts.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct TopicName(String);

/// Why a topic or group name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidName {
    /// The name is empty.
    #[error("the name is empty")]
    Empty,
    /// The name is longer than [`MAX_TOPIC_NAME_LEN`] bytes.
    #[error("the name is {len} bytes long; the limit is {MAX_TOPIC_NAME_LEN}")]
    TooLong {
        /// Length of the refused name in bytes.
        len: usize,
    },
    /// The name contains a character outside `[A-Za-z0-9._-]`.
    #[error(
        "the name contains {found:?}; only ASCII letters, digits, '.', '_' and '-' are allowed"
    )]
    BadCharacter {
        /// The first offending character.
        found: char,
    },
    /// The name is `.` or `..`.
    #[error("the name may not be '.' or '..'")]
    Reserved,
}

impl TopicName {
    /// The name as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for TopicName {
    type Err = InvalidName;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        check_name(s).map(|()| Self(s.to_owned()))
    }
}

/// The rules topic and consumer group names share (Kafka's, for both).
fn check_name(s: &str) -> Result<(), InvalidName> {
    if s.is_empty() {
        return Err(InvalidName::Empty);
    }
    if s.len() > MAX_TOPIC_NAME_LEN {
        return Err(InvalidName::TooLong { len: s.len() });
    }
    if s == "." || s == ".." {
        return Err(InvalidName::Reserved);
    }
    if let Some(found) = s
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(InvalidName::BadCharacter { found });
    }
    Ok(())
}

/// A validated consumer group name, under the same rules as a [`TopicName`].
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct GroupName(String);

impl GroupName {
    /// The name as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for GroupName {
    type Err = InvalidName;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        check_name(s).map(|()| Self(s.to_owned()))
    }
}

impl TryFrom<String> for GroupName {
    type Error = InvalidName;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<GroupName> for String {
    fn from(name: GroupName) -> Self {
        name.0
    }
}

impl fmt::Display for GroupName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for GroupName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl TryFrom<String> for TopicName {
    type Error = InvalidName;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<TopicName> for String {
    fn from(name: TopicName) -> Self {
        name.0
    }
}

impl fmt::Display for TopicName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for TopicName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

/// The index of a partition within its topic, counted from 0.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, Default,
)]
#[serde(transparent)]
pub struct PartitionId(pub u32);

impl fmt::Display for PartitionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl FromStr for PartitionId {
    type Err = std::num::ParseIntError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.parse().map(Self)
    }
}

/// The position of a record in a partition: the first record ever appended has offset 0 and each
/// record takes the next one, so offsets are dense and never reused.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, Default,
)]
#[serde(transparent)]
pub struct Offset(pub u64);

impl Offset {
    /// The offset `n` records after this one.
    pub fn plus(self, n: u64) -> Offset {
        Offset(self.0 + n)
    }
}

impl fmt::Display for Offset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl FromStr for Offset {
    type Err = std::num::ParseIntError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.parse().map(Self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_names_follow_kafka_rules() {
        assert!("orders".parse::<TopicName>().is_ok());
        assert!("a.b_c-9".parse::<TopicName>().is_ok());
        assert_eq!("".parse::<TopicName>(), Err(InvalidName::Empty));
        assert_eq!("..".parse::<TopicName>(), Err(InvalidName::Reserved));
        assert_eq!(
            "a b".parse::<TopicName>(),
            Err(InvalidName::BadCharacter { found: ' ' })
        );
        assert_eq!(
            "x/y".parse::<TopicName>(),
            Err(InvalidName::BadCharacter { found: '/' })
        );
        let long = "x".repeat(MAX_TOPIC_NAME_LEN + 1);
        assert_eq!(
            long.parse::<TopicName>(),
            Err(InvalidName::TooLong { len: 250 })
        );
        assert!("x".repeat(MAX_TOPIC_NAME_LEN).parse::<TopicName>().is_ok());
    }

    #[test]
    fn topic_name_serde_validates() {
        let bad: Result<TopicName, _> = serde_json::from_str("\"a/b\"");
        assert!(bad.is_err());
        let good: TopicName = serde_json::from_str("\"ab\"").unwrap();
        assert_eq!(good.as_str(), "ab");
    }
}
