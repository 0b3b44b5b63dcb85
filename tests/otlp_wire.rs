//! The OTLP wire (`Wire::OtlpLogs`, `LogsService/Export`) against the real grpcio sink,
//! which answers `Export` beside GoSight's stream (tests/support/sink.rs): what arrives,
//! how many calls are in flight, partial successes, `RetryInfo`, each status class, the
//! request cap, gzip, and the grpcio trap of an `OK` without a response message.
//! docs/otlp-wire-plan.md §6.2 has the semantics these tests pin down.
//!
//! A call carries up to 64 payloads, one `ResourceLogs` each; a payload over
//! `otlp_max_request_bytes` is split into parts sent as consecutive calls. Statuses that
//! say nothing about the payloads (CANCELLED, DEADLINE_EXCEEDED, UNAVAILABLE, and
//! RESOURCE_EXHAUSTED with a `RetryInfo`) re-send them; ABORTED, OUT_OF_RANGE and
//! DATA_LOSS may be the payloads (trial, with strikes); every other status is permanent
//! (trial: an empty `Export` as the probe, then bisection, as on GoSight).

mod support;

#[path = "support/random.rs"]
mod random;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use grpcio::{CallOption, ChannelBuilder, Client, EnvBuilder, Method};
use logsender::{
    otlp, Batching, Compression, ConfigBuilder, Level, LogEntry, LogPayload, LogSender,
    RpcStatusCode, Wire,
};
use random::{expected_back, random_payload, Rng};
use support::collect::{expected_ids, wait_stats, Collector, DeadLetter};
use support::helpers::{
    assert_at_least_once, assert_connects, assert_exactly_once, assert_no_background_panic,
    watch_panics, within,
};
use support::sink::{merge_parts, raw_method, Ending, Export, Sink};
use support::{fast_config_on, payload, queue, sender_with_pool};

const WAIT: Duration = Duration::from_secs(20);

/// A test-friendly config on the OTLP wire.
fn otlp_config(addr: &str) -> ConfigBuilder {
    fast_config_on(addr, Wire::OtlpLogs)
}

/// Asserts that every id of `wanted` travelled in a call the sink answered `OK`.
fn assert_acknowledged_by_sink(sink: &Sink, wanted: &[String]) {
    let ok: std::collections::HashSet<String> = sink.ok_ids().into_iter().collect();
    let missing: Vec<&String> = wanted.iter().filter(|id| !ok.contains(*id)).collect();
    assert!(
        missing.is_empty(),
        "acknowledged but never in a call the sink answered OK: {missing:?}"
    );
}

/// The `Export` calls that carried a payload (or part) with id `id`, in arrival order.
fn exports_of(sink: &Sink, id: &str) -> Vec<Export> {
    sink.exports()
        .into_iter()
        .filter(|e| e.ids.iter().any(|i| i == id))
        .collect()
}

// ---------------------------------------------------------------------------------
// 1. Everything arrives: the pool, entries and send_logs.
// ---------------------------------------------------------------------------------

/// Random payloads (every field of the model, through the wire-equivalence generator)
/// through a pool, entries through an `EntrySender` (GoSight frames transcoded at
/// intake), and `send_logs`: every payload arrives as sent (bar OTLP's documented
/// timestamp rules), every entry arrives, no call carries more than 64 payloads, and the
/// sender's report says everything was delivered.
#[test]
fn payloads_entries_and_send_logs_arrive_over_otlp() {
    watch_panics();
    let sink = Sink::start();
    let config = otlp_config(&sink.addr())
        .commit_timeout(Duration::from_secs(10))
        .build()
        .expect("config");
    let sender = LogSender::new(config).expect("sender");
    assert_connects(&sender, WAIT);

    // send_logs: the caller's thread starts the call; it never waits for it.
    let direct: Vec<LogPayload> = (0..20).map(|i| payload(3, i)).collect();
    for p in &direct {
        sender.send_logs(p).expect("send_logs while connected");
    }

    // The pool: random payloads, each small enough for one request (the split has its
    // own test), each with an id of its own.
    let (tx, rx) = crossbeam_channel::bounded(64);
    sender.start_worker_pool(rx, 2).expect("workers");
    let mut rng = Rng(0x071a_0001);
    let mut random = Vec::new();
    while random.len() < 200 {
        let mut p = LogPayload::try_from(random_payload(&mut rng, false)).expect("valid");
        p.host_id = format!("r-{}", random.len());
        let size = otlp::encode(&otlp::to_request(&p)).map_or(usize::MAX, |b| b.len());
        if size > 1 << 20 {
            continue;
        }
        random.push(p.clone());
        tx.send(p).expect("queue");
    }

    // Entries, batched by the sender under the template's identity.
    let mut template = payload(4, 0);
    template.host_id = "entries".into();
    template.logs.clear();
    let entries = sender
        .entry_sender(Batching::new(template).max_entries(25).workers(1))
        .expect("entry sender");
    let messages: Vec<String> = (0..500).map(|i| format!("entry {i} ✓")).collect();
    for m in &messages {
        entries
            .log(LogEntry::new(Level::Warning, m.clone()).with_field("n", m.len().to_string()))
            .expect("log");
    }

    let report = sender.flush(WAIT);
    assert_eq!(report.outstanding, 0, "{report:?} {:#?}", sender.stats());
    assert_eq!(report.entries_outstanding, 0, "{report:?}");
    drop(tx);
    drop(entries);
    let done = within(WAIT, "close", move || sender.close());
    assert!(done.undelivered.is_empty(), "{:?}", done.report);
    assert!(done.report.all_delivered(), "{:?}", done.report);
    let st = &done.stats;
    assert_eq!(st.acknowledged, st.enqueued, "{st:#?}");
    let random_entries: u64 = random.iter().map(|p| p.logs.len() as u64).sum();
    assert_eq!(
        st.entries_acknowledged,
        random_entries + 500 + 20 * 3,
        "{st:#?}"
    );

    sink.assert_spoke(Wire::OtlpLogs);
    assert_eq!(sink.bad_payloads(), 0);
    let got = sink.received();
    let of = |prefix: &str| -> Vec<LogPayload> {
        got.iter()
            .filter(|p| p.host_id.starts_with(prefix))
            .cloned()
            .collect()
    };
    let exactly = st.resent_after_fault == 0;
    for (sent, arrived) in [(&random, of("r-")), (&direct, of("3-"))] {
        let expected: Vec<LogPayload> = sent.iter().map(expected_back).collect();
        if exactly {
            assert_exactly_once(&expected, &arrived);
        } else {
            assert_at_least_once(&expected, &arrived);
        }
    }
    let mut arrived: Vec<String> = of("entries")
        .into_iter()
        .flat_map(|p| p.logs.into_iter().map(|e| e.message))
        .collect();
    arrived.sort();
    if !exactly {
        arrived.dedup();
    }
    let mut wanted = messages.clone();
    wanted.sort();
    assert_eq!(arrived, wanted, "the entries that arrived");

    let per_request = sink.resource_logs_per_request();
    assert!(
        per_request.iter().all(|n| *n <= 64),
        "a call carried more than 64 payloads: {per_request:?}"
    );
    let carried: usize = per_request.iter().sum();
    assert!(
        carried as u64 >= st.acknowledged,
        "{carried} ResourceLogs for {} payloads",
        st.acknowledged
    );
    assert_no_background_panic();
}

