//! Errors of the placement driver's API. Each says what the caller should do: go to the
//! leader, register first, wait for the cluster to bootstrap, or fix the request; and
//! [`PdError::retry`] says, per variant, whether sending the same request again can
//! succeed.
//!
//! Every variant is typed. Text remains only in the `Remote` variants: what a driver in
//! another process wrote, decoded from the wire, where it travels as text.

use tessera_engine::raft::OpaqueError;
use tessera_engine::storage::EngineError;
use tessera_engine::store::{Retry, StoreError};
use thiserror::Error;

use crate::proto::RegionRoute;

#[derive(Debug, Clone, PartialEq, Error)]
pub enum PdError {
    /// Only the leader of the driver's Raft group answers; `leader` is its member id
    /// when known.
    #[error(
        "this placement driver replica is not the leader (the leader: {})",
        leader.map_or("not known here".to_string(), |id| format!("member {id}"))
    )]
    NotLeader { leader: Option<u64> },
    #[error("the cluster is not bootstrapped yet: it waits for enough stores to register")]
    NotBootstrapped,
    #[error("store {0} is not registered")]
    UnknownStore(u64),
    #[error("store {0} was removed from the cluster")]
    StoreRemoved(u64),
    #[error("region {0} is unknown to the placement driver")]
    UnknownRegion(u64),
    #[error("address {address} is already registered by store {store_id}")]
    DuplicateAddress { address: String, store_id: u64 },
    #[error("invalid request: {0}")]
    InvalidArgument(InvalidRequest),
    /// The region already has an operator in flight.
    #[error("region {} is busy with another operator", .0.region.as_ref().map_or(0, |r| r.id))]
    RegionBusy(Box<RegionRoute>),
    /// The metadata's store refused the change for good (an invalid membership change):
    /// no retry of it can succeed.
    #[error("the placement driver's store refused the change: {0}")]
    Refused(#[source] StoreError),
    /// The change could not be replicated (no quorum, leadership lost, timeout); it may
    /// or may not have happened.
    #[error("the placement driver is unavailable: {0}")]
    Unavailable(Unavailability),
    #[error("corrupt placement metadata: {0}")]
    Corrupt(Corruption),
}

impl PdError {
    /// Whether sending the same request again can succeed; see each variant's arm.
    pub fn retry(&self) -> Retry {
        match self {
            // At the leader, once bootstrapped, once the operator in flight ends.
            PdError::NotLeader { .. } | PdError::NotBootstrapped | PdError::RegionBusy(_) => Retry::Possible,
            // Every call of the driver's API may apply twice without harm (a store
            // registers under the same id, a member joins with the same token; ids
            // allocated twice are skipped), so one whose outcome is unknown is sent again.
            PdError::Unavailable(_) => Retry::Possible,
            // The request names what does not exist, or is wrong, or was refused.
            PdError::UnknownStore(_)
            | PdError::StoreRemoved(_)
            | PdError::UnknownRegion(_)
            | PdError::DuplicateAddress { .. }
            | PdError::InvalidArgument(_)
            | PdError::Refused(_)
            | PdError::Corrupt(_) => Retry::Never,
        }
    }

    /// Whether the same request, sent again, may succeed.
    pub fn is_retryable(&self) -> bool {
        self.retry() == Retry::Possible
    }

    /// A refusal of the metadata's store as the driver's callers see it: a redirect to
    /// the leader, a refusal for good, or unavailability for the rest.
    pub fn from_store(error: StoreError) -> PdError {
        match error {
            StoreError::NotLeader { leader, .. } => PdError::NotLeader { leader: leader.map(|p| p.id) },
            error if error.retry() == Retry::Never => PdError::Refused(error),
            error => PdError::Unavailable(Unavailability::Store(error)),
        }
    }
}

