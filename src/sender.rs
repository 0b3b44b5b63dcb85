//! [`LogSender`]: the handle users hold, and the state its threads share.

use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use grpcio::{EnvBuilder, GrpcSlice};
use log::{error, warn};
use parking_lot::{Condvar, Mutex};

use crate::config::{Config, DeliveryMode};
use crate::error::Error;
use crate::events::{DeadLetterEvent, DropReason, DroppedEvent, EventHandler};
use crate::ledger::{Item, Ledger, Origin};
use crate::model::LogPayload;
use crate::stats::{ConnectionState, Counters, Stats};
use crate::stream::Stream;
use crate::supervisor::{Event, Supervisor};
use crate::wire;

/// One worker queue, as intake sees it.
pub(crate) struct Queue {
    /// The queue's `Origin::source` (1, 2, ...; 0 is `send_logs`).
    pub(crate) source: u32,
    pub(crate) rx: Receiver<LogPayload>,
    /// Payloads taken from it so far (the next one's `Origin::ord`).
    taken: u64,
}

/// Where intake stands: guarded by one lock so that taking a payload off a queue and
/// numbering it is atomic with respect to `flush` reading the position.
#[derive(Default)]
pub(crate) struct Intake {
    pub(crate) queues: Vec<Queue>,
}

/// What `flush` waits for: per source, the `ord` below which a payload was submitted
/// before the flush began.
struct FlushTarget {
    /// `(source, ord)` bounds, `send_logs` included.
    bounds: Vec<(u32, u64)>,
}

/// State shared by the handle, the workers, the writer and the supervisor.
///
/// Locks, in the order they may be nested (never the other way round): `intake` →
/// `ledger`; the stream slot is never held while taking `intake`, and `ledger` is only
/// ever held briefly inside it. No user callback runs while any of them is held.
pub(crate) struct Shared {
    pub(crate) config: Config,
    pub(crate) counters: Counters,
    pub(crate) ledger: Mutex<Ledger>,
    /// Signalled whenever the ledger frees room, settles payloads, or starts closing.
    pub(crate) ledger_cv: Condvar,
    pub(crate) stream: Stream,
    pub(crate) events: Sender<Event>,
    /// One token wakes the background writer to write the outbox; dropped at the end of
    /// `close`.
    wake: Mutex<Option<Sender<()>>>,
    /// Disconnected at close: wakes idle workers so they finish.
    stop: Mutex<Option<Sender<()>>>,
    pub(crate) stop_rx: Receiver<()>,
    next_seq: AtomicU64,
    /// `Origin::ord` of the next `send_logs` payload (source 0).
    next_direct: AtomicU64,
    intake: Mutex<Intake>,
    /// A cheap copy of the ledger's closing flag for loops that poll it.
    closing: AtomicBool,
    close_deadline: Mutex<Option<Instant>>,
    grpc_threads: Arc<AtomicUsize>,
}

impl Shared {
    pub(crate) fn is_closing(&self) -> bool {
        self.closing.load(Ordering::Acquire)
    }

    pub(crate) fn close_deadline(&self) -> Option<Instant> {
        *self.close_deadline.lock()
    }

    /// Wakes the background writer to write the outbox, and workers waiting for room
    /// to write before they wait again.
    pub(crate) fn wake_writer(&self) {
        self.ledger.lock().stream_changed();
        self.ledger_cv.notify_all();
        if let Some(tx) = self.wake.lock().as_ref() {
            let _ = tx.try_send(());
        }
    }

