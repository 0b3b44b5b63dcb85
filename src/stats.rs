//! Counters: cheap atomics updated on the hot path, read as a [`Stats`] snapshot.

use std::sync::atomic::{AtomicU64, AtomicU8, Ordering::Relaxed, Ordering::SeqCst};
use std::time::{Duration, Instant, SystemTime};

use parking_lot::{Condvar, Mutex};

use crate::error::{DialCause, LastError};
use crate::events::BackpressureEvent;

/// The state of the connection to the collector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConnectionState {
    /// Dialing, or waiting out a backoff delay before the next dial.
    Connecting,
    /// A stream is open; payloads are being written.
    Connected,
    /// The sender is closed.
    Closed,
    /// The collector refuses every call, an empty one too, for a permanent reason
    /// (`UNAUTHENTICATED`, `PERMISSION_DENIED`, `UNIMPLEMENTED`: an expired token, a
    /// wrong ACL, the wrong service), and payloads are held
    /// ([`ConfigBuilder::hold_when_refused`](crate::ConfigBuilder::hold_when_refused)):
    /// nothing is delivered until someone fixes that. Retried after
    /// [`ConfigBuilder::refused_backoff`](crate::ConfigBuilder::refused_backoff);
    /// [`Stats::last_error`] has the collector's words and a hint, and
    /// [`EventHandler::on_refused`](crate::EventHandler::on_refused) hears each refused
    /// try. Over once the collector takes data or an empty call (then `Connected`
    /// while a stream is up).
    Refused,
}

/// A snapshot of the sender's counters. All counts are since the sender was created.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Payloads taken in (from the worker queue or `send_logs`).
    pub enqueued: u64,
    /// Payload writes that completed on a stream (re-sends included).
    pub sent: u64,
    /// Payloads confirmed: by an `OK` epoch (at-least-once) or a completed write (at-most-once).
    pub acknowledged: u64,
    /// Payloads put back to be written again after a failed write or a failed epoch.
    pub retried: u64,
    /// Of `retried`, those that had already been written once (possible duplicates).
    pub resent_after_fault: u64,
    /// Dropped by `OverflowPolicy::DropNewest`.
    pub dropped_newest: u64,
    /// Dropped by `OverflowPolicy::DropOldest`.
    pub dropped_oldest: u64,
    /// Dropped by `OverflowPolicy::Block` with a timeout.
    pub dropped_block_timeout: u64,
    /// Given up for a permanent reason (permanent status, too large).
    pub dead_lettered: u64,
    /// Times the wire came up again after the first (a stream opened; on OTLP, the
    /// channel published for calls).
    pub reconnects: u64,
    /// Epochs committed with status `OK` (on OTLP: `Export` calls).
    pub epochs_committed: u64,
    /// Epochs that failed (error status, transport break, timeout; on OTLP: calls).
    pub epochs_failed: u64,
    /// Encoded bytes written to streams.
    pub bytes_sent: u64,
    /// How long the write in progress has gone without progress (a message handed to
    /// the call), if a write is in progress: a collector that stopped reading shows
    /// here long before `write_timeout` cancels the call. Always `None` on OTLP, whose
    /// writers never wait for a call.
    pub write_stalled: Option<std::time::Duration>,
    /// Times the [`EventHandler`](crate::EventHandler) panicked (each caught and logged).
    pub handler_panics: u64,
    /// Payloads waiting in the worker queue right now.
    pub queue_depth: u64,
    /// Payloads held right now: waiting to be (re)written plus written but unacknowledged.
    pub unacked: u64,
    /// Encoded bytes held right now.
    pub unacked_bytes: u64,
    /// The connection state right now.
    pub state: ConnectionState,
    /// The most recent connection or stream error, with its time; marked recovered
    /// once a stream came up after it.
    pub last_error: Option<LastError>,
    /// Time threads spent waiting for room in the buffer, summed over threads: workers
    /// (whose producers then wait on their queues) and callers of
    /// [`EntrySender::log`](crate::EntrySender::log). Waits shorter than 10 ms are
    /// not counted (see [`EventHandler::on_backpressure`](crate::EventHandler::on_backpressure)).
    pub blocked: Duration,
    /// Backpressure episodes so far (see
    /// [`EventHandler::on_backpressure`](crate::EventHandler::on_backpressure)).
    pub backpressure_episodes: u64,
    /// Entries in the payloads taken in (`enqueued`, counted in entries).
    pub entries_enqueued: u64,
    /// Entries in the payloads acknowledged.
    pub entries_acknowledged: u64,
    /// Entries in the payloads dropped, whatever the reason.
    pub entries_dropped: u64,
    /// Entries in the payloads dead-lettered, and the records an OTLP collector
    /// rejected in a partial success (`entries_rejected`).
    pub entries_dead_lettered: u64,
    /// Records an OTLP collector took the call of but rejected
    /// (`partial_success.rejected_log_records`): counted dead-lettered, never re-sent,
    /// each call's reported to
    /// [`EventHandler::on_partial_success`](crate::EventHandler::on_partial_success).
    pub entries_rejected: u64,
    /// OTLP calls answered with a partial success that rejected nothing but carried a
    /// message (a warning from the collector, logged).
    pub partial_success_warnings: u64,
    /// Records the [`log` bridge](crate::LogBridge) (or the `tracing` layer) did not
    /// take: the entry channel was full (it never blocks by default), the sender was
    /// closed, or the record was too large for a payload.
    pub records_dropped: u64,
    /// Bytes of the spool's files now (0 without a spool).
    pub spool_bytes: u64,
    /// Payloads in the spool now: accepted, not yet acknowledged, dropped or
    /// dead-lettered (in memory too, or waiting on disk).
    pub spooled: u64,
    /// Payloads read back from the spool that an earlier run had written.
    pub replayed: u64,
    /// Damaged stretches of the spool skipped (torn or corrupt records, files cut short
    /// or gone), each reported to [`EventHandler::on_spool`](crate::EventHandler::on_spool).
    pub spool_corrupt: u64,
    /// Spool operations that failed (a full disk, ...); see
    /// [`SpoolEvent::Io`](crate::SpoolEvent::Io).
    pub spool_io_errors: u64,
    /// Payloads the spool lost: accepted into it (by this run or an earlier one), then
    /// unreadable before they were sent, their file removed or damaged meanwhile (each
    /// such file reported to [`EventHandler::on_spool`](crate::EventHandler::on_spool)).
    pub spool_lost: u64,
    /// Entries in the payloads the spool lost.
    pub entries_spool_lost: u64,
}

