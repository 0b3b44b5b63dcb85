//! The link to the collector, and the seam between it and the wires: [`Link`] owns the
//! channel (dial, backoff, gzip fallback, health), whichever wire runs on it; a
//! [`Protocol`] is one wire's calls as the supervisor drives them (GoSight's epoch
//! stream in `wire_gosight`, OTLP's unary `Export` in `wire_otlp`), and [`Ended`] is
//! what a call's end means on that wire. The supervisor, the ledger, the spool and the
//! reports never learn which wire is in use.

use std::sync::Arc;
use std::time::{Duration, Instant};

use backoff::backoff::Backoff;
use backoff::{ExponentialBackoff, ExponentialBackoffBuilder};
use futures_executor::block_on;
use futures_util::StreamExt;
use grpcio::{
    CallOption, Channel, ChannelBuilder, ChannelCredentialsBuilder, Client, CompressionAlgorithms,
    ConnectivityState, Environment, RpcStatus, RpcStatusCode,
};
use log::warn;

use crate::call::SUBMIT_STREAM;
use crate::clock::after;
use crate::command::Command;
use crate::config::{Compression, Transport};
use crate::error::{DialCause, Hinted, Retry};
use crate::events::DialFailedEvent;
use crate::shared::Shared;
use crate::stats::Counters;

/// The supervisor's longest sleep; bounds how late a timer (the write watchdog, a
/// call's deadline) is noticed.
pub(crate) const TICK: Duration = Duration::from_millis(50);

/// How many bytes of hinted writes the HTTP/2 transport buffers per stream.
const HTTP2_WRITE_BUFFER: i32 = 1 << 20;

/// How long a probe (an empty call) may take before it counts as failed.
pub(crate) const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// What a call's end means, as its wire reads the status.
pub(crate) enum Ended {
    /// Every payload the call carried is delivered. `rejected` of their entries were
    /// refused all the same (an OTLP partial success), with the collector's `message`.
    Delivered { rejected: u64, message: String },
    /// The call failed.
    Failed {
        status: RpcStatus,
        /// The status may be about the payloads: the call is put on trial. Else it says
        /// nothing about them (a broken connection, a timeout, throttling): they are
        /// re-sent first.
        about_payloads: bool,
        /// How the status is retried.
        retry: Retry,
        /// The collector's own wait before a retry (OTLP's `RetryInfo`).
        wait: Option<Duration>,
    },
}

/// A call's end, judged by its wire.
pub(crate) struct Judged {
    pub(crate) ended: Ended,
    /// The call was carrying the wire (GoSight: the current call; OTLP: calls were going
    /// out): the wire stopped carrying with it.
    pub(crate) took_down: bool,
    /// It carried payloads that counted as delivered once written (at most once): the
    /// connection was working.
    pub(crate) worked: bool,
}

