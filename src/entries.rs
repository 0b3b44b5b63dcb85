//! The entry level: [`EntrySender`] takes single [`LogEntry`]s, and a batcher thread
//! packs them into payloads (by count, bytes and time, stamped from a template) that a
//! worker pool of the sender takes in like any other queue.
//!
//! One entry: `log` puts it on a bounded channel (waiting when it is full, counted as
//! backpressure); the batcher (`{prefix}-bN`) adds it to the open batch; a full batch, or
//! one older than `linger`, becomes a `LogPayload` on the pool's queue. `flush` asks the
//! batcher to cut the open batch and waits until every entry logged before it is in a
//! payload; `shutdown` makes the batcher take every entry a producer managed to log,
//! while refusing new ones, and hands back what it could not pass on in time.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::SeqCst};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use crossbeam_channel::{select, Receiver, Select, SendTimeoutError, Sender, TrySendError};
use log::warn;
use parking_lot::{Condvar, Mutex};

use crate::error::Error;
use crate::model::{LogEntry, LogPayload};
use crate::shared::{Shared, BACKPRESSURE_AFTER};
use crate::wire;

/// Most entries the batcher takes per wake-up before it looks at its other channels.
const TAKE_AT_ONCE: usize = 1024;

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
    /// `max_message_size`.
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
    /// [`EntrySender::try_log`] fails) while this many wait. Defaults to 8,192.
    pub fn capacity(mut self, entries: usize) -> Self {
        self.capacity = entries;
        self
    }

    /// Workers that encode and write this handle's payloads. Defaults to 2.
    pub fn workers(mut self, n: usize) -> Self {
        self.workers = n;
        self
    }

    pub(crate) fn worker_count(&self) -> usize {
        self.workers
    }

    /// Checks the settings against the sender's; returns the template's encoded size
    /// (with a timestamp).
    fn validate(&self, max_message_size: usize) -> Result<usize, Error> {
        let bad = |field: &'static str, reason: &str| {
            Err(Error::InvalidConfig {
                field,
                reason: reason.to_string(),
            })
        };
        if self.max_entries == 0 {
            return bad("max_entries", "must be at least 1");
        }
        if self.capacity == 0 {
            return bad("capacity", "must be at least 1");
        }
        if self.workers == 0 {
            return bad("workers", "an entry sender needs at least one worker");
        }
        if self.linger.is_zero() {
            return bad("linger", "must be longer than zero");
        }
        if self.max_bytes == 0 || self.max_bytes > max_message_size {
            return bad(
                "max_bytes",
                "must be within 1 ..= the sender's max_message_size",
            );
        }
        if !self.template.logs.is_empty() {
            return bad(
                "template",
                "a template carries no entries (they would be in every payload)",
            );
        }
        let mut stamped = self.template.clone();
        stamped.timestamp.get_or_insert_with(SystemTime::now);
        let len = wire::encoded_len(&stamped);
        if len >= max_message_size {
            return bad("template", "encodes larger than max_message_size");
        }
        Ok(len)
    }
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
    /// The entry alone would make a payload larger than `max_message_size`.
    TooLarge {
        /// The entry.
        entry: Box<LogEntry>,
        /// The size of a payload carrying just this entry, in bytes.
        size: usize,
        /// The sender's `max_message_size`.
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

/// What the handles, the batcher and the sender share about one batcher.
pub(crate) struct BatchState {
    /// Set (before the batcher is stopped) when the sender shuts down.
    closing: AtomicBool,
    /// Producers inside `log`/`try_log`: the batcher drains until none is left.
    inside: AtomicUsize,
    /// Entries producers put on the channel.
    accepted: AtomicU64,
    /// Entries the batcher passed on in payloads (or handed back at shutdown).
    passed: Mutex<u64>,
    passed_changed: Condvar,
}

/// A cloneable, thread-safe handle that takes single [`LogEntry`]s and ships them in
/// batches. Made by [`LogSender::entry_sender`](crate::LogSender::entry_sender).
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
    entries: Sender<LogEntry>,
    state: Arc<BatchState>,
    shared: Arc<Shared>,
    /// The template's encoded size, with a timestamp.
    template_len: usize,
}

impl std::fmt::Debug for EntrySender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EntrySender")
            .field("waiting", &self.inner.entries.len())
            .field("accepted", &self.inner.state.accepted.load(SeqCst))
            .finish_non_exhaustive()
    }
}

/// Counts a producer inside `log` while it lives.
struct Inside<'a>(&'a BatchState);

impl Drop for Inside<'_> {
    fn drop(&mut self) {
        self.0.inside.fetch_sub(1, SeqCst);
    }
}

