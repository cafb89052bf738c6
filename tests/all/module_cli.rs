//! `weir module`, `weir consume --module` and `weir produce` into a topic with a produce chain,
//! as a user runs them: the real `weir` binary against a real broker, with the example modules
//! of `wasm-modules/`.

use weir_tests::{InProcessBroker, modules};

use crate::cli::{stderr, stdout, weir, weir_fails};

/// Runs `weir` and fails the test unless it exits 0; returns its stdout.
fn weir_ok(broker: &InProcessBroker, args: &[&str], stdin: &str) -> anyhow::Result<String> {
    let output = weir(broker, args, stdin)?;
    anyhow::ensure!(
        output.status.success(),
        "weir {args:?} failed: {}",
        stderr(&output)
    );
    Ok(stdout(&output))
}

/// A broker with the topic `topic` (one partition) and the example module `module` registered
/// from its .wasm file.
async fn broker_with(topic: &str, module: &str) -> anyhow::Result<InProcessBroker> {
    let broker = InProcessBroker::start().await?;
    weir_ok(&broker, &["topic", "create", topic], "")?;
    let file = modules::path(module);
    let registered = weir_ok(
        &broker,
        &["module", "register", module, &file.to_string_lossy()],
        "",
    )?;
    anyhow::ensure!(
        registered.starts_with(&format!("Registered module {module} version 1 (sha256 ")),
        "{registered}"
    );
    Ok(broker)
}

