//! The supervisor thread: the only code that dials, opens, swaps, half-closes, cancels
//! and tears down channels and calls.
//!
//! It owns the `grpcio::Environment` (one per sender, reused across rebuilds), the
//! channel, and the *response* half of every open call, which is where a call is
//! cancelled from (that is what releases a write blocked by a stalled collector).
//! Each call's final status arrives as a [`Report::CallEnded`] from a small future on
//! grpcio's completion-queue thread, together with whether our half-close had
//! completed before it; the supervisor commits, re-queues, puts on trial or
//! dead-letters that epoch's payloads accordingly.
//!
//! An epoch the collector rejects (any status but a broken connection or a timeout) is
//! put on trial: a *probe*, an empty call, tells whether the collector rejects every
//! call (overload, wrong credentials: the payloads are re-sent after the backoff, or
//! dead-lettered for a permanent status; or, for `UNAUTHENTICATED`,
//! `PERMISSION_DENIED` and `UNIMPLEMENTED` with `hold_when_refused`, held and retried
//! after the refused backoff, in the `Refused` state) or accepts calls. In that case the payloads may
//! be at fault: the group is split in halves, each re-sent alone; a group's rejection
//! counts only once the collector has committed other epochs with data since the
//! trouble began (the ledger's proof that it takes data, not just calls), until the
//! poison payload travels alone and is dead-lettered with the collector's status.

use std::collections::HashMap;
use std::future::poll_fn;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use backoff::backoff::Backoff;
use backoff::{ExponentialBackoff, ExponentialBackoffBuilder};
use crossbeam_channel::{select, Receiver};
use futures_executor::block_on;
use futures_util::{FutureExt, SinkExt, StreamExt};
use grpcio::{
    CallOption, Channel, ChannelBuilder, ChannelCredentialsBuilder, Client, ClientDuplexReceiver,
    ClientDuplexSender, CompressionAlgorithms, ConnectivityState, Environment, GrpcSlice,
    RpcStatus, RpcStatusCode,
};
use log::{debug, error, info, warn};
use parking_lot::Mutex;

use crate::call::{Slot, SUBMIT_STREAM};
use crate::clock::after;
use crate::command::{Command, Report};
use crate::config::{Compression, DeliveryMode, Transport};
use crate::error::{classify, refusal_hint, DialCause, Error, Hinted, Retry};
use crate::events::{DialFailedEvent, RefusedEvent};
use crate::ledger::{entries_of, Verdict};
use crate::shared::Shared;
use crate::stats::{ConnectionState, Counters};

type Receiving = Arc<Mutex<ClientDuplexReceiver<Vec<u8>>>>;

/// An open call, seen from the supervisor.
struct Call {
    id: u64,
    recv: Receiving,
    /// Set when logsender half-closes the call; read by the call's watcher when the
    /// status arrives.
    half_closed: Arc<AtomicBool>,
    opened: Instant,
    /// The epoch carries one suspect group alone.
    dedicated: bool,
}

/// A half-closed call waiting for its final status.
struct Closing {
    recv: Receiving,
    deadline: Instant,
    /// `Some(epoch)` for a probe deciding the trial of that epoch.
    probe_for: Option<u64>,
}

/// The collector refuses every call for a permanent reason and the payloads are held.
struct Refusal {
    since: Instant,
    /// Refused tries in a row.
    attempts: u32,
    /// When the next try is.
    next: Instant,
    /// A stream was opened since the last try was refused: the next refusal is a new
    /// try's (before, it is another epoch of the same try).
    retried: bool,
}

/// A rejected epoch whose probe has not answered yet.
struct Trial {
    status: RpcStatus,
    was_current: bool,
}

pub(crate) struct Supervisor {
    shared: Arc<Shared>,
    commands: Receiver<Command>,
    reports: Receiver<Report>,
    env: Arc<Environment>,
    client: Option<Client>,
    current: Option<Call>,
    closing: HashMap<u64, Closing>,
    trials: HashMap<u64, Trial>,
    next_id: u64,
    backoff: ExponentialBackoff,
    retry_at: Option<Instant>,
    connected_once: bool,
    /// Failed attempts to connect since the last stream came up.
    failed_dials: u32,
    shutting_down: bool,
    /// The collector refused gzip: channels are built without compression from now on.
    gzip_refused: bool,
    /// When a struck payload waiting in the suspects gets its next epoch (the current
    /// epoch is then rotated).
    suspects_due: Option<Instant>,
    /// Set while the collector refuses every call and payloads are held; cleared once
    /// it takes data (or an empty call).
    refused: Option<Refusal>,
    /// The delays between tries while `refused`.
    refused_backoff: ExponentialBackoff,
}

/// The supervisor's longest sleep; bounds how late the write watchdog can notice a
/// stalled write.
const TICK: Duration = Duration::from_millis(50);

/// How many bytes of hinted writes the HTTP/2 transport buffers per stream.
const HTTP2_WRITE_BUFFER: i32 = 1 << 20;

/// How long a probe (an empty call) may take before it counts as failed.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

