//! Output: markdown tables on stdout, progress lines on stderr, and every repetition of
//! every metric with its median and quartiles as JSON under `target/bench/`.

use std::time::{SystemTime, UNIX_EPOCH};

use logsender::DeliveryMode;

use crate::clients::{QUEUE_CAP, SAMPLE_EVERY};
use crate::matrix::{
    default_gzip_level, Client, Gzip, Kind, Sample, Size, Task, TABLE_LEVELS, TONIC_GZIP_LEVEL,
};
use crate::output::{
    fmt_lat, fmt_rate, json_num, json_nums, json_sample, json_str, json_summary, with_iqr,
    write_bench_files,
};
use crate::stats::median;
use crate::Run;

fn get(s: &Sample, key: &str) -> f64 {
    s.get(key).copied().unwrap_or(f64::NAN)
}

/// One progress line for stderr.
pub fn progress(kind: Kind, s: &Sample) -> String {
    match kind {
        Kind::Cell(..) => format!(
            "{:>9} payloads/s  client {:>6} µs  sink {:>6} µs per payload  ({:.2} s)",
            fmt_rate(get(s, "payloads_per_s")),
            fmt_lat(get(s, "client_cpu_us")),
            fmt_lat(get(s, "sink_cpu_us")),
            get(s, "secs")
        ),
        Kind::GzipLevels(_) => {
            let l = default_gzip_level();
            format!(
                "zlib level {l}: {:.2}x smaller, {} µs per payload",
                get(s, &format!("l{l}_zlib_ratio")),
                fmt_lat(get(s, &format!("l{l}_zlib_us")))
            )
        }
        Kind::Backlog(_) => format!("drained {} in {:.2} s", get(s, "n"), get(s, "drain_secs")),
        Kind::Outage(_) => format!(
            "down {:.1} s; back up: stream in {:.0} ms, first delivery in {:.0} ms",
            get(s, "outage_s"),
            get(s, "reconnect_ms"),
            get(s, "first_delivery_ms")
        ),
    }
}

/// The client's name, with the gzip level where the name does not carry it.
fn label(client: Client) -> String {
    match client {
        Client::Workers {
            gzip: Gzip::Default,
            ..
        }
        | Client::Tonic { gzip: true }
        | Client::TonicOtlp { gzip: true } => format!(
            "{} (level {})",
            client.name(),
            client.gzip_level().unwrap_or(0)
        ),
        _ => client.name(),
    }
}

fn cells(tasks: &[Task]) -> Vec<(Size, Client, &Task)> {
    tasks
        .iter()
        .filter_map(|t| match t.kind {
            Kind::Cell(size, client) => Some((size, client, t)),
            _ => None,
        })
        .collect()
}

fn baseline_pps(tasks: &[Task], size: Size) -> f64 {
    cells(tasks)
        .iter()
        .find(|(s, c, _)| *s == size && *c == Client::Baseline)
        .map_or(f64::NAN, |(_, _, t)| t.med("payloads_per_s"))
}

fn size_label(t: &Task, size: Size) -> String {
    format!(
        "{} ({:.1} KB)",
        size.name(),
        t.med("bytes") / t.med("n") / 1e3
    )
}

pub fn tables(tasks: &[Task], run: &Run) -> String {
    let mut out = String::new();
    for table in [
        matrix_table(tasks),
        otlp_table(tasks),
        level_rows_table(tasks),
        gzip_table(tasks),
        backlog_table(tasks),
        outage_table(tasks),
    ] {
        if !table.is_empty() {
            out.push_str(&table);
            out.push('\n');
        }
    }
    out.push_str(&format!(
        "{} repetitions after a warm-up; median (IQR = interquartile range, relative to the \
         median). Warm-up {:.0} s, repetitions {:.0} s each (median), whole run {:.0} s.\n",
        run.reps,
        run.warmup_s,
        median(&run.rep_s),
        run.elapsed_s
    ));
    out.push_str(&format!(
        "gzip: logsender's default level {} (src/config.rs); tonic-gzip level {TONIC_GZIP_LEVEL} \
         (fixed by tonic); flate2 backend zlib (libz-sys, as grpc core).\n",
        default_gzip_level()
    ));
    if default_gzip_level() != TONIC_GZIP_LEVEL {
        out.push_str(
            "WARNING: tonic-gzip and at-least-once-gzip/4 compress at different levels.\n",
        );
    }
    for (size, client, t) in cells(tasks) {
        let retries = t.med("send_retries");
        if retries > 0.0 {
            out.push_str(&format!(
                "{}/{}: {retries:.0} send_logs calls failed and were retried (median).\n",
                size.name(),
                client.name()
            ));
        }
    }
    out
}

