//! [`LogSender`]: the handle users hold, and the state its threads share.

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
use crate::ledger::{Item, Ledger};
use crate::model::LogPayload;
use crate::stats::{ConnectionState, Counters, Stats};
use crate::stream::Stream;
use crate::supervisor::{Event, Supervisor};
use crate::wire;

/// State shared by the handle, the workers and the supervisor.
pub(crate) struct Shared {
    pub(crate) config: Config,
    pub(crate) counters: Counters,
    pub(crate) ledger: Mutex<Ledger>,
    /// Signalled whenever the ledger frees room or settles payloads.
    pub(crate) ledger_cv: Condvar,
    pub(crate) stream: Stream,
    pub(crate) events: Sender<Event>,
    /// One token wakes one idle worker to write the outbox; dropped at close.
    wake: Mutex<Option<Sender<()>>>,
    pub(crate) wake_rx: Receiver<()>,
    next_seq: AtomicU64,
    /// Held (briefly) while a worker takes a payload off a queue and numbers it, and
    /// while `flush` reads where intake stands: so that count is exact.
    intake_lock: Mutex<()>,
    closing: AtomicBool,
    close_deadline: Mutex<Option<Instant>>,
    queues: Mutex<Vec<Receiver<LogPayload>>>,
    grpc_threads: Arc<AtomicUsize>,
}

impl Shared {
    pub(crate) fn is_closing(&self) -> bool {
        self.closing.load(Ordering::Acquire)
    }

    pub(crate) fn close_deadline(&self) -> Option<Instant> {
        *self.close_deadline.lock()
    }

    /// Wakes one idle worker to write the outbox.
    pub(crate) fn wake_writer(&self) {
        // Workers waiting for room write before they wait again.
        self.ledger.lock().stream_changed();
        self.ledger_cv.notify_all();
        if let Some(tx) = self.wake.lock().as_ref() {
            let _ = tx.try_send(());
        }
    }

    /// Calls the user's handler, if any (never with a lock held).
    pub(crate) fn handler(&self, f: impl FnOnce(&dyn EventHandler)) {
        if let Some(h) = &self.config.handler {
            f(h.as_ref());
        }
    }

    /// Numbers a payload in intake order.
    fn next_seq(&self) -> u64 {
        self.next_seq.fetch_add(1, Ordering::AcqRel)
    }

    /// Takes one payload off `queue` and numbers it, atomically with respect to
    /// [`Shared::intake_position`]. `Err` when the queue is empty and disconnected.
    pub(crate) fn take(
        &self,
        queue: &Receiver<LogPayload>,
    ) -> Result<Option<(u64, LogPayload)>, ()> {
        let _intake = self.intake_lock.lock();
        match queue.try_recv() {
            Ok(payload) => {
                let seq = self.next_seq();
                self.ledger.lock().reserve(seq);
                Ok(Some((seq, payload)))
            }
            Err(crossbeam_channel::TryRecvError::Empty) => Ok(None),
            Err(crossbeam_channel::TryRecvError::Disconnected) => Err(()),
        }
    }

    /// The number the next payload will get once everything queued now is taken in.
    fn intake_position(&self) -> u64 {
        let _intake = self.intake_lock.lock();
        self.next_seq.load(Ordering::Acquire) + self.queue_depth()
    }

