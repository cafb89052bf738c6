//! `weir module register | list | describe | attach | detach | delete`: the module registry and
//! topics' module chains; and `weir module new | test`, which need no broker: they write a module
//! crate ([`crate::module_new`]) and run a module over stdin on this machine
//! ([`crate::module_test`]).
//!
//! A module's counters are per node (each node counts the runs it made), so `describe` asks
//! every node of the cluster and adds their counters up, saying how many nodes answered.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Subcommand, ValueEnum};
use weir_client::{
    Client, ModuleInfo, ModulePath, ModuleRef, ModuleStats, ModuleUse, RejectPolicy, TopicInfo,
};

use crate::key_value::parse_key_value;
use crate::module_new::{ModuleKind, SdkSource};
use crate::module_test::{DEFAULT_BATCH_SIZE, TestOptions};
use crate::table;

/// A module command.
#[derive(Debug, Subcommand)]
pub enum ModuleCommand {
    /// Write a new module crate with a working example of KIND, a test and a README.
    New {
        /// Module and crate name: ASCII letters, digits, '-' and '_', starting with a letter.
        name: String,
        /// What the module does with each record.
        #[arg(long)]
        kind: ModuleKind,
        /// Directory to create (it may exist if empty) [default: ./NAME].
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
    /// Run a module over stdin, one record per line, on this machine without a broker.
    ///
    /// Records the module outputs go to stdout, one value per line; rejections go to stderr as
    /// `rejected INDEX: REASON` (INDEX counts lines from 0), then the module's log lines and a
    /// summary.
    Test {
        /// The module's .wasm file.
        file: PathBuf,
        /// A parameter for the module's `init`, as KEY=VALUE. Repeatable, in order.
        #[arg(long = "param", value_name = "KEY=VALUE", value_parser = parse_key_value)]
        params: Vec<(String, String)>,
        /// Split each line at the first SEP into key and value, and print keyed output records
        /// as KEY SEP VALUE.
        #[arg(short = 'K', long, value_name = "SEP",
              value_parser = clap::builder::NonEmptyStringValueParser::new())]
        key_separator: Option<String>,
        /// Lines passed to the module per call.
        #[arg(long, default_value_t = DEFAULT_BATCH_SIZE,
              value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
        batch_size: usize,
    },
    #[command(flatten)]
    Registry(RegistryCommand),
}

/// A module command that talks to the broker: the registry and topics' chains.
#[derive(Debug, Subcommand)]
pub enum RegistryCommand {
    /// Register a WebAssembly module under a name. The broker validates and compiles it first.
    Register {
        /// Module name: letters, digits, '.', '_' and '-'.
        name: String,
        /// The module's .wasm file.
        file: PathBuf,
        /// Version to register; by default one more than the latest (1 for a new name).
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
        version: Option<u32>,
    },
    /// List registered modules with their versions and where they are attached.
    List,
    /// Show a module's versions, attachments and counters, summed over every node.
    Describe {
        /// Module name.
        name: String,
    },
    /// Append a module to a topic's produce or consume chain and show the chain.
    ///
    /// On the produce path the module runs on the partition leader before records are stored;
    /// --on-reject says what its rejections do: fail the whole request (reject, the default),
    /// drop the rejected records, or send them to --dead-letter-topic. On the consume path it
    /// runs for every consumer that names no chain of its own, and rejections are reported to
    /// the consumer.
    Attach {
        /// Topic to attach to.
        topic: String,
        /// The module, NAME or NAME@VERSION (default: the latest version, which the
        /// attachment keeps); parameters may follow as :KEY=VALUE,... as in `weir consume
        /// --module`.
        #[arg(value_name = "NAME[@VERSION]")]
        module: ModuleRef,
        /// The chain: produce or consume.
        #[arg(long = "on", value_name = "PATH")]
        path: PathArg,
        /// A parameter for the module's `init`, as KEY=VALUE (the value may hold ',' and '=').
        /// Repeatable; the module receives them in the order given.
        #[arg(long = "param", value_name = "KEY=VALUE", value_parser = parse_key_value)]
        params: Vec<(String, String)>,
        /// What the module's rejections do on the produce path [default: reject].
        #[arg(long, value_name = "POLICY")]
        on_reject: Option<OnReject>,
        /// Topic that receives rejected records with --on-reject dead-letter.
        #[arg(long, value_name = "TOPIC", required_if_eq("on_reject", "dead-letter"))]
        dead_letter_topic: Option<String>,
    },
    /// Remove a module from a topic's produce or consume chain and show the chain.
    Detach {
        /// The topic.
        topic: String,
        /// Module name.
        name: String,
        /// The chain: produce or consume.
        #[arg(long = "on", value_name = "PATH")]
        path: PathArg,
    },
    /// Delete a module version, or every version. Refused while it is attached.
    Delete {
        /// Module name.
        name: String,
        /// Version to delete; by default every version.
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
        version: Option<u32>,
    },
}

