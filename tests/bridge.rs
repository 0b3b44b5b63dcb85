//! The `log` bridge against real sinks on loopback: what a record becomes, the filter,
//! dropping (never blocking) when the entry channel is full, the bounded blocking mode,
//! and, in child processes (a process has one logger), the installed bridge: the
//! guard's drop flushes, a bridge whose collector is down exits within its deadline and
//! reports what it could not deliver, and logsender's own records (its dial failures,
//! the gRPC core's diagnostics) never loop back into it.

mod support;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use log::Log;
use logsender::{
    Batching, Config, EventHandler, LogBridge, LogPayload, LogSender, RecordsDroppedEvent, Wire,
};
use support::helpers::{
    child_args, cpu_time, run_child, unserved_addr, watch_panics, within, ChildLine,
};
use support::sink::Sink;
use support::{fast_config, fast_config_on};

const WAIT: Duration = Duration::from_secs(10);

fn template() -> LogPayload {
    LogPayload::from_host("agent-bridge")
}

/// Hands `record` (built by the caller) to `logger`.
fn emit(logger: &dyn Log, level: log::Level, target: &str, message: &str) {
    logger.log(
        &log::Record::builder()
            .level(level)
            .target(target)
            .args(format_args!("{message}"))
            .module_path(Some(target))
            .file(Some("src/app.rs"))
            .line(Some(7))
            .build(),
    );
}

both_wires! {
/// On either wire: the bridge's records arrive as entries with their level, target,
/// location and key-values (on OTLP, as the mapping reads them back).
fn records_arrive_with_level_target_file_line_and_key_values(wire: Wire) {
    watch_panics();
    let sink = Sink::start();
    let sender = LogSender::new(fast_config_on(&sink.addr(), wire).build().unwrap()).unwrap();
    let logger = LogBridge::new(Batching::new(template()))
        .filter("info,my_app::db=debug")
        .logger(&sender)
        .unwrap();
    let kvs = [("user", "ada"), ("ms", "1234")];
    logger.log(
        &log::Record::builder()
            .level(log::Level::Warn)
            .target("my_app::db")
            .args(format_args!("slow query {}", 42))
            .module_path(Some("my_app::db::pool"))
            .file(Some("src/db/pool.rs"))
            .line(Some(311))
            .key_values(&kvs)
            .build(),
    );
    // Filtered out: below the filter, and logsender's (and grpcio's) own records.
    emit(
        &logger,
        log::Level::Debug,
        "my_app::http",
        "not shipped: debug",
    );
    emit(
        &logger,
        log::Level::Debug,
        "my_app::db",
        "shipped: debug in db",
    );
    emit(
        &logger,
        log::Level::Error,
        "logsender::supervisor",
        "not shipped: ours",
    );
    emit(
        &logger,
        log::Level::Error,
        "logsender::grpc",
        "not shipped: the core's",
    );
    emit(
        &logger,
        log::Level::Error,
        "grpcio::call",
        "not shipped: grpcio's",
    );
    emit(
        &logger,
        log::Level::Error,
        "logsender_app",
        "shipped: another crate",
    );
    let report = sender.flush(WAIT);
    assert!(report.all_delivered(), "{report:?}");
    assert_eq!(report.entries_acknowledged, 3, "{report:?}");
    let entries: Vec<_> = sink.received().into_iter().flat_map(|p| p.logs).collect();
    let messages: Vec<&str> = entries.iter().map(|e| e.message.as_str()).collect();
    assert_eq!(
        messages,
        [
            "slow query 42",
            "shipped: debug in db",
            "shipped: another crate"
        ]
    );
    let e = &entries[0];
    assert_eq!(e.level, "warning");
    assert_eq!(e.source, "my_app::db");
    assert_eq!(e.fields["module"], "my_app::db::pool");
    assert_eq!(e.fields["file"], "src/db/pool.rs");
    assert_eq!(e.fields["line"], "311");
    assert_eq!(e.fields["user"], "ada");
    assert_eq!(e.fields["ms"], "1234");
    assert_eq!(e.pid, std::process::id() as i32);
    assert!(e.timestamp.is_some());
    assert_eq!(entries[2].level, "error");
    assert!(sender.close().report.all_delivered());
    // Each line went on the wire asked for.
    sink.assert_spoke(wire);
}
}

#[test]
fn a_filter_that_does_not_parse_is_a_typed_error() {
    let sender = LogSender::new(fast_config(&unserved_addr()).build().unwrap()).unwrap();
    let err = LogBridge::new(Batching::new(template()))
        .filter("info,a=b=c")
        .logger(&sender)
        .unwrap_err();
    assert!(
        matches!(
            err,
            logsender::Error::InvalidConfig {
                field: "filter",
                ..
            }
        ),
        "{err}"
    );
}

