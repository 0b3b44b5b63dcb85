//! Configuration: a validated [`Config`] built with [`ConfigBuilder`].

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::error::{invalid_config, Error};
use crate::events::EventHandler;

/// When a payload counts as delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum DeliveryMode {
    /// A payload counts as delivered only when the stream (the *epoch*) it was written
    /// on ends with status `OK` after logsender half-closed it. Epochs that fail are
    /// re-sent on the next stream: duplicates are possible after a fault, loss is not.
    #[default]
    AtLeastOnce,
    /// A payload counts as sent when its write completes (the Go original's semantics).
    /// One long-lived stream; payloads written just before a break can be lost.
    AtMostOnce,
}

/// What a worker does with a new payload when the sender already holds
/// `max_buffered_payloads` payloads or `max_buffered_bytes` bytes.
///
/// Every payload that is dropped is counted in [`Stats`](crate::Stats) and handed to
/// [`EventHandler::on_dropped`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum OverflowPolicy {
    /// The worker waits for room, so it stops draining the queue; producers then wait
    /// on their (bounded) channel. With `Some(timeout)`, a payload that found no room
    /// within `timeout` is dropped as [`DropReason::BlockTimeout`](crate::DropReason).
    Block {
        /// How long to wait for room; `None` waits until there is room or the sender closes.
        timeout: Option<Duration>,
    },
    /// Drop the new payload.
    DropNewest,
    /// Drop the oldest payload that is waiting to be (re)written, to make room for the new
    /// one. Payloads already written in an open epoch are not evicted; if only those fill
    /// the buffer, the worker waits for that epoch to end, as with `Block`. With a spool,
    /// a full spool evicts its oldest segment file whose payloads all wait on disk (each
    /// payload in it is dropped, counted and reported with its payload read back); if
    /// none can go (the oldest are in memory, on their way), the new payload is held in
    /// memory under this policy. (`send_logs` evicts nothing: with a full spool it holds
    /// its payload in memory if there is room, else returns `BufferFull`.)
    DropOldest,
}

impl Default for OverflowPolicy {
    fn default() -> Self {
        OverflowPolicy::Block { timeout: None }
    }
}

/// Message compression on the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Compression {
    /// No compression.
    None,
    /// gzip (the Go original's choice).
    #[default]
    Gzip,
}

/// Which protocol the sender speaks to the collector. The API, the guarantees, the
/// reports and the spool are the same on both; what each wire calls an acknowledgement
/// differs (ARCHITECTURE.md, "Two wires, one seam").
///
/// ```
/// use logsender::{Config, Wire};
///
/// let config = Config::builder("127.0.0.1:4317").plaintext().wire(Wire::OtlpLogs).build()?;
/// assert_eq!(config.wire(), Wire::OtlpLogs);
/// # Ok::<(), logsender::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Wire {
    /// GoSight's `proto.LogService/SubmitStream`: one long-lived client stream, committed
    /// in epochs (a half-close answered with `OK` acknowledges the epoch's payloads).
    #[default]
    GoSightStream,
    /// OTLP logs, `opentelemetry.proto.collector.logs.v1.LogsService/Export`, as the
    /// OpenTelemetry Collector, current GoSight, Grafana Alloy, Vector and Fluent Bit
    /// accept it: one call per batch, each its own acknowledgement, several in flight
    /// ([`ConfigBuilder::max_exports_in_flight`]). The mapping is in [`crate::otlp`].
    OtlpLogs,
}

/// TLS material, read from PEM files when the config is built.
#[derive(Clone, Default)]
pub(crate) struct TlsFiles {
    pub(crate) ca: Option<Vec<u8>>,
    pub(crate) identity: Option<(Vec<u8>, Vec<u8>)>,
    pub(crate) server_name: Option<String>,
}

/// How to reach the collector.
#[derive(Clone)]
pub(crate) enum Transport {
    Plaintext,
    Tls(TlsFiles),
}

/// A validated configuration for [`LogSender`](crate::LogSender).
///
/// Built with [`Config::builder`]; every setter there says its default.
#[derive(Clone)]
pub struct Config {
    pub(crate) addr: String,
    pub(crate) transport: Transport,
    pub(crate) delivery: DeliveryMode,
    pub(crate) commit_every: usize,
    pub(crate) commit_interval: Duration,
    pub(crate) commit_timeout: Duration,
    pub(crate) write_timeout: Duration,
    pub(crate) connect_timeout: Duration,
    pub(crate) backoff_initial: Duration,
    pub(crate) backoff_max: Duration,
    pub(crate) backoff_multiplier: f64,
    pub(crate) backoff_jitter: f64,
    pub(crate) keepalive_time: Duration,
    pub(crate) keepalive_timeout: Duration,
    pub(crate) max_message_size: usize,
    pub(crate) compression: Compression,
    pub(crate) max_buffered_payloads: usize,
    pub(crate) max_buffered_bytes: usize,
    pub(crate) overflow: OverflowPolicy,
    pub(crate) close_timeout: Duration,
    pub(crate) send_timeout: Duration,
    pub(crate) gzip_level: u32,
    pub(crate) gzip_min_size: usize,
    pub(crate) thread_name: String,
    pub(crate) handler: Option<Arc<dyn EventHandler>>,
    pub(crate) spool: Option<SpoolConfig>,
    /// As set with [`ConfigBuilder::hold_when_refused`]; `None`: on with a spool.
    pub(crate) hold_when_refused: Option<bool>,
    pub(crate) refused_backoff_initial: Duration,
    pub(crate) refused_backoff_max: Duration,
    pub(crate) wire: Wire,
    pub(crate) max_exports_in_flight: usize,
    pub(crate) otlp_max_request_bytes: usize,
}

