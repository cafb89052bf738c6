//! A nemesis run in Jepsen's manner: real `weir broker` processes, a workload driven through
//! `weir-client`, faults injected by a seeded random source while it runs, and a checker over
//! the history and every replica's final state.
//!
//! - `history`: what the workload did and saw, and the faults, in order;
//! - `faults`: the faults, chosen from the seed, injected and healed: process and network
//!   faults, disk faults on the simulated disk (`crate::disk`), replica moves (`moves`), and
//!   nodes joining and leaving (`membership`);
//! - `checker`: what the history and the final state must satisfy.
//!
//! The workload (`workload`): `writers` idempotent producers append unique values
//! (`w{writer}-{seq}`) to random partitions, each recording every append's outcome
//! (acknowledged at an offset, failed, or unknown); one reader per partition follows its log
//! and records what it sees; a consumer group member reads everything and commits its
//! position after every poll, while an auditor keeps asking for the group's committed offsets
//! and records each answer. The nemesis
//! injects a fault (sometimes two at once), holds it, heals it, and goes on. At the end every
//! fault is healed, every replica must catch up, and the checker compares.
//!
//! The seed fixes the faults, their order, targets and durations, and the workload's choices;
//! the processes' own timing is not reproducible, so a replay runs the same schedule, not the
//! same interleaving.

mod checker;
mod faults;
mod history;
mod membership;
mod moves;
mod workload;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use weir_proto::v1 as pb;

pub use checker::{FinalPartition, Tally, Violation, check, check_commits};
pub use faults::{Fault, FaultKind};
pub use history::{Append, Commit, CommittedView, History, Outcome, Read};

use self::membership::MembershipChanges;
pub use self::membership::MembershipCounts;
pub use self::moves::MoveCounts;
use self::moves::Moves;
use crate::disk::DiskMode;
use crate::{NodeId, ProcessCluster};

/// The topic the workload writes.
const TOPIC: &str = "nemesis";

/// What to run.
#[derive(Debug, Clone)]
pub struct NemesisConfig {
    /// The `weir` binary.
    pub weir: PathBuf,
    /// The seed of every random choice.
    pub seed: u64,
    /// Brokers.
    pub nodes: usize,
    /// Replicas of each partition (at most `nodes`).
    pub replication: u32,
    /// The simulated disk the brokers' databases live on (`crate::disk`); `None`: the real
    /// file system, and no disk faults.
    pub disk: Option<DiskMode>,
    /// Brokers built to serve uncommitted records (`crate::test_broker`), which the checker
    /// must catch.
    pub serve_uncommitted: bool,
    /// The kinds of fault to inject; empty: every kind the configuration allows.
    pub kinds: Vec<FaultKind>,
    /// How long faults are injected.
    pub duration: Duration,
    /// Partitions of the topic.
    pub partitions: u32,
    /// Concurrent producers.
    pub writers: u32,
}

/// What a run did and found.
#[derive(Debug)]
pub struct Report {
    /// The configuration it ran.
    pub config: NemesisConfig,
    /// The checker's counts.
    pub tally: Tally,
    /// Faults injected, by kind.
    pub faults: BTreeMap<&'static str, u64>,
    /// What became of the replica moves.
    pub moves: MoveCounts,
    /// What the nodes joining and leaving did.
    pub membership: MembershipCounts,
    /// Everything that went wrong.
    pub violations: Vec<Violation>,
    /// The faults and phases, with their time since the start.
    pub events: Vec<(Duration, String)>,
    /// For violations about order: the stored batches around them (offsets, producer id,
    /// epoch, sequences, leader epoch), as the first replica serves them.
    pub batches: Vec<String>,
    /// How long the run took, final checks included.
    pub elapsed: Duration,
}

impl NemesisConfig {
    /// The kinds of fault the run injects: [`NemesisConfig::kinds`], or every kind the
    /// configuration allows.
    pub fn fault_kinds(&self) -> Vec<FaultKind> {
        if !self.kinds.is_empty() {
            return self.kinds.clone();
        }
        let mut kinds = FaultKind::PROCESS_AND_NETWORK.to_vec();
        if self.disk.is_some() {
            kinds.extend(FaultKind::DISK);
        }
        if self.nodes >= 3 {
            kinds.push(FaultKind::Membership);
        }
        if (self.replication as usize) < self.nodes || kinds.contains(&FaultKind::Membership) {
            kinds.push(FaultKind::Move);
        }
        kinds.push(FaultKind::Trim);
        kinds
    }