// ---------------------------------------------------------------------------------
// 2. Calls in flight are bounded by max_exports_in_flight.
// ---------------------------------------------------------------------------------

/// A collector that never answers: with `max_exports_in_flight(2)`, exactly two calls
/// are opened while 200 payloads wait (more than two calls' 64 each); released, the sink never held more than two at
/// once and everything is delivered.
#[test]
fn calls_in_flight_are_bounded() {
    watch_panics();
    let sink = Sink::with_ending(Ending::Stall);
    let config = otlp_config(&sink.addr())
        .max_exports_in_flight(2)
        .commit_timeout(Duration::from_secs(60))
        .build()
        .expect("config");
    let (sender, tx) = sender_with_pool(config, 64, 2);
    queue(&tx, 0, 0..200);
    assert!(
        sink.wait_calls(WAIT, |c| c.exports >= 2),
        "two calls never opened: {:?}",
        sink.calls()
    );
    // Time for a third call, if the bound let one through.
    std::thread::sleep(Duration::from_millis(500));
    let calls = sink.calls();
    assert_eq!(calls.exports, 2, "{calls:?}");
    let st = wait_stats(&sender, WAIT, "all 200 taken in", |s| s.unacked == 200);
    assert_eq!(st.acknowledged, 0, "{st:#?}");
    assert_eq!(sink.calls().exports, 2, "{:?}", sink.calls());

    sink.set_ending(Ending::OkNoMessage);
    sink.release();
    let report = sender.flush(WAIT);
    assert_eq!(report.outstanding, 0, "{:#?}", sender.stats());
    let st = sender.stats();
    assert_eq!(st.acknowledged, 200, "{st:#?}");
    assert_eq!(st.dead_lettered, 0, "{st:#?}");
    assert_acknowledged_by_sink(&sink, &expected_ids(0, 0..200));
    assert!(
        sink.max_exports_pending() <= 2,
        "the sink held {} calls at once",
        sink.max_exports_pending()
    );
    sink.assert_spoke(Wire::OtlpLogs);
    drop(tx);
    assert!(sender.close().undelivered.is_empty());
    assert_no_background_panic();
}

// ---------------------------------------------------------------------------------
// 3-4. Partial success.
// ---------------------------------------------------------------------------------

/// Ships 10 payloads (3 entries each) to `sink` with one worker; returns the sender's
/// final counters and report, and the sent payloads.
fn ship_ten(sink: &Sink, collector: &Arc<Collector>) -> (logsender::Shutdown, Vec<LogPayload>) {
    let config = otlp_config(&sink.addr())
        .event_handler(collector.clone())
        .build()
        .expect("config");
    let (sender, tx) = sender_with_pool(config, 64, 1);
    let sent = queue(&tx, 0, 0..10);
    let report = sender.flush(WAIT);
    assert_eq!(report.outstanding, 0, "{:#?}", sender.stats());
    drop(tx);
    let done = within(WAIT, "close", move || sender.close());
    assert!(done.undelivered.is_empty(), "{:?}", done.report);
    (done, sent)
}