/// `--on`: the chain a module goes in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PathArg {
    /// Over produce requests, before anything is stored.
    Produce,
    /// Over fetched records, for each consumer.
    Consume,
}

impl From<PathArg> for ModulePath {
    fn from(path: PathArg) -> Self {
        match path {
            PathArg::Produce => Self::Produce,
            PathArg::Consume => Self::Consume,
        }
    }
}

/// `--on-reject`: what a produce-path module's rejections do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OnReject {
    /// Fail the whole produce request; nothing of it is stored.
    Reject,
    /// Drop the rejected records and store the rest.
    Drop,
    /// Send the rejected records to --dead-letter-topic and store the rest.
    DeadLetter,
}

/// The policy of an attachment on `path` from `--on-reject` and `--dead-letter-topic`.
fn reject_policy(
    path: ModulePath,
    on_reject: Option<OnReject>,
    dead_letter_topic: Option<String>,
) -> anyhow::Result<RejectPolicy> {
    if path == ModulePath::Consume && (on_reject.is_some() || dead_letter_topic.is_some()) {
        anyhow::bail!(
            "--on-reject and --dead-letter-topic apply to --on produce only: a consume chain \
             reports the records it rejects to the consumer"
        );
    }
    match (on_reject.unwrap_or(OnReject::Reject), dead_letter_topic) {
        (OnReject::DeadLetter, Some(topic)) => Ok(RejectPolicy::DeadLetter(topic)),
        (OnReject::DeadLetter, None) => {
            anyhow::bail!("--on-reject dead-letter needs --dead-letter-topic")
        }
        (_, Some(_)) => anyhow::bail!("--dead-letter-topic needs --on-reject dead-letter"),
        (OnReject::Reject, None) => Ok(RejectPolicy::Reject),
        (OnReject::Drop, None) => Ok(RejectPolicy::Drop),
    }
}

impl ModuleCommand {
    /// Runs the command, against the broker at `broker` for those that need one, printing its
    /// result to stdout.
    pub async fn run(self, broker: &crate::Connection) -> anyhow::Result<()> {
        match self {
            Self::New { name, kind, dir } => {
                let dir = dir.unwrap_or_else(|| PathBuf::from(&name));
                let target = dir.clone();
                let created = name.clone();
                tokio::task::spawn_blocking(move || {
                    crate::module_new::scaffold(
                        &target,
                        &created,
                        kind,
                        SdkSource::for_this_build(),
                    )
                })
                .await
                .context("the scaffolding task failed")??;
                println!(
                    "Created {kind} module {name} in {}. Build it with `cargo build --release \
                     --target wasm32-unknown-unknown` there; its README.md says how to register \
                     it.",
                    dir.display()
                );
                Ok(())
            }
            Self::Test {
                file,
                params,
                key_separator,
                batch_size,
            } => {
                let options = TestOptions {
                    params,
                    key_separator: key_separator.map(String::into_bytes),
                    batch_size,
                    ..TestOptions::default()
                };
                // Blocking reads of stdin and calls into the module: off the async workers.
                tokio::task::spawn_blocking(move || {
                    crate::module_test::run_with(
                        &file,
                        options,
                        std::io::stdin().lock(),
                        std::io::stdout().lock(),
                        std::io::stderr().lock(),
                    )
                })
                .await
                .context("the module test task failed")??;
                Ok(())
            }
            Self::Registry(command) => command.run(&broker.connect().await?).await,
        }
    }
}

