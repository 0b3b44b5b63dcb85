//! The disk spool: payloads kept in files, so that what logsender accepted outlives
//! its process.
//!
//! A directory of segment files (`<n>.seg`, numbered in the order they were written),
//! append-only, each a sequence of checksummed records ([`record`]); beside each, an ack
//! sidecar (`<n>.ack`) that lists the records released (acknowledged, dropped or
//! dead-lettered) while the segment still holds others; and `LOCK`, locked while a
//! sender uses the directory (the OS lets go of it when the process dies).
//!
//! A *read cursor* splits the records: those before it were loaded into memory (they
//! are in the ledger, or released), those from it on wait on disk and are read, oldest
//! first, as the memory bounds make room. A segment is removed once every record in it
//! is released and the cursor is past it. Nothing here reads more than one record into
//! memory at a time.
//!
//! Start-up reads every segment once, checking every record: what a previous run left
//! becomes the replay backlog, and damage (a torn tail, a bad checksum, a missing file)
//! is skipped and reported with its file and offset, never fatal.

pub(crate) mod record;

use std::collections::{BTreeMap, HashSet};
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use record::{Found, Header, HEADER};

/// Bytes an ack entry takes in a sidecar: the record's offset and its CRC-32.
const ACK_ENTRY: u64 = 12;

/// How long after an I/O error the spool is not tried again (each try costs a system
/// call per payload while a disk is full).
pub(crate) const RETRY_AFTER_IO_ERROR: Duration = Duration::from_millis(500);

/// Where a record is: its segment and its offset in it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct RecordId {
    pub(crate) segment: u64,
    pub(crate) offset: u64,
}

/// Something found wrong with the spool, to report with its path.
#[derive(Debug)]
pub(crate) enum Finding {
    /// `len` bytes from `offset` of `path` held no intact record (skipped).
    Damage {
        path: PathBuf,
        offset: u64,
        len: u64,
    },
    /// An operation on `path` failed.
    Io { path: PathBuf, error: io::Error },
}

/// A record read back from disk.
pub(crate) struct Loaded {
    pub(crate) id: RecordId,
    pub(crate) header: Header,
    pub(crate) body: Vec<u8>,
    /// Written by an earlier run (its origin and sequence mean nothing here).
    pub(crate) replayed: bool,
}

/// Why [`Spool::append`] did not take a payload.
#[derive(Debug)]
pub(crate) enum AppendError {
    /// Taking it would pass `spool_max_bytes`.
    Full,
    /// The spool is not used for now, after an I/O error (see [`RETRY_AFTER_IO_ERROR`]).
    Resting,
    /// Writing failed (the spool rests for a while).
    Io(Finding),
}

struct Segment {
    path: PathBuf,
    /// Bytes of the file that hold records (appends go here).
    len: u64,
    /// Records written in it (intact ones, for an earlier run's segment).
    records: u64,
    /// Records not released yet.
    live: u64,
    /// Entries in the live records (for the replay report).
    live_entries: u64,
    /// Of `live`, how many the cursor has not reached.
    unloaded: u64,
    /// Entries in those.
    unloaded_entries: u64,
    /// Written by an earlier run.
    old: bool,
    /// An earlier run's released records (offsets), skipped when read.
    acked: HashSet<u64>,
    /// Damage reported already (offsets), not reported again when the cursor meets it.
    damage_seen: HashSet<u64>,
    /// Appends released records' ack entries.
    ack_file: Option<File>,
    /// Bytes the sidecar holds.
    ack_len: u64,
    /// This run's records in it, by origin (runs of consecutive ordinals: about one per
    /// worker batch), so that the ledger learns which payloads are gone if the file is
    /// lost before they are read back. Empty for an earlier run's segment.
    origins: Vec<Run>,
}

/// Consecutive ordinals of one source: `first..first + count`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Run {
    pub(crate) source: u32,
    pub(crate) first: u64,
    pub(crate) count: u64,
}

/// Records lost (their file removed or damaged) before they were read back.
#[derive(Debug, Default)]
pub(crate) struct Lost {
    /// An earlier run's: how many, and their entries.
    pub(crate) old: u64,
    pub(crate) old_entries: u64,
    /// This run's: where they may be (the ledger knows which of these still wait on
    /// disk; the others were loaded or released before).
    pub(crate) runs: Vec<Run>,
}

impl Lost {
    /// Whether nothing was lost.
    pub(crate) fn is_empty(&self) -> bool {
        self.old == 0 && self.runs.is_empty()
    }
}

impl Segment {
    /// What it costs against `spool_max_bytes`: its bytes, and an ack entry for each of
    /// its records (reserved when the record is written).
    fn charge(&self) -> u64 {
        self.len
            .saturating_add(self.records.saturating_mul(ACK_ENTRY))
            .max(self.ack_len)
    }
}

/// The spool's counts, for `stats()`.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Counts {
    /// Bytes of the segment files and sidecars.
    pub(crate) bytes: u64,
    /// Records not released.
    pub(crate) live: u64,
    /// Of those, how many wait on disk (not loaded).
    pub(crate) unloaded: u64,
    /// Of those, written by an earlier run.
    pub(crate) unloaded_old: u64,
    /// Entries in the records not released.
    pub(crate) live_entries: u64,
    /// Entries in the records written by an earlier run and waiting on disk.
    pub(crate) unloaded_old_entries: u64,
}

/// What an earlier run left, found at start-up.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Backlog {
    pub(crate) payloads: u64,
    pub(crate) entries: u64,
    pub(crate) bytes: u64,
}

