//! Partition assignors: which member of a group consumes which partition.
//!
//! Both are Kafka's, computed by the coordinator (as in Kafka's KIP-848 protocol) rather than by
//! a group leader among the clients, so clients in any language get the same assignment.
//! Members are ordered by member id; each only receives partitions of topics it subscribes to.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::str::FromStr;

use weir_types::TopicName;

/// One partition of one topic.
pub(crate) type TopicPartition = (TopicName, u32);

/// How partitions are spread over a group's members.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum Assignor {
    /// Per topic, each member gets a contiguous range of partitions; the first members get one
    /// more when the count does not divide evenly. Members subscribed to the same topics get
    /// the same partition numbers of each (useful for joining co-partitioned topics).
    #[default]
    Range,
    /// All partitions of all subscribed topics, dealt one at a time to the members in turn;
    /// spreads best when members subscribe to several small topics.
    RoundRobin,
}

impl FromStr for Assignor {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "" | "range" => Ok(Self::Range),
            "round-robin" | "roundrobin" => Ok(Self::RoundRobin),
            other => Err(format!(
                "unknown assignor '{other}': expected 'range' or 'round-robin'"
            )),
        }
    }
}

impl fmt::Display for Assignor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Range => "range",
            Self::RoundRobin => "round-robin",
        })
    }
}

impl Assignor {
    /// Assigns every partition of the subscribed topics that exist to exactly one member
    /// subscribed to its topic. `members` maps member ids to subscriptions; `partitions` gives
    /// each existing topic's partition count. Every member appears in the result, possibly
    /// with nothing.
    pub(crate) fn assign(
        self,
        members: &BTreeMap<String, BTreeSet<TopicName>>,
        partitions: &BTreeMap<TopicName, u32>,
    ) -> BTreeMap<String, BTreeSet<TopicPartition>> {
        let mut assignment: BTreeMap<String, BTreeSet<TopicPartition>> = members
            .keys()
            .map(|member| (member.clone(), BTreeSet::new()))
            .collect();
        let subscribers = |topic: &TopicName| -> Vec<&String> {
            members
                .iter()
                .filter(|(_, topics)| topics.contains(topic))
                .map(|(member, _)| member)
                .collect()
        };
        let subscribed: BTreeSet<&TopicName> = members.values().flatten().collect();
        match self {
            Self::Range => {
                for topic in subscribed {
                    let Some(&count) = partitions.get(topic) else {
                        continue;
                    };
                    let takers = subscribers(topic);
                    let (each, extra) = (count / takers.len() as u32, count % takers.len() as u32);
                    let mut next = 0;
                    for (i, member) in takers.into_iter().enumerate() {
                        let share = each + u32::from((i as u32) < extra);
                        let owned = assignment.entry(member.clone()).or_default();
                        owned.extend((next..next + share).map(|p| (topic.clone(), p)));
                        next += share;
                    }
                }
            }
            Self::RoundRobin => {
                let ids: Vec<&String> = members.keys().collect();
                let mut turn = 0;
                for topic in subscribed {
                    let Some(&count) = partitions.get(topic) else {
                        continue;
                    };
                    for partition in 0..count {
                        // Skip members not subscribed to this topic; one is, or the topic
                        // would not be in `subscribed`.
                        while !members[ids[turn % ids.len()]].contains(topic) {
                            turn += 1;
                        }
                        let member = ids[turn % ids.len()];
                        assignment
                            .entry(member.clone())
                            .or_default()
                            .insert((topic.clone(), partition));
                        turn += 1;
                    }
                }
            }
        }
        assignment
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topic(name: &str) -> TopicName {
        name.parse().unwrap()
    }

    fn members(list: &[(&str, &[&str])]) -> BTreeMap<String, BTreeSet<TopicName>> {
        list.iter()
            .map(|(m, topics)| (m.to_string(), topics.iter().map(|t| topic(t)).collect()))
            .collect()
    }

    fn counts(list: &[(&str, u32)]) -> BTreeMap<TopicName, u32> {
        list.iter().map(|(t, n)| (topic(t), *n)).collect()
    }

    fn partitions_of(assigned: &BTreeSet<TopicPartition>, name: &str) -> Vec<u32> {
        assigned
            .iter()
            .filter(|(t, _)| t.as_str() == name)
            .map(|(_, p)| *p)
            .collect()
    }

    #[test]
    fn range_gives_contiguous_shares_with_the_remainder_first() {
        let m = members(&[("a", &["t"]), ("b", &["t"]), ("c", &["t"])]);
        let out = Assignor::Range.assign(&m, &counts(&[("t", 7)]));
        assert_eq!(partitions_of(&out["a"], "t"), vec![0, 1, 2]);
        assert_eq!(partitions_of(&out["b"], "t"), vec![3, 4]);
        assert_eq!(partitions_of(&out["c"], "t"), vec![5, 6]);
    }

    #[test]
    fn both_assignors_split_six_partitions_two_each_over_three_members() {
        let m = members(&[("a", &["t"]), ("b", &["t"]), ("c", &["t"])]);
        for assignor in [Assignor::Range, Assignor::RoundRobin] {
            let out = assignor.assign(&m, &counts(&[("t", 6)]));
            let all: BTreeSet<_> = out.values().flatten().cloned().collect();
            assert_eq!(all.len(), 6, "{assignor}");
            assert!(out.values().all(|owned| owned.len() == 2), "{assignor}");
        }
    }

    #[test]
    fn round_robin_deals_across_topics_and_skips_members_not_subscribed() {
        let m = members(&[("a", &["t", "u"]), ("b", &["t"])]);
        let out = Assignor::RoundRobin.assign(&m, &counts(&[("t", 3), ("u", 2)]));
        assert_eq!(partitions_of(&out["a"], "t"), vec![0, 2]);
        assert_eq!(partitions_of(&out["b"], "t"), vec![1]);
        assert_eq!(partitions_of(&out["a"], "u"), vec![0, 1]);
        assert!(partitions_of(&out["b"], "u").is_empty());
    }

    #[test]
    fn more_members_than_partitions_leaves_some_idle_and_missing_topics_are_skipped() {
        let m = members(&[("a", &["t", "gone"]), ("b", &["t"]), ("c", &["t"])]);
        for assignor in [Assignor::Range, Assignor::RoundRobin] {
            let out = assignor.assign(&m, &counts(&[("t", 2)]));
            assert_eq!(out.len(), 3);
            assert_eq!(out.values().map(BTreeSet::len).sum::<usize>(), 2);
            assert!(out.values().flatten().all(|(t, _)| t.as_str() == "t"));
        }
    }

    #[test]
    fn assignor_names_parse_and_unknown_ones_are_refused() {
        assert_eq!("".parse::<Assignor>(), Ok(Assignor::Range));
        assert_eq!("round-robin".parse::<Assignor>(), Ok(Assignor::RoundRobin));
        assert!("sticky".parse::<Assignor>().unwrap_err().contains("sticky"));
    }
}
