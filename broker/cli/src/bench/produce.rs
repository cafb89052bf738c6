//! `weir bench produce`: fixed-size records sent in batches with a bounded window in flight,
//! closed-loop (as fast as acknowledgements allow) or open-loop at `--rate`, reporting
//! throughput and acknowledgement latency next to the disk probe of the same run.
//!
//! How the records are sent is a variant: the benchmark's own requests carrying records or a
//! batch encoded here (`--encoding`, [`requests`](super::requests)), or weir-client's
//! `Producer`, idempotent or plain (`--producer`, [`producer`](super::producer)). Given several
//! variants and `--rounds`, the variants run in turn in one process after one disk probe, each
//! run on a topic of its own after an unmeasured warm-up, and a comparison of their throughputs
//! follows (ratios within each round, and their median). Each run's report is printed as it
//! completes.
//!
//! Open-loop latency is measured from each request's *scheduled* send time, not from when it was
//! actually sent: when the broker falls behind and the window stays full, the wait counts, so
//! the percentiles do not suffer from coordinated omission. A thread of its own paces the
//! requests ([`pace`](super::pace)), so the benchmark's own lateness stays out of the figures.

use std::fmt;
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Args;
use weir_client::{Acks, Client, DEFAULT_BATCH_MAX_BYTES};

use super::compare::{Comparison, round_order};
use super::consume::{ConsumeBenchArgs, Reader};
use super::pace::Plan;
use super::probe::{self, SequentialWrite};
use super::producer::Idempotence;
use super::requests::Encoding;
use super::stats::{LatencySummary, Throughput};
use super::topic::{ensure_topic, remove_topic};

/// Chunk of the sequential probe: large enough to reach the disk's streaming bandwidth.
const PROBE_CHUNK_BYTES: usize = 1024 * 1024;
/// Records of the unmeasured run before a comparison.
const WARM_UP_RECORDS: u64 = 200_000;
/// Samples and size of the small-write probe.
const PROBE_SYNC_WRITES: u32 = 200;
const PROBE_SYNC_BYTES: usize = 4 * 1024;

/// Options of `weir bench produce`.
#[derive(Debug, Clone, Args)]
pub struct ProduceBenchArgs {
    /// Topic to write to; created if missing. With several runs, run N writes to TOPIC-N, and
    /// every run's topic but the last is deleted after it if the benchmark created it, so
    /// each run starts from an equally empty log.
    #[arg(long, default_value = "weir-bench")]
    topic: String,

    /// Records to send (per run).
    #[arg(long, default_value_t = 1_000_000, value_parser = clap::value_parser!(u64).range(1..))]
    records: u64,

    /// Value size of each record, in bytes.
    #[arg(long, value_name = "BYTES", default_value_t = 1024)]
    record_size: usize,

    /// Give records keys, cycling through this many (`k0`, `k1`, …): a keyed workload, as a
    /// compacted topic needs. 0: no keys. Not with --producer.
    #[arg(long, default_value_t = 0, conflicts_with = "producer")]
    keys: u64,

    /// Records per produce request (with --producer: per batch).
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..))]
    batch_size: u32,

    /// With --producer: a batch's bound in encoded bytes (`ProducerConfig::batch_max_bytes`),
    /// besides --batch-size records. Default: the `Producer`'s own, 1 MiB less 4 KiB.
    #[arg(long, value_name = "BYTES", requires = "producer")]
    batch_bytes: Option<usize>,

    /// Partitions of the topic if it has to be created; requests go round-robin over them.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    partitions: u32,

    /// Replicas per partition if the topic has to be created; 0 is the broker's default.
    #[arg(long, default_value_t = 0)]
    replication_factor: u32,

    /// Durability to wait for: all, leader or none (or Kafka's -1, 1, 0).
    #[arg(long, default_value_t = Acks::All, allow_hyphen_values = true)]
    acks: Acks,

    /// Produce requests in flight at once (with --producer: batches per partition, as far as
    /// the producer allows: at most 5 when idempotent, 1 when not).
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..))]
    concurrency: u32,

    /// Target records per second, open-loop; 0 sends as fast as acknowledgements allow.
    #[arg(long, default_value_t = 0)]
    rate: u64,

    /// How requests carry the records: `records` (the broker encodes the batch) or `batch`
    /// (encoded here and sent with produce_batch). A comma-separated list compares them.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "records",
        conflicts_with = "producer"
    )]
    encoding: Vec<Encoding>,

    /// Send through weir-client's Producer instead of single requests: `idempotent` or `plain`.
    /// A comma-separated list compares them.
    #[arg(long, value_enum, value_delimiter = ',')]
    producer: Vec<Idempotence>,

    /// Runs of each variant, in alternating order (A B, B A, A B, ...); with more than one run
    /// in all, an unmeasured warm-up run of the first variant comes first.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    rounds: u32,

    /// Directory of the disk probe; it should be on the broker's data disk.
    #[arg(long, value_name = "DIR", default_value = ".")]
    probe_dir: PathBuf,

    /// Size of the sequential-write probe in MiB; 0 skips the disk probe.
    #[arg(long, value_name = "MIB", default_value_t = 256)]
    probe_mib: u64,

    /// Afterwards, read the (last) topic back with `bench consume` to measure a warm log, in
    /// the formats given (default `batches`; `records,batches` compares them), --rounds times.
    #[arg(
        long,
        value_enum,
        value_name = "FORMATS",
        value_delimiter = ',',
        num_args = 0..=1,
        default_missing_value = "batches"
    )]
    consume: Option<Vec<Reader>>,
}

