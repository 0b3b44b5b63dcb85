//! The `tracing` layer (feature `tracing`): a [`tracing_subscriber::Layer`] that turns
//! the program's `tracing` events into entries on an [`EntrySender`], with the same
//! rules as the `log` bridge: it never blocks by default (a dropped event is counted in
//! [`Stats::records_dropped`](crate::Stats::records_dropped) and reported at most once a
//! second), logsender's and grpcio's own targets are never shipped, and nothing emitted
//! while the layer ships an event (on the same thread) is either.
//!
//! An event becomes an entry with its level, its `message` field as the message, its
//! target as `source`, and as fields: its own fields, then the fields of the spans it
//! is in from the innermost out, then `module`, `file`, `line` and `spans` (the span
//! names from the outermost in, joined by `:`). Each field keeps its plain name; where
//! two have the same name the first in that order wins (the event's own over the
//! innermost span's, a span's over an outer one's, any of them over the built-in
//! ones). A span's fields are formatted once, when it is created or records a value.
//!
//! An event that `tracing_log::LogTracer` made from a `log` record (its target is `log`,
//! the record's is in its field `log.target`) is the record's: its `source`, `module`,
//! `file` and `line` are the record's (not fields named `log.…`), and a record of
//! logsender's or grpcio's is not shipped, from whichever thread it comes (logsender
//! logs through `log`: this is how its own records reach a `tracing` subscriber).

use std::ops::Range;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Subscriber};
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::{Context, Identity, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::{Layer, Registry};

use crate::bridge::{
    is_ours, process_id, BridgeGuard, Form, GoSight, Otlp, Scratch, Shipper, Shipping, Undelivered,
    Writer,
};
use crate::config::Wire;
use crate::entries::Batching;
use crate::error::{invalid_config, Error};
use crate::model::Level;
use crate::sender::LogSender;
use crate::stats::Report;

/// A `tracing` layer to be made ([`layer`](TracingLayer::layer)) or installed
/// ([`install`](TracingLayer::install)) on a [`LogSender`].
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use logsender::{Batching, Config, LogPayload, LogSender, TracingLayer};
/// use tracing_subscriber::layer::SubscriberExt;
///
/// // Nothing listens on this loopback port.
/// let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
/// let sender = LogSender::new(Config::builder(format!("127.0.0.1:{port}")).plaintext().build()?)?;
/// let layer = TracingLayer::new(Batching::new(LogPayload::from_host("agent-1"))).layer(&sender)?;
/// let subscriber = tracing_subscriber::registry().with(layer);
/// tracing::subscriber::with_default(subscriber, || {
///     let span = tracing::info_span!("request", id = 7);
///     let _in = span.enter();
///     tracing::info!(user = "ada", "signed in");
/// });
/// // No collector: the line comes back, with its span's field.
/// let done = sender.shutdown(Duration::from_millis(300));
/// let entry = &done.undelivered[0].logs[0];
/// assert_eq!(entry.message, "signed in");
/// assert_eq!(entry.fields["user"], "ada");
/// assert_eq!(entry.fields["id"], "7");
/// assert_eq!(entry.fields["spans"], "request");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
#[must_use]
pub struct TracingLayer {
    batching: Batching,
    filter: String,
    block: Option<Duration>,
}

impl TracingLayer {
    /// A layer whose entries are batched into payloads as `batching` says.
    pub fn new(batching: Batching) -> TracingLayer {
        TracingLayer {
            batching,
            filter: "info".into(),
            block: None,
        }
    }

    /// What [`install`](TracingLayer::install) ships, in `RUST_LOG`'s syntax
    /// (`info,my_crate::db=debug`, as `tracing_subscriber::filter::Targets` parses it:
    /// no span or field directives). Defaults to `info`. It filters logsender's layer
    /// only, not the one given to [`install_with`](TracingLayer::install_with). A layer
    /// made with [`layer`](TracingLayer::layer) ships every event its subscriber gives
    /// it: filter it there, with any `tracing_subscriber` filter
    /// (`layer.with_filter(Targets)`, `EnvFilter`, a closure with `filter_fn`). Checked
    /// by `install`.
    pub fn filter(mut self, spec: impl Into<String>) -> Self {
        self.filter = spec.into();
        self
    }

    /// [`filter`](TracingLayer::filter) from the environment variable `var` (such as
    /// `RUST_LOG`), if it is set; the filter stays as it was otherwise.
    pub fn filter_from_env(self, var: &str) -> Self {
        match std::env::var(var) {
            Ok(spec) => self.filter(spec),
            Err(_) => self,
        }
    }

    /// Wait at most `timeout` for room when the entry channel is full, then drop the
    /// event (counted). By default an event is dropped at once.
    pub fn block_for(mut self, timeout: Duration) -> Self {
        self.block = Some(timeout);
        self
    }

    /// The layer, on a new entry handle of `sender`; compose it with others (`fmt`) in
    /// a `Registry`, and filter it with `with_filter` (a span the filter leaves out is
    /// left out of the entries too: neither its fields nor its name). Shut `sender` down
    /// to deliver the last events.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidConfig`] for a `batching` that makes no sense, [`Error::Closed`]
    /// once the sender shuts down.
    pub fn layer(self, sender: &LogSender) -> Result<EntryLayer, Error> {
        let entries = sender.entry_sender(self.batching)?;
        Ok(EntryLayer {
            wire: entries.wire(),
            shipper: Arc::new(Shipper::new(entries, self.block)),
            pid: process_id(),
        })
    }

    /// Installs a `Registry` with the layer, filtered as [`filter`](TracingLayer::filter)
    /// says, as the program's global `tracing` subscriber, on an entry handle of
    /// `sender`, which the guard then owns. Dropping the guard shuts the sender down
    /// (for its `close_timeout`), as with [`LogBridge::install`](crate::LogBridge::install):
    /// what it could not deliver is reported to the event handler as
    /// [`DropReason::SenderDropped`](crate::DropReason::SenderDropped) and said in one
    /// `error` event (see [`install_with`](TracingLayer::install_with));
    /// [`BridgeGuard::shutdown`] returns it instead.
    ///
    /// # Errors
    ///
    /// As [`layer`](TracingLayer::layer), [`Error::InvalidConfig`] for a filter that
    /// does not parse, and [`Error::LoggerInstalled`] when the program has a global
    /// subscriber already. On any error the sender is dropped (shut down), with nothing
    /// of the layer's in it yet.
    pub fn install(self, sender: LogSender) -> Result<BridgeGuard, Error> {
        self.install_with(sender, Identity::new())
    }

    /// As [`install`](TracingLayer::install), with `layer` in the `Registry` too (your
    /// terminal output: `tracing_subscriber::fmt::layer()`; give it a filter of its own
    /// with `with_filter`). What a dropped guard could not deliver is then an `error`
    /// event of target `logsender::bridge`, which `layer` sees (logsender's does not).
    ///
    /// # Errors
    ///
    /// As [`install`](TracingLayer::install).
    pub fn install_with<L>(self, sender: LogSender, layer: L) -> Result<BridgeGuard, Error>
    where
        L: Layer<Registry> + Send + Sync + 'static,
    {
        let Ok(targets) = self.filter.parse::<Targets>() else {
            return invalid_config("filter", "not a RUST_LOG-style filter");
        };
        let ours = self.layer(&sender)?;
        let shipper = ours.shipper.clone();
        let subscriber = Registry::default()
            .with(layer)
            .with(ours.with_filter(targets));
        if tracing::subscriber::set_global_default(subscriber).is_err() {
            return Err(Error::LoggerInstalled);
        }
        Ok(BridgeGuard::new(sender, shipper, trace_undelivered))
    }
}

/// An installed layer's guard tells it through `tracing` (to the other layers).
fn trace_undelivered(report: &Report) {
    tracing::error!(target: "logsender::bridge", "{}", Undelivered(report));
}

/// The layer: ships `tracing` events as entries (see [`TracingLayer`]).
pub struct EntryLayer {
    shipper: Arc<Shipper>,
    /// The sender's wire: which writer writes the records (picked when the layer is
    /// made; each event goes to that one's monomorphic `record_of`).
    wire: Wire,
    /// The process ID every entry carries (read once).
    pid: i32,
}

impl std::fmt::Debug for EntryLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EntryLayer").finish_non_exhaustive()
    }
}

