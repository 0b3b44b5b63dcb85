//! What reaches the supervisor: [`Command`]s from the write path and the handle, and
//! [`Report`]s from calls. Two channels, one type each, so that the supervisor's loop
//! reads as "what was asked" and "what happened".

/// What the supervisor is asked to do.
pub(crate) enum Command {
    /// The epoch reached `commit_every` payloads, or its suspect group is written:
    /// commit it (open the next call, half-close this one). GoSight only.
    Rotate { epoch: u64 },
    /// Commit the current epoch now if it carries anything (`flush`, `close`).
    Commit,
    /// A write on this epoch failed; the call is unusable: make sure it ends.
    WriteFailed { epoch: u64 },
    /// Finish: half-close the current call, wait for open epochs until the close
    /// deadline, cancel what is left.
    Shutdown,
}

/// What happened to a call.
pub(crate) enum Report {
    /// A call's response side ended: `Ok` is status `OK` with the response messages,
    /// `Err` carries the status. `after_half_close`: logsender had half-closed the call
    /// when its status arrived (read by the call's own watcher, not inferred from the
    /// order of reports; always true of a unary call, sent half-closed).
    CallEnded {
        id: u64,
        result: grpcio::Result<Vec<Vec<u8>>>,
        after_half_close: bool,
    },
}