/// One wire's calls, as the supervisor drives them. Every method runs on the
/// supervisor's thread; what a wire shares with writers lives in `Shared`.
pub(crate) trait Protocol: Send {
    /// The channel is ready: start carrying on it (GoSight: open an epoch's call and put
    /// it in the slot; OTLP: let writers issue calls on it).
    fn start(&mut self, client: &Client) -> grpcio::Result<()>;
    /// Payloads are being carried.
    fn is_up(&self) -> bool;
    /// Stop carrying; what is in flight ends by itself (GoSight: the current epoch is
    /// half-closed).
    fn stop(&mut self);
    /// With nothing to write, end an empty call now, so that its status says whether
    /// the collector takes calls (a refused collector's retry).
    fn try_empty(&mut self, client: Option<&Client>) -> grpcio::Result<()>;
    /// What the write path or the handle asked (`Rotate`, `Commit`, a failed write).
    fn command(&mut self, client: Option<&Client>, command: &Command) -> grpcio::Result<()>;
    /// Probe `id` ended: takes it out of the wire's books and says whether its end
    /// means "the collector takes calls".
    fn probe_ended(
        &mut self,
        id: u64,
        result: &grpcio::Result<Vec<Vec<u8>>>,
        after_half_close: bool,
    ) -> bool;
    /// How this wire reads call `id`'s end (`responses`: the messages the collector
    /// answered with); takes the call out of the wire's books.
    fn judge(
        &mut self,
        id: u64,
        result: grpcio::Result<Vec<Vec<u8>>>,
        after_half_close: bool,
    ) -> Judged;
    /// How a status is retried on this wire, and the collector's wait if it gave one.
    fn classify(&self, status: &RpcStatus) -> (Retry, Option<Duration>);
    /// Sends an empty call (a trial's probe); its end comes as a report with the
    /// returned id.
    fn probe(&mut self, client: &Client) -> Option<u64>;
    /// A suspect group is due: give it a call of its own.
    fn suspects_due(&mut self, client: Option<&Client>) -> grpcio::Result<()>;
    /// Runs the wire's timers (watchdogs, overdue statuses, commit intervals, health).
    /// An error: the channel cannot carry calls any more.
    fn tick(&mut self, client: Option<&Client>, now: Instant) -> grpcio::Result<()>;
    /// The wire's next timer.
    fn next_timer(&self) -> Option<Instant>;
    /// Calls not ended yet (shutdown waits for them).
    fn pending(&self) -> usize;
    /// Cancels everything in flight (the close deadline).
    fn cancel_all(&mut self);
}

/// The channel to the collector and when to build the next.
pub(crate) struct Link {
    shared: Arc<Shared>,
    env: Arc<Environment>,
    client: Option<Client>,
    backoff: ExponentialBackoff,
    /// When the next attempt to connect may be made.
    pub(crate) retry_at: Option<Instant>,
    connected_once: bool,
    /// Failed attempts to connect since the last time the wire came up.
    failed_dials: u32,
    /// The collector refused gzip: channels are built without compression from now on.
    gzip_refused: bool,
}

impl Link {
    pub(crate) fn new(shared: Arc<Shared>, env: Arc<Environment>) -> Self {
        let c = &shared.config;
        let backoff = ExponentialBackoffBuilder::new()
            .with_initial_interval(c.backoff_initial)
            .with_max_interval(c.backoff_max)
            .with_multiplier(c.backoff_multiplier)
            .with_randomization_factor(c.backoff_jitter)
            .with_max_elapsed_time(None)
            .build();
        Link {
            shared,
            env,
            client: None,
            backoff,
            retry_at: None,
            connected_once: false,
            failed_dials: 0,
            gzip_refused: false,
        }
    }

    /// The channel's client, if there is a channel.
    pub(crate) fn client(&self) -> Option<&Client> {
        self.client.as_ref()
    }

    /// The channel, dialled now if there is none; `None` (the failure reported and
    /// the next attempt scheduled) if it cannot be.
    pub(crate) fn ensure(&mut self) -> Option<Client> {
        if self.client.is_none() {
            match self.dial() {
                Ok(channel) => self.client = Some(Client::new(channel)),
                Err(reason) => {
                    self.dial_failed(DialCause::of(&reason), reason);
                    return None;
                }
            }
        }
        self.client.clone()
    }

    /// Drops the channel: the next attempt dials a new one.
    pub(crate) fn drop_channel(&mut self) {
        self.client = None;
    }

    /// The wire came up on the channel.
    pub(crate) fn came_up(&mut self) {
        self.failed_dials = 0;
        if self.connected_once {
            Counters::add(&self.shared.counters.reconnects, 1);
        }
        self.connected_once = true;
    }

    /// The collector takes data: the next trouble starts from the initial backoff.
    pub(crate) fn reset_backoff(&mut self) {
        self.backoff.reset();
    }

    /// Whether `status` says the collector cannot decompress gzip (grpc-go, grpc-java
    /// and the C core answer `UNIMPLEMENTED` and say so).
    pub(crate) fn refuses_gzip(&self, status: &RpcStatus) -> bool {
        self.shared.config.compression == Compression::Gzip
            && !self.gzip_refused
            && status.code() == RpcStatusCode::UNIMPLEMENTED
            && status.message().to_ascii_lowercase().contains("compress")
    }

