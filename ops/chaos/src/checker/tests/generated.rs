//! Histories generated from a real register, so that the right verdict is known by
//! construction: every output is computed by applying the operations, in the order of
//! linearization points chosen inside their intervals, to one register.

use std::collections::BTreeMap;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::{render, witness_history};
use crate::checker::{CheckConfig, check};
use crate::history::{Call, Operation, Output};

#[derive(Clone, Copy)]
enum Kind {
    Write,
    Read,
    Cas,
}

/// A history where each call starts strictly after the previous one returned, over two
/// keys. Each key is written twice first, so every read has a wrong value to be
/// corrupted to, and read once last.
fn sequential(seed: u64) -> Vec<Call> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let keys = ["k0", "k1"];
    let mut plan = vec![(0, Kind::Write), (1, Kind::Write), (0, Kind::Write), (1, Kind::Write)];
    for _ in 0..rng.random_range(20..40) {
        let kind = [Kind::Write, Kind::Read, Kind::Read, Kind::Cas][rng.random_range(0..4usize)];
        plan.push((rng.random_range(0..keys.len()), kind));
    }
    plan.extend([(0, Kind::Read), (1, Kind::Read)]);
    let mut state: BTreeMap<&str, Option<String>> = BTreeMap::new();
    let mut written: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    let mut calls = Vec::new();
    let mut time = 0;
    for (n, (key_index, kind)) in plan.into_iter().enumerate() {
        let key = keys[key_index];
        let process = rng.random_range(1..5);
        let invoked_ns = time + rng.random_range(1..5u64);
        time = invoked_ns + rng.random_range(0..5u64);
        let current = state.entry(key).or_default();
        let values = written.entry(key).or_default();
        let (operation, output) = match kind {
            Kind::Write => {
                let value = format!("p{process}-{n}");
                *current = Some(value.clone());
                values.push(value.clone());
                (Operation::Write { key: key.into(), value }, Output::Written)
            }
            Kind::Read => (Operation::Read { key: key.into() }, Output::Read { value: current.clone() }),
            Kind::Cas => {
                let expected = if rng.random_bool(0.5) {
                    current.clone()
                } else {
                    values.get(rng.random_range(0..=values.len())).cloned()
                };
                let new = format!("p{process}-{n}");
                let (swapped, previous) = (expected == *current, current.clone());
                if swapped {
                    *current = Some(new.clone());
                    values.push(new.clone());
                }
                (Operation::Cas { key: key.into(), expected, new }, Output::Cas { swapped, previous })
            }
        };
        calls.push(Call { process, operation, invoked_ns, completed_ns: Some(time), output: Some(output) });
    }
    calls
}

#[test]
fn sequential_register_histories_pass_and_any_corrupted_read_fails() {
    for seed in 0..200 {
        let mut calls = sequential(seed);
        let report = check(&calls, &CheckConfig::default());
        assert!(report.is_valid(), "seed {seed}: a sequential history must pass:\n{}", render(&report));

        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x5eed);
        let reads: Vec<usize> = (0..calls.len())
            .filter(|&index| matches!(calls[index].operation, Operation::Read { .. }))
            .collect();
        let victim = reads[rng.random_range(0..reads.len())];
        let Operation::Read { key } = calls[victim].operation.clone() else {
            unreachable!("chosen among reads")
        };
        let Some(Output::Read { value: seen }) = calls[victim].output.clone() else {
            unreachable!("reads answer")
        };
        // Every value ever written to the key, except the one the read really saw.
        let wrong: Vec<String> = calls
            .iter()
            .filter_map(|call| match (&call.operation, &call.output) {
                (Operation::Write { key: k, value }, _) if *k == key => Some(value.clone()),
                (Operation::Cas { key: k, new, .. }, Some(Output::Cas { swapped: true, .. }))
                    if *k == key =>
                {
                    Some(new.clone())
                }
                _ => None,
            })
            .filter(|value| seen.as_ref() != Some(value))
            .collect();
        let corrupted = wrong[rng.random_range(0..wrong.len())].clone();
        calls[victim].output = Some(Output::Read { value: Some(corrupted.clone()) });
        let report = check(&calls, &CheckConfig::default());
        let keys: Vec<&str> = report.violations.iter().map(|violation| violation.key.as_str()).collect();
        assert_eq!(
            keys,
            [key.as_str()],
            "seed {seed}: call {victim} reading {corrupted:?} instead of {seen:?} must fail:\n{}",
            render(&report)
        );
    }
}

