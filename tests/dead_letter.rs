//! Permanent failures end in the dead-letter path, once, with the collector's status;
//! retryable ones (`RESOURCE_EXHAUSTED`) do not; too-large payloads are refused before
//! they are sent.

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use logsender::{LogPayload, LogSender, RpcStatusCode};
use support::collect::{assert_none_missing, expected_ids, ids, wait_stats, Collector};
use support::helpers::wait_until;
use support::sink::{Ending, Sink};
use support::{queue, sender_with_pool};

const WAIT: Duration = Duration::from_secs(15);

/// A sink that ends every stream with `code`, and a sender towards it committing every
/// 10 payloads, with two workers and a [`Collector`] for its events.
fn refusing_sink(
    code: RpcStatusCode,
) -> (
    Sink,
    Arc<Collector>,
    LogSender,
    crossbeam_channel::Sender<LogPayload>,
) {
    let sink = Sink::with_ending(Ending::Fail(code));
    let collector = Collector::new();
    let config = support::fast_config(&sink.addr())
        .commit_every(10)
        .event_handler(collector.clone())
        .build()
        .expect("config");
    let (sender, tx) = sender_with_pool(config, 100, 2);
    (sink, collector, sender, tx)
}

fn received_ids(sink: &Sink) -> Vec<String> {
    ids(&sink.received())
}

fn permanent_status_dead_letters_once_then_recovers(code: RpcStatusCode) {
    const N: usize = 30;
    let (sink, collector, sender, tx) = refusing_sink(code);

    queue(&tx, 0, 0..N);
    let st = wait_stats(&sender, WAIT, "every payload dead-lettered", |s| {
        s.dead_lettered >= N as u64
    });
    assert_eq!(st.dead_lettered, N as u64, "{st:#?}");
    assert_eq!(st.acknowledged, 0, "nothing was acknowledged: {st:#?}");

    // Each payload reached the handler exactly once, with the collector's status.
    let letters = collector.dead_letters();
    assert_eq!(letters.len(), N, "{letters:#?}");
    for letter in &letters {
        assert_eq!(
            letter.code,
            Some(code),
            "dead letter without the status: {letter:?}"
        );
        assert!(letter.too_large.is_none(), "{letter:?}");
    }
    let mut dead: Vec<String> = letters.iter().map(|l| l.id.clone()).collect();
    dead.sort();
    dead.dedup();
    assert_eq!(dead.len(), N, "a payload was dead-lettered twice");
    assert_none_missing(&expected_ids(0, 0..N), &dead);

    // Nothing loops: the rejected payloads are not sent again and the sender goes quiet.
    // The epoch that was open beside the last rejected one is half-closed after it, and
    // this sink refuses even an empty call: one more failed epoch may be counted after
    // the last dead letter, so first wait for a quiet 300 ms (a loop, retrying at least
    // every 200 ms, never gets one), then watch for 600 ms.
    let mut last = (sink.calls(), sender.stats());
    let went_quiet = wait_until(WAIT, || {
        std::thread::sleep(Duration::from_millis(300));
        let now = (sink.calls(), sender.stats());
        let quiet = now.0 == last.0
            && now.1.epochs_failed == last.1.epochs_failed
            && now.1.sent == last.1.sent;
        last = now;
        quiet
    });
    let (calls_before, st_before) = last;
    assert!(
        went_quiet,
        "the sender never went quiet: {calls_before:?}, {st_before:#?}"
    );
    assert!(
        st_before.epochs_failed <= st.epochs_failed + 1,
        "epochs kept failing after the last dead letter: {} -> {}",
        st.epochs_failed,
        st_before.epochs_failed
    );
    let st = st_before;
    std::thread::sleep(Duration::from_millis(600));
    let calls_after = sink.calls();
    let st_after = sender.stats();
    assert_eq!(
        calls_after.half_closed, calls_before.half_closed,
        "epochs keep coming"
    );
    assert_eq!(
        calls_after.failed, calls_before.failed,
        "epochs keep coming"
    );
    assert!(
        calls_after.opened <= calls_before.opened + 1,
        "streams keep being opened: {calls_before:?} -> {calls_after:?}"
    );
    assert_eq!(st_after.sent, st.sent, "payloads are still being written");
    assert_eq!(
        st_after.epochs_failed, st.epochs_failed,
        "epochs still failing"
    );
    assert_eq!(st_after.dead_lettered, N as u64);
    assert_eq!(
        st_after.unacked, 0,
        "dead letters must leave the buffer: {st_after:#?}"
    );
    assert_eq!(
        sink.count(),
        N,
        "a permanently rejected payload was sent again"
    );

    // The collector accepts again: later payloads are acknowledged and arrive, the
    // dead-lettered ones do not come back.
    sink.set_ending(Ending::OkNoMessage);
    queue(&tx, 1, 0..20);
    let st = wait_stats(&sender, WAIT, "the later payloads acknowledged", |s| {
        s.acknowledged >= 20 && s.unacked == 0
    });
    let got = received_ids(&sink);
    let later = expected_ids(1, 0..20);
    assert_none_missing(&later, &got);
    let firsts = got.iter().filter(|id| id.starts_with("0-")).count();
    assert_eq!(
        firsts, N,
        "dead-lettered payloads were sent again after recovery"
    );
    assert_eq!(st.dead_lettered, N as u64);
    assert_eq!(collector.dead_letters().len(), N);
    drop(tx);
    assert!(sender
        .close_timeout(Duration::from_secs(5))
        .undelivered
        .is_empty());
}