fn matrix_table(tasks: &[Task]) -> String {
    let cells = cells(tasks);
    if cells.is_empty() {
        return String::new();
    }
    let mut t = String::new();
    t.push_str(
        "| size | client | payloads/s (IQR) | client CPU µs/payload (IQR) | \
         client CPU µs/record | sink CPU µs/payload (IQR) | × base | wire MB | \
         queue enqueue p50 / p99 / max µs | p99 with room µs (room %) | \
         direct call p50 / p99 / max µs | enq→ack p50 / p99 / max ms | peak RSS MB |\n",
    );
    t.push_str("|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|\n");
    for (size, client, cell) in &cells {
        let pps = cell.summary("payloads_per_s");
        let enq = format!(
            "{} / {} / {}",
            fmt_lat(cell.med("enq_p50_us")),
            fmt_lat(cell.med("enq_p99_us")),
            fmt_lat(cell.med("enq_max_us"))
        );
        let (queue, room, direct) = if client.queued() {
            let room = format!(
                "{} ({:.0}%)",
                fmt_lat(cell.med("enq_room_p99_us")),
                100.0 * cell.med("room_frac")
            );
            (enq, room, "–".to_string())
        } else {
            ("–".to_string(), "–".to_string(), enq)
        };
        let ratio = pps.median / baseline_pps(tasks, *size);
        t.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {:.1} | {queue} | {room} | {direct} | {} / {} / {} | {:.0} |\n",
            size_label(cell, *size),
            label(*client),
            with_iqr(pps, fmt_rate),
            with_iqr(cell.summary("client_cpu_us"), fmt_lat),
            fmt_lat(cell.med("client_cpu_us_per_record")),
            with_iqr(cell.summary("sink_cpu_us"), fmt_lat),
            if ratio.is_finite() { format!("{ratio:.2}×") } else { "–".into() },
            cell.med("wire_bytes") / 1e6,
            fmt_lat(cell.med("ack_p50_ms")),
            fmt_lat(cell.med("ack_p99_ms")),
            fmt_lat(cell.med("ack_max_ms")),
            cell.med("rss_peak_mb"),
        ));
    }
    t
}

/// logsender's OTLP rows against the tonic peer's, per size: payloads/s and client CPU
/// per record, and their ratios (the target: more payloads/s, less CPU, at every size).
fn otlp_table(tasks: &[Task]) -> String {
    let cells = cells(tasks);
    let find = |size: Size, client: Client| {
        cells
            .iter()
            .find(|(s, c, _)| *s == size && *c == client)
            .map(|(_, _, t)| *t)
    };
    let mut t = String::new();
    for size in Size::ALL {
        for gzip in [false, true] {
            let ours = Client::Otlp {
                workers: 4,
                gzip: if gzip {
                    Gzip::Level(TONIC_GZIP_LEVEL)
                } else {
                    Gzip::Off
                },
            };
            let peer = Client::TonicOtlp { gzip };
            let (Some(o), Some(p)) = (find(size, ours), find(size, peer)) else {
                continue;
            };
            let (o_pps, p_pps) = (o.med("payloads_per_s"), p.med("payloads_per_s"));
            let (o_cpu, p_cpu) = (
                o.med("client_cpu_us_per_record"),
                p.med("client_cpu_us_per_record"),
            );
            t.push_str(&format!(
                "| {} | {} against {} | {} / {} = **{:.2}×** | {} / {} µs = **{:.2}×** |\n",
                size_label(o, size),
                label(ours),
                label(peer),
                fmt_rate(o_pps),
                fmt_rate(p_pps),
                o_pps / p_pps,
                fmt_lat(o_cpu),
                fmt_lat(p_cpu),
                o_cpu / p_cpu,
            ));
        }
    }
    if t.is_empty() {
        return t;
    }
    format!(
        "| size | OTLP: logsender against tonic | payloads/s | client CPU per record |\n\
         |---|---|--:|--:|\n{t}"
    )
}