/// A history of `total` calls on one key from `lanes` concurrent clients. Each call's
/// effect happens at a random point inside its interval; a few writes and
/// compare-and-sets end unknown (their client then retires and a new one takes over),
/// and those take effect later, or never.
fn concurrent(seed: u64, lanes: u64, total: usize) -> Vec<Call> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let key = "k";
    // Per lane: when its client is free again, and which client it is.
    let mut lanes: Vec<(u64, u64)> = (0..lanes).map(|lane| (rng.random_range(0..10), lane)).collect();
    let mut next_process = lanes.len() as u64;
    let mut recent: Vec<String> = Vec::new();
    let mut mutations = 0;
    let mut planned: Vec<(Call, Option<u64>)> = Vec::new();
    for n in 0..total {
        let Some(lane) = (0..lanes.len()).min_by_key(|&lane| lanes[lane].0) else { break };
        let (free, process) = lanes[lane];
        let invoked_ns = free + rng.random_range(1..10u64);
        let completed = invoked_ns + rng.random_range(1..60u64);
        let roll = rng.random_range(0..100);
        let operation = if roll < 35 {
            Operation::Write { key: key.into(), value: format!("p{process}-{n}") }
        } else if roll < 75 {
            Operation::Read { key: key.into() }
        } else if roll < 80 {
            Operation::Scan { start: "a".into(), end: "z".into() }
        } else {
            let back = rng.random_range(0..=recent.len().min(4));
            let expected = recent.len().checked_sub(back + 1).map(|index| recent[index].clone());
            Operation::Cas { key: key.into(), expected, new: format!("p{process}-{n}") }
        };
        if let Operation::Write { value: installed, .. } | Operation::Cas { new: installed, .. } = &operation
        {
            recent.push(installed.clone());
        }
        let call = Call { process, operation, invoked_ns, completed_ns: Some(completed), output: None };
        // Every 40th mutation, and a few more at random, ends unknown.
        let unknown = call.operation.is_mutation() && {
            mutations += 1;
            mutations % 40 == 0 || rng.random_bool(0.01)
        };
        if unknown {
            lanes[lane] = (completed, next_process);
            next_process += 1;
            let point = rng.random_bool(0.5).then(|| rng.random_range(invoked_ns..=completed + 200));
            planned.push((Call { completed_ns: None, ..call }, point));
        } else {
            lanes[lane] = (completed, process);
            planned.push((call, Some(rng.random_range(invoked_ns..=completed))));
        }
    }
    let mut order: Vec<usize> = (0..planned.len()).filter(|&index| planned[index].1.is_some()).collect();
    order.sort_by_key(|&index| (planned[index].1, index));
    let mut state: Option<String> = None;
    for index in order {
        let call = &mut planned[index].0;
        let output = match &call.operation {
            Operation::Read { .. } => Output::Read { value: state.clone() },
            Operation::Scan { .. } => {
                Output::Scan { pairs: state.iter().map(|value| (key.to_string(), value.clone())).collect() }
            }
            Operation::Write { value, .. } => {
                state = Some(value.clone());
                Output::Written
            }
            Operation::Cas { expected, new, .. } => {
                let (swapped, previous) = (*expected == state, state.clone());
                if swapped {
                    state = Some(new.clone());
                }
                Output::Cas { swapped, previous }
            }
        };
        if call.completed_ns.is_some() {
            call.output = Some(output);
        }
    }
    planned.into_iter().map(|(call, _)| call).collect()
}

#[test]
fn concurrent_register_histories_pass_within_the_default_limit() {
    for seed in 0..3 {
        let calls = concurrent(seed, 8, 300);
        let report = check(&calls, &CheckConfig::default());
        assert!(report.unknown > 0, "seed {seed}: the generator should leave some outcomes unknown");
        assert!(report.is_valid(), "seed {seed}: a linearizable history must pass:\n{}", render(&report));
    }
}

#[test]
fn a_ghost_read_in_a_concurrent_history_is_found_and_minimized() {
    let seed = 7;
    let mut calls = concurrent(seed, 8, 300);
    let Some(victim) = (calls.len() / 2..calls.len())
        .find(|&index| matches!(calls[index].output, Some(Output::Read { .. })))
    else {
        panic!("seed {seed}: the generator should produce reads in the second half");
    };
    calls[victim].output = Some(Output::Read { value: Some("ghost".into()) });
    let report = check(&calls, &CheckConfig::default());
    assert_eq!(report.violations.len(), 1, "seed {seed}:\n{}", render(&report));
    let violation = &report.violations[0];
    assert!(violation.witness.iter().any(|shown| shown.call == calls[victim]), "{violation}");
    assert!(violation.witness.len() < calls.len() / 10, "the witness should be small:\n{violation}");
    let again = check(&witness_history(violation), &CheckConfig::default());
    assert_eq!(again.violations.len(), 1, "the witness must fail on its own:\n{violation}");
}
