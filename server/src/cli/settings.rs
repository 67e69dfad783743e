//! The tuning sections of the configuration file: `[store.raft]` (how a store runs its
//! regions), `[pd.schedule]` (when the placement driver declares stores down and
//! replaces their replicas, and what its schedulers do) and `[pd.transactions]` (the
//! driver's part in transactions: its timestamp oracle). Every setting is optional; an
//! absent one keeps the default of the engine's `StoreConfig` or the driver's
//! `DriverConfig` and `SchedulerConfig`, which `ops/tessera.example.toml` lists (a test
//! checks that the example and the defaults agree).
//!
//! This module owns the names, units and validation of the settings; it never decides
//! a default of its own.

use std::time::Duration;

use anyhow::bail;
use serde::Deserialize;
use tessera_engine::store::StoreConfig;
use tessera_placement::DriverConfig;
use tessera_placement::driver::{MAX_TIMESTAMP_WINDOW, MIN_TIMESTAMP_WINDOW};

/// `[store.raft]`.
#[derive(Debug, Default, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RaftSection {
    pub workers: Option<usize>,
    pub tick_interval_ms: Option<u64>,
    pub election_ticks: Option<u64>,
    pub heartbeat_ticks: Option<u64>,
    pub hibernate_after_ticks: Option<u64>,
    pub log_gc_interval_ticks: Option<u64>,
    pub log_gc_max_lag: Option<u64>,
    pub split_check_interval_ticks: Option<u64>,
    pub sync_log: Option<bool>,
    pub leader_missing_report_ticks: Option<u64>,
}

/// `[pd.schedule]`.
#[derive(Debug, Default, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct ScheduleSection {
    pub store_down_after_seconds: Option<u64>,
    pub down_grace_seconds: Option<u64>,
    pub operator_timeout_seconds: Option<u64>,
    pub schedule_interval_ms: Option<u64>,
    pub replica_repair: Option<bool>,
    pub balance_region: Option<bool>,
    pub region_tolerance: Option<u64>,
    pub balance_leader: Option<bool>,
    pub leader_tolerance: Option<u64>,
    pub hot_region: Option<bool>,
    pub hot_region_min_bytes_per_sec: Option<u64>,
    pub hot_tolerance_ratio: Option<f64>,
    pub location_labels: Option<Vec<String>>,
}

/// `[pd.transactions]`.
#[derive(Debug, Default, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct TransactionsSection {
    pub timestamp_window_ms: Option<u64>,
    pub gc_lifetime_ms: Option<u64>,
    pub gc_interval_ms: Option<u64>,
}

fn set<T>(target: &mut T, value: Option<T>) {
    if let Some(value) = value {
        *target = value;
    }
}

impl RaftSection {
    /// The settings not given (a new field must be listed here: the pattern is
    /// exhaustive, so that the example's completeness check cannot miss it).
    #[cfg(test)]
    pub(crate) fn missing(&self) -> Vec<&'static str> {
        let RaftSection {
            workers,
            tick_interval_ms,
            election_ticks,
            heartbeat_ticks,
            hibernate_after_ticks,
            log_gc_interval_ticks,
            log_gc_max_lag,
            split_check_interval_ticks,
            sync_log,
            leader_missing_report_ticks,
        } = self;
        let given = [
            ("workers", workers.is_some()),
            ("tick_interval_ms", tick_interval_ms.is_some()),
            ("election_ticks", election_ticks.is_some()),
            ("heartbeat_ticks", heartbeat_ticks.is_some()),
            ("hibernate_after_ticks", hibernate_after_ticks.is_some()),
            ("log_gc_interval_ticks", log_gc_interval_ticks.is_some()),
            ("log_gc_max_lag", log_gc_max_lag.is_some()),
            ("split_check_interval_ticks", split_check_interval_ticks.is_some()),
            ("sync_log", sync_log.is_some()),
            ("leader_missing_report_ticks", leader_missing_report_ticks.is_some()),
        ];
        given.into_iter().filter(|(_, given)| !given).map(|(name, _)| name).collect()
    }

    /// Applies the settings given to `config`; an invalid combination is refused by name.
    pub(crate) fn apply(&self, config: &mut StoreConfig) -> anyhow::Result<()> {
        set(&mut config.workers, self.workers);
        set(&mut config.tick_interval, self.tick_interval_ms.map(Duration::from_millis));
        set(&mut config.election_ticks, self.election_ticks);
        set(&mut config.heartbeat_ticks, self.heartbeat_ticks);
        set(&mut config.hibernate_after_ticks, self.hibernate_after_ticks);
        set(&mut config.log_gc_interval_ticks, self.log_gc_interval_ticks);
        set(&mut config.log_gc_max_lag, self.log_gc_max_lag);
        set(&mut config.split_check_interval_ticks, self.split_check_interval_ticks);
        set(&mut config.sync_log, self.sync_log);
        set(&mut config.leader_missing_report_ticks, self.leader_missing_report_ticks);
        if config.tick_interval.is_zero() {
            bail!("[store.raft] tick_interval_ms must be at least 1");
        }
        // The engine's own checks, with a store id that passes them (it comes later).
        let checked = StoreConfig { store_id: config.store_id.max(1), ..config.clone() };
        if let Err(error) = checked.validate() {
            bail!("invalid store settings ([store], [store.raft] and flags): {error}");
        }
        Ok(())
    }
}

