//! The supervisor thread: the only code that dials, opens, swaps, half-closes, cancels
//! and tears down channels and calls.
//!
//! It owns the `grpcio::Environment` (one per sender, reused across rebuilds), the
//! channel, and the *response* half of every open call, which is where a call is
//! cancelled from (that is what releases a write blocked by a stalled collector).
//! Each call's final status arrives as an [`Event::CallEnded`] from a small future on
//! grpcio's completion-queue thread; the supervisor commits, re-queues or dead-letters
//! that epoch's payloads accordingly.

use std::collections::HashMap;
use std::future::poll_fn;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant};

use backoff::backoff::Backoff;
use backoff::{ExponentialBackoff, ExponentialBackoffBuilder};
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use futures_executor::block_on;
use futures_util::{FutureExt, SinkExt, StreamExt};
use grpcio::{
    CallOption, Channel, ChannelBuilder, ChannelCredentialsBuilder, Client, ClientDuplexReceiver,
    CompressionAlgorithms, ConnectivityState, Environment, RpcStatus, RpcStatusCode,
};
use log::{debug, error, info, warn};
use parking_lot::Mutex;

use crate::config::{Compression, DeliveryMode, Transport};
use crate::error::{classify, Error, Retry};
use crate::sender::Shared;
use crate::stats::{ConnectionState, Counters};
use crate::stream::{Slot, SUBMIT_STREAM};

/// What the supervisor is told.
pub(crate) enum Event {
    /// A call's response side ended: `Ok` is status `OK`, `Err` carries the status.
    CallEnded {
        epoch: u64,
        result: grpcio::Result<()>,
    },
    /// The epoch reached `commit_every` payloads.
    Rotate { epoch: u64 },
    /// A write on this epoch failed; the call is unusable.
    WriteFailed { epoch: u64 },
    /// Commit the current epoch now if it carries anything (`flush`, `close`).
    Commit,
    /// Finish: half-close the current call, wait for open epochs until the close
    /// deadline, cancel what is left.
    Shutdown,
}

type Receiving = Arc<Mutex<ClientDuplexReceiver<Vec<u8>>>>;

/// An open call, seen from the supervisor.
struct Call {
    id: u64,
    recv: Receiving,
    opened: Instant,
}

/// A half-closed call waiting for its final status.
struct Closing {
    recv: Receiving,
    deadline: Instant,
}

pub(crate) struct Supervisor {
    shared: Arc<Shared>,
    events: Receiver<Event>,
    events_tx: Sender<Event>,
    env: Arc<Environment>,
    client: Option<Client>,
    current: Option<Call>,
    closing: HashMap<u64, Closing>,
    next_epoch: u64,
    backoff: ExponentialBackoff,
    retry_at: Option<Instant>,
    connected_once: bool,
    shutting_down: bool,
}

/// The supervisor's longest sleep; bounds how late the write watchdog can notice a
/// stalled write.
const TICK: Duration = Duration::from_millis(100);

impl Supervisor {
    pub(crate) fn new(
        shared: Arc<Shared>,
        events: Receiver<Event>,
        events_tx: Sender<Event>,
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
        Supervisor {
            shared,
            events,
            events_tx,
            env,
            client: None,
            current: None,
            closing: HashMap::new(),
            next_epoch: 1,
            backoff,
            retry_at: None,
            connected_once: false,
            shutting_down: false,
        }
    }

    pub(crate) fn run(mut self) {
        loop {
            let now = Instant::now();
            if !self.shutting_down
                && self.current.is_none()
                && self.retry_at.map_or(true, |t| now >= t)
            {
                self.connect();
            }
            self.check_timers(Instant::now());
            if self.shutting_down && self.current.is_none() && self.closing.is_empty() {
                break;
            }
            // Cancelled calls report back at once; should one not, do not wait for it
            // past the close deadline (its payloads are still in the ledger).
            if self.shutting_down
                && self
                    .shared
                    .close_deadline()
                    .is_some_and(|d| Instant::now() >= d + Duration::from_millis(500))
            {
                warn!(
                    "{} calls did not report after cancel; leaving them",
                    self.closing.len()
                );
                break;
            }
            let wait = self.next_wakeup(Instant::now());
            match self.events.recv_timeout(wait) {
                Ok(event) => self.handle(event),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => self.shutting_down = true,
            }
        }
        self.teardown();
    }