    /// Calls the user's handler, if any, never with a lock held. A panic in the handler
    /// is caught and logged: it must not kill a logsender thread.
    pub(crate) fn handler(&self, f: impl FnOnce(&dyn EventHandler)) {
        if let Some(h) = &self.config.handler {
            let h: &dyn EventHandler = h.as_ref();
            if let Err(panic) = std::panic::catch_unwind(AssertUnwindSafe(|| f(h))) {
                let what = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "a non-string panic".into());
                Counters::add(&self.counters.handler_panics, 1);
                error!("the EventHandler panicked ({what}); logsender goes on");
            }
        }
    }

    /// Numbers a payload in global intake order.
    fn next_seq(&self) -> u64 {
        self.next_seq.fetch_add(1, Ordering::AcqRel)
    }

    /// Registers a worker queue (or finds it, if the same channel was registered
    /// before); returns its index in `intake.queues`.
    fn add_queue(&self, rx: &Receiver<LogPayload>) -> usize {
        let mut intake = self.intake.lock();
        if let Some(i) = intake.queues.iter().position(|q| q.rx.same_channel(rx)) {
            return i;
        }
        let source = u32::try_from(intake.queues.len() + 1).unwrap_or(u32::MAX);
        intake.queues.push(Queue {
            source,
            rx: rx.clone(),
            taken: 0,
        });
        intake.queues.len() - 1
    }

    /// Takes one payload off queue `index` and numbers it, atomically with respect to
    /// [`Shared::flush_target`]. `Err` when the queue is empty and disconnected.
    pub(crate) fn take(&self, index: usize) -> Result<Option<(Origin, u64, LogPayload)>, ()> {
        let mut intake = self.intake.lock();
        let Some(queue) = intake.queues.get_mut(index) else {
            return Err(());
        };
        match queue.rx.try_recv() {
            Ok(payload) => {
                let origin = Origin {
                    source: queue.source,
                    ord: queue.taken,
                };
                queue.taken += 1;
                let seq = self.next_seq();
                self.ledger.lock().reserve(origin);
                Ok(Some((origin, seq, payload)))
            }
            Err(crossbeam_channel::TryRecvError::Empty) => Ok(None),
            Err(crossbeam_channel::TryRecvError::Disconnected) => Err(()),
        }
    }

    /// What was submitted before now: every payload `send_logs` numbered, and for each
    /// queue what was taken plus what is waiting in it.
    fn flush_target(&self) -> FlushTarget {
        let intake = self.intake.lock();
        let mut bounds = vec![(0, self.next_direct.load(Ordering::Acquire))];
        for q in &intake.queues {
            bounds.push((q.source, q.taken.saturating_add(q.rx.len() as u64)));
        }
        FlushTarget { bounds }
    }

    /// How many payloads of `target` are not settled yet: taken in and still held, and
    /// still waiting in a queue (not taken yet).
    fn outstanding(&self, target: &FlushTarget) -> (usize, usize) {
        let intake = self.intake.lock();
        let mut not_taken = 0u64;
        for &(source, bound) in &target.bounds[1..] {
            if let Some(q) = intake.queues.iter().find(|q| q.source == source) {
                not_taken = not_taken.saturating_add(bound.saturating_sub(q.taken));
            }
        }
        let held = self.ledger.lock().outstanding_before(&target.bounds);
        (held, usize::try_from(not_taken).unwrap_or(usize::MAX))
    }

    /// Encodes a payload and wraps it for the ledger, or explains why it cannot be sent.
    fn encode(&self, origin: Origin, seq: u64, payload: &LogPayload) -> Result<Item, Error> {
        let bytes = wire::encode(payload);
        let limit = self.config.max_message_size;
        if bytes.len() > limit {
            return Err(Error::PayloadTooLarge {
                size: bytes.len(),
                limit,
            });
        }
        Ok(Item {
            seq,
            origin,
            bytes: GrpcSlice::from(bytes),
            written_before: false,
            strikes: 0,
        })
    }

    /// A worker's intake of a payload numbered and reserved by [`Shared::take`]: encode
    /// outside any lock, admit under the overflow policy,
    /// then write the outbox if nobody else is.
    pub(crate) fn intake(&self, origin: Origin, seq: u64, payload: LogPayload) {
        Counters::add(&self.counters.enqueued, 1);
        let item = match self.encode(origin, seq, &payload) {
            Ok(item) => item,
            Err(e) => {
                warn!("dead-lettering a payload: {e}");
                self.handler(|h| h.on_dead_letter(DeadLetterEvent::new(payload, e)));
                Counters::add(&self.counters.dead_lettered, 1);
                self.ledger.lock().unreserve(origin);
                self.ledger_cv.notify_all();
                return;
            }
        };
        let admitted = {
            let mut ledger = self.ledger.lock();
            Ledger::admit(
                &mut ledger,
                &self.ledger_cv,
                item,
                self.config.overflow,
                &|| self.pump(),
            )
        };
        match admitted {
            crate::ledger::Admitted::Queued { evicted } => {
                for old in evicted {
                    self.dropped(decode_item(&old), DropReason::Oldest);
                }
            }
            crate::ledger::Admitted::Dropped(reason) => {
                self.dropped(Some(payload), reason);
                self.ledger.lock().unreserve(origin);
                self.ledger_cv.notify_all();
            }
        }
        self.pump();
    }

    /// Counts and reports a dropped payload (`None` if it could not be decoded back).
    fn dropped(&self, payload: Option<LogPayload>, reason: DropReason) {
        let counter = match reason {
            DropReason::Newest => Some(&self.counters.dropped_newest),
            DropReason::Oldest => Some(&self.counters.dropped_oldest),
            DropReason::BlockTimeout => Some(&self.counters.dropped_block_timeout),
            // Logged in bulk by `Drop`; nobody can read the counters any more.
            DropReason::SenderDropped => None,
        };
        if let Some(p) = payload {
            self.handler(|h| h.on_dropped(DroppedEvent::new(p, reason)));
        }
        if let Some(counter) = counter {
            Counters::add(counter, 1);
            warn!("dropped a payload: buffer full ({reason:?})");
        }
    }

    /// Hands payloads rejected for good (still held) to the dead-letter handler, each
    /// with the collector's status, then counts them and lets them go: a `flush` that
    /// sees them settled knows the handler has seen them.
    pub(crate) fn dead_letter(&self, items: Vec<Item>, status: &grpcio::RpcStatus) {
        for item in &items {
            if let Some(p) = decode_item(item) {
                let err = Error::Rpc(grpcio::Error::RpcFailure(status.clone()));
                self.handler(|h| h.on_dead_letter(DeadLetterEvent::new(p, err)));
            }
        }
        Counters::add(&self.counters.dead_lettered, items.len() as u64);
        self.ledger.lock().forget_rejected(&items);
        self.ledger_cv.notify_all();
    }

    /// One step of waiting for payloads to settle (`flush`, `close`): wake the writer
    /// (this thread never writes, so a stalled collector cannot hold it), ask for a
    /// commit once everything wanted is written (at-least-once; committing while the
    /// queue still feeds the outbox would cut the stream into tiny epochs), then wait for
    /// the ledger to change, at most 20 ms and never past `deadline`.
    fn settle_step(&self, all_taken: bool, deadline: Instant) {
        self.wake_writer();
        if self.config.delivery == DeliveryMode::AtLeastOnce
            && all_taken
            && self.ledger.lock().outbox_len() == 0
        {
            let _ = self.events.send(Event::Commit);
        }
        let mut ledger = self.ledger.lock();
        let wake = crate::clock::deadline_in(Duration::from_millis(20)).min(deadline);
        self.ledger_cv.wait_until(&mut ledger, wake);
    }

    fn queue_depth(&self) -> u64 {
        self.intake
            .lock()
            .queues
            .iter()
            .map(|q| q.rx.len() as u64)
            .sum()
    }
}

