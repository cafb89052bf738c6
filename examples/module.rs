//! WebAssembly modules on a topic: validate records on the way in, redact and filter them on
//! the way out.
//!
//! Shows: registering compiled modules (three of the examples in `wasm-modules/`); attaching
//! `json-validate` to a topic's produce chain, so that a request holding bad records is refused
//! with each record's index and the module's reason, and nothing of it is stored; attaching
//! `redact` to the topic's consume chain, so that consumers see card numbers and e-mail
//! addresses masked; and a consumer naming its own chain (`field-filter`, then `redact`) in
//! `ConsumerConfig::modules`, which replaces the topic's chain for that consumer.
//!
//! Build the modules for `wasm32-unknown-unknown` (the target is installed by
//! `rust-toolchain.toml`; otherwise `rustup target add wasm32-unknown-unknown`), then run the
//! example, both from the workspace root:
//!
//! ```sh
//! cargo build --release --target wasm32-unknown-unknown -p json-validate -p redact -p field-filter
//! cargo run -p weir-examples --example module
//! ```
//!
//! The modules are read from `target/wasm32-unknown-unknown/release/` (`json_validate.wasm`,
//! `redact.wasm`, `field_filter.wasm`), or from the directory given as the first argument or in
//! `WEIR_MODULES_DIR` (e.g. `target/wasm-modules/wasm32-unknown-unknown/release`, where the
//! integration tests build them). With `WEIR_BROKER=HOST:PORT` the example uses that broker;
//! otherwise it starts one of its own in a temporary directory.

