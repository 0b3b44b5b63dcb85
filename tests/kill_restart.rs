//! The collector dies mid-stream and comes back on the same port; sending resumes by
//! itself and, in AtLeastOnce, every payload arrives at least once.
//!
//! Two ways to die: a child-process sink that is SIGKILLed (a crash: no goodbye on the
//! socket), and an in-process sink that is stopped (calls cancelled, then shut down).
//! Each on both wires (`both_wires!`): GoSight's stream, and OTLP's `Export` calls,
//! where the calls in flight (or the next ones) fail and are re-sent.

mod support;

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use logsender::{DeliveryMode, LogPayload, Stats, Wire};
use support::child::{child_main, ChildSink};
use support::helpers::{
    assert_at_least_once, assert_close_returns_nothing, assert_no_background_panic, temp_path,
    wait_until, watch_panics,
};
use support::sink::Sink;
use support::{fast_config_on, id_of, payload, sender_with_pool};

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

/// A collector that a test can take down mid-stream and bring back on the same port.
trait Fault {
    /// How it is named in failure messages.
    const NAME: &'static str;
    /// What the sender sees when the collector goes down (for failure messages).
    const BREAK: &'static str;
    fn addr(&self) -> String;
    /// How many payloads it has received so far.
    fn count(&self) -> usize;
    /// Waits up to `timeout` until it has received at least `n` payloads.
    fn wait_for(&self, n: usize, timeout: Duration) -> bool;
    fn take_down(&mut self);
    fn bring_back(&mut self);
}

impl Fault for ChildSink {
    const NAME: &'static str = "child sink";
    const BREAK: &'static str = "broken";
    fn addr(&self) -> String {
        ChildSink::addr(self)
    }
    fn count(&self) -> usize {
        self.records().len()
    }
    fn wait_for(&self, n: usize, timeout: Duration) -> bool {
        wait_until(timeout, || self.records().len() >= n)
    }
    fn take_down(&mut self) {
        self.kill();
    }
    fn bring_back(&mut self) {
        self.restart();
    }
}

impl Fault for Sink {
    const NAME: &'static str = "sink";
    const BREAK: &'static str = "cancelled";
    fn addr(&self) -> String {
        Sink::addr(self)
    }
    fn count(&self) -> usize {
        Sink::count(self)
    }
    fn wait_for(&self, n: usize, timeout: Duration) -> bool {
        Sink::wait_for(self, n, timeout)
    }
    fn take_down(&mut self) {
        self.stop();
    }
    fn bring_back(&mut self) {
        self.restart();
    }
}

/// The shared flow: `producer` streams `N` payloads to `collector` in AtLeastOnce mode;
/// once a fifth has arrived the collector is taken down, the sender must notice (a
/// failed epoch), the collector comes back, and everything must be acknowledged and
/// `close` hand nothing back. Returns what was sent and the stats once all were
/// acknowledged; what arrived is for the caller to check.
fn down_and_back_mid_stream<F: Fault>(
    collector: &mut F,
    producer: usize,
    wire: Wire,
) -> (Vec<LogPayload>, Stats) {
    let config = fast_config_on(&collector.addr(), wire)
        .delivery(DeliveryMode::AtLeastOnce)
        .close_timeout(BOUND)
        .build()
        .unwrap();
    let (sender, tx) = sender_with_pool(config, 128, 2);
    let fault = Arc::new(AtomicBool::new(false));
    let producer = steady_producer(producer, tx, fault.clone());

    // Take it down while payloads are flowing.
    assert!(
        collector.wait_for(N / 5, BOUND),
        "{} got only {} payloads; stats: {:?}",
        F::NAME,
        collector.count(),
        sender.stats()
    );
    let before = sender.stats();
    collector.take_down();
    fault.store(true, Ordering::SeqCst);
    // While it is down the sender notices and holds on (no loss, no dead letters).
    assert!(
        wait_until(BOUND, || sender.stats().epochs_failed
            > before.epochs_failed),
        "the {} stream was not noticed: {:?}",
        F::BREAK,
        sender.stats()
    );
    std::thread::sleep(Duration::from_millis(200));
    collector.bring_back();

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

    assert_close_returns_nothing(sender, BOUND + Duration::from_secs(5));
    (sent, s)
}

both_wires! {
fn child_sink_killed_and_restarted_mid_stream(wire: Wire) {
    watch_panics();
    let record = temp_path("kill-restart.records");
    let mut child = ChildSink::spawn("child_sink_entry", 0, &record);
    let (sent, s) = down_and_back_mid_stream(&mut child, 1, wire);
    assert_eq!(s.dropped(), 0, "{s:?}");

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
}

both_wires! {
fn in_process_sink_stopped_and_restarted_mid_stream(wire: Wire) {
    watch_panics();
    let mut sink = Sink::start();
    let (sent, _) = down_and_back_mid_stream(&mut sink, 2, wire);
    assert_at_least_once(&sent, &sink.received());
    sink.assert_spoke(wire);
    assert_no_background_panic();
}
}
