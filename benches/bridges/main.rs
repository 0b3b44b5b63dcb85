//! Bridges benchmark (`cargo bench --bench bridges`): `log::info!` lines from 4 threads
//! through logsender's `log` bridge (GoSight wire, and OTLP) and
//! through OpenTelemetry's appenders, `BatchLogProcessor` and OTLP/gRPC exporter (the
//! peer), each to a sink on loopback that counts the records it receives. See
//! BENCHMARKS.md, "Bridges".
//!
//! One binary, several roles, picked by the first argument (as in the throughput bench;
//! anything that is not a role is the parent):
//!
//! - parent (this file): starts one long-lived sink process, runs a warm-up of every
//!   selected row, then every row in a fresh process, rep-major, and hands the samples
//!   to `report`.
//! - `__sink` (sinks.rs): the GoSight and OTLP servers, counting records.
//! - `__client ROW COUNT ADDR` (clients.rs): one row, one repetition.
//!
//! Children report on stdout as one `RESULT k=v ...` line (`../common/roles.rs`).

mod clients;
#[path = "../common/otlp_sink.rs"]
mod otlp_sink;
// Shared with the throughput bench, which uses its constant for the tonic peer.
#[allow(dead_code)]
#[path = "../common/otlp_wire.rs"]
mod otlp_wire;
#[path = "../common/output.rs"]
mod output;
// Shared with the throughput bench, which uses the helpers this bench does not.
#[allow(dead_code)]
#[path = "../throughput/procfs.rs"]
mod procfs;
#[allow(dead_code)]
#[path = "../throughput/protocol.rs"]
mod protocol;
mod report;
#[allow(dead_code)]
#[path = "../common/roles.rs"]
mod roles;
mod rows;
#[allow(dead_code)]
#[path = "../throughput/sink.rs"]
mod sink;
mod sinks;
#[allow(dead_code)]
#[path = "../throughput/stats.rs"]
mod stats;
mod workload;

use std::time::Instant;

use roles::{run_child, Sample};
use rows::{pace_arg, Kind};
use sink::SinkProcess;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("__sink") => sinks::sink_main(),
        Some("__client") => clients::client_main(&args[1..]),
        _ => parent_main(&args),
    }
}

/// One task and its repetitions.
pub struct Task {
    pub kind: Kind,
    pub reps: Vec<Sample>,
    /// What the sink saw of one line of this row (from the warm-up).
    pub sample: String,
}

impl Task {
    pub fn metric(&self, key: &str) -> Vec<f64> {
        self.reps
            .iter()
            .map(|s| s.get(key).copied().unwrap_or(f64::NAN))
            .collect()
    }

    pub fn summary(&self, key: &str) -> stats::Summary {
        stats::Summary::of(&self.metric(key))
    }

    pub fn med(&self, key: &str) -> f64 {
        self.summary(key).median
    }
}

/// What the parent knows about the whole run, for the report.
pub struct Run {
    pub reps: usize,
    pub filter: String,
    pub warmup_s: f64,
    pub rep_s: Vec<f64>,
    pub elapsed_s: f64,
}

