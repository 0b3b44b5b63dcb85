//! The `log` bridge: a [`log::Log`] that turns the program's `log` records (its own
//! and its dependencies') into [`LogEntry`](crate::LogEntry)s on an [`EntrySender`], installed with one
//! call that returns a guard.
//!
//! A record becomes an entry with its level, its message, its target as `source`, and
//! as fields its module path (`module`), file (`file`) and line (`line`) and its
//! structured key-values (`log`'s `kv`; a key-value named like one of those replaces
//! it). The bridge never blocks the program by default: with the entry channel full it
//! drops the record and counts it ([`Stats::records_dropped`](crate::Stats::records_dropped),
//! [`Report::records_dropped`](crate::Report::records_dropped), and at most once a
//! second [`EventHandler::on_records_dropped`](crate::EventHandler::on_records_dropped)).
//! logsender's own records (targets `logsender…`, which include the gRPC core's
//! `logsender::grpc`, and `grpcio…`) never reach the collector through it, and nothing
//! logged while the bridge ships a record (on the same thread) does either: no loop.

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use log::{LevelFilter, Log, Metadata, Record};

use crate::config::Wire;
use crate::entries::{Batching, EntrySender};
use crate::error::{invalid_config, Error};
use crate::events::{DropReason, RecordsDroppedEvent};
use crate::model::Level;
use crate::otlp;
use crate::sender::{LogSender, Shutdown};
use crate::stats::{Counters, Report};
use crate::wire;

/// Drop events are reported at most this often.
const EVENT_EVERY: Duration = Duration::from_secs(1);

/// A `log` bridge, to be [`install`](LogBridge::install)ed as the program's logger.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use logsender::{Batching, Config, LogBridge, LogPayload, LogSender};
///
/// // Nothing listens on this loopback port.
/// let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
/// let sender = LogSender::new(Config::builder(format!("127.0.0.1:{port}")).plaintext().build()?)?;
/// let guard = LogBridge::new(Batching::new(LogPayload::from_host("agent-1")))
///     .filter("info,my_noisy_dependency=warn")
///     .install(sender)?;
/// log::info!(user = "ada"; "signed in");
/// // No collector: the line comes back, in a payload of one entry.
/// let done = guard.shutdown(Duration::from_millis(300));
/// assert_eq!(done.undelivered[0].logs[0].message, "signed in");
/// assert_eq!(done.undelivered[0].logs[0].fields["user"], "ada");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[must_use]
pub struct LogBridge {
    batching: Batching,
    filter: String,
    block: Option<Duration>,
    tee: Option<(Box<dyn Log>, LevelFilter)>,
}

impl std::fmt::Debug for LogBridge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogBridge")
            .field("filter", &self.filter)
            .field("block", &self.block)
            .field("tee", &self.tee.as_ref().map(|(_, level)| level))
            .finish_non_exhaustive()
    }
}

impl LogBridge {
    /// A bridge whose records are batched into payloads as `batching` says, at level
    /// `info` and above.
    pub fn new(batching: Batching) -> LogBridge {
        LogBridge {
            batching,
            filter: "info".into(),
            block: None,
            tee: None,
        }
    }

    /// Which records to ship, in `RUST_LOG`'s syntax: `warn`, `info,my_crate=debug`,
    /// `my_crate::db=trace` (directives without a regex). Checked by `install`.
    pub fn filter(mut self, spec: impl Into<String>) -> Self {
        self.filter = spec.into();
        self
    }

    /// [`filter`](LogBridge::filter) from the environment variable `var` (such as
    /// `RUST_LOG`), if it is set; the filter stays as it was otherwise.
    pub fn filter_from_env(self, var: &str) -> Self {
        match std::env::var(var) {
            Ok(spec) => self.filter(spec),
            Err(_) => self,
        }
    }

    /// Blocks the logging thread for at most `timeout` while the entry channel is full,
    /// then drops the record (by default it is dropped at once: the bridge never makes
    /// the program wait).
    pub fn block_for(mut self, timeout: Duration) -> Self {
        self.block = Some(timeout);
        self
    }

    /// Also hands every record at `level` or above to `logger` (its own filter
    /// applies too), so the program keeps its terminal or journal output. logsender's
    /// own records go there as well.
    pub fn tee(mut self, logger: impl Log + 'static, level: LevelFilter) -> Self {
        self.tee = Some((Box::new(logger), level));
        self
    }

