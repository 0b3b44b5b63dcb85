//! OTLP's wire: `opentelemetry.proto.collector.logs.v1.LogsService/Export`, one unary
//! call per batch, each its own acknowledgement.
//!
//! A call is a one-batch epoch of the ledger: the writer side ([`pump`]) opens an epoch
//! with the call's id, takes up to 64 payloads (and at most `otlp_max_request_bytes`)
//! into it, and issues the call without waiting for it, so a worker never waits a round
//! trip; at most `max_exports_in_flight` calls are in flight. A watcher on the
//! completion-queue thread reports the call's end; the supervisor side ([`Unary`], a
//! [`Protocol`]) settles it like any epoch: `OK` commits it (minus the records a
//! partial success rejected, which are counted dead-lettered and never re-sent), a
//! retryable status re-sends it after the backoff (or the collector's `RetryInfo`), a
//! status that may be about the payloads puts it on trial (probe: an empty `Export`).

use std::collections::HashMap;
use std::ops::Range;
use std::sync::Arc;
use std::time::{Duration, Instant};

use grpcio::{CallOption, Client, GrpcSlice, RpcStatus, RpcStatusCode};
use log::{debug, warn};

use crate::clock::after;
use crate::command::{Command, Report};
use crate::error::{Error, Retry};
use crate::export::{partial_success, retry_delay, Answer, EXPORT};
use crate::ledger::{Batch, Item};
use crate::link::{channel_failed, Ended, Judged, Protocol, PROBE_TIMEOUT};
use crate::otlp;
use crate::shared::Shared;
use crate::stats::Counters;

/// Most payloads one call carries.
const MAX_CALL_PAYLOADS: usize = 64;

// ---------------------------------------------------------------------------------
// The writer side.

/// Issues calls for what the outbox holds (and for a due suspect group), as long as
/// calls may go out and permits are left. Never waits for a call; a call's end wakes
/// the writer again.
pub(crate) fn pump(shared: &Shared) {
    let exports = &shared.exports;
    let cap = shared.config.otlp_max_request_bytes;
    loop {
        if !exports.try_acquire() {
            return;
        }
        let Some(client) = exports.client() else {
            exports.release();
            return;
        };
        let id = shared.next_call_id();
        let now = Instant::now();
        let batch = {
            let mut ledger = shared.ledger.lock();
            if ledger.normal_len() == 0 && !ledger.has_suspects(now) {
                drop(ledger);
                exports.release();
                return;
            }
            // A due suspect group gets the call to itself.
            ledger.open_epoch(id, now);
            match ledger.take_batch(Some(id), MAX_CALL_PAYLOADS, cap) {
                Batch::Items(batch) => batch,
                Batch::Empty | Batch::GroupWritten => {
                    ledger.fail(id);
                    drop(ledger);
                    exports.release();
                    return;
                }
            }
        };
        let n = batch.len();
        let bytes: usize = batch.iter().map(Item::len).sum();
        let requests = requests(&batch, cap);
        if !shared.ledger.lock().written(id, batch) {
            // Drained by a shutdown meanwhile: nothing to send.
            exports.release();
            return;
        }
        Counters::add(&shared.counters.sent, n as u64);
        Counters::add(&shared.counters.bytes_sent, bytes as u64);
        debug!("call {id}: exporting {n} payloads ({bytes} bytes)");
        start(shared, &client, id, requests, shared.config.commit_timeout);
    }
}

/// Holds `item` (held already) for the next call and issues calls now, for
/// `send_logs`: on this wire it never waits for the collector.
pub(crate) fn write_now(shared: &Shared, item: Item) -> Result<(), Error> {
    if shared.exports.client().is_none() {
        shared.ledger.lock().forget(&item);
        return Err(Error::Unavailable);
    }
    shared.ledger.lock().requeue_new(item);
    pump(shared);
    Ok(())
}

/// The requests that carry `batch`: its items concatenated (each is one or more
/// `ResourceLogs` records, so concatenation is a request), cut only between records and
/// only where the next would pass `cap` (an item over `cap` was split at intake into
/// records under it: it goes as several calls).
fn requests(batch: &[Item], cap: usize) -> Vec<GrpcSlice> {
    let total: usize = batch.iter().map(Item::len).sum();
    if total <= cap {
        if let [item] = batch {
            return vec![item.bytes.clone()];
        }
        let mut request = Vec::with_capacity(total);
        for item in batch {
            request.extend_from_slice(item.bytes.as_slice());
        }
        return vec![GrpcSlice::from(request)];
    }
    let mut out = Vec::new();
    let mut request = Vec::new();
    for item in batch {
        let bytes = item.bytes.as_slice();
        for r in records(bytes) {
            if !request.is_empty() && request.len() + r.len() > cap {
                out.push(GrpcSlice::from(std::mem::take(&mut request)));
            }
            request.extend_from_slice(&bytes[r]);
        }
    }
    if !request.is_empty() {
        out.push(GrpcSlice::from(request));
    }
    out
}

