//! The fault matrix: collectors that fail in other ways than dying, and the promise
//! logsender keeps against each. One test per row, against real grpcio sinks on
//! loopback. Acknowledged payloads are checked against what the sink read in calls it
//! answered `OK` after reading them to the end (`Sink::ok_ids`), not against what it
//! read at some point.
//!
//! The rows that apply to both wires run on both (`both_wires!`: `row..::gosight` and
//! `row..::otlp`), GoSight's `SubmitStream` exactly as before; where OTLP's `Export`
//! means something else (README, "Two wires": unary calls, no early OK, INTERNAL and
//! UNKNOWN permanent, RESOURCE_EXHAUSTED retried only with a `RetryInfo`, `send_logs`
//! not waiting for the collector, a stall bounded by each call's deadline
//! `commit_timeout`, no at-most-once), the OTLP case says what it checks instead.

mod support;

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use logsender::{
    Compression, Config, ConnectionState, DeadLetterEvent, DeliveryMode, DroppedEvent, Error,
    EventHandler, LogPayload, LogSender, OverflowPolicy, RpcStatusCode, Wire,
};
use support::collect::{expected_ids, ids, wait_stats, wait_writes_blocked, Collector};
use support::helpers::{
    assert_no_background_panic, background_panics, free_port, unserved_addr, wait_until,
    watch_panics, within,
};
use support::proxy::Proxy;
use support::sink::{Ending, Sink};
use support::{fast_config, fast_config_on, payload, queue, sender_with_pool, wide_payload};

const WAIT: Duration = Duration::from_secs(20);
/// The slack allowed on a deadline: generous, since CI and the torture loop run these
/// tests on two loaded cores.
const SLACK: Duration = Duration::from_millis(400);

fn unique(ids: &[String]) -> HashSet<String> {
    ids.iter().cloned().collect()
}

/// Asserts that every id of `wanted` travelled in a call the sink answered `OK` after
/// reading it to the end.
fn assert_acknowledged_by_sink(sink: &Sink, wanted: &[String]) {
    let ok = unique(&sink.ok_ids());
    let missing: Vec<&String> = wanted.iter().filter(|id| !ok.contains(*id)).collect();
    assert!(
        missing.is_empty(),
        "acknowledged but never in a call the sink answered OK: {missing:?}"
    );
}

// ---------------------------------------------------------------------------------
// Row 1: a poison payload is isolated and dead-lettered; delivery never stops.
// ---------------------------------------------------------------------------------

both_wires! {
    /// 40 payloads, the one at position 20 larger than the collector's 4 MiB receive
    /// limit: the other 39 are acknowledged, the poison one is dead-lettered with the
    /// collector's `RESOURCE_EXHAUSTED`, and later payloads still flow. On OTLP the
    /// request cap is raised to 8 MiB, so that the collector's limit is what the call
    /// meets (under the default 4 MiB cap logsender refuses such an entry itself, as too
    /// large: tests/otlp_wire.rs); the receive limit's `RESOURCE_EXHAUSTED` carries no
    /// `RetryInfo`, so it is permanent there, and the payload is isolated the same way.
    ///
    /// A rejection of the payload alone counts only once the collector committed other
    /// data since the call that first carried it opened (otherwise a collector that
    /// takes no data would look the same: `storage_outage`). On OTLP, with two workers,
    /// the other 39 can all be committed before the slow-to-encode poison payload's
    /// call opens, and with nothing sent after it, it is re-sent forever (seen once in
    /// three runs); one worker keeps intake order, so payloads 21-39 go after it.
    fn row01_an_oversized_payload_is_isolated_and_the_rest_delivered(wire: Wire) {
        watch_panics();
        let sink = Sink::with_receive_limit(4 << 20);
        let collector = Collector::new();
        let mut config = fast_config_on(&sink.addr(), wire)
            .event_handler(collector.clone())
            .commit_interval(Duration::from_millis(200));
        if wire == Wire::OtlpLogs {
            config = config.otlp_max_request_bytes(8 << 20);
        }
        let workers = if wire == Wire::GoSightStream { 2 } else { 1 };
        let (sender, tx) = sender_with_pool(config.build().expect("config"), 64, workers);
        for seq in 0..40 {
            let mut p = payload(0, seq);
            if seq == 20 {
                p.logs[0].message = "x".repeat(5 << 20);
            }
            tx.send(p).expect("queue");
        }
        let left = sender.flush(WAIT).outstanding;
        let st = sender.stats();
        assert_eq!(left, 0, "flush left {left}: {st:#?}");
        assert_eq!(st.acknowledged, 39, "{st:#?}");
        assert_eq!(st.dead_lettered, 1, "{st:#?}");
        let dead = collector.dead_letters();
        assert_eq!(dead.len(), 1, "{dead:?}");
        assert_eq!(dead[0].id, "0-20");
        assert_eq!(
            dead[0].code,
            Some(RpcStatusCode::RESOURCE_EXHAUSTED),
            "{dead:?}"
        );
        let healthy: Vec<String> = expected_ids(0, 0..40)
            .into_iter()
            .filter(|id| id != "0-20")
            .collect();
        assert_acknowledged_by_sink(&sink, &healthy);
        assert!(!unique(&sink.ok_ids()).contains("0-20"));

        // Delivery goes on.
        queue(&tx, 1, 0..10);
        assert_eq!(sender.flush(WAIT).outstanding, 0);
        assert_acknowledged_by_sink(&sink, &expected_ids(1, 0..10));
        sink.assert_spoke(wire);
        drop(tx);
        assert!(sender.close().undelivered.is_empty());
        assert_no_background_panic();
    }
}

/// `n` payloads of producer 0 on `wire` to a sink that answers every call carrying
/// `bad` with `code`; returns once a flush settled them all: the sink, the dead letters
/// and the stats.
fn one_payload_rejected(
    wire: Wire,
    bad: &str,
    code: RpcStatusCode,
    n: usize,
) -> (Sink, Vec<support::collect::DeadLetter>, logsender::Stats) {
    let sink = Sink::start();
    sink.reject_payload(bad, code);
    let collector = Collector::new();
    let config = fast_config_on(&sink.addr(), wire)
        .event_handler(collector.clone())
        .commit_interval(Duration::from_millis(200))
        .build()
        .expect("config");
    let (sender, tx) = sender_with_pool(config, 64, 2);
    queue(&tx, 0, 0..n);
    assert_eq!(sender.flush(WAIT).outstanding, 0, "{:#?}", sender.stats());
    let st = sender.stats();
    drop(tx);
    assert!(sender.close().undelivered.is_empty());
    let healthy: Vec<String> = expected_ids(0, 0..n)
        .into_iter()
        .filter(|id| id != bad)
        .collect();
    assert_acknowledged_by_sink(&sink, &healthy);
    assert_eq!(st.acknowledged, n as u64 - 1, "{st:#?}");
    let dead = collector.dead_letters();
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0].id, bad);
    assert_eq!(dead[0].code, Some(code));
    sink.assert_spoke(wire);
    (sink, dead, st)
}

both_wires! {
    /// A collector whose handler rejects one particular payload with a permanent status
    /// (here `INVALID_ARGUMENT`, on the whole call that carried it): only that payload is
    /// dead-lettered, with that status; the others around it are acknowledged.
    fn row01_a_payload_rejected_for_good_is_isolated(wire: Wire) {
        watch_panics();
        let (sink, _dead, st) =
            one_payload_rejected(wire, "0-7", RpcStatusCode::INVALID_ARGUMENT, 30);
        assert_eq!(st.dead_lettered, 1, "{st:#?}");
        assert!(sink.calls().empty >= 1, "no probe: {:?}", sink.calls());
        assert_no_background_panic();
    }
}

