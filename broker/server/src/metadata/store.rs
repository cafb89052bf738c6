//! The controller state machine as the raft layer drives it: the replicated [`ControllerState`]
//! (cluster metadata, consumer groups' offsets, the producer id counter), its snapshot layout,
//! and the watch channels that publish every change to the rest of the broker.

use std::sync::Arc;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use weir_raft::MetadataState;

use super::bounds::MAX_COMMAND_BYTES;
use super::command::{Applied, Command, CommandError, CommandReply, MAX_PRODUCER_ID_BLOCK};
use super::model::ClusterMetadata;
use crate::groups::GroupOffsets;

/// Everything the controller replicates: the cluster metadata, consumer groups' committed
/// offsets, and the producer id counter. They are published apart, so an offset commit or a
/// new producer does not wake everything that watches topics and placement.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ControllerState {
    /// Nodes, topics, placement, modules.
    pub metadata: ClusterMetadata,
    /// Committed offsets by group.
    pub groups: GroupOffsets,
    /// The producer id the controller issues next: every id below it was issued, none above.
    pub next_producer_id: i64,
}

impl ControllerState {
    /// Issues `count` consecutive producer ids; returns the first and the count.
    fn issue_producer_ids(&mut self, count: u32) -> Result<(i64, u32), CommandError> {
        if count == 0 || count > MAX_PRODUCER_ID_BLOCK {
            return Err(CommandError::Invalid(format!(
                "a block of {count} producer ids: from 1 to {MAX_PRODUCER_ID_BLOCK} may be issued at once"
            )));
        }
        let next = self
            .next_producer_id
            .checked_add(i64::from(count))
            .ok_or_else(|| CommandError::Invalid("every producer id was issued".into()))?;
        let first = std::mem::replace(&mut self.next_producer_id, next);
        Ok((first, count))
    }
}

/// The snapshot layout since consumer groups; before, a snapshot was the bare
/// [`ClusterMetadata`], which [`MetadataStore::restore`] still reads.
#[derive(Serialize)]
struct SnapshotRef<'a> {
    metadata: &'a ClusterMetadata,
    groups: &'a GroupOffsets,
    next_producer_id: i64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Snapshot {
    metadata: ClusterMetadata,
    groups: GroupOffsets,
    /// Absent in snapshots taken before idempotent producers (no id was issued then).
    #[serde(default)]
    next_producer_id: i64,
}

impl ControllerState {
    /// Applies a command to the part it changes. Returns the reply and whether the cluster
    /// metadata and the group offsets changed.
    pub fn apply(&mut self, command: Command) -> (CommandReply, bool, bool) {
        match command {
            Command::Group(command) => {
                let topics = &self.metadata.topics;
                let reply = self
                    .groups
                    .apply(command, |topic| {
                        topics.get(topic).map(|t| t.partitions.len() as u32)
                    })
                    .map(|()| Applied::Done)
                    .map_err(CommandError::Invalid);
                let changed = reply.is_ok();
                (reply, false, changed)
            }
            Command::AllocateProducerId => {
                let reply = self
                    .issue_producer_ids(1)
                    .map(|(id, _)| Applied::ProducerId(id));
                (reply, false, false)
            }
            Command::AllocateProducerIds { count } => {
                let reply = self
                    .issue_producer_ids(count)
                    .map(|(first, count)| Applied::ProducerIds { first, count });
                (reply, false, false)
            }
            Command::DeleteTopic { name } => {
                let reply = self
                    .metadata
                    .apply(Command::DeleteTopic { name: name.clone() });
                let changed = reply.is_ok();
                if changed {
                    self.groups.forget_topic(&name);
                }
                (reply, changed, changed)
            }
            other => (self.metadata.apply(other), true, false),
        }
    }
}

/// The controller state machine as the raft layer sees it: the replicated state plus watch
/// channels that tell the rest of the broker about every change.
pub struct MetadataStore {
    state: ControllerState,
    published: watch::Sender<Arc<ClusterMetadata>>,
    published_groups: watch::Sender<Arc<GroupOffsets>>,
    published_producer_ids: watch::Sender<i64>,
}

/// Receivers of the controller state's changes.
pub struct MetadataReceivers {
    /// The cluster metadata.
    pub metadata: watch::Receiver<Arc<ClusterMetadata>>,
    /// Consumer groups' committed offsets.
    pub groups: watch::Receiver<Arc<GroupOffsets>>,
    /// The next producer id the controller will issue.
    pub next_producer_id: watch::Receiver<i64>,
}