impl Supervisor {
    pub(crate) fn new(
        shared: Arc<Shared>,
        commands: Receiver<Command>,
        reports: Receiver<Report>,
        env: Arc<Environment>,
    ) -> Self {
        let c = &shared.config;
        let backoff = ExponentialBackoffBuilder::new()
            .with_initial_interval(c.backoff_initial)
            .with_max_interval(c.backoff_max)
            .with_multiplier(c.backoff_multiplier)
            .with_randomization_factor(c.backoff_jitter)
            .with_max_elapsed_time(None)
            .build();
        let refused_backoff = ExponentialBackoffBuilder::new()
            .with_initial_interval(c.refused_backoff_initial)
            .with_max_interval(c.refused_backoff_max)
            .with_multiplier(2.0)
            .with_randomization_factor(c.backoff_jitter)
            .with_max_elapsed_time(None)
            .build();
        Supervisor {
            shared,
            commands,
            reports,
            env,
            client: None,
            current: None,
            closing: HashMap::new(),
            trials: HashMap::new(),
            next_id: 1,
            backoff,
            retry_at: None,
            connected_once: false,
            failed_dials: 0,
            shutting_down: false,
            gzip_refused: false,
            suspects_due: None,
            refused: None,
            refused_backoff,
        }
    }

    pub(crate) fn run(mut self) {
        loop {
            let now = Instant::now();
            if !self.shutting_down
                && self.current.is_none()
                && self.trials.is_empty()
                && self.retry_at.is_none_or(|t| now >= t)
            {
                self.connect();
            }
            self.check_timers(Instant::now());
            if self.shutting_down && self.current.is_none() && self.closing.is_empty() {
                break;
            }
            // Cancelled calls report back at once; should one not, do not wait for it
            // past the close deadline (its payloads are still in the ledger).
            if self.shutting_down && self.past_close_deadline(Instant::now()) {
                if !self.closing.is_empty() {
                    debug!(
                        "{} calls had not reported at the close deadline",
                        self.closing.len()
                    );
                }
                break;
            }
            let wait = self.next_wakeup(Instant::now());
            select! {
                recv(self.reports) -> report => match report {
                    Ok(report) => self.on_report(report),
                    Err(_) => self.shutting_down = true,
                },
                recv(self.commands) -> command => match command {
                    Ok(command) => self.on_command(command),
                    Err(_) => self.shutting_down = true,
                },
                default(wait) => {}
            }
        }
        self.teardown();
    }

    fn on_report(&mut self, report: Report) {
        match report {
            Report::CallEnded {
                id,
                result,
                after_half_close,
            } => self.call_ended(id, result, after_half_close),
            Report::WriteFailed { epoch } => {
                // Make sure the call ends, so its status arrives and the epoch settles.
                if let Some(c) = self.current.as_ref().filter(|c| c.id == epoch) {
                    c.recv.lock().cancel();
                }
            }
        }
    }

    fn on_command(&mut self, command: Command) {
        match command {
            Command::Rotate { epoch } => {
                crate::hooks::pause(crate::hooks::Point::BeforeRotate);
                if self.current.as_ref().is_some_and(|c| c.id == epoch) {
                    self.rotate();
                }
            }
            Command::Commit => {
                // A dedicated epoch rotates itself once its whole group is written.
                let carries = self.current.as_ref().is_some_and(|c| {
                    let ledger = self.shared.ledger.lock();
                    ledger.epoch_len(c.id) > 0 && !ledger.group_unwritten(c.id)
                });
                if carries {
                    self.rotate();
                }
            }
            Command::Shutdown => {
                self.shutting_down = true;
                self.retire_current();
            }
        }
    }

    /// Dials if needed, then opens a call and installs it.
    fn connect(&mut self) {
        if self.client.is_none() {
            match self.dial() {
                Ok(channel) => self.client = Some(Client::new(channel)),
                Err(reason) => {
                    self.dial_failed(DialCause::of(&reason), reason);
                    return;
                }
            }
        }
        match self.open_call() {
            Ok((slot, call)) => {
                info!(
                    "stream to {} open (epoch {})",
                    self.shared.config.addr, call.id
                );
                self.current = Some(call);
                self.swap_slot(Some(slot));
                self.failed_dials = 0;
                if self.connected_once {
                    Counters::add(&self.shared.counters.reconnects, 1);
                }
                self.connected_once = true;
                // While the collector refuses every call, a stream that opens proves
                // nothing: the state stays `Refused` until it takes data, or an empty
                // call. With nothing to write, its empty epoch is half-closed at once
                // (the next one opened), so that its status says which.
                if let Some(refusal) = &mut self.refused {
                    refusal.retried = true;
                    if self.shared.ledger.lock().held().0 == 0 {
                        self.rotate();
                    }
                } else {
                    self.shared.counters.recovered();
                    self.shared.counters.set_state(ConnectionState::Connected);
                    self.shared.handler(|h| h.on_connected());
                }
                self.shared.wake_writer();
            }
            Err(e) => {
                self.client = None;
                let reason = format!("cannot open SubmitStream: {e}");
                self.dial_failed(DialCause::StreamRefused, reason);
            }
        }
    }

