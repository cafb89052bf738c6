//! The client SDK benchmark (docs/benchmarks.md, "Client SDK and consumer groups"): what
//! weir-client's `Producer` and `Consumer` achieve through a broker started in this process
//! (default, durable configuration; data in a temporary directory under the current one), every
//! figure measured in the same run so the ratios hold on a noisy machine. Records carry 1 KiB
//! values and are produced with acks=all.
//!
//! 1. Producer throughput, keyed records over 6 partitions: a `Producer` with its default
//!    batching, a `Producer` configured so that every request carries one record (same number of
//!    requests in flight), and, for reference, `Client::produce` with batches built by hand
//!    (same number in flight) and called one record at a time. The broker's metrics give the
//!    records per produce request and its acknowledgement latency.
//! 2. Consumer group throughput with 1, 2 and 3 members (each with its own connection, auto-commit
//!    on): the time to read pre-produced records once the group is stable, checking that every
//!    offset was read exactly once; and, for reference, a task per partition calling
//!    `Client::fetch` on one connection.
//! 3. Rebalance time while a producer writes a trickle of records: three members share 6
//!    partitions, then one leaves (`Consumer::close`) or dies (dropped without leaving); the
//!    time until the two survivors own every partition again, and until each moved partition
//!    delivers a record to its new owner.
//!
//! Run it with `cargo run --release -p weir-tests --bin client-bench` (add `-- --records N` to
//! change the record count, default 100 000).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use indicatif::{ProgressBar, ProgressStyle};
use tokio::sync::{Barrier, oneshot, watch};
use tokio::task::JoinHandle;
use weir_client::{
    Acks, Client, Consumer, ConsumerConfig, OffsetReset, Producer, ProducerConfig, ProducerRecord,
    TopicSpec, partition_for_key,
};

/// Partitions of every topic.
const PARTITIONS: u32 = 6;
/// Bytes of every record's value.
const VALUE_BYTES: usize = 1024;
/// The one-record-per-request producer sends this fraction of the records (it is far slower).
const ONE_PER_REQUEST_SHARE: usize = 10;
/// Sequential `Client::produce` calls send this fraction of the records.
const SEQUENTIAL_SHARE: usize = 100;
/// Rebalances measured per scenario: each member is the one that stops twice, at different
/// points of the heartbeat cycle.
const ROUNDS: usize = 6;
/// The short session timeout of the second and third rebalance scenarios (the broker's minimum
/// is 1 s).
const SHORT_SESSION: Duration = Duration::from_secs(2);
/// How long a group may take to form or to rebalance before the benchmark gives up.
const GROUP_DEADLINE: Duration = Duration::from_secs(60);

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let records = parse_records()?;
    println!(
        "client SDK benchmark: {records} records, 1 KiB values, acks=all, {PARTITIONS} partitions\n"
    );
    let dir = tempfile::Builder::new()
        .prefix("weir-client-bench-")
        .tempdir_in(".")?;
    let config = weir_server::BrokerConfig {
        listen: std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
        metrics_listen: Some(std::net::SocketAddr::from(([127, 0, 0, 1], 0))),
        data_dir: dir.path().to_path_buf(),
        ..Default::default()
    };
    let broker = weir_server::Broker::start(config).await?;
    let addr = broker.local_addr().to_string();
    let metrics = broker
        .metrics_addr()
        .context("the broker was started with a metrics listener")?;
    let client = Client::connect(addr.as_str()).await?;

    producers(&client, metrics, records).await?;
    group_throughput(&client, &addr, records).await?;
    rebalances(&client, &addr).await?;
    broker.shutdown().await;
    Ok(())
}

fn parse_records() -> anyhow::Result<usize> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.as_slice() {
        [] => Ok(100_000),
        [flag, n] if flag == "--records" => n
            .parse()
            .with_context(|| format!("--records {n}: not a number")),
        _ => anyhow::bail!("usage: client-bench [--records N]"),
    }
}

