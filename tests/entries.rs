//! The entry level: `EntrySender` batching by count, bytes and time; `try_log` when full;
//! backpressure events; the shutdown order with the collector down and producers blocked;
//! honest reports from `flush` and `shutdown`.

mod support;

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use logsender::{
    otlp, wire, BackpressureEvent, Batching, EventHandler, Level, LogEntry, LogError, LogPayload,
    LogSender, OverflowPolicy, Wire,
};
use support::collect::wait_stats;
use support::helpers::{free_port, unserved_addr, wait_until, watch_panics, within};
use support::sink::{Ending, Sink};
use support::{fast_config, fast_config_on, payload, queue, sender_with_pool};

const WAIT: Duration = Duration::from_secs(10);

fn template() -> LogPayload {
    let mut t = LogPayload::from_host("agent-entries");
    t.host_id = "host-under-test".into();
    t
}

fn entry(i: usize) -> LogEntry {
    LogEntry::new(Level::Info, format!("entry {i}")).with_field("i", i.to_string())
}

/// Batches cut at `n` entries (or by `flush`): the linger is an hour away.
fn by_count(n: usize) -> Batching {
    Batching::new(template())
        .max_entries(n)
        .linger(Duration::from_secs(3600))
}

fn messages(payloads: &[LogPayload]) -> Vec<String> {
    payloads
        .iter()
        .flat_map(|p| p.logs.iter().map(|e| e.message.clone()))
        .collect()
}

both_wires! {
fn batches_are_cut_by_count_and_the_rest_by_flush(wire: Wire) {
    watch_panics();
    let sink = Sink::start();
    let sender = LogSender::new(fast_config_on(&sink.addr(), wire).build().unwrap()).unwrap();
    let log = sender.entry_sender(by_count(5)).unwrap();
    for i in 0..23 {
        log.log(entry(i)).unwrap();
    }
    assert!(sink.wait_for(4, WAIT), "4 full batches: {}", sink.count());
    // The open batch of 3 waits: no count reached, linger an hour away.
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(sink.count(), 4);
    let report = sender.flush(WAIT);
    assert!(report.all_delivered(), "{report:?}");
    assert_eq!(report.acknowledged, 5);
    let mut got = sink.received();
    if wire == Wire::OtlpLogs {
        // Calls in flight are not ordered among themselves: order by first entry.
        got.sort_by_key(|p| p.logs.first().and_then(|e| e.fields.get("i")?.parse::<usize>().ok()));
    }
    let sizes: Vec<usize> = got.iter().map(|p| p.logs.len()).collect();
    assert_eq!(sizes, [5, 5, 5, 5, 3]);
    let want: Vec<String> = (0..23).map(|i| format!("entry {i}")).collect();
    assert_eq!(messages(&got), want, "in order within each batch, each once");
    for p in &got {
        assert_eq!(p.agent_id, "agent-entries");
        assert_eq!(p.host_id, "host-under-test");
        assert!(p.timestamp.is_some(), "stamped when cut");
        assert_eq!(p.meta, template().meta);
        assert!(p
            .logs
            .iter()
            .all(|e| e.timestamp.is_some() && e.level == "info"));
    }
    assert!(sender.close().report.all_delivered());
}
}