    /// Records a failed attempt to connect, schedules the next and reports both: one
    /// `warn` line (in `schedule_retry`), `last_error` and the event, each with the hint.
    fn dial_failed(&mut self, cause: DialCause, message: String) {
        self.failed_dials = self.failed_dials.saturating_add(1);
        let hint = cause.hint(&message, &self.shared.config.addr);
        self.shared
            .counters
            .set_last_error(&message, Some(cause), hint.clone());
        let hinted = Hinted {
            message: &message,
            hint: hint.as_deref(),
        };
        let retry_in = self.schedule_retry(Retry::Backoff, &hinted);
        let event = DialFailedEvent {
            cause,
            message,
            hint,
            retry_in,
            attempt: self.failed_dials,
        };
        self.shared.handler(|h| h.on_dial_failed(&event));
    }

    /// Builds a channel and waits until it is ready, failing fast on a refused dial.
    /// A failure names its cause (refused, TLS handshake, name resolution, ...) as the
    /// gRPC core reports it.
    fn dial(&mut self) -> Result<Channel, String> {
        let c = &self.shared.config;
        let max = i32::try_from(c.max_message_size).unwrap_or(i32::MAX);
        let mut builder = ChannelBuilder::new(self.env.clone())
            .keepalive_time(c.keepalive_time)
            .keepalive_timeout(c.keepalive_timeout)
            .keepalive_permit_without_calls(true)
            .max_send_message_len(max)
            .max_receive_message_len(max)
            // Our own connection, so rebuilding the channel really redials.
            .use_local_subchannel_pool(true)
            // A batch is written with buffer hints: let the transport take a whole batch
            // before a send waits for the socket (grpc's default is 64 KiB).
            .http2_write_buffer_size(HTTP2_WRITE_BUFFER)
            .initial_reconnect_backoff(c.backoff_initial)
            .max_reconnect_backoff(c.backoff_max);
        if c.compression == Compression::Gzip && !self.gzip_refused {
            builder = builder
                .default_compression_algorithm(CompressionAlgorithms::GRPC_COMPRESS_GZIP)
                // grpcio-sys's C core maps its default level to "no compression" (deflate
                // stored blocks); the level must be set for gzip to compress at all.
                .raw_cfg_int(
                    c"grpc.gzip_compression_level".to_owned(),
                    i32::try_from(c.gzip_level).unwrap_or(1),
                )
                // (sic: the C core's name for the setting.)
                .raw_cfg_int(
                    c"grpc.gprc_min_message_size_to_compress".to_owned(),
                    i32::try_from(c.gzip_min_size).unwrap_or(i32::MAX),
                );
        }
        let addr = c.addr.clone();
        let connect_timeout = c.connect_timeout;
        let channel = match &c.transport {
            Transport::Plaintext => builder.connect(&c.addr),
            Transport::Tls(tls) => {
                let mut creds = ChannelCredentialsBuilder::new();
                if let Some(ca) = &tls.ca {
                    creds = creds.root_cert(ca.clone());
                }
                if let Some((cert, key)) = &tls.identity {
                    creds = creds.cert(cert.clone(), key.clone());
                }
                builder = builder.set_credentials(creds.build());
                if let Some(name) = &tls.server_name {
                    builder = builder.override_ssl_target(name.clone());
                }
                builder.connect(&c.addr)
            }
        };
        let deadline = crate::clock::deadline_in(connect_timeout);
        let mut state = channel.check_connectivity_state(true);
        loop {
            match state {
                ConnectivityState::GRPC_CHANNEL_READY => return Ok(channel),
                ConnectivityState::GRPC_CHANNEL_TRANSIENT_FAILURE => {
                    let why = failure_reason(&channel);
                    return Err(format!("cannot connect to {addr}: {why}"));
                }
                ConnectivityState::GRPC_CHANNEL_SHUTDOWN => {
                    return Err(format!("channel to {addr} shut down"))
                }
                _ => {}
            }
            let now = Instant::now();
            if now >= deadline || self.past_close_deadline(now) {
                return Err(format!(
                    "cannot connect to {addr} within {connect_timeout:?}"
                ));
            }
            let slice = (deadline - now).min(TICK);
            block_on(channel.wait_for_state_change(state, slice));
            state = channel.check_connectivity_state(true);
        }
    }

    /// Opens a call on the channel with a watcher on its response side that reports
    /// [`Report::CallEnded`]. Returns the write half, the response half and the
    /// half-close flag.
    fn start_call(
        &mut self,
    ) -> grpcio::Result<(
        u64,
        ClientDuplexSender<GrpcSlice>,
        Receiving,
        Arc<AtomicBool>,
    )> {
        let Some(client) = &self.client else {
            return Err(grpcio::Error::RemoteStopped);
        };
        let (sink, recv) = client.duplex_streaming(&SUBMIT_STREAM, CallOption::default())?;
        let id = self.next_id;
        self.next_id += 1;
        let recv: Receiving = Arc::new(Mutex::new(recv));
        let half_closed = Arc::new(AtomicBool::new(false));
        let watched = recv.clone();
        let flag = half_closed.clone();
        let reports = self.shared.reports.clone();
        client.spawn(async move {
            let result = loop {
                match poll_fn(|cx| watched.lock().poll_next_unpin(cx)).await {
                    Some(Ok(response)) => {
                        debug!(
                            "call {id}: collector answered with {} bytes",
                            response.len()
                        )
                    }
                    Some(Err(e)) => break Err(e),
                    None => break Ok(()),
                }
            };
            // Read here, on the completion-queue thread, in the order grpc reported the
            // half-close and the status: not in the order the supervisor dequeues events.
            let after_half_close = flag.load(Ordering::Acquire);
            let _ = reports.send(Report::CallEnded {
                id,
                result,
                after_half_close,
            });
        });
        Ok((id, sink, recv, half_closed))
    }

