//! [`Consumer`]: reads records from assigned partitions, alone or as a member of a consumer
//! group, and commits its position.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures::stream::FuturesUnordered;
use futures::{FutureExt, Stream, StreamExt};
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::consume::AtOffset;
use crate::group::TopicPartition;
use crate::{
    Client, ClientError, ConsumedRecord, FetchSpec, Fetched, ModuleRef, OffsetSpec, RejectedOffset,
};

/// Where a consumer starts in a partition its group has no committed offset for (Kafka's
/// `auto.offset.reset`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OffsetReset {
    /// At the log start.
    Earliest,
    /// At the high watermark: only records produced from now on. Kafka's default.
    #[default]
    Latest,
}

impl From<OffsetReset> for OffsetSpec {
    fn from(reset: OffsetReset) -> Self {
        match reset {
            OffsetReset::Earliest => OffsetSpec::Earliest,
            OffsetReset::Latest => OffsetSpec::Latest,
        }
    }
}

/// How a [`Consumer`] behaves. Defaults follow the Kafka Java client's.
#[derive(Debug, Clone)]
pub struct ConsumerConfig {
    /// The consumer group; required for [`Consumer::subscribe`] and for committing.
    pub group: Option<String>,
    /// Names the application in group descriptions.
    pub client_id: String,
    /// Commit the position of everything [`Consumer::poll`] returned every
    /// `auto_commit_interval`, before giving up a partition, and on [`Consumer::close`].
    pub auto_commit: bool,
    /// See `auto_commit`; 5 s by default.
    pub auto_commit_interval: Duration,
    /// The member is dropped from the group when it has not heartbeat for this long; 10 s by
    /// default (the broker clamps it to its bounds).
    pub session_timeout: Duration,
    /// `range` (the default) or `round-robin`; see docs/consumer-groups.md.
    pub assignor: String,
    /// Where to start without a committed offset.
    pub offset_reset: OffsetReset,
    /// How long one fetch waits at the end of a partition; 500 ms by default.
    pub fetch_max_wait: Duration,
    /// Bytes of record batches one fetch of one partition asks for (Kafka's
    /// `max.partition.fetch.bytes`); a batch larger than this still comes, alone. 0, the default,
    /// asks for the broker's `limits.max_fetch_bytes` (4 MiB unless configured). A consumer holds
    /// up to one answer per partition that `poll` has not returned: this bounds its memory.
    pub fetch_max_bytes: u32,
    /// A module chain run over every fetch (empty: the topics' consume chains).
    pub modules: Vec<ModuleRef>,
}

impl Default for ConsumerConfig {
    fn default() -> Self {
        Self {
            group: None,
            client_id: "weir-consumer".into(),
            auto_commit: true,
            auto_commit_interval: Duration::from_secs(5),
            session_timeout: Duration::from_secs(10),
            assignor: "range".into(),
            offset_reset: OffsetReset::Latest,
            fetch_max_wait: Duration::from_millis(500),
            fetch_max_bytes: 0,
            modules: Vec::new(),
        }
    }
}

impl ConsumerConfig {
    /// The defaults, in consumer group `group`.
    pub fn with_group(group: impl Into<String>) -> Self {
        Self {
            group: Some(group.into()),
            ..Self::default()
        }
    }
}

/// A record and where it was read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerRecord {
    /// The topic (shared by the records of a fetch).
    pub topic: Arc<str>,
    /// The partition.
    pub partition: u32,
    /// The record, with its offset.
    pub record: ConsumedRecord,
}

/// A partition being consumed.
#[derive(Debug, Clone)]
struct Position {
    /// The offset of the next record to return.
    next: u64,
    /// What was last committed (or found committed), to skip commits that change nothing.
    committed: Option<u64>,
    /// Bumped by seeks, so a fetch started before one is discarded.
    epoch: u64,
    /// After a failed fetch, the next one waits until then.
    retry_at: Option<Instant>,
}

/// Module rejections kept for [`Consumer::take_rejected`]; older ones are dropped beyond this.
const MAX_REJECTED_KEPT: usize = 1024;