    /// Builds the bridge's logger on an entry handle of `sender`, without installing
    /// it (to compose it with another logger, or to install it yourself).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidConfig`] for a filter that does not parse or a `batching` that
    /// makes no sense, [`Error::Closed`] once the sender shuts down.
    pub fn logger(self, sender: &LogSender) -> Result<BridgeLogger, Error> {
        let mut builder = env_filter::Builder::new();
        builder.filter_level(LevelFilter::Off);
        if builder.try_parse(&self.filter).is_err() {
            return invalid_config("filter", "not a RUST_LOG-style filter");
        }
        let filter = builder.build();
        let entries = sender.entry_sender(self.batching)?;
        let max_level = self
            .tee
            .as_ref()
            .map_or(filter.filter(), |(_, level)| filter.filter().max(*level));
        let record_of: RecordOf = match entries.wire() {
            Wire::GoSightStream => record_of::<GoSight>,
            Wire::OtlpLogs => record_of::<Otlp>,
        };
        Ok(BridgeLogger {
            inner: Arc::new(Inner {
                shipper: Arc::new(Shipper::new(entries, self.block)),
                record_of,
                pid: process_id(),
                filter,
                tee: self.tee,
                max_level,
            }),
        })
    }

    /// Installs the bridge as the program's `log` logger (and sets `log`'s maximum
    /// level from the filter and the tee), on an entry handle of `sender`, which the
    /// guard then owns. Dropping the guard shuts the sender down (for its
    /// `close_timeout`), delivering what it can; what it could not is logged to the tee
    /// and reported to the event handler as [`DropReason::SenderDropped`]. Call
    /// [`BridgeGuard::shutdown`] to get it back instead.
    ///
    /// # Errors
    ///
    /// As [`logger`](LogBridge::logger), and [`Error::LoggerInstalled`] when the
    /// program has a logger already. On any error the sender is dropped (shut down),
    /// with nothing of the bridge's in it yet.
    pub fn install(self, sender: LogSender) -> Result<BridgeGuard, Error> {
        let logger = self.logger(&sender)?;
        let max_level = logger.inner.max_level;
        if log::set_boxed_logger(Box::new(logger.clone())).is_err() {
            return Err(Error::LoggerInstalled);
        }
        log::set_max_level(max_level);
        Ok(BridgeGuard::new(
            sender,
            logger.inner.shipper.clone(),
            log_undelivered,
        ))
    }
}

/// The bridge's `log::Log`: ships records as entries (see [`LogBridge`]). Cloning it
/// gives another handle to the same bridge.
#[derive(Clone)]
pub struct BridgeLogger {
    inner: Arc<Inner>,
}

/// Writes a record as an entry's record on the sender's wire (picked once).
type RecordOf = fn(&Record<'_>, i32, &mut Scratch) -> Vec<u8>;

struct Inner {
    shipper: Arc<Shipper>,
    /// `record_of` for the sender's wire.
    record_of: RecordOf,
    /// The process ID every entry carries (read once).
    pid: i32,
    filter: env_filter::Filter,
    tee: Option<(Box<dyn Log>, LevelFilter)>,
    max_level: LevelFilter,
}

impl std::fmt::Debug for BridgeLogger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BridgeLogger")
            .field("filter", &self.inner.filter)
            .field("max_level", &self.inner.max_level)
            .finish_non_exhaustive()
    }
}

impl BridgeLogger {
    /// Whether records like this one go to the collector.
    fn ships(&self, metadata: &Metadata<'_>) -> bool {
        !is_ours(metadata.target()) && self.inner.filter.enabled(metadata)
    }

    /// The most verbose level the bridge or its tee wants (what `install` sets as
    /// `log`'s maximum level).
    pub fn max_level(&self) -> LevelFilter {
        self.inner.max_level
    }
}