both_wires! {
/// `flush` covers every entry whose `log` returned before it began, while producers
/// keep logging around it.
fn flush_covers_every_entry_logged_before_it_under_concurrent_producers(wire: Wire) {
    watch_panics();
    let sink = Sink::start();
    let config = fast_config_on(&sink.addr(), wire).build().unwrap();
    let sender = Arc::new(LogSender::new(config).unwrap());
    let log = sender.entry_sender(by_count(7)).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    // Per producer: how many of its entries' `log` calls have returned.
    let done: Arc<Vec<AtomicU64>> = Arc::new((0..4).map(|_| AtomicU64::new(0)).collect());
    let producers: Vec<_> = (0..4)
        .map(|p| {
            let (log, stop, done) = (log.clone(), stop.clone(), done.clone());
            std::thread::spawn(move || {
                // Paced, and bounded, so that the sink's record stays small.
                for i in 0..50_000u64 {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    log.log(LogEntry::new(Level::Info, format!("p{p}-{i}")))
                        .unwrap();
                    done[p].store(i + 1, Ordering::SeqCst);
                    if i % 2 == 0 {
                        std::thread::sleep(Duration::from_micros(200));
                    }
                }
            })
        })
        .collect();
    // Rounds whose flush began while producers were still logging (their counts moved
    // since the previous round).
    let mut concurrent = 0;
    let mut last: Vec<u64> = vec![0; 4];
    for round in 0..40 {
        std::thread::sleep(Duration::from_millis(5));
        let before: Vec<u64> = done.iter().map(|d| d.load(Ordering::SeqCst)).collect();
        if before != last {
            concurrent += 1;
        }
        last.clone_from(&before);
        let report = sender.flush(WAIT);
        assert_eq!(
            report.outstanding + report.entries_outstanding,
            0,
            "{report:?}"
        );
        let got: HashSet<String> = messages(&sink.received()).into_iter().collect();
        for (p, n) in before.iter().enumerate() {
            for i in 0..*n {
                assert!(
                    got.contains(&format!("p{p}-{i}")),
                    "round {round}: p{p}-{i} missing"
                );
            }
        }
    }
    assert!(
        concurrent >= 10,
        "only {concurrent} flushes ran while producers logged"
    );
    stop.store(true, Ordering::Relaxed);
    for p in producers {
        p.join().unwrap();
    }
    assert!(sender.shutdown(WAIT).undelivered.is_empty());
}
}

/// A template too large for any payload of `limit` bytes.
fn big_template(limit: usize) -> LogPayload {
    let mut t = template();
    t.hostname = "h".repeat(limit);
    t
}

/// `payload`'s size on `wire` (one `ResourceLogs` on OTLP).
fn encoded_len(wire: Wire, payload: &LogPayload) -> usize {
    match wire {
        Wire::OtlpLogs => otlp::encode_payload(payload, usize::MAX).unwrap().len(),
        _ => wire::encoded_len(payload),
    }
}

/// What `entry` adds to a payload on `wire`.
fn entry_len(wire: Wire, entry: &LogEntry) -> usize {
    match wire {
        Wire::OtlpLogs => otlp::entry_record(entry).len(),
        _ => wire::entry_len(entry),
    }
}

both_wires! {
fn batches_are_cut_by_bytes(wire: Wire) {
    watch_panics();
    let sink = Sink::start();
    let sender = LogSender::new(fast_config_on(&sink.addr(), wire).build().unwrap()).unwrap();
    let big = |i: usize| LogEntry::new(Level::Warning, format!("{i:04}:{}", "x".repeat(1000)));
    let mut stamped = template();
    stamped.timestamp = Some(std::time::SystemTime::now());
    // The frame's bound is above its exact size by a few bytes (its lengths at their
    // longest): the slack covers them, and is far less than an entry.
    let limit = encoded_len(wire, &stamped) + 3 * entry_len(wire, &big(0)) + 16;
    let log = sender
        .entry_sender(
            Batching::new(template())
                .max_bytes(limit)
                .linger(Duration::from_secs(3600)),
        )
        .unwrap();
    for i in 0..10 {
        log.log(big(i)).unwrap();
    }
    assert!(sender.flush(WAIT).all_delivered());
    let got = sink.received();
    let sizes: Vec<usize> = got.iter().map(|p| p.logs.len()).collect();
    assert_eq!(sizes, [3, 3, 3, 1], "three entries fit under {limit} bytes");
    for p in &got {
        let len = encoded_len(wire, p);
        assert!(len <= limit, "{len} > {limit}");
    }
    assert_eq!(messages(&got).len(), 10);
    sender.close();
}
}

