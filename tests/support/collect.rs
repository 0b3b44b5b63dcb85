//! An [`EventHandler`] that keeps every drop and dead letter it sees, a wait on the
//! sender's counters, and id bookkeeping for the delivery-guarantee tests.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use logsender::{
    DeadLetterEvent, DropReason, DroppedEvent, EventHandler, LogSender, PartialSuccessEvent, Stats,
};
use parking_lot::Mutex;

/// A dead letter as the handler saw it: the payload's id, the status code (if the
/// collector gave one) and the error as text.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    pub id: String,
    pub code: Option<logsender::RpcStatusCode>,
    pub too_large: Option<(usize, usize)>,
    pub error: String,
}

/// An OTLP partial success as the handler saw it: the records rejected, the
/// collector's message, and the ids of the call's payloads.
#[derive(Debug, Clone)]
pub struct Partial {
    pub rejected: u64,
    pub message: String,
    pub ids: Vec<String>,
}

/// Collects drops, dead letters and partial successes, in the order they were reported.
#[derive(Default)]
pub struct Collector {
    pub dropped: Mutex<Vec<(String, DropReason)>>,
    pub dead: Mutex<Vec<DeadLetter>>,
    pub partial: Mutex<Vec<Partial>>,
}

impl Collector {
    /// A new collector, shared with the sender through `event_handler`.
    pub fn new() -> Arc<Collector> {
        Arc::new(Collector::default())
    }

    /// Ids of the dropped payloads with this reason, in report order.
    pub fn dropped_ids(&self, reason: DropReason) -> Vec<String> {
        self.dropped
            .lock()
            .iter()
            .filter(|(_, r)| *r == reason)
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// A copy of the dead letters so far.
    pub fn dead_letters(&self) -> Vec<DeadLetter> {
        self.dead.lock().clone()
    }

    /// A copy of the partial successes so far.
    pub fn partial_successes(&self) -> Vec<Partial> {
        self.partial.lock().clone()
    }
}

impl EventHandler for Collector {
    fn on_dropped(&self, event: DroppedEvent) {
        let id = super::id_of(event.payload());
        self.dropped.lock().push((id, event.reason()));
    }

    fn on_dead_letter(&self, event: DeadLetterEvent) {
        let too_large = match event.error() {
            logsender::Error::PayloadTooLarge { size, limit } => Some((*size, *limit)),
            _ => None,
        };
        let letter = DeadLetter {
            id: super::id_of(event.payload()),
            code: event.error().status().map(|s| s.code()),
            too_large,
            error: event.error().to_string(),
        };
        self.dead.lock().push(letter);
    }

    fn on_partial_success(&self, event: &PartialSuccessEvent) {
        self.partial.lock().push(Partial {
            rejected: event.rejected_records,
            message: event.message.clone(),
            ids: event.payloads.iter().map(super::id_of).collect(),
        });
    }
}

/// Polls the sender's stats until `cond` holds; panics with `what` and the last stats
/// if it does not within `timeout`. Returns the stats that satisfied it.
pub fn wait_stats(
    sender: &LogSender,
    timeout: Duration,
    what: &str,
    mut cond: impl FnMut(&Stats) -> bool,
) -> Stats {
    let mut last = sender.stats();
    let ok = super::helpers::wait_until(timeout, || {
        last = sender.stats();
        cond(&last)
    });
    assert!(
        ok,
        "timed out after {timeout:?} waiting for {what}; last stats: {last:#?}"
    );
    last
}

/// Waits until the sender has opened a stream to `sink` (a sink that never reads) and
/// a write on it has made no progress for 200 ms (`Stats::write_stalled`): the writes
/// really ran into HTTP/2 flow control.
pub fn wait_writes_blocked(sink: &super::sink::Sink, sender: &LogSender, timeout: Duration) {
    assert!(
        sink.wait_calls(timeout, |c| c.opened >= 1),
        "the sender never opened a stream"
    );
    wait_stats(sender, timeout, "a write stuck for 200 ms", |s| {
        s.write_stalled
            .is_some_and(|d| d >= Duration::from_millis(200))
    });
}

/// The ids of `payloads`, in order.
pub fn ids(payloads: &[logsender::LogPayload]) -> Vec<String> {
    payloads.iter().map(super::id_of).collect()
}

/// The ids `producer-seq` for `seq` in `range`, in order.
pub fn expected_ids(producer: usize, range: std::ops::Range<usize>) -> Vec<String> {
    range.map(|s| format!("{producer}-{s}")).collect()
}

/// Asserts that every id of `wanted` is in `have`; the message names the missing ones.
pub fn assert_none_missing(wanted: &[String], have: &[String]) {
    let lost = missing(wanted, have);
    assert!(lost.is_empty(), "missing: {lost:?}");
}

/// Ids that are in `wanted` but not in `have`, in `wanted`'s order.
pub fn missing(wanted: &[String], have: &[String]) -> Vec<String> {
    let have: HashSet<&String> = have.iter().collect();
    wanted
        .iter()
        .filter(|id| !have.contains(id))
        .cloned()
        .collect()
}
