//! WebAssembly modules through a real broker: the registry, produce chains with each reject
//! policy, consume chains, every example module on a real path, hostile modules contained, and
//! counters. Modules are the ones in `wasm-modules/`, compiled for wasm by the test build.

use std::collections::HashMap;
use std::time::Duration;

use bytes::Bytes;
use tonic::Code;
use weir_proto::error::{reason_of, violations_of};
use weir_proto::v1 as pb;
use weir_tests::modules::{module_ref as module, register};
use weir_tests::{InProcessBroker, RawClient, modules};

async fn attach(
    client: &mut RawClient,
    topic: &str,
    module: pb::ModuleRef,
    path: pb::ModulePath,
    on_reject: pb::RejectPolicy,
    dead_letter_topic: &str,
) -> Result<pb::TopicDescription, tonic::Status> {
    let described = client
        .attach_module(pb::AttachModuleRequest {
            topic: topic.into(),
            module: Some(module),
            path: path as i32,
            on_reject: on_reject as i32,
            dead_letter_topic: dead_letter_topic.into(),
        })
        .await?
        .into_inner();
    Ok(described.topic.unwrap_or_default())
}

fn value_record(value: &str) -> pb::Record {
    pb::Record {
        key: None,
        value: Bytes::copy_from_slice(value.as_bytes()),
        headers: Vec::new(),
        timestamp_ms: None,
        tombstone: false,
    }
}

async fn produce(
    client: &mut RawClient,
    topic: &str,
    values: &[&str],
) -> Result<pb::ProduceResponse, tonic::Status> {
    Ok(client
        .produce(pb::ProduceRequest {
            topic: topic.into(),
            partition: Some(0),
            records: values.iter().map(|v| value_record(v)).collect(),
            acks: pb::Acks::All as i32,
            ..Default::default()
        })
        .await?
        .into_inner())
}

async fn fetch(
    client: &mut RawClient,
    topic: &str,
    offset: i64,
    modules: Vec<pb::ModuleRef>,
) -> Result<pb::FetchResponse, tonic::Status> {
    Ok(client
        .fetch(pb::FetchRequest {
            topic: topic.into(),
            partition: 0,
            offset,
            max_records: 0,
            max_bytes: 0,
            max_wait_ms: 0,
            modules,
            ..Default::default()
        })
        .await?
        .into_inner())
}

/// `(offset, value)` of fetched records.
fn offsets_and_values(fetched: &pb::FetchResponse) -> Vec<(u64, String)> {
    fetched
        .records
        .iter()
        .map(|r| (r.offset, String::from_utf8_lossy(&r.value).into_owned()))
        .collect()
}

fn values(fetched: &pb::FetchResponse) -> Vec<String> {
    offsets_and_values(fetched)
        .into_iter()
        .map(|(_, v)| v)
        .collect()
}

fn header<'a>(record: &'a pb::ConsumedRecord, key: &str) -> Option<&'a str> {
    record
        .headers
        .iter()
        .find(|h| h.key == key)
        .and_then(|h| std::str::from_utf8(&h.value).ok())
}