mod broker;

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use tokio::time::Instant;
use weir_client::{
    Acks, Client, Consumer, ConsumerConfig, ConsumerRecord, ModulePath, ModuleRef, ModuleStats,
    OffsetReset, OffsetSpec, ProducerRecord, RejectPolicy, TopicPartition, TopicSpec,
};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let modules_dir = match std::env::args_os().nth(1) {
        Some(dir) => PathBuf::from(dir),
        None => std::env::var_os("WEIR_MODULES_DIR").map_or_else(
            || {
                PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                    .join("../target/wasm32-unknown-unknown/release")
            },
            PathBuf::from,
        ),
    };
    // Read the modules first, so that a missing build fails before anything starts.
    let validate_wasm = read_module(&modules_dir, "json-validate")?;
    let redact_wasm = read_module(&modules_dir, "redact")?;
    let field_filter_wasm = read_module(&modules_dir, "field-filter")?;

    // The embedded broker, if any, lives until the end of `main`.
    let (address, embedded) = broker::from_env().await?;
    let client = Client::connect(address.as_str()).await?;
    let topic = format!("payments-{}", std::process::id());
    client
        .create_topic(TopicSpec::new(topic.as_str(), 1))
        .await?;

    // Register each module; the broker validates and compiles it first. Attachments below pin
    // the version registered here, so the example never runs someone else's version.
    let validate = register(&client, "json-validate", validate_wasm).await?;
    let redact = register(&client, "redact", redact_wasm).await?;
    let field_filter = register(&client, "field-filter", field_filter_wasm).await?;
    let registered = [validate.clone(), redact.clone(), field_filter.clone()];

    // Produce path: every record must be a JSON object with these fields and types. The
    // parameter values contain commas, so they are given with `with_param`, not parsed from
    // `NAME:KEY=VALUE,...` text.
    let validate = validate
        .with_param("required", "id,amount,status")
        .with_param("types", "id:string,amount:number");
    client
        .attach_module(
            topic.as_str(),
            validate.clone(),
            ModulePath::Produce,
            RejectPolicy::Reject,
        )
        .await?;
    println!(
        "\nattached {} ({}) to the produce chain of {topic}; a rejection fails the request",
        validate.versioned_name(),
        params(&validate)
    );

    // The node's counters since it started, to compare with at the end.
    let before = stats(&client, &validate).await?;
    let attempt = [
        r#"{"id":"p-1","amount":12.5,"status":"paid","card":"4111 1111 1111 1234"}"#,
        r#"{"id":"p-2","amount":"99","status":"paid"}"#,
        r#"{"id":"p-3","status":"declined"}"#,
        "refund p-1",
    ];
    println!("producing:");
    for (i, value) in attempt.iter().enumerate() {
        println!("  [{i}] {value}");
    }
    let records = attempt.iter().map(|v| ProducerRecord::new(*v)).collect();
    let error = match client
        .produce(topic.as_str(), Some(0), records, Acks::All)
        .await
    {
        Ok(outcome) => anyhow::bail!("the invalid records were accepted: {outcome:?}"),
        Err(error) => error,
    };
    println!("refused: {}", error.reason().unwrap_or("no reason"));
    let rejected = error.rejected_records();
    for record in &rejected {
        println!("  [{}] {}: {}", record.index, record.module, record.reason);
    }
    let indices: Vec<u32> = rejected.iter().map(|r| r.index).collect();
    anyhow::ensure!(
        error.reason() == Some("RECORD_REJECTED") && indices == [1, 2, 3],
        "expected records 1, 2 and 3 to be rejected, got {error}"
    );
    anyhow::ensure!(
        rejected[0].reason.contains("`amount` must be a number")
            && rejected[1]
                .reason
                .contains("missing required field `amount`")
            && rejected[2].reason.contains("not JSON"),
        "unexpected reasons: {rejected:?}"
    );
    let end = client
        .list_offsets(topic.as_str(), 0, OffsetSpec::Latest)
        .await?
        .high_watermark;
    anyhow::ensure!(end == 0, "a refused request stored {end} records");
    println!("nothing of the request was stored (record 0 was valid, but the request failed)");

    let payments = [
        r#"{"id":"p-1","amount":12.5,"status":"paid","card":"4111 1111 1111 1234","email":"ana@example.com"}"#,
        r#"{"id":"p-2","amount":99,"status":"declined","card":"5500-0000-0000-0004","email":"bo@example.org"}"#,
        r#"{"id":"p-3","amount":7,"status":"paid","note":"order 20240101"}"#,
    ];
    let records = payments.iter().map(|v| ProducerRecord::new(*v)).collect();
    let outcome = client
        .produce(topic.as_str(), Some(0), records, Acks::All)
        .await?;
    anyhow::ensure!(
        outcome.base_offset == Some(0) && outcome.record_count == 3,
        "the valid records should be stored at offsets 0..=2: {outcome:?}"
    );
    println!("\nproduced {} valid records:", outcome.record_count);
    for (offset, value) in payments.iter().enumerate() {
        println!("  {offset}: {value}");
    }

    // Consume path: every consumer that names no chain of its own reads through `redact`.
    // Card numbers keep their last four digits; e-mail addresses are masked but for the `@`.
    let redact = redact.with_param("keep_last", "4");
    client
        .attach_module(
            topic.as_str(),
            redact.clone(),
            ModulePath::Consume,
            RejectPolicy::Reject,
        )
        .await?;
    println!(
        "\nattached {} ({}) to the consume chain of {topic}",
        redact.versioned_name(),
        params(&redact)
    );
    let partition = TopicPartition::new(topic.as_str(), 0);
    let read = read_to(&client, &partition, Vec::new(), 3).await?;
    println!("a consumer reads:");
    print_records(&read);
    let expected = [
        r#"{"id":"p-1","amount":12.5,"status":"paid","card":"**** **** **** 1234","email":"***@***********"}"#,
        r#"{"id":"p-2","amount":99,"status":"declined","card":"****-****-****-0004","email":"**@***********"}"#,
        // Eight digits stay: the default threshold is nine, so dates are not masked.
        r#"{"id":"p-3","amount":7,"status":"paid","note":"order 20240101"}"#,
    ];
    anyhow::ensure!(
        values(&read) == expected,
        "the consume chain should have masked cards and e-mail addresses: {:?}",
        values(&read)
    );

    // A consumer's own chain replaces the topic's, so it names `redact` again after its filter.
    let chain = vec![
        field_filter
            .with_param("field", "status")
            .with_param("value", "declined"),
        redact,
    ];
    let names: Vec<String> = chain
        .iter()
        .map(|m| format!("{} ({})", m.versioned_name(), params(m)))
        .collect();
    println!(
        "\na consumer with its own chain {} reads:",
        names.join(" → ")
    );
    let read = read_to(&client, &partition, chain, 3).await?;
    print_records(&read);
    let offsets: Vec<u64> = read.iter().map(|r| r.record.offset).collect();
    anyhow::ensure!(
        offsets == [1] && values(&read) == expected[1..2],
        "only the declined payment, redacted, should come through: {:?}",
        values(&read)
    );

    let after = stats(&client, &validate).await?;
    let (calls, records_in, rejected) = (
        after.invocations.saturating_sub(before.invocations),
        after.records_in.saturating_sub(before.records_in),
        after
            .records_rejected
            .saturating_sub(before.records_rejected),
    );
    println!(
        "\n{} counted {calls} calls, {records_in} records in, {rejected} rejected",
        validate.versioned_name()
    );
    // Each node counts the calls it made; in a cluster, the partition's leader ran the module
    // and may not be the node that answered.
    anyhow::ensure!(
        embedded.is_none() || (records_in, rejected) == (7, 3),
        "json-validate should count the 7 records it saw and the 3 it rejected: {after:?}"
    );

    // Deleting the topic removes its attachments; then the versions registered here can go.
    client.delete_topic(topic.as_str()).await?;
    for module in registered {
        client.delete_module(module.name, module.version).await?;
    }
    if let Some(embedded) = embedded {
        embedded.shutdown().await;
    }
    Ok(())
}