/// When the spool's appends reach the disk (see [`ConfigBuilder::spool_sync`]).
///
/// A process crash (`kill -9`, an OOM kill, a panic) loses nothing the spool accepted
/// under any policy: what was written is in the kernel's page cache, which outlives the
/// process. The policies differ on a power cut or a kernel crash:
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SpoolSync {
    /// Each worker syncs (`fdatasync`) the payloads it appended before it takes more:
    /// a power cut loses nothing accepted. Costs a disk flush per batch taken in.
    EveryAppend,
    /// The spool thread syncs at this interval (the default: every 100 ms): a power
    /// cut loses at most the last interval's appends.
    Interval(Duration),
    /// Never synced by logsender (but by [`LogSender::sync`](crate::LogSender::sync),
    /// `flush` and `shutdown`): a power cut loses what the kernel had not written back
    /// yet (on Linux, up to about 30 s).
    Os,
}

/// The spool's settings (see [`ConfigBuilder::spool`]).
#[derive(Debug, Clone)]
pub(crate) struct SpoolConfig {
    pub(crate) dir: PathBuf,
    pub(crate) max_bytes: u64,
    pub(crate) sync: SpoolSync,
    pub(crate) segment_bytes: Option<u64>,
}

impl SpoolConfig {
    /// Segment size: as set, or a sixteenth of the spool (64 KiB to 16 MiB).
    pub(crate) fn segment_bytes(&self) -> u64 {
        self.segment_bytes
            .unwrap_or((self.max_bytes / 16).clamp(64 << 10, 16 << 20))
    }
}

/// The default [`ConfigBuilder::spool_max_bytes`]: 1 GiB.
pub const DEFAULT_SPOOL_MAX_BYTES: u64 = 1 << 30;

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("addr", &self.addr)
            .field("tls", &matches!(self.transport, Transport::Tls(_)))
            .field("delivery", &self.delivery)
            .field("commit_every", &self.commit_every)
            .field("commit_interval", &self.commit_interval)
            .field("max_buffered_payloads", &self.max_buffered_payloads)
            .field("max_buffered_bytes", &self.max_buffered_bytes)
            .field("overflow", &self.overflow)
            .field("spool", &self.spool)
            .field("holds_when_refused", &self.holds_when_refused())
            .finish_non_exhaustive()
    }
}

impl Config {
    /// Starts a builder for a collector at `addr` (`host:port`, or a gRPC target such as
    /// `unix:/path` or `dns:///host:port`).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use logsender::{Config, DeliveryMode};
    ///
    /// let config = Config::builder("127.0.0.1:50051")
    ///     .plaintext()
    ///     .delivery(DeliveryMode::AtLeastOnce)
    ///     .commit_every(500)
    ///     .reconnect_backoff(Duration::from_millis(100), Duration::from_secs(5))
    ///     .build()
    ///     .unwrap();
    /// assert_eq!(config.addr(), "127.0.0.1:50051");
    /// ```
    pub fn builder(addr: impl Into<String>) -> ConfigBuilder {
        ConfigBuilder {
            addr: addr.into(),
            plaintext: false,
            ca_file: None,
            identity_files: None,
            server_name: None,
            config_defaults: Defaults::get(),
            handler: None,
            spool: None,
            spool_max_bytes: DEFAULT_SPOOL_MAX_BYTES,
            spool_sync: SpoolSync::Interval(Duration::from_millis(100)),
            spool_segment_bytes: None,
            hold_when_refused: None,
        }
    }

    /// The collector address.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// The delivery mode.
    pub fn delivery(&self) -> DeliveryMode {
        self.delivery
    }

    /// The largest encoded payload that will be sent.
    pub fn max_message_size(&self) -> usize {
        self.max_message_size
    }

    /// The protocol spoken to the collector.
    pub fn wire(&self) -> Wire {
        self.wire
    }

    /// The most bytes one call may carry before compression: `otlp_max_request_bytes`
    /// on the OTLP wire; on GoSight's stream a payload is one message, bounded by
    /// `max_message_size` only.
    pub(crate) fn request_cap(&self) -> usize {
        match self.wire {
            Wire::OtlpLogs => self.otlp_max_request_bytes,
            Wire::GoSightStream => usize::MAX,
        }
    }

    /// The compression on the wire.
    pub fn compression(&self) -> Compression {
        self.compression
    }

    /// The gzip level used when compression is gzip (1 = fastest, 9 = smallest).
    pub fn gzip_level(&self) -> u32 {
        self.gzip_level
    }

