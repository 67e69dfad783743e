//! Fail-stop: what a store does when it cannot go on safely.
//!
//! A store whose disk no longer holds what its Raft state says (a failed log write or
//! apply), or whose code met a broken invariant (a panic, in this crate or in the Raft
//! core), must stop as a whole process. Were only the failing thread to end, its share
//! of the regions would freeze while their leaders on this store kept their leadership
//! and heartbeats flowed from the other workers' regions: those regions would never
//! fail over. Aborting makes every region here fail over at once, and the process
//! supervisor restarts the store from what is durable.
//!
//! This module owns the decision and the last words; it never tries to recover.

use std::any::Any;
use std::panic::{AssertUnwindSafe, catch_unwind};

/// Stops the process: `what` failed with `error` and the store cannot continue safely.
pub(crate) fn fail_stop(what: &str, error: impl std::fmt::Display) -> ! {
    tracing::error!(%error, "fail-stop: {what} failed and the store cannot continue safely");
    eprintln!("fail-stop: {what} failed and the store cannot continue safely: {error}");
    std::process::abort()
}

/// Runs the body of one of the store's threads; a panic in it stops the process (the
/// panic's message has been printed by the panic hook already, and is logged here).
pub(crate) fn fail_stop_on_panic(thread: &str, body: impl FnOnce()) {
    if let Err(panic) = catch_unwind(AssertUnwindSafe(body)) {
        fail_stop(&format!("the store's {thread} thread"), PanicMessage(panic));
    }
}

/// The text a panic was raised with, when it has one.
struct PanicMessage(Box<dyn Any + Send>);

impl std::fmt::Display for PanicMessage {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let Some(text) = self.0.downcast_ref::<&str>() {
            formatter.write_str(text)
        } else if let Some(text) = self.0.downcast_ref::<String>() {
            formatter.write_str(text)
        } else {
            formatter.write_str("a panic without a message")
        }
    }
}
