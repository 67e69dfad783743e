//! The configuration file: every option of `tessera store` and `tessera pd` in TOML,
//! documented in `ops/tessera.example.toml`. A flag given on the command line wins over
//! the file, and the file over the defaults here.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::Deserialize;

use super::settings::{RaftSection, ScheduleSection, TransactionsSection};
use crate::logging::LogSection;

pub(crate) const DEFAULT_STORE_LISTEN: &str = "127.0.0.1:20160";
pub(crate) const DEFAULT_PD_LISTEN: &str = "127.0.0.1:2379";
pub(crate) const DEFAULT_SPLIT_MAX_KEYS: u64 = 1_000_000;
pub(crate) const DEFAULT_SPLIT_MAX_BYTES: u64 = 96 * 1024 * 1024;
pub(crate) const DEFAULT_REPLICAS: usize = 3;
pub(crate) const DEFAULT_SLOW_REQUEST_THRESHOLD_MS: u64 = 1000;

#[derive(Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct FileConfig {
    pub store: StoreSection,
    pub pd: PdSection,
    pub log: LogSection,
    /// Mutual TLS for every link of the process (`[tls]`); absent: in the clear.
    pub tls: Option<crate::security::TlsFiles>,
}

#[derive(Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct StoreSection {
    pub pd: Vec<String>,
    pub data_dir: Option<PathBuf>,
    pub listen: Option<String>,
    /// The address other nodes and clients reach this store at.
    pub advertise: Option<String>,
    pub labels: BTreeMap<String, String>,
    pub split_max_keys: Option<u64>,
    pub split_max_bytes: Option<u64>,
    /// After the garbage-collection safe point moved, the transactional families are
    /// compacted at most this often.
    pub gc_compaction_interval_ms: Option<u64>,
    /// How often regions leading change feeds publish a resolved timestamp.
    pub feed_resolve_interval_ms: Option<u64>,
    /// A lock that has held a change feed back this long is resolved through its
    /// primary (its coordinator may be gone).
    pub feed_stale_lock_after_ms: Option<u64>,
    /// RocksDB's block cache, shared by every column family (default 256 MiB).
    pub block_cache_mib: Option<usize>,
    pub metrics: Option<String>,
    /// Where to serve etcd's v3 API; absent: not served.
    pub etcd_listen: Option<String>,
    /// How often an etcd watch that asked for progress notifications gets one.
    pub etcd_progress_notify_interval_ms: Option<u64>,
    /// How long a token from etcd's Authenticate is valid.
    pub etcd_auth_token_ttl_seconds: Option<u64>,
    pub slow_request_threshold_ms: Option<u64>,
    /// Whether the status address's `/fail` routes arm fail points (test clusters).
    pub enable_fail_points: Option<bool>,
    pub raft: RaftSection,
}

#[derive(Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct PdSection {
    pub data_dir: Option<PathBuf>,
    pub listen: Option<String>,
    /// The address the other replicas and the clients reach this replica at.
    pub advertise: Option<String>,
    pub id: Option<u64>,
    /// `ID=ADDRESS` for every replica.
    pub members: Vec<String>,
    pub replicas: Option<usize>,
    pub metrics: Option<String>,
    /// Replicas of a running driver to join through.
    pub join: Vec<String>,
    pub schedule: ScheduleSection,
    pub transactions: TransactionsSection,
}

impl FileConfig {
    /// The file at `path`, or the defaults without one.
    pub(crate) fn load(path: Option<&Path>) -> anyhow::Result<FileConfig> {
        let Some(path) = path else { return Ok(FileConfig::default()) };
        let text =
            std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
        toml::from_str(&text).with_context(|| format!("{} is not a valid configuration", path.display()))
    }
}

#[cfg(test)]
mod tests {
    use tessera_engine::store::StoreConfig;
    use tessera_placement::DriverConfig;

    use super::*;