    /// The collector cannot take gzip: channels are built without it from now on.
    pub(crate) fn refuse_gzip(&mut self) {
        self.gzip_refused = true;
        self.client = None;
    }

    /// Whether a call that failed with `code` left the channel unusable.
    pub(crate) fn channel_bad(&self, code: RpcStatusCode) -> bool {
        code == RpcStatusCode::UNAVAILABLE
            || self.client.as_ref().is_some_and(|c| {
                !matches!(
                    c.channel().check_connectivity_state(false),
                    ConnectivityState::GRPC_CHANNEL_READY | ConnectivityState::GRPC_CHANNEL_IDLE
                )
            })
    }

    /// Records a failed attempt to connect, schedules the next and reports both: one
    /// `warn` line (in `schedule_retry`), `last_error` and the event, each with the hint.
    pub(crate) fn dial_failed(&mut self, cause: DialCause, message: String) {
        self.failed_dials = self.failed_dials.saturating_add(1);
        let hint = cause.hint(&message, &self.shared.config.addr);
        self.shared
            .counters
            .set_last_error(&message, Some(cause), hint.clone());
        let hinted = Hinted {
            message: &message,
            hint: hint.as_deref(),
        };
        let retry_in = self.schedule_retry(Retry::Backoff, None, &hinted);
        let event = DialFailedEvent {
            cause,
            message,
            hint,
            retry_in,
            attempt: self.failed_dials,
        };
        self.shared.handler(|h| h.on_dial_failed(&event));
    }

    /// Schedules the next connection attempt after the backoff, or after `wait` (the
    /// collector's own) if that is longer, up to the longer of `backoff_max` and
    /// `refused_backoff_max`; returns the delay.
    pub(crate) fn schedule_retry(
        &mut self,
        retry: Retry,
        wait: Option<Duration>,
        why: &dyn std::fmt::Display,
    ) -> Duration {
        let max = self.shared.config.backoff_max;
        let delay = match wait {
            Some(wait) => {
                // The backoff still grows, so that a collector asking for no wait at
                // all cannot make the sender spin.
                let floor = self.backoff.next_backoff().unwrap_or(max);
                let cap = max.max(self.shared.config.refused_backoff_max);
                wait.min(cap).max(floor)
            }
            None => {
                let mut delay = self.backoff.next_backoff().unwrap_or(max);
                if retry == Retry::Slowly {
                    delay = delay.saturating_mul(4).min(max.max(delay));
                }
                delay
            }
        };
        warn!(
            "collector {}: {why}; next attempt in {delay:?}",
            self.shared.config.addr
        );
        self.retry_at = Some(after(Instant::now(), delay));
        delay
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
            if now >= deadline || self.shared.past_close_deadline(now) {
                return Err(format!(
                    "cannot connect to {addr} within {connect_timeout:?}"
                ));
            }
            let slice = (deadline - now).min(TICK);
            block_on(channel.wait_for_state_change(state, slice));
            state = channel.check_connectivity_state(true);
        }
    }
}

/// Whether a channel can no longer carry calls: its connection failed and gRPC is
/// redialling it (`TRANSIENT_FAILURE`), or it was shut down. A channel whose connection
/// the collector closed goes `IDLE`: asked to connect again, it is found out at a
/// later look if that fails.
pub(crate) fn channel_failed(client: &Client) -> bool {
    matches!(
        client.channel().check_connectivity_state(true),
        ConnectivityState::GRPC_CHANNEL_TRANSIENT_FAILURE
            | ConnectivityState::GRPC_CHANNEL_SHUTDOWN
    )
}

/// Why a channel in `TRANSIENT_FAILURE` cannot connect, in the gRPC core's words: a
/// call that fails fast on it carries the last connection error (refused, TLS
/// handshake, name resolution). Any method does: the call never reaches a server.
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
