//! Hooks for what the sender does in the background: drops, dead letters, connection
//! changes, failed dials, a collector that refuses every call, backpressure.

use std::time::Duration;

use crate::error::{DialCause, Error, RpcStatusCode};
use crate::model::LogPayload;

/// Receives the sender's background events. Every method has a no-op default.
///
/// Methods are called from logsender's own threads (workers and the supervisor), and
/// `on_backpressure` also from a producer's thread that starts or stops waiting; never
/// while one of logsender's locks is held. Keep them short: a slow handler slows the
/// thread that calls it. A handler must not wait on logsender itself: to log from one
/// through an [`EntrySender`](crate::EntrySender), use `try_log`, never `log` (a worker
/// waiting in your handler for room it is the one to make would wait for ever).
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

    /// An OTLP collector took a call but rejected some of its records
    /// (`partial_success.rejected_log_records > 0`): they are counted dead-lettered
    /// ([`Stats::entries_rejected`](crate::Stats::entries_rejected)) and never re-sent,
    /// as OTLP asks. OTLP does not say which records; the event has the call's payloads.
    fn on_partial_success(&self, event: &PartialSuccessEvent) {
        let _ = event;
    }

    /// A stream to the collector is up.
    fn on_connected(&self) {}

    /// The stream broke; the supervisor will rebuild it.
    fn on_disconnected(&self, error: &Error) {
        let _ = error;
    }

    /// A dial (or the opening of a stream after it) failed: why, and when the next
    /// try is. Called once per failed attempt.
    fn on_dial_failed(&self, event: &DialFailedEvent) {
        let _ = event;
    }

    /// The collector refused every call, an empty one too, for a permanent reason
    /// (`UNAUTHENTICATED`, `PERMISSION_DENIED`, `UNIMPLEMENTED`), and the payloads are
    /// held, not dead-lettered
    /// ([`ConfigBuilder::hold_when_refused`](crate::ConfigBuilder::hold_when_refused)):
    /// the collector's status, the likely fix, and when the next try is. Called once per
    /// refused try (they are at least
    /// [`refused_backoff`](crate::ConfigBuilder::refused_backoff) apart); the state is
    /// [`ConnectionState::Refused`](crate::ConnectionState::Refused) until the collector
    /// takes data or an empty call again; [`on_connected`](EventHandler::on_connected)
    /// then says when a stream is up (not before: a stream that opens while the
    /// collector refuses proves nothing).
    fn on_refused(&self, event: &RefusedEvent) {
        let _ = event;
    }

    /// The sender's buffer filled up and producers started waiting for room, or room was
    /// made and the last of them went on. A wait counts once it has lasted 10 ms:
    /// shorter ones are the buffer doing its job. Events come in pairs with the same
    /// episode number; two episodes' events may interleave when they race.
    fn on_backpressure(&self, event: BackpressureEvent) {
        let _ = event;
    }

    /// The [`log` bridge](crate::LogBridge) (or the `tracing` layer) dropped records
    /// rather than block the program. Called at most once a second, from the thread
    /// whose record was dropped, with the count since the previous call (and once more
    /// at shutdown for the rest).
    fn on_records_dropped(&self, event: RecordsDroppedEvent) {
        let _ = event;
    }

    /// Something about the disk spool: the backlog an earlier run left (at start), damage
    /// skipped (with its file and offset), an I/O error (the spool rests; payloads are
    /// held in memory meanwhile), or the spool usable again.
    fn on_spool(&self, event: &SpoolEvent) {
        let _ = event;
    }
}

/// An OTLP collector's partial success, reported to
/// [`EventHandler::on_partial_success`].
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct PartialSuccessEvent {
    /// Records the collector rejected (`rejected_log_records`).
    pub rejected_records: u64,
    /// Why, in the collector's words (`error_message`).
    pub message: String,
    /// The payloads of the call (decoded from what was sent): the rejected records are
    /// among them.
    pub payloads: Vec<LogPayload>,
}

/// Records the `log` bridge or the `tracing` layer dropped, reported to
/// [`EventHandler::on_records_dropped`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct RecordsDroppedEvent {
    /// Dropped since the previous event.
    pub dropped: u64,
    /// Dropped since the sender was created ([`Stats::records_dropped`](crate::Stats::records_dropped)).
    pub total: u64,
}

