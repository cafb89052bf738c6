//! Controller commands are checked where they apply, whatever sent them: anything that can
//! speak the peer protocol can propose one, so the client-facing checks are not enough.

use std::path::Path;
use std::time::Duration;

use weir_proto::internal::ControllerProposal;
use weir_proto::internal::raft_client::RaftClient;
use weir_proto::v1 as pb;
use weir_tests::{BrokerProcess, RawClient};

/// Proposes `command` (the broker's JSON encoding) through the peer service and returns the
/// refusal reason the controller answered with.
async fn propose_refused(url: &str, command: serde_json::Value) -> anyhow::Result<String> {
    let mut peer = RaftClient::connect(url.to_owned()).await?;
    let reply = peer
        .propose_controller(ControllerProposal {
            command: serde_json::to_vec(&command)?.into(),
        })
        .await?
        .into_inner()
        .reply;
    let reply: serde_json::Value = serde_json::from_slice(&reply)?;
    // `{"Err": {"<refusal kind>": "<reason>"}}`.
    reply["Err"]
        .as_object()
        .and_then(|refusal| refusal.values().next())
        .and_then(serde_json::Value::as_str)
        .map(str::to_owned)
        .ok_or_else(|| anyhow::anyhow!("the command was not refused: {reply}"))
}

async fn topic_names(raw: &RawClient) -> anyhow::Result<Vec<String>> {
    let topics = raw
        .clone()
        .list_topics(pb::ListTopicsRequest {})
        .await?
        .into_inner()
        .topics;
    Ok(topics.into_iter().map(|t| t.name).collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_topic_of_four_billion_partitions_is_refused_and_the_broker_restarts()
-> anyhow::Result<()> {
    weir_tests::init_tracing();
    let temp = tempfile::tempdir()?;
    let data_dir = temp.path().join("data");
    let weir = Path::new(crate::WEIR);
    let broker = BrokerProcess::start(weir, &data_dir)?;
    let raw = RawClient::connect(broker.url()).await?;
    raw.clone()
        .create_topic(pb::CreateTopicRequest {
            name: "kept".into(),
            partitions: 2,
            ..Default::default()
        })
        .await?;

    // Before the check at apply, this was committed and every node ran out of memory applying
    // it, on every start.
    let huge = serde_json::json!({"CreateTopic": {
        "name": "huge", "partitions": 4_000_000_000u32, "replication_factor": 1, "configs": {}
    }});
    let reason = propose_refused(&broker.url(), huge).await?;
    assert!(reason.contains("at most 65536"), "{reason}");
    let configs = serde_json::json!({"CreateTopic": {
        "name": "configured", "partitions": 1, "replication_factor": 1,
        "configs": {"cleanup.policy": "shred"}
    }});
    let reason = propose_refused(&broker.url(), configs).await?;
    assert!(reason.starts_with("cleanup.policy"), "{reason}");
    let alter = serde_json::json!({"AlterTopicConfigs": {
        "topic": "kept", "set": {"max.message.bytes": "-7"}, "delete": []
    }});
    let reason = propose_refused(&broker.url(), alter).await?;
    assert!(reason.starts_with("max.message.bytes"), "{reason}");
    let module = serde_json::json!({"RegisterModule": {
        "name": "forged", "version": null, "sha256": "00", "registered_at_ms": 0, "wasm": "AGFzbQ=="
    }});
    let reason = propose_refused(&broker.url(), module).await?;
    assert!(reason.contains("SHA-256"), "{reason}");
    assert_eq!(topic_names(&raw).await?, ["kept"]);

    // The log replays on restart: the refused commands must refuse again, not crash the node.
    broker.kill()?;
    let broker = BrokerProcess::start(weir, &data_dir)?;
    let raw = RawClient::connect(broker.url()).await?;
    let topics = weir_tests::eventually(Duration::from_secs(30), "the restarted broker", || {
        let raw = raw.clone();
        async move { topic_names(&raw).await.ok() }
    })
    .await?;
    assert_eq!(topics, ["kept"]);
    let modules = raw
        .clone()
        .list_modules(pb::ListModulesRequest {})
        .await?
        .into_inner()
        .modules;
    assert!(modules.is_empty(), "{modules:?}");
    broker.kill()?;
    Ok(())
}
