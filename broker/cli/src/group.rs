//! `weir group`: list, describe, reset the offsets of and delete consumer groups, in the spirit
//! of `kafka-consumer-groups.sh` and `rpk group`.

use anyhow::Context;
use clap::{ArgGroup, Subcommand};
use weir_client::{Client, ResetTo};

use crate::table;

/// A consumer group command.
#[derive(Debug, Subcommand)]
pub enum GroupCommand {
    /// List groups with members or committed offsets.
    List,
    /// Show a group's members and, per partition, its committed offset, the end of the log,
    /// the lag and the owning member.
    Describe {
        /// Group name.
        group: String,
    },
    /// Move a group's committed offsets for one topic. The group must have no live members.
    /// Prints the new offsets; without --execute nothing is changed (a dry run), as with
    /// Kafka's tool.
    #[command(group(ArgGroup::new("to").required(true).args(["to_earliest", "to_latest", "to_offset", "shift_by", "to_timestamp"])))]
    ResetOffsets {
        /// Group name.
        group: String,
        /// The topic whose offsets move.
        #[arg(long)]
        topic: String,
        /// Only these partitions (repeatable); all of the topic's by default.
        #[arg(short, long = "partition", value_name = "P")]
        partitions: Vec<u32>,
        /// To each partition's first stored record.
        #[arg(long)]
        to_earliest: bool,
        /// To each partition's end: skip everything stored.
        #[arg(long)]
        to_latest: bool,
        /// To this offset.
        #[arg(long, value_name = "N")]
        to_offset: Option<u64>,
        /// By this many records (negative: back), clamped to the stored range.
        #[arg(long, value_name = "N", allow_negative_numbers = true)]
        shift_by: Option<i64>,
        /// To the first record at or after this time, in milliseconds since the Unix epoch.
        #[arg(long, value_name = "MS")]
        to_timestamp: Option<i64>,
        /// Commit the new offsets (otherwise only print them).
        #[arg(long)]
        execute: bool,
    },
    /// Delete a group without members, with its committed offsets.
    Delete {
        /// Group name.
        group: String,
    },
}

impl GroupCommand {
    /// Runs the command against `client`, printing its result to stdout.
    pub async fn run(self, client: &Client) -> anyhow::Result<()> {
        match self {
            Self::List => {
                let groups = client.list_groups().await.context("cannot list groups")?;
                let rows: Vec<[String; 3]> = groups
                    .into_iter()
                    .map(|g| [g.group, g.state, g.members.to_string()])
                    .collect();
                print!("{}", table::render(["GROUP", "STATE", "MEMBERS"], &rows));
            }
            Self::Describe { group } => {
                let info = client
                    .describe_group(&group)
                    .await
                    .with_context(|| format!("cannot describe group '{group}'"))?;
                println!("group: {}", info.group);
                println!("state: {}", info.state);
                if !info.members.is_empty() {
                    println!("assignor: {}", info.assignor);
                    println!("generation: {}", info.generation);
                }
                println!();
                let dash = || "-".to_owned();
                let rows: Vec<[String; 6]> = info
                    .partitions
                    .iter()
                    .map(|p| {
                        [
                            p.partition.topic.clone(),
                            p.partition.partition.to_string(),
                            p.committed_offset.map_or_else(dash, |o| o.to_string()),
                            p.high_watermark.map_or_else(dash, |o| o.to_string()),
                            p.lag.map_or_else(dash, |o| o.to_string()),
                            p.member_id.clone().unwrap_or_else(dash),
                        ]
                    })
                    .collect();
                print!(
                    "{}",
                    table::render(
                        [
                            "TOPIC",
                            "PARTITION",
                            "COMMITTED",
                            "HIGH-WATERMARK",
                            "LAG",
                            "MEMBER"
                        ],
                        &rows
                    )
                );
                if !info.members.is_empty() {
                    println!();
                    let rows: Vec<[String; 4]> = info
                        .members
                        .iter()
                        .map(|m| {
                            [
                                m.member_id.clone(),
                                m.client_address.clone(),
                                m.topics.join(","),
                                m.assignment
                                    .iter()
                                    .map(ToString::to_string)
                                    .collect::<Vec<_>>()
                                    .join(","),
                            ]
                        })
                        .collect();
                    print!(
                        "{}",
                        table::render(["MEMBER", "ADDRESS", "TOPICS", "PARTITIONS"], &rows)
                    );
                }
            }
            Self::ResetOffsets {
                group,
                topic,
                partitions,
                to_earliest,
                to_latest,
                to_offset,
                shift_by,
                to_timestamp,
                execute,
            } => {
                let to = match (to_earliest, to_latest, to_offset, shift_by, to_timestamp) {
                    (true, ..) => ResetTo::Earliest,
                    (_, true, ..) => ResetTo::Latest,
                    (_, _, Some(offset), ..) => ResetTo::Offset(offset),
                    (_, _, _, Some(shift), _) => ResetTo::ShiftBy(shift),
                    (_, _, _, _, Some(ms)) => ResetTo::Timestamp(ms),
                    // clap requires one of them.
                    _ => anyhow::bail!("say where to reset to"),
                };
                let offsets = client
                    .reset_group_offsets(&group, &topic, &partitions, to, !execute)
                    .await
                    .with_context(|| format!("cannot reset the offsets of group '{group}'"))?;
                let rows: Vec<[String; 3]> = offsets
                    .into_iter()
                    .map(|c| {
                        [
                            c.partition.topic,
                            c.partition.partition.to_string(),
                            c.offset.to_string(),
                        ]
                    })
                    .collect();
                print!(
                    "{}",
                    table::render(["TOPIC", "PARTITION", "NEW-OFFSET"], &rows)
                );
                if !execute {
                    eprintln!("dry run: nothing changed; add --execute to commit these offsets");
                }
            }
            Self::Delete { group } => {
                client
                    .delete_group(&group)
                    .await
                    .with_context(|| format!("cannot delete group '{group}'"))?;
                println!("deleted group {group}");
            }
        }
        Ok(())
    }
}