/// On OTLP a batch is one request: cut under `otlp_max_request_bytes` too (not split
/// later), so that each payload the sender acknowledges is one `ResourceLogs`.
#[test]
fn otlp_batches_are_cut_under_the_request_cap() {
    watch_panics();
    let sink = Sink::start();
    let cap = 64 << 10;
    let config = fast_config_on(&sink.addr(), Wire::OtlpLogs)
        .otlp_max_request_bytes(cap)
        .build()
        .unwrap();
    let sender = LogSender::new(config).unwrap();
    let log = sender
        .entry_sender(
            Batching::new(template())
                .max_entries(10_000)
                .max_bytes(1 << 20)
                .linger(Duration::from_secs(3600)),
        )
        .unwrap();
    let line = |i: usize| LogEntry::new(Level::Info, format!("{i:04}:{}", "y".repeat(1000)));
    for i in 0..200 {
        log.log(line(i)).unwrap();
    }
    let report = sender.flush(WAIT);
    assert!(report.all_delivered(), "{report:?}");
    let got = sink.received();
    assert!(got.len() >= 4, "200 KB in {} payloads", got.len());
    assert_eq!(
        report.acknowledged,
        got.len() as u64,
        "each payload is one ResourceLogs"
    );
    // Every line, once (calls in flight are not ordered among themselves).
    let want: Vec<String> = (0..200).map(|i| line(i).message).collect();
    let mut arrived = messages(&got);
    arrived.sort();
    assert_eq!(arrived, want);
    let sizes = sink.export_sizes();
    assert!(sizes.iter().all(|n| *n <= cap), "{sizes:?}");
    // Full batches: the next entry would not have fitted.
    let record = otlp::entry_record(&line(0)).len();
    for p in &got[..got.len() - 1] {
        let len = encoded_len(Wire::OtlpLogs, p);
        assert!(len + record > cap - 16, "{len}");
    }
    // An entry no request can carry is refused, with the cap as the limit (GoSight
    // would take it: its limit is max_message_size).
    let huge = LogEntry::new(Level::Error, "z".repeat(cap));
    match log.log(huge) {
        Err(LogError::TooLarge { size, limit, .. }) => {
            assert!(size > limit && limit == cap, "{size} {limit}");
        }
        other => panic!("{other:?}"),
    }
    sender.close();
}

/// A batcher with nothing to do sleeps until an entry wakes it (producers do not wake
/// it for each entry, only when it is idle or the channel fills up): an entry logged
/// into an idle batcher leaves at its linger, not at the idle batcher's next look (1 s).
#[test]
fn an_entry_logged_into_an_idle_batcher_wakes_it() {
    watch_panics();
    let sink = Sink::start();
    let sender = LogSender::new(fast_config(&sink.addr()).build().unwrap()).unwrap();
    let linger = Duration::from_millis(20);
    let log = sender
        .entry_sender(Batching::new(template()).max_entries(1000).linger(linger))
        .unwrap();
    let mut slowest = Duration::ZERO;
    for round in 0..10 {
        // Long enough for the batcher to go idle.
        std::thread::sleep(Duration::from_millis(30));
        let logged = Instant::now();
        log.log(entry(round)).unwrap();
        assert!(sink.wait_for(round + 1, WAIT), "round {round}");
        slowest = slowest.max(logged.elapsed());
    }
    // Linger plus the write and the collector's answer; an unwoken batcher would take
    // up to a second.
    assert!(
        slowest < Duration::from_millis(600),
        "slowest entry took {slowest:?}"
    );
    sender.close();
}