/// A span's fields, formatted (kept in the span's extensions).
struct SpanFields(Vec<(&'static str, String)>);

impl Visit for SpanFields {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.set(field.name(), value.to_owned());
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.set(field.name(), format!("{value:?}"));
    }
}

impl SpanFields {
    fn set(&mut self, name: &'static str, value: String) {
        match self.0.iter_mut().find(|(n, _)| *n == name) {
            Some((_, v)) => *v = value,
            None => self.0.push((name, value)),
        }
    }
}

impl<S> Layer<S> for EntryLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else {
            return;
        };
        // Formatted with no lock held: a field's `Debug` may emit events itself.
        let mut fields = SpanFields(Vec::new());
        attrs.record(&mut fields);
        let mut extensions = span.extensions_mut();
        // Another `EntryLayer` on the same registry stored the same fields already.
        if extensions.get_mut::<SpanFields>().is_none() {
            extensions.insert(fields);
        }
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else {
            return;
        };
        // Formatted with no lock held (as in `on_new_span`), then merged.
        let mut update = SpanFields(Vec::new());
        values.record(&mut update);
        let mut extensions = span.extensions_mut();
        match extensions.get_mut::<SpanFields>() {
            Some(fields) => {
                for (name, value) in update.0 {
                    fields.set(name, value);
                }
            }
            None => extensions.insert(update),
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        if is_ours(event.metadata().target()) {
            return;
        }
        // Anything emitted while this thread ships an event is not shipped: no loop.
        let Some(_shipping) = Shipping::enter() else {
            return;
        };
        let record = Scratch::with(|scratch| match self.wire {
            Wire::GoSightStream => record_of::<S, GoSight>(event, &ctx, self.pid, scratch),
            Wire::OtlpLogs => record_of::<S, Otlp>(event, &ctx, self.pid, scratch),
        });
        if let Some(record) = record {
            self.shipper.ship_record(record);
        }
    }
}

