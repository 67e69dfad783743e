//! A bounded record of the most recent simulation events, printed with a violation.
//!
//! Events are stored unformatted and only rendered on failure, so tracing costs almost
//! nothing on the passing seeds that make up nearly every run.

use std::collections::VecDeque;
use std::fmt;

use tessera_engine::raft::proto::MessageType;

#[derive(Debug, Clone)]
pub(crate) enum Event {
    Deliver { from: u64, to: u64, message_type: MessageType, term: u64, index: u64, entries: usize },
    Drop { from: u64, to: u64, message_type: MessageType, reason: &'static str },
    Leader { id: u64, term: u64 },
    Crash { id: u64, point: &'static str },
    Restart { id: u64 },
    Partition { blocked: Vec<(u64, u64)> },
    Heal,
    Slow { id: u64 },
    Propose { id: u64, index: u64, term: u64 },
    ConfChange { id: u64, description: String },
    Transfer { from: u64, to: u64 },
    Compact { id: u64, index: u64 },
    Read { id: u64, read_id: u64, index: u64 },
    Phase(&'static str),
}

#[derive(Debug, Clone)]
pub(crate) struct TimedEvent {
    pub step: u64,
    pub event: Event,
}

impl fmt::Display for TimedEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "step {:>6}: ", self.step)?;
        match &self.event {
            Event::Deliver { from, to, message_type, term, index, entries } => {
                write!(f, "{from} -> {to} {message_type:?} term {term} index {index} entries {entries}")
            }
            Event::Drop { from, to, message_type, reason } => {
                write!(f, "{from} -> {to} {message_type:?} dropped ({reason})")
            }
            Event::Leader { id, term } => write!(f, "{id} became leader of term {term}"),
            Event::Crash { id, point } => write!(f, "{id} crashed ({point})"),
            Event::Restart { id } => write!(f, "{id} restarted"),
            Event::Partition { blocked } => write!(f, "partition, blocked links {blocked:?}"),
            Event::Heal => write!(f, "network healed"),
            Event::Slow { id } => write!(f, "{id} is slow"),
            Event::Propose { id, index, term } => write!(f, "{id} proposed at {index} (term {term})"),
            Event::ConfChange { id, description } => write!(f, "{id} proposed {description}"),
            Event::Transfer { from, to } => write!(f, "{from} transfers leadership to {to}"),
            Event::Compact { id, index } => write!(f, "{id} compacted its log to {index}"),
            Event::Read { id, read_id, index } => write!(f, "{id} served read {read_id} at {index}"),
            Event::Phase(phase) => write!(f, "--- {phase} ---"),
        }
    }
}

#[derive(Debug)]
pub(crate) struct Trace {
    capacity: usize,
    events: VecDeque<TimedEvent>,
}

impl Trace {
    pub(crate) fn new(capacity: usize) -> Trace {
        Trace { capacity, events: VecDeque::with_capacity(capacity.min(4096)) }
    }

    pub(crate) fn record(&mut self, step: u64, event: Event) {
        if self.capacity == 0 {
            return;
        }
        if self.events.len() == self.capacity {
            self.events.pop_front();
        }
        self.events.push_back(TimedEvent { step, event });
    }

    pub(crate) fn render(&self) -> String {
        self.events.iter().map(|event| format!("  {event}\n")).collect()
    }
}