both_wires! {
fn a_batch_is_cut_after_linger_without_flush(wire: Wire) {
    watch_panics();
    let sink = Sink::start();
    let sender = LogSender::new(fast_config_on(&sink.addr(), wire).build().unwrap()).unwrap();
    let linger = Duration::from_millis(150);
    let log = sender
        .entry_sender(Batching::new(template()).max_entries(1000).linger(linger))
        .unwrap();
    let first = Instant::now();
    for i in 0..3 {
        log.log(entry(i)).unwrap();
    }
    assert!(sink.wait_for(1, WAIT), "the lingering batch never left");
    let waited = first.elapsed();
    assert!(waited >= linger, "cut after {waited:?}, before linger");
    let got = sink.received();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].logs.len(), 3);
    sender.close();
}
}

both_wires! {
fn entries_too_large_for_any_payload_are_refused_and_handed_back(wire: Wire) {
    // OTLP's request cap is at least 64 KiB, and at most max_message_size.
    let limit = 64 << 10;
    let sender = LogSender::new(
        fast_config_on(&unserved_addr(), wire)
            .max_message_size(limit)
            .otlp_max_request_bytes(limit)
            .build()
            .unwrap(),
    )
    .unwrap();
    let log = sender
        .entry_sender(Batching::new(template()).max_bytes(4096))
        .unwrap();
    let huge = LogEntry::new(Level::Error, "y".repeat(limit));
    match log.log(huge.clone()) {
        Err(LogError::TooLarge { entry, size, limit: l }) => {
            assert_eq!(*entry, huge);
            assert!(size > l && l == limit, "{size} {l}");
        }
        other => panic!("{other:?}"),
    }
    // The largest entry a payload can carry is taken (and travels alone, over
    // max_bytes), one byte more is not: the size check counts the wire's bytes.
    let mut stamped = template();
    stamped.timestamp = Some(std::time::SystemTime::UNIX_EPOCH + Duration::from_secs(1 << 40));
    let room = limit - encoded_len(wire, &stamped);
    let sized = |n: usize| LogEntry::new(Level::Error, "y".repeat(n));
    let fits = (0..limit)
        .rev()
        .find(|n| entry_len(wire, &sized(*n)) <= room - 24)
        .unwrap();
    let fit = sized(fits);
    log.log(fit.clone()).unwrap();
    let over = (fits..limit)
        .find(|n| entry_len(wire, &sized(*n)) > room)
        .unwrap();
    assert!(matches!(
        log.log(sized(over)),
        Err(LogError::TooLarge { .. })
    ));
    // Handed back at shutdown, whole.
    let back = sender.shutdown(Duration::from_millis(200)).undelivered;
    assert_eq!(back.len(), 1);
    assert_eq!(back[0].logs, [fit]);
    let sender = LogSender::new(
        fast_config_on(&unserved_addr(), wire)
            .max_message_size(limit)
            .otlp_max_request_bytes(limit)
            .build()
            .unwrap(),
    )
    .unwrap();
    // Bad settings are typed errors.
    for (batching, field) in [
        (Batching::new(template()).max_entries(0), "max_entries"),
        (Batching::new(template()).max_bytes(1 << 30), "max_bytes"),
        (Batching::new(template()).linger(Duration::ZERO), "linger"),
        (Batching::new(template()).capacity(usize::MAX), "capacity"),
        (Batching::new(template()).workers(100_000), "workers"),
        (Batching::new(payload(0, 0)).max_bytes(4096), "template"),
        (Batching::new(big_template(limit)).max_bytes(4096), "template"),
    ] {
        match sender.entry_sender(batching) {
            Err(logsender::Error::InvalidConfig { field: f, .. }) => assert_eq!(f, field),
            other => panic!("{field}: {other:?}"),
        }
    }
    sender.close_timeout(Duration::from_millis(100));
}
}

/// A sender whose buffer holds one payload, with the collector down: the entry handle
/// backs up after a handful of entries.
fn backed_up(
    addr: &str,
    wire: Wire,
    handler: Arc<dyn EventHandler>,
) -> (LogSender, logsender::EntrySender) {
    let config = fast_config_on(addr, wire)
        .max_buffered_payloads(1)
        .overflow(OverflowPolicy::Block { timeout: None })
        .event_handler(handler)
        .close_timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    let sender = LogSender::new(config).unwrap();
    let log = sender
        .entry_sender(
            Batching::new(template())
                .max_entries(1)
                .capacity(4)
                .workers(1),
        )
        .unwrap();
    (sender, log)
}