/// The compiled module `name` in `dir`, named as cargo names a `cdylib` artifact.
fn read_module(dir: &Path, name: &str) -> anyhow::Result<Vec<u8>> {
    let path = dir.join(format!("{}.wasm", name.replace('-', "_")));
    std::fs::read(&path).with_context(|| {
        format!(
            "cannot read {}: build the modules first with `cargo build --release --target \
             wasm32-unknown-unknown -p json-validate -p redact -p field-filter`, or give their \
             directory as the argument or in WEIR_MODULES_DIR",
            path.display()
        )
    })
}

/// Registers `wasm` as the next version of the module `name`, and returns a reference pinned
/// to that version.
async fn register(client: &Client, name: &str, wasm: Vec<u8>) -> anyhow::Result<ModuleRef> {
    let size = wasm.len();
    let info = client.register_module(name, None, wasm).await?;
    let version = info
        .latest()
        .context("the registered module has no version")?;
    println!("registered {name}@{version} ({size} bytes)");
    Ok(ModuleRef::new(name).with_version(version))
}

/// The counters of the version `module` pins, on the node that answers.
async fn stats(client: &Client, module: &ModuleRef) -> anyhow::Result<ModuleStats> {
    Ok(client
        .describe_module(module.name.as_str())
        .await?
        .versions
        .into_iter()
        .find(|v| Some(v.version) == module.version)
        .with_context(|| format!("{} is not registered", module.versioned_name()))?
        .stats)
}

/// Reads `partition` from its start up to `end` with a `Consumer` outside any group, running
/// `chain` over the records (the topic's consume chain when empty). Polls until the position
/// reaches `end`: with a filter, fewer records than that come out.
async fn read_to(
    client: &Client,
    partition: &TopicPartition,
    chain: Vec<ModuleRef>,
    end: u64,
) -> anyhow::Result<Vec<ConsumerRecord>> {
    let config = ConsumerConfig {
        offset_reset: OffsetReset::Earliest,
        fetch_max_wait: Duration::from_millis(100),
        modules: chain,
        ..ConsumerConfig::default()
    };
    let mut consumer = Consumer::new(client.clone(), config);
    consumer.assign(std::slice::from_ref(partition)).await?;
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut records = Vec::new();
    while consumer.position(partition) < Some(end) {
        anyhow::ensure!(
            Instant::now() < deadline,
            "{partition} did not reach offset {end} within 30 s"
        );
        records.extend(consumer.poll().await?);
    }
    consumer.close().await?;
    Ok(records)
}

/// A module's parameters as `KEY=VALUE` separated by spaces: unlike [`ModuleRef`]'s `Display`,
/// this stays readable when values contain commas.
fn params(module: &ModuleRef) -> String {
    let params: Vec<String> = module
        .params
        .iter()
        .map(|(key, value)| format!("{key}={value}"))
        .collect();
    params.join(" ")
}

fn values(records: &[ConsumerRecord]) -> Vec<String> {
    records
        .iter()
        .map(|r| String::from_utf8_lossy(&r.record.value).into_owned())
        .collect()
}

fn print_records(records: &[ConsumerRecord]) {
    for record in records {
        println!(
            "  {}: {}",
            record.record.offset,
            String::from_utf8_lossy(&record.record.value)
        );
    }
}
