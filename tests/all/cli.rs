//! The `weir` command line as a user runs it: a real process against a real broker.

use std::io::Write;
use std::process::{Command, Output, Stdio};

use weir_tests::InProcessBroker;

fn weir(broker: &InProcessBroker, args: &[&str], stdin: &str) -> anyhow::Result<Output> {
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

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
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

    let missing = weir(&broker, &["produce", "nope"], "x\n")?;
    assert!(!missing.status.success());
    let err = stderr(&missing);
    assert!(err.contains("UNKNOWN_TOPIC"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");

    let no_separator = weir(
        &broker,
        &["produce", "kv", "--key-separator", ":"],
        "fine:1\nbroken\n",
    )?;
    assert!(!no_separator.status.success());
    assert!(
        stderr(&no_separator).contains("line 2"),
        "{}",
        stderr(&no_separator)
    );

    let exists = weir(&broker, &["topic", "create", "kv"], "")?;
    assert!(!exists.status.success());
    assert!(
        stderr(&exists).contains("TOPIC_ALREADY_EXISTS"),
        "{}",
        stderr(&exists)
    );
    Ok(())
}