impl MetadataStore {
    /// An empty store and receivers of its changes.
    pub fn new() -> (Self, MetadataReceivers) {
        let (published, metadata) = watch::channel(Arc::new(ClusterMetadata::default()));
        let (published_groups, groups) = watch::channel(Arc::new(GroupOffsets::default()));
        let (published_producer_ids, next_producer_id) = watch::channel(0);
        (
            Self {
                state: ControllerState::default(),
                published,
                published_groups,
                published_producer_ids,
            },
            MetadataReceivers {
                metadata,
                groups,
                next_producer_id,
            },
        )
    }

    fn publish(&self, metadata: bool, groups: bool) {
        let next_producer_id = self.state.next_producer_id;
        self.published_producer_ids.send_if_modified(|published| {
            let changed = *published != next_producer_id;
            *published = next_producer_id;
            changed
        });
        if metadata {
            self.published
                .send_replace(Arc::new(self.state.metadata.clone()));
        }
        if groups {
            self.published_groups
                .send_replace(Arc::new(self.state.groups.clone()));
        }
    }
}

impl MetadataState for MetadataStore {
    fn apply(&mut self, command: &[u8]) -> Bytes {
        let decoded = if command.len() > MAX_COMMAND_BYTES {
            Err(format!(
                "the command is {} bytes; the limit is {MAX_COMMAND_BYTES}",
                command.len()
            ))
        } else {
            serde_json::from_slice::<Command>(command).map_err(|e| e.to_string())
        };
        let reply: CommandReply = match decoded {
            Ok(command) => {
                let (reply, metadata, groups) = self.state.apply(command);
                self.publish(metadata, groups);
                reply
            }
            Err(e) => Err(CommandError::Invalid(e)),
        };
        Bytes::from(serde_json::to_vec(&reply).unwrap_or_default())
    }

    fn snapshot(&self) -> Bytes {
        let snapshot = SnapshotRef {
            metadata: &self.state.metadata,
            groups: &self.state.groups,
            next_producer_id: self.state.next_producer_id,
        };
        Bytes::from(serde_json::to_vec(&snapshot).unwrap_or_default())
    }

