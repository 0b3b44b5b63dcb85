//! The three ways a `SubmitStream` call can end, in both delivery modes:
//!
//! - `OK` without a response message (the GoSight server; this ending panics inside
//!   grpcio 0.13's client-streaming receiver, which is why the library drives the call
//!   as a duplex call),
//! - `OK` with a `LogResponse`,
//! - a retryable error status (`UNAVAILABLE`).
//!
//! Each test sends through a worker pool and checks: no panic on any logsender (or
//! sink) thread, the counters, and every payload at the sink, equal to what was sent.

mod support;

use std::time::Duration;

use logsender::{DeliveryMode, LogPayload, LogSender, RpcStatusCode};
use support::helpers::{
    assert_at_least_once, assert_close_returns_nothing, assert_delivered, assert_exactly_once,
    assert_no_background_panic, wait_until, watch_panics,
};
use support::sink::{Ending, Sink};
use support::{fast_config, queue, sender_with_pool};

const N: usize = 300;
const BOUND: Duration = Duration::from_secs(15);

/// Starts a sink that ends streams with `ending` and a sender in `mode` towards it,
/// with a 3-worker pool, and queues `N` payloads; returns the sink, the sender and what
/// was sent. The channel's sender is dropped, which must not stop the workers early.
fn start(ending: Ending, mode: DeliveryMode) -> (Sink, LogSender, Vec<LogPayload>) {
    let sink = Sink::with_ending(ending);
    let config = fast_config(&sink.addr()).delivery(mode).build().unwrap();
    let (sender, tx) = sender_with_pool(config, 64, 3);
    let sent = queue(&tx, 0, 0..N);
    (sink, sender, sent)
}

fn ok_ending(ending: Ending, mode: DeliveryMode) {
    watch_panics();
    let (sink, sender, sent) = start(ending, mode);

    assert_delivered(&sink, &sender, N, BOUND);
    if mode == DeliveryMode::AtLeastOnce {
        // The sink counts an epoch before it answers; the sender counts it on the answer.
        assert!(
            wait_until(BOUND, || sender.stats().epochs_committed >= 1),
            "no epoch committed: {:?}",
            sender.stats()
        );
    }
    let s = sender.stats();
    assert_eq!(s.enqueued, N as u64, "{s:?}");
    assert_eq!(s.sent, N as u64, "each payload written exactly once: {s:?}");
    assert_eq!(s.acknowledged, N as u64, "{s:?}");
    assert_eq!(s.epochs_failed, 0, "{s:?}");
    assert_eq!(s.retried, 0, "{s:?}");
    assert_eq!(s.resent_after_fault, 0, "{s:?}");
    assert_eq!(s.dead_lettered, 0, "{s:?}");
    assert_eq!(s.dropped(), 0, "{s:?}");
    assert_eq!(s.reconnects, 0, "no fault, so no reconnect: {s:?}");
    assert_eq!(s.unacked, 0, "{s:?}");

    assert_close_returns_nothing(sender, BOUND);

    assert_exactly_once(&sent, &sink.received());
    assert_eq!(sink.bad_payloads(), 0);
    let calls = sink.calls();
    // In AtMostOnce the one long-lived stream is half-closed by `close`; in AtLeastOnce
    // every epoch is. Either way at least one call ended the chosen way.
    assert!(
        calls.ok >= 1,
        "no stream was ended OK by the sink: {calls:?}"
    );
    assert_eq!(calls.failed, 0, "{calls:?}");
    assert_eq!(calls.half_closed, calls.ok, "{calls:?}");
    assert_no_background_panic();
}

#[test]
fn ok_without_message_at_least_once() {
    ok_ending(Ending::OkNoMessage, DeliveryMode::AtLeastOnce);
}

#[test]
fn ok_without_message_at_most_once() {
    ok_ending(Ending::OkNoMessage, DeliveryMode::AtMostOnce);
}

#[test]
fn ok_with_response_at_least_once() {
    ok_ending(Ending::OkWithResponse, DeliveryMode::AtLeastOnce);
}

#[test]
fn ok_with_response_at_most_once() {
    ok_ending(Ending::OkWithResponse, DeliveryMode::AtMostOnce);
}

/// Every epoch is answered `UNAVAILABLE` after the sink read it: nothing may count as
/// acknowledged, the epochs are re-sent, and once the sink answers `OK` again
/// everything is committed exactly once in the sender's books (duplicates at the sink
/// are expected: the failed epochs were read before they were refused).
#[test]
fn unavailable_ending_at_least_once_retries_then_delivers() {
    watch_panics();
    let (sink, sender, sent) = start(
        Ending::Fail(RpcStatusCode::UNAVAILABLE),
        DeliveryMode::AtLeastOnce,
    );

    assert!(
        wait_until(BOUND, || {
            let s = sender.stats();
            s.epochs_failed >= 1 && s.retried > 0
        }),
        "no failed epoch was retried: {:?}",
        sender.stats()
    );
    let s = sender.stats();
    assert_eq!(
        s.acknowledged, 0,
        "a refused epoch counted as delivered: {s:?}"
    );
    assert_eq!(s.epochs_committed, 0, "{s:?}");
    assert_eq!(s.dead_lettered, 0, "UNAVAILABLE is retryable: {s:?}");
    assert!(s.last_error.is_some(), "{s:?}");
    assert!(sink.calls().failed >= 1, "{:?}", sink.calls());

    sink.set_ending(Ending::OkNoMessage);
    assert!(
        wait_until(BOUND, || sender.stats().acknowledged == N as u64),
        "not everything acknowledged after the sink recovered: {:?}",
        sender.stats()
    );
    let s = sender.stats();
    assert_eq!(
        s.acknowledged, N as u64,
        "each payload acknowledged once: {s:?}"
    );
    assert!(s.epochs_committed >= 1, "{s:?}");
    assert!(s.resent_after_fault > 0, "{s:?}");
    assert!(
        s.sent > N as u64,
        "failed epochs must have been written again: {s:?}"
    );
    assert_eq!(s.dead_lettered, 0, "{s:?}");
    assert_eq!(s.dropped(), 0, "{s:?}");
    assert_eq!(s.unacked, 0, "{s:?}");

    assert_close_returns_nothing(sender, BOUND);

    let received = sink.received();
    assert_at_least_once(&sent, &received);
    assert!(
        received.len() > N,
        "the refused epochs were read by the sink, so re-sends must show as duplicates \
         ({} received)",
        received.len()
    );
    assert_eq!(sink.bad_payloads(), 0);
    assert_no_background_panic();
}

/// In AtMostOnce the one long-lived stream is only half-closed by `close`, so the
/// error ending is met there: payloads count as sent when written (the documented
/// semantics), so all are delivered and acknowledged, `close` returns nothing, and the
/// refused final status must not panic or hang `close`.
#[test]
fn unavailable_ending_at_most_once() {
    watch_panics();
    let (sink, sender, sent) = start(
        Ending::Fail(RpcStatusCode::UNAVAILABLE),
        DeliveryMode::AtMostOnce,
    );

    assert_delivered(&sink, &sender, N, BOUND);
    let s = sender.stats();
    assert_eq!(s.sent, N as u64, "{s:?}");
    assert_eq!(s.epochs_failed, 0, "the stream was not ended yet: {s:?}");

    assert_close_returns_nothing(sender, BOUND);
    assert_exactly_once(&sent, &sink.received());
    let calls = sink.calls();
    assert!(
        calls.failed >= 1,
        "close must half-close the stream: {calls:?}"
    );
    assert_eq!(calls.ok, 0, "{calls:?}");
    assert_no_background_panic();
}
