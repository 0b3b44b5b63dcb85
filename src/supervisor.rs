//! The supervisor thread: the only code that dials, tears down and rebuilds the
//! channel ([`Link`]), and that starts, stops and cancels the wire's calls (through its
//! [`Protocol`]: GoSight's epoch stream, or OTLP's unary `Export`).
//!
//! Each call's final status arrives as a [`Report::CallEnded`] from a small future on
//! grpcio's completion-queue thread; the wire says what it means ([`Ended`]), and the
//! supervisor commits, re-queues, puts on trial or dead-letters that epoch's payloads
//! accordingly (on OTLP, an epoch is one call).
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
use std::sync::Arc;
use std::time::{Duration, Instant};

use backoff::backoff::Backoff;
use backoff::{ExponentialBackoff, ExponentialBackoffBuilder};
use crossbeam_channel::{select, Receiver};
use grpcio::{Environment, RpcStatus, RpcStatusCode};
use log::{debug, info, warn};

use crate::clock::after;
use crate::command::{Command, Report};
use crate::config::{DeliveryMode, Wire};
use crate::error::{refusal_hint, DialCause, Error, Hinted, Retry};
use crate::events::{PartialSuccessEvent, RefusedEvent};
use crate::ledger::{entries_of, Verdict};
use crate::link::{Ended, Link, Protocol, TICK};
use crate::shared::Shared;
use crate::stats::{ConnectionState, Counters};
use crate::wire_gosight::Stream;
use crate::wire_otlp::Unary;

/// The collector refuses every call for a permanent reason and the payloads are held.
struct Refusal {
    since: Instant,
    /// Refused tries in a row.
    attempts: u32,
    /// When the next try is.
    next: Instant,
    /// The wire came up since the last try was refused: the next refusal is a new
    /// try's (before, it is another epoch of the same try).
    retried: bool,
}

/// A rejected epoch whose probe has not answered yet.
struct Trial {
    status: RpcStatus,
    /// How the wire retries the status.
    retry: Retry,
    /// The epoch's call was carrying the wire.
    took_down: bool,
}

pub(crate) struct Supervisor {
    shared: Arc<Shared>,
    commands: Receiver<Command>,
    reports: Receiver<Report>,
    link: Link,
    protocol: Box<dyn Protocol>,
    trials: HashMap<u64, Trial>,
    /// Probes in flight, and the epoch each decides.
    probes: HashMap<u64, u64>,
    shutting_down: bool,
    /// When a struck payload waiting in the suspects gets its next epoch.
    suspects_due: Option<Instant>,
    /// Set while the collector refuses every call and payloads are held; cleared once
    /// it takes data (or an empty call).
    refused: Option<Refusal>,
    /// The delays between tries while `refused`.
    refused_backoff: ExponentialBackoff,
}

impl Supervisor {
    pub(crate) fn new(
        shared: Arc<Shared>,
        commands: Receiver<Command>,
        reports: Receiver<Report>,
        env: Arc<Environment>,
    ) -> Self {
        let c = &shared.config;
        let refused_backoff = ExponentialBackoffBuilder::new()
            .with_initial_interval(c.refused_backoff_initial)
            .with_max_interval(c.refused_backoff_max)
            .with_multiplier(2.0)
            .with_randomization_factor(c.backoff_jitter)
            .with_max_elapsed_time(None)
            .build();
        let protocol: Box<dyn Protocol> = match c.wire {
            Wire::GoSightStream => Box::new(Stream::new(shared.clone())),
            Wire::OtlpLogs => Box::new(Unary::new(shared.clone())),
        };
        Supervisor {
            link: Link::new(shared.clone(), env),
            protocol,
            shared,
            commands,
            reports,
            trials: HashMap::new(),
            probes: HashMap::new(),
            shutting_down: false,
            suspects_due: None,
            refused: None,
            refused_backoff,
        }
    }

    pub(crate) fn run(mut self) {
        loop {
            let now = Instant::now();
            if !self.shutting_down
                && !self.protocol.is_up()
                && self.trials.is_empty()
                && self.link.retry_at.is_none_or(|t| now >= t)
            {
                self.connect();
            }
            self.check_timers(Instant::now());
            if self.shutting_down && !self.protocol.is_up() && self.protocol.pending() == 0 {
                break;
            }
            // Cancelled calls report back at once; should one not, do not wait for it
            // past the close deadline (its payloads are still in the ledger).
            if self.shutting_down && self.shared.past_close_deadline(Instant::now()) {
                let pending = self.protocol.pending();
                if pending > 0 {
                    debug!("{pending} calls had not reported at the close deadline");
                }
                break;
            }
            let wait = self.next_wakeup(Instant::now());
            select! {
                recv(self.reports) -> report => match report {
                    Ok(Report::CallEnded { id, result, after_half_close }) => {
                        self.call_ended(id, result, after_half_close)
                    }
                    Err(_) => self.shutting_down = true,
                },
                recv(self.commands) -> command => match command {
                    Ok(command) => self.on_command(&command),
                    Err(_) => self.shutting_down = true,
                },
                default(wait) => {}
            }
        }
        // Cancels whatever is still open, then drops the channel.
        let Supervisor {
            shared,
            protocol,
            link,
            ..
        } = self;
        drop(protocol);
        drop(link);
        shared.counters.set_state(ConnectionState::Closed);
    }

