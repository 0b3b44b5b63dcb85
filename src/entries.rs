//! The entry level: [`EntrySender`] takes single [`LogEntry`]s, and a batcher thread
//! packs them into payloads (by count, bytes and time, stamped from a template) that a
//! worker pool of the sender takes in like any other queue.
//!
//! One entry: `log` encodes it on the caller's thread as one record of a payload's
//! `logs` and frees it there, then puts the record on a bounded channel (waiting when it
//! is full, counted as backpressure); the batcher (`{prefix}-bN`) adds it to the open
//! batch; a full batch, or one older than `linger`, becomes the bytes of a payload (the
//! template's frame around the records) on the pool's queue. Records and frame are in
//! the sender's wire form (`codec::EntryFrame`: `wire::Frame` on GoSight, one
//! `ResourceLogs` of `otlp::Frame` on OTLP), so that intake takes the bytes as they are.
//! `flush`
//! puts a marker on the same channel, behind every entry logged before it, and the
//! batcher answers it once those are in payloads on the queue; `shutdown` makes the
//! batcher take every entry a producer managed to log, while refusing new ones, and
//! hands back what it could not pass on in time.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use crossbeam_channel::{
    select, Receiver, Select, SendTimeoutError, Sender, TryRecvError, TrySendError,
};
use log::warn;

use crate::codec::{Encoded, EntryFrame};
use crate::config::{Config, Wire};
use crate::error::{invalid_config, Error};
use crate::model::{LogEntry, LogPayload};
use crate::shared::{Shared, BACKPRESSURE_AFTER};

/// Most entries the batcher takes per wake-up before it looks at its other channels.
const TAKE_AT_ONCE: usize = 1024;

/// How often a batcher with entries coming in looks at its channel. Producers do not
/// wake it for each entry (a wake is a system call on the caller's thread); they wake it
/// when it sleeps with nothing to do, or when the channel fills up.
const POLL_EVERY: Duration = Duration::from_millis(1);

/// How long an idle batcher sleeps before it looks again even without a wake (a
/// safety net: producers wake it when it is idle).
const IDLE_WAIT: Duration = Duration::from_secs(1);

/// Largest `capacity` and `workers` a [`Batching`] accepts: the entry channel allocates
/// every slot up front (a few dozen bytes each, the records they point to apart).
const MAX_CAPACITY: usize = 1 << 20;
const MAX_WORKERS: usize = 1024;

/// How an [`EntrySender`] batches entries into payloads.
///
/// ```
/// use std::time::Duration;
/// use logsender::{Batching, LogPayload};
///
/// let batching = Batching::new(LogPayload::from_host("agent-1"))
///     .max_entries(200)
///     .linger(Duration::from_millis(50));
/// # let _ = batching;
/// ```
#[derive(Debug, Clone)]
#[must_use]
pub struct Batching {
    template: LogPayload,
    max_entries: usize,
    max_bytes: usize,
    linger: Duration,
    capacity: usize,
    workers: usize,
}

impl Batching {
    /// Batches stamped from `template`: every payload is a copy of it with the batch's
    /// entries and, if the template has none, the time the batch was cut as its
    /// timestamp. [`LogPayload::from_host`] makes a template for this machine.
    pub fn new(template: LogPayload) -> Batching {
        Batching {
            template,
            max_entries: 512,
            max_bytes: 1 << 20,
            linger: Duration::from_millis(200),
            capacity: 8192,
            workers: 2,
        }
    }

    /// Cut a batch once it holds this many entries. Defaults to 512.
    pub fn max_entries(mut self, n: usize) -> Self {
        self.max_entries = n;
        self
    }

    /// Cut a batch before it would encode larger than this many bytes (an entry larger
    /// than that travels alone). Defaults to 1 MiB; at most the sender's
    /// `max_message_size`. On the OTLP wire a batch is also cut under the sender's
    /// `otlp_max_request_bytes`: each is one request.
    pub fn max_bytes(mut self, bytes: usize) -> Self {
        self.max_bytes = bytes;
        self
    }

    /// Cut a batch at the latest this long after its first entry arrived. Defaults to
    /// 200 ms.
    pub fn linger(mut self, linger: Duration) -> Self {
        self.linger = linger;
        self
    }

