//! Topic configs, with Kafka's names: the keys there are, the values each takes, and how a
//! topic's own values and the broker's defaults resolve into what the broker enforces.
//!
//! A topic's own values live in the replicated metadata, checked where a command applies
//! ([`check_topic_configs`]) so every node refuses the same ones, and normalised (`logappendtime`
//! is stored as `LogAppendTime`). The defaults are each node's (`[topic_defaults]` in its config
//! file), checked at start-up by the same rules.
//!
//! Retention (`retention.ms`, `retention.bytes`) applies to topics whose `cleanup.policy`
//! includes `delete`; compaction (`delete.retention.ms`, `min.compaction.lag.ms`,
//! `min.cleanable.dirty.ratio`) to those whose policy includes `compact`.

use std::collections::BTreeMap;

use super::bounds::truncated;

/// Kafka's `retention.ms`: how long a batch is kept after its newest record's timestamp; -1
/// keeps it forever.
pub const RETENTION_MS: &str = "retention.ms";
/// Kafka's `retention.bytes`: the most bytes one partition keeps; -1: no bound.
pub const RETENTION_BYTES: &str = "retention.bytes";
/// Kafka's `cleanup.policy`: `delete`, `compact`, or both.
pub const CLEANUP_POLICY: &str = "cleanup.policy";
/// Kafka's `delete.retention.ms`: how long compaction keeps tombstones.
pub const DELETE_RETENTION_MS: &str = "delete.retention.ms";
/// Kafka's `min.compaction.lag.ms`: how long a record stays uncompacted.
pub const MIN_COMPACTION_LAG_MS: &str = "min.compaction.lag.ms";
/// Kafka's `min.cleanable.dirty.ratio`: the share of a compacted partition's bytes not yet
/// compacted at which the next compaction runs.
pub const MIN_CLEANABLE_DIRTY_RATIO: &str = "min.cleanable.dirty.ratio";
/// Kafka's `max.message.bytes`: the largest record batch a producer may send to the topic.
pub const MAX_MESSAGE_BYTES: &str = "max.message.bytes";
/// Kafka's `message.timestamp.type`: `CreateTime` (the producer's) or `LogAppendTime` (the
/// partition leader's clock when it appends).
pub const MESSAGE_TIMESTAMP_TYPE: &str = "message.timestamp.type";

/// Every key, in the order descriptions list them.
pub const KEYS: [&str; 8] = [
    CLEANUP_POLICY,
    DELETE_RETENTION_MS,
    MAX_MESSAGE_BYTES,
    MESSAGE_TIMESTAMP_TYPE,
    MIN_CLEANABLE_DIRTY_RATIO,
    MIN_COMPACTION_LAG_MS,
    RETENTION_BYTES,
    RETENTION_MS,
];

/// Most topic configs a command may name.
const MAX_NAMED: usize = 64;

/// Whose timestamps a topic's records carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimestampType {
    /// The producer's.
    CreateTime,
    /// The partition leader's clock when it appends the batch.
    LogAppendTime,
}

/// Where an effective value comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigSource {
    /// Set on the topic.
    Topic,
    /// The node's `[topic_defaults]`, or the built-in default.
    Default,
}

/// A topic's configs as this node enforces them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TopicConfig {
    /// The largest record batch a producer may send, in bytes.
    pub max_message_bytes: usize,
    /// Whose timestamps the records carry.
    pub timestamp_type: TimestampType,
    /// How long a batch is kept after its newest record's timestamp; `None`: forever.
    pub retention_ms: Option<u64>,
    /// The most bytes of batches one partition keeps; `None`: no bound.
    pub retention_bytes: Option<u64>,
    /// `cleanup.policy` includes `delete`: retention applies.
    pub delete: bool,
    /// `cleanup.policy` includes `compact`: the partitions are compacted, and every record
    /// needs a key.
    pub compact: bool,
    /// How long a tombstone stays after its timestamp.
    pub delete_retention_ms: u64,
    /// How long a record stays uncompacted after its batch's newest timestamp.
    pub min_compaction_lag_ms: u64,
    /// The share of a partition's bytes not yet compacted at which it is compacted.
    pub min_cleanable_dirty_ratio: f64,
}