impl ProduceBenchArgs {
    /// The consume benchmark `--consume` asks for afterwards, of `topic`.
    pub fn consume_after(&self, topic: String) -> Option<ConsumeBenchArgs> {
        let formats = self.consume.clone()?;
        Some(ConsumeBenchArgs::after_produce(topic, formats, self.rounds))
    }

    /// The variants to run, in the order given.
    fn senders(&self) -> Vec<Sender> {
        match self.producer.is_empty() {
            true => self
                .encoding
                .iter()
                .copied()
                .map(Sender::Requests)
                .collect(),
            false => self
                .producer
                .iter()
                .copied()
                .map(Sender::Producer)
                .collect(),
        }
    }

    /// The load of one run, on `topic` with `partitions` partitions.
    fn load<'a>(&self, topic: &'a str, partitions: u32) -> Load<'a> {
        Load {
            topic,
            partitions,
            records: self.records,
            record_size: self.record_size,
            keys: self.keys,
            batch_size: self.batch_size,
            batch_bytes: self.batch_bytes.unwrap_or(DEFAULT_BATCH_MAX_BYTES),
            concurrency: self.concurrency,
            acks: self.acks,
            rate: self.rate,
        }
    }
}

/// The topic of run `run` (from 1) of `runs`: the topic itself when there is one run, else its
/// own, so every run starts from an empty log.
fn run_topic(topic: &str, run: u32, runs: u32) -> String {
    match runs {
        1 => topic.to_owned(),
        _ => format!("{topic}-{run}"),
    }
}

/// How one run sends its records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sender {
    /// The benchmark's own window of requests.
    Requests(Encoding),
    /// weir-client's `Producer`.
    Producer(Idempotence),
}

impl fmt::Display for Sender {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Requests(encoding) => encoding.fmt(f),
            Self::Producer(idempotence) => idempotence.fmt(f),
        }
    }
}

/// What one run sends, whichever way.
#[derive(Debug, Clone, Copy)]
pub struct Load<'a> {
    /// The topic written to.
    pub topic: &'a str,
    /// Its partitions.
    pub partitions: u32,
    /// Records to send.
    pub records: u64,
    /// Bytes of each record's value.
    pub record_size: usize,
    /// Keys the records cycle through; 0: no keys.
    pub keys: u64,
    /// Records per request or batch.
    pub batch_size: u32,
    /// A `Producer` batch's bound in encoded bytes.
    pub batch_bytes: usize,
    /// Requests in flight (batches per partition for the `Producer`).
    pub concurrency: u32,
    /// The acknowledgement level.
    pub acks: Acks,
    /// Records per second, open-loop; 0 for closed-loop.
    pub rate: u64,
}

impl Load<'_> {
    /// How the records are cut into requests or batches, and when each is due.
    pub fn plan(&self) -> Plan {
        Plan {
            records: self.records,
            chunk_records: self.batch_size,
            rate: self.rate,
        }
    }
}

/// What one run measured.
#[derive(Debug, Clone)]
pub struct Measured {
    /// Records acknowledged (stored, or rejected by the topic's produce chain) and the time.
    pub throughput: Throughput,
    /// Per request, or per record through the `Producer`.
    pub latency: Option<LatencySummary>,
    /// Records the topic's produce chain rejected.
    pub rejected: u64,
}