    /// Entries that may wait for the batcher; [`EntrySender::log`] waits (and
    /// [`EntrySender::try_log`] fails) while this many wait. Defaults to 8,192; at most
    /// 1,048,576 (the slots are allocated up front).
    pub fn capacity(mut self, entries: usize) -> Self {
        self.capacity = entries;
        self
    }

    /// Workers that encode and write this handle's payloads. Defaults to 2; at most 1024.
    pub fn workers(mut self, n: usize) -> Self {
        self.workers = n;
        self
    }

    pub(crate) fn worker_count(&self) -> usize {
        self.workers
    }

    /// Checks the settings against the sender's; returns the layout of its payloads.
    pub(crate) fn validate(&self, config: &Config) -> Result<Layout, Error> {
        let max_message_size = config.max_message_size;
        if self.max_entries == 0 {
            return invalid_config("max_entries", "must be at least 1");
        }
        if self.capacity == 0 || self.capacity > MAX_CAPACITY {
            return invalid_config("capacity", "must be within 1 ..= 1,048,576 entries");
        }
        if self.workers == 0 || self.workers > MAX_WORKERS {
            return invalid_config("workers", "must be within 1 ..= 1024");
        }
        if self.linger.is_zero() {
            return invalid_config("linger", "must be longer than zero");
        }
        if self.max_bytes == 0 || self.max_bytes > max_message_size {
            return invalid_config(
                "max_bytes",
                "must be within 1 ..= the sender's max_message_size",
            );
        }
        if !self.template.logs.is_empty() {
            return invalid_config(
                "template",
                "a template carries no entries (they would be in every payload)",
            );
        }
        let frame = config.wire.entry_frame(&self.template);
        // A payload is one request on OTLP: under its cap too.
        let cap = config.request_cap();
        let limit = max_message_size.min(cap);
        let overhead = frame.overhead();
        if overhead >= limit {
            let why = match config.wire {
                Wire::GoSightStream => "encodes larger than max_message_size",
                Wire::OtlpLogs => "encodes larger than max_message_size or otlp_max_request_bytes",
            };
            return invalid_config("template", why);
        }
        Ok(Layout {
            frame,
            overhead,
            limit,
            batch_cap: self.max_bytes.min(cap),
        })
    }
}

/// How an entry handle's payloads are laid out on the sender's wire.
pub(crate) struct Layout {
    /// The template's bytes around the records.
    frame: EntryFrame,
    /// The most bytes `frame` adds to the records (with the longest timestamp).
    overhead: usize,
    /// The largest payload: `max_message_size`, on OTLP at most the request cap.
    limit: usize,
    /// The largest batch: `max_bytes`, on OTLP at most the request cap.
    batch_cap: usize,
}

/// Why [`EntrySender::log`] or [`EntrySender::try_log`] did not take an entry. The
/// entry is handed back.
#[derive(Debug)]
#[non_exhaustive]
pub enum LogError {
    /// `try_log` only: `capacity` entries are waiting already.
    Full(Box<LogEntry>),
    /// The sender is shutting down or closed.
    Closed(Box<LogEntry>),
    /// The entry alone would make a payload larger than `max_message_size` (on the
    /// OTLP wire, or than `otlp_max_request_bytes`).
    TooLarge {
        /// The entry.
        entry: Box<LogEntry>,
        /// The size of a payload carrying just this entry, in bytes (at most: with the
        /// longest timestamp a batch can be stamped with).
        size: usize,
        /// The sender's `max_message_size` (on the OTLP wire, at most its
        /// `otlp_max_request_bytes`).
        limit: usize,
    },
}

impl LogError {
    /// The entry that was not taken.
    pub fn into_entry(self) -> LogEntry {
        match self {
            LogError::Full(e) | LogError::Closed(e) | LogError::TooLarge { entry: e, .. } => *e,
        }
    }
}

impl std::fmt::Display for LogError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LogError::Full(_) => f.write_str("the entry queue is full"),
            LogError::Closed(_) => f.write_str("the sender is closed"),
            LogError::TooLarge { size, limit, .. } => write!(
                f,
                "a payload of this one entry is {size} bytes, more than the maximum message size of {limit} bytes"
            ),
        }
    }
}

impl std::error::Error for LogError {}