/// The spool directory, opened.
pub(crate) struct Spool {
    dir: PathBuf,
    /// Locked (`flock`) while it is open.
    _lock: File,
    segments: BTreeMap<u64, Segment>,
    /// The segment appends go to, if one was created yet.
    active: Option<(u64, Arc<File>)>,
    /// Files written since the last sync (a rolled segment, the active one).
    unsynced: Vec<Arc<File>>,
    /// A segment was created since the directory was last synced.
    dir_unsynced: bool,
    /// The first record not loaded.
    cursor: RecordId,
    next_segment: u64,
    max_bytes: u64,
    segment_bytes: u64,
    /// Bytes charged (see [`Segment::charge`]).
    charged: u64,
    /// Written since the last sync.
    dirty: bool,
    /// When the spool may be tried again after an I/O error.
    resting_until: Option<Instant>,
    /// An I/O error happened, and no append succeeded since.
    failed: bool,
    /// An append succeeded after an I/O error (see [`Spool::take_recovered`]).
    recovered: bool,
    /// Records lost since the last [`Spool::take_lost`].
    lost: Lost,
    /// A sync failed (see [`Spool::unsynced_again`]).
    sync_failed: bool,
    scratch: Vec<u8>,
    encoded: Vec<u8>,
}

fn segment_name(n: u64) -> String {
    format!("{n:020}.seg")
}

fn ack_path(seg: &Path) -> PathBuf {
    seg.with_extension("ack")
}

fn io_at(path: &Path) -> impl FnOnce(io::Error) -> Finding + '_ {
    move |error| Finding::Io {
        path: path.to_path_buf(),
        error,
    }
}

/// Why a spool directory cannot be opened.
pub(crate) enum OpenError {
    /// Another sender (in this or another process) has it.
    Locked(PathBuf),
    Io(PathBuf, io::Error),
}

