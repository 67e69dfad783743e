//! The sequential specification every key is checked against: a register that starts
//! absent, takes writes, answers reads, and compares-and-sets.
//!
//! The model is deliberately tiny and total: it never fails on odd input, it only says
//! whether an operation, with the outcome the client saw, could have happened in a given
//! state. Everything the search knows about Tessera's semantics is in [`step`].

/// The value of one key: `None` while it is absent (Tessera histories never delete, so a
/// key is absent only before its first write).
pub(super) type State = Option<String>;

/// One operation as seen by one key, with what the client observed of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum KeyOp {
    /// A read (or one key's share of a scan) that answered this value.
    Read(Option<String>),
    /// A write, acknowledged or not: its outcome carries no information beyond "it
    /// happened", and an unknown write is told apart only by having no return.
    Write(String),
    /// A compare-and-set; `outcome` is `Some((swapped, previous))` when the client got an
    /// answer and `None` when the outcome is unknown.
    Cas { expected: Option<String>, new: String, outcome: Option<(bool, Option<String>)> },
}

impl KeyOp {
    /// Whether the operation can only ever leave the state as it found it: a read, or a
    /// compare-and-set known to have failed. Dropping such an operation from a history
    /// removes constraints and nothing else, which is what lets the minimizer drop it.
    pub(super) fn is_observation(&self) -> bool {
        match self {
            KeyOp::Read(_) => true,
            KeyOp::Write(_) => false,
            KeyOp::Cas { outcome, .. } => matches!(outcome, Some((false, _))),
        }
    }

    /// The same operation with its outcome forgotten: what the client would have recorded
    /// had the reply been lost. For a write only the missing return says so; the caller
    /// also opens the entry's interval to infinity.
    pub(super) fn relaxed(&self) -> KeyOp {
        match self {
            KeyOp::Cas { expected, new, .. } => {
                KeyOp::Cas { expected: expected.clone(), new: new.clone(), outcome: None }
            }
            other => other.clone(),
        }
    }

    /// The value this operation may install, if it changes state at all.
    pub(super) fn installs(&self) -> Option<&str> {
        match self {
            KeyOp::Read(_) => None,
            KeyOp::Write(value) => Some(value),
            KeyOp::Cas { new, outcome, .. } => match outcome {
                Some((false, _)) => None,
                _ => Some(new),
            },
        }
    }

    /// Every value the operation names (what it read, wrote, expected or found), each
    /// once. Used to prove an open write irrelevant: nothing can depend on a value that
    /// no other operation names.
    pub(super) fn named(&self) -> Vec<&str> {
        let mut named: Vec<&str> = match self {
            KeyOp::Read(observed) => observed.as_deref().into_iter().collect(),
            KeyOp::Write(written) => vec![written],
            KeyOp::Cas { expected, new, outcome } => {
                let previous = outcome.as_ref().and_then(|(_, previous)| previous.as_deref());
                expected.as_deref().into_iter().chain([new.as_str()]).chain(previous).collect()
            }
        };
        named.sort_unstable();
        named.dedup();
        named
    }
}

/// The state after `op` if `op`, with the outcome the client saw, is legal in `state`;
/// `None` if it is not.
///
/// A compare-and-set is deterministic: when the state equals `expected` it swaps, so an
/// answer "did not swap" from that state is illegal, and the reverse. The `previous` it
/// reports must be the state it found, whichever way it went.
pub(super) fn step(state: &State, op: &KeyOp) -> Option<State> {
    match op {
        KeyOp::Read(observed) => (observed == state).then(|| state.clone()),
        KeyOp::Write(value) => Some(Some(value.clone())),
        KeyOp::Cas { expected, new, outcome } => {
            let swaps = expected == state;
            let legal = match outcome {
                None => true,
                Some((swapped, previous)) => *swapped == swaps && previous == state,
            };
            if !legal {
                return None;
            }
            Some(if swaps { Some(new.clone()) } else { state.clone() })
        }
    }
}
