//! The spool's record format, and reading it back over damage.
//!
//! A segment file is a sequence of records, each
//! `magic u32 | len u32 | entries u32 | source u32 | ord u64 | seq u64 | crc u32 | body`
//! (little-endian; `body` is the payload's wire bytes, `len` of them; `crc` is CRC-32
//! of everything after the magic up to the crc, then of the body). A record is intact
//! only if its magic, its length and its checksum all agree, so a torn tail or flipped
//! bytes are found, and the next intact record after damage is found again by looking
//! for the magic at every later byte.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

/// Marks the start of a record whose body is GoSight wire bytes ("LSP1").
const MAGIC: u32 = 0x3150_534c;

/// Marks the start of a record whose body is OTLP wire bytes ("LSO1"): one or more
/// `ResourceLogs` records of an `ExportLogsServiceRequest`.
const MAGIC_OTLP: u32 = 0x314f_534c;

/// Bytes of a record before its body.
pub(crate) const HEADER: usize = 36;

/// The fields of a record besides its body.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Header {
    pub(crate) len: u32,
    pub(crate) entries: u32,
    /// The `Origin` of the payload in the run that wrote it (meaningless in another run).
    pub(crate) source: u32,
    pub(crate) ord: u64,
    /// The writing run's intake order.
    pub(crate) seq: u64,
    /// The body is OTLP's bytes (else GoSight's); the record's magic says which.
    pub(crate) otlp: bool,
}