    #[test]
    fn the_documented_example_parses_and_sets_every_option() {
        let example = include_str!("../../../ops/tessera.example.toml");
        let config: FileConfig = toml::from_str(example).expect("the example is valid");
        assert_eq!(config.store.pd, vec!["127.0.0.1:2379".to_string()]);
        assert_eq!(config.store.listen.as_deref(), Some(DEFAULT_STORE_LISTEN));
        assert_eq!(config.store.advertise.as_deref(), Some("store-1.example.internal:20160"));
        assert_eq!(config.pd.advertise.as_deref(), Some("pd-1.example.internal:2379"));
        assert_eq!(config.store.labels.get("zone").map(String::as_str), Some("zone-a"));
        assert_eq!(config.store.split_max_keys, Some(DEFAULT_SPLIT_MAX_KEYS));
        assert_eq!(config.store.split_max_bytes, Some(DEFAULT_SPLIT_MAX_BYTES));
        assert_eq!(config.store.gc_compaction_interval_ms, Some(600_000));
        assert_eq!(config.store.block_cache_mib, Some(256));
        assert_eq!(config.store.feed_resolve_interval_ms, Some(20));
        assert_eq!(config.store.feed_stale_lock_after_ms, Some(3000));
        assert_eq!(config.store.etcd_listen.as_deref(), Some("127.0.0.1:2381"));
        assert_eq!(config.store.etcd_progress_notify_interval_ms, Some(10_000));
        assert_eq!(config.store.etcd_auth_token_ttl_seconds, Some(300));
        assert!(config.store.data_dir.is_some() && config.pd.data_dir.is_some());
        assert_eq!(config.pd.id, Some(1));
        assert_eq!(config.pd.members, vec!["1=127.0.0.1:2379".to_string()]);
        assert_eq!(config.pd.replicas, Some(DEFAULT_REPLICAS));
        assert_eq!(config.store.metrics.as_deref(), Some("127.0.0.1:9461"));
        assert_eq!(config.store.slow_request_threshold_ms, Some(DEFAULT_SLOW_REQUEST_THRESHOLD_MS));
        assert_eq!(config.store.enable_fail_points, Some(false), "off unless asked for");
        assert_eq!(config.pd.metrics.as_deref(), Some("127.0.0.1:9460"));
        assert!(config.pd.join.is_empty(), "a founding member joins nobody");
        assert_eq!(config.log.level.as_deref(), Some("info"));
        assert_eq!(config.log.format, Some(crate::logging::LogFormat::Text));
        assert!(config.log.file.is_some());
        let tls = config.tls.expect("the example shows [tls]");
        assert!(tls.ca_file.ends_with("ca.pem") && tls.cert_file.ends_with("node.pem"), "{tls:?}");
        assert!(tls.key_file.ends_with("node-key.pem"), "{tls:?}");
    }

    /// The example lists every tuning setting with its default: applied, it changes
    /// nothing, and a setting missing from it is caught here.
    #[test]
    fn the_example_lists_every_tuning_setting_at_its_default() {
        let example = include_str!("../../../ops/tessera.example.toml");
        let config: FileConfig = toml::from_str(example).expect("the example is valid");
        // `workers` defaults to the machine's cores: the example shows it commented out.
        assert_eq!(
            config.store.raft.missing(),
            ["workers"],
            "[store.raft] settings missing from the example"
        );
        assert!(config.pd.schedule.missing().is_empty(), "[pd.schedule] settings missing from the example");
        assert!(
            config.pd.transactions.missing().is_empty(),
            "[pd.transactions] settings missing from the example"
        );
        let mut store = StoreConfig::new(1);
        config.store.raft.apply(&mut store).expect("valid");
        assert_eq!(format!("{store:?}"), format!("{:?}", StoreConfig::new(1)));
        let mut driver = DriverConfig::new(1, vec![1]);
        config.pd.schedule.apply(&mut driver).expect("valid");
        config.pd.transactions.apply(&mut driver).expect("valid");
        assert_eq!(format!("{driver:?}"), format!("{:?}", DriverConfig::new(1, vec![1])));
    }

    #[test]
    fn an_unknown_option_is_refused_by_name() {
        let error = toml::from_str::<FileConfig>("[store]\nsplit_max_kyes = 5\n").expect_err("a typo");
        assert!(error.to_string().contains("split_max_kyes"), "{error}");
    }
}
