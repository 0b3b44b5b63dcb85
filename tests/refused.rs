//! A collector that refuses every call for a permanent reason (an expired token, a wrong
//! ACL, the wrong service: `UNAUTHENTICATED`, `PERMISSION_DENIED`, `UNIMPLEMENTED`)
//! costs no data when payloads are held (`hold_when_refused`, the default with a spool):
//! they wait, in memory or in the spool, through refused tries spaced by the refused
//! backoff, in the `Refused` state, with an event per try, and are delivered once the
//! collector takes data again. A payload the collector rejects alone is still
//! dead-lettered; with holding off, a refusing collector still dead-letters.

mod support;

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use logsender::{
    ConnectionState, DeadLetterEvent, Error, EventHandler, LogSender, RefusedEvent, RpcStatusCode,
    Wire,
};
use parking_lot::Mutex;
use support::collect::{assert_none_missing, expected_ids, wait_stats};
use support::helpers::{assert_no_background_panic, temp_path, wait_until, watch_panics};
use support::sink::{Ending, Sink};
use support::{fast_config, fast_config_on, queue, sender_with_pool};

const WAIT: Duration = Duration::from_secs(20);
/// The refused backoff of these tests: 100 ms doubling up to 300 ms, no jitter.
const FIRST: Duration = Duration::from_millis(100);
const CAP: Duration = Duration::from_millis(300);

/// A refused try as the handler heard it.
#[derive(Debug, Clone)]
struct Refusal {
    code: RpcStatusCode,
    message: String,
    hint: Option<String>,
    retry_in: Duration,
    attempt: u32,
}

/// Keeps the refusals, dead letters (ids and codes) and connections it hears.
#[derive(Default)]
struct Events {
    refused: Mutex<Vec<Refusal>>,
    dead: Mutex<Vec<(String, Option<RpcStatusCode>)>>,
    connected: AtomicU64,
}

impl EventHandler for Events {
    fn on_refused(&self, event: &RefusedEvent) {
        self.refused.lock().push(Refusal {
            code: event.code(),
            message: event.message().to_string(),
            hint: event.hint().map(str::to_string),
            retry_in: event.retry_in(),
            attempt: event.attempt(),
        });
    }

    fn on_dead_letter(&self, event: DeadLetterEvent) {
        let code = event.error().status().map(|s| s.code());
        self.dead
            .lock()
            .push((event.payload().host_id.clone(), code));
    }

    fn on_connected(&self) {
        self.connected.fetch_add(1, Ordering::SeqCst);
    }
}

impl Events {
    fn refusals(&self) -> Vec<Refusal> {
        self.refused.lock().clone()
    }

    fn dead(&self) -> Vec<(String, Option<RpcStatusCode>)> {
        self.dead.lock().clone()
    }
}

/// Within a millisecond (the backoff's arithmetic is in floating point).
fn about(d: Duration, want: Duration) -> bool {
    d.abs_diff(want) <= Duration::from_millis(1)
}