    /// Checks what a run needs.
    fn validate(&self) -> anyhow::Result<()> {
        let single_node_kinds = [
            FaultKind::Kill,
            FaultKind::Pause,
            FaultKind::PowerLoss,
            FaultKind::PowerLossAll,
            FaultKind::FailFsync,
            FaultKind::Trim,
        ];
        anyhow::ensure!(
            self.nodes >= 3
                || (self.nodes >= 1
                    && self
                        .fault_kinds()
                        .iter()
                        .all(|k| single_node_kinds.contains(k))),
            "link faults need 3 nodes or more"
        );
        anyhow::ensure!(
            (1..=self.nodes as u32).contains(&self.replication),
            "replication {} with {} nodes",
            self.replication,
            self.nodes
        );
        let kinds = self.fault_kinds();
        for &kind in &kinds {
            anyhow::ensure!(
                !FaultKind::DISK.contains(&kind) || self.disk.is_some(),
                "{} faults need simulated disks",
                kind.name()
            );
            anyhow::ensure!(
                kind != FaultKind::Move
                    || (self.replication as usize) < self.nodes
                    || kinds.contains(&FaultKind::Membership),
                "moves need fewer replicas ({}) than nodes ({}), or nodes joining",
                self.replication,
                self.nodes
            );
        }
        Ok(())
    }
}

impl Report {
    /// The command that runs the same schedule again.
    pub fn replay_command(&self) -> String {
        let c = &self.config;
        let mut command = format!(
            "cargo run --release -p weir-tests --bin nemesis -- --seed {} --nodes {} --replication {} --seconds {} --partitions {} --writers {} --disk {}",
            c.seed,
            c.nodes,
            c.replication,
            c.duration.as_secs(),
            c.partitions,
            c.writers,
            c.disk.map_or("none", DiskMode::as_env),
        );
        if c.serve_uncommitted {
            command.push_str(" --serve-uncommitted");
        }
        if !c.kinds.is_empty() {
            let names: Vec<&str> = c.kinds.iter().map(|k| k.name()).collect();
            command.push_str(&format!(" --faults {}", names.join(",")));
        }
        command
    }
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let t = &self.tally;
        writeln!(
            f,
            "nemesis seed {}: {} nodes, {} partitions of {} replicas, {} writers, disks {}{}, {:?} of faults ({:.0?} in all)",
            self.config.seed,
            self.config.nodes,
            self.config.partitions,
            self.config.replication,
            self.config.writers,
            self.config.disk.map_or("real", DiskMode::as_env),
            if self.config.serve_uncommitted {
                ", brokers serving uncommitted records"
            } else {
                ""
            },
            self.config.duration,
            self.elapsed
        )?;
        writeln!(
            f,
            "appends: {} acknowledged ({} trimmed since), {} failed or unknown ({} of them stored); {} records read during the run",
            t.acknowledged, t.trimmed, t.indefinite, t.indefinite_stored, t.read
        )?;
        writeln!(
            f,
            "group offsets: {} commits acknowledged, {} queries of the committed offsets",
            t.commits, t.commit_queries
        )?;
        writeln!(f, "faults: {:?}", self.faults)?;
        let m = &self.moves;
        if m.started > 0 {
            writeln!(
                f,
                "replica moves: {} started, {} completed, {} cut short and completed at the end, {} cut short and moot at the end",
                m.started, m.completed, m.redone, m.moot
            )?;
        }
        let j = &self.membership;
        if j.joined > 0 {
            writeln!(
                f,
                "membership: {} nodes joined, {} replica moves to drain them, {} left",
                j.joined, j.drain_moves, j.removed
            )?;
        }
        if self.violations.is_empty() {
            writeln!(f, "violations: none")?;
        } else {
            writeln!(f, "violations: {}", self.violations.len())?;
            for v in self.violations.iter().take(50) {
                writeln!(f, "  {v}")?;
            }
            if !self.batches.is_empty() {
                writeln!(f, "stored batches around them:")?;
                for b in &self.batches {
                    writeln!(f, "  {b}")?;
                }
            }
            writeln!(f, "events:")?;
            for (at, what) in &self.events {
                writeln!(f, "  {:>8.3}s {what}", at.as_secs_f64())?;
            }
        }
        write!(f, "replay: {}", self.replay_command())
    }
}

