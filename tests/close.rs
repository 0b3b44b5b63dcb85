//! `close` / `close_timeout` hand back exactly what was not delivered, deliver
//! everything when they can, and leave no logsender thread behind; dropping a sender
//! without `close` neither hangs nor leaks threads, and reports what it could not send.
//!
//! The thread checks look at the whole process, so the tests of this file run one at a
//! time (`SERIAL`).

mod support;

use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;

use logsender::{DeliveryMode, DropReason, DroppedEvent, EventHandler, LogPayload};
use support::collect::ids;
use support::helpers::{
    assert_close_returns_nothing, assert_exactly_once, assert_no_background_panic, thread_prefix,
    unserved_addr, wait_no_logsender_threads, wait_until, watch_panics, within,
};
use support::sink::Sink;
use support::{fast_config, logsender_threads, queue, sender_with_pool};

static SERIAL: Mutex<()> = Mutex::new(());
const BOUND: Duration = Duration::from_secs(15);
/// The grpc poll thread ends asynchronously after the last channel is dropped.
const THREADS_GONE: Duration = Duration::from_secs(2);

fn serial() -> std::sync::MutexGuard<'static, ()> {
    let guard = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let left = wait_no_logsender_threads(THREADS_GONE);
    assert!(
        left.is_empty(),
        "threads left over from an earlier test: {left:?}"
    );
    guard
}

fn assert_no_threads_left(when: &str) {
    let left = wait_no_logsender_threads(THREADS_GONE);
    assert!(left.is_empty(), "logsender threads alive {when}: {left:?}");
}

/// Server down, work queued (some taken into the sender's buffer, the rest still in the
/// channel because the buffer is full): `close_timeout` returns every payload, once,
/// unaltered, oldest first.
fn close_with_server_down(mode: DeliveryMode) {
    let _serial = serial();
    watch_panics();
    let config = fast_config(&unserved_addr())
        .delivery(mode)
        .max_buffered_payloads(10)
        .build()
        .unwrap();
    let (sender, tx) = sender_with_pool(config, 100, 1);
    let sent = queue(&tx, 5, 0..60);
    assert!(
        wait_until(BOUND, || {
            let s = sender.stats();
            s.unacked == 10 && s.queue_depth > 0 && s.last_error.is_some()
        }),
        "expected a full buffer and a non-empty queue: {:?}",
        sender.stats()
    );
    let threads = logsender_threads();
    assert!(
        ["sup", "wr", "w0"]
            .iter()
            .all(|t| threads.contains(&format!("{}-{t}", thread_prefix()))),
        "the thread check would prove nothing: {threads:?}"
    );

    let undelivered = within(BOUND, "close_timeout", move || {
        sender.close_timeout(Duration::from_millis(500)).undelivered
    });
    assert_eq!(
        ids(&undelivered),
        ids(&sent),
        "close must return exactly the undelivered payloads, oldest first"
    );
    assert_eq!(undelivered, sent, "returned payloads must be unaltered");
    drop(tx);
    assert_no_threads_left("after close_timeout");
    assert_no_background_panic();
}

#[test]
fn close_with_server_down_returns_everything_at_least_once() {
    close_with_server_down(DeliveryMode::AtLeastOnce);
}

#[test]
fn close_with_server_down_returns_everything_at_most_once() {
    close_with_server_down(DeliveryMode::AtMostOnce);
}

/// Server up: `close` right after queuing delivers everything and returns nothing.
fn close_with_server_up(mode: DeliveryMode) {
    let _serial = serial();
    watch_panics();
    let sink = Sink::start();
    let config = fast_config(&sink.addr()).delivery(mode).build().unwrap();
    let (sender, tx) = sender_with_pool(config, 1_000, 2);
    let sent = queue(&tx, 6, 0..500);
    // Some may still be in the channel: close must drain it too.
    assert_close_returns_nothing(sender, BOUND);
    if mode == DeliveryMode::AtMostOnce {
        sink.wait_for(sent.len(), Duration::from_secs(5));
    }
    assert_exactly_once(&sent, &sink.received());
    assert_no_threads_left("after close");
    // The producer's end is still open; that must not matter.
    drop(tx);
    assert_no_background_panic();
}

