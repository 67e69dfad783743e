//! Checkers for transactional histories: what clients running transactions saw, judged
//! against the isolation level the database promises.
//!
//! - [`list_append`]: Elle's list-append method (Kingsbury and Alvaro, "Elle:
//!   Inferring Isolation Anomalies from Experimental Observations"), written here from
//!   its paper. Every key holds a list; transactions append unique values and read whole
//!   lists. A read shows the order of every append before it, so the order of each
//!   key's versions can be inferred, and from it the write-write, write-read and
//!   read-write dependencies between transactions. Cycles among them are Adya's
//!   anomalies (G0, G1c, G-single, G2); aborted and intermediate reads (G1a, G1b) are
//!   found directly.
//! - [`bank`]: transfers between accounts; every snapshot of all balances must add up
//!   to the same total.
//!
//! - [`watches`]: what each watcher of a key range received must be exactly the
//!   committed history of its range after its start, in order, whole, with nothing at
//!   or below a progress notification already received.
//!
//! - [`workload`], [`watchers`] and [`round`]: the transactional clients and watchers
//!   of a chaos round that record them, and the judging of what they recorded.
//!
//! Like the linearizability checker, these judge a history and nothing else: no I/O,
//! no state between checks, no panic on what a history says.

pub mod bank;
mod cycles;
pub mod list_append;
pub mod round;
pub mod watchers;
pub mod watches;
pub mod workload;

#[cfg(test)]
mod tests;