fn parent_main(args: &[String]) {
    let reps = roles::reps();
    let filter = roles::filter(args);
    let mut tasks: Vec<Task> = Kind::all()
        .into_iter()
        .filter(|kind| roles::selects(&filter, &kind.name()))
        .map(|kind| Task {
            kind,
            reps: Vec::new(),
            sample: String::new(),
        })
        .collect();
    eprintln!(
        "bench: {} tasks x {reps} reps after a warm-up \
         (LOGSENDER_BENCH_FILTER={filter:?}, LOGSENDER_BENCH_SCALE={})",
        tasks.len(),
        roles::scale()
    );
    if tasks.is_empty() {
        // `cargo bench` hands the same filter to every bench.
        eprintln!("bench: the filter selects no bridges task");
        return;
    }
    for (key, _) in std::env::vars().filter(|(k, _)| k.starts_with("OTEL_")) {
        eprintln!("bench: WARNING {key} is set: it changes the peer's configuration");
    }
    let began = Instant::now();
    let mut sink = SinkProcess::spawn_role(&["__sink".to_string()]);
    // Warm-up: every task once with a fifth of the lines, not counted; what the sink
    // saw of one line is kept for the report.
    for task in &mut tasks {
        let _ = run_task(&mut sink, task.kind, (task.kind.lines() / 5).max(1));
        task.sample = sink.ask("SAMPLE");
    }
    let warmup_s = began.elapsed().as_secs_f64();
    eprintln!(
        "bench: warm-up: {} runs, {warmup_s:.1} s (not counted)",
        tasks.len()
    );
    let mut rep_s = Vec::new();
    for rep in 0..reps {
        let rep_began = Instant::now();
        for task in &mut tasks {
            if let Some(sample) = run_task(&mut sink, task.kind, task.kind.lines()) {
                eprintln!(
                    "bench: rep {}/{reps} {:<26} {}",
                    rep + 1,
                    task.kind.name(),
                    report::progress(&sample)
                );
                task.reps.push(sample);
            }
        }
        rep_s.push(rep_began.elapsed().as_secs_f64());
    }
    drop(sink);
    let run = Run {
        reps,
        filter,
        warmup_s,
        rep_s,
        elapsed_s: began.elapsed().as_secs_f64(),
    };
    println!("{}", report::tables(&tasks, &run));
    report::write_json(&tasks, &run);
}

/// One task: a client process against the shared sink, with the sink's counts around it
/// and the per-line figures derived from them.
fn run_task(sink: &mut SinkProcess, kind: Kind, n: usize) -> Option<Sample> {
    let row = kind.row;
    let port = if row.otlp() {
        sink.ports[1]
    } else {
        sink.gosight_port()
    };
    let before = sink.snapshot();
    let began = Instant::now();
    let result = run_child(&[
        "__client".into(),
        row.name(),
        pace_arg(kind.pace),
        n.to_string(),
        format!("127.0.0.1:{port}"),
    ]);
    let wall = began.elapsed().as_secs_f64();
    let after = sink.snapshot();
    let mut s = result?;
    let get = |s: &Sample, k: &str| s.get(k).copied().unwrap_or(f64::NAN);
    let records = (after.records - before.records) as f64;
    let delivered = records - get(&s, "pre");
    let (secs, cpu) = (get(&s, "secs"), get(&s, "cpu"));
    let missing = n as f64 - delivered;
    if missing != 0.0 {
        eprintln!(
            "bench: {}: the sink counted {delivered} of {n} lines ({} reported dropped)",
            kind.name(),
            get(&s, "dropped_reported"),
        );
    }
    let derived = [
        ("sink_records", records),
        ("sink_messages", (after.messages - before.messages) as f64),
        ("sink_bytes", (after.bytes - before.bytes) as f64),
        ("sink_cpu", after.cpu - before.cpu),
        ("delivered", delivered),
        // Lines the sink did not receive (whether the logger counted them or not).
        ("dropped", missing.max(0.0)),
        ("duplicates", (-missing).max(0.0)),
        ("lines_per_s", delivered / secs),
        ("calls_per_s", n as f64 / get(&s, "calls_secs")),
        ("client_cpu_us", cpu * 1e6 / delivered),
        ("client_cpu_us_per_call", cpu * 1e6 / n as f64),
        ("sink_cpu_us", (after.cpu - before.cpu) * 1e6 / records),
        (
            "wire_bytes_per_line",
            (after.bytes - before.bytes) as f64 / records,
        ),
        (
            "lines_per_message",
            records / (after.messages - before.messages) as f64,
        ),
        ("wall_s", wall),
    ];
    for (k, v) in derived {
        s.insert(k.into(), v);
    }
    Some(s)
}
