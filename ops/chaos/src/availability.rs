//! How long the cluster took to serve again after each fault: measured from the history
//! the clients recorded, against the times the nemesis started its episodes.
//!
//! An episode's outage is the longest stretch, from the fault's start until the next
//! episode starts (or the history ends), during which some key saw no operation succeed:
//! the stretch from the fault's start to a key's first success after it counts, and so
//! does a key's last silence before the window closes (the last window closes when the
//! clients stop). A scan that succeeds serves every key it covers. No operation can
//! succeed during a real outage, so the figure is at least the outage the clients met;
//! it overstates it by up to the clients' pace (they are few and think between
//! operations: a gap of tens of milliseconds is noise), and a key nobody asked for
//! during the window counts as silent throughout.
//!
//! Episodes are written one JSON object per line to the run's `availability.jsonl`, so
//! that runs of several sessions are summarised together (`tessera-chaos availability
//! FILE...`).

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::history::{Event, EventKind, Operation};

/// One fault episode, on the history's clock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Episode {
    /// The fault's kind, as `--faults` names it.
    pub kind: &'static str,
    pub started_ns: u64,
}

/// One episode's outage, as kept in `availability.jsonl`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Outage {
    pub seed: u64,
    pub kind: String,
    pub outage_ms: u64,
}

/// The outage of every episode: the longest stretch some key of `keys` went without a
/// successful operation, within the episode's window; the last window closes at
/// `clients_stopped_ns`, when the clients were told to stop (what follows, the round's
/// final checks and reads, is not the clients' traffic).
pub fn outages(
    events: &[Event],
    episodes: &[Episode],
    keys: &[String],
    clients_stopped_ns: u64,
    seed: u64,
) -> Vec<Outage> {
    let served = served_times(events, keys);
    episodes
        .iter()
        .enumerate()
        .map(|(index, episode)| {
            let window_end = episodes.get(index + 1).map_or(clients_stopped_ns, |next| next.started_ns);
            let longest = keys
                .iter()
                .map(|key| {
                    longest_silence(
                        served.get(key).map_or(&[][..], Vec::as_slice),
                        episode.started_ns,
                        window_end,
                    )
                })
                .max()
                .unwrap_or(0);
            Outage { seed, kind: episode.kind.to_string(), outage_ms: longest / 1_000_000 }
        })
        .collect()
}

/// For each key, the times (sorted) at which an operation on it completed successfully.
fn served_times(events: &[Event], keys: &[String]) -> HashMap<String, Vec<u64>> {
    let mut open: HashMap<u64, &Operation> = HashMap::new();
    let mut served: HashMap<String, Vec<u64>> = HashMap::new();
    for event in events {
        match &event.kind {
            EventKind::Invoke { op } => {
                open.insert(event.process, op);
            }
            EventKind::Ok { .. } => {
                let Some(operation) = open.remove(&event.process) else { continue };
                for key in keys.iter().filter(|key| touches(operation, key)) {
                    served.entry(key.clone()).or_default().push(event.time_ns);
                }
            }
            EventKind::Fail { .. } | EventKind::Unknown { .. } => {
                open.remove(&event.process);
            }
        }
    }
    for times in served.values_mut() {
        times.sort_unstable();
    }
    served
}

fn touches(operation: &Operation, key: &str) -> bool {
    match operation {
        Operation::Read { key: touched }
        | Operation::Write { key: touched, .. }
        | Operation::Cas { key: touched, .. } => touched == key,
        Operation::Scan { start, end } => start.as_str() <= key && key < end.as_str(),
    }
}

/// The longest stretch within `[start, end)` without a time of `served` (sorted).
fn longest_silence(served: &[u64], start: u64, end: u64) -> u64 {
    let mut last = start;
    let mut longest = 0;
    for &time in served.iter().filter(|&&time| time > start && time < end) {
        longest = longest.max(time - last);
        last = time;
    }
    longest.max(end.saturating_sub(last))
}

/// Per fault kind: episodes, median and maximum outage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    pub kind: String,
    pub episodes: usize,
    pub median: Duration,
    pub max: Duration,
}

/// Summarises outages by fault kind, kinds in name order.
pub fn summarise(outages: &[Outage]) -> Vec<Summary> {
    let mut by_kind: BTreeMap<&str, Vec<u64>> = BTreeMap::new();
    for outage in outages {
        by_kind.entry(&outage.kind).or_default().push(outage.outage_ms);
    }
    by_kind
        .into_iter()
        .map(|(kind, mut millis)| {
            millis.sort_unstable();
            // The lower median for an even count: a figure that was measured.
            let median = millis[(millis.len() - 1) / 2];
            let max = millis[millis.len() - 1];
            Summary {
                kind: kind.to_string(),
                episodes: millis.len(),
                median: Duration::from_millis(median),
                max: Duration::from_millis(max),
            }
        })
        .collect()
}