/// A failed dial, reported to [`EventHandler::on_dial_failed`].
#[derive(Debug, Clone)]
pub struct DialFailedEvent {
    pub(crate) cause: DialCause,
    pub(crate) message: String,
    pub(crate) hint: Option<String>,
    pub(crate) retry_in: Duration,
    pub(crate) attempt: u32,
}

impl DialFailedEvent {
    /// Why it failed.
    pub fn cause(&self) -> DialCause {
        self.cause
    }

    /// The failure in the gRPC core's words (also in [`Stats::last_error`](crate::Stats::last_error)).
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The likely fix, where the cause points to one, e.g. "nothing listens on ADDR: is
    /// the collector running?" (also in [`LastError::hint`](crate::LastError::hint)).
    pub fn hint(&self) -> Option<&str> {
        self.hint.as_deref()
    }

    /// How long until the next attempt.
    pub fn retry_in(&self) -> Duration {
        self.retry_in
    }

    /// How many attempts in a row have failed, this one included.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }
}

/// A collector that refuses every call, reported to [`EventHandler::on_refused`].
#[derive(Debug, Clone)]
pub struct RefusedEvent {
    pub(crate) code: RpcStatusCode,
    pub(crate) message: String,
    pub(crate) hint: Option<String>,
    pub(crate) retry_in: Duration,
    pub(crate) attempt: u32,
}

impl RefusedEvent {
    /// The collector's status code (`UNAUTHENTICATED`, `PERMISSION_DENIED` or
    /// `UNIMPLEMENTED`).
    pub fn code(&self) -> RpcStatusCode {
        self.code
    }

    /// The collector's message with the status (also in
    /// [`Stats::last_error`](crate::Stats::last_error)).
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The likely fix, e.g. "renew the credentials" (also in
    /// [`LastError::hint`](crate::LastError::hint)).
    pub fn hint(&self) -> Option<&str> {
        self.hint.as_deref()
    }

    /// How long until the next try.
    pub fn retry_in(&self) -> Duration {
        self.retry_in
    }

    /// How many tries in a row were refused, this one included.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }
}

/// Producers waiting for room, reported to [`EventHandler::on_backpressure`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum BackpressureEvent {
    /// The buffer is full: a worker (and so the producers feeding its queue) or a
    /// caller of [`EntrySender::log`](crate::EntrySender::log) started waiting for room.
    Started {
        /// Numbers episodes from 1.
        episode: u64,
    },
    /// Nobody waits for room any more.
    Ended {
        /// The episode that ended.
        episode: u64,
        /// How long it lasted, from the first waiter to the last one going on.
        lasted: Duration,
    },
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

/// What [`EventHandler::on_spool`] hears.
#[derive(Debug)]
#[non_exhaustive]
pub enum SpoolEvent {
    /// At start: what an earlier run left in the spool, sent first, oldest first.
    Replaying {
        /// Payloads.
        payloads: u64,
        /// Entries in them.
        entries: u64,
        /// Bytes of the segment files.
        bytes: u64,
    },
    /// Bytes of a segment that hold no intact record (a torn tail, a bad checksum, a
    /// file cut short): skipped, counted in `Stats::spool_corrupt`; every intact record
    /// around them is delivered.
    Corrupt {
        /// The segment file.
        path: std::path::PathBuf,
        /// Where the damage starts.
        offset: u64,
        /// How many bytes were skipped.
        len: u64,
    },
    /// An operation on the spool failed (a full disk, a removed file, ...): counted in
    /// `Stats::spool_io_errors`. Payloads that could not be spooled are held in memory
    /// (under the memory bounds and the overflow policy) and the spool is tried again
    /// after a short rest.
    Io {
        /// The file or directory.
        path: std::path::PathBuf,
        /// The OS error's kind.
        kind: std::io::ErrorKind,
        /// The OS error.
        error: String,
    },
    /// An append succeeded after an I/O error: the spool is used again.
    Usable {
        /// The spool directory.
        path: std::path::PathBuf,
    },
}
