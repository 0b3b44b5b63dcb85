//! The logsender demo: starts an embedded GoSight-compatible sink on 127.0.0.1, ships a
//! few thousand realistic log payloads through a worker pool from plain producer
//! threads, tens of thousands of single entries through an `EntrySender`, and its own
//! `log::info!` lines through the `log` bridge, stops and restarts the sink once
//! midway, and prints what was sent, received and retried.
//!
//! Run it with `scripts/demo.sh` (or `cargo run --release --example demo`).
//! Optional arguments: `--payloads N` (default 4000), `--entries N` (default 20000),
//! `--workers N` (default 4).

#[path = "../tests/support/sink.rs"]
mod sink;

use std::collections::{HashMap, HashSet};
use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use logsender::{
    crossbeam_channel, Batching, Config, Level, LogBridge, LogEntry, LogMeta, LogPayload,
    LogSender, Meta,
};
use sink::{Ending, Sink};

const PRODUCERS: usize = 4;
/// Threads logging single entries through the `EntrySender`.
const LOGGERS: usize = 2;
/// The prefix of the entry-level lines, to find them at the sink.
const APP_LINE: &str = "app line ";
/// The prefix of the demo's own `log` lines, shipped by the bridge.
const DEMO_LINE: &str = "demo: ";
/// The agent id of the bridge's payloads.
const BRIDGE_AGENT: &str = "agent-7f3a-log";