impl Spool {
    /// Opens (creating it if needed) and locks the spool in `dir`, and reads what an
    /// earlier run left: the backlog, and what was wrong with it (skipped).
    pub(crate) fn open(
        dir: &Path,
        max_bytes: u64,
        segment_bytes: u64,
    ) -> Result<(Spool, Backlog, Vec<Finding>), OpenError> {
        std::fs::create_dir_all(dir).map_err(|e| OpenError::Io(dir.to_path_buf(), e))?;
        let lock_path = dir.join("LOCK");
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| OpenError::Io(lock_path.clone(), e))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => return Err(OpenError::Locked(lock_path)),
            Err(std::fs::TryLockError::Error(e)) => return Err(OpenError::Io(lock_path, e)),
        }
        let mut spool = Spool {
            dir: dir.to_path_buf(),
            _lock: lock,
            segments: BTreeMap::new(),
            active: None,
            unsynced: Vec::new(),
            dir_unsynced: false,
            cursor: RecordId {
                segment: 0,
                offset: 0,
            },
            next_segment: 0,
            max_bytes,
            segment_bytes: segment_bytes.max(1),
            charged: 0,
            dirty: false,
            resting_until: None,
            failed: false,
            recovered: false,
            lost: Lost::default(),
            sync_failed: false,
            scratch: Vec::new(),
            encoded: Vec::new(),
        };
        let mut findings = Vec::new();
        let mut backlog = Backlog::default();
        let (segments, acks) = spool
            .listing()
            .map_err(|e| OpenError::Io(dir.to_path_buf(), e))?;
        for n in segments {
            let path = dir.join(segment_name(n));
            spool.next_segment = spool.next_segment.max(n.saturating_add(1));
            match spool.scan(&path, &mut findings) {
                Ok(Some(seg)) => {
                    backlog.payloads += seg.live;
                    backlog.entries += seg.live_entries;
                    spool.charged = spool.charged.saturating_add(seg.charge());
                    spool.segments.insert(n, seg);
                }
                Ok(None) => {}
                Err(error) => findings.push(Finding::Io { path, error }),
            }
        }
        // Sidecars whose segment is gone (removed just before a crash). New segments are
        // numbered past them too: should a removal fail or not last, a stale sidecar can
        // never name a new segment's records.
        for n in acks {
            spool.next_segment = spool.next_segment.max(n.saturating_add(1));
            if !spool.segments.contains_key(&n) {
                let path = ack_path(&dir.join(segment_name(n)));
                if let Err(error) = std::fs::remove_file(&path) {
                    findings.push(Finding::Io { path, error });
                }
            }
        }
        backlog.bytes = spool.segments.values().map(|s| s.len).sum();
        spool.cursor = RecordId {
            segment: spool
                .segments
                .keys()
                .next()
                .copied()
                .unwrap_or(spool.next_segment),
            offset: 0,
        };
        Ok((spool, backlog, findings))
    }

    /// The segment and sidecar numbers in the directory.
    fn listing(&self) -> io::Result<(Vec<u64>, Vec<u64>)> {
        let (mut segs, mut acks) = (Vec::new(), Vec::new());
        for entry in std::fs::read_dir(&self.dir)? {
            let name = entry?.file_name();
            let Some(name) = name.to_str() else { continue };
            if let Some(n) = name
                .strip_suffix(".seg")
                .and_then(|s| s.parse::<u64>().ok())
            {
                segs.push(n);
            } else if let Some(n) = name
                .strip_suffix(".ack")
                .and_then(|s| s.parse::<u64>().ok())
            {
                acks.push(n);
            }
        }
        segs.sort_unstable();
        Ok((segs, acks))
    }

    /// Reads an earlier run's segment through: its live records (those not in its
    /// sidecar), and its damage. A segment with nothing live is removed (`None`).
    fn scan(&mut self, path: &Path, findings: &mut Vec<Finding>) -> io::Result<Option<Segment>> {
        let file = File::open(path)?;
        let file_len = file.metadata()?.len();
        let acked = read_acks(&ack_path(path));
        let ack_len = std::fs::metadata(ack_path(path)).map_or(0, |m| m.len());
        let mut seg = Segment {
            path: path.to_path_buf(),
            len: file_len,
            records: 0,
            live: 0,
            live_entries: 0,
            unloaded: 0,
            unloaded_entries: 0,
            old: true,
            acked,
            damage_seen: HashSet::new(),
            ack_file: None,
            ack_len,
            origins: Vec::new(),
        };
        let mut at = 0;
        loop {
            match record::next(&file, at, file_len, false, &mut self.scratch)? {
                Found::Record { at: a, header, .. } => {
                    seg.records += 1;
                    if !seg.acked.contains(&a) {
                        seg.live += 1;
                        seg.live_entries += u64::from(header.entries);
                    }
                    at = a + HEADER as u64 + u64::from(header.len);
                }
                Found::Damage { at: a, len } => {
                    seg.damage_seen.insert(a);
                    findings.push(Finding::Damage {
                        path: path.to_path_buf(),
                        offset: a,
                        len,
                    });
                    at = a + len;
                }
                Found::End => break,
            }
        }
        seg.unloaded = seg.live;
        seg.unloaded_entries = seg.live_entries;
        if seg.live == 0 {
            remove_segment(&seg, findings);
            return Ok(None);
        }
        Ok(Some(seg))
    }

    /// The directory.
    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    /// Counts for `stats()`.
    pub(crate) fn counts(&self) -> Counts {
        let mut c = Counts::default();
        for s in self.segments.values() {
            c.bytes = c.bytes.saturating_add(s.len).saturating_add(s.ack_len);
            c.live += s.live;
            c.live_entries += s.live_entries;
            c.unloaded += s.unloaded;
            if s.old {
                c.unloaded_old += s.unloaded;
                c.unloaded_old_entries += s.unloaded_entries;
            }
        }
        c
    }

    /// Records waiting on disk (not loaded).
    pub(crate) fn backlog(&self) -> u64 {
        self.segments.values().map(|s| s.unloaded).sum()
    }

    /// Whether the spool rests after an I/O error (and says when that began to end).
    pub(crate) fn resting(&mut self, now: Instant) -> bool {
        match self.resting_until {
            Some(t) if now < t => true,
            Some(_) => {
                self.resting_until = None;
                false
            }
            None => false,
        }
    }

    /// Appends a payload's bytes. `load` says whether it goes to memory too (then the
    /// cursor passes it, which only happens with no backlog: the caller checks
    /// [`Spool::backlog`] under the same lock); otherwise it waits on disk.
    pub(crate) fn append(
        &mut self,
        header: Header,
        body: &[u8],
        load: bool,
        findings: &mut Vec<Finding>,
    ) -> Result<(RecordId, bool), AppendError> {
        if self.resting(Instant::now()) {
            return Err(AppendError::Resting);
        }
        let len = HEADER as u64 + body.len() as u64;
        let charge = len + ACK_ENTRY;
        let roll = match &self.active {
            Some((n, _)) => self
                .segments
                .get(n)
                .is_some_and(|s| s.len > 0 && s.len.saturating_add(len) > self.segment_bytes),
            None => true,
        };
        if self.charged.saturating_add(charge) > self.max_bytes {
            return Err(AppendError::Full);
        }
        if roll {
            self.roll(findings).map_err(|f| self.rest(f))?;
        }
        // Loaded only with nothing waiting on disk before it (oldest first).
        let caught_up = self.backlog() == 0;
        let load = load && caught_up;
        let Some((n, file)) = self.active.clone() else {
            return Err(AppendError::Full);
        };
        let Some(seg) = self.segments.get_mut(&n) else {
            return Err(AppendError::Full);
        };
        self.encoded.clear();
        record::encode(&header, body, &mut self.encoded);
        let offset = seg.len;
        if let Err(error) = file.write_all_at(&self.encoded, offset) {
            // Whatever part was written is overwritten by the next append, or, left at
            // the end of the file, read as a torn tail next time.
            let f = Finding::Io {
                path: seg.path.clone(),
                error,
            };
            return Err(self.rest(f));
        }
        seg.len += len;
        seg.records += 1;
        seg.live += 1;
        seg.live_entries += u64::from(header.entries);
        match seg.origins.last_mut() {
            Some(r)
                if r.source == header.source && r.first.saturating_add(r.count) == header.ord =>
            {
                r.count += 1;
            }
            _ => seg.origins.push(Run {
                source: header.source,
                first: header.ord,
                count: 1,
            }),
        }
        if !load {
            seg.unloaded += 1;
            seg.unloaded_entries += u64::from(header.entries);
        }
        self.charged = self.charged.saturating_add(charge);
        self.dirty = true;
        if caught_up {
            // Everything before it is loaded or released: the cursor moves up to it
            // (past it, if it is loaded too).
            self.cursor = RecordId {
                segment: n,
                offset: if load { offset + len } else { offset },
            };
        }
        if std::mem::take(&mut self.failed) {
            self.recovered = true;
        }
        Ok((RecordId { segment: n, offset }, load))
    }

    /// Whether a body of `len` bytes fits an empty spool at all (evicting others for one
    /// that does not would free space for nothing).
    pub(crate) fn could_hold(&self, len: usize) -> bool {
        (HEADER as u64)
            .saturating_add(len as u64)
            .saturating_add(ACK_ENTRY)
            <= self.max_bytes
    }

    /// The records lost since the last call (see [`Lost`]).
    pub(crate) fn take_lost(&mut self) -> Lost {
        std::mem::take(&mut self.lost)
    }

    /// Whether an append succeeded since the last I/O error (once).
    pub(crate) fn take_recovered(&mut self) -> bool {
        std::mem::take(&mut self.recovered)
    }

    /// Entries in the records waiting on disk.
    pub(crate) fn backlog_entries(&self) -> u64 {
        self.segments.values().map(|s| s.unloaded_entries).sum()
    }

    fn rest(&mut self, f: Finding) -> AppendError {
        self.failed = true;
        self.resting_until = Some(crate::clock::deadline_in(RETRY_AFTER_IO_ERROR));
        AppendError::Io(f)
    }

    /// Starts a new segment for appends (and removes the old one if it is done:
    /// what goes wrong there goes to `findings`).
    fn roll(&mut self, findings: &mut Vec<Finding>) -> Result<(), Finding> {
        let n = self.next_segment;
        let path = self.dir.join(segment_name(n));
        let file = OpenOptions::new()
            .create_new(true)
            .write(true)
            .read(true)
            .open(&path)
            .map_err(io_at(&path))?;
        self.next_segment = n.saturating_add(1);
        let file = Arc::new(file);
        if let Some((_, f)) = self.active.replace((n, file.clone())) {
            self.unsynced.push(f);
        }
        self.unsynced.push(file);
        self.dir_unsynced = true;
        self.segments.insert(
            n,
            Segment {
                path,
                len: 0,
                records: 0,
                live: 0,
                live_entries: 0,
                unloaded: 0,
                unloaded_entries: 0,
                old: false,
                acked: HashSet::new(),
                damage_seen: HashSet::new(),
                ack_file: None,
                ack_len: 0,
                origins: Vec::new(),
            },
        );
        // The cursor waited at the end of the old active segment (nothing after it),
        // or at a segment number not created yet: either way it moves on.
        self.settle_cursor();
        self.remove_finished(findings);
        Ok(())
    }

    /// Moves the cursor past the end of a finished (not active) segment to the next
    /// segment, and forgets the acks of segments it passed.
    fn settle_cursor(&mut self) {
        loop {
            let active = self.active.as_ref().map(|(n, _)| *n);
            let seg = self.segments.get_mut(&self.cursor.segment);
            match seg {
                Some(s) if self.cursor.offset >= s.len && Some(self.cursor.segment) != active => {
                    s.acked = HashSet::new();
                    s.damage_seen = HashSet::new();
                    // What it passes without reading back (damage found on the way,
                    // skipped and reported) is gone.
                    lose_unloaded(&mut self.lost, s);
                }
                Some(_) => return,
                None if Some(self.cursor.segment) == active => return,
                None => {}
            }
            let next = self
                .cursor
                .segment
                .checked_add(1)
                .and_then(|m| self.segments.range(m..).next());
            match next {
                Some((&n, _)) => {
                    self.cursor = RecordId {
                        segment: n,
                        offset: 0,
                    }
                }
                None => {
                    self.cursor = RecordId {
                        segment: active.unwrap_or(self.next_segment),
                        offset: self
                            .active
                            .as_ref()
                            .and_then(|(n, _)| self.segments.get(n))
                            .map_or(0, |s| s.len),
                    };
                    return;
                }
            }
        }
    }

    /// Reads the next record waiting on disk, if `fits` says the memory bounds have room
    /// for a body of its length, and moves the cursor past it. Damage on the way is
    /// skipped (and returned, if it was not reported at start-up).
    pub(crate) fn load_next(
        &mut self,
        fits: impl Fn(usize) -> bool,
        findings: &mut Vec<Finding>,
    ) -> Option<Loaded> {
        loop {
            self.settle_cursor();
            let n = self.cursor.segment;
            let seg = self.segments.get(&n)?;
            if seg.unloaded == 0 {
                // Nothing more of it is waiting (the rest was loaded on append).
                if self.active.as_ref().is_some_and(|(a, _)| *a == n) {
                    return None;
                }
                self.cursor.offset = seg.len;
                continue;
            }
            let file = match File::open(&seg.path) {
                Ok(f) => f,
                Err(error) => {
                    self.lose_segment(n, error, findings);
                    continue;
                }
            };
            let found = record::next(&file, self.cursor.offset, seg.len, false, &mut self.scratch);
            let seg_len = seg.len;
            match found {
                Err(error) => {
                    self.lose_segment(n, error, findings);
                    continue;
                }
                Ok(Found::End) => {
                    // The file lost records it had (truncated meanwhile): they are gone.
                    self.lose_rest(n, findings, seg_len);
                    continue;
                }
                Ok(Found::Damage { at, len }) => {
                    if let Some(s) = self.segments.get_mut(&n) {
                        if !s.damage_seen.contains(&at) {
                            findings.push(Finding::Damage {
                                path: s.path.clone(),
                                offset: at,
                                len,
                            });
                        }
                    }
                    self.cursor.offset = at + len;
                    continue;
                }
                Ok(Found::Record { at, header, .. }) => {
                    let next = at + HEADER as u64 + u64::from(header.len);
                    let acked = seg.acked.contains(&at);
                    if acked {
                        self.cursor.offset = next;
                        continue;
                    }
                    if !fits(header.len as usize) {
                        return None;
                    }
                    // Read again with its body (it was checked without keeping it).
                    let body = match record::next(&file, at, seg_len, true, &mut self.scratch) {
                        Ok(Found::Record { body: Some(b), .. }) => b,
                        _ => {
                            self.cursor.offset = next;
                            continue;
                        }
                    };
                    let old = seg.old;
                    if let Some(s) = self.segments.get_mut(&n) {
                        s.unloaded = s.unloaded.saturating_sub(1);
                        s.unloaded_entries =
                            s.unloaded_entries.saturating_sub(u64::from(header.entries));
                    }
                    self.cursor.offset = next;
                    return Some(Loaded {
                        id: RecordId {
                            segment: n,
                            offset: at,
                        },
                        header,
                        body,
                        replayed: old,
                    });
                }
            }
        }
    }

    /// A segment that cannot be read any more: what it still held is lost (reported).
    fn lose_segment(&mut self, n: u64, error: io::Error, findings: &mut Vec<Finding>) {
        if let Some(s) = self.segments.get(&n) {
            findings.push(Finding::Io {
                path: s.path.clone(),
                error,
            });
            let len = s.len;
            self.lose_rest(n, findings, len);
        }
    }

    /// The records of segment `n` not loaded yet are gone: released, and the cursor
    /// moves to the next segment.
    fn lose_rest(&mut self, n: u64, findings: &mut Vec<Finding>, len: u64) {
        if let Some(s) = self.segments.get_mut(&n) {
            if s.unloaded > 0 && len > self.cursor.offset {
                findings.push(Finding::Damage {
                    path: s.path.clone(),
                    offset: self.cursor.offset,
                    len: len - self.cursor.offset,
                });
            }
            lose_unloaded(&mut self.lost, s);
            s.len = s.len.max(len);
        }
        self.cursor.offset = len;
        self.settle_cursor();
        self.remove_finished(findings);
    }

    /// Releases records that reached a final state (acknowledged, dropped,
    /// dead-lettered): notes them in their segments' sidecars, and removes segments with
    /// nothing left.
    pub(crate) fn release(&mut self, ids: &mut Vec<(RecordId, u32)>, findings: &mut Vec<Finding>) {
        ids.sort_unstable();
        let mut i = 0;
        while i < ids.len() {
            let n = ids[i].0.segment;
            let mut j = i;
            while j < ids.len() && ids[j].0.segment == n {
                j += 1;
            }
            if let Some(seg) = self.segments.get_mut(&n) {
                let released = (j - i) as u64;
                seg.live = seg.live.saturating_sub(released);
                let entries: u64 = ids[i..j].iter().map(|(_, e)| u64::from(*e)).sum();
                seg.live_entries = seg.live_entries.saturating_sub(entries);
                if seg.live > 0 {
                    // Others remain: note these, so a restart does not send them again.
                    let mut entries = Vec::with_capacity((j - i) * ACK_ENTRY as usize);
                    for (id, _) in &ids[i..j] {
                        let off = id.offset.to_le_bytes();
                        entries.extend_from_slice(&off);
                        entries.extend_from_slice(&crc32fast::hash(&off).to_le_bytes());
                    }
                    if let Err(error) = append_ack(seg, &entries) {
                        findings.push(Finding::Io {
                            path: ack_path(&seg.path),
                            error,
                        });
                    }
                }
            }
            i = j;
        }
        ids.clear();
        self.remove_finished(findings);
        self.retire_active(findings);
    }

    /// Retires the active segment once everything in it is released and loaded: it is
    /// removed like any finished segment (the next append starts a new one), so that a
    /// spool drained while the sender runs is back to its empty size. (A segment's
    /// number is never used again: a sidecar that outlived its segment after a power cut
    /// can never mark a newer record released.)
    fn retire_active(&mut self, findings: &mut Vec<Finding>) {
        let Some((n, _)) = &self.active else {
            return;
        };
        let n = *n;
        if self
            .segments
            .get(&n)
            .is_none_or(|seg| seg.live > 0 || seg.len == 0)
        {
            return;
        }
        if let Some((_, f)) = self.active.take() {
            self.unsynced.retain(|g| !Arc::ptr_eq(&f, g));
        }
        self.settle_cursor();
        self.remove_finished(findings);
    }

    /// Removes the segments that hold nothing live, that appends no longer go to, and
    /// that the cursor is not reading (it passed them, or has not reached them: every
    /// record of one ahead of it was evicted).
    fn remove_finished(&mut self, findings: &mut Vec<Finding>) {
        let active = self.active.as_ref().map(|(n, _)| *n);
        let cursor = self.cursor;
        let done: Vec<u64> = self
            .segments
            .iter()
            .filter(|(n, s)| {
                s.live == 0
                    && Some(**n) != active
                    && (**n != cursor.segment || cursor.offset >= s.len)
            })
            .map(|(n, _)| *n)
            .collect();
        for n in done {
            if let Some(seg) = self.segments.remove(&n) {
                self.charged = self.charged.saturating_sub(seg.charge());
                remove_segment(&seg, findings);
            }
        }
        if !self.segments.contains_key(&self.cursor.segment) {
            self.settle_cursor();
        }
    }

    /// Makes room in a full spool for `DropOldest`: evicts every record of the oldest
    /// segment that holds only records waiting on disk (none loaded and in flight, so
    /// that removing it frees its bytes), and removes it. Returns the evicted records
    /// (empty when no segment can go: the oldest records are in memory, or only the
    /// active segment holds any). Damage on the way is skipped and reported.
    pub(crate) fn evict_oldest(&mut self, findings: &mut Vec<Finding>) -> Vec<Loaded> {
        let active = self.active.as_ref().map(|(n, _)| *n);
        let Some((&n, seg)) = self
            .segments
            .iter()
            .find(|(n, s)| Some(**n) != active && s.live > 0 && s.live == s.unloaded)
        else {
            return Vec::new();
        };
        let mut evicted = Vec::new();
        // Its records before the cursor were read back and released already.
        let from = if self.cursor.segment == n {
            self.cursor.offset
        } else {
            0
        };
        match File::open(&seg.path) {
            Ok(file) => {
                let mut at = from;
                loop {
                    match record::next(&file, at, seg.len, true, &mut self.scratch) {
                        Ok(Found::Record {
                            at: a,
                            header,
                            body,
                        }) => {
                            at = a + HEADER as u64 + u64::from(header.len);
                            if let (false, Some(body)) = (seg.acked.contains(&a), body) {
                                evicted.push(Loaded {
                                    id: RecordId {
                                        segment: n,
                                        offset: a,
                                    },
                                    header,
                                    body,
                                    replayed: seg.old,
                                });
                            }
                        }
                        Ok(Found::Damage { at: a, len }) => {
                            if !seg.damage_seen.contains(&a) {
                                findings.push(Finding::Damage {
                                    path: seg.path.clone(),
                                    offset: a,
                                    len,
                                });
                            }
                            at = a + len;
                        }
                        Ok(Found::End) => break,
                        Err(error) => {
                            findings.push(Finding::Io {
                                path: seg.path.clone(),
                                error,
                            });
                            break;
                        }
                    }
                }
            }
            Err(error) => findings.push(Finding::Io {
                path: seg.path.clone(),
                error,
            }),
        }
        if let Some(s) = self.segments.get_mut(&n) {
            // Whatever could not be read is gone with the segment (reported above).
            let read = evicted.len() as u64;
            if s.live > read {
                let entries: u64 = evicted.iter().map(|l| u64::from(l.header.entries)).sum();
                lose(
                    &mut self.lost,
                    s,
                    s.live - read,
                    s.live_entries.saturating_sub(entries),
                );
            }
            s.live = 0;
            s.live_entries = 0;
            s.unloaded = 0;
            s.unloaded_entries = 0;
            if self.cursor.segment == n {
                self.cursor.offset = s.len;
            }
        }
        self.remove_finished(findings);
        evicted
    }

    /// Whether there is anything written since the last sync.
    pub(crate) fn dirty(&self) -> bool {
        self.dirty
    }

    /// What [`ToSync::run`] must sync to make every append so far durable; clears the
    /// dirty marks (the caller syncs with this lock released).
    pub(crate) fn take_unsynced(&mut self) -> ToSync {
        let mut files = std::mem::take(&mut self.unsynced);
        if let Some((_, f)) = &self.active {
            if self.dirty && !files.iter().any(|g| Arc::ptr_eq(f, g)) {
                files.push(f.clone());
            }
        }
        self.dirty = false;
        ToSync {
            files,
            dir: std::mem::take(&mut self.dir_unsynced).then(|| self.dir.clone()),
        }
    }

    /// Marks what a failed sync was to sync as unsynced again, so that the next sync
    /// (the next interval's, or the next `sync`) tries it again.
    pub(crate) fn unsynced_again(&mut self, failed: ToSync) {
        for f in failed.files {
            if !self.unsynced.iter().any(|g| Arc::ptr_eq(&f, g)) {
                self.unsynced.push(f);
            }
        }
        self.dir_unsynced |= failed.dir.is_some();
        self.dirty = true;
        self.sync_failed = true;
    }

    /// Whether a sync failed since the spool was opened.
    pub(crate) fn sync_failed(&self) -> bool {
        self.sync_failed
    }
}