/// The top-level `ResourceLogs` records of held request bytes. Held bytes were encoded
/// by logsender; should some not parse, what is left goes as one record.
fn records(bytes: &[u8]) -> Vec<Range<usize>> {
    let mut out: Vec<Range<usize>> = otlp::parts(bytes).collect();
    let parsed = out.last().map_or(0, |r| r.end);
    if parsed < bytes.len() {
        out.push(parsed..bytes.len());
    }
    out
}

/// Issues call `id`: its requests one after the other from a watcher on the
/// completion-queue thread, each with what is left of `timeout`, stopping at the first
/// failure; then reports its end with every response.
fn start(shared: &Shared, client: &Client, id: u64, requests: Vec<GrpcSlice>, timeout: Duration) {
    let answer = Arc::new(Answer::default());
    shared.exports.insert(id, answer.clone());
    let deadline = shared.bounded_by_close(after(Instant::now(), timeout));
    let reports = shared.reports.clone();
    let calls = client.clone();
    client.spawn(async move {
        let result = export(&calls, &answer, requests, deadline).await;
        let _ = reports.send(Report::CallEnded {
            id,
            result,
            after_half_close: true,
        });
    });
}

/// Sends `requests` in turn, each read to its end; every response, or the first failure.
async fn export(
    client: &Client,
    answer: &Answer,
    requests: Vec<GrpcSlice>,
    deadline: Instant,
) -> grpcio::Result<Vec<Vec<u8>>> {
    let mut responses = Vec::new();
    for request in requests {
        if answer.is_cancelled() {
            return Err(grpcio::Error::RpcFailure(RpcStatus::with_message(
                RpcStatusCode::CANCELLED,
                "cancelled by logsender".into(),
            )));
        }
        let left = deadline.saturating_duration_since(Instant::now());
        let option = CallOption::default().timeout(left.max(Duration::from_millis(1)));
        answer.watch(client.server_streaming(&EXPORT, &request, option)?);
        responses.extend(answer.responses().await?);
    }
    Ok(responses)
}

// ---------------------------------------------------------------------------------
// The supervisor side.

/// The OTLP wire as the supervisor drives it: whether calls may go out, and the probes.
pub(crate) struct Unary {
    shared: Arc<Shared>,
    up: bool,
    probes: HashMap<u64, Arc<Answer>>,
}

impl Unary {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        Unary {
            shared,
            up: false,
            probes: HashMap::new(),
        }
    }

    /// How OTLP reads `status` (the specification's retryable set): whether it says
    /// nothing about the payloads, how it is retried, and the collector's wait.
    fn read(&self, status: &RpcStatus) -> (bool, Retry, Option<Duration>) {
        let (retry, wait) = self.classify(status);
        let says_nothing = match status.code() {
            RpcStatusCode::UNAVAILABLE
            | RpcStatusCode::CANCELLED
            | RpcStatusCode::DEADLINE_EXCEEDED => true,
            // Throttling, when the collector says how long to wait.
            RpcStatusCode::RESOURCE_EXHAUSTED => wait.is_some(),
            _ => false,
        };
        (!says_nothing, retry, wait)
    }
}

impl Protocol for Unary {
    fn start(&mut self, client: &Client) -> grpcio::Result<()> {
        self.shared.exports.publish(Some(client.clone()));
        self.up = true;
        Ok(())
    }

    fn is_up(&self) -> bool {
        self.up
    }

    fn stop(&mut self) {
        self.shared.exports.publish(None);
        self.up = false;
    }

    fn try_empty(&mut self, client: Option<&Client>) -> grpcio::Result<()> {
        // An empty request, outside the ledger: its `OK` commits nothing and ends the
        // refusal; its refusal is the refusal's next try. If calls are in flight, their
        // ends say it already.
        if let Some(client) = client {
            if self.shared.exports.try_acquire() {
                let id = self.shared.next_call_id();
                start(
                    &self.shared,
                    client,
                    id,
                    vec![GrpcSlice::default()],
                    PROBE_TIMEOUT,
                );
            }
        }
        Ok(())
    }

    fn command(&mut self, _: Option<&Client>, command: &Command) -> grpcio::Result<()> {
        // Each call is its own commit; nothing to rotate.
        if let Command::Shutdown = command {
            self.stop();
        }
        Ok(())
    }

