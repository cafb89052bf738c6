//! Authentication, authorization and the closed peer service (docs/security.md): users with
//! passwords, client certificates naming users, the ACL matrix, nodes told apart from clients by
//! certificate or cluster secret, and passwords kept out of everything the broker writes.

use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use tonic::Code;
use weir_client::{
    Acks, AclBinding, AclFilter, AclOperation, AclPermission, CLUSTER_RESOURCE, Client,
    ClientError, FetchSpec, ModulePath, ModuleRef, PatternType, ProducerRecord, RejectPolicy,
    ResourceType, StartAt, TopicPartition, TopicSpec,
};
use weir_proto::internal::raft_client::RaftClient;
use weir_server::{BootstrapUser, TlsSettings};
use weir_tests::tls::{NODE_CN, Pem, TestPki};
use weir_tests::{InProcessBroker, ProcessCluster, eventually, scrape_metrics};

use crate::weir;

const ADMIN_PASSWORD: &str = "admin-pw-0f3a9c";
const ALICE_PASSWORD: &str = "alice-pw-77b1e2";

/// A one-node broker enforcing ACLs, with the super user `User:admin` created at start-up
/// (`WEIR_BOOTSTRAP_USER`'s setting); over TLS with `pki`'s node certificate when given.
async fn secured_broker(pki: Option<&TestPki>) -> anyhow::Result<InProcessBroker> {
    let tls = pki.map(|pki| TlsSettings {
        cert: Some(pki.node.cert_file.clone()),
        key: Some(pki.node.key_file.clone()),
        ca: Some(pki.ca.cert_file.clone()),
        client_auth: None,
    });
    InProcessBroker::start_adjusted(|c| {
        if let Some(tls) = tls {
            c.tls = tls;
        }
        c.security.authorization = true;
        c.security.super_users = vec!["User:admin".to_owned()];
        c.security.bootstrap_user = Some(BootstrapUser {
            name: "admin".to_owned(),
            password: ADMIN_PASSWORD.to_owned(),
        });
    })
    .await
}

/// A client of `broker` as `user` (no credentials for `None`), over TLS trusting `pki.ca` and
/// presenting `identity` when given.
async fn connect(
    broker: &InProcessBroker,
    pki: Option<&TestPki>,
    identity: Option<&Pem>,
    user: Option<(&str, &str)>,
) -> anyhow::Result<Client> {
    let mut builder = Client::builder(broker.addr().to_string());
    if let Some(pki) = pki {
        builder = builder.tls_ca(pki.ca.cert.clone());
    }
    if let Some(pem) = identity {
        builder = builder.tls_identity(pem.cert.clone(), pem.key.clone());
    }
    if let Some((user, password)) = user {
        builder = builder.credentials(user, password);
    }
    Ok(builder.connect().await?)
}

/// Asserts that `result` failed with `reason` and a message containing `text`.
#[track_caller]
fn assert_refused<T: std::fmt::Debug>(
    result: Result<T, ClientError>,
    code: Code,
    reason: &str,
    text: &str,
) {
    let error = result.expect_err("the request was served");
    assert_eq!(error.code(), Some(code), "{error}");
    assert_eq!(error.reason(), Some(reason), "{error}");
    assert!(error.to_string().contains(text), "{error} lacks {text:?}");
}

/// Asserts `PERMISSION_DENIED` naming `missing` exactly.
#[track_caller]
fn assert_denied<T: std::fmt::Debug>(
    result: Result<T, ClientError>,
    principal: &str,
    missing: &str,
) {
    assert_refused(
        result,
        Code::PermissionDenied,
        "PERMISSION_DENIED",
        &format!("{principal} lacks {missing}"),
    );
}

fn allow(principal: &str, operation: AclOperation, kind: ResourceType, name: &str) -> AclBinding {
    AclBinding {
        principal: principal.to_owned(),
        resource_type: kind,
        resource_name: name.to_owned(),
        pattern_type: PatternType::Literal,
        operation,
        permission: AclPermission::Allow,
    }
}

fn prefixed(mut binding: AclBinding) -> AclBinding {
    binding.pattern_type = PatternType::Prefixed;
    binding
}