/// The collector takes data, then refuses every call with `code` for several tries,
/// then takes data again: nothing is dead-lettered, the state says `Refused` meanwhile
/// (and `wait_connected` does not count the streams that open), each try is an event
/// with the collector's status, the tries are spaced 100, 200, then 300 ms (the cap),
/// and everything is delivered after, with the state `Connected` again.
fn held_while_refused_then_delivered(code: RpcStatusCode, wire: Wire) {
    watch_panics();
    const N: usize = 30;
    let sink = Sink::start();
    let events = Arc::new(Events::default());
    let config = fast_config_on(&sink.addr(), wire)
        .commit_every(10)
        .hold_when_refused(true)
        .refused_backoff(FIRST, CAP)
        .backoff_jitter(0.0)
        .event_handler(events.clone())
        .build()
        .expect("config");
    assert!(config.holds_when_refused());
    let (sender, tx) = sender_with_pool(config, 100, 2);

    queue(&tx, 0, 0..10);
    wait_stats(&sender, WAIT, "the first payloads acknowledged", |s| {
        s.acknowledged == 10 && s.state == ConnectionState::Connected
    });
    let connected_before = events.connected.load(Ordering::SeqCst);
    let reconnects_before = sender.stats().reconnects;

    // The token expires: every call is refused, empty ones too.
    sink.set_ending(Ending::Fail(code));
    queue(&tx, 1, 0..N);
    assert!(
        wait_until(WAIT, || events.refusals().len() >= 4),
        "fewer than 4 refused tries: {:?}; {:#?}",
        events.refusals(),
        sender.stats()
    );
    let heard_before = events.refusals().len();
    let st = sender.stats();
    let heard_after = events.refusals().len();
    // One event per try: the first on the stream that was up, then one per stream
    // opened (every epoch of a try is refused, but only the first refusal counts).
    let tries = st.reconnects - reconnects_before + 1;
    assert!(
        heard_before as u64 <= tries && tries <= heard_after as u64 + 1,
        "{heard_before}..{heard_after} refusals heard for {tries} tries"
    );
    assert_eq!(st.state, ConnectionState::Refused, "{st:#?}");
    assert_eq!(st.dead_lettered, 0, "{:?}", events.dead());
    assert_eq!(st.acknowledged, 10, "{st:#?}");
    assert_eq!(
        st.unacked, N as u64,
        "every refused payload is held: {st:#?}"
    );
    assert!(
        sink.calls().failed >= 4,
        "the collector refused fewer calls than tries: {:?}",
        sink.calls()
    );
    let last_error = st.last_error.expect("a last error");
    assert!(
        last_error.message.contains("refuses every call")
            && last_error.message.contains(&format!("{code:?}")),
        "{last_error}"
    );
    assert!(last_error.hint.is_some(), "{last_error}");
    if code == RpcStatusCode::UNIMPLEMENTED {
        // The hint names the method this wire calls.
        let method = match wire {
            Wire::OtlpLogs => "LogsService/Export",
            _ => "proto.LogService/SubmitStream",
        };
        assert!(
            last_error
                .hint
                .as_deref()
                .is_some_and(|h| h.contains(method)),
            "{last_error}"
        );
    }
    assert!(last_error.recovered_at.is_none(), "{last_error}");

    let refusals = events.refusals();
    for (i, r) in refusals.iter().enumerate() {
        assert_eq!(r.code, code, "{r:?}");
        assert_eq!(r.message, "sink told to fail", "{r:?}");
        assert!(r.hint.is_some(), "{r:?}");
        assert_eq!(r.attempt as usize, i + 1, "{refusals:?}");
    }
    let delays: Vec<Duration> = refusals.iter().map(|r| r.retry_in).collect();
    assert!(about(delays[0], FIRST), "{delays:?}");
    assert!(about(delays[1], FIRST * 2), "{delays:?}");
    assert!(delays[2..].iter().all(|d| about(*d, CAP)), "{delays:?}");
    assert_eq!(
        events.connected.load(Ordering::SeqCst),
        connected_before,
        "a stream that opened while the collector refused was reported connected"
    );
    // The streams each try opens do not count as connected.
    match sender.wait_connected(Duration::from_millis(400)) {
        Err(Error::NotConnected {
            last_error: Some(e),
            ..
        }) => assert!(e.message.contains("refuses every call"), "{e}"),
        other => panic!("wait_connected while refused: {other:?}"),
    }

    // The token is renewed.
    sink.set_ending(Ending::OkNoMessage);
    wait_stats(&sender, WAIT, "the held payloads acknowledged", |s| {
        s.acknowledged == 10 + N as u64 && s.unacked == 0
    });
    wait_stats(&sender, WAIT, "the state Connected again", |s| {
        s.state == ConnectionState::Connected
    });
    assert!(events.connected.load(Ordering::SeqCst) > connected_before);
    let st = sender.stats();
    assert!(
        st.last_error
            .as_ref()
            .is_some_and(|e| e.recovered_at.is_some()),
        "{st:#?}"
    );
    assert_none_missing(&expected_ids(1, 0..N), &sink.ok_ids());
    let tries = events.refusals().len();
    drop(tx);
    let done = sender.shutdown(Duration::from_secs(5));
    assert!(done.undelivered.is_empty());
    assert!(done.report.all_delivered(), "{:?}", done.report);
    assert_eq!(done.report.acknowledged, 10 + N as u64);
    assert!(events.dead().is_empty(), "{:?}", events.dead());
    assert_eq!(events.refusals().len(), tries, "refused after it recovered");
    assert_no_background_panic();
}

