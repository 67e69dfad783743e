//! Sending write groups (the queues and the hand-over are `batch.rs`'s): the leader of
//! a region's group sends every write queued behind it in one request, and each caller
//! learns its own write's outcome, with the store's result for it.
//!
//! A write goes in a group only when the client's cache places it, whole, in the
//! group's region and the store's own check passes it there: one bad write must not
//! take a group down with it, and a write the region no longer holds (it split) is
//! left out and sent again alone.

use tessera_engine::kv::check_write;
use tessera_engine::proto::command::{Write, WriteResult};
use tessera_engine::proto::metadata::Region;
use tokio::sync::oneshot;
use tokio::time::Instant;

use super::batch::{GroupOutcome, Joined, LeadGuard, Pending, Turn, Waited, WriteGroup, WriteGroups};
use super::{Client, ClientError, Resend, Transient, Uncertainty};
use crate::proto::{WriteRequest, WriteResponse};

/// Whether a group sent to `region` carries `pending`: the same judgement, made
/// twice, picks the writes of the request and matches them to its results.
fn carried(region: &Region, pending: &Pending) -> bool {
    check_write(region, &pending.write).is_ok()
}

/// A write's outcome from its group's: applied (with its result, the `next` of the
/// group's results) if the group was and carried it; alone again if the group left it
/// out (its region split) or was refused whole before applying; otherwise the group's
/// error, which is the write's too.
fn group_outcome(
    group: &Result<(Region, Vec<WriteResult>), ClientError>,
    pending: Pending,
    next: &mut usize,
) -> GroupOutcome {
    match group {
        Ok((region, results)) if carried(region, &pending) => {
            let result = results.get(*next).cloned();
            *next += 1;
            match result {
                Some(result) => GroupOutcome::Applied(result),
                // Fewer results than writes: which applied is not known.
                None => GroupOutcome::Failed(ClientError::OutcomeUnknown(Uncertainty::Store {
                    region_id: region.id,
                    reason: "the store answered fewer results than the request had writes".into(),
                })),
            }
        }
        Ok(_) | Err(ClientError::InvalidArgument(_)) => GroupOutcome::SendAlone(pending),
        Err(error) => GroupOutcome::Failed(error.clone()),
    }
}

impl Client {
    /// A put or delete, sent in a write group with whatever else is in flight for its
    /// region; alone when no group can take it.
    pub(super) async fn grouped_write(
        &self,
        key: &[u8],
        write: Write,
        bytes: usize,
    ) -> Result<(), ClientError> {
        match self.join_group(&self.groups, key, write, bytes).await? {
            GroupOutcome::Applied(_) => Ok(()),
            GroupOutcome::Failed(error) => Err(error),
            GroupOutcome::SendAlone(pending) => self.write(&pending.key, vec![pending.write]).await.map(drop),
        }
    }

    /// Sends `write` in a group of `groups` for the region the cache places `key` in,
    /// leading the group or waiting for one to carry it. Answers `SendAlone` when no
    /// group could: the caller sends it itself.
    pub(super) async fn join_group(
        &self,
        groups: &WriteGroups,
        key: &[u8],
        write: Write,
        bytes: usize,
    ) -> Result<GroupOutcome, ClientError> {
        let pending = Pending { key: key.to_vec(), write, bytes };
        let region = self.cache.find(key).and_then(|route| route.region);
        let Some(region_id) = region.filter(|region| carried(region, &pending)).map(|region| region.id)
        else {
            return Ok(GroupOutcome::SendAlone(pending));
        };
        let give_up = Instant::now() + self.deadline;
        let leader = match groups.join(region_id, pending) {
            Joined::Lead(pending) => pending,
            Joined::Alone(pending) => return Ok(GroupOutcome::SendAlone(pending)),
            Joined::Wait(waiting) => match waiting.turn(give_up).await {
                Waited::Turn(Turn::Done(outcome)) => return Ok(outcome),
                Waited::Turn(Turn::Lead(pending)) => pending,
                Waited::Abandoned => return Err(ClientError::OutcomeUnknown(Uncertainty::Abandoned)),
                Waited::Expired => {
                    let last = Transient::QueuedPastDeadline { region_id };
                    return Err(ClientError::Unavailable { attempts: 0, last });
                }
            },
        };
        let guard = LeadGuard { groups, region_id };
        let group = groups.take(region_id, leader);
        let (mine, followers) = self.send_group(group).await;
        for (outcome, turn) in followers {
            // The caller may have gone away: nobody to tell.
            let _ = turn.send(Turn::Done(outcome));
        }
        // The next group leaves before this caller's own write, if it must, goes alone.
        drop(guard);
        Ok(mine)
    }

