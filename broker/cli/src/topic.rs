//! `weir topic create | list | describe | alter-config | trim | delete`: topic administration.

use anyhow::Context;
use clap::Subcommand;
use weir_client::{Client, ModuleAttachment, ModulePath, PartitionInfo, TopicInfo, TopicSpec};

use crate::key_value::parse_key_value;
use crate::table;

/// A topic administration command.
#[derive(Debug, Subcommand)]
pub enum TopicCommand {
    /// Create a topic.
    Create {
        /// Topic name: 1 to 249 characters of [A-Za-z0-9._-].
        name: String,
        /// Number of partitions.
        #[arg(short, long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
        partitions: u32,
        /// Replicas per partition; 0 uses the broker's default.
        #[arg(short, long, default_value_t = 0)]
        replication_factor: u32,
        /// A topic config, as KEY=VALUE with Kafka's names (retention.ms=-1,
        /// max.message.bytes=1048576, message.timestamp.type=LogAppendTime, ...). Repeatable.
        #[arg(long = "config", value_name = "KEY=VALUE", value_parser = parse_key_value)]
        configs: Vec<(String, String)>,
    },
    /// Change a topic's configs: set some, remove others (their defaults apply again). All
    /// or nothing.
    AlterConfig {
        /// Topic name.
        name: String,
        /// A config to set, as KEY=VALUE. Repeatable.
        #[arg(long = "set", value_name = "KEY=VALUE", value_parser = parse_key_value)]
        set: Vec<(String, String)>,
        /// A config to remove. Repeatable.
        #[arg(long = "delete", value_name = "KEY")]
        delete: Vec<String>,
    },
    /// List topics with their partition count and replication factor.
    List,
    /// Show a topic's partitions (leader, replicas, high watermark and log start) and its
    /// module chains.
    Describe {
        /// Topic name.
        name: String,
    },
    /// Delete a partition's records below an offset (Kafka's DeleteRecords): its log start
    /// moves there on every replica, and consumers reading below it reset per their policy.
    Trim {
        /// Topic name.
        name: String,
        /// The partition.
        #[arg(short, long)]
        partition: u32,
        /// The new first offset: every record below it is deleted. At most the high watermark.
        #[arg(long, value_name = "OFFSET")]
        before: u64,
    },
    /// Delete a topic and all of its data.
    Delete {
        /// Topic name.
        name: String,
    },
}

impl TopicCommand {
    /// Runs the command against `client`, printing its result to stdout.
    pub async fn run(self, client: &Client) -> anyhow::Result<()> {
        match self {
            Self::Create {
                name,
                partitions,
                replication_factor,
                configs,
            } => {
                let mut spec = TopicSpec::new(name.clone(), partitions)
                    .with_replication_factor(replication_factor);
                spec.configs.extend(configs);
                let topic = client
                    .create_topic(spec)
                    .await
                    .with_context(|| format!("cannot create topic {name}"))?;
                println!(
                    "Created topic {} with {} partition(s), replication factor {}.",
                    topic.name,
                    topic.partitions.len(),
                    topic.replication_factor
                );
            }
            Self::List => {
                let topics = client.list_topics().await.context("cannot list topics")?;
                let rows: Vec<[String; 3]> = topics
                    .into_iter()
                    .map(|t| {
                        [
                            t.name,
                            t.partitions.to_string(),
                            t.replication_factor.to_string(),
                        ]
                    })
                    .collect();
                print!(
                    "{}",
                    table::render(["NAME", "PARTITIONS", "REPLICATION"], &rows)
                );
            }
            Self::Describe { name } => {
                let mut topic = client
                    .describe_topic(name.clone())
                    .await
                    .with_context(|| format!("cannot describe topic {name}"))?;
                // Each partition as its leader sees it: leader, in-sync replicas and lag are
                // only known there. On a single node this is the same answer.
                if let Ok(cluster) = client.describe_cluster().await
                    && cluster.nodes.len() > 1
                {
                    let mut views =
                        crate::cluster::leader_views(client, &cluster, std::slice::from_ref(&name))
                            .await;
                    for partition in &mut topic.partitions {
                        if let Some(view) = views.remove(&(name.clone(), partition.partition)) {
                            *partition = view;
                        }
                    }
                }
                print!("{}", describe(&topic));
            }
            Self::AlterConfig { name, set, delete } => {
                if set.is_empty() && delete.is_empty() {
                    anyhow::bail!("nothing to change: give --set KEY=VALUE or --delete KEY");
                }
                let topic = client
                    .alter_topic_configs(name.clone(), set, delete)
                    .await
                    .with_context(|| format!("cannot alter the configs of topic {name}"))?;
                print!("{}", config_lines(&topic));
            }
            Self::Trim {
                name,
                partition,
                before,
            } => {
                let log_start = client
                    .delete_records(name.clone(), partition, before)
                    .await
                    .with_context(|| format!("cannot trim {name}/{partition}"))?;
                println!("{name}/{partition} now starts at offset {log_start}.");
            }
            Self::Delete { name } => {
                client
                    .delete_topic(name.clone())
                    .await
                    .with_context(|| format!("cannot delete topic {name}"))?;
                println!("Deleted topic {name}.");
            }
        }
        Ok(())
    }
}