/// Files to sync (see [`Spool::take_unsynced`]).
pub(crate) struct ToSync {
    files: Vec<Arc<File>>,
    dir: Option<PathBuf>,
}

impl ToSync {
    /// Syncs the files' data, then the directory (so new segments' names are durable).
    pub(crate) fn run(&self) -> io::Result<()> {
        for f in &self.files {
            f.sync_data()?;
        }
        if let Some(dir) = &self.dir {
            File::open(dir)?.sync_all()?;
        }
        Ok(())
    }

    /// Whether there is nothing to sync.
    pub(crate) fn is_empty(&self) -> bool {
        self.files.is_empty() && self.dir.is_none()
    }
}

fn append_ack(seg: &mut Segment, entries: &[u8]) -> io::Result<()> {
    if seg.ack_file.is_none() {
        seg.ack_file = Some(
            OpenOptions::new()
                .create(true)
                .append(true)
                .open(ack_path(&seg.path))?,
        );
    }
    if let Some(f) = &mut seg.ack_file {
        f.write_all(entries)?;
        seg.ack_len += entries.len() as u64;
    }
    Ok(())
}

/// The offsets a sidecar lists (entries whose checksum fails are ignored: at worst a
/// record is sent again, never skipped).
fn read_acks(path: &Path) -> HashSet<u64> {
    let Ok(bytes) = std::fs::read(path) else {
        return HashSet::new();
    };
    bytes
        .chunks_exact(ACK_ENTRY as usize)
        .filter_map(|e| {
            let (off, crc) = e.split_at(8);
            let mut c = [0u8; 4];
            c.copy_from_slice(crc);
            (crc32fast::hash(off) == u32::from_le_bytes(c)).then(|| {
                let mut o = [0u8; 8];
                o.copy_from_slice(off);
                u64::from_le_bytes(o)
            })
        })
        .collect()
}

