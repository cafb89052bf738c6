//! Topic configs (docs/operations.md, "Topic configs"): checked where they are set, altered all
//! or nothing, described with where each value comes from, and enforced on produce
//! (`max.message.bytes`, `message.timestamp.type`).

use std::collections::BTreeMap;

use crate::now_ms;
use bytes::Bytes;
use weir_client::{Acks, Client, ClientError, FetchSpec, ProducerRecord, TopicInfo, TopicSpec};
use weir_proto::v1 as pb;
use weir_server::TopicConfigValue;
use weir_tests::InProcessBroker;

/// The effective configs of `topic` as `name → (value, set on the topic)`.
fn effective(topic: &TopicInfo) -> BTreeMap<String, (String, bool)> {
    topic
        .effective_configs
        .iter()
        .map(|c| (c.name.clone(), (c.value.clone(), c.set_on_topic)))
        .collect()
}

fn entry(value: &str, set_on_topic: bool) -> Option<(String, bool)> {
    Some((value.to_owned(), set_on_topic))
}

fn invalid_config(result: Result<TopicInfo, ClientError>, naming: &str) {
    let err = result.expect_err("an invalid config is refused");
    assert_eq!(err.reason(), Some("INVALID_CONFIG"), "{err}");
    assert!(err.to_string().contains(naming), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configs_are_checked_altered_all_or_nothing_and_described_with_their_source()
-> anyhow::Result<()> {
    let broker = InProcessBroker::start().await?;
    let client = Client::connect(broker.addr().to_string()).await?;

    let created = client
        .create_topic(
            TopicSpec::new("configured", 1)
                .with_config("max.message.bytes", "2000")
                .with_config("message.timestamp.type", "createtime"),
        )
        .await?;
    let configs = effective(&created);
    assert_eq!(configs.len(), 8, "{configs:?}");
    assert_eq!(
        configs.get("max.message.bytes").cloned(),
        entry("2000", true)
    );
    // Stored as Kafka spells it.
    assert_eq!(
        configs.get("message.timestamp.type").cloned(),
        entry("CreateTime", true)
    );
    assert_eq!(configs.get("retention.ms").cloned(), entry("-1", false));
    assert_eq!(
        configs.get("cleanup.policy").cloned(),
        entry("delete", false)
    );

    // Refused at creation, naming the key; nothing is created.
    for (key, value) in [
        ("retention.minutes", "5"),
        ("max.message.bytes", "-1"),
        ("message.timestamp.type", "WallClock"),
        ("retention.ms", "-2"),
        ("retention.bytes", "-3"),
        ("cleanup.policy", "compact,shred"),
        ("min.cleanable.dirty.ratio", "2"),
    ] {
        invalid_config(
            client
                .create_topic(TopicSpec::new("refused", 1).with_config(key, value))
                .await,
            key,
        );
    }
    let names: Vec<String> = client
        .list_topics()
        .await?
        .into_iter()
        .map(|t| t.name)
        .collect();
    assert_eq!(names, ["configured"]);

    // Altered: one set, one removed (its default applies again).
    let set = |k: &str, v: &str| vec![(k.to_owned(), v.to_owned())];
    let altered = client
        .alter_topic_configs(
            "configured",
            set("message.timestamp.type", "LogAppendTime"),
            vec!["max.message.bytes".to_owned()],
        )
        .await?;
    let configs = effective(&altered);
    assert_eq!(
        configs.get("message.timestamp.type").cloned(),
        entry("LogAppendTime", true)
    );
    let node_default = (8 * 1024 * 1024).to_string();
    assert_eq!(
        configs.get("max.message.bytes").cloned(),
        entry(&node_default, false)
    );
    assert_eq!(
        client.describe_topic("configured").await?.effective_configs,
        altered.effective_configs
    );

    // A bad alteration changes nothing, not even its good part.
    invalid_config(
        client
            .alter_topic_configs(
                "configured",
                vec![
                    ("max.message.bytes".to_owned(), "100".to_owned()),
                    ("retention.bytes".to_owned(), "many".to_owned()),
                ],
                Vec::new(),
            )
            .await,
        "retention.bytes",
    );
    invalid_config(
        client
            .alter_topic_configs(
                "configured",
                set("max.message.bytes", "100"),
                vec!["max.message.bytes".to_owned()],
            )
            .await,
        "both set and deleted",
    );
    invalid_config(
        client
            .alter_topic_configs("configured", Vec::new(), vec!["nope".to_owned()])
            .await,
        "nope",
    );
    assert_eq!(
        client.describe_topic("configured").await?.effective_configs,
        altered.effective_configs
    );
    let missing = client
        .alter_topic_configs("missing", set("max.message.bytes", "100"), Vec::new())
        .await
        .expect_err("no such topic");
    assert_eq!(missing.reason(), Some("UNKNOWN_TOPIC"), "{missing}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_message_bytes_bounds_the_batches_a_topic_takes() -> anyhow::Result<()> {
    let broker = InProcessBroker::start().await?;
    let client = Client::connect(broker.addr().to_string()).await?;
    client
        .create_topic(TopicSpec::new("small", 1).with_config("max.message.bytes", "1000"))
        .await?;
    client.create_topic(TopicSpec::new("large", 1)).await?;
    let big = || vec![ProducerRecord::new(Bytes::from(vec![b'x'; 2000]))];

    let refused = client
        .produce("small", Some(0), big(), Acks::All)
        .await
        .expect_err("2 KB is over the topic's 1000 bytes");
    assert_eq!(refused.reason(), Some("RECORD_TOO_LARGE"), "{refused}");
    assert!(
        refused.to_string().contains("max.message.bytes=1000"),
        "{refused}"
    );
    let fits = client
        .produce(
            "small",
            Some(0),
            vec![ProducerRecord::new("fits")],
            Acks::All,
        )
        .await?;
    assert_eq!(fits.base_offset, Some(0));
    let other = client.produce("large", Some(0), big(), Acks::All).await?;
    assert_eq!(other.base_offset, Some(0));

    // Raised again, the same batch fits.
    client
        .alter_topic_configs("small", Vec::new(), vec!["max.message.bytes".to_owned()])
        .await?;
    let after = client.produce("small", Some(0), big(), Acks::All).await?;
    assert_eq!(after.base_offset, Some(1));
    let stored = client.fetch(FetchSpec::new("small", 0, 0)).await?.records;
    let values: Vec<usize> = stored.iter().map(|r| r.value.len()).collect();
    assert_eq!(values, [4, 2000]);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_append_time_gives_records_the_leaders_clock() -> anyhow::Result<()> {
    let broker = InProcessBroker::start().await?;
    let client = Client::connect(broker.addr().to_string()).await?;
    client
        .create_topic(
            TopicSpec::new("stamped", 1).with_config("message.timestamp.type", "LogAppendTime"),
        )
        .await?;
    let records = || {
        vec![
            ProducerRecord::new("a").with_timestamp_ms(5),
            ProducerRecord::new("b").with_timestamp_ms(6),
        ]
    };
    let before = now_ms();
    client
        .produce("stamped", Some(0), records(), Acks::All)
        .await?;
    let after = now_ms();

    // Decoded by the client from the stored batches.
    let fetched = client.fetch(FetchSpec::new("stamped", 0, 0)).await?.records;
    assert_eq!(fetched.len(), 2);
    let stamp = fetched[0].timestamp_ms;
    assert!(
        (before..=after).contains(&stamp),
        "{before} <= {stamp} <= {after}"
    );
    assert!(
        fetched.iter().all(|r| r.timestamp_ms == stamp),
        "{fetched:?}"
    );
    // Decoded by the broker.
    let mut raw = broker.raw_client().await?;
    let served = raw
        .fetch(pb::FetchRequest {
            topic: "stamped".into(),
            partition: 0,
            offset: 0,
            ..Default::default()
        })
        .await?
        .into_inner()
        .records;
    let stamps: Vec<i64> = served.iter().map(|r| r.timestamp_ms).collect();
    assert_eq!(stamps, [stamp, stamp]);

    // Back to the producers' timestamps from the next batch on.
    client
        .alter_topic_configs(
            "stamped",
            Vec::new(),
            vec!["message.timestamp.type".to_owned()],
        )
        .await?;
    client
        .produce("stamped", Some(0), records(), Acks::All)
        .await?;
    let fetched = client.fetch(FetchSpec::new("stamped", 0, 2)).await?.records;
    let stamps: Vec<(u64, i64)> = fetched.iter().map(|r| (r.offset, r.timestamp_ms)).collect();
    assert_eq!(stamps, [(2, 5), (3, 6)]);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_nodes_defaults_apply_where_a_topic_sets_nothing() -> anyhow::Result<()> {
    let broker = InProcessBroker::start_adjusted(|config| {
        config.topic_defaults.insert(
            "max.message.bytes".to_owned(),
            TopicConfigValue::Integer(1500),
        );
    })
    .await?;
    let client = Client::connect(broker.addr().to_string()).await?;
    let topic = client.create_topic(TopicSpec::new("defaulted", 1)).await?;
    assert_eq!(
        effective(&topic).get("max.message.bytes").cloned(),
        entry("1500", false)
    );
    let refused = client
        .produce(
            "defaulted",
            Some(0),
            vec![ProducerRecord::new(Bytes::from(vec![b'x'; 2000]))],
            Acks::All,
        )
        .await
        .expect_err("over the default");
    assert_eq!(refused.reason(), Some("RECORD_TOO_LARGE"), "{refused}");
    Ok(())
}