#[derive(Default)]
struct Events {
    backpressure: Mutex<Vec<BackpressureEvent>>,
}

impl EventHandler for Events {
    fn on_backpressure(&self, event: BackpressureEvent) {
        self.backpressure.lock().unwrap().push(event);
    }
}

both_wires! {
fn try_log_hands_the_entry_back_when_full(wire: Wire) {
    watch_panics();
    let (sender, log) = backed_up(&unserved_addr(), wire, Arc::new(Events::default()));
    let mut accepted = 0;
    let full = loop {
        match log.try_log(entry(accepted)) {
            Ok(()) => accepted += 1,
            Err(LogError::Full(back)) => break back,
            Err(e) => panic!("{e}"),
        }
        assert!(accepted < 100, "never full");
    };
    assert_eq!(
        full.message,
        format!("entry {accepted}"),
        "the same entry, handed back"
    );
    // Every accepted entry is handed back at shutdown, each once, in order.
    let shutdown = sender.shutdown(Duration::from_millis(300));
    let back = messages(&shutdown.undelivered);
    let want: Vec<String> = (0..accepted).map(|i| format!("entry {i}")).collect();
    assert_eq!(back, want);
    assert_eq!(shutdown.report.handed_back, accepted as u64);
    assert!(matches!(log.try_log(entry(0)), Err(LogError::Closed(_))));
}
}

#[test]
fn producers_blocked_on_a_full_buffer_raise_backpressure_events() {
    watch_panics();
    let port = free_port();
    let events = Arc::new(Events::default());
    let addr = format!("127.0.0.1:{port}");
    let (sender, log) = backed_up(&addr, Wire::GoSightStream, events.clone());
    let producer = {
        let log = log.clone();
        std::thread::spawn(move || {
            for i in 0..40 {
                log.log(entry(i)).unwrap();
            }
        })
    };
    assert!(
        wait_until(WAIT, || !events.backpressure.lock().unwrap().is_empty()),
        "no backpressure event"
    );
    assert_eq!(
        events.backpressure.lock().unwrap()[0],
        BackpressureEvent::Started { episode: 1 }
    );
    let before = sender.stats().blocked;
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        sender.stats().blocked > before,
        "blocked time does not grow"
    );
    assert!(!producer.is_finished(), "the producer should be waiting");
    // The collector comes: room is made, the producer goes on, the episode ends.
    let sink = Sink::start_with(port, Ending::OkNoMessage, None);
    within(WAIT, "the producer", move || producer.join().unwrap());
    assert!(sender.flush(WAIT).all_delivered());
    assert_eq!(messages(&sink.received()).len(), 40);
    let seen = events.backpressure.lock().unwrap().clone();
    let ended: Vec<_> = seen
        .iter()
        .filter_map(|e| match e {
            BackpressureEvent::Ended { episode, lasted } => Some((*episode, *lasted)),
            _ => None,
        })
        .collect();
    let started = seen.len() - ended.len();
    assert_eq!(started, ended.len(), "events come in pairs: {seen:?}");
    assert_eq!(ended[0].0, 1);
    assert!(ended[0].1 >= Duration::from_millis(200), "{seen:?}");
    let stats = sender.stats();
    assert_eq!(stats.backpressure_episodes, started as u64);
    assert!(stats.blocked >= Duration::from_millis(200), "{stats:?}");
    sender.close();
}