impl Stats {
    /// All payloads dropped, whatever the reason.
    pub fn dropped(&self) -> u64 {
        self.dropped_newest + self.dropped_oldest + self.dropped_block_timeout
    }
}

/// What became of payloads and their entries, as
/// [`LogSender::flush`](crate::LogSender::flush) and
/// [`LogSender::shutdown`](crate::LogSender::shutdown) report it.
///
/// Every count is given twice: in payloads (`acknowledged`, ...) and in the log entries
/// they carry (`entries_acknowledged`, ...). [`covers`](Report::covers) says over which
/// window: a `flush` reports what happened since the previous `flush` (or since the
/// sender was created), so that a payload is counted in one such report only; the report
/// of `shutdown` and `close` covers the sender's whole life. `outstanding` and
/// `entries_outstanding` are what the call was still waiting for when it returned. Only
/// [`all_delivered`](Report::all_delivered) means that nothing was lost or is still on
/// its way.
///
/// ```
/// use logsender::{Covers, Report};
///
/// let report = Report::default();
/// assert_eq!(report.covers, Covers::SincePreviousReport);
/// assert!(report.all_delivered());
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Report {
    /// Payloads taken in before the call that were not settled when it returned
    /// (`flush` timed out); 0 from `shutdown`, which hands them back instead.
    pub outstanding: u64,
    /// Entries not in a payload yet when `flush` gave up: waiting in an
    /// [`EntrySender`](crate::EntrySender)'s channel or batch (an upper bound: entries
    /// logged during the call count too). 0 when `flush` saw every entry logged before
    /// it in a payload.
    pub entries_outstanding: u64,
    /// Payloads acknowledged by the collector (at least once) or written (at most once).
    pub acknowledged: u64,
    /// Payloads dropped by the overflow policy (see [`EventHandler::on_dropped`](crate::EventHandler::on_dropped)).
    pub dropped: u64,
    /// Payloads given up for good (see [`EventHandler::on_dead_letter`](crate::EventHandler::on_dead_letter)).
    pub dead_lettered: u64,
    /// Payloads handed back undelivered by `shutdown`/`close`. In a `flush` report: of
    /// the payloads the flush waited for, those a `shutdown` running meanwhile handed
    /// back to its caller (the flush then returns as soon as nothing else is pending).
    pub handed_back: u64,
    /// Entries in the payloads acknowledged.
    pub entries_acknowledged: u64,
    /// Entries in the payloads dropped.
    pub entries_dropped: u64,
    /// Entries in the payloads dead-lettered.
    pub entries_dead_lettered: u64,
    /// Entries in the payloads handed back (in a `flush` report: an upper bound for the
    /// entries a concurrent `shutdown` handed back before they reached a payload).
    pub entries_handed_back: u64,
    /// Records the [`log` bridge](crate::LogBridge) (or the `tracing` layer) dropped
    /// instead of blocking the program (see [`Stats::records_dropped`]).
    pub records_dropped: u64,
    /// From `shutdown` with a spool: payloads left undelivered in the spool (not handed
    /// back), sent first by the next sender on the same directory. From `flush`: of the
    /// payloads still outstanding, those in the spool (synced to disk before it returned).
    pub left_in_spool: u64,
    /// Entries in the payloads left in the spool.
    pub entries_left_in_spool: u64,
    /// Payloads the spool lost (see [`Stats::spool_lost`]): unreadable before they were
    /// sent.
    pub lost_in_spool: u64,
    /// Entries in the payloads the spool lost.
    pub entries_lost_in_spool: u64,
    /// The window the counts cover.
    pub covers: Covers,
}