/// What travels on an entry handle's channel.
enum Msg {
    /// An entry, encoded on the producer's thread as one record of a payload's `logs`
    /// (its length is what it adds to a payload).
    Entry(Vec<u8>),
    /// `flush`: answer once every entry before this marker is in a payload on the
    /// pool's queue (or, at shutdown, kept to be handed back).
    Flush(Sender<Left>),
}

/// What a batcher kept to hand back so far (only ever at shutdown, past its deadline):
/// a flush marker's answer.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Left {
    pub(crate) payloads: u64,
    pub(crate) entries: u64,
}

/// What became of the entries ahead of a flush marker.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Passed {
    /// Entries not in a payload yet (0 once the batcher answered).
    pub(crate) outstanding: u64,
    /// What the batcher kept to hand back meanwhile (an upper bound for the marker's
    /// share: a shutdown is running).
    pub(crate) left: Left,
}

/// What the handles, the batcher and the sender share about one batcher.
pub(crate) struct BatchState {
    /// Set (before the batcher is stopped) when the sender shuts down.
    closing: AtomicBool,
    /// Producers inside `log`/`try_log`: the batcher drains until none is left.
    inside: AtomicUsize,
    /// The batcher sleeps with nothing to do: the next entry wakes it. Set before it
    /// looks at the channel a last time, and read by producers after their send (both
    /// `SeqCst`), so that an entry is never left without a wake.
    idle: AtomicBool,
    /// Entries the batcher has taken off the channel and not yet put on the pool's
    /// queue (the open batch, a batch waiting for room): `flush` reports them.
    holding: AtomicU64,
    /// Payloads, and their entries, kept to be handed back (see [`Left`]).
    left_payloads: AtomicU64,
    left_entries: AtomicU64,
}

impl BatchState {
    fn left(&self) -> Left {
        Left {
            payloads: self.left_payloads.load(SeqCst),
            entries: self.left_entries.load(SeqCst),
        }
    }
}

/// A cloneable, thread-safe handle that takes single [`LogEntry`]s and ships them in
/// batches. Made by [`LogSender::entry_sender`](crate::LogSender::entry_sender).
///
/// Dropping the last clone lets its threads go: the batcher cuts its open batch, hands
/// it to its workers and ends, and they end once they have taken it in. Its payloads are
/// still covered by [`flush`](crate::LogSender::flush) and
/// [`shutdown`](crate::LogSender::shutdown) until delivered.
///
/// # Examples
///
/// ```no_run
/// use logsender::{Batching, Config, Level, LogEntry, LogPayload, LogSender};
///
/// let sender = LogSender::new(Config::builder("127.0.0.1:50051").plaintext().build()?)?;
/// let log = sender.entry_sender(Batching::new(LogPayload::from_host("agent-1")))?;
/// log.log(LogEntry::new(Level::Info, "service started")).ok();
/// let shutdown = sender.shutdown(std::time::Duration::from_secs(5));
/// assert!(shutdown.report.all_delivered());
/// # Ok::<(), logsender::Error>(())
/// ```
#[derive(Clone)]
pub struct EntrySender {
    inner: Arc<Handle>,
}

struct Handle {
    entries: Sender<Msg>,
    /// Wakes the batcher (bounded(1): a wake already pending is enough).
    wake: Sender<()>,
    /// Producers wake the batcher once this many entries wait.
    wake_at: usize,
    state: Arc<BatchState>,
    shared: Arc<Shared>,
    /// The template's bytes around the records (the batcher's, shared).
    frame: Arc<EntryFrame>,
    /// The most bytes the frame adds, and the largest payload.
    overhead: usize,
    limit: usize,
}

impl std::fmt::Debug for EntrySender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EntrySender")
            .field("waiting", &self.inner.entries.len())
            .field("holding", &self.inner.state.holding.load(SeqCst))
            .finish_non_exhaustive()
    }
}

impl BatchState {
    /// Counts the caller (a producer, or `flush` with its marker) inside, unless the
    /// sender is closing. The count is raised before the flag is read, and the batcher
    /// reads them the other way round, so that it cannot miss a message still on its
    /// way to the channel (both `SeqCst`).
    fn enter(&self) -> Option<Inside<'_>> {
        self.inside.fetch_add(1, SeqCst);
        let inside = Inside(self);
        (!self.closing.load(SeqCst)).then_some(inside)
    }
}

/// Counts a caller inside while it lives.
struct Inside<'a>(&'a BatchState);

