//! The hand-written OTLP encoder (`otlp::encode_resource_logs`, `otlp::encode_payload`)
//! against the generated one (`otlp::encode(&otlp::to_request(p))`) on thousands of
//! random payloads (the wire-equivalence test's generator): the same bytes; payloads
//! one after another make one request; a payload over a cap is cut where `otlp::split`
//! cuts it, each part under the cap; `otlp::parts` finds the parts again, and neither it
//! nor `otlp::decode` panics on truncated or garbled bytes. The entry level's pieces
//! (`otlp::entry_record`, `otlp::Frame`) join into the same bytes as the payload encoded
//! whole.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use logsender::otlp;
use logsender::{Error, Level, LogEntry, LogPayload};

#[path = "support/random.rs"]
mod random;

use random::{expected_back, random_payload, representable, Rng};

fn random_model(rng: &mut Rng) -> LogPayload {
    LogPayload::try_from(random_payload(rng, false)).expect("a valid message converts")
}

fn generated(p: &LogPayload) -> Vec<u8> {
    otlp::encode(&otlp::to_request(p)).expect("the generated encoder")
}

/// The parts of `bytes` decoded, and merged back into one payload (the parts of a
/// split payload carry the same resource; their entries are the payload's, in order).
fn merged(bytes: &[u8]) -> LogPayload {
    let mut payloads = otlp::decode(bytes).expect("decodes").into_iter();
    let mut first = payloads.next().expect("at least one part");
    for p in payloads {
        assert_eq!(
            (
                &p.agent_id,
                &p.host_id,
                &p.hostname,
                &p.endpoint_id,
                &p.meta
            ),
            (
                &first.agent_id,
                &first.host_id,
                &first.hostname,
                &first.endpoint_id,
                &first.meta
            ),
            "a part with another resource"
        );
        first.logs.extend(p.logs);
    }
    first
}

#[test]
fn hand_encoder_matches_the_generated_one_on_random_payloads() {
    let mut rng = Rng(0x07e1_e7c0_de42);
    let (mut bytes_total, mut entries) = (0, 0);
    for i in 0..4000 {
        let p = random_model(&mut rng);
        let expected = generated(&p);
        // Appends: whatever the buffer held stays in front.
        let mut out = vec![0xee; i % 3];
        let before = out.len();
        otlp::encode_resource_logs(&p, &mut out);
        assert!(out[..before].iter().all(|b| *b == 0xee), "payload {i}");
        assert_eq!(out[before..], expected[..], "payload {i}: bytes differ");
        let whole = otlp::encode_payload(&p, usize::MAX).expect("no cap");
        assert_eq!(whole, expected, "payload {i}: encode_payload differs");
        // Under a cap it just fits: the same single record.
        assert_eq!(
            otlp::encode_payload(&p, expected.len()).expect("fits"),
            expected,
            "payload {i}"
        );
        assert_eq!(
            otlp::parts(&whole).collect::<Vec<_>>(),
            vec![0..whole.len()],
            "payload {i}"
        );
        bytes_total += expected.len();
        entries += p.logs.len();
    }
    println!("4000 payloads, {entries} entries, {bytes_total} bytes compared");
    assert!(entries > 10_000, "{entries}");
}

#[test]
fn records_joined_behind_a_frame_are_the_payload_encoded_whole() {
    let mut rng = Rng(0xf4a3_e0e1);
    let mut stripped = 0;
    for i in 0..3000 {
        let model = random_model(&mut rng);
        let mut template = model.clone();
        let entries = std::mem::take(&mut template.logs);
        let records: Vec<Vec<u8>> = entries.iter().map(otlp::entry_record).collect();
        let frame = otlp::Frame::of(&template);
        // A template without a timestamp is stamped with the time given; one OTLP
        // writes as 0 (at or before 1970) makes records without the field.
        let now = UNIX_EPOCH + Duration::new(1_700_000_000, 5);
        let mut stamped = model.clone();
        stamped.timestamp.get_or_insert(now);
        stripped += usize::from(representable(stamped.timestamp).is_none());
        let assembled = frame.assemble(&records, now);
        assert_eq!(
            assembled,
            otlp::encode_payload(&stamped, usize::MAX).unwrap(),
            "payload {i}: assembled bytes differ"
        );
        let records_len: usize = records.iter().map(Vec::len).sum();
        assert!(
            assembled.len() <= frame.overhead() + records_len,
            "payload {i}"
        );
    }
    assert!(stripped > 300, "{stripped}");
    // Records it did not make are copied as they are, never a panic.
    let frame = otlp::Frame::of(&LogPayload::from_host("h"));
    let junk = vec![
        vec![],
        vec![0x12],
        vec![0x12, 0x05, 1],
        vec![0x12, 0x09, 0x59, 0, 0],
    ];
    let bytes = frame.assemble(&junk, SystemTime::now());
    let tail: Vec<u8> = junk.concat();
    assert!(bytes.ends_with(&tail));
}