    /// Whether payloads are held, not dead-lettered, while the collector refuses every
    /// call for a permanent reason: as set with [`ConfigBuilder::hold_when_refused`],
    /// else on with a spool and off without one; never with
    /// [`DeliveryMode::AtMostOnce`].
    pub fn holds_when_refused(&self) -> bool {
        self.delivery == DeliveryMode::AtLeastOnce
            && self.hold_when_refused.unwrap_or(self.spool.is_some())
    }
}

/// The default first delay of [`ConfigBuilder::refused_backoff`]: 1 s.
pub const DEFAULT_REFUSED_BACKOFF_INITIAL: Duration = Duration::from_secs(1);

/// The default cap of [`ConfigBuilder::refused_backoff`]: 5 min.
pub const DEFAULT_REFUSED_BACKOFF_MAX: Duration = Duration::from_secs(300);

/// The default of [`ConfigBuilder::otlp_max_request_bytes`]: 4 MiB, the limit every
/// OTLP receiver takes by default (gRPC's default receive limit; `otlp::MAX_REQUEST_BYTES`).
pub const DEFAULT_OTLP_MAX_REQUEST_BYTES: usize = 4 << 20;

/// The tunable numbers and their defaults.
#[derive(Clone)]
struct Defaults {
    delivery: DeliveryMode,
    commit_every: usize,
    commit_interval: Duration,
    commit_timeout: Duration,
    write_timeout: Duration,
    connect_timeout: Duration,
    backoff_initial: Duration,
    backoff_max: Duration,
    backoff_multiplier: f64,
    backoff_jitter: f64,
    refused_backoff_initial: Duration,
    refused_backoff_max: Duration,
    keepalive_time: Duration,
    keepalive_timeout: Duration,
    max_message_size: usize,
    compression: Compression,
    max_buffered_payloads: usize,
    max_buffered_bytes: usize,
    overflow: OverflowPolicy,
    close_timeout: Duration,
    send_timeout: Duration,
    gzip_level: u32,
    gzip_min_size: usize,
    thread_name: String,
    wire: Wire,
    max_exports_in_flight: usize,
    /// `None`: the default, 4 MiB or `max_message_size` if that is less.
    otlp_max_request_bytes: Option<usize>,
}

impl Defaults {
    fn get() -> Self {
        Defaults {
            delivery: DeliveryMode::AtLeastOnce,
            commit_every: 1000,
            commit_interval: Duration::from_secs(1),
            commit_timeout: Duration::from_secs(10),
            write_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
            backoff_initial: Duration::from_millis(100),
            backoff_max: Duration::from_secs(10),
            backoff_multiplier: 1.5,
            backoff_jitter: 0.2,
            refused_backoff_initial: DEFAULT_REFUSED_BACKOFF_INITIAL,
            refused_backoff_max: DEFAULT_REFUSED_BACKOFF_MAX,
            keepalive_time: Duration::from_secs(120),
            keepalive_timeout: Duration::from_secs(20),
            max_message_size: 32 << 20,
            compression: Compression::Gzip,
            max_buffered_payloads: 10_000,
            max_buffered_bytes: 256 << 20,
            overflow: OverflowPolicy::default(),
            close_timeout: Duration::from_secs(10),
            send_timeout: Duration::from_secs(5),
            gzip_level: 1,
            gzip_min_size: 512,
            thread_name: "logsender".into(),
            wire: Wire::GoSightStream,
            max_exports_in_flight: 4,
            otlp_max_request_bytes: None,
        }
    }
}

/// Builds a [`Config`]. Nonsense values are reported by [`build`](ConfigBuilder::build)
/// as [`Error::InvalidConfig`], never by a panic.
#[must_use]
pub struct ConfigBuilder {
    addr: String,
    plaintext: bool,
    ca_file: Option<PathBuf>,
    identity_files: Option<(PathBuf, PathBuf)>,
    server_name: Option<String>,
    config_defaults: Defaults,
    handler: Option<Arc<dyn EventHandler>>,
    spool: Option<SpoolConfig>,
    spool_max_bytes: u64,
    spool_sync: SpoolSync,
    spool_segment_bytes: Option<u64>,
    hold_when_refused: Option<bool>,
}