/// The level an event's level stands for (`TRACE` is `debug`, as from `log`).
fn level_of(level: &tracing::Level) -> Level {
    match *level {
        tracing::Level::ERROR => Level::Error,
        tracing::Level::WARN => Level::Warning,
        tracing::Level::INFO => Level::Info,
        _ => Level::Debug,
    }
}

/// The fields in which `tracing_log::LogTracer` puts a `log` record's target, module,
/// file and line (its event's metadata has target `log` and none of the others).
const LOG_FIELDS: [&str; 4] = ["log.target", "log.module_path", "log.file", "log.line"];

/// An event encoded as an entry (see the module's doc for what goes where); `None` for
/// a `log` record of logsender's or grpcio's.
fn record_of<S, F: Form>(
    event: &Event<'_>,
    ctx: &Context<'_, S>,
    pid: i32,
    scratch: &mut Scratch,
) -> Option<Vec<u8>>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    let Scratch {
        body,
        message,
        text,
        names,
        origin,
    } = scratch;
    message.clear();
    names.clear();
    origin.clear();
    let meta = event.metadata();
    let from_log = meta.target() == "log" && meta.fields().field(LOG_FIELDS[0]).is_some();
    let mut head = Head {
        message,
        from_log,
        origin,
        target: None,
        module: None,
        file: None,
        line: None,
    };
    event.record(&mut head);
    let Head {
        target,
        module,
        file,
        line,
        ..
    } = head;
    let source = match &target {
        Some(r) => &origin[r.clone()],
        None => meta.target(),
    };
    if from_log && is_ours(source) {
        return None;
    }
    let mut writer = F::start(
        body,
        text,
        SystemTime::now(),
        level_of(meta.level()).as_str(),
        message,
        source,
        pid,
    );
    if from_log {
        names.extend_from_slice(&LOG_FIELDS);
    }
    event.record(&mut Fields {
        writer: &mut writer,
        names,
    });
    // The span path goes after the record's parts, from the innermost span out.
    let path_at = origin.len();
    if let Some(scope) = ctx.event_scope(event) {
        for span in scope {
            if origin.len() > path_at {
                origin.insert(path_at, ':');
            }
            origin.insert_str(path_at, span.name());
            let extensions = span.extensions();
            let Some(fields) = extensions.get::<SpanFields>() else {
                continue;
            };
            for (name, value) in &fields.0 {
                if !names.contains(name) {
                    names.push(*name);
                    writer.field(name, value);
                }
            }
        }
    }
    let origin: &str = origin;
    let part = |r: Option<Range<usize>>| r.map(|r| &origin[r]);
    let path = (origin.len() > path_at).then(|| &origin[path_at..]);
    let built_in = [
        ("module", part(module).or(meta.module_path())),
        ("file", part(file).or(meta.file())),
        ("spans", path),
    ];
    for (name, value) in built_in {
        if let (false, Some(value)) = (names.contains(&name), value) {
            writer.field(name, value);
        }
    }
    if let (false, Some(line)) = (names.contains(&"line"), line.or(meta.line().map(u64::from))) {
        writer.field_display("line", &line);
    }
    Some(writer.finish())
}

/// Takes the event's `message` field and, from a `log` record's event, the record's
/// target, module and file (into `origin`) and line.
struct Head<'a> {
    message: &'a mut String,
    from_log: bool,
    origin: &'a mut String,
    target: Option<Range<usize>>,
    module: Option<Range<usize>>,
    file: Option<Range<usize>>,
    line: Option<u64>,
}

impl Visit for Head<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        let name = field.name();
        if name == "message" {
            self.message.push_str(value);
            return;
        }
        if !self.from_log {
            return;
        }
        let slot = match name {
            "log.target" => &mut self.target,
            "log.module_path" => &mut self.module,
            "log.file" => &mut self.file,
            _ => return,
        };
        let at = self.origin.len();
        self.origin.push_str(value);
        *slot = Some(at..self.origin.len());
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        if self.from_log && field.name() == "log.line" {
            self.line = Some(value);
        } else {
            self.record_debug(field, &value);
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            use std::fmt::Write as _;
            // Fails only if the value's Debug does: ship what it wrote.
            let _ = write!(self.message, "{value:?}");
        }
    }
}

/// Writes the event's other fields, noting their names.
struct Fields<'w, W> {
    writer: &'w mut W,
    names: &'w mut Vec<&'static str>,
}

impl<W> Fields<'_, W> {
    /// Whether the field is to be written (the first of its name, not the message).
    fn first(&mut self, field: &Field) -> bool {
        let name = field.name();
        if name == "message" || self.names.contains(&name) {
            return false;
        }
        self.names.push(name);
        true
    }
}

impl<W: Writer> Visit for Fields<'_, W> {
    fn record_str(&mut self, field: &Field, value: &str) {
        if self.first(field) {
            self.writer.field(field.name(), value);
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if self.first(field) {
            self.writer.field_debug(field.name(), value);
        }
    }
}