fn progress(total: u64, what: &str) -> ProgressBar {
    let template = format!("{{bar:40}} {{human_pos}}/{{human_len}} {what} {{per_sec}}");
    let style =
        ProgressStyle::with_template(&template).unwrap_or_else(|_| ProgressStyle::default_bar());
    ProgressBar::new(total).with_style(style)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn rate(count: usize, elapsed: Duration) -> f64 {
    count as f64 / elapsed.as_secs_f64().max(1e-9)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Record `i`: key `key-{i}` (so keys spread over the partitions) and a 1 KiB value shared by
/// every record, so building records costs next to nothing.
fn record(i: usize, value: &Bytes) -> ProducerRecord {
    ProducerRecord::new(value.clone()).with_key(format!("key-{i}"))
}

async fn create(client: &Client, topic: &str) -> anyhow::Result<()> {
    client
        .create_topic(TopicSpec::new(topic, PARTITIONS))
        .await
        .with_context(|| format!("creating {topic}"))?;
    Ok(())
}

/// The broker's produce counters: requests acknowledged and the sum of their latencies.
#[derive(Debug, Clone, Copy, Default)]
struct ProduceCounters {
    requests: f64,
    latency_seconds: f64,
}

impl ProduceCounters {
    async fn scrape(addr: std::net::SocketAddr) -> anyhow::Result<Self> {
        let response = weir_tests::scrape_metrics(addr).await?;
        let value = |name: &str| -> anyhow::Result<f64> {
            let line = response
                .lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
                .with_context(|| format!("no {name} in the broker's metrics"))?;
            line.trim()
                .parse()
                .with_context(|| format!("{name}: {line} is not a number"))
        };
        Ok(Self {
            requests: value("weir_produce_latency_seconds_count")?,
            latency_seconds: value("weir_produce_latency_seconds_sum")?,
        })
    }

    /// Requests and mean latency since `earlier`.
    fn since(self, earlier: Self) -> (f64, Duration) {
        let requests = self.requests - earlier.requests;
        let mean = (self.latency_seconds - earlier.latency_seconds) / requests.max(1.0);
        (requests, Duration::from_secs_f64(mean.max(0.0)))
    }
}

/// One way of producing, as measured.
struct Produced {
    records: usize,
    elapsed: Duration,
    requests: f64,
    ack_latency: Duration,
}

async fn producers(
    client: &Client,
    metrics: std::net::SocketAddr,
    count: usize,
) -> anyhow::Result<()> {
    println!("1. producing keyed records over {PARTITIONS} partitions");
    let value = Bytes::from(vec![b'x'; VALUE_BYTES]);
    let batching = ProducerConfig::default();
    let in_flight = batching.max_in_flight;
    // run_partition sends once a batch reaches batch_max_bytes, checked before it waits for a
    // second record: with 1 byte, every request carries exactly the record that opened it.
    let one_per_request = ProducerConfig {
        linger: Duration::ZERO,
        batch_max_bytes: 1,
        ..ProducerConfig::default()
    };
    let single_count = (count / ONE_PER_REQUEST_SHARE).max(100);
    let sequential_count = (count / SEQUENTIAL_SHARE).max(100);
    let runs = [
        (
            "Producer, batching (default)",
            batching,
            count,
            "produce-batching",
        ),
        (
            "Producer, 1 record per request",
            one_per_request,
            single_count,
            "produce-single",
        ),
    ];
    let mut results = Vec::new();
    for (label, config, n, topic) in runs {
        create(client, topic).await?;
        let before = ProduceCounters::scrape(metrics).await?;
        let producer = Producer::new(client.clone(), config);
        let elapsed = produce_all(&producer, topic, n, &value).await?;
        let (requests, ack_latency) = ProduceCounters::scrape(metrics).await?.since(before);
        results.push((
            label,
            Produced {
                records: n,
                elapsed,
                requests,
                ack_latency,
            },
        ));
    }

    // What the Producer's batching could reach on the same connection: requests of
    // HAND_BATCH records built by the caller, as many in flight as the Producer allows.
    create(client, "produce-hand-batched").await?;
    let before = ProduceCounters::scrape(metrics).await?;
    let elapsed = produce_hand_batched(client, "produce-hand-batched", count, in_flight).await?;
    let (requests, ack_latency) = ProduceCounters::scrape(metrics).await?.since(before);
    results.push((
        "Client::produce, batches by hand",
        Produced {
            records: count,
            elapsed,
            requests,
            ack_latency,
        },
    ));

    create(client, "produce-sequential").await?;
    let before = ProduceCounters::scrape(metrics).await?;
    let bar = progress(sequential_count as u64, "produced");
    let started = Instant::now();
    for i in 0..sequential_count {
        let record = record(i, &value);
        let partition = record
            .key
            .as_deref()
            .map(|key| partition_for_key(key, PARTITIONS));
        let outcome = client
            .produce("produce-sequential", partition, vec![record], Acks::All)
            .await?;
        anyhow::ensure!(outcome.record_count == 1, "stored {}", outcome.record_count);
        bar.inc(1);
    }
    let elapsed = started.elapsed();
    bar.finish_and_clear();
    let (requests, ack_latency) = ProduceCounters::scrape(metrics).await?.since(before);
    results.push((
        "Client::produce, 1 by 1",
        Produced {
            records: sequential_count,
            elapsed,
            requests,
            ack_latency,
        },
    ));

    println!(
        "   {:<31}  {:>8}  {:>9}  {:>7}  {:>8}  {:>8}  {:>7}",
        "", "records", "rec/s", "MB/s", "rec/req", "ack ms", "ratio"
    );
    let baseline = rate(results[0].1.records, results[0].1.elapsed);
    for (label, r) in &results {
        let per_second = rate(r.records, r.elapsed);
        println!(
            "   {label:<31}  {:>8}  {per_second:>9.0}  {:>7.1}  {:>8.1}  {:>8.2}  {:>7.3}",
            r.records,
            per_second * VALUE_BYTES as f64 / 1e6,
            r.records as f64 / r.requests.max(1.0),
            ms(r.ack_latency),
            per_second / baseline
        );
    }
    println!(
        "   batching / 1 per request: {:.1}×; {in_flight} requests in flight at most (and one per \
         partition); ack ms: the broker's mean time to acknowledge a request\n",
        baseline / rate(results[1].1.records, results[1].1.elapsed)
    );
    Ok(())
}

/// Enqueues `count` records, flushes and checks every delivery; returns the time to the end of
/// the flush.
async fn produce_all(
    producer: &Producer,
    topic: &str,
    count: usize,
    value: &Bytes,
) -> anyhow::Result<Duration> {
    let bar = progress(count as u64, "enqueued");
    let started = Instant::now();
    let mut deliveries = Vec::with_capacity(count);
    for i in 0..count {
        deliveries.push(producer.enqueue(topic, record(i, value)).await?);
        bar.inc(1);
    }
    producer.flush().await;
    let elapsed = started.elapsed();
    bar.finish_and_clear();
    let mut offsets = BTreeSet::new();
    for delivery in deliveries {
        let stored = delivery.await?;
        let offset = stored
            .offset
            .context("acks=all gives every record its offset")?;
        anyhow::ensure!(
            offsets.insert((stored.partition, offset)),
            "two records stored at {}/{offset}",
            stored.partition
        );
    }
    Ok(elapsed)
}

/// Records per `Client::produce` call when batching by hand: about the Producer's 1 MiB batch.
const HAND_BATCH: usize = 1000;

/// Produces `count` records in calls of [`HAND_BATCH`] from `tasks` tasks sharing `client`,
/// the partitions taken in turn; returns the time until the last is acknowledged.
async fn produce_hand_batched(
    client: &Client,
    topic: &str,
    count: usize,
    tasks: usize,
) -> anyhow::Result<Duration> {
    let value = Bytes::from(vec![b'x'; VALUE_BYTES]);
    let bar = progress(count as u64, "produced");
    let next = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut handles = Vec::new();
    for _ in 0..tasks {
        let (client, topic, next, bar, value) = (
            client.clone(),
            topic.to_owned(),
            next.clone(),
            bar.clone(),
            value.clone(),
        );
        handles.push(tokio::spawn(async move {
            loop {
                let from = next.fetch_add(HAND_BATCH as u64, Ordering::Relaxed) as usize;
                if from >= count {
                    return anyhow::Ok(());
                }
                let records: Vec<ProducerRecord> = (from..(from + HAND_BATCH).min(count))
                    .map(|i| record(i, &value))
                    .collect();
                let n = records.len();
                let partition = (from / HAND_BATCH) as u32 % PARTITIONS;
                let outcome = client
                    .produce(&topic, Some(partition), records, Acks::All)
                    .await?;
                anyhow::ensure!(
                    outcome.record_count as usize == n,
                    "stored {} of {n}",
                    outcome.record_count
                );
                bar.inc(n as u64);
            }
        }));
    }
    for handle in handles {
        handle.await??;
    }
    let elapsed = started.elapsed();
    bar.finish_and_clear();
    Ok(elapsed)
}

/// The topic the consumer group throughput is measured on.
const GROUP_TOPIC: &str = "group-throughput";

async fn group_throughput(client: &Client, addr: &str, count: usize) -> anyhow::Result<()> {
    println!(
        "2. a consumer group reading {count} pre-produced records (each member its own \
         connection and task, auto-commit on)"
    );
    create(client, GROUP_TOPIC).await?;
    let value = Bytes::from(vec![b'x'; VALUE_BYTES]);
    let producer = Producer::new(client.clone(), ProducerConfig::default());
    produce_all(&producer, GROUP_TOPIC, count, &value).await?;
    let mut ends = Vec::new();
    for partition in 0..PARTITIONS {
        let listed = client
            .list_offsets(GROUP_TOPIC, partition, weir_client::OffsetSpec::Latest)
            .await?;
        ends.push(listed.high_watermark);
    }
    anyhow::ensure!(
        ends.iter().sum::<u64>() == count as u64,
        "the partitions hold {ends:?}, not {count} records"
    );

    println!(
        "   {:<37}  {:>9}  {:>7}  {:>7}",
        "", "rec/s", "MB/s", "ratio"
    );
    let mut baseline = None;
    for members in 1..=3 {
        let elapsed = consume_as_group(addr, &format!("throughput-{members}"), members, &ends)
            .await
            .with_context(|| format!("a group of {members}"))?;
        let per_second = rate(count, elapsed);
        let base = *baseline.get_or_insert(per_second);
        println!(
            "   {:<37}  {per_second:>9.0}  {:>7.1}  {:>7.2}",
            format!("group of {members}"),
            per_second * VALUE_BYTES as f64 / 1e6,
            per_second / base
        );
    }
    // What one connection serves without a Consumer: a task per partition calling fetch.
    let elapsed = fetch_per_partition(client, &ends).await?;
    let per_second = rate(count, elapsed);
    println!(
        "   {:<37}  {per_second:>9.0}  {:>7.1}  {:>7.2}",
        "Client::fetch, a task per partition",
        per_second * VALUE_BYTES as f64 / 1e6,
        per_second / baseline.unwrap_or(per_second)
    );
    println!(
        "   every offset read exactly once; the members, their connections and the broker share \
         this process and its cores\n"
    );
    Ok(())
}

/// What a member of a throughput group held and read: its partitions and the (partition,
/// offset) of every record.
type MemberRead = (Vec<u32>, Vec<(u32, u64)>);

/// Reads the topic once with a group of `members`: they join at the end of the log (nothing to
/// read), and once the group is stable they seek to the start together, so the timed part is
/// reading alone, not joining and rebalancing. Returns the time from the start to the last
/// record.
async fn consume_as_group(
    addr: &str,
    group: &str,
    members: usize,
    ends: &[u64],
) -> anyhow::Result<Duration> {
    let total: u64 = ends.iter().sum();
    let share = PARTITIONS as usize / members;
    let ready = Arc::new(Barrier::new(members + 1));
    let (go, go_rx) = watch::channel(false);
    let consumed = Arc::new(AtomicU64::new(0));
    let finished: Arc<Mutex<Option<Instant>>> = Arc::default();
    let bar = progress(total, "consumed");
    let mut tasks: Vec<JoinHandle<anyhow::Result<MemberRead>>> = Vec::new();
    for member in 0..members {
        let (addr, group) = (addr.to_owned(), group.to_owned());
        let (ready, mut go, consumed, finished, bar) = (
            ready.clone(),
            go_rx.clone(),
            consumed.clone(),
            finished.clone(),
            bar.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut config = ConsumerConfig::with_group(group);
            config.client_id = format!("member-{member}");
            config.offset_reset = OffsetReset::Latest;
            let mut consumer = Consumer::new(Client::connect(addr).await?, config);
            consumer.subscribe(&[GROUP_TOPIC]).await?;
            // A member's assignment only ever shrinks to a subset of its final one, and with
            // fewer members every share is larger: holding `share` partitions means done.
            let deadline = Instant::now() + GROUP_DEADLINE;
            while consumer.assignment().len() != share {
                let records = consumer.poll().await?;
                anyhow::ensure!(records.is_empty(), "read records before the start");
                anyhow::ensure!(
                    Instant::now() < deadline,
                    "member {member} holds {:?} after {GROUP_DEADLINE:?}",
                    consumer.assignment()
                );
            }
            let assignment: Vec<u32> = consumer
                .assignment()
                .iter()
                .map(|tp| tp.partition)
                .collect();
            ready.wait().await;
            go.wait_for(|go| *go).await?;
            for tp in consumer.assignment() {
                consumer.seek(&tp, 0)?;
            }
            let mut seen = Vec::new();
            while consumed.load(Ordering::SeqCst) < total {
                let records = consumer.poll().await?;
                let n = records.len() as u64;
                seen.extend(records.iter().map(|r| (r.partition, r.record.offset)));
                bar.inc(n);
                let before = consumed.fetch_add(n, Ordering::SeqCst);
                if before < total && before + n >= total {
                    *lock(&finished) = Some(Instant::now());
                }
            }
            consumer.close().await?;
            Ok((assignment, seen))
        }));
    }
    if tokio::time::timeout(GROUP_DEADLINE, ready.wait())
        .await
        .is_err()
    {
        // A member failed or never got its share: its task says why.
        for task in tasks {
            if task.is_finished() {
                task.await??;
            }
        }
        anyhow::bail!("the group was not stable after {GROUP_DEADLINE:?}");
    }
    // Each member's last poll left fetches parked at the end of the log for up to
    // fetch_max_wait; a seek discards their answers but waits for them. Let them answer first,
    // so the timed reading starts with no fetch outstanding.
    tokio::time::sleep(ConsumerConfig::default().fetch_max_wait + Duration::from_millis(200)).await;
    let started = Instant::now();
    go.send(true)?;

    let mut assigned = BTreeSet::new();
    let mut seen = BTreeSet::new();
    let mut read = 0;
    for task in tasks {
        let (assignment, offsets) = task.await??;
        for partition in assignment {
            anyhow::ensure!(
                assigned.insert(partition),
                "partition {partition} assigned twice"
            );
        }
        read += offsets.len();
        seen.extend(offsets);
    }
    bar.finish_and_clear();
    anyhow::ensure!(
        assigned.len() == PARTITIONS as usize,
        "assigned {assigned:?}"
    );
    anyhow::ensure!(
        read as u64 == total && seen.len() as u64 == total,
        "read {read} records, {} distinct, of {total}",
        seen.len()
    );
    anyhow::ensure!(
        seen.iter().all(|&(p, offset)| offset < ends[p as usize]),
        "read an offset past the records produced"
    );
    let end = lock(&finished).context("the last record was counted")?;
    Ok(end.duration_since(started))
}