    fn restore(&mut self, snapshot: &[u8]) -> Result<(), String> {
        self.state = match serde_json::from_slice::<Snapshot>(snapshot) {
            Ok(Snapshot {
                metadata,
                groups,
                next_producer_id,
            }) => ControllerState {
                metadata,
                groups,
                next_producer_id,
            },
            Err(e) => match serde_json::from_slice::<ClusterMetadata>(snapshot) {
                Ok(metadata) => ControllerState {
                    metadata,
                    groups: GroupOffsets::default(),
                    next_producer_id: 0,
                },
                Err(_) => return Err(e.to_string()),
            },
        };
        self.publish(true, true);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::groups::GroupCommand;
    use crate::metadata::command::tests::{cluster, create, topic};
    use crate::metadata::{NodeInfo, decode_reply, encode_command};

    #[test]
    fn store_round_trips_through_snapshot_and_garbage_is_refused() {
        let (mut store, rx) = MetadataStore::new();
        let reply = decode_reply(&store.apply(&encode_command(&Command::Bootstrap {
            cluster_id: "x".into(),
        })));
        assert_eq!(reply, Ok(Applied::Done));
        store.apply(&encode_command(&Command::RegisterNode(NodeInfo {
            id: 1,
            address: "a".into(),
            warnings: Vec::new(),
        })));
        store.apply(&encode_command(&create("t", 2, 1)));
        assert!(rx.metadata.borrow().topics.contains_key(&topic("t")));
        let commit = Command::Group(GroupCommand::Commit {
            group: "g".parse().unwrap(),
            offsets: vec![(
                topic("t"),
                1,
                crate::groups::CommittedOffset {
                    offset: 7,
                    metadata: String::new(),
                    committed_at_ms: 1,
                },
            )],
        });
        assert_eq!(
            decode_reply(&store.apply(&encode_command(&commit))),
            Ok(Applied::Done)
        );
        assert_eq!(
            rx.groups
                .borrow()
                .offset(&"g".parse().unwrap(), &topic("t"), 1)
                .map(|c| c.offset),
            Some(7)
        );
        let garbage = decode_reply(&store.apply(b"{not json"));
        assert!(matches!(garbage, Err(CommandError::Invalid(_))));

        let (mut restored, rx2) = MetadataStore::new();
        restored.restore(&store.snapshot()).unwrap();
        assert_eq!(restored.state, store.state);
        assert_eq!(*rx2.metadata.borrow().as_ref(), store.state.metadata);
        assert_eq!(*rx2.groups.borrow().as_ref(), store.state.groups);
        assert!(restored.restore(b"nope").is_err());
    }

    #[test]
    fn a_snapshot_written_before_consumer_groups_still_restores() {
        let mut metadata = cluster(1);
        metadata.apply(create("t", 1, 1)).unwrap();
        let old = serde_json::to_vec(&metadata).unwrap();
        let (mut store, _rx) = MetadataStore::new();
        store.restore(&old).unwrap();
        assert_eq!(store.state.metadata, metadata);
        assert_eq!(store.state.groups, GroupOffsets::default());
    }

    #[test]
    fn producer_ids_are_issued_once_and_survive_a_snapshot() {
        let (mut store, receivers) = MetadataStore::new();
        let allocate = encode_command(&Command::AllocateProducerId);
        let ids: Vec<CommandReply> = (0..3)
            .map(|_| decode_reply(&store.apply(&allocate)))
            .collect();
        assert_eq!(
            ids,
            [
                Ok(Applied::ProducerId(0)),
                Ok(Applied::ProducerId(1)),
                Ok(Applied::ProducerId(2))
            ]
        );
        assert_eq!(*receivers.next_producer_id.borrow(), 3);
        let snapshot = store.snapshot();
        let (mut restored, restored_receivers) = MetadataStore::new();
        restored.restore(&snapshot).unwrap();
        assert_eq!(*restored_receivers.next_producer_id.borrow(), 3);
        assert_eq!(
            decode_reply(&restored.apply(&allocate)),
            Ok(Applied::ProducerId(3)),
            "never reused after a restore"
        );
    }

    #[test]
    fn producer_ids_are_issued_in_blocks_that_never_overlap() {
        let (mut store, receivers) = MetadataStore::new();
        let block = |count| encode_command(&Command::AllocateProducerIds { count });
        assert_eq!(
            decode_reply(&store.apply(&block(1000))),
            Ok(Applied::ProducerIds {
                first: 0,
                count: 1000
            })
        );
        assert_eq!(
            decode_reply(&store.apply(&encode_command(&Command::AllocateProducerId))),
            Ok(Applied::ProducerId(1000)),
            "a single id, as logs written before blocks hold, comes after the block"
        );
        for refused in [0, MAX_PRODUCER_ID_BLOCK + 1] {
            assert!(
                matches!(
                    decode_reply(&store.apply(&block(refused))),
                    Err(CommandError::Invalid(_))
                ),
                "a block of {refused}"
            );
        }
        assert_eq!(
            *receivers.next_producer_id.borrow(),
            1001,
            "refusals issue nothing"
        );
        assert_eq!(
            decode_reply(&store.apply(&block(5))),
            Ok(Applied::ProducerIds {
                first: 1001,
                count: 5
            })
        );
        store.state.next_producer_id = i64::MAX - 2;
        assert!(matches!(
            decode_reply(&store.apply(&block(3))),
            Err(CommandError::Invalid(_))
        ));
        assert_eq!(store.state.next_producer_id, i64::MAX - 2);
    }

    #[test]
    fn deleting_a_topic_drops_group_offsets_for_it() {
        let mut state = ControllerState {
            metadata: cluster(1),
            groups: GroupOffsets::default(),
            next_producer_id: 0,
        };
        state.apply(create("t", 1, 1)).0.unwrap();
        let offset = crate::groups::CommittedOffset {
            offset: 1,
            metadata: String::new(),
            committed_at_ms: 1,
        };
        let commit = |t: &str| {
            Command::Group(GroupCommand::Commit {
                group: "g".parse().unwrap(),
                offsets: vec![(topic(t), 0, offset.clone())],
            })
        };
        let (reply, metadata_changed, groups_changed) = state.apply(commit("t"));
        assert_eq!(
            (reply, metadata_changed, groups_changed),
            (Ok(Applied::Done), false, true)
        );
        // A commit for a topic that does not exist stores nothing.
        assert!(state.apply(commit("nope")).0.is_err());
        state
            .apply(Command::DeleteTopic { name: topic("t") })
            .0
            .unwrap();
        assert!(state.groups.group(&"g".parse().unwrap()).is_none());
    }
}
