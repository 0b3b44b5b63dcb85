//! [`Shared`]: the state the handle, the workers, the background writer and the
//! supervisor share, and the few operations every one of them needs (wake the writer,
//! call the user's handler, report a payload that leaves without delivery).
//!
//! Locks, in the order they may be nested (never the other way round):
//! `spool` → `ledger`, `queues` → `ledger`, and `stream.slot` → `ledger`. `queues` and `stream.slot` are
//! never held together. No user callback runs while any of them is held.

use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::Instant;

use crossbeam_channel::Sender;
use log::{error, info, warn};
use parking_lot::{Condvar, Mutex};

use crate::call::Stream;
use crate::command::{Command, Report};
use crate::config::{Config, SpoolSync};
use crate::error::Error;
use crate::events::{BackpressureEvent, DeadLetterEvent, DropReason, DroppedEvent, EventHandler};
use crate::export::Exports;
use crate::ledger::{entries_of, Item, Ledger};
use crate::model::LogPayload;
use crate::queues::Queues;
use crate::spool::Spool;
use crate::stats::Counters;

/// State shared by every logsender thread of one sender.
pub(crate) struct Shared {
    pub(crate) config: Config,
    pub(crate) counters: Counters,
    /// Every payload held, from intake to its final state.
    pub(crate) ledger: Mutex<Ledger>,
    /// Signalled whenever the ledger frees room, settles payloads, or starts closing.
    pub(crate) ledger_changed: Condvar,
    /// GoSight: the current call's write half, behind the stream lock.
    pub(crate) stream: Stream,
    /// OTLP: the calls in flight and the channel they go out on.
    pub(crate) exports: Exports,
    /// The worker queues and how far each was read.
    pub(crate) queues: Mutex<Queues>,
    /// To the supervisor: what to do.
    pub(crate) commands: Sender<Command>,
    /// To the supervisor: what happened to a call.
    pub(crate) reports: Sender<Report>,
    /// One token wakes the background writer.
    wake: Sender<()>,
    /// A cheap copy of the ledger's closing flag, for loops that poll it.
    closing: AtomicBool,
    close_deadline: OnceLock<Instant>,
    /// Global intake order of the next payload.
    next_seq: AtomicU64,
    /// The id of the next call.
    next_call: AtomicU64,
    /// `Origin::ord` of the next `send_logs` payload (source 0).
    next_direct: AtomicU64,
    /// The disk spool, if one is configured (its lock comes before the ledger's).
    pub(crate) spool: Option<Mutex<Spool>>,
    /// Held across a whole spool sync (taking the files, syncing them), so that a sync
    /// that finds nothing to do knows every earlier one has finished (see
    /// `spooler::sync_now`). Taken before the spool lock, never inside it.
    pub(crate) spool_syncing: Mutex<()>,
}

impl Shared {
    pub(crate) fn new(
        config: Config,
        commands: Sender<Command>,
        reports: Sender<Report>,
        wake: Sender<()>,
        spool: Option<Spool>,
    ) -> Self {
        let mut ledger = Ledger::new(config.max_buffered_payloads, config.max_buffered_bytes);
        if spool.is_some() {
            ledger.track_unspooled();
        }
        Shared {
            counters: Counters::default(),
            ledger: Mutex::new(ledger),
            ledger_changed: Condvar::new(),
            stream: Stream::new(),
            exports: Exports::new(config.max_exports_in_flight),
            queues: Mutex::new(Queues::default()),
            commands,
            reports,
            wake,
            closing: AtomicBool::new(false),
            close_deadline: OnceLock::new(),
            next_seq: AtomicU64::new(0),
            next_call: AtomicU64::new(1),
            next_direct: AtomicU64::new(0),
            spool: spool.map(Mutex::new),
            spool_syncing: Mutex::new(()),
            config,
        }
    }

    /// The spool's sync policy, if there is a spool.
    pub(crate) fn spool_sync(&self) -> Option<SpoolSync> {
        self.config.spool.as_ref().map(|s| s.sync)
    }

    pub(crate) fn is_closing(&self) -> bool {
        self.closing.load(Ordering::Acquire)
    }

    /// The close deadline, once `close` began.
    pub(crate) fn close_deadline(&self) -> Option<Instant> {
        self.close_deadline.get().copied()
    }

    /// Starts closing: sets the deadline and the ledger's closing flag (under the
    /// ledger lock, so that a worker between its "closing?" check and its wait for room
    /// cannot miss the notification), then wakes every waiter.
    pub(crate) fn start_closing(&self, deadline: Instant) {
        let _ = self.close_deadline.set(deadline);
        {
            let mut ledger = self.ledger.lock();
            ledger.start_closing();
            self.closing.store(true, Ordering::Release);
        }
        self.ledger_changed.notify_all();
    }

    /// `t`, or the close deadline if that comes first.
    pub(crate) fn bounded_by_close(&self, t: Instant) -> Instant {
        match self.close_deadline() {
            Some(d) => t.min(d),
            None => t,
        }
    }