/// Every `on_records_dropped` event.
#[derive(Default)]
struct Drops(Mutex<Vec<RecordsDroppedEvent>>);

impl EventHandler for Drops {
    fn on_records_dropped(&self, event: RecordsDroppedEvent) {
        self.0.lock().unwrap().push(event);
    }
}

/// A bridge whose entry channel stays full (see `support::jammed`).
fn jammed(
    handler: Arc<Drops>,
    bridge: impl FnOnce(LogBridge) -> LogBridge,
) -> (LogSender, logsender::BridgeLogger) {
    let (sender, batching) = support::jammed(handler, template());
    let logger = bridge(LogBridge::new(batching)).logger(&sender).unwrap();
    (sender, logger)
}

#[test]
fn a_full_channel_drops_and_counts_without_blocking() {
    watch_panics();
    let drops = Arc::new(Drops::default());
    let (sender, logger) = jammed(drops.clone(), |b| b);
    // Were `log` to wait for room, it would wait for ever: nothing makes room until
    // shutdown. Finishing proves it never waited.
    let logger = within(WAIT, "1,000 records into a full channel", move || {
        for i in 0..1000 {
            emit(&logger, log::Level::Info, "my_app", &format!("line {i}"));
        }
        logger
    });
    let stats = sender.stats();
    // At most 9 are in the pipeline: 1 held, 1 in a worker's hands, 2 in the pool's
    // queue, 1 in the batcher's, 4 in the channel.
    assert!(
        (991..1000).contains(&stats.records_dropped),
        "{} dropped",
        stats.records_dropped
    );
    let events = drops.0.lock().unwrap().clone();
    assert!(!events.is_empty(), "no drop event");
    assert!(
        events.len() <= 1 + WAIT.as_secs() as usize,
        "not rate-limited: {events:?}"
    );
    assert_eq!(events[0].dropped, 1, "the first drop is reported at once");
    let report = sender.flush(Duration::from_millis(100));
    assert_eq!(report.records_dropped, stats.records_dropped, "{report:?}");
    assert!(!report.all_delivered());
    drop(logger);
    let done = sender.shutdown(Duration::from_millis(100));
    assert_eq!(
        done.report.entries_handed_back + done.report.records_dropped,
        1000,
        "{:?}",
        done.report
    );
}

#[test]
fn block_for_waits_its_bound_then_drops() {
    watch_panics();
    let drops = Arc::new(Drops::default());
    let bound = Duration::from_millis(100);
    let (sender, logger) = jammed(drops, |b| b.block_for(bound));
    let started = Instant::now();
    for i in 0..15 {
        emit(&logger, log::Level::Info, "my_app", &format!("line {i}"));
    }
    let took = started.elapsed();
    let dropped = sender.stats().records_dropped;
    assert!(dropped >= 6, "only {dropped} dropped");
    assert!(
        took >= bound * dropped as u32,
        "{dropped} records dropped after {took:?}: each should have waited {bound:?}"
    );
    drop(logger);
    let done = sender.shutdown(Duration::from_millis(100));
    assert_eq!(done.report.entries_handed_back + dropped, 15);
}

// ---------------------------------------------------------------------------------
// The installed bridge, in child processes.

const CHILD: &str = "LOGSENDER_BRIDGE_CHILD";

/// A tee that writes `TEE level target: message` lines to stderr.
struct StderrTee;

impl Log for StderrTee {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }
    fn log(&self, record: &log::Record<'_>) {
        eprintln!(
            "TEE {} {}: {}",
            record.level(),
            record.target(),
            record.args()
        );
    }
    fn flush(&self) {}
}