both_wires! {
    /// A real overload: every call, empty ones too, is refused. Nothing is
    /// dead-lettered; the sender backs off and retries, and delivers everything once the
    /// collector recovers. On GoSight the refusal is a plain `RESOURCE_EXHAUSTED`, and
    /// the probe (an empty call, refused too) tells the overload from a poison payload.
    /// On OTLP only a `RESOURCE_EXHAUSTED` with a `RetryInfo` is a retryable overload
    /// (the plain one is permanent: next test); it says nothing about the payloads, so
    /// there is no probe at all.
    fn row01_a_real_overload_is_retried_not_bisected_into_dead_letters(wire: Wire) {
        watch_panics();
        let sink = Sink::with_ending(match wire {
            Wire::GoSightStream => Ending::Fail(RpcStatusCode::RESOURCE_EXHAUSTED),
            _ => Ending::FailRetryAfter(
                RpcStatusCode::RESOURCE_EXHAUSTED,
                Duration::from_millis(100),
            ),
        });
        let collector = Collector::new();
        let config = fast_config_on(&sink.addr(), wire)
            .event_handler(collector.clone())
            .reconnect_backoff(Duration::from_millis(50), Duration::from_millis(200))
            .build()
            .expect("config");
        let (sender, tx) = sender_with_pool(config, 64, 2);
        queue(&tx, 0, 0..30);
        wait_stats(&sender, WAIT, "several refused epochs", |s| {
            s.epochs_failed >= 4
        });
        let calls = sink.calls();
        match wire {
            Wire::GoSightStream => assert!(calls.empty >= 1, "no probe was ever sent: {calls:?}"),
            _ => assert_eq!(calls.empty, 0, "a throttled call was probed: {calls:?}"),
        }
        std::thread::sleep(Duration::from_millis(500));
        let st = sender.stats();
        assert_eq!(st.dead_lettered, 0, "{st:#?}");
        assert_eq!(st.acknowledged, 0, "{st:#?}");
        assert!(collector.dead_letters().is_empty());

        sink.set_ending(Ending::OkNoMessage);
        assert_eq!(sender.flush(WAIT).outstanding, 0, "{:#?}", sender.stats());
        assert_eq!(sender.stats().acknowledged, 30);
        assert_acknowledged_by_sink(&sink, &expected_ids(0, 0..30));
        if wire == Wire::OtlpLogs {
            assert_eq!(sink.calls().empty, 0, "a probe: {:?}", sink.calls());
        }
        sink.assert_spoke(wire);
        drop(tx);
        assert!(sender.close().undelivered.is_empty());
        assert_no_background_panic();
    }
}

/// OTLP only: a collector that refuses every call, the empty probe too, with a plain
/// `RESOURCE_EXHAUSTED` (no `RetryInfo`) is not retried forever. OTLP's specification
/// makes that status permanent without a `RetryInfo`, so each rejected call goes on
/// trial, its probe is refused with a permanent status too, and its payloads are
/// dead-lettered with the collector's status (`Supervisor::verdict`: both statuses
/// permanent). Nothing is acknowledged, nothing is left to flush. (On GoSight the same
/// collector is the retried overload above.)
#[test]
fn row01_otlp_a_plain_resource_exhausted_on_every_call_dead_letters_after_the_probe() {
    watch_panics();
    let sink = Sink::with_ending(Ending::Fail(RpcStatusCode::RESOURCE_EXHAUSTED));
    let collector = Collector::new();
    let config = fast_config_on(&sink.addr(), Wire::OtlpLogs)
        .event_handler(collector.clone())
        .reconnect_backoff(Duration::from_millis(50), Duration::from_millis(200))
        .build()
        .expect("config");
    let (sender, tx) = sender_with_pool(config, 64, 2);
    queue(&tx, 0, 0..30);
    assert_eq!(sender.flush(WAIT).outstanding, 0, "{:#?}", sender.stats());
    let st = sender.stats();
    assert_eq!(st.dead_lettered, 30, "{st:#?}");
    assert_eq!(st.acknowledged, 0, "{st:#?}");
    let dead = collector.dead_letters();
    assert_eq!(
        dead.iter().map(|d| d.id.clone()).collect::<HashSet<_>>(),
        unique(&expected_ids(0, 0..30)),
        "{dead:?}"
    );
    assert!(
        dead.iter()
            .all(|d| d.code == Some(RpcStatusCode::RESOURCE_EXHAUSTED)),
        "{dead:?}"
    );
    let calls = sink.calls();
    assert!(calls.empty >= 1, "dead-lettered without a probe: {calls:?}");
    assert_eq!(calls.ok, 0, "{calls:?}");
    sink.assert_spoke(Wire::OtlpLogs);
    drop(tx);
    let done = within(WAIT, "close", move || sender.close());
    assert!(done.undelivered.is_empty());
    assert_eq!(done.report.dead_lettered, 30, "{:?}", done.report);
    assert_no_background_panic();
}

/// A collector that takes calls but no data (its storage is down: every call that
/// carries a payload fails, empty ones succeed) is not mistaken for a poison payload:
/// nothing is dead-lettered, not even for a permanent-looking status, and everything
/// is delivered once it takes data again. The same on both wires: the ledger counts a
/// rejection against a payload only once other data was committed since.
fn storage_outage(wire: Wire, code: RpcStatusCode) {
    watch_panics();
    let sink = Sink::start();
    sink.fail_next(u64::MAX, code);
    let collector = Collector::new();
    let config = fast_config_on(&sink.addr(), wire)
        .event_handler(collector.clone())
        .reconnect_backoff(Duration::from_millis(20), Duration::from_millis(100))
        .build()
        .expect("config");
    let (sender, tx) = sender_with_pool(config, 64, 2);
    queue(&tx, 0, 0..30);
    wait_stats(&sender, WAIT, "many rejected epochs", |s| {
        s.epochs_failed >= 10
    });
    std::thread::sleep(Duration::from_millis(500));
    let st = sender.stats();
    assert!(sink.calls().empty >= 5, "no probes: {:?}", sink.calls());
    assert_eq!(st.dead_lettered, 0, "{:?}", collector.dead_letters());
    assert_eq!(st.acknowledged, 0, "{st:#?}");

    sink.fail_next(0, code);
    assert_eq!(sender.flush(WAIT).outstanding, 0, "{:#?}", sender.stats());
    assert_eq!(sender.stats().acknowledged, 30);
    assert_eq!(sender.stats().dead_lettered, 0);
    assert_acknowledged_by_sink(&sink, &expected_ids(0, 0..30));
    sink.assert_spoke(wire);
    drop(tx);
    assert!(sender.close().undelivered.is_empty());
    assert_no_background_panic();
}

both_wires! {
    /// `INTERNAL` (retryable on GoSight, permanent on OTLP).
    fn row01_a_collector_that_takes_no_data_is_not_mistaken_for_poison(wire: Wire) {
        storage_outage(wire, RpcStatusCode::INTERNAL);
    }
}

both_wires! {
    /// `FAILED_PRECONDITION` (permanent on both).
    fn row01_a_collector_that_takes_no_data_for_good_is_not_mistaken_for_poison(wire: Wire) {
        storage_outage(wire, RpcStatusCode::FAILED_PRECONDITION);
    }
}

// ---------------------------------------------------------------------------------
// Row 2: an OK that arrives before our half-close acknowledges nothing.
// ---------------------------------------------------------------------------------