impl Log for BridgeLogger {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        self.ships(metadata)
            || self
                .inner
                .tee
                .as_ref()
                .is_some_and(|(tee, level)| metadata.level() <= *level && tee.enabled(metadata))
    }

    fn log(&self, record: &Record<'_>) {
        if let Some((tee, level)) = &self.inner.tee {
            if record.level() <= *level {
                tee.log(record);
            }
        }
        if !self.ships(record.metadata()) || !self.inner.filter.matches(record) {
            return;
        }
        // Anything logged while this thread ships a record (by logsender, by an event
        // handler) is not shipped: no loop.
        let Some(_shipping) = Shipping::enter() else {
            return;
        };
        let encoded =
            Scratch::with(|scratch| (self.inner.record_of)(record, self.inner.pid, scratch));
        self.inner.shipper.ship_record(encoded);
    }

    /// Flushes the tee. (The bridge's entries are flushed by the sender:
    /// [`LogSender::flush`], [`BridgeGuard::shutdown`].)
    fn flush(&self) {
        if let Some((tee, _)) = &self.inner.tee {
            tee.flush();
        }
    }
}

/// Shuts the bridge's sender down when dropped (see [`LogBridge::install`], and
/// `TracingLayer::install` with the `tracing` feature).
#[must_use = "dropping the guard shuts the bridge's sender down"]
pub struct BridgeGuard {
    sender: Option<LogSender>,
    shipper: Arc<Shipper>,
    /// Says (through `log`, or `tracing`) what a drop could not deliver.
    say_undelivered: fn(&Report),
}

impl std::fmt::Debug for BridgeGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BridgeGuard")
            .field("sender", &self.sender)
            .finish_non_exhaustive()
    }
}

impl BridgeGuard {
    /// A guard that owns `sender`, whose bridge ships through `shipper`; a drop tells
    /// what it could not deliver with `say_undelivered`.
    pub(crate) fn new(
        sender: LogSender,
        shipper: Arc<Shipper>,
        say_undelivered: fn(&Report),
    ) -> BridgeGuard {
        BridgeGuard {
            sender: Some(sender),
            shipper,
            say_undelivered,
        }
    }

    /// The sender the bridge ships through (to send payloads, flush, read stats).
    pub fn sender(&self) -> &LogSender {
        match &self.sender {
            Some(sender) => sender,
            // Taken only by `finish`, which consumes or drops the guard.
            None => unreachable!("the guard's sender is there until it is shut down"),
        }
    }

    /// Shuts the sender down within `timeout` (see [`LogSender::shutdown`]) and returns
    /// what it could not deliver, with the whole life's report. Records logged from
    /// then on go to the tee only (and are counted as dropped).
    pub fn shutdown(mut self, timeout: Duration) -> Shutdown {
        match self.finish(timeout) {
            Some(done) => done,
            None => unreachable!("the guard is shut down once"),
        }
    }

    fn finish(&mut self, timeout: Duration) -> Option<Shutdown> {
        let sender = self.sender.take()?;
        let done = sender.shutdown(timeout);
        self.shipper.close();
        Some(done)
    }
}

impl Drop for BridgeGuard {
    fn drop(&mut self) {
        let Some(timeout) = self.sender.as_ref().map(LogSender::close_timeout_setting) else {
            return;
        };
        let Some(done) = self.finish(timeout) else {
            return;
        };
        if done.report.all_delivered() {
            return;
        }
        (self.say_undelivered)(&done.report);
        let shared = self.shipper.entries.shared();
        for p in done.undelivered {
            shared.report_dropped(Some(p), DropReason::SenderDropped);
        }
    }
}

/// What a guard's sender could not deliver, as the one line its drop logs.
pub(crate) struct Undelivered<'a>(pub(crate) &'a Report);

impl std::fmt::Display for Undelivered<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let r = self.0;
        write!(
            f,
            "the bridge shut down with lines undelivered: {} handed back, {} dropped, {} dead-lettered, {} records dropped",
            r.entries_handed_back,
            r.entries_dropped,
            r.entries_dead_lettered,
            r.records_dropped,
        )
    }
}

/// The `log` bridge's guard tells it through `log` (the tee hears it).
fn log_undelivered(report: &Report) {
    log::error!(target: "logsender::bridge", "{}", Undelivered(report));
}

/// This process's ID as an entry carries it (0 if it does not fit an `int32`).
pub(crate) fn process_id() -> i32 {
    i32::try_from(std::process::id()).unwrap_or(0)
}

/// Whether a record comes from logsender itself or from grpcio (including the gRPC
/// core's records, which logsender logs as `logsender::grpc`).
pub(crate) fn is_ours(target: &str) -> bool {
    let under = |name: &str| {
        target
            .strip_prefix(name)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with("::"))
    };
    under("logsender") || under("grpcio") || under("grpcio_sys")
}

