//! Output: the markdown table and the targets on stdout, progress on stderr, every
//! repetition with medians and quartiles as JSON under `target/bench/`.

use std::time::{SystemTime, UNIX_EPOCH};

use crate::output::{
    fmt_lat, fmt_rate, json_num, json_nums, json_sample, json_str, json_summary, with_iqr,
    write_bench_files,
};
use crate::roles::Sample;
use crate::rows::{TUNED_BATCH, TUNED_QUEUE};
use crate::stats::median;
use crate::workload::{Api, Pace, SAMPLE_EVERY, THREADS};
use crate::{Run, Task};

fn get(s: &Sample, key: &str) -> f64 {
    s.get(key).copied().unwrap_or(f64::NAN)
}

/// One progress line for stderr.
pub fn progress(s: &Sample) -> String {
    format!(
        "{:>9} lines/s  client {:>5} µs/line  p99 {:>6} µs  dropped {:>9}  ({:.2} s)",
        fmt_rate(get(s, "lines_per_s")),
        fmt_lat(get(s, "client_cpu_us")),
        fmt_lat(get(s, "lat_p99_us")),
        fmt_rate(get(s, "dropped")),
        get(s, "secs")
    )
}

/// Dropped lines: the median, its share of the lines, the spread, and for logsender how
/// many of them it counted itself (`Stats::records_dropped`).
fn dropped(task: &Task) -> String {
    let d = task.summary("dropped");
    let mut out = if d.median == 0.0 {
        "0".to_string()
    } else {
        let share = 100.0 * d.median / task.kind.lines() as f64;
        format!("{} ({share:.1}%)", fmt_rate(d.median))
    };
    if d.q3 > d.q1 {
        out.push_str(&format!(", IQR {}–{}", fmt_rate(d.q1), fmt_rate(d.q3)));
    }
    let reported = task.med("dropped_reported");
    if reported.is_finite() && d.median != 0.0 {
        out.push_str(&format!("; {} counted by it", fmt_rate(reported)));
    }
    out
}

fn pace_heading(pace: Pace, lines: usize) -> String {
    match pace {
        Pace::Burst => format!(
            "**burst**: {} lines from {THREADS} threads as fast as they can",
            fmt_rate(lines as f64)
        ),
        Pace::Paced(rate) => format!(
            "**paced**: {} lines from {THREADS} threads at {} lines/s in all",
            fmt_rate(lines as f64),
            fmt_rate(rate)
        ),
    }
}

fn paces(tasks: &[Task]) -> Vec<Pace> {
    let mut paces: Vec<Pace> = Vec::new();
    for t in tasks {
        if !paces.contains(&t.kind.pace) {
            paces.push(t.kind.pace);
        }
    }
    paces
}

pub fn tables(tasks: &[Task], run: &Run) -> String {
    let mut t = String::new();
    for pace in paces(tasks) {
        let rows: Vec<&Task> = tasks.iter().filter(|t| t.kind.pace == pace).collect();
        t.push_str(&format!(
            "{}; one call in {SAMPLE_EVERY} timed.\n\n",
            pace_heading(pace, rows[0].kind.lines())
        ));
        t.push_str(
            "| row | lines/s (IQR) | client CPU µs/line (IQR) | caller latency p50 / p99 / max µs | \
             peak RSS MB | lines dropped | calls/s | CPU µs/call | bytes/line | logger threads |\n\
             |---|--:|--:|--:|--:|--:|--:|--:|--:|--:|\n",
        );
        for task in rows {
            t.push_str(&format!(
                "| {} | {} | {} | {} / {} / {} | {:.0} | {} | {} | {} | {:.0} | {:.0} |\n",
                task.kind.row.name(),
                with_iqr(task.summary("lines_per_s"), fmt_rate),
                with_iqr(task.summary("client_cpu_us"), fmt_lat),
                fmt_lat(task.med("lat_p50_us")),
                fmt_lat(task.med("lat_p99_us")),
                fmt_lat(task.med("lat_max_us")),
                task.med("rss_peak_mb"),
                dropped(task),
                fmt_rate(task.med("calls_per_s")),
                fmt_lat(task.med("client_cpu_us_per_call")),
                task.med("wire_bytes_per_line"),
                task.med("logger_threads"),
            ));
        }
        t.push('\n');
    }
    t.push_str("Rows:\n\n");
    let mut seen = Vec::new();
    for task in tasks {
        if !seen.contains(&task.kind.row) {
            seen.push(task.kind.row);
            t.push_str(&format!(
                "- {}: {}\n",
                task.kind.row.name(),
                task.kind.row.label()
            ));
        }
    }
    t.push_str("\nTargets (logsender's row against each peer row of the same front end):\n\n");
    t.push_str(&targets(tasks));
    t.push_str(&format!(
        "\n{} repetitions after a warm-up; median (IQR = interquartile range, relative to the \
         median). Warm-up {:.0} s, repetitions {:.0} s each (median), whole run {:.0} s.\n",
        run.reps,
        run.warmup_s,
        median(&run.rep_s),
        run.elapsed_s
    ));
    let not_flushed: Vec<String> = tasks
        .iter()
        .filter(|t| t.metric("flush_ok").iter().any(|v| *v != 1.0))
        .map(|t| t.kind.name())
        .collect();
    if !not_flushed.is_empty() {
        t.push_str(&format!(
            "WARNING: the flush did not report everything delivered in some repetitions of: {}\n",
            not_flushed.join(", ")
        ));
    }
    t.push_str("\nWhat the sink received for one line (the largest message of the warm-up):\n\n");
    let mut seen = Vec::new();
    for task in tasks {
        if !seen.contains(&task.kind.row) {
            seen.push(task.kind.row);
            t.push_str(&format!("- {}: {}\n", task.kind.row.name(), task.sample));
        }
    }
    t
}

