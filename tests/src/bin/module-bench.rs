//! The module benchmark (docs/benchmarks.md, "Modules"): what WebAssembly modules cost, every
//! figure measured in the same run so the ratios hold on a noisy machine.
//!
//! 1. The `contains` filter's logic compiled natively versus the `contains` module run through
//!    the broker's wasm host (weir-wasm) on the same records, at 100 B and 1 KiB values; the
//!    module alone, given input batches encoded before the clock starts ("batch ready"), which
//!    splits a chain's time between the module and the host building its input; and how long
//!    an instance takes to create.
//! 2. Through a broker started in this process (data in a temporary directory under the current
//!    one): produce and consume throughput (as records and as record batches) of 1 KiB records
//!    with no module, a keep-all filter, a field filter keeping half the records, and a map
//!    rewriting every value; the time from registering a module to its first use; and the cost
//!    of a fresh consume-side chain.
//!
//! Run it with `cargo run --release -p weir-tests --bin module-bench` (add `-- --records N` to
//! change the record count, default 200 000, `--fetches N` the one-record fetches timed with
//! and without a fresh chain, default 300, and `--sections 1` or `--sections 2` to run one alone).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use indicatif::{ProgressBar, ProgressStyle};
use weir_proto::v1 as pb;
use weir_tests::RawClient;
use weir_tests::modules::{self, module_ref as module, register};
use weir_types::{EncodedBatch, Record};
use weir_wasm::{Chain, ChainRecord, ModuleId, Runtime, Stage, WasmLimits};

/// Records per produce request and per call into a module.
const BATCH: usize = 500;
/// Produce requests in flight.
const IN_FLIGHT: usize = 8;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let options = Options::parse()?;
    println!("module benchmark: {} records per run\n", options.records);
    if options.sections.contains(&1) {
        native_versus_wasm(options.records)?;
    }
    if options.sections.contains(&2) {
        through_the_broker(options).await?;
    }
    Ok(())
}

/// The command line.
struct Options {
    /// Records per run.
    records: usize,
    /// One-record fetches timed with and without a fresh chain.
    fetches: u32,
    /// The sections to run (1, 2 or both), so that a profile can take one alone.
    sections: Vec<u8>,
}

impl Options {
    fn parse() -> anyhow::Result<Options> {
        const USAGE: &str = "usage: module-bench [--records N] [--fetches N] [--sections 1,2]";
        let mut options = Options {
            records: 200_000,
            fetches: 300,
            sections: vec![1, 2],
        };
        let mut args = std::env::args().skip(1);
        while let Some(flag) = args.next() {
            let value = args
                .next()
                .with_context(|| format!("{flag}: no value; {USAGE}"))?;
            let number = || format!("{flag} {value}: not a number");
            match flag.as_str() {
                "--records" => options.records = value.parse().with_context(number)?,
                "--fetches" => options.fetches = value.parse().with_context(number)?,
                "--sections" => {
                    options.sections = value
                        .split(',')
                        .map(|section| match section {
                            "1" => Ok(1),
                            "2" => Ok(2),
                            _ => anyhow::bail!("--sections {value}: the sections are 1 and 2"),
                        })
                        .collect::<anyhow::Result<_>>()?;
                }
                _ => anyhow::bail!("{flag}: unknown flag; {USAGE}"),
            }
        }
        anyhow::ensure!(options.fetches > 0, "--fetches 0: at least one is needed");
        Ok(options)
    }
}

fn progress(total: u64, what: &str) -> ProgressBar {
    let template = format!("{{bar:40}} {{human_pos}}/{{human_len}} {what} {{per_sec}}");
    let style =
        ProgressStyle::with_template(&template).unwrap_or_else(|_| ProgressStyle::default_bar());
    ProgressBar::new(total).with_style(style)
}