thread_local! {
    /// Set while this thread ships a record.
    static SHIPPING: Cell<bool> = const { Cell::new(false) };
}

/// This thread ships a record, while it lives.
pub(crate) struct Shipping(());

impl Shipping {
    /// `None` if this thread ships a record already (or is being torn down).
    pub(crate) fn enter() -> Option<Shipping> {
        SHIPPING
            .try_with(|s| (!s.replace(true)).then_some(Shipping(())))
            .ok()
            .flatten()
    }
}

impl Drop for Shipping {
    fn drop(&mut self) {
        let _ = SHIPPING.try_with(|s| s.set(false));
    }
}

/// Puts entries on an entry handle without blocking (or for a bound), counting and
/// reporting (rate-limited) what it has to drop. Shared by the `log` bridge and the
/// `tracing` layer.
pub(crate) struct Shipper {
    entries: EntrySender,
    block: Option<Duration>,
    /// Set when the bridge's sender was shut down: records are dropped at once.
    closed: AtomicBool,
    /// Dropped since the last event.
    unreported: AtomicU64,
    /// When the last event was sent, in nanoseconds after `epoch` (0: never).
    last_event: AtomicU64,
    epoch: Instant,
}

impl Shipper {
    pub(crate) fn new(entries: EntrySender, block: Option<Duration>) -> Shipper {
        Shipper {
            entries,
            block,
            closed: AtomicBool::new(false),
            unreported: AtomicU64::new(0),
            last_event: AtomicU64::new(0),
            epoch: Instant::now(),
        }
    }

    /// Puts an encoded entry on the handle, or drops and counts it.
    pub(crate) fn ship_record(&self, record: Vec<u8>) {
        if self.closed.load(Ordering::Acquire)
            || self.entries.put_record(record, self.block).is_err()
        {
            self.dropped();
        }
    }

    fn dropped(&self) {
        let counters = &self.entries.shared().counters;
        Counters::add(&counters.records_dropped, 1);
        self.unreported.fetch_add(1, Ordering::AcqRel);
        let now = u64::try_from(self.epoch.elapsed().as_nanos())
            .unwrap_or(u64::MAX)
            .max(1);
        let last = self.last_event.load(Ordering::Acquire);
        let every = u64::try_from(EVENT_EVERY.as_nanos()).unwrap_or(u64::MAX);
        if (last == 0 || now.saturating_sub(last) >= every)
            && self
                .last_event
                .compare_exchange(last, now, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            self.report();
        }
    }

    /// Reports what was dropped since the last event, if anything.
    fn report(&self) {
        let dropped = self.unreported.swap(0, Ordering::AcqRel);
        if dropped == 0 {
            return;
        }
        let shared = self.entries.shared();
        let total = shared.counters.records_dropped.load(Ordering::Relaxed);
        shared.handler(|h| h.on_records_dropped(RecordsDroppedEvent { dropped, total }));
    }

    /// The sender shut down: drop from now on, and report what was not yet.
    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.report();
    }
}

thread_local! {
    /// The buffers this thread writes records with.
    static SCRATCH: Cell<Scratch> = Cell::new(Scratch::default());
}

/// Buffers reused from one record to the next on a thread: a record's body, a formatted
/// message, a formatted value.
#[derive(Default)]
pub(crate) struct Scratch {
    pub(crate) body: Vec<u8>,
    pub(crate) message: String,
    pub(crate) text: String,
    /// Field names written so far (the `tracing` layer: the first of a name wins).
    #[cfg_attr(not(feature = "tracing"), allow(dead_code))]
    pub(crate) names: Vec<&'static str>,
    /// The `tracing` layer: a `log` record's target, module and file, one after the
    /// other (for an event that `tracing_log::LogTracer` made from a record), then the
    /// span path.
    #[cfg_attr(not(feature = "tracing"), allow(dead_code))]
    pub(crate) origin: String,
}

/// Buffers larger than this are given back after the record that grew them.
const SCRATCH_KEEP: usize = 64 << 10;

impl Scratch {
    /// Runs `f` with this thread's buffers (fresh ones if they are in use, or the
    /// thread is being torn down).
    pub(crate) fn with<R>(f: impl FnOnce(&mut Scratch) -> R) -> R {
        let mut scratch = SCRATCH.try_with(Cell::take).unwrap_or_default();
        let out = f(&mut scratch);
        scratch.trim();
        let _ = SCRATCH.try_with(|cell| cell.set(scratch));
        out
    }