/// Every call is answered `OK` after 5 of its 20+ payloads were read, long before
/// logsender half-closes it: nothing is acknowledged, everything is re-sent, and once
/// the collector reads to the end, everything is acknowledged. (The interleaving where
/// the OK and logsender's half-close cross is forced in `tests/fault_races.rs`.)
///
/// GoSight only: an OTLP `Export` is unary, its request whole before the collector can
/// answer, so there is no `OK` before the end to misread.
#[test]
fn row02_an_early_ok_acknowledges_nothing() {
    watch_panics();
    let sink = Sink::with_ending(Ending::EarlyOk(5));
    let config = fast_config(&sink.addr())
        .commit_interval(Duration::from_secs(30))
        .build()
        .expect("config");
    let (sender, tx) = sender_with_pool(config, 64, 1);
    queue(&tx, 0, 0..50);
    assert!(
        sink.wait_calls(WAIT, |c| c.early_ok >= 3),
        "the sink never answered early: {:?}",
        sink.calls()
    );
    // The sender learns of each early end a moment after the sink answered it.
    let st = wait_stats(&sender, WAIT, "three early-ended epochs failed", |s| {
        s.epochs_failed >= 3
    });
    assert_eq!(
        st.acknowledged, 0,
        "an OK before the half-close acknowledged payloads: {st:#?}"
    );
    assert_eq!(st.dead_lettered, 0, "{st:#?}");
    assert!(sink.ok_ids().is_empty());

    sink.set_ending(Ending::OkNoMessage);
    assert_eq!(sender.flush(WAIT).outstanding, 0, "{:#?}", sender.stats());
    assert_eq!(sender.stats().acknowledged, 50);
    assert_acknowledged_by_sink(&sink, &expected_ids(0, 0..50));
    drop(tx);
    assert!(sender.close().undelivered.is_empty());
    assert_no_background_panic();
}

// ---------------------------------------------------------------------------------
// Row 4: a slow collector is not mistaken for a stalled one.
// ---------------------------------------------------------------------------------

both_wires! {
    /// On GoSight the collector reads one message every 20 ms: each write makes
    /// progress, so the 500 ms write watchdog must not cancel it. On OTLP a stalled
    /// collector is bounded by each call's deadline (`commit_timeout`, 10 s), not by
    /// `write_timeout`: the collector answers each call 700 ms after it arrived, longer
    /// than the 500 ms `write_timeout`, and no call may fail for it.
    fn row04_a_slow_collector_gets_everything(wire: Wire) {
        watch_panics();
        let sink = Sink::with_ending(Ending::SlowReads(match wire {
            Wire::GoSightStream => Duration::from_millis(20),
            _ => Duration::from_millis(700),
        }));
        let config = fast_config_on(&sink.addr(), wire)
            .write_timeout(Duration::from_millis(500))
            .commit_interval(Duration::from_millis(500))
            .commit_timeout(Duration::from_secs(10))
            .build()
            .expect("config");
        let (sender, tx) = sender_with_pool(config, 128, 2);
        let sent: Vec<LogPayload> = (0..60)
            .map(|seq| {
                let mut p = payload(0, seq);
                p.logs[0].message = format!("{seq:06}").repeat(100_000 / 6);
                tx.send(p.clone()).expect("queue");
                p
            })
            .collect();
        assert_eq!(
            sender.flush(Duration::from_secs(60)).outstanding,
            0,
            "{:#?}",
            sender.stats()
        );
        let st = sender.stats();
        assert_eq!(st.acknowledged, 60, "{st:#?}");
        assert_eq!(
            st.epochs_failed, 0,
            "a call that was making progress was cancelled: {st:#?}"
        );
        assert_acknowledged_by_sink(&sink, &ids(&sent));
        sink.assert_spoke(wire);
        drop(tx);
        assert!(sender.close().undelivered.is_empty());
        assert_no_background_panic();
    }
}

// ---------------------------------------------------------------------------------
// Row 5: flush is exact.
// ---------------------------------------------------------------------------------

both_wires! {
    /// `flush` returns 0 only once everything queued before it is acknowledged, while
    /// another thread's `send_logs` calls keep failing (each one used to consume a number
    /// the flush counted on). On OTLP the request cap follows the 64 KiB message limit
    /// down (its default is 4 MiB or the message limit, if that is less), and the big
    /// payload's 100 KiB entry is too large for it.
    fn row05_flush_is_exact_with_failing_send_logs_alongside(wire: Wire) {
        watch_panics();
        let sink = Sink::start();
        let config = fast_config_on(&sink.addr(), wire).max_message_size(64 << 10);
        let sender = Arc::new(LogSender::new(config.build().expect("config")).expect("sender"));
        let (tx, rx) = crossbeam_channel::bounded(4000);
        sender.start_worker_pool(rx, 1).expect("workers");
        let before = queue(&tx, 0, 0..2000);
        let failing = {
            let sender = sender.clone();
            std::thread::spawn(move || {
                let mut big = payload(9, 0);
                big.logs[0].message = "y".repeat(100 << 10);
                let mut failures = 0u64;
                let end = Instant::now() + Duration::from_millis(1500);
                while Instant::now() < end {
                    if sender.send_logs(&big).is_err() {
                        failures += 1;
                    }
                }
                failures
            })
        };
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(sender.flush(WAIT).outstanding, 0);
        let acked = unique(&sink.ok_ids());
        let missing: Vec<String> = ids(&before)
            .into_iter()
            .filter(|id| !acked.contains(id))
            .collect();
        assert!(
            missing.is_empty(),
            "flush returned 0 with {} payloads queued before it not acknowledged (first: {:?})",
            missing.len(),
            missing.first()
        );
        let failures = failing.join().expect("send_logs thread");
        assert!(
            failures > 100,
            "the send_logs calls did not fail: {failures}"
        );
        sink.assert_spoke(wire);
        drop(tx);
        let sender = Arc::try_unwrap(sender).expect("sole owner");
        assert!(sender.close().undelivered.is_empty());
        assert_no_background_panic();
    }
}

both_wires! {
    /// Two worker pools on two queues: one queue keeps being fed after the flush began;
    /// the flush still waits for everything both queues held when it began.
    fn row05_flush_is_exact_with_two_pools(wire: Wire) {
        watch_panics();
        let sink = Sink::start();
        let config = fast_config_on(&sink.addr(), wire).build().expect("config");
        let sender = LogSender::new(config).expect("sender");
        let (tx_a, rx_a) = crossbeam_channel::bounded(100_000);
        let (tx_b, rx_b) = crossbeam_channel::bounded(100_000);
        sender.start_worker_pool(rx_a, 1).expect("pool a");
        sender.start_worker_pool(rx_b, 1).expect("pool b");
        let before_b = queue(&tx_b, 2, 0..3000);
        let before_a = queue(&tx_a, 1, 0..500);
        // Queue A keeps being fed while the flush runs.
        let feeder = std::thread::spawn(move || {
            for seq in 500..20_000 {
                if tx_a.send(payload(1, seq)).is_err() {
                    break;
                }
            }
        });
        assert_eq!(sender.flush(WAIT).outstanding, 0);
        let acked = unique(&sink.ok_ids());
        for (name, before) in [("A", &before_a), ("B", &before_b)] {
            let missing = ids(before)
                .into_iter()
                .filter(|id| !acked.contains(id))
                .count();
            assert_eq!(
                missing, 0,
                "flush returned 0 with {missing} payloads of queue {name} not acknowledged"
            );
        }
        feeder.join().expect("feeder");
        sink.assert_spoke(wire);
        drop(tx_b);
        let _ = sender.close().undelivered;
        assert_no_background_panic();
    }
}