both_wires! {
/// The hang: the collector is down, producers wait for room, and the program
/// shuts down. `shutdown` through an `Arc`, first, returns within its deadline and
/// releases the producers; nothing they logged is lost.
fn shutdown_first_releases_blocked_producers_and_loses_nothing(wire: Wire) {
    watch_panics();
    let events = Arc::new(Events::default());
    let (sender, log) = backed_up(&unserved_addr(), wire, events.clone());
    let sender = Arc::new(sender);
    let stop = Arc::new(AtomicBool::new(false));
    let accepted: Arc<Mutex<Vec<String>>> = Arc::default();
    let refused = Arc::new(AtomicU64::new(0));
    let producers: Vec<_> = (0..4)
        .map(|p| {
            let (log, stop, accepted, refused) =
                (log.clone(), stop.clone(), accepted.clone(), refused.clone());
            std::thread::spawn(move || {
                let mut i = 0;
                while !stop.load(Ordering::Relaxed) {
                    let message = format!("p{p}-{i}");
                    match log.log(LogEntry::new(Level::Info, message.clone())) {
                        Ok(()) => accepted.lock().unwrap().push(message),
                        Err(LogError::Closed(e)) => {
                            assert_eq!(e.message, message, "handed back");
                            refused.fetch_add(1, Ordering::Relaxed);
                            break;
                        }
                        Err(e) => panic!("{e}"),
                    }
                    i += 1;
                }
            })
        })
        .collect();
    // Every producer is stuck: backpressure started and nothing moves for a while.
    assert!(wait_until(WAIT, || !events
        .backpressure
        .lock()
        .unwrap()
        .is_empty()));
    let count = || accepted.lock().unwrap().len();
    assert!(wait_until(WAIT, || {
        let before = count();
        std::thread::sleep(Duration::from_millis(300));
        count() == before
    }));
    assert!(producers.iter().all(|p| !p.is_finished()));
    let timeout = Duration::from_millis(500);
    let started = Instant::now();
    let closer = sender.clone();
    let shutdown = within(WAIT, "shutdown", move || closer.shutdown(timeout));
    let took = started.elapsed();
    assert!(took < timeout + Duration::from_secs(2), "took {took:?}");
    stop.store(true, Ordering::Relaxed);
    within(WAIT, "producers", move || {
        for p in producers {
            p.join().unwrap();
        }
    });
    let accepted = accepted.lock().unwrap().clone();
    let back = messages(&shutdown.undelivered);
    let unique: HashSet<&String> = back.iter().collect();
    assert_eq!(unique.len(), back.len(), "handed back twice");
    assert_eq!(
        unique,
        accepted.iter().collect::<HashSet<_>>(),
        "every entry a producer logged is handed back"
    );
    assert_eq!(shutdown.stats.acknowledged, 0);
    assert_eq!(
        refused.load(Ordering::Relaxed),
        4,
        "each producer was refused once"
    );
    assert_eq!(
        shutdown.report.handed_back,
        shutdown.undelivered.len() as u64
    );
    // A second shutdown returns at once, with the final stats.
    let again = sender.shutdown(Duration::from_secs(5));
    assert!(again.undelivered.is_empty());
    assert_eq!(again.stats, shutdown.stats);
}
}

