//! What reaches the supervisor: [`Command`]s from the write path and the handle, and
//! [`Report`]s from calls. Two channels, one type each, so that the supervisor's loop
//! reads as "what was asked" and "what happened".

/// What the supervisor is asked to do.
pub(crate) enum Command {
    /// The epoch reached `commit_every` payloads, or its suspect group is written:
    /// commit it (open the next call, half-close this one).
    Rotate { epoch: u64 },
    /// Commit the current epoch now if it carries anything (`flush`, `close`).
    Commit,
    /// Finish: half-close the current call, wait for open epochs until the close
    /// deadline, cancel what is left.
    Shutdown,
}

/// What happened to a call.
pub(crate) enum Report {
    /// A call's response side ended: `Ok` is status `OK`, `Err` carries the status.
    /// `after_half_close`: logsender had half-closed the call when its status arrived
    /// (read by the call's own watcher, not inferred from the order of reports).
    CallEnded {
        id: u64,
        result: grpcio::Result<()>,
        after_half_close: bool,
    },
    /// A write on this epoch failed; the call is unusable.
    WriteFailed { epoch: u64 },
}