/// A call answered `OK` with `partial_success { rejected_log_records: 3 }`: the three
/// records are counted rejected and dead-lettered (OTLP says not to retry them), the
/// handler hears the collector's message with the call's payloads, nothing is re-sent,
/// and the report says not everything was delivered.
#[test]
fn a_partial_success_dead_letters_the_rejected_records_and_resends_nothing() {
    watch_panics();
    let sink = Sink::with_ending(Ending::PartialSuccessOnce {
        rejected: 3,
        message: "3 records older than the retention",
    });
    let collector = Collector::new();
    let (done, sent) = ship_ten(&sink, &collector);
    let st = &done.stats;
    assert_eq!(st.entries_rejected, 3, "{st:#?}");
    assert_eq!(st.entries_dead_lettered, 3, "{st:#?}");
    assert_eq!(
        st.dead_lettered, 0,
        "payloads are not dead-lettered: {st:#?}"
    );
    assert_eq!(st.acknowledged, 10, "{st:#?}");
    assert_eq!(st.entries_acknowledged, 27, "{st:#?}");
    assert_eq!(st.retried, 0, "{st:#?}");
    assert_eq!(st.partial_success_warnings, 0, "{st:#?}");
    let report = done.report;
    assert_eq!(report.entries_dead_lettered, 3, "{report:?}");
    assert_eq!(report.dead_lettered, 0, "{report:?}");
    assert_eq!(report.acknowledged, 10, "{report:?}");
    assert!(!report.all_delivered(), "{report:?}");

    // Nothing re-sent: each payload arrived once, in calls answered once each.
    assert_eq!(sink.calls().partial, 1, "{:?}", sink.calls());
    let expected: Vec<LogPayload> = sent.iter().map(expected_back).collect();
    assert_exactly_once(&expected, &sink.received());
    let carried: usize = sink.resource_logs_per_request().iter().sum();
    assert_eq!(carried, 10, "{:?}", sink.exports());

    // The event: the collector's numbers and message, the call's payloads.
    let partial = collector.partial_successes();
    assert_eq!(partial.len(), 1, "{partial:?}");
    assert_eq!(partial[0].rejected, 3);
    assert_eq!(partial[0].message, "3 records older than the retention");
    let call = sink
        .exports()
        .into_iter()
        .find(|e| e.rejected == Some(3))
        .expect("the call answered with the partial success");
    let mut heard = partial[0].ids.clone();
    let mut carried = call.ids.clone();
    heard.sort();
    carried.sort();
    assert_eq!(heard, carried, "the event's payloads are the call's");
    assert!(collector.dead_letters().is_empty());
    sink.assert_spoke(Wire::OtlpLogs);
    assert_no_background_panic();
}

/// A partial success that rejects nothing but says something is a warning: counted,
/// everything delivered, nothing dead-lettered.
#[test]
fn a_partial_success_with_nothing_rejected_is_a_warning() {
    watch_panics();
    let sink = Sink::with_ending(Ending::PartialSuccessOnce {
        rejected: 0,
        message: "sampling: slow down",
    });
    let collector = Collector::new();
    let (done, _sent) = ship_ten(&sink, &collector);
    let st = &done.stats;
    assert_eq!(sink.calls().partial, 1, "{:?}", sink.calls());
    assert_eq!(st.partial_success_warnings, 1, "{st:#?}");
    assert_eq!(st.entries_rejected, 0, "{st:#?}");
    assert_eq!(st.entries_dead_lettered, 0, "{st:#?}");
    assert_eq!(st.acknowledged, 10, "{st:#?}");
    assert_eq!(st.entries_acknowledged, 30, "{st:#?}");
    assert!(done.report.all_delivered(), "{:?}", done.report);
    assert!(
        collector
            .partial_successes()
            .iter()
            .all(|p| p.rejected == 0),
        "{:?}",
        collector.partial_successes()
    );
    assert_no_background_panic();
}

// ---------------------------------------------------------------------------------
// 5-6. RESOURCE_EXHAUSTED: throttling with RetryInfo, permanent without.
// ---------------------------------------------------------------------------------

/// A call refused `RESOURCE_EXHAUSTED` with a `RetryInfo` of 800 ms (the collector
/// throttles): its payloads are re-sent no earlier than 800 ms after the refusal,
/// though the backoff is 20-200 ms. A lower bound on a wait, not a speed claim. No
/// probe, no bisection, nothing dead-lettered.
#[test]
fn retry_info_is_the_wait() {
    watch_panics();
    const DELAY: Duration = Duration::from_millis(800);
    let sink = Sink::start();
    sink.fail_next_retry_after(1, RpcStatusCode::RESOURCE_EXHAUSTED, DELAY);
    let collector = Collector::new();
    let config = otlp_config(&sink.addr())
        .event_handler(collector.clone())
        .reconnect_backoff(Duration::from_millis(20), Duration::from_millis(200))
        .build()
        .expect("config");
    let (sender, tx) = sender_with_pool(config, 64, 1);
    queue(&tx, 0, 0..10);
    assert_eq!(sender.flush(WAIT).outstanding, 0, "{:#?}", sender.stats());
    let st = sender.stats();
    assert_eq!(st.acknowledged, 10, "{st:#?}");
    assert_eq!(st.dead_lettered, 0, "{:?}", collector.dead_letters());

    let exports = sink.exports();
    let at = exports
        .iter()
        .position(|e| e.answer == Some(RpcStatusCode::RESOURCE_EXHAUSTED))
        .expect("the sink throttled a call");
    let throttled = &exports[at];
    let retry = exports[at + 1..]
        .iter()
        .find(|e| e.ids.iter().any(|id| throttled.ids.contains(id)))
        .expect("the throttled payloads were re-sent");
    let gap = retry.at.duration_since(throttled.at);
    assert!(
        gap >= DELAY,
        "re-sent {gap:?} after a RetryInfo of {DELAY:?}"
    );
    let calls = sink.calls();
    assert_eq!(calls.empty, 0, "a probe was sent: {calls:?}");
    assert_eq!(calls.failed, 1, "{calls:?}");
    assert_acknowledged_by_sink(&sink, &expected_ids(0, 0..10));
    drop(tx);
    assert!(sender.close().undelivered.is_empty());
    assert_no_background_panic();
}