impl ScheduleSection {
    /// The settings not given (exhaustive, like [`RaftSection::missing`]).
    #[cfg(test)]
    pub(crate) fn missing(&self) -> Vec<&'static str> {
        let ScheduleSection {
            store_down_after_seconds,
            down_grace_seconds,
            operator_timeout_seconds,
            schedule_interval_ms,
            replica_repair,
            balance_region,
            region_tolerance,
            balance_leader,
            leader_tolerance,
            hot_region,
            hot_region_min_bytes_per_sec,
            hot_tolerance_ratio,
            location_labels,
        } = self;
        let given = [
            ("store_down_after_seconds", store_down_after_seconds.is_some()),
            ("down_grace_seconds", down_grace_seconds.is_some()),
            ("operator_timeout_seconds", operator_timeout_seconds.is_some()),
            ("schedule_interval_ms", schedule_interval_ms.is_some()),
            ("replica_repair", replica_repair.is_some()),
            ("balance_region", balance_region.is_some()),
            ("region_tolerance", region_tolerance.is_some()),
            ("balance_leader", balance_leader.is_some()),
            ("leader_tolerance", leader_tolerance.is_some()),
            ("hot_region", hot_region.is_some()),
            ("hot_region_min_bytes_per_sec", hot_region_min_bytes_per_sec.is_some()),
            ("hot_tolerance_ratio", hot_tolerance_ratio.is_some()),
            ("location_labels", location_labels.is_some()),
        ];
        given.into_iter().filter(|(_, given)| !given).map(|(name, _)| name).collect()
    }

    /// Applies the settings given to `config`; an invalid value is refused by name.
    pub(crate) fn apply(&self, config: &mut DriverConfig) -> anyhow::Result<()> {
        let seconds = |value: Option<u64>| value.map(Duration::from_secs);
        set(&mut config.store_down_after, seconds(self.store_down_after_seconds));
        set(&mut config.operator_timeout, seconds(self.operator_timeout_seconds));
        set(&mut config.schedule_interval, self.schedule_interval_ms.map(Duration::from_millis));
        let schedulers = &mut config.schedulers;
        set(&mut schedulers.down_grace, seconds(self.down_grace_seconds));
        set(&mut schedulers.replica_repair, self.replica_repair);
        set(&mut schedulers.balance_region, self.balance_region);
        set(&mut schedulers.region_tolerance, self.region_tolerance);
        set(&mut schedulers.balance_leader, self.balance_leader);
        set(&mut schedulers.leader_tolerance, self.leader_tolerance);
        set(&mut schedulers.hot_region, self.hot_region);
        set(&mut schedulers.hot_region_min_bytes_per_sec, self.hot_region_min_bytes_per_sec);
        set(&mut schedulers.hot_tolerance_ratio, self.hot_tolerance_ratio);
        set(&mut schedulers.location_labels, self.location_labels.clone());
        if let Some(label) = schedulers.location_labels.iter().find(|label| label.is_empty()) {
            bail!("[pd.schedule] location_labels holds an empty label name: {label:?}");
        }
        if config.store_down_after.is_zero() {
            bail!("[pd.schedule] store_down_after_seconds must be at least 1");
        }
        if config.schedule_interval.is_zero() || config.operator_timeout.is_zero() {
            bail!("[pd.schedule] schedule_interval_ms and operator_timeout_seconds must be above 0");
        }
        let ratio = config.schedulers.hot_tolerance_ratio;
        if !(ratio.is_finite() && ratio >= 0.0) {
            bail!("[pd.schedule] hot_tolerance_ratio must be a number of at least 0, not {ratio}");
        }
        Ok(())
    }
}