impl Drop for Inside<'_> {
    fn drop(&mut self) {
        self.0.inside.fetch_sub(1, SeqCst);
    }
}

/// How long one attempt to put an entry on the channel may wait for room.
enum Wait {
    No,
    For(Duration),
    Forever,
}

/// Why an encoded entry was not put on the channel (see [`LogError`]).
pub(crate) enum Refusal {
    Full,
    Closed,
    TooLarge { size: usize, limit: usize },
}

impl Refusal {
    /// The [`LogError`] that hands `entry` back.
    fn with(self, entry: LogEntry) -> LogError {
        let entry = Box::new(entry);
        match self {
            Refusal::Full => LogError::Full(entry),
            Refusal::Closed => LogError::Closed(entry),
            Refusal::TooLarge { size, limit } => LogError::TooLarge { entry, size, limit },
        }
    }
}

impl EntrySender {
    /// Queues an entry for the next batch, waiting while `capacity` entries are
    /// waiting already (the buffer is full: see
    /// [`EventHandler::on_backpressure`](crate::EventHandler::on_backpressure)).
    ///
    /// The entry is encoded on the calling thread and freed there once it is queued.
    ///
    /// # Errors
    ///
    /// [`LogError::Closed`] once the sender shuts down, [`LogError::TooLarge`] for an
    /// entry no payload can carry. The entry is handed back either way.
    pub fn log(&self, entry: LogEntry) -> Result<(), LogError> {
        self.encode(&entry)
            .and_then(|record| self.put_waiting(record, None))
            .map_err(|r| r.with(entry))
    }

    /// Queues an entry for the next batch, waiting at most `timeout` for room.
    ///
    /// # Errors
    ///
    /// [`LogError::Full`] when no room was made in time, [`LogError::Closed`] once the
    /// sender shuts down, [`LogError::TooLarge`] for an entry no payload can carry. The
    /// entry is handed back.
    pub fn log_timeout(&self, entry: LogEntry, timeout: Duration) -> Result<(), LogError> {
        self.encode(&entry)
            .and_then(|record| self.put_waiting(record, Some(timeout)))
            .map_err(|r| r.with(entry))
    }

    /// Queues an entry for the next batch if there is room now; never waits.
    ///
    /// # Errors
    ///
    /// [`LogError::Full`] when `capacity` entries are waiting, [`LogError::Closed`]
    /// once the sender shuts down, [`LogError::TooLarge`] for an entry no payload can
    /// carry. The entry is handed back.
    pub fn try_log(&self, entry: LogEntry) -> Result<(), LogError> {
        self.encode(&entry)
            .and_then(|record| self.attempt(record, Wait::No))
            .map_err(|r| r.with(entry))
    }

    /// Queues an entry already encoded as one record of a payload's `logs` (the
    /// bridges write theirs straight from a record): without waiting, or waiting for
    /// room at most `block`.
    pub(crate) fn put_record(
        &self,
        record: Vec<u8>,
        block: Option<Duration>,
    ) -> Result<(), Refusal> {
        if record.len() > self.room() {
            return Err(self.too_large(record.len()));
        }
        match block {
            None => self.attempt(record, Wait::No),
            Some(timeout) => self.put_waiting(record, Some(timeout)),
        }
    }

    /// Puts a record on the channel, waiting for room (at most `timeout`, if given).
    fn put_waiting(&self, record: Vec<u8>, timeout: Option<Duration>) -> Result<(), Refusal> {
        let record = match self.attempt_back(record, Wait::No) {
            Err((Some(record), Refusal::Full)) => record,
            done => return done.map_err(|(_, r)| r),
        };
        let began = Instant::now();
        let first = timeout.map_or(BACKPRESSURE_AFTER, |t| t.min(BACKPRESSURE_AFTER));
        let record = match self.attempt_back(record, Wait::For(first)) {
            Err((Some(record), Refusal::Full)) => record,
            done => return done.map_err(|(_, r)| r),
        };
        let rest = match timeout {
            None => Wait::Forever,
            Some(t) if t <= first => return Err(Refusal::Full),
            Some(t) => Wait::For(t.saturating_sub(first)),
        };
        // Still no room after a while: backpressure. The handler hears of it here,
        // between two attempts, so that it never runs while the batcher waits for this
        // producer to leave the channel (at shutdown).
        let _waiting = self.inner.shared.start_waiting(began);
        self.attempt(record, rest)
    }