fn orders() -> Vec<String> {
    (0..10u32)
        .map(|i| {
            let status = if i.is_multiple_of(2) {
                "active"
            } else {
                "closed"
            };
            format!(r#"{{"id":"o{i}","status":"{status}","amount":{i}}}"#)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_lists_versions_and_refuses_deleting_attached_modules() -> anyhow::Result<()> {
    weir_tests::init_tracing();
    let broker = InProcessBroker::start().await?;
    let mut client = broker.raw_client().await?;
    let wasm = modules::bytes("field-filter")?;

    assert_eq!(register(&mut client, "field-filter").await?, 1);
    assert_eq!(register(&mut client, "field-filter").await?, 2);
    let exists = client
        .register_module(pb::RegisterModuleRequest {
            name: "field-filter".into(),
            version: Some(2),
            wasm: Bytes::from(wasm.clone()),
        })
        .await
        .unwrap_err();
    assert_eq!(exists.code(), Code::AlreadyExists);
    assert_eq!(reason_of(&exists).as_deref(), Some("MODULE_EXISTS"));

    let described = client
        .describe_module(pb::DescribeModuleRequest {
            name: "field-filter".into(),
        })
        .await?
        .into_inner();
    let versions: Vec<u32> = described.versions.iter().map(|v| v.version).collect();
    assert_eq!(versions, vec![1, 2]);
    assert_eq!(described.versions[0].sha256, weir_wasm::sha256_hex(&wasm));
    assert_eq!(described.versions[0].size_bytes, wasm.len() as u64);

    weir_tests::create_topic(&client, "orders", 1, 0, &[]).await?;
    let topic = attach(
        &mut client,
        "orders",
        pb::ModuleRef {
            version: Some(1),
            ..module("field-filter", &[("field", "status"), ("value", "active")])
        },
        pb::ModulePath::Consume,
        pb::RejectPolicy::Unspecified,
        "",
    )
    .await?;
    let chain: Vec<_> = topic
        .consume_chain
        .iter()
        .filter_map(|a| a.module.as_ref())
        .map(|m| (m.name.clone(), m.version, m.params.len()))
        .collect();
    assert_eq!(chain, vec![("field-filter".to_owned(), Some(1), 2)]);

    let in_use = client
        .delete_module(pb::DeleteModuleRequest {
            name: "field-filter".into(),
            version: Some(1),
        })
        .await
        .unwrap_err();
    assert_eq!(reason_of(&in_use).as_deref(), Some("MODULE_IN_USE"));
    assert!(in_use.message().contains("orders"), "{}", in_use.message());
    // Version 2 is not attached: it can go.
    client
        .delete_module(pb::DeleteModuleRequest {
            name: "field-filter".into(),
            version: Some(2),
        })
        .await?;
    client
        .detach_module(pb::DetachModuleRequest {
            topic: "orders".into(),
            name: "field-filter".into(),
            path: pb::ModulePath::Consume as i32,
        })
        .await?;
    client
        .delete_module(pb::DeleteModuleRequest {
            name: "field-filter".into(),
            version: None,
        })
        .await?;
    let listed = client
        .list_modules(pb::ListModulesRequest {})
        .await?
        .into_inner();
    assert!(listed.modules.is_empty(), "{listed:?}");
    let unknown = client
        .describe_module(pb::DescribeModuleRequest {
            name: "field-filter".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(reason_of(&unknown).as_deref(), Some("UNKNOWN_MODULE"));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_forbidden_imports_and_oversized_modules_are_refused() -> anyhow::Result<()> {
    weir_tests::init_tracing();
    let broker =
        InProcessBroker::start_adjusted(|c| c.modules.max_module_bytes = 64 * 1024).await?;
    let mut client = broker.raw_client().await?;
    // A core module importing `env.foo`: valid wasm, but not a Weir module.
    let forbidden: &[u8] = &[
        0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00, // magic, version
        0x01, 0x04, 0x01, 0x60, 0x00, 0x00, // type section: () -> ()
        0x02, 0x0b, 0x01, 0x03, b'e', b'n', b'v', 0x03, b'f', b'o', b'o', 0x00,
        0x00, // import env.foo
    ];
    let oversized = modules::bytes("json-validate")?;
    assert!(oversized.len() > 64 * 1024, "json-validate is small");
    for (name, wasm, expected) in [
        ("garbage", b"definitely not wasm".to_vec(), ""),
        ("forbidden", forbidden.to_vec(), ""),
        ("oversized", oversized, "64 KiB"),
    ] {
        let refused = client
            .register_module(pb::RegisterModuleRequest {
                name: name.into(),
                version: None,
                wasm: Bytes::from(wasm),
            })
            .await
            .unwrap_err();
        assert_eq!(refused.code(), Code::InvalidArgument, "{name}: {refused:?}");
        assert_eq!(
            reason_of(&refused).as_deref(),
            Some("INVALID_MODULE"),
            "{name}"
        );
        assert!(
            refused.message().contains(name) && refused.message().contains(expected),
            "{name}: {}",
            refused.message()
        );
    }
    let listed = client
        .list_modules(pb::ListModulesRequest {})
        .await?
        .into_inner();
    assert!(
        listed.modules.is_empty(),
        "refused modules were stored: {listed:?}"
    );
    Ok(())
}

/// Sets up `orders` with json-validate (`required=id`, `types=amount:number`) on its produce
/// path with `policy`, and produces a request whose records 1 and 3 are invalid.
async fn validated_produce(
    client: &mut RawClient,
    policy: pb::RejectPolicy,
    dead_letter_topic: &str,
) -> anyhow::Result<Result<pb::ProduceResponse, tonic::Status>> {
    register(client, "json-validate").await?;
    weir_tests::create_topic(client, "orders", 1, 0, &[]).await?;
    attach(
        client,
        "orders",
        module(
            "json-validate",
            &[("required", "id"), ("types", "amount:number")],
        ),
        pb::ModulePath::Produce,
        policy,
        dead_letter_topic,
    )
    .await?;
    Ok(produce(
        client,
        "orders",
        &[
            r#"{"id":"a","amount":1}"#,
            r#"{"amount":2}"#,
            r#"{"id":"c","amount":3}"#,
            "not json",
            r#"{"id":"e","amount":5}"#,
        ],
    )
    .await)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reject_policy_fails_the_request_and_stores_nothing() -> anyhow::Result<()> {
    weir_tests::init_tracing();
    let broker = InProcessBroker::start().await?;
    let mut client = broker.raw_client().await?;
    let refused = validated_produce(&mut client, pb::RejectPolicy::Reject, "")
        .await?
        .unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument);
    assert_eq!(reason_of(&refused).as_deref(), Some("RECORD_REJECTED"));
    let violations = violations_of(&refused);
    let fields: Vec<&str> = violations.iter().map(|(f, _)| f.as_str()).collect();
    assert_eq!(fields, vec!["records[1]", "records[3]"]);
    assert!(
        violations[0].1.starts_with("json-validate@1: ") && violations[0].1.contains("id"),
        "{violations:?}"
    );
    let fetched = fetch(&mut client, "orders", 0, vec![]).await?;
    assert_eq!(
        fetched.high_watermark, 0,
        "a rejected request stored records"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drop_policy_stores_the_valid_records_and_reports_the_rest() -> anyhow::Result<()> {
    weir_tests::init_tracing();
    let broker = InProcessBroker::start().await?;
    let mut client = broker.raw_client().await?;
    let response = validated_produce(&mut client, pb::RejectPolicy::Drop, "").await??;
    assert_eq!(response.base_offset, Some(0));
    assert_eq!(response.record_count, 3);
    let rejected: Vec<(u32, &str, i32)> = response
        .rejected
        .iter()
        .map(|r| (r.index, r.module.as_str(), r.policy))
        .collect();
    let drop = pb::RejectPolicy::Drop as i32;
    assert_eq!(
        rejected,
        vec![(1, "json-validate@1", drop), (3, "json-validate@1", drop)]
    );
    let fetched = fetch(&mut client, "orders", 0, vec![]).await?;
    assert_eq!(
        offsets_and_values(&fetched),
        vec![
            (0, r#"{"id":"a","amount":1}"#.to_owned()),
            (1, r#"{"id":"c","amount":3}"#.to_owned()),
            (2, r#"{"id":"e","amount":5}"#.to_owned()),
        ]
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letter_policy_routes_rejects_with_the_reason_in_headers() -> anyhow::Result<()> {
    weir_tests::init_tracing();
    let broker = InProcessBroker::start().await?;
    let mut client = broker.raw_client().await?;
    weir_tests::create_topic(&client, "orders-dlq", 1, 0, &[]).await?;
    let response =
        validated_produce(&mut client, pb::RejectPolicy::DeadLetter, "orders-dlq").await??;
    assert_eq!(response.record_count, 3);
    let indices: Vec<u32> = response.rejected.iter().map(|r| r.index).collect();
    assert_eq!(indices, vec![1, 3]);
    assert!(
        response
            .rejected
            .iter()
            .all(|r| r.policy == pb::RejectPolicy::DeadLetter as i32)
    );
    let stored = fetch(&mut client, "orders", 0, vec![]).await?;
    assert_eq!(stored.records.len(), 3);
    let dead = fetch(&mut client, "orders-dlq", 0, vec![]).await?;
    assert_eq!(values(&dead), vec![r#"{"amount":2}"#, "not json"]);
    for (record, index) in dead.records.iter().zip(["1", "3"]) {
        assert_eq!(
            header(record, "weir.rejected.module"),
            Some("json-validate@1")
        );
        assert_eq!(header(record, "weir.rejected.topic"), Some("orders"));
        assert_eq!(header(record, "weir.rejected.index"), Some(index));
        assert!(header(record, "weir.rejected.reason").is_some_and(|r| !r.is_empty()));
    }
    // A dead-letter topic must exist, and may not be the topic itself.
    for target in ["missing", "orders"] {
        let refused = attach(
            &mut client,
            "orders",
            module("keep-all", &[]),
            pb::ModulePath::Produce,
            pb::RejectPolicy::DeadLetter,
            target,
        )
        .await;
        assert!(refused.is_err(), "dead-letter topic {target} accepted");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consume_filter_returns_exactly_the_matches_at_their_original_offsets() -> anyhow::Result<()>
{
    weir_tests::init_tracing();
    let broker = InProcessBroker::start().await?;
    let mut client = broker.raw_client().await?;
    register(&mut client, "field-filter").await?;
    weir_tests::create_topic(&client, "orders", 1, 0, &[]).await?;
    let orders = orders();
    let refs: Vec<&str> = orders.iter().map(String::as_str).collect();
    produce(&mut client, "orders", &refs).await?;

    let filter = module("field-filter", &[("field", "status"), ("value", "active")]);
    let fetched = fetch(&mut client, "orders", 0, vec![filter.clone()]).await?;
    let expected: Vec<(u64, String)> = (0..10)
        .step_by(2)
        .map(|i| (i as u64, orders[i].clone()))
        .collect();
    assert_eq!(offsets_and_values(&fetched), expected);
    assert_eq!(fetched.next_offset, 10);
    // From the middle: the next match is offset 6.
    let fetched = fetch(&mut client, "orders", 5, vec![filter.clone()]).await?;
    assert_eq!(fetched.records.first().map(|r| r.offset), Some(6));
    // Nothing at the end: the position does not move.
    let fetched = fetch(&mut client, "orders", 10, vec![filter]).await?;
    assert!(fetched.records.is_empty());
    assert_eq!(fetched.next_offset, 10);

    // The same filter as the topic's default consume chain applies to a plain fetch; a fetch
    // naming its own chain runs that one instead.
    attach(
        &mut client,
        "orders",
        module("field-filter", &[("field", "status"), ("value", "closed")]),
        pb::ModulePath::Consume,
        pb::RejectPolicy::Unspecified,
        "",
    )
    .await?;
    let fetched = fetch(&mut client, "orders", 0, vec![]).await?;
    let offsets: Vec<u64> = fetched.records.iter().map(|r| r.offset).collect();
    assert_eq!(offsets, vec![1, 3, 5, 7, 9]);
    register(&mut client, "keep-all").await?;
    let fetched = fetch(&mut client, "orders", 0, vec![module("keep-all", &[])]).await?;
    assert_eq!(fetched.records.len(), 10);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chains_apply_in_order_and_params_reach_init() -> anyhow::Result<()> {
    weir_tests::init_tracing();
    let broker = InProcessBroker::start().await?;
    let mut client = broker.raw_client().await?;
    for name in ["uppercase", "contains"] {
        register(&mut client, name).await?;
    }
    weir_tests::create_topic(&client, "words", 1, 0, &[]).await?;
    produce(&mut client, "words", &["abc", "xyz", "ABC"]).await?;
    let upper = module("uppercase", &[]);
    let contains = module("contains", &[("needle", "ABC")]);
    // Uppercase first: both spellings contain ABC afterwards.
    let fetched = fetch(
        &mut client,
        "words",
        0,
        vec![upper.clone(), contains.clone()],
    )
    .await?;
    assert_eq!(
        offsets_and_values(&fetched),
        vec![(0, "ABC".to_owned()), (2, "ABC".to_owned())]
    );
    // Filter first: only the original capitals pass, then become (still) capitals.
    let fetched = fetch(&mut client, "words", 0, vec![contains, upper]).await?;
    assert_eq!(offsets_and_values(&fetched), vec![(2, "ABC".to_owned())]);
    // A parameter the module refuses fails at once, naming it.
    let refused = fetch(&mut client, "words", 0, vec![module("contains", &[])])
        .await
        .unwrap_err();
    assert_eq!(
        reason_of(&refused).as_deref(),
        Some("INVALID_MODULE_PARAMS")
    );
    assert!(
        refused.message().contains("needle"),
        "{}",
        refused.message()
    );
    // At the end of the log too, where there is nothing to run the chain over.
    let refused = fetch(&mut client, "words", 3, vec![module("contains", &[])])
        .await
        .unwrap_err();
    assert_eq!(
        reason_of(&refused).as_deref(),
        Some("INVALID_MODULE_PARAMS")
    );
    // ... and so does attaching it.
    let refused = attach(
        &mut client,
        "words",
        module("contains", &[]),
        pb::ModulePath::Produce,
        pb::RejectPolicy::Drop,
        "",
    )
    .await
    .unwrap_err();
    assert_eq!(
        reason_of(&refused).as_deref(),
        Some("INVALID_MODULE_PARAMS")
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn example_modules_work_on_real_produce_and_consume_paths() -> anyhow::Result<()> {
    weir_tests::init_tracing();
    let broker = InProcessBroker::start().await?;
    let mut client = broker.raw_client().await?;
    for name in ["split", "redact", "project", "regex-filter", "sum"] {
        register(&mut client, name).await?;
    }

    // Flat-map on the produce path: one request record becomes one stored record per part.
    weir_tests::create_topic(&client, "lines", 1, 0, &[]).await?;
    attach(
        &mut client,
        "lines",
        module("split", &[("separator", ",")]),
        pb::ModulePath::Produce,
        pb::RejectPolicy::Reject,
        "",
    )
    .await?;
    let response = produce(&mut client, "lines", &["a,b,,c", "d"]).await?;
    assert_eq!((response.base_offset, response.record_count), (Some(0), 4));
    let fetched = fetch(&mut client, "lines", 0, vec![]).await?;
    assert_eq!(values(&fetched), vec!["a", "b", "c", "d"]);

    // Maps and a regex filter on the consume path.
    weir_tests::create_topic(&client, "people", 1, 0, &[]).await?;
    produce(
        &mut client,
        "people",
        &[
            r#"{"name":"ann","email":"ann@example.com","card":"4111111111111111","age":31}"#,
            r#"{"name":"bob","email":"none","card":"12","age":45}"#,
        ],
    )
    .await?;
    let redacted = fetch(&mut client, "people", 0, vec![module("redact", &[])]).await?;
    let text = values(&redacted).join("\n");
    assert!(!text.contains("ann@example.com"), "{text}");
    assert!(!text.contains("4111111111111111"), "{text}");
    assert!(text.contains("\"name\":\"ann\""), "{text}");
    let projected = fetch(
        &mut client,
        "people",
        0,
        vec![module(
            "project",
            &[("fields", "name,age"), ("format", "csv")],
        )],
    )
    .await?;
    assert_eq!(values(&projected), vec!["ann,31", "bob,45"]);
    let matched = fetch(
        &mut client,
        "people",
        0,
        vec![module("regex-filter", &[("pattern", r#""age":4\d"#)])],
    )
    .await?;
    assert_eq!(
        matched.records.iter().map(|r| r.offset).collect::<Vec<_>>(),
        vec![1]
    );

    // An aggregate over a subscription keeps its running state across messages.
    weir_tests::create_topic(&client, "payments", 1, 0, &[]).await?;
    produce(
        &mut client,
        "payments",
        &[r#"{"amount":5}"#, r#"{"amount":7}"#],
    )
    .await?;
    let mut stream = client
        .subscribe(pb::SubscribeRequest {
            topic: "payments".into(),
            partition: 0,
            start: Some(pb::StartPosition {
                position: Some(pb::start_position::Position::Earliest(true)),
            }),
            max_bytes: 0,
            modules: vec![module("sum", &[("field", "amount")])],
            ..Default::default()
        })
        .await?
        .into_inner();
    let mut totals = Vec::new();
    let mut produced_more = false;
    while totals.len() < 3 {
        let message = tokio::time::timeout(Duration::from_secs(10), stream.message())
            .await??
            .ok_or_else(|| anyhow::anyhow!("stream ended"))?;
        totals.extend(message.records.iter().map(|r| (r.offset, r.value.clone())));
        if !produced_more && totals.len() >= 2 {
            produce(&mut client, "payments", &[r#"{"amount":30}"#]).await?;
            produced_more = true;
        }
    }
    let sums: Vec<(u64, serde_json::Value)> = totals
        .into_iter()
        .map(|(o, v)| (o, serde_json::from_slice(&v).unwrap_or_default()))
        .collect();
    let running: Vec<(u64, Option<f64>)> =
        sums.iter().map(|(o, v)| (*o, v["sum"].as_f64())).collect();
    assert_eq!(
        running,
        vec![(0, Some(5.0)), (1, Some(12.0)), (2, Some(42.0))],
        "{sums:?}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_modules_fail_their_chain_only() -> anyhow::Result<()> {
    weir_tests::init_tracing();
    // An output cap of 1 MiB: a module writing just over the default 16 MiB could outlast the
    // time limit on a loaded machine (seen under two parallel suites), which is contained too
    // but is not the limit under test.
    const OUTPUT_CAP: usize = 1 << 20;
    let broker = InProcessBroker::start_adjusted(|config| {
        config.modules.max_output_bytes = OUTPUT_CAP;
    })
    .await?;
    let mut client = broker.raw_client().await?;
    register(&mut client, "hostile").await?;
    register(&mut client, "keep-all").await?;
    weir_tests::create_topic(&client, "healthy", 1, 0, &[]).await?;
    weir_tests::create_topic(&client, "victim", 1, 0, &[]).await?;
    produce(&mut client, "victim", &["x", "y"]).await?;

    for (behaviour, expected) in [
        ("loop", "time"),
        ("memory", "memory"),
        // Rust on wasm32 keeps large frames on a shadow stack in linear memory: unbounded
        // recursion runs off its bottom (an out-of-bounds access) before the wasm stack limit.
        ("recursion", "out of bounds"),
        ("trap", "hostile@1"),
        ("huge-output", "output"),
        ("bad-output", "malformed outcome"),
    ] {
        // Just over the output cap.
        let bytes = (OUTPUT_CAP + OUTPUT_CAP / 16).to_string();
        let hostile = module(
            "hostile",
            &[("behaviour", behaviour), ("bytes", bytes.as_str())],
        );
        // The hostile fetch and a healthy produce + fetch on another topic, at the same time.
        let mut healthy_client = client.clone();
        let healthy = tokio::spawn(async move {
            let response = produce(&mut healthy_client, "healthy", &["ok"]).await?;
            let fetched = fetch(
                &mut healthy_client,
                "healthy",
                response.base_offset.unwrap_or_default() as i64,
                vec![module("keep-all", &[])],
            )
            .await?;
            anyhow::Ok(values(&fetched))
        });
        let failed = fetch(&mut client, "victim", 0, vec![hostile])
            .await
            .unwrap_err();
        assert_eq!(
            reason_of(&failed).as_deref(),
            Some("MODULE_FAILED"),
            "{behaviour}: {failed:?}"
        );
        let message = failed.message().to_lowercase();
        assert!(
            message.contains("hostile@1") && message.contains(expected),
            "{behaviour}: {}",
            failed.message()
        );
        assert_eq!(healthy.await??, vec!["ok"], "{behaviour}");
    }

    // On the produce path: the request fails, nothing is stored, the topic stays writable once
    // the module is detached.
    attach(
        &mut client,
        "victim",
        module("hostile", &[("behaviour", "trap")]),
        pb::ModulePath::Produce,
        pb::RejectPolicy::Drop,
        "",
    )
    .await?;
    let failed = produce(&mut client, "victim", &["z"]).await.unwrap_err();
    assert_eq!(reason_of(&failed).as_deref(), Some("MODULE_FAILED"));
    client
        .detach_module(pb::DetachModuleRequest {
            topic: "victim".into(),
            name: "hostile".into(),
            path: pb::ModulePath::Produce as i32,
        })
        .await?;
    let response = produce(&mut client, "victim", &["z"]).await?;
    assert_eq!(response.base_offset, Some(2));

    // A module whose init never returns or fails is refused at attach time.
    for (behaviour, reason) in [
        ("init-fails", "INVALID_MODULE_PARAMS"),
        ("loop-in-init", "MODULE_FAILED"),
    ] {
        let refused = attach(
            &mut client,
            "victim",
            module("hostile", &[("behaviour", behaviour)]),
            pb::ModulePath::Consume,
            pb::RejectPolicy::Unspecified,
            "",
        )
        .await
        .unwrap_err();
        assert_eq!(reason_of(&refused).as_deref(), Some(reason), "{behaviour}");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn module_counters_are_described_and_exported() -> anyhow::Result<()> {
    weir_tests::init_tracing();
    let broker = InProcessBroker::start().await?;
    let mut client = broker.raw_client().await?;
    register(&mut client, "field-filter").await?;
    weir_tests::create_topic(&client, "orders", 1, 0, &[]).await?;
    let orders = orders();
    let refs: Vec<&str> = orders.iter().map(String::as_str).collect();
    produce(&mut client, "orders", &refs).await?;
    let filter = module("field-filter", &[("field", "status"), ("value", "active")]);
    fetch(&mut client, "orders", 0, vec![filter.clone()]).await?;
    fetch(&mut client, "orders", 4, vec![filter]).await?;

    let described = client
        .describe_module(pb::DescribeModuleRequest {
            name: "field-filter".into(),
        })
        .await?
        .into_inner();
    let stats = described.versions[0].stats.unwrap_or_default();
    assert_eq!(
        (
            stats.invocations,
            stats.records_in,
            stats.records_out,
            stats.errors
        ),
        (2, 16, 8, 0)
    );
    let metrics_addr = broker
        .metrics_addr()
        .ok_or_else(|| anyhow::anyhow!("no metrics endpoint"))?;
    let body = weir_tests::scrape_metrics(metrics_addr).await?;
    assert!(
        body.contains(r#"weir_module_records_in_total{module="field-filter",version="1"} 16"#),
        "{body}"
    );

    // Deleted and registered again (as version 1 again, same bytes), it is another module:
    // the old counters are gone from describe and from the metrics.
    client
        .delete_module(pb::DeleteModuleRequest {
            name: "field-filter".into(),
            version: None,
        })
        .await?;
    let body = weir_tests::scrape_metrics(metrics_addr).await?;
    assert!(
        !body.contains(r#"module="field-filter""#),
        "a deleted module's counters are still exported: {body}"
    );
    assert_eq!(register(&mut client, "field-filter").await?, 1);
    let described = client
        .describe_module(pb::DescribeModuleRequest {
            name: "field-filter".into(),
        })
        .await?
        .into_inner();
    assert_eq!(
        described.versions[0].stats.unwrap_or_default().records_in,
        0,
        "the re-registered version starts from zero"
    );
    Ok(())
}

/// Opens a subscription to partition 0 of `topic` from the beginning through `keep-all`.
async fn subscribe_keep_all(
    client: &mut RawClient,
    topic: &str,
) -> Result<tonic::Streaming<pb::SubscribeResponse>, tonic::Status> {
    Ok(client
        .subscribe(pb::SubscribeRequest {
            topic: topic.into(),
            partition: 0,
            start: Some(pb::StartPosition {
                position: Some(pb::start_position::Position::Earliest(true)),
            }),
            max_bytes: 0,
            modules: vec![module("keep-all", &[])],
            ..Default::default()
        })
        .await?
        .into_inner())
}

fn assert_pool_exhausted(status: &tonic::Status) {
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert_eq!(reason_of(status).as_deref(), Some("MODULE_POOL_EXHAUSTED"));
    assert!(
        status.message().contains("keep-all@1") && status.message().contains("max_instances"),
        "{}",
        status.message()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_produce_chains_give_way_and_a_full_instance_pool_is_retriable() -> anyhow::Result<()>
{
    weir_tests::init_tracing();
    let broker = InProcessBroker::start_adjusted(|c| c.modules.max_instances = 2).await?;
    let mut client = broker.raw_client().await?;
    register(&mut client, "keep-all").await?;
    for topic in ["a", "b", "c"] {
        weir_tests::create_topic(&client, topic, 1, 0, &[]).await?;
    }
    for topic in ["a", "b"] {
        attach(
            &mut client,
            topic,
            module("keep-all", &[]),
            pb::ModulePath::Produce,
            pb::RejectPolicy::Reject,
            "",
        )
        .await?;
        produce(&mut client, topic, &["first"]).await?;
    }
    produce(&mut client, "c", &["c0", "c1"]).await?;

    // Both instances are now held by the warm produce chains of a and b. A subscription
    // still gets one: the idle chains give their instances back.
    let mut first = subscribe_keep_all(&mut client, "c").await?;
    let message = first
        .message()
        .await?
        .ok_or_else(|| anyhow::anyhow!("stream ended"))?;
    let offsets: Vec<u64> = message.records.iter().map(|r| r.offset).collect();
    assert_eq!(offsets, vec![0, 1]);
    let _second = subscribe_keep_all(&mut client, "c").await?;
    let metrics_addr = broker
        .metrics_addr()
        .ok_or_else(|| anyhow::anyhow!("no metrics endpoint"))?;
    let body = weir_tests::scrape_metrics(metrics_addr).await?;
    for line in ["weir_module_instances 2", "weir_module_instances_max 2"] {
        assert!(body.lines().any(|l| l == line), "no {line:?} in {body}");
    }

    // Both instances are held by open subscriptions: a produce through a chain and a third
    // subscription are refused, retriably, and change nothing.
    let refused = produce(&mut client, "a", &["second"]).await.unwrap_err();
    assert_pool_exhausted(&refused);
    assert_eq!(
        values(&fetch(&mut client, "a", 0, vec![]).await?),
        ["first"]
    );
    assert_pool_exhausted(&subscribe_keep_all(&mut client, "c").await.unwrap_err());

    // Once a subscription ends its instance is free; the client's producer retries the refusal
    // until then.
    drop(first);
    let producer = weir_client::Producer::new(
        weir_client::Client::connect(broker.url()).await?,
        weir_client::ProducerConfig::default(),
    );
    let delivered = producer
        .send("a", weir_client::ProducerRecord::new("second"))
        .await?;
    assert_eq!(delivered.offset, Some(1));
    assert_eq!(
        values(&fetch(&mut client, "a", 0, vec![]).await?),
        ["first", "second"]
    );

    // The remaining subscription and a's warm produce chain fill the pool again: a fetch through
    // a chain makes room the same way.
    let fetched = fetch(&mut client, "c", 0, vec![module("keep-all", &[])]).await?;
    assert_eq!(values(&fetched), ["c0", "c1"]);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn modules_and_attachments_survive_a_restart() -> anyhow::Result<()> {
    weir_tests::init_tracing();
    let broker = InProcessBroker::start().await?;
    let mut client = broker.raw_client().await?;
    register(&mut client, "uppercase").await?;
    weir_tests::create_topic(&client, "words", 1, 0, &[]).await?;
    attach(
        &mut client,
        "words",
        module("uppercase", &[]),
        pb::ModulePath::Produce,
        pb::RejectPolicy::Reject,
        "",
    )
    .await?;
    produce(&mut client, "words", &["before"]).await?;
    let (data_dir, _temp) = broker.stop().await;

    let broker = InProcessBroker::start_in(&data_dir).await?;
    let mut client = broker.raw_client().await?;
    produce(&mut client, "words", &["after"]).await?;
    let fetched = fetch(&mut client, "words", 0, vec![]).await?;
    assert_eq!(values(&fetched), vec!["BEFORE", "AFTER"]);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn modules_replicate_and_produce_chains_run_on_the_partition_leader() -> anyhow::Result<()> {
    weir_tests::init_tracing();
    let cluster = weir_tests::ProcessCluster::start(std::path::Path::new(crate::WEIR), 3).await?;
    // Registered through one node, attached through another: both are forwarded to the
    // controller and replicated.
    let mut admin = cluster.client(2)?;
    register(&mut admin, "json-validate").await?;
    admin
        .create_topic(pb::CreateTopicRequest {
            name: "orders".into(),
            partitions: 1,
            replication_factor: 3,
            configs: HashMap::new(),
        })
        .await?;
    let leader = cluster.leader_of("orders", 0).await?;
    let other = (1..=3).find(|&n| n != leader).unwrap_or(1);
    attach(
        &mut cluster.client(other)?,
        "orders",
        module("json-validate", &[("required", "id")]),
        pb::ModulePath::Produce,
        pb::RejectPolicy::Drop,
        "",
    )
    .await?;
    weir_tests::eventually(
        Duration::from_secs(30),
        "the leader to see the chain",
        || async {
            let topic = cluster.describe(leader, "orders").await?;
            (topic.produce_chain.len() == 1).then_some(())
        },
    )
    .await?;

    let response = produce(
        &mut cluster.client(leader)?,
        "orders",
        &[r#"{"id":1}"#, r#"{"no":2}"#, r#"{"id":3}"#],
    )
    .await?;
    assert_eq!(response.record_count, 2);
    assert_eq!(
        response
            .rejected
            .iter()
            .map(|r| r.index)
            .collect::<Vec<_>>(),
        vec![1]
    );
    // Every replica stores the leader's result, byte for byte.
    for node in 1..=3 {
        cluster
            .wait_for_high_watermark(node, "orders", 0, 2)
            .await?;
        let fetched = fetch(&mut cluster.client(node)?, "orders", 0, vec![]).await?;
        assert_eq!(
            values(&fetched),
            vec![r#"{"id":1}"#, r#"{"id":3}"#],
            "node {node}"
        );
    }
    // A consume chain on a follower runs there, compiled from the replicated module.
    let fetched = fetch(
        &mut cluster.client(other)?,
        "orders",
        0,
        vec![module("json-validate", &[("required", "name")])],
    )
    .await?;
    assert!(fetched.records.is_empty());
    assert_eq!(
        fetched
            .rejected
            .iter()
            .map(|r| r.offset)
            .collect::<Vec<_>>(),
        vec![0, 1]
    );
    Ok(())
}