impl RegistryCommand {
    /// Runs the command against `client`, printing its result to stdout.
    pub async fn run(self, client: &Client) -> anyhow::Result<()> {
        match self {
            Self::Register {
                name,
                file,
                version,
            } => {
                let wasm = tokio::fs::read(&file)
                    .await
                    .with_context(|| format!("cannot read {}", file.display()))?;
                let info = client
                    .register_module(name.as_str(), version, wasm)
                    .await
                    .with_context(|| format!("cannot register module {name}"))?;
                let registered = version.or_else(|| info.latest());
                let Some(v) = info.versions.iter().find(|v| Some(v.version) == registered) else {
                    anyhow::bail!("the broker registered {name} but does not list the version");
                };
                println!(
                    "Registered module {} version {} (sha256 {}, {} bytes).",
                    info.name, v.version, v.sha256, v.size_bytes
                );
            }
            Self::List => {
                let modules = client.list_modules().await.context("cannot list modules")?;
                print!("{}", list(&modules));
            }
            Self::Describe { name } => {
                let info = client
                    .describe_module(name.as_str())
                    .await
                    .with_context(|| format!("cannot describe module {name}"))?;
                let counters = cluster_counters(client, &name, &info).await;
                print!("{}", describe(&info, &counters));
            }
            Self::Attach {
                topic,
                mut module,
                path,
                params,
                on_reject,
                dead_letter_topic,
            } => {
                let path = ModulePath::from(path);
                let policy = reject_policy(path, on_reject, dead_letter_topic)?;
                module.params.extend(params);
                let name = module.name.clone();
                let info = client
                    .attach_module(topic.as_str(), module, path, policy)
                    .await
                    .with_context(|| format!("cannot attach module {name} to topic {topic}"))?;
                let attached = chain(&info, path)
                    .iter()
                    .rev()
                    .find(|a| a.module.name == name)
                    .map_or_else(|| name.clone(), |a| a.module.versioned_name());
                println!("Attached {attached} to the {path} chain of {topic}.");
                print!("{}", crate::topic::chain_section(path, chain(&info, path)));
            }
            Self::Detach { topic, name, path } => {
                let path = ModulePath::from(path);
                let info = client
                    .detach_module(topic.as_str(), name.as_str(), path)
                    .await
                    .with_context(|| format!("cannot detach module {name} from topic {topic}"))?;
                println!("Detached {name} from the {path} chain of {topic}.");
                if chain(&info, path).is_empty() {
                    println!("The {path} chain of {topic} is now empty.");
                } else {
                    print!("{}", crate::topic::chain_section(path, chain(&info, path)));
                }
            }
            Self::Delete { name, version } => {
                client
                    .delete_module(name.as_str(), version)
                    .await
                    .with_context(|| format!("cannot delete module {name}"))?;
                match version {
                    Some(version) => println!("Deleted version {version} of module {name}."),
                    None => println!("Deleted module {name}."),
                }
            }
        }
        Ok(())
    }
}

/// The chain of `topic` on `path`.
fn chain(topic: &TopicInfo, path: ModulePath) -> &[weir_client::ModuleAttachment] {
    match path {
        ModulePath::Produce => &topic.produce_chain,
        ModulePath::Consume => &topic.consume_chain,
    }
}

/// The module listing: name, latest version, every version, attachments.
fn list(modules: &[ModuleInfo]) -> String {
    let rows: Vec<[String; 4]> = modules
        .iter()
        .map(|module| {
            let versions: Vec<String> = module
                .versions
                .iter()
                .map(|v| v.version.to_string())
                .collect();
            [
                module.name.clone(),
                module
                    .latest()
                    .map_or_else(|| "-".to_owned(), |v| v.to_string()),
                versions.join(","),
                attachments(&module.attached),
            ]
        })
        .collect();
    table::render(["NAME", "LATEST", "VERSIONS", "ATTACHED"], &rows)
}