/// The same order at the payload level: producers are told to stop, and those blocked
/// in `send` on their queue are released by `shutdown` (their payload handed back by
/// `send`, or taken and handed back by `shutdown`).
#[test]
fn shutdown_first_releases_producers_blocked_on_a_worker_queue() {
    watch_panics();
    let config = fast_config(&unserved_addr())
        .max_buffered_payloads(2)
        .build()
        .unwrap();
    let sender = Arc::new(LogSender::new(config).unwrap());
    let (tx, rx) = crossbeam_channel::bounded(4);
    sender.start_worker_pool(rx, 1).unwrap();
    let sent: Arc<Mutex<Vec<String>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let producers: Vec<_> = (0..3)
        .map(|p| {
            let (tx, sent, stop) = (tx.clone(), sent.clone(), stop.clone());
            std::thread::spawn(move || {
                for i in 0.. {
                    if stop.load(Ordering::Relaxed) {
                        return;
                    }
                    let payload = payload(p, i);
                    let id = payload.host_id.clone();
                    if tx.send(payload).is_err() {
                        return;
                    }
                    sent.lock().unwrap().push(id);
                }
            })
        })
        .collect();
    drop(tx);
    wait_stats(&sender, WAIT, "a full buffer", |s| s.unacked == 2);
    std::thread::sleep(Duration::from_millis(200));
    assert!(producers.iter().all(|p| !p.is_finished()), "producers wait");
    // The worker waits for room: that is backpressure, though logsender never sees
    // the producers that wait behind it.
    let st = wait_stats(&sender, WAIT, "a backpressure episode", |s| {
        s.backpressure_episodes == 1 && s.blocked >= Duration::from_millis(100)
    });
    assert!(st.blocked >= Duration::from_millis(100), "{st:?}");
    stop.store(true, Ordering::Relaxed);
    let closer = sender.clone();
    let shutdown = within(WAIT, "shutdown", move || {
        closer.shutdown(Duration::from_millis(300))
    });
    within(WAIT, "producers", move || {
        for p in producers {
            p.join().unwrap();
        }
    });
    let back: HashSet<String> = shutdown
        .undelivered
        .iter()
        .map(|p| p.host_id.clone())
        .collect();
    let sent: HashSet<String> = sent.lock().unwrap().iter().cloned().collect();
    assert_eq!(back, sent, "every payload sent is handed back");
    assert_eq!(back.len(), shutdown.undelivered.len());
}

#[test]
fn reports_name_dead_letters_and_count_them_once() {
    watch_panics();
    let sink = Sink::start();
    let config = fast_config(&sink.addr())
        .max_message_size(8 << 10)
        .build()
        .unwrap();
    let (sender, tx) = sender_with_pool(config, 16, 1);
    queue(&tx, 0, 0..5);
    let mut too_big = payload(0, 5);
    too_big.logs[0].message = "z".repeat(10 << 10);
    tx.send(too_big).unwrap();
    let report = sender.flush(WAIT);
    assert_eq!(report.outstanding, 0, "nothing outstanding...");
    assert!(
        !report.all_delivered(),
        "...but not all delivered: {report:?}"
    );
    assert_eq!((report.acknowledged, report.dead_lettered), (5, 1));
    // Counted once: the next report starts from here.
    tx.send(payload(0, 6)).unwrap();
    let report = sender.flush(WAIT);
    assert!(report.all_delivered(), "{report:?}");
    assert_eq!(report.acknowledged, 1);
    drop(tx);
    let shutdown = sender.close();
    // The final report covers the whole life: the dead letter is in it too.
    assert_eq!(shutdown.report.covers, logsender::Covers::WholeLife);
    assert_eq!(
        (shutdown.report.acknowledged, shutdown.report.dead_lettered),
        (6, 1)
    );
    assert!(!shutdown.report.all_delivered(), "{:?}", shutdown.report);
    assert_eq!(shutdown.stats.dead_lettered, 1);
    assert_eq!(shutdown.stats.acknowledged, 6);
}

#[test]
fn reports_name_drops_and_what_was_handed_back() {
    watch_panics();
    let config = fast_config(&unserved_addr())
        .max_buffered_payloads(2)
        .overflow(OverflowPolicy::DropNewest)
        .build()
        .unwrap();
    let (sender, tx) = sender_with_pool(config, 16, 1);
    queue(&tx, 0, 0..5);
    wait_stats(&sender, WAIT, "the drops", |s| s.dropped() == 3);
    let report = sender.flush(Duration::from_millis(200));
    assert_eq!((report.outstanding, report.dropped), (2, 3), "{report:?}");
    drop(tx);
    let shutdown = sender.close_timeout(Duration::from_millis(200));
    assert_eq!(shutdown.report.handed_back, 2);
    assert_eq!(
        shutdown.report.dropped, 3,
        "the final report covers the whole life"
    );
    assert!(!shutdown.report.all_delivered());
    assert_eq!(shutdown.stats.dropped(), 3);
}