    /// Whether the close deadline has passed.
    pub(crate) fn past_close_deadline(&self, now: Instant) -> bool {
        self.close_deadline().is_some_and(|d| now >= d)
    }

    /// Numbers a call (and its epoch) on either wire; never 0.
    pub(crate) fn next_call_id(&self) -> u64 {
        self.next_call.fetch_add(1, Ordering::AcqRel)
    }

    /// Decodes a held payload back (to hand it to the user).
    pub(crate) fn decode_item(&self, item: &Item) -> Option<LogPayload> {
        self.config
            .wire
            .decode_or_log(item.bytes.as_slice(), "a held payload (this is a bug)")
    }

    /// Numbers a payload in global intake order.
    pub(crate) fn next_seq(&self) -> u64 {
        self.next_seq.fetch_add(1, Ordering::AcqRel)
    }

    /// Numbers a `send_logs` payload within source 0.
    pub(crate) fn next_direct(&self) -> u64 {
        self.next_direct.fetch_add(1, Ordering::AcqRel)
    }

    /// How many payloads `send_logs` numbered so far.
    pub(crate) fn direct_count(&self) -> u64 {
        self.next_direct.load(Ordering::Acquire)
    }

    /// Wakes the background writer to write the outbox, and workers waiting for room
    /// to write before they wait again.
    pub(crate) fn wake_writer(&self) {
        self.ledger.lock().stream_changed();
        self.ledger_changed.notify_all();
        let _ = self.wake.try_send(());
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

    /// Counts this thread as waiting for room since `began` until the returned guard
    /// is dropped, and reports the start of a backpressure episode. Drop the guard with
    /// no lock held: it may report the episode's end.
    pub(crate) fn start_waiting(&self, began: Instant) -> Waiting<'_> {
        if let Some(event) = self.counters.start_waiting(began) {
            warn!("the buffer is full: intake waits for room");
            self.handler(|h| h.on_backpressure(event));
        }
        Waiting {
            shared: self,
            began,
        }
    }

    /// Counts a payload dropped for `reason` (and its `entries`). Called before the
    /// payload leaves the ledger (under its lock, where the caller holds it), so that a
    /// `flush` that sees it gone sees it counted; then [`Shared::report_dropped`] tells
    /// the handler, with no lock held.
    pub(crate) fn count_dropped(&self, reason: DropReason, entries: u32) {
        let counter = match reason {
            DropReason::Newest => &self.counters.dropped_newest,
            DropReason::Oldest => &self.counters.dropped_oldest,
            DropReason::BlockTimeout => &self.counters.dropped_block_timeout,
            // Logged in bulk by `Drop`; nobody can read the counters any more.
            DropReason::SenderDropped => return,
        };
        Counters::add(counter, 1);
        Counters::add(&self.counters.entries_dropped, u64::from(entries));
    }

    /// Logs a dropped payload, counted already, and hands it to the handler (`None` if
    /// it could not be decoded back).
    pub(crate) fn report_dropped(&self, payload: Option<LogPayload>, reason: DropReason) {
        if reason != DropReason::SenderDropped {
            warn!("dropped a payload: buffer full ({reason:?})");
        }
        if let Some(p) = payload {
            self.handler(|h| h.on_dropped(DroppedEvent::new(p, reason)));
        }
    }

    /// Hands payloads rejected for good (still held) to the dead-letter handler, each
    /// with the collector's status, then counts them and lets them go: a `flush` that
    /// sees them settled knows the handler has seen them.
    pub(crate) fn dead_letter(&self, items: Vec<Item>, status: &grpcio::RpcStatus) {
        for item in &items {
            if let Some(p) = self.decode_item(item) {
                let err = Error::Rpc(grpcio::Error::RpcFailure(status.clone()));
                self.handler(|h| h.on_dead_letter(DeadLetterEvent::new(p, err)));
            }
        }
        Counters::add(&self.counters.dead_lettered, items.len() as u64);
        Counters::add(&self.counters.entries_dead_lettered, entries_of(&items));
        self.ledger.lock().forget_rejected(&items);
        self.ledger_changed.notify_all();
    }
}

/// How long a thread waits for room before it counts as backpressure (an event, and
/// time in `Stats::blocked`): shorter waits are the buffer working, not backing up.
pub(crate) const BACKPRESSURE_AFTER: std::time::Duration = std::time::Duration::from_millis(10);

/// A thread waiting for room (see [`Shared::start_waiting`]).
pub(crate) struct Waiting<'a> {
    shared: &'a Shared,
    began: Instant,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        if let Some(event) = self.shared.counters.stop_waiting(self.began) {
            if let BackpressureEvent::Ended { lasted, .. } = event {
                info!("room in the buffer again, after {lasted:?}");
            }
            self.shared.handler(|h| h.on_backpressure(event));
        }
    }
}