/// Runs the nemesis against a fresh cluster and checks the outcome.
pub async fn run(config: NemesisConfig) -> anyhow::Result<Report> {
    config.validate()?;
    let started = Instant::now();
    let mut rng = StdRng::seed_from_u64(config.seed);
    // Short produce timeouts, so outcomes resolve while the run goes on.
    let mut cluster = ProcessCluster::new_with_config(
        &config.weir,
        config.nodes,
        "[limits]\nproduce_timeout_ms = 3000\n",
    )
    .await?;
    if let Some(mode) = config.disk {
        cluster.simulate_disks(mode);
    }
    if config.serve_uncommitted {
        cluster.build_in(crate::test_broker::BuiltInFault::ServeUncommitted);
    }
    cluster.start_nodes(&cluster.node_ids()).await?;
    let nodes = cluster.node_ids();
    let addrs: Vec<String> = nodes.iter().map(|&n| cluster.addr(n).to_string()).collect();
    cluster
        .client(nodes[0])?
        .create_topic(pb::CreateTopicRequest {
            name: TOPIC.into(),
            partitions: config.partitions,
            replication_factor: config.replication,
            ..Default::default()
        })
        .await?;

    let history = Arc::new(History::new());
    let stop = Arc::new(AtomicBool::new(false));
    let mut workload = tokio::task::JoinSet::new();
    for writer in 0..config.writers {
        let seed: u64 = rng.random();
        let addr = addrs[writer as usize % addrs.len()].clone();
        workload.spawn(workload::write(
            writer,
            writer % 2 == 1,
            seed,
            addr,
            config.partitions,
            history.clone(),
            stop.clone(),
        ));
    }
    for partition in 0..config.partitions {
        let addr = addrs[partition as usize % addrs.len()].clone();
        workload.spawn(workload::follow(
            partition,
            addr,
            history.clone(),
            stop.clone(),
        ));
    }
    workload.spawn(workload::consume_in_group(
        addrs[0].clone(),
        history.clone(),
        stop.clone(),
    ));
    workload.spawn(workload::audit_commits(
        addrs[addrs.len() - 1].clone(),
        history.clone(),
        stop.clone(),
    ));

    let mut moves = Moves::new(addrs.clone(), nodes.clone(), history.clone());
    let mut membership = MembershipChanges::new(addrs.clone(), config.partitions, history.clone());
    let faults = inject_faults(
        &mut cluster,
        &mut rng,
        &history,
        &config,
        &mut moves,
        &mut membership,
    )
    .await?;

    history.event("stopping the workload");
    stop.store(true, Ordering::Relaxed);
    while let Some(done) = workload.join_next().await {
        done??;
    }
    history.event("healing everything");
    cluster.heal_all();
    let nodes = cluster.node_ids();
    let stopped: Vec<NodeId> = nodes
        .iter()
        .copied()
        .filter(|&n| !cluster.is_running(n))
        .collect();
    for &node in &nodes {
        if cluster.is_running(node) {
            cluster.resume(node)?;
        }
    }
    cluster.start_nodes(&stopped).await?;
    history.event("completing the replica moves");
    if let Err(e) = moves.finish().await {
        let partitions: Vec<u32> = (0..config.partitions).collect();
        anyhow::bail!(
            "{e:#}; the nodes' views:\n{}",
            views(&cluster, &partitions).await
        );
    }
    let partitions = final_state(&cluster, config.partitions).await?;
    let client = workload::connect(&addrs[0]).await?;
    let final_view = crate::eventually(
        Duration::from_secs(60),
        "the group's committed offsets",
        || workload::committed_view(&client, &history),
    )
    .await?;
    history.committed_view(final_view);
    history.event("checking");
    let (mut tally, mut violations) = check(&history.appends(), &history.reads(), &partitions);
    violations.extend(check_commits(
        &history.commits(),
        &history.committed_views(),
        &mut tally,
    ));
    let batches = batches_around(&violations, &partitions);
    Ok(Report {
        batches,
        config,
        tally,
        faults,
        moves: moves.counts,
        membership: membership.counts,
        violations,
        events: history.events(),
        elapsed: started.elapsed(),
    })
}