impl TransactionsSection {
    /// The settings not given (exhaustive, like [`RaftSection::missing`]).
    #[cfg(test)]
    pub(crate) fn missing(&self) -> Vec<&'static str> {
        let TransactionsSection { timestamp_window_ms, gc_lifetime_ms, gc_interval_ms } = self;
        let given = [
            ("timestamp_window_ms", timestamp_window_ms.is_some()),
            ("gc_lifetime_ms", gc_lifetime_ms.is_some()),
            ("gc_interval_ms", gc_interval_ms.is_some()),
        ];
        given.into_iter().filter(|(_, given)| !given).map(|(name, _)| name).collect()
    }

    /// Applies the settings given to `config`; an invalid value is refused by name.
    pub(crate) fn apply(&self, config: &mut DriverConfig) -> anyhow::Result<()> {
        set(&mut config.timestamp_window, self.timestamp_window_ms.map(Duration::from_millis));
        set(&mut config.gc_lifetime, self.gc_lifetime_ms.map(Duration::from_millis));
        set(&mut config.gc_interval, self.gc_interval_ms.map(Duration::from_millis));
        if config.gc_interval.is_zero() {
            bail!("[pd.transactions] gc_interval_ms must be at least 1");
        }
        // The window is moved when half of it is left, once per driver tick at most.
        let floor = (config.tick_interval * 4).max(MIN_TIMESTAMP_WINDOW);
        if config.timestamp_window < floor || config.timestamp_window > MAX_TIMESTAMP_WINDOW {
            bail!(
                "[pd.transactions] timestamp_window_ms must be {} (four of the driver's ticks) to {}",
                floor.as_millis(),
                MAX_TIMESTAMP_WINDOW.as_millis()
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_setting_given_replaces_the_default_and_the_rest_stay() {
        let mut config = DriverConfig::new(1, vec![1]);
        let section =
            ScheduleSection { down_grace_seconds: Some(90), hot_region: Some(false), ..Default::default() };
        section.apply(&mut config).expect("valid");
        assert_eq!(config.schedulers.down_grace, Duration::from_secs(90));
        assert!(!config.schedulers.hot_region);
        let defaults = DriverConfig::new(1, vec![1]);
        assert_eq!(config.store_down_after, defaults.store_down_after);
        assert_eq!(config.schedulers.region_tolerance, defaults.schedulers.region_tolerance);
    }

    #[test]
    fn invalid_settings_are_refused_by_name() {
        let mut store = StoreConfig::new(1);
        let raft = RaftSection { election_ticks: Some(2), heartbeat_ticks: Some(2), ..Default::default() };
        let error = raft.apply(&mut store).expect_err("an election no longer than a heartbeat");
        assert!(error.to_string().contains("election_ticks (2)"), "{error}");
        // Valid for the check above, but the lease has no room left after the drift.
        let raft = RaftSection { election_ticks: Some(3), heartbeat_ticks: Some(1), ..Default::default() };
        let error = raft.apply(&mut StoreConfig::new(1)).expect_err("no lease left");
        assert!(error.to_string().contains("max_clock_drift_ticks"), "{error}");
        let raft = RaftSection { election_ticks: Some(u64::MAX), ..Default::default() };
        let error = raft.apply(&mut StoreConfig::new(1)).expect_err("ticks that overflow");
        assert!(error.to_string().contains("election_ticks"), "{error}");
        let mut driver = DriverConfig::new(1, vec![1]);
        let schedule = ScheduleSection { hot_tolerance_ratio: Some(f64::NAN), ..Default::default() };
        let error = schedule.apply(&mut driver).expect_err("not a number");
        assert!(error.to_string().contains("hot_tolerance_ratio"), "{error}");
    }
}