    fn handle(&mut self, event: Event) {
        match event {
            Event::CallEnded { epoch, result } => self.call_ended(epoch, result),
            Event::Rotate { epoch } => {
                if self.current.as_ref().is_some_and(|c| c.id == epoch) {
                    self.rotate();
                }
            }
            Event::WriteFailed { epoch } => {
                // Make sure the call ends, so its status arrives and the epoch settles.
                if let Some(c) = self.current.as_ref().filter(|c| c.id == epoch) {
                    c.recv.lock().cancel();
                }
            }
            Event::Commit => {
                let carries = self
                    .current
                    .as_ref()
                    .is_some_and(|c| self.shared.ledger.lock().epoch_len(c.id) > 0);
                if carries {
                    self.rotate();
                }
            }
            Event::Shutdown => {
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
                    self.shared.counters.set_last_error(&reason);
                    self.schedule_retry(Retry::Backoff, &reason);
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
                self.shared.counters.set_state(ConnectionState::Connected);
                if self.connected_once {
                    Counters::add(&self.shared.counters.reconnects, 1);
                }
                self.connected_once = true;
                self.shared.handler(|h| h.on_connected());
                self.shared.wake_writer();
            }
            Err(e) => {
                self.client = None;
                let reason = format!("cannot open SubmitStream: {e}");
                self.shared.counters.set_last_error(&reason);
                self.schedule_retry(Retry::Backoff, &reason);
            }
        }
    }

    /// Builds a channel and waits until it is ready, failing fast on a refused dial.
    fn dial(&mut self) -> Result<Channel, String> {
        let c = &self.shared.config;
        let max = c.max_message_size as i32;
        let mut builder = ChannelBuilder::new(self.env.clone())
            .keepalive_time(c.keepalive_time)
            .keepalive_timeout(c.keepalive_timeout)
            .keepalive_permit_without_calls(true)
            .max_send_message_len(max)
            .max_receive_message_len(max)
            // Our own connection, so rebuilding the channel really redials.
            .use_local_subchannel_pool(true)
            .initial_reconnect_backoff(c.backoff_initial)
            .max_reconnect_backoff(c.backoff_max);
        if c.compression == Compression::Gzip {
            builder =
                builder.default_compression_algorithm(CompressionAlgorithms::GRPC_COMPRESS_GZIP);
        }
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
        let deadline = Instant::now() + c.connect_timeout;
        let mut state = channel.check_connectivity_state(true);
        loop {
            match state {
                ConnectivityState::GRPC_CHANNEL_READY => return Ok(channel),
                ConnectivityState::GRPC_CHANNEL_TRANSIENT_FAILURE => {
                    return Err(format!("cannot connect to {}", c.addr))
                }
                ConnectivityState::GRPC_CHANNEL_SHUTDOWN => {
                    return Err(format!("channel to {} shut down", c.addr))
                }
                _ => {}
            }
            let now = Instant::now();
            if now >= deadline || self.past_close_deadline(now) {
                return Err(format!(
                    "cannot connect to {} within {:?}",
                    c.addr, c.connect_timeout
                ));
            }
            let slice = (deadline - now).min(TICK);
            block_on(channel.wait_for_state_change(state, slice));
            state = channel.check_connectivity_state(true);
        }
    }