    /// One attempt to put a record on the channel, counted inside.
    fn attempt(&self, record: Vec<u8>, wait: Wait) -> Result<(), Refusal> {
        self.attempt_back(record, wait).map_err(|(_, r)| r)
    }

    /// [`attempt`](Self::attempt), handing the record back when there was no room in
    /// time (`Full`), so that it can be tried again without encoding it again.
    fn attempt_back(&self, record: Vec<u8>, wait: Wait) -> Result<(), (Option<Vec<u8>>, Refusal)> {
        let Some(_inside) = self.inner.state.enter() else {
            return Err((None, Refusal::Closed));
        };
        let channel = &self.inner.entries;
        let msg = Msg::Entry(record);
        // What came back, and whether for want of room (rather than a closed channel).
        let sent = match wait {
            Wait::No => channel.try_send(msg).map_err(|e| match e {
                TrySendError::Full(m) => (m, true),
                TrySendError::Disconnected(m) => (m, false),
            }),
            Wait::For(limit) => channel.send_timeout(msg, limit).map_err(|e| match e {
                SendTimeoutError::Timeout(m) => (m, true),
                SendTimeoutError::Disconnected(m) => (m, false),
            }),
            Wait::Forever => channel.send(msg).map_err(|e| (e.into_inner(), false)),
        };
        match sent {
            Ok(()) => {
                self.nudge();
                Ok(())
            }
            Err((Msg::Entry(record), true)) => Err((Some(record), Refusal::Full)),
            Err(_) => Err((None, Refusal::Closed)),
        }
    }

    /// Wakes the batcher after an entry was put on the channel, if it sleeps with
    /// nothing to do or enough entries wait (otherwise it finds the entry at its next
    /// look, within [`POLL_EVERY`]).
    fn nudge(&self) {
        let inner = &self.inner;
        if inner.state.idle.load(SeqCst) || inner.entries.len() >= inner.wake_at {
            let _ = inner.wake.try_send(());
        }
    }

    /// The state of the sender this handle feeds.
    pub(crate) fn shared(&self) -> &Arc<Shared> {
        &self.inner.shared
    }

    /// The wire whose records [`put_record`](Self::put_record) takes.
    pub(crate) fn wire(&self) -> Wire {
        self.inner.frame.wire()
    }

    /// Encodes `entry` as one record of a payload on the sender's wire, unless no
    /// payload can carry it.
    fn encode(&self, entry: &LogEntry) -> Result<Vec<u8>, Refusal> {
        self.inner
            .frame
            .record_within(entry, self.room())
            .map_err(|len| self.too_large(len))
    }

    /// The most bytes one entry's record may take: what a payload of it alone leaves
    /// under the limit (`max_message_size`, on OTLP at most the request cap).
    fn room(&self) -> usize {
        self.inner.limit.saturating_sub(self.inner.overhead)
    }

    /// Why a record of `len` bytes is refused (it is longer than [`room`](Self::room)).
    fn too_large(&self, len: usize) -> Refusal {
        Refusal::TooLarge {
            size: self.inner.overhead.saturating_add(len),
            limit: self.inner.limit,
        }
    }
}

/// The sender's side of one entry handle: how to flush and stop its batcher. It holds
/// no end of the entry channel, so that the channel disconnects when the last
/// [`EntrySender`] is dropped (the batcher then ends), or when the batcher ends (a
/// producer waiting in `log` then gets `Closed`).
pub(crate) struct Batcher {
    watch: Watch,
    /// Dropped to stop the batcher.
    stop: Option<Sender<()>>,
    thread: Option<JoinHandle<Vec<LogPayload>>>,
}

/// What a `flush` needs of a batcher to put a marker through it and wait for it, kept
/// while the batcher runs (also while a shutdown joins it).
#[derive(Clone)]
pub(crate) struct Watch {
    state: Arc<BatchState>,
    /// The users' handle, while one lives: flush markers go through its channel.
    handle: Weak<Handle>,
    /// Disconnects when the batcher thread ends.
    done: Receiver<()>,
}