/// A JSON value of about `size` bytes; every second one has status "active" and contains
/// "needle".
fn value(i: usize, size: usize) -> Bytes {
    let (status, word) = if i.is_multiple_of(2) {
        ("active", "needle")
    } else {
        ("closed", "thread")
    };
    let head = format!(r#"{{"id":{i},"status":"{status}","note":"{word} "#);
    let pad = size.saturating_sub(head.len() + 2);
    Bytes::from(format!("{head}{}\"}}", "x".repeat(pad)))
}

fn rate(count: usize, elapsed: Duration) -> f64 {
    count as f64 / elapsed.as_secs_f64().max(1e-9)
}

fn native_versus_wasm(count: usize) -> anyhow::Result<()> {
    println!("1. the same filter natively and as a module (weir-wasm, {BATCH} records per call)");
    let runtime = Runtime::new(WasmLimits::default(), None)?;
    let contains = runtime.load(
        ModuleId {
            name: "contains".into(),
            version: 1,
        },
        &modules::bytes("contains")?,
    )?;
    let keep_all = runtime.load(
        ModuleId {
            name: "keep-all".into(),
            version: 1,
        },
        &modules::bytes("keep-all")?,
    )?;
    println!(
        "   {:>6}  {:>14}  {:>14}  {:>14}  {:>9}  {:>13}",
        "value", "native rec/s", "module rec/s", "keep-all rec/s", "module %", "batch ready %"
    );
    for size in [100, 1024] {
        let records: Vec<Record> = (0..count)
            .map(|i| Record {
                key: None,
                value: value(i, size),
                headers: Vec::new(),
                timestamp_ms: 0,
                tombstone: false,
            })
            .collect();

        let started = Instant::now();
        let native_kept = records
            .iter()
            .filter(|r| contains::contains_logic(&r.value, b"needle"))
            .count();
        let native = started.elapsed();

        let run = |module: &Arc<weir_wasm::Module>, params: Vec<(String, String)>| {
            let mut chain = Chain::new(vec![Stage {
                module: module.clone(),
                params,
            }]);
            chain.prepare()?;
            let bar = progress(count as u64, "records");
            let started = Instant::now();
            let mut kept = 0;
            for (n, batch) in records.chunks(BATCH).enumerate() {
                let input = batch
                    .iter()
                    .enumerate()
                    .map(|(i, r)| ChainRecord {
                        position: (n * BATCH + i) as u64,
                        record: r.clone(),
                    })
                    .collect();
                kept += chain.run(input)?.records.len();
                bar.inc(batch.len() as u64);
            }
            bar.finish_and_clear();
            anyhow::Ok((kept, started.elapsed()))
        };
        let (wasm_kept, wasm) = run(&contains, vec![("needle".into(), "needle".into())])?;
        anyhow::ensure!(
            wasm_kept == native_kept,
            "the module kept {wasm_kept} records, native code {native_kept}"
        );
        let (_, baseline) = run(&keep_all, Vec::new())?;
        let ready = module_alone(&contains, &records)?;
        anyhow::ensure!(
            ready.0 == native_kept,
            "the module given ready batches kept {} records, native code {native_kept}",
            ready.0
        );
        println!(
            "   {:>5}B  {:>14.0}  {:>14.0}  {:>14.0}  {:>8.1}%  {:>12.1}%",
            size,
            rate(count, native),
            rate(count, wasm),
            rate(count, baseline),
            100.0 * native.as_secs_f64() / wasm.as_secs_f64(),
            100.0 * native.as_secs_f64() / ready.1.as_secs_f64()
        );
    }
    let started = Instant::now();
    let instances = 200;
    for _ in 0..instances {
        contains.instantiate(&[("needle".into(), "x".into())])?;
    }
    println!(
        "   instantiate + init: {:.0} µs per instance\n",
        started.elapsed().as_secs_f64() * 1e6 / f64::from(instances)
    );
    Ok(())
}

/// The `contains` module (needle "needle") over `records` in calls of [`BATCH`], each batch
/// encoded before the clock starts: the module's share of a chain's time, without the host's
/// building of its input. Returns the records kept and the time taken.
fn module_alone(
    contains: &Arc<weir_wasm::Module>,
    records: &[Record],
) -> anyhow::Result<(usize, Duration)> {
    let batches: Vec<(Vec<u8>, u32)> = records
        .chunks(BATCH)
        .map(|batch| {
            let bytes = batch.iter().map(|r| 16 + r.encoded_len_hint()).sum();
            let mut writer = weir_abi::BatchWriter::with_capacity(bytes);
            for (i, r) in (0u64..).zip(batch) {
                writer.push(
                    i,
                    &weir_abi::RecordView {
                        timestamp_ms: r.timestamp_ms,
                        key: r.key.as_deref(),
                        value: &r.value,
                        headers: r
                            .headers
                            .iter()
                            .map(|h| (h.key.as_str(), &h.value[..]))
                            .collect(),
                    },
                );
            }
            let inputs = writer.len();
            (writer.finish(), inputs)
        })
        .collect();
    let mut instance = contains.instantiate(&[("needle".into(), "needle".into())])?;
    let started = Instant::now();
    let mut kept = 0;
    for (batch, inputs) in &batches {
        let outcome = instance.process(batch, *inputs)?;
        kept += weir_abi::OutcomeReader::new(&outcome, *inputs)?.count();
    }
    Ok((kept, started.elapsed()))
}

async fn through_the_broker(options: Options) -> anyhow::Result<()> {
    let count = options.records;
    println!("2. through a broker in this process, 1 KiB records, acks=all");
    let dir = tempfile::Builder::new()
        .prefix("weir-module-bench-")
        .tempdir_in(".")?;
    let config = weir_server::BrokerConfig {
        listen: std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
        metrics_listen: None,
        data_dir: dir.path().to_path_buf(),
        ..Default::default()
    };
    let broker = weir_server::Broker::start(config).await?;
    let mut client = weir_proto::v1::broker_client::BrokerClient::connect(format!(
        "http://{}",
        broker.local_addr()
    ))
    .await?
    .max_decoding_message_size(256 * 1024 * 1024);

    let started = Instant::now();
    register(&mut client, "keep-all").await?;
    let registered = started.elapsed();
    create(&mut client, "first-use").await?;
    produce(&mut client, "first-use", 0, 1).await?;
    let started = Instant::now();
    fetch_all(
        &mut client,
        "first-use",
        1,
        vec![module("keep-all", &[])],
        false,
    )
    .await?;
    println!(
        "   register keep-all: {:.1} ms (validate + compile); first fetch through it: {:.1} ms",
        registered.as_secs_f64() * 1e3,
        started.elapsed().as_secs_f64() * 1e3
    );
    for name in ["field-filter", "uppercase"] {
        register(&mut client, name).await?;
    }
    let chains: [(&str, Vec<pb::ModuleRef>); 4] = [
        ("no module", vec![]),
        ("keep-all filter", vec![module("keep-all", &[])]),
        (
            "field filter, 50%",
            vec![module(
                "field-filter",
                &[("field", "status"), ("value", "active")],
            )],
        ),
        ("uppercase map", vec![module("uppercase", &[])]),
    ];

    println!(
        "   {:<18}  {:>12}  {:>7}  {:>12}  {:>7}  {:>12}  {:>7}",
        "", "produce rec/s", "ratio", "records rec/s", "ratio", "batches rec/s", "ratio"
    );
    let mut baseline: Option<[f64; 3]> = None;
    for (i, (label, chain)) in chains.iter().enumerate() {
        let topic = format!("bench-{i}");
        create(&mut client, &topic).await?;
        for m in chain {
            client
                .attach_module(pb::AttachModuleRequest {
                    topic: topic.clone(),
                    module: Some(m.clone()),
                    path: pb::ModulePath::Produce as i32,
                    on_reject: pb::RejectPolicy::Reject as i32,
                    dead_letter_topic: String::new(),
                })
                .await?;
        }
        let started = Instant::now();
        let stored = produce_parallel(&client, &topic, count).await?;
        let produce_rate = rate(count, started.elapsed());

        // Consume: the same chain over a topic holding every record.
        if i == 0 {
            anyhow::ensure!(stored == count as u64, "stored {stored} of {count}");
        }
        let expected = if label.contains("50%") {
            count / 2
        } else {
            count
        };
        let mut rates = [produce_rate, 0.0, 0.0];
        for (form, batches) in [(1, false), (2, true)] {
            let started = Instant::now();
            let read =
                fetch_all(&mut client, "bench-0", count as u64, chain.clone(), batches).await?;
            rates[form] = rate(count, started.elapsed());
            anyhow::ensure!(
                read == expected,
                "{label}: consumed {read}, expected {expected} (batches: {batches})"
            );
        }
        let base = *baseline.get_or_insert(rates);
        println!(
            "   {label:<18}  {:>12.0}  {:>7.2}  {:>12.0}  {:>7.2}  {:>12.0}  {:>7.2}",
            rates[0],
            rates[0] / base[0],
            rates[1],
            rates[1] / base[1],
            rates[2],
            rates[2] / base[2],
        );
    }

    // A fresh chain per fetch: one-record fetches with and without a module.
    let fetches = options.fetches;
    let mut times = Vec::new();
    for chain in [vec![], vec![module("keep-all", &[])]] {
        let started = Instant::now();
        for _ in 0..fetches {
            let fetched = client
                .fetch(fetch_request("bench-0", 0, 1, chain.clone(), false))
                .await?
                .into_inner();
            anyhow::ensure!(
                fetched.records.len() == 1,
                "fetched {}",
                fetched.records.len()
            );
        }
        times.push(started.elapsed().as_secs_f64() / f64::from(fetches));
    }
    println!(
        "   one-record fetch: {:.0} µs without a module, {:.0} µs with a fresh keep-all chain (+{:.0} µs)",
        times[0] * 1e6,
        times[1] * 1e6,
        (times[1] - times[0]) * 1e6
    );
    broker.shutdown().await;
    Ok(())
}

async fn create(client: &mut RawClient, topic: &str) -> anyhow::Result<()> {
    client
        .create_topic(pb::CreateTopicRequest {
            name: topic.into(),
            partitions: 1,
            replication_factor: 0,
            configs: HashMap::new(),
        })
        .await?;
    Ok(())
}

/// Produces records `from..from + count` in one request; returns how many were stored.
async fn produce(
    client: &mut RawClient,
    topic: &str,
    from: usize,
    count: usize,
) -> anyhow::Result<u64> {
    let records = (from..from + count)
        .map(|i| pb::Record {
            key: None,
            value: value(i, 1024),
            headers: Vec::new(),
            timestamp_ms: None,
            tombstone: false,
        })
        .collect();
    let response = client
        .produce(pb::ProduceRequest {
            topic: topic.into(),
            partition: Some(0),
            records,
            acks: pb::Acks::All as i32,
            ..pb::ProduceRequest::default()
        })
        .await?
        .into_inner();
    Ok(u64::from(response.record_count))
}

/// Produces `count` records in requests of [`BATCH`], [`IN_FLIGHT`] at a time.
async fn produce_parallel(client: &RawClient, topic: &str, count: usize) -> anyhow::Result<u64> {
    let bar = progress(count as u64, "produced");
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..IN_FLIGHT {
        let (mut client, topic, next, bar) =
            (client.clone(), topic.to_owned(), next.clone(), bar.clone());
        tasks.push(tokio::spawn(async move {
            let mut stored = 0;
            loop {
                let from = next.fetch_add(BATCH, std::sync::atomic::Ordering::Relaxed);
                if from >= count {
                    return anyhow::Ok(stored);
                }
                let n = BATCH.min(count - from);
                stored += produce(&mut client, &topic, from, n).await?;
                bar.inc(n as u64);
            }
        }));
    }
    let mut stored = 0;
    for task in tasks {
        stored += task.await??;
    }
    bar.finish_and_clear();
    Ok(stored)
}

fn fetch_request(
    topic: &str,
    offset: u64,
    max_records: u32,
    modules: Vec<pb::ModuleRef>,
    record_batches: bool,
) -> pb::FetchRequest {
    pb::FetchRequest {
        topic: topic.into(),
        partition: 0,
        offset: offset as i64,
        max_records,
        max_bytes: 0,
        max_wait_ms: 0,
        modules,
        record_batches,
    }
}

/// Reads `topic` from offset 0 to `end` through `chain`, as records or as record batches
/// (verified and decoded here, as a client would); returns the records that came back.
async fn fetch_all(
    client: &mut RawClient,
    topic: &str,
    end: u64,
    chain: Vec<pb::ModuleRef>,
    batches: bool,
) -> anyhow::Result<usize> {
    let bar = progress(end, "consumed");
    let (mut offset, mut read) = (0, 0);
    while offset < end {
        let fetched = client
            .fetch(fetch_request(
                topic,
                offset,
                BATCH as u32 * 4,
                chain.clone(),
                batches,
            ))
            .await?
            .into_inner();
        anyhow::ensure!(
            fetched.next_offset > offset,
            "no progress at offset {offset}"
        );
        bar.inc(fetched.next_offset - offset);
        for bytes in fetched.record_batches {
            let batch = EncodedBatch::verify(bytes).context("a fetched batch is damaged")?;
            for record in batch.records() {
                let (at, _) = record.context("a fetched batch has an undecodable record")?;
                read += usize::from(at.0 >= offset);
            }
        }
        offset = fetched.next_offset;
        read += fetched.records.len();
    }
    bar.finish_and_clear();
    Ok(read)
}
