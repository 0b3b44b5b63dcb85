//! The hand-written encoder (`wire::encode`) against the generated one, on thousands of
//! random payloads.
//!
//! The payloads are built through protobuf *reflection*: every field the descriptors of
//! `LogPayload`, `LogEntry`, `LogMeta`, `Meta` and `Timestamp` declare is filled (or left
//! empty, at random), so a field added to the protos is covered without touching this
//! test. Each message is converted to the model (`LogPayload`), which must carry it back
//! unchanged (so no field is lost before the encoders see it), then encoded by hand and
//! decoded by the generated code: the result must equal the generated message. When no
//! map holds more than one entry (map order is a `HashMap`'s, so it differs between two
//! maps with the same entries), the bytes must be identical too.

use std::collections::HashMap;

use logsender::wire::{self, pb};
use logsender::LogPayload;
use protobuf::Message;

#[path = "support/random.rs"]
mod random;

use random::{random_payload, reached, Rng};

const PAYLOADS: usize = 4000;

#[test]
fn hand_written_encoder_matches_the_generated_one_on_random_payloads() {
    let mut rng = Rng(0x5eed_1234_abcd_0042);
    let mut seen = HashMap::new();
    let mut byte_checks = 0;
    let mut assembled_checks = 0;
    for i in 0..PAYLOADS {
        let maps_small = i % 3 == 0;
        let msg = random_payload(&mut rng, maps_small);
        reached(&msg, &mut seen);
        let model = LogPayload::try_from(msg.clone()).expect("a valid message converts");
        // The model carries every field: nothing is lost before the encoders see it.
        let back = pb::log::LogPayload::from(&model);
        assert_eq!(back, msg, "payload {i}: the model lost a field");

        let bytes = wire::encode(&model);
        assert_eq!(bytes.len(), wire::encoded_len(&model), "payload {i}");
        let generated = back.write_to_bytes().expect("generated encoding");
        assert_eq!(bytes.len(), generated.len(), "payload {i}: lengths differ");
        let decoded = pb::log::LogPayload::parse_from_bytes(&bytes)
            .unwrap_or_else(|e| panic!("payload {i}: the generated code cannot parse it: {e}"));
        assert_eq!(decoded, msg, "payload {i}: decoded differently");
        if maps_small {
            assert_eq!(bytes, generated, "payload {i}: bytes differ");
            byte_checks += 1;
        }

        // The entry level's path: each entry encoded alone as a record, joined behind
        // the template's frame. The same bytes as the payload encoded whole.
        let mut template = model.clone();
        let entries = std::mem::take(&mut template.logs);
        let records: Vec<Vec<u8>> = entries.iter().map(wire::entry_record).collect();
        for (record, entry) in records.iter().zip(&entries) {
            assert_eq!(
                record.len(),
                wire::entry_len(entry),
                "payload {i}: entry_len"
            );
        }
        // A template without a timestamp is stamped with the time given.
        let now = std::time::SystemTime::UNIX_EPOCH + std::time::Duration::new(1_700_000_000, 5);
        let assembled = wire::Frame::of(&template).assemble(&records, now);
        let mut stamped = model.clone();
        stamped.timestamp.get_or_insert(now);
        assert_eq!(
            assembled,
            wire::encode(&stamped),
            "payload {i}: assembled bytes differ"
        );
        assembled_checks += 1;
    }
    assert_eq!(assembled_checks, PAYLOADS);
    println!("{PAYLOADS} payloads, {byte_checks} compared byte for byte; reached: {seen:?}");
    for (what, n) in &seen {
        assert!(*n > 0, "the generator never set {what}");
    }
    assert!(byte_checks > PAYLOADS / 4);
}
