//! # logsender
//!
//! Ships log entries from a synchronous program to a GoSight-compatible collector over
//! **one long-lived gRPC client stream** (`proto.LogService/SubmitStream`), from plain
//! OS threads, and never loses them quietly.
//!
//! ```no_run
//! use std::time::Duration;
//! use logsender::{Batching, Config, Level, LogEntry, LogPayload, LogSender};
//!
//! let sender = LogSender::new(Config::builder("127.0.0.1:50051").plaintext().build()?)?;
//! // Entries are batched into payloads stamped with this host's identity.
//! let log = sender.entry_sender(Batching::new(LogPayload::from_host("agent-1")))?;
//! for i in 0..10 {
//!     log.log(LogEntry::new(Level::Info, format!("line {i}")).with_field("n", i.to_string()))?;
//! }
//! let done = sender.shutdown(Duration::from_secs(10)); // sends the last batch, joins every thread
//! println!("{:?}", done.report); // acknowledged, dropped, dead-lettered, handed back
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Programs that build whole [`LogPayload`]s (GoSight agents do) feed them through a
//! [`crossbeam_channel`] to [`LogSender::start_worker_pool`], or write one at once with
//! [`LogSender::send_logs`].
//!
//! ## Delivery
//!
//! A client stream has no per-message acknowledgement, so in the default
//! [`DeliveryMode::AtLeastOnce`] every stream is an *epoch*: after `commit_every`
//! payloads or `commit_interval`, logsender half-closes it, and only the call's final
//! `OK` status marks its payloads delivered. An epoch that fails is re-sent first on the
//! next stream. **Duplicates are possible after a fault; loss is not**: a payload leaves
//! logsender only acknowledged, dropped by the overflow policy you chose (counted and
//! reported), dead-lettered because the collector rejects it (reported with its status),
//! or handed back by [`LogSender::shutdown`]; its [`Report`] and [`LogSender::flush`]'s
//! count each of those. The collector must read a stream to its end
//! before it answers `OK`; an `OK` that arrives before logsender half-closed the stream
//! acknowledges nothing. A payload the collector rejects is isolated (an empty probe
//! call tells the collector's fault from the payloads'; a rejected epoch is then split
//! in halves until the culprit travels alone) and dead-lettered, while the rest is
//! delivered. [`DeliveryMode::AtMostOnce`] counts a payload as sent when its
//! write completes, like the Go original.
//!
//! ## About threads
//!
//! - `LogSender::new` starts one supervisor thread (`logsender-sup`), one background
//!   writer (`logsender-wr`) and one grpcio completion-queue thread (`logsender-cq-0`).
//!   The supervisor alone dials, opens, swaps, half-closes and cancels calls.
//! - `start_worker_pool(rx, n)` starts `n` workers (`logsender-wN`) that block on `rx`.
//!   A worker takes up to 16 payloads at once, encodes them with no lock held, puts them
//!   in the bounded outbox (one short `parking_lot` lock), then, if no one else is
//!   writing, takes the stream lock and hands the outbox, in batches, to the
//!   completion-queue thread, which writes each batch and then wakes it once. Only
//!   writes happen under the stream lock. gzip compression, when on, runs on the
//!   completion-queue thread (the gRPC core compresses each message as it is sent).
//! - The background writer writes the outbox when woken (after a reconnect or a failed
//!   epoch, for `flush` and `close`): your threads never write on the stream, except
//!   `send_logs`, which writes its own payload and waits at most `send_timeout` for the
//!   stream.
//! - A write that makes no progress for `write_timeout` (a stalled collector) is released
//!   by the supervisor, which cancels the call; nothing holds the stream lock forever.
//! - Event handler methods run on logsender's threads with no lock held; a panic in one
//!   is caught and logged.
//! - `close` joins every thread; `Drop` closes with a short deadline.
//!
//! ## Errors
//!
//! One [`Error`] enum. Bad input is rejected with a typed error before anything is sent
//! ([`Error::PayloadTooLarge`], [`Error::InvalidAddress`], [`Error::Tls`], ...). Status
//! codes are classified by [`classify`]: retryable ones are retried with backoff,
//! permanent ones send the epoch's payloads to [`EventHandler::on_dead_letter`] (a
//! collector that refuses *every* call with `UNAUTHENTICATED`, `PERMISSION_DENIED` or
//! `UNIMPLEMENTED` has them held instead, with a spool or
//! [`ConfigBuilder::hold_when_refused`]: [`ConnectionState::Refused`]).
//!
//! ## Timeouts
//!
//! Every wait has a bound: `connect_timeout` per dial, exponential backoff with jitter
//! between dials (100 ms growing 1.5× up to 10 s by default), `write_timeout` without progress
//! per write, `send_timeout` for `send_logs` to get the stream, `commit_timeout` for an
//! epoch's final status, and the deadline given to `flush` and `close`. Every duration
//! may be as large as `Duration::MAX`: deadlines saturate.
#![deny(missing_docs)]
// Denied rather than forbidden so that `grpc_log`, the one FFI module (the gRPC core's
// log function), can allow it.
#![deny(unsafe_code)]

// The modules' imports form a chain, from the leaves (clock, error, model, ...) through
// ledger, call, shared, write and intake up to supervisor and sender; ARCHITECTURE.md
// draws it, and `scripts/imports.sh` fails on any import cycle.
mod bridge;
mod call;
mod clock;
mod command;
mod config;
mod entries;
mod error;
mod events;
// Not called yet: the OTLP wire (`wire_otlp`, issue 17) will be its caller.
#[cfg_attr(not(test), allow(dead_code))]
mod export;
#[allow(unsafe_code)]
mod grpc_log;
#[cfg_attr(not(feature = "test-hooks"), allow(dead_code))]
#[doc(hidden)]
pub mod hooks;
mod host;
mod intake;
mod ledger;
pub mod model;
pub mod otlp;
mod queues;
mod sender;
mod shared;
mod spool;
mod spooler;
mod stats;
mod supervisor;
#[cfg(feature = "tracing")]
mod tracing_layer;
pub mod wire;
mod write;

pub use bridge::{BridgeGuard, BridgeLogger, LogBridge};
pub use call::SUBMIT_STREAM_PATH;
pub use config::{
    Compression, Config, ConfigBuilder, DeliveryMode, OverflowPolicy, SpoolSync, Wire,
    DEFAULT_OTLP_MAX_REQUEST_BYTES, DEFAULT_REFUSED_BACKOFF_INITIAL, DEFAULT_REFUSED_BACKOFF_MAX, DEFAULT_SPOOL_MAX_BYTES,
};
/// The channel crate of [`LogSender::start_worker_pool`]'s queues, re-exported so that
/// your `crossbeam_channel` is the same version as logsender's.
pub use crossbeam_channel;
pub use entries::{Batching, EntrySender, LogError};
pub use error::{classify, DialCause, Error, LastError, Retry, RpcStatus, RpcStatusCode};
pub use events::{
    BackpressureEvent, DeadLetterEvent, DialFailedEvent, DropReason, DroppedEvent, EventHandler,
    PartialSuccessEvent, RecordsDroppedEvent, RefusedEvent, SpoolEvent,
};
pub use model::{Level, LogEntry, LogMeta, LogPayload, Meta, UnknownLevel};
pub use sender::{Durability, LogSender, Shutdown};
pub use stats::{ConnectionState, Covers, Report, Stats};
#[cfg(feature = "tracing")]
pub use tracing_layer::{EntryLayer, TracingLayer};
