//! Hooks for what the sender does in the background: drops, dead letters, connection changes.

use crate::error::Error;
use crate::model::LogPayload;

/// Receives the sender's background events. Every method has a no-op default.
///
/// Methods are called from logsender's own threads (workers and the supervisor), never
/// while one of logsender's locks is held. Keep them short: a slow handler slows the
/// thread that calls it.
///
/// # Examples
///
/// ```
/// use std::sync::atomic::{AtomicUsize, Ordering};
/// use logsender::{DroppedEvent, EventHandler};
///
/// #[derive(Default)]
/// struct CountDrops(AtomicUsize);
///
/// impl EventHandler for CountDrops {
///     fn on_dropped(&self, event: DroppedEvent) {
///         self.0.fetch_add(1, Ordering::Relaxed);
///         eprintln!("dropped a payload of {}: {:?}", event.payload().agent_id, event.reason());
///     }
/// }
/// ```
pub trait EventHandler: Send + Sync {
    /// A payload was dropped by the overflow policy (or left undelivered by a `Drop`).
    fn on_dropped(&self, event: DroppedEvent) {
        let _ = event;
    }

    /// A payload was given up for a permanent reason: the collector rejected its epoch
    /// with a permanent status code, or it is larger than the maximum message size.
    fn on_dead_letter(&self, event: DeadLetterEvent) {
        let _ = event;
    }

    /// A stream to the collector is up.
    fn on_connected(&self) {}

    /// The stream broke; the supervisor will rebuild it.
    fn on_disconnected(&self, error: &Error) {
        let _ = error;
    }
}

/// Why a payload was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DropReason {
    /// `OverflowPolicy::DropNewest`: the buffer was full when it arrived.
    Newest,
    /// `OverflowPolicy::DropOldest`: evicted to make room for a newer payload.
    Oldest,
    /// `OverflowPolicy::Block` with a timeout: no room was made in time.
    BlockTimeout,
    /// The `LogSender` was dropped (not closed) with this payload still undelivered.
    SenderDropped,
}

/// A payload dropped by the sender.
#[derive(Debug)]
pub struct DroppedEvent {
    payload: LogPayload,
    reason: DropReason,
}

impl DroppedEvent {
    pub(crate) fn new(payload: LogPayload, reason: DropReason) -> Self {
        DroppedEvent { payload, reason }
    }

    /// The payload.
    pub fn payload(&self) -> &LogPayload {
        &self.payload
    }

    /// Takes the payload, e.g. to persist it.
    pub fn into_payload(self) -> LogPayload {
        self.payload
    }

    /// Why it was dropped.
    pub fn reason(&self) -> DropReason {
        self.reason
    }
}

/// A payload given up for a permanent reason.
#[derive(Debug)]
pub struct DeadLetterEvent {
    payload: LogPayload,
    error: Error,
}

impl DeadLetterEvent {
    pub(crate) fn new(payload: LogPayload, error: Error) -> Self {
        DeadLetterEvent { payload, error }
    }

    /// The payload.
    pub fn payload(&self) -> &LogPayload {
        &self.payload
    }

    /// Takes the payload.
    pub fn into_payload(self) -> LogPayload {
        self.payload
    }

    /// Why it was given up; [`Error::status`] has the collector's status, if any.
    pub fn error(&self) -> &Error {
        &self.error
    }
}
