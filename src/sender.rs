//! [`LogSender`]: the handle users hold. It starts the threads, takes payloads in
//! (`send_logs`, worker pools), waits for them to settle (`flush`), and shuts down.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use grpcio::EnvBuilder;
use log::{error, info, warn};
use parking_lot::Mutex;

use crate::command::Command;
use crate::config::{Config, DeliveryMode};
use crate::entries::{self, Batcher, Batching, EntrySender, Mark, Passed, Watch};
use crate::error::{invalid_config, Error};
use crate::events::DropReason;
use crate::events::SpoolEvent;
use crate::ledger::{OldSettled, Origin};
use crate::model::LogPayload;
use crate::queues::{FlushTarget, Intake, Queued};
use crate::shared::Shared;
use crate::spool::{Backlog, OpenError, Spool};
use crate::spooler;
use crate::stats::{ConnectionState, Counters, Report, Stats};
use crate::supervisor::Supervisor;
use crate::{intake, write};

/// Sends the gRPC core's own diagnostics to `log` under the target `logsender::grpc`
/// (and so nowhere without a logger), never to stderr: a library does not print. See
/// `grpc_log` for the levels.
fn route_grpc_core_logs() {
    crate::grpc_log::install();
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
/// use logsender::{Config, LogEntry, LogPayload, LogSender, Level};
///
/// let config = Config::builder("127.0.0.1:50051").plaintext().build()?;
/// let sender = LogSender::new(config)?;
/// let (tx, rx) = logsender::crossbeam_channel::bounded(1024);
/// sender.start_worker_pool(rx, 4)?;
///
/// let mut payload = LogPayload::from_host("agent-1");
/// payload.logs.push(LogEntry::new(Level::Info, "hello"));
/// tx.send(payload).unwrap();
///
/// drop(tx);
/// let done = sender.close();
/// assert!(done.report.all_delivered(), "{:?}", done.report);
/// # Ok::<(), logsender::Error>(())
/// ```
pub struct LogSender {
    shared: Arc<Shared>,
    /// Taken by the first `shutdown`; a second one waits for it on this lock.
    threads: Mutex<Threads>,
    workers: Mutex<Vec<JoinHandle<()>>>,
    /// The batchers of the entry handles.
    batchers: Mutex<Batchers>,
    next_worker: AtomicUsize,
    stop_workers_rx: Receiver<()>,
    /// gRPC completion-queue threads still running.
    grpc_threads: Arc<AtomicUsize>,
}

/// What `shutdown` stops, once.
struct Threads {
    supervisor: Option<JoinHandle<()>>,
    writer: Option<JoinHandle<()>>,
    /// Dropped at close: disconnects `stop_workers_rx`, which wakes idle workers.
    stop_workers: Option<Sender<()>>,
    /// Dropped at the end of close: ends the background writer.
    stop_writer: Option<Sender<()>>,
    /// The spool thread, if there is a spool.
    spooler: Option<JoinHandle<()>>,
    /// Dropped at the end of close, after the writer: ends the spool thread.
    stop_spooler: Option<Sender<()>>,
    /// The first shutdown's outcome, for the ones after it.
    done: Option<(Report, Stats)>,
}

/// The entry handles' batchers.
#[derive(Default)]
struct Batchers {
    live: Vec<Batcher>,
    /// The batchers a `shutdown` stopped and is joining: a `flush` meanwhile waits
    /// for them too.
    stopping: Vec<Watch>,
    /// Batchers started so far (names them).
    started: usize,
    /// What finished batchers could not pass on (nothing, unless a pool was lost), to
    /// hand back at shutdown.
    left: Vec<LogPayload>,
}

impl Batchers {
    /// Joins the batchers whose every handle is gone and that have ended.
    fn prune(&mut self) {
        if !self.live.iter().any(Batcher::is_finished) {
            return;
        }
        let (mut done, live): (Vec<Batcher>, Vec<Batcher>) = std::mem::take(&mut self.live)
            .into_iter()
            .partition(Batcher::is_finished);
        self.live = live;
        for batcher in &mut done {
            self.left.extend(batcher.join());
        }
    }
}

/// Joins the workers that have ended (an entry handle's pool, once the handle is gone).
fn prune_workers(workers: &mut Vec<JoinHandle<()>>) {
    if !workers.iter().any(JoinHandle::is_finished) {
        return;
    }
    let (done, live): (Vec<_>, Vec<_>) = std::mem::take(workers)
        .into_iter()
        .partition(JoinHandle::is_finished);
    *workers = live;
    for worker in done {
        if worker.join().is_err() {
            error!("a logsender worker panicked");
        }
    }
}

/// What [`LogSender::sync`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Durability {
    /// Everything taken in before the call is in the spool, and the spool is on disk.
    /// `false`: the timeout passed first, a sync failed, this one or any before it since
    /// the spool was opened (reported to the event handler: after a failed `fdatasync`
    /// the kernel may have dropped what it could not write, so nothing appended before
    /// it can be known to be on disk), or some payloads are held in memory only
    /// (`memory_only`).
    pub durable: bool,
    /// Payloads in the spool now.
    pub spooled: u64,
    /// Payloads held that the spool could not take (it was full, or failing): a crash
    /// loses these.
    pub memory_only: u64,
}