/// Reads every partition from 0 to its end in `ends`, a task per partition, over `client`'s
/// one connection; returns the time taken.
async fn fetch_per_partition(client: &Client, ends: &[u64]) -> anyhow::Result<Duration> {
    let bar = progress(ends.iter().sum(), "fetched");
    let started = Instant::now();
    let mut tasks = Vec::new();
    for (partition, &end) in (0..PARTITIONS).zip(ends) {
        let (client, bar) = (client.clone(), bar.clone());
        tasks.push(tokio::spawn(async move {
            let mut offset = 0;
            while offset < end {
                let fetched = client
                    .fetch(weir_client::FetchSpec::new(GROUP_TOPIC, partition, offset))
                    .await?;
                anyhow::ensure!(
                    fetched.next_offset > offset,
                    "no progress at {partition}/{offset}"
                );
                bar.inc(fetched.records.len() as u64);
                offset = fetched.next_offset;
            }
            anyhow::Ok(())
        }));
    }
    for task in tasks {
        task.await??;
    }
    let elapsed = started.elapsed();
    bar.finish_and_clear();
    Ok(elapsed)
}

/// The topic rebalances are measured on.
const REBALANCE_TOPIC: &str = "rebalance";

/// How a member stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Exit {
    /// `Consumer::close`: commit and leave the group.
    Leave,
    /// Dropped without leaving, as a crashed process: the coordinator notices when its session
    /// expires.
    Crash,
}