/// `n` payloads of producer 0 over OTLP to a sink that answers every call carrying
/// `bad` with `code`; once a flush settled them all: exactly `bad` is dead-lettered,
/// with `code`, after a probe (an empty `Export`), and the others are acknowledged by
/// the sink. Returns the sink and the final stats.
fn one_payload_rejected(bad: &str, code: RpcStatusCode, n: usize) -> (Sink, logsender::Stats) {
    let sink = Sink::start();
    sink.reject_payload(bad, code);
    let collector = Collector::new();
    let config = otlp_config(&sink.addr())
        .event_handler(collector.clone())
        .build()
        .expect("config");
    let (sender, tx) = sender_with_pool(config, 64, 2);
    queue(&tx, 0, 0..n);
    assert_eq!(
        sender.flush(WAIT).outstanding,
        0,
        "{code:?}: {:#?}",
        sender.stats()
    );
    let st = sender.stats();
    drop(tx);
    assert!(sender.close().undelivered.is_empty(), "{code:?}");
    let healthy: Vec<String> = expected_ids(0, 0..n)
        .into_iter()
        .filter(|id| id != bad)
        .collect();
    assert_acknowledged_by_sink(&sink, &healthy);
    assert!(
        !sink.ok_ids().iter().any(|id| id == bad),
        "{code:?}: the sink never took {bad}"
    );
    assert_eq!(st.acknowledged, n as u64 - 1, "{code:?}: {st:#?}");
    assert_eq!(st.dead_lettered, 1, "{code:?}: {st:#?}");
    let dead: Vec<DeadLetter> = collector.dead_letters();
    assert_eq!(dead.len(), 1, "{code:?}: {dead:?}");
    assert_eq!(dead[0].id, bad, "{code:?}");
    assert_eq!(dead[0].code, Some(code), "{code:?}: {dead:?}");
    assert!(
        sink.calls().empty >= 1,
        "{code:?}: no probe before the verdict: {:?}",
        sink.calls()
    );
    sink.assert_spoke(Wire::OtlpLogs);
    (sink, st)
}

/// `RESOURCE_EXHAUSTED` without a `RetryInfo` is permanent on OTLP (the spec's retryable
/// set has it only with one): the payload that causes it is isolated and dead-lettered
/// with that code; the rest are delivered.
#[test]
fn resource_exhausted_without_retry_info_is_permanent() {
    watch_panics();
    one_payload_rejected("0-7", RpcStatusCode::RESOURCE_EXHAUSTED, 30);
    assert_no_background_panic();
}

// ---------------------------------------------------------------------------------
// 7. Each status class.
// ---------------------------------------------------------------------------------

/// The statuses OTLP calls retryable (RESOURCE_EXHAUSTED aside, above): one call failed
/// with each, and everything is delivered, nothing dead-lettered.
#[test]
fn each_retryable_status_delivers_everything() {
    watch_panics();
    for code in [
        RpcStatusCode::CANCELLED,
        RpcStatusCode::DEADLINE_EXCEEDED,
        RpcStatusCode::ABORTED,
        RpcStatusCode::OUT_OF_RANGE,
        RpcStatusCode::UNAVAILABLE,
        RpcStatusCode::DATA_LOSS,
    ] {
        let sink = Sink::start();
        sink.fail_next(1, code);
        let collector = Collector::new();
        let config = otlp_config(&sink.addr())
            .event_handler(collector.clone())
            .build()
            .expect("config");
        let (sender, tx) = sender_with_pool(config, 64, 1);
        queue(&tx, 0, 0..10);
        assert_eq!(
            sender.flush(WAIT).outstanding,
            0,
            "{code:?}: {:#?}",
            sender.stats()
        );
        let st = sender.stats();
        assert_eq!(st.acknowledged, 10, "{code:?}: {st:#?}");
        assert_eq!(
            st.dead_lettered,
            0,
            "{code:?}: {:?}",
            collector.dead_letters()
        );
        assert_eq!(sink.calls().failed, 1, "{code:?}: {:?}", sink.calls());
        assert!(st.epochs_failed >= 1, "{code:?}: {st:#?}");
        assert_acknowledged_by_sink(&sink, &expected_ids(0, 0..10));
        drop(tx);
        assert!(sender.close().undelivered.is_empty(), "{code:?}");
    }
    assert_no_background_panic();
}

