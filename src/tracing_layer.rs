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

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Subscriber};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::{Layer, Registry};

use crate::bridge::{is_ours, BridgeGuard, Scratch, Shipper, Shipping};
use crate::entries::Batching;
use crate::error::{invalid_config, Error};
use crate::model::Level;
use crate::sender::LogSender;
use crate::wire::RecordWriter;

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
    /// (`info,my_crate::db=debug`, as `tracing_subscriber::filter::Targets` parses it).
    /// Defaults to `info`. A layer made with [`layer`](TracingLayer::layer) ships every
    /// event its subscriber gives it: filter it there (`Layer::with_filter`).
    pub fn filter(mut self, spec: impl Into<String>) -> Self {
        self.filter = spec.into();
        self
    }

    /// Wait at most `timeout` for room when the entry channel is full, then drop the
    /// event (counted). By default an event is dropped at once.
    pub fn block_for(mut self, timeout: Duration) -> Self {
        self.block = Some(timeout);
        self
    }

    /// The layer, on a new entry handle of `sender`; compose it with others (`fmt`) in
    /// a `Registry`.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidConfig`] for a `batching` that makes no sense, [`Error::Closed`]
    /// once the sender shuts down.
    pub fn layer(self, sender: &LogSender) -> Result<EntryLayer, Error> {
        let entries = sender.entry_sender(self.batching)?;
        Ok(EntryLayer {
            shipper: Arc::new(Shipper::new(entries, self.block)),
            pid: i32::try_from(std::process::id()).unwrap_or(0),
        })
    }

    /// Installs a `Registry` with the layer, filtered as [`filter`](TracingLayer::filter)
    /// says, as the program's global `tracing` subscriber, on an entry handle of
    /// `sender`, which the guard then owns. Dropping the guard shuts the sender down,
    /// as with [`LogBridge::install`](crate::LogBridge::install).
    ///
    /// # Errors
    ///
    /// As [`layer`](TracingLayer::layer), [`Error::InvalidConfig`] for a filter that
    /// does not parse, and [`Error::LoggerInstalled`] when the program has a global
    /// subscriber already. On any error the sender is dropped (shut down), with nothing
    /// of the layer's in it yet.
    pub fn install(self, sender: LogSender) -> Result<BridgeGuard, Error> {
        let Ok(targets) = self.filter.parse::<tracing_subscriber::filter::Targets>() else {
            return invalid_config("filter", "not a RUST_LOG-style filter");
        };
        let layer = self.layer(&sender)?;
        let shipper = layer.shipper.clone();
        let subscriber = Registry::default().with(layer.with_filter(targets));
        if tracing::subscriber::set_global_default(subscriber).is_err() {
            return Err(Error::LoggerInstalled);
        }
        Ok(BridgeGuard::new(sender, shipper))
    }
}

/// The layer: ships `tracing` events as entries (see [`TracingLayer`]).
pub struct EntryLayer {
    shipper: Arc<Shipper>,
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
        let record = Scratch::with(|scratch| record_of(event, &ctx, self.pid, scratch));
        self.shipper.ship_record(record);
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

/// An event encoded as an entry (see the module's doc for what goes where).
fn record_of<S>(event: &Event<'_>, ctx: &Context<'_, S>, pid: i32, scratch: &mut Scratch) -> Vec<u8>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    let Scratch {
        body,
        message,
        text,
        names,
        path,
    } = scratch;
    message.clear();
    names.clear();
    path.clear();
    event.record(&mut Message(message));
    let meta = event.metadata();
    let mut writer = RecordWriter::start(
        body,
        text,
        SystemTime::now(),
        level_of(meta.level()).as_str(),
        message,
        meta.target(),
        pid,
    );
    event.record(&mut Fields {
        writer: &mut writer,
        names,
    });
    if let Some(scope) = ctx.event_scope(event) {
        // From the innermost span out.
        for span in scope {
            if !path.is_empty() {
                path.insert(0, ':');
            }
            path.insert_str(0, span.name());
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
    let built_in = [
        ("module", meta.module_path()),
        ("file", meta.file()),
        ("spans", (!path.is_empty()).then_some(path.as_str())),
    ];
    for (name, value) in built_in {
        if let (false, Some(value)) = (names.contains(&name), value) {
            writer.field(name, value);
        }
    }
    if let (false, Some(line)) = (names.contains(&"line"), meta.line()) {
        writer.field_display("line", &line);
    }
    writer.finish()
}

/// Takes the event's `message` field.
struct Message<'a>(&'a mut String);

impl Visit for Message<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.0.push_str(value);
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            use std::fmt::Write as _;
            // Fails only if the value's Debug does: ship what it wrote.
            let _ = write!(self.0, "{value:?}");
        }
    }
}

/// Writes the event's other fields, noting their names.
struct Fields<'w, 'a> {
    writer: &'w mut RecordWriter<'a>,
    names: &'w mut Vec<&'static str>,
}

impl Fields<'_, '_> {
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

impl Visit for Fields<'_, '_> {
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