macro_rules! setter {
    ($(#[$doc:meta])* $name:ident: $ty:ty) => {
        $(#[$doc])*
        pub fn $name(mut self, value: $ty) -> Self {
            self.config_defaults.$name = value;
            self
        }
    };
}

impl ConfigBuilder {
    /// Talk plaintext HTTP/2 (no TLS). Meant for loopback and tests; it must be asked for.
    /// Defaults to TLS.
    pub fn plaintext(mut self) -> Self {
        self.plaintext = true;
        self
    }

    /// Verify the collector with this PEM CA bundle instead of the system roots.
    /// Defaults to the system roots.
    pub fn tls_ca_file(mut self, path: impl AsRef<Path>) -> Self {
        self.ca_file = Some(path.as_ref().to_path_buf());
        self
    }

    /// Present this PEM client certificate and key (mutual TLS). Defaults to none.
    pub fn tls_client_identity(mut self, cert: impl AsRef<Path>, key: impl AsRef<Path>) -> Self {
        self.identity_files = Some((cert.as_ref().to_path_buf(), key.as_ref().to_path_buf()));
        self
    }

    /// Check the collector's certificate against this name instead of the address's host.
    /// Defaults to the host of the address.
    pub fn tls_server_name(mut self, name: impl Into<String>) -> Self {
        self.server_name = Some(name.into());
        self
    }

    setter!(
        /// The protocol spoken to the collector. Defaults to [`Wire::GoSightStream`].
        /// [`Wire::OtlpLogs`] needs [`DeliveryMode::AtLeastOnce`].
        wire: Wire
    );
    setter!(
        /// On the OTLP wire, most `Export` calls in flight at once. Calls are issued
        /// by whichever thread writes (a worker, the background writer) and never waited
        /// for by it, so this bounds the requests outstanding, not the threads. With
        /// more than one, requests are not ordered among themselves; 1 keeps intake
        /// order. Defaults to 4.
        max_exports_in_flight: usize
    );
    /// On the OTLP wire, the most bytes of one `ExportLogsServiceRequest` before
    /// compression. A call carries whole payloads up to this; a payload larger than
    /// this alone is split into several `ResourceLogs` sent as consecutive calls (an
    /// entry alone larger is [`Error::PayloadTooLarge`]). Within 64 KiB ..=
    /// `max_message_size`. Defaults to 4 MiB, what OTLP receivers take by default (or
    /// `max_message_size`, if that is less).
    pub fn otlp_max_request_bytes(mut self, value: usize) -> Self {
        self.config_defaults.otlp_max_request_bytes = Some(value);
        self
    }
    setter!(
        /// Delivery guarantee. Defaults to [`DeliveryMode::AtLeastOnce`].
        delivery: DeliveryMode
    );
    setter!(
        /// In `AtLeastOnce`, half-close and commit the stream after this many payloads.
        /// Defaults to 1,000. GoSight wire only (each OTLP call is its own commit).
        commit_every: usize
    );
    setter!(
        /// In `AtLeastOnce`, commit the stream at least this often while it carries
        /// payloads. Defaults to 1 s. GoSight wire only.
        commit_interval: Duration
    );
    setter!(
        /// How long to wait for the collector's final status after a half-close before the
        /// epoch counts as failed and is re-sent. On the OTLP wire, the deadline of each
        /// `Export` call. Defaults to 10 s.
        commit_timeout: Duration
    );
    setter!(
        /// A write blocked this long (a stalled collector) makes the supervisor cancel the
        /// call; the payloads are re-sent on the next stream. Defaults to 30 s. GoSight
        /// wire only (an OTLP call is bounded by `commit_timeout`).
        write_timeout: Duration
    );
    setter!(
        /// How long one dial may take before it counts as failed. Defaults to 10 s.
        connect_timeout: Duration
    );
    setter!(
        /// Backoff growth factor between reconnect attempts. Defaults to 1.5 (see
        /// [`reconnect_backoff`](ConfigBuilder::reconnect_backoff)).
        backoff_multiplier: f64
    );
    setter!(
        /// Randomization of each backoff delay, 0.0 ..= 1.0. Defaults to 0.2 (±20 %).
        backoff_jitter: f64
    );
    setter!(
        /// HTTP/2 keepalive ping interval. Defaults to 2 min.
        keepalive_time: Duration
    );
    setter!(
        /// How long a keepalive ping may go unanswered. Defaults to 20 s.
        keepalive_timeout: Duration
    );
    setter!(
        /// Largest encoded payload that will be sent; larger ones are rejected with
        /// [`Error::PayloadTooLarge`]. Defaults to 32 MiB.
        max_message_size: usize
    );
    setter!(
        /// Stream compression. Defaults to [`Compression::Gzip`].
        compression: Compression
    );
    setter!(
        /// Most payloads held at once (waiting to be written plus unacknowledged).
        /// Defaults to 10,000.
        max_buffered_payloads: usize
    );
    setter!(
        /// Most encoded bytes held at once. Defaults to 256 MiB.
        max_buffered_bytes: usize
    );
    setter!(
        /// What to do when the buffer is full. Defaults to `Block { timeout: None }`.
        overflow: OverflowPolicy
    );
    setter!(
        /// Deadline used by [`LogSender::close`](crate::LogSender::close) and by `Drop`.
        /// Defaults to 10 s.
        close_timeout: Duration
    );
    setter!(
        /// How long [`LogSender::send_logs`](crate::LogSender::send_logs) waits for the
        /// stream while another thread is writing on it, before it gives up with
        /// [`Error::Timeout`]. Defaults to 5 s.
        send_timeout: Duration
    );
    setter!(
        /// gzip level, 1 (fastest) ..= 9 (smallest), used when compression is
        /// [`Compression::Gzip`]. Defaults to 1: on the benchmark's log payloads it costs
        /// half of level 6's CPU (a third on 200 KB payloads) for 11–18% more bytes on
        /// the wire (see BENCHMARKS.md, "Gzip levels"). gRPC compresses every message of
        /// a call on one thread, so the level bounds the throughput of a compressed stream.
        gzip_level: u32
    );
    setter!(
        /// Messages smaller than this many encoded bytes are sent uncompressed, even with
        /// [`Compression::Gzip`]. Defaults to 512: gRPC sets up a fresh deflate stream for
        /// every message (about 25 µs whatever the size), which below 512 bytes saves
        /// fewer than 250 bytes. 0 compresses every message.
        gzip_min_size: usize
    );

    /// Prefix of the names of logsender's threads: `{prefix}-sup` (supervisor),
    /// `{prefix}-wr` (background writer), `{prefix}-wN` (workers), `{prefix}-cq-0` (gRPC
    /// completion queue). Useful to tell several senders apart. Defaults to `logsender`.
    pub fn thread_name(mut self, prefix: impl Into<String>) -> Self {
        self.config_defaults.thread_name = prefix.into();
        self
    }

    /// Reconnect backoff: first delay and cap. Defaults to 100 ms and 10 s, growing 1.5×
    /// per failed attempt ([`backoff_multiplier`](ConfigBuilder::backoff_multiplier))
    /// with ±20 % jitter, and starting over once a stream delivers.
    ///
    /// The time without delivery after the collector is back grows with the outage (up
    /// to half of it with ×1.5) until the cap bounds it. GoSight's agent uses 1 s
    /// doubling up to 15 min: up to the whole outage, and up to 15 min after a long one.
    /// Measured (BENCHMARKS.md, "Outage"; collector killed for 1.5, 3 and 7 s, ten
    /// times each): delivery resumed at most 0.8 / 1.9 / 3.7 s after the collector was
    /// back with these defaults, and at most 1.9 / 4.7 / 8.7 s with GoSight's. With
    /// jitter and a 10 s cap, a fleet of agents redials a dead collector a few times a
    /// minute each; raise the cap for very large fleets.
    pub fn reconnect_backoff(mut self, initial: Duration, max: Duration) -> Self {
        self.config_defaults.backoff_initial = initial;
        self.config_defaults.backoff_max = max;
        self
    }

    /// Keeps every payload taken in in a disk spool in `dir` (created if missing) until
    /// it is acknowledged, dropped or dead-lettered, so that a crash of the process loses
    /// nothing the spool accepted, and a restart on the same directory sends it first,
    /// oldest first. With a spool the memory bounds (`max_buffered_payloads`,
    /// `max_buffered_bytes`) apply to what is in memory: the rest waits on disk, and
    /// producers are neither blocked nor dropped until the spool is full
    /// ([`spool_max_bytes`](ConfigBuilder::spool_max_bytes)). One sender per directory
    /// (`LogSender::new` fails with [`Error::SpoolLocked`] otherwise). Not with
    /// [`DeliveryMode::AtMostOnce`], which acknowledges nothing to release the spool with
    /// (`build` fails with [`Error::InvalidConfig`]).
    ///
    /// # Examples
    ///
    /// ```
    /// use logsender::{Config, SpoolSync};
    ///
    /// let dir = std::env::temp_dir().join("logsender-doc-spool");
    /// let config = Config::builder("127.0.0.1:50051")
    ///     .plaintext()
    ///     .spool(&dir)
    ///     .spool_max_bytes(256 << 20)
    ///     .spool_sync(SpoolSync::EveryAppend)
    ///     .build()?;
    /// # Ok::<(), logsender::Error>(())
    /// ```
    pub fn spool(mut self, dir: impl Into<PathBuf>) -> Self {
        self.spool = Some(SpoolConfig {
            dir: dir.into(),
            max_bytes: 0,
            sync: SpoolSync::Interval(Duration::from_millis(100)),
            segment_bytes: None,
        });
        self
    }

    /// The most bytes the spool's files hold (segments and their ack sidecars), enforced
    /// exactly: a payload that does not fit meets the overflow policy. Defaults to
    /// [`DEFAULT_SPOOL_MAX_BYTES`] (1 GiB).
    pub fn spool_max_bytes(mut self, bytes: u64) -> Self {
        self.spool_max_bytes = bytes;
        self
    }

    /// When the spool's appends reach the disk; defaults to
    /// `SpoolSync::Interval(100 ms)`. See [`SpoolSync`] for what each can lose.
    pub fn spool_sync(mut self, sync: SpoolSync) -> Self {
        self.spool_sync = sync;
        self
    }

    /// The size at which the spool starts a new segment file (a segment's space comes
    /// back once every payload in it is released). Defaults to a sixteenth of
    /// `spool_max_bytes`, within 64 KiB ..= 16 MiB.
    pub fn spool_segment_bytes(mut self, bytes: u64) -> Self {
        self.spool_segment_bytes = Some(bytes);
        self
    }

    /// What happens to payloads when the collector refuses *every* call for a permanent
    /// reason (an empty call is refused too, with `UNAUTHENTICATED`,
    /// `PERMISSION_DENIED` or `UNIMPLEMENTED`: an expired token, a wrong ACL, the wrong
    /// service). `true`: they are held (in the spool, or in memory under the memory
    /// bounds and the overflow policy) and retried after
    /// [`refused_backoff`](ConfigBuilder::refused_backoff);
    /// [`ConnectionState::Refused`](crate::ConnectionState::Refused),
    /// [`EventHandler::on_refused`] and `Stats::last_error` say why nothing moves.
    /// `false`: they are dead-lettered at once. Either way a payload the collector
    /// rejects *alone* while it accepts other calls (a poison payload) is dead-lettered.
    /// Defaults to `true` with a [`spool`](ConfigBuilder::spool), `false` without one.
    /// No effect with [`DeliveryMode::AtMostOnce`], which holds nothing once written.
    pub fn hold_when_refused(mut self, hold: bool) -> Self {
        self.hold_when_refused = Some(hold);
        self
    }

    /// Backoff between tries while the collector refuses every call and payloads are
    /// held ([`hold_when_refused`](ConfigBuilder::hold_when_refused)): first delay and
    /// cap, doubling per refused try (with `backoff_jitter`, never above the cap), and
    /// starting over once the collector takes data. Defaults to
    /// [`DEFAULT_REFUSED_BACKOFF_INITIAL`] (1 s) and [`DEFAULT_REFUSED_BACKOFF_MAX`]
    /// (5 min): a refusal waits for a person (a new token, a fixed ACL), so a fleet of
    /// agents need not knock every few seconds.
    pub fn refused_backoff(mut self, initial: Duration, max: Duration) -> Self {
        self.config_defaults.refused_backoff_initial = initial;
        self.config_defaults.refused_backoff_max = max;
        self
    }

    /// Receives drops, dead letters and connection changes. Defaults to none (they are
    /// still counted and logged).
    pub fn event_handler(mut self, handler: Arc<dyn EventHandler>) -> Self {
        self.handler = Some(handler);
        self
    }

    /// Validates everything and reads the TLS files.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidAddress`], [`Error::InvalidConfig`], or [`Error::Tls`] for a TLS
    /// file that is missing, unreadable or not PEM.
    pub fn build(self) -> Result<Config, Error> {
        validate_addr(&self.addr)?;
        let d = self.config_defaults;
        if d.commit_every == 0 {
            return invalid_config("commit_every", "must be at least 1");
        }
        for (field, v) in [
            ("commit_interval", d.commit_interval),
            ("commit_timeout", d.commit_timeout),
            ("write_timeout", d.write_timeout),
            ("connect_timeout", d.connect_timeout),
            ("backoff_initial", d.backoff_initial),
            ("refused_backoff_initial", d.refused_backoff_initial),
            ("keepalive_time", d.keepalive_time),
            ("keepalive_timeout", d.keepalive_timeout),
            ("send_timeout", d.send_timeout),
        ] {
            if v.is_zero() {
                return invalid_config(field, "must be longer than zero");
            }
        }
        if d.backoff_max < d.backoff_initial {
            return invalid_config(
                "backoff_max",
                "must not be shorter than the initial backoff",
            );
        }
        if d.refused_backoff_max < d.refused_backoff_initial {
            return invalid_config(
                "refused_backoff_max",
                "must not be shorter than the first refused backoff",
            );
        }
        if !(d.backoff_multiplier.is_finite() && d.backoff_multiplier >= 1.0) {
            return invalid_config("backoff_multiplier", "must be a finite number >= 1");
        }
        if !(0.0..=1.0).contains(&d.backoff_jitter) {
            return invalid_config("backoff_jitter", "must be within 0.0 ..= 1.0");
        }
        if d.max_message_size == 0 || d.max_message_size > i32::MAX as usize {
            return invalid_config("max_message_size", "must be within 1 ..= 2^31-1 bytes");
        }
        if d.gzip_min_size > i32::MAX as usize {
            return invalid_config("gzip_min_size", "must be at most 2^31-1 bytes");
        }
        if !(1..=9).contains(&d.gzip_level) {
            return invalid_config("gzip_level", "must be within 1 ..= 9");
        }
        if d.thread_name.is_empty() || d.thread_name.contains('\0') {
            return invalid_config("thread_name", "must be a non-empty name without NUL");
        }
        if d.max_buffered_payloads == 0 {
            return invalid_config("max_buffered_payloads", "must be at least 1");
        }
        if d.max_buffered_bytes < d.max_message_size.min(1 << 20) {
            return invalid_config(
                "max_buffered_bytes",
                "must hold at least one payload of max_message_size (or 1 MiB)",
            );
        }
        if d.wire == Wire::OtlpLogs {
            if d.delivery == DeliveryMode::AtMostOnce {
                return invalid_config(
                    "delivery",
                    "the OTLP wire acknowledges every call: use DeliveryMode::AtLeastOnce",
                );
            }
            if d.max_exports_in_flight == 0 {
                return invalid_config("max_exports_in_flight", "must be at least 1");
            }
            if d.otlp_max_request_bytes
                .is_some_and(|cap| cap < 64 << 10 || cap > d.max_message_size)
            {
                return invalid_config(
                    "otlp_max_request_bytes",
                    "must be within 64 KiB ..= max_message_size",
                );
            }
        }
        let spool = match self.spool {
            Some(mut spool) => {
                if d.delivery == DeliveryMode::AtMostOnce {
                    return invalid_config(
                        "spool",
                        "needs DeliveryMode::AtLeastOnce (at most once acknowledges nothing)",
                    );
                }
                spool.max_bytes = self.spool_max_bytes;
                spool.sync = self.spool_sync;
                spool.segment_bytes = self.spool_segment_bytes;
                if let SpoolSync::Interval(t) = spool.sync {
                    if t.is_zero() {
                        return invalid_config(
                            "spool_sync",
                            "the interval must be longer than zero",
                        );
                    }
                }
                if spool.max_bytes < 4096 {
                    return invalid_config("spool_max_bytes", "must be at least 4 KiB");
                }
                if spool.segment_bytes() < 4096 {
                    return invalid_config("spool_segment_bytes", "must be at least 4 KiB");
                }
                Some(spool)
            }
            None => None,
        };
        let transport = if self.plaintext {
            if self.ca_file.is_some() || self.identity_files.is_some() {
                return invalid_config(
                    "plaintext",
                    "plaintext was asked for together with TLS files",
                );
            }
            Transport::Plaintext
        } else {
            let ca = match &self.ca_file {
                Some(p) => Some(read_pem(p, &["CERTIFICATE"])?),
                None => None,
            };
            let identity = match &self.identity_files {
                Some((c, k)) => Some((
                    read_pem(c, &["CERTIFICATE"])?,
                    read_pem(k, &["PRIVATE KEY"])?,
                )),
                None => None,
            };
            if let Some(name) = &self.server_name {
                if name.is_empty() || name.contains('\0') || name.chars().any(char::is_whitespace) {
                    return invalid_config(
                        "tls_server_name",
                        "must be a host name (no spaces or NUL)",
                    );
                }
            }
            Transport::Tls(TlsFiles {
                ca,
                identity,
                server_name: self.server_name,
            })
        };
        Ok(Config {
            addr: self.addr,
            transport,
            delivery: d.delivery,
            commit_every: d.commit_every,
            commit_interval: d.commit_interval,
            commit_timeout: d.commit_timeout,
            write_timeout: d.write_timeout,
            connect_timeout: d.connect_timeout,
            backoff_initial: d.backoff_initial,
            backoff_max: d.backoff_max,
            backoff_multiplier: d.backoff_multiplier,
            backoff_jitter: d.backoff_jitter,
            keepalive_time: d.keepalive_time,
            keepalive_timeout: d.keepalive_timeout,
            max_message_size: d.max_message_size,
            compression: d.compression,
            max_buffered_payloads: d.max_buffered_payloads,
            max_buffered_bytes: d.max_buffered_bytes,
            overflow: d.overflow,
            close_timeout: d.close_timeout,
            send_timeout: d.send_timeout,
            gzip_level: d.gzip_level,
            gzip_min_size: d.gzip_min_size,
            thread_name: d.thread_name,
            handler: self.handler,
            spool,
            hold_when_refused: self.hold_when_refused,
            refused_backoff_initial: d.refused_backoff_initial,
            refused_backoff_max: d.refused_backoff_max,
            wire: d.wire,
            max_exports_in_flight: d.max_exports_in_flight,
            otlp_max_request_bytes: d
                .otlp_max_request_bytes
                .unwrap_or(DEFAULT_OTLP_MAX_REQUEST_BYTES.min(d.max_message_size)),
        })
    }
}

/// Reads a PEM file and checks that it holds a block whose label ends with one of `labels`.
fn read_pem(path: &Path, labels: &[&str]) -> Result<Vec<u8>, Error> {
    let tls = |reason: String| Error::Tls {
        path: path.to_path_buf(),
        reason,
    };
    let bytes = std::fs::read(path).map_err(|e| tls(format!("cannot read: {e}")))?;
    if bytes.contains(&0) {
        // grpcio hands PEM to the C core as a C string.
        return Err(tls("contains a NUL byte; not a PEM file".into()));
    }
    let text = String::from_utf8_lossy(&bytes);
    let found = text.lines().any(|line| {
        let line = line.trim();
        line.starts_with("-----BEGIN ")
            && line.ends_with("-----")
            && labels
                .iter()
                .any(|l| line.trim_end_matches('-').ends_with(l))
    });
    if !found {
        return Err(tls(format!(
            "not a PEM file with a {} block",
            labels.join(" or ")
        )));
    }
    Ok(bytes)
}

/// Accepts `host:port`, `[v6]:port`, or a target with a gRPC scheme
/// (`dns:`, `ipv4:`, `ipv6:`, `unix:`, `unix-abstract:`).
fn validate_addr(addr: &str) -> Result<(), Error> {
    let bad = |reason: &str| {
        Err(Error::InvalidAddress {
            addr: addr.to_string(),
            reason: reason.to_string(),
        })
    };
    if addr.is_empty() {
        return bad("empty");
    }
    if addr.contains('\0') || addr.chars().any(char::is_whitespace) {
        return bad("contains whitespace or NUL");
    }
    for scheme in ["dns:", "ipv4:", "ipv6:", "unix:", "unix-abstract:"] {
        if let Some(rest) = addr.strip_prefix(scheme) {
            if rest.trim_start_matches('/').is_empty() {
                return bad("nothing after the scheme");
            }
            return Ok(());
        }
    }
    if addr.contains("://") {
        return bad("use host:port (or a gRPC target like dns:///host:port), not a URL");
    }
    let Some((host, port)) = addr.rsplit_once(':') else {
        return bad("expected host:port");
    };
    if host.is_empty() {
        return bad("missing host");
    }
    if host.contains(':') && !(host.starts_with('[') && host.ends_with(']')) {
        return bad("an IPv6 host must be written in brackets, like [::1]:50051");
    }
    match port.parse::<u16>() {
        Ok(0) => bad("port 0 is not a port one can dial"),
        Ok(_) => Ok(()),
        Err(_) => bad("the port is not a number within 1 ..= 65535"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_otlp_request_cap_is_4_mib_or_the_message_limit() {
        let otlp = || {
            Config::builder("127.0.0.1:1")
                .plaintext()
                .wire(Wire::OtlpLogs)
        };
        assert_eq!(otlp().build().unwrap().request_cap(), 4 << 20);
        assert_eq!(
            crate::otlp::MAX_REQUEST_BYTES,
            DEFAULT_OTLP_MAX_REQUEST_BYTES
        );
        let small = otlp().max_message_size(1 << 20).build().unwrap();
        assert_eq!(small.request_cap(), 1 << 20);
        let set = otlp().otlp_max_request_bytes(128 << 10).build().unwrap();
        assert_eq!(set.request_cap(), 128 << 10);
        // GoSight's stream has no request cap: a payload is a message.
        let gosight = Config::builder("127.0.0.1:1").plaintext().build().unwrap();
        assert_eq!(gosight.request_cap(), usize::MAX);
    }

    #[test]
    fn addresses() {
        for ok in [
            "127.0.0.1:1",
            "localhost:50051",
            "[::1]:443",
            "unix:/tmp/s",
            "dns:///h:1",
        ] {
            assert!(validate_addr(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "127.0.0.1",
            "127.0.0.1:0",
            "127.0.0.1:99999",
            ":80",
            "http://h:80",
            "::1:80",
            "h:8 0",
            "unix:",
        ] {
            assert!(
                matches!(validate_addr(bad), Err(Error::InvalidAddress { .. })),
                "{bad}"
            );
        }
    }

    #[test]
    fn nonsense_is_rejected() {
        let b = || Config::builder("127.0.0.1:1").plaintext();
        assert!(b().build().is_ok());
        for (builder, field) in [
            (b().commit_every(0), "commit_every"),
            (b().backoff_jitter(1.5), "backoff_jitter"),
            (b().backoff_multiplier(0.5), "backoff_multiplier"),
            (b().max_buffered_payloads(0), "max_buffered_payloads"),
            (b().write_timeout(Duration::ZERO), "write_timeout"),
            (
                b().refused_backoff(Duration::ZERO, Duration::from_secs(1)),
                "refused_backoff_initial",
            ),
            (
                b().refused_backoff(Duration::from_secs(2), Duration::from_secs(1)),
                "refused_backoff_max",
            ),
        ] {
            match builder.build() {
                Err(Error::InvalidConfig { field: f, .. }) => assert_eq!(f, field),
                other => panic!("{field}: {other:?}"),
            }
        }
    }

    #[test]
    fn holding_when_refused_defaults_to_having_a_spool() {
        let b = || Config::builder("127.0.0.1:1").plaintext();
        let holds = |b: ConfigBuilder| b.build().map(|c| c.holds_when_refused()).ok();
        assert_eq!(holds(b()), Some(false));
        assert_eq!(holds(b().spool("/nonexistent/spool")), Some(true));
        assert_eq!(holds(b().hold_when_refused(true)), Some(true));
        assert_eq!(
            holds(b().spool("/nonexistent/spool").hold_when_refused(false)),
            Some(false)
        );
        assert_eq!(
            holds(
                b().delivery(DeliveryMode::AtMostOnce)
                    .hold_when_refused(true)
            ),
            Some(false)
        );
    }

    #[test]
    fn tls_files_are_checked() {
        let missing = Config::builder("127.0.0.1:1")
            .tls_ca_file("/nonexistent/ca.pem")
            .build();
        assert!(matches!(missing, Err(Error::Tls { .. })));
        let dir = std::env::temp_dir().join(format!("logsender-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let junk = dir.join("junk.pem");
        std::fs::write(&junk, "hello").unwrap();
        let err = Config::builder("127.0.0.1:1").tls_ca_file(&junk).build();
        match err {
            Err(e @ Error::Tls { .. }) => assert!(e.to_string().contains("junk.pem")),
            other => panic!("{other:?}"),
        }
        // A NUL byte would make grpcio panic when it builds a C string: refused here.
        let nul = dir.join("nul.pem");
        std::fs::write(
            &nul,
            "-----BEGIN CERTIFICATE-----\n\0\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        let err = Config::builder("127.0.0.1:1").tls_ca_file(&nul).build();
        assert!(matches!(err, Err(Error::Tls { .. })), "{err:?}");
        let err = Config::builder("127.0.0.1:1")
            .tls_server_name("bad name\0")
            .build();
        assert!(
            matches!(
                err,
                Err(Error::InvalidConfig {
                    field: "tls_server_name",
                    ..
                })
            ),
            "{err:?}"
        );
        std::fs::remove_dir_all(&dir).ok();
    }
}