both_wires! {
fn permission_denied_holds_then_delivers(wire: Wire) {
    held_while_refused_then_delivered(RpcStatusCode::PERMISSION_DENIED, wire);
}
}

both_wires! {
fn unauthenticated_holds_then_delivers(wire: Wire) {
    held_while_refused_then_delivered(RpcStatusCode::UNAUTHENTICATED, wire);
}
}

both_wires! {
/// On OTLP, what a GoSight server that predates its OTLP receiver answers.
fn unimplemented_holds_then_delivers(wire: Wire) {
    held_while_refused_then_delivered(RpcStatusCode::UNIMPLEMENTED, wire);
}
}

/// A collector that refuses from the first call, and a program that gives up: `flush`
/// reports the held payloads outstanding, and `shutdown` hands them back, oldest first;
/// nothing is dead-lettered.
#[test]
fn held_payloads_are_outstanding_then_handed_back() {
    watch_panics();
    const N: usize = 20;
    let sink = Sink::with_ending(Ending::Fail(RpcStatusCode::PERMISSION_DENIED));
    let events = Arc::new(Events::default());
    let config = fast_config(&sink.addr())
        .commit_every(10)
        .hold_when_refused(true)
        .refused_backoff(FIRST, CAP)
        .event_handler(events.clone())
        .build()
        .expect("config");
    let (sender, tx) = sender_with_pool(config, 100, 1);
    let sent = queue(&tx, 0, 0..N);
    assert!(
        wait_until(WAIT, || !events.refusals().is_empty()),
        "{:#?}",
        sender.stats()
    );
    wait_stats(&sender, WAIT, "all taken in and held", |s| {
        s.enqueued == N as u64 && s.unacked == N as u64
    });
    let report = sender.flush(Duration::from_millis(300));
    assert_eq!(report.outstanding, N as u64, "{report:?}");
    assert_eq!(report.dead_lettered, 0, "{report:?}");
    assert_eq!(sender.stats().state, ConnectionState::Refused);
    drop(tx);
    let done = sender.shutdown(Duration::from_secs(2));
    assert_eq!(done.report.dead_lettered, 0, "{:?}", done.report);
    assert_eq!(done.report.handed_back, N as u64, "{:?}", done.report);
    let back: Vec<String> = done.undelivered.iter().map(support::id_of).collect();
    let want: Vec<String> = sent.iter().map(support::id_of).collect();
    assert_eq!(back, want, "handed back, oldest first");
    assert_eq!(done.stats.state, ConnectionState::Closed);
    assert!(events.dead().is_empty(), "{:?}", events.dead());
    assert_eq!(sink.calls().ok, 0);
    assert_no_background_panic();
}

