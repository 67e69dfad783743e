//! The node's log: one line per significant event, from every layer (the engine and the
//! driver emit through the `tracing` facade; this module installs the one subscriber).
//!
//! - Filtering: `--log-level` (or the file's `[log] level`) takes a level (`info`) or
//!   `RUST_LOG`-style directives (`info,tessera_engine::store=debug`); without either,
//!   `RUST_LOG`, and without that `info`. Targets are module paths, so a layer can be
//!   turned up alone.
//! - Format: text for people, or JSON lines (one object per event) for log shippers.
//! - Destination: standard error, or a file appended to. Lines are written by a
//!   background thread, so a slow disk never holds up a Raft worker; the guard returned
//!   by [`install`] flushes what is queued when the process ends.
//!
//! This module owns the subscriber; it never decides what is logged.

use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::Deserialize;
use tracing_appender::non_blocking::WorkerGuard;
use tracing_subscriber::EnvFilter;

/// How log lines are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub(crate) enum LogFormat {
    /// One human-readable line per event.
    #[default]
    Text,
    /// One JSON object per line, with the event's fields as keys.
    Json,
}

/// Where and how to log, once flags, the file and the environment are combined.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LogSettings {
    /// A level or `RUST_LOG`-style directives.
    pub filter: String,
    pub format: LogFormat,
    /// A file to append to; standard error without one.
    pub file: Option<PathBuf>,
}

/// The `[log]` section of the configuration file.
#[derive(Debug, Default, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct LogSection {
    pub level: Option<String>,
    pub format: Option<LogFormat>,
    pub file: Option<PathBuf>,
}

impl LogSettings {
    /// Combines a flag, the file's section and `RUST_LOG` (`environment`): a flag wins
    /// over the file, the file over the environment, the environment over `default_level`.
    pub(crate) fn resolve(
        flags: &LogSection,
        file: &LogSection,
        environment: Option<String>,
        default_level: &str,
    ) -> LogSettings {
        let filter = flags
            .level
            .clone()
            .or_else(|| file.level.clone())
            .or(environment.filter(|directives| !directives.trim().is_empty()))
            .unwrap_or_else(|| default_level.to_string());
        LogSettings {
            filter,
            format: flags.format.or(file.format).unwrap_or_default(),
            file: flags.file.clone().or_else(|| file.file.clone()),
        }
    }
}

/// Installs the process's subscriber; keep the guard until the process ends.
pub(crate) fn install(settings: &LogSettings) -> anyhow::Result<WorkerGuard> {
    let filter = EnvFilter::try_new(&settings.filter)
        .with_context(|| format!("{:?} is not a log level or a list of log directives", settings.filter))?;
    let (writer, guard) = match &settings.file {
        Some(path) => tracing_appender::non_blocking(open_log_file(path)?),
        None => tracing_appender::non_blocking(std::io::stderr()),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_ansi(false)
        .with_target(true);
    let installed = match settings.format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
    installed.map_err(|error| anyhow::anyhow!("installing the log subscriber: {error}"))?;
    Ok(guard)
}

fn open_log_file(path: &Path) -> anyhow::Result<std::fs::File> {
    if let Some(directory) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(directory)
            .with_context(|| format!("cannot create the log directory {}", directory.display()))?;
    }
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("cannot open the log file {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn section(level: Option<&str>, format: Option<LogFormat>, file: Option<&str>) -> LogSection {
        LogSection { level: level.map(String::from), format, file: file.map(PathBuf::from) }
    }

    #[test]
    fn a_flag_wins_over_the_file_and_the_file_over_the_environment() {
        let flags = section(Some("debug"), None, None);
        let file = section(Some("warn"), Some(LogFormat::Json), Some("/tmp/node.log"));
        let settings = LogSettings::resolve(&flags, &file, Some("trace".into()), "info");
        assert_eq!(settings.filter, "debug");
        assert_eq!(settings.format, LogFormat::Json);
        assert_eq!(settings.file.as_deref(), Some(Path::new("/tmp/node.log")));

        let settings = LogSettings::resolve(&LogSection::default(), &file, Some("trace".into()), "info");
        assert_eq!(settings.filter, "warn");
    }

    #[test]
    fn the_environment_and_then_the_default_fill_in() {
        let none = LogSection::default();
        let settings = LogSettings::resolve(&none, &none, Some("tessera_engine=debug".into()), "info");
        assert_eq!(settings.filter, "tessera_engine=debug");
        assert_eq!(settings.format, LogFormat::Text);
        assert_eq!(settings.file, None);
        assert_eq!(LogSettings::resolve(&none, &none, Some(" ".into()), "warn").filter, "warn");
        assert_eq!(LogSettings::resolve(&none, &none, None, "info").filter, "info");
    }

    #[test]
    fn a_bad_filter_is_refused_with_what_was_given() {
        let settings = LogSettings { filter: "info,=[".into(), format: LogFormat::Text, file: None };
        let error = install(&settings).expect_err("not a filter");
        assert!(error.to_string().contains("info,=["), "{error}");
    }
}