    /// Sends a group as one request to the region holding its leader's write; writes
    /// that region no longer carries are left out. Answers the leader's outcome and
    /// each follower's.
    async fn send_group(
        &self,
        group: WriteGroup,
    ) -> (GroupOutcome, Vec<(GroupOutcome, oneshot::Sender<Turn>)>) {
        let WriteGroup { leader, followers } = group;
        let result = self
            .on_region(&leader.key, Resend::OnlyIfNotApplied, |mut kv, context, region| {
                let writes: Vec<Write> = std::iter::once(&leader)
                    .chain(followers.iter().map(|(pending, _)| pending))
                    .filter(|pending| carried(&region, pending))
                    .map(|pending| pending.write.clone())
                    .collect();
                async move {
                    // The region split and holds none of them: each goes alone, without
                    // a request the store would refuse as empty.
                    if writes.is_empty() {
                        return Ok(tonic::Response::new(WriteResponse::default()));
                    }
                    kv.write(WriteRequest { context: Some(context), writes }).await
                }
            })
            .await
            .map(|(answer, region)| (region, answer.into_inner().results));
        let mut next = 0;
        let mine = group_outcome(&result, leader, &mut next);
        let followers = followers
            .into_iter()
            .map(|(pending, turn)| (group_outcome(&result, pending, &mut next), turn))
            .collect();
        (mine, followers)
    }
}

#[cfg(test)]
mod tests {
    use tessera_engine::proto::command::{Put, write};

    use super::*;
    use crate::client::Refusal;

    fn pending(key: &str) -> Pending {
        let put = Put { key: key.as_bytes().to_vec(), value: b"v".to_vec() };
        Pending {
            key: key.as_bytes().to_vec(),
            write: Write { kind: Some(write::Kind::Put(put)) },
            bytes: key.len(),
        }
    }

    fn region(start: &str, end: &str) -> Region {
        Region { id: 1, start_key: start.into(), end_key: end.into(), ..Region::default() }
    }

    fn applied(result: &GroupOutcome) -> Option<bool> {
        match result {
            GroupOutcome::Applied(result) => Some(result.succeeded),
            _ => None,
        }
    }

    #[test]
    fn a_write_shares_its_groups_fate_only_when_the_group_carried_it() {
        let results = vec![WriteResult { succeeded: true, ..WriteResult::default() }, WriteResult::default()];
        let group: Result<_, ClientError> = Ok((region("a", "m"), results));
        let mut next = 0;
        assert_eq!(applied(&group_outcome(&group, pending("c"), &mut next)), Some(true));
        // Left out of the request: the region split and no longer holds the key.
        assert!(matches!(group_outcome(&group, pending("x"), &mut next), GroupOutcome::SendAlone(_)));
        // The next carried write gets the next result, not the one of the write left out.
        assert_eq!(applied(&group_outcome(&group, pending("d"), &mut next)), Some(false));
        // One bad write refuses the whole request before anything applies.
        let reason = "value too large".to_string();
        let refused = Err(ClientError::InvalidArgument(Refusal::Store { region_id: 1, reason }));
        assert!(matches!(group_outcome(&refused, pending("c"), &mut 0), GroupOutcome::SendAlone(_)));
        let unknown = Err(ClientError::OutcomeUnknown(Uncertainty::Abandoned));
        assert!(matches!(
            group_outcome(&unknown, pending("c"), &mut 0),
            GroupOutcome::Failed(ClientError::OutcomeUnknown(_))
        ));
        let unavailable = Err(ClientError::Unavailable { attempts: 3, last: Transient::LeaderUnknown });
        assert!(matches!(
            group_outcome(&unavailable, pending("c"), &mut 0),
            GroupOutcome::Failed(ClientError::Unavailable { .. })
        ));
    }
}