/// at-least-once/4 by gzip level, for the sizes that have level rows.
fn level_rows_table(tasks: &[Task]) -> String {
    let cells = cells(tasks);
    let at_least_once_4 = |c: &Client| {
        matches!(
            c,
            Client::Workers {
                mode: DeliveryMode::AtLeastOnce,
                workers: 4,
                ..
            }
        )
    };
    let sizes: Vec<Size> = Size::ALL
        .into_iter()
        .filter(|s| {
            cells.iter().any(|(z, c, _)| {
                z == s
                    && matches!(
                        c,
                        Client::Workers {
                            gzip: Gzip::Level(_),
                            ..
                        }
                    )
            })
        })
        .collect();
    if sizes.is_empty() {
        return String::new();
    }
    let mut rows: Vec<(Size, Option<u32>, &Task)> = cells
        .iter()
        .filter(|(s, c, _)| sizes.contains(s) && at_least_once_4(c))
        .map(|(s, c, t)| (*s, c.gzip_level(), *t))
        .collect();
    rows.sort_by_key(|(s, level, _)| (Size::ALL.iter().position(|z| z == s), *level));
    let mut t = String::from(
        "| size | at-least-once/4, gzip level | payloads/s (IQR) | client CPU µs/payload (IQR) | \
         sink CPU µs/payload (IQR) | wire MB | payload bytes ÷ wire bytes |\n\
         |---|--:|--:|--:|--:|--:|--:|\n",
    );
    for (size, level, cell) in rows {
        let level = match level {
            None => "none".to_string(),
            Some(l) if l == default_gzip_level() => format!("{l} (default)"),
            Some(l) => l.to_string(),
        };
        t.push_str(&format!(
            "| {} | {level} | {} | {} | {} | {:.1} | {:.2} |\n",
            size_label(cell, size),
            with_iqr(cell.summary("payloads_per_s"), fmt_rate),
            with_iqr(cell.summary("client_cpu_us"), fmt_lat),
            with_iqr(cell.summary("sink_cpu_us"), fmt_lat),
            cell.med("wire_bytes") / 1e6,
            cell.med("bytes") / cell.med("wire_bytes"),
        ));
    }
    t
}

fn gzip_table(tasks: &[Task]) -> String {
    let tables: Vec<(Size, &Task)> = tasks
        .iter()
        .filter_map(|t| match t.kind {
            Kind::GzipLevels(size) => Some((size, t)),
            _ => None,
        })
        .collect();
    if tables.is_empty() {
        return String::new();
    }
    let mut t = String::from(
        "| size | gzip level | ratio (zlib) | zlib CPU µs/payload (IQR) | zlib MB/s per core | \
         ratio (miniz_oxide) | miniz_oxide CPU µs/payload (IQR) |\n\
         |---|--:|--:|--:|--:|--:|--:|\n",
    );
    for (size, task) in tables {
        for level in TABLE_LEVELS {
            let key = |backend: &str, what: &str| format!("l{level}_{backend}_{what}");
            let mut marks = Vec::new();
            if level == default_gzip_level() {
                marks.push("default");
            }
            if level == TONIC_GZIP_LEVEL {
                marks.push("tonic");
            }
            let level = if marks.is_empty() {
                level.to_string()
            } else {
                format!("{level} ({})", marks.join(", "))
            };
            t.push_str(&format!(
                "| {} ({:.1} KB) | {level} | {:.2} | {} | {:.0} | {:.2} | {} |\n",
                size.name(),
                task.med("payload_bytes") / 1e3,
                task.med(&key("zlib", "ratio")),
                with_iqr(task.summary(&key("zlib", "us")), fmt_lat),
                task.med(&key("zlib", "mb_per_cpu_s")),
                task.med(&key("miniz", "ratio")),
                with_iqr(task.summary(&key("miniz", "us")), fmt_lat),
            ));
        }
    }
    t
}

/// The tasks of one kind, each with its variant name.
fn runs_of(
    tasks: &[Task],
    variant: fn(Kind) -> Option<&'static str>,
) -> Vec<(&'static str, &Task)> {
    tasks
        .iter()
        .filter_map(|t| variant(t.kind).map(|v| (v, t)))
        .collect()
}

fn outage_table(tasks: &[Task]) -> String {
    let runs = runs_of(tasks, |k| match k {
        Kind::Outage(p) => Some(p),
        _ => None,
    });
    if runs.is_empty() {
        return String::new();
    }
    let mut t = String::new();
    t.push_str(
        "| outage: backoff policy | collector down s | stream up after it is back, ms (IQR) | \
         first delivery after it is back, ms: median (IQR) | mean | max |\n",
    );
    t.push_str("|---|--:|--:|--:|--:|--:|\n");
    for (policy, task) in runs {
        let delivered = task.metric("first_delivery_ms");
        let max = delivered.iter().copied().fold(f64::NAN, f64::max);
        let mean = delivered.iter().sum::<f64>() / delivered.len().max(1) as f64;
        t.push_str(&format!(
            "| {policy} | {:.1} | {} | {} | {mean:.0} | {max:.0} |\n",
            task.med("outage_s"),
            with_iqr(task.summary("reconnect_ms"), |v| format!("{v:.0}")),
            with_iqr(task.summary("first_delivery_ms"), |v| format!("{v:.0}")),
        ));
    }
    t
}