#[test]
fn close_with_server_up_delivers_everything_at_least_once() {
    close_with_server_up(DeliveryMode::AtLeastOnce);
}

#[test]
fn close_with_server_up_delivers_everything_at_most_once() {
    close_with_server_up(DeliveryMode::AtMostOnce);
}

#[test]
fn close_of_an_idle_sender_returns_nothing_and_stops_every_thread() {
    let _serial = serial();
    watch_panics();
    let sink = Sink::start();
    let (sender, _tx) = sender_with_pool(fast_config(&sink.addr()).build().unwrap(), 1, 3);
    assert!(
        wait_until(BOUND, || logsender_threads().len() >= 5),
        "{:?}",
        logsender_threads()
    );
    assert_close_returns_nothing(sender, BOUND);
    assert_no_threads_left("after closing an idle sender");
    assert_eq!(sink.count(), 0);
    assert_no_background_panic();
}

#[derive(Default)]
struct RecordDrops(Mutex<Vec<(LogPayload, DropReason)>>);

impl EventHandler for RecordDrops {
    fn on_dropped(&self, event: DroppedEvent) {
        let reason = event.reason();
        self.0.lock().unwrap().push((event.into_payload(), reason));
    }
}

/// Dropped (not closed) with the server down: returns within the short drop deadline,
/// stops every thread, and reports each undelivered payload as `SenderDropped`.
#[test]
fn drop_without_close_with_server_down_reports_and_stops() {
    let _serial = serial();
    watch_panics();
    let drops = Arc::new(RecordDrops::default());
    let config = fast_config(&unserved_addr())
        .event_handler(drops.clone())
        .build()
        .unwrap();
    let (sender, tx) = sender_with_pool(config, 100, 2);
    let sent = queue(&tx, 9, 0..20);
    assert!(
        wait_until(BOUND, || sender.stats().unacked == sent.len() as u64),
        "{:?}",
        sender.stats()
    );
    // Drop documents a deadline of at most 2 s; 10 s is only a hang guard.
    within(Duration::from_secs(10), "drop(LogSender)", move || {
        drop(sender)
    });
    assert_no_threads_left("after drop");

    let reported = std::mem::take(&mut *drops.0.lock().unwrap());
    assert!(
        reported
            .iter()
            .all(|(_, r)| *r == DropReason::SenderDropped),
        "{:?}",
        reported.iter().map(|(_, r)| r).collect::<Vec<_>>()
    );
    let mut got: Vec<LogPayload> = reported.into_iter().map(|(p, _)| p).collect();
    got.sort_by_key(|p| p.host_id.clone());
    assert_exactly_once(&sent, &got);
    drop(tx);
    assert_no_background_panic();
}

/// Dropped (not closed) with the server up: what it holds is still delivered within the
/// drop deadline, and no thread is left.
#[test]
fn drop_without_close_with_server_up_delivers_and_stops() {
    let _serial = serial();
    watch_panics();
    let sink = Sink::start();
    let drops = Arc::new(RecordDrops::default());
    let config = fast_config(&sink.addr())
        .event_handler(drops.clone())
        .build()
        .unwrap();
    let (sender, tx) = sender_with_pool(config, 100, 2);
    let sent = queue(&tx, 10, 0..50);
    drop(tx);
    within(Duration::from_secs(10), "drop(LogSender)", move || {
        drop(sender)
    });
    assert_no_threads_left("after drop");
    assert!(
        drops.0.lock().unwrap().is_empty(),
        "nothing should have been dropped"
    );
    assert_exactly_once(&sent, &sink.received());
    assert_no_background_panic();
}