/// Sends the gRPC core's own diagnostics to `log` (and so nowhere without a logger),
/// never to stderr: a library does not print. grpcio's `redirect_log` restores the
/// core's stderr printer when logging is off, so it is called with the level raised
/// for that instant (the messages then reach `log`, which drops them while it is off).
fn route_grpc_core_logs() {
    let level = log::max_level();
    if level == log::LevelFilter::Off {
        log::set_max_level(log::LevelFilter::Error);
        grpcio::redirect_log();
        log::set_max_level(level);
    } else {
        grpcio::redirect_log();
    }
}

fn decode_item(item: &Item) -> Option<LogPayload> {
    match wire::decode(item.bytes.as_slice()) {
        Ok(p) => Some(p),
        Err(e) => {
            error!("cannot decode a held payload (this is a bug): {e}");
            None
        }
    }
}

/// Ships `LogPayload`s to a GoSight-compatible collector over one long-lived gRPC
/// client stream.
///
/// `new` returns at once; a supervisor thread connects in the background and rebuilds
/// the connection whenever it breaks. Feed it from your own threads through a
/// crossbeam channel and [`start_worker_pool`](LogSender::start_worker_pool), or call
/// [`send_logs`](LogSender::send_logs) directly. [`close`](LogSender::close) drains and
/// hands back whatever could not be delivered.
///
/// # Examples
///
/// ```no_run
/// use logsender::{Config, LogEntry, LogPayload, LogSender};
///
/// let config = Config::builder("127.0.0.1:50051").plaintext().build()?;
/// let sender = LogSender::new(config)?;
/// let (tx, rx) = crossbeam_channel::bounded(1024);
/// sender.start_worker_pool(rx, 4)?;
///
/// tx.send(LogPayload {
///     agent_id: "agent-1".into(),
///     logs: vec![LogEntry { message: "hello".into(), ..Default::default() }],
///     ..Default::default()
/// })
/// .unwrap();
///
/// drop(tx);
/// let undelivered = sender.close();
/// assert!(undelivered.is_empty());
/// # Ok::<(), logsender::Error>(())
/// ```
pub struct LogSender {
    shared: Arc<Shared>,
    supervisor: Option<JoinHandle<()>>,
    writer: Option<JoinHandle<()>>,
    workers: Mutex<Vec<JoinHandle<()>>>,
    next_worker: AtomicUsize,
}