/// The statuses that may be the payloads and are permanent on OTLP (INTERNAL and
/// UNKNOWN too, unlike GoSight): exactly the payload that causes each is dead-lettered
/// with that code; the others are delivered.
#[test]
fn each_permanent_status_dead_letters_only_its_payload() {
    watch_panics();
    for code in [
        RpcStatusCode::INVALID_ARGUMENT,
        RpcStatusCode::INTERNAL,
        RpcStatusCode::UNKNOWN,
        RpcStatusCode::FAILED_PRECONDITION,
        RpcStatusCode::NOT_FOUND,
        RpcStatusCode::ALREADY_EXISTS,
    ] {
        one_payload_rejected("0-5", code, 20);
    }
    assert_no_background_panic();
}

/// A collector that refuses every call, the probe too, with UNAUTHENTICATED or
/// PERMISSION_DENIED (holding off, the default without a spool): everything is
/// dead-lettered for good, with that code, after a rejected probe.
#[test]
fn a_collector_that_refuses_every_call_dead_letters_everything() {
    watch_panics();
    for code in [
        RpcStatusCode::UNAUTHENTICATED,
        RpcStatusCode::PERMISSION_DENIED,
    ] {
        let sink = Sink::with_ending(Ending::Fail(code));
        let collector = Collector::new();
        let config = otlp_config(&sink.addr())
            .event_handler(collector.clone())
            .build()
            .expect("config");
        let (sender, tx) = sender_with_pool(config, 64, 1);
        queue(&tx, 0, 0..10);
        wait_stats(&sender, WAIT, "every payload dead-lettered", |s| {
            s.dead_lettered == 10
        });
        let st = sender.stats();
        assert_eq!(st.acknowledged, 0, "{code:?}: {st:#?}");
        let dead = collector.dead_letters();
        assert_eq!(dead.len(), 10, "{code:?}: {dead:?}");
        assert!(
            dead.iter().all(|d| d.code == Some(code)),
            "{code:?}: {dead:?}"
        );
        let calls = sink.calls();
        assert!(calls.empty >= 1, "{code:?}: no probe: {calls:?}");
        assert_eq!(calls.ok, 0, "{code:?}: {calls:?}");
        drop(tx);
        let done = within(WAIT, "close", move || sender.close());
        assert!(done.undelivered.is_empty(), "{code:?}");
        assert_eq!(done.report.dead_lettered, 10, "{code:?}: {:?}", done.report);
        sink.assert_spoke(Wire::OtlpLogs);
    }
    assert_no_background_panic();
}

// ---------------------------------------------------------------------------------
// 8. The request cap.
// ---------------------------------------------------------------------------------

/// A payload of 300 entries of 1,000 characters (about 300 KB).
fn big(id: &str) -> LogPayload {
    let mut p = payload(0, 0);
    p.host_id = id.into();
    p.logs = (0..300)
        .map(|i| LogEntry::new(Level::Info, format!("{i:>1000}")).with_field("i", i.to_string()))
        .collect();
    p
}

/// With `otlp_max_request_bytes(64 KiB)`: a 300 KB payload goes as consecutive calls of
/// one part each, none over the cap, and arrives whole. A part failing (the third,
/// UNAVAILABLE) re-sends the payload from its first part: parts 1-2 arrive twice (what
/// at-least-once allows) and the payload is acknowledged once. An entry alone over the
/// cap is dead-lettered at intake as too large, its limit the cap.
#[test]
fn a_payload_over_the_request_cap_goes_in_parts() {
    watch_panics();
    const CAP: usize = 64 << 10;
    let sink = Sink::start();
    let collector = Collector::new();
    let config = otlp_config(&sink.addr())
        .otlp_max_request_bytes(CAP)
        .max_exports_in_flight(1)
        .event_handler(collector.clone())
        .build()
        .expect("config");
    let (sender, tx) = sender_with_pool(config, 16, 1);

    let first = big("big-0");
    let parts = otlp::split(&first, CAP).len();
    assert!(parts >= 5, "the test payload splits into {parts} parts");
    tx.send(first.clone()).expect("queue");
    assert_eq!(sender.flush(WAIT).outstanding, 0, "{:#?}", sender.stats());
    let sizes = sink.export_sizes();
    assert!(sizes.iter().all(|s| *s <= CAP), "over the cap: {sizes:?}");
    let calls = exports_of(&sink, "big-0");
    assert_eq!(calls.len(), parts, "{calls:?}");
    assert!(
        calls
            .iter()
            .all(|e| e.resource_logs == 1 && e.answer == Some(RpcStatusCode::OK)),
        "{calls:?}"
    );
    assert_eq!(merge_parts(&sink.received()), vec![expected_back(&first)]);
    assert_eq!(sender.stats().acknowledged, 1);

    // The third part fails once.
    let second = big("big-1");
    sink.fail_after(2, 1, RpcStatusCode::UNAVAILABLE, None);
    tx.send(second.clone()).expect("queue");
    assert_eq!(sender.flush(WAIT).outstanding, 0, "{:#?}", sender.stats());
    let calls = exports_of(&sink, "big-1");
    let answers: Vec<Option<RpcStatusCode>> = calls.iter().map(|e| e.answer).collect();
    let mut wanted = vec![
        Some(RpcStatusCode::OK),
        Some(RpcStatusCode::OK),
        Some(RpcStatusCode::UNAVAILABLE),
    ];
    wanted.extend(std::iter::repeat_n(Some(RpcStatusCode::OK), parts));
    assert_eq!(answers, wanted, "{calls:?}");
    let received: Vec<LogPayload> = sink
        .received()
        .into_iter()
        .filter(|p| p.host_id == "big-1")
        .collect();
    assert_eq!(received.len(), 3 + parts);
    assert_eq!(received[0], received[3], "part 1 twice");
    assert_eq!(received[1], received[4], "part 2 twice");
    assert_eq!(
        merge_parts(&received[3..]),
        vec![expected_back(&second)],
        "the re-sent parts make the payload"
    );
    let st = sender.stats();
    assert_eq!(st.acknowledged, 2, "{st:#?}");
    assert_eq!(st.entries_acknowledged, 600, "{st:#?}");
    assert_eq!(st.dead_lettered, 0, "{st:#?}");

    // An entry alone over the cap.
    let mut huge = payload(0, 1);
    huge.host_id = "huge-entry".into();
    huge.logs.truncate(1);
    huge.logs[0].message = "z".repeat(100_000);
    tx.send(huge).expect("queue");
    assert_eq!(sender.flush(WAIT).outstanding, 0, "{:#?}", sender.stats());
    let dead = collector.dead_letters();
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0].id, "huge-entry");
    let (size, limit) = dead[0].too_large.expect("dead-lettered as too large");
    assert_eq!(limit, CAP, "{dead:?}");
    assert!(size > CAP, "{dead:?}");
    assert!(exports_of(&sink, "huge-entry").is_empty());
    assert_eq!(sender.stats().dead_lettered, 1);
    drop(tx);
    assert!(sender.close().undelivered.is_empty());
    assert_no_background_panic();
}

