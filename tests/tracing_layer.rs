//! The `tracing` layer against real sinks on loopback: what an event becomes (its
//! fields, its spans' fields with the innermost winning, the span path), composed with
//! `fmt` in a `Registry`; dropping (never blocking) when the entry channel is full;
//! logsender's own targets and anything emitted while an event is shipped never loop
//! back; and, in a child process (a process has one global subscriber), the installed
//! layer's guard delivers on drop.

mod support;

use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use logsender::{Batching, EventHandler, LogPayload, LogSender, RecordsDroppedEvent, TracingLayer};
use support::fast_config;
use support::helpers::{watch_panics, within};
use support::sink::Sink;
use tracing_subscriber::layer::SubscriberExt;

const WAIT: Duration = Duration::from_secs(10);

fn template() -> LogPayload {
    LogPayload::from_host("agent-tracing")
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

#[test]
fn events_arrive_with_their_fields_and_their_spans_fields() {
    watch_panics();
    let sink = Sink::start();
    let sender = LogSender::new(fast_config(&sink.addr()).build().unwrap()).unwrap();
    let layer = TracingLayer::new(Batching::new(template()))
        .layer(&sender)
        .unwrap();
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

#[derive(Default)]
struct Drops(Mutex<Vec<RecordsDroppedEvent>>);

impl EventHandler for Drops {
    fn on_records_dropped(&self, event: RecordsDroppedEvent) {
        // Emitted while the layer reports a drop: must not come back into it.
        tracing::error!("a drop event, emitted from the handler");
        self.0.lock().unwrap().push(event);
    }
}

#[test]
fn a_full_channel_drops_and_counts_without_blocking() {
    watch_panics();
    let drops = Arc::new(Drops::default());
    let (sender, batching) = support::jammed(drops.clone(), template());
    let layer = TracingLayer::new(batching).layer(&sender).unwrap();
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

// ---------------------------------------------------------------------------------
// The installed layer, in a child process.

const CHILD: &str = "LOGSENDER_TRACING_CHILD";

#[test]
fn child_install() {
    let Ok(addr) = std::env::var(CHILD) else {
        return;
    };
    let sender = LogSender::new(fast_config(&addr).build().unwrap()).unwrap();
    let guard = TracingLayer::new(Batching::new(template()))
        .filter("warn,child_app=debug")
        .install(sender)
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
    println!("child done");
}

#[test]
fn the_installed_layers_guard_delivers_every_event_on_drop() {
    watch_panics();
    let sink = Sink::start();
    let exe = std::env::current_exe().unwrap();
    let out = Command::new(exe)
        .args([
            "--exact",
            "child_install",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD, sink.addr())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("child done"),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let entries: Vec<_> = sink.received().into_iter().flat_map(|p| p.logs).collect();
    assert_eq!(entries.len(), 50, "{entries:?}");
    assert!(entries
        .iter()
        .all(|e| e.message == "kept" && e.source == "child_app"));
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