/// What [`LogSender::shutdown`] (and `close`) leaves you with.
#[derive(Debug)]
#[non_exhaustive]
pub struct Shutdown {
    /// Every payload that was not delivered, oldest first, to persist or retry.
    pub undelivered: Vec<LogPayload>,
    /// What became of payloads and entries over the sender's whole life
    /// ([`Covers::WholeLife`](crate::Covers::WholeLife)); `handed_back` counts the
    /// payloads the first `shutdown` handed back (`undelivered`, for its caller).
    pub report: Report,
    /// The final counters.
    pub stats: Stats,
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
        let (commands_tx, commands_rx) = crossbeam_channel::unbounded();
        let (reports_tx, reports_rx) = crossbeam_channel::unbounded();
        let (wake_tx, wake_rx) = crossbeam_channel::bounded(1);
        let (stop_workers, stop_workers_rx) = crossbeam_channel::bounded(0);
        let (stop_writer, stop_writer_rx) = crossbeam_channel::bounded::<()>(0);
        let grpc_threads = Arc::new(AtomicUsize::new(0));
        let name = config.thread_name.clone();
        let (spool, backlog, findings) = match &config.spool {
            Some(sc) => match Spool::open(&sc.dir, sc.max_bytes, sc.segment_bytes()) {
                Ok((spool, backlog, findings)) => (Some(spool), backlog, findings),
                Err(OpenError::Locked(path)) => return Err(Error::SpoolLocked { path }),
                Err(OpenError::Io(path, error)) => return Err(Error::Spool { path, error }),
            },
            None => (None, Backlog::default(), Vec::new()),
        };
        let shared = Arc::new(Shared::new(config, commands_tx, reports_tx, wake_tx, spool));
        shared.counters.set_state(ConnectionState::Connecting);
        spooler::report(&shared, findings);
        if backlog.payloads > 0 {
            Counters::set(&shared.counters.spool_unloaded_old, backlog.payloads);
            info!(
                "spool: {} payloads ({} entries, {} bytes) left by an earlier run, sent first",
                backlog.payloads, backlog.entries, backlog.bytes
            );
            shared.handler(|h| {
                h.on_spool(&SpoolEvent::Replaying {
                    payloads: backlog.payloads,
                    entries: backlog.entries,
                    bytes: backlog.bytes,
                })
            });
        }
        let (stop_spooler, stop_spooler_rx) = crossbeam_channel::bounded::<()>(0);
        let spooler = match &shared.spool {
            Some(_) => {
                let spool_shared = shared.clone();
                let handle = std::thread::Builder::new()
                    .name(format!("{name}-sp"))
                    .spawn(move || {
                        if let Some(spool) = &spool_shared.spool {
                            spooler::run(&spool_shared, spool, &stop_spooler_rx);
                        }
                    })
                    .map_err(Error::Spawn)?;
                Some(handle)
            }
            None => None,
        };
        let (started, stopped) = (grpc_threads.clone(), grpc_threads.clone());
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
            .spawn(move || write::run_writer(&writer_shared, &wake_rx, &stop_writer_rx))
            .map_err(Error::Spawn)?;
        let supervisor = Supervisor::new(shared.clone(), commands_rx, reports_rx, env);
        let handle = match std::thread::Builder::new()
            .name(format!("{name}-sup"))
            .spawn(move || supervisor.run())
        {
            Ok(handle) => handle,
            Err(e) => {
                drop(stop_writer);
                let _ = writer.join();
                return Err(Error::Spawn(e));
            }
        };
        Ok(LogSender {
            shared,
            threads: Mutex::new(Threads {
                supervisor: Some(handle),
                writer: Some(writer),
                spooler,
                stop_spooler: Some(stop_spooler),
                stop_workers: Some(stop_workers),
                stop_writer: Some(stop_writer),
                done: None,
            }),
            workers: Mutex::new(Vec::new()),
            batchers: Mutex::new(Batchers::default()),
            next_worker: AtomicUsize::new(0),
            stop_workers_rx,
            grpc_threads,
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
        self.start_pool(Intake::Payloads(receiver), n, false)
    }

    /// A handle that takes single [`LogEntry`](crate::LogEntry)s and ships them in
    /// batches, as [`Batching`] says: a batcher thread (`{prefix}-bN`) and a worker pool
    /// of its own. Cloneable and `Send + Sync`; make one per template.
    ///
    /// [`flush`](LogSender::flush) and [`shutdown`](LogSender::shutdown) cover its
    /// entries too: they cut the open batch first.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidConfig`] for a setting of `batching` that makes no sense,
    /// [`Error::Closed`] after shutdown began, [`Error::Spawn`] if a thread cannot be
    /// started.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use logsender::{Batching, Config, Level, LogEntry, LogPayload, LogSender};
    ///
    /// // Nothing listens on this loopback port.
    /// let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    /// let config = Config::builder(format!("127.0.0.1:{port}")).plaintext().build()?;
    /// let sender = LogSender::new(config)?;
    /// let log = sender.entry_sender(Batching::new(LogPayload::from_host("agent-1")))?;
    /// for i in 0..3 {
    ///     log.log(LogEntry::new(Level::Info, format!("line {i}")))?;
    /// }
    /// // No collector: the three entries come back in one payload.
    /// let shutdown = sender.shutdown(Duration::from_millis(300));
    /// assert_eq!(shutdown.undelivered.len(), 1);
    /// assert_eq!(shutdown.undelivered[0].logs.len(), 3);
    /// assert_eq!(shutdown.report.handed_back, 1);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn entry_sender(&self, batching: Batching) -> Result<EntrySender, Error> {
        batching.validate(&self.shared.config)?;
        let workers = batching.worker_count();
        let (tx, rx) = crossbeam_channel::bounded(workers.saturating_mul(2));
        // Under the spawn lock, so that a `shutdown` joins the pool (see `start_pool`).
        let mut pool = self.workers.lock();
        self.spawn_pool(&mut pool, Intake::Encoded(rx), workers, true)?;
        let mut batchers = self.batchers.lock();
        batchers.prune();
        // Checked again under the batchers lock: a `shutdown` that began meanwhile took
        // the list before this one could join it, and would not stop this batcher. The
        // pool ends by itself once `tx` is dropped here.
        if self.shared.is_closing() {
            return Err(Error::Closed);
        }
        let name = format!("{}-b{}", self.shared.config.thread_name, batchers.started);
        let (handle, batcher) = entries::start(&self.shared, batching, tx, name)?;
        batchers.started += 1;
        batchers.live.push(batcher);
        Ok(handle)
    }