impl TopicConfig {
    /// What `topic` (a topic's own, checked values) over `defaults` (a node's, checked) comes to
    /// on a node whose largest batch is `max_batch_bytes`: `max.message.bytes` never exceeds it.
    pub fn resolve(
        topic: &BTreeMap<String, String>,
        defaults: &BTreeMap<String, String>,
        max_batch_bytes: usize,
    ) -> TopicConfig {
        let value = |key: &str| topic.get(key).or_else(|| defaults.get(key));
        let max_message_bytes = value(MAX_MESSAGE_BYTES)
            .and_then(|v| v.parse::<usize>().ok())
            .map_or(max_batch_bytes, |v| v.min(max_batch_bytes));
        let timestamp_type = match value(MESSAGE_TIMESTAMP_TYPE).map(String::as_str) {
            Some("LogAppendTime") => TimestampType::LogAppendTime,
            _ => TimestampType::CreateTime,
        };
        let bound = |key| {
            value(key)
                .and_then(|v| v.parse::<i64>().ok())
                .and_then(|v| u64::try_from(v).ok())
        };
        let policy = value(CLEANUP_POLICY).map_or("delete", String::as_str);
        let millis = |key| {
            value(key)
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or_else(|| built_in_default(key, 0).parse().unwrap_or(0))
        };
        TopicConfig {
            max_message_bytes,
            timestamp_type,
            retention_ms: bound(RETENTION_MS),
            retention_bytes: bound(RETENTION_BYTES),
            delete: policy.split(',').any(|p| p == "delete"),
            compact: policy.split(',').any(|p| p == "compact"),
            delete_retention_ms: millis(DELETE_RETENTION_MS),
            min_compaction_lag_ms: millis(MIN_COMPACTION_LAG_MS),
            min_cleanable_dirty_ratio: value(MIN_CLEANABLE_DIRTY_RATIO)
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or(DEFAULT_MIN_CLEANABLE_DIRTY_RATIO),
        }
    }
}

/// Every key with its effective value and where it comes from, in [`KEYS`] order: the topic's
/// own value, else the node's default, else the built-in one (`max.message.bytes`: the node's
/// `limits.max_batch_bytes`).
pub fn effective_configs(
    topic: &BTreeMap<String, String>,
    defaults: &BTreeMap<String, String>,
    max_batch_bytes: usize,
) -> Vec<(&'static str, String, ConfigSource)> {
    KEYS.iter()
        .map(|&key| match topic.get(key) {
            Some(value) => (key, value.clone(), ConfigSource::Topic),
            None => {
                let value = defaults
                    .get(key)
                    .cloned()
                    .unwrap_or_else(|| built_in_default(key, max_batch_bytes));
                (key, value, ConfigSource::Default)
            }
        })
        .collect()
}

/// The value a key has when neither the topic nor the node's config sets it.
fn built_in_default(key: &str, max_batch_bytes: usize) -> String {
    match key {
        RETENTION_MS | RETENTION_BYTES => "-1".to_owned(),
        CLEANUP_POLICY => "delete".to_owned(),
        // Kafka's: a day.
        DELETE_RETENTION_MS => "86400000".to_owned(),
        MIN_COMPACTION_LAG_MS => "0".to_owned(),
        MIN_CLEANABLE_DIRTY_RATIO => DEFAULT_MIN_CLEANABLE_DIRTY_RATIO.to_string(),
        MAX_MESSAGE_BYTES => max_batch_bytes.to_string(),
        MESSAGE_TIMESTAMP_TYPE => "CreateTime".to_owned(),
        _ => String::new(),
    }
}

/// Kafka's default `min.cleanable.dirty.ratio`.
const DEFAULT_MIN_CLEANABLE_DIRTY_RATIO: f64 = 0.5;

/// Checks one key and value; returns the value as it is stored (normalised). The error names
/// the key and says what it takes.
pub fn check_topic_config(key: &str, value: &str) -> Result<String, String> {
    let key_shown = truncated(key);
    let value_shown = format!("\"{}\"", truncated(value));
    let bad = |takes: &str| format!("{key_shown}={value_shown}: {key_shown} takes {takes}");
    let integer = |min: i64| -> Result<i64, String> {
        value
            .trim()
            .parse::<i64>()
            .ok()
            .filter(|v| *v >= min)
            .ok_or_else(|| bad(&format!("an integer of at least {min}")))
    };
    match key {
        RETENTION_MS | RETENTION_BYTES => Ok(integer(-1)?.to_string()),
        DELETE_RETENTION_MS | MIN_COMPACTION_LAG_MS => Ok(integer(0)?.to_string()),
        MAX_MESSAGE_BYTES => {
            let v = integer(0)?;
            if v > i64::from(i32::MAX) {
                return Err(bad("an integer from 0 to 2147483647"));
            }
            Ok(v.to_string())
        }
        CLEANUP_POLICY => {
            let mut policies: Vec<&str> = value.split(',').map(str::trim).collect();
            policies.sort_unstable();
            policies.dedup();
            match policies.as_slice() {
                ["delete"] | ["compact"] | ["compact", "delete"] => Ok(policies.join(",")),
                _ => Err(bad("delete, compact, or compact,delete")),
            }
        }
        MIN_CLEANABLE_DIRTY_RATIO => value
            .trim()
            .parse::<f64>()
            .ok()
            .filter(|v| (0.0..=1.0).contains(v))
            .map(|v| v.to_string())
            .ok_or_else(|| bad("a number from 0 to 1")),
        MESSAGE_TIMESTAMP_TYPE => match value.trim().to_ascii_lowercase().as_str() {
            "createtime" => Ok("CreateTime".to_owned()),
            "logappendtime" => Ok("LogAppendTime".to_owned()),
            _ => Err(bad("CreateTime or LogAppendTime")),
        },
        _ => Err(unknown_key(key)),
    }
}