/// The window a [`Report`]'s counts cover.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Covers {
    /// What happened since the previous `flush` report (or since the sender was
    /// created): the reports of successive flushes add up. (Two flushes that run at
    /// the same time both count what happened while both ran.) `outstanding`,
    /// `entries_outstanding` and a flush's `handed_back` are not counts over a window:
    /// they say what of the flush's own payloads was still pending, or handed back.
    #[default]
    SincePreviousReport,
    /// The sender's whole life: the report of `shutdown` and `close`, whose
    /// [`all_delivered`](Report::all_delivered) says whether anything was ever lost.
    WholeLife,
}

impl Report {
    /// Nothing outstanding, dropped, dead-lettered or handed back: everything this
    /// report covers was delivered.
    pub fn all_delivered(&self) -> bool {
        self.outstanding == 0
            && self.entries_outstanding == 0
            && self.dropped == 0
            && self.dead_lettered == 0
            && self.handed_back == 0
            && self.entries_dropped == 0
            && self.entries_dead_lettered == 0
            && self.entries_handed_back == 0
            && self.records_dropped == 0
            && self.left_in_spool == 0
            && self.lost_in_spool == 0
            && self.entries_lost_in_spool == 0
    }
}

/// The settled counts a [`Report`] is made of, as the counters hold them.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Settled {
    acknowledged: u64,
    dropped: u64,
    dead_lettered: u64,
    entries_acknowledged: u64,
    entries_dropped: u64,
    entries_dead_lettered: u64,
    records_dropped: u64,
    lost_in_spool: u64,
    entries_lost_in_spool: u64,
}

impl Settled {
    /// The smaller of each count.
    fn min(self, other: Settled) -> Settled {
        Settled {
            acknowledged: self.acknowledged.min(other.acknowledged),
            dropped: self.dropped.min(other.dropped),
            dead_lettered: self.dead_lettered.min(other.dead_lettered),
            entries_acknowledged: self.entries_acknowledged.min(other.entries_acknowledged),
            entries_dropped: self.entries_dropped.min(other.entries_dropped),
            entries_dead_lettered: self.entries_dead_lettered.min(other.entries_dead_lettered),
            records_dropped: self.records_dropped.min(other.records_dropped),
            lost_in_spool: self.lost_in_spool.min(other.lost_in_spool),
            entries_lost_in_spool: self.entries_lost_in_spool.min(other.entries_lost_in_spool),
        }
    }