/// `orders (produce, v2), clicks (consume, v1)`, or `-`.
fn attachments(uses: &[ModuleUse]) -> String {
    if uses.is_empty() {
        return "-".to_owned();
    }
    uses.iter()
        .map(|u| format!("{} ({}, v{})", u.topic, u.path, u.version))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The counters of a module's versions on the nodes that answered, keyed by node id.
#[derive(Debug, Default, PartialEq, Eq)]
struct ClusterCounters {
    /// Per node that answered, its counters per version.
    nodes: BTreeMap<u64, BTreeMap<u32, ModuleStats>>,
    /// Nodes in the cluster, as far as it is known (at least those that answered).
    cluster_size: usize,
}

impl ClusterCounters {
    /// Adds one node's answer. A node's answer replaces any earlier one from the same node.
    fn add(&mut self, info: &ModuleInfo) {
        for version in &info.versions {
            self.nodes
                .entry(version.stats.node_id)
                .or_default()
                .insert(version.version, version.stats);
        }
        self.cluster_size = self.cluster_size.max(self.nodes.len());
    }

    /// The sum of every node's counters of `version`.
    fn total(&self, version: u32) -> ModuleStats {
        let mut total = ModuleStats::default();
        for stats in self.nodes.values().filter_map(|v| v.get(&version)) {
            total.invocations += stats.invocations;
            total.records_in += stats.records_in;
            total.records_out += stats.records_out;
            total.records_rejected += stats.records_rejected;
            total.errors += stats.errors;
            total.busy += stats.busy;
        }
        total
    }
}

/// The counters of the module `name` on every node of the cluster that answers, starting from
/// `answered`, what the node at --broker said.
async fn cluster_counters(client: &Client, name: &str, answered: &ModuleInfo) -> ClusterCounters {
    let mut counters = ClusterCounters::default();
    counters.add(answered);
    // Without the node list only the answering node's counters are known; that is still an
    // answer worth printing.
    let Ok(cluster) = client.describe_cluster().await else {
        return counters;
    };
    let answers = crate::cluster::ask_every_node(client, &cluster, |node| async move {
        node.describe_module(name).await
    })
    .await;
    for info in answers.into_iter().filter_map(|(_, answer)| answer.ok()) {
        counters.add(&info);
    }
    counters.cluster_size = counters.cluster_size.max(cluster.nodes.len());
    counters
}

/// A module's versions, attachments and counters.
fn describe(info: &ModuleInfo, counters: &ClusterCounters) -> String {
    let mut out = format!(
        "MODULE: {}  LATEST: {}  VERSIONS: {}\n\n",
        info.name,
        info.latest()
            .map_or_else(|| "-".to_owned(), |v| v.to_string()),
        info.versions.len()
    );
    let rows: Vec<[String; 4]> = info
        .versions
        .iter()
        .map(|v| {
            [
                v.version.to_string(),
                v.sha256.clone(),
                v.size_bytes.to_string(),
                utc_timestamp(v.registered_at_ms),
            ]
        })
        .collect();
    out.push_str(&table::render(
        ["VERSION", "SHA256", "BYTES", "REGISTERED"],
        &rows,
    ));

    out.push('\n');
    if info.attached.is_empty() {
        out.push_str("Attached to no topic.\n");
    } else {
        let rows: Vec<[String; 3]> = info
            .attached
            .iter()
            .map(|u| [u.topic.clone(), u.path.to_string(), u.version.to_string()])
            .collect();
        out.push_str("Attached to:\n");
        out.push_str(&table::render(["TOPIC", "PATH", "VERSION"], &rows));
    }

    let answered = counters.nodes.len();
    let _ = writeln!(
        out,
        "\nCounters since each node started ({answered} of {} node(s) answered):",
        counters.cluster_size.max(answered)
    );
    let mut rows: Vec<[String; 8]> = Vec::new();
    for version in &info.versions {
        let row = |node: String, stats: &ModuleStats| {
            [
                version.version.to_string(),
                node,
                stats.invocations.to_string(),
                stats.records_in.to_string(),
                stats.records_out.to_string(),
                stats.records_rejected.to_string(),
                stats.errors.to_string(),
                busy(stats.busy),
            ]
        };
        for (node_id, versions) in &counters.nodes {
            if let Some(stats) = versions.get(&version.version) {
                rows.push(row(node_id.to_string(), stats));
            }
        }
        // With one node the total is its row.
        if answered > 1 {
            rows.push(row("total".to_owned(), &counters.total(version.version)));
        }
    }
    out.push_str(&table::render(
        [
            "VERSION",
            "NODE",
            "INVOCATIONS",
            "RECORDS-IN",
            "RECORDS-OUT",
            "REJECTED",
            "ERRORS",
            "BUSY",
        ],
        &rows,
    ));
    out
}

/// A busy time at a precision that suits its size: `0s`, `850µs`, `12.3ms`, `4.56s`.
fn busy(busy: Duration) -> String {
    let micros = busy.as_micros();
    if micros == 0 {
        "0s".to_owned()
    } else if micros < 1_000 {
        format!("{micros}µs")
    } else if micros < 1_000_000 {
        format!("{:.1}ms", busy.as_secs_f64() * 1e3)
    } else {
        format!("{:.2}s", busy.as_secs_f64())
    }
}

/// Milliseconds since the Unix epoch as `YYYY-MM-DDTHH:MM:SSZ` (UTC).
fn utc_timestamp(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let (days, secs_of_day) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01, in the proleptic Gregorian calendar: Howard
    // Hinnant's `civil_from_days`, counting in 400-year eras that start on March 1st.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1_460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_index + 2) / 5 + 1;
    let month = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        secs_of_day / 3_600,
        secs_of_day % 3_600 / 60,
        secs_of_day % 60
    )
}

