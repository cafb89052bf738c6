//! The `weir` command line as a user runs it: a real process against a real broker.

use std::io::Write;
use std::process::{Command, Output, Stdio};

use weir_tests::InProcessBroker;

/// Runs the `weir` binary against `broker` with `args`, feeding it `stdin`.
pub(crate) fn weir(broker: &InProcessBroker, args: &[&str], stdin: &str) -> anyhow::Result<Output> {
    let mut child = Command::new(crate::WEIR)
        .arg("--broker")
        .arg(broker.addr().to_string())
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    child
        .stdin
        .take()
        .ok_or_else(|| anyhow::anyhow!("no stdin"))?
        .write_all(stdin.as_bytes())?;
    Ok(child.wait_with_output()?)
}

/// Runs `weir` with `args`, expecting it to fail; returns what it printed on stderr.
pub(crate) fn weir_fails(
    broker: &InProcessBroker,
    args: &[&str],
    stdin: &str,
) -> anyhow::Result<String> {
    let output = weir(broker, args, stdin)?;
    anyhow::ensure!(
        !output.status.success(),
        "weir {args:?} succeeded: {}",
        stdout(&output)
    );
    Ok(stderr(&output))
}

pub(crate) fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

pub(crate) fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn produce_then_consume_from_the_beginning_prints_exactly_the_lines() -> anyhow::Result<()> {
    let broker = InProcessBroker::start().await?;
    let created = weir(
        &broker,
        &["topic", "create", "lines", "--partitions", "1"],
        "",
    )?;
    assert!(created.status.success(), "{}", stderr(&created));

    let lines: Vec<String> = (0..1000).map(|i| format!("line number {i}")).collect();
    let input = lines.join("\n") + "\n";
    let produced = weir(&broker, &["produce", "lines"], &input)?;
    assert!(produced.status.success(), "{}", stderr(&produced));

    // Every line was acknowledged before `weir produce` exited: the log holds all of them.
    let mut client = broker.raw_client().await?;
    let hw = client
        .list_offsets(weir_proto::v1::ListOffsetsRequest {
            topic: "lines".into(),
            partition: 0,
            spec: Some(weir_proto::v1::list_offsets_request::Spec::Latest(true)),
        })
        .await?
        .into_inner()
        .offset;
    assert_eq!(hw, Some(1000));

    let consumed = weir(
        &broker,
        &[
            "consume",
            "lines",
            "--from-beginning",
            "--max-messages",
            "1000",
        ],
        "",
    )?;
    assert!(consumed.status.success(), "{}", stderr(&consumed));
    assert_eq!(stdout(&consumed), input);

    let some = weir(
        &broker,
        &[
            "consume",
            "lines",
            "--offset",
            "998",
            "--max-messages",
            "2",
            "--format",
            "%o:%v\\n",
        ],
        "",
    )?;
    assert_eq!(stdout(&some), "998:line number 998\n999:line number 999\n");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_split_at_the_separator_and_errors_are_one_clear_line() -> anyhow::Result<()> {
    let broker = InProcessBroker::start().await?;
    assert!(
        weir(&broker, &["topic", "create", "kv", "--partitions", "1"], "")?
            .status
            .success()
    );
    let produced = weir(
        &broker,
        &["produce", "kv", "--key-separator", ":"],
        "a:1\nb:2\n",
    )?;
    assert!(produced.status.success(), "{}", stderr(&produced));
    let consumed = weir(
        &broker,
        &[
            "consume",
            "kv",
            "--from-beginning",
            "--max-messages",
            "2",
            "--format",
            "%k=%v\\n",
        ],
        "",
    )?;
    assert_eq!(stdout(&consumed), "a=1\nb=2\n");

    let err = weir_fails(&broker, &["produce", "nope"], "x\n")?;
    assert!(err.contains("UNKNOWN_TOPIC"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");

    let no_separator = weir_fails(
        &broker,
        &["produce", "kv", "--key-separator", ":"],
        "fine:1\nbroken\n",
    )?;
    assert!(no_separator.contains("line 2"), "{no_separator}");

    let exists = weir_fails(&broker, &["topic", "create", "kv"], "")?;
    assert!(exists.contains("TOPIC_ALREADY_EXISTS"), "{exists}");
    Ok(())
}

/// `%p:%o:%v` lines printed by `weir consume`, as (partition, offset, value).
fn printed_records(output: &Output) -> Vec<(u32, u64, String)> {
    stdout(output)
        .lines()
        .map(|line| {
            let mut parts = line.splitn(3, ':');
            let partition = parts.next().and_then(|p| p.parse().ok());
            let offset = parts.next().and_then(|o| o.parse().ok());
            match (partition, offset, parts.next()) {
                (Some(p), Some(o), Some(v)) => (p, o, v.to_owned()),
                _ => panic!("not a %p:%o:%v line: {line:?}"),
            }
        })
        .collect()
}

/// The group's committed offset per partition of `topic`, 0 where nothing is committed.
async fn committed(client: &weir_client::Client, group: &str, partitions: u32) -> Vec<u64> {
    let committed = client
        .committed_offsets(group, &[])
        .await
        .expect("committed offsets");
    (0..partitions)
        .map(|p| {
            committed
                .iter()
                .find(|c| c.partition.partition == p)
                .map_or(0, |c| c.offset)
        })
        .collect()
}

/// Rows of `weir group describe` for `topic`: partition, committed, high watermark, lag.
fn described_rows(output: &Output, topic: &str) -> Vec<[String; 4]> {
    stdout(output)
        .lines()
        .filter(|line| line.split_whitespace().next() == Some(topic))
        .map(|line| {
            let cells: Vec<&str> = line.split_whitespace().collect();
            [cells[1], cells[2], cells[3], cells[4]].map(str::to_owned)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consume_in_a_group_commits_what_it_printed_and_weir_group_shows_and_moves_it()
-> anyhow::Result<()> {
    let broker = InProcessBroker::start().await?;
    let client = weir_client::Client::connect(broker.url()).await?;
    client
        .create_topic(weir_client::TopicSpec::new("orders", 2))
        .await?;
    for (partition, values) in [(0, vec!["a0", "a1", "a2"]), (1, vec!["b0", "b1"])] {
        let records = values
            .into_iter()
            .map(weir_client::ProducerRecord::new)
            .collect();
        client
            .produce("orders", Some(partition), records, weir_client::Acks::All)
            .await?;
    }
    let consume = |extra: &[&str]| {
        let mut args = vec![
            "consume",
            "orders",
            "--group",
            "console",
            "--from-beginning",
            "--format",
            "%p:%o:%v\\n",
        ];
        args.extend_from_slice(extra);
        weir(&broker, &args, "")
    };

    // Three of the five records; on exit exactly the printed ones are committed (records
    // fetched but cut by --max-messages are not).
    let first = consume(&["--max-messages", "3"])?;
    assert!(first.status.success(), "{}", stderr(&first));
    let first = printed_records(&first);
    assert_eq!(first.len(), 3, "{first:?}");
    let printed_per_partition: Vec<u64> = (0..2)
        .map(|p| first.iter().filter(|r| r.0 == p).count() as u64)
        .collect();
    assert_eq!(
        committed(&client, "console", 2).await,
        printed_per_partition
    );

    // The next run prints exactly the other two, then stops when idle.
    let second = consume(&["--timeout-ms", "3000"])?;
    assert!(second.status.success(), "{}", stderr(&second));
    let mut all = first.clone();
    all.extend(printed_records(&second));
    all.sort();
    assert_eq!(
        all,
        vec![
            (0, 0, "a0".into()),
            (0, 1, "a1".into()),
            (0, 2, "a2".into()),
            (1, 0, "b0".into()),
            (1, 1, "b1".into()),
        ],
        "every record printed once across the two runs"
    );
    assert_eq!(committed(&client, "console", 2).await, vec![3, 2]);

    let listed = weir(&broker, &["group", "list"], "")?;
    assert!(listed.status.success(), "{}", stderr(&listed));
    assert!(
        stdout(&listed)
            .lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>() == ["console", "empty", "0"]),
        "{}",
        stdout(&listed)
    );
    let described = weir(&broker, &["group", "describe", "console"], "")?;
    assert!(described.status.success(), "{}", stderr(&described));
    assert_eq!(
        described_rows(&described, "orders"),
        [["0", "3", "3", "0"], ["1", "2", "2", "0"]].map(|row| row.map(str::to_owned)),
        "{}",
        stdout(&described)
    );

    // A reset is a dry run until --execute.
    let dry = weir(
        &broker,
        &[
            "group",
            "reset-offsets",
            "console",
            "--topic",
            "orders",
            "--to-earliest",
        ],
        "",
    )?;
    assert!(dry.status.success(), "{}", stderr(&dry));
    assert!(stderr(&dry).contains("dry run"), "{}", stderr(&dry));
    assert_eq!(committed(&client, "console", 2).await, vec![3, 2]);
    let executed = weir(
        &broker,
        &[
            "group",
            "reset-offsets",
            "console",
            "--topic",
            "orders",
            "--partition",
            "0",
            "--shift-by",
            "-2",
            "--execute",
        ],
        "",
    )?;
    assert!(executed.status.success(), "{}", stderr(&executed));
    assert_eq!(committed(&client, "console", 2).await, vec![1, 2]);
    let again = consume(&["--max-messages", "2"])?;
    assert_eq!(
        printed_records(&again),
        vec![(0, 1, "a1".into()), (0, 2, "a2".into())]
    );

    // Bad input: one clear line naming what was wrong, nothing changed.
    let unknown = weir_fails(&broker, &["group", "describe", "nobody"], "")?;
    assert!(unknown.contains("UNKNOWN_GROUP"), "{unknown}");
    let bad_name = weir_fails(
        &broker,
        &[
            "consume",
            "orders",
            "--group",
            "no/slash",
            "--max-messages",
            "1",
        ],
        "",
    )?;
    assert!(bad_name.contains("INVALID_GROUP_NAME"), "{bad_name}");
    let past_end = weir_fails(
        &broker,
        &[
            "group",
            "reset-offsets",
            "console",
            "--topic",
            "orders",
            "--to-offset",
            "9",
            "--execute",
        ],
        "",
    )?;
    assert!(past_end.contains("OFFSET_OUT_OF_RANGE"), "{past_end}");
    assert_eq!(committed(&client, "console", 2).await, vec![3, 2]);

    let deleted = weir(&broker, &["group", "delete", "console"], "")?;
    assert!(deleted.status.success(), "{}", stderr(&deleted));
    let listed = weir(&broker, &["group", "list"], "")?;
    assert!(!stdout(&listed).contains("console"), "{}", stdout(&listed));
    Ok(())
}

/// Creates `topic` with `partitions` partitions through `weir topic create`.
fn create_topic(broker: &InProcessBroker, topic: &str, partitions: u32) -> anyhow::Result<()> {
    let created = weir(
        broker,
        &[
            "topic",
            "create",
            topic,
            "--partitions",
            &partitions.to_string(),
        ],
        "",
    )?;
    anyhow::ensure!(created.status.success(), "{}", stderr(&created));
    Ok(())
}

/// Runs `weir consume` with `args`, expecting it to exit 0.
fn consume_ok(broker: &InProcessBroker, args: &[&str]) -> anyhow::Result<Output> {
    let mut all = vec!["consume"];
    all.extend_from_slice(args);
    let consumed = weir(broker, &all, "")?;
    anyhow::ensure!(
        consumed.status.success(),
        "weir {all:?} failed: {}",
        stderr(&consumed)
    );
    Ok(consumed)
}

/// Whether the records of each partition were printed in offset order.
fn in_offset_order_per_partition(records: &[(u32, u64, String)]) -> bool {
    let mut last: std::collections::BTreeMap<u32, u64> = std::collections::BTreeMap::new();
    records.iter().all(|(partition, offset, _)| {
        last.insert(*partition, *offset)
            .is_none_or(|previous| previous < *offset)
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consume_without_partition_prints_the_lines_of_every_partition() -> anyhow::Result<()> {
    let broker = InProcessBroker::start().await?;
    create_topic(&broker, "three", 3)?;
    // `seq 1 30 | weir produce three`, with batches of 10 so that the sticky partitioner puts
    // 10 lines in each partition, whichever it starts at (with the default batch all 30 land in
    // one random partition, which is partition 0 one time in three).
    let input: String = (1..=30).map(|i| format!("{i}\n")).collect();
    let produced = weir(&broker, &["produce", "three", "--batch-size", "10"], &input)?;
    assert!(produced.status.success(), "{}", stderr(&produced));

    // --timeout-ms only bounds a consumer that misses records; --max-messages ends this one.
    let consumed = consume_ok(
        &broker,
        &[
            "three",
            "--from-beginning",
            "--max-messages",
            "30",
            "--timeout-ms",
            "10000",
        ],
    )?;
    let mut values: Vec<u32> = stdout(&consumed)
        .lines()
        .map(str::parse)
        .collect::<Result<_, _>>()?;
    values.sort_unstable();
    assert_eq!(
        values,
        (1..=30).collect::<Vec<_>>(),
        "{}",
        stdout(&consumed)
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consume_without_partition_reads_records_that_are_only_in_partitions_1_and_2()
-> anyhow::Result<()> {
    let broker = InProcessBroker::start().await?;
    create_topic(&broker, "later", 3)?;
    for (partition, input) in [("1", "b0\nb1\nb2\nb3\nb4\n"), ("2", "c0\nc1\nc2\n")] {
        let produced = weir(
            &broker,
            &["produce", "later", "--partition", partition],
            input,
        )?;
        assert!(produced.status.success(), "{}", stderr(&produced));
    }
    let expected: Vec<(u32, u64, String)> = [(1, 5, "b"), (2, 3, "c")]
        .into_iter()
        .flat_map(|(partition, count, prefix)| {
            (0..count).map(move |offset| (partition, offset, format!("{prefix}{offset}")))
        })
        .collect();
    let format = ["--format", "%p:%o:%v\\n"];

    // --max-messages counts records of every partition.
    let all = consume_ok(
        &broker,
        &[
            &["later", "--from-beginning", "--max-messages", "8"][..],
            &["--timeout-ms", "10000"],
            &format,
        ]
        .concat(),
    )?;
    let mut printed = printed_records(&all);
    assert!(in_offset_order_per_partition(&printed), "{printed:?}");
    printed.sort();
    assert_eq!(printed, expected);

    let three = consume_ok(
        &broker,
        &[
            &["later", "--from-beginning", "--max-messages", "3"][..],
            &format,
        ]
        .concat(),
    )?;
    let three = printed_records(&three);
    assert_eq!(three.len(), 3, "{three:?}");
    assert!(three.iter().all(|r| expected.contains(r)), "{three:?}");

    // Without --max-messages, the consumer exits 0 once every partition stays idle.
    let idle = consume_ok(
        &broker,
        &[
            &["later", "--from-beginning", "--timeout-ms", "5000"][..],
            &format,
        ]
        .concat(),
    )?;
    let mut printed = printed_records(&idle);
    printed.sort();
    assert_eq!(printed, expected);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consume_offset_without_partition_starts_every_partition_there() -> anyhow::Result<()> {
    let broker = InProcessBroker::start().await?;
    create_topic(&broker, "per-partition", 3)?;
    for (partition, input) in [("1", "b0\nb1\nb2\nb3\nb4\n"), ("2", "c0\nc1\nc2\n")] {
        let produced = weir(
            &broker,
            &["produce", "per-partition", "--partition", partition],
            input,
        )?;
        assert!(produced.status.success(), "{}", stderr(&produced));
    }
    let from = |offset: &str| -> anyhow::Result<Vec<(u32, u64, String)>> {
        let consumed = consume_ok(
            &broker,
            &[
                "per-partition",
                "--offset",
                offset,
                "--timeout-ms",
                "1500",
                "--format",
                "%p:%o:%v\\n",
            ],
        )?;
        let mut printed = printed_records(&consumed);
        printed.sort();
        Ok(printed)
    };
    assert_eq!(
        from("2")?,
        [(1, 2, "b2"), (1, 3, "b3"), (1, 4, "b4"), (2, 2, "c2")].map(|(p, o, v)| (
            p,
            o,
            v.to_owned()
        ))
    );
    // Partition 2 holds no offset 4 yet, partition 0 nothing at all: both are tailed from
    // their end, so only partition 1 prints.
    assert_eq!(from("4")?, [(1, 4, "b4".to_owned())]);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topic_configs_are_set_altered_and_shown_with_their_source() -> anyhow::Result<()> {
    let broker = InProcessBroker::start().await?;
    let created = weir(
        &broker,
        &[
            "topic",
            "create",
            "conf",
            "--config",
            "max.message.bytes=1000",
        ],
        "",
    )?;
    assert!(created.status.success(), "{}", stderr(&created));
    let described = weir(&broker, &["topic", "describe", "conf"], "")?;
    let text = stdout(&described);
    assert!(
        text.contains("CONFIG: max.message.bytes=1000 (topic)"),
        "{text}"
    );
    assert!(text.contains("CONFIG: retention.ms=-1 (default)"), "{text}");

    let altered = weir(
        &broker,
        &[
            "topic",
            "alter-config",
            "conf",
            "--set",
            "message.timestamp.type=LogAppendTime",
            "--delete",
            "max.message.bytes",
        ],
        "",
    )?;
    let text = stdout(&altered);
    assert!(altered.status.success(), "{}", stderr(&altered));
    assert!(
        text.contains("CONFIG: message.timestamp.type=LogAppendTime (topic)"),
        "{text}"
    );
    assert!(
        text.contains("CONFIG: max.message.bytes=8388608 (default)"),
        "{text}"
    );

    let refused = weir_fails(
        &broker,
        &["topic", "alter-config", "conf", "--set", "retention.ms=-5"],
        "",
    )?;
    assert!(
        refused.contains("INVALID_CONFIG") || refused.contains("retention.ms"),
        "{refused}"
    );
    assert!(refused.contains("retention.ms"), "{refused}");
    let nothing = weir_fails(&broker, &["topic", "alter-config", "conf"], "")?;
    assert!(nothing.contains("nothing to change"), "{nothing}");
    let malformed = weir_fails(
        &broker,
        &["topic", "create", "bad", "--config", "max.message.bytes"],
        "",
    )?;
    assert!(malformed.contains("no '='"), "{malformed}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topic_trim_deletes_the_records_below_an_offset() -> anyhow::Result<()> {
    let broker = InProcessBroker::start().await?;
    let created = weir(&broker, &["topic", "create", "trimmed"], "")?;
    assert!(created.status.success(), "{}", stderr(&created));
    let produced = weir(&broker, &["produce", "trimmed"], "a\nb\nc\nd\n")?;
    assert!(produced.status.success(), "{}", stderr(&produced));

    let trimmed = weir(
        &broker,
        &[
            "topic",
            "trim",
            "trimmed",
            "--partition",
            "0",
            "--before",
            "2",
        ],
        "",
    )?;
    assert!(trimmed.status.success(), "{}", stderr(&trimmed));
    assert_eq!(stdout(&trimmed), "trimmed/0 now starts at offset 2.\n");
    let consumed = weir(
        &broker,
        &[
            "consume",
            "trimmed",
            "--from-beginning",
            "--max-messages",
            "2",
            "--format",
            "%o:%v\\n",
        ],
        "",
    )?;
    assert!(consumed.status.success(), "{}", stderr(&consumed));
    assert_eq!(stdout(&consumed), "2:c\n3:d\n");

    let past = weir_fails(
        &broker,
        &[
            "topic",
            "trim",
            "trimmed",
            "--partition",
            "0",
            "--before",
            "9",
        ],
        "",
    )?;
    assert!(
        past.contains("OFFSET_OUT_OF_RANGE") || past.contains("out of range"),
        "{past}"
    );
    Ok(())
}

/// `weir bench consume` reads back exactly what `weir bench produce` wrote, in both formats,
/// with one fetch running ahead per partition and answers much smaller than a partition, so that
/// each partition takes a dozen fetches, each sent at the offset the one before said to continue
/// from before that answer was counted; and with weir-client's `Consumer`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_consume_reads_every_record_once_with_a_fetch_running_ahead() -> anyhow::Result<()> {
    let broker = InProcessBroker::start().await?;
    let produce = [
        "bench",
        "produce",
        "--topic",
        "ahead",
        "--records",
        "3000",
        "--record-size",
        "200",
        "--batch-size",
        "50",
        "--partitions",
        "3",
        "--probe-mib",
        "0",
    ];
    let produced = weir(&broker, &produce, "")?;
    anyhow::ensure!(produced.status.success(), "{}", stderr(&produced));
    // 16 KiB answers: about 75 records of 200 B, so ~13 fetches per partition of 1 000.
    let consume = [
        "bench",
        "consume",
        "--topic",
        "ahead",
        "--max-bytes",
        "16384",
        "--format",
        "records,batches,consumer",
    ];
    let output = weir(&broker, &consume, "")?;
    let printed = stdout(&output);
    assert!(output.status.success(), "{printed}\n{}", stderr(&output));
    let reads: Vec<&str> = printed
        .lines()
        .filter(|l| l.starts_with("consume from"))
        .collect();
    assert_eq!(reads.len(), 3, "one read per reader in:\n{printed}");
    assert!(
        printed.contains("as consumer: weir-client's Consumer"),
        "{printed}"
    );
    for read in reads {
        // Every record once: 3 000 of them, 200 B values (600 000 B of payload).
        assert!(
            read.contains("(3000 records, 0.6 MB in"),
            "not every record once: {read}"
        );
    }
    Ok(())
}

/// `weir bench produce --producer` counts every record of every partition as acknowledged
/// (its collector waits on each partition's deliveries in order), and the broker holds them all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_produce_through_the_producer_counts_every_record_of_every_partition()
-> anyhow::Result<()> {
    let broker = InProcessBroker::start().await?;
    let produce = [
        "bench",
        "produce",
        "--topic",
        "through",
        "--records",
        "3000",
        "--record-size",
        "200",
        "--batch-size",
        "50",
        "--partitions",
        "3",
        "--producer",
        "idempotent,plain",
        "--probe-mib",
        "0",
    ];
    let output = weir(&broker, &produce, "")?;
    let printed = stdout(&output);
    assert!(output.status.success(), "{printed}\n{}", stderr(&output));
    let runs: Vec<&str> = printed
        .lines()
        .filter(|l| l.trim_start().starts_with("throughput:"))
        .collect();
    assert_eq!(runs.len(), 2, "one run per producer in:\n{printed}");
    for run in runs {
        assert!(run.contains("(3000 records, 0.6 MB in"), "{run}");
    }
    // The last run's topic is kept (each earlier one is deleted once measured).
    let client = weir_client::Client::connect(broker.url()).await?;
    let info = client.describe_topic("through-2").await?;
    let stored: Vec<u64> = info.partitions.iter().map(|p| p.high_watermark).collect();
    assert_eq!(stored.iter().sum::<u64>(), 3000, "{stored:?}");
    assert!(
        stored.iter().all(|&n| n > 0),
        "every partition takes batches in turn: {stored:?}"
    );
    Ok(())
}

/// `weir bench produce --rate` (open loop, paced by a thread of its own) sends every record
/// once, through its own requests and through the `Producer`, and reports the offered load.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_produce_open_loop_sends_every_record_once() -> anyhow::Result<()> {
    let broker = InProcessBroker::start().await?;
    for (topic, sender) in [("paced-a", "--encoding"), ("paced-b", "--producer")] {
        let kind = if sender == "--encoding" {
            "batch"
        } else {
            "plain"
        };
        let produce = [
            "bench",
            "produce",
            "--topic",
            topic,
            "--records",
            "1000",
            "--record-size",
            "100",
            "--batch-size",
            "100",
            "--rate",
            "20000",
            "--concurrency",
            "16",
            sender,
            kind,
            "--probe-mib",
            "0",
        ];
        let output = weir(&broker, &produce, "")?;
        let printed = stdout(&output);
        assert!(output.status.success(), "{printed}\n{}", stderr(&output));
        assert!(
            printed.contains("open loop at 20000 records/s"),
            "{printed}"
        );
        assert!(printed.contains("(1000 records, 0.1 MB in"), "{printed}");
    }
    let client = weir_client::Client::connect(broker.url()).await?;
    for topic in ["paced-a", "paced-b"] {
        let info = client.describe_topic(topic).await?;
        let stored: u64 = info.partitions.iter().map(|p| p.high_watermark).sum();
        assert_eq!(stored, 1000, "{topic}");
    }
    Ok(())
}

/// `weir bench failover` runs its own three nodes, kills the partition leader twice, reports
/// how long writes took to resume each time, and finds every acknowledged record stored once.
#[test]
fn bench_failover_kills_the_leader_and_finds_every_record_stored_once() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let output = Command::new(crate::WEIR)
        .args([
            "bench",
            "failover",
            "--kills",
            "2",
            "--rate",
            "500",
            "--record-size",
            "100",
            "--settle-secs",
            "0",
            "--heartbeat-ms",
            "50",
            "--election-min-ms",
            "300",
            "--election-max-ms",
            "600",
        ])
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .output()?;
    let printed = stdout(&output);
    assert!(output.status.success(), "{printed}\n{}", stderr(&output));
    for kill in [
        "kill 1: node",
        "kill 2: node",
        "writes resume after a leader SIGKILL",
    ] {
        assert!(printed.contains(kill), "no '{kill}' in:\n{printed}");
    }
    let counts = printed
        .lines()
        .find_map(|l| l.trim().strip_prefix("records: "))
        .ok_or_else(|| anyhow::anyhow!("no record counts in:\n{printed}"))?;
    let numbers: Vec<u64> = counts
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|n| n.parse().ok())
        .collect();
    let [acknowledged, failed, stored] = numbers[..] else {
        anyhow::bail!("unexpected counts: {counts}");
    };
    assert!(acknowledged > 0, "{counts}");
    assert_eq!((failed, stored), (0, acknowledged), "{counts}");
    // The nodes' directory under the current one is removed afterwards.
    assert_eq!(std::fs::read_dir(dir.path())?.count(), 0);
    Ok(())
}

/// `weir bench idle` runs its own three nodes with a topic of six partitions, reports each
/// node's CPU and their total over its sample, restarts every node, and reports how long until
/// they listen and every partition is led again.
#[test]
fn bench_idle_reports_the_cpu_of_every_node_and_the_restart_time() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let output = Command::new(crate::WEIR)
        .args([
            "bench",
            "idle",
            "--nodes",
            "3",
            "--partitions",
            "6",
            "--settle-secs",
            "1",
            "--sample-secs",
            "1",
            "--heartbeat-ms",
            "50",
            "--election-min-ms",
            "300",
            "--election-max-ms",
            "600",
        ])
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .output()?;
    let printed = stdout(&output);
    assert!(output.status.success(), "{printed}\n{}", stderr(&output));
    assert!(
        printed.starts_with("idle: 3 nodes, 6 partitions × 3 replicas, heartbeat 50 ms"),
        "{printed}"
    );

    let cpu = printed
        .lines()
        .find_map(|l| l.strip_prefix("idle CPU over "))
        .ok_or_else(|| anyhow::anyhow!("no CPU figures in:\n{printed}"))?;
    let (_, figures) = cpu
        .split_once(": ")
        .ok_or_else(|| anyhow::anyhow!("unexpected CPU figures: {cpu}"))?;
    let (mut nodes, mut total) = (Vec::new(), None);
    for figure in figures.split(", ") {
        if let Some(node) = figure.strip_prefix("node ") {
            let (id, percent) = node
                .split_once(' ')
                .ok_or_else(|| anyhow::anyhow!("unexpected node figure: {figure}"))?;
            nodes.push((
                id.parse::<u64>()?,
                percent.trim_end_matches('%').parse::<f64>()?,
            ));
        } else if let Some(all) = figure.strip_prefix("total ") {
            total = Some(all.trim_end_matches("% of a core").parse::<f64>()?);
        }
    }
    let ids: Vec<u64> = nodes.iter().map(|&(id, _)| id).collect();
    assert_eq!(ids, [1, 2, 3], "{cpu}");
    let total = total.ok_or_else(|| anyhow::anyhow!("no total in: {cpu}"))?;
    let sum: f64 = nodes.iter().map(|&(_, percent)| percent).sum();
    // Heartbeats every 50 ms to two followers of six partitions cost something.
    assert!(total > 0.0, "{cpu}");
    // Four figures rounded to 0.1: the total and the sum of the nodes' differ by at most 0.2.
    assert!(
        (total - sum).abs() <= 0.2 + 1e-9,
        "the total is not the nodes' sum: {cpu}"
    );

    assert!(
        printed.contains("stop on SIGTERM: every node exited after "),
        "{printed}"
    );
    let restart = printed
        .lines()
        .find_map(|l| l.strip_prefix("restart to serving: listening after "))
        .ok_or_else(|| anyhow::anyhow!("no restart time in:\n{printed}"))?;
    let seconds: Vec<f64> = restart
        .split(" s")
        .filter_map(|part| part.rsplit(' ').next()?.parse().ok())
        .collect();
    let [listening, led] = seconds[..] else {
        anyhow::bail!("unexpected restart times: {restart}");
    };
    assert!(restart.contains("every partition led after"), "{restart}");
    assert!(0.0 < listening && listening <= led, "{restart}");
    // The nodes' directory under the current one is removed afterwards.
    assert_eq!(std::fs::read_dir(dir.path())?.count(), 0);
    Ok(())
}
