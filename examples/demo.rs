//! The logsender demo: starts an embedded GoSight-compatible sink on 127.0.0.1, ships a
//! few thousand realistic log payloads through a worker pool from plain producer
//! threads, tens of thousands of single entries through an `EntrySender`, and its own
//! `log::info!` lines through the `log` bridge, stops and restarts the sink once
//! midway, and prints what was sent, received and retried.
//!
//! Then the disk spool: the demo runs itself again as a child process
//! (`LOGSENDER_DEMO_CHILD=spool`) that ships payloads into a spool while the collector
//! is down and prints what `LogSender::sync` reported durable, and kills it with SIGKILL
//! while it is still shipping; a second child on the same directory, with the collector
//! up, sends what the spool kept. The demo checks that every payload the first child
//! reported durable arrived, and fails if one did not.
//!
//! Run it with `scripts/demo.sh` (or `cargo run --release --example demo`).
//! Optional arguments: `--wire gosight|otlp` (default `gosight`: GoSight's
//! `SubmitStream`; `otlp`: OTLP's `LogsService/Export`, which the same sink serves),
//! `--payloads N` (default 4000), `--entries N` (default 20000), `--workers N` (default 4).

#[path = "../tests/support/sink.rs"]
mod sink;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use logsender::{
    crossbeam_channel, Batching, Config, EventHandler, Level, LogBridge, LogEntry, LogMeta,
    LogPayload, LogSender, Meta, SpoolEvent, Wire,
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

/// Set in the environment of the demo's child processes (the spool act): `spool`.
const CHILD_ENV: &str = "LOGSENDER_DEMO_CHILD";
/// The wire, for the children: `gosight` or `otlp`.
const WIRE_ENV: &str = "LOGSENDER_DEMO_WIRE";

/// The wire every sender of the demo speaks (`--wire`; a child reads `WIRE_ENV`).
static WIRE: OnceLock<Wire> = OnceLock::new();

fn wire() -> Wire {
    *WIRE.get_or_init(|| {
        let named = std::env::var(WIRE_ENV).ok();
        parse_wire(named.as_deref().unwrap_or("gosight")).unwrap_or_default()
    })
}

fn parse_wire(name: &str) -> Option<Wire> {
    match name {
        "gosight" => Some(Wire::GoSightStream),
        "otlp" => Some(Wire::OtlpLogs),
        _ => None,
    }
}

fn wire_name() -> &'static str {
    match wire() {
        Wire::OtlpLogs => "otlp",
        _ => "gosight",
    }
}
/// The `host_id` prefix of the spool act's payloads: `spool-0`, `spool-1`, ...
const SPOOL_ID: &str = "spool-";
/// Payloads the first spool child queues between two `sync` calls.
const SPOOL_BATCH: usize = 250;
/// Durable reports the parent waits for before it kills the first spool child.
const SPOOL_REPORTS: usize = 4;
/// The spool act gives up (and fails) after this long.
const SPOOL_ACT_LIMIT: Duration = Duration::from_secs(60);