/// The headers of the stored batches around each reordering, from the first replica.
fn batches_around(
    violations: &[Violation],
    partitions: &BTreeMap<u32, FinalPartition>,
) -> Vec<String> {
    let mut lines = Vec::new();
    for v in violations {
        let Violation::Reordered {
            partition,
            earlier,
            later,
            ..
        } = v
        else {
            continue;
        };
        let (from, to) = (later.1.min(earlier.1), later.1.max(earlier.1));
        let Some(batches) = partitions
            .get(partition)
            .and_then(|p| p.replicas.values().next())
        else {
            continue;
        };
        lines.push(format!("partition {partition}, offsets {from}..={to}:"));
        for batch in batches {
            let Ok(batch) = weir_types::EncodedBatch::verify(batch.clone()) else {
                continue;
            };
            let h = batch.header();
            if h.last_offset().0 + 5 < from || h.base_offset.0 > to + 5 {
                continue;
            }
            lines.push(format!(
                "  {}..={} producer {} epoch {} sequence {}.. ({} records) leader epoch {}",
                h.base_offset.0,
                h.last_offset().0,
                h.producer_id,
                h.producer_epoch,
                h.base_sequence,
                h.record_count,
                h.partition_leader_epoch
            ));
        }
    }
    lines
}

/// Injects faults for `duration`: one at a time, sometimes two, each held a while and healed.
/// A membership step is taken last, once the other fault of its round is active, and what it
/// left in doubt is completed once that fault is healed.
async fn inject_faults(
    cluster: &mut ProcessCluster,
    rng: &mut StdRng,
    history: &History,
    config: &NemesisConfig,
    moves: &mut Moves,
    membership: &mut MembershipChanges,
) -> anyhow::Result<BTreeMap<&'static str, u64>> {
    let kinds = config.fault_kinds();
    let deadline = Instant::now() + config.duration;
    let mut counts: BTreeMap<&'static str, u64> = BTreeMap::new();
    while Instant::now() < deadline {
        // The schedule's pace, drawn from the seed: not synchronisation.
        tokio::time::sleep(Duration::from_millis(rng.random_range(300..1500))).await;
        let nodes = cluster.node_ids();
        let random = |rng: &mut StdRng| Fault::random(rng, &kinds, &nodes, config.partitions);
        let mut active = vec![random(rng)];
        if rng.random_bool(0.3) {
            let second = random(rng);
            if active[0].combines_with(&second) {
                active.push(second);
            }
        }
        active.sort_by_key(|f| matches!(f, Fault::Membership(_)));
        if active.iter().any(|f| matches!(f, Fault::Membership(_))) {
            membership.prepare(cluster).await?;
        }
        let mut injected = Vec::with_capacity(active.len());
        for fault in active {
            if fault.inject(cluster, moves, membership).await? {
                *counts.entry(fault.kind().name()).or_default() += 1;
                history.event(format!("inject: {fault}"));
                injected.push(fault);
            }
        }
        let mut active = injected;
        tokio::time::sleep(Duration::from_millis(rng.random_range(500..3000))).await;
        // Links first: a restarted node must reach a quorum to report ready.
        active.sort_by_key(Fault::heals_processes);
        for fault in &active {
            fault.heal(cluster).await?;
            history.event(format!("heal: {fault}"));
        }
        // A membership change still in doubt takes effect before any process restarts.
        membership.complete(cluster, moves).await?;
    }
    Ok(counts)
}