/// Appends one record of `body` to `out`.
pub(crate) fn encode(header: &Header, body: &[u8], out: &mut Vec<u8>) {
    let start = out.len();
    let magic = if header.otlp { MAGIC_OTLP } else { MAGIC };
    out.extend_from_slice(&magic.to_le_bytes());
    out.extend_from_slice(&header.len.to_le_bytes());
    out.extend_from_slice(&header.entries.to_le_bytes());
    out.extend_from_slice(&header.source.to_le_bytes());
    out.extend_from_slice(&header.ord.to_le_bytes());
    out.extend_from_slice(&header.seq.to_le_bytes());
    let mut crc = crc32fast::Hasher::new();
    crc.update(&out[start + 4..]);
    crc.update(body);
    out.extend_from_slice(&crc.finalize().to_le_bytes());
    out.extend_from_slice(body);
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(a)
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

/// What is found at a position of a segment.
#[derive(Debug)]
pub(crate) enum Found {
    /// An intact record starting at `at` (its body read only if asked for).
    Record {
        at: u64,
        header: Header,
        body: Option<Vec<u8>>,
    },
    /// `len` bytes from `at` that hold no intact record: a torn or corrupt record
    /// (reading goes on after them).
    Damage { at: u64, len: u64 },
    /// Nothing more in the segment.
    End,
}

/// Reads the intact record at `at`, if there is one (its body read in any case, to
/// check it; returned if `keep_body`).
fn record_at(
    file: &File,
    at: u64,
    file_len: u64,
    keep_body: bool,
    scratch: &mut Vec<u8>,
) -> io::Result<Option<(Header, Option<Vec<u8>>)>> {
    let header_end = at.saturating_add(HEADER as u64);
    if header_end > file_len {
        return Ok(None);
    }
    let mut head = [0u8; HEADER];
    file.read_exact_at(&mut head, at)?;
    let otlp = match u32_at(&head, 0) {
        MAGIC => false,
        MAGIC_OTLP => true,
        _ => return Ok(None),
    };
    let header = Header {
        otlp,
        len: u32_at(&head, 4),
        entries: u32_at(&head, 8),
        source: u32_at(&head, 12),
        ord: u64_at(&head, 16),
        seq: u64_at(&head, 24),
    };
    if header_end.saturating_add(u64::from(header.len)) > file_len {
        return Ok(None);
    }
    scratch.clear();
    scratch.resize(header.len as usize, 0);
    file.read_exact_at(scratch, header_end)?;
    let mut crc = crc32fast::Hasher::new();
    crc.update(&head[4..32]);
    crc.update(scratch);
    if crc.finalize() != u32_at(&head, 32) {
        return Ok(None);
    }
    let body = keep_body.then(|| std::mem::take(scratch));
    Ok(Some((header, body)))
}

/// How much of a file is searched for the magic at once, after damage.
const SEARCH_WINDOW: usize = 64 << 10;

/// What is at `at` in `file` (`file_len` bytes long): an intact record, or the damage
/// that runs up to the next intact record (or the end), or the end.
pub(crate) fn next(
    file: &File,
    at: u64,
    file_len: u64,
    keep_body: bool,
    scratch: &mut Vec<u8>,
) -> io::Result<Found> {
    if at >= file_len {
        return Ok(Found::End);
    }
    if let Some((header, body)) = record_at(file, at, file_len, keep_body, scratch)? {
        return Ok(Found::Record { at, header, body });
    }
    // Damage: the next intact record is the first position after `at` where one starts.
    let magics = [MAGIC.to_le_bytes(), MAGIC_OTLP.to_le_bytes()];
    let mut window = vec![0u8; SEARCH_WINDOW];
    let mut from = at.saturating_add(1);
    while from < file_len {
        let n = usize::try_from((file_len - from).min(SEARCH_WINDOW as u64)).unwrap_or(0);
        file.read_exact_at(&mut window[..n], from)?;
        let mut i = 0;
        while i + 4 <= n {
            if magics.iter().any(|m| window[i..i + 4] == *m) {
                let p = from + i as u64;
                if record_at(file, p, file_len, false, scratch)?.is_some() {
                    return Ok(Found::Damage { at, len: p - at });
                }
            }
            i += 1;
        }
        // A magic may straddle two windows.
        if n < 4 {
            break;
        }
        from += (n - 3) as u64;
    }
    Ok(Found::Damage {
        at,
        len: file_len - at,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spool::tests::Dir;
    use std::io::Write;

    fn header(len: usize, n: u64) -> Header {
        Header {
            len: len as u32,
            entries: 3,
            source: 1,
            ord: n,
            seq: n,
            // Both kinds of record, in turn: damage is found over either magic.
            otlp: n % 2 == 1,
        }
    }

    fn file_of(bytes: &[u8]) -> (Dir, File) {
        let dir = Dir::new();
        std::fs::create_dir_all(&dir.0).unwrap();
        let path = dir.0.join("f");
        std::fs::File::create(&path)
            .unwrap()
            .write_all(bytes)
            .unwrap();
        let f = File::open(&path).unwrap();
        (dir, f)
    }

    /// Records (ord, body) and damage (offset, len).
    type ReadBack = (Vec<(u64, Vec<u8>)>, Vec<(u64, u64)>);

    /// Every record read back from `bytes`, and the damage found.
    fn read_all(bytes: &[u8]) -> ReadBack {
        let (_d, f) = file_of(bytes);
        let mut at = 0;
        let (mut records, mut damage) = (Vec::new(), Vec::new());
        let mut scratch = Vec::new();
        loop {
            match next(&f, at, bytes.len() as u64, true, &mut scratch).unwrap() {
                Found::Record {
                    at: a,
                    header,
                    body,
                } => {
                    records.push((header.ord, body.unwrap()));
                    at = a + (HEADER as u64) + u64::from(header.len);
                }
                Found::Damage { at: a, len } => {
                    damage.push((a, len));
                    at = a + len;
                }
                Found::End => break,
            }
        }
        (records, damage)
    }

    fn spool_of(bodies: &[Vec<u8>]) -> (Vec<u8>, Vec<(u64, u64)>) {
        let mut out = Vec::new();
        let mut spans = Vec::new();
        for (n, b) in bodies.iter().enumerate() {
            let start = out.len() as u64;
            encode(&header(b.len(), n as u64), b, &mut out);
            spans.push((start, out.len() as u64));
        }
        (out, spans)
    }

    #[test]
    fn records_read_back_whole() {
        let bodies: Vec<Vec<u8>> = (0..5).map(|n| vec![n as u8; n * 7]).collect();
        let (bytes, _) = spool_of(&bodies);
        let (records, damage) = read_all(&bytes);
        assert!(damage.is_empty());
        assert_eq!(records.len(), 5);
        for (n, (ord, body)) in records.iter().enumerate() {
            assert_eq!(*ord, n as u64);
            assert_eq!(body, &bodies[n]);
        }
    }

    /// Every byte of a small spool, flipped in turn and then cut off there: the record
    /// holding that byte is reported as damage and skipped, every other record is read
    /// back intact, and nothing is read that was not written.
    #[test]
    fn damage_at_every_byte_costs_only_its_record() {
        // Bodies that contain the magic too, to try the search after damage.
        let mut bodies: Vec<Vec<u8>> = (0..4).map(|n| vec![0xA0 + n as u8; 9 + n * 5]).collect();
        bodies[2].extend_from_slice(&MAGIC.to_le_bytes());
        bodies[2].extend_from_slice(&MAGIC_OTLP.to_le_bytes());
        let (bytes, spans) = spool_of(&bodies);
        let holder = |pos: u64| {
            spans
                .iter()
                .position(|(s, e)| pos >= *s && pos < *e)
                .unwrap()
        };
        for pos in 0..bytes.len() {
            let hit = holder(pos as u64);
            // A flipped byte.
            let mut flipped = bytes.clone();
            flipped[pos] ^= 0x5A;
            let (records, damage) = read_all(&flipped);
            let ords: Vec<u64> = records.iter().map(|r| r.0).collect();
            let expect: Vec<u64> = (0..bodies.len() as u64)
                .filter(|n| *n != hit as u64)
                .collect();
            assert_eq!(ords, expect, "flip at {pos}");
            for (ord, body) in &records {
                assert_eq!(body, &bodies[*ord as usize], "flip at {pos}");
            }
            assert_eq!(damage.len(), 1, "flip at {pos}: {damage:?}");
            assert_eq!(damage[0].0, spans[hit].0, "flip at {pos}");
            // Cut off at that byte (a torn tail).
            let (records, damage) = read_all(&bytes[..pos]);
            assert_eq!(records.len(), hit, "cut at {pos}");
            let torn = pos as u64 > spans[hit].0;
            assert_eq!(damage.len(), usize::from(torn), "cut at {pos}");
        }
    }
}