/// One `CONFIG: key=value (topic|default)` line per topic config, in name order: what the
/// answering broker applies, and whether the topic sets it or a default applies.
fn config_lines(topic: &TopicInfo) -> String {
    topic
        .effective_configs
        .iter()
        .map(|c| {
            let source = if c.set_on_topic { "topic" } else { "default" };
            format!("CONFIG: {}={} ({source})\n", c.name, c.value)
        })
        .collect()
}

/// A topic's summary line, its partition table and its module chains.
fn describe(topic: &TopicInfo) -> String {
    let rows: Vec<[String; 7]> = topic.partitions.iter().map(partition_row).collect();
    let mut out = format!(
        "NAME: {}  PARTITIONS: {}  REPLICATION: {}\n",
        topic.name,
        topic.partitions.len(),
        topic.replication_factor
    );
    out.push_str(&config_lines(topic));
    out.push('\n');
    out.push_str(&table::render(
        [
            "PARTITION",
            "LEADER",
            "REPLICAS",
            "IN-SYNC",
            "HIGH-WATERMARK",
            "LOG-START",
            "STORED",
        ],
        &rows,
    ));
    out.push_str(&failure_lines(
        topic
            .partitions
            .iter()
            .map(|p| (format!("{}/{}", topic.name, p.partition), p)),
    ));
    for (path, chain) in [
        (ModulePath::Produce, &topic.produce_chain),
        (ModulePath::Consume, &topic.consume_chain),
    ] {
        if !chain.is_empty() {
            out.push('\n');
            out.push_str(&chain_section(path, chain));
        }
    }
    out
}

/// `Produce chain:` or `Consume chain:` and a table of the chain's stages in the order they
/// run: the module at its attached version, its parameters, and on the produce path what
/// happens to the records it rejects.
pub(crate) fn chain_section(path: ModulePath, chain: &[ModuleAttachment]) -> String {
    let title = match path {
        ModulePath::Produce => "Produce chain:",
        ModulePath::Consume => "Consume chain:",
    };
    let rows = chain.iter().enumerate().map(|(i, attachment)| {
        let params: Vec<String> = attachment
            .module
            .params
            .iter()
            .map(|(key, value)| format!("{key}={value}"))
            .collect();
        let params = if params.is_empty() {
            "-".to_owned()
        } else {
            params.join(",")
        };
        [
            (i + 1).to_string(),
            attachment.module.versioned_name(),
            params,
            attachment.on_reject.to_string(),
        ]
    });
    let table = match path {
        ModulePath::Produce => {
            let rows: Vec<[String; 4]> = rows.collect();
            table::render(["STAGE", "MODULE", "PARAMS", "ON-REJECT"], &rows)
        }
        // A consume chain reports what it rejects to the consumer: it has no policy to show.
        ModulePath::Consume => {
            let rows: Vec<[String; 3]> = rows
                .map(|[stage, module, params, _]| [stage, module, params])
                .collect();
            table::render(["STAGE", "MODULE", "PARAMS"], &rows)
        }
    };
    format!("{title}\n{table}")
}

/// The leader column: the leader's id, `-` while an election is in progress, or `FAILED` when
/// the answering node's replica failed (the reason is printed under the table).
pub(crate) fn leader_cell(p: &PartitionInfo) -> String {
    match (&p.failure, p.leader) {
        (Some(_), _) => "FAILED".to_owned(),
        (None, Some(leader)) => leader.to_string(),
        (None, None) => "-".to_owned(),
    }
}

/// One line per failed partition, saying why.
pub(crate) fn failure_lines<'a>(
    partitions: impl IntoIterator<Item = (String, &'a PartitionInfo)>,
) -> String {
    partitions
        .into_iter()
        .filter_map(|(name, p)| {
            p.failure
                .as_ref()
                .map(|why| format!("FAILED {name}: {why}\n"))
        })
        .collect()
}

