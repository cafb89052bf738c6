//! Consumer groups: live membership and partition assignment on the coordinator, and the
//! committed offsets replicated through the controller (docs/consumer-groups.md).

mod assignor;
mod coordinator;
pub(crate) mod expiry;
mod offsets;

pub(crate) use assignor::{Assignor, TopicPartition};
pub(crate) use coordinator::{Coordinator, GroupState, LiveGroup, Member, unknown_member};
pub use offsets::{CommittedOffset, GroupCommand, GroupOffsets};
