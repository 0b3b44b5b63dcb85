//! The sender starts while nothing listens on the collector's port. Payloads are taken
//! in and held; once a sink starts on that port, everything arrives without the caller
//! doing anything, each payload written once (nothing was on the wire before).

mod support;

use std::time::Duration;

use logsender::{ConnectionState, DeliveryMode};
use support::helpers::{
    assert_close_returns_nothing, assert_delivered, assert_exactly_once,
    assert_no_background_panic, free_port, wait_until, watch_panics,
};
use support::sink::{Ending, Sink};
use support::{fast_config, queue, sender_with_pool};

const N: usize = 200;
const BOUND: Duration = Duration::from_secs(15);

fn late_server(mode: DeliveryMode) {
    watch_panics();
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let (sender, tx) = sender_with_pool(fast_config(&addr).delivery(mode).build().unwrap(), N, 2);
    let sent = queue(&tx, 7, 0..N);

    // Nothing listens: the sender tries, fails, and keeps everything.
    assert!(
        wait_until(BOUND, || {
            let s = sender.stats();
            s.last_error.is_some() && s.enqueued == N as u64
        }),
        "expected a failed dial and all payloads taken in: {:?}",
        sender.stats()
    );
    // Let a few more dials fail (the backoff is 20..200 ms).
    std::thread::sleep(Duration::from_millis(300));
    let s = sender.stats();
    assert_eq!(s.state, ConnectionState::Connecting, "{s:?}");
    assert_eq!(s.sent, 0, "{s:?}");
    assert_eq!(s.acknowledged, 0, "{s:?}");
    assert_eq!(s.unacked, N as u64, "every payload must be held: {s:?}");
    assert_eq!(s.dropped(), 0, "{s:?}");
    assert_eq!(s.dead_lettered, 0, "a refused dial is not permanent: {s:?}");
    assert_eq!(s.reconnects, 0, "no stream was ever opened: {s:?}");

    // The collector comes up on that port; the caller does nothing.
    let sink = Sink::start_with(port, Ending::OkNoMessage, None);
    assert_delivered(&sink, &sender, N, BOUND);
    let s = sender.stats();
    assert_eq!(s.state, ConnectionState::Connected, "{s:?}");
    assert_eq!(
        s.reconnects, 0,
        "the first stream is not a reconnect: {s:?}"
    );
    assert_eq!(s.sent, N as u64, "held payloads are written once: {s:?}");
    assert_eq!(s.epochs_failed, 0, "{s:?}");
    assert_eq!(s.unacked, 0, "{s:?}");

    assert_close_returns_nothing(sender, BOUND);
    assert_exactly_once(&sent, &sink.received());
    assert_no_background_panic();
}

#[test]
fn payloads_queued_before_the_server_starts_arrive_at_least_once_mode() {
    late_server(DeliveryMode::AtLeastOnce);
}

#[test]
fn payloads_queued_before_the_server_starts_arrive_at_most_once_mode() {
    late_server(DeliveryMode::AtMostOnce);
}

/// The port was served once, then the server went away before the sender started:
/// the same as never served, and a restart on that port is found by itself.
#[test]
fn server_that_was_stopped_before_the_sender_started() {
    watch_panics();
    let mut sink = Sink::start();
    sink.stop();
    let (sender, tx) = sender_with_pool(fast_config(&sink.addr()).build().unwrap(), N, 1);
    let sent = queue(&tx, 8, 0..50);
    assert!(
        wait_until(BOUND, || sender.stats().last_error.is_some()),
        "{:?}",
        sender.stats()
    );
    assert_eq!(sink.count(), 0);
    sink.restart();
    assert!(
        wait_until(BOUND, || sender.stats().acknowledged == sent.len() as u64),
        "{:?}",
        sender.stats()
    );
    assert_close_returns_nothing(sender, BOUND);
    assert_exactly_once(&sent, &sink.received());
    assert_no_background_panic();
}