fn partition_row(p: &PartitionInfo) -> [String; 7] {
    let replicas: Vec<String> = p.replicas.iter().map(u64::to_string).collect();
    // Only the leader knows its followers' state; `?` when another node answered.
    let in_sync = if p.replica_status.is_empty() {
        "?".to_owned()
    } else {
        let ids: Vec<String> = p
            .replica_status
            .iter()
            .filter(|r| r.in_sync)
            .map(|r| r.node_id.to_string())
            .collect();
        ids.join(",")
    };
    [
        p.partition.to_string(),
        leader_cell(p),
        replicas.join(","),
        in_sync,
        p.high_watermark.to_string(),
        p.log_start_offset.to_string(),
        p.stored_bytes.map_or_else(|| "-".to_owned(), human_bytes),
    ]
}

/// `bytes` in the largest binary unit that keeps a whole number before the point:
/// `512 B`, `1.5 KiB`, `20.0 MiB`.
fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    #[test]
    fn describe_shows_each_partition_and_missing_leaders() {
        let topic = TopicInfo {
            name: "orders".to_owned(),
            replication_factor: 3,
            partitions: vec![
                PartitionInfo {
                    partition: 0,
                    leader: Some(2),
                    replicas: vec![1, 2, 3],
                    high_watermark: 120,
                    log_start_offset: 0,
                    first_stored_offset: None,
                    stored_bytes: Some(1536),
                    replica_status: vec![
                        weir_client::ReplicaStatus {
                            node_id: 1,
                            in_sync: true,
                            lag: 0,
                        },
                        weir_client::ReplicaStatus {
                            node_id: 2,
                            in_sync: true,
                            lag: 0,
                        },
                        weir_client::ReplicaStatus {
                            node_id: 3,
                            in_sync: false,
                            lag: 42,
                        },
                    ],
                    failure: None,
                },
                PartitionInfo {
                    partition: 1,
                    leader: None,
                    replicas: vec![2, 3, 1],
                    high_watermark: 7,
                    log_start_offset: 5,
                    first_stored_offset: None,
                    stored_bytes: None,
                    replica_status: Vec::new(),
                    failure: None,
                },
            ],
            configs: HashMap::from([("max.message.bytes".to_owned(), "1000".to_owned())]),
            effective_configs: vec![
                weir_client::ConfigEntry {
                    name: "max.message.bytes".to_owned(),
                    value: "1000".to_owned(),
                    set_on_topic: true,
                },
                weir_client::ConfigEntry {
                    name: "retention.ms".to_owned(),
                    value: "-1".to_owned(),
                    set_on_topic: false,
                },
            ],
            produce_chain: Vec::new(),
            consume_chain: Vec::new(),
        };
        assert_eq!(
            describe(&topic),
            "NAME: orders  PARTITIONS: 2  REPLICATION: 3\n\
             CONFIG: max.message.bytes=1000 (topic)\n\
             CONFIG: retention.ms=-1 (default)\n\
             \n\
             PARTITION  LEADER  REPLICAS  IN-SYNC  HIGH-WATERMARK  LOG-START  STORED\n\
             0          2       1,2,3     1,2      120             0          1.5 KiB\n\
             1          -       2,3,1     ?        7               5          -\n"
        );
    }

    #[test]
    fn describe_lists_each_chain_that_has_modules() {
        use weir_client::{ModuleRef, RejectPolicy};

        let attachment = |module: ModuleRef, path, on_reject| ModuleAttachment {
            module,
            path,
            on_reject,
        };
        let topic = TopicInfo {
            name: "orders".to_owned(),
            replication_factor: 1,
            partitions: Vec::new(),
            configs: HashMap::new(),
            effective_configs: Vec::new(),
            produce_chain: vec![
                attachment(
                    ModuleRef::new("json-validate")
                        .with_version(2)
                        .with_param("required", "id")
                        .with_param("max", "10"),
                    ModulePath::Produce,
                    RejectPolicy::DeadLetter("orders-dlq".to_owned()),
                ),
                attachment(
                    ModuleRef::new("stamp").with_version(1),
                    ModulePath::Produce,
                    RejectPolicy::Reject,
                ),
            ],
            consume_chain: Vec::new(),
        };
        assert_eq!(
            describe(&topic),
            "NAME: orders  PARTITIONS: 0  REPLICATION: 1\n\
             \n\
             PARTITION  LEADER  REPLICAS  IN-SYNC  HIGH-WATERMARK  LOG-START  STORED\n\
             \n\
             Produce chain:\n\
             STAGE  MODULE           PARAMS              ON-REJECT\n\
             1      json-validate@2  required=id,max=10  dead-letter to orders-dlq\n\
             2      stamp@1          -                   reject\n"
        );
        let consume = [attachment(
            ModuleRef::new("filter")
                .with_version(3)
                .with_param("field", "type"),
            ModulePath::Consume,
            RejectPolicy::Reject,
        )];
        assert_eq!(
            chain_section(ModulePath::Consume, &consume),
            "Consume chain:\n\
             STAGE  MODULE    PARAMS\n\
             1      filter@3  field=type\n"
        );
    }
}
