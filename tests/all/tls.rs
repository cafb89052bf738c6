//! TLS on the client listener and between nodes, with certificates generated for each test
//! (`weir_tests::tls::TestPki`): real `weir broker` processes, real handshakes.

use std::collections::HashMap;
use std::path::Path;
use std::process::{Command, Output};

use crate::weir;
use anyhow::Context;
use bytes::Bytes;
use tonic::Code;
use weir_client::{Acks, Client, ClientError, FetchSpec, ProducerRecord, TopicSpec};
use weir_proto::v1 as pb;
use weir_tests::tls::{Pem, TestPki};
use weir_tests::{NodeId, ProcessCluster};

/// A one-node TLS broker serving `node`'s certificate, trusting `pki.ca`, with `client_auth`.
async fn tls_broker(
    pki: &TestPki,
    client_auth: Option<&str>,
) -> anyhow::Result<(ProcessCluster, String)> {
    let toml = TestPki::tls_toml(&pki.node, &pki.ca, client_auth);
    let mut cluster = ProcessCluster::new_with_config(weir(), 1, &toml).await?;
    cluster.use_client_tls(TestPki::client_config(&pki.ca, Some(&pki.node)));
    cluster.start_nodes(&[1]).await?;
    let addr = cluster.addr(1).to_string();
    Ok((cluster, addr))
}

/// Connects `builder`'s client and makes one request; the first error, if any. A refused
/// handshake reaches the client as a failed connection or, since a TLS 1.3 server refuses a
/// client certificate only after the client finished its half of the handshake, with the first
/// request.
async fn first_error(builder: weir_client::ClientBuilder) -> Option<ClientError> {
    match builder.connect().await {
        Ok(client) => client.list_topics().await.err(),
        Err(error) => Some(error),
    }
}

/// Asserts that `error` is the transport refusing the connection, not a broker's answer, and
/// returns its causes on one line.
fn assert_refused(error: &ClientError) -> String {
    let text = chain(error);
    let refused = match error {
        ClientError::Connect { .. } => true,
        ClientError::Rpc { code, reason, .. } => {
            reason.is_none()
                && matches!(
                    code,
                    Code::Unavailable | Code::Unknown | Code::Internal | Code::Cancelled
                )
        }
        _ => false,
    };
    assert!(refused, "not a refused connection: {text}");
    text
}