    fn trim(&mut self) {
        if self.body.capacity() > SCRATCH_KEEP {
            self.body = Vec::new();
        }
        for s in [&mut self.message, &mut self.text, &mut self.origin] {
            if s.capacity() > SCRATCH_KEEP {
                *s = String::new();
            }
        }
    }
}

/// How the bridges write an entry's record on one wire, straight from a `log` record
/// or a `tracing` event: [`GoSight`] (`wire::RecordWriter`) or [`Otlp`]
/// (`otlp::RecordWriter`), picked by the sender's wire when a bridge is made, so that
/// the records fit the frame its batcher assembles them with.
pub(crate) trait Form {
    /// The writer of one record, on buffers borrowed for `'a`.
    type Writer<'a>: Writer;

    /// Starts a record with its timestamp, level, message, source and pid (`category`
    /// stays empty), writing its body to `body` (cleared first) and formatted values
    /// to `text`.
    fn start<'a>(
        body: &'a mut Vec<u8>,
        text: &'a mut String,
        timestamp: SystemTime,
        level: &str,
        message: &str,
        source: &str,
        pid: i32,
    ) -> Self::Writer<'a>;
}

/// A record being written: its fields, in the order given, then the record.
pub(crate) trait Writer {
    /// Adds a field.
    fn field(&mut self, key: &str, value: &str);

    /// Adds a field whose value is `value` formatted.
    fn field_fmt(&mut self, key: &str, value: std::fmt::Arguments<'_>);

    /// The record, in a buffer of exactly its size.
    fn finish(self) -> Vec<u8>;

    /// Adds a field whose value is `value` formatted with `Display`.
    fn field_display(&mut self, key: &str, value: &dyn std::fmt::Display) {
        self.field_fmt(key, format_args!("{value}"));
    }

    /// Adds a field whose value is `value` formatted with `Debug`.
    #[cfg_attr(not(feature = "tracing"), allow(dead_code))]
    fn field_debug(&mut self, key: &str, value: &dyn std::fmt::Debug) {
        self.field_fmt(key, format_args!("{value:?}"));
    }
}

/// Records of a GoSight `LogPayload`'s `logs`.
pub(crate) enum GoSight {}

/// Records of an OTLP `ScopeLogs`'s `log_records`.
pub(crate) enum Otlp {}

/// Implements [`Form`] and [`Writer`] for a wire's `RecordWriter`, whose inherent
/// methods have the same names and arguments.
macro_rules! form {
    ($form:ty, $writer:ident) => {
        impl Form for $form {
            type Writer<'a> = $writer::RecordWriter<'a>;

            fn start<'a>(
                body: &'a mut Vec<u8>,
                text: &'a mut String,
                timestamp: SystemTime,
                level: &str,
                message: &str,
                source: &str,
                pid: i32,
            ) -> Self::Writer<'a> {
                $writer::RecordWriter::start(body, text, timestamp, level, message, source, pid)
            }
        }

        impl Writer for $writer::RecordWriter<'_> {
            fn field(&mut self, key: &str, value: &str) {
                $writer::RecordWriter::field(self, key, value);
            }

            fn field_fmt(&mut self, key: &str, value: std::fmt::Arguments<'_>) {
                $writer::RecordWriter::field_fmt(self, key, value);
            }

            fn finish(self) -> Vec<u8> {
                $writer::RecordWriter::finish(self)
            }
        }
    };
}

form!(GoSight, wire);
form!(Otlp, otlp);

