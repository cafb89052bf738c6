//! Partition routing: which broker a partition's requests go to, and what a `NOT_LEADER` answer
//! teaches about it. Pure decisions over a [`LeaderCache`] and a loop that takes its attempts as
//! a closure, so the rules are tested without a network; [`Client`](crate::Client) supplies the
//! connections.
//!
//! Rules, for one call about one partition:
//! - The first attempt goes to the cached leader of the partition, or to the bootstrap broker when
//!   none is cached.
//! - `NOT_LEADER` with a usable `leader_address` hint: the hint becomes the cached leader, and the
//!   request is sent there at once, up to [`MAX_LEADER_HOPS`] times per call. A hint naming the
//!   broker that just answered is cached but not followed: that broker is taking over, and only
//!   time helps.
//! - `NOT_LEADER` without a usable hint, or a transport failure at a cached leader (unreachable,
//!   connection lost): the entry is dropped, so the next call starts from the bootstrap broker
//!   again, and the error is returned.
//! - Any other outcome leaves the cache as it is and is returned.
//!
//! An entry is only dropped if it still names the broker that failed: a concurrent call may have
//! learnt a newer leader meanwhile.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, PoisonError};

use crate::ClientError;
use crate::address::BrokerAddress;

/// Leader hints followed within one call before the last `NOT_LEADER` is returned. A partition
/// has one leader, so one hop normally suffices; more only help while leadership moves, and then
/// the caller's backoff serves better than hopping on.
pub(crate) const MAX_LEADER_HOPS: usize = 3;

/// The reason of the error a broker answers for a partition it does not lead.
const NOT_LEADER: &str = "NOT_LEADER";

/// The `NOT_LEADER` metadata key that carries the leader's `HOST:PORT`.
const LEADER_ADDRESS: &str = "leader_address";

/// The last known leader of each partition, learnt from `NOT_LEADER` hints.
#[derive(Debug, Default)]
pub(crate) struct LeaderCache {
    leaders: HashMap<String, HashMap<u32, BrokerAddress>>,
}

impl LeaderCache {
    /// The cached leader of `topic`/`partition`; `None` sends to the bootstrap broker.
    pub(crate) fn leader(&self, topic: &str, partition: u32) -> Option<BrokerAddress> {
        self.leaders.get(topic)?.get(&partition).cloned()
    }

    /// Applies what `err`, the failure of an attempt sent to `tried` (`None`: the bootstrap
    /// broker), says about the leader of `topic`/`partition`, and returns where to send the
    /// request next, if anywhere (see the module documentation).
    pub(crate) fn after_failure(
        &mut self,
        topic: &str,
        partition: u32,
        tried: Option<&BrokerAddress>,
        err: &ClientError,
    ) -> Option<BrokerAddress> {
        if err.reason() == Some(NOT_LEADER) {
            let hint = err
                .metadata(LEADER_ADDRESS)
                .and_then(|address| address.parse::<BrokerAddress>().ok());
            let Some(leader) = hint else {
                self.forget(topic, partition, tried);
                return None;
            };
            self.learn(topic, partition, leader.clone());
            return (tried != Some(&leader)).then_some(leader);
        }
        // No Weir reason and retriable: the broker never answered (refused, unreachable, cut
        // off). A cached leader that cannot be reached is no better a guess than the bootstrap.
        if err.reason().is_none() && err.is_retriable() {
            self.forget(topic, partition, tried);
        }
        None
    }

    fn learn(&mut self, topic: &str, partition: u32, leader: BrokerAddress) {
        match self.leaders.get_mut(topic) {
            Some(partitions) => {
                partitions.insert(partition, leader);
            }
            None => {
                self.leaders
                    .insert(topic.to_owned(), HashMap::from([(partition, leader)]));
            }
        }
    }

    /// Drops the entry of `topic`/`partition` if it still names `tried`.
    fn forget(&mut self, topic: &str, partition: u32, tried: Option<&BrokerAddress>) {
        let Some(tried) = tried else { return };
        let Some(partitions) = self.leaders.get_mut(topic) else {
            return;
        };
        if partitions.get(&partition) == Some(tried) {
            partitions.remove(&partition);
            if partitions.is_empty() {
                self.leaders.remove(topic);
            }
        }
    }
}