// ---------------------------------------------------------------------------------
// Row 6: deadlines are kept while a write is stuck on a stalled collector.
// ---------------------------------------------------------------------------------

/// A sender stuck on a stalled collector, with 40 wide payloads (7 MB) in its hands and
/// long timeouts, so nothing releases it during the test.
///
/// GoSight: its worker is stuck writing to a collector that never reads (its write made
/// no progress for a while, as `Stats::write_stalled` shows), with a long
/// `write_timeout`. One epoch carries all 40 payloads (more than HTTP/2 lets into flight
/// unread): a new epoch every 50 ms would give each stream a fresh window and the
/// writes might never block.
///
/// OTLP: a write never blocks there (calls are issued without waiting); the collector
/// reads every `Export` and never answers (`Ending::Stall`), and each call's deadline
/// (`commit_timeout`) is a minute away. Returns once the sink holds all 40 payloads in
/// calls it has not answered.
fn stuck_sender(
    sink: &Sink,
    wire: Wire,
) -> (Arc<LogSender>, crossbeam_channel::Sender<LogPayload>) {
    let config = fast_config_on(&sink.addr(), wire)
        .commit_interval(Duration::from_secs(60))
        .commit_timeout(Duration::from_secs(60))
        .write_timeout(Duration::from_secs(60))
        .send_timeout(Duration::from_millis(300))
        .build()
        .expect("config");
    let sender = LogSender::new(config).expect("sender");
    let (tx, rx) = crossbeam_channel::bounded(64);
    sender.start_worker_pool(rx, 1).expect("workers");
    for seq in 0..40 {
        tx.send(wide_payload(0, seq)).expect("queue");
    }
    match wire {
        Wire::GoSightStream => {
            wait_writes_blocked(sink, &sender, WAIT);
            wait_stats(&sender, WAIT, "a write stuck for 300 ms", |s| {
                s.write_stalled
                    .is_some_and(|d| d >= Duration::from_millis(300))
            });
        }
        _ => {
            assert!(
                sink.wait_for(40, WAIT),
                "the stalled sink never held all 40: {} ({:?})",
                sink.count(),
                sender.stats()
            );
            let calls = sink.calls();
            assert!(
                calls.exports >= 1 && calls.ok == 0 && calls.failed == 0,
                "{calls:?}"
            );
            std::thread::sleep(Duration::from_millis(300));
        }
    }
    (Arc::new(sender), tx)
}

both_wires! {
    /// `flush(200 ms)`, `send_logs` (`send_timeout` 300 ms) and `close_timeout(500 ms)`
    /// keep their bounds while the collector holds everything. On GoSight `send_logs`
    /// meets the stuck write and times out; on OTLP it does not wait for the collector:
    /// it takes the payload and returns, and close hands that one back too.
    fn row06_flush_and_send_logs_keep_their_own_bounds_while_a_write_is_stuck(wire: Wire) {
        watch_panics();
        let sink = Sink::with_ending(match wire {
            Wire::GoSightStream => Ending::StallReads,
            _ => Ending::Stall,
        });
        let (sender, tx) = stuck_sender(&sink, wire);

        let t = Instant::now();
        let left = sender.flush(Duration::from_millis(200)).outstanding;
        let took = t.elapsed();
        assert!(left > 0);
        assert!(
            took < Duration::from_millis(200) + SLACK,
            "flush(200 ms) took {took:?} while a write was stuck"
        );

        let s = sender.clone();
        let t = Instant::now();
        let result = within(Duration::from_secs(10), "send_logs", move || {
            s.send_logs(&payload(7, 0))
        });
        let took = t.elapsed();
        match wire {
            Wire::GoSightStream => assert!(
                matches!(result, Err(Error::Timeout { .. })),
                "send_logs while the stream is held by a stuck write: {result:?}"
            ),
            _ => assert!(
                result.is_ok(),
                "send_logs while every call is unanswered: {result:?}"
            ),
        }
        assert!(
            took < Duration::from_millis(300) + SLACK,
            "send_logs took {took:?} (send_timeout 300 ms)"
        );
        let st = sender.stats();
        match wire {
            Wire::GoSightStream => assert!(
                st.write_stalled
                    .is_some_and(|d| d >= Duration::from_millis(500)),
                "the write was not stuck all along: {st:#?}"
            ),
            _ => {
                let calls = sink.calls();
                assert!(
                    calls.ok == 0 && calls.failed == 0 && st.epochs_failed == 0,
                    "the calls were not held all along: {calls:?} {st:#?}"
                );
            }
        }

        drop(tx);
        let sender = Arc::try_unwrap(sender).expect("sole owner");
        let t = Instant::now();
        let back = within(Duration::from_secs(10), "close_timeout", move || {
            sender.close_timeout(Duration::from_millis(500)).undelivered
        });
        let took = t.elapsed();
        assert!(
            took < Duration::from_millis(500) + SLACK,
            "close_timeout(500 ms) took {took:?}"
        );
        let mut want = expected_ids(0, 0..40);
        if wire == Wire::OtlpLogs {
            want.push("7-0".into());
        }
        let mut got = ids(&back);
        got.sort();
        want.sort();
        assert_eq!(got, want, "close hands back what was not delivered");
        sink.assert_spoke(wire);
        assert_no_background_panic();
    }
}

both_wires! {
    fn row06_drop_keeps_its_documented_bound_while_a_write_is_stuck(wire: Wire) {
        watch_panics();
        let sink = Sink::with_ending(match wire {
            Wire::GoSightStream => Ending::StallReads,
            _ => Ending::Stall,
        });
        let (sender, tx) = stuck_sender(&sink, wire);
        drop(tx);
        let sender = Arc::try_unwrap(sender).expect("sole owner");
        let t = Instant::now();
        within(Duration::from_secs(10), "drop", move || drop(sender));
        let took = t.elapsed();
        // `Drop` closes with a deadline of at most 2 s.
        assert!(took < Duration::from_secs(2) + SLACK, "drop took {took:?}");
        assert_no_background_panic();
    }
}

// ---------------------------------------------------------------------------------
// Row 7: after a stream worked, the next outage starts from the initial backoff.
// ---------------------------------------------------------------------------------

fn backoff_resets(wire: Wire, mode: DeliveryMode) {
    watch_panics();
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let config = fast_config_on(&addr, wire)
        .delivery(mode)
        .reconnect_backoff(Duration::from_millis(100), Duration::from_secs(30))
        .backoff_jitter(0.0)
        .connect_timeout(Duration::from_millis(500))
        .build()
        .expect("config");
    let (sender, tx) = sender_with_pool(config, 64, 1);
    // Failed dials for 1.6 s: 100, 200, 400, 800 ms: the next delay is 1.6 s, then 3.2 s.
    std::thread::sleep(Duration::from_millis(1_600));
    let mut sink = Sink::start_with(port, Ending::OkNoMessage, None);
    queue(&tx, 0, 0..10);
    assert!(sink.wait_for(10, WAIT), "never delivered");
    wait_stats(&sender, WAIT, "the first ten settled", |s| {
        s.acknowledged == 10
    });

    // A short outage: the sink goes away and comes back at once.
    // (GoSight: its open stream breaks; OTLP, with no call in flight: the channel's
    // state, see tests/otlp_wire.rs `a_collector_gone_between_calls_is_noticed`.)
    sink.stop();
    wait_stats(&sender, WAIT, "the outage noticed", |s| {
        s.state != ConnectionState::Connected
    });
    sink.restart();
    let back = Instant::now();
    queue(&tx, 0, 10..11);
    assert!(
        wait_until(WAIT, || sink.count() >= 11),
        "never delivered after the outage"
    );
    let gap = back.elapsed();
    assert!(
        gap < Duration::from_millis(1_200),
        "{wire:?} {mode:?}: {gap:?} from the collector's return to delivery: the backoff was not \
         reset after the stream had worked"
    );
    drop(tx);
    let _ = sender.close().undelivered;
    assert_no_background_panic();
}

