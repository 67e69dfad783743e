//! Hot regions: move load off the store whose led regions take the most writes (then
//! reads). First by moving the leadership of its hottest region to a cooler voter; if
//! every voter of that region sits on a hot store, by moving a replica to the coolest
//! store and handing it the leadership.

use std::collections::{BTreeMap, BTreeSet};

use tessera_engine::proto::metadata::{Peer, PeerRole};

use super::{SchedulerConfig, pick_target};
use crate::cluster::{ClusterView, RegionInfo};
use crate::operator::{Operator, OperatorKind, Step};

/// Which rate a pass balances.
#[derive(Clone, Copy)]
enum Flow {
    Write,
    Read,
}

fn rate(info: &RegionInfo, flow: Flow) -> u64 {
    match flow {
        Flow::Write => info.write_bytes_per_sec,
        Flow::Read => info.read_bytes_per_sec,
    }
}

/// Bytes per second served by each up store's leaders.
fn loads(view: &ClusterView, flow: Flow) -> BTreeMap<u64, u64> {
    let mut loads: BTreeMap<u64, u64> = view.up_stores().map(|s| (s.id, 0)).collect();
    for info in view.regions.values() {
        if let Some(store) = info.leader_store.filter(|s| loads.contains_key(s)) {
            *loads.entry(store).or_default() += rate(info, flow);
        }
    }
    loads
}

pub(crate) fn schedule(
    view: &ClusterView,
    config: &SchedulerConfig,
    busy: &BTreeSet<u64>,
    new_id: &mut dyn FnMut() -> Option<u64>,
) -> Option<Operator> {
    [Flow::Write, Flow::Read].into_iter().find_map(|flow| schedule_flow(view, config, busy, new_id, flow))
}

fn schedule_flow(
    view: &ClusterView,
    config: &SchedulerConfig,
    busy: &BTreeSet<u64>,
    new_id: &mut dyn FnMut() -> Option<u64>,
    flow: Flow,
) -> Option<Operator> {
    let loads = loads(view, flow);
    let load = |store: u64| loads.get(&store).copied().unwrap_or(0);
    let (&hottest, &hot_load) = loads.iter().max_by_key(|(id, load)| (**load, std::cmp::Reverse(**id)))?;
    let mean = loads.values().sum::<u64>() as f64 / loads.len() as f64;
    if (hot_load as f64) <= mean * (1.0 + config.hot_tolerance_ratio) {
        return None;
    }
    let info = view
        .regions
        .values()
        .filter(|info| {
            !busy.contains(&info.region.id)
                && info.leader_store == Some(hottest)
                && rate(info, flow) >= config.hot_region_min_bytes_per_sec
                && info.is_settled()
                && info.voters().all(|p| view.is_up(p.store_id))
        })
        .max_by_key(|info| (rate(info, flow), std::cmp::Reverse(info.region.id)))?;
    let moved = rate(info, flow);
    // Worth doing only if the receiving store ends up cooler than the hot one was.
    let relieves = |store: u64| load(store) + moved < hot_load;
    let operator = |steps| Operator { region_id: info.region.id, kind: OperatorKind::HotRegion, steps };
    if let Some(cooler) = info
        .voters()
        .filter(|p| p.store_id != hottest && relieves(p.store_id))
        .min_by_key(|p| (load(p.store_id), p.store_id))
    {
        return Some(operator(vec![Step::TransferLeader { to_store: cooler.store_id }]));
    }
    let target = pick_target(view, config, &view.region_counts(), info).filter(|&store| relieves(store))?;
    let leaving = *info.peer_on(hottest)?;
    let learner = Peer { id: new_id()?, store_id: target, role: PeerRole::Learner as i32 };
    Some(operator(vec![
        Step::AddLearner { peer: learner },
        Step::PromoteLearner { peer: Peer { role: PeerRole::Voter as i32, ..learner } },
        Step::TransferLeader { to_store: target },
        Step::RemovePeer { peer: leaving },
    ]))
}
