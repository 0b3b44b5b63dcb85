//! Throughput benchmark (`cargo bench`): logsender against the raw grpcio stream and
//! against the usual async peer (tonic + prost), on loopback, on GoSight's stream and
//! on OTLP's `Export`. See BENCHMARKS.md.
//!
//! One binary, several roles, picked by the first argument (`cargo bench` passes `--bench`
//! and possibly a filter; anything that is not a role is the parent):
//!
//! - parent (this file): starts one long-lived sink process, runs a global warm-up, then
//!   every selected task in a fresh process, rep-major (repetition 1 of every task, then
//!   repetition 2, ...), and hands the samples to `report`.
//! - `__sink [PORT]` (sink.rs): the collector; `__client SIZE CLIENT COUNT ADDR`
//!   (clients/): one matrix cell; `__gzip SIZE` (gzip_levels.rs): the gzip level table;
//!   `__backlog VARIANT PORT` (backlog.rs): the backlog scenario; `__costs` (payloads.rs):
//!   a diagnostic, not part of `cargo bench`.
//!
//! Children report on stdout as one `RESULT k=v ...` line (`../common/roles.rs`).

mod backlog;
mod clients;
#[path = "../common/generate.rs"]
mod generate;
mod gzip_levels;
mod matrix;
#[path = "../common/otlp_sink.rs"]
mod otlp_sink;
#[path = "../common/otlp_wire.rs"]
mod otlp_wire;
mod outage;
#[path = "../common/output.rs"]
mod output;
mod payloads;
mod procfs;
mod prost_mirror;
mod protocol;
mod report;
#[path = "../common/rng.rs"]
mod rng;
#[path = "../common/roles.rs"]
mod roles;
mod sink;
mod stats;

use std::time::Instant;

use matrix::{Client, Kind, Size, Task};
use roles::{free_port, run_child, scaled, Sample};
use sink::SinkProcess;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("__sink") => sink::sink_main(&args[1..]),
        Some("__client") => clients::client_main(&args[1..]),
        Some("__gzip") => gzip_levels::gzip_main(&args[1..]),
        Some("__backlog") => backlog::backlog_main(&args[1..]),
        Some("__outage") => outage::outage_main(&args[1..]),
        Some("__costs") => payloads::costs_main(),
        _ => parent_main(&args),
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
    let mut tasks = matrix::select(&filter);
    if tasks.is_empty() {
        // `cargo bench` hands the same filter to every bench.
        eprintln!("bench: the filter selects no throughput task");
        return;
    }
    eprintln!(
        "bench: {} tasks x {reps} reps after a warm-up (LOGSENDER_BENCH_FILTER={filter:?}, \
         LOGSENDER_BENCH_SCALE={})",
        tasks.len(),
        roles::scale()
    );
    let began = Instant::now();
    let mut sink = tasks
        .iter()
        .any(|t| matches!(t.kind, Kind::Cell(..)))
        .then(|| SinkProcess::spawn(0));
    if let Some(sink) = sink.as_mut() {
        warm_up(sink, &tasks);
    }
    let warmup_s = began.elapsed().as_secs_f64();
    let mut rep_s = Vec::new();
    for rep in 0..reps {
        let rep_began = Instant::now();
        for task in &mut tasks {
            let sample = match task.kind {
                Kind::Cell(size, client) => run_cell(
                    sink.as_mut().expect("sink"),
                    size,
                    client,
                    scaled(size.count()),
                ),
                Kind::GzipLevels(size) => run_child(&["__gzip".into(), size.name().into()]),
                Kind::Backlog(variant) => {
                    run_child(&["__backlog".into(), variant.into(), free_port().to_string()])
                }
                Kind::Outage(policy) => {
                    run_child(&["__outage".into(), policy.into(), free_port().to_string()])
                }
            };
            if let Some(sample) = sample {
                eprintln!(
                    "bench: rep {}/{reps} {:<36} {}",
                    rep + 1,
                    task.kind.name(),
                    report::progress(task.kind, &sample)
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

/// One uncounted run of every selected client (on the first size it is selected for),
/// with a fifth of the payloads: warms the sink's two servers, the page cache and the
/// CPU before the first counted repetition.
fn warm_up(sink: &mut SinkProcess, tasks: &[Task]) {
    let began = Instant::now();
    let mut seen: Vec<Client> = Vec::new();
    for task in tasks {
        if let Kind::Cell(size, client) = task.kind {
            if !seen.contains(&client) {
                seen.push(client);
                let n = (scaled(size.count()) / 5).max(size.templates());
                let _ = run_cell(sink, size, client, n);
            }
        }
    }
    eprintln!(
        "bench: warm-up: {} runs, {:.1} s (not counted)",
        seen.len(),
        began.elapsed().as_secs_f64()
    );
}

/// One cell: a client process against the shared sink, with the sink's counts and CPU
/// around it, and the per-payload figures derived from them.
fn run_cell(sink: &mut SinkProcess, size: Size, client: Client, n: usize) -> Option<Sample> {
    let port = match client {
        Client::Tonic { .. } => sink.answering_port(),
        _ => sink.gosight_port(),
    };
    let before = sink.snapshot();
    let began = Instant::now();
    let result = run_child(&[
        "__client".into(),
        size.name().into(),
        client.name(),
        n.to_string(),
        format!("127.0.0.1:{port}"),
    ]);
    let wall = began.elapsed().as_secs_f64();
    let after = sink.snapshot();
    let mut s = result?;
    // OTLP: a message is a ResourceLogs (one payload), and the sink counts records.
    let messages = after.messages - before.messages;
    let records = after.records - before.records;
    if messages != n as u64 {
        eprintln!(
            "bench: WARNING {}/{}: sink counted {messages} messages, expected {n}",
            size.name(),
            client.name(),
        );
    }
    let entries = (n * size.entries()) as u64;
    if client.otlp() && records != entries {
        eprintln!(
            "bench: WARNING {}/{}: sink counted {records} OTLP records, expected {entries}",
            size.name(),
            client.name(),
        );
    }
    let get = |s: &Sample, k: &str| s.get(k).copied().unwrap_or(f64::NAN);
    let (acked, secs, bytes) = (get(&s, "acked"), get(&s, "secs"), get(&s, "bytes"));
    let per_payload = |v: f64, count: f64| {
        if count > 0.0 {
            v * 1e6 / count
        } else {
            f64::NAN
        }
    };
    let derived = [
        ("sink_messages", messages as f64),
        ("sink_bytes", (after.bytes - before.bytes) as f64),
        (
            "sink_streams",
            (after.ok_streams - before.ok_streams) as f64,
        ),
        ("sink_cpu", after.cpu - before.cpu),
        ("payloads_per_s", acked / secs),
        ("mb_per_s", bytes * (acked / n as f64).min(1.0) / secs / 1e6),
        ("client_cpu_us", per_payload(get(&s, "cpu"), acked)),
        (
            "client_cpu_us_per_record",
            per_payload(get(&s, "cpu"), acked * size.entries() as f64),
        ),
        ("sink_records", records as f64),
        (
            "sink_cpu_us",
            per_payload(after.cpu - before.cpu, messages as f64),
        ),
        ("wall_s", wall),
    ];
    for (k, v) in derived {
        s.insert(k.into(), v);
    }
    Some(s)
}
