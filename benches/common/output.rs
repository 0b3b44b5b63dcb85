//! Output helpers of the bench binaries (`benches/throughput/`, `benches/bridges/`):
//! number formats for the markdown tables, a median with its spread, JSON fragments,
//! and the files under `target/bench/`.

use crate::roles::Sample;
use crate::stats::Summary;

/// A rate with thousands separators: `12,345`.
pub fn fmt_rate(v: f64) -> String {
    if !v.is_finite() {
        return "–".into();
    }
    let s = format!("{:.0}", v);
    // Thousands separators.
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 && c != '-' {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A latency or cost with 3 significant digits (up to 100, then none after the point).
pub fn fmt_lat(v: f64) -> String {
    if !v.is_finite() {
        "–".into()
    } else if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// A median with its interquartile range relative to it: `12,345 (6%)`.
pub fn with_iqr(s: Summary, fmt: fn(f64) -> String) -> String {
    if s.median.is_finite() {
        format!("{} ({:.0}%)", fmt(s.median), s.iqr_pct())
    } else {
        "–".into()
    }
}

pub fn json_num(v: f64) -> String {
    if v.is_finite() {
        format!("{v}")
    } else {
        "null".into()
    }
}

/// A JSON array of numbers, without its brackets (`1.5, 2, null`).
pub fn json_nums(vs: &[f64]) -> String {
    vs.iter()
        .map(|v| json_num(*v))
        .collect::<Vec<_>>()
        .join(", ")
}

pub fn json_str(s: &str) -> String {
    format!("\"{}\"", s.replace(['"', '\\'], ""))
}

pub fn json_sample(s: &Sample) -> String {
    let fields: Vec<String> = s
        .iter()
        .map(|(k, v)| format!("{}: {}", json_str(k), json_num(*v)))
        .collect();
    format!("{{{}}}", fields.join(", "))
}

/// Median and quartiles of every metric of a set of repetitions (the first one's keys).
pub fn json_summary(reps: &[Sample]) -> String {
    let keys: Vec<&String> = reps.first().map(|s| s.keys().collect()).unwrap_or_default();
    let fields: Vec<String> = keys
        .iter()
        .map(|k| {
            let values: Vec<f64> = reps
                .iter()
                .map(|s| s.get(*k).copied().unwrap_or(f64::NAN))
                .collect();
            let s = Summary::of(&values);
            format!(
                "{}: {{\"median\": {}, \"q1\": {}, \"q3\": {}}}",
                json_str(k),
                json_num(s.median),
                json_num(s.q1),
                json_num(s.q3)
            )
        })
        .collect();
    format!("{{{}}}", fields.join(", "))
}

/// Writes `json` to each of `names` in `target/bench/` (next to the binary's target
/// dir: `target/release/deps/NAME-*`), reporting on stderr.
pub fn write_bench_files(names: &[String], json: &str) {
    let dir = std::env::current_exe()
        .ok()
        .and_then(|p| p.ancestors().nth(3).map(|t| t.join("bench")))
        .unwrap_or_else(|| "target/bench".into());
    if let Err(e) = std::fs::create_dir_all(&dir) {
        eprintln!("bench: cannot create {}: {e}", dir.display());
        return;
    }
    for name in names {
        let path = dir.join(name);
        match std::fs::write(&path, json) {
            Ok(()) => eprintln!("bench: wrote {}", path.display()),
            Err(e) => eprintln!("bench: cannot write {}: {e}", path.display()),
        }
    }
}