    /// Opens the next epoch's call and starts watching its response side.
    fn open_call(&mut self) -> grpcio::Result<(Slot, Call)> {
        let (id, sink, recv, half_closed) = self.start_call()?;
        let Some(client) = self.client.clone() else {
            return Err(grpcio::Error::RemoteStopped);
        };
        let dedicated = self.shared.config.delivery == DeliveryMode::AtLeastOnce
            && self.shared.ledger.lock().open_epoch(id, Instant::now());
        if dedicated {
            debug!("epoch {id} carries a suspect group alone");
        }
        Ok((
            Slot::new(sink, client, id, dedicated),
            Call {
                id,
                recv,
                half_closed,
                opened: Instant::now(),
                dedicated,
            },
        ))
    }

    /// Commits the current epoch: opens the next call, swaps it in, half-closes the old one.
    fn rotate(&mut self) {
        if self.current.is_none() {
            return;
        }
        // The old call stays `current` while the slot is swapped, so the write watchdog
        // (which runs while we wait for the stream lock) can still cancel it.
        match self.open_call() {
            Ok((slot, call)) => {
                let old_slot = self.swap_slot(Some(slot));
                if let Some(old) = self.current.replace(call) {
                    self.half_close(old, old_slot);
                }
                self.shared.wake_writer();
            }
            Err(e) => {
                // The channel cannot open calls: commit what we have and rebuild.
                warn!("cannot open the next epoch: {e}");
                self.retire_current();
                self.client = None;
                self.shared.counters.set_state(self.down_state());
                self.schedule_retry(Retry::Backoff, &e);
            }
        }
    }

    /// Takes the current call, which has ended, out of service; returns its write half.
    fn drop_current(&mut self) -> Option<Slot> {
        let slot = self.swap_slot(None);
        self.current = None;
        self.shared.counters.set_state(self.down_state());
        slot
    }

    /// Takes the current call out of service and half-closes it.
    fn retire_current(&mut self) {
        let old_slot = self.swap_slot(None);
        if let Some(old) = self.current.take() {
            self.half_close(old, old_slot);
        }
    }

    /// Half-closes a call (after its last write) and waits for its status. A call whose
    /// write failed is cancelled instead: it is over, and grpcio must not be asked to
    /// close a sink whose last send already failed.
    fn half_close(&mut self, call: Call, slot: Option<Slot>) {
        let deadline =
            self.bounded_by_close(after(Instant::now(), self.shared.config.commit_timeout));
        match (slot, &self.client) {
            (
                Some(Slot {
                    sink: Some(sink),
                    broken: false,
                    ..
                }),
                Some(client),
            ) => {
                spawn_half_close(client, sink, call.id, call.half_closed.clone());
            }
            _ => call.recv.lock().cancel(),
        }
        self.closing.insert(
            call.id,
            Closing {
                recv: call.recv,
                deadline,
                probe_for: None,
            },
        );
    }

    /// Puts epoch `epoch` on trial: sends an empty call to see whether the collector
    /// accepts calls at all. Returns false if no probe could be sent.
    fn send_probe(&mut self, epoch: u64) -> bool {
        let Ok((id, sink, recv, half_closed)) = self.start_call() else {
            return false;
        };
        if let Some(client) = &self.client {
            spawn_half_close(client, sink, id, half_closed);
        }
        let deadline = self.bounded_by_close(after(Instant::now(), PROBE_TIMEOUT));
        self.closing.insert(
            id,
            Closing {
                recv,
                deadline,
                probe_for: Some(epoch),
            },
        );
        true
    }