// ---------------------------------------------------------------------------------
// 9. No gzip at the collector; both wires.
// ---------------------------------------------------------------------------------

both_wires! {
    /// A collector whose server accepts no compressed message, and a sender set to
    /// gzip: everything still arrives, over either wire, nothing dead-lettered.
    fn a_collector_without_gzip_gets_everything(wire: Wire) {
        watch_panics();
        let sink = Sink::without_gzip();
        let collector = Collector::new();
        let config = fast_config_on(&sink.addr(), wire)
            .compression(Compression::Gzip)
            .gzip_min_size(0)
            .event_handler(collector.clone())
            .build()
            .expect("config");
        let (sender, tx) = sender_with_pool(config, 64, 2);
        let sent = queue(&tx, 0, 0..30);
        let left = sender.flush(WAIT).outstanding;
        assert_eq!(left, 0, "{wire:?}: {:#?}", sender.stats());
        let st = sender.stats();
        assert_eq!(st.acknowledged, 30, "{wire:?}: {st:#?}");
        assert!(collector.dead_letters().is_empty(), "{:?}", collector.dead_letters());
        let expected: Vec<LogPayload> = sent.iter().map(expected_back).collect();
        assert_at_least_once(&expected, &sink.received());
        assert_acknowledged_by_sink(&sink, &expected_ids(0, 0..30));
        sink.assert_spoke(wire);
        drop(tx);
        assert!(sender.close().undelivered.is_empty());
        assert_no_background_panic();
    }
}

// ---------------------------------------------------------------------------------
// The grpcio trap: OK without a response message.
// ---------------------------------------------------------------------------------

/// `Export` as a naive client calls it: a unary method.
const NAIVE_EXPORT: Method<Vec<u8>, Vec<u8>> =
    raw_method(grpcio::MethodType::Unary, otlp::EXPORT_PATH);

/// Guards the premise of the trap test below: the sink's `OkNoResponse` really breaks
/// grpcio's unary receiver (it panics, or at least yields no response), while the
/// sink's ordinary `OK` (an empty `ExportLogsServiceResponse`) does not.
#[test]
fn premise_ok_without_a_response_breaks_a_naive_unary_receiver() {
    let call = |ending: Ending| {
        let sink = Sink::with_ending(ending);
        let addr = sink.addr();
        let sent = payload(0, 0);
        let bytes = otlp::encode(&otlp::to_request(&sent)).expect("encode");
        let outcome = std::thread::Builder::new()
            .name("naive-client".into())
            .spawn(move || {
                let env = Arc::new(
                    EnvBuilder::new()
                        .cq_count(1)
                        .name_prefix("naive-cq")
                        .build(),
                );
                let client = Client::new(ChannelBuilder::new(env).connect(&addr));
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    client.unary_call(&NAIVE_EXPORT, &bytes, CallOption::default())
                }))
            })
            .expect("spawn")
            .join()
            .expect("naive client thread");
        assert!(sink.wait_for(1, WAIT));
        assert!(sink.wait_calls(WAIT, |c| c.ok == 1 && c.exports == 1));
        assert_eq!(sink.received(), [sent]);
        outcome
    };
    match call(Ending::OkNoMessage) {
        Ok(Ok(response)) => assert!(response.is_empty(), "{response:?}"),
        other => panic!("an OK with an empty response failed the naive client: {other:?}"),
    }
    match call(Ending::OkNoResponse) {
        Err(_) => {} // the panic of grpcio 0.13's ClientUnaryReceiver
        Ok(Err(_)) => {}
        Ok(Ok(response)) => {
            panic!("grpcio returned a response ({response:?}); the trap is gone")
        }
    }
}