/// Locks the cache. Every update is a single insert or remove, so a panic elsewhere cannot
/// leave it half-changed, and a poisoned lock is still safe to use.
pub(crate) fn lock(cache: &Mutex<LeaderCache>) -> MutexGuard<'_, LeaderCache> {
    cache.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Sends a request about `topic`/`partition` with `attempt`, which gets the broker to send it to
/// (`None`: the bootstrap broker), following `NOT_LEADER` hints as the module documentation
/// says. Returns the first success, or the last error.
///
/// The cache is locked only between attempts, never across one.
pub(crate) async fn follow_leader<T, F, Fut>(
    cache: &Mutex<LeaderCache>,
    topic: &str,
    partition: u32,
    mut attempt: F,
) -> Result<T, ClientError>
where
    F: FnMut(Option<BrokerAddress>) -> Fut,
    Fut: Future<Output = Result<T, ClientError>>,
{
    let mut target = lock(cache).leader(topic, partition);
    let mut hops = 0;
    loop {
        let err = match attempt(target.clone()).await {
            Ok(value) => return Ok(value),
            Err(err) => err,
        };
        let next = lock(cache).after_failure(topic, partition, target.as_ref(), &err);
        match next {
            Some(leader) if hops < MAX_LEADER_HOPS => {
                hops += 1;
                target = Some(leader);
            }
            _ => return Err(err),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;

    use futures::executor::block_on;
    use tonic::Code;
    use weir_proto::error::status_with_reason;

    use super::*;

    fn address(addr: &str) -> BrokerAddress {
        addr.parse().expect("valid test address")
    }

    fn not_leader(leader_address: Option<&str>) -> ClientError {
        let metadata = leader_address
            .map(|address| (LEADER_ADDRESS.to_owned(), address.to_owned()))
            .into_iter()
            .chain([("leader".to_owned(), "2".to_owned())]);
        status_with_reason(
            Code::FailedPrecondition,
            "not the leader",
            NOT_LEADER,
            metadata,
        )
        .into()
    }

    fn unreachable() -> ClientError {
        tonic::Status::unavailable("connection refused").into()
    }

    fn unknown_topic() -> ClientError {
        status_with_reason(Code::NotFound, "no such topic", "UNKNOWN_TOPIC", []).into()
    }

    #[test]
    fn a_hint_is_cached_per_partition_and_followed() {
        let mut cache = LeaderCache::default();
        let next = cache.after_failure("orders", 3, None, &not_leader(Some("node-2:7070")));
        assert_eq!(next, Some(address("node-2:7070")));
        assert_eq!(
            cache.leader("orders", 3),
            Some(address("http://node-2:7070"))
        );
        assert_eq!(
            cache.leader("orders", 2),
            None,
            "other partitions are unaffected"
        );
        assert_eq!(
            cache.leader("other", 3),
            None,
            "other topics are unaffected"
        );

        let next = cache.after_failure(
            "orders",
            3,
            Some(&address("node-2:7070")),
            &not_leader(Some("node-3:7070")),
        );
        assert_eq!(
            next,
            Some(address("node-3:7070")),
            "a newer hint replaces the old"
        );
        assert_eq!(cache.leader("orders", 3), Some(address("node-3:7070")));
    }

    #[test]
    fn a_hint_naming_the_broker_that_answered_is_kept_but_not_followed() {
        let mut cache = LeaderCache::default();
        let node_2 = address("node-2:7070");
        let next = cache.after_failure("t", 0, Some(&node_2), &not_leader(Some("node-2:7070")));
        assert_eq!(next, None);
        assert_eq!(cache.leader("t", 0), Some(node_2));
    }

    #[test]
    fn not_leader_without_a_usable_hint_drops_the_entry() {
        for err in [not_leader(None), not_leader(Some("no port here"))] {
            let mut cache = LeaderCache::default();
            let node_2 = address("node-2:7070");
            cache.learn("t", 0, node_2.clone());
            assert_eq!(cache.after_failure("t", 0, Some(&node_2), &err), None);
            assert_eq!(cache.leader("t", 0), None, "{err}");
        }
    }

    #[test]
    fn an_unreachable_cached_leader_is_dropped() {
        let mut cache = LeaderCache::default();
        let node_2 = address("node-2:7070");
        cache.learn("t", 0, node_2.clone());
        assert_eq!(
            cache.after_failure("t", 0, Some(&node_2), &unreachable()),
            None
        );
        assert_eq!(cache.leader("t", 0), None);
    }

    #[test]
    fn only_the_entry_of_the_broker_that_failed_is_dropped() {
        let mut cache = LeaderCache::default();
        let (node_2, node_3) = (address("node-2:7070"), address("node-3:7070"));
        // Another call learnt node 3 while this one was waiting on node 2.
        cache.learn("t", 0, node_3.clone());
        cache.after_failure("t", 0, Some(&node_2), &unreachable());
        cache.after_failure("t", 0, Some(&node_2), &not_leader(None));
        cache.after_failure("t", 0, None, &not_leader(None));
        assert_eq!(cache.leader("t", 0), Some(node_3));
    }

    #[test]
    fn errors_about_the_request_leave_the_cache_alone() {
        let mut cache = LeaderCache::default();
        let node_2 = address("node-2:7070");
        cache.learn("t", 0, node_2.clone());
        assert_eq!(
            cache.after_failure("t", 0, Some(&node_2), &unknown_topic()),
            None
        );
        let invalid = ClientError::InvalidArgument("offset".to_owned());
        assert_eq!(cache.after_failure("t", 0, Some(&node_2), &invalid), None);
        assert_eq!(cache.leader("t", 0), Some(node_2));
    }

    /// Runs `follow_leader` with attempts answered by `answer` (by attempt number), and returns
    /// the result and the brokers tried, in order.
    fn run(
        cache: &Mutex<LeaderCache>,
        answer: impl Fn(usize) -> Result<u64, ClientError>,
    ) -> (Result<u64, ClientError>, Vec<Option<String>>) {
        let tried = RefCell::new(Vec::new());
        let result = block_on(follow_leader(cache, "t", 0, |target| {
            let mut tried = tried.borrow_mut();
            tried.push(target.map(|t| t.to_string()));
            let result = answer(tried.len());
            async move { result }
        }));
        (result, tried.into_inner())
    }

    #[test]
    fn a_call_follows_the_hint_to_the_leader_and_the_next_call_starts_there() {
        let cache = Mutex::new(LeaderCache::default());
        let (result, tried) = run(&cache, |n| match n {
            1 => Err(not_leader(Some("node-2:7070"))),
            _ => Ok(42),
        });
        assert_eq!(result.ok(), Some(42));
        assert_eq!(tried, [None, Some("node-2:7070".to_owned())]);

        let (result, tried) = run(&cache, |_| Ok(7));
        assert_eq!(result.ok(), Some(7));
        assert_eq!(
            tried,
            [Some("node-2:7070".to_owned())],
            "straight to the leader"
        );
    }

    #[test]
    fn hops_are_limited_and_the_last_not_leader_is_returned_retriable() {
        let cache = Mutex::new(LeaderCache::default());
        let (result, tried) = run(&cache, |n| Err(not_leader(Some(&format!("node-{n}:7070")))));
        let err = result.expect_err("every broker says not me");
        assert_eq!(err.reason(), Some(NOT_LEADER));
        assert!(err.is_retriable(), "the caller's backoff takes over");
        assert_eq!(tried.len(), 1 + MAX_LEADER_HOPS);
        assert_eq!(
            tried,
            [
                None,
                Some("node-1:7070"),
                Some("node-2:7070"),
                Some("node-3:7070")
            ]
            .map(|t| t.map(str::to_owned))
        );
        assert_eq!(
            lock(&cache).leader("t", 0),
            Some(address("node-4:7070")),
            "the last hint is remembered for the next call"
        );
    }

    #[test]
    fn an_unreachable_leader_fails_the_call_and_the_next_starts_at_the_bootstrap() {
        let cache = Mutex::new(LeaderCache::default());
        let (result, tried) = run(&cache, |n| match n {
            1 => Err(not_leader(Some("node-2:7070"))),
            _ => Err(unreachable()),
        });
        assert!(result.expect_err("node 2 is down").is_retriable());
        assert_eq!(tried, [None, Some("node-2:7070".to_owned())]);
        assert_eq!(lock(&cache).leader("t", 0), None);

        let (_, tried) = run(&cache, |_| Ok(1));
        assert_eq!(tried, [None]);
    }

    #[test]
    fn not_leader_without_a_hint_is_returned_at_once() {
        let cache = Mutex::new(LeaderCache::default());
        let (result, tried) = run(&cache, |_| Err(not_leader(None)));
        assert_eq!(result.expect_err("no hint").reason(), Some(NOT_LEADER));
        assert_eq!(tried, [None]);
    }
}