    fn probe_ended(
        &mut self,
        id: u64,
        result: &grpcio::Result<Vec<Vec<u8>>>,
        _after_half_close: bool,
    ) -> bool {
        self.probes.remove(&id);
        match result {
            Ok(_) => true,
            // A collector that will not take an empty request still took the call.
            Err(grpcio::Error::RpcFailure(s)) => s.code() == RpcStatusCode::INVALID_ARGUMENT,
            Err(_) => false,
        }
    }

    fn judge(
        &mut self,
        id: u64,
        result: grpcio::Result<Vec<Vec<u8>>>,
        _after_half_close: bool,
    ) -> Judged {
        if self.shared.exports.finish(id) {
            // A permit is free: the writer may issue the next call.
            self.shared.wake_writer();
        }
        let status = match result {
            Ok(responses) => {
                let mut rejected = 0u64;
                let mut message = String::new();
                for response in &responses {
                    match partial_success(response) {
                        Ok((r, m)) => {
                            rejected = rejected.saturating_add(r);
                            if !m.is_empty() {
                                if !message.is_empty() {
                                    message.push_str("; ");
                                }
                                message.push_str(&m);
                            }
                        }
                        Err(e) => warn!("call {id}: the collector's response does not parse ({e}); read as a full success"),
                    }
                }
                return Judged {
                    ended: Ended::Delivered { rejected, message },
                    took_down: false,
                    worked: false,
                };
            }
            Err(grpcio::Error::RpcFailure(s)) => s,
            // Transport errors without a status count as UNAVAILABLE.
            Err(other) => RpcStatus::with_message(RpcStatusCode::UNAVAILABLE, other.to_string()),
        };
        let (about_payloads, retry, wait) = self.read(&status);
        // No call goes out until the supervisor has decided (a trial, a backoff).
        let took_down = self.up;
        if took_down {
            self.stop();
        }
        Judged {
            ended: Ended::Failed {
                status,
                about_payloads,
                retry,
                wait,
            },
            took_down,
            worked: false,
        }
    }

    fn classify(&self, status: &RpcStatus) -> (Retry, Option<Duration>) {
        let wait = || retry_delay(status);
        match status.code() {
            RpcStatusCode::CANCELLED
            | RpcStatusCode::DEADLINE_EXCEEDED
            | RpcStatusCode::ABORTED
            | RpcStatusCode::OUT_OF_RANGE
            | RpcStatusCode::UNAVAILABLE
            | RpcStatusCode::DATA_LOSS => (Retry::Backoff, wait()),
            RpcStatusCode::RESOURCE_EXHAUSTED => match wait() {
                Some(wait) => (Retry::Backoff, Some(wait)),
                None => (Retry::Never, None),
            },
            _ => (Retry::Never, None),
        }
    }

    fn probe(&mut self, client: &Client) -> Option<u64> {
        let id = self.shared.next_call_id();
        let answer = Arc::new(Answer::default());
        let option = CallOption::default().timeout(PROBE_TIMEOUT);
        let recv = client
            .server_streaming(&EXPORT, &GrpcSlice::default(), option)
            .ok()?;
        answer.watch(recv);
        self.probes.insert(id, answer.clone());
        let reports = self.shared.reports.clone();
        client.spawn(async move {
            let result = answer.responses().await;
            let _ = reports.send(Report::CallEnded {
                id,
                result,
                after_half_close: true,
            });
        });
        Some(id)
    }

    fn suspects_due(&mut self, _: Option<&Client>) -> grpcio::Result<()> {
        // The next call the writer issues opens the group's epoch.
        self.shared.wake_writer();
        Ok(())
    }

    fn tick(&mut self, client: Option<&Client>, _now: Instant) -> grpcio::Result<()> {
        // Between calls, nothing else notices a collector gone: its channel says so.
        if self.up && self.shared.exports.len() == 0 && client.is_some_and(channel_failed) {
            return Err(grpcio::Error::RpcFailure(RpcStatus::with_message(
                RpcStatusCode::UNAVAILABLE,
                "the connection to the collector failed".into(),
            )));
        }
        Ok(())
    }

    fn next_timer(&self) -> Option<Instant> {
        None
    }

    fn pending(&self) -> usize {
        self.shared.exports.len() + self.probes.len()
    }

    fn cancel_all(&mut self) {
        self.shared.exports.cancel_all();
        for answer in self.probes.values() {
            answer.cancel();
        }
    }
}

impl Drop for Unary {
    /// Stops the calls (the supervisor is done).
    fn drop(&mut self) {
        self.stop();
        self.cancel_all();
    }
}