fn mark(met: bool) -> &'static str {
    if met {
        "met"
    } else {
        "NOT met"
    }
}

/// The targets, logsender's row for each front end against each peer row for
/// it, at each pace: ≥ 2× the lines/s (burst: what each ships while the callers run
/// flat out; paced rows all ship the pace) at ≤ 0.5× the CPU per line, a lower p99
/// caller latency, 0 dropped.
fn targets(tasks: &[Task]) -> String {
    let mut t = String::new();
    for pace in paces(tasks) {
        for api in [Api::Log, Api::Tracing] {
            let of = |t: &&Task| t.kind.pace == pace && t.kind.row.api() == api;
            let ours_rows = tasks.iter().filter(of).filter(|t| !t.kind.row.peer());
            for (ours, peer) in ours_rows.flat_map(|ours| {
                tasks
                    .iter()
                    .filter(of)
                    .filter(|t| t.kind.row.peer())
                    .map(move |peer| (ours, peer))
            }) {
                let rate = ours.med("lines_per_s") / peer.med("lines_per_s");
                let cpu = ours.med("client_cpu_us") / peer.med("client_cpu_us");
                let (p99, peer_p99) = (ours.med("lat_p99_us"), peer.med("lat_p99_us"));
                let dropped = ours.med("dropped");
                let rate = match pace {
                    Pace::Burst => format!("lines/s {rate:.2}× (≥ 2×: {})", mark(rate >= 2.0)),
                    Pace::Paced(_) => format!("lines/s {rate:.2}× (both paced)"),
                };
                t.push_str(&format!(
                    "- {} against {}: {rate}; CPU per line {cpu:.2}× (≤ 0.5×: {}); \
                     p99 caller latency {} against {} µs (lower: {}); {} dropped, the peer {} \
                     (0: {})\n",
                    ours.kind.name(),
                    peer.kind.row.name(),
                    mark(cpu <= 0.5),
                    fmt_lat(p99),
                    fmt_lat(peer_p99),
                    mark(p99 < peer_p99),
                    fmt_rate(dropped),
                    fmt_rate(peer.med("dropped")),
                    mark(dropped == 0.0),
                ));
            }
        }
    }
    if tasks.iter().any(|t| t.kind.row.api() == Api::Tracing)
        && !tasks
            .iter()
            .any(|t| t.kind.row.api() == Api::Tracing && !t.kind.row.peer())
    {
        t.push_str(
            "- logsender-tracing: not measured (built without the crate's feature `tracing`: \
             `cargo bench --features tracing --bench bridges`)\n",
        );
    }
    t
}

pub fn write_json(tasks: &[Task], run: &Run) {
    let unix = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let tasks_json: Vec<String> = tasks
        .iter()
        .map(|t| {
            format!(
                "    {{\"name\": {}, \"label\": {}, \"pace\": {}, \"lines\": {}, \"sink_saw\": {}, \
                 \"summary\": {}, \"reps\": [{}]}}",
                json_str(&t.kind.name()),
                json_str(&t.kind.row.label()),
                match t.kind.pace {
                    Pace::Burst => "\"burst\"".to_string(),
                    Pace::Paced(rate) => json_num(rate),
                },
                t.kind.lines(),
                json_str(&t.sample),
                json_summary(&t.reps),
                t.reps.iter().map(json_sample).collect::<Vec<_>>().join(", "),
            )
        })
        .collect();
    let json = format!(
        "{{\n  \"unix_time\": {unix},\n  \"cores\": {cores},\n  \"reps\": {},\n  \"scale\": {},\n  \
         \"filter\": {},\n  \"threads\": {THREADS},\n  \
         \"sample_every\": {SAMPLE_EVERY},\n  \"tuned_queue\": {TUNED_QUEUE},\n  \
         \"tuned_batch\": {TUNED_BATCH},\n  \"warmup_s\": {},\n  \"rep_s\": [{}],\n  \
         \"elapsed_s\": {},\n  \"tasks\": [\n{}\n  ]\n}}\n",
        run.reps,
        json_num(crate::roles::scale()),
        json_str(&run.filter),
        json_num(run.warmup_s),
        json_nums(&run.rep_s),
        json_num(run.elapsed_s),
        tasks_json.join(",\n"),
    );
    write_bench_files(
        &[
            format!("bridges-{unix}.json"),
            "bridges-latest.json".to_string(),
        ],
        &json,
    );
}
