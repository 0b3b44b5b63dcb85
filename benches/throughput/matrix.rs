//! What is measured: payload sizes, clients, the tasks the parent runs, and the
//! `LOGSENDER_BENCH_*` settings.

use logsender::DeliveryMode;

pub use crate::roles::Sample;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Size {
    Small,
    Medium,
    Large,
}

impl Size {
    pub const ALL: [Size; 3] = [Size::Small, Size::Medium, Size::Large];

    pub fn name(self) -> &'static str {
        match self {
            Size::Small => "small",
            Size::Medium => "medium",
            Size::Large => "large",
        }
    }

    pub fn parse(s: &str) -> Size {
        Size::ALL
            .into_iter()
            .find(|z| z.name() == s)
            .unwrap_or_else(|| panic!("unknown size {s}"))
    }

    /// Log entries per payload.
    pub fn entries(self) -> usize {
        match self {
            Size::Small => 10,
            Size::Medium => 100,
            Size::Large => 1000,
        }
    }

    /// Payloads per cell at scale 1 (about a second of logsender with 4 workers on 2 cores).
    pub fn count(self) -> usize {
        match self {
            Size::Small => 20_000,
            Size::Medium => 5_000,
            Size::Large => 600,
        }
    }

    /// Distinct pre-built payloads cycled through (about 4 MB encoded in all).
    pub fn templates(self) -> usize {
        match self {
            Size::Small => 64,
            Size::Medium => 32,
            Size::Large => 8,
        }
    }
}

/// Compression of a logsender cell.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Gzip {
    /// `Compression::None`.
    Off,
    /// The library's defaults: `Compression::Gzip` at the default `gzip_level`.
    Default,
    /// `Compression::Gzip` with `ConfigBuilder::gzip_level(n)`.
    Level(u32),
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Client {
    /// One thread writing pre-encoded payloads into one grpcio call, one write in flight.
    Baseline,
    /// One thread encoding each payload and writing it with buffer hints (flush every 64).
    EncodeWrite,
    /// The producer calls `LogSender::send_logs` itself (at-least-once, uncompressed).
    SendLogs,
    /// logsender's worker pool fed through a crossbeam queue.
    Workers {
        mode: DeliveryMode,
        workers: usize,
        gzip: Gzip,
    },
    /// tonic + prost on a tokio runtime (gzip: tonic's fixed level, `TONIC_GZIP_LEVEL`).
    Tonic { gzip: bool },
    /// The same payloads' entries logged one by one through an `EntrySender`, batched
    /// back into payloads of the same size (at-least-once, uncompressed).
    Entries { workers: usize },
    /// logsender on the OTLP wire: the `at-least-once/N` cell with `Wire::OtlpLogs` and
    /// `EXPORTS_IN_FLIGHT` Export calls in flight (`../common/otlp_wire.rs`).
    Otlp { workers: usize, gzip: Gzip },
    /// tonic + prost unary Export calls of the same OTLP requests, `EXPORTS_IN_FLIGHT`
    /// in flight (gzip: tonic's fixed level).
    TonicOtlp { gzip: bool },
}

/// gzip levels of the end-to-end level rows (the default level is `at-least-once-gzip/4`).
const LEVEL_ROWS: [u32; 3] = [1, 3, 6];

/// tonic 0.14 compresses at flate2 level 6 and offers no setting (codec/compression.rs:
/// `flate2::Compression::new(6)`, "FIXME: support customizing the compression level").
pub const TONIC_GZIP_LEVEL: u32 = 6;

/// Size on which the end-to-end level rows run when no filter is given (except the row
/// at tonic's level, which runs at every size).
const LEVEL_ROWS_SIZE: Size = Size::Medium;

impl Client {
    pub fn all() -> Vec<Client> {
        let mut v = vec![Client::Baseline, Client::EncodeWrite, Client::SendLogs];
        for mode in [DeliveryMode::AtMostOnce, DeliveryMode::AtLeastOnce] {
            for workers in [1, 2, 4, 8] {
                v.push(Client::Workers {
                    mode,
                    workers,
                    gzip: Gzip::Off,
                });
            }
        }
        v.push(Client::Tonic { gzip: false });
        v.push(Client::Entries { workers: 4 });
        v.push(Client::Workers {
            mode: DeliveryMode::AtLeastOnce,
            workers: 4,
            gzip: Gzip::Default,
        });
        v.push(Client::Tonic { gzip: true });
        for level in LEVEL_ROWS {
            if level != default_gzip_level() {
                v.push(Client::Workers {
                    mode: DeliveryMode::AtLeastOnce,
                    workers: 4,
                    gzip: Gzip::Level(level),
                });
            }
        }
        // The OTLP rows: logsender's and the tonic peer's, then the same at tonic's gzip
        // level.
        for gzip in [false, true] {
            v.push(Client::Otlp {
                workers: 4,
                gzip: if gzip {
                    Gzip::Level(TONIC_GZIP_LEVEL)
                } else {
                    Gzip::Off
                },
            });
            v.push(Client::TonicOtlp { gzip });
        }
        v
    }

