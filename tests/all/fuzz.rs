//! Fuzzing on stable Rust, in every test run: what reaches the broker from outside (every gRPC
//! request type, and module bytes) is generated at random, and the broker must answer each with
//! a status (never a panic) and keep serving. The record batch codec and config files are
//! fuzzed where they live (`broker/types/tests/fuzz_codec.rs`, `weir-server`'s config tests).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use weir_proto::v1 as pb;
use weir_tests::{InProcessBroker, RawGrpc, UNARY_RPCS as UNARY, modules};
use weir_wasm::{ModuleId, Runtime, WasmLimits};

/// Names that exist on the broker under test, so fuzzed requests reach past the lookups.
const NAMES: &[&str] = &["fuzz", "g", "keep-all", "0", ""];

/// A protobuf field: a tag from 1 to 9 with a value of a matching wire type.
fn field(depth: u32) -> BoxedStrategy<Vec<u8>> {
    let tag = 1u64..10;
    let varint = (tag.clone(), any::<u64>()).prop_map(|(tag, v)| {
        let mut out = Vec::new();
        put_varint(&mut out, tag << 3);
        put_varint(&mut out, v);
        out
    });
    let small = (tag.clone(), 0u64..20).prop_map(|(tag, v)| {
        let mut out = Vec::new();
        put_varint(&mut out, tag << 3);
        put_varint(&mut out, v);
        out
    });
    let name = (tag.clone(), proptest::sample::select(NAMES))
        .prop_map(|(tag, s)| length_delimited(tag, s.as_bytes()));
    let bytes = (tag.clone(), proptest::collection::vec(any::<u8>(), 0..24))
        .prop_map(|(tag, b)| length_delimited(tag, &b));
    let fixed = (tag.clone(), any::<[u8; 8]>()).prop_map(|(tag, b)| {
        let mut out = Vec::new();
        put_varint(&mut out, (tag << 3) | 1);
        out.extend_from_slice(&b);
        out
    });
    if depth == 0 {
        prop_oneof![varint, small, name, bytes, fixed].boxed()
    } else {
        let nested = (tag, message(depth - 1)).prop_map(|(tag, m)| length_delimited(tag, &m));
        prop_oneof![
            varint,
            small.clone(),
            small,
            name.clone(),
            name,
            bytes,
            fixed,
            nested
        ]
        .boxed()
    }
}