impl LogSender {
    /// Starts the supervisor thread and returns at once; the connection is made in
    /// the background.
    ///
    /// # Errors
    ///
    /// [`Error::Spawn`] if the supervisor thread cannot be started. Configuration errors
    /// are caught earlier, by [`ConfigBuilder::build`](crate::ConfigBuilder::build).
    pub fn new(config: Config) -> Result<LogSender, Error> {
        route_grpc_core_logs();
        let (events_tx, events_rx) = crossbeam_channel::unbounded();
        let (wake_tx, wake_rx) = crossbeam_channel::bounded(1);
        let (stop_tx, stop_rx) = crossbeam_channel::bounded(0);
        let grpc_threads = Arc::new(AtomicUsize::new(0));
        let name = config.thread_name.clone();
        let shared = Arc::new(Shared {
            counters: Counters::default(),
            ledger: Mutex::new(Ledger::new(
                config.max_buffered_payloads,
                config.max_buffered_bytes,
            )),
            ledger_cv: Condvar::new(),
            stream: Stream::new(),
            events: events_tx.clone(),
            wake: Mutex::new(Some(wake_tx)),
            stop: Mutex::new(Some(stop_tx)),
            stop_rx,
            next_seq: AtomicU64::new(0),
            next_direct: AtomicU64::new(0),
            intake: Mutex::new(Intake::default()),
            closing: AtomicBool::new(false),
            close_deadline: Mutex::new(None),
            grpc_threads: grpc_threads.clone(),
            config,
        });
        shared.counters.set_state(ConnectionState::Connecting);
        let (started, stopped) = (grpc_threads.clone(), grpc_threads);
        let env = Arc::new(
            EnvBuilder::new()
                .cq_count(1)
                .name_prefix(format!("{name}-cq"))
                .after_start(move || {
                    started.fetch_add(1, Ordering::AcqRel);
                })
                .before_stop(move || {
                    stopped.fetch_sub(1, Ordering::AcqRel);
                })
                .build(),
        );
        let writer_shared = shared.clone();
        let writer = std::thread::Builder::new()
            .name(format!("{name}-wr"))
            .spawn(move || crate::pool::run_writer(&writer_shared, &wake_rx))
            .map_err(Error::Spawn)?;
        let supervisor = Supervisor::new(shared.clone(), events_rx, events_tx, env);
        let handle = match std::thread::Builder::new()
            .name(format!("{name}-sup"))
            .spawn(move || supervisor.run())
        {
            Ok(handle) => handle,
            Err(e) => {
                shared.wake.lock().take();
                let _ = writer.join();
                return Err(Error::Spawn(e));
            }
        };
        Ok(LogSender {
            shared,
            supervisor: Some(handle),
            writer: Some(writer),
            workers: Mutex::new(Vec::new()),
            next_worker: AtomicUsize::new(0),
        })
    }