/// Checks a set of topic configs; returns them normalised.
pub fn check_topic_configs(
    configs: &BTreeMap<String, String>,
) -> Result<BTreeMap<String, String>, String> {
    if configs.len() > MAX_NAMED {
        return Err(format!(
            "{} topic configs named; there are only {}",
            configs.len(),
            KEYS.len()
        ));
    }
    configs
        .iter()
        .map(|(key, value)| Ok((key.clone(), check_topic_config(key, value)?)))
        .collect()
}

/// The refusal of a key that is not a topic config.
fn unknown_key(key: &str) -> String {
    format!(
        "unknown topic config '{}'; the topic configs are {}",
        truncated(key),
        KEYS.join(", ")
    )
}

/// Changes `current` (checked, normalised) by setting `set` and removing `delete`; returns the
/// new configs, or what is wrong (a key both set and deleted, an unknown key, a bad value).
pub fn alter_topic_configs(
    current: &BTreeMap<String, String>,
    set: &BTreeMap<String, String>,
    delete: &[String],
) -> Result<BTreeMap<String, String>, String> {
    if delete.len() > MAX_NAMED {
        return Err(format!("{} topic configs to delete named", delete.len()));
    }
    let set = check_topic_configs(set)?;
    let mut altered = current.clone();
    for key in delete {
        if set.contains_key(key) {
            return Err(format!(
                "{} is both set and deleted; do one or the other",
                truncated(key)
            ));
        }
        if !KEYS.contains(&key.as_str()) {
            return Err(unknown_key(key));
        }
        altered.remove(key);
    }
    altered.extend(set);
    Ok(altered)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn configs(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn values_are_checked_and_normalised_and_errors_name_the_key() {
        assert_eq!(
            check_topic_config(MESSAGE_TIMESTAMP_TYPE, "logappendtime").as_deref(),
            Ok("LogAppendTime")
        );
        assert_eq!(
            check_topic_config(CLEANUP_POLICY, " delete ").as_deref(),
            Ok("delete")
        );
        assert_eq!(
            check_topic_config(MAX_MESSAGE_BYTES, "1048588").as_deref(),
            Ok("1048588")
        );
        for (key, value) in [
            (MAX_MESSAGE_BYTES, "-5"),
            (MAX_MESSAGE_BYTES, "3000000000"),
            (MAX_MESSAGE_BYTES, "lots"),
            (MESSAGE_TIMESTAMP_TYPE, "NowTime"),
            (DELETE_RETENTION_MS, "-1"),
            (CLEANUP_POLICY, "shred"),
            (RETENTION_MS, "-2"),
        ] {
            let err = check_topic_config(key, value).unwrap_err();
            assert!(err.starts_with(key), "{err}");
        }
        let unknown = check_topic_config("retention.minutes", "5").unwrap_err();
        assert!(unknown.contains("'retention.minutes'"), "{unknown}");
        let long = check_topic_config(&"k".repeat(10_000), "v").unwrap_err();
        assert!(long.len() < 400, "{long}");
    }

    #[test]
    fn retention_takes_minus_one_or_more_and_the_policies_combine() {
        assert_eq!(check_topic_config(RETENTION_MS, "-1").as_deref(), Ok("-1"));
        assert_eq!(
            check_topic_config(RETENTION_MS, " 3600000").as_deref(),
            Ok("3600000")
        );
        assert!(check_topic_config(RETENTION_MS, "-2").is_err());
        assert_eq!(
            check_topic_config(RETENTION_BYTES, "-1").as_deref(),
            Ok("-1")
        );
        assert_eq!(
            check_topic_config(RETENTION_BYTES, "1048576").as_deref(),
            Ok("1048576")
        );
        assert!(check_topic_config(RETENTION_BYTES, "lots").is_err());
        for (value, stored) in [
            ("compact", "compact"),
            ("delete, compact", "compact,delete"),
            ("compact,delete,compact", "compact,delete"),
        ] {
            assert_eq!(
                check_topic_config(CLEANUP_POLICY, value).as_deref(),
                Ok(stored)
            );
        }
        for (key, value) in [
            (CLEANUP_POLICY, "compact,shred"),
            (CLEANUP_POLICY, ""),
            (MIN_CLEANABLE_DIRTY_RATIO, "1.5"),
            (MIN_CLEANABLE_DIRTY_RATIO, "-0.1"),
            (MIN_CLEANABLE_DIRTY_RATIO, "NaN"),
        ] {
            let err = check_topic_config(key, value).unwrap_err();
            assert!(err.starts_with(key), "{err}");
        }
        let compacted = TopicConfig::resolve(
            &configs(&[
                (CLEANUP_POLICY, "compact"),
                (MIN_CLEANABLE_DIRTY_RATIO, "0.1"),
            ]),
            &BTreeMap::new(),
            1000,
        );
        assert!(compacted.compact && !compacted.delete);
        assert_eq!(compacted.min_cleanable_dirty_ratio, 0.1);
        assert_eq!(compacted.delete_retention_ms, 86_400_000);
        assert_eq!(compacted.min_compaction_lag_ms, 0);
        let default = TopicConfig::resolve(&BTreeMap::new(), &BTreeMap::new(), 1000);
        assert!(default.delete && !default.compact);
        assert_eq!(default.min_cleanable_dirty_ratio, 0.5);
    }

    #[test]
    fn the_topic_wins_over_the_defaults_and_the_node_bounds_the_batch_size() {
        let topic = configs(&[(MAX_MESSAGE_BYTES, "1000")]);
        let defaults = configs(&[
            (MAX_MESSAGE_BYTES, "5000"),
            (MESSAGE_TIMESTAMP_TYPE, "LogAppendTime"),
        ]);
        let resolved = TopicConfig::resolve(&topic, &defaults, 4000);
        assert_eq!(resolved.max_message_bytes, 1000);
        assert_eq!(resolved.timestamp_type, TimestampType::LogAppendTime);
        let bounded = TopicConfig::resolve(&BTreeMap::new(), &defaults, 4000);
        assert_eq!(bounded.max_message_bytes, 4000);

        let effective = effective_configs(&topic, &defaults, 4000);
        assert_eq!(effective.len(), KEYS.len());
        let find = |key| effective.iter().find(|(k, _, _)| *k == key).cloned();
        assert_eq!(
            find(MAX_MESSAGE_BYTES),
            Some((MAX_MESSAGE_BYTES, "1000".to_owned(), ConfigSource::Topic))
        );
        assert_eq!(
            find(MESSAGE_TIMESTAMP_TYPE),
            Some((
                MESSAGE_TIMESTAMP_TYPE,
                "LogAppendTime".to_owned(),
                ConfigSource::Default
            ))
        );
        assert_eq!(
            find(RETENTION_MS),
            Some((RETENTION_MS, "-1".to_owned(), ConfigSource::Default))
        );
    }

    #[test]
    fn an_alteration_sets_deletes_and_refuses_contradictions() {
        let current = configs(&[(MAX_MESSAGE_BYTES, "1000"), (CLEANUP_POLICY, "delete")]);
        let altered = alter_topic_configs(
            &current,
            &configs(&[(MESSAGE_TIMESTAMP_TYPE, "logappendtime")]),
            &[MAX_MESSAGE_BYTES.to_owned()],
        )
        .unwrap();
        assert_eq!(
            altered,
            configs(&[
                (CLEANUP_POLICY, "delete"),
                (MESSAGE_TIMESTAMP_TYPE, "LogAppendTime")
            ])
        );
        let both = alter_topic_configs(
            &current,
            &configs(&[(MAX_MESSAGE_BYTES, "5")]),
            &[MAX_MESSAGE_BYTES.to_owned()],
        )
        .unwrap_err();
        assert!(both.contains("both set and deleted"), "{both}");
        let unknown =
            alter_topic_configs(&current, &BTreeMap::new(), &["nope".to_owned()]).unwrap_err();
        assert!(unknown.contains("'nope'"), "{unknown}");
    }
}