    fn start_pool(&self, receiver: Intake, n: usize, until_gone: bool) -> Result<(), Error> {
        let mut workers = self.workers.lock();
        self.spawn_pool(&mut workers, receiver, n, until_gone)
    }

    /// Registers `receiver` and spawns `n` workers for it, with the workers lock held
    /// (`workers`): `shutdown` sets the closing flag before it takes that lock to join
    /// the workers, so a pool either sees the flag here or is joined by it.
    fn spawn_pool(
        &self,
        workers: &mut Vec<JoinHandle<()>>,
        receiver: Intake,
        n: usize,
        until_gone: bool,
    ) -> Result<(), Error> {
        if n == 0 {
            return invalid_config("workers", "a worker pool needs at least one worker");
        }
        if self.shared.is_closing() {
            return Err(Error::Closed);
        }
        crate::hooks::pause(crate::hooks::Point::BeforePoolSpawn);
        prune_workers(workers);
        let source = {
            let mut queues = self.shared.queues.lock();
            let ledger = self.shared.ledger.lock();
            queues.register(&receiver, &ledger)
        };
        for _ in 0..n {
            let id = self.next_worker.fetch_add(1, Ordering::Relaxed);
            let shared = self.shared.clone();
            let queue = receiver.clone();
            let stop = self.stop_workers_rx.clone();
            let handle = std::thread::Builder::new()
                .name(format!("{}-w{id}", self.shared.config.thread_name))
                .spawn(move || intake::run_worker(&shared, &queue, source, &stop, until_gone))
                .map_err(Error::Spawn)?;
            workers.push(handle);
        }
        Ok(())
    }