/// Waits until every replica of every partition holds the same high watermark, its leader
/// seeing each in sync and its raft membership being the assigned replicas, then reads the
/// records from the leader and every replica's stored batches.
async fn final_state(
    cluster: &ProcessCluster,
    partitions: u32,
) -> anyhow::Result<BTreeMap<u32, FinalPartition>> {
    let nodes = cluster.node_ids();
    let mut state = BTreeMap::new();
    if topic_lost(cluster).await {
        // Every record with it: the checker reports each acknowledged one lost.
        return Ok(state);
    }
    for partition in 0..partitions {
        let what = format!("every replica of partition {partition} to agree");
        let agreed = crate::eventually(Duration::from_secs(120), &what, || async {
            // Only replicas know the leader.
            let mut leader = None;
            for &node in &nodes {
                leader = leader.or(cluster.partition_on(node, TOPIC, partition).await?.leader);
            }
            let leader = leader?;
            let view = cluster.partition_on(leader, TOPIC, partition).await?;
            let mut replicas = view.replicas.clone();
            replicas.sort_unstable();
            let mut members: Vec<NodeId> = view.replica_status.iter().map(|r| r.node_id).collect();
            members.sort_unstable();
            let settled = view.leader == Some(leader)
                && members == replicas
                && view.replica_status.iter().all(|r| r.in_sync);
            if !settled {
                return None;
            }
            for &node in &replicas {
                let mark = cluster.partition_on(node, TOPIC, partition).await?;
                if mark.high_watermark != view.high_watermark
                    || mark.log_start_offset != view.log_start_offset
                {
                    return None;
                }
            }
            Some((leader, replicas, view.log_start_offset, view.high_watermark))
        })
        .await;
        let (leader, replicas, log_start, high_watermark) = match agreed {
            Ok(agreed) => agreed,
            Err(e) => {
                anyhow::bail!(
                    "{e}; the nodes' views:\n{}{}",
                    views(cluster, &[partition]).await,
                    silent_nodes_stacks(cluster).await
                );
            }
        };
        let records = cluster
            .read_partition(leader, TOPIC, partition)
            .await?
            .into_iter()
            .map(|r| (r.offset, r.value))
            .collect::<Vec<_>>();
        anyhow::ensure!(
            records.len() as u64 == high_watermark - log_start,
            "partition {partition}: read {} records from the log start {log_start} to the high watermark {high_watermark}",
            records.len()
        );
        let mut stored = BTreeMap::new();
        for node in replicas {
            stored.insert(
                node,
                stored_batches(cluster, node, partition, log_start).await?,
            );
        }
        state.insert(
            partition,
            FinalPartition {
                log_start,
                records,
                replicas: stored,
            },
        );
    }
    Ok(state)
}

/// How each member sees each of `partitions` (leader, replicas, high watermark, replica
/// states, failure), for a report of a final check that gave up.
async fn views(cluster: &ProcessCluster, partitions: &[u32]) -> String {
    let mut views = Vec::new();
    for &partition in partitions {
        for node in cluster.node_ids() {
            views.push(format!(
                "partition {partition}, node {node}: {:?}",
                cluster.partition_on(node, TOPIC, partition).await
            ));
        }
    }
    views.join("\n")
}

/// The threads of every running node that does not answer a description of the topic: a
/// node whose async runtime stalled for good (its stall watchdog says so in its log) shows
/// where its worker threads wait. This is how a move guard dropped inside its own lock was
/// found (docs/reliability.md).
async fn silent_nodes_stacks(cluster: &ProcessCluster) -> String {
    let mut stacks = String::new();
    for node in cluster.node_ids() {
        if !cluster.is_running(node) || cluster.describe(node, TOPIC).await.is_some() {
            continue;
        }
        let dump = cluster.thread_stacks(node).await;
        stacks.push_str(&format!(
            "\nnode {node} answers nothing; its threads:\n{}",
            dump.as_deref().unwrap_or("(gdb is not available)")
        ));
    }
    stacks
}

/// Whether every node answers that the topic does not exist: a broker that lost the
/// controller entries that created it (on a lying disk) lost it and all its records. (Nodes
/// report ready only once their controller caught up with its leader.)
async fn topic_lost(cluster: &ProcessCluster) -> bool {
    for node in cluster.node_ids() {
        let Ok(mut client) = cluster.client(node) else {
            return false;
        };
        let request = pb::DescribeTopicRequest { name: TOPIC.into() };
        match tokio::time::timeout(Duration::from_secs(5), client.describe_topic(request)).await {
            Ok(Err(status))
                if weir_proto::error::reason_of(&status).as_deref() == Some("UNKNOWN_TOPIC") => {}
            _ => return false,
        }
    }
    true
}

/// Every batch node `node` stores of `partition`, as it serves them.
async fn stored_batches(
    cluster: &ProcessCluster,
    node: NodeId,
    partition: u32,
    log_start: u64,
) -> anyhow::Result<Vec<Bytes>> {
    let mut client = cluster.client(node)?;
    let mut batches = Vec::new();
    let mut next = log_start;
    loop {
        let fetched = client
            .fetch(pb::FetchRequest {
                topic: TOPIC.into(),
                partition,
                offset: next as i64,
                record_batches: true,
                ..Default::default()
            })
            .await?
            .into_inner();
        let before = next;
        for batch in fetched.record_batches {
            let header = *weir_types::EncodedBatch::verify(batch.clone())?.header();
            next = header.last_offset().0 + 1;
            batches.push(batch);
        }
        if next >= fetched.high_watermark {
            return Ok(batches);
        }
        anyhow::ensure!(
            next > before,
            "node {node} served no batch of partition {partition} at {next}, below its high watermark {}",
            fetched.high_watermark
        );
    }
}