    fn call_ended(&mut self, id: u64, result: grpcio::Result<()>, after_half_close: bool) {
        let closing = self.closing.remove(&id);
        if let Some(epoch) = closing.as_ref().and_then(|c| c.probe_for) {
            self.verdict(epoch, result.is_ok() && after_half_close, result.err());
            return;
        }
        let was_current = self.current.as_ref().is_some_and(|c| c.id == id);
        let shared = self.shared.clone();
        let mut early_ok = false;
        let err = match result {
            Ok(()) if after_half_close => {
                // Count before anyone waiting on the ledger can see the payloads go.
                let delivered = {
                    let mut ledger = shared.ledger.lock();
                    let delivered = ledger.commit(id);
                    Counters::add(&shared.counters.acknowledged, delivered.len() as u64);
                    Counters::add(
                        &shared.counters.entries_acknowledged,
                        entries_of(&delivered),
                    );
                    Counters::add(&shared.counters.epochs_committed, 1);
                    delivered
                };
                shared.ledger_changed.notify_all();
                let n = delivered.len();
                // Their buffers are freed here, with no lock held.
                drop(delivered);
                debug!("epoch {id} committed: {n} payloads");
                if n > 0 {
                    // The collector takes data: the next trouble starts from scratch.
                    self.backoff.reset();
                    self.end_refusal("takes data again");
                } else {
                    // An empty call accepted after its half-close: it takes calls again.
                    self.end_refusal("accepts calls again");
                }
                self.rotate_for_suspects();
                return;
            }
            Ok(()) => {
                let n = shared.ledger.lock().epoch_len(id);
                if n > 0 {
                    warn!(
                        "the collector answered OK on epoch {id} before logsender half-closed \
                         it: it may not have read all {n} payloads, so they are re-sent (a \
                         collector must read a stream to its end before it answers OK)"
                    );
                }
                early_ok = true;
                grpcio::Error::RpcFailure(RpcStatus::with_message(
                    RpcStatusCode::ABORTED,
                    "the collector ended the stream with OK before it was half-closed".into(),
                ))
            }
            Err(e) => e,
        };
        if let grpcio::Error::RpcFailure(s) = &err {
            if self.refuses_gzip(s) {
                // Not the payloads' fault, nor the collector's: send them uncompressed.
                warn!(
                    "collector {} does not accept gzip ({}); sending uncompressed from now on",
                    shared.config.addr,
                    s.message()
                );
                self.gzip_refused = true;
                self.client = None;
                let n = shared.ledger.lock().fail(id) as u64;
                Counters::add(&shared.counters.retried, n);
                Counters::add(&shared.counters.resent_after_fault, n);
                if was_current {
                    self.drop_current();
                    self.retry_at = None;
                } else if self.current.is_some() {
                    self.retire_current();
                    self.retry_at = None;
                }
                return;
            }
        }
        // Transport errors without a status count as UNAVAILABLE.
        let status = match &err {
            grpcio::Error::RpcFailure(s) => s.clone(),
            other => RpcStatus::with_message(RpcStatusCode::UNAVAILABLE, other.to_string()),
        };
        let code = status.code();
        let retry = classify(code);
        let err = Error::Rpc(err);
        // While the collector refuses every call, its refusal (with the hint) stays the
        // last error: this call's is the same.
        if !(self.refused.is_some() && refuses_for_good(code)) {
            shared.counters.set_last_error(&err, None, None);
        }
        Counters::add(&shared.counters.epochs_failed, 1);
        let old_slot = if was_current {
            let slot = self.drop_current();
            shared.handler(|h| h.on_disconnected(&err));
            slot
        } else {
            None
        };
        // At-most-once: a stream that carried payloads was working; the next outage
        // starts from the initial backoff again.
        if old_slot.as_ref().is_some_and(|s| s.written > 0)
            && shared.config.delivery == DeliveryMode::AtMostOnce
        {
            self.backoff.reset();
        }
        // A broken connection, a timeout or an early OK say nothing about the payloads;
        // any other status might be about one of them.
        let says_nothing_about_payloads = early_ok
            || matches!(
                code,
                RpcStatusCode::UNAVAILABLE
                    | RpcStatusCode::CANCELLED
                    | RpcStatusCode::DEADLINE_EXCEEDED
            );
        if !says_nothing_about_payloads && shared.ledger.lock().try_epoch(id) > 0 {
            info!("epoch {id} rejected ({err}); probing whether the collector accepts calls");
            self.trials.insert(
                id,
                Trial {
                    status,
                    was_current,
                },
            );
            if !self.send_probe(id) {
                self.verdict(id, false, None);
            }
            return;
        }
        let n = shared.ledger.lock().fail(id) as u64;
        Counters::add(&shared.counters.retried, n);
        Counters::add(&shared.counters.resent_after_fault, n);
        if n > 0 {
            info!("epoch {id} failed ({err}); re-sending {n} payloads");
        }
        // A call that carried no payload refused for good is a probe's answer already
        // (a collector that refuses a call as it opens, before anything is written).
        if !says_nothing_about_payloads
            && shared.config.holds_when_refused()
            && refuses_for_good(code)
        {
            self.hold_refused(&status);
            return;
        }
        self.after_failure(was_current, code, retry, &err);
    }

    /// After a verdict that leaves the collector healthy: connect at once, or give the
    /// next suspect group an epoch of its own (unless the current epoch already is one:
    /// it rotates itself once its group is written).
    fn go_on(&mut self) {
        if self.current.is_none() {
            // (A refused collector's next try waits for the refused backoff.)
            if self.refused.is_none() {
                self.retry_at = None;
            }
        } else {
            self.rotate_for_suspects();
        }
    }

    /// Gives the next suspect group an epoch of its own now, by rotating the current
    /// epoch, unless that one is dedicated already (it rotates itself once its group is
    /// written).
    fn rotate_for_suspects(&mut self) {
        if self.current.as_ref().is_some_and(|c| !c.dedicated)
            && self.shared.ledger.lock().has_suspects(Instant::now())
        {
            self.rotate();
        }
    }

    /// Whether `status` says the collector cannot decompress gzip (grpc-go, grpc-java
    /// and the C core answer `UNIMPLEMENTED` and say so).
    fn refuses_gzip(&self, status: &RpcStatus) -> bool {
        self.shared.config.compression == Compression::Gzip
            && !self.gzip_refused
            && status.code() == RpcStatusCode::UNIMPLEMENTED
            && status.message().to_ascii_lowercase().contains("compress")
    }