impl EntrySender {
    /// Queues an entry for the next batch, waiting while `capacity` entries are
    /// waiting already (the buffer is full: see
    /// [`EventHandler::on_backpressure`](crate::EventHandler::on_backpressure)).
    ///
    /// # Errors
    ///
    /// [`LogError::Closed`] once the sender shuts down, [`LogError::TooLarge`] for an
    /// entry no payload can carry. The entry is handed back either way.
    pub fn log(&self, entry: LogEntry) -> Result<(), LogError> {
        let entry = self.check(entry)?;
        let Some(_inside) = self.enter() else {
            return Err(LogError::Closed(Box::new(entry)));
        };
        let handle = &self.inner;
        let result = match handle.entries.try_send(entry) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(entry)) => {
                let began = Instant::now();
                match handle.entries.send_timeout(entry, BACKPRESSURE_AFTER) {
                    Ok(()) => Ok(()),
                    Err(SendTimeoutError::Timeout(entry)) => {
                        let _waiting = handle.shared.start_waiting(began);
                        handle
                            .entries
                            .send(entry)
                            .map_err(|e| LogError::Closed(Box::new(e.into_inner())))
                    }
                    Err(SendTimeoutError::Disconnected(entry)) => {
                        Err(LogError::Closed(Box::new(entry)))
                    }
                }
            }
            Err(TrySendError::Disconnected(entry)) => Err(LogError::Closed(Box::new(entry))),
        };
        if result.is_ok() {
            handle.state.accepted.fetch_add(1, SeqCst);
        }
        result
    }

    /// Queues an entry for the next batch if there is room now; never waits.
    ///
    /// # Errors
    ///
    /// [`LogError::Full`] when `capacity` entries are waiting, [`LogError::Closed`]
    /// once the sender shuts down, [`LogError::TooLarge`] for an entry no payload can
    /// carry. The entry is handed back.
    pub fn try_log(&self, entry: LogEntry) -> Result<(), LogError> {
        let entry = self.check(entry)?;
        let Some(_inside) = self.enter() else {
            return Err(LogError::Closed(Box::new(entry)));
        };
        match self.inner.entries.try_send(entry) {
            Ok(()) => {
                self.inner.state.accepted.fetch_add(1, SeqCst);
                Ok(())
            }
            Err(TrySendError::Full(entry)) => Err(LogError::Full(Box::new(entry))),
            Err(TrySendError::Disconnected(entry)) => Err(LogError::Closed(Box::new(entry))),
        }
    }

    /// Rejects an entry that no payload can carry.
    fn check(&self, entry: LogEntry) -> Result<LogEntry, LogError> {
        let limit = self.inner.shared.config.max_message_size;
        let size = self
            .inner
            .template_len
            .saturating_add(wire::entry_len(&entry));
        if size > limit {
            return Err(LogError::TooLarge {
                entry: Box::new(entry),
                size,
                limit,
            });
        }
        Ok(entry)
    }

    /// Counts the caller inside, unless the sender is closing. The count is raised
    /// before the flag is read, and the batcher reads them the other way round, so
    /// that the batcher cannot miss an entry still on its way (both `SeqCst`).
    fn enter(&self) -> Option<Inside<'_>> {
        let state = &*self.inner.state;
        state.inside.fetch_add(1, SeqCst);
        let inside = Inside(state);
        (!state.closing.load(SeqCst)).then_some(inside)
    }
}

/// The sender's side of one entry handle: how to flush and stop its batcher.
pub(crate) struct Batcher {
    state: Arc<BatchState>,
    cut: Sender<()>,
    /// Dropped to stop the batcher.
    stop: Option<Sender<()>>,
    thread: Option<JoinHandle<Vec<LogPayload>>>,
}

/// How many entries a handle had taken when `flush` began.
pub(crate) struct Mark {
    state: Arc<BatchState>,
    accepted: u64,
}

impl Mark {
    /// Waits until those entries are passed on in payloads, or `deadline`; returns how
    /// many of them are not.
    pub(crate) fn wait(&self, deadline: Instant) -> u64 {
        let mut passed = self.state.passed.lock();
        while *passed < self.accepted {
            if self
                .state
                .passed_changed
                .wait_until(&mut passed, deadline)
                .timed_out()
            {
                break;
            }
        }
        self.accepted.saturating_sub(*passed)
    }
}

/// Starts a batcher thread that feeds `queue` (a pool's queue); returns the handle
/// users log through and the sender's side.
pub(crate) fn start(
    shared: &Arc<Shared>,
    batching: Batching,
    queue: Sender<LogPayload>,
    name: String,
) -> Result<(EntrySender, Batcher), Error> {
    let template_len = batching.validate(shared.config.max_message_size)?;
    let (entries_tx, entries_rx) = crossbeam_channel::bounded(batching.capacity);
    let (cut_tx, cut_rx) = crossbeam_channel::unbounded();
    let (stop_tx, stop_rx) = crossbeam_channel::bounded::<()>(0);
    let state = Arc::new(BatchState {
        closing: AtomicBool::new(false),
        inside: AtomicUsize::new(0),
        accepted: AtomicU64::new(0),
        passed: Mutex::new(0),
        passed_changed: Condvar::new(),
    });
    let run = Run {
        shared: shared.clone(),
        state: state.clone(),
        entries: entries_rx,
        cuts: cut_rx,
        stop: stop_rx,
        queue,
        template_len,
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
            state: state.clone(),
            shared: shared.clone(),
            template_len,
        }),
    };
    let batcher = Batcher {
        state,
        cut: cut_tx,
        stop: Some(stop_tx),
        thread: Some(thread),
    };
    Ok((handle, batcher))
}