/// A collector that answers `Export` with status `OK` and no response message: the
/// sender drives `Export` as server streaming, so nothing panics and everything is
/// delivered, exactly once.
#[test]
fn otlp_ok_without_a_response_message_is_delivered_not_a_panic() {
    watch_panics();
    let sink = Sink::with_ending(Ending::OkNoResponse);
    let config = otlp_config(&sink.addr()).build().expect("config");
    let sender = LogSender::new(config).expect("sender");
    assert_connects(&sender, WAIT);
    let mut sent: Vec<LogPayload> = (0..20).map(|i| payload(1, i)).collect();
    for p in &sent {
        sender.send_logs(p).expect("send_logs");
    }
    let (tx, rx) = crossbeam_channel::bounded(200);
    sender.start_worker_pool(rx, 2).expect("workers");
    for i in 0..200 {
        let p = payload(2, i);
        tx.send(p.clone()).expect("queue");
        sent.push(p);
    }
    assert_eq!(sender.flush(WAIT).outstanding, 0, "{:#?}", sender.stats());
    let st = sender.stats();
    assert_eq!(st.acknowledged, 220, "{st:#?}");
    assert_eq!(
        st.epochs_failed, 0,
        "an OK must not count as a failure: {st:#?}"
    );
    assert_eq!(st.retried, 0, "{st:#?}");
    let calls = sink.calls();
    assert!(calls.ok >= 1 && calls.failed == 0, "{calls:?}");
    sink.assert_spoke(Wire::OtlpLogs);
    drop(tx);
    let done = within(WAIT, "close", move || sender.close());
    assert!(done.undelivered.is_empty());
    assert!(done.report.all_delivered(), "{:?}", done.report);
    let expected: Vec<LogPayload> = sent.iter().map(expected_back).collect();
    assert_exactly_once(&expected, &sink.received());
    assert_no_background_panic();
}

// ---------------------------------------------------------------------------------
// The sink itself (runs without the wire): its Export endings, through a raw client.
// ---------------------------------------------------------------------------------

/// `Export` as logsender drives it: server streaming, so an OK without a message ends
/// the stream instead of panicking.
const RAW_EXPORT: Method<Vec<u8>, Vec<u8>> =
    raw_method(grpcio::MethodType::ServerStreaming, otlp::EXPORT_PATH);

/// One `Export` of `request` through a raw server-streaming call: the responses, or the
/// failure status.
fn raw_export(addr: &str, request: &[u8]) -> Result<Vec<Vec<u8>>, grpcio::RpcStatus> {
    use futures_util::TryStreamExt;
    let env = Arc::new(EnvBuilder::new().cq_count(1).name_prefix("raw-cq").build());
    let client = Client::new(ChannelBuilder::new(env).connect(addr));
    let call = client
        .server_streaming(&RAW_EXPORT, &request.to_vec(), CallOption::default())
        .expect("start the call");
    futures_executor::block_on(call.try_collect::<Vec<_>>()).map_err(|e| match e {
        grpcio::Error::RpcFailure(status) => status,
        other => panic!("not a status: {other:?}"),
    })
}