/// The summary as a table, one line per kind.
pub fn table(summaries: &[Summary]) -> String {
    let mut text =
        format!("{:<28} {:>8} {:>10} {:>10}\n", "time to serve again", "episodes", "median", "max");
    for summary in summaries {
        text.push_str(&format!(
            "{:<28} {:>8} {:>9.2}s {:>9.2}s\n",
            summary.kind,
            summary.episodes,
            summary.median.as_secs_f64(),
            summary.max.as_secs_f64()
        ));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::Output;

    const MS: u64 = 1_000_000;

    fn keys() -> Vec<String> {
        vec!["k0".into(), "k1".into()]
    }

    /// A read of `key` by `process`, invoked at `invoked` ms and completing at `done` ms
    /// (successfully or not).
    fn read(process: u64, key: &str, invoked: u64, done: u64, ok: bool) -> Vec<Event> {
        let completion = if ok {
            EventKind::Ok { output: Output::Read { value: None } }
        } else {
            EventKind::Fail { error: "unavailable".into() }
        };
        vec![
            Event {
                process,
                time_ns: invoked * MS,
                kind: EventKind::Invoke { op: Operation::Read { key: key.into() } },
            },
            Event { process, time_ns: done * MS, kind: completion },
        ]
    }

    fn sorted(mut events: Vec<Event>) -> Vec<Event> {
        events.sort_by_key(|event| event.time_ns);
        events
    }

    #[test]
    fn an_outage_is_the_longest_silence_of_any_key_after_the_fault() {
        let mut events = Vec::new();
        for at in (0..1000).step_by(10) {
            events.extend(read(1, "k0", at, at + 1, true));
        }
        // k1 is served until 100 ms, fails until 700 ms, then is served again.
        for at in (0..100).step_by(10) {
            events.extend(read(2, "k1", at, at + 2, true));
        }
        events.extend(read(2, "k1", 100, 700, false));
        for at in (700..1000).step_by(10) {
            events.extend(read(2, "k1", at, at + 2, true));
        }
        let episodes = [Episode { kind: "kill-store", started_ns: 50 * MS }];
        let found = outages(&sorted(events), &episodes, &keys(), 992 * MS, 7);
        assert_eq!(found, vec![Outage { seed: 7, kind: "kill-store".into(), outage_ms: 610 }]);
    }

    #[test]
    fn a_key_never_served_again_is_out_until_the_window_closes() {
        let mut events = read(1, "k0", 0, 5, true);
        events.extend(read(2, "k1", 0, 5, true));
        events.extend(read(1, "k0", 10, 900, false));
        events.extend(read(2, "k1", 10, 20, true));
        let episodes = [
            Episode { kind: "partition", started_ns: 8 * MS },
            Episode { kind: "pause-pd", started_ns: 500 * MS },
        ];
        let found = outages(&sorted(events), &episodes, &keys(), 900 * MS, 1);
        assert_eq!(found[0].outage_ms, 492, "k0 silent from the fault's start to the next episode");
        assert_eq!(found[1].outage_ms, 400, "and through the next one until the clients stop");
    }

    #[test]
    fn the_last_window_closes_when_the_clients_stop() {
        let mut events = read(1, "k0", 0, 5, true);
        events.extend(read(2, "k1", 0, 5, true));
        // The round's final reads, long after the clients stopped at 100 ms.
        events.extend(read(1_000_000, "k0", 5000, 5001, true));
        events.extend(read(1_000_001, "k1", 5002, 5003, true));
        let episodes = [Episode { kind: "kill-pd", started_ns: 10 * MS }];
        let found = outages(&sorted(events), &episodes, &keys(), 100 * MS, 1);
        assert_eq!(
            found[0].outage_ms, 90,
            "silent from the fault to the clients' stop, not to the final reads"
        );
    }

    #[test]
    fn a_scan_serves_every_key_it_covers() {
        let scan = Operation::Scan { start: "k".into(), end: "l".into() };
        let events = vec![
            Event { process: 1, time_ns: 0, kind: EventKind::Invoke { op: scan } },
            Event {
                process: 1,
                time_ns: 30 * MS,
                kind: EventKind::Ok { output: Output::Scan { pairs: vec![] } },
            },
            Event {
                process: 2,
                time_ns: 40 * MS,
                kind: EventKind::Invoke { op: Operation::Read { key: "k0".into() } },
            },
            Event {
                process: 2,
                time_ns: 50 * MS,
                kind: EventKind::Ok { output: Output::Read { value: None } },
            },
        ];
        let episodes = [Episode { kind: "one-way", started_ns: 10 * MS }];
        let found = outages(&events, &episodes, &keys(), 50 * MS, 1);
        // k1: served by the scan at 30 ms, then silent until the clients stop at 50 ms.
        assert_eq!(found[0].outage_ms, 20);
    }

    #[test]
    fn summaries_give_the_median_and_maximum_per_kind() {
        let outage = |kind: &str, outage_ms| Outage { seed: 1, kind: kind.into(), outage_ms };
        let outages = [
            outage("kill-store", 300),
            outage("kill-store", 100),
            outage("kill-store", 2000),
            outage("bridge", 40),
        ];
        let summaries = summarise(&outages);
        assert_eq!(summaries.len(), 2);
        assert_eq!((summaries[0].kind.as_str(), summaries[0].episodes), ("bridge", 1));
        assert_eq!(summaries[1].median, Duration::from_millis(300));
        assert_eq!(summaries[1].max, Duration::from_secs(2));
        assert!(table(&summaries).contains("kill-store"));
    }
}