fn deny(mut binding: AclBinding) -> AclBinding {
    binding.permission = AclPermission::Deny;
    binding
}

fn record(value: &str) -> ProducerRecord {
    ProducerRecord::new(Bytes::copy_from_slice(value.as_bytes()))
}

/// The values of `topic`/0 from offset 0, read by `client` with `modules` as its chain.
async fn read_values(
    client: &Client,
    topic: &str,
    modules: Vec<ModuleRef>,
) -> Result<Vec<String>, ClientError> {
    let fetched = client
        .fetch(FetchSpec {
            max_wait_ms: 0,
            modules,
            ..FetchSpec::new(topic, 0, 0)
        })
        .await?;
    Ok(fetched
        .records
        .iter()
        .map(|r| String::from_utf8_lossy(&r.value).into_owned())
        .collect())
}

/// The value of the counter `name` with `labels` (as the endpoint prints them), 0 if absent.
async fn counter(broker: &InProcessBroker, name: &str, labels: &str) -> anyhow::Result<u64> {
    let text = scrape_metrics(broker.metrics_addr().context("no metrics endpoint")?).await?;
    let prefix = format!("{name}{labels} ");
    Ok(text
        .lines()
        .find_map(|line| line.strip_prefix(&prefix))
        .map_or(0, |v| v.trim().parse::<f64>().unwrap_or(0.0) as u64))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_passwords_unknown_users_and_anonymous_callers_are_refused_and_change_nothing()
-> anyhow::Result<()> {
    let pki = TestPki::generate()?;
    let broker = secured_broker(Some(&pki)).await?;
    let admin = connect(&broker, Some(&pki), None, Some(("admin", ADMIN_PASSWORD))).await?;

    let wrong = connect(
        &broker,
        Some(&pki),
        None,
        Some(("admin", "not-the-password")),
    )
    .await?;
    let refused = wrong.create_topic(TopicSpec::new("by-wrong", 1)).await;
    let message = refused.as_ref().unwrap_err().to_string();
    assert!(!message.contains("not-the-password"), "{message}");
    assert_refused(
        refused,
        Code::Unauthenticated,
        "UNAUTHENTICATED",
        "authentication failed for user 'admin': unknown user or wrong password",
    );
    let unknown = connect(&broker, Some(&pki), None, Some(("mallory", ADMIN_PASSWORD))).await?;
    assert_refused(
        unknown.create_topic(TopicSpec::new("by-unknown", 1)).await,
        Code::Unauthenticated,
        "UNAUTHENTICATED",
        "authentication failed for user 'mallory'",
    );
    // No credentials: the anonymous caller, whom no binding allows anything.
    let anonymous = connect(&broker, Some(&pki), None, None).await?;
    assert_denied(
        anonymous
            .create_topic(TopicSpec::new("by-anonymous", 1))
            .await,
        "User:ANONYMOUS",
        "CREATE on the cluster or CREATE on topic 'by-anonymous'",
    );
    // Even a binding for every user leaves the anonymous caller out.
    admin
        .create_acls(&[allow(
            "User:*",
            AclOperation::Describe,
            ResourceType::Cluster,
            CLUSTER_RESOURCE,
        )])
        .await?;
    assert_denied(
        anonymous.list_acls(&AclFilter::default()).await,
        "User:ANONYMOUS",
        "DESCRIBE on the cluster",
    );

    assert!(
        admin.list_topics().await?.is_empty(),
        "a refused request created a topic"
    );
    assert_eq!(
        counter(
            &broker,
            "weir_authentication_failures_total",
            "{reason=\"wrong_password\"}"
        )
        .await?,
        1
    );
    assert_eq!(
        counter(
            &broker,
            "weir_authentication_failures_total",
            "{reason=\"unknown_user\"}"
        )
        .await?,
        1
    );
    assert_eq!(
        counter(
            &broker,
            "weir_authorization_denials_total",
            "{rpc=\"CreateTopic\",operation=\"CREATE\",resource_type=\"topic\"}"
        )
        .await?,
        1
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_acl_matrix_allows_exactly_what_the_bindings_say() -> anyhow::Result<()> {
    let broker = secured_broker(None).await?;
    let admin = connect(&broker, None, None, Some(("admin", ADMIN_PASSWORD))).await?;
    admin.create_user("alice", ALICE_PASSWORD).await?;
    admin.create_user("bob", "bob-pw-5521").await?;
    for topic in ["orders", "orders-eu", "audit"] {
        admin.create_topic(TopicSpec::new(topic, 1)).await?;
        admin
            .produce(
                topic,
                Some(0),
                vec![record(&format!("{topic}-0"))],
                Acks::All,
            )
            .await?;
    }
    let keep_all = weir_tests::modules::bytes("keep-all")?;
    admin
        .register_module("keep-all", None, keep_all.clone())
        .await?;
    let alice = connect(&broker, None, None, Some(("alice", ALICE_PASSWORD))).await?;
    let bob = connect(&broker, None, None, Some(("bob", "bob-pw-5521"))).await?;
    let me = "User:alice";
    let grant = |binding: AclBinding| {
        let admin = admin.clone();
        async move { admin.create_acls(&[binding]).await }
    };

    // Produce: write on the topic (an idempotent producer's id: write on any topic). A denied
    // request stores nothing.
    assert_denied(alice.init_producer_id().await, me, "WRITE on any topic");
    assert_denied(
        alice
            .produce("orders", Some(0), vec![record("denied")], Acks::All)
            .await,
        me,
        "WRITE on topic 'orders'",
    );
    grant(allow(
        me,
        AclOperation::Write,
        ResourceType::Topic,
        "orders",
    ))
    .await?;
    alice
        .produce("orders", Some(0), vec![record("by-alice")], Acks::All)
        .await?;
    alice.init_producer_id().await?;
    assert_eq!(
        read_values(&admin, "orders", vec![]).await?,
        ["orders-0", "by-alice"]
    );

    // Consume: read on the topic; a prefixed binding covers every topic starting with it.
    assert_denied(
        read_values(&alice, "orders", vec![]).await,
        me,
        "READ on topic 'orders'",
    );
    grant(prefixed(allow(
        me,
        AclOperation::Read,
        ResourceType::Topic,
        "orders",
    )))
    .await?;
    assert_eq!(
        read_values(&alice, "orders-eu", vec![]).await?,
        ["orders-eu-0"]
    );
    assert_denied(
        read_values(&alice, "audit", vec![]).await,
        me,
        "READ on topic 'audit'",
    );

    // A consumer-chosen module: read on the module too.
    let chain = || vec![ModuleRef::new("keep-all")];
    assert_denied(
        read_values(&alice, "orders", chain()).await,
        me,
        "READ on module 'keep-all'",
    );
    grant(allow(
        me,
        AclOperation::Read,
        ResourceType::Module,
        "keep-all",
    ))
    .await?;
    assert_eq!(
        read_values(&alice, "orders", chain()).await?,
        ["orders-0", "by-alice"]
    );

    // Deny wins over the prefixed allow.
    grant(deny(allow(
        me,
        AclOperation::Read,
        ResourceType::Topic,
        "orders-eu",
    )))
    .await?;
    assert_denied(
        read_values(&alice, "orders-eu", vec![]).await,
        me,
        "READ on topic 'orders-eu'",
    );
    assert_eq!(read_values(&alice, "orders", vec![]).await?.len(), 2);

    // Groups: read on the group to join or commit, and read on the topics committed.
    let offsets = [(
        TopicPartition {
            topic: "orders".into(),
            partition: 0,
        },
        1,
    )];
    assert_denied(
        alice.commit_offsets("g1", "", &offsets).await,
        me,
        "READ on group 'g1'",
    );
    assert_denied(
        alice
            .join_group("g1", &["orders".into()], "range", 10_000, "a")
            .await,
        me,
        "READ on group 'g1'",
    );
    grant(allow(me, AclOperation::Read, ResourceType::Group, "g1")).await?;
    alice.commit_offsets("g1", "", &offsets).await?;
    let joined = alice
        .join_group("g1", &["orders".into()], "range", 10_000, "a")
        .await?;
    alice.leave_group("g1", &joined.member_id).await?;
    // Listing shows only the groups one may describe (read implies describe).
    assert_eq!(
        bob.list_groups()
            .await?
            .into_iter()
            .map(|g| g.group)
            .collect::<Vec<_>>(),
        Vec::<String>::new()
    );
    assert_eq!(
        alice
            .list_groups()
            .await?
            .into_iter()
            .map(|g| g.group)
            .collect::<Vec<_>>(),
        ["g1"]
    );

    // Modules: alter on the module to register; alter on the module and the topic to attach.
    assert_denied(
        alice
            .register_module("alice-keep", None, keep_all.clone())
            .await,
        me,
        "ALTER on module 'alice-keep'",
    );
    grant(prefixed(allow(
        me,
        AclOperation::Alter,
        ResourceType::Module,
        "alice-",
    )))
    .await?;
    alice
        .register_module("alice-keep", None, keep_all.clone())
        .await?;
    let attach = || {
        alice.attach_module(
            "orders",
            ModuleRef::new("alice-keep"),
            ModulePath::Consume,
            RejectPolicy::Reject,
        )
    };
    assert_denied(attach().await, me, "ALTER on topic 'orders'");
    grant(allow(
        me,
        AclOperation::Alter,
        ResourceType::Topic,
        "orders",
    ))
    .await?;
    let attached = attach().await?;
    assert_eq!(attached.consume_chain.len(), 1);

    // Topics: create on the cluster or the topic; alter-configs; delete.
    assert_denied(
        alice.create_topic(TopicSpec::new("alice-t", 1)).await,
        me,
        "CREATE on the cluster or CREATE on topic 'alice-t'",
    );
    grant(prefixed(allow(
        me,
        AclOperation::Create,
        ResourceType::Topic,
        "alice-",
    )))
    .await?;
    alice.create_topic(TopicSpec::new("alice-t", 1)).await?;
    let retention = || {
        alice.alter_topic_configs(
            "alice-t",
            [("retention.ms".to_owned(), "60000".to_owned())],
            Vec::<String>::new(),
        )
    };
    assert_denied(retention().await, me, "ALTER_CONFIGS on topic 'alice-t'");
    grant(allow(
        me,
        AclOperation::AlterConfigs,
        ResourceType::Topic,
        "alice-t",
    ))
    .await?;
    retention().await?;
    assert_denied(
        alice.delete_topic("alice-t").await,
        me,
        "DELETE on topic 'alice-t'",
    );
    grant(allow(
        me,
        AclOperation::Delete,
        ResourceType::Topic,
        "alice-t",
    ))
    .await?;
    alice.delete_topic("alice-t").await?;

    // Users and ACLs are the cluster's: alter to change, describe to list.
    assert_denied(
        alice.create_user("carol", "carol-pw-1").await,
        me,
        "ALTER on the cluster",
    );
    assert_denied(alice.delete_user("bob").await, me, "ALTER on the cluster");
    assert_denied(
        alice
            .create_acls(&[allow(me, AclOperation::All, ResourceType::Topic, "*")])
            .await,
        me,
        "ALTER on the cluster",
    );
    assert_denied(
        alice.list_acls(&AclFilter::default()).await,
        me,
        "DESCRIBE on the cluster",
    );
    assert_denied(alice.list_users().await, me, "DESCRIBE on the cluster");
    let names: Vec<String> = admin
        .list_users()
        .await?
        .into_iter()
        .map(|u| u.name)
        .collect();
    assert_eq!(names, ["admin", "alice", "bob"]);

    // Topic lists show what one may describe; a binding for every user reaches bob too.
    let listed = |client: Client| async move {
        client
            .list_topics()
            .await
            .map(|topics| topics.into_iter().map(|t| t.name).collect::<Vec<_>>())
    };
    assert_eq!(listed(bob.clone()).await?, Vec::<String>::new());
    assert_eq!(listed(alice.clone()).await?, ["orders", "orders-eu"]);
    grant(allow(
        "User:*",
        AclOperation::Describe,
        ResourceType::Topic,
        "audit",
    ))
    .await?;
    assert_eq!(listed(bob.clone()).await?, ["audit"]);

    // Deleting the bindings takes the permission away again.
    let removed = admin
        .delete_acls(&[allow(
            me,
            AclOperation::Write,
            ResourceType::Topic,
            "orders",
        )])
        .await?;
    assert_eq!(removed, 1);
    assert_denied(
        alice
            .produce("orders", Some(0), vec![record("again")], Acks::All)
            .await,
        me,
        "WRITE on topic 'orders'",
    );
    let bindings = admin
        .list_acls(&AclFilter {
            principal: Some(me.to_owned()),
            resource_type: Some(ResourceType::Topic),
            ..AclFilter::default()
        })
        .await?;
    assert_eq!(bindings.len(), 6, "{bindings:#?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoking_read_ends_an_open_subscription_at_its_next_read() -> anyhow::Result<()> {
    let broker = secured_broker(None).await?;
    let admin = connect(&broker, None, None, Some(("admin", ADMIN_PASSWORD))).await?;
    admin.create_user("alice", ALICE_PASSWORD).await?;
    admin.create_topic(TopicSpec::new("feed", 1)).await?;
    admin
        .produce("feed", Some(0), vec![record("one")], Acks::All)
        .await?;
    let read = allow(
        "User:alice",
        AclOperation::Read,
        ResourceType::Topic,
        "feed",
    );
    admin.create_acls(std::slice::from_ref(&read)).await?;
    let alice = connect(&broker, None, None, Some(("alice", ALICE_PASSWORD))).await?;
    let mut stream = alice.subscribe("feed", 0, StartAt::Earliest).await?;
    let first = next_within(&mut stream)
        .await?
        .context("the stream ended")??;
    assert_eq!(first.value.as_ref(), b"one");

    assert_eq!(admin.delete_acls(&[read]).await?, 1);
    admin
        .produce("feed", Some(0), vec![record("two")], Acks::All)
        .await?;
    let refused = next_within(&mut stream)
        .await?
        .context("the stream ended without an error")?;
    assert_denied(refused, "User:alice", "READ on topic 'feed'");
    assert!(
        next_within(&mut stream).await?.is_none(),
        "the stream went on"
    );
    Ok(())
}

/// The next item of `stream`, within 10 s.
async fn next_within<S: futures::Stream + Unpin>(
    stream: &mut S,
) -> anyhow::Result<Option<S::Item>> {
    use futures::StreamExt;
    tokio::time::timeout(Duration::from_secs(10), stream.next())
        .await
        .context("nothing from the stream within 10 s")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_certificates_name_users_and_only_nodes_reach_the_peer_service() -> anyhow::Result<()>
{
    let pki = TestPki::generate()?;
    let broker = secured_broker(Some(&pki)).await?;
    let admin = connect(&broker, Some(&pki), None, Some(("admin", ADMIN_PASSWORD))).await?;
    admin
        .create_acls(&[allow(
            "User:carol",
            AclOperation::Describe,
            ResourceType::Cluster,
            CLUSTER_RESOURCE,
        )])
        .await?;
    let carol_pem = pki.client_named("carol")?;
    let carol = connect(&broker, Some(&pki), Some(&carol_pem), None).await?;
    assert_eq!(carol.list_acls(&AclFilter::default()).await?.len(), 1);
    let dave = connect(&broker, Some(&pki), Some(&pki.client_named("dave")?), None).await?;
    assert_denied(
        dave.list_acls(&AclFilter::default()).await,
        "User:dave",
        "DESCRIBE on the cluster",
    );

    // The peer service: a client certificate from the same CA is not a node's.
    let vote = |identity: &Pem| {
        let channel = tonic::transport::Endpoint::from_shared(format!("https://{}", broker.addr()))
            .and_then(|e| {
                e.tls_config(
                    TestPki::client_config(&pki.ca, Some(identity)).domain_name("localhost"),
                )
            })
            .map(|e| e.connect_lazy());
        async move {
            RaftClient::new(channel?)
                .vote(weir_proto::internal::RaftRequest {
                    group: 0,
                    payload: Bytes::from_static(b"not a vote"),
                })
                .await
                .map(|_| ())
                .map_err(anyhow::Error::from)
        }
    };
    let refused = vote(&carol_pem)
        .await
        .expect_err("a client reached the peer service");
    let status = refused
        .downcast_ref::<tonic::Status>()
        .context("not a status")?;
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    assert!(
        status.message().contains("answers only nodes"),
        "{status:?}"
    );
    // A node's certificate passes the guard: the message then fails as the garbage it is.
    let passed = vote(&pki.client_named(NODE_CN)?)
        .await
        .expect_err("garbage was a vote");
    let status = passed
        .downcast_ref::<tonic::Status>()
        .context("not a status")?;
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert_eq!(
        counter(&broker, "weir_peer_requests_refused_total", "").await?,
        1
    );
    Ok(())
}

/// Writes a cluster secret file under `dir`.
fn secret_file(dir: &Path) -> anyhow::Result<std::path::PathBuf> {
    let path = dir.join("cluster.secret");
    std::fs::write(&path, "3f9c1e0b7a6d4c2e8f1a5b9d0c3e7f21\n")?;
    Ok(path)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_secret_lets_nodes_replicate_and_forward_and_keeps_clients_out()
-> anyhow::Result<()> {
    let temp = tempfile::tempdir()?;
    let secret = secret_file(temp.path())?;
    let toml = format!(
        "[security]\nauthorization = true\nsuper_users = [\"User:admin\"]\ncluster_secret_file = {secret:?}\n"
    );
    let mut cluster = ProcessCluster::new_with_config(weir(), 3, &toml).await?;
    cluster.set_env("WEIR_BOOTSTRAP_USER", &format!("admin:{ADMIN_PASSWORD}"));
    cluster.start_nodes(&[1, 2, 3]).await?;
    let admin = Client::builder(cluster.addr(1).to_string())
        .credentials("admin", ADMIN_PASSWORD)
        .connect()
        .await?;
    admin
        .create_topic(TopicSpec::new("replicated", 1).with_replication_factor(3))
        .await?;
    admin.create_user("alice", ALICE_PASSWORD).await?;
    admin
        .create_acls(&[
            allow("User:alice", AclOperation::Read, ResourceType::Group, "g"),
            allow(
                "User:alice",
                AclOperation::Read,
                ResourceType::Topic,
                "replicated",
            ),
            allow(
                "User:alice",
                AclOperation::Write,
                ResourceType::Topic,
                "replicated",
            ),
        ])
        .await?;
    // Replication among the nodes: acks=all needs a quorum of them.
    let alice_at = |id| {
        Client::builder(cluster.addr(id).to_string())
            .credentials("alice", ALICE_PASSWORD)
            .connect()
    };
    let alice = alice_at(1).await?;
    let outcome = alice
        .produce(
            "replicated",
            Some(0),
            vec![record("one"), record("two")],
            Acks::All,
        )
        .await?;
    assert_eq!(outcome.base_offset, Some(0));
    // Group requests reach the coordinator through whichever node a client asks: a node that
    // is not the controller leader forwards them in its own name, having checked alice's
    // permissions against the bindings it has applied (within about a heartbeat of the grant).
    for id in [1, 2, 3] {
        let at_node = Client::builder(cluster.addr(id).to_string())
            .credentials("admin", ADMIN_PASSWORD)
            .connect()
            .await?;
        eventually(
            Duration::from_secs(10),
            "the bindings reach every node",
            || {
                let at_node = at_node.clone();
                async move {
                    let bindings = at_node.list_acls(&AclFilter::default()).await.ok()?;
                    (bindings.len() == 3).then_some(())
                }
            },
        )
        .await?;
    }
    for id in [1, 2, 3] {
        let client = alice_at(id).await?;
        client
            .commit_offsets(
                "g",
                "",
                &[(
                    TopicPartition {
                        topic: "replicated".into(),
                        partition: 0,
                    },
                    2,
                )],
            )
            .await
            .with_context(|| format!("committing through node {id}"))?;
    }

    // A client without the secret is refused by the peer service of every node.
    for id in [1, 2, 3] {
        let status = RaftClient::new(weir_tests::lazy_channel(cluster.addr(id))?)
            .propose_controller(weir_proto::internal::ControllerProposal {
                command: Bytes::from_static(b"{\"DeleteTopic\":{\"name\":\"replicated\"}}"),
            })
            .await
            .expect_err("a client proposed a controller command");
        assert_eq!(
            status.code(),
            Code::PermissionDenied,
            "node {id}: {status:?}"
        );
    }
    let topics = admin.list_topics().await?;
    assert_eq!(topics.len(), 1, "{topics:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passwords_stay_out_of_logs_metrics_errors_and_the_controller_state() -> anyhow::Result<()>
{
    let pki = TestPki::generate()?;
    let mut toml = TestPki::tls_toml(&pki.node, &pki.ca, None);
    toml.push_str("[security]\nauthorization = true\nsuper_users = [\"User:admin\"]\n");
    let mut cluster = ProcessCluster::new_with_config(weir(), 1, &toml).await?;
    cluster.use_client_tls(TestPki::client_config(&pki.ca, Some(&pki.node)));
    cluster.set_env("WEIR_BOOTSTRAP_USER", &format!("admin:{ADMIN_PASSWORD}"));
    // Every request logged, at the most verbose level the broker has.
    cluster.set_env("RUST_LOG", "trace");
    cluster.start_nodes(&[1]).await?;
    let addr = cluster.addr(1).to_string();
    let ca = pki.ca.cert_file.to_string_lossy().into_owned();
    let weir_as = |user: Option<(&str, &str)>, args: &[&str], stdin: &str| {
        let mut command = std::process::Command::new(crate::WEIR);
        command
            .args(["--broker", &addr, "--tls-ca", &ca])
            .args(args);
        if let Some((user, password)) = user {
            command
                .args(["--user", user])
                .env("WEIR_PASSWORD", password);
        }
        run_with_stdin(command, stdin)
    };
    let admin = Some(("admin", ADMIN_PASSWORD));

    // Users through the CLI: the new password on stdin, never a flag.
    let created = weir_as(
        admin,
        &["user", "create", "alice"],
        &format!("{ALICE_PASSWORD}\n"),
    )?;
    assert_eq!(created.stdout, "created user alice\n", "{created:?}");
    // One binding, created and later deleted with the same flags.
    let binding = [
        "--allow",
        "--principal",
        "User:alice",
        "--operation",
        "describe",
        "--topic",
        "*",
    ];
    let granted = weir_as(admin, &[&["acl", "create"][..], &binding].concat(), "")?;
    assert_eq!(granted.stdout, "created 1 ACL binding(s)\n", "{granted:?}");
    let acls = weir_as(admin, &["acl", "list", "--principal", "User:alice"], "")?;
    assert_eq!(
        acls.stdout,
        "PRINCIPAL   RESOURCE  NAME  PATTERN  OPERATION  PERMISSION\n\
         User:alice  topic     *     literal  describe   allow\n",
        "{acls:?}"
    );
    let users = weir_as(admin, &["user", "list"], "")?;
    assert_eq!(
        users.stdout,
        "NAME   MECHANISM      ITERATIONS\n\
         admin  SCRAM-SHA-256  4096\n\
         alice  SCRAM-SHA-256  4096\n",
        "{users:?}"
    );
    let as_alice = weir_as(Some(("alice", ALICE_PASSWORD)), &["topic", "list"], "")?;
    assert!(as_alice.success, "{as_alice:?}");
    let wrong = weir_as(Some(("alice", "guessed-pw-1234")), &["topic", "list"], "")?;
    assert!(!wrong.success);
    assert!(wrong.stderr.contains("UNAUTHENTICATED"), "{wrong:?}");
    assert!(!wrong.stderr.contains("guessed-pw-1234"), "{wrong:?}");
    let denied = weir_as(
        Some(("alice", ALICE_PASSWORD)),
        &["topic", "create", "x"],
        "",
    )?;
    assert!(
        denied.stderr.contains("PERMISSION_DENIED")
            && denied.stderr.contains("CREATE on the cluster"),
        "{denied:?}"
    );

    // A new password: the old one stops working.
    let changed = weir_as(
        admin,
        &["user", "set-password", "alice"],
        "alice-pw-second-9\n",
    )?;
    assert!(changed.success, "{changed:?}");
    let old = weir_as(Some(("alice", ALICE_PASSWORD)), &["topic", "list"], "")?;
    assert!(old.stderr.contains("UNAUTHENTICATED"), "{old:?}");
    let deleted = weir_as(admin, &[&["acl", "delete"][..], &binding].concat(), "")?;
    assert_eq!(deleted.stdout, "deleted 1 ACL binding(s)\n", "{deleted:?}");
    let status = weir_as(admin, &["cluster", "status"], "")?;
    assert!(status.stdout.contains("AUTHORIZATION: on"), "{status:?}");

    // Restarted, the node reads users back from its controller state (and its snapshot).
    assert!(cluster.terminate(1)?, "node 1 did not stop cleanly");
    cluster.restart(1).await?;
    let after = weir_as(Some(("alice", "alice-pw-second-9")), &["topic", "list"], "")?;
    assert!(after.success, "{after:?}");

    let passwords = [
        ADMIN_PASSWORD,
        ALICE_PASSWORD,
        "alice-pw-second-9",
        "guessed-pw-1234",
    ];
    let log = cluster.log(1);
    assert!(
        log.contains("authentication failed"),
        "the failure was not audited"
    );
    for password in passwords {
        assert!(
            !log.contains(password),
            "the log holds the password {password:?}"
        );
        for file in files_under(cluster.data_dir(1))? {
            let bytes = std::fs::read(&file)?;
            assert!(
                !bytes
                    .windows(password.len())
                    .any(|w| w == password.as_bytes()),
                "{} holds the password {password:?}",
                file.display()
            );
        }
    }
    Ok(())
}

/// What a `weir` command printed, and whether it succeeded.
#[derive(Debug)]
struct Ran {
    success: bool,
    stdout: String,
    stderr: String,
}

fn run_with_stdin(mut command: std::process::Command, stdin: &str) -> anyhow::Result<Ran> {
    use std::io::Write;
    let mut child = command
        .env("RUST_LOG", "warn")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()?;
    child
        .stdin
        .take()
        .context("stdin is piped")?
        .write_all(stdin.as_bytes())?;
    let output = child.wait_with_output()?;
    Ok(Ran {
        success: output.status.success(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    })
}

fn files_under(dir: &Path) -> anyhow::Result<Vec<std::path::PathBuf>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            files.extend(files_under(&path)?);
        } else {
            files.push(path);
        }
    }
    Ok(files)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_open_beyond_loopback_says_so_in_cluster_status() -> anyhow::Result<()> {
    let broker = InProcessBroker::start_adjusted(|c| {
        c.listen = std::net::SocketAddr::from(([0, 0, 0, 0], 0));
    })
    .await?;
    let client = Client::connect(format!("127.0.0.1:{}", broker.addr().port())).await?;
    let cluster = client.describe_cluster().await?;
    let warnings = &cluster.nodes[0].warnings;
    assert_eq!(warnings.len(), 2, "{warnings:?}");
    assert!(warnings[0].contains("without TLS"), "{warnings:?}");
    assert!(
        warnings[1].contains("without authorization"),
        "{warnings:?}"
    );
    assert!(!cluster.authorization);
    let status = std::process::Command::new(crate::WEIR)
        .args([
            "--broker",
            &format!("127.0.0.1:{}", broker.addr().port()),
            "cluster",
            "status",
        ])
        .output()?;
    let stdout = String::from_utf8_lossy(&status.stdout);
    assert!(stdout.contains("AUTHORIZATION: off"), "{stdout}");
    assert!(
        stdout.contains("WARNING: node 1: listening on 0.0.0.0:"),
        "{stdout}"
    );
    Ok(())
}