    /// Writes one payload on the shared stream, now, from the calling thread.
    ///
    /// With a spool ([`ConfigBuilder::spool`](crate::ConfigBuilder::spool)) it returns
    /// once the payload is in the spool (accepted), and the background writer writes it
    /// (or it waits on disk behind older ones); only if the spool cannot take it does
    /// the call write it itself, as without one.
    ///
    /// In `AtLeastOnce` mode the payload is then held until its epoch is committed (and
    /// re-sent if that fails); in `AtMostOnce` mode it counts as sent when this returns.
    ///
    /// On the OTLP wire ([`Wire::OtlpLogs`](crate::Wire::OtlpLogs)) it returns once the
    /// payload is held and its `Export` call issued (or queued behind the calls in
    /// flight): it never waits for the collector. [`Error::Unavailable`] still means
    /// that no channel is up.
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
        let shared = &self.shared;
        let origin = Origin {
            source: 0,
            ord: shared.next_direct(),
        };
        let mut item = intake::encode(&shared.config, origin, shared.next_seq(), payload)?;
        if let Some(spool) = &shared.spool {
            match spooler::spool_direct(shared, spool, item) {
                // Accepted: in the outbox (the writer writes it) or waiting on disk
                // behind what is there already.
                Ok(loaded) => {
                    if loaded {
                        shared.wake_writer();
                    }
                    self.count_taken(payload);
                    return Ok(());
                }
                Err(back) => item = back,
            }
        }
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
        write::write_now(shared, item)?;
        self.count_taken(payload);
        Ok(())
    }

    fn count_taken(&self, payload: &LogPayload) {
        Counters::add(&self.shared.counters.enqueued, 1);
        Counters::add(
            &self.shared.counters.entries_enqueued,
            payload.logs.len() as u64,
        );
    }

    /// Waits until every payload taken in before this call (the worker queues' and the
    /// entry handles' included, whose open batches are cut first) is in the spool, then
    /// syncs the spool to disk; gives up at `timeout`.
    ///
    /// [`Durability::durable`] says whether all of that held: then a power cut now loses
    /// none of it. (A process crash loses nothing the spool took, synced or not.)
    ///
    /// # Errors
    ///
    /// [`Error::InvalidConfig`] without a spool ([`ConfigBuilder::spool`](crate::ConfigBuilder::spool)).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use logsender::{Config, LogPayload, LogSender};
    ///
    /// // Nothing listens on this loopback port: the payload waits in the spool.
    /// let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    /// let dir = std::env::temp_dir().join(format!("logsender-doc-sync-{}", std::process::id()));
    /// let config = Config::builder(format!("127.0.0.1:{port}")).plaintext().spool(&dir).build()?;
    /// let sender = LogSender::new(config)?;
    /// sender.send_logs(&LogPayload::default())?;
    /// let durability = sender.sync(Duration::from_secs(5))?;
    /// assert!(durability.durable);
    /// assert_eq!(durability.spooled, 1);
    /// let shutdown = sender.shutdown(Duration::from_millis(100));
    /// assert_eq!(shutdown.report.left_in_spool, 1); // sent by the next sender on `dir`
    /// # drop(sender); std::fs::remove_dir_all(&dir)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn sync(&self, timeout: Duration) -> Result<Durability, Error> {
        let Some(spool) = &self.shared.spool else {
            return crate::error::invalid_config("spool", "sync needs a spool");
        };
        let deadline = crate::clock::deadline_in(timeout);
        let passed = self.cut_batches(deadline);
        let target = self
            .shared
            .queues
            .lock()
            .flush_target(self.shared.direct_count());
        let reached = loop {
            let waiting = {
                let queues = self.shared.queues.lock();
                let not_taken = queues.not_taken(&target);
                let ledger = self.shared.ledger.lock();
                not_taken.saturating_add(ledger.unspooled_before(&target.bounds))
            };
            if waiting == 0 {
                break passed.outstanding == 0;
            }
            if Instant::now() >= deadline {
                break false;
            }
            let mut ledger = self.shared.ledger.lock();
            let wake = crate::clock::deadline_in(Duration::from_millis(5)).min(deadline);
            self.shared.ledger_changed.wait_until(&mut ledger, wake);
        };
        let synced = spooler::sync_now(&self.shared, spool);
        let memory_only = self.shared.ledger.lock().not_spooled() as u64;
        Ok(Durability {
            durable: reached && synced && memory_only == 0,
            spooled: self.shared.counters.spooled.load(Ordering::SeqCst),
            memory_only,
        })
    }

    /// Waits until everything taken in before this call (including what was waiting in
    /// the worker queues, and the entries of every [`EntrySender`], whose open batches
    /// are cut first) is acknowledged (`AtLeastOnce`) or written (`AtMostOnce`), or until
    /// `timeout` passes.
    ///
    /// The [`Report`] says how many of those are still outstanding, and what became of
    /// payloads since the previous report: check
    /// [`all_delivered`](Report::all_delivered), not just `outstanding`, since a payload
    /// that was dropped or dead-lettered is not outstanding either.
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
    /// let report = sender.flush(Duration::from_millis(100));
    /// assert_eq!(report.outstanding, 1);
    /// assert!(!report.all_delivered());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn flush(&self, timeout: Duration) -> Report {
        let deadline = crate::clock::deadline_in(timeout);
        let began = self.shared.counters.settled();
        let passed = self.cut_batches(deadline);
        let mut target = self
            .shared
            .queues
            .lock()
            .flush_target(self.shared.direct_count());
        if self.shared.spool.is_some() {
            // What an earlier run spooled was taken in before any flush.
            target.bounds.push((spooler::REPLAY_SOURCE, u64::MAX));
        }
        let pending = loop {
            let pending = self.pending(&target);
            if pending.outstanding() == 0 || Instant::now() >= deadline {
                break pending;
            }
            self.settle_step(pending.not_taken == 0, deadline);
        };
        let (left_in_spool, entries_left_in_spool) = match &self.shared.spool {
            // A shutdown running meanwhile left them in the spool.
            Some(_) if pending.outstanding() == 0 => pending.left,
            Some(spool) => {
                // Counted, then synced: everything counted is on disk when this returns.
                let left = {
                    let sp = spool.lock();
                    let c = sp.counts();
                    let spooled = self.shared.ledger.lock().spooled_before(&target.bounds);
                    add(spooled, (c.unloaded_old, c.unloaded_old_entries))
                };
                let _ = spooler::sync_now(&self.shared, spool);
                add(left, pending.left)
            }
            None => (0, 0),
        };
        Report {
            left_in_spool,
            entries_left_in_spool,
            outstanding: pending.outstanding() as u64,
            entries_outstanding: passed.outstanding,
            handed_back: pending.handed_back.0.saturating_add(passed.left.payloads),
            entries_handed_back: pending.handed_back.1.saturating_add(passed.left.entries),
            ..self.shared.counters.report(began)
        }
    }

    /// Cuts every entry handle's open batch and waits (until `deadline`) for the
    /// entries logged so far to be in payloads; says how many are not, and what a
    /// concurrent shutdown kept to hand back.
    fn cut_batches(&self, deadline: Instant) -> Passed {
        let mut marks: Vec<Mark> = {
            let mut batchers = self.batchers.lock();
            batchers.prune();
            let live = batchers.live.iter().map(Batcher::watch);
            live.chain(&batchers.stopping).map(Watch::mark).collect()
        };
        for mark in &mut marks {
            mark.cut(deadline);
        }
        marks
            .iter()
            .map(|mark| mark.wait(deadline))
            .fold(Passed::default(), |sum, p| Passed {
                outstanding: sum.outstanding.saturating_add(p.outstanding),
                left: entries::Left {
                    payloads: sum.left.payloads.saturating_add(p.left.payloads),
                    entries: sum.left.entries.saturating_add(p.left.entries),
                },
            })
    }

    /// Waits until a stream to the collector is up, at most `timeout`. Returns at once
    /// if one is. While the collector refuses every call
    /// ([`ConnectionState::Refused`]) it waits on, since a later try may be taken: a
    /// stream that opens then does not count until the collector takes data.
    ///
    /// # Errors
    ///
    /// [`Error::NotConnected`] with the last connection error (its cause named, or the
    /// collector's refusal with a hint) when none came up in time; [`Error::Closed`]
    /// once the sender is closed.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use logsender::{Config, Error, LogSender};
    ///
    /// // Nothing listens on this loopback port.
    /// let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    /// let config = Config::builder(format!("127.0.0.1:{port}")).plaintext().build()?;
    /// let sender = LogSender::new(config)?;
    /// match sender.wait_connected(Duration::from_millis(500)) {
    ///     Err(Error::NotConnected { last_error: Some(e), .. }) => {
    ///         assert!(e.message.contains("Connection refused"), "{e}");
    ///     }
    ///     other => panic!("{other:?}"),
    /// }
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn wait_connected(&self, timeout: Duration) -> Result<(), Error> {
        let started = Instant::now();
        let deadline = crate::clock::after(started, timeout);
        match self.shared.counters.wait_state(deadline) {
            ConnectionState::Connected => Ok(()),
            ConnectionState::Closed => Err(Error::Closed),
            _ => Err(Error::NotConnected {
                waited: started.elapsed(),
                last_error: self.shared.counters.last_error(),
            }),
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
        let mut stats = self.shared.counters.snapshot(
            self.shared.queues.lock().depth(),
            held as u64,
            bytes as u64,
        );
        stats.write_stalled = self.shared.stream.progress.last().map(|t| t.elapsed());
        stats
    }

    /// Payloads acknowledged so far ([`Stats::acknowledged`]), read with one atomic load:
    /// cheap enough to poll often, where [`stats`](LogSender::stats) takes locks.
    pub fn acknowledged(&self) -> u64 {
        self.shared.counters.acknowledged()
    }

    /// [`shutdown`](LogSender::shutdown) with the configured `close_timeout` (10 s by
    /// default), consuming the sender. (Dropping a sender without `close` shuts it down
    /// with at most 2 s of that.)
    pub fn close(self) -> Shutdown {
        let timeout = self.shared.config.close_timeout;
        self.shutdown(timeout)
    }

    /// The configured `close_timeout`.
    pub(crate) fn close_timeout_setting(&self) -> Duration {
        self.shared.config.close_timeout
    }

    /// [`shutdown`](LogSender::shutdown), consuming the sender.
    pub fn close_timeout(self, timeout: Duration) -> Shutdown {
        self.shutdown(timeout)
    }

    /// Stops intake, writes and commits what it holds (what is still in the worker
    /// queues and the entry handles' batches included) for up to `timeout`, stops every
    /// thread, and returns every payload that was not delivered, oldest first, with the
    /// report of the sender's whole life and the final counters. Never takes much longer
    /// than `timeout` (about 100 ms more, at most 200 ms while producers still send on
    /// worker queues). Works through an `Arc`; a call made while another runs waits for
    /// it, then returns the first one's report and counters, with no payloads (the first
    /// caller has them), so never call it from an [`EventHandler`](crate::EventHandler).
    /// A [`flush`](LogSender::flush) running meanwhile returns once everything it waited
    /// for is delivered or handed back here, and counts the latter in its `handed_back`.
    ///
    /// **Shutdown order.** Tell your producers to stop, call this, then join them.
    /// [`EntrySender::log`] returns [`LogError::Closed`](crate::LogError::Closed) from
    /// the moment this begins, and producers waiting for room are released with their
    /// entry either taken or handed back. Producers waiting in `send` on a worker queue
    /// are released as this takes the queue's payloads back; once it returns, the
    /// queue's receivers are gone and every `send` fails with the payload (keep no clone
    /// of them). A payload a producer that was not told to stop sends in the very
    /// instant the receivers go is lost with the channel. Joining producers first can
    /// hang: with the collector down, they wait for room that only this makes.
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
    /// let shutdown = sender.shutdown(Duration::from_millis(200));
    /// let ids: Vec<_> = shutdown.undelivered.iter().map(|p| p.host_id.as_str()).collect();
    /// assert_eq!(ids, ["h0", "h1", "h2"]);
    /// assert_eq!(shutdown.report.handed_back, 3);
    /// assert!(tx.send(LogPayload::default()).is_err()); // intake is gone
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn shutdown(&self, timeout: Duration) -> Shutdown {
        self.shut_down(timeout, false)
    }

    /// [`shutdown`](LogSender::shutdown), but what it could not deliver from the spool
    /// is handed back too (read into memory, all of it, oldest first) and released from
    /// the spool, instead of being left there for the next sender on its directory:
    /// for a program that keeps what it could not deliver elsewhere. Without a spool, the
    /// same as `shutdown`.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use logsender::{Config, LogPayload, LogSender};
    ///
    /// // Nothing listens on this loopback port.
    /// let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    /// let dir = std::env::temp_dir().join(format!("logsender-doc-take-{}", std::process::id()));
    /// let config = Config::builder(format!("127.0.0.1:{port}")).plaintext().spool(&dir).build()?;
    /// let sender = LogSender::new(config)?;
    /// sender.send_logs(&LogPayload { host_id: "h1".into(), ..Default::default() })?;
    /// let shutdown = sender.shutdown_taking_spool(Duration::from_millis(100));
    /// assert_eq!(shutdown.undelivered[0].host_id, "h1");
    /// assert_eq!((shutdown.report.handed_back, shutdown.report.left_in_spool), (1, 0));
    /// # drop(sender); std::fs::remove_dir_all(&dir)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn shutdown_taking_spool(&self, timeout: Duration) -> Shutdown {
        self.shut_down(timeout, true)
    }

    fn shut_down(&self, timeout: Duration, take_spool: bool) -> Shutdown {
        let mut threads = self.threads.lock();
        let Some(supervisor) = threads.supervisor.take() else {
            // The first one's outcome (it is there unless the first one panicked: then
            // what is still held counts as outstanding).
            let (report, stats) = threads.done.clone().unwrap_or_else(|| {
                let stats = self.stats();
                let report = Report {
                    outstanding: stats.unacked,
                    ..self.shared.counters.lifetime()
                };
                (report, stats)
            });
            return Shutdown {
                undelivered: Vec::new(),
                report,
                stats,
            };
        };
        let deadline = crate::clock::deadline_in(timeout);
        self.shared.start_closing(deadline);
        // Batchers refuse new entries and pass on their last ones, which the workers
        // (closing, so no longer waiting for room) take in until the deadline.
        let (mut batchers, mut kept) = {
            let mut list = self.batchers.lock();
            let mut live = std::mem::take(&mut list.live);
            for batcher in &mut live {
                batcher.stop();
            }
            list.stopping = live.iter().map(|b| b.watch().clone()).collect();
            (live, std::mem::take(&mut list.left))
        };
        // Idle workers wake up when the stop channel disconnects.
        threads.stop_workers.take();
        for batcher in &mut batchers {
            kept.extend(batcher.join());
        }
        drop(batchers);
        self.batchers.lock().stopping.clear();
        for worker in self.workers.lock().drain(..) {
            if worker.join().is_err() {
                error!("a logsender worker panicked");
            }
        }
        // Write and commit what is held, until done or the deadline.
        // (The workers are joined, so everything wanted is taken in.)
        while self.holds_any() && Instant::now() < deadline {
            self.settle_step(true, deadline);
        }
        let _ = self.shared.commands.send(Command::Shutdown);
        if supervisor.join().is_err() {
            error!("the logsender supervisor panicked");
        }
        // The supervisor cancelled every call, so the writer is not stuck in a write.
        threads.stop_writer.take();
        if let Some(writer) = threads.writer.take() {
            if writer.join().is_err() {
                error!("the logsender writer panicked");
            }
        }
        // The last acknowledgements released from the spool, then what stays in it
        // made durable.
        threads.stop_spooler.take();
        if let Some(spooler) = threads.spooler.take() {
            if spooler.join().is_err() {
                error!("the logsender spool thread panicked");
            }
        }
        let (undelivered, left) = self.take_back(kept, take_spool);
        // The grpc poll thread ends once the environment's last channel is gone.
        let grpc_deadline =
            crate::clock::after(deadline.max(Instant::now()), Duration::from_millis(100));
        while self.grpc_threads.load(Ordering::Acquire) > 0 && Instant::now() < grpc_deadline {
            std::thread::sleep(Duration::from_millis(2));
        }
        if !undelivered.is_empty() {
            warn!("closing with {} undelivered payloads", undelivered.len());
        }
        if left.0 > 0 {
            warn!(
                "closing with {} undelivered payloads left in the spool",
                left.0
            );
        }
        let report = Report {
            handed_back: undelivered.len() as u64,
            entries_handed_back: undelivered.iter().map(|p| p.logs.len() as u64).sum(),
            left_in_spool: left.0,
            entries_left_in_spool: left.1,
            ..self.shared.counters.lifetime()
        };
        let stats = self.stats();
        threads.done = Some((report, stats.clone()));
        Shutdown {
            undelivered,
            report,
            stats,
        }
    }

    /// Takes back, oldest first, what is held, what is still queued (never taken in),
    /// and what the batchers `kept` (never queued). What the ledger and the queues give
    /// back is recorded as handed back in the same lock holds that take it, so that a
    /// `flush` racing this sees it handed back, never settled.
    fn take_back(
        &self,
        mut kept: Vec<LogPayload>,
        take_spool: bool,
    ) -> (Vec<LogPayload>, (u64, u64)) {
        let shared = &self.shared;
        let (mut undelivered, left) = match &shared.spool {
            Some(spool) => {
                let (held, on_disk) = shared.ledger.lock().drain_all(take_spool);
                if take_spool {
                    spooler::take_all(shared, spool, held, on_disk)
                } else {
                    spooler::leave_all(shared, spool, held)
                }
            }
            None => {
                let (held, _) = shared.ledger.lock().drain_all(false);
                (
                    held.iter().filter_map(|i| shared.decode_item(i)).collect(),
                    (0, 0),
                )
            }
        };
        // One hold of the queues lock from taking the receivers to recording what they
        // gave back (at most about 100 ms; the workers are joined): a `flush` reads the
        // queues before or after, never in between.
        let queued = {
            let mut queues = shared.queues.lock();
            let queued = crate::queues::drain(queues.take_all());
            let mut ledger = shared.ledger.lock();
            for (source, payloads) in &queued {
                let first = queues.handed_back(*source, payloads.len());
                let entries: Vec<u32> = payloads.iter().map(Queued::entries).collect();
                ledger.hand_back_queued(*source, first, &entries);
            }
            queued
        };
        shared.ledger_changed.notify_all();
        undelivered.extend(
            queued
                .into_iter()
                .flat_map(|(_, payloads)| payloads)
                .filter_map(Queued::into_payload),
        );
        undelivered.append(&mut kept);
        (undelivered, left)
    }

    /// Whether anything is held in memory, or waits on disk to be loaded.
    fn holds_any(&self) -> bool {
        if self.shared.ledger.lock().held().0 > 0 {
            return true;
        }
        self.shared
            .spool
            .as_ref()
            .is_some_and(|spool| spool.lock().backlog() > 0)
    }

    /// What of `target` is not settled yet (taken in and still held, or still waiting
    /// in a queue), and what of it a shutdown handed back, in one consistent look.
    fn pending(&self, target: &FlushTarget) -> Pending {
        // Read before the ledger: the spool thread lowers it after the ledger has the
        // payload, so one moving between them is counted at least once.
        let on_disk = self
            .shared
            .counters
            .spool_unloaded_old
            .load(Ordering::SeqCst);
        let queues = self.shared.queues.lock();
        let not_taken = queues.not_taken(target);
        let ledger = self.shared.ledger.lock();
        // An earlier run's payloads a shutdown handed back or left in the spool count as
        // the flush's own (it waits for all of them).
        let old = match self.shared.spool {
            Some(_) => ledger.old_settled(),
            None => OldSettled::default(),
        };
        Pending {
            held: ledger
                .outstanding_before(&target.bounds)
                .saturating_add(usize::try_from(on_disk).unwrap_or(usize::MAX)),
            not_taken,
            handed_back: add(ledger.handed_back_before(&target.bounds), old.handed_back),
            left: add(ledger.left_behind_before(&target.bounds), old.left),
        }
    }

    /// One step of waiting for payloads to settle (`flush`, `close`): wake the writer
    /// (this thread never writes, so a stalled collector cannot hold it), ask for a
    /// commit once everything wanted is written (at-least-once; committing while the
    /// queue still feeds the outbox would cut the stream into tiny epochs), then wait for
    /// the ledger to change, at most 20 ms and never past `deadline`. A struck payload
    /// held back (a suspect group not due yet) does not hold the commit up: it waits for
    /// an epoch of its own anyway.
    fn settle_step(&self, all_taken: bool, deadline: Instant) {
        let shared = &self.shared;
        shared.wake_writer();
        if shared.config.delivery == DeliveryMode::AtLeastOnce
            && all_taken
            && shared.ledger.lock().normal_len() == 0
        {
            let _ = shared.commands.send(Command::Commit);
        }
        let mut ledger = shared.ledger.lock();
        let wake = crate::clock::deadline_in(Duration::from_millis(20)).min(deadline);
        shared.ledger_changed.wait_until(&mut ledger, wake);
    }
}