both_wires! {
    /// On OTLP "a working stream" is a call answered `OK`.
    fn row07_backoff_resets_after_a_working_stream_at_least_once(wire: Wire) {
        backoff_resets(wire, DeliveryMode::AtLeastOnce);
    }
}

/// GoSight only: `build` refuses at-most-once on OTLP (each call is acknowledged; row 8
/// checks the refusal).
#[test]
fn row07_backoff_resets_after_a_working_stream_at_most_once() {
    backoff_resets(Wire::GoSightStream, DeliveryMode::AtMostOnce);
}

// ---------------------------------------------------------------------------------
// Row 8: extreme values panic nowhere; nonsense is rejected by name.
// ---------------------------------------------------------------------------------

both_wires! {
    /// On OTLP with `max_exports_in_flight(usize::MAX)` too, and `commit_timeout` as
    /// each call's deadline.
    fn row08_duration_max_everywhere_works(wire: Wire) {
        duration_max_everywhere(wire);
    }
}

fn duration_max_everywhere(wire: Wire) {
    watch_panics();
    let sink = Sink::start();
    let mut config = Config::builder(sink.addr())
        .thread_name(support::helpers::thread_prefix())
        .plaintext()
        .wire(wire)
        .commit_interval(Duration::MAX)
        .commit_timeout(Duration::MAX)
        .write_timeout(Duration::MAX)
        .connect_timeout(Duration::MAX)
        .send_timeout(Duration::MAX)
        .keepalive_time(Duration::MAX)
        .keepalive_timeout(Duration::MAX)
        .close_timeout(Duration::MAX)
        .reconnect_backoff(Duration::MAX, Duration::MAX)
        .backoff_multiplier(f64::MAX)
        .max_buffered_payloads(usize::MAX)
        .max_buffered_bytes(usize::MAX)
        .commit_every(usize::MAX)
        .overflow(OverflowPolicy::Block {
            timeout: Some(Duration::MAX),
        });
    if wire == Wire::OtlpLogs {
        config = config.max_exports_in_flight(usize::MAX);
    }
    let config = config
        .build()
        .expect("Duration::MAX is a valid (saturated) setting");
    let (sender, tx) = sender_with_pool(config, 64, 2);
    queue(&tx, 0, 0..20);
    // The state is read before the send: read after a send that found no stream yet, it
    // could say Connected already (the stream came up in between).
    let was = sender.stats().state;
    assert!(sender.send_logs(&payload(1, 0)).is_ok() || was != ConnectionState::Connected);
    assert_eq!(
        sender.flush(Duration::MAX).outstanding,
        0,
        "{:#?}",
        sender.stats()
    );
    assert!(sender.stats().acknowledged >= 20);
    drop(tx);
    assert!(sender.close_timeout(Duration::MAX).undelivered.is_empty());
    sink.assert_spoke(wire);
    assert_no_background_panic();

    // The same against a collector that is not there: backoff of "forever", and a close
    // that still returns.
    let config = fast_config_on(&unserved_addr(), wire)
        .reconnect_backoff(Duration::MAX, Duration::MAX)
        .commit_timeout(Duration::MAX)
        .overflow(OverflowPolicy::Block {
            timeout: Some(Duration::MAX),
        })
        .max_buffered_payloads(2)
        .build()
        .expect("config");
    let (sender, tx) = sender_with_pool(config, 64, 1);
    queue(&tx, 0, 0..5);
    wait_stats(&sender, WAIT, "a failed dial", |s| s.last_error.is_some());
    assert_eq!(sender.flush(Duration::from_millis(50)).outstanding, 5);
    let back = within(Duration::from_secs(10), "close", move || {
        sender.close_timeout(Duration::from_millis(300)).undelivered
    });
    assert_eq!(back.len(), 5);
    drop(tx);
    assert_no_background_panic();
}

#[test]
fn row08_nonsense_is_rejected_with_the_setting_named() {
    let b = || Config::builder("127.0.0.1:1").plaintext();
    let o = || b().wire(Wire::OtlpLogs);
    for (builder, field) in [
        (b().gzip_level(0), "gzip_level"),
        (b().gzip_level(10), "gzip_level"),
        (b().gzip_min_size(usize::MAX), "gzip_min_size"),
        (b().thread_name(""), "thread_name"),
        (b().thread_name("a\0b"), "thread_name"),
        (b().send_timeout(Duration::ZERO), "send_timeout"),
        (b().commit_timeout(Duration::ZERO), "commit_timeout"),
        (b().backoff_multiplier(f64::INFINITY), "backoff_multiplier"),
        (b().backoff_multiplier(f64::NAN), "backoff_multiplier"),
        (b().max_message_size(usize::MAX), "max_message_size"),
        (b().max_buffered_bytes(1), "max_buffered_bytes"),
        // The OTLP wire's own settings, and what it cannot do.
        (o().max_exports_in_flight(0), "max_exports_in_flight"),
        (o().otlp_max_request_bytes(0), "otlp_max_request_bytes"),
        (
            o().otlp_max_request_bytes((64 << 10) - 1),
            "otlp_max_request_bytes",
        ),
        (
            o().max_message_size(8 << 20)
                .otlp_max_request_bytes((8 << 20) + 1),
            "otlp_max_request_bytes",
        ),
        // A cap asked for over the message limit.
        (
            o().max_message_size(1 << 20)
                .otlp_max_request_bytes(2 << 20),
            "otlp_max_request_bytes",
        ),
        (o().delivery(DeliveryMode::AtMostOnce), "delivery"),
    ] {
        match builder.build() {
            Err(Error::InvalidConfig { field: f, .. }) => assert_eq!(f, field),
            other => panic!("{field}: {other:?}"),
        }
    }
}

// ---------------------------------------------------------------------------------
// Row 9: a panicking EventHandler kills nothing.
// ---------------------------------------------------------------------------------

#[derive(Default)]
struct Panicker {
    calls: AtomicUsize,
}

impl EventHandler for Panicker {
    fn on_dropped(&self, _event: DroppedEvent) {
        self.calls.fetch_add(1, Ordering::SeqCst);
        panic!("handler boom: dropped");
    }
    fn on_dead_letter(&self, _event: DeadLetterEvent) {
        self.calls.fetch_add(1, Ordering::SeqCst);
        panic!("handler boom: dead letter");
    }
    fn on_connected(&self) {
        self.calls.fetch_add(1, Ordering::SeqCst);
        panic!("handler boom: connected");
    }
    fn on_disconnected(&self, _error: &Error) {
        self.calls.fetch_add(1, Ordering::SeqCst);
        panic!("handler boom: disconnected");
    }
}