    /// Starts `n` worker threads (named `logsender-wN`) that take payloads from
    /// `receiver`, encode them, and write them on the shared stream. May be called more
    /// than once, with the same or other receivers.
    ///
    /// While no stream is up, workers keep taking payloads into the sender's bounded
    /// buffer; when it is full, the [`OverflowPolicy`](crate::OverflowPolicy) decides.
    /// When every `Sender` of the channel is dropped, workers stay until `close`, so
    /// that what they hold is still written.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidConfig`] for `n == 0`, [`Error::Closed`] after `close` began,
    /// [`Error::Spawn`] if a thread cannot be started.
    pub fn start_worker_pool(&self, receiver: Receiver<LogPayload>, n: usize) -> Result<(), Error> {
        if n == 0 {
            return Err(Error::InvalidConfig {
                field: "workers",
                reason: "a worker pool needs at least one worker".into(),
            });
        }
        if self.shared.is_closing() {
            return Err(Error::Closed);
        }
        let index = self.shared.add_queue(&receiver);
        let mut workers = self.workers.lock();
        for _ in 0..n {
            let id = self.next_worker.fetch_add(1, Ordering::Relaxed);
            let shared = self.shared.clone();
            let queue = receiver.clone();
            let handle = std::thread::Builder::new()
                .name(format!("{}-w{id}", self.shared.config.thread_name))
                .spawn(move || crate::pool::run_worker(&shared, &queue, index))
                .map_err(Error::Spawn)?;
            workers.push(handle);
        }
        Ok(())
    }

    /// Writes one payload on the shared stream, now, from the calling thread.
    ///
    /// In `AtLeastOnce` mode the payload is then held until its epoch is committed (and
    /// re-sent if that fails); in `AtMostOnce` mode it counts as sent when this returns.
    ///
    /// # Errors
    ///
    /// - [`Error::Unavailable`] at once when no stream is up: nothing was sent.
    /// - [`Error::PayloadTooLarge`] when it encodes larger than the maximum message size.
    /// - [`Error::BufferFull`] when the sender already holds its maximum.
    /// - [`Error::Rpc`] when the write failed (the stream is being rebuilt).
    /// - [`Error::Closed`] after `close` began.
    ///
    /// In every error case the caller still has the payload and nothing was kept.
    ///
    /// # Examples
    ///
    /// ```
    /// use logsender::{Config, Error, LogPayload, LogSender};
    ///
    /// // Nothing listens on this loopback port.
    /// let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    /// let config = Config::builder(format!("127.0.0.1:{port}")).plaintext().build()?;
    /// let sender = LogSender::new(config)?;
    /// let payload = LogPayload { agent_id: "a1".into(), ..Default::default() };
    /// assert!(matches!(sender.send_logs(&payload), Err(Error::Unavailable)));
    /// assert_eq!(payload.agent_id, "a1"); // still ours
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn send_logs(&self, payload: &LogPayload) -> Result<(), Error> {
        if self.shared.is_closing() {
            return Err(Error::Closed);
        }
        let origin = Origin {
            source: 0,
            ord: self.shared.next_direct.fetch_add(1, Ordering::AcqRel),
        };
        let item = self
            .shared
            .encode(origin, self.shared.next_seq(), payload)?;
        {
            let mut ledger = self.shared.ledger.lock();
            if !ledger.try_hold(&item) {
                if ledger.is_closing() {
                    return Err(Error::Closed);
                }
                let (payloads, bytes) = ledger.held();
                return Err(Error::BufferFull { payloads, bytes });
            }
        }
        self.shared.write_now(item)?;
        Counters::add(&self.shared.counters.enqueued, 1);
        Ok(())
    }