impl Watch {
    /// A flush marker for this batcher, not sent yet (cheap: call it under the
    /// batchers lock, then [`Mark::cut`] without it).
    pub(crate) fn mark(&self) -> Mark {
        Mark {
            state: self.state.clone(),
            handle: self.handle.clone(),
            entries: self
                .handle
                .upgrade()
                .map(|h| (h.entries.clone(), h.wake.clone())),
            done: self.done.clone(),
            answer: None,
        }
    }
}

/// A flush marker on its way through a batcher.
pub(crate) struct Mark {
    state: Arc<BatchState>,
    handle: Weak<Handle>,
    /// The channel to send the marker on and the batcher's wake, until [`Mark::cut`]
    /// (`None` when every handle was gone already).
    entries: Option<(Sender<Msg>, Sender<()>)>,
    done: Receiver<()>,
    /// `None` when the marker was not queued.
    answer: Option<Receiver<Left>>,
}

impl Mark {
    /// Puts the marker behind every entry logged so far (waiting for room until
    /// `deadline` at most), then lets go of the channel. Counted inside like a producer,
    /// so that a batcher shutting down answers it too; not sent once the sender is
    /// closing, nor when every handle is gone: the batcher then passes on its last
    /// entries and ends by itself.
    pub(crate) fn cut(&mut self, deadline: Instant) {
        let Some((entries, wake)) = self.entries.take() else {
            return;
        };
        let Some(_inside) = self.state.enter() else {
            return;
        };
        let (answer_tx, answer_rx) = crossbeam_channel::bounded(1);
        if entries
            .send_deadline(Msg::Flush(answer_tx), deadline)
            .is_ok()
        {
            self.answer = Some(answer_rx);
            let _ = wake.try_send(());
        }
        // The entry channel's end first: the batcher treats a gone wake as every
        // handle being gone, which it checks on the entry channel.
        drop(entries);
    }

    /// Waits until the batcher has passed on every entry ahead of the marker (or, with
    /// no marker queued, until the batcher has ended), or `deadline`. Says how many
    /// entries still wait on the channel or in the batcher's hands when it gave up (an
    /// upper bound: entries logged since the marker, and other flushes' markers, count
    /// too), and what the batcher kept to hand back.
    pub(crate) fn wait(&self, deadline: Instant) -> Passed {
        let passed = |left| Passed {
            outstanding: 0,
            left,
        };
        match &self.answer {
            Some(answer) => match answer.recv_deadline(deadline) {
                Ok(left) => return passed(left),
                // The batcher ended without reaching the marker (it cannot, but then
                // its hands are empty).
                Err(crossbeam_channel::RecvTimeoutError::Disconnected) => {
                    return passed(self.state.left())
                }
                Err(crossbeam_channel::RecvTimeoutError::Timeout) => {}
            },
            None => {
                if let Err(crossbeam_channel::RecvTimeoutError::Disconnected) =
                    self.done.recv_deadline(deadline)
                {
                    return passed(self.state.left());
                }
            }
        }
        let waiting = self.handle.upgrade().map_or(0, |h| h.entries.len());
        Passed {
            outstanding: (waiting as u64).saturating_add(self.state.holding.load(SeqCst)),
            left: self.state.left(),
        }
    }
}

/// Starts a batcher thread that feeds `queue` (a pool's queue); returns the handle
/// users log through and the sender's side.
pub(crate) fn start(
    shared: &Arc<Shared>,
    batching: Batching,
    queue: Sender<Encoded>,
    name: String,
) -> Result<(EntrySender, Batcher), Error> {
    let Layout {
        frame,
        overhead,
        limit,
        batch_cap,
    } = batching.validate(&shared.config)?;
    let frame = Arc::new(frame);
    let (entries_tx, entries_rx) = crossbeam_channel::bounded(batching.capacity);
    let (wake_tx, wake_rx) = crossbeam_channel::bounded::<()>(1);
    let wake_at = batching.max_entries.min(batching.capacity / 2).max(1);
    let (stop_tx, stop_rx) = crossbeam_channel::bounded::<()>(0);
    let (done_tx, done_rx) = crossbeam_channel::bounded::<()>(0);
    let state = Arc::new(BatchState {
        closing: AtomicBool::new(false),
        inside: AtomicUsize::new(0),
        idle: AtomicBool::new(false),
        holding: AtomicU64::new(0),
        left_payloads: AtomicU64::new(0),
        left_entries: AtomicU64::new(0),
    });
    let run = Run {
        shared: shared.clone(),
        state: state.clone(),
        entries: entries_rx,
        wake: wake_rx,
        stop: stop_rx,
        _done: done_tx,
        queue,
        frame: frame.clone(),
        overhead,
        batch_cap,
        batch: Vec::new(),
        batch_bytes: 0,
        first_at: None,
        left: Vec::new(),
        stopping: false,
        batching,
    };
    let thread = std::thread::Builder::new()
        .name(name)
        .spawn(move || run.run())
        .map_err(Error::Spawn)?;
    let handle = EntrySender {
        inner: Arc::new(Handle {
            entries: entries_tx,
            wake: wake_tx,
            wake_at,
            state: state.clone(),
            shared: shared.clone(),
            frame,
            overhead,
            limit,
        }),
    };
    let batcher = Batcher {
        watch: Watch {
            state,
            handle: Arc::downgrade(&handle.inner),
            done: done_rx,
        },
        stop: Some(stop_tx),
        thread: Some(thread),
    };
    Ok((handle, batcher))
}