    pub fn name(self) -> String {
        match self {
            Client::Baseline => "baseline".into(),
            Client::EncodeWrite => "encode+write".into(),
            Client::SendLogs => "send_logs".into(),
            Client::Workers {
                mode,
                workers,
                gzip,
            } => {
                let mode = match mode {
                    DeliveryMode::AtMostOnce => "at-most-once",
                    _ => "at-least-once",
                };
                match gzip {
                    Gzip::Off => format!("{mode}/{workers}"),
                    Gzip::Default => format!("{mode}-gzip/{workers}"),
                    Gzip::Level(n) => format!("{mode}-gzip{n}/{workers}"),
                }
            }
            Client::Tonic { gzip: false } => "tonic".into(),
            Client::Tonic { gzip: true } => "tonic-gzip".into(),
            Client::Entries { workers } => format!("entries/{workers}"),
            Client::Otlp { workers, gzip } => match gzip {
                Gzip::Off => format!("otlp/{workers}"),
                Gzip::Default => format!("otlp-gzip/{workers}"),
                Gzip::Level(n) => format!("otlp-gzip{n}/{workers}"),
            },
            Client::TonicOtlp { gzip: false } => "tonic-otlp".into(),
            Client::TonicOtlp { gzip: true } => "tonic-otlp-gzip".into(),
        }
    }

    pub fn parse(s: &str) -> Client {
        Client::all()
            .into_iter()
            .find(|c| c.name() == s)
            .unwrap_or_else(|| panic!("unknown client {s}"))
    }

    /// The gzip level this client compresses at, if it does.
    pub fn gzip_level(self) -> Option<u32> {
        match self {
            Client::Workers { gzip, .. } | Client::Otlp { gzip, .. } => match gzip {
                Gzip::Off => None,
                Gzip::Default => Some(default_gzip_level()),
                Gzip::Level(n) => Some(n),
            },
            Client::Tonic { gzip: true } | Client::TonicOtlp { gzip: true } => {
                Some(TONIC_GZIP_LEVEL)
            }
            _ => None,
        }
    }

    /// Whether the client ships OTLP `Export` calls (else GoSight's stream).
    pub fn otlp(self) -> bool {
        matches!(self, Client::Otlp { .. } | Client::TonicOtlp { .. })
    }

    /// Whether the producer hands payloads to a queue (worker pool, tonic) rather than
    /// calling the writer itself (baseline, encode+write, send_logs).
    pub fn queued(self) -> bool {
        matches!(
            self,
            Client::Workers { .. }
                | Client::Tonic { .. }
                | Client::Entries { .. }
                | Client::Otlp { .. }
                | Client::TonicOtlp { .. }
        )
    }

    /// In the matrix that runs without a filter (level rows: one size only).
    fn in_default_matrix(self, size: Size) -> bool {
        match self {
            // tonic's level runs at every size: the same-level comparison.
            Client::Workers {
                gzip: Gzip::Level(level),
                ..
            } => size == LEVEL_ROWS_SIZE || level == TONIC_GZIP_LEVEL,
            _ => true,
        }
    }
}

/// The library's default `gzip_level`.
pub fn default_gzip_level() -> u32 {
    logsender::Config::builder("127.0.0.1:1")
        .build()
        .map_or(6, |c| c.gzip_level())
}

/// gzip levels of the compression table.
pub const TABLE_LEVELS: [u32; 4] = [1, 3, 6, 9];

/// One unit of work the parent repeats.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Kind {
    /// A matrix cell: one client process shipping one size to the shared sink.
    Cell(Size, Client),
    /// The gzip level table for one size (single-thread compression, no network).
    GzipLevels(Size),
    /// A backlog variant (its own sink, started late).
    Backlog(&'static str),
    /// A reconnect backoff policy through a collector outage (its own sink, killed).
    Outage(&'static str),
}

impl Kind {
    pub fn name(self) -> String {
        match self {
            Kind::Cell(size, client) => format!("{}/{}", size.name(), client.name()),
            Kind::GzipLevels(size) => format!("gzip-levels/{}", size.name()),
            Kind::Backlog(variant) => format!("backlog/{variant}"),
            Kind::Outage(policy) => format!("outage/{policy}"),
        }
    }
}

pub struct Task {
    pub kind: Kind,
    pub reps: Vec<Sample>,
}

impl Task {
    pub fn metric(&self, key: &str) -> Vec<f64> {
        self.reps
            .iter()
            .map(|s| s.get(key).copied().unwrap_or(f64::NAN))
            .collect()
    }

    pub fn summary(&self, key: &str) -> crate::stats::Summary {
        crate::stats::Summary::of(&self.metric(key))
    }

    pub fn med(&self, key: &str) -> f64 {
        self.summary(key).median
    }
}

/// Every task that `filter` selects, in run order: the matrix size-major, then the gzip
/// tables, then the backlog variants, then the outage policies. No filter: the default matrix (level rows on
/// `LEVEL_ROWS_SIZE` only). A filter is comma-separated substrings of task names.
pub fn select(filter: &str) -> Vec<Task> {
    let wanted = |kind: Kind| {
        if filter.trim().is_empty() {
            match kind {
                Kind::Cell(size, client) => client.in_default_matrix(size),
                _ => true,
            }
        } else {
            crate::roles::selects(filter, &kind.name())
        }
    };
    let mut kinds = Vec::new();
    for size in Size::ALL {
        for client in Client::all() {
            kinds.push(Kind::Cell(size, client));
        }
    }
    kinds.extend(Size::ALL.map(Kind::GzipLevels));
    kinds.extend(crate::backlog::BACKLOG_VARIANTS.map(|v| Kind::Backlog(v.0)));
    kinds.extend(crate::outage::variants().into_iter().map(Kind::Outage));
    kinds
        .into_iter()
        .filter(|k| wanted(*k))
        .map(|kind| Task {
            kind,
            reps: Vec::new(),
        })
        .collect()
}