/// What is wrong with a request to the driver.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum InvalidRequest {
    #[error("a store must give its address")]
    MissingStoreAddress,
    #[error("a store's addresses are at most {max} bytes, not {bytes}")]
    StoreAddressLength { bytes: usize, max: usize },
    #[error("a store has at most {max} labels, not {count}")]
    StoreLabelCount { count: usize, max: usize },
    #[error("a store label's name is 1 to {max_name} bytes and its value at most {max_value}: {name:?}")]
    StoreLabel { name: String, max_name: usize, max_value: usize },
    #[error("a service holding garbage collection is named with 1 to 128 bytes, not {bytes}")]
    ServiceName { bytes: usize },
    #[error("a hold on garbage collection lasts 1 ms to 10 minutes between renewals, not {ttl_ms} ms")]
    HoldTtl { ttl_ms: u64 },
    #[error("region heartbeat from store {store_id}: {defect}")]
    Heartbeat { store_id: u64, defect: HeartbeatDefect },
    #[error("ids are handed out 1 to {max} at a time, not {count}")]
    IdCount { count: u32, max: u32 },
    #[error("timestamps are handed out 1 to {max} at a time, not {count}")]
    TimestampCount { count: u32, max: u32 },
    #[error("the start of a range is after its end")]
    InvertedRange,
    #[error("the empty key starts the key space: nothing to split")]
    SplitAtEmptyKey,
    #[error("region {region_id} has no voter on store {store_id} to lead it")]
    NoVoterOnStore { region_id: u64, store_id: u64 },
    #[error("region {region_id} has no replica on store {store_id}")]
    NoReplicaOnStore { region_id: u64, store_id: u64 },
    #[error("region {region_id} already has a replica on store {store_id}")]
    ReplicaOnStore { region_id: u64, store_id: u64 },
    #[error("region {region_id} has no other voter to lead it")]
    NoOtherVoter { region_id: u64 },
    #[error(
        "removing store {store_id} would leave region {region_id} with {alive} of its {voters} voters on \
         stores that are up, too few to agree on replacing any: bring a store back first"
    )]
    RemovalBreaksQuorum { store_id: u64, region_id: u64, alive: usize, voters: usize },
    #[error("a member's address is 1 to {max} bytes, not {bytes}")]
    AddressLength { bytes: usize, max: usize },
    #[error("a join token is 1 to {max} bytes, not {bytes}")]
    TokenLength { bytes: usize, max: usize },
    #[error(
        "{address} is member {member_id}'s address: a replica that lost its data joins from another \
         address (members cannot be removed yet)"
    )]
    AddressTaken { address: String, member_id: u64 },
    #[error(
        "the founding members' ids (up to {highest}) are far above the ids handed out ({first}): found \
         drivers with small member ids"
    )]
    MemberIdsAboveAllocator { highest: u64, first: u64 },
    #[error("member {member} is not among the members {members:?}")]
    NotAFoundingMember { member: u64, members: Vec<u64> },
    #[error("bad driver address {address}")]
    BadAddress { address: String },
    #[error(
        "a garbage-collection safe point at {safe_point_ms} ms is within the lifetime of versions: \
         it must be at or before {latest_ms} ms"
    )]
    SafePointTooRecent { safe_point_ms: u64, latest_ms: u64 },
    /// A driver's refusal decoded from the wire, in its words: free-form text from
    /// another process.
    #[error("{0}")]
    Remote(String),
}

/// What is wrong with a region heartbeat.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum HeartbeatDefect {
    #[error("no region")]
    NoRegion,
    #[error("no leader")]
    NoLeader,
    #[error("the leader is not this store's peer of the region")]
    LeaderNotOnStore,
    #[error("the region's range is empty or inverted")]
    EmptyRange,
}

