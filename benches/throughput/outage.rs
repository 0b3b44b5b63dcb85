//! The outage scenario: the collector is killed (SIGKILL) while entries flow, stays down
//! for `OUTAGE`, and comes back on the same port. Measures how long delivery stays
//! stopped after it is back, under each reconnect backoff policy.

use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use logsender::{Batching, Compression, Config, Level, LogEntry, LogPayload, LogSender};

use crate::roles::{print_result, watchdog};
use crate::sink::SinkProcess;

/// Backoff policies: (name, initial delay, cap, multiplier).
pub const OUTAGE_POLICIES: [(&str, Duration, Duration, f64); 3] = [
    // GoSight's agent: 1 s doubling up to 15 min.
    ("gosight-1s-x2-15min", ms(1_000), ms(900_000), 2.0),
    // gRPC's connection backoff multiplier, a faster first retry, a 30 s cap.
    ("250ms-x1.6-30s", ms(250), ms(30_000), 1.6),
    // logsender's defaults.
    ("default-100ms-x1.5-10s", ms(100), ms(10_000), 1.5),
];

const fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// How long the collector stays down, in milliseconds: the delay left after it is back
/// depends on where the outage ends in the backoff schedule, so several lengths.
pub const OUTAGES_MS: [u64; 3] = [1500, 3000, 7000];

/// Every (policy, outage) pair, as task names: `{policy}/{ms}ms`.
pub fn variants() -> Vec<&'static str> {
    OUTAGE_POLICIES
        .iter()
        .flat_map(|p| OUTAGES_MS.map(|ms| &*Box::leak(format!("{}/{ms}ms", p.0).into_boxed_str())))
        .collect()
}

pub fn outage_main(args: &[String]) {
    let [variant, port, ..] = args else {
        panic!("usage: __outage POLICY/MSms PORT");
    };
    let (policy, outage) = variant.rsplit_once('/').expect("POLICY/MSms");
    let outage =
        Duration::from_millis(outage.trim_end_matches("ms").parse().expect("outage in ms"));
    let (_, initial, max, multiplier) = *OUTAGE_POLICIES
        .iter()
        .find(|p| p.0 == policy)
        .expect("policy");
    let port: u16 = port.parse().expect("port");
    watchdog(Duration::from_secs(120));
    let mut sink = SinkProcess::spawn(port);
    let config = Config::builder(format!("127.0.0.1:{port}"))
        .plaintext()
        .compression(Compression::None)
        .reconnect_backoff(initial, max)
        .backoff_multiplier(multiplier)
        .build()
        .expect("config");
    let sender = LogSender::new(config).expect("sender");
    sender
        .wait_connected(Duration::from_secs(10))
        .expect("connects");
    let log = sender
        .entry_sender(
            Batching::new(LogPayload::from_host("outage-bench")).linger(Duration::from_millis(5)),
        )
        .expect("entry sender");
    let stop = Arc::new(AtomicBool::new(false));
    let producer = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut i = 0u64;
            while !stop.load(Relaxed) {
                let _ = log.try_log(LogEntry::new(Level::Info, format!("line {i}")));
                i += 1;
                std::thread::sleep(Duration::from_millis(2));
            }
        })
    };
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        sink.snapshot().messages > 0,
        "nothing delivered before the outage"
    );
    drop(sink); // SIGKILL
    let down = Instant::now();
    std::thread::sleep(outage);
    let mut sink = SinkProcess::spawn(port);
    let up = Instant::now();
    let mut connected = None;
    let delivered = loop {
        if connected.is_none() && sender.wait_connected(Duration::ZERO).is_ok() {
            connected = Some(up.elapsed());
        }
        if sink.snapshot().messages > 0 {
            break up.elapsed();
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let connected = connected.unwrap_or(delivered);
    stop.store(true, Relaxed);
    producer.join().expect("producer");
    let shutdown = sender.shutdown(Duration::from_secs(10));
    print_result(&[
        ("outage_s", up.duration_since(down).as_secs_f64()),
        ("reconnect_ms", connected.as_secs_f64() * 1e3),
        ("first_delivery_ms", delivered.as_secs_f64() * 1e3),
        ("reconnects", shutdown.stats.reconnects as f64),
        ("undelivered", shutdown.undelivered.len() as f64),
    ]);
}