/// Two (payloads, entries) counts added up.
fn add(a: (u64, u64), b: (u64, u64)) -> (u64, u64) {
    (a.0.saturating_add(b.0), a.1.saturating_add(b.1))
}

/// What a `flush` still waits for.
struct Pending {
    /// Taken in and held.
    held: usize,
    /// Still in a queue.
    not_taken: usize,
    /// Handed back by a shutdown: payloads, entries.
    handed_back: (u64, u64),
    /// Left in the spool by a shutdown: payloads, entries.
    left: (u64, u64),
}

impl Pending {
    fn outstanding(&self) -> usize {
        self.held.saturating_add(self.not_taken)
    }
}

impl Drop for LogSender {
    /// Closes with a short deadline (at most 2 s). Payloads that could not be delivered
    /// are reported to [`EventHandler::on_dropped`](crate::EventHandler::on_dropped) as
    /// [`DropReason::SenderDropped`] and logged; call `close` to get them back instead.
    fn drop(&mut self) {
        let timeout = self.shared.config.close_timeout.min(Duration::from_secs(2));
        let lost = self.shutdown(timeout).undelivered;
        if !lost.is_empty() {
            error!(
                "LogSender dropped without close: {} payloads undelivered",
                lost.len()
            );
            for p in lost {
                self.shared
                    .report_dropped(Some(p), DropReason::SenderDropped);
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