#[cfg(test)]
mod tests {
    use clap::Parser;
    use weir_client::ModuleVersionInfo;

    use super::*;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(subcommand)]
        command: ModuleCommand,
    }

    fn parse(args: &[&str]) -> Result<ModuleCommand, clap::Error> {
        Cli::try_parse_from(std::iter::once("module").chain(args.iter().copied()))
            .map(|cli| cli.command)
    }

    /// Parses a registry command; anything else is a test failure.
    fn registry(args: &[&str]) -> Result<RegistryCommand, clap::Error> {
        parse(args).map(|command| match command {
            ModuleCommand::Registry(command) => command,
            other => panic!("{args:?} parsed as {other:?}"),
        })
    }

    fn version(version: u32, node_id: u64, invocations: u64) -> ModuleVersionInfo {
        ModuleVersionInfo {
            version,
            sha256: format!("{version:02}ab"),
            size_bytes: 1000 * u64::from(version),
            registered_at_ms: 1_700_000_000_000,
            stats: ModuleStats {
                invocations,
                records_in: invocations * 10,
                records_out: invocations * 9,
                records_rejected: invocations,
                errors: 0,
                busy: Duration::from_micros(invocations * 100),
                node_id,
            },
        }
    }

    #[test]
    fn attach_keeps_param_order_and_takes_a_policy() {
        let command = registry(&[
            "attach",
            "orders",
            "validate@2",
            "--on",
            "produce",
            "--param",
            "z=1",
            "--param",
            "a=b=c",
            "--param",
            "list=x,y",
            "--on-reject",
            "dead-letter",
            "--dead-letter-topic",
            "orders-dlq",
        ])
        .expect("valid command line");
        let RegistryCommand::Attach {
            topic,
            module,
            path,
            params,
            on_reject,
            dead_letter_topic,
        } = command
        else {
            panic!("parsed as attach: {command:?}");
        };
        assert_eq!(topic, "orders");
        assert_eq!(module, ModuleRef::new("validate").with_version(2));
        assert_eq!(path, PathArg::Produce);
        let params: Vec<(&str, &str)> = params
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        assert_eq!(params, [("z", "1"), ("a", "b=c"), ("list", "x,y")]);
        assert_eq!(on_reject, Some(OnReject::DeadLetter));
        assert_eq!(dead_letter_topic.as_deref(), Some("orders-dlq"));
    }

    #[test]
    fn attach_refuses_bad_paths_params_and_a_dead_letter_policy_without_topic() {
        for bad in [
            vec!["attach", "t", "m"],
            vec!["attach", "t", "m", "--on", "both"],
            vec!["attach", "t", "m@x", "--on", "produce"],
            vec!["attach", "t", "m", "--on", "produce", "--param", "novalue"],
            vec!["attach", "t", "m", "--on", "produce", "--param", "=v"],
            vec![
                "attach",
                "t",
                "m",
                "--on",
                "produce",
                "--on-reject",
                "dead-letter",
            ],
            vec![
                "attach",
                "t",
                "m",
                "--on",
                "produce",
                "--on-reject",
                "ignore",
            ],
        ] {
            assert!(registry(&bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn reject_policy_follows_the_flags_and_the_path() {
        assert_eq!(
            reject_policy(ModulePath::Produce, None, None).ok(),
            Some(RejectPolicy::Reject)
        );
        assert_eq!(
            reject_policy(ModulePath::Produce, Some(OnReject::Drop), None).ok(),
            Some(RejectPolicy::Drop)
        );
        assert_eq!(
            reject_policy(
                ModulePath::Produce,
                Some(OnReject::DeadLetter),
                Some("dlq".to_owned())
            )
            .ok(),
            Some(RejectPolicy::DeadLetter("dlq".to_owned()))
        );
        assert!(reject_policy(ModulePath::Produce, Some(OnReject::DeadLetter), None).is_err());
        assert!(
            reject_policy(
                ModulePath::Produce,
                Some(OnReject::Drop),
                Some("dlq".to_owned())
            )
            .is_err()
        );
        assert!(reject_policy(ModulePath::Consume, Some(OnReject::Drop), None).is_err());
        assert_eq!(
            reject_policy(ModulePath::Consume, None, None).ok(),
            Some(RejectPolicy::Reject)
        );
    }

    #[test]
    fn register_detach_and_delete_parse() {
        let command = registry(&["register", "upper", "upper.wasm", "--version", "3"])
            .expect("valid command line");
        assert!(
            matches!(&command, RegistryCommand::Register { name, file, version: Some(3) }
                if name == "upper" && file == &PathBuf::from("upper.wasm")),
            "{command:?}"
        );
        assert!(registry(&["register", "upper", "upper.wasm", "--version", "0"]).is_err());
        assert!(
            registry(&["register", "upper"]).is_err(),
            "the file is required"
        );

        let command = registry(&["detach", "orders", "upper", "--on", "consume"])
            .expect("valid command line");
        assert!(
            matches!(&command, RegistryCommand::Detach { topic, name, path: PathArg::Consume }
                if topic == "orders" && name == "upper"),
            "{command:?}"
        );
        assert!(
            registry(&["detach", "orders", "upper"]).is_err(),
            "--on is required"
        );

        assert!(matches!(
            registry(&["delete", "upper"]),
            Ok(RegistryCommand::Delete { version: None, .. })
        ));
        assert!(matches!(
            registry(&["delete", "upper", "--version", "2"]),
            Ok(RegistryCommand::Delete {
                version: Some(2),
                ..
            })
        ));
        assert!(matches!(registry(&["list"]), Ok(RegistryCommand::List)));
        assert!(matches!(
            registry(&["describe", "upper"]),
            Ok(RegistryCommand::Describe { .. })
        ));
    }

    #[test]
    fn new_and_test_parse_without_a_broker() {
        let command = parse(&[
            "new",
            "my-filter",
            "--kind",
            "filter-map",
            "--dir",
            "mods/f",
        ])
        .expect("valid command line");
        assert!(
            matches!(&command, ModuleCommand::New { name, kind: ModuleKind::FilterMap, dir: Some(dir) }
                if name == "my-filter" && dir == &PathBuf::from("mods/f")),
            "{command:?}"
        );
        assert!(parse(&["new", "f"]).is_err(), "--kind is required");
        assert!(parse(&["new", "f", "--kind", "sorter"]).is_err());

        let command = parse(&[
            "test", "f.wasm", "--param", "needle=x", "--param", "b=1,2", "-K", ":",
        ])
        .expect("valid command line");
        let ModuleCommand::Test {
            file,
            params,
            key_separator,
            batch_size,
        } = command
        else {
            panic!("parsed as test: {command:?}");
        };
        assert_eq!(file, PathBuf::from("f.wasm"));
        assert_eq!(
            params,
            [
                ("needle".to_owned(), "x".to_owned()),
                ("b".to_owned(), "1,2".to_owned())
            ]
        );
        assert_eq!(key_separator.as_deref(), Some(":"));
        assert_eq!(batch_size, DEFAULT_BATCH_SIZE);
        assert!(parse(&["test", "f.wasm", "--batch-size", "0"]).is_err());
        assert!(parse(&["test"]).is_err(), "the file is required");
    }

    #[test]
    fn list_shows_latest_versions_and_attachments() {
        let modules = [
            ModuleInfo {
                name: "upper".to_owned(),
                versions: vec![version(1, 1, 0), version(2, 1, 0)],
                attached: vec![
                    ModuleUse {
                        topic: "orders".to_owned(),
                        path: ModulePath::Produce,
                        version: 2,
                    },
                    ModuleUse {
                        topic: "clicks".to_owned(),
                        path: ModulePath::Consume,
                        version: 1,
                    },
                ],
            },
            ModuleInfo {
                name: "f".to_owned(),
                versions: vec![version(1, 1, 0)],
                attached: Vec::new(),
            },
        ];
        assert_eq!(
            list(&modules),
            "NAME   LATEST  VERSIONS  ATTACHED\n\
             upper  2       1,2       orders (produce, v2), clicks (consume, v1)\n\
             f      1       1         -\n"
        );
    }

    #[test]
    fn describe_sums_counters_over_the_nodes_that_answered() {
        let on_node = |node_id, invocations| ModuleInfo {
            name: "upper".to_owned(),
            versions: vec![version(1, node_id, invocations)],
            attached: vec![ModuleUse {
                topic: "orders".to_owned(),
                path: ModulePath::Produce,
                version: 1,
            }],
        };
        let mut counters = ClusterCounters {
            cluster_size: 3,
            ..ClusterCounters::default()
        };
        counters.add(&on_node(1, 2));
        counters.add(&on_node(2, 3));
        counters.add(&on_node(1, 2));
        assert_eq!(counters.total(1).invocations, 5, "node 1 counted once");
        assert_eq!(counters.total(1).busy, Duration::from_micros(500));
        assert_eq!(
            describe(&on_node(1, 2), &counters),
            "MODULE: upper  LATEST: 1  VERSIONS: 1\n\
             \n\
             VERSION  SHA256  BYTES  REGISTERED\n\
             1        01ab    1000   2023-11-14T22:13:20Z\n\
             \n\
             Attached to:\n\
             TOPIC   PATH     VERSION\n\
             orders  produce  1\n\
             \n\
             Counters since each node started (2 of 3 node(s) answered):\n\
             VERSION  NODE   INVOCATIONS  RECORDS-IN  RECORDS-OUT  REJECTED  ERRORS  BUSY\n\
             1        1      2            20          18           2         0       200µs\n\
             1        2      3            30          27           3         0       300µs\n\
             1        total  5            50          45           5         0       500µs\n"
        );
    }

    #[test]
    fn a_single_node_shows_its_counters_without_a_total() {
        let info = ModuleInfo {
            name: "m".to_owned(),
            versions: vec![version(1, 7, 4)],
            attached: Vec::new(),
        };
        let mut counters = ClusterCounters::default();
        counters.add(&info);
        let text = describe(&info, &counters);
        assert!(text.contains("Attached to no topic.\n"), "{text}");
        assert!(text.contains("(1 of 1 node(s) answered)"), "{text}");
        assert!(text.contains("\n1        7     4 "), "{text}");
        assert!(!text.contains("total"), "{text}");
    }

    #[test]
    fn busy_times_and_timestamps_read_naturally() {
        assert_eq!(busy(Duration::ZERO), "0s");
        assert_eq!(busy(Duration::from_micros(850)), "850µs");
        assert_eq!(busy(Duration::from_micros(12_340)), "12.3ms");
        assert_eq!(busy(Duration::from_millis(4_560)), "4.56s");
        assert_eq!(utc_timestamp(0), "1970-01-01T00:00:00Z");
        assert_eq!(utc_timestamp(951_782_400_000), "2000-02-29T00:00:00Z");
        assert_eq!(utc_timestamp(1_709_251_199_999), "2024-02-29T23:59:59Z");
        assert_eq!(utc_timestamp(-1), "1969-12-31T23:59:59Z");
    }
}
