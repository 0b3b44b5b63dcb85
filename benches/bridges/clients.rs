//! The client role (`__client ROW PACE N ADDR`): one row in its own process (a program has
//! one global `log` logger and one global `tracing` subscriber), so that its CPU time,
//! threads and peak RSS are its own. Sets the row's logger up as a user would, logs one
//! line and waits for its delivery (connected, sink reached), then measures: the calling
//! threads' `N` lines, then the logger's own flush. Prints one `RESULT` line.

use std::time::{Duration, Instant};

use logsender::{Batching, Compression, Config, LogBridge, LogPayload, LogSender};
use opentelemetry_appender_log::OpenTelemetryLogBridge;
use opentelemetry_appender_tracing::layer::OpenTelemetryTracingBridge;
use opentelemetry_otlp::{LogExporter, WithExportConfig};
use opentelemetry_sdk::logs::{BatchConfigBuilder, BatchLogProcessor, SdkLoggerProvider};
use opentelemetry_sdk::Resource;
use tracing_subscriber::layer::SubscriberExt;

use crate::otlp_wire::otlp_wire;
use crate::procfs::{cpu_secs, proc_status_kb};
use crate::roles::{print_result, watchdog};
use crate::rows::{parse_pace, Row, TUNED_BATCH, TUNED_QUEUE};
use crate::stats::pct;
use crate::workload::{self, Api, Pace};

/// The payload template of logsender's rows, the resource's `service.name` of the peer's.
const AGENT: &str = "bench-agent";

pub fn client_main(args: &[String]) {
    let [row, pace, n, addr, ..] = args else {
        panic!("usage: __client ROW PACE COUNT ADDR");
    };
    let (row, pace, n) = (Row::parse(row), parse_pace(pace), n.parse().expect("count"));
    watchdog(Duration::from_secs(120));
    let fields = match row {
        Row::LogBridge => logsender_log(n, pace, addr, false),
        Row::LogBridgeOtlp => logsender_log(n, pace, addr, true),
        #[cfg(feature = "tracing")]
        Row::TracingLayer => logsender_tracing(n, pace, addr),
        Row::Otel { api, tuned } => otel(n, pace, addr, api, tuned),
    };
    print_result(&fields);
}

/// What a row's flush tells.
struct Flushed {
    /// Everything logged so far was delivered (as far as the logger knows).
    ok: bool,
    /// Lines the logger itself says it dropped so far (NaN: it does not say).
    dropped: f64,
}