/// The child: installs the bridge as its logger and logs through `log`'s macros.
#[test]
fn child_bridge() {
    let Some((mode, addr)) = child_args(CHILD) else {
        return;
    };
    // `mode:otlp` on the OTLP wire.
    let (mode, wire) = match mode.split_once(':') {
        Some((mode, "otlp")) => (mode, Wire::OtlpLogs),
        _ => (mode.as_str(), Wire::GoSightStream),
    };
    match mode {
        // 50 lines, then the guard is dropped: they must all arrive.
        "flush" => {
            let sender = LogSender::new(fast_config_on(&addr, wire).build().unwrap()).unwrap();
            let guard = LogBridge::new(Batching::new(template()).linger(Duration::from_secs(3600)))
                .install(sender)
                .unwrap();
            for i in 0..50 {
                log::info!(i = i; "child line {i}");
            }
            drop(guard);
            println!("CHILD-DONE");
        }
        // The collector is down: the drop must end within the close timeout and say
        // what was not delivered, through the tee.
        "down" => {
            let config = fast_config_on(&addr, wire)
                .close_timeout(Duration::from_millis(500))
                .build()
                .unwrap();
            let guard = LogBridge::new(Batching::new(template()))
                .tee(StderrTee, log::LevelFilter::Info)
                .install(LogSender::new(config).unwrap())
                .unwrap();
            for i in 0..5 {
                log::warn!("undeliverable {i}");
            }
            let started = Instant::now();
            drop(guard);
            println!("CHILD-DROP {}", started.elapsed().as_millis());
        }
        // TLS against a plaintext collector, everything at `trace`: logsender's dial
        // failures and the gRPC core's diagnostics must not come back through the bridge.
        "tls" => {
            let config = Config::builder(addr.as_str())
                .thread_name("child")
                .reconnect_backoff(Duration::from_millis(20), Duration::from_millis(100))
                .connect_timeout(Duration::from_secs(1))
                .build()
                .unwrap();
            let guard = LogBridge::new(Batching::new(template()))
                .filter("trace")
                .install(LogSender::new(config).unwrap())
                .unwrap();
            assert_eq!(log::max_level(), log::LevelFilter::Trace);
            for i in 0..10 {
                log::info!("program line {i}");
            }
            let cpu = cpu_time();
            let dials_before = guard.sender().stats().last_error.is_some();
            std::thread::sleep(Duration::from_millis(1500));
            let cpu = cpu_time().saturating_sub(cpu);
            let stats = guard.sender().stats();
            let done = guard.shutdown(Duration::from_millis(300));
            let entries: Vec<String> = done
                .undelivered
                .iter()
                .flat_map(|p| p.logs.iter().map(|e| e.message.clone()))
                .collect();
            println!(
                "CHILD-TLS entries={} dropped={} cpu_ms={} failed_dials={} first={:?}",
                entries.len(),
                stats.records_dropped,
                cpu.as_millis(),
                dials_before || stats.last_error.is_some(),
                entries.first()
            );
            for (i, m) in entries.iter().enumerate() {
                assert_eq!(m, &format!("program line {i}"));
            }
        }
        other => panic!("unknown child mode {other}"),
    }
}

/// The child's mode on `wire`.
fn on(mode: &str, wire: Wire) -> String {
    match wire {
        Wire::OtlpLogs => format!("{mode}:otlp"),
        _ => mode.to_owned(),
    }
}

both_wires! {
fn the_guards_drop_delivers_every_line(wire: Wire) {
    watch_panics();
    let sink = Sink::start();
    let (stdout, _, _) = run_child("child_bridge", CHILD, &on("flush", wire), &sink.addr());
    assert!(stdout.contains("CHILD-DONE"), "{stdout}");
    let messages: Vec<String> = sink
        .received()
        .into_iter()
        .flat_map(|p| p.logs)
        .map(|e| e.message)
        .collect();
    let want: Vec<String> = (0..50).map(|i| format!("child line {i}")).collect();
    assert_eq!(messages, want);
}
}

both_wires! {
fn a_bridge_whose_collector_is_down_exits_within_its_deadline_and_reports(wire: Wire) {
    let (stdout, stderr, took) =
        run_child("child_bridge", CHILD, &on("down", wire), &unserved_addr());
    let dropped_in: u64 = stdout
        .split("CHILD-DROP ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no CHILD-DROP line:\n{stdout}"));
    // The close timeout (500 ms) plus the shutdown's own slack.
    assert!(dropped_in < 1500, "the guard's drop took {dropped_in} ms");
    assert!(took < WAIT, "the child took {took:?}");
    assert!(
        stderr.contains("lines undelivered: 5 handed back"),
        "the tee was not told what was lost:\n{stderr}"
    );
    // The program's own lines reached the tee too.
    assert!(
        stderr.contains("TEE WARN bridge: undeliverable 4"),
        "{stderr}"
    );
}
}

#[test]
fn logsenders_own_records_never_loop_back_into_the_bridge() {
    watch_panics();
    // A plaintext collector, dialled with TLS: every dial fails, logsender warns, and
    // the core logs at length, all at `trace` or above, for 1.5 s.
    let sink = Sink::start();
    let (stdout, _, _) = run_child("child_bridge", CHILD, "tls", &sink.addr());
    let child = ChildLine::find(&stdout, "CHILD-TLS");
    let line = &child.0;
    let field = |name: &str| child.field(name);
    assert_eq!(field("failed_dials"), "true", "{line}");
    assert_eq!(
        field("entries"),
        "10",
        "only the program's lines are shipped: {line}"
    );
    assert_eq!(field("dropped"), "0", "{line}");
    let cpu: u64 = field("cpu_ms").parse().unwrap_or(u64::MAX);
    assert!(
        cpu < 1000,
        "the child used {cpu} ms of CPU in 1.5 s: it spins ({line})"
    );
}
