//! The write path's entry points, for whichever wire is in use: the background writer,
//! and [`pump`] / [`write_now`], which hand the outbox to the wire's writer side
//! (`wire_gosight`: onto the current epoch's stream; `wire_otlp`: into `Export` calls).
//! The background writer writes when no user thread should (after a reconnect, a failed
//! epoch or call, for `flush` and `close`).

use crossbeam_channel::{select, Receiver};

use crate::config::Wire;
use crate::error::Error;
use crate::ledger::Item;
use crate::shared::Shared;
use crate::{wire_gosight, wire_otlp};

/// The background writer: writes the outbox each time it is woken, until `stop`
/// disconnects at the end of `close`.
pub(crate) fn run_writer(shared: &Shared, wake: &Receiver<()>, stop: &Receiver<()>) {
    loop {
        select! {
            recv(wake) -> token => if token.is_err() { return },
            recv(stop) -> _ => return,
        }
        pump(shared);
    }
}

/// Writes the outbox if no one else is (GoSight), or issues calls for it while permits
/// are left (OTLP).
pub(crate) fn pump(shared: &Shared) {
    match shared.config.wire {
        Wire::GoSightStream => wire_gosight::pump(shared),
        Wire::OtlpLogs => wire_otlp::pump(shared),
    }
}

/// Writes `item` (held already) now, for `send_logs` (see each wire's `write_now`).
pub(crate) fn write_now(shared: &Shared, item: Item) -> Result<(), Error> {
    match shared.config.wire {
        Wire::GoSightStream => wire_gosight::write_now(shared, item),
        Wire::OtlpLogs => wire_otlp::write_now(shared, item),
    }
}