/// The `from` of a fetch result that re-positions the partition (after OFFSET_OUT_OF_RANGE).
const REPOSITION: u64 = u64::MAX;

/// What the heartbeat task and [`Consumer::poll`] share.
#[derive(Debug, Default)]
struct Membership {
    member_id: Option<String>,
    /// The latest assignment from the coordinator, not yet applied by `poll`.
    pending: Option<BTreeSet<TopicPartition>>,
    /// What `poll` has applied: reported in every heartbeat.
    owned: BTreeSet<TopicPartition>,
    /// A failure the task cannot recover from, reported by the next `poll`.
    failed: Option<ClientError>,
    closed: bool,
}

/// A fetch's answer as [`Consumer::poll`] takes it: its records decoded straight into
/// [`ConsumerRecord`]s on the fetch's task, so that `poll` moves each partition's records as one
/// block rather than one by one.
type Answer = Fetched<ConsumerRecord>;

type FetchResult = (TopicPartition, u64, u64, Result<Answer, ClientError>);

impl AtOffset for ConsumerRecord {
    fn offset(&self) -> u64 {
        self.record.offset
    }
}

/// A fetch running on a task of its own, so that the response of each partition is decoded on
/// whichever worker thread is free rather than on the task calling [`Consumer::poll`], which
/// would then decode every partition's records alone. Aborted when dropped (a consumer closed
/// or dropped does not leave its fetches running).
struct FetchTask(tokio::task::JoinHandle<FetchResult>);

impl FetchTask {
    fn spawn(
        tp: TopicPartition,
        from: u64,
        epoch: u64,
        fetch: impl Future<Output = Result<Answer, ClientError>> + Send + 'static,
    ) -> Self {
        Self(tokio::spawn(async move {
            let answer = fetch.await;
            (tp, from, epoch, answer)
        }))
    }
}

impl Future for FetchTask {
    type Output = Result<FetchResult, tokio::task::JoinError>;

    fn poll(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        Pin::new(&mut self.0).poll(cx)
    }
}