/// What the produce benchmark leaves to a consume benchmark after it.
#[derive(Debug, Clone)]
pub struct Produced {
    /// The topic the last run wrote.
    pub last_topic: String,
    /// The sequential probe's bandwidth, MB/s, if it ran.
    pub probe_mb_per_sec: Option<f64>,
}

/// Probes the disk, then produces `args.records` records through `client` once per variant and
/// round, printing each report as it completes and the comparison at the end.
pub async fn run(client: &Client, args: &ProduceBenchArgs) -> anyhow::Result<Produced> {
    let probe = if args.probe_mib > 0 {
        let probe = probe_disk(args.probe_dir.clone(), args.probe_mib).await?;
        print!("{}", probe.report(&args.probe_dir));
        Some(probe)
    } else {
        None
    };
    let probe_mb_per_sec = probe.as_ref().map(|p| p.sequential.mb_per_sec());
    let senders = args.senders();
    let mut comparison =
        Comparison::new("produce", senders.iter().map(ToString::to_string).collect());
    let runs = args.rounds * u32::try_from(senders.len()).context("too many variants")?;
    if runs > 1 {
        warm_up(client, args, senders[0]).await?;
    }
    let mut run = 0;
    let mut last_topic = args.topic.clone();
    for round in 0..args.rounds {
        for variant in round_order(senders.len(), round) {
            run += 1;
            let sender = senders[variant];
            let topic = run_topic(&args.topic, run, runs);
            let ensured =
                ensure_topic(client, &topic, args.partitions, args.replication_factor).await?;
            let load = args.load(&topic, ensured.partitions);
            let measured = send(client, &load, sender)
                .await
                .with_context(|| format!("run {run} ({sender}) failed"))?;
            comparison.record(round, variant, measured.throughput);
            let report = RunReport {
                load,
                sender,
                measured,
                probe_mb_per_sec,
            };
            print!("{report}");
            // A broker slows down as its log database grows (docs/benchmarks.md, 2026-12-04):
            // a later run must not pay for the data of the earlier ones.
            if ensured.created && run < runs {
                remove_topic(client, &topic).await;
            }
            last_topic = topic;
        }
    }
    if comparison.is_worth_showing() {
        print!("{comparison}");
    }
    Ok(Produced {
        last_topic,
        probe_mb_per_sec,
    })
}

/// Sends `load` the way `sender` says, with a progress bar.
async fn send(client: &Client, load: &Load<'_>, sender: Sender) -> anyhow::Result<Measured> {
    let progress = super::progress_bar(load.records, "records");
    let measured = match sender {
        Sender::Requests(encoding) => super::requests::run(client, load, encoding, &progress).await,
        Sender::Producer(idempotence) => {
            super::producer::run(client, load, idempotence, &progress).await
        }
    };
    progress.finish_and_clear();
    measured
}

/// Sends up to [`WARM_UP_RECORDS`] records as `sender` to a topic of their own, unmeasured,
/// and deletes it: the first run of a process is slower than the next ones (threads, buffers,
/// connections and caches still growing), which would favour whichever variant runs second.
async fn warm_up(client: &Client, args: &ProduceBenchArgs, sender: Sender) -> anyhow::Result<()> {
    let topic = format!("{}-warmup", args.topic);
    let ensured = ensure_topic(client, &topic, args.partitions, args.replication_factor).await?;
    let load = Load {
        records: args.records.min(WARM_UP_RECORDS),
        ..args.load(&topic, ensured.partitions)
    };
    send(client, &load, sender)
        .await
        .context("the warm-up run failed")?;
    println!(
        "warm-up (not measured): {} records as {sender} to {topic}",
        load.records
    );
    if ensured.created {
        remove_topic(client, &topic).await;
    }
    Ok(())
}

/// What the disk under `--probe-dir` can do.
#[derive(Debug, Clone)]
struct ProbeReport {
    sequential: SequentialWrite,
    sync: Option<LatencySummary>,
}

impl ProbeReport {
    /// Its report, naming the directory probed.
    fn report<'a>(&'a self, dir: &'a Path) -> impl fmt::Display + 'a {
        ProbeDisplay { probe: self, dir }
    }
}

struct ProbeDisplay<'a> {
    probe: &'a ProbeReport,
    dir: &'a Path,
}