impl Batcher {
    /// What a `flush` needs of this batcher.
    pub(crate) fn watch(&self) -> &Watch {
        &self.watch
    }

    /// Whether the batcher thread has ended (every handle was dropped, and it passed
    /// its last batch on).
    pub(crate) fn is_finished(&self) -> bool {
        self.thread.as_ref().is_none_or(JoinHandle::is_finished)
    }

    /// Refuses new entries and tells the batcher to pass on the last ones.
    pub(crate) fn stop(&mut self) {
        self.watch.state.closing.store(true, SeqCst);
        self.stop.take();
    }

    /// Waits for the batcher to end; returns the payloads it could not pass on.
    pub(crate) fn join(&mut self) -> Vec<LogPayload> {
        self.stop();
        match self.thread.take().map(JoinHandle::join) {
            Some(Ok(left)) => left,
            Some(Err(_)) => {
                log::error!("a logsender batcher panicked");
                Vec::new()
            }
            None => Vec::new(),
        }
    }
}

/// The batcher thread's state.
struct Run {
    shared: Arc<Shared>,
    state: Arc<BatchState>,
    entries: Receiver<Msg>,
    /// Producers' (and flush markers') wakes; disconnects with the last handle.
    wake: Receiver<()>,
    stop: Receiver<()>,
    /// Dropped when the thread ends (see `Watch::done`).
    _done: Sender<()>,
    queue: Sender<Encoded>,
    batching: Batching,
    /// The template's bytes around the entries, on the sender's wire.
    frame: Arc<EntryFrame>,
    /// The most bytes `frame` adds, and the largest batch (with them).
    overhead: usize,
    batch_cap: usize,
    /// The open batch's records.
    batch: Vec<Vec<u8>>,
    batch_bytes: usize,
    /// When the open batch's first entry arrived.
    first_at: Option<Instant>,
    /// Payloads not passed on by the close deadline, handed back.
    left: Vec<LogPayload>,
    /// The sender is shutting down: pushes wait until the close deadline at most.
    stopping: bool,
}

impl Run {
    fn run(mut self) -> Vec<LogPayload> {
        // Ends at `stop`, or when every handle (and every flush marker's sender) is gone.
        let mut gone = false;
        while !self.stopping && !gone {
            let mut took = 0;
            while took < TAKE_AT_ONCE {
                match self.entries.try_recv() {
                    Ok(msg) => {
                        self.take(msg);
                        took += 1;
                    }
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => {
                        gone = true;
                        break;
                    }
                }
            }
            if gone {
                break;
            }
            if self
                .first_at
                .is_some_and(|t| t.elapsed() >= self.batching.linger)
            {
                self.cut_batch();
            }
            let timeout = if took == TAKE_AT_ONCE {
                // More is waiting: look again at once (after the stop channel).
                Duration::ZERO
            } else if took > 0 || self.first_at.is_some() {
                let linger = self.first_at.map_or(POLL_EVERY, |t| {
                    crate::clock::after(t, self.batching.linger)
                        .saturating_duration_since(Instant::now())
                });
                POLL_EVERY.min(linger)
            } else {
                // Nothing to do: sleep until a producer wakes it. The flag goes up
                // before the last look at the channel (see `BatchState::idle`).
                self.state.idle.store(true, SeqCst);
                if !self.entries.is_empty() {
                    self.state.idle.store(false, SeqCst);
                    continue;
                }
                IDLE_WAIT
            };
            select! {
                // Disconnected: every handle is gone (the entry channel went first);
                // the next look at it says so once it is empty.
                recv(self.wake) -> _ => {}
                recv(self.stop) -> _ => self.stopping = true,
                default(timeout) => {}
            }
            self.state.idle.store(false, SeqCst);
        }
        self.finish();
        std::mem::take(&mut self.left)
    }