#[test]
fn fixed_cases_match_the_generated_encoder() {
    let t = UNIX_EPOCH + Duration::new(1_700_000_000, 5);
    let mut p = LogPayload::from_host("agent-1");
    p.timestamp = Some(t);
    p.logs = vec![
        // An empty entry: no time, no level, an empty body.
        LogEntry::default(),
        // Every severity, a negative pid, a level that names no severity.
        LogEntry::new(Level::Emergency, "").with_pid(-1),
        LogEntry {
            level: "verbose".into(),
            pid: i32::MIN,
            timestamp: Some(UNIX_EPOCH - Duration::from_secs(1)),
            ..Default::default()
        },
        // A timestamp past 2554 saturates to u64::MAX nanoseconds.
        LogEntry::new(Level::Info, "far").with_timestamp(UNIX_EPOCH + Duration::from_secs(1 << 40)),
        // Fields under taken keys and an empty key, a long message (two-byte lengths).
        LogEntry::new(Level::Warning, "m".repeat(20_000))
            .with_field("source", "escaped")
            .with_field("", "empty key")
            .with_field("gosight.x", "escaped too")
            .with_tag("", "")
            .with_meta(Default::default()),
    ];
    assert_eq!(otlp::encode_payload(&p, usize::MAX).unwrap(), generated(&p));
    // No meta (the marker), no identity, no entries.
    for q in [LogPayload::default(), LogPayload::from_host("")] {
        assert_eq!(otlp::encode_payload(&q, usize::MAX).unwrap(), generated(&q));
    }
}

#[test]
fn payloads_one_after_another_are_one_request() {
    let mut rng = Rng(0xc0_ca7e_4a7e);
    for round in 0..300 {
        let n = 1 + rng.below(8) as usize;
        let payloads: Vec<LogPayload> = (0..n).map(|_| random_model(&mut rng)).collect();
        let mut bytes = Vec::new();
        let mut ends = Vec::new();
        for p in &payloads {
            otlp::encode_resource_logs(p, &mut bytes);
            ends.push(bytes.len());
        }
        let expected: Vec<LogPayload> = payloads.iter().map(expected_back).collect();
        assert_eq!(otlp::decode(&bytes).unwrap(), expected, "round {round}");
        // parts() finds each payload's record.
        let parts: Vec<_> = otlp::parts(&bytes).collect();
        let starts = std::iter::once(0).chain(ends.iter().copied());
        let wanted: Vec<_> = starts
            .zip(ends.iter().copied())
            .map(|(s, e)| s..e)
            .collect();
        assert_eq!(parts, wanted, "round {round}");
        for (part, p) in parts.iter().zip(&payloads) {
            assert_eq!(bytes[part.clone()], generated(p)[..], "round {round}");
        }
    }
}

/// `encode_payload(p, cap)` against `split(p, cap)`: the same cut and the same bytes,
/// or `PayloadTooLarge` for the first chunk over the cap (an entry too large alone).
fn check_cap(p: &LogPayload, cap: usize, what: &str) -> Option<usize> {
    let chunks = otlp::split(p, cap);
    let result = otlp::encode_payload(p, cap);
    let whole = generated(p);
    if whole.len() <= cap {
        assert_eq!(
            result.as_deref().ok(),
            Some(&whole[..]),
            "{what}: fits whole"
        );
        return Some(1);
    }
    let over = if p.logs.is_empty() {
        Some(whole.len())
    } else {
        chunks
            .iter()
            .find(|c| c.encoded_len > cap)
            .map(|c| c.encoded_len)
    };
    match (over, result) {
        (Some(size), Err(Error::PayloadTooLarge { size: s, limit })) => {
            assert_eq!((s, limit), (size, cap), "{what}: the error's numbers");
            None
        }
        (None, Ok(bytes)) => {
            let parts: Vec<_> = otlp::parts(&bytes).collect();
            assert_eq!(parts.len(), chunks.len(), "{what}: as many parts as chunks");
            assert_eq!(parts.last().map(|r| r.end), Some(bytes.len()), "{what}");
            for (part, chunk) in parts.iter().zip(&chunks) {
                assert!(
                    part.len() <= cap,
                    "{what}: a part of {} > {cap}",
                    part.len()
                );
                assert_eq!(part.len(), chunk.encoded_len, "{what}");
                assert_eq!(
                    bytes[part.clone()],
                    otlp::encode(&chunk.request).unwrap()[..],
                    "{what}: a part's bytes"
                );
                // Each part is a request by itself, of the payload's resource.
                assert_eq!(otlp::decode(&bytes[part.clone()]).unwrap().len(), 1);
            }
            assert_eq!(merged(&bytes), expected_back(p), "{what}: merged back");
            Some(parts.len())
        }
        (over, result) => panic!(
            "{what}: split has a chunk over the cap: {over:?}, encode_payload: {:?}",
            result.map(|b| b.len())
        ),
    }
}