fn main() -> ExitCode {
    let mut payloads = 4000usize;
    let mut entries = 20_000usize;
    let mut workers = 4usize;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let value = args.next().and_then(|v| v.parse().ok());
        match (arg.as_str(), value) {
            ("--payloads", Some(n)) => payloads = n,
            ("--entries", Some(n)) => entries = n,
            ("--workers", Some(n)) => workers = n,
            _ => {
                eprintln!("usage: demo [--payloads N] [--entries N] [--workers N]");
                return ExitCode::from(2);
            }
        }
    }

    let mut sink = Sink::with_ending(Ending::OkNoMessage);
    println!(
        "sink      listening on {} (ends streams like GoSight: OK, no message)",
        sink.addr()
    );

    let config = Config::builder(sink.addr())
        .plaintext()
        .reconnect_backoff(Duration::from_millis(100), Duration::from_secs(2))
        .commit_every(500)
        .commit_interval(Duration::from_millis(200))
        .build()
        .expect("valid config");
    // The demo's own `log::info!` lines go to the collector too, through the bridge,
    // which owns the sender from here on.
    let guard = LogBridge::new(Batching::new(LogPayload::from_host(BRIDGE_AGENT)))
        .filter("info")
        .install(LogSender::new(config).expect("start sender"))
        .expect("install the log bridge");
    let sender = guard.sender();
    log::info!("{DEMO_LINE}started, {payloads} payloads and {entries} entries to ship");
    let (tx, rx) = crossbeam_channel::bounded::<LogPayload>(512);
    sender
        .start_worker_pool(rx, workers)
        .expect("start workers");
    println!("sender    {workers} workers, at-least-once, {PRODUCERS} producer threads, {payloads} payloads");
    // The entry level: single lines, batched into payloads stamped with this host.
    let template = LogPayload::from_host("agent-7f3a");
    println!(
        "entries   {LOGGERS} threads log {entries} single entries through an EntrySender (host {:?}, endpoint {:?})",
        template.hostname, template.endpoint_id
    );
    let log = sender
        .entry_sender(Batching::new(template).linger(Duration::from_millis(50)))
        .expect("entry sender");
    let loggers: Vec<_> = (0..LOGGERS)
        .map(|t| {
            let log = log.clone();
            thread::spawn(move || {
                for i in (t..entries).step_by(LOGGERS) {
                    let level = [Level::Info, Level::Info, Level::Warning, Level::Error][i % 4];
                    let entry = LogEntry::new(level, format!("{APP_LINE}{i}"))
                        .with_source("demo")
                        .with_field("worker", t.to_string());
                    if log.log(entry).is_err() {
                        break;
                    }
                    if i % 512 == 0 {
                        thread::sleep(Duration::from_millis(2));
                    }
                }
                log::info!(thread = t; "{DEMO_LINE}entry thread {t} done");
            })
        })
        .collect();
    drop(log);

    let produced = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let producers: Vec<_> = (0..PRODUCERS)
        .map(|p| {
            let tx = tx.clone();
            let produced = produced.clone();
            thread::spawn(move || {
                for seq in (p..payloads).step_by(PRODUCERS) {
                    if tx.send(realistic_payload(seq)).is_err() {
                        break;
                    }
                    produced.fetch_add(1, Ordering::Relaxed);
                    if seq % 64 == 0 {
                        // A real agent batches on a timer; pace a little so the restart
                        // lands mid-stream.
                        thread::sleep(Duration::from_millis(2));
                    }
                }
                log::info!(producer = p; "{DEMO_LINE}producer {p} done");
            })
        })
        .collect();
    drop(tx);

    // Midway: the collector goes away and comes back on the same port.
    while produced.load(Ordering::Relaxed) < payloads / 2 {
        thread::sleep(Duration::from_millis(5));
    }
    let before = sink.count();
    log::info!("{DEMO_LINE}stopping the sink after {before} payloads");
    sink.stop();
    println!(
        "sink      stopped after receiving {before} payloads ({} produced so far)",
        produced.load(Ordering::Relaxed)
    );
    thread::sleep(Duration::from_millis(500));
    let s = sender.stats();
    println!(
        "sender    while down: state {:?}, holding {} payloads ({} KiB), queue {}",
        s.state,
        s.unacked,
        s.unacked_bytes / 1024,
        s.queue_depth
    );
    sink.restart();
    log::info!("{DEMO_LINE}sink restarted");
    println!("sink      restarted on {}", sink.addr());

    for p in producers.into_iter().chain(loggers) {
        p.join().expect("producer thread");
    }
    let flushed = sender.flush(Duration::from_secs(30));
    let left = flushed.outstanding + flushed.entries_outstanding;
    let elapsed = started.elapsed();
    let stats = sender.stats();
    let undelivered = guard.shutdown(Duration::from_secs(10)).undelivered;

    let (bridged, received): (Vec<LogPayload>, Vec<LogPayload>) = sink
        .received()
        .into_iter()
        .partition(|p| p.agent_id == BRIDGE_AGENT);
    let (received, from_entries): (Vec<LogPayload>, Vec<LogPayload>) = received
        .into_iter()
        .partition(|p| p.host_id.starts_with("seq-"));
    let demo_lines: HashSet<&str> = bridged
        .iter()
        .flat_map(|p| p.logs.iter().map(|e| e.message.as_str()))
        .filter(|m| m.starts_with(DEMO_LINE))
        .collect();
    // started, stopping, restarted, and one per thread.
    let demo_expected = 3 + PRODUCERS + LOGGERS;
    let demo_missing = demo_expected.saturating_sub(demo_lines.len());
    let lines: HashSet<&str> = from_entries
        .iter()
        .flat_map(|p| p.logs.iter().map(|e| e.message.as_str()))
        .collect();
    let entries_missing = (0..entries)
        .filter(|i| !lines.contains(format!("{APP_LINE}{i}").as_str()))
        .count();
    let unique: HashSet<&str> = received.iter().map(|p| p.host_id.as_str()).collect();
    let missing = (0..payloads)
        .filter(|seq| !unique.contains(format!("seq-{seq}").as_str()))
        .count();
    let mut by_level: HashMap<&str, usize> = HashMap::new();
    for p in &received {
        for e in &p.logs {
            *by_level.entry(e.level.as_str()).or_default() += 1;
        }
    }

    println!();
    println!(
        "sent      {payloads} payloads in {:.2?} ({:.0} payloads/s)",
        elapsed,
        payloads as f64 / elapsed.as_secs_f64()
    );
    println!(
        "received  {} payloads at the sink, {} unique, {} duplicates (re-sent after the restart), {missing} missing",
        received.len(),
        unique.len(),
        received.len() - unique.len()
    );
    println!("          log entries by level: {by_level:?}");
    println!(
        "entries   {} of {entries} single entries arrived, in {} payloads; {entries_missing} missing",
        lines.len(),
        from_entries.len()
    );
    println!(
        "bridge    {} of the demo's own {demo_expected} log::info! lines arrived; {demo_missing} missing",
        demo_lines.len()
    );
    println!(
        "delivery  acknowledged {}, retried {} (of which re-sent after a fault {}), dropped {}, dead-lettered {}",
        stats.acknowledged, stats.retried, stats.resent_after_fault, stats.dropped(), stats.dead_lettered
    );
    println!(
        "streams   {} epochs committed, {} failed, {} reconnects, {:.1} MiB written",
        stats.epochs_committed,
        stats.epochs_failed,
        stats.reconnects,
        stats.bytes_sent as f64 / (1 << 20) as f64
    );
    if let Some(e) = &stats.last_error {
        println!("          last error: {e}");
    }
    println!(
        "close     {} undelivered payloads handed back, flush left {left}",
        undelivered.len()
    );

    if missing == 0 && entries_missing == 0 && demo_missing == 0 && undelivered.is_empty() {
        println!(
            "\nOK: every payload, every entry and every log line reached the sink at least once."
        );
        ExitCode::SUCCESS
    } else {
        println!(
            "\nFAILED: {missing} payloads, {entries_missing} entries and {demo_missing} log lines missing, {} undelivered.",
            undelivered.len()
        );
        ExitCode::FAILURE
    }
}