fn order(id: Option<&str>, status: &str) -> String {
    match id {
        Some(id) => format!(r#"{{"id":"{id}","status":"{status}"}}"#),
        None => format!(r#"{{"status":"{status}"}}"#),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_commands_register_list_describe_attach_detach_and_delete() -> anyhow::Result<()> {
    let broker = broker_with("orders", "field-filter").await?;
    let wasm = modules::bytes("field-filter")?;
    let file = modules::path("field-filter");

    let second = weir_ok(
        &broker,
        &[
            "module",
            "register",
            "field-filter",
            &file.to_string_lossy(),
            "--version",
            "5",
        ],
        "",
    )?;
    assert_eq!(
        second,
        format!(
            "Registered module field-filter version 5 (sha256 {}, {} bytes).\n",
            weir_wasm::sha256_hex(&wasm),
            wasm.len()
        )
    );
    let again = weir_fails(
        &broker,
        &[
            "module",
            "register",
            "field-filter",
            &file.to_string_lossy(),
            "--version",
            "5",
        ],
        "",
    )?;
    assert!(again.contains("MODULE_EXISTS"), "{again}");

    let attached = weir_ok(
        &broker,
        &[
            "module",
            "attach",
            "orders",
            "field-filter@1",
            "--on",
            "consume",
            "--param",
            "field=status",
            "--param",
            "value=active",
        ],
        "",
    )?;
    assert_eq!(
        attached,
        "Attached field-filter@1 to the consume chain of orders.\n\
         Consume chain:\n\
         STAGE  MODULE          PARAMS\n\
         1      field-filter@1  field=status,value=active\n"
    );

    let listed = weir_ok(&broker, &["module", "list"], "")?;
    assert_eq!(
        listed,
        "NAME          LATEST  VERSIONS  ATTACHED\n\
         field-filter  5       1,5       orders (consume, v1)\n"
    );

    let described = weir_ok(&broker, &["module", "describe", "field-filter"], "")?;
    assert!(
        described.starts_with("MODULE: field-filter  LATEST: 5  VERSIONS: 2\n"),
        "{described}"
    );
    assert!(
        described.contains(&weir_wasm::sha256_hex(&wasm)),
        "{described}"
    );
    assert!(
        described.contains("orders  consume  1"),
        "the attachment is listed: {described}"
    );
    assert!(
        described.contains("(1 of 1 node(s) answered)"),
        "{described}"
    );

    let topic = weir_ok(&broker, &["topic", "describe", "orders"], "")?;
    assert!(
        topic.contains("Consume chain:\nSTAGE  MODULE          PARAMS\n1      field-filter@1"),
        "{topic}"
    );

    let in_use = weir_fails(
        &broker,
        &["module", "delete", "field-filter", "--version", "1"],
        "",
    )?;
    assert!(in_use.contains("MODULE_IN_USE"), "{in_use}");

    let detached = weir_ok(
        &broker,
        &[
            "module",
            "detach",
            "orders",
            "field-filter",
            "--on",
            "consume",
        ],
        "",
    )?;
    assert_eq!(
        detached,
        "Detached field-filter from the consume chain of orders.\n\
         The consume chain of orders is now empty.\n"
    );
    assert_eq!(
        weir_ok(
            &broker,
            &["module", "delete", "field-filter", "--version", "1"],
            ""
        )?,
        "Deleted version 1 of module field-filter.\n"
    );
    assert_eq!(
        weir_ok(&broker, &["module", "delete", "field-filter"], "")?,
        "Deleted module field-filter.\n"
    );
    assert_eq!(
        weir_ok(&broker, &["module", "list"], "")?,
        "NAME  LATEST  VERSIONS  ATTACHED\n"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consume_with_a_filter_prints_only_matches_and_moves_past_filtered_records()
-> anyhow::Result<()> {
    let broker = broker_with("orders", "field-filter").await?;
    // The first match comes after three records the filter drops, and the last records are
    // dropped too: a consumer that resumed at "last printed + 1" would never get past them.
    let lines = [
        order(Some("a"), "closed"),
        order(Some("b"), "closed"),
        order(Some("c"), "closed"),
        order(Some("d"), "active"),
        order(Some("e"), "closed"),
        order(Some("f"), "active"),
        order(Some("g"), "closed"),
    ];
    weir_ok(&broker, &["produce", "orders"], &(lines.join("\n") + "\n"))?;

    let first = weir_ok(
        &broker,
        &[
            "consume",
            "orders",
            "--from-beginning",
            "--max-messages",
            "1",
            "--timeout-ms",
            "10000",
            "--module",
            "field-filter:field=status,value=active",
            "--format",
            "%o %v\\n",
        ],
        "",
    )?;
    assert_eq!(first, format!("3 {}\n", lines[3]));

    let all = weir_ok(
        &broker,
        &[
            "consume",
            "orders",
            "--from-beginning",
            "--timeout-ms",
            "1500",
            "--module",
            "field-filter:field=status,value=active",
            "--format",
            "%o\\n",
        ],
        "",
    )?;
    assert_eq!(all, "3\n5\n");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consume_reports_the_records_a_module_rejects_on_stderr() -> anyhow::Result<()> {
    let broker = broker_with("orders", "json-validate").await?;
    let lines = [
        order(Some("a"), "active"),
        order(None, "active"),
        "not json".to_owned(),
        order(Some("d"), "closed"),
    ];
    weir_ok(&broker, &["produce", "orders"], &(lines.join("\n") + "\n"))?;
    let consumed = weir(
        &broker,
        &[
            "consume",
            "orders",
            "--from-beginning",
            "--timeout-ms",
            "1500",
            "--module",
            "json-validate@1:required=id",
            "--format",
            "%o\\n",
        ],
        "",
    )?;
    assert!(consumed.status.success(), "{}", stderr(&consumed));
    assert_eq!(stdout(&consumed), "0\n3\n");
    let reported: Vec<String> = stderr(&consumed)
        .lines()
        .map(|line| line.split(": ").next().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(
        reported,
        [
            "rejected offset 1 by json-validate@1",
            "rejected offset 2 by json-validate@1"
        ]
    );

    // The same as a group member, naming the partition; the rejected records are passed,
    // not read again by the next member.
    let in_group = |extra: &[&str]| {
        let mut args = vec![
            "consume",
            "orders",
            "--group",
            "validators",
            "--from-beginning",
            "--timeout-ms",
            "3000",
            "--module",
            "json-validate@1:required=id",
            "--format",
            "%o\\n",
        ];
        args.extend_from_slice(extra);
        weir(&broker, &args, "")
    };
    let consumed = in_group(&[])?;
    assert!(consumed.status.success(), "{}", stderr(&consumed));
    assert_eq!(stdout(&consumed), "0\n3\n");
    let reported: Vec<String> = stderr(&consumed)
        .lines()
        .map(|line| line.split(": ").next().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(
        reported,
        [
            "rejected partition 0 offset 1 by json-validate@1",
            "rejected partition 0 offset 2 by json-validate@1"
        ]
    );
    let again = in_group(&[])?;
    assert!(again.status.success(), "{}", stderr(&again));
    assert_eq!(
        (stdout(&again), stderr(&again)),
        (String::new(), String::new())
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn produce_reports_dropped_records_by_line_and_succeeds() -> anyhow::Result<()> {
    let broker = broker_with("orders", "json-validate").await?;
    let attached = weir_ok(
        &broker,
        &[
            "module",
            "attach",
            "orders",
            "json-validate",
            "--on",
            "produce",
            "--param",
            "required=id,status",
            "--on-reject",
            "drop",
        ],
        "",
    )?;
    assert!(
        attached.contains("1      json-validate@1  required=id,status  drop\n"),
        "{attached}"
    );
    let lines = [
        order(Some("a"), "active"),
        order(None, "active"),
        order(Some("c"), "active"),
        "not json".to_owned(),
    ];
    let produced = weir(&broker, &["produce", "orders"], &(lines.join("\n") + "\n"))?;
    assert!(produced.status.success(), "{}", stderr(&produced));
    let reported: Vec<String> = stderr(&produced)
        .lines()
        .map(|line| line.split(": ").next().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(
        reported,
        [
            "record 2 rejected by json-validate@1 (dropped)",
            "record 4 rejected by json-validate@1 (dropped)"
        ]
    );
    let consumed = weir_ok(
        &broker,
        &[
            "consume",
            "orders",
            "--from-beginning",
            "--timeout-ms",
            "1000",
        ],
        "",
    )?;
    assert_eq!(consumed, format!("{}\n{}\n", lines[0], lines[2]));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn produce_refused_by_the_chain_lists_the_lines_and_fails() -> anyhow::Result<()> {
    let broker = broker_with("orders", "json-validate").await?;
    weir_ok(
        &broker,
        &[
            "module",
            "attach",
            "orders",
            "json-validate",
            "--on",
            "produce",
            "--param",
            "required=id",
        ],
        "",
    )?;
    let lines = [
        order(Some("a"), "active"),
        order(None, "active"),
        order(Some("c"), "active"),
        order(None, "closed"),
    ];
    let produced = weir(&broker, &["produce", "orders"], &(lines.join("\n") + "\n"))?;
    assert!(
        !produced.status.success(),
        "a refused request fails the run"
    );
    let err = stderr(&produced);
    let mut err_lines = err.lines();
    assert!(
        err_lines
            .next()
            .is_some_and(|l| l.starts_with("record 2 rejected by json-validate@1: ")),
        "{err}"
    );
    assert!(
        err_lines
            .next()
            .is_some_and(|l| l.starts_with("record 4 rejected by json-validate@1: ")),
        "{err}"
    );
    assert_eq!(
        err_lines.next(),
        Some(
            "error: lines 1-4 not acknowledged: the topic's produce chain rejected lines 2, 4 \
             (RECORD_REJECTED; nothing of that request was stored)"
        ),
        "{err}"
    );
    let topic = weir_ok(&broker, &["topic", "describe", "orders"], "")?;
    assert!(
        topic.contains("Produce chain:\nSTAGE  MODULE           PARAMS       ON-REJECT\n"),
        "{topic}"
    );
    let consumed = weir_ok(
        &broker,
        &[
            "consume",
            "orders",
            "--from-beginning",
            "--timeout-ms",
            "500",
        ],
        "",
    )?;
    assert_eq!(consumed, "", "nothing of the refused request was stored");
    Ok(())
}
