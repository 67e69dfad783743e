//! What a peer does, one file per operation, in the manner of TiKV's raftstore v2. Each
//! file opens with its overview: what is proposed (and checked before it is), what
//! applying does, and what happens after the apply batch is written.
//!
//! - [`command`]: proposing commands and applying committed entries: data writes
//!   (`command/write.rs`), splits (`command/split.rs`) and membership changes
//!   (`command/conf_change.rs`); the proposals waiting for their entries.
//! - [`read`]: linearizable reads: ReadIndex (or the leader lease), then the engine.
//! - [`one_phase`]: when a leader may take a one-phase commit (the reads it must stay
//!   above), and the reads that wait for one in flight.
//! - [`hibernate`]: ticking, and putting an idle region to sleep and waking it.
//! - [`snapshot`]: snapshots the transport lost, and proposals a snapshot overtook.
//! - [`split_check`]: when a leader measures its region and proposes a split.
//! - [`log_gc`]: truncating the Raft log.
//! - [`destroy`]: a peer removed from its region, and failing what waits on a peer.
//!
//! All of them are `impl Peer` blocks over the state in `super::peer`; none of them
//! writes to the disk directly: they put their writes in the batch they are given, and
//! the worker writes it.

mod command;
mod destroy;
mod feed;
mod hibernate;
mod log_gc;
mod one_phase;
mod read;
mod snapshot;
mod split_check;

pub(in crate::store) use command::Proposal;
pub use command::SideEffect;
pub(in crate::store) use one_phase::OnePhaseGuard;
pub(in crate::store) use read::PendingRead;
pub use read::{ReadRequest, ReadResponse};
pub(in crate::store) use split_check::propose_split_if_oversized;