impl fmt::Display for ProbeDisplay<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (probe, dir) = (self.probe, self.dir.display());
        writeln!(
            f,
            "disk probe ({dir}): sequential write + fdatasync every {} KiB: {:.1} MB/s",
            probe.sequential.chunk_bytes / 1024,
            probe.sequential.mb_per_sec()
        )?;
        if let Some(sync) = &probe.sync {
            writeln!(
                f,
                "disk probe ({dir}): {} KiB write + fdatasync: {sync}",
                PROBE_SYNC_BYTES / 1024
            )?;
        }
        Ok(())
    }
}

async fn probe_disk(dir: PathBuf, mib: u64) -> anyhow::Result<ProbeReport> {
    let shown = dir.display().to_string();
    tokio::task::spawn_blocking(move || -> std::io::Result<ProbeReport> {
        Ok(ProbeReport {
            sequential: probe::sequential_write(&dir, mib * 1024 * 1024, PROBE_CHUNK_BYTES)?,
            sync: probe::sync_latency(&dir, PROBE_SYNC_WRITES, PROBE_SYNC_BYTES)?,
        })
    })
    .await
    .context("the disk probe failed")?
    .with_context(|| format!("cannot probe the disk under {shown}"))
}

/// One run's report.
struct RunReport<'a> {
    load: Load<'a>,
    sender: Sender,
    measured: Measured,
    probe_mb_per_sec: Option<f64>,
}