    fn since(self, before: Settled) -> Settled {
        Settled {
            acknowledged: self.acknowledged.saturating_sub(before.acknowledged),
            dropped: self.dropped.saturating_sub(before.dropped),
            dead_lettered: self.dead_lettered.saturating_sub(before.dead_lettered),
            entries_acknowledged: self
                .entries_acknowledged
                .saturating_sub(before.entries_acknowledged),
            entries_dropped: self.entries_dropped.saturating_sub(before.entries_dropped),
            entries_dead_lettered: self
                .entries_dead_lettered
                .saturating_sub(before.entries_dead_lettered),
            records_dropped: self.records_dropped.saturating_sub(before.records_dropped),
            lost_in_spool: self.lost_in_spool.saturating_sub(before.lost_in_spool),
            entries_lost_in_spool: self
                .entries_lost_in_spool
                .saturating_sub(before.entries_lost_in_spool),
        }
    }

    fn report(self, covers: Covers) -> Report {
        Report {
            acknowledged: self.acknowledged,
            dropped: self.dropped,
            dead_lettered: self.dead_lettered,
            entries_acknowledged: self.entries_acknowledged,
            entries_dropped: self.entries_dropped,
            entries_dead_lettered: self.entries_dead_lettered,
            records_dropped: self.records_dropped,
            lost_in_spool: self.lost_in_spool,
            entries_lost_in_spool: self.entries_lost_in_spool,
            covers,
            ..Report::default()
        }
    }
}

/// The live counters behind [`Stats`].
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) enqueued: AtomicU64,
    pub(crate) sent: AtomicU64,
    pub(crate) acknowledged: AtomicU64,
    pub(crate) retried: AtomicU64,
    pub(crate) resent_after_fault: AtomicU64,
    pub(crate) dropped_newest: AtomicU64,
    pub(crate) dropped_oldest: AtomicU64,
    pub(crate) dropped_block_timeout: AtomicU64,
    pub(crate) dead_lettered: AtomicU64,
    pub(crate) reconnects: AtomicU64,
    pub(crate) epochs_committed: AtomicU64,
    pub(crate) epochs_failed: AtomicU64,
    pub(crate) bytes_sent: AtomicU64,
    pub(crate) handler_panics: AtomicU64,
    pub(crate) entries_enqueued: AtomicU64,
    pub(crate) entries_acknowledged: AtomicU64,
    pub(crate) entries_dropped: AtomicU64,
    pub(crate) entries_dead_lettered: AtomicU64,
    pub(crate) entries_rejected: AtomicU64,
    pub(crate) partial_success_warnings: AtomicU64,
    pub(crate) records_dropped: AtomicU64,
    pub(crate) replayed: AtomicU64,
    pub(crate) spool_corrupt: AtomicU64,
    pub(crate) spool_io_errors: AtomicU64,
    pub(crate) spool_lost: AtomicU64,
    pub(crate) entries_spool_lost: AtomicU64,
    /// The spool's gauges, set by whoever changed it last.
    pub(crate) spool_bytes: AtomicU64,
    pub(crate) spooled: AtomicU64,
    /// Records an earlier run spooled that wait on disk (not loaded): a `flush` waits
    /// for them. Lowered only after they are in the ledger.
    pub(crate) spool_unloaded_old: AtomicU64,
    state: AtomicU8,
    /// Guards nothing but the state's condvar: `set_state` notifies under it.
    state_lock: Mutex<()>,
    state_changed: Condvar,
    last_error: Mutex<Option<LastError>>,
    /// Counts of the last [`Report`]: the next one reports what happened since.
    reported: Mutex<Settled>,
    backpressure_episodes: AtomicU64,
    /// Threads waiting for room now, and the time they waited.
    waiting: Mutex<Waiting>,
}

/// Who waits for room, for [`Stats::blocked`] and the backpressure events.
#[derive(Debug)]
struct Waiting {
    /// Threads waiting now.
    now: u64,
    /// When the current episode began.
    since: Option<Instant>,
    /// The sum of the start times of the threads waiting now, in nanoseconds after
    /// `epoch`: their time so far is `now × (t − epoch) − starts`.
    starts: u128,
    /// Time spent waiting by threads that went on.
    done: Duration,
    epoch: Instant,
}