    /// What follows a failed epoch whose payloads were not at fault: rebuild the
    /// channel if it is broken and retry after the backoff (it was current), or stop
    /// writing on the current epoch until the backoff has passed (a half-closed epoch
    /// failed: the collector is in trouble, and re-sending at once would spin).
    fn after_failure(&mut self, was_current: bool, code: RpcStatusCode, retry: Retry, err: &Error) {
        if was_current {
            let channel_bad = code == RpcStatusCode::UNAVAILABLE
                || self.client.as_ref().is_some_and(|c| {
                    !matches!(
                        c.channel().check_connectivity_state(false),
                        ConnectivityState::GRPC_CHANNEL_READY
                            | ConnectivityState::GRPC_CHANNEL_IDLE
                    )
                });
            if channel_bad {
                self.client = None;
            }
            self.schedule_retry(retry, err);
        } else if self.current.is_some() {
            self.retire_current();
            self.shared.counters.set_state(self.down_state());
            self.schedule_retry(retry, err);
        } else if self.shared.ledger.lock().outbox_len() > 0 {
            self.shared.wake_writer();
        }
    }

    /// The probe for epoch `epoch`'s trial answered: `accepted` when the collector
    /// took the empty call (the payloads are at fault), else `probe_err` says why not.
    fn verdict(&mut self, epoch: u64, accepted: bool, probe_err: Option<grpcio::Error>) {
        let Some(trial) = self.trials.remove(&epoch) else {
            return;
        };
        let shared = self.shared.clone();
        let code = trial.status.code();
        let retry = classify(code);
        if accepted {
            self.end_refusal("accepts calls again");
            let verdict =
                shared
                    .ledger
                    .lock()
                    .convict(epoch, retry == Retry::Never, Instant::now());
            let err = Error::Rpc(grpcio::Error::RpcFailure(trial.status.clone()));
            match verdict {
                Verdict::Split => {
                    info!("epoch {epoch}: the collector accepts calls; re-sending its payloads in halves");
                    self.go_on();
                }
                Verdict::Strike => {
                    info!("epoch {epoch}: a payload alone was rejected ({code:?}); it gets another try later");
                    // The ledger holds the struck payload back until its time (whatever
                    // opens epochs meanwhile); then an epoch of its own is opened for it.
                    if self.current.is_none() {
                        self.schedule_retry(retry, &err);
                    }
                    self.suspects_due = shared.ledger.lock().next_suspect_due(Instant::now());
                    crate::hooks::pause(crate::hooks::Point::AfterStrike);
                }
                Verdict::Unproven => {
                    info!("epoch {epoch}: rejected ({code:?}) while no data was accepted since; backing off");
                    self.after_failure(trial.was_current, code, retry, &err);
                }
                Verdict::Reject(items) => {
                    warn!(
                        "a payload the collector rejects ({code:?}: {}) is dead-lettered",
                        trial.status.message()
                    );
                    shared.dead_letter(items, &trial.status);
                    self.go_on();
                }
            }
            return;
        }
        let probe_code = match &probe_err {
            Some(grpcio::Error::RpcFailure(s)) => s.code(),
            Some(_) => RpcStatusCode::UNAVAILABLE,
            None => RpcStatusCode::ABORTED,
        };
        // Refused for good (credentials, an ACL, the wrong service): held, if asked.
        let refusal = match &probe_err {
            Some(grpcio::Error::RpcFailure(s))
                if shared.config.holds_when_refused()
                    && refuses_for_good(s.code())
                    && !self.refuses_gzip(s) =>
            {
                Some(s.clone())
            }
            _ => None,
        };
        let for_good =
            refusal.is_none() && retry == Retry::Never && classify(probe_code) == Retry::Never;
        let err = Error::Rpc(grpcio::Error::RpcFailure(trial.status.clone()));
        let acquitted = shared.ledger.lock().acquit(epoch, for_good);
        match acquitted {
            Ok(n) => {
                Counters::add(&shared.counters.retried, n as u64);
                Counters::add(&shared.counters.resent_after_fault, n as u64);
                if refusal.is_some() {
                    debug!("epoch {epoch}: the collector refuses every call ({err}); {n} payloads held");
                } else {
                    info!("epoch {epoch}: the collector rejects every call ({err}); re-sending {n} payloads after the backoff");
                }
            }
            Err(items) => {
                warn!(
                    "epoch {epoch} rejected for good ({err}): {} payloads dead-lettered",
                    items.len()
                );
                shared.dead_letter(items, &trial.status);
            }
        }
        if let Some(status) = refusal {
            self.hold_refused(&status);
            return;
        }
        if probe_code == RpcStatusCode::UNAVAILABLE {
            self.client = None;
        }
        self.after_failure(trial.was_current, code, retry, &err);
    }

