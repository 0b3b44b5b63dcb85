//! The collector dies mid-stream and comes back on the same port; sending resumes by
//! itself and, in AtLeastOnce, every payload arrives at least once.
//!
//! Two ways to die: a child-process sink that is SIGKILLed (a crash: no goodbye on the
//! socket), and an in-process sink that is stopped (calls cancelled, then shut down).

mod support;

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use logsender::{DeliveryMode, LogPayload, LogSender};
use support::child::{child_main, ChildSink};
use support::helpers::{
    assert_at_least_once, assert_no_background_panic, temp_path, wait_until, watch_panics, within,
};
use support::sink::Sink;
use support::{fast_config, id_of, payload};

const N: usize = 3_000;
const BOUND: Duration = Duration::from_secs(20);

/// The child-process sink's body; a no-op in a normal test run (it is ignored there).
#[test]
#[ignore = "entry point of the child-process sink"]
fn child_sink_entry() {
    child_main()
}

/// Feeds `N` payloads of `producer` through a bounded channel at a steady pace, so
/// that the fault lands mid-stream. Halfway through it waits (bounded) for `fault` to
/// be set, so the fault always happens before the producer is done; the rest of the
/// payloads are sent while the collector is down or coming back.
fn steady_producer(
    producer: usize,
    tx: crossbeam_channel::Sender<LogPayload>,
    fault: Arc<AtomicBool>,
) -> std::thread::JoinHandle<Vec<LogPayload>> {
    std::thread::spawn(move || {
        let mut sent = Vec::with_capacity(N);
        for seq in 0..N {
            let p = payload(producer, seq);
            tx.send(p.clone()).expect("queue payload");
            sent.push(p);
            if seq % 50 == 49 {
                std::thread::sleep(Duration::from_millis(5));
            }
            if seq == N / 2 {
                wait_until(BOUND, || fault.load(Ordering::SeqCst));
            }
        }
        sent
    })
}

#[test]
fn child_sink_killed_and_restarted_mid_stream() {
    watch_panics();
    let record = temp_path("kill-restart.records");
    let mut child = ChildSink::spawn("child_sink_entry", 0, &record);
    let config = fast_config(&child.addr())
        .delivery(DeliveryMode::AtLeastOnce)
        .close_timeout(BOUND)
        .build()
        .unwrap();
    let sender = LogSender::new(config).unwrap();
    let (tx, rx) = crossbeam_channel::bounded(128);
    sender.start_worker_pool(rx, 2).unwrap();
    let fault = Arc::new(AtomicBool::new(false));
    let producer = steady_producer(1, tx, fault.clone());

    // Kill it while payloads are flowing.
    assert!(
        wait_until(BOUND, || child.records().len() >= N / 5),
        "child recorded only {} payloads; stats: {:?}",
        child.records().len(),
        sender.stats()
    );
    let before_kill = sender.stats();
    child.kill();
    fault.store(true, Ordering::SeqCst);
    // While it is dead the sender notices and holds on (no loss, no dead letters).
    assert!(
        wait_until(BOUND, || sender.stats().epochs_failed
            > before_kill.epochs_failed),
        "the broken stream was not noticed: {:?}",
        sender.stats()
    );
    std::thread::sleep(Duration::from_millis(200));
    child.restart();

    let sent = producer.join().expect("producer panicked");
    assert!(
        wait_until(BOUND, || sender.stats().acknowledged >= N as u64),
        "not everything acknowledged after the restart: {:?}",
        sender.stats()
    );
    let s = sender.stats();
    assert!(s.reconnects >= 1, "{s:?}");
    assert_eq!(s.acknowledged, N as u64, "{s:?}");
    assert_eq!(s.dead_lettered, 0, "{s:?}");
    assert_eq!(s.dropped(), 0, "{s:?}");

    let undelivered = within(BOUND + Duration::from_secs(5), "close", move || {
        sender.close()
    });
    assert!(
        undelivered.is_empty(),
        "close returned {} payloads",
        undelivered.len()
    );

    let records = child.records();
    drop(child);
    std::fs::remove_file(&record).ok();
    let recorded: HashSet<&str> = records
        .iter()
        .filter_map(|line| line.split_once(' ').map(|(_, id)| id))
        .collect();
    let sent_ids: HashSet<String> = sent.iter().map(id_of).collect();
    let mut missing: Vec<&String> = sent_ids
        .iter()
        .filter(|id| !recorded.contains(id.as_str()))
        .collect();
    missing.sort();
    assert!(
        missing.is_empty(),
        "{} of {N} payloads never reached a sink (first few: {:?})",
        missing.len(),
        &missing[..missing.len().min(10)]
    );
    for line in &records {
        assert!(
            line.starts_with("agent-1 1-"),
            "foreign record line {line:?}"
        );
    }
    assert_no_background_panic();
}

#[test]
fn in_process_sink_stopped_and_restarted_mid_stream() {
    watch_panics();
    let mut sink = Sink::start();
    let config = fast_config(&sink.addr())
        .delivery(DeliveryMode::AtLeastOnce)
        .close_timeout(BOUND)
        .build()
        .unwrap();
    let sender = LogSender::new(config).unwrap();
    let (tx, rx) = crossbeam_channel::bounded(128);
    sender.start_worker_pool(rx, 2).unwrap();
    let fault = Arc::new(AtomicBool::new(false));
    let producer = steady_producer(2, tx, fault.clone());

    assert!(
        sink.wait_for(N / 5, BOUND),
        "sink got only {}; stats: {:?}",
        sink.count(),
        sender.stats()
    );
    let before_stop = sender.stats();
    sink.stop();
    fault.store(true, Ordering::SeqCst);
    assert!(
        wait_until(BOUND, || sender.stats().epochs_failed
            > before_stop.epochs_failed),
        "the cancelled stream was not noticed: {:?}",
        sender.stats()
    );
    std::thread::sleep(Duration::from_millis(200));
    sink.restart();

    let sent = producer.join().expect("producer panicked");
    assert!(
        wait_until(BOUND, || sender.stats().acknowledged >= N as u64),
        "not everything acknowledged after the restart: {:?}",
        sender.stats()
    );
    let s = sender.stats();
    assert!(s.reconnects >= 1, "{s:?}");
    assert_eq!(s.acknowledged, N as u64, "{s:?}");
    assert_eq!(s.dead_lettered, 0, "{s:?}");

    let undelivered = within(BOUND + Duration::from_secs(5), "close", move || {
        sender.close()
    });
    assert!(
        undelivered.is_empty(),
        "close returned {} payloads",
        undelivered.len()
    );
    assert_at_least_once(&sent, &sink.received());
    assert_no_background_panic();
}