fn backlog_table(tasks: &[Task]) -> String {
    let runs = runs_of(tasks, |k| match k {
        Kind::Backlog(v) => Some(v),
        _ => None,
    });
    if runs.is_empty() {
        return String::new();
    }
    let mut t = String::new();
    t.push_str(
        "| backlog | bound (payloads / MiB) | payloads | backlog at up (payloads / MiB) | \
         first write after up ms | drain s | payloads/s draining (IQR) | epochs | \
         max held (payloads / MiB) | RSS before / down / peak MB | delivered |\n",
    );
    t.push_str("|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|\n");
    for (variant, task) in runs {
        let med = |k: &str| task.med(k);
        t.push_str(&format!(
            "| {variant} | {} / {:.0} | {} | {} / {:.1} | {:.0}{} | {:.2} | {} | {:.0} | {} / {:.1} | {:.0} / {:.0} / {:.0} | {} of {} |\n",
            fmt_rate(med("max_payloads")),
            med("max_bytes_mb"),
            fmt_rate(med("n")),
            fmt_rate(med("backlog_at_up")),
            med("held_mb_at_up"),
            med("first_write_ms"),
            if med("stalled") > 0.0 { " (stuck, kicked)" } else { "" },
            med("drain_secs"),
            with_iqr(task.summary("drain_rate"), fmt_rate),
            med("epochs"),
            fmt_rate(med("max_held")),
            med("max_held_mb"),
            med("rss_base_mb"),
            med("rss_down_mb"),
            med("rss_peak_mb"),
            fmt_rate(med("sink_messages")),
            fmt_rate(med("n")),
        ));
    }
    t
}

fn json_task(tasks: &[Task], task: &Task) -> String {
    let head = match task.kind {
        Kind::Cell(size, client) => format!(
            "\"kind\": \"cell\", \"size\": {}, \"client\": {}, \"gzip_level\": {}, \
             \"ratio_to_baseline\": {}",
            json_str(size.name()),
            json_str(&client.name()),
            client
                .gzip_level()
                .map_or("null".to_string(), |l| l.to_string()),
            json_num(task.med("payloads_per_s") / baseline_pps(tasks, size)),
        ),
        Kind::GzipLevels(size) => format!(
            "\"kind\": \"gzip_levels\", \"size\": {}",
            json_str(size.name())
        ),
        Kind::Backlog(variant) => {
            format!("\"kind\": \"backlog\", \"variant\": {}", json_str(variant))
        }
        Kind::Outage(policy) => {
            format!("\"kind\": \"outage\", \"policy\": {}", json_str(policy))
        }
    };
    format!(
        "    {{\"name\": {}, {head}, \"summary\": {}, \"reps\": [{}]}}",
        json_str(&task.kind.name()),
        json_summary(&task.reps),
        task.reps
            .iter()
            .map(json_sample)
            .collect::<Vec<_>>()
            .join(", "),
    )
}

pub fn write_json(tasks: &[Task], run: &Run) {
    let unix = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let tasks_json: Vec<String> = tasks.iter().map(|t| json_task(tasks, t)).collect();
    let json = format!(
        "{{\n  \"unix_time\": {unix},\n  \"cores\": {cores},\n  \"reps\": {},\n  \"scale\": {},\n  \
         \"filter\": {},\n  \"warmup_s\": {},\n  \"rep_s\": [{}],\n  \"elapsed_s\": {},\n  \
         \"queue_capacity\": {QUEUE_CAP},\n  \"sample_every_us\": {},\n  \
         \"default_gzip_level\": {},\n  \"tonic_gzip_level\": {TONIC_GZIP_LEVEL},\n  \
         \"flate2_backend\": \"zlib (libz-sys)\",\n  \"tasks\": [\n{}\n  ]\n}}\n",
        run.reps,
        json_num(crate::roles::scale()),
        json_str(&run.filter),
        json_num(run.warmup_s),
        json_nums(&run.rep_s),
        json_num(run.elapsed_s),
        SAMPLE_EVERY.as_micros(),
        default_gzip_level(),
        tasks_json.join(",\n"),
    );
    write_bench_files(
        &[format!("throughput-{unix}.json"), "latest.json".to_string()],
        &json,
    );
}