/// Why the driver cannot serve now.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum Unavailability {
    /// The metadata's store could not serve (a transient refusal, a failure to start).
    #[error(transparent)]
    Store(StoreError),
    #[error(transparent)]
    Storage(#[from] EngineError),
    #[error("timed out waiting for the {0}")]
    TimedOut(MetadataOperation),
    #[error("no answer to the update of a high-water mark")]
    NoAnswerToMarkUpdate,
    #[error("a scan answered with a single value")]
    ScanAnsweredValue,
    #[error("another leader reserved ids meanwhile")]
    IdsReservedMeanwhile,
    /// The wall clock reached the persisted timestamp mark before the leader moved it
    /// (a slow Raft round trip, or a clock that jumped ahead); the background loop
    /// moves it within a tick.
    #[error("the timestamp window persisted up to {mark_milliseconds} ms is used up; retry")]
    TimestampWindowUsedUp { mark_milliseconds: u64 },
    /// The timestamp mark was found moved (by another leader, or by a write of this
    /// one that timed out yet committed); the oracle starts over from it.
    #[error("the timestamp mark moved meanwhile; retry")]
    TimestampMarkMovedMeanwhile,
    /// The garbage-collection safe point was found moved by another leader.
    #[error("the garbage-collection safe point moved meanwhile; retry")]
    SafePointMovedMeanwhile,
    #[error("the garbage-collection fence moved meanwhile; retry")]
    GcFenceMovedMeanwhile,
    /// Callers asked for timestamps faster than the logical counter can carry them
    /// without running ahead of the wall clock.
    #[error("timestamps would run ahead of the clock (to {physical_milliseconds} ms); retry")]
    TimestampsAheadOfClock { physical_milliseconds: u64 },
    /// This replica leads the driver, but its oracle does not serve yet (it is moving
    /// its mark) or its lease lapsed for a moment.
    #[error("the timestamp oracle of the leader is not serving yet; retry")]
    TimestampOracleNotReady,
    #[error("the id allocator handed out nothing above member {highest}")]
    NoIdAbove { highest: u64 },
    #[error(
        "member {member_id} has no recorded address yet (a replica listening on an unspecified address \
         such as 0.0.0.0 never has one); retry once it is recorded"
    )]
    NoRecordedAddress { member_id: u64 },
    /// A gap in the region map only exists while a split's halves are being reported.
    #[error("no region holds {} right now; retry", tessera_engine::region::DisplayKey(.key))]
    NoRegionHolds { key: Vec<u8> },
    #[error("cannot start the {thread} thread: {source}")]
    ThreadSpawn {
        thread: &'static str,
        #[source]
        source: OpaqueError,
    },
    #[error("no placement driver replica answered")]
    NoReplicaAnswered,
    /// The node that made the call is stopping; calls in flight are abandoned.
    #[error("this node is stopping: its call to the placement driver was abandoned")]
    Stopping,
    /// Decoded from the wire (or a status without a typed failure), in the words of the
    /// other end: free-form text from another process.
    #[error("{0}")]
    Remote(String),
}

/// An operation on the driver's metadata region.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetadataOperation {
    Write,
    Read,
    MembershipChange,
}

impl std::fmt::Display for MetadataOperation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            MetadataOperation::Write => "metadata write",
            MetadataOperation::Read => "metadata read",
            MetadataOperation::MembershipChange => "change of the driver's membership",
        })
    }
}

/// What is wrong with the metadata as stored.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum Corruption {
    #[error("{}: {source}", String::from_utf8_lossy(.key))]
    Undecodable {
        key: Vec<u8>,
        #[source]
        source: prost::DecodeError,
    },
    #[error("unknown key {}", String::from_utf8_lossy(.key))]
    UnknownKey { key: Vec<u8> },
    #[error("an id of {bytes} bytes")]
    IdLength { bytes: usize },
    #[error("a timestamp mark of {milliseconds} ms, past what a timestamp holds")]
    TimestampMark { milliseconds: u64 },
    /// Decoded from the wire, in the words of the driver that found it.
    #[error("{0}")]
    Remote(String),
}

impl From<InvalidRequest> for PdError {
    fn from(invalid: InvalidRequest) -> PdError {
        PdError::InvalidArgument(invalid)
    }
}

impl From<Unavailability> for PdError {
    fn from(unavailability: Unavailability) -> PdError {
        PdError::Unavailable(unavailability)
    }
}

impl From<Corruption> for PdError {
    fn from(corruption: Corruption) -> PdError {
        PdError::Corrupt(corruption)
    }
}