/// With a spool, holding is the default: a refused collector's payloads wait in the
/// spool (more of them than memory holds), a shutdown leaves them there, and the next
/// sender on the directory delivers them once the collector takes data.
#[test]
fn with_a_spool_refused_payloads_wait_in_it_across_a_restart() {
    watch_panics();
    const N: usize = 100;
    let dir = temp_path("refused-spool");
    let mut sink = Sink::with_ending(Ending::Fail(RpcStatusCode::PERMISSION_DENIED));
    let events = Arc::new(Events::default());
    let config = fast_config(&sink.addr())
        .max_buffered_payloads(20)
        .commit_every(10)
        .spool(&dir)
        .refused_backoff(FIRST, CAP)
        .event_handler(events.clone())
        .build()
        .expect("config");
    assert!(config.holds_when_refused(), "the default with a spool");
    let (sender, tx) = sender_with_pool(config, 128, 2);
    queue(&tx, 0, 0..N);
    assert!(
        wait_until(WAIT, || events.refusals().len() >= 2),
        "{:?}; {:#?}",
        events.refusals(),
        sender.stats()
    );
    let st = wait_stats(&sender, WAIT, "every payload spooled", |s| {
        s.spooled == N as u64
    });
    assert_eq!(st.state, ConnectionState::Refused, "{st:#?}");
    assert_eq!(st.dead_lettered, 0, "{:?}", events.dead());
    assert_eq!(st.dropped(), 0, "{st:#?}");
    assert!(st.unacked <= 20, "the memory bound: {st:#?}");
    let durable = sender.sync(Duration::from_secs(10)).expect("sync");
    assert!(durable.durable, "{durable:?}");
    drop(tx);
    let done = sender.shutdown(Duration::from_millis(500));
    // The spool's lock goes with the sender.
    drop(sender);
    assert!(done.undelivered.is_empty(), "spooled, not handed back");
    assert_eq!(done.report.left_in_spool, N as u64, "{:?}", done.report);
    assert_eq!(done.report.dead_lettered, 0, "{:?}", done.report);
    assert!(events.dead().is_empty(), "{:?}", events.dead());

    // The ACL is fixed; a new sender on the directory.
    sink.stop();
    sink.set_ending(Ending::OkNoMessage);
    sink.restart();
    let config = fast_config(&sink.addr())
        .max_buffered_payloads(20)
        .spool(&dir)
        .build()
        .expect("config");
    let sender = LogSender::new(config).expect("sender");
    let report = sender.flush(WAIT);
    assert!(report.all_delivered(), "{report:?}");
    let st = sender.stats();
    assert_eq!(st.replayed, N as u64, "{st:#?}");
    assert_eq!(st.state, ConnectionState::Connected);
    let got: HashSet<String> = sink.ok_ids().into_iter().collect();
    let lost: Vec<String> = expected_ids(0, 0..N)
        .into_iter()
        .filter(|id| !got.contains(id))
        .collect();
    assert!(lost.is_empty(), "lost: {lost:?}");
    let done = sender.shutdown(Duration::from_secs(5));
    assert!(done.report.all_delivered(), "{:?}", done.report);
    let _ = std::fs::remove_dir_all(&dir);
    assert_no_background_panic();
}

/// Holding does not shelter a poison payload: a collector that accepts calls but
/// rejects the one that carries `0-7` with `PERMISSION_DENIED` gets only that payload
/// dead-lettered; the state never says `Refused`.
#[test]
fn a_poison_payload_is_still_dead_lettered_while_holding() {
    watch_panics();
    const N: usize = 40;
    let sink = Sink::start();
    sink.reject_payload("0-7", RpcStatusCode::PERMISSION_DENIED);
    let events = Arc::new(Events::default());
    let config = fast_config(&sink.addr())
        .hold_when_refused(true)
        .refused_backoff(FIRST, CAP)
        .commit_interval(Duration::from_millis(200))
        .event_handler(events.clone())
        .build()
        .expect("config");
    let (sender, tx) = sender_with_pool(config, 64, 2);
    let states = Arc::new(Mutex::new(HashSet::new()));
    queue(&tx, 0, 0..N);
    {
        let mut last = sender.stats();
        let settled = wait_until(WAIT, || {
            last = sender.stats();
            states.lock().insert(format!("{:?}", last.state));
            last.acknowledged == N as u64 - 1 && last.dead_lettered == 1 && last.unacked == 0
        });
        assert!(settled, "{last:#?}");
    }
    assert_eq!(
        events.dead(),
        vec![("0-7".to_string(), Some(RpcStatusCode::PERMISSION_DENIED))]
    );
    assert!(events.refusals().is_empty(), "{:?}", events.refusals());
    assert!(!states.lock().contains("Refused"), "{:?}", states.lock());
    assert!(sink.calls().failed >= 2, "{:?}", sink.calls());
    let healthy: Vec<String> = expected_ids(0, 0..N)
        .into_iter()
        .filter(|id| id != "0-7")
        .collect();
    assert_none_missing(&healthy, &sink.ok_ids());
    assert!(!sink.ok_ids().contains(&"0-7".to_string()));
    drop(tx);
    assert!(sender.close().undelivered.is_empty());
    assert_no_background_panic();
}

