//! Per-replica configuration of the Raft core.
//!
//! Time is counted in ticks: the caller decides how long a tick is and calls
//! [`RawNode::tick`](super::RawNode::tick) at that rate. Nothing here reads a clock. The
//! leader lease may instead be measured on the application's monotonic clock
//! ([`LeaseClock::Observed`]), whose readings the application hands over.

use super::errors::{ConfigError, Result};

/// How a linearizable read is confirmed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadMode {
    /// ReadIndex: the leader records its commit index and confirms it is still the leader
    /// with one heartbeat round acknowledged by a quorum. Always safe.
    Safe,
    /// Leader lease: while a quorum acknowledged a heartbeat round sent less than
    /// [`Config::lease_ticks`] ticks ago (measured on the [`LeaseClock`]), the leader
    /// answers at once.
    /// Falls back to [`ReadMode::Safe`] when the lease has lapsed. Sound only if no
    /// replica's clock runs more than `max_clock_drift_ticks` ticks per election timeout
    /// slower or faster than another's.
    Lease,
}

/// What the leader lease is measured on.
///
/// Elections may count ticks: a late tick only delays a campaign, which is safe. A lease
/// counted in ticks is not: a leader whose process is paused (SIGSTOP, a VM freeze, a
/// starved ticker) stops ticking while its followers elect another leader that takes
/// writes, and on resuming it would answer reads from a lease that ended long ago.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseClock {
    /// The lease advances with [`RawNode::tick`](super::RawNode::tick). Sound only where
    /// ticks are time itself (the deterministic simulator and the core's tests).
    Ticks,
    /// The lease is measured on the readings of the application's monotonic clock,
    /// handed over by [`RawNode::observe_time`](super::RawNode::observe_time);
    /// `tick_length` is how many of the clock's units one tick is meant to last (for
    /// microseconds and 100 ms ticks, 100,000). The application must report the time
    /// after it received a read and before it asks for it, and before every tick.
    Observed { tick_length: u64 },
}

/// Configuration of one replica.
#[derive(Debug, Clone)]
pub struct Config {
    /// This replica's id; never 0.
    pub id: u64,
    /// Ticks without hearing from a leader before a follower campaigns. The actual
    /// timeout is drawn from `[election_ticks, 2 * election_ticks)` after every reset.
    pub election_ticks: u64,
    /// Ticks between a leader's heartbeat rounds; must be below `election_ticks`.
    pub heartbeat_ticks: u64,
    /// Upper bound on the encoded size of entries in one append message (at least one
    /// entry is always sent).
    pub max_size_per_msg: u64,
    /// How many append messages may be in flight to one follower in replicate mode.
    pub max_inflight_msgs: usize,
    /// Campaign in two phases so that a replica rejoining after a partition does not
    /// disrupt a healthy leader by raising the term.
    pub pre_vote: bool,
    /// A leader that has not heard from a quorum within an election timeout steps down,
    /// and voters ignore campaigns while they hear from a leader. Needed for lease reads.
    pub check_quorum: bool,
    /// Assumed bound on clock drift between replicas, in ticks per election timeout. The
    /// leader lease is `election_ticks - max_clock_drift_ticks` ticks long.
    pub max_clock_drift_ticks: u64,
    /// What the leader lease is measured on.
    pub lease_clock: LeaseClock,
    /// The highest index the application has applied; entries after it are handed out
    /// again on restart. The configuration in [`RaftState::conf_state`] must be the one
    /// in effect at this index, since membership changes at or below it are not handed
    /// out again.
    ///
    /// [`RaftState::conf_state`]: super::RaftState::conf_state
    pub applied: u64,
    /// Seed for the randomized election timeouts. The core has no other randomness.
    pub random_seed: u64,
    /// The replica belongs to a group created just now (bootstrap, split, or a new peer
    /// added empty), so it cannot have acknowledged a leader in an earlier life. It may
    /// vote at once. Otherwise a starting replica ignores campaigns for one election
    /// timeout: before a crash it may have acknowledged a leader's lease that it no
    /// longer remembers, and voting early could let a second leader in while that lease
    /// still holds.
    pub new_group: bool,
}

impl Config {
    /// A configuration with the usual defaults: election after 10 ticks, heartbeat every
    /// 2, PreVote and CheckQuorum on.
    pub fn new(id: u64) -> Config {
        Config {
            id,
            election_ticks: 10,
            heartbeat_ticks: 2,
            max_size_per_msg: 1024 * 1024,
            max_inflight_msgs: 256,
            pre_vote: true,
            check_quorum: true,
            max_clock_drift_ticks: 2,
            lease_clock: LeaseClock::Ticks,
            applied: 0,
            random_seed: id,
            new_group: false,
        }
    }

    /// Checks the configuration for internal consistency.
    pub(crate) fn validate(&self) -> Result<()> {
        if self.id == 0 {
            return Err(ConfigError::ZeroId.into());
        }
        if self.heartbeat_ticks == 0 {
            return Err(ConfigError::ZeroHeartbeatTicks.into());
        }
        if self.election_ticks <= self.heartbeat_ticks {
            return Err(ConfigError::ElectionNotAboveHeartbeat {
                election_ticks: self.election_ticks,
                heartbeat_ticks: self.heartbeat_ticks,
            }
            .into());
        }
        if self.max_inflight_msgs == 0 {
            return Err(ConfigError::ZeroInflight.into());
        }
        if self.max_clock_drift_ticks + 1 >= self.election_ticks {
            return Err(ConfigError::DriftLeavesNoLease {
                max_clock_drift_ticks: self.max_clock_drift_ticks,
                election_ticks: self.election_ticks,
            }
            .into());
        }
        if self.lease_clock == (LeaseClock::Observed { tick_length: 0 }) {
            return Err(ConfigError::ZeroTickLength.into());
        }
        Ok(())
    }

    /// Length of the leader lease on the [`LeaseClock`]: [`Config::lease_ticks`] ticks,
    /// in the clock's units.
    pub(crate) fn lease_length(&self) -> u64 {
        match self.lease_clock {
            LeaseClock::Ticks => self.lease_ticks(),
            LeaseClock::Observed { tick_length } => self.lease_ticks().saturating_mul(tick_length),
        }
    }

    /// Length of the leader lease in ticks: `election_ticks - max_clock_drift_ticks - 1`.
    ///
    /// A voter that acknowledged a heartbeat ignores campaigns for `election_ticks` of its
    /// own ticks after receiving it, but the first of those may come at once, so it is
    /// protected only `election_ticks - 1` tick intervals after the heartbeat was sent.
    /// The leader counts from the tick before it sent; drift takes the rest.
    pub(crate) fn lease_ticks(&self) -> u64 {
        self.election_ticks - self.max_clock_drift_ticks - 1
    }
}