    fn take(&mut self, msg: Msg) {
        match msg {
            Msg::Entry(record) => {
                self.state.holding.fetch_add(1, SeqCst);
                self.add(record);
            }
            Msg::Flush(answer) => {
                // Every entry ahead of the marker is in the batch: pass it on, then
                // answer.
                self.cut_batch();
                let _ = answer.try_send(self.state.left());
            }
        }
    }

    /// Shutting down (or every handle is gone): takes every entry a producer managed to
    /// log (producers waiting for room get it as this drains; new ones are refused),
    /// then passes everything on, or hands it back past the close deadline.
    fn finish(&mut self) {
        loop {
            while let Ok(msg) = self.entries.try_recv() {
                self.take(msg);
            }
            // Producers inside are only ever in a channel operation, which the draining
            // completes: this ends as soon as they have left.
            if self.state.inside.load(SeqCst) == 0 && self.entries.is_empty() {
                break;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        self.cut_batch();
    }

    /// Adds an entry's record, cutting the batch first if it would overflow it.
    fn add(&mut self, record: Vec<u8>) {
        let len = record.len();
        if !self.batch.is_empty() && self.overhead + self.batch_bytes + len > self.batch_cap {
            self.cut_batch();
        }
        if self.batch.is_empty() {
            self.first_at = Some(Instant::now());
        }
        self.batch.push(record);
        self.batch_bytes += len;
        if self.batch.len() >= self.batching.max_entries {
            self.cut_batch();
        }
    }

    /// Makes a payload of the open batch and passes it on.
    fn cut_batch(&mut self) {
        self.first_at = None;
        let len = std::mem::take(&mut self.batch_bytes);
        if self.batch.is_empty() {
            return;
        }
        debug_assert_eq!(len, self.batch.iter().map(Vec::len).sum::<usize>());
        let bytes = self.frame.assemble(&self.batch, SystemTime::now());
        let n = self.batch.len();
        self.batch.clear();
        self.push(Encoded {
            wire: self.frame.wire(),
            bytes,
            entries: u32::try_from(n).unwrap_or(u32::MAX),
        });
        self.state.holding.fetch_sub(n as u64, SeqCst);
    }

    /// Puts a payload on the pool's queue, waiting for room; once the sender shuts
    /// down, until the close deadline at most, then keeps it (and every later one, in
    /// order) to hand back.
    fn push(&mut self, payload: Encoded) {
        if !self.stopping {
            let mut select = Select::new();
            let to_queue = select.send(&self.queue);
            select.recv(&self.stop);
            let ready = select.select();
            if ready.index() == to_queue {
                if let Err(e) = ready.send(&self.queue, payload) {
                    // The pool is gone (it cannot be, before this thread ends).
                    self.keep(e.into_inner());
                }
                return;
            }
            // Nobody sends on the stop channel: it is ready because it disconnected.
            let _ = ready.recv(&self.stop);
            self.stopping = true;
        }
        let sent = if self.left.is_empty() {
            match self.shared.close_deadline() {
                Some(deadline) => self
                    .queue
                    .send_deadline(payload, deadline)
                    .map_err(|e| e.into_inner()),
                None => self.queue.send(payload).map_err(|e| e.into_inner()),
            }
        } else {
            Err(payload)
        };
        if let Err(payload) = sent {
            warn!(
                "close deadline: handing back a batch of {} entries",
                payload.entries
            );
            self.keep(payload);
        }
    }

    /// Keeps a payload to hand back.
    fn keep(&mut self, payload: Encoded) {
        self.state.left_payloads.fetch_add(1, SeqCst);
        self.state
            .left_entries
            .fetch_add(u64::from(payload.entries), SeqCst);
        self.left.extend(payload.decode());
    }
}