/// Holding off (the default without a spool; here asked for with one): a collector
/// that refuses every call has the payloads dead-lettered, and released from the spool.
#[test]
fn holding_off_dead_letters_and_releases_the_spool() {
    watch_panics();
    const N: usize = 20;
    let no_spool = fast_config("127.0.0.1:1").build().expect("config");
    assert!(
        !no_spool.holds_when_refused(),
        "the default without a spool"
    );
    let dir = temp_path("refused-off");
    let sink = Sink::with_ending(Ending::Fail(RpcStatusCode::PERMISSION_DENIED));
    let events = Arc::new(Events::default());
    let config = fast_config(&sink.addr())
        .commit_every(10)
        .spool(&dir)
        .hold_when_refused(false)
        .event_handler(events.clone())
        .build()
        .expect("config");
    assert!(!config.holds_when_refused());
    let (sender, tx) = sender_with_pool(config, 64, 2);
    queue(&tx, 0, 0..N);
    let st = wait_stats(&sender, WAIT, "every payload dead-lettered", |s| {
        s.dead_lettered == N as u64 && s.spooled == 0
    });
    assert_ne!(st.state, ConnectionState::Refused, "{st:#?}");
    assert!(events.refusals().is_empty(), "{:?}", events.refusals());
    let dead = events.dead();
    assert_eq!(dead.len(), N, "{dead:?}");
    assert!(dead
        .iter()
        .all(|(_, c)| *c == Some(RpcStatusCode::PERMISSION_DENIED)));
    drop(tx);
    let done = sender.shutdown(Duration::from_secs(2));
    assert_eq!(done.report.left_in_spool, 0, "{:?}", done.report);
    assert_eq!(done.report.dead_lettered, N as u64, "{:?}", done.report);
    let _ = std::fs::remove_dir_all(&dir);
    assert_no_background_panic();
}

/// Only the three refusals are held: a collector that refuses every call with
/// `INVALID_ARGUMENT` (a payload-shaped status) has the payloads dead-lettered, holding
/// on or not.
#[test]
fn other_permanent_statuses_are_still_dead_lettered_while_holding() {
    watch_panics();
    const N: usize = 10;
    let sink = Sink::with_ending(Ending::Fail(RpcStatusCode::INVALID_ARGUMENT));
    let events = Arc::new(Events::default());
    let config = fast_config(&sink.addr())
        .commit_every(10)
        .hold_when_refused(true)
        .event_handler(events.clone())
        .build()
        .expect("config");
    let (sender, tx) = sender_with_pool(config, 64, 1);
    queue(&tx, 0, 0..N);
    let st = wait_stats(&sender, WAIT, "every payload dead-lettered", |s| {
        s.dead_lettered == N as u64
    });
    assert_ne!(st.state, ConnectionState::Refused, "{st:#?}");
    assert!(events.refusals().is_empty(), "{:?}", events.refusals());
    drop(tx);
    assert!(sender.close().undelivered.is_empty());
    assert_no_background_panic();
}