    /// The collector refused an empty call with `status`, for good, and the payloads
    /// are held: stop writing, say why (state `Refused`, `last_error` with a hint, a
    /// `warn` line per episode, the event per try) and try again after the refused
    /// backoff. Every epoch of a try ends here: only the first schedules the next try.
    fn hold_refused(&mut self, status: &RpcStatus) {
        let now = Instant::now();
        // Whatever is open now would be refused too.
        if self.current.is_some() {
            self.retire_current();
        }
        let code = status.code();
        let addr = &self.shared.config.addr;
        let hint = refusal_hint(code, addr);
        let message = format!(
            "the collector refuses every call, an empty one too: {code:?}: {}",
            status.message()
        );
        self.shared
            .counters
            .set_last_error(&message, None, hint.clone());
        self.shared.counters.set_state(ConnectionState::Refused);
        if let Some(next) = self.refused.as_ref().filter(|r| !r.retried).map(|r| r.next) {
            // Another epoch of this try scheduled the next one already.
            self.retry_at = Some(self.retry_at.map_or(next, |t| t.max(next)));
            return;
        }
        if self.refused.is_none() {
            self.refused_backoff.reset();
        }
        let max = self.shared.config.refused_backoff_max;
        let delay = self.refused_backoff.next_backoff().unwrap_or(max).min(max);
        let next = after(now, delay);
        self.retry_at = Some(next);
        let refusal = self.refused.get_or_insert(Refusal {
            since: now,
            attempts: 0,
            next,
            retried: false,
        });
        refusal.attempts = refusal.attempts.saturating_add(1);
        refusal.next = next;
        refusal.retried = false;
        let attempt = refusal.attempts;
        let held = self.shared.ledger.lock().held().0;
        let hinted = Hinted {
            message: &message,
            hint: hint.as_deref(),
        };
        if attempt == 1 {
            warn!(
                "collector {addr}: {hinted}; holding the payloads ({held} in memory) and \
                 trying again in {delay:?}, then up to every {max:?}"
            );
        } else {
            info!(
                "collector {addr} still refuses every call ({code:?}, try {attempt}); \
                 {held} payloads in memory held; next try in {delay:?}"
            );
        }
        let event = RefusedEvent {
            code,
            message: status.message().to_string(),
            hint,
            retry_in: delay,
            attempt,
        };
        self.shared.handler(|h| h.on_refused(&event));
    }

    /// The collector no longer refuses every call (`why`): back to `Connected` (with
    /// the event) if a stream is up, else `Connecting`.
    fn end_refusal(&mut self, why: &str) {
        let Some(refusal) = self.refused.take() else {
            return;
        };
        info!(
            "collector {} {why} after refusing every call for {:?} ({} tries)",
            self.shared.config.addr,
            refusal.since.elapsed(),
            refusal.attempts
        );
        self.shared.counters.recovered();
        if self.current.is_some() {
            self.shared.counters.set_state(ConnectionState::Connected);
            self.shared.handler(|h| h.on_connected());
        } else {
            self.shared.counters.set_state(ConnectionState::Connecting);
        }
    }

    /// The state while no stream is up: `Refused` during a refusal, else `Connecting`.
    fn down_state(&self) -> ConnectionState {
        if self.refused.is_some() {
            ConnectionState::Refused
        } else {
            ConnectionState::Connecting
        }
    }

    /// Schedules the next connection attempt after the backoff; returns the delay.
    fn schedule_retry(&mut self, retry: Retry, why: &dyn std::fmt::Display) -> Duration {
        let max = self.shared.config.backoff_max;
        let mut delay = self.backoff.next_backoff().unwrap_or(max);
        if retry == Retry::Slowly {
            delay = delay.saturating_mul(4).min(max.max(delay));
        }
        warn!(
            "collector {}: {why}; next attempt in {delay:?}",
            self.shared.config.addr
        );
        self.retry_at = Some(after(Instant::now(), delay));
        delay
    }

    fn check_timers(&mut self, now: Instant) {
        self.check_write_watchdog(now);
        // Half-closed calls and probes whose status is overdue.
        for (id, closing) in &self.closing {
            if now >= self.bounded_by_close(closing.deadline) {
                warn!("call {id}: no final status in time; cancelling it");
                closing.recv.lock().cancel();
            }
        }
        // A struck payload's next try is due.
        if self.suspects_due.is_some_and(|t| now >= t) {
            self.go_on();
            self.suspects_due = self.shared.ledger.lock().next_suspect_due(now);
        }
        // Commit at least every `commit_interval`.
        if self.shared.config.delivery == DeliveryMode::AtLeastOnce {
            let due = self.current.as_ref().is_some_and(|c| {
                now >= after(c.opened, self.shared.config.commit_interval)
                    && self.shared.ledger.lock().epoch_len(c.id) > 0
            });
            if due {
                self.rotate();
            }
        }
        // Past the close deadline, nothing is waited for any more.
        if self.past_close_deadline(now) {
            if let Some(call) = &self.current {
                call.recv.lock().cancel();
            }
            for closing in self.closing.values() {
                closing.recv.lock().cancel();
            }
        }
    }