impl Batcher {
    /// Asks the batcher to cut its open batch; the mark waits for every entry logged
    /// so far to be in a payload.
    pub(crate) fn cut(&self) -> Mark {
        let accepted = self.state.accepted.load(SeqCst);
        let _ = self.cut.send(());
        Mark {
            state: self.state.clone(),
            accepted,
        }
    }

    /// Refuses new entries and tells the batcher to pass on the last ones.
    pub(crate) fn stop(&mut self) {
        self.state.closing.store(true, SeqCst);
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
    entries: Receiver<LogEntry>,
    cuts: Receiver<()>,
    stop: Receiver<()>,
    queue: Sender<LogPayload>,
    batching: Batching,
    template_len: usize,
    batch: Vec<LogEntry>,
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
        // Becomes `never` once every handle is gone; the open batch still lingers out.
        let mut entries = self.entries.clone();
        while !self.stopping {
            let linger = self
                .first_at
                .map(|t| crate::clock::after(t, self.batching.linger));
            let timeout = linger.map_or(Duration::from_secs(3600), |t| {
                t.saturating_duration_since(Instant::now())
            });
            select! {
                recv(entries) -> entry => match entry {
                    Ok(entry) => {
                        self.add(entry);
                        // Take what else is waiting without another select.
                        for _ in 0..TAKE_AT_ONCE {
                            match self.entries.try_recv() {
                                Ok(entry) => self.add(entry),
                                Err(_) => break,
                            }
                        }
                    }
                    Err(_) => entries = crossbeam_channel::never(),
                },
                recv(self.cuts) -> _ => self.take_waiting(),
                recv(self.stop) -> _ => self.stopping = true,
                default(timeout) => {
                    if self.first_at.is_some_and(|t| t.elapsed() >= self.batching.linger) {
                        self.cut_batch();
                    }
                }
            }
        }
        self.finish();
        std::mem::take(&mut self.left)
    }

    /// Adds what is waiting now to the batch, then cuts it (for `flush`).
    fn take_waiting(&mut self) {
        let n = self.entries.len();
        for entry in self.entries.try_iter().take(n).collect::<Vec<_>>() {
            self.add(entry);
        }
        self.cut_batch();
    }

    /// Shutting down: takes every entry a producer managed to log (producers waiting
    /// for room get it as this drains; new ones are refused), then passes everything
    /// on, or hands it back past the close deadline.
    fn finish(&mut self) {
        loop {
            while let Ok(entry) = self.entries.try_recv() {
                self.add(entry);
            }
            if self.state.inside.load(SeqCst) == 0 && self.entries.is_empty() {
                break;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        self.cut_batch();
    }

    /// Adds an entry, cutting the batch first if the entry would overflow it.
    fn add(&mut self, entry: LogEntry) {
        let len = wire::entry_len(&entry);
        if !self.batch.is_empty()
            && self.template_len + self.batch_bytes + len > self.batching.max_bytes
        {
            self.cut_batch();
        }
        if self.batch.is_empty() {
            self.first_at = Some(Instant::now());
        }
        self.batch.push(entry);
        self.batch_bytes += len;
        if self.batch.len() >= self.batching.max_entries {
            self.cut_batch();
        }
    }

    /// Makes a payload of the open batch and passes it on.
    fn cut_batch(&mut self) {
        self.first_at = None;
        self.batch_bytes = 0;
        if self.batch.is_empty() {
            return;
        }
        let mut payload = self.batching.template.clone();
        payload.timestamp.get_or_insert_with(SystemTime::now);
        payload.logs = std::mem::take(&mut self.batch);
        let n = payload.logs.len() as u64;
        self.push(payload);
        *self.state.passed.lock() += n;
        self.state.passed_changed.notify_all();
    }

    /// Puts a payload on the pool's queue, waiting for room; once the sender shuts
    /// down, until the close deadline at most, then keeps it (and every later one, in
    /// order) to hand back.
    fn push(&mut self, payload: LogPayload) {
        if !self.stopping {
            let mut select = Select::new();
            let to_queue = select.send(&self.queue);
            select.recv(&self.stop);
            let ready = select.select();
            if ready.index() == to_queue {
                if let Err(e) = ready.send(&self.queue, payload) {
                    // The pool is gone (it cannot be, before this thread ends).
                    self.left.push(e.into_inner());
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
                payload.logs.len()
            );
            self.left.push(payload);
        }
    }
}