#[test]
fn permission_denied_goes_to_dead_letters() {
    permanent_status_dead_letters_once_then_recovers(RpcStatusCode::PERMISSION_DENIED);
}

#[test]
fn invalid_argument_goes_to_dead_letters() {
    permanent_status_dead_letters_once_then_recovers(RpcStatusCode::INVALID_ARGUMENT);
}

#[test]
fn too_large_payload_is_dead_lettered_before_it_is_sent() {
    const LIMIT: usize = 16 * 1024;
    let sink = Sink::start();
    let collector = Collector::new();
    let config = support::fast_config(&sink.addr())
        .max_message_size(LIMIT)
        .event_handler(collector.clone())
        .build()
        .expect("config");
    let (sender, tx) = sender_with_pool(config, 100, 2);

    let mut big = support::payload(7, 0);
    big.logs[0].message = "x".repeat(LIMIT * 2);
    let big_size = logsender::wire::encoded_len(&big);
    assert!(big_size > LIMIT);
    let small: Vec<_> = (0..10).map(|s| support::payload(0, s)).collect();
    assert!(small
        .iter()
        .all(|p| logsender::wire::encoded_len(p) < LIMIT));

    for p in &small[..5] {
        tx.send(p.clone()).expect("queue open");
    }
    tx.send(big).expect("queue open");
    for p in &small[5..] {
        tx.send(p.clone()).expect("queue open");
    }
    let st = wait_stats(&sender, WAIT, "the small payloads acknowledged", |s| {
        s.acknowledged >= 10 && s.unacked == 0 && s.dead_lettered >= 1
    });
    assert_eq!(st.dead_lettered, 1, "{st:#?}");
    assert_eq!(st.acknowledged, 10, "{st:#?}");

    let letters = collector.dead_letters();
    assert_eq!(letters.len(), 1, "{letters:#?}");
    assert_eq!(letters[0].id, "7-0");
    assert_eq!(
        letters[0].too_large,
        Some((big_size, LIMIT)),
        "{:?}",
        letters[0]
    );
    assert!(
        letters[0].error.contains(&big_size.to_string())
            && letters[0].error.contains(&LIMIT.to_string()),
        "the message names size and limit: {}",
        letters[0].error
    );
    let got = received_ids(&sink);
    assert!(
        !got.contains(&"7-0".to_string()),
        "the too-large payload was sent"
    );
    assert_none_missing(&ids(&small), &got);
    assert_eq!(sink.bad_payloads(), 0);

    // send_logs refuses it too, synchronously, handing it back untouched.
    let mut big = support::payload(7, 1);
    big.logs[0].message = "x".repeat(LIMIT * 2);
    match sender.send_logs(&big) {
        Err(logsender::Error::PayloadTooLarge { size, limit }) => {
            assert_eq!((size, limit), (logsender::wire::encoded_len(&big), LIMIT));
        }
        other => panic!("send_logs of a too-large payload: {other:?}"),
    }
    drop(tx);
    assert!(sender
        .close_timeout(Duration::from_secs(5))
        .undelivered
        .is_empty());
}