#[test]
fn row09_a_panicking_event_handler_kills_no_thread() {
    watch_panics();
    let handler = Arc::new(Panicker::default());
    let mut sink = Sink::start();
    let port = sink.port();
    sink.stop();
    let config = fast_config(&sink.addr())
        .event_handler(handler.clone())
        .overflow(OverflowPolicy::DropNewest)
        .max_buffered_payloads(5)
        .max_message_size(64 << 10)
        .build()
        .expect("config");
    let (sender, tx) = sender_with_pool(config, 64, 2);
    // Collector down: 5 held, 15 dropped, each drop reported to a handler that panics.
    queue(&tx, 0, 0..20);
    wait_stats(&sender, WAIT, "15 drops", |s| s.dropped_newest == 15);
    // Too large: dead-lettered before sending, reported to the panicking handler.
    let mut big = payload(1, 0);
    big.logs[0].message = "z".repeat(100 << 10);
    tx.send(big).expect("queue");
    wait_stats(&sender, WAIT, "a dead letter", |s| s.dead_lettered == 1);
    // The collector comes back: connected (a panic), and everything held is delivered
    // by the same workers.
    sink = Sink::start_with(port, Ending::OkNoMessage, None);
    assert_eq!(sender.flush(WAIT).outstanding, 0, "{:#?}", sender.stats());
    // Fewer than the buffer holds, so none of them is dropped.
    queue(&tx, 2, 0..4);
    assert_eq!(sender.flush(WAIT).outstanding, 0, "{:#?}", sender.stats());
    let st = sender.stats();
    assert_eq!(st.acknowledged, 9, "{st:#?}");
    assert_eq!(st.dropped_newest, 15);
    assert_eq!(
        st.handler_panics,
        handler.calls.load(Ordering::SeqCst) as u64,
        "every handler call panicked and was caught: {st:#?}"
    );
    assert!(st.handler_panics >= 17, "{st:#?}");
    let (_, notes) = background_panics();
    assert!(
        notes.iter().all(|n| n.contains("handler boom")),
        "a panic other than the handler's: {notes:#?}"
    );
    drop(tx);
    assert!(sender.close().undelivered.is_empty());
    drop(sink);
}

// ---------------------------------------------------------------------------------
// Row 10: transient INTERNAL / UNKNOWN are retried; a payload that always causes one is
// dead-lettered after a bounded number of attempts alone.
// ---------------------------------------------------------------------------------

#[test]
fn row10_transient_internal_and_unknown_are_retried() {
    watch_panics();
    let sink = Sink::start();
    sink.fail_next(2, RpcStatusCode::INTERNAL);
    let collector = Collector::new();
    let config = fast_config(&sink.addr())
        .event_handler(collector.clone())
        .commit_interval(Duration::from_millis(200))
        .build()
        .expect("config");
    let (sender, tx) = sender_with_pool(config, 64, 1);
    queue(&tx, 0, 0..30);
    assert_eq!(sender.flush(WAIT).outstanding, 0);
    sink.fail_next(2, RpcStatusCode::UNKNOWN);
    queue(&tx, 1, 0..30);
    assert_eq!(sender.flush(WAIT).outstanding, 0);
    let st = sender.stats();
    assert!(
        st.epochs_failed >= 4,
        "the sink did not fail calls: {st:#?}"
    );
    assert_eq!(st.dead_lettered, 0, "{:?}", collector.dead_letters());
    assert_eq!(st.acknowledged, 60);
    assert_acknowledged_by_sink(&sink, &expected_ids(0, 0..30));
    assert_acknowledged_by_sink(&sink, &expected_ids(1, 0..30));
    drop(tx);
    assert!(sender.close().undelivered.is_empty());
    assert_no_background_panic();
}

/// A payload struck alone (rejected with `code`, a status that may be the payload's
/// and is retried) is held back 1 s, then 2 s, between its tries alone, even while
/// other payloads keep epochs committing every few milliseconds (each of which could
/// otherwise take it at once: with the test's 20 ms backoff, the three rejections would
/// come within a fraction of a second); it is dead-lettered with `code` after three.
fn strikes_are_spaced(wire: Wire, code: RpcStatusCode) {
    watch_panics();
    let sink = Sink::start();
    sink.reject_payload("9-0", code);
    let collector = Collector::new();
    let config = fast_config_on(&sink.addr(), wire)
        .event_handler(collector.clone())
        .build()
        .expect("config");
    let (sender, tx) = sender_with_pool(config, 64, 1);
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let traffic = {
        let (tx, stop) = (tx.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                queue(&tx, 1, i..i + 1);
                i += 1;
                std::thread::sleep(Duration::from_millis(5));
            }
        })
    };
    assert!(wait_until(WAIT, || sender.acknowledged() > 0), "no traffic");
    let committed_before = sender.stats().epochs_committed;
    let started = Instant::now();
    queue(&tx, 9, 0..1);
    assert!(
        wait_until(WAIT, || !collector.dead_letters().is_empty()),
        "never dead-lettered"
    );
    let took = started.elapsed();
    let rotations = sender.stats().epochs_committed - committed_before;
    stop.store(true, Ordering::Relaxed);
    traffic.join().expect("traffic");
    assert!(
        rotations >= 20,
        "only {rotations} epochs committed meanwhile: the test did not race other epochs"
    );
    assert!(
        took >= Duration::from_secs(3),
        "struck out after {took:?}: the 1 s and 2 s hold-backs were skipped"
    );
    let dead = collector.dead_letters();
    assert_eq!(
        dead.iter().map(|d| d.id.as_str()).collect::<Vec<_>>(),
        ["9-0"]
    );
    assert_eq!(dead[0].code, Some(code), "{dead:?}");
    if wire == Wire::OtlpLogs {
        let alone: Vec<_> = sink
            .exports()
            .into_iter()
            .filter(|e| e.ids == ["9-0"])
            .collect();
        assert!(
            alone.len() >= 3 && alone.iter().all(|e| e.answer == Some(code)),
            "three tries alone are promised: {alone:?}"
        );
    }
    assert!(!unique(&sink.ok_ids()).contains("9-0"));
    drop(tx);
    assert!(sender.close().undelivered.is_empty());
    assert_no_background_panic();
}

#[test]
fn row10_strikes_are_spaced_while_other_traffic_rotates_epochs() {
    strikes_are_spaced(Wire::GoSightStream, RpcStatusCode::INTERNAL);
}

#[test]
fn row10_a_payload_that_always_causes_internal_is_dead_lettered_after_three_tries() {
    watch_panics();
    let (sink, _dead, _st) =
        one_payload_rejected(Wire::GoSightStream, "0-3", RpcStatusCode::INTERNAL, 16);
    let attempts = sink
        .received()
        .iter()
        .filter(|p| p.host_id == "0-3")
        .count();
    assert!(
        attempts >= 3,
        "dead-lettered after {attempts} attempts; three alone are promised"
    );
    assert_no_background_panic();
}

// The OTLP twins of row 10. On OTLP, INTERNAL and UNKNOWN are permanent (OTLP's
// specification); the statuses that may be the payloads and are retried with strikes
// are ABORTED, OUT_OF_RANGE and DATA_LOSS.

/// OTLP: calls failed with ABORTED, then DATA_LOSS (transient) are re-sent: everything
/// is delivered, nothing dead-lettered.
#[test]
fn row10_otlp_transient_aborted_and_data_loss_are_retried() {
    watch_panics();
    let sink = Sink::start();
    sink.fail_next(2, RpcStatusCode::ABORTED);
    let collector = Collector::new();
    let config = fast_config_on(&sink.addr(), Wire::OtlpLogs)
        .event_handler(collector.clone())
        .commit_interval(Duration::from_millis(200))
        .build()
        .expect("config");
    let (sender, tx) = sender_with_pool(config, 64, 1);
    queue(&tx, 0, 0..30);
    assert_eq!(sender.flush(WAIT).outstanding, 0);
    sink.fail_next(2, RpcStatusCode::DATA_LOSS);
    queue(&tx, 1, 0..30);
    assert_eq!(sender.flush(WAIT).outstanding, 0);
    let st = sender.stats();
    assert!(
        st.epochs_failed >= 4,
        "the sink did not fail calls: {st:#?}"
    );
    let failed: Vec<RpcStatusCode> = sink
        .exports()
        .iter()
        .filter_map(|e| e.answer)
        .filter(|c| *c != RpcStatusCode::OK)
        .collect();
    assert_eq!(
        failed,
        [
            RpcStatusCode::ABORTED,
            RpcStatusCode::ABORTED,
            RpcStatusCode::DATA_LOSS,
            RpcStatusCode::DATA_LOSS
        ],
        "{:?}",
        sink.calls()
    );
    assert_eq!(st.dead_lettered, 0, "{:?}", collector.dead_letters());
    assert_eq!(st.acknowledged, 60);
    assert_acknowledged_by_sink(&sink, &expected_ids(0, 0..30));
    assert_acknowledged_by_sink(&sink, &expected_ids(1, 0..30));
    sink.assert_spoke(Wire::OtlpLogs);
    drop(tx);
    assert!(sender.close().undelivered.is_empty());
    assert_no_background_panic();
}