impl Default for Waiting {
    fn default() -> Self {
        Waiting {
            now: 0,
            since: None,
            starts: 0,
            done: Duration::ZERO,
            epoch: Instant::now(),
        }
    }
}

impl Waiting {
    fn nanos_since_epoch(&self, t: Instant) -> u128 {
        t.saturating_duration_since(self.epoch).as_nanos()
    }

    /// Time spent waiting so far, by every thread, those still waiting included.
    fn blocked(&self) -> Duration {
        let at = self.nanos_since_epoch(Instant::now());
        let ongoing = (u128::from(self.now) * at).saturating_sub(self.starts);
        let ongoing = Duration::from_nanos(u64::try_from(ongoing).unwrap_or(u64::MAX));
        self.done.saturating_add(ongoing)
    }
}

impl Counters {
    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Relaxed);
    }

    /// Lowers a gauge (never below zero). `SeqCst`: see `spool_unloaded_old`.
    pub(crate) fn sub(counter: &AtomicU64, n: u64) {
        let _ = counter.fetch_update(SeqCst, SeqCst, |v| Some(v.saturating_sub(n)));
    }

    /// Sets a gauge.
    pub(crate) fn set(counter: &AtomicU64, v: u64) {
        counter.store(v, SeqCst);
    }

    pub(crate) fn acknowledged(&self) -> u64 {
        self.acknowledged.load(Relaxed)
    }

    pub(crate) fn set_state(&self, state: ConnectionState) {
        let v = match state {
            ConnectionState::Connecting => 0,
            ConnectionState::Connected => 1,
            ConnectionState::Closed => 2,
            ConnectionState::Refused => 3,
        };
        let _guard = self.state_lock.lock();
        self.state.store(v, Relaxed);
        self.state_changed.notify_all();
    }

    /// Waits until the state is `Connected` or `Closed`, or `deadline` passes; returns
    /// the state. (`Refused` is waited through: the next try may be taken.)
    pub(crate) fn wait_state(&self, deadline: Instant) -> ConnectionState {
        let mut guard = self.state_lock.lock();
        loop {
            let state = self.state();
            if matches!(state, ConnectionState::Connected | ConnectionState::Closed)
                || self
                    .state_changed
                    .wait_until(&mut guard, deadline)
                    .timed_out()
            {
                return self.state();
            }
        }
    }

    pub(crate) fn state(&self) -> ConnectionState {
        match self.state.load(Relaxed) {
            0 => ConnectionState::Connecting,
            1 => ConnectionState::Connected,
            3 => ConnectionState::Refused,
            _ => ConnectionState::Closed,
        }
    }

    pub(crate) fn set_last_error(
        &self,
        error: &dyn std::fmt::Display,
        cause: Option<DialCause>,
        hint: Option<String>,
    ) {
        *self.last_error.lock() = Some(LastError {
            message: error.to_string(),
            at: SystemTime::now(),
            cause,
            hint,
            recovered_at: None,
        });
    }

    /// A stream is up: the last error, if any, is history.
    pub(crate) fn recovered(&self) {
        if let Some(e) = self.last_error.lock().as_mut() {
            e.recovered_at.get_or_insert_with(SystemTime::now);
        }
    }

    pub(crate) fn last_error(&self) -> Option<LastError> {
        self.last_error.lock().clone()
    }

    /// A thread starts waiting for room at `began`; `Started` if it is the first.
    pub(crate) fn start_waiting(&self, began: Instant) -> Option<BackpressureEvent> {
        let mut waiting = self.waiting.lock();
        waiting.now += 1;
        waiting.starts += waiting.nanos_since_epoch(began);
        if waiting.now > 1 {
            return None;
        }
        waiting.since = Some(began);
        let episode = self.backpressure_episodes.fetch_add(1, Relaxed) + 1;
        Some(BackpressureEvent::Started { episode })
    }

    /// A thread that waited since `began` goes on; `Ended` if it was the last.
    pub(crate) fn stop_waiting(&self, began: Instant) -> Option<BackpressureEvent> {
        let mut waiting = self.waiting.lock();
        let start = waiting.nanos_since_epoch(began);
        waiting.starts = waiting.starts.saturating_sub(start);
        waiting.done = waiting.done.saturating_add(began.elapsed());
        waiting.now = waiting.now.saturating_sub(1);
        if waiting.now > 0 {
            return None;
        }
        let lasted = waiting
            .since
            .take()
            .map(|t| t.elapsed())
            .unwrap_or_default();
        let episode = self.backpressure_episodes.load(Relaxed);
        Some(BackpressureEvent::Ended { episode, lasted })
    }

    /// The settled counts now (a `flush` reads them when it begins).
    pub(crate) fn settled(&self) -> Settled {
        Settled {
            acknowledged: self.acknowledged.load(Relaxed),
            dropped: self.dropped_newest.load(Relaxed)
                + self.dropped_oldest.load(Relaxed)
                + self.dropped_block_timeout.load(Relaxed),
            dead_lettered: self.dead_lettered.load(Relaxed),
            entries_acknowledged: self.entries_acknowledged.load(Relaxed),
            entries_dropped: self.entries_dropped.load(Relaxed),
            entries_dead_lettered: self.entries_dead_lettered.load(Relaxed),
            records_dropped: self.records_dropped.load(Relaxed),
            lost_in_spool: self.spool_lost.load(Relaxed),
            entries_lost_in_spool: self.entries_spool_lost.load(Relaxed),
        }
    }

    /// The counts since the previous report, or since `began` (when the caller's
    /// `flush` began) if that is earlier: a flush racing another never misses what
    /// happened while it ran because the other reported it first (both count it then).
    /// `outstanding` and the rest are the caller's to fill.
    pub(crate) fn report(&self, began: Settled) -> Report {
        // Read under the lock, so that two reports cannot store their counts out of order.
        let mut reported = self.reported.lock();
        let now = self.settled();
        let since = now.since(reported.min(began));
        *reported = now;
        since.report(Covers::SincePreviousReport)
    }

    /// The counts since the sender was created; `handed_back` is the caller's to fill.
    pub(crate) fn lifetime(&self) -> Report {
        self.settled().report(Covers::WholeLife)
    }

    pub(crate) fn snapshot(&self, queue_depth: u64, unacked: u64, unacked_bytes: u64) -> Stats {
        Stats {
            enqueued: self.enqueued.load(Relaxed),
            sent: self.sent.load(Relaxed),
            acknowledged: self.acknowledged.load(Relaxed),
            retried: self.retried.load(Relaxed),
            resent_after_fault: self.resent_after_fault.load(Relaxed),
            dropped_newest: self.dropped_newest.load(Relaxed),
            dropped_oldest: self.dropped_oldest.load(Relaxed),
            dropped_block_timeout: self.dropped_block_timeout.load(Relaxed),
            dead_lettered: self.dead_lettered.load(Relaxed),
            reconnects: self.reconnects.load(Relaxed),
            epochs_committed: self.epochs_committed.load(Relaxed),
            epochs_failed: self.epochs_failed.load(Relaxed),
            bytes_sent: self.bytes_sent.load(Relaxed),
            handler_panics: self.handler_panics.load(Relaxed),
            write_stalled: None,
            queue_depth,
            unacked,
            unacked_bytes,
            state: self.state(),
            last_error: self.last_error(),
            blocked: self.waiting.lock().blocked(),
            backpressure_episodes: self.backpressure_episodes.load(Relaxed),
            entries_enqueued: self.entries_enqueued.load(Relaxed),
            entries_acknowledged: self.entries_acknowledged.load(Relaxed),
            entries_dropped: self.entries_dropped.load(Relaxed),
            entries_dead_lettered: self.entries_dead_lettered.load(Relaxed),
            entries_rejected: self.entries_rejected.load(Relaxed),
            partial_success_warnings: self.partial_success_warnings.load(Relaxed),
            records_dropped: self.records_dropped.load(Relaxed),
            spool_bytes: self.spool_bytes.load(Relaxed),
            spooled: self.spooled.load(Relaxed),
            replayed: self.replayed.load(Relaxed),
            spool_corrupt: self.spool_corrupt.load(Relaxed),
            spool_lost: self.spool_lost.load(Relaxed),
            entries_spool_lost: self.entries_spool_lost.load(Relaxed),
            spool_io_errors: self.spool_io_errors.load(Relaxed),
        }
    }
}