fn chain(error: &ClientError) -> String {
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

fn tls_client(addr: &str, ca: &Pem, identity: Option<&Pem>) -> weir_client::ClientBuilder {
    let builder = Client::builder(addr).tls_ca(ca.cert.clone());
    match identity {
        Some(pem) => builder.tls_identity(pem.cert.clone(), pem.key.clone()),
        None => builder,
    }
}

/// Produces `values` to `topic`/0 with acks=all and reads them back from the beginning.
async fn round_trip(client: &Client, topic: &str, values: &[&str]) -> anyhow::Result<()> {
    client.create_topic(TopicSpec::new(topic, 1)).await?;
    let records = values
        .iter()
        .map(|v| ProducerRecord::new(Bytes::copy_from_slice(v.as_bytes())))
        .collect();
    client.produce(topic, Some(0), records, Acks::All).await?;
    let fetched = client
        .fetch(FetchSpec {
            max_wait_ms: 0,
            ..FetchSpec::new(topic, 0, 0)
        })
        .await?;
    let read: Vec<(u64, &[u8])> = fetched
        .records
        .iter()
        .map(|r| (r.offset, r.value.as_ref()))
        .collect();
    let expected: Vec<(u64, &[u8])> = values
        .iter()
        .enumerate()
        .map(|(i, v)| (i as u64, v.as_bytes()))
        .collect();
    assert_eq!(read, expected);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plaintext_and_untrusted_clients_are_refused_and_a_trusting_one_round_trips()
-> anyhow::Result<()> {
    let pki = TestPki::generate()?;
    let (_cluster, addr) = tls_broker(&pki, None).await?;

    // The client's HTTP/2 preface is no TLS ClientHello: the listener answers with a TLS alert
    // and closes the connection.
    let plaintext = first_error(Client::builder(addr.as_str()))
        .await
        .context("a plaintext client was served by a TLS listener")?;
    assert_refused(&plaintext);

    let untrusted = first_error(tls_client(&addr, &pki.other_ca, None))
        .await
        .context("a client trusting another CA accepted the broker")?;
    let text = assert_refused(&untrusted);
    assert!(
        text.contains("invalid peer certificate: UnknownIssuer"),
        "{text}"
    );

    // The default with a CA is `optional`: no certificate is served, one from another CA is not.
    let foreign = first_error(tls_client(&addr, &pki.ca, Some(&pki.other_client)))
        .await
        .context("a client certificate from another CA was accepted")?;
    assert_refused(&foreign);

    let client = tls_client(&addr, &pki.ca, None).connect().await?;
    round_trip(&client, "over-tls", &["one", "two", "three"]).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn required_client_auth_serves_only_clients_with_a_certificate_from_the_ca()
-> anyhow::Result<()> {
    let pki = TestPki::generate()?;
    let (_cluster, addr) = tls_broker(&pki, Some("required")).await?;

    let anonymous = first_error(tls_client(&addr, &pki.ca, None))
        .await
        .context("a client without a certificate was served under required client auth")?;
    assert_refused(&anonymous);

    let foreign = first_error(tls_client(&addr, &pki.ca, Some(&pki.other_client)))
        .await
        .context("a client certificate from another CA was accepted")?;
    assert_refused(&foreign);

    let client = tls_client(&addr, &pki.ca, Some(&pki.client))
        .connect()
        .await?;
    round_trip(&client, "mutual", &["a", "b"]).await
}

fn record(value: &str) -> pb::Record {
    pb::Record {
        value: Bytes::copy_from_slice(value.as_bytes()),
        ..Default::default()
    }
}

fn values(records: &[pb::ConsumedRecord]) -> Vec<String> {
    records
        .iter()
        .map(|r| String::from_utf8_lossy(&r.value).into_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_cluster_replicates_and_survives_a_leader_kill() -> anyhow::Result<()> {
    const TOPIC: &str = "replicated";
    let pki = TestPki::generate()?;
    let toml = TestPki::tls_toml(&pki.node, &pki.ca, Some("required"));
    let mut cluster = ProcessCluster::new_with_config(weir(), 3, &toml).await?;
    cluster.use_client_tls(TestPki::client_config(&pki.ca, Some(&pki.client)));
    cluster.start_nodes(&[1, 2, 3]).await?;
    cluster.create_topic(TOPIC, 1, 3, &[]).await?;

    let first: Vec<pb::Record> = (0..5).map(|i| record(&format!("before-{i}"))).collect();
    let (_, base) = cluster
        .produce_acked(&[1, 2, 3], TOPIC, 0, first.clone())
        .await?;
    assert_eq!(base, 0);
    let expected: Vec<String> = (0..5).map(|i| format!("before-{i}")).collect();
    for node in [1, 2, 3] {
        cluster.wait_for_high_watermark(node, TOPIC, 0, 5).await?;
        assert_eq!(
            values(&cluster.read_partition(node, TOPIC, 0).await?),
            expected,
            "node {node}"
        );
    }

    let leader = cluster.leader_of(TOPIC, 0).await?;
    cluster.kill(leader)?;
    let survivors: Vec<NodeId> = [1, 2, 3].into_iter().filter(|&n| n != leader).collect();
    let second: Vec<pb::Record> = (0..3).map(|i| record(&format!("after-{i}"))).collect();
    let (_, base) = cluster.produce_acked(&survivors, TOPIC, 0, second).await?;
    assert_eq!(base, 5);
    let expected: Vec<String> = (0..5)
        .map(|i| format!("before-{i}"))
        .chain((0..3).map(|i| format!("after-{i}")))
        .collect();
    for &node in &survivors {
        cluster.wait_for_high_watermark(node, TOPIC, 0, 8).await?;
        assert_eq!(
            values(&cluster.read_partition(node, TOPIC, 0).await?),
            expected,
            "node {node}"
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_with_a_certificate_from_another_ca_cannot_replicate() -> anyhow::Result<()> {
    const TOPIC: &str = "guarded";
    let pki = TestPki::generate()?;
    let toml = TestPki::tls_toml(&pki.node, &pki.ca, None);
    let mut cluster = ProcessCluster::new_with_config(weir(), 3, &toml).await?;
    cluster.set_extra_config(3, &TestPki::tls_toml(&pki.other_node, &pki.other_ca, None))?;
    cluster.use_client_tls(TestPki::client_config(&pki.ca, Some(&pki.node)));
    let one = cluster.launch(1)?;
    let two = cluster.launch(2)?;
    // Node 3 never reports ready (it reaches no controller), so it is not waited for.
    let _intruder = cluster.launch(3)?;
    cluster.await_started(one).await?;
    cluster.await_started(two).await?;

    // What node 3 meets when it dials a peer: its certificate is refused...
    let addr1 = cluster.addr(1).to_string();
    let as_node_3 = first_error(tls_client(&addr1, &pki.other_ca, Some(&pki.other_node)))
        .await
        .context("node 1 served a peer whose certificate is from another CA")?;
    let as_node_3 = assert_refused(&as_node_3);
    assert!(as_node_3.contains("UnknownIssuer"), "{as_node_3}");
    // ...and what its peers meet when they dial it.
    let addr3 = cluster.addr(3).to_string();
    let to_node_3 = first_error(tls_client(&addr3, &pki.ca, Some(&pki.node)))
        .await
        .context("node 1's identity accepted node 3's certificate")?;
    let to_node_3 = assert_refused(&to_node_3);
    assert!(to_node_3.contains("UnknownIssuer"), "{to_node_3}");

    // So node 3 never registers with the controller: the cluster has two live nodes, and a
    // topic on three is refused, while one on the two good nodes replicates.
    let refused = cluster
        .client(1)?
        .create_topic(pb::CreateTopicRequest {
            name: TOPIC.into(),
            partitions: 1,
            replication_factor: 3,
            configs: HashMap::new(),
        })
        .await
        .expect_err("a topic on three nodes needs node 3");
    assert_eq!(
        weir_proto::error::reason_of(&refused).as_deref(),
        Some("INVALID_REPLICATION_FACTOR")
    );
    assert!(
        refused.message().contains("larger than the 2 live node(s)"),
        "{refused:?}"
    );
    cluster.create_topic(TOPIC, 1, 2, &[]).await?;
    let (_, base) = cluster
        .produce_acked(&[1, 2], TOPIC, 0, vec![record("x"), record("y")])
        .await?;
    assert_eq!(base, 0);
    let description = cluster
        .partition_on(1, TOPIC, 0)
        .await
        .context("node 1 describes the partition")?;
    let mut replicas = description.replicas.clone();
    replicas.sort_unstable();
    assert_eq!(replicas, vec![1, 2]);
    for node in [1, 2] {
        cluster.wait_for_high_watermark(node, TOPIC, 0, 2).await?;
        assert_eq!(
            values(&cluster.read_partition(node, TOPIC, 0).await?),
            ["x", "y"],
            "node {node}"
        );
    }
    Ok(())
}

fn run_weir(args: &[&str]) -> anyhow::Result<Output> {
    Ok(Command::new(crate::WEIR).args(args).output()?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_speaks_tls_with_tls_ca() -> anyhow::Result<()> {
    let pki = TestPki::generate()?;
    let (_cluster, addr) = tls_broker(&pki, None).await?;
    let ca = pki.ca.cert_file.to_string_lossy().into_owned();

    let created = run_weir(&[
        "--broker", &addr, "--tls-ca", &ca, "topic", "create", "cli-tls",
    ])?;
    assert!(created.status.success(), "{created:?}");
    let produced = Command::new(crate::WEIR)
        .args(["--broker", &addr, "--tls-ca", &ca, "produce", "cli-tls"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            child
                .stdin
                .take()
                .expect("stdin is piped")
                .write_all(b"hello\nworld\n")?;
            child.wait_with_output()
        })?;
    assert!(produced.status.success(), "{produced:?}");
    let consumed = run_weir(&[
        "--broker",
        &addr,
        "--tls-ca",
        &ca,
        "consume",
        "cli-tls",
        "--from-beginning",
        "--max-messages",
        "2",
    ])?;
    assert!(consumed.status.success(), "{consumed:?}");
    assert_eq!(String::from_utf8_lossy(&consumed.stdout), "hello\nworld\n");

    let plaintext = run_weir(&["--broker", &addr, "topic", "list"])?;
    assert!(!plaintext.status.success());
    let stderr = String::from_utf8_lossy(&plaintext.stderr);
    assert!(stderr.starts_with("error: "), "{stderr}");
    assert!(plaintext.stdout.is_empty(), "{plaintext:?}");

    let missing = run_weir(&[
        "--broker",
        &addr,
        "--tls-ca",
        "/nonexistent/ca.pem",
        "topic",
        "list",
    ])?;
    assert!(!missing.status.success());
    let stderr = String::from_utf8_lossy(&missing.stderr);
    assert!(
        stderr.contains("cannot read --tls-ca /nonexistent/ca.pem"),
        "{stderr}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_with_bad_tls_files_does_not_start_and_names_the_file() -> anyhow::Result<()> {
    let pki = TestPki::generate()?;
    let garbage = pki.dir().join("garbage.pem");
    std::fs::write(&garbage, "not a certificate\n")?;
    let data = tempfile::tempdir()?;
    let broker = |cert: &Path, key: &Path| {
        run_weir(&[
            "broker",
            "--listen",
            "127.0.0.1:0",
            "--metrics-listen",
            "none",
            "--data-dir",
            &data.path().to_string_lossy(),
            "--tls-cert",
            &cert.to_string_lossy(),
            "--tls-key",
            &key.to_string_lossy(),
        ])
    };
    let cases = [
        (
            broker(&garbage, &pki.node.key_file)?,
            format!("{} holds no PEM certificate", garbage.display()),
        ),
        (
            broker(&pki.node.cert_file, &garbage)?,
            format!("{} holds no PEM private key", garbage.display()),
        ),
        (
            broker(&pki.node.cert_file, &pki.client.key_file)?,
            format!(
                "the key in {} does not belong to the certificate in {}",
                pki.client.key_file.display(),
                pki.node.cert_file.display()
            ),
        ),
        (
            broker(&pki.dir().join("missing.pem"), &pki.node.key_file)?,
            format!(
                "cannot read TLS file {}",
                pki.dir().join("missing.pem").display()
            ),
        ),
    ];
    for (output, expected) in cases {
        assert!(!output.status.success());
        assert!(
            output.stdout.is_empty(),
            "it never listened: {}",
            String::from_utf8_lossy(&output.stdout)
        );
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.contains(&expected),
            "expected {expected:?} in {stderr}"
        );
    }
    Ok(())
}