/// OTLP: a payload that always causes DATA_LOSS (retryable: strikes) is held back 1 s,
/// then 2 s, between its tries alone, even while other payloads keep calls committing
/// every few milliseconds; it is dead-lettered after three calls of its own.
#[test]
fn row10_otlp_strikes_are_spaced_while_other_traffic_commits_calls() {
    strikes_are_spaced(Wire::OtlpLogs, RpcStatusCode::DATA_LOSS);
}

/// OTLP: a payload that always causes INTERNAL is dead-lettered the first time it
/// travels alone: INTERNAL is permanent there, so no strikes (GoSight's three tries).
/// The collector is down until all 16 payloads are held, so that they go in one call:
/// it is rejected, the probe accepted, and the halves narrowed down to `0-3` alone
/// (a half's rejection counts once the other half was committed), which the collector
/// rejects once, and it is dead-lettered with INTERNAL; the other 15 are delivered.
#[test]
fn row10_otlp_a_payload_that_always_causes_internal_is_dead_lettered_without_strikes() {
    watch_panics();
    let mut sink = Sink::start();
    sink.reject_payload("0-3", RpcStatusCode::INTERNAL);
    sink.stop();
    let collector = Collector::new();
    let config = fast_config_on(&sink.addr(), Wire::OtlpLogs)
        .event_handler(collector.clone())
        .build()
        .expect("config");
    let (sender, tx) = sender_with_pool(config, 64, 1);
    queue(&tx, 0, 0..16);
    wait_stats(&sender, WAIT, "all 16 held", |s| s.unacked == 16);
    sink.restart();
    assert_eq!(sender.flush(WAIT).outstanding, 0, "{:#?}", sender.stats());
    let st = sender.stats();
    assert_eq!(st.acknowledged, 15, "{st:#?}");
    assert_eq!(st.dead_lettered, 1, "{st:#?}");
    let dead = collector.dead_letters();
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0].id, "0-3");
    assert_eq!(dead[0].code, Some(RpcStatusCode::INTERNAL), "{dead:?}");
    let exports = sink.exports();
    let first = exports.iter().find(|e| !e.ids.is_empty()).expect("a call");
    assert_eq!(
        unique(&first.ids),
        unique(&expected_ids(0, 0..16)),
        "the first call carried all 16"
    );
    let alone: Vec<_> = exports.iter().filter(|e| e.ids == ["0-3"]).collect();
    assert_eq!(
        alone.len(),
        1,
        "INTERNAL is permanent on OTLP: no second try alone (a strike): {alone:?}"
    );
    assert_eq!(alone[0].answer, Some(RpcStatusCode::INTERNAL));
    assert!(sink.calls().empty >= 1, "no probe: {:?}", sink.calls());
    let healthy: Vec<String> = expected_ids(0, 0..16)
        .into_iter()
        .filter(|id| id != "0-3")
        .collect();
    assert_acknowledged_by_sink(&sink, &healthy);
    assert!(!unique(&sink.ok_ids()).contains("0-3"));
    drop(tx);
    assert!(sender.close().undelivered.is_empty());
    assert_no_background_panic();
}

// ---------------------------------------------------------------------------------
// Row 11: a TLS failure is named, retried with backoff, and close hands everything back.
// ---------------------------------------------------------------------------------

both_wires! {
fn row11_a_certificate_the_ca_does_not_sign_is_named_in_last_error(wire: Wire) {
    watch_panics();
    let dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/tls");
    let read = |n: &str| std::fs::read(dir.join(n)).expect("tls file");
    let sink = Sink::start_tls(support::sink::TlsServer {
        cert: read("server.pem"),
        key: read("server-key.pem"),
        client_ca: None,
    });
    let config = Config::builder(sink.addr())
        .thread_name(support::helpers::thread_prefix())
        .wire(wire)
        .tls_ca_file(dir.join("other-ca.pem"))
        .tls_server_name("localhost")
        .connect_timeout(Duration::from_secs(2))
        .reconnect_backoff(Duration::from_millis(100), Duration::from_secs(1))
        .build()
        .expect("config");
    let (sender, tx) = sender_with_pool(config, 64, 1);
    queue(&tx, 0, 0..10);
    let started = Instant::now();
    let st = wait_stats(
        &sender,
        Duration::from_secs(2) + SLACK,
        "a named TLS failure",
        |s| {
            s.last_error
                .as_ref()
                .map(|e| e.message.as_str())
                .is_some_and(|e| {
                    let e = e.to_ascii_lowercase();
                    e.contains("ssl")
                        || e.contains("tls")
                        || e.contains("handshake")
                        || e.contains("certificate")
                })
        },
    );
    println!(
        "last_error after {:?}: {:?}",
        started.elapsed(),
        st.last_error
    );
    assert_eq!(st.state, ConnectionState::Connecting);
    assert_eq!(st.acknowledged, 0);
    drop(tx);
    let back = within(Duration::from_secs(10), "close", move || {
        sender.close_timeout(Duration::from_millis(500)).undelivered
    });
    assert_eq!(ids(&back), expected_ids(0, 0..10));
    assert_eq!(sink.count(), 0);
    assert_no_background_panic();
}
}

// ---------------------------------------------------------------------------------
// Row 12: with send_logs only (no worker), re-sends do not wait for the next call.
// ---------------------------------------------------------------------------------

both_wires! {
/// On OTLP `send_logs` returns once the call is issued, and says `Unavailable` while the
/// calls are down after a failure (as GoSight's does without a stream): the sink answers
/// each call 500 ms late, so that the ten are taken before the first call fails. Its
/// payloads are re-sent by logsender alone all the same.
fn row12_send_logs_only_resends_without_another_call(wire: Wire) {
    watch_panics();
    let sink = match wire {
        Wire::GoSightStream => Sink::start(),
        _ => Sink::with_ending(Ending::SlowReads(Duration::from_millis(500))),
    };
    sink.fail_next(1, RpcStatusCode::UNAVAILABLE);
    let config = fast_config_on(&sink.addr(), wire).build().expect("config");
    let sender = LogSender::new(config).expect("sender");
    assert!(support::helpers::wait_connected(&sender, WAIT));
    let sent: Vec<LogPayload> = (0..10).map(|seq| payload(0, seq)).collect();
    for p in &sent {
        sender.send_logs(p).expect("send_logs");
    }
    // No further send_logs, no flush: the failed epoch is re-sent by logsender alone.
    let st = wait_stats(&sender, WAIT, "everything acknowledged", |s| {
        s.acknowledged == 10
    });
    assert!(
        st.epochs_failed >= 1,
        "the sink did not fail the epoch: {st:#?}"
    );
    assert_acknowledged_by_sink(&sink, &ids(&sent));
    sink.assert_spoke(wire);
    assert!(sender.close().undelivered.is_empty());
    assert_no_background_panic();
}
}