/// A message of random fields: often valid protobuf of the request's fields with odd values,
/// sometimes not protobuf at all.
fn message(depth: u32) -> BoxedStrategy<Vec<u8>> {
    prop_oneof![
        8 => proptest::collection::vec(field(depth), 0..6).prop_map(|f| f.concat()),
        1 => proptest::collection::vec(any::<u8>(), 0..32),
    ]
    .boxed()
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn length_delimited(tag: u64, bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    put_varint(&mut out, (tag << 3) | 2);
    put_varint(&mut out, bytes.len() as u64);
    out.extend_from_slice(bytes);
    out
}

/// Counts panics raised in broker code while it is installed (tests of this binary run in
/// parallel: a panic elsewhere in broker code would count too, and is a bug as well).
struct PanicCounter {
    count: Arc<AtomicU64>,
}

impl PanicCounter {
    fn install() -> Self {
        let count = Arc::new(AtomicU64::new(0));
        let seen = count.clone();
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if info
                .location()
                .is_some_and(|l| l.file().contains("broker/") || l.file().contains("sdk/"))
            {
                seen.fetch_add(1, Ordering::Relaxed);
            }
            previous(info);
        }));
        Self { count }
    }

    fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_rpc_answers_arbitrary_requests_and_the_broker_keeps_serving() -> anyhow::Result<()> {
    weir_tests::init_tracing();
    let panics = PanicCounter::install();
    let broker = InProcessBroker::start().await?;
    let raw = broker.raw_client().await?;
    raw.clone()
        .create_topic(pb::CreateTopicRequest {
            name: "fuzz".into(),
            partitions: 2,
            ..Default::default()
        })
        .await?;
    raw.clone()
        .register_module(pb::RegisterModuleRequest {
            name: "keep-all".into(),
            wasm: modules::bytes("keep-all")?.into(),
            ..Default::default()
        })
        .await?;
    let mut grpc = RawGrpc::connect(&broker.url()).await?;

    // Generate the requests first (proptest's runner is synchronous), then send them.
    let mut runner = TestRunner::new(Config {
        rng_seed: proptest::test_runner::RngSeed::Fixed(0x5eed),
        ..Config::default()
    });
    const PER_RPC: usize = 24;
    let strategy = message(2);
    let mut calls = Vec::new();
    for method in UNARY.iter().chain(&["Subscribe"]) {
        for _ in 0..PER_RPC {
            let tree = strategy
                .new_tree(&mut runner)
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            calls.push((*method, Bytes::from(tree.current())));
        }
    }
    let (mut answered, mut refused) = (0u32, 0u32);
    for (method, message) in &calls {
        let path = format!("/weir.v1.Broker/{method}");
        let call = async {
            if *method == "Subscribe" {
                grpc.first_of_stream(&path, message.clone())
                    .await
                    .map(|_| ())
            } else {
                grpc.unary(&path, message.clone()).await.map(|_| ())
            }
        };
        // A long poll or a subscription may wait: that is an answer too.
        match tokio::time::timeout(Duration::from_millis(300), call).await {
            Ok(Ok(())) | Err(_) => answered += 1,
            Ok(Err(status)) => {
                refused += 1;
                assert_ne!(
                    status.code(),
                    tonic::Code::Unknown,
                    "{method} with {message:?}: {status:?}"
                );
            }
        }
    }
    println!(
        "fuzzed {} requests over {} RPCs: {answered} answered, {refused} refused",
        calls.len(),
        UNARY.len() + 1
    );
    assert_eq!(panics.count(), 0, "the broker panicked on a fuzzed request");

    // Still serving: a produce and a fetch on the topic made before.
    let produced = raw
        .clone()
        .produce(pb::ProduceRequest {
            topic: "fuzz".into(),
            partition: Some(1),
            records: vec![pb::Record {
                value: Bytes::from_static(b"after"),
                ..Default::default()
            }],
            ..Default::default()
        })
        .await?
        .into_inner();
    let offset = produced.base_offset.expect("an offset");
    let fetched = raw
        .clone()
        .fetch(pb::FetchRequest {
            topic: "fuzz".into(),
            partition: 1,
            offset: offset as i64,
            ..Default::default()
        })
        .await?
        .into_inner();
    assert_eq!(fetched.records[0].value, Bytes::from_static(b"after"));
    broker.stop().await;
    Ok(())
}

/// Module registration bytes, damaged every way (bytes flipped, cut, spliced), are refused or
/// loaded, never a panic.
#[test]
fn damaged_module_bytes_are_refused_or_loaded_never_a_panic() -> anyhow::Result<()> {
    let original = modules::bytes("keep-all")?;
    let runtime = Runtime::new(
        WasmLimits {
            max_instances: 4,
            ..WasmLimits::default()
        },
        None,
    )?;
    let undamaged = ModuleId {
        name: "undamaged".into(),
        version: 1,
    };
    runtime.load(undamaged, &original)?;
    let loaded = AtomicU64::new(0);
    let mut runner = TestRunner::new(Config {
        cases: 48,
        rng_seed: proptest::test_runner::RngSeed::Fixed(0x3a5),
        ..Config::default()
    });
    let damage = (
        proptest::collection::vec((any::<proptest::sample::Index>(), any::<u8>()), 0..4),
        any::<proptest::sample::Index>(),
        proptest::collection::vec(any::<u8>(), 0..8),
        any::<bool>(),
    );
    runner
        .run(&damage, |(flips, cut, splice, truncate)| {
            let mut bytes = original.clone();
            for (at, byte) in &flips {
                let i = at.index(bytes.len());
                bytes[i] ^= byte | 1;
            }
            let at = cut.index(bytes.len());
            if truncate {
                bytes.truncate(at);
            } else {
                bytes.splice(at..at, splice);
            }
            let id = ModuleId {
                name: "fuzzed".into(),
                version: 1,
            };
            if runtime.load(id, &bytes).is_ok() {
                loaded.fetch_add(1, Ordering::Relaxed);
            }
            Ok(())
        })
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    println!(
        "fuzzed 48 damaged modules: {} still loaded",
        loaded.load(Ordering::Relaxed)
    );
    Ok(())
}