/// A record encoded as an entry's record on `F`'s wire, written straight from it (see
/// the module's doc for what goes where): no [`LogEntry`](crate::LogEntry) in between.
fn record_of<F: Form>(record: &Record<'_>, pid: i32, scratch: &mut Scratch) -> Vec<u8> {
    let Scratch {
        body,
        message,
        text,
        ..
    } = scratch;
    let message: &str = match record.args().as_str() {
        Some(s) => s,
        None => {
            use std::fmt::Write as _;
            message.clear();
            // Fails only if an argument's Display does: ship what it wrote.
            let _ = write!(message, "{}", record.args());
            message
        }
    };
    let mut writer = F::start(
        body,
        text,
        SystemTime::now(),
        Level::from(record.level()).as_str(),
        message,
        record.target(),
        pid,
    );
    // Key-values first: one named like a built-in field replaces it.
    let mut fields = Fields {
        writer: &mut writer,
        named: [false; 3],
    };
    let _ = record.key_values().visit(&mut fields);
    let [module, file, line] = fields.named;
    if let (false, Some(m)) = (module, record.module_path()) {
        writer.field("module", m);
    }
    if let (false, Some(f)) = (file, record.file()) {
        writer.field("file", f);
    }
    if let (false, Some(l)) = (line, record.line()) {
        writer.field_display("line", &l);
    }
    writer.finish()
}

/// Writes `log`'s key-values as fields, noting which built-in names they take.
struct Fields<'w, W> {
    writer: &'w mut W,
    /// `module`, `file`, `line`.
    named: [bool; 3],
}