impl Drop for FetchTask {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A consumer: `subscribe` to topics as a member of a group, or `assign` partitions yourself,
/// then `poll` for records (or use [`Consumer::stream`]) and `commit` the position.
///
/// In a group, a background task joins and heartbeats; assignment changes are applied inside
/// [`Consumer::poll`], as in the Kafka client: a partition taken away is committed (with
/// auto-commit) and dropped there, and its new owner starts only after that, from the
/// committed offset. So, committing after processing, no committed record is delivered twice;
/// records processed but not committed when a partition moves (or a consumer dies) are
/// delivered again to the next owner: at-least-once. A member whose heartbeats go unanswered for
/// a whole session (the coordinator unreachable) gives up its partitions, since the coordinator
/// may have given them to others, and joins again.
///
/// ```no_run
/// use weir_client::{Client, Consumer, ConsumerConfig, OffsetReset};
///
/// # async fn run() -> Result<(), weir_client::ClientError> {
/// let client = Client::connect("127.0.0.1:7070").await?;
/// let mut config = ConsumerConfig::with_group("billing");
/// config.offset_reset = OffsetReset::Earliest;
/// config.auto_commit = false;
/// let mut consumer = Consumer::new(client, config);
/// consumer.subscribe(&["orders"]).await?;
/// loop {
///     for record in consumer.poll().await? {
///         println!("{}/{}@{}: {:?}", record.topic, record.partition, record.record.offset, record.record.value);
///     }
///     consumer.commit().await?;
/// }
/// # }
/// ```
pub struct Consumer {
    client: Client,
    config: ConsumerConfig,
    positions: BTreeMap<TopicPartition, Position>,
    fetches: FuturesUnordered<FetchTask>,
    fetching: BTreeSet<TopicPartition>,
    membership: Arc<Mutex<Membership>>,
    /// Wakes the heartbeat task when `poll` applied an assignment, so the release is reported
    /// at once.
    applied: Arc<Notify>,
    /// Wakes a `poll` waiting for its first assignment when the heartbeat task received one.
    assigned: Arc<Notify>,
    heartbeat: Option<tokio::task::JoinHandle<()>>,
    last_auto_commit: Instant,
    buffered: VecDeque<ConsumerRecord>,
    rejected: VecDeque<(TopicPartition, RejectedOffset)>,
}

fn lock(membership: &Mutex<Membership>) -> std::sync::MutexGuard<'_, Membership> {
    membership.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Consumer {
    /// A consumer over `client`; it reads nothing until [`Consumer::subscribe`] or
    /// [`Consumer::assign`].
    pub fn new(client: Client, config: ConsumerConfig) -> Self {
        Self {
            client,
            config,
            positions: BTreeMap::new(),
            fetches: FuturesUnordered::new(),
            fetching: BTreeSet::new(),
            membership: Arc::default(),
            applied: Arc::new(Notify::new()),
            assigned: Arc::new(Notify::new()),
            heartbeat: None,
            last_auto_commit: Instant::now(),
            buffered: VecDeque::new(),
            rejected: VecDeque::new(),
        }
    }

    fn group(&self) -> Result<&str, ClientError> {
        self.config.group.as_deref().ok_or_else(|| {
            ClientError::InvalidArgument(
                "this consumer has no group (ConsumerConfig::group)".into(),
            )
        })
    }

    /// Joins the consumer's group subscribed to `topics`. The group's coordinator assigns
    /// partitions; the first `poll` calls after joining pick them up. Fails at once for an
    /// unknown topic or a group using another assignor (nothing is joined then).
    pub async fn subscribe(&mut self, topics: &[&str]) -> Result<(), ClientError> {
        let group = self.group()?.to_owned();
        if self.heartbeat.is_some() {
            return Err(ClientError::InvalidArgument(
                "this consumer is subscribed already".into(),
            ));
        }
        let topics: Vec<String> = topics.iter().map(|t| (*t).to_owned()).collect();
        let session_ms = u32::try_from(self.config.session_timeout.as_millis()).unwrap_or(u32::MAX);
        // The first join happens here, so its errors reach the caller.
        let sent = Instant::now();
        let joined = self
            .client
            .join_group(
                &group,
                &topics,
                &self.config.assignor,
                session_ms,
                &self.config.client_id,
            )
            .await?;
        lock(&self.membership).member_id = Some(joined.member_id);
        let task = HeartbeatTask {
            client: self.client.clone(),
            group,
            topics,
            assignor: self.config.assignor.clone(),
            session_ms,
            client_id: self.config.client_id.clone(),
            membership: self.membership.clone(),
            applied: self.applied.clone(),
            assigned: self.assigned.clone(),
            interval: Duration::from_millis(u64::from(joined.heartbeat_interval_ms.max(1))),
            session: granted_session(joined.session_timeout_ms, self.config.session_timeout),
            heard_at: sent,
        };
        self.heartbeat = Some(tokio::spawn(task.run()));
        Ok(())
    }

    /// Consumes `partitions` outside any group membership, each from the group's committed
    /// offset (when the consumer has a group) or else where [`ConsumerConfig::offset_reset`]
    /// says.
    pub async fn assign(&mut self, partitions: &[TopicPartition]) -> Result<(), ClientError> {
        if self.heartbeat.is_some() {
            return Err(ClientError::InvalidArgument(
                "this consumer is subscribed to a group; assign is for consumers outside one"
                    .into(),
            ));
        }
        self.positions.clear();
        self.start(partitions.iter().cloned().collect()).await
    }

    /// Starts consuming `partitions` from their committed offsets or the reset position.
    async fn start(&mut self, partitions: BTreeSet<TopicPartition>) -> Result<(), ClientError> {
        if partitions.is_empty() {
            return Ok(());
        }
        let wanted: Vec<TopicPartition> = partitions.iter().cloned().collect();
        let committed: BTreeMap<TopicPartition, u64> = match &self.config.group {
            Some(group) => self
                .client
                .committed_offsets(group, &wanted)
                .await?
                .into_iter()
                .map(|c| (c.partition, c.offset))
                .collect(),
            None => BTreeMap::new(),
        };
        for tp in wanted {
            let next = match committed.get(&tp) {
                Some(&offset) => offset,
                None => reset_position(&self.client, self.config.offset_reset, &tp).await?,
            };
            let committed = committed.get(&tp).copied();
            self.positions.insert(
                tp,
                Position {
                    next,
                    committed,
                    epoch: 0,
                    retry_at: None,
                },
            );
        }
        Ok(())
    }

    /// The partitions being consumed now.
    pub fn assignment(&self) -> Vec<TopicPartition> {
        self.positions.keys().cloned().collect()
    }

    /// The offset of the next record `poll` returns from `partition`, if it is consumed.
    pub fn position(&self, partition: &TopicPartition) -> Option<u64> {
        self.positions.get(partition).map(|p| p.next)
    }

    /// Continues `partition` at `offset` from the next `poll` on.
    pub fn seek(&mut self, partition: &TopicPartition, offset: u64) -> Result<(), ClientError> {
        let position = self.positions.get_mut(partition).ok_or_else(|| {
            ClientError::InvalidArgument(format!("{partition} is not assigned to this consumer"))
        })?;
        position.next = offset;
        position.epoch += 1;
        self.buffered
            .retain(|r| *r.topic != *partition.topic || r.partition != partition.partition);
        Ok(())
    }

    /// Applies an assignment the heartbeat task received: commits and drops partitions taken
    /// away, starts new ones.
    async fn apply_assignment(&mut self) -> Result<(), ClientError> {
        let pending = {
            let mut membership = lock(&self.membership);
            if let Some(error) = membership.failed.take() {
                return Err(error);
            }
            membership.pending.take()
        };
        let Some(assignment) = pending else {
            return Ok(());
        };
        match self.change_assignment(&assignment).await {
            Ok(()) => {
                lock(&self.membership).owned = self.positions.keys().cloned().collect();
                self.applied.notify_one();
                Ok(())
            }
            Err(e) => {
                // Not fully applied (the coordinator or a partition leader was unreachable
                // while reading where to start): the next poll tries again, unless a newer
                // assignment came meanwhile.
                lock(&self.membership).pending.get_or_insert(assignment);
                if e.is_retriable() { Ok(()) } else { Err(e) }
            }
        }
    }

    /// Commits (with auto-commit) and drops the partitions `assignment` no longer holds, and
    /// starts the ones it adds.
    async fn change_assignment(
        &mut self,
        assignment: &BTreeSet<TopicPartition>,
    ) -> Result<(), ClientError> {
        let revoked: Vec<TopicPartition> = self
            .positions
            .keys()
            .filter(|tp| !assignment.contains(*tp))
            .cloned()
            .collect();
        if !revoked.is_empty() && self.config.auto_commit {
            // Best effort: a member that was removed cannot commit any more.
            let _ = self.commit_partitions(&revoked).await;
        }
        for tp in &revoked {
            self.positions.remove(tp);
        }
        self.buffered.retain(|r| {
            assignment.contains(&TopicPartition::new(r.topic.to_string(), r.partition))
        });
        let added: BTreeSet<TopicPartition> = assignment
            .iter()
            .filter(|tp| !self.positions.contains_key(*tp))
            .cloned()
            .collect();
        self.start(added).await
    }

    /// Waits (up to about [`ConsumerConfig::fetch_max_wait`]) for records from the assigned
    /// partitions and returns them; an empty result means none arrived in time. Also applies
    /// group assignment changes and, with auto-commit, commits what earlier polls returned.
    pub async fn poll(&mut self) -> Result<Vec<ConsumerRecord>, ClientError> {
        if self.config.auto_commit
            && self.config.group.is_some()
            && self.last_auto_commit.elapsed() >= self.config.auto_commit_interval
        {
            self.last_auto_commit = Instant::now();
            // A failed auto-commit is retried at the next interval, as in Kafka.
            let _ = self.commit().await;
        }
        self.apply_assignment().await?;
        if !self.buffered.is_empty() {
            return Ok(self.buffered.drain(..).collect());
        }
        self.start_fetches();
        let mut out = Vec::new();
        let deadline = Instant::now() + self.config.fetch_max_wait + Duration::from_millis(100);
        if self.fetches.is_empty() {
            // Nothing assigned yet: wait for an assignment instead of spinning.
            let _ =
                tokio::time::timeout(self.config.fetch_max_wait, self.assigned.notified()).await;
            return Ok(out);
        }
        match tokio::time::timeout_at(deadline, self.fetches.next()).await {
            Ok(Some(result)) => self.take(result, &mut out)?,
            Ok(None) | Err(_) => return Ok(out),
        }
        // Whatever else is ready now comes along.
        while let Some(Some(result)) = self.fetches.next().now_or_never() {
            self.take(result, &mut out)?;
        }
        // As Kafka's consumer does, fetch on from the new positions before the application
        // takes the records, so that the broker reads the next answer while it works on these
        // (the next poll finds it ready). Still one fetch per partition, so as much is buffered
        // as before.
        self.start_fetches();
        Ok(out)
    }

    /// Takes a fetch task's result; a task that panicked is a bug of this crate, reported as
    /// such (its partition is fetched again by the next poll).
    fn take(
        &mut self,
        finished: Result<FetchResult, tokio::task::JoinError>,
        out: &mut Vec<ConsumerRecord>,
    ) -> Result<(), ClientError> {
        match finished {
            Ok(result) => self.take_fetched(result, out),
            Err(e) => {
                // The task's partition is unknown here: forget every fetch in flight, so each
                // partition is fetched again (results of the others are discarded by epoch).
                for position in self.positions.values_mut() {
                    position.epoch += 1;
                }
                self.fetching.clear();
                self.fetches.clear();
                Err(ClientError::InvalidArgument(format!(
                    "a fetch task failed: {e}"
                )))
            }
        }
    }

    fn start_fetches(&mut self) {
        for (tp, position) in &self.positions {
            if self.fetching.contains(tp) {
                continue;
            }
            let mut spec = FetchSpec::new(tp.topic.clone(), tp.partition, position.next)
                .with_max_wait_ms(self.config.fetch_max_wait.as_millis() as u32)
                .with_max_bytes(self.config.fetch_max_bytes);
            spec.modules = self.config.modules.clone();
            let client = self.client.clone();
            let (tp2, from, epoch) = (tp.clone(), position.next, position.epoch);
            let (topic, partition): (Arc<str>, u32) = (tp.topic.as_str().into(), tp.partition);
            let retry_at = position.retry_at;
            self.fetching.insert(tp.clone());
            self.fetches
                .push(FetchTask::spawn(tp2, from, epoch, async move {
                    if let Some(at) = retry_at {
                        tokio::time::sleep_until(at).await;
                    }
                    let keep = |record| ConsumerRecord {
                        topic: topic.clone(),
                        partition,
                        record,
                    };
                    client.fetch_into(spec, keep).await
                }));
        }
    }

    /// Takes one fetch's records if they still continue the partition's position.
    fn take_fetched(
        &mut self,
        result: FetchResult,
        out: &mut Vec<ConsumerRecord>,
    ) -> Result<(), ClientError> {
        let (tp, from, epoch, fetched) = result;
        self.fetching.remove(&tp);
        let Some(position) = self.positions.get_mut(&tp) else {
            return Ok(());
        };
        if position.epoch != epoch || (from != REPOSITION && position.next != from) {
            return Ok(());
        }
        position.retry_at = None;
        match fetched {
            Ok(mut answer) => {
                position.next = answer.next_offset;
                for rejected in answer.rejected {
                    if self.rejected.len() == MAX_REJECTED_KEPT {
                        self.rejected.pop_front();
                    }
                    self.rejected.push_back((tp.clone(), rejected));
                }
                if out.is_empty() {
                    *out = answer.records;
                } else {
                    out.append(&mut answer.records);
                }
                Ok(())
            }
            Err(e) if e.reason() == Some("OFFSET_OUT_OF_RANGE") => {
                // The position fell out of the log (retention) or is past its end: start
                // again where the reset policy says, on the next poll.
                position.epoch += 1;
                let spec = OffsetSpec::from(self.config.offset_reset);
                let client = self.client.clone();
                let tp2 = tp.clone();
                self.fetching.insert(tp.clone());
                let epoch = position.epoch;
                let (topic, partition) = (tp2.topic.clone(), tp2.partition);
                self.fetches
                    .push(FetchTask::spawn(tp2, REPOSITION, epoch, async move {
                        let listed = client.list_offsets(topic, partition, spec).await;
                        listed.map(|l| Fetched {
                            records: Vec::new(),
                            high_watermark: l.high_watermark,
                            next_offset: l.offset.unwrap_or(l.high_watermark),
                            rejected: Vec::new(),
                            log_start_offset: l.log_start_offset,
                        })
                    }));
                Ok(())
            }
            Err(e) if e.is_retriable() => {
                // Leadership moving or a broker restarting: try again shortly.
                position.retry_at = Some(Instant::now() + Duration::from_millis(200));
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// The records as a stream: `poll` in a loop, one record at a time. Ends after yielding
    /// an error.
    pub fn stream(&mut self) -> impl Stream<Item = Result<ConsumerRecord, ClientError>> + '_ {
        futures::stream::unfold(
            (self, VecDeque::new(), false),
            |(consumer, mut ready, failed)| async move {
                if failed {
                    return None;
                }
                loop {
                    if let Some(record) = ready.pop_front() {
                        return Some((Ok(record), (consumer, ready, false)));
                    }
                    match consumer.poll().await {
                        Ok(records) => ready.extend(records),
                        Err(e) => return Some((Err(e), (consumer, ready, true))),
                    }
                }
            },
        )
    }

    /// Records of the consume chain ([`ConsumerConfig::modules`] or the topic's) that a module
    /// rejected since the last call, oldest first (at most the last 1024). `poll` moves past
    /// them as past records a module filtered out, so they are not read again.
    pub fn take_rejected(&mut self) -> Vec<(TopicPartition, RejectedOffset)> {
        self.rejected.drain(..).collect()
    }

    /// Commits the position of every consumed partition (the offset after the last record
    /// `poll` returned) and waits for the coordinator to acknowledge it.
    pub async fn commit(&mut self) -> Result<(), ClientError> {
        let partitions: Vec<TopicPartition> = self.positions.keys().cloned().collect();
        self.commit_partitions(&partitions).await
    }

    /// Starts committing the current positions in the background and returns at once; the
    /// returned handle tells how it went. Positions committed this way are not remembered as
    /// committed, so a later [`Consumer::commit`] sends them again.
    pub fn commit_async(&self) -> tokio::task::JoinHandle<Result<(), ClientError>> {
        let offsets = self.changed_offsets(&self.assignment());
        let (client, group) = (self.client.clone(), self.config.group.clone());
        let member_id = lock(&self.membership).member_id.clone().unwrap_or_default();
        tokio::spawn(async move {
            let Some(group) = group else {
                return Err(ClientError::InvalidArgument(
                    "this consumer has no group".into(),
                ));
            };
            if offsets.is_empty() {
                return Ok(());
            }
            client.commit_offsets(&group, &member_id, &offsets).await
        })
    }

    fn changed_offsets(&self, partitions: &[TopicPartition]) -> Vec<(TopicPartition, u64)> {
        partitions
            .iter()
            .filter_map(|tp| {
                let p = self.positions.get(tp)?;
                (p.committed != Some(p.next)).then(|| (tp.clone(), p.next))
            })
            .collect()
    }

    async fn commit_partitions(
        &mut self,
        partitions: &[TopicPartition],
    ) -> Result<(), ClientError> {
        let offsets = self.changed_offsets(partitions);
        if offsets.is_empty() {
            // Still refuse a consumer without a group, as any commit does.
            return self.group().map(drop);
        }
        self.commit_offsets(&offsets).await
    }

    /// Commits the given offsets instead of the current positions (each the offset of the
    /// next record to read from its partition), as Kafka's `commitSync(offsets)`: to commit
    /// part of what `poll` returned, say up to the last record processed. In a group, each
    /// partition must be assigned to this consumer (`NOT_ASSIGNED` otherwise); an offset past
    /// the partition's end is refused (`OFFSET_OUT_OF_RANGE`), and then nothing is committed.
    pub async fn commit_offsets(
        &mut self,
        offsets: &[(TopicPartition, u64)],
    ) -> Result<(), ClientError> {
        let group = self.group()?.to_owned();
        let member_id = lock(&self.membership).member_id.clone().unwrap_or_default();
        self.client
            .commit_offsets(&group, &member_id, offsets)
            .await?;
        for (tp, offset) in offsets {
            if let Some(p) = self.positions.get_mut(tp) {
                p.committed = Some(*offset);
            }
        }
        Ok(())
    }

    /// Commits (with auto-commit) and leaves the group, so its partitions move to the other
    /// members at once instead of after the session timeout.
    pub async fn close(mut self) -> Result<(), ClientError> {
        let committed = if self.config.auto_commit && self.config.group.is_some() {
            self.commit().await
        } else {
            Ok(())
        };
        self.leave().await;
        committed
    }

    async fn leave(&mut self) {
        let member_id = {
            let mut membership = lock(&self.membership);
            membership.closed = true;
            membership.member_id.take()
        };
        if let Some(task) = self.heartbeat.take() {
            task.abort();
        }
        if let (Some(group), Some(member_id)) = (&self.config.group, member_id) {
            // The session timeout removes the member anyway if this fails.
            let _ = self.client.leave_group(group, &member_id).await;
        }
    }
}

impl Drop for Consumer {
    fn drop(&mut self) {
        if let Some(task) = self.heartbeat.take() {
            task.abort();
        }
    }
}

/// Where `reset` starts `tp` when the group has no committed offset for it.
///
/// A free function, not a `&self` method: a `&Consumer` held across an await would make the
/// futures of `poll` and the others `!Send` (the consumer holds `!Sync` fetch futures).
async fn reset_position(
    client: &Client,
    reset: OffsetReset,
    tp: &TopicPartition,
) -> Result<u64, ClientError> {
    let listed = client
        .list_offsets(tp.topic.clone(), tp.partition, OffsetSpec::from(reset))
        .await?;
    Ok(listed.offset.unwrap_or(listed.high_watermark))
}

/// Joins (again when needed) and heartbeats in the background.
struct HeartbeatTask {
    client: Client,
    group: String,
    topics: Vec<String>,
    assignor: String,
    session_ms: u32,
    client_id: String,
    membership: Arc<Mutex<Membership>>,
    applied: Arc<Notify>,
    assigned: Arc<Notify>,
    interval: Duration,
    /// The session timeout the coordinator granted.
    session: Duration,
    /// When the last join or heartbeat the coordinator answered was sent. The coordinator
    /// received it later, so `heard_at + session` is no later than when it may expire the
    /// member and hand its partitions to others.
    heard_at: Instant,
}

/// The session a join was granted; `configured` if the broker did not say.
fn granted_session(granted_ms: u32, configured: Duration) -> Duration {
    if granted_ms == 0 {
        configured
    } else {
        Duration::from_millis(u64::from(granted_ms))
    }
}

impl HeartbeatTask {
    async fn run(mut self) {
        let mut backoff = Duration::from_millis(100);
        loop {
            let (member_id, owned) = {
                let membership = lock(&self.membership);
                if membership.closed {
                    return;
                }
                (
                    membership.member_id.clone(),
                    membership.owned.iter().cloned().collect::<Vec<_>>(),
                )
            };
            let result = match member_id {
                None => self.rejoin().await,
                Some(member_id) => {
                    // Unheard for a whole session, the member must assume the coordinator
                    // removed it and gave its partitions to others: it stops consuming them
                    // before that can happen, rather than whenever it reaches the coordinator
                    // again (Kafka's "partitions lost").
                    let deadline = self.heard_at + self.session;
                    match tokio::time::timeout_at(deadline, self.beat(&member_id, &owned)).await {
                        Ok(result) => result,
                        Err(_) => {
                            self.forget_membership();
                            Ok(())
                        }
                    }
                }
            };
            let wait = match result {
                Ok(()) => {
                    backoff = Duration::from_millis(100);
                    self.interval
                }
                Err(e) if e.is_retriable() => {
                    backoff = (backoff * 2).min(self.interval.max(Duration::from_millis(100)));
                    backoff
                }
                Err(e) => {
                    lock(&self.membership).failed = Some(e);
                    return;
                }
            };
            // A poll that applied an assignment wakes this at once, so a released
            // partition reaches its next owner without waiting a whole interval.
            let _ = tokio::time::timeout(wait, self.applied.notified()).await;
        }
    }

    async fn beat(&mut self, member_id: &str, owned: &[TopicPartition]) -> Result<(), ClientError> {
        let sent = Instant::now();
        match self
            .client
            .group_heartbeat(&self.group, member_id, owned)
            .await
        {
            Ok(heartbeat) => {
                self.heard_at = sent;
                let assignment: BTreeSet<TopicPartition> =
                    heartbeat.assignment.into_iter().collect();
                let mut membership = lock(&self.membership);
                if assignment != membership.owned {
                    membership.pending = Some(assignment);
                    self.assigned.notify_one();
                }
                if heartbeat.heartbeat_interval_ms > 0 {
                    self.interval =
                        Duration::from_millis(u64::from(heartbeat.heartbeat_interval_ms));
                }
                Ok(())
            }
            Err(e) if e.reason() == Some("UNKNOWN_MEMBER") => {
                // Removed (session expired, coordinator moved).
                self.forget_membership();
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// Gives up every partition (the next `poll` drops them) and joins again as a new member
    /// once they are dropped. Sends nothing: the coordinator has forgotten the member already,
    /// or will when its session runs out.
    fn forget_membership(&self) {
        let mut membership = lock(&self.membership);
        membership.member_id = None;
        membership.pending = Some(BTreeSet::new());
        self.assigned.notify_one();
    }

    async fn rejoin(&mut self) -> Result<(), ClientError> {
        if !lock(&self.membership).owned.is_empty() {
            // Wait until poll has dropped the old member's partitions.
            return Ok(());
        }
        let sent = Instant::now();
        let joined = self
            .client
            .join_group(
                &self.group,
                &self.topics,
                &self.assignor,
                self.session_ms,
                &self.client_id,
            )
            .await?;
        self.interval = Duration::from_millis(u64::from(joined.heartbeat_interval_ms.max(1)));
        self.session = granted_session(joined.session_timeout_ms, self.session);
        self.heard_at = sent;
        lock(&self.membership).member_id = Some(joined.member_id);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spawnable<T: Send + 'static>(_: T) {}

    /// Type-checked, never called: a consumer is moved into its own task and polled there,
    /// so every public future must be `Send`.
    fn consumer_in_a_task(client: Client) {
        spawnable(async move {
            let mut consumer = Consumer::new(client, ConsumerConfig::with_group("g"));
            let _ = consumer.subscribe(&["t"]).await;
            let _ = consumer.assign(&[TopicPartition::new("t", 0)]).await;
            let _ = consumer.poll().await;
            let _ = consumer.commit().await;
            let _ = consumer.close().await;
        });
    }

    /// Fails to compile, rather than to run, when a consumer future stops being `Send`.
    #[test]
    fn consumer_futures_can_run_in_spawned_tasks() {
        let _ = consumer_in_a_task;
    }
}