fn main() -> ExitCode {
    if let Ok(role) = std::env::var(CHILD_ENV) {
        return spool_child(&role, std::env::args().skip(1).collect());
    }
    let mut payloads = 4000usize;
    let mut entries = 20_000usize;
    let mut workers = 4usize;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let raw = args.next();
        if arg == "--wire" {
            match raw.as_deref().and_then(parse_wire) {
                Some(w) => {
                    let _ = WIRE.set(w);
                    continue;
                }
                None => {
                    eprintln!("usage: demo [--wire gosight|otlp] [--payloads N] [--entries N] [--workers N]");
                    return ExitCode::from(2);
                }
            }
        }
        let value = raw.and_then(|v| v.parse().ok());
        match (arg.as_str(), value) {
            ("--payloads", Some(n)) => payloads = n,
            ("--entries", Some(n)) => entries = n,
            ("--workers", Some(n)) => workers = n,
            _ => {
                eprintln!(
                    "usage: demo [--wire gosight|otlp] [--payloads N] [--entries N] [--workers N]"
                );
                return ExitCode::from(2);
            }
        }
    }

    let mut sink = Sink::with_ending(Ending::OkNoMessage);
    match wire() {
        Wire::OtlpLogs => println!(
            "sink      listening on {} (LogsService/Export: OK with an empty response)",
            sink.addr()
        ),
        _ => println!(
            "sink      listening on {} (ends streams like GoSight: OK, no message)",
            sink.addr()
        ),
    }

    let config = Config::builder(sink.addr())
        .plaintext()
        .wire(wire())
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
    println!(
        "sender    wire {}, {workers} workers, at-least-once, {PRODUCERS} producer threads, {payloads} payloads",
        wire_name()
    );
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

    let spool = spool_act();

    let shipped =
        missing == 0 && entries_missing == 0 && demo_missing == 0 && undelivered.is_empty();
    if shipped {
        println!(
            "\nOK: every payload, every entry and every log line reached the sink at least once."
        );
    } else {
        println!(
            "\nFAILED: {missing} payloads, {entries_missing} entries and {demo_missing} log lines missing, {} undelivered.",
            undelivered.len()
        );
    }
    match &spool {
        Ok(act) if act.lost == 0 => println!(
            "OK: the sender was killed with {} payloads reported durable, and all of them arrived after a restart ({} duplicates).",
            act.durable, act.duplicates
        ),
        Ok(act) => println!(
            "FAILED: {} of the {} payloads the killed sender reported durable never arrived.",
            act.lost, act.durable
        ),
        Err(e) => println!("FAILED: the spool act did not complete: {e}"),
    }
    let spool_ok = spool.is_ok_and(|act| act.lost == 0);
    if shipped && spool_ok {
        ExitCode::SUCCESS
    } else {
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

// ---------------------------------------------------------------------------------------
// The spool act: the sender's own process dies, and nothing it reported durable is lost.
// ---------------------------------------------------------------------------------------

/// What the spool act found at the sink.
struct SpoolAct {
    /// Payloads the killed child reported durable: `spool-0` .. `spool-{durable - 1}`.
    durable: usize,
    /// Of those, how many never arrived.
    lost: usize,
    /// Copies received beyond the first of each payload.
    duplicates: usize,
}

/// Runs the act: a child ships into a spool with the collector down and is killed
/// (SIGKILL) mid-flight; a second child on the same directory, with the collector up,
/// replays and flushes; the sink's payloads are checked against what the first child
/// reported durable.
fn spool_act() -> Result<SpoolAct, String> {
    let began = Instant::now();
    let deadline = began + SPOOL_ACT_LIMIT;
    let dir = TempDir::new()?;
    let port = free_port()?;
    println!();
    println!(
        "spool     the sender's own process dies: a child ships payloads into the spool {} while the collector (127.0.0.1:{port}) is down",
        dir.0.display()
    );

    let mut first = ChildProc::spawn("ship", &dir.0, port)?;
    let mut durable = 0;
    let mut reports = 0;
    while reports < SPOOL_REPORTS {
        let (tag, f) = first.next_line(deadline)?;
        match tag.as_str() {
            "DURABLE" => {
                durable = field(&f, "n")?;
                reports += 1;
                println!(
                    "child 1   sync(): {}..{} durable ({durable} payloads; {} in the spool, {} in memory only)",
                    text(&f, "first"),
                    text(&f, "last"),
                    text(&f, "spooled"),
                    text(&f, "memory_only")
                );
            }
            "NOT-DURABLE" => println!("child 1   sync() did not report durable: {f:?}"),
            _ => {}
        }
    }
    // It queues its next batch meanwhile: let it get into it, then no goodbye.
    thread::sleep(Duration::from_millis(5));
    let pid = first.child.id();
    first
        .child
        .kill()
        .map_err(|e| format!("cannot kill child {pid}: {e}"))?;
    let status = first
        .child
        .wait()
        .map_err(|e| format!("cannot reap child {pid}: {e}"))?;
    let (files, bytes) = dir_usage(&dir.0);
    println!("kill      SIGKILL to child 1 (pid {pid}) while it shipped its next batch: {status}");
    println!(
        "spool     left behind: {files} files, {:.1} MiB",
        bytes as f64 / (1 << 20) as f64
    );

    let sink = Sink::start_with(port, Ending::OkNoMessage, None);
    println!("sink      up on {}", sink.addr());
    let mut second = ChildProc::spawn("replay", &dir.0, port)?;
    let replayed = loop {
        let (tag, f) = second.next_line(deadline)?;
        match tag.as_str() {
            "REPLAYING" => println!(
                "child 2   SpoolEvent::Replaying: {} payloads ({} entries, {:.1} MiB) wait in the spool, sent first",
                text(&f, "payloads"),
                text(&f, "entries"),
                field::<f64>(&f, "bytes")? / (1 << 20) as f64
            ),
            "REPLAYED" => break f,
            _ => {}
        }
    };
    let status = second.wait(deadline)?;
    println!(
        "child 2   replayed {} payloads and flushed: {} acknowledged, all delivered: {}, {} damaged records skipped, {} left in the spool ({status})",
        text(&replayed, "replayed"),
        text(&replayed, "acknowledged"),
        text(&replayed, "delivered"),
        text(&replayed, "corrupt"),
        text(&replayed, "left_in_spool")
    );
    let left: Vec<String> = std::fs::read_dir(&dir.0)
        .map(|d| {
            d.filter_map(|e| Some(e.ok()?.file_name().to_string_lossy().into_owned()))
                .collect()
        })
        .unwrap_or_default();
    println!(
        "spool     space back: the directory now holds {left:?} ({} bytes)",
        dir_usage(&dir.0).1
    );

    let mut copies: BTreeMap<usize, usize> = BTreeMap::new();
    for p in sink.received() {
        if let Some(seq) = p
            .host_id
            .strip_prefix(SPOOL_ID)
            .and_then(|s| s.parse().ok())
        {
            *copies.entry(seq).or_default() += 1;
        }
    }
    let lost: Vec<usize> = (0..durable).filter(|s| !copies.contains_key(s)).collect();
    let after_sync = copies.keys().filter(|s| **s >= durable).count();
    let duplicated: Vec<String> = copies
        .iter()
        .filter(|(_, n)| **n > 1)
        .map(|(seq, n)| format!("{SPOOL_ID}{seq} x{n}"))
        .collect();
    let duplicates: usize = copies.values().map(|n| n - 1).sum();
    println!(
        "received  {} spool payloads, {} unique: {} of the {durable} reported durable, and {after_sync} the child queued after its last sync (a crash loses nothing the spool took)",
        copies.values().sum::<usize>(),
        copies.len(),
        durable - lost.len()
    );
    if duplicated.is_empty() {
        println!("          0 duplicates");
    } else {
        println!(
            "          {duplicates} duplicates (first few: {:?})",
            &duplicated[..duplicated.len().min(10)]
        );
    }
    if !lost.is_empty() {
        let ids: Vec<String> = lost
            .iter()
            .take(10)
            .map(|s| format!("{SPOOL_ID}{s}"))
            .collect();
        println!(
            "LOST      {} payloads reported durable never arrived (first few: {ids:?})",
            lost.len()
        );
    }
    println!("spool     act took {:.1?}", began.elapsed());
    Ok(SpoolAct {
        durable,
        lost: lost.len(),
        duplicates,
    })
}

/// A fresh directory under the system's temp dir, removed with its contents when
/// dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Result<TempDir, String> {
        let path =
            std::env::temp_dir().join(format!("logsender-demo-spool-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path)
            .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
        Ok(TempDir(path))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A child process of the spool act, its stdout read line by line on a thread; killed
/// (SIGKILL) and reaped when dropped if it still runs.
struct ChildProc {
    child: Child,
    lines: crossbeam_channel::Receiver<String>,
}

impl ChildProc {
    /// This program again, as the spool child `role` (`ship` or `replay`) on `dir`, its
    /// collector on 127.0.0.1:`port`.
    fn spawn(role: &str, dir: &Path, port: u16) -> Result<ChildProc, String> {
        let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
        let mut child = Command::new(exe)
            .arg(role)
            .arg(dir)
            .arg(port.to_string())
            .env(CHILD_ENV, "spool")
            .env(WIRE_ENV, wire_name())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot start the {role} child: {e}"))?;
        let stdout = child.stdout.take().ok_or("the child has no stdout")?;
        let (tx, lines) = crossbeam_channel::unbounded();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Ok(ChildProc { child, lines })
    }

    /// The child's next line `TAG k=v ...`, as its tag and fields.
    fn next_line(&self, deadline: Instant) -> Result<(String, BTreeMap<String, String>), String> {
        let line = self.lines.recv_deadline(deadline).map_err(|_| {
            format!(
                "child {} ended or went quiet before the act's deadline",
                self.child.id()
            )
        })?;
        let mut words = line.split_whitespace();
        let tag = words.next().unwrap_or_default().to_string();
        let fields = words
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Ok((tag, fields))
    }

    /// Waits for the child to exit on its own, up to `deadline`; fails unless it
    /// exited with success.
    fn wait(&mut self, deadline: Instant) -> Result<std::process::ExitStatus, String> {
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) if status.success() => return Ok(status),
                Ok(Some(status)) => return Err(format!("child {}: {status}", self.child.id())),
                Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(10)),
                Ok(None) => return Err(format!("child {} did not exit", self.child.id())),
                Err(e) => return Err(format!("child {}: {e}", self.child.id())),
            }
        }
    }
}