#[test]
fn resource_exhausted_is_retried_not_dead_lettered() {
    const N: usize = 20;
    let (sink, collector, sender, tx) = refusing_sink(RpcStatusCode::RESOURCE_EXHAUSTED);

    queue(&tx, 0, 0..N);
    let st = wait_stats(
        &sender,
        WAIT,
        "epochs refused with RESOURCE_EXHAUSTED and put back",
        |s| s.epochs_failed >= 2 && s.retried > 0,
    );
    assert!(sink.calls().failed >= 2);
    assert_eq!(st.dead_lettered, 0, "{st:#?}");
    assert!(
        collector.dead_letters().is_empty(),
        "{:?}",
        collector.dead_letters()
    );
    assert!(st.retried > 0, "refused payloads are put back: {st:#?}");
    assert_eq!(st.acknowledged, 0);
    assert_eq!(st.unacked, N as u64, "all are still held: {st:#?}");

    sink.set_ending(Ending::OkNoMessage);
    let st = wait_stats(
        &sender,
        WAIT,
        "everything acknowledged after the collector recovered",
        |s| s.acknowledged >= N as u64 && s.unacked == 0,
    );
    assert_eq!(st.dead_lettered, 0, "{st:#?}");
    assert_eq!(st.acknowledged, N as u64, "{st:#?}");
    let got = received_ids(&sink);
    let want = expected_ids(0, 0..N);
    assert_none_missing(&want, &got);
    drop(tx);
    assert!(sender
        .close_timeout(Duration::from_secs(5))
        .undelivered
        .is_empty());
}

/// `RESOURCE_EXHAUSTED` means "overloaded": DESIGN §5 asks for a *longer* delay than the
/// normal backoff before the next try. With a 500 ms initial backoff, an overloaded
/// collector must not see more than a few attempts per second (at commit_interval pace
/// it would see about twenty).
#[test]
fn resource_exhausted_waits_before_the_next_attempt() {
    let sink = Sink::with_ending(Ending::Fail(RpcStatusCode::RESOURCE_EXHAUSTED));
    let config = support::fast_config(&sink.addr())
        .commit_every(10)
        .reconnect_backoff(Duration::from_millis(500), Duration::from_secs(5))
        .build()
        .expect("config");
    let (sender, tx) = sender_with_pool(config, 100, 1);
    queue(&tx, 0, 0..10);
    assert!(
        sink.wait_calls(WAIT, |c| c.failed >= 1),
        "the first epoch never reached the collector"
    );
    let first = sink.calls().failed;
    let window = Instant::now();
    std::thread::sleep(Duration::from_millis(1_500));
    let attempts = sink.calls().failed - first;
    let st = sender.stats();
    println!(
        "{attempts} more refused epochs within {:?}; {st:#?}",
        window.elapsed()
    );
    // The normal backoff alone (500 ms, x2) allows at most 2 in 1.5 s; give it room.
    assert!(
        attempts <= 3,
        "an overloaded collector (RESOURCE_EXHAUSTED) was retried {attempts} times in 1.5 s: \
         no (longer) backoff between attempts"
    );
    assert_eq!(st.dead_lettered, 0);
    drop(tx);
    let _ = sender.close_timeout(Duration::from_secs(1)).undelivered;
}