/// The records of `seg` not read back yet are gone: noted as lost, and no longer live.
fn lose_unloaded(lost: &mut Lost, seg: &mut Segment) {
    if seg.unloaded > 0 {
        lose(lost, seg, seg.unloaded, seg.unloaded_entries);
    }
    seg.live = seg.live.saturating_sub(seg.unloaded);
    seg.live_entries = seg.live_entries.saturating_sub(seg.unloaded_entries);
    seg.unloaded = 0;
    seg.unloaded_entries = 0;
}

/// Notes `count` records of `seg` (with `entries`) as lost: an earlier run's by number,
/// this run's by the runs of origins the segment holds.
fn lose(lost: &mut Lost, seg: &Segment, count: u64, entries: u64) {
    if seg.old {
        lost.old = lost.old.saturating_add(count);
        lost.old_entries = lost.old_entries.saturating_add(entries);
    } else {
        lost.runs.extend_from_slice(&seg.origins);
    }
}

/// Removes a segment and its sidecar (the segment first: a sidecar left alone is
/// removed at the next start; a segment left without its sidecar only sends again).
fn remove_segment(seg: &Segment, findings: &mut Vec<Finding>) {
    if let Err(error) = std::fs::remove_file(&seg.path) {
        if error.kind() != io::ErrorKind::NotFound {
            findings.push(Finding::Io {
                path: seg.path.clone(),
                error,
            });
        }
    }
    let ack = ack_path(&seg.path);
    if let Err(error) = std::fs::remove_file(&ack) {
        if error.kind() != io::ErrorKind::NotFound {
            findings.push(Finding::Io { path: ack, error });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A temp directory, removed when dropped (also for `record`'s tests).
    pub(super) struct Dir(pub(super) PathBuf);
    impl Dir {
        pub(super) fn new() -> Dir {
            use std::sync::atomic::{AtomicU32, Ordering};
            static N: AtomicU32 = AtomicU32::new(0);
            let p = std::env::temp_dir().join(format!(
                "logsender-spool-{}-{}",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed)
            ));
            let _ = std::fs::remove_dir_all(&p);
            Dir(p)
        }
    }
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn head(n: u64, len: usize) -> Header {
        Header {
            len: len as u32,
            entries: 1,
            source: 1,
            ord: n,
            seq: n,
            otlp: false,
        }
    }

    fn open(d: &Dir, max: u64, seg: u64) -> (Spool, Backlog, Vec<Finding>) {
        match Spool::open(&d.0, max, seg) {
            Ok(x) => x,
            Err(_) => panic!("open failed"),
        }
    }

    fn files_bytes(d: &Dir) -> u64 {
        std::fs::read_dir(&d.0)
            .unwrap()
            .map(|e| e.unwrap().metadata().unwrap().len())
            .sum()
    }

    fn drain(s: &mut Spool) -> Vec<Loaded> {
        let mut out = Vec::new();
        let mut f = Vec::new();
        while let Some(l) = s.load_next(|_| true, &mut f) {
            out.push(l);
        }
        out
    }

    #[test]
    fn a_restart_replays_what_was_not_released_oldest_first() {
        let d = Dir::new();
        {
            let (mut s, backlog, f) = open(&d, 1 << 20, 200);
            assert_eq!(backlog.payloads, 0);
            assert!(f.is_empty());
            let mut ids = Vec::new();
            for n in 0..20 {
                ids.push(
                    s.append(head(n, 30), &[n as u8; 30], false, &mut Vec::new())
                        .unwrap()
                        .0,
                );
            }
            // Released out of order: 3 and 7, and all of the first segment's.
            let mut rel: Vec<_> = [3, 7, 0, 1, 2].iter().map(|&i| (ids[i], 1)).collect();
            // Loaded first (the cursor must pass a record before its segment can go).
            let loaded = drain(&mut s);
            assert_eq!(loaded.len(), 20);
            s.release(&mut rel, &mut Vec::new());
            assert_eq!(s.counts().live, 15);
        }
        let (mut s, backlog, f) = open(&d, 1 << 20, 200);
        assert!(f.is_empty(), "{f:?}");
        assert_eq!(backlog.payloads, 15);
        let ords: Vec<u64> = drain(&mut s).iter().map(|l| l.header.ord).collect();
        let expect: Vec<u64> = (0..20).filter(|n| ![0, 1, 2, 3, 7].contains(n)).collect();
        assert_eq!(ords, expect);
    }

    #[test]
    fn space_comes_back_after_a_drain_and_the_limit_holds() {
        let d = Dir::new();
        let (mut s, _, _) = open(&d, 4000, 500);
        let empty = files_bytes(&d);
        let mut ids = Vec::new();
        loop {
            match s.append(head(0, 100), &[1; 100], false, &mut Vec::new()) {
                Ok((id, _)) => ids.push(id),
                Err(AppendError::Full) => break,
                Err(e) => panic!("{e:?}"),
            }
            assert!(files_bytes(&d) <= 4000);
        }
        assert!(ids.len() >= 20, "{}", ids.len());
        let loaded = drain(&mut s);
        assert_eq!(loaded.len(), ids.len());
        s.release(
            &mut ids.iter().map(|&id| (id, 1)).collect(),
            &mut Vec::new(),
        );
        // Everything released and loaded: the active segment goes too.
        assert_eq!(files_bytes(&d), empty);
        assert!(s.segments.is_empty());
        assert_eq!(s.counts().live_entries, 0);
        // Everything released: the next append rolls, the last old segment goes.
        let (id, _) = s
            .append(head(1, 10), &[2; 10], true, &mut Vec::new())
            .unwrap();
        s.release(&mut vec![(id, 1)], &mut Vec::new());
        assert_eq!(files_bytes(&d), empty);
        let _ = s
            .append(head(2, 10), &[2; 10], true, &mut Vec::new())
            .unwrap();
        assert_eq!(s.segments.len(), 1);
    }

    #[test]
    fn a_full_spool_evicts_its_oldest_segment_on_disk_only() {
        let d = Dir::new();
        let (mut s, _, _) = open(&d, 4000, 500);
        let mut n = 0;
        while s
            .append(head(n, 100), &[n as u8; 100], n < 2, &mut Vec::new())
            .is_ok()
        {
            n += 1;
        }
        let per_seg = 500 / (HEADER as u64 + 100);
        // The first segment holds two records loaded (in flight): it cannot go. The
        // second, on disk only, goes whole.
        let before = s.counts();
        let gone = s.evict_oldest(&mut Vec::new());
        let ords: Vec<u64> = gone.iter().map(|l| l.header.ord).collect();
        assert_eq!(ords, (per_seg..2 * per_seg).collect::<Vec<_>>());
        assert!(gone.iter().all(|l| l.body == vec![l.header.ord as u8; 100]));
        let after = s.counts();
        assert_eq!(after.live, before.live - per_seg);
        assert_eq!(after.live_entries, before.live_entries - per_seg);
        assert!(after.bytes < before.bytes);
        // Room again; and what waits on disk is read on, oldest first, past the gap.
        s.append(head(n, 100), &[n as u8; 100], false, &mut Vec::new())
            .unwrap();
        let loaded: Vec<u64> = drain(&mut s).iter().map(|l| l.header.ord).collect();
        let want: Vec<u64> = (2..per_seg).chain(2 * per_seg..=n).collect();
        assert_eq!(loaded, want);
        assert!(files_bytes(&d) <= 4000);
    }

    #[test]
    fn eviction_never_takes_records_read_back_and_released_before() {
        let d = Dir::new();
        let (mut s, _, _) = open(&d, 4000, 500);
        let mut ids = Vec::new();
        while let Ok((id, _)) = s.append(
            head(ids.len() as u64, 100),
            &[1; 100],
            false,
            &mut Vec::new(),
        ) {
            ids.push(id);
        }
        // The first two records are read back and released (acknowledged): the first
        // segment's rest still waits on disk, so it can be evicted, but only its rest.
        let mut f = Vec::new();
        let first: Vec<u64> = (0..2)
            .filter_map(|_| s.load_next(|_| true, &mut f))
            .map(|l| l.header.ord)
            .collect();
        assert_eq!(first, [0, 1]);
        s.release(&mut vec![(ids[0], 1), (ids[1], 1)], &mut f);
        let per_seg = 500 / (HEADER as u64 + 100);
        let gone: Vec<u64> = s
            .evict_oldest(&mut f)
            .iter()
            .map(|l| l.header.ord)
            .collect();
        assert_eq!(gone, (2..per_seg).collect::<Vec<_>>());
        assert!(f.is_empty(), "{f:?}");
        assert!(s.take_lost().is_empty());
        // And reading goes on with the next segment.
        assert_eq!(drain(&mut s)[0].header.ord, per_seg);
    }

    #[test]
    fn a_second_open_of_the_same_directory_is_refused() {
        let d = Dir::new();
        let _first = open(&d, 1 << 20, 1 << 16);
        assert!(matches!(
            Spool::open(&d.0, 1 << 20, 1 << 16),
            Err(OpenError::Locked(_))
        ));
    }

    #[test]
    fn damage_and_missing_files_are_reported_and_skipped() {
        let d = Dir::new();
        {
            let (mut s, _, _) = open(&d, 1 << 20, 300);
            for n in 0..30 {
                s.append(head(n, 40), &[n as u8; 40], false, &mut Vec::new())
                    .unwrap();
            }
        }
        let mut segs: Vec<PathBuf> = std::fs::read_dir(&d.0)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "seg"))
            .collect();
        segs.sort();
        assert!(segs.len() >= 4);
        // Flip a byte in the first, cut the second short, remove the third.
        let mut b = std::fs::read(&segs[0]).unwrap();
        b[HEADER + 5] ^= 1;
        std::fs::write(&segs[0], &b).unwrap();
        let b = std::fs::read(&segs[1]).unwrap();
        std::fs::write(&segs[1], &b[..b.len() - 7]).unwrap();
        std::fs::remove_file(&segs[2]).unwrap();
        let (mut s, backlog, f) = open(&d, 1 << 20, 300);
        let damage: Vec<_> = f
            .iter()
            .filter_map(|f| match f {
                Finding::Damage { path, offset, .. } => Some((path.clone(), *offset)),
                Finding::Io { .. } => None,
            })
            .collect();
        assert_eq!(damage.len(), 2, "{f:?}");
        assert_eq!(damage[0], (segs[0].clone(), 0));
        assert_eq!(damage[1].0, segs[1]);
        let per_seg = 300 / (HEADER as u64 + 40);
        let expect = 30 - 1 - 1 - per_seg;
        assert_eq!(backlog.payloads, expect);
        let loaded = drain(&mut s);
        assert_eq!(loaded.len() as u64, expect);
        for l in &loaded {
            assert_eq!(l.body, vec![l.header.ord as u8; 40]);
        }
    }
}