    fn on_command(&mut self, command: &Command) {
        if let Command::Shutdown = command {
            self.shutting_down = true;
        }
        let result = self.protocol.command(self.link.client(), command);
        self.check(result);
    }

    /// A wire that found its channel unable to open calls (`result` an error): rebuild
    /// it after the backoff.
    fn check(&mut self, result: grpcio::Result<()>) {
        if let Err(e) = result {
            self.wire_lost(&e);
        }
    }

    /// The wire cannot carry on (`why`): stop it, drop the channel, and rebuild both
    /// after the backoff.
    fn wire_lost(&mut self, why: &dyn std::fmt::Display) {
        // (`schedule_retry` logs why, with the next attempt.)
        if self.protocol.is_up() {
            self.protocol.stop();
        }
        self.link.drop_channel();
        self.shared.counters.set_state(self.down_state());
        self.link.schedule_retry(Retry::Backoff, None, why);
    }

    /// Dials if needed, then starts the wire on the channel.
    fn connect(&mut self) {
        let Some(client) = self.link.ensure() else {
            return;
        };
        if let Err(e) = self.protocol.start(&client) {
            self.link.drop_channel();
            let reason = match self.shared.config.wire {
                Wire::GoSightStream => format!("cannot open SubmitStream: {e}"),
                Wire::OtlpLogs => format!("cannot start Export calls: {e}"),
            };
            self.link.dial_failed(DialCause::StreamRefused, reason);
            return;
        }
        self.link.came_up();
        // While the collector refuses every call, a wire that comes up proves nothing:
        // the state stays `Refused` until it takes data, or an empty call. With nothing
        // to write, an empty call is ended at once, so that its status says which.
        if let Some(refusal) = &mut self.refused {
            refusal.retried = true;
            if self.shared.ledger.lock().held().0 == 0 {
                let result = self.protocol.try_empty(Some(&client));
                self.check(result);
            }
        } else {
            self.shared.counters.recovered();
            self.shared.counters.set_state(ConnectionState::Connected);
            self.shared.handler(|h| h.on_connected());
        }
        self.shared.wake_writer();
    }