/// What a member's task reports after every poll.
#[derive(Debug, Clone)]
struct View {
    assignment: BTreeSet<u32>,
    /// When `assignment` last changed (seen after the poll that applied it).
    changed_at: Instant,
    /// When each partition first delivered a record since the last reset.
    first_record: HashMap<u32, Instant>,
}

type Views = Arc<Mutex<Vec<View>>>;

/// One rebalance, measured from the member's exit.
struct Rebalance {
    /// Until the survivors' assignments cover every partition.
    covered: Duration,
    /// Until every partition that changed owner delivered a record to its new owner.
    flowing: Duration,
    moved: usize,
    /// How long `close()` took (zero for a member dropped).
    closing: Duration,
}

async fn rebalances(client: &Client, addr: &str) -> anyhow::Result<()> {
    println!(
        "3. rebalance when one of 3 members stops ({PARTITIONS} partitions, `range` assignor, \
         a record per partition every ~16 ms produced meanwhile; {ROUNDS} rounds each)"
    );
    create(client, REBALANCE_TOPIC).await?;
    let stop = Arc::new(AtomicBool::new(false));
    let trickle = tokio::spawn(trickle(client.clone(), stop.clone()));

    let default_session = ConsumerConfig::default().session_timeout;
    let scenarios = [
        (
            "close(), session 10 s (default)",
            Exit::Leave,
            default_session,
        ),
        ("close(), session 2 s", Exit::Leave, SHORT_SESSION),
        ("dropped, session 2 s", Exit::Crash, SHORT_SESSION),
    ];
    println!(
        "   {:<32}  {:>26}  {:>26}",
        "", "owned again ms (min/med/max)", "flowing again ms (min/med/max)"
    );
    let mut details = Vec::new();
    for (n, (label, exit, session)) in scenarios.into_iter().enumerate() {
        let mut rounds = Vec::new();
        let bar = progress(ROUNDS as u64, "rounds");
        for round in 0..ROUNDS {
            let group = format!("rebalance-{n}-{round}");
            // The members heartbeat in step after forming the group, so stopping one right
            // after would always measure from the same point of their cycle; spread the stops
            // over one interval (the broker's: a third of the session, at most 3 s).
            let interval = (session / 3).min(Duration::from_secs(3));
            let phase = interval.mul_f64(round as f64 / ROUNDS as f64);
            rounds.push(
                rebalance_round(addr, &group, exit, session, round % 3, phase)
                    .await
                    .with_context(|| format!("{label}, round {round}"))?,
            );
            bar.inc(1);
        }
        bar.finish_and_clear();
        let spread = |f: fn(&Rebalance) -> Duration| {
            let mut v: Vec<Duration> = rounds.iter().map(f).collect();
            v.sort();
            format!(
                "{:.0} / {:.0} / {:.0}",
                ms(v[0]),
                ms(v[v.len() / 2]),
                ms(v[v.len() - 1])
            )
        };
        println!(
            "   {label:<32}  {:>26}  {:>26}",
            spread(|r| r.covered),
            spread(|r| r.flowing)
        );
        let each = |f: fn(&Rebalance) -> Duration| {
            rounds
                .iter()
                .map(|r| (ms(f(r)) * 10.0).round() / 10.0)
                .collect::<Vec<_>>()
        };
        details.push(format!(
            "   {label}: owned again {:?} ms, flowing {:?} ms, partitions moved {:?}, \
             close() {:?} ms",
            each(|r| r.covered),
            each(|r| r.flowing),
            rounds.iter().map(|r| r.moved).collect::<Vec<_>>(),
            each(|r| r.closing)
        ));
    }
    println!("   per round:");
    for line in details {
        println!("{line}");
    }
    stop.store(true, Ordering::SeqCst);
    trickle.await??;
    Ok(())
}