    /// Waits until everything taken in before this call (including what was waiting in
    /// the worker queues) is acknowledged (`AtLeastOnce`) or written (`AtMostOnce`), or
    /// until `timeout` passes. Returns how many of those payloads are still outstanding
    /// (0 means all done).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use logsender::{Config, LogPayload, LogSender};
    ///
    /// // Nothing listens on this loopback port.
    /// let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    /// let config = Config::builder(format!("127.0.0.1:{port}")).plaintext().build()?;
    /// let sender = LogSender::new(config)?;
    /// let (tx, rx) = crossbeam_channel::bounded(8);
    /// sender.start_worker_pool(rx, 1)?;
    /// tx.send(LogPayload::default())?;
    /// // No collector: the payload is still outstanding when the timeout passes.
    /// assert_eq!(sender.flush(Duration::from_millis(100)), 1);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn flush(&self, timeout: Duration) -> usize {
        let deadline = crate::clock::deadline_in(timeout);
        let target = self.shared.flush_target();
        loop {
            let (held, not_taken) = self.shared.outstanding(&target);
            let outstanding = held.saturating_add(not_taken);
            if outstanding == 0 || Instant::now() >= deadline {
                return outstanding;
            }
            self.shared.settle_step(not_taken == 0, deadline);
        }
    }

    /// A snapshot of the counters.
    ///
    /// # Examples
    ///
    /// ```
    /// use logsender::{Config, ConnectionState, LogSender};
    ///
    /// // Nothing listens on this loopback port.
    /// let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    /// let config = Config::builder(format!("127.0.0.1:{port}")).plaintext().build()?;
    /// let sender = LogSender::new(config)?;
    /// let stats = sender.stats();
    /// assert_eq!(stats.state, ConnectionState::Connecting);
    /// assert_eq!(stats.acknowledged, 0);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn stats(&self) -> Stats {
        let (held, bytes) = self.shared.ledger.lock().held();
        let mut stats =
            self.shared
                .counters
                .snapshot(self.shared.queue_depth(), held as u64, bytes as u64);
        stats.write_stalled = self.shared.stream.last_progress().map(|t| t.elapsed());
        stats
    }

    /// [`close_timeout`](LogSender::close_timeout) with the configured `close_timeout`
    /// (10 s by default).
    pub fn close(mut self) -> Vec<LogPayload> {
        let timeout = self.shared.config.close_timeout;
        self.shutdown(timeout)
    }

    /// Stops intake, writes and commits what it holds (and what is still in the worker
    /// queues) for up to `timeout`, stops every thread, and returns every payload that
    /// was not delivered, oldest first, so the caller can persist it. Never takes much
    /// longer than `timeout`.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use logsender::{Config, LogPayload, LogSender};
    ///
    /// // Nothing listens on this loopback port.
    /// let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    /// let config = Config::builder(format!("127.0.0.1:{port}")).plaintext().build()?;
    /// let sender = LogSender::new(config)?;
    /// let (tx, rx) = crossbeam_channel::bounded(8);
    /// sender.start_worker_pool(rx, 1)?;
    /// for i in 0..3 {
    ///     tx.send(LogPayload { host_id: format!("h{i}"), ..Default::default() })?;
    /// }
    /// // The collector never came: everything is handed back, oldest first.
    /// let back = sender.close_timeout(Duration::from_millis(200));
    /// let ids: Vec<_> = back.iter().map(|p| p.host_id.as_str()).collect();
    /// assert_eq!(ids, ["h0", "h1", "h2"]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn close_timeout(mut self, timeout: Duration) -> Vec<LogPayload> {
        self.shutdown(timeout)
    }

    fn shutdown(&mut self, timeout: Duration) -> Vec<LogPayload> {
        let Some(supervisor) = self.supervisor.take() else {
            return Vec::new();
        };
        let shared = &self.shared;
        let deadline = crate::clock::deadline_in(timeout);
        *shared.close_deadline.lock() = Some(deadline);
        {
            // Under the ledger lock, so that a worker between its "closing?" check and
            // its wait for room cannot miss the notification.
            let mut ledger = shared.ledger.lock();
            ledger.start_closing();
            shared.closing.store(true, Ordering::Release);
        }
        shared.ledger_cv.notify_all();
        // Idle workers wake up when the stop channel disconnects.
        shared.stop.lock().take();
        for worker in self.workers.lock().drain(..) {
            if worker.join().is_err() {
                error!("a logsender worker panicked");
            }
        }
        // Write and commit what is held, until done or the deadline.
        // (The workers are joined, so everything wanted is taken in.)
        while shared.ledger.lock().held().0 > 0 && Instant::now() < deadline {
            shared.settle_step(true, deadline);
        }
        let _ = shared.events.send(Event::Shutdown);
        if supervisor.join().is_err() {
            error!("the logsender supervisor panicked");
        }
        // The supervisor cancelled every call, so the writer is not stuck in a write.
        shared.wake.lock().take();
        if let Some(writer) = self.writer.take() {
            if writer.join().is_err() {
                error!("the logsender writer panicked");
            }
        }
        let mut undelivered: Vec<LogPayload> = shared
            .ledger
            .lock()
            .drain_all()
            .iter()
            .filter_map(decode_item)
            .collect();
        // What is still queued was never taken in: hand it back too (bounded, so a
        // producer that keeps sending cannot keep us here).
        for queue in shared.intake.lock().queues.drain(..) {
            undelivered.extend(queue.rx.try_iter().take(queue.rx.len()));
        }
        // The grpc poll thread ends once the environment's last channel is gone.
        let grpc_deadline =
            crate::clock::after(deadline.max(Instant::now()), Duration::from_millis(100));
        while shared.grpc_threads.load(Ordering::Acquire) > 0 && Instant::now() < grpc_deadline {
            std::thread::sleep(Duration::from_millis(2));
        }
        if !undelivered.is_empty() {
            warn!("closing with {} undelivered payloads", undelivered.len());
        }
        undelivered
    }
}

impl Drop for LogSender {
    /// Closes with a short deadline (at most 2 s). Payloads that could not be delivered
    /// are reported to [`EventHandler::on_dropped`] as
    /// [`DropReason::SenderDropped`] and logged; call `close` to get them back instead.
    fn drop(&mut self) {
        let timeout = self.shared.config.close_timeout.min(Duration::from_secs(2));
        let lost = self.shutdown(timeout);
        if !lost.is_empty() {
            error!(
                "LogSender dropped without close: {} payloads undelivered",
                lost.len()
            );
            for p in lost {
                self.shared.dropped(Some(p), DropReason::SenderDropped);
            }
        }
    }
}

impl std::fmt::Debug for LogSender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogSender")
            .field("addr", &self.shared.config.addr)
            .field("state", &self.shared.counters.state())
            .finish_non_exhaustive()
    }
}