/// A payload shaped like what a host agent ships: a handful of journald-style entries
/// with varied messages, fields, tags and full host metadata.
fn realistic_payload(seq: usize) -> LogPayload {
    const MESSAGES: [&str; 6] = [
        "Started Session 42 of user deploy.",
        "GET /api/v1/orders 200 12ms",
        "connection reset by peer while reading response header from upstream",
        "disk usage on /var is at 81%, above the warning threshold of 80%",
        "kernel: TCP: request_sock_TCP: Possible SYN flooding on port 443. Sending cookies.",
        "payment-service: retrying charge for order 7731 (attempt 2/5) after timeout",
    ];
    const LEVELS: [Level; 4] = [Level::Info, Level::Info, Level::Warning, Level::Error];
    let entries = 3 + seq % 8;
    let logs = (0..entries)
        .map(|i| {
            let k = seq * 7 + i;
            let mut fields = HashMap::new();
            fields.insert("request_id".to_string(), format!("{:016x}", k * 2654435761));
            fields.insert("latency_ms".to_string(), (k % 250).to_string());
            let mut tags = HashMap::new();
            tags.insert("team".to_string(), "payments".to_string());
            LogEntry {
                timestamp: Some(SystemTime::now()),
                level: LEVELS[k % LEVELS.len()].as_str().into(),
                message: MESSAGES[k % MESSAGES.len()].into(),
                source: "journald".into(),
                category: "system".into(),
                pid: 1000 + (k % 300) as i32,
                fields,
                tags,
                meta: Some(LogMeta {
                    platform: "linux".into(),
                    app_name: "payment-service".into(),
                    app_version: "2.4.1".into(),
                    unit: "payment.service".into(),
                    service: "payments".into(),
                    user: "svc-pay".into(),
                    executable: "/usr/bin/payment-service".into(),
                    ..Default::default()
                }),
            }
        })
        .collect();
    LogPayload {
        agent_id: "agent-7f3a".into(),
        host_id: format!("seq-{seq}"),
        hostname: "web-03.prod.example".into(),
        endpoint_id: "host-web-03".into(),
        timestamp: Some(SystemTime::now()),
        logs,
        meta: Some(Meta {
            hostname: "web-03.prod.example".into(),
            ip_address: "10.0.3.17".into(),
            os: "linux".into(),
            os_version: "Debian 12".into(),
            kernel_version: "6.1.0-27-amd64".into(),
            architecture: "x86_64".into(),
            environment: "prod".into(),
            agent_version: "0.1.0".into(),
            agent_id: "agent-7f3a".into(),
            ..Default::default()
        }),
    }
}