// ---------------------------------------------------------------------------------
// Row 13: gzip really compresses on the wire.
// ---------------------------------------------------------------------------------

/// 50 payloads of ~100 KB of log-like text.
fn texty(seq: usize) -> LogPayload {
    let mut p = payload(0, seq);
    p.logs[0].message = (0..1500)
        .map(|i| format!("GET /api/v1/items/{} 200 {}ms\n", i % 97, i % 13))
        .collect();
    p
}

/// `p`'s size as `wire` encodes it (on OTLP, as a request of its own).
fn encoded_len(wire: Wire, p: &LogPayload) -> u64 {
    match wire {
        Wire::GoSightStream => logsender::wire::encode(p).len(),
        _ => logsender::otlp::encode(&logsender::otlp::to_request(p))
            .expect("encode")
            .len(),
    }
    .try_into()
    .expect("a size")
}

/// Ships 50 texty payloads through a byte-counting proxy; returns their encoded size,
/// the bytes on the wire, and the gRPC messages sent compressed and uncompressed.
fn bytes_on_the_wire(wire: Wire, compression: Compression, sink: &Sink) -> (u64, u64, (u64, u64)) {
    ship_through_proxy(
        wire,
        |a| fast_config_on(a, wire).compression(compression),
        sink,
        texty,
    )
}

/// Ships 50 payloads made by `make` with the configuration `config` builds for a
/// byte-counting proxy's address; returns what [`bytes_on_the_wire`] does. On GoSight a
/// pool ships them (each payload is a message of the stream); on OTLP a call carries up
/// to 64 payloads as one message, so they go one `send_logs` at a time, each
/// acknowledged before the next: one payload per message there too.
fn ship_through_proxy(
    wire: Wire,
    config: impl Fn(&str) -> logsender::ConfigBuilder,
    sink: &Sink,
    make: impl Fn(usize) -> LogPayload,
) -> (u64, u64, (u64, u64)) {
    let proxy = Proxy::start(sink.addr());
    let config = config(&proxy.addr()).build().expect("config");
    let mut raw = 0u64;
    match wire {
        Wire::GoSightStream => {
            let (sender, tx) = sender_with_pool(config, 64, 2);
            for seq in 0..50 {
                let p = make(seq);
                raw += encoded_len(wire, &p);
                tx.send(p).expect("queue");
            }
            assert_eq!(sender.flush(WAIT).outstanding, 0, "{:#?}", sender.stats());
            drop(tx);
            assert!(sender.close().undelivered.is_empty());
        }
        _ => {
            let sender = LogSender::new(config).expect("sender");
            assert!(support::helpers::wait_connected(&sender, WAIT));
            for seq in 0..50 {
                let p = make(seq);
                raw += encoded_len(wire, &p);
                sender.send_logs(&p).expect("send_logs");
                wait_stats(&sender, WAIT, "the payload acknowledged", |s| {
                    s.acknowledged == seq as u64 + 1
                });
            }
            assert!(sender.close().undelivered.is_empty());
        }
    }
    (raw, proxy.upstream_bytes(), proxy.messages())
}

both_wires! {
    fn row13_gzip_compresses_on_the_wire_and_none_does_not(wire: Wire) {
        watch_panics();
        let sink = Sink::start();
        let (raw, gz, (compressed, plain)) = bytes_on_the_wire(wire, Compression::Gzip, &sink);
        println!("gzip: {raw} bytes of payloads, {gz} on the wire; messages {compressed} compressed, {plain} not");
        assert!(
            gz * 5 < raw,
            "gzip sent {gz} bytes for {raw} bytes of text: not compressed"
        );
        assert!(
            compressed >= 50 && plain == 0,
            "{compressed} compressed, {plain} not"
        );
        let (raw, bytes, (compressed, plain)) = bytes_on_the_wire(wire, Compression::None, &sink);
        println!("none: {raw} bytes of payloads, {bytes} on the wire; messages {compressed} compressed, {plain} not");
        assert!(bytes >= raw, "uncompressed yet {bytes} < {raw}");
        assert!(
            compressed == 0 && plain >= 50,
            "{compressed} compressed, {plain} not"
        );
        sink.assert_spoke(wire);
        assert_no_background_panic();
    }
}

both_wires! {
    fn row13_messages_under_gzip_min_size_go_uncompressed(wire: Wire) {
        watch_panics();
        let sink = Sink::start();
        // Even payloads are texty (~100 KB), odd ones small (under 512 bytes encoded) but
        // compressible: gRPC sends a message plain when gzip would not make it smaller.
        let make = |seq: usize| {
            if seq.is_multiple_of(2) {
                texty(seq)
            } else {
                let mut p = payload(0, seq);
                p.logs.truncate(1);
                p.logs[0].message = "GET /api/v1/items 200\n".repeat(8);
                if wire != Wire::GoSightStream {
                    // OTLP spells every field as a keyed attribute: without the
                    // metadata, fields and tags, the request stays under 512 bytes.
                    p.meta = None;
                    p.logs[0].meta = None;
                    p.logs[0].fields.clear();
                    p.logs[0].tags.clear();
                }
                p
            }
        };
        let tiny = encoded_len(wire, &make(1));
        assert!(tiny < 512, "the tiny payload encodes to {tiny} bytes");
        let config = |a: &str| fast_config_on(a, wire).compression(Compression::Gzip);
        let (_, _, (compressed, plain)) = ship_through_proxy(wire, config, &sink, make);
        println!("default gzip_min_size: {compressed} compressed, {plain} not");
        assert!(
            compressed >= 25 && plain >= 25,
            "{compressed} compressed, {plain} not"
        );
        // 0 compresses every message.
        let config = |a: &str| {
            fast_config_on(a, wire)
                .compression(Compression::Gzip)
                .gzip_min_size(0)
        };
        let (_, _, (compressed, plain)) = ship_through_proxy(wire, config, &sink, make);
        println!("gzip_min_size 0: {compressed} compressed, {plain} not");
        assert!(
            compressed >= 50 && plain == 0,
            "{compressed} compressed, {plain} not"
        );
        sink.assert_spoke(wire);
        assert_no_background_panic();
    }
}

both_wires! {
    /// A collector that accepts no compressed message still gets everything: it rejects
    /// the first call with `UNIMPLEMENTED` ("Compression algorithm 'gzip' is disabled"),
    /// logsender rebuilds the channel without compression and re-sends; nothing is
    /// dead-lettered (on OTLP, where UNIMPLEMENTED is otherwise permanent, too).
    fn row13_a_collector_without_gzip_still_gets_everything(wire: Wire) {
        watch_panics();
        let sink = Sink::without_gzip();
        let collector = Collector::new();
        let config = fast_config_on(&sink.addr(), wire)
            .compression(Compression::Gzip)
            .event_handler(collector.clone())
            .build()
            .expect("config");
        let (sender, tx) = sender_with_pool(config, 64, 2);
        let sent: Vec<LogPayload> = (0..20).map(texty).collect();
        for p in &sent {
            tx.send(p.clone()).expect("queue");
        }
        let left = sender.flush(WAIT).outstanding;
        let st = sender.stats();
        println!("{st:#?}");
        assert_eq!(left, 0, "{st:#?}");
        assert!(
            collector.dead_letters().is_empty(),
            "{:?}",
            collector.dead_letters()
        );
        assert_acknowledged_by_sink(&sink, &ids(&sent));
        sink.assert_spoke(wire);
        drop(tx);
        assert!(sender.close().undelivered.is_empty());
        assert_no_background_panic();
    }
}