    /// Opens the next epoch's call and starts watching its response side.
    fn open_call(&mut self) -> grpcio::Result<(Slot, Call)> {
        let Some(client) = &self.client else {
            return Err(grpcio::Error::RemoteStopped);
        };
        let (sink, recv) = client.duplex_streaming(&SUBMIT_STREAM, CallOption::default())?;
        let id = self.next_epoch;
        self.next_epoch += 1;
        if self.shared.config.delivery == DeliveryMode::AtLeastOnce {
            self.shared.ledger.lock().open_epoch(id);
        }
        let recv: Receiving = Arc::new(Mutex::new(recv));
        let watched = recv.clone();
        let events = self.events_tx.clone();
        client.spawn(async move {
            let result = loop {
                match poll_fn(|cx| watched.lock().poll_next_unpin(cx)).await {
                    Some(Ok(response)) => {
                        debug!(
                            "epoch {id}: collector answered with {} bytes",
                            response.len()
                        )
                    }
                    Some(Err(e)) => break Err(e),
                    None => break Ok(()),
                }
            };
            let _ = events.send(Event::CallEnded { epoch: id, result });
        });
        Ok((
            Slot::new(sink, id),
            Call {
                id,
                recv,
                opened: Instant::now(),
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
                self.shared.counters.set_state(ConnectionState::Connecting);
                self.schedule_retry(Retry::Backoff, &e);
            }
        }
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
        let deadline = self.bounded_by_close(Instant::now() + self.shared.config.commit_timeout);
        match (slot, &self.client) {
            (Some(slot), Some(client)) if !slot.is_broken() => {
                let mut sink = slot.sink;
                let id = call.id;
                client.spawn(async move {
                    // An error means the call already ended; its status tells why.
                    let closed = AssertUnwindSafe(sink.close()).catch_unwind().await;
                    if closed.is_err() {
                        error!(
                            "epoch {id}: grpcio panicked while half-closing; the call is cancelled"
                        );
                    }
                });
            }
            _ => call.recv.lock().cancel(),
        }
        self.closing.insert(
            call.id,
            Closing {
                recv: call.recv,
                deadline,
            },
        );
    }

    fn call_ended(&mut self, epoch: u64, result: grpcio::Result<()>) {
        let half_closed = self.closing.remove(&epoch).is_some();
        let was_current = self.current.as_ref().is_some_and(|c| c.id == epoch);
        let shared = self.shared.clone();
        let outcome = match (result, half_closed) {
            (Ok(()), true) => {
                // Count before anyone waiting on the ledger can see the payloads go.
                let n = {
                    let mut ledger = shared.ledger.lock();
                    let n = ledger.commit(epoch);
                    Counters::add(&shared.counters.acknowledged, n as u64);
                    Counters::add(&shared.counters.epochs_committed, 1);
                    n
                };
                shared.ledger_cv.notify_all();
                debug!("epoch {epoch} committed: {n} payloads");
                self.backoff.reset();
                None
            }
            (Ok(()), false) => Some(grpcio::Error::RpcFailure(RpcStatus::with_message(
                RpcStatusCode::ABORTED,
                "the collector ended the stream before it was half-closed".into(),
            ))),
            (Err(e), _) => Some(e),
        };
        let Some(err) = outcome else {
            return;
        };
        // Transport errors without a status count as UNAVAILABLE.
        let status = match &err {
            grpcio::Error::RpcFailure(s) => s.clone(),
            other => RpcStatus::with_message(RpcStatusCode::UNAVAILABLE, other.to_string()),
        };
        let code = status.code();
        let retry = classify(code);
        let err = Error::Rpc(err);
        shared.counters.set_last_error(&err);
        Counters::add(&shared.counters.epochs_failed, 1);
        if retry == Retry::Never {
            let items = {
                let mut ledger = shared.ledger.lock();
                let items = ledger.reject(epoch);
                Counters::add(&shared.counters.dead_lettered, items.len() as u64);
                items
            };
            shared.ledger_cv.notify_all();
            warn!(
                "epoch {epoch} rejected for good ({err}): {} payloads dead-lettered",
                items.len()
            );
            shared.dead_letter(items, &status);
        } else {
            let n = shared.ledger.lock().fail(epoch) as u64;
            Counters::add(&shared.counters.retried, n);
            Counters::add(&shared.counters.resent_after_fault, n);
            if n > 0 {
                info!("epoch {epoch} failed ({err}); re-sending {n} payloads");
            }
        }
        if was_current {
            self.swap_slot(None);
            self.current = None;
            shared.counters.set_state(ConnectionState::Connecting);
            shared.handler(|h| h.on_disconnected(&err));
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
            self.schedule_retry(retry, &err);
        } else if retry != Retry::Never && self.current.is_some() {
            // A half-closed epoch failed: the collector is in trouble (overloaded,
            // stalled, going away). Re-sending at once on the next epoch would spin; stop
            // writing (the current epoch is half-closed and keeps its chance to commit)
            // and open the next one after the backoff.
            self.retire_current();
            shared.counters.set_state(ConnectionState::Connecting);
            self.schedule_retry(retry, &err);
        } else if shared.ledger.lock().outbox_len() > 0 {
            shared.wake_writer();
        }
    }

    fn schedule_retry(&mut self, retry: Retry, why: &dyn std::fmt::Display) {
        let mut delay = self
            .backoff
            .next_backoff()
            .unwrap_or(self.shared.config.backoff_max);
        if retry == Retry::Slowly {
            delay = (delay * 4).min(self.shared.config.backoff_max.max(delay));
        }
        warn!(
            "collector {}: {why}; next attempt in {delay:?}",
            self.shared.config.addr
        );
        self.retry_at = Some(Instant::now() + delay);
    }

    fn check_timers(&mut self, now: Instant) {
        self.check_write_watchdog(now);
        // Half-closed calls whose status is overdue.
        for (id, closing) in &self.closing {
            if now >= self.bounded_by_close(closing.deadline) {
                warn!("epoch {id}: no final status in time; cancelling it");
                closing.recv.lock().cancel();
            }
        }
        // Commit at least every `commit_interval`.
        if self.shared.config.delivery == DeliveryMode::AtLeastOnce {
            let due = self.current.as_ref().is_some_and(|c| {
                now >= c.opened + self.shared.config.commit_interval
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
        if let Some(c) = &self.current {
            if self.shared.config.delivery == DeliveryMode::AtLeastOnce {
                timers.push(c.opened + self.shared.config.commit_interval);
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

    /// A write blocked too long (a stalled collector) is released by cancelling the call
    /// it is on: always the current one, since the old call stays current until its slot
    /// has been swapped out.
    fn check_write_watchdog(&self, now: Instant) {
        if let (Some(started), Some(call)) = (self.shared.stream.write_started(), &self.current) {
            let limit = self.bounded_by_close(started + self.shared.config.write_timeout);
            if now >= limit {
                warn!("a write on epoch {} is stuck; cancelling the call", call.id);
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