    /// Encodes a payload and wraps it for the ledger, or explains why it cannot be sent.
    fn encode(&self, seq: u64, payload: &LogPayload) -> Result<Item, Error> {
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
            bytes: GrpcSlice::from(bytes),
            written_before: false,
        })
    }

    /// A worker's intake of a payload numbered and reserved by [`Shared::take`]: encode
    /// outside any lock, admit under the overflow policy,
    /// then write the outbox if nobody else is.
    pub(crate) fn intake(&self, seq: u64, payload: LogPayload) {
        Counters::add(&self.counters.enqueued, 1);
        let item = match self.encode(seq, &payload) {
            Ok(item) => item,
            Err(e) => {
                self.ledger.lock().unreserve(seq);
                warn!("dead-lettering a payload: {e}");
                Counters::add(&self.counters.dead_lettered, 1);
                self.handler(|h| h.on_dead_letter(DeadLetterEvent::new(payload, e)));
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
                &|| self.is_closing(),
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
                self.ledger.lock().unreserve(seq);
                self.dropped(Some(payload), reason);
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
        if let Some(counter) = counter {
            Counters::add(counter, 1);
            warn!("dropped a payload: buffer full ({reason:?})");
        }
        if let Some(p) = payload {
            self.handler(|h| h.on_dropped(DroppedEvent::new(p, reason)));
        }
    }

    /// Hands payloads rejected for good (and already counted) to the dead-letter
    /// handler, each with the collector's status.
    pub(crate) fn dead_letter(&self, items: Vec<Item>, status: &grpcio::RpcStatus) {
        for item in items {
            if let Some(p) = decode_item(&item) {
                let err = Error::Rpc(grpcio::Error::RpcFailure(status.clone()));
                self.handler(|h| h.on_dead_letter(DeadLetterEvent::new(p, err)));
            }
        }
    }

    /// One step of waiting for payloads to settle (`flush`, `close`): write the outbox
    /// from this thread, ask for a commit once everything wanted is written
    /// (at-least-once; committing while the queue still feeds the outbox would cut the
    /// stream into tiny epochs), then wait for the ledger to change, at most 20 ms and
    /// never past `deadline`.
    fn settle_step(&self, all_taken: bool, deadline: Instant) {
        self.pump();
        if self.config.delivery == DeliveryMode::AtLeastOnce
            && all_taken
            && self.ledger.lock().outbox_len() == 0
        {
            let _ = self.events.send(Event::Commit);
        }
        let mut ledger = self.ledger.lock();
        let wake = (Instant::now() + Duration::from_millis(20)).min(deadline);
        self.ledger_cv.wait_until(&mut ledger, wake);
    }

    fn queue_depth(&self) -> u64 {
        self.queues.lock().iter().map(|q| q.len() as u64).sum()
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
        // Route the gRPC core's own diagnostics to `log` too, when a logger is set up
        // (otherwise the core keeps its default: errors only, to stderr).
        if log::max_level() != log::LevelFilter::Off {
            grpcio::redirect_log();
        }
        let (events_tx, events_rx) = crossbeam_channel::unbounded();
        let (wake_tx, wake_rx) = crossbeam_channel::bounded(1);
        let grpc_threads = Arc::new(AtomicUsize::new(0));
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
            wake_rx,
            next_seq: AtomicU64::new(0),
            intake_lock: Mutex::new(()),
            closing: AtomicBool::new(false),
            close_deadline: Mutex::new(None),
            queues: Mutex::new(Vec::new()),
            grpc_threads: grpc_threads.clone(),
            config,
        });
        shared.counters.set_state(ConnectionState::Connecting);
        let (started, stopped) = (grpc_threads.clone(), grpc_threads);
        let env = Arc::new(
            EnvBuilder::new()
                .cq_count(1)
                .name_prefix("logsender-cq")
                .after_start(move || {
                    started.fetch_add(1, Ordering::AcqRel);
                })
                .before_stop(move || {
                    stopped.fetch_sub(1, Ordering::AcqRel);
                })
                .build(),
        );
        let supervisor = Supervisor::new(shared.clone(), events_rx, events_tx, env);
        let handle = std::thread::Builder::new()
            .name("logsender-sup".into())
            .spawn(move || supervisor.run())
            .map_err(Error::Spawn)?;
        Ok(LogSender {
            shared,
            supervisor: Some(handle),
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
        self.shared.queues.lock().push(receiver.clone());
        let mut workers = self.workers.lock();
        for _ in 0..n {
            let id = self.next_worker.fetch_add(1, Ordering::Relaxed);
            let shared = self.shared.clone();
            let queue = receiver.clone();
            let handle = std::thread::Builder::new()
                .name(format!("logsender-w{id}"))
                .spawn(move || crate::pool::run_worker(&shared, &queue))
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
        let item = self.shared.encode(self.shared.next_seq(), payload)?;
        if !self.shared.ledger.lock().try_hold(&item) {
            let (payloads, bytes) = self.shared.ledger.lock().held();
            return Err(Error::BufferFull { payloads, bytes });
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
        let deadline = Instant::now() + timeout;
        let target = self.shared.intake_position();
        loop {
            let taken = self.shared.next_seq.load(Ordering::Acquire);
            let not_taken = target.saturating_sub(taken) as usize;
            let outstanding = self.shared.ledger.lock().outstanding_before(target) + not_taken;
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
        self.shared
            .counters
            .snapshot(self.shared.queue_depth(), held as u64, bytes as u64)
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
        let deadline = Instant::now() + timeout;
        *shared.close_deadline.lock() = Some(deadline);
        shared.closing.store(true, Ordering::Release);
        // Wake everyone: idle workers (their wake channel disconnects) and blocked ones.
        shared.wake.lock().take();
        shared.ledger_cv.notify_all();
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
        let mut undelivered: Vec<LogPayload> = shared
            .ledger
            .lock()
            .drain_all()
            .iter()
            .filter_map(decode_item)
            .collect();
        // What is still queued was never taken in: hand it back too (bounded, so a
        // producer that keeps sending cannot keep us here).
        for queue in shared.queues.lock().drain(..) {
            undelivered.extend(queue.try_iter().take(queue.len()));
        }
        // The grpc poll thread ends once the environment's last channel is gone.
        let grpc_deadline = Instant::now() + Duration::from_secs(1);
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