    fn call_ended(
        &mut self,
        id: u64,
        result: grpcio::Result<Vec<Vec<u8>>>,
        after_half_close: bool,
    ) {
        if let Some(epoch) = self.probes.remove(&id) {
            let accepted = self.protocol.probe_ended(id, &result, after_half_close);
            self.verdict(epoch, accepted, result.err());
            return;
        }
        let judged = self.protocol.judge(id, result, after_half_close);
        let took_down = judged.took_down;
        if took_down {
            self.shared.counters.set_state(self.down_state());
        }
        let (status, about_payloads, retry, wait) = match judged.ended {
            Ended::Delivered { rejected, message } => {
                self.delivered(id, rejected, &message);
                return;
            }
            Ended::Failed {
                status,
                about_payloads,
                retry,
                wait,
            } => (status, about_payloads, retry, wait),
        };
        let shared = self.shared.clone();
        if self.link.refuses_gzip(&status) {
            // Not the payloads' fault, nor the collector's: send them uncompressed.
            warn!(
                "collector {} does not accept gzip ({}); sending uncompressed from now on",
                shared.config.addr,
                status.message()
            );
            self.link.refuse_gzip();
            let n = shared.ledger.lock().fail(id) as u64;
            Counters::add(&shared.counters.retried, n);
            Counters::add(&shared.counters.resent_after_fault, n);
            if took_down || self.protocol.is_up() {
                if self.protocol.is_up() {
                    self.protocol.stop();
                }
                self.link.retry_at = None;
            }
            return;
        }
        let code = status.code();
        let err = Error::Rpc(grpcio::Error::RpcFailure(status.clone()));
        // While the collector refuses every call, its refusal (with the hint) stays the
        // last error: this call's is the same.
        if !(self.refused.is_some() && refuses_for_good(code)) {
            shared.counters.set_last_error(&err, None, None);
        }
        Counters::add(&shared.counters.epochs_failed, 1);
        if took_down {
            shared.handler(|h| h.on_disconnected(&err));
        }
        // At-most-once: a stream that carried payloads was working; the next outage
        // starts from the initial backoff again.
        if judged.worked && shared.config.delivery == DeliveryMode::AtMostOnce {
            self.link.reset_backoff();
        }
        if about_payloads && shared.ledger.lock().try_epoch(id) > 0 {
            info!("epoch {id} rejected ({err}); probing whether the collector accepts calls");
            self.trials.insert(
                id,
                Trial {
                    status,
                    retry,
                    took_down,
                },
            );
            let probe = self
                .link
                .client()
                .cloned()
                .and_then(|c| self.protocol.probe(&c));
            match probe {
                Some(probe) => {
                    self.probes.insert(probe, id);
                }
                None => self.verdict(id, false, None),
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
        if about_payloads && shared.config.holds_when_refused() && refuses_for_good(code) {
            self.hold_refused(&status);
            return;
        }
        self.after_failure(took_down, code, retry, wait, &err);
    }

    /// Epoch `id` ended `OK`: its payloads are delivered, but for `rejected` of their
    /// entries (an OTLP partial success: counted dead-lettered, never re-sent).
    fn delivered(&mut self, id: u64, rejected: u64, message: &str) {
        let shared = self.shared.clone();
        // Count before anyone waiting on the ledger can see the payloads go.
        let (delivered, rejected) = {
            let mut ledger = shared.ledger.lock();
            let delivered = ledger.commit(id);
            let entries = entries_of(&delivered);
            let rejected = rejected.min(entries);
            Counters::add(&shared.counters.acknowledged, delivered.len() as u64);
            Counters::add(&shared.counters.entries_acknowledged, entries - rejected);
            Counters::add(&shared.counters.entries_dead_lettered, rejected);
            Counters::add(&shared.counters.entries_rejected, rejected);
            Counters::add(&shared.counters.epochs_committed, 1);
            (delivered, rejected)
        };
        shared.ledger_changed.notify_all();
        let n = delivered.len();
        if rejected > 0 {
            warn!(
                "call {id}: the collector took {n} payloads but rejected {rejected} of their \
                 records ({message}); those are dead-lettered, not re-sent"
            );
            if shared.config.handler.is_some() {
                let event = PartialSuccessEvent {
                    rejected_records: rejected,
                    message: message.to_string(),
                    payloads: delivered
                        .iter()
                        .filter_map(|i| shared.decode_item(i))
                        .collect(),
                };
                shared.handler(|h| h.on_partial_success(&event));
            }
        } else if !message.is_empty() {
            Counters::add(&shared.counters.partial_success_warnings, 1);
            warn!("call {id}: the collector took every record, and says: {message}");
        }
        // Their buffers are freed here, with no lock held.
        drop(delivered);
        debug!("epoch {id} committed: {n} payloads");
        if n > 0 {
            // The collector takes data: the next trouble starts from scratch.
            self.link.reset_backoff();
            self.end_refusal("takes data again");
        } else {
            // An empty call accepted: it takes calls again.
            self.end_refusal("accepts calls again");
        }
        let result = self.protocol.suspects_due(self.link.client());
        self.check(result);
    }

    /// After a verdict that leaves the collector healthy: connect at once, or give the
    /// next suspect group an epoch of its own.
    fn go_on(&mut self) {
        if !self.protocol.is_up() {
            // (A refused collector's next try waits for the refused backoff.)
            if self.refused.is_none() {
                self.link.retry_at = None;
            }
        } else {
            let result = self.protocol.suspects_due(self.link.client());
            self.check(result);
        }
    }

    /// What follows a failed epoch whose payloads were not at fault: rebuild the
    /// channel if it is broken and retry after the backoff (it was carrying), or stop
    /// carrying until the backoff has passed (an epoch that was not carrying failed:
    /// the collector is in trouble, and re-sending at once would spin).
    fn after_failure(
        &mut self,
        took_down: bool,
        code: RpcStatusCode,
        retry: Retry,
        wait: Option<Duration>,
        err: &Error,
    ) {
        if took_down {
            if self.link.channel_bad(code) {
                self.link.drop_channel();
            }
            self.link.schedule_retry(retry, wait, err);
        } else if self.protocol.is_up() {
            self.protocol.stop();
            self.shared.counters.set_state(self.down_state());
            self.link.schedule_retry(retry, wait, err);
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
        let retry = trial.retry;
        let err = Error::Rpc(grpcio::Error::RpcFailure(trial.status.clone()));
        if accepted {
            self.end_refusal("accepts calls again");
            let verdict =
                shared
                    .ledger
                    .lock()
                    .convict(epoch, retry == Retry::Never, Instant::now());
            match verdict {
                Verdict::Split => {
                    info!("epoch {epoch}: the collector accepts calls; re-sending its payloads in halves");
                    self.go_on();
                }
                Verdict::Strike => {
                    info!("epoch {epoch}: a payload alone was rejected ({code:?}); it gets another try later");
                    // The ledger holds the struck payload back until its time (whatever
                    // opens epochs meanwhile); then an epoch of its own is opened for it.
                    if !self.protocol.is_up() {
                        self.link.schedule_retry(retry, None, &err);
                    }
                    self.suspects_due = shared.ledger.lock().next_suspect_due(Instant::now());
                    crate::hooks::pause(crate::hooks::Point::AfterStrike);
                }
                Verdict::Unproven => {
                    info!("epoch {epoch}: rejected ({code:?}) while no data was accepted since; backing off");
                    self.after_failure(trial.took_down, code, retry, None, &err);
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
        let probe_status = match &probe_err {
            Some(grpcio::Error::RpcFailure(s)) => s.clone(),
            Some(e) => RpcStatus::with_message(RpcStatusCode::UNAVAILABLE, e.to_string()),
            None => RpcStatus::new(RpcStatusCode::ABORTED),
        };
        let probe_code = probe_status.code();
        // Refused for good (credentials, an ACL, the wrong service): held, if asked.
        let refusal = match &probe_err {
            Some(grpcio::Error::RpcFailure(s))
                if shared.config.holds_when_refused()
                    && refuses_for_good(s.code())
                    && !self.link.refuses_gzip(s) =>
            {
                Some(s.clone())
            }
            _ => None,
        };
        let for_good = refusal.is_none()
            && retry == Retry::Never
            && self.protocol.classify(&probe_status).0 == Retry::Never;
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
            self.link.drop_channel();
        }
        self.after_failure(trial.took_down, code, retry, None, &err);
    }

    /// The collector refused an empty call with `status`, for good, and the payloads
    /// are held: stop writing, say why (state `Refused`, `last_error` with a hint, a
    /// `warn` line per episode, the event per try) and try again after the refused
    /// backoff. Every epoch of a try ends here: only the first schedules the next try.
    fn hold_refused(&mut self, status: &RpcStatus) {
        let now = Instant::now();
        // Whatever is open now would be refused too.
        if self.protocol.is_up() {
            self.protocol.stop();
        }
        let code = status.code();
        let addr = &self.shared.config.addr;
        let hint = refusal_hint(code, addr, self.shared.config.wire == Wire::OtlpLogs);
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
            self.link.retry_at = Some(self.link.retry_at.map_or(next, |t| t.max(next)));
            return;
        }
        if self.refused.is_none() {
            self.refused_backoff.reset();
        }
        let max = self.shared.config.refused_backoff_max;
        let delay = self.refused_backoff.next_backoff().unwrap_or(max).min(max);
        let next = after(now, delay);
        self.link.retry_at = Some(next);
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
        if self.protocol.is_up() {
            self.shared.counters.set_state(ConnectionState::Connected);
            self.shared.handler(|h| h.on_connected());
        } else {
            self.shared.counters.set_state(ConnectionState::Connecting);
        }
    }

    /// The state while the wire is down: `Refused` during a refusal, else `Connecting`.
    fn down_state(&self) -> ConnectionState {
        if self.refused.is_some() {
            ConnectionState::Refused
        } else {
            ConnectionState::Connecting
        }
    }

    fn check_timers(&mut self, now: Instant) {
        if let Err(e) = self.protocol.tick(self.link.client(), now) {
            // The wire found its channel gone (OTLP between calls), or could not open
            // the next epoch's call: a disconnection like a failed stream's.
            let err = Error::Rpc(e);
            self.shared.counters.set_last_error(&err, None, None);
            if self.protocol.is_up() {
                self.shared.handler(|h| h.on_disconnected(&err));
            }
            self.wire_lost(&err);
        }
        // A struck payload's next try is due.
        if self.suspects_due.is_some_and(|t| now >= t) {
            self.go_on();
            self.suspects_due = self.shared.ledger.lock().next_suspect_due(now);
        }
        // Past the close deadline, nothing is waited for any more.
        if self.shared.past_close_deadline(now) {
            self.protocol.cancel_all();
        }
    }

    /// How long to sleep: until the next timer, at most `TICK`. Timers already past
    /// (an overdue status being cancelled, an idle epoch's commit time) are left to the
    /// tick, so an idle supervisor never spins.
    fn next_wakeup(&self, now: Instant) -> Duration {
        let retry = self
            .link
            .retry_at
            .filter(|_| !self.protocol.is_up() && !self.shutting_down);
        retry
            .into_iter()
            .chain(self.shared.close_deadline())
            .chain(self.suspects_due)
            .chain(self.protocol.next_timer())
            .filter(|t| *t > now)
            .map(|t| t - now)
            .fold(TICK, Duration::min)
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