    /// How long to sleep: until the next timer, at most `TICK`. Timers already past
    /// (an overdue status being cancelled, an idle epoch's commit time) are left to the
    /// tick, so an idle supervisor never spins.
    fn next_wakeup(&self, now: Instant) -> Duration {
        let mut timers = Vec::new();
        if self.current.is_none() && !self.shutting_down {
            timers.extend(self.retry_at);
        }
        timers.extend(
            self.closing
                .values()
                .map(|c| self.bounded_by_close(c.deadline)),
        );
        timers.extend(self.shared.close_deadline());
        timers.extend(self.suspects_due);
        if let Some(started) = self.shared.stream.progress.last() {
            timers.push(self.bounded_by_close(after(started, self.shared.config.write_timeout)));
        }
        if let Some(c) = &self.current {
            if self.shared.config.delivery == DeliveryMode::AtLeastOnce {
                timers.push(after(c.opened, self.shared.config.commit_interval));
            }
        }
        timers
            .into_iter()
            .filter(|t| *t > now)
            .map(|t| t - now)
            .fold(TICK, Duration::min)
    }

    /// Replaces the slot. Never blocks for long: while a writer holds the lock, the
    /// watchdog keeps running, so a stalled write is cancelled rather than waited for.
    fn swap_slot(&mut self, new: Option<Slot>) -> Option<Slot> {
        let mut new = Some(new);
        loop {
            if let Some(mut slot) = self
                .shared
                .stream
                .slot
                .try_lock_for(Duration::from_millis(20))
            {
                return std::mem::replace(&mut *slot, new.take().flatten());
            }
            self.check_write_watchdog(Instant::now());
        }
    }

    /// A write that made no progress for `write_timeout` (a stalled collector) is
    /// released by cancelling the call it is on: always the current one, since the old
    /// call stays current until its slot has been swapped out.
    fn check_write_watchdog(&self, now: Instant) {
        if let (Some(progress), Some(call)) = (self.shared.stream.progress.last(), &self.current) {
            let limit = self.bounded_by_close(after(progress, self.shared.config.write_timeout));
            if now >= limit {
                warn!(
                    "a write on epoch {} made no progress for {:?}; cancelling the call",
                    call.id,
                    now.saturating_duration_since(progress)
                );
                call.recv.lock().cancel();
            }
        }
    }

    fn bounded_by_close(&self, t: Instant) -> Instant {
        match self.shared.close_deadline() {
            Some(d) => t.min(d),
            None => t,
        }
    }

    fn past_close_deadline(&self, now: Instant) -> bool {
        self.shared.close_deadline().is_some_and(|d| now >= d)
    }

    /// Cancels whatever is still open and drops the channel.
    fn teardown(&mut self) {
        if let Some(call) = self.current.take() {
            call.recv.lock().cancel();
        }
        self.swap_slot(None);
        for (_, closing) in self.closing.drain() {
            closing.recv.lock().cancel();
        }
        self.client = None;
        self.shared.counters.set_state(ConnectionState::Closed);
    }
}

/// Whether a probe refused with `code` means the collector refuses this client for
/// good (credentials, an ACL, the wrong service), which `hold_when_refused` holds
/// payloads through.
fn refuses_for_good(code: RpcStatusCode) -> bool {
    matches!(
        code,
        RpcStatusCode::UNAUTHENTICATED
            | RpcStatusCode::PERMISSION_DENIED
            | RpcStatusCode::UNIMPLEMENTED
    )
}

/// Half-closes a call on the completion-queue thread. `half_closed` is set first, on
/// this (the supervisor's) thread, right before the half-close is handed to the gRPC
/// core (grpcio polls a spawned future once on the spawning thread, and the close is
/// issued in that poll). The call's watcher reads the flag on the completion-queue
/// thread when it sees the final status: a status it sees before the flag was set was
/// sent before the collector could know the stream had ended (an early OK proves
/// nothing). The window left is a status that reached the completion queue before the
/// flag was set but was processed after (the time it waits in the queue, normally
/// microseconds), and one the collector sent before it read the half-close: neither can
/// be told from a proper OK, and the collector's contract (read to the end before
/// answering) is what covers them.
fn spawn_half_close(
    client: &Client,
    mut sink: ClientDuplexSender<GrpcSlice>,
    id: u64,
    half_closed: Arc<AtomicBool>,
) {
    half_closed.store(true, Ordering::Release);
    client.spawn(async move {
        // An error means the call already ended; its status tells why.
        match AssertUnwindSafe(sink.close()).catch_unwind().await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => debug!("call {id}: half-close failed: {e}"),
            Err(_) => {
                error!("call {id}: grpcio panicked while half-closing; the call is cancelled")
            }
        }
    });
}

/// Why a channel in `TRANSIENT_FAILURE` cannot connect, in the gRPC core's words: a
/// call that fails fast on it carries the last connection error (refused, TLS
/// handshake, name resolution).
fn failure_reason(channel: &Channel) -> String {
    let client = Client::new(channel.clone());
    let option = CallOption::default().timeout(Duration::from_millis(500));
    let outcome = client
        .duplex_streaming(&SUBMIT_STREAM, option)
        .map(|(sink, mut recv)| {
            // Keep the write half alive until the status is in: dropping it cancels.
            let status = block_on(recv.next());
            drop(sink);
            status
        });
    let status = match outcome {
        Ok(Some(Err(grpcio::Error::RpcFailure(s)))) => Some(s),
        Err(grpcio::Error::RpcFailure(s)) => Some(s),
        _ => None,
    };
    match status {
        Some(s) if !s.message().is_empty() => s.message().to_string(),
        Some(s) => format!("{:?}", s.code()),
        None => "the connection failed".into(),
    }
}
