//! The backlog scenario: the collector is down for a while, then up. Measures the
//! memory bounds and the drain (payloads are built on the fly here, not pre-built).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use logsender::{Compression, Config, DeliveryMode, LogSender, OverflowPolicy};

use crate::matrix::Size;
use crate::payloads::templates;
use crate::procfs::proc_status_kb;
use crate::roles::{print_result, scaled, watchdog};
use crate::sink::SinkProcess;

/// Backlog variants: (name, max_buffered_payloads, max_buffered_bytes).
pub const BACKLOG_VARIANTS: [(&str, usize, usize); 2] = [
    ("payload-bound", 2_000, 64 << 20),
    ("byte-bound", 10_000, 16 << 20),
];
const BACKLOG_PAYLOADS: usize = 5_000;
const BACKLOG_DOWN: Duration = Duration::from_millis(2_000);
const BACKLOG_QUEUE: usize = 256;
const BACKLOG_WORKERS: usize = 4;
/// How long the backlog client waits for the first write after the sink is up before it
/// declares the sender stuck and kicks it with `flush`.
const STALL_WAIT: Duration = Duration::from_secs(2);

pub fn backlog_main(args: &[String]) {
    let [variant, port, ..] = args else {
        panic!("usage: __backlog VARIANT PORT");
    };
    let (_, max_payloads, max_bytes) = *BACKLOG_VARIANTS
        .iter()
        .find(|v| v.0 == variant)
        .expect("variant");
    let port: u16 = port.parse().expect("port");
    let n = scaled(BACKLOG_PAYLOADS);
    watchdog(Duration::from_secs(180));
    let templates = templates(Size::Medium);
    let config = Config::builder(format!("127.0.0.1:{port}"))
        .plaintext()
        .compression(Compression::None)
        .delivery(DeliveryMode::AtLeastOnce)
        .max_buffered_payloads(max_payloads)
        .max_buffered_bytes(max_bytes)
        .overflow(OverflowPolicy::Block { timeout: None })
        .reconnect_backoff(Duration::from_millis(50), Duration::from_millis(250))
        .connect_timeout(Duration::from_secs(1))
        .build()
        .expect("config");
    let rss_base_mb = proc_status_kb("VmRSS") as f64 / 1024.0;
    let sender = Arc::new(LogSender::new(config).expect("sender"));
    let (tx, rx) = crossbeam_channel::bounded(BACKLOG_QUEUE);
    sender
        .start_worker_pool(rx, BACKLOG_WORKERS)
        .expect("workers");
    let start = Instant::now();
    let produced = Arc::new(AtomicU64::new(0));
    let producer = {
        let produced = produced.clone();
        std::thread::spawn(move || {
            for i in 0..n {
                tx.send(templates[i % templates.len()].clone())
                    .expect("queue");
                produced.fetch_add(1, Relaxed);
            }
        })
    };
    // A sampler for the memory bound and the first acknowledgement.
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (sender, stop) = (sender.clone(), stop.clone());
        std::thread::spawn(move || {
            let (mut max_held, mut max_bytes, mut first_ack) = (0u64, 0u64, None);
            while !stop.load(Relaxed) {
                let s = sender.stats();
                max_held = max_held.max(s.unacked);
                max_bytes = max_bytes.max(s.unacked_bytes);
                if first_ack.is_none() && s.acknowledged > 0 {
                    first_ack = Some(Instant::now());
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            (max_held, max_bytes, first_ack)
        })
    };
    std::thread::sleep(BACKLOG_DOWN.saturating_sub(start.elapsed()));
    let held_at_down_end = sender.stats();
    let produced_at_up = produced.load(Relaxed);
    let rss_down_mb = proc_status_kb("VmRSS") as f64 / 1024.0;
    let mut sink = SinkProcess::spawn(port);
    let up = Instant::now();
    // Regression guard for a fixed defect (workers blocked by a full buffer missed the
    // wake-up after a reconnect, so nothing was written): if nothing is written within
    // STALL_WAIT, say so in the table and unstick it with `flush`.
    let mut stalled = false;
    while sender.stats().sent == 0 {
        if up.elapsed() >= STALL_WAIT {
            stalled = true;
            let _ = sender.flush(Duration::from_millis(1)).outstanding;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let unstuck = up.elapsed();
    producer.join().expect("producer");
    let outstanding = sender.flush(Duration::from_secs(120)).outstanding;
    let done = Instant::now();
    stop.store(true, Relaxed);
    let (max_held, max_held_bytes, first_ack) = sampler.join().expect("sampler");
    let stats = sender.stats();
    let sender = Arc::into_inner(sender).expect("sole owner");
    let undelivered = sender.close().undelivered.len();
    let seen = sink.snapshot();
    let backlog = held_at_down_end.unacked + held_at_down_end.queue_depth;
    let first_ack = first_ack.unwrap_or(done);
    // Drain is timed from the first write after the sink came up (so a stall and its
    // kick are reported apart, in `first_write_ms`).
    let drain = done - (up + unstuck);
    let drain_rate = (n as f64) / drain.as_secs_f64();
    print_result(&[
        ("n", n as f64),
        ("max_payloads", max_payloads as f64),
        ("max_bytes_mb", max_bytes as f64 / 1048576.0),
        ("down_secs", up.duration_since(start).as_secs_f64()),
        ("produced_at_up", produced_at_up as f64),
        ("backlog_at_up", backlog as f64),
        (
            "held_mb_at_up",
            held_at_down_end.unacked_bytes as f64 / 1048576.0,
        ),
        (
            "first_ack_ms",
            first_ack.saturating_duration_since(up).as_secs_f64() * 1e3,
        ),
        ("drain_secs", drain.as_secs_f64()),
        ("stalled", if stalled { 1.0 } else { 0.0 }),
        ("first_write_ms", unstuck.as_secs_f64() * 1e3),
        ("drain_rate", drain_rate),
        ("max_held", max_held as f64),
        ("max_held_mb", max_held_bytes as f64 / 1048576.0),
        ("rss_base_mb", rss_base_mb),
        ("rss_down_mb", rss_down_mb),
        ("rss_peak_mb", proc_status_kb("VmHWM") as f64 / 1024.0),
        ("acked", stats.acknowledged as f64),
        ("epochs", stats.epochs_committed as f64),
        ("outstanding", outstanding as f64),
        ("undelivered", undelivered as f64),
        ("sink_messages", seen.messages as f64),
    ]);
}