impl Drop for ChildProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The value of `key` in a child's line, parsed.
fn field<T: std::str::FromStr>(fields: &BTreeMap<String, String>, key: &str) -> Result<T, String> {
    fields
        .get(key)
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| format!("no number {key}= in {fields:?}"))
}

/// The value of `key` in a child's line, as printed (`?` if missing).
fn text<'a>(fields: &'a BTreeMap<String, String>, key: &str) -> &'a str {
    fields.get(key).map_or("?", String::as_str)
}

/// Files in `dir` and their bytes.
fn dir_usage(dir: &Path) -> (usize, u64) {
    std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(|e| e.ok()?.metadata().ok())
                .fold((0, 0), |(n, b), m| (n + 1, b + m.len()))
        })
        .unwrap_or((0, 0))
}

/// A port on 127.0.0.1 that nothing listens on right now (bound, then released): the
/// collector that is down, and comes up later.
fn free_port() -> Result<u16, String> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("cannot bind 127.0.0.1:0: {e}"))
}

/// The spool act's payloads: `realistic_payload(seq)` with the `host_id` `spool-{seq}`.
fn spool_payload(seq: usize) -> LogPayload {
    let mut p = realistic_payload(seq);
    p.host_id = format!("{SPOOL_ID}{seq}");
    p
}