impl fmt::Display for RunReport<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let load = &self.load;
        let mode = if load.rate > 0 {
            format!(
                "open loop at {} records/s, latency from the scheduled send time",
                load.rate
            )
        } else {
            "closed loop".to_owned()
        };
        writeln!(
            f,
            "produce to {} ({} partition(s)): {} records of {} B, batch {}, concurrency {}, \
             acks {}, {mode}",
            load.topic,
            load.partitions,
            load.records,
            load.record_size,
            load.batch_size,
            load.concurrency,
            load.acks
        )?;
        let (described, latency_of) = match self.sender {
            Sender::Requests(encoding) => {
                (encoding.describe().to_owned(), "ack latency per request")
            }
            Sender::Producer(idempotence) => (
                idempotence.describe(load.concurrency, load.acks),
                "latency per record, enqueued to acknowledged",
            ),
        };
        writeln!(f, "  sent as {}: {described}", self.sender)?;
        write!(f, "  throughput: {}", self.measured.throughput)?;
        match self.probe_mb_per_sec {
            Some(probe) if probe > 0.0 => writeln!(
                f,
                " = {:.0}% of the sequential fdatasync bandwidth",
                100.0 * self.measured.throughput.mb_per_sec() / probe
            )?,
            _ => writeln!(f)?,
        }
        if let Some(latency) = &self.measured.latency {
            writeln!(f, "  {latency_of}: {latency}")?;
        }
        if self.measured.rejected > 0 {
            writeln!(
                f,
                "  rejected by the topic's modules: {} records",
                self.measured.rejected
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        args: ProduceBenchArgs,
    }

    fn parse(args: &[&str]) -> Result<ProduceBenchArgs, clap::Error> {
        Cli::try_parse_from(std::iter::once("bench").chain(args.iter().copied())).map(|c| c.args)
    }

    #[test]
    fn a_load_plans_chunks_of_its_batch_size_at_its_rate() {
        let args = parse(&["--records", "250", "--rate", "1000"]).expect("valid");
        assert_eq!(
            args.load("t", 1).plan(),
            Plan {
                records: 250,
                chunk_records: 100,
                rate: 1000
            }
        );
        assert_eq!(parse(&[]).expect("defaults").load("t", 1).plan().rate, 0);
    }

    #[test]
    fn defaults_follow_the_design() {
        let args = parse(&[]).expect("defaults");
        assert_eq!(args.topic, "weir-bench");
        assert_eq!(
            (args.record_size, args.batch_size, args.concurrency),
            (1024, 100, 8)
        );
        assert_eq!((args.partitions, args.rate, args.acks), (1, 0, Acks::All));
        assert_eq!(args.probe_mib, 256);
        assert_eq!(args.senders(), [Sender::Requests(Encoding::Records)]);
        assert_eq!(args.rounds, 1);
        assert_eq!(args.consume_after("t".into()), None);
        assert!(parse(&["--batch-size", "0"]).is_err());
        let kafka_acks = parse(&["--acks", "-1"]).expect("Kafka spelling");
        assert_eq!(kafka_acks.acks, Acks::All);
    }

    #[test]
    fn variants_come_from_one_list_and_the_two_kinds_do_not_mix() {
        let encodings = parse(&["--encoding", "records,batch", "--rounds", "3"]).expect("valid");
        assert_eq!(
            encodings.senders(),
            [
                Sender::Requests(Encoding::Records),
                Sender::Requests(Encoding::Batch)
            ]
        );
        assert_eq!(encodings.rounds, 3);
        let producers = parse(&["--producer", "idempotent,plain"]).expect("valid");
        assert_eq!(
            producers.senders(),
            [
                Sender::Producer(Idempotence::Idempotent),
                Sender::Producer(Idempotence::Plain)
            ]
        );
        assert_eq!(producers.senders()[1].to_string(), "plain");
        assert!(parse(&["--encoding", "batch", "--producer", "plain"]).is_err());
        assert!(parse(&["--encoding", "protobuf"]).is_err());
        assert!(parse(&["--rounds", "0"]).is_err());
    }

    #[test]
    fn consume_afterwards_takes_an_optional_list_of_formats() {
        let plain = parse(&["--consume"]).expect("valid");
        assert_eq!(
            plain.consume_after("t".into()),
            Some(ConsumeBenchArgs::after_produce(
                "t".into(),
                vec![Reader::Batches],
                1
            ))
        );
        let both = parse(&["--consume", "records,batches", "--rounds", "2"]).expect("valid");
        assert_eq!(
            both.consume_after("t-4".into()),
            Some(ConsumeBenchArgs::after_produce(
                "t-4".into(),
                vec![Reader::Records, Reader::Batches],
                2
            ))
        );
        // A flag right after --consume is not taken for its value.
        let then_flag = parse(&["--consume", "--records", "10"]).expect("valid");
        assert_eq!(then_flag.records, 10);
        assert!(then_flag.consume_after("t".into()).is_some());
    }

    #[test]
    fn every_run_but_a_lone_one_gets_its_own_topic() {
        assert_eq!(run_topic("weir-bench", 1, 1), "weir-bench");
        assert_eq!(run_topic("weir-bench", 1, 6), "weir-bench-1");
        assert_eq!(run_topic("weir-bench", 6, 6), "weir-bench-6");
    }

    #[test]
    fn report_relates_produce_bandwidth_to_the_disk() {
        let probe = ProbeReport {
            sequential: SequentialWrite {
                bytes: 400_000_000,
                chunk_bytes: PROBE_CHUNK_BYTES,
                elapsed: Duration::from_secs(1),
            },
            sync: None,
        };
        let text = probe.report(Path::new("/data")).to_string();
        assert!(
            text.contains(
                "disk probe (/data): sequential write + fdatasync every 1024 KiB: 400.0 MB/s"
            ),
            "{text}"
        );
        let args = parse(&["--records", "1000", "--encoding", "batch"]).expect("valid");
        let report = RunReport {
            load: args.load("weir-bench", 1),
            sender: Sender::Requests(Encoding::Batch),
            measured: Measured {
                throughput: Throughput {
                    records: 1000,
                    bytes: 100_000_000,
                    elapsed: Duration::from_secs(1),
                },
                latency: None,
                rejected: 0,
            },
            probe_mb_per_sec: Some(probe.sequential.mb_per_sec()),
        };
        let text = report.to_string();
        assert!(
            text.starts_with("produce to weir-bench (1 partition(s))"),
            "{text}"
        );
        assert!(
            text.contains("sent as batch: requests of one record batch"),
            "{text}"
        );
        assert!(text.contains("100.0 MB/s"), "{text}");
        assert!(
            text.contains("= 25% of the sequential fdatasync bandwidth"),
            "{text}"
        );
    }

    #[test]
    fn a_producer_run_says_how_many_batches_were_in_flight() {
        let args = parse(&["--producer", "plain"]).expect("valid");
        let report = RunReport {
            load: args.load("weir-bench", 1),
            sender: Sender::Producer(Idempotence::Plain),
            measured: Measured {
                throughput: Throughput {
                    records: 10,
                    bytes: 10_240,
                    elapsed: Duration::from_secs(1),
                },
                latency: None,
                rejected: 0,
            },
            probe_mb_per_sec: None,
        };
        let text = report.to_string();
        assert!(
            text.contains("sent as plain: weir-client's Producer"),
            "{text}"
        );
        assert!(text.contains("1 in flight per partition"), "{text}");
        assert!(!text.contains("fdatasync"), "no probe, no ratio: {text}");
    }
}
