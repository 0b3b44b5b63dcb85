//! The tasks: which logger the lines go through (the row), at which pace, how many.

use crate::roles::scaled;
use crate::workload::{Api, Pace};

/// Lines per repetition of a burst row at `LOGSENDER_BENCH_SCALE` 1.
pub const BURST_LINES: usize = 2_000_000;

/// The paced rows' rate, lines per second from all threads together, and their lines
/// per repetition at `LOGSENDER_BENCH_SCALE` 1 (2 s).
pub const PACED_RATE: f64 = 100_000.0;
pub const PACED_LINES: usize = 200_000;

/// The tuned peer's `BatchConfig`: a queue of 64 Ki records instead of 2,048 and batches
/// of 8,192 instead of 512 (fewer, larger export calls). The scheduled delay (1 s) and
/// the export timeout (30 s) stay at their defaults.
pub const TUNED_QUEUE: usize = 65_536;
pub const TUNED_BATCH: usize = 8_192;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Row {
    /// logsender's `log` bridge (`LogBridge`, defaults) on a `LogSender` (defaults,
    /// except plaintext and no compression): GoSight wire.
    LogBridge,
    /// The same on the OTLP wire (`Wire::OtlpLogs`, `../common/otlp_wire.rs`), to the
    /// sink's OTLP server, beside the OpenTelemetry rows.
    LogBridgeOtlp,
    /// logsender's `tracing` layer (`TracingLayer`, defaults: filter `info`, never
    /// blocks) installed as the global subscriber, on the same sender: GoSight wire.
    /// Needs the crate's feature `tracing`; without it the report says the row is
    /// missing.
    #[cfg(feature = "tracing")]
    TracingLayer,
    /// OpenTelemetry: `opentelemetry-appender-log` (`Api::Log`) or
    /// `opentelemetry-appender-tracing` (`Api::Tracing`) on an `SdkLoggerProvider` with
    /// a `BatchLogProcessor` (its defaults, or `TUNED_*`) and the OTLP gRPC (tonic)
    /// exporter, on a tokio runtime.
    Otel { api: Api, tuned: bool },
}

impl Row {
    /// Every row, in table order.
    pub fn all() -> Vec<Row> {
        let mut rows = vec![Row::LogBridge, Row::LogBridgeOtlp];
        rows.extend([
            Row::Otel {
                api: Api::Log,
                tuned: false,
            },
            Row::Otel {
                api: Api::Log,
                tuned: true,
            },
            #[cfg(feature = "tracing")]
            Row::TracingLayer,
            Row::Otel {
                api: Api::Tracing,
                tuned: false,
            },
            Row::Otel {
                api: Api::Tracing,
                tuned: true,
            },
        ]);
        rows
    }

    pub fn name(self) -> String {
        match self {
            Row::LogBridge => "logsender-log".into(),
            Row::LogBridgeOtlp => "logsender-otlp".into(),
            #[cfg(feature = "tracing")]
            Row::TracingLayer => "logsender-tracing".into(),
            Row::Otel { api, tuned } => {
                format!("otel-{}{}", api.name(), if tuned { "-tuned" } else { "" })
            }
        }
    }

    pub fn parse(s: &str) -> Row {
        Row::all()
            .into_iter()
            .find(|r| r.name() == s)
            .unwrap_or_else(|| panic!("unknown row {s}"))
    }

    pub fn api(self) -> Api {
        match self {
            Row::LogBridge | Row::LogBridgeOtlp => Api::Log,
            #[cfg(feature = "tracing")]
            Row::TracingLayer => Api::Tracing,
            Row::Otel { api, .. } => api,
        }
    }

    /// Whether the row ships OTLP (else GoSight).
    pub fn otlp(self) -> bool {
        matches!(self, Row::Otel { .. } | Row::LogBridgeOtlp)
    }

    /// Whether the row is the peer's (OpenTelemetry), else logsender's.
    pub fn peer(self) -> bool {
        matches!(self, Row::Otel { .. })
    }

    /// What the row is, for the table.
    pub fn label(self) -> String {
        match self {
            Row::LogBridge => "logsender `LogBridge` → GoSight".into(),
            Row::LogBridgeOtlp => "logsender `LogBridge` → OTLP/gRPC (`Wire::OtlpLogs`)".into(),
            #[cfg(feature = "tracing")]
            Row::TracingLayer => "logsender `TracingLayer` → GoSight".into(),
            Row::Otel { api, tuned } => format!(
                "OpenTelemetry appender-{} → OTLP/gRPC, batch {}",
                api.name(),
                if tuned {
                    format!("tuned (queue {TUNED_QUEUE}, batch {TUNED_BATCH})")
                } else {
                    "defaults (queue 2048, batch 512)".into()
                }
            ),
        }
    }
}

/// One unit of work the parent repeats: a row at a pace.
#[derive(Clone, Copy, PartialEq, Debug)]
pub struct Kind {
    pub pace: Pace,
    pub row: Row,
}

impl Kind {
    /// Every task, in run order: the burst rows, then the paced ones.
    pub fn all() -> Vec<Kind> {
        [Pace::Burst, Pace::Paced(PACED_RATE)]
            .into_iter()
            .flat_map(|pace| Row::all().into_iter().map(move |row| Kind { pace, row }))
            .collect()
    }

    /// `burst/logsender-log`, `paced/otel-log-tuned`, ...
    pub fn name(self) -> String {
        format!("{}/{}", pace_name(self.pace), self.row.name())
    }

    /// Lines per repetition.
    pub fn lines(self) -> usize {
        match self.pace {
            Pace::Burst => scaled(BURST_LINES),
            Pace::Paced(_) => scaled(PACED_LINES),
        }
    }
}

pub fn pace_name(pace: Pace) -> &'static str {
    match pace {
        Pace::Burst => "burst",
        Pace::Paced(_) => "paced",
    }
}

/// The client's pace argument: `burst` or `paced:RATE`.
pub fn pace_arg(pace: Pace) -> String {
    match pace {
        Pace::Burst => "burst".into(),
        Pace::Paced(rate) => format!("paced:{rate}"),
    }
}

pub fn parse_pace(s: &str) -> Pace {
    match s.strip_prefix("paced:") {
        Some(rate) => Pace::Paced(rate.parse().expect("paced:RATE")),
        None if s == "burst" => Pace::Burst,
        None => panic!("unknown pace {s}"),
    }
}
