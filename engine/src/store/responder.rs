//! Where a request's answer goes.

use crossbeam_channel::{Receiver, bounded};

use super::errors::StoreError;

/// Where a request's answer goes: a channel a thread waits on ([`Responder::channel`]),
/// or a callback ([`Responder::new`]) that an async caller turns into a wake-up without
/// a thread parked per request. Answered at most once; dropped unanswered only if the
/// request never reached a worker.
pub struct Responder<T>(Box<dyn FnOnce(Result<T, StoreError>) + Send>);

impl<T: Send + 'static> Responder<T> {
    pub fn new(callback: impl FnOnce(Result<T, StoreError>) + Send + 'static) -> Responder<T> {
        Responder(Box::new(callback))
    }

    /// A responder and the channel its answer arrives on.
    pub(crate) fn channel() -> (Responder<T>, Receiver<Result<T, StoreError>>) {
        let (sender, receiver) = bounded(1);
        // The receiver may be gone (its caller gave up): nobody to tell.
        (Responder::new(move |result| drop(sender.send(result))), receiver)
    }

    pub(crate) fn send(self, result: Result<T, StoreError>) {
        (self.0)(result)
    }
}