impl<'kvs, W: Writer> log::kv::VisitSource<'kvs> for Fields<'_, W> {
    fn visit_pair(
        &mut self,
        key: log::kv::Key<'kvs>,
        value: log::kv::Value<'kvs>,
    ) -> Result<(), log::kv::Error> {
        let key = key.as_str();
        match key {
            "module" => self.named[0] = true,
            "file" => self.named[1] = true,
            "line" => self.named[2] = true,
            _ => {}
        }
        match value.to_borrowed_str() {
            Some(s) => self.writer.field(key, s),
            None => self.writer.field_display(key, &value),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;
    use crate::model::{LogEntry, LogPayload};

    /// A GoSight record alone is a valid `LogPayload` of one entry: its entry.
    fn gosight_entry(bytes: &[u8]) -> LogEntry {
        let mut payload = crate::wire::decode(bytes).expect("a record decodes");
        assert_eq!(payload.logs.len(), 1);
        payload.logs.remove(0)
    }

    /// An OTLP record in a frame is a request of one `ResourceLogs` of one record: its
    /// entry.
    fn otlp_entry(record: Vec<u8>) -> LogEntry {
        let frame = otlp::Frame::of(&LogPayload::default());
        let bytes = frame.assemble(&[record], SystemTime::now());
        let mut payloads = otlp::decode(&bytes).expect("a record decodes");
        assert_eq!(payloads.len(), 1);
        assert_eq!(payloads[0].logs.len(), 1);
        payloads.remove(0).logs.remove(0)
    }

    /// The record written on each wire, decoded: [GoSight's entry, OTLP's entry].
    fn entries(record: &Record<'_>) -> [LogEntry; 2] {
        let gosight = Scratch::with(|s| record_of::<GoSight>(record, 42, s));
        let otlp = Scratch::with(|s| record_of::<Otlp>(record, 42, s));
        [gosight_entry(&gosight), otlp_entry(otlp)]
    }

    #[test]
    fn a_record_is_written_with_every_part() {
        let kvs: &[(&str, i64)] = &[("user_id", 7)];
        let before = SystemTime::now();
        let written = entries(
            &Record::builder()
                .level(log::Level::Warn)
                .target("app::db")
                .module_path_static(Some("app::db"))
                .file_static(Some("src/db.rs"))
                .line(Some(12))
                .args(format_args!("slow query: {} ms", 250))
                .key_values(&kvs)
                .build(),
        );
        for e in written {
            assert_eq!(e.level, "warning");
            assert_eq!(e.message, "slow query: 250 ms");
            assert_eq!(e.source, "app::db");
            assert_eq!(e.pid, 42);
            assert!(e.timestamp.is_some_and(|t| t >= before));
            let mut fields: Vec<_> = e.fields.iter().collect();
            fields.sort();
            let s = |a: &str, b: &str| (a.to_string(), b.to_string());
            let want = [
                s("file", "src/db.rs"),
                s("line", "12"),
                s("module", "app::db"),
                s("user_id", "7"),
            ];
            assert_eq!(fields, want.iter().map(|(a, b)| (a, b)).collect::<Vec<_>>());
        }
    }

    #[test]
    fn a_key_value_named_like_a_built_in_field_replaces_it() {
        let kvs: &[(&str, &str)] = &[("line", "custom"), ("file", "other.rs")];
        let record = Record::builder()
            .level(log::Level::Trace)
            .args(format_args!("x"))
            .file_static(Some("src/a.rs"))
            .line(Some(3))
            .key_values(&kvs)
            .build();
        for e in entries(&record) {
            assert_eq!(e.level, "debug");
            assert_eq!(e.fields["line"], "custom");
            assert_eq!(e.fields["file"], "other.rs");
            assert_eq!(e.fields.len(), 2, "{:?}", e.fields);
        }
    }

    #[test]
    fn the_bytes_match_the_entry_they_stand_for() {
        // One field: the map order cannot differ, so the bytes must be the same.
        let kvs: &[(&str, &str)] = &[("k", "v")];
        let record = Record::builder()
            .level(log::Level::Info)
            .target("t")
            .args(format_args!("hello"))
            .key_values(&kvs)
            .build();
        let bytes = Scratch::with(|s| record_of::<GoSight>(&record, 9, s));
        let e = gosight_entry(&bytes);
        assert_eq!((e.pid, e.fields.len()), (9, 1));
        assert_eq!(bytes, crate::wire::entry_record(&e));
        let bytes = Scratch::with(|s| record_of::<Otlp>(&record, 9, s));
        let o = otlp_entry(bytes.clone());
        // Written a moment later.
        assert_eq!(
            LogEntry {
                timestamp: e.timestamp,
                ..o.clone()
            },
            e
        );
        assert_eq!(bytes, otlp::entry_record(&o));
    }

    #[test]
    fn scratch_buffers_are_given_back_after_a_huge_record() {
        let big = "x".repeat(SCRATCH_KEEP * 2);
        let _ = entries(&Record::builder().args(format_args!("{big}")).build());
        Scratch::with(|s| {
            assert!(s.body.capacity() <= SCRATCH_KEEP);
            assert!(s.message.capacity() <= SCRATCH_KEEP);
        });
    }

    /// xorshift64*: the same inputs on every run.
    struct Rng(u64);

    impl Rng {
        fn below(&mut self, n: u64) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n
        }

        fn pick<'a>(&mut self, from: &[&'a str]) -> &'a str {
            from[self.below(from.len() as u64) as usize]
        }

        /// Empty, ASCII, unicode, control characters, or long.
        fn string(&mut self) -> String {
            const PIECES: [&str; 9] = ["a", "é", "日本", "🦀", " ", "\n", "\0", "=", "GET /x"];
            let len = match self.below(8) {
                0 | 1 => 0,
                7 => 200 + self.below(300),
                _ => 1 + self.below(12),
            };
            (0..len).map(|_| self.pick(&PIECES)).collect()
        }
    }

    /// Field names that collide with the OTLP mapping's keys (its own, GoSight's
    /// receiver's, its prefixes), empty, and plain ones.
    const KEYS: &[&str] = &[
        "",
        "log.source",
        "log.category",
        "process.pid",
        "source",
        "pid",
        "category",
        "field.",
        "field.x",
        "tag.x",
        "tag.",
        "gosight.log_meta.present",
        "gosight.extra.e",
        "gosight.",
        "app.name",
        "service.name",
        "log.file.path",
        "process.owner",
        "user",
        "module",
        "file",
        "line",
        "user_id",
        "ключ",
        "🦀",
        "k",
    ];

    const LEVELS: &[&str] = &[
        "info",
        "warning",
        "error",
        "debug",
        "trace",
        "TRACE",
        "critical",
        "emergency",
        "notice",
        "",
        "bogus",
        " Info ",
    ];

    /// One random record, written by `F`'s writer.
    struct Input {
        timestamp: SystemTime,
        level: &'static str,
        message: String,
        source: String,
        pid: i32,
        /// (key, value, written through `field_display` rather than `field`).
        fields: Vec<(String, String, bool)>,
    }

    impl Input {
        fn random(rng: &mut Rng) -> Input {
            let timestamp = match rng.below(10) {
                // Before the epoch and the epoch itself: OTLP cannot hold them.
                0 => {
                    UNIX_EPOCH - Duration::new(rng.below(1 << 33), rng.below(1_000_000_000) as u32)
                }
                1 => UNIX_EPOCH,
                _ => {
                    UNIX_EPOCH + Duration::new(rng.below(1 << 34), rng.below(1_000_000_000) as u32)
                }
            };
            let pid = match rng.below(4) {
                0 => 0,
                1 => i32::MIN + rng.below(100) as i32,
                2 => i32::MAX - rng.below(100) as i32,
                _ => rng.below(1 << 22) as i32,
            };
            let fields = (0..rng.below(9))
                .map(|_| {
                    let key = match rng.below(3) {
                        0 => rng.string(),
                        _ => rng.pick(KEYS).to_owned(),
                    };
                    (key, rng.string(), rng.below(4) == 0)
                })
                .collect();
            Input {
                timestamp,
                level: rng.pick(LEVELS),
                message: rng.string(),
                source: if rng.below(3) == 0 {
                    String::new()
                } else {
                    rng.string()
                },
                pid,
                fields,
            }
        }

        fn write<F: Form>(&self, scratch: &mut Scratch) -> Vec<u8> {
            let mut writer = F::start(
                &mut scratch.body,
                &mut scratch.text,
                self.timestamp,
                self.level,
                &self.message,
                &self.source,
                self.pid,
            );
            for (key, value, display) in &self.fields {
                if *display {
                    writer.field_display(key, value);
                } else {
                    writer.field(key, value);
                }
            }
            writer.finish()
        }
    }

    /// What OTLP keeps of an entry (the module doc of `otlp`): a timestamp at or
    /// before the epoch reads back as none.
    fn otlp_normalised(mut e: LogEntry) -> LogEntry {
        e.timestamp = e.timestamp.filter(|t| *t > UNIX_EPOCH);
        e
    }

    /// A record's attributes as key and text, sorted.
    fn attributes(record: &otlp::pb::logs::LogRecord) -> Vec<(String, String)> {
        let mut all: Vec<_> = record
            .attributes
            .iter()
            .map(|kv| (kv.key.clone(), format!("{:?}", kv.value)))
            .collect();
        all.sort();
        all
    }

    /// The one record of a request of one.
    fn the_record(bytes: &[u8]) -> otlp::pb::logs::LogRecord {
        use protobuf::Message as _;
        let mut request =
            otlp::pb::logs_service::ExportLogsServiceRequest::parse_from_bytes(bytes).unwrap();
        assert_eq!(request.resource_logs.len(), 1);
        let mut scope_logs = request.resource_logs.remove(0).scope_logs;
        assert_eq!(scope_logs.len(), 1);
        let mut records = scope_logs.remove(0).log_records;
        assert_eq!(records.len(), 1);
        records.remove(0)
    }

    #[test]
    fn the_otlp_writer_writes_what_the_gosight_writer_does_as_otlp_maps_it() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let now = SystemTime::now();
        let frame = otlp::Frame::of(&LogPayload::default());
        let (mut duplicates, mut escaped) = (0, 0);
        for i in 0..5000 {
            let input = Input::random(&mut rng);
            let gosight = Scratch::with(|s| input.write::<GoSight>(s));
            let written = Scratch::with(|s| input.write::<Otlp>(s));
            let entry = gosight_entry(&gosight);
            // The same entry on both wires, after OTLP's normalisation.
            assert_eq!(
                otlp_entry(written.clone()),
                otlp_normalised(entry.clone()),
                "input {i}"
            );
            // The record is the one the OTLP mapping makes of that entry, but for the
            // order of its attributes (and a duplicate key's earlier values).
            let mut want = the_record(&frame.assemble(&[otlp::entry_record(&entry)], now));
            let mut got = the_record(&frame.assemble(&[written], now));
            let mut keys: Vec<&str> = input.fields.iter().map(|f| f.0.as_str()).collect();
            keys.sort_unstable();
            keys.dedup();
            if keys.len() < input.fields.len() {
                duplicates += 1;
                // The last value of each key is the one that counts.
                let mut last: HashMap<String, _> = HashMap::new();
                for kv in got.attributes.drain(..) {
                    last.insert(kv.key.clone(), kv);
                }
                got.attributes = last.into_values().collect();
            }
            escaped += usize::from(got.attributes.iter().any(|kv| kv.key.starts_with("field.")));
            assert_eq!(attributes(&got), attributes(&want), "input {i}");
            got.attributes.clear();
            want.attributes.clear();
            assert_eq!(got, want, "input {i}");
        }
        // The inputs did cover what they are meant to.
        assert!(duplicates > 100 && escaped > 1000, "{duplicates} {escaped}");
    }
}