/// The sink's `Export` endings as a client sees them, and its records: payloads as
/// `otlp::decode` reads them, sizes, `ResourceLogs` per request, probes, partial
/// successes, and a `RetryInfo` whose bytes read back.
#[test]
fn the_sink_answers_export_as_told() {
    use logsender::otlp::pb::logs_service::ExportLogsServiceResponse;
    use protobuf::Message;
    let sink = Sink::start();
    let addr = sink.addr();
    let payloads: Vec<LogPayload> = (0..3).map(|i| payload(0, i)).collect();
    let request: Vec<u8> = payloads
        .iter()
        .flat_map(|p| otlp::encode(&otlp::to_request(p)).expect("encode"))
        .collect();

    // OK: one empty response message; three ResourceLogs in one request.
    assert_eq!(
        raw_export(&addr, &request).expect("ok"),
        vec![Vec::<u8>::new()]
    );
    assert_eq!(sink.received(), payloads);
    assert_eq!(sink.resource_logs_per_request(), [3]);
    assert_eq!(sink.export_sizes(), [request.len()]);
    assert_eq!(sink.ok_ids(), expected_ids(0, 0..3));

    // A probe: an empty request.
    assert!(raw_export(&addr, &[]).is_ok());
    assert_eq!(sink.calls().empty, 1);

    // No response message at all.
    sink.set_ending(Ending::OkNoResponse);
    assert_eq!(
        raw_export(&addr, &request).expect("ok"),
        Vec::<Vec<u8>>::new()
    );

    // A partial success, once.
    sink.set_ending(Ending::PartialSuccessOnce {
        rejected: 2,
        message: "two too old",
    });
    let answer = raw_export(&addr, &request).expect("partial success is OK");
    let response = ExportLogsServiceResponse::parse_from_bytes(&answer[0]).expect("a response");
    assert_eq!(response.partial_success.rejected_log_records, 2);
    assert_eq!(response.partial_success.error_message, "two too old");
    assert_eq!(
        raw_export(&addr, &request).expect("ok"),
        vec![Vec::<u8>::new()]
    );
    assert_eq!(sink.calls().partial, 1);

    // Throttled with a RetryInfo, once; then a payload rejected; then fail_after.
    sink.fail_next_retry_after(1, RpcStatusCode::RESOURCE_EXHAUSTED, Duration::new(2, 500));
    let status = raw_export(&addr, &request).expect_err("throttled");
    assert_eq!(status.code(), RpcStatusCode::RESOURCE_EXHAUSTED);
    assert_eq!(
        support::sink::retry_delay_of(status.details()),
        Some(Duration::new(2, 500))
    );
    assert!(raw_export(&addr, &request).is_ok());
    sink.reject_payload("0-1", RpcStatusCode::INVALID_ARGUMENT);
    let status = raw_export(&addr, &request).expect_err("rejected");
    assert_eq!(status.code(), RpcStatusCode::INVALID_ARGUMENT);
    assert!(status.details().is_empty());
    assert!(raw_export(&addr, &[]).is_ok(), "a probe is not rejected");
    sink.reject_payload("none", RpcStatusCode::INVALID_ARGUMENT);
    sink.fail_after(1, 1, RpcStatusCode::DATA_LOSS, None);
    assert!(raw_export(&addr, &request).is_ok());
    assert!(raw_export(&addr, &[]).is_ok(), "a probe does not count");
    let status = raw_export(&addr, &request).expect_err("the second fails");
    assert_eq!(status.code(), RpcStatusCode::DATA_LOSS);
    assert!(raw_export(&addr, &request).is_ok());

    let answers: Vec<Option<RpcStatusCode>> = sink.exports().iter().map(|e| e.answer).collect();
    use RpcStatusCode as C;
    assert_eq!(
        answers,
        [
            C::OK,
            C::OK,
            C::OK,
            C::OK,
            C::OK,
            C::RESOURCE_EXHAUSTED,
            C::OK,
            C::INVALID_ARGUMENT
        ]
        .into_iter()
        .chain([C::OK, C::OK, C::OK, C::DATA_LOSS, C::OK])
        .map(Some)
        .collect::<Vec<_>>()
    );
    let calls = sink.calls();
    assert_eq!(
        (calls.exports, calls.opened, calls.failed),
        (13, 13, 3),
        "{calls:?}"
    );
    assert_eq!(sink.max_exports_pending(), 1);
    assert_eq!(sink.bad_payloads(), 0);

    // Stall reads the call (records it) and parks it until released (the client sees
    // it cancelled).
    let before = sink.received().len();
    sink.set_ending(Ending::Stall);
    let stalled = std::thread::spawn({
        let addr = addr.clone();
        let request = request.clone();
        move || raw_export(&addr, &request)
    });
    assert!(sink.wait_calls(WAIT, |c| c.exports == 14));
    std::thread::sleep(Duration::from_millis(100));
    assert!(!stalled.is_finished(), "a stalled call was answered");
    assert_eq!(sink.received().len(), before + 3);
    assert_eq!(sink.max_exports_pending(), 1);
    sink.release();
    let status = stalled.join().expect("client").expect_err("cancelled");
    assert_eq!(status.code(), RpcStatusCode::CANCELLED);
    assert_eq!(sink.exports().last().map(|e| e.answer), Some(None));

    // The helper merges a split payload's parts.
    let whole = big("split");
    let parts: Vec<LogPayload> = otlp::split(&whole, 64 << 10)
        .into_iter()
        .flat_map(|c| otlp::from_request(c.request))
        .collect();
    assert!(parts.len() > 1);
    assert_eq!(merge_parts(&parts), vec![expected_back(&whole)]);
    let counts: HashMap<String, usize> = parts.iter().fold(HashMap::new(), |mut m, p| {
        *m.entry(p.host_id.clone()).or_default() += 1;
        m
    });
    assert_eq!(counts.len(), 1);
}

// ---------------------------------------------------------------------------------
// 10. A collector gone while no call is in flight.
// ---------------------------------------------------------------------------------

/// Counts disconnections.
#[derive(Default)]
struct Disconnects(std::sync::atomic::AtomicU64);

impl logsender::EventHandler for Disconnects {
    fn on_disconnected(&self, _: &logsender::Error) {
        self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }
}

/// Between calls nothing is in flight to fail, yet a collector that goes away is
/// noticed from the channel's state: the state leaves `Connected`, `on_disconnected`
/// and `last_error` say so, and once the collector is back, what was sent meanwhile
/// is delivered.
#[test]
fn a_collector_gone_between_calls_is_noticed() {
    watch_panics();
    let mut sink = Sink::start();
    let events = Arc::new(Disconnects::default());
    let config = otlp_config(&sink.addr())
        .event_handler(events.clone())
        .build()
        .expect("config");
    let (sender, tx) = sender_with_pool(config, 64, 1);
    queue(&tx, 0, 0..5);
    wait_stats(&sender, WAIT, "the first payloads acknowledged", |s| {
        s.acknowledged == 5 && s.state == logsender::ConnectionState::Connected
    });
    // Idle: no call in flight. The collector goes away.
    sink.stop();
    wait_stats(&sender, WAIT, "the state to leave Connected", |s| {
        s.state != logsender::ConnectionState::Connected
    });
    assert_eq!(
        events.0.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "one disconnection heard"
    );
    let st = sender.stats();
    assert!(st.last_error.is_some(), "{st:#?}");
    assert_eq!(
        st.epochs_failed, 0,
        "no call was in flight to fail: {st:#?}"
    );
    queue(&tx, 1, 0..5);
    sink.restart();
    let report = sender.flush(WAIT);
    assert!(report.all_delivered(), "{report:?}");
    assert_acknowledged_by_sink(&sink, &expected_ids(1, 0..5));
    drop(tx);
    assert!(sender.close().undelivered.is_empty());
    assert_no_background_panic();
}
