//! What operators rely on: the metrics endpoint, health checking and reflection.

use std::collections::HashMap;

use bytes::Bytes;
use weir_proto::v1 as pb;
use weir_tests::{InProcessBroker, scrape_metrics as scrape};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_produced_records_errors_and_commits() -> anyhow::Result<()> {
    let broker = InProcessBroker::start().await?;
    let mut c = broker.raw_client().await?;
    c.create_topic(pb::CreateTopicRequest {
        name: "m".into(),
        partitions: 1,
        replication_factor: 1,
        configs: HashMap::new(),
    })
    .await?;
    c.produce(pb::ProduceRequest {
        topic: "m".into(),
        partition: Some(0),
        records: (0..3)
            .map(|_| pb::Record {
                value: Bytes::from_static(b"v"),
                ..Default::default()
            })
            .collect(),
        acks: pb::Acks::All as i32,
        ..Default::default()
    })
    .await?;
    let _ = c
        .produce(pb::ProduceRequest {
            topic: "missing".into(),
            ..Default::default()
        })
        .await;

    let addr = broker
        .metrics_addr()
        .ok_or_else(|| anyhow::anyhow!("metrics disabled"))?;
    let text = scrape(addr).await?;
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(
        text.contains("weir_produced_records_total{topic=\"m\"} 3"),
        "{text}"
    );
    assert!(
        text.contains("weir_request_errors_total{rpc=\"Produce\",reason=\"UNKNOWN_TOPIC\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("weir_partition_high_watermark{topic=\"m\",partition=\"0\"} 3"),
        "{text}"
    );
    assert!(
        text.contains("weir_partition_is_leader{topic=\"m\",partition=\"0\"} 1"),
        "{text}"
    );
    assert!(sample(&text, "weir_storage_commits_total")? >= 1.0);
    // Every commit counted once in the commit duration histogram.
    let commits = sample(&text, "weir_storage_commit_duration_seconds_count")?;
    assert!(commits >= 1.0, "{text}");
    assert_eq!(
        sample(
            &text,
            "weir_storage_commit_duration_seconds_bucket{le=\"+Inf\"}"
        )?,
        commits
    );
    // The total time committing is the histogram's sum (the counter is read first, so it is
    // never more than the sum read after it).
    let committing = sample(&text, "weir_storage_commit_seconds_total")?;
    assert!(committing > 0.0, "{text}");
    assert!(
        committing <= sample(&text, "weir_storage_commit_duration_seconds_sum")?,
        "{text}"
    );
    // Every durable write's wait counted (a request is counted after its wait, and the
    // histogram is read after the counter, so the waits are never fewer).
    let writes = sample(&text, "weir_storage_write_requests_total")?;
    assert!(writes >= 1.0, "{text}");
    let waits = sample(&text, "weir_storage_write_wait_seconds_count")?;
    assert!(waits >= writes, "{waits} waits for {writes} writes: {text}");
    assert!(
        sample(&text, "weir_storage_write_wait_seconds_sum")? > 0.0,
        "{text}"
    );
    // The bound on what the node's partitions keep in memory for their state machines.
    assert!(
        text.contains("weir_raft_kept_entries_max_bytes 67108864"),
        "{text}"
    );
    let kept = sample(&text, "weir_raft_kept_entries_bytes")?;
    assert!(kept <= f64::from(64 << 20), "{kept}");
    Ok(())
}

/// The value of the unlabelled metric `name` in scraped `text`.
fn sample(text: &str, name: &str) -> anyhow::Result<f64> {
    Ok(text
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .ok_or_else(|| anyhow::anyhow!("no {name} in {text}"))?
        .trim()
        .parse()?)
}

/// A task holding every worker thread of the broker's runtime (here: blocking them outright,
/// as a task calling something that blocks would) stops the node; the stall watchdog counts
/// it, so that an operator can tell a stalled node from a dead or cut-off one. Before and
/// after, the runtime runs and nothing is counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runtime_whose_workers_are_all_held_is_counted_as_stalled() -> anyhow::Result<()> {
    let broker = InProcessBroker::start().await?;
    let addr = broker
        .metrics_addr()
        .ok_or_else(|| anyhow::anyhow!("metrics disabled"))?;
    let stalls = |text: String| sample(&text, "weir_runtime_stalls_total");
    assert_eq!(stalls(scrape(addr).await?)?, 0.0);
    // Both workers held for twice the 3 s a stall takes to count (the fault itself, not
    // synchronisation: the watchdog thread must see the runtime stand).
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(2));
    let held: Vec<_> = (0..2)
        .map(|_| {
            let barrier = barrier.clone();
            tokio::spawn(async move {
                barrier.wait();
                std::thread::sleep(std::time::Duration::from_secs(6));
            })
        })
        .collect();
    for task in held {
        task.await?;
    }
    assert_eq!(stalls(scrape(addr).await?)?, 1.0);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_reports_serving() -> anyhow::Result<()> {
    let broker = InProcessBroker::start().await?;
    let channel = tonic::transport::Endpoint::from_shared(broker.url())?
        .connect()
        .await?;
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    let status = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: "weir.v1.Broker".into(),
        })
        .await?
        .into_inner();
    assert_eq!(
        status.status(),
        tonic_health::pb::health_check_response::ServingStatus::Serving
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reflection_lists_the_broker_service() -> anyhow::Result<()> {
    use futures::StreamExt;
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

    let broker = InProcessBroker::start().await?;
    let channel = tonic::transport::Endpoint::from_shared(broker.url())?
        .connect()
        .await?;
    let mut reflection = ServerReflectionClient::new(channel);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut responses = reflection
        .server_reflection_info(futures::stream::iter([request]))
        .await?
        .into_inner();
    let response = responses
        .next()
        .await
        .ok_or_else(|| anyhow::anyhow!("no reflection answer"))??;
    let Some(MessageResponse::ListServicesResponse(list)) = response.message_response else {
        anyhow::bail!("unexpected reflection answer {response:?}");
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    assert!(names.contains(&"weir.v1.Broker".to_owned()), "{names:?}");
    Ok(())
}

/// Older grpcurl, Postman and Evans speak only reflection v1alpha: the broker serves it too,
/// with the same descriptors.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reflection_v1alpha_describes_the_broker_service_for_older_tools() -> anyhow::Result<()> {
    use futures::StreamExt;
    use tonic_reflection::pb::v1alpha::ServerReflectionRequest;
    use tonic_reflection::pb::v1alpha::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1alpha::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1alpha::server_reflection_response::MessageResponse;

    let broker = InProcessBroker::start().await?;
    let channel = tonic::transport::Endpoint::from_shared(broker.url())?
        .connect()
        .await?;
    let mut reflection = ServerReflectionClient::new(channel);
    let requests = [
        MessageRequest::ListServices(String::new()),
        MessageRequest::FileContainingSymbol("weir.v1.Broker".to_owned()),
    ]
    .map(|message| ServerReflectionRequest {
        host: String::new(),
        message_request: Some(message),
    });
    let mut responses = reflection
        .server_reflection_info(futures::stream::iter(requests))
        .await?
        .into_inner();
    let mut answers = Vec::new();
    while let Some(response) = responses.next().await {
        answers.push(response?.message_response);
    }
    let [
        Some(MessageResponse::ListServicesResponse(list)),
        Some(MessageResponse::FileDescriptorResponse(files)),
    ] = answers.as_slice()
    else {
        anyhow::bail!("unexpected v1alpha reflection answers {answers:?}");
    };
    let names: Vec<&str> = list.service.iter().map(|s| s.name.as_str()).collect();
    assert!(names.contains(&"weir.v1.Broker"), "{names:?}");
    assert!(
        names.contains(&"grpc.reflection.v1alpha.ServerReflection"),
        "{names:?}"
    );
    let described = files
        .file_descriptor_proto
        .iter()
        .any(|file| file.windows(20).any(|w| w == b"weir/v1/broker.proto"));
    assert!(described, "no descriptor of weir/v1/broker.proto");
    Ok(())
}
