//! The `tracing` layer against real sinks on loopback: what an event becomes (its
//! fields, its spans' fields with the innermost winning, the span path), composed with
//! `fmt` in a `Registry`, under a per-layer filter; `log` records through
//! `tracing_log::LogTracer` ship as the records they are, logsender's own never;
//! dropping (never blocking) when the entry channel is full, or after `block_for`;
//! logsender's own targets and anything emitted while an event is shipped (by the layer
//! or by the `log` bridge) never loop back; and, in child processes (a process has one
//! global subscriber), the installed layer's guard delivers on drop and says what it
//! could not deliver, an event emitted while the global layer ships is not shipped, and
//! logsender's own records from its own threads (dial failures, the gRPC core's
//! diagnostics) never come back through the layer.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Once};
use std::time::{Duration, Instant};

use logsender::{
    Batching, Config, EventHandler, LogPayload, LogSender, RecordsDroppedEvent, TracingLayer, Wire,
};
use support::helpers::{
    child_args, cpu_time, run_child, unserved_addr, watch_panics, within, ChildLine,
};
use support::sink::Sink;
use support::{fast_config, fast_config_on};
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::Layer;

const WAIT: Duration = Duration::from_secs(10);

fn template() -> LogPayload {
    LogPayload::from_host("agent-tracing")
}

/// A sink, a sender to it on `wire`, and a layer with default batching on the sender.
fn collected(wire: Wire) -> (Sink, LogSender, logsender::EntryLayer) {
    let sink = Sink::start();
    let sender = LogSender::new(fast_config_on(&sink.addr(), wire).build().unwrap()).unwrap();
    let layer = TracingLayer::new(Batching::new(template()))
        .layer(&sender)
        .unwrap();
    (sink, sender, layer)
}

/// A `Write` that keeps what `fmt` writes, to prove the layers compose.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

both_wires! {
fn events_arrive_with_their_fields_and_their_spans_fields(wire: Wire) {
    watch_panics();
    let (sink, sender, layer) = collected(wire);
    let printed = Captured::default();
    let writer = printed.clone();
    let fmt = tracing_subscriber::fmt::layer()
        .with_ansi(false)
        .with_writer(move || writer.clone());
    let subscriber = tracing_subscriber::registry().with(fmt).with(layer);
    let line = tracing::subscriber::with_default(subscriber, || {
        let outer = tracing::info_span!("request", id = 7, user = "outer", path = "/a");
        let _o = outer.enter();
        let inner = tracing::info_span!("db", user = "inner", table = tracing::field::Empty);
        let _i = inner.enter();
        inner.record("table", "accounts");
        let line = line!() + 1;
        tracing::warn!(
            path = "/event",
            rows = 3_u64,
            ok = true,
            "slow query {}",
            42
        );
        tracing::error!(target: "logsender::supervisor", "not shipped: ours");
        tracing::error!(target: "grpcio::call", "not shipped: grpcio's");
        drop(_i);
        drop(_o);
        tracing::debug!("shipped: the layer has no filter of its own");
        line
    });
    let report = sender.flush(WAIT);
    assert!(report.all_delivered(), "{report:?}");
    let entries: Vec<_> = sink.received().into_iter().flat_map(|p| p.logs).collect();
    let messages: Vec<&str> = entries.iter().map(|e| e.message.as_str()).collect();
    assert_eq!(
        messages,
        [
            "slow query 42",
            "shipped: the layer has no filter of its own"
        ]
    );
    let e = &entries[0];
    assert_eq!(e.level, "warning");
    assert_eq!(e.source, module_path!());
    assert_eq!(e.pid, std::process::id() as i32);
    assert!(e.timestamp.is_some());
    let field = |k: &str| e.fields.get(k).map(String::as_str);
    // The event's own fields win over its spans', the innermost span's over outer ones'.
    assert_eq!(field("path"), Some("/event"));
    assert_eq!(field("user"), Some("inner"));
    assert_eq!(field("id"), Some("7"));
    assert_eq!(
        field("table"),
        Some("accounts"),
        "recorded after the span began"
    );
    assert_eq!(field("rows"), Some("3"));
    assert_eq!(field("ok"), Some("true"));
    assert_eq!(field("spans"), Some("request:db"));
    assert_eq!(field("module"), Some(module_path!()));
    assert_eq!(field("file"), Some(file!()));
    assert_eq!(field("line"), Some(line.to_string().as_str()));
    assert_eq!(e.fields.len(), 10, "{:?}", e.fields);
    assert_eq!(entries[1].level, "debug");
    assert!(!entries[1].fields.contains_key("spans"));
    // `fmt` printed every event, logsender's own included.
    let printed = String::from_utf8(printed.0.lock().unwrap().clone()).unwrap();
    assert!(printed.contains("slow query 42"), "{printed}");
    assert!(printed.contains("not shipped: ours"), "{printed}");
    assert!(sender.close().report.all_delivered());
}
}