/// Produces one record to each partition, pauses 10 ms, and again, until `stop`.
async fn trickle(client: Client, stop: Arc<AtomicBool>) -> anyhow::Result<()> {
    let value = Bytes::from(vec![b'x'; VALUE_BYTES]);
    while !stop.load(Ordering::SeqCst) {
        for partition in 0..PARTITIONS {
            client
                .produce(
                    REBALANCE_TOPIC,
                    Some(partition),
                    vec![ProducerRecord::new(value.clone())],
                    Acks::All,
                )
                .await?;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok(())
}

/// A member of a rebalance round: polls and reports until told to exit, then exits that way and
/// says when it started and finished exiting.
async fn member(
    addr: String,
    group: String,
    session: Duration,
    me: usize,
    views: Views,
    mut exit: oneshot::Receiver<Exit>,
    gone: oneshot::Sender<(Instant, Instant)>,
) -> anyhow::Result<()> {
    let mut config = ConsumerConfig::with_group(group);
    config.client_id = format!("member-{me}");
    config.session_timeout = session;
    config.offset_reset = OffsetReset::Latest;
    let mut consumer = Consumer::new(Client::connect(addr).await?, config);
    consumer.subscribe(&[REBALANCE_TOPIC]).await?;
    loop {
        match exit.try_recv() {
            Ok(Exit::Leave) => {
                let closing = Instant::now();
                consumer.close().await?;
                let _ = gone.send((closing, Instant::now()));
                return Ok(());
            }
            Ok(Exit::Crash) => {
                // Dropping aborts the heartbeat task and closes the connection, without a
                // commit or LeaveGroup.
                let now = Instant::now();
                drop(consumer);
                let _ = gone.send((now, now));
                return Ok(());
            }
            Err(oneshot::error::TryRecvError::Empty) => {}
            Err(oneshot::error::TryRecvError::Closed) => return Ok(()),
        }
        let records = consumer.poll().await?;
        let now = Instant::now();
        let assignment: BTreeSet<u32> = consumer
            .assignment()
            .iter()
            .map(|tp| tp.partition)
            .collect();
        let mut views = lock(&views);
        let view = &mut views[me];
        if view.assignment != assignment {
            view.assignment = assignment;
            view.changed_at = now;
        }
        for r in &records {
            view.first_record.entry(r.partition).or_insert(now);
        }
    }
}

/// Polls the members' views every 5 ms until `done` returns `Some`, failing after
/// [`GROUP_DEADLINE`] or when a member's task ended with an error.
async fn wait_for<T>(
    views: &Views,
    tasks: &mut [Option<JoinHandle<anyhow::Result<()>>>],
    what: &str,
    mut done: impl FnMut(&[View]) -> Option<T>,
) -> anyhow::Result<T> {
    let deadline = Instant::now() + GROUP_DEADLINE;
    loop {
        if let Some(value) = done(&lock(views)) {
            return Ok(value);
        }
        for (me, slot) in tasks.iter_mut().enumerate() {
            if slot.as_ref().is_some_and(JoinHandle::is_finished)
                && let Some(task) = slot.take()
            {
                task.await?.with_context(|| format!("member {me}"))?;
            }
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "no {what} after {GROUP_DEADLINE:?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Partition → the member holding it, if `members` hold every partition once.
fn owners(views: &[View], members: &[usize]) -> Option<BTreeMap<u32, usize>> {
    let mut owners = BTreeMap::new();
    for &m in members {
        for &p in &views[m].assignment {
            if owners.insert(p, m).is_some() {
                return None;
            }
        }
    }
    (owners.len() == PARTITIONS as usize).then_some(owners)
}

async fn rebalance_round(
    addr: &str,
    group: &str,
    exit: Exit,
    session: Duration,
    victim: usize,
    phase: Duration,
) -> anyhow::Result<Rebalance> {
    let start = Instant::now();
    let views: Views = Arc::new(Mutex::new(vec![
        View {
            assignment: BTreeSet::new(),
            changed_at: start,
            first_record: HashMap::new(),
        };
        3
    ]));
    let mut exits = Vec::new();
    let mut gone = Vec::new();
    let mut tasks = Vec::new();
    for me in 0..3 {
        let (exit_tx, exit_rx) = oneshot::channel();
        let (gone_tx, gone_rx) = oneshot::channel();
        exits.push(Some(exit_tx));
        gone.push(Some(gone_rx));
        tasks.push(Some(tokio::spawn(member(
            addr.to_owned(),
            group.to_owned(),
            session,
            me,
            views.clone(),
            exit_rx,
            gone_tx,
        ))));
    }
    let all = [0, 1, 2];
    // Stable: two partitions each, and records flowing from every one of them.
    let before = wait_for(&views, &mut tasks, "stable group of 3", |v| {
        let owners = owners(v, &all)?;
        let flowing = owners
            .iter()
            .all(|(p, &m)| v[m].first_record.contains_key(p) && v[m].assignment.len() == 2);
        flowing.then_some(owners)
    })
    .await?;
    tokio::time::sleep(phase).await;
    for view in lock(&views).iter_mut() {
        view.first_record.clear();
    }

    exits[victim]
        .take()
        .context("each member is told to exit once")?
        .send(exit)
        .map_err(|_| anyhow::anyhow!("member {victim} ended early"))?;
    let (closing, gone_at) = gone[victim]
        .take()
        .context("each member says when it was gone once")?
        .await
        .context("the member's task ended without saying")?;
    let survivors: Vec<usize> = all.into_iter().filter(|&m| m != victim).collect();
    let (after, covered_at) = wait_for(&views, &mut tasks, "survivors owning everything", |v| {
        let owners = owners(v, &survivors)?;
        let last_change = survivors.iter().map(|&m| v[m].changed_at).max()?;
        Some((owners, last_change))
    })
    .await?;
    let moved: Vec<(u32, usize)> = after
        .iter()
        .filter(|(p, m)| before.get(p) != Some(m))
        .map(|(&p, &m)| (p, m))
        .collect();
    let flowing_at = wait_for(&views, &mut tasks, "records from moved partitions", |v| {
        moved
            .iter()
            .map(|(p, m)| v[*m].first_record.get(p).copied())
            .collect::<Option<Vec<Instant>>>()
            .and_then(|times| times.into_iter().max())
    })
    .await?;

    for &m in &survivors {
        if let Some(tx) = exits[m].take() {
            let _ = tx.send(Exit::Leave);
        }
    }
    for (me, task) in tasks.into_iter().enumerate() {
        if let Some(task) = task {
            task.await?.with_context(|| format!("member {me}"))?;
        }
    }
    Ok(Rebalance {
        covered: covered_at.saturating_duration_since(gone_at),
        flowing: flowing_at.saturating_duration_since(gone_at),
        moved: moved.len(),
        closing: gone_at.duration_since(closing),
    })
}