/// The children's sender: a spool in `dir` (default sync policy: every 100 ms), small
/// segments so that the act shows several files and their removal.
fn spool_config(dir: &Path, port: u16) -> logsender::ConfigBuilder {
    Config::builder(format!("127.0.0.1:{port}"))
        .plaintext()
        .wire(wire())
        .reconnect_backoff(Duration::from_millis(50), Duration::from_millis(500))
        .commit_every(500)
        .commit_interval(Duration::from_millis(200))
        .spool(dir)
        .spool_segment_bytes(256 << 10)
}

/// A child process of the spool act (`LOGSENDER_DEMO_CHILD=spool`, arguments
/// `ship|replay DIR PORT`).
fn spool_child(role: &str, args: Vec<String>) -> ExitCode {
    let [what, dir, port] = args.as_slice() else {
        eprintln!("usage: {CHILD_ENV}=spool demo ship|replay DIR PORT");
        return ExitCode::from(2);
    };
    let Ok(port) = port.parse::<u16>() else {
        eprintln!("demo child: bad port {port:?}");
        return ExitCode::from(2);
    };
    let result = match (role, what.as_str()) {
        ("spool", "ship") => ship_until_killed(Path::new(dir), port),
        ("spool", "replay") => replay(Path::new(dir), port),
        _ => Err(format!("unknown child role {role} {what}")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("demo child: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Child 1: queues batches of payloads at an agent's pace and, after each, prints what
/// `sync` reports (`DURABLE n=N ...`: `spool-0` .. `spool-{N-1}` are on disk). Never
/// ends on its own before the act's limit: the parent kills it.
fn ship_until_killed(dir: &Path, port: u16) -> Result<(), String> {
    let config = spool_config(dir, port).build().map_err(|e| e.to_string())?;
    let sender = LogSender::new(config).map_err(|e| e.to_string())?;
    let (tx, rx) = crossbeam_channel::bounded(512);
    sender.start_worker_pool(rx, 2).map_err(|e| e.to_string())?;
    let began = Instant::now();
    let mut seq = 0;
    while began.elapsed() < SPOOL_ACT_LIMIT {
        for _ in 0..SPOOL_BATCH {
            tx.send(spool_payload(seq)).map_err(|e| e.to_string())?;
            seq += 1;
            if seq % 25 == 0 {
                thread::sleep(Duration::from_millis(1));
            }
        }
        let d = sender
            .sync(Duration::from_secs(10))
            .map_err(|e| e.to_string())?;
        let tag = if d.durable { "DURABLE" } else { "NOT-DURABLE" };
        // (A parent gone: the pipe is closed, and println! ends this process.)
        println!(
            "{tag} n={seq} first={SPOOL_ID}0 last={SPOOL_ID}{} spooled={} memory_only={}",
            seq - 1,
            d.spooled,
            d.memory_only
        );
    }
    Err("never killed".into())
}

/// Prints the spool's `Replaying` event as a `REPLAYING` line.
struct ReplayEvents;

impl EventHandler for ReplayEvents {
    fn on_spool(&self, event: &SpoolEvent) {
        if let SpoolEvent::Replaying {
            payloads,
            entries,
            bytes,
            ..
        } = event
        {
            println!("REPLAYING payloads={payloads} entries={entries} bytes={bytes}");
        }
    }
}

/// Child 2: a sender on the same spool, the collector up: it sends what the spool holds
/// first, flushes, shuts down and prints `REPLAYED ...`.
fn replay(dir: &Path, port: u16) -> Result<(), String> {
    let config = spool_config(dir, port)
        .event_handler(Arc::new(ReplayEvents))
        .build()
        .map_err(|e| e.to_string())?;
    let sender = LogSender::new(config).map_err(|e| e.to_string())?;
    let report = sender.flush(Duration::from_secs(30));
    let stats = sender.stats();
    let done = sender.shutdown(Duration::from_secs(5));
    println!(
        "REPLAYED replayed={} acknowledged={} delivered={} corrupt={} left_in_spool={}",
        stats.replayed,
        report.acknowledged,
        report.all_delivered(),
        stats.spool_corrupt,
        done.report.left_in_spool
    );
    Ok(())
}