/// `log` records become `tracing` events in this process (once; the tests' own
/// subscribers are per thread, so no other test sees them).
fn log_tracer() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| tracing_log::LogTracer::init().expect("no logger yet"));
}

/// A layer that counts the events `which` picks, to prove they reached the subscriber
/// logsender's layer is in.
#[derive(Clone)]
struct Counted {
    hits: Arc<AtomicUsize>,
    which: fn(&tracing::Metadata<'_>) -> bool,
}

impl Counted {
    /// Counts the events made from `log` records (target `log`).
    fn from_log() -> Counted {
        Counted::new(|m| m.target() == "log")
    }

    /// Counts the events `Drops` emits.
    fn from_handler() -> Counted {
        Counted::new(|m| m.target() == module_path!() && *m.level() == tracing::Level::ERROR)
    }

    fn new(which: fn(&tracing::Metadata<'_>) -> bool) -> Counted {
        Counted {
            hits: Arc::default(),
            which,
        }
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::Relaxed)
    }
}

impl<S: tracing::Subscriber> Layer<S> for Counted {
    fn on_event(&self, event: &tracing::Event<'_>, _: Context<'_, S>) {
        if (self.which)(event.metadata()) {
            self.hits.fetch_add(1, Ordering::Relaxed);
        }
    }
}

both_wires! {
fn log_records_ship_as_themselves_and_logsenders_own_never(wire: Wire) {
    watch_panics();
    log_tracer();
    let (sink, sender, layer) = collected(wire);
    let from_log = Counted::from_log();
    let subscriber = tracing_subscriber::registry()
        .with(from_log.clone())
        .with(layer);
    let line = tracing::subscriber::with_default(subscriber, || {
        let span = tracing::info_span!("job", id = 3);
        let _in = span.enter();
        let line = line!() + 1;
        log::warn!(target: "app::db", "slow query {}", 250);
        log::error!(target: "logsender::supervisor", "ours: not shipped");
        log::error!(target: "logsender::grpc", "the core's: not shipped");
        log::error!(target: "grpcio_sys", "grpcio's: not shipped");
        tracing::info!(target: "log", "a tracing event whose target is log");
        line
    });
    assert_eq!(from_log.hits(), 5, "the records reached the subscriber");
    let report = sender.flush(WAIT);
    assert!(report.all_delivered(), "{report:?}");
    let entries: Vec<_> = sink.received().into_iter().flat_map(|p| p.logs).collect();
    let messages: Vec<&str> = entries.iter().map(|e| e.message.as_str()).collect();
    assert_eq!(
        messages,
        ["slow query 250", "a tracing event whose target is log"]
    );
    let e = &entries[0];
    assert_eq!(
        (e.level.as_str(), e.source.as_str()),
        ("warning", "app::db")
    );
    let field = |k: &str| e.fields.get(k).map(String::as_str);
    // The record's own module, file and line, not the `log.…` fields they came in.
    assert_eq!(field("module"), Some(module_path!()));
    assert_eq!(field("file"), Some(file!()));
    assert_eq!(field("line"), Some(line.to_string().as_str()));
    assert_eq!((field("id"), field("spans")), (Some("3"), Some("job")));
    assert_eq!(e.fields.len(), 5, "{:?}", e.fields);
    // A `tracing` event of target `log` is just that.
    assert_eq!(entries[1].source, "log");
    assert_eq!(entries[1].fields["line"], (line + 4).to_string());
    assert!(sender.close().report.all_delivered());
}
}

both_wires! {
fn a_per_layer_filter_picks_the_events_and_the_spans(wire: Wire) {
    watch_panics();
    let (sink, sender, layer) = collected(wire);
    let targets = Targets::new().with_target("app", tracing::Level::INFO);
    let subscriber = tracing_subscriber::registry().with(layer.with_filter(targets));
    tracing::subscriber::with_default(subscriber, || {
        let hidden = tracing::info_span!(target: "other", "hidden", secret = 1);
        let _h = hidden.enter();
        let shown = tracing::info_span!(target: "app", "shown", id = 2);
        let _s = shown.enter();
        tracing::info!(target: "app", "kept");
        tracing::debug!(target: "app", "below the level");
        tracing::info!(target: "other", "another target");
    });
    assert!(sender.flush(WAIT).all_delivered());
    let entries: Vec<_> = sink.received().into_iter().flat_map(|p| p.logs).collect();
    assert_eq!(entries.len(), 1, "{entries:?}");
    assert_eq!(entries[0].message, "kept");
    assert_eq!(entries[0].fields["spans"], "shown");
    assert_eq!(entries[0].fields["id"], "2");
    assert!(!entries[0].fields.contains_key("secret"), "{entries:?}");
    assert!(sender.close().report.all_delivered());
}
}

#[derive(Default)]
struct Drops(Mutex<Vec<RecordsDroppedEvent>>);

impl EventHandler for Drops {
    fn on_records_dropped(&self, event: RecordsDroppedEvent) {
        // Emitted while the layer reports a drop: must not come back into it.
        tracing::error!("a drop event, emitted from the handler");
        self.0.lock().unwrap().push(event);
    }
}

/// A layer whose entry channel stays full (see `support::jammed`).
fn jammed(
    handler: Arc<Drops>,
    layer: impl FnOnce(TracingLayer) -> TracingLayer,
) -> (LogSender, logsender::EntryLayer) {
    let (sender, batching) = jammed_sender(handler);
    let layer = layer(TracingLayer::new(batching)).layer(&sender).unwrap();
    (sender, layer)
}

/// The sender and batching of [`jammed`].
fn jammed_sender(handler: Arc<Drops>) -> (LogSender, Batching) {
    support::jammed(handler, template())
}

#[test]
fn a_full_channel_drops_and_counts_without_blocking() {
    watch_panics();
    let drops = Arc::new(Drops::default());
    let (sender, layer) = jammed(drops.clone(), |l| l);
    let subscriber = tracing_subscriber::registry().with(layer);
    // Were an event to wait for room, it would wait for ever. Finishing proves it
    // never waited.
    within(WAIT, "1,000 events into a full channel", move || {
        tracing::subscriber::with_default(subscriber, || {
            for i in 0..1000 {
                tracing::info!(i, "line");
            }
        })
    });
    let stats = sender.stats();
    // At most 9 are in the pipeline: 1 held, 1 in a worker's hands, 2 in the pool's
    // queue, 1 in the batcher's, 4 in the channel.
    assert!(
        (991..1000).contains(&stats.records_dropped),
        "{} dropped",
        stats.records_dropped
    );
    let events = drops.0.lock().unwrap().len();
    assert!(events >= 1, "no drop event");
    assert!(
        events <= 1 + WAIT.as_secs() as usize,
        "not rate-limited: {events}"
    );
    let done = sender.shutdown(Duration::from_millis(100));
    // Every event is accounted for; the handler's own event is not among them.
    assert_eq!(
        done.report.entries_handed_back + done.report.records_dropped,
        1000,
        "{:?}",
        done.report
    );
}

#[test]
fn an_event_emitted_while_the_log_bridge_ships_is_not_shipped() {
    watch_panics();
    // The bridge drops (its channel is full) and its handler emits a `tracing` event,
    // on the thread that is shipping the record: the layer must leave it alone.
    let (jammed, batching) = jammed_sender(Arc::new(Drops::default()));
    let bridge = logsender::LogBridge::new(batching).logger(&jammed).unwrap();
    let (sink, sender, layer) = collected(Wire::GoSightStream);
    let from_handler = Counted::from_handler();
    let subscriber = tracing_subscriber::registry()
        .with(from_handler.clone())
        .with(layer);
    tracing::subscriber::with_default(subscriber, || {
        for i in 0..100 {
            log::Log::log(
                &bridge,
                &log::Record::builder()
                    .level(log::Level::Info)
                    .target("my_app")
                    .args(format_args!("line {i}"))
                    .build(),
            );
        }
        tracing::info!("after");
    });
    assert!(jammed.stats().records_dropped > 0);
    assert!(from_handler.hits() >= 1, "the handler emitted nothing");
    assert!(sender.flush(WAIT).all_delivered());
    let messages: Vec<String> = sink
        .received()
        .into_iter()
        .flat_map(|p| p.logs)
        .map(|e| e.message)
        .collect();
    assert_eq!(messages, ["after"]);
    drop(bridge);
    let _ = jammed.shutdown(Duration::from_millis(100));
}

#[test]
fn block_for_waits_its_bound_then_drops() {
    watch_panics();
    let drops = Arc::new(Drops::default());
    let bound = Duration::from_millis(100);
    let (sender, layer) = jammed(drops, |l| l.block_for(bound));
    let subscriber = tracing_subscriber::registry().with(layer);
    let started = Instant::now();
    tracing::subscriber::with_default(subscriber, || {
        for i in 0..15 {
            tracing::info!(i, "line");
        }
    });
    let took = started.elapsed();
    let dropped = sender.stats().records_dropped;
    assert!(dropped >= 6, "only {dropped} dropped");
    assert!(
        took >= bound * dropped as u32,
        "{dropped} events dropped after {took:?}: each should have waited {bound:?}"
    );
    let done = sender.shutdown(Duration::from_millis(100));
    assert_eq!(done.report.entries_handed_back + dropped, 15);
}

// ---------------------------------------------------------------------------------
// The installed layer, in child processes.

const CHILD: &str = "LOGSENDER_TRACING_CHILD";

/// The child: installs the layer as its global subscriber and emits through
/// `tracing`'s macros.
#[test]
fn child_install() {
    let Some((mode, addr)) = child_args(CHILD) else {
        return;
    };
    // `mode:otlp` on the OTLP wire.
    let (mode, wire) = match mode.split_once(':') {
        Some((mode, "otlp")) => (mode, Wire::OtlpLogs),
        _ => (mode.as_str(), Wire::GoSightStream),
    };
    match mode {
        // Filtered, beside `fmt` on stdout; 50 events kept, then the guard is dropped:
        // they must all arrive.
        "flush" => {
            let sender = LogSender::new(fast_config_on(&addr, wire).build().unwrap()).unwrap();
            let fmt = tracing_subscriber::fmt::layer()
                .with_ansi(false)
                .with_writer(std::io::stdout);
            let guard = TracingLayer::new(Batching::new(template()))
                .filter("warn,child_app=debug")
                .install_with(sender, fmt)
                .unwrap();
            for i in 0..50 {
                tracing::debug!(target: "child_app", i, "kept");
                tracing::info!(target: "other", i, "filtered out");
            }
            // A second global subscriber is refused, with a typed error.
            let second = LogSender::new(fast_config(&addr).build().unwrap()).unwrap();
            let refused = TracingLayer::new(Batching::new(template())).install(second);
            assert!(matches!(refused, Err(logsender::Error::LoggerInstalled)));
            drop(guard);
            println!("CHILD-DONE");
        }
        // The collector is down: the drop must end within the close timeout and say
        // what was not delivered, through `tracing` (`fmt` on stderr prints it).
        "down" => {
            let config = fast_config_on(&addr, wire)
                .close_timeout(Duration::from_millis(500))
                .build()
                .unwrap();
            let fmt = tracing_subscriber::fmt::layer()
                .with_ansi(false)
                .with_writer(std::io::stderr);
            let guard = TracingLayer::new(Batching::new(template()))
                .install_with(LogSender::new(config).unwrap(), fmt)
                .unwrap();
            for i in 0..5 {
                tracing::warn!("undeliverable {i}");
            }
            let started = Instant::now();
            drop(guard);
            println!("CHILD-DROP {}", started.elapsed().as_millis());
        }
        // TLS against a plaintext collector, `log` records as events, everything at
        // `trace`: logsender's dial failures and the gRPC core's diagnostics, logged on
        // logsender's threads, must not come back through the layer.
        "tls" => {
            log_tracer();
            let config = Config::builder(addr.as_str())
                .thread_name("child")
                .reconnect_backoff(Duration::from_millis(20), Duration::from_millis(100))
                .connect_timeout(Duration::from_secs(1))
                .build()
                .unwrap();
            let from_log = Counted::from_log();
            let guard = TracingLayer::new(Batching::new(template()))
                .filter("trace")
                .install_with(LogSender::new(config).unwrap(), from_log.clone())
                .unwrap();
            for i in 0..10 {
                tracing::info!("program line {i}");
            }
            let cpu = cpu_time();
            std::thread::sleep(Duration::from_millis(1500));
            let cpu = cpu_time().saturating_sub(cpu);
            let stats = guard.sender().stats();
            let done = guard.shutdown(Duration::from_millis(300));
            let entries: Vec<String> = done
                .undelivered
                .iter()
                .flat_map(|p| {
                    p.logs
                        .iter()
                        .map(|e| format!("{}: {}", e.source, e.message))
                })
                .collect();
            println!(
                "CHILD-TLS entries={} dropped={} cpu_ms={} failed_dials={} ours_seen={} first={:?}",
                entries.len(),
                stats.records_dropped,
                cpu.as_millis(),
                stats.last_error.is_some(),
                from_log.hits(),
                entries.iter().find(|e| !e.contains("program line")),
            );
        }
        // A global subscriber (no scoped one: `tracing` does not stop an event emitted
        // while one is dispatched on the same thread), a full channel and a handler
        // that emits an event for each drop report.
        "jam" => {
            let (sender, batching) = jammed_sender(Arc::new(Drops::default()));
            let from_handler = Counted::from_handler();
            let guard = TracingLayer::new(batching)
                .install_with(sender, from_handler.clone())
                .unwrap();
            // Were an event to wait for room, it would wait for ever.
            within(WAIT, "1,000 events into a full channel", || {
                for i in 0..1000 {
                    tracing::info!(i, "line");
                }
            });
            let done = guard.shutdown(Duration::from_millis(100));
            println!(
                "CHILD-JAM accounted={} handler_events={}",
                done.report.entries_handed_back + done.report.records_dropped,
                from_handler.hits(),
            );
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
fn the_installed_layers_guard_delivers_every_event_on_drop(wire: Wire) {
    watch_panics();
    let sink = Sink::start();
    let (stdout, _, _) = run_child("child_install", CHILD, &on("flush", wire), &sink.addr());
    assert!(stdout.contains("CHILD-DONE"), "{stdout}");
    let entries: Vec<_> = sink.received().into_iter().flat_map(|p| p.logs).collect();
    assert_eq!(entries.len(), 50, "{entries:?}");
    assert!(entries
        .iter()
        .all(|e| e.message == "kept" && e.source == "child_app"));
    // `fmt` beside it printed every event: the filter is logsender's layer's only.
    assert!(stdout.contains("kept"), "{stdout}");
    assert!(stdout.contains("filtered out"), "{stdout}");
}
}

both_wires! {
fn an_installed_layer_whose_collector_is_down_says_what_it_lost(wire: Wire) {
    let (stdout, stderr, took) =
        run_child("child_install", CHILD, &on("down", wire), &unserved_addr());
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
        stderr.contains(
            "logsender::bridge: the bridge shut down with lines undelivered: 5 handed back"
        ),
        "the other layers were not told what was lost:\n{stderr}"
    );
    assert!(stderr.contains("undeliverable 4"), "{stderr}");
}
}

#[test]
fn logsenders_own_records_never_loop_back_into_the_layer() {
    watch_panics();
    // A plaintext collector, dialled with TLS: every dial fails, logsender warns, and
    // the core logs at length, all at `trace` or above, for 1.5 s.
    let sink = Sink::start();
    let (stdout, _, _) = run_child("child_install", CHILD, "tls", &sink.addr());
    let child = ChildLine::find(&stdout, "CHILD-TLS");
    let line = &child.0;
    let field = |name: &str| child.field(name);
    assert_eq!(field("failed_dials"), "true", "{line}");
    let seen: u64 = field("ours_seen").parse().unwrap_or(0);
    assert!(
        seen > 0,
        "logsender's records never reached the subscriber: {line}"
    );
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

#[test]
fn an_event_emitted_while_the_global_layer_ships_is_not_shipped() {
    let (stdout, _, _) = run_child("child_install", CHILD, "jam", &unserved_addr());
    let child = ChildLine::find(&stdout, "CHILD-JAM");
    let line = &child.0;
    let field = |name: &str| child.number(name);
    assert!(
        field("handler_events") >= 1,
        "the handler emitted nothing: {line}"
    );
    // The program's 1,000 events, handed back or dropped; the handler's are neither.
    assert_eq!(field("accounted"), 1000, "{line}");
}

/// A value whose `Debug` emits an event of its own.
struct Chatty;

impl std::fmt::Debug for Chatty {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        tracing::info!("emitted while a field is formatted");
        f.write_str("chatty")
    }
}

#[test]
fn two_layers_and_a_field_that_emits_while_formatted_neither_deadlock_nor_panic() {
    watch_panics();
    let sink = Sink::start();
    let sender = LogSender::new(fast_config(&sink.addr()).build().unwrap()).unwrap();
    let first = TracingLayer::new(Batching::new(template()))
        .layer(&sender)
        .unwrap();
    // Two layers on one registry share the span's stored fields.
    let second = TracingLayer::new(Batching::new(template()))
        .layer(&sender)
        .unwrap();
    let subscriber = tracing_subscriber::registry().with(first).with(second);
    within(
        WAIT,
        "events from inside a span's field formatting",
        move || {
            tracing::subscriber::with_default(subscriber, || {
                let span =
                    tracing::info_span!("job", value = tracing::field::Empty, made = ?Chatty);
                let _in = span.enter();
                // Formatted by `on_record` while this thread is inside the span.
                span.record("value", tracing::field::debug(Chatty));
                tracing::info!("done");
            })
        },
    );
    let report = sender.flush(WAIT);
    assert!(report.all_delivered(), "{report:?}");
    let entries: Vec<_> = sink.received().into_iter().flat_map(|p| p.logs).collect();
    let done: Vec<_> = entries.iter().filter(|e| e.message == "done").collect();
    // Each layer ships it once, with the span's fields.
    assert_eq!(done.len(), 2, "{entries:?}");
    for e in done {
        assert_eq!(e.fields["value"], "chatty");
        assert_eq!(e.fields["made"], "chatty");
    }
    // tracing itself drops an event emitted inside a subscriber's callback (no
    // dispatcher is entered twice on a thread): the layer never sees those.
    assert!(!entries
        .iter()
        .any(|e| e.message == "emitted while a field is formatted"));
    assert!(sender.close().report.all_delivered());
}
