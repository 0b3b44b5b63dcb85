//! Process measurements: CPU clocks, RSS (`/proc/self/status`), bytes on the wire
//! (`TCP_INFO` of this process's sockets, and `lo` in `/proc/net/dev`).

/// CPU seconds (user + system) of this whole process so far, all threads, nanosecond
/// resolution (`CLOCK_PROCESS_CPUTIME_ID`).
pub fn cpu_secs() -> f64 {
    clock_secs(libc::CLOCK_PROCESS_CPUTIME_ID)
}

/// CPU seconds of the calling thread so far (`CLOCK_THREAD_CPUTIME_ID`).
pub fn thread_cpu_secs() -> f64 {
    clock_secs(libc::CLOCK_THREAD_CPUTIME_ID)
}

fn clock_secs(clock: libc::clockid_t) -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; the clock ids are the kernel's own.
    let rc = unsafe { libc::clock_gettime(clock, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime failed");
    ts.tv_sec as f64 + ts.tv_nsec as f64 / 1e9
}

/// A `/proc/self/status` value in kB (`VmHWM` = peak RSS, `VmRSS` = current RSS).
pub fn proc_status_kb(key: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// TCP payload bytes sent plus received so far on this process's open TCP sockets (the
/// `TCP_INFO` of every socket in /proc/self/fd): this client's own traffic, HTTP/2
/// framing included, IP/TCP headers not. Sockets already closed are not counted.
pub fn tcp_bytes() -> u64 {
    let Ok(dir) = std::fs::read_dir("/proc/self/fd") else {
        return 0;
    };
    dir.filter_map(|entry| {
        let entry = entry.ok()?;
        let target = std::fs::read_link(entry.path()).ok()?;
        if !target.to_string_lossy().starts_with("socket:") {
            return None;
        }
        let fd: libc::c_int = entry.file_name().to_str()?.parse().ok()?;
        // SAFETY: tcp_info is plain integers: all-zero is a valid value.
        let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
        let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
        // SAFETY: getsockopt writes at most `len` bytes into `info`; on a socket that is
        // not TCP (or a descriptor closed meanwhile) it fails and writes nothing.
        let rc = unsafe {
            libc::getsockopt(
                fd,
                libc::IPPROTO_TCP,
                libc::TCP_INFO,
                (&mut info as *mut libc::tcp_info).cast(),
                &mut len,
            )
        };
        (rc == 0).then(|| info.tcpi_bytes_sent + info.tcpi_bytes_received)
    })
    .sum()
}

/// Bytes sent on the loopback interface so far (`lo` in /proc/net/dev, headers
/// included): during a cell, both directions between client and sink plus whatever else
/// the machine sent on loopback (another process's tests, say). grpc core writes with
/// `sendmsg`, which /proc/self/io does not count.
pub fn loopback_bytes() -> u64 {
    std::fs::read_to_string("/proc/net/dev")
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                let (name, rest) = l.split_once(':')?;
                if name.trim() != "lo" {
                    return None;
                }
                // receive: bytes packets errs drop fifo frame compressed multicast,
                // then transmit: bytes ...
                rest.split_whitespace().nth(8)?.parse().ok()
            })
        })
        .unwrap_or(0)
}