#[test]
fn a_payload_over_the_cap_is_cut_where_split_cuts_it() {
    let mut rng = Rng(0x5b17_ca95);
    let (mut cut, mut refused) = (0, 0);
    for i in 0..1500 {
        let p = random_model(&mut rng);
        let whole = generated(&p).len();
        for cap in [whole - 1, whole / 2, whole / 5, 600, 64] {
            match check_cap(&p, cap, &format!("payload {i}, cap {cap}")) {
                Some(n) if n > 1 => cut += 1,
                Some(_) => {}
                None => refused += 1,
            }
        }
    }
    println!("{cut} payloads cut into parts, {refused} refused");
    assert!(cut > 500 && refused > 500, "{cut} {refused}");

    // Many small entries under OTLP's usual cap and under a small one.
    let mut big = LogPayload::from_host("agent-big");
    big.timestamp = Some(UNIX_EPOCH + Duration::from_secs(1_700_000_000));
    big.logs = (0..10_000)
        .map(|i| LogEntry::new(Level::Info, format!("{i:>1000}")).with_field("i", i.to_string()))
        .collect();
    let n = check_cap(&big, otlp::MAX_REQUEST_BYTES, "big").unwrap();
    assert!((3..=4).contains(&n), "{n}");
    assert!(check_cap(&big, 4096, "big, 4 KiB").unwrap() > 2000);

    // An entry that cannot fit alone is refused, with the size it would have alone.
    let mut one = LogPayload::from_host("agent-one");
    one.logs = vec![
        LogEntry::new(Level::Info, "small"),
        LogEntry::new(Level::Info, "y".repeat(10_000)),
    ];
    assert_eq!(check_cap(&one, 2_000, "one"), None);
    match otlp::encode_payload(&one, 2_000) {
        Err(Error::PayloadTooLarge { size, limit }) => {
            assert!(size > 10_000, "{size}");
            assert_eq!(size, otlp::split(&one, 2_000)[1].encoded_len);
            assert_eq!(limit, 2_000);
        }
        other => panic!("{:?}", other.map(|b| b.len())),
    }
    // A payload without entries whose resource alone is over the cap.
    let empty = LogPayload::from_host("h".repeat(500));
    assert_eq!(check_cap(&empty, 100, "empty"), None);
}

#[test]
fn parts_and_decode_never_panic_on_truncated_or_garbled_bytes() {
    let mut rng = Rng(0x6a4b_a6e0);
    let mut checked = 0;
    for round in 0..200 {
        let mut bytes = Vec::new();
        let mut ends = Vec::new();
        for _ in 0..1 + rng.below(4) {
            let mut p = random_model(&mut rng);
            p.logs.truncate(20);
            otlp::encode_resource_logs(&p, &mut bytes);
            ends.push(bytes.len());
        }
        let mut cuts: Vec<usize> = (0..40)
            .map(|_| rng.below(bytes.len() as u64 + 1) as usize)
            .collect();
        cuts.extend([0, 1, 2, bytes.len().saturating_sub(1)]);
        for cut in cuts {
            let short = &bytes[..cut];
            let parts: Vec<_> = otlp::parts(short).collect();
            // Exactly the records that end within the cut, from the start.
            let whole: Vec<_> = ends.iter().copied().take_while(|e| *e <= cut).collect();
            assert_eq!(
                parts.iter().map(|r| r.end).collect::<Vec<_>>(),
                whole,
                "round {round}, cut {cut}"
            );
            for part in &parts {
                assert!(otlp::decode(&short[part.clone()]).is_ok());
            }
            // A record cut short is an error or fewer payloads, never a panic.
            let _ = otlp::decode(short);
            checked += 1;
        }
        // Garbled: random bytes overwritten.
        for _ in 0..20 {
            let mut bad = bytes.clone();
            for _ in 0..1 + rng.below(4) {
                let at = rng.below(bad.len() as u64) as usize;
                bad[at] = rng.below(256) as u8;
            }
            let mut next = 0;
            for part in otlp::parts(&bad) {
                assert_eq!(part.start, next, "contiguous");
                assert!(part.end <= bad.len() && part.start < part.end);
                next = part.end;
                let _ = otlp::decode(&bad[part]);
            }
            let _ = otlp::decode(&bad);
            checked += 1;
        }
    }
    // Plain garbage.
    for _ in 0..2000 {
        let len = rng.below(64) as usize;
        let junk: Vec<u8> = (0..len).map(|_| rng.below(256) as u8).collect();
        for part in otlp::parts(&junk) {
            assert!(part.end <= junk.len());
        }
        let _ = otlp::decode(&junk);
        checked += 1;
    }
    assert!(otlp::parts(&[]).next().is_none());
    assert!(otlp::parts(&[0x12, 0x00]).next().is_none());
    println!("{checked} byte strings");
}