/// The measurement every row shares: one line and a flush before the window (so the
/// connection is up and the first line's one-time costs are paid; the parent expects
/// `n + 1` records), then the window: `THREADS` threads log `n` lines, then `flush`
/// waits for their delivery.
fn measure(
    n: usize,
    pace: Pace,
    line: fn(usize),
    mut flush: impl FnMut() -> Flushed,
) -> Vec<(String, f64)> {
    line(n);
    let first = flush();
    assert!(first.ok, "the first line was not delivered");
    let rss_base_kb = proc_status_kb("VmRSS");
    let (mut start, mut cpu0) = (Instant::now(), 0.0);
    let calls = workload::run(n, line, pace, || {
        cpu0 = cpu_secs();
        start = Instant::now();
    });
    let flushed = flush();
    let (secs, cpu) = (start.elapsed().as_secs_f64(), cpu_secs() - cpu0);
    let calls_secs = (calls.done - start).as_secs_f64();
    // The callers are gone: this thread, the watchdog's and the logger's.
    let threads = std::fs::read_dir("/proc/self/task").map_or(0, |d| d.count());
    let mut lat = calls.sampled_ns;
    lat.sort_unstable();
    let us = |q: f64| pct(&lat, q) / 1e3;
    [
        ("n", n as f64),
        ("pre", 1.0),
        ("secs", secs),
        ("calls_secs", calls_secs),
        ("cpu", cpu),
        ("flush_ok", f64::from(u8::from(flushed.ok))),
        ("dropped_reported", flushed.dropped - first.dropped),
        ("lat_p50_us", us(0.50)),
        ("lat_p99_us", us(0.99)),
        ("lat_max_us", us(1.0)),
        ("lat_samples", lat.len() as f64),
        ("logger_threads", threads.saturating_sub(2) as f64),
        ("rss_base_mb", rss_base_kb as f64 / 1024.0),
        ("rss_peak_mb", proc_status_kb("VmHWM") as f64 / 1024.0),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

/// logsender's sender for its rows: its defaults except `plaintext()` and no
/// compression (the OTLP exporter's default is none either); `otlp`: on the OTLP wire
/// (`otlp_wire`).
fn logsender_sender(addr: &str, otlp: bool) -> LogSender {
    let builder = Config::builder(addr)
        .plaintext()
        .compression(Compression::None);
    let builder = if otlp { otlp_wire(builder) } else { builder };
    LogSender::new(builder.build().expect("config")).expect("sender")
}

/// logsender's flush: everything acknowledged; drops are the records the bridge (or the
/// layer) dropped plus entries the sender dropped or dead-lettered.
fn logsender_flush(sender: &LogSender) -> Flushed {
    let report = sender.flush(Duration::from_secs(60));
    let lost = report.entries_dropped + report.entries_dead_lettered;
    Flushed {
        ok: report.outstanding == 0 && report.entries_outstanding == 0 && lost == 0,
        dropped: (sender.stats().records_dropped + lost) as f64,
    }
}

/// logsender's `log` bridge with its defaults (filter `info`, never blocks: 8,192
/// entries may wait, batches of 512 entries or 200 ms, 2 workers); `otlp`: its sender
/// on the OTLP wire.
fn logsender_log(n: usize, pace: Pace, addr: &str, otlp: bool) -> Vec<(String, f64)> {
    let guard = LogBridge::new(Batching::new(LogPayload::from_host(AGENT)))
        .install(logsender_sender(addr, otlp))
        .expect("install the bridge");
    guard
        .sender()
        .wait_connected(Duration::from_secs(10))
        .expect("connected");
    let mut fields = measure(n, pace, Api::Log.line(), || logsender_flush(guard.sender()));
    let done = guard.shutdown(Duration::from_secs(10));
    let undelivered: usize = done.undelivered.iter().map(|p| p.logs.len()).sum();
    fields.push(("undelivered_at_shutdown".into(), undelivered as f64));
    fields
}

/// logsender's `tracing` layer with its defaults (filter `info`, never blocks, the
/// bridge's batching), installed as the global subscriber (a `Registry` with the layer,
/// filtered by its `Targets`), on the sender of `logsender_log`.
#[cfg(feature = "tracing")]
fn logsender_tracing(n: usize, pace: Pace, addr: &str) -> Vec<(String, f64)> {
    let guard = logsender::TracingLayer::new(Batching::new(LogPayload::from_host(AGENT)))
        .install(logsender_sender(addr, false))
        .expect("install the layer");
    guard
        .sender()
        .wait_connected(Duration::from_secs(10))
        .expect("connected");
    let mut fields = measure(n, pace, Api::Tracing.line(), || {
        logsender_flush(guard.sender())
    });
    let done = guard.shutdown(Duration::from_secs(10));
    let undelivered: usize = done.undelivered.iter().map(|p| p.logs.len()).sum();
    fields.push(("undelivered_at_shutdown".into(), undelivered as f64));
    fields
}

/// The peer: OpenTelemetry's appender for `api` on an `SdkLoggerProvider` whose
/// `BatchLogProcessor` (defaults, or `TUNED_*`) exports with the OTLP gRPC exporter
/// (tonic). The exporter's channel needs a tokio runtime: the row makes one, as a
/// synchronous program would (`Runtime::new()`: one worker per core), and its threads'
/// CPU counts as the client's (the whole process is measured).
fn otel(n: usize, pace: Pace, addr: &str, api: Api, tuned: bool) -> Vec<(String, f64)> {
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    let exporter = {
        let _in_runtime = runtime.enter();
        LogExporter::builder()
            .with_tonic()
            .with_endpoint(format!("http://{addr}"))
            .build()
            .expect("OTLP exporter")
    };
    let provider = SdkLoggerProvider::builder()
        .with_resource(Resource::builder().with_service_name(AGENT).build());
    let provider = if tuned {
        let config = BatchConfigBuilder::default()
            .with_max_queue_size(TUNED_QUEUE)
            .with_max_export_batch_size(TUNED_BATCH)
            .build();
        provider.with_log_processor(
            BatchLogProcessor::builder(exporter)
                .with_batch_config(config)
                .build(),
        )
    } else {
        provider.with_batch_exporter(exporter)
    }
    .build();
    match api {
        Api::Log => {
            log::set_boxed_logger(Box::new(OpenTelemetryLogBridge::new(&provider)))
                .expect("set the logger");
            log::set_max_level(log::LevelFilter::Info);
        }
        Api::Tracing => {
            let subscriber = tracing_subscriber::registry()
                .with(tracing_subscriber::filter::LevelFilter::INFO)
                .with(OpenTelemetryTracingBridge::new(&provider));
            tracing::subscriber::set_global_default(subscriber).expect("set the subscriber");
        }
    }
    let fields = measure(n, pace, api.line(), || Flushed {
        ok: provider.force_flush().is_ok(),
        // The processor counts its drops but only logs them (at shutdown): the sink's
        // count tells.
        dropped: f64::NAN,
    });
    let _ = provider.shutdown();
    drop(runtime);
    fields
}
