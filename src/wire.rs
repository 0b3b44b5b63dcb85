//! The bridge between the [`crate::model`] types and the bytes on the wire: protobuf
//! encoding and decoding of [`LogPayload`] exactly as the GoSight protocol defines it.
//!
//! Both directions go through the rust-protobuf code generated from `proto/*.proto`
//! ([`pb`]), so the field numbers live in one place. [`encode_owned`] moves the strings
//! and maps of the payload into the generated message; [`encode`] has to copy them.

use std::io;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use protobuf::well_known_types::timestamp::Timestamp;
use protobuf::{Message, MessageField};

use crate::error::Error;
use crate::model::{LogEntry, LogMeta, LogPayload, Meta};

/// Generated rust-protobuf types for `proto/*.proto`. You rarely need these.
///
/// Messages live in [`pb::log`] (`LogPayload`, `LogEntry`, `LogMeta`, `LogResponse`) and
/// [`pb::meta`] (`Meta`); timestamps are [`protobuf::well_known_types::timestamp::Timestamp`].
pub mod pb {
    // The generated items carry no doc comments; the crate denies missing docs.
    #![allow(missing_docs)]
    // The generated code is not written to the crate's lint and style rules (it already
    // allows clippy::all itself; these cover lints a crate may turn on on top of that).
    #![allow(
        unused_qualifications,
        unreachable_pub,
        clippy::pedantic,
        clippy::nursery
    )]

    include!(concat!(env!("OUT_DIR"), "/proto/mod.rs"));
}

/// Serializes `payload` to exactly the bytes one `LogPayload` message carries on the wire.
///
/// Copies the strings and maps of `payload` into the generated message first; a caller
/// that owns the payload and is done with it saves that copy with [`encode_owned`].
///
/// # Panics
///
/// If the payload encodes to more than 2 GiB − 1 bytes, protobuf's limit for a message
/// (logsender itself checks the size first and reports [`Error::PayloadTooLarge`]).
pub fn encode(payload: &LogPayload) -> Vec<u8> {
    write(&pb::log::LogPayload::from(payload))
}

/// [`encode`] for a payload the caller gives up: its strings and maps move into the
/// generated message instead of being copied. Same bytes as `encode(&payload)`.
///
/// # Panics
///
/// As [`encode`].
pub fn encode_owned(payload: LogPayload) -> Vec<u8> {
    write(&pb::log::LogPayload::from(payload))
}

/// Serialized size in bytes of `payload`, i.e. `encode(payload).len()`, without
/// writing the bytes (the strings are still copied into the generated message).
pub fn encoded_len(payload: &LogPayload) -> usize {
    let size = pb::log::LogPayload::from(payload).compute_size();
    usize::try_from(size).unwrap_or(usize::MAX)
}

/// The bytes of `msg`, if it encodes to at most `limit` bytes (checked before anything
/// is written). Exactly sized, like [`write`].
pub(crate) fn encode_within(msg: &pb::log::LogPayload, limit: usize) -> Result<Vec<u8>, Error> {
    let size = msg.compute_size();
    let limit = limit.min(i32::MAX as usize);
    match usize::try_from(size) {
        Ok(size) if size <= limit => {
            let mut bytes = Vec::with_capacity(size);
            let mut out = protobuf::CodedOutputStream::vec(&mut bytes);
            msg.write_to_with_cached_sizes(&mut out)?;
            out.flush()?;
            drop(out);
            Ok(bytes)
        }
        _ => Err(Error::PayloadTooLarge {
            size: usize::try_from(size).unwrap_or(usize::MAX),
            limit,
        }),
    }
}

/// The payload `msg` was converted from, moved back out (to hand it to the user after
/// it could not be sent). `None` only for a timestamp the model cannot hold.
pub(crate) fn into_payload(msg: pb::log::LogPayload) -> Option<LogPayload> {
    LogPayload::try_from(msg).ok()
}

/// `write_to_bytes` computes the size first and allocates exactly that: a `Vec` whose
/// length equals its capacity becomes a grpcio slice without a copy.
fn write(msg: &pb::log::LogPayload) -> Vec<u8> {
    // Only `check_initialized` (always true for proto3) and the output stream can fail,
    // and a stream into a `Vec` does not.
    msg.write_to_bytes()
        .expect("serializing a proto3 message into a Vec cannot fail")
}

/// Parses the bytes of one `LogPayload` message.
///
/// Fails with [`Error::Decode`] on malformed protobuf and on a timestamp that is not a
/// valid `google.protobuf.Timestamp` or not representable as a [`SystemTime`].
pub fn decode(bytes: &[u8]) -> Result<LogPayload, Error> {
    let msg = pb::log::LogPayload::parse_from_bytes(bytes)?;
    LogPayload::try_from(msg)
}

/// Copies the strings and maps of `p` (see the by-value conversion below).
impl From<&LogPayload> for pb::log::LogPayload {
    fn from(p: &LogPayload) -> Self {
        Self::from(p.clone())
    }
}

/// Moves the strings and maps of `p` into the generated message instead of copying them.
impl From<LogPayload> for pb::log::LogPayload {
    fn from(p: LogPayload) -> Self {
        // Destructured without `..`: a field added to the model does not compile until it
        // is converted here too.
        let LogPayload {
            agent_id,
            host_id,
            hostname,
            endpoint_id,
            timestamp,
            logs,
            meta,
        } = p;
        pb::log::LogPayload {
            agent_id,
            host_id,
            hostname,
            endpoint_id,
            timestamp: timestamp_field(timestamp),
            logs: logs.into_iter().map(entry_into_pb).collect(),
            meta: MessageField::from_option(meta.map(meta_into_pb)),
            ..Default::default()
        }
    }
}

impl TryFrom<pb::log::LogPayload> for LogPayload {
    type Error = Error;

    fn try_from(p: pb::log::LogPayload) -> Result<Self, Error> {
        Ok(LogPayload {
            agent_id: p.agent_id,
            host_id: p.host_id,
            hostname: p.hostname,
            endpoint_id: p.endpoint_id,
            timestamp: timestamp_from_field(&p.timestamp)?,
            logs: p
                .logs
                .into_iter()
                .map(entry_from_pb)
                .collect::<Result<_, _>>()?,
            meta: p.meta.into_option().map(meta_from_pb),
        })
    }
}

fn entry_into_pb(e: LogEntry) -> pb::log::LogEntry {
    let LogEntry {
        timestamp,
        level,
        message,
        source,
        category,
        pid,
        fields,
        tags,
        meta,
    } = e;
    pb::log::LogEntry {
        timestamp: timestamp_field(timestamp),
        level,
        message,
        source,
        category,
        pid,
        fields,
        tags,
        meta: MessageField::from_option(meta.map(log_meta_into_pb)),
        ..Default::default()
    }
}

fn entry_from_pb(e: pb::log::LogEntry) -> Result<LogEntry, Error> {
    Ok(LogEntry {
        timestamp: timestamp_from_field(&e.timestamp)?,
        level: e.level,
        message: e.message,
        source: e.source,
        category: e.category,
        pid: e.pid,
        fields: e.fields,
        tags: e.tags,
        meta: e.meta.into_option().map(log_meta_from_pb),
    })
}

fn log_meta_into_pb(m: LogMeta) -> pb::log::LogMeta {
    let LogMeta {
        platform,
        app_name,
        app_version,
        container_id,
        container_name,
        unit,
        service,
        event_id,
        user,
        executable,
        path,
        extra,
    } = m;
    pb::log::LogMeta {
        platform,
        app_name,
        app_version,
        container_id,
        container_name,
        unit,
        service,
        event_id,
        user,
        executable,
        path,
        extra,
        ..Default::default()
    }
}

fn log_meta_from_pb(m: pb::log::LogMeta) -> LogMeta {
    LogMeta {
        platform: m.platform,
        app_name: m.app_name,
        app_version: m.app_version,
        container_id: m.container_id,
        container_name: m.container_name,
        unit: m.unit,
        service: m.service,
        event_id: m.event_id,
        user: m.user,
        executable: m.executable,
        path: m.path,
        extra: m.extra,
    }
}

fn meta_into_pb(m: Meta) -> pb::meta::Meta {
    let Meta {
        hostname,
        ip_address,
        os,
        os_version,
        kernel_version,
        architecture,
        cloud_provider,
        region,
        availability_zone,
        instance_id,
        instance_type,
        account_id,
        project_id,
        resource_group,
        vpc_id,
        subnet_id,
        image_id,
        service_id,
        container_id,
        container_name,
        pod_name,
        namespace,
        cluster_name,
        node_name,
        container_image_name,
        container_image_id,
        application,
        environment,
        service,
        version,
        deployment_id,
        public_ip,
        private_ip,
        mac_address,
        network_interface,
        labels,
        endpoint_id,
        platform,
        platform_family,
        platform_version,
        kernel_architecture,
        virtualization_system,
        virtualization_role,
        host_id,
        agent_version,
        agent_id,
        resource_id,
        kind,
        tags,
    } = m;
    pb::meta::Meta {
        hostname,
        ip_address,
        os,
        os_version,
        kernel_version,
        architecture,
        cloud_provider,
        region,
        availability_zone,
        instance_id,
        instance_type,
        account_id,
        project_id,
        resource_group,
        vpc_id,
        subnet_id,
        image_id,
        service_id,
        container_id,
        container_name,
        pod_name,
        namespace,
        cluster_name,
        node_name,
        container_image_name,
        container_image_id,
        application,
        environment,
        service,
        version,
        deployment_id,
        public_ip,
        private_ip,
        mac_address,
        network_interface,
        labels,
        endpoint_id,
        platform,
        platform_family,
        platform_version,
        kernel_architecture,
        virtualization_system,
        virtualization_role,
        host_id,
        agent_version,
        agent_id,
        resource_id,
        kind,
        tags,
        ..Default::default()
    }
}

fn meta_from_pb(m: pb::meta::Meta) -> Meta {
    Meta {
        hostname: m.hostname,
        ip_address: m.ip_address,
        os: m.os,
        os_version: m.os_version,
        kernel_version: m.kernel_version,
        architecture: m.architecture,
        cloud_provider: m.cloud_provider,
        region: m.region,
        availability_zone: m.availability_zone,
        instance_id: m.instance_id,
        instance_type: m.instance_type,
        account_id: m.account_id,
        project_id: m.project_id,
        resource_group: m.resource_group,
        vpc_id: m.vpc_id,
        subnet_id: m.subnet_id,
        image_id: m.image_id,
        service_id: m.service_id,
        container_id: m.container_id,
        container_name: m.container_name,
        pod_name: m.pod_name,
        namespace: m.namespace,
        cluster_name: m.cluster_name,
        node_name: m.node_name,
        container_image_name: m.container_image_name,
        container_image_id: m.container_image_id,
        application: m.application,
        environment: m.environment,
        service: m.service,
        version: m.version,
        deployment_id: m.deployment_id,
        public_ip: m.public_ip,
        private_ip: m.private_ip,
        mac_address: m.mac_address,
        network_interface: m.network_interface,
        labels: m.labels,
        endpoint_id: m.endpoint_id,
        platform: m.platform,
        platform_family: m.platform_family,
        platform_version: m.platform_version,
        kernel_architecture: m.kernel_architecture,
        virtualization_system: m.virtualization_system,
        virtualization_role: m.virtualization_role,
        host_id: m.host_id,
        agent_version: m.agent_version,
        agent_id: m.agent_id,
        resource_id: m.resource_id,
        kind: m.kind,
        tags: m.tags,
    }
}

fn timestamp_field(t: Option<SystemTime>) -> MessageField<Timestamp> {
    MessageField::from_option(t.map(timestamp_to_pb))
}

fn timestamp_from_field(t: &MessageField<Timestamp>) -> Result<Option<SystemTime>, Error> {
    t.as_ref().map(timestamp_from_pb).transpose()
}

/// Exact to the nanosecond, before the epoch too: `seconds` is floored, `nanos` counts
/// forward from it. Every `SystemTime` on Unix fits; elsewhere out-of-range seconds saturate.
fn timestamp_to_pb(t: SystemTime) -> Timestamp {
    let (seconds, nanos) = match t.duration_since(UNIX_EPOCH) {
        Ok(d) => (i128::from(d.as_secs()), d.subsec_nanos()),
        Err(e) => {
            let d = e.duration();
            match d.subsec_nanos() {
                0 => (-i128::from(d.as_secs()), 0),
                n => (-i128::from(d.as_secs()) - 1, 1_000_000_000 - n),
            }
        }
    };
    let seconds = i64::try_from(seconds).unwrap_or(if seconds < 0 { i64::MIN } else { i64::MAX });
    Timestamp {
        seconds,
        // Always in 0..=999_999_999, so the cast is lossless.
        nanos: nanos as i32,
        ..Default::default()
    }
}

fn timestamp_from_pb(t: &Timestamp) -> Result<SystemTime, Error> {
    let nanos = u32::try_from(t.nanos)
        .ok()
        .filter(|n| *n < 1_000_000_000)
        .ok_or_else(|| bad_timestamp(t, "nanos outside 0..=999999999"))?;
    let secs = Duration::from_secs(t.seconds.unsigned_abs());
    let whole = if t.seconds >= 0 {
        UNIX_EPOCH.checked_add(secs)
    } else {
        UNIX_EPOCH.checked_sub(secs)
    };
    whole
        .and_then(|w| w.checked_add(Duration::from_nanos(u64::from(nanos))))
        .ok_or_else(|| bad_timestamp(t, "not representable as SystemTime"))
}

#[cold]
fn bad_timestamp(t: &Timestamp, why: &str) -> Error {
    let msg = format!(
        "invalid google.protobuf.Timestamp {{ seconds: {}, nanos: {} }}: {why}",
        t.seconds, t.nanos
    );
    Error::Decode(protobuf::Error::from(io::Error::new(
        io::ErrorKind::InvalidData,
        msg,
    )))
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use protobuf::CodedOutputStream;

    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn full_meta() -> Meta {
        Meta {
            hostname: "höst-01".into(),
            ip_address: "10.0.0.1".into(),
            os: "linux".into(),
            os_version: "6.1".into(),
            kernel_version: "6.1.0-13-amd64".into(),
            architecture: "x86_64".into(),
            cloud_provider: "aws".into(),
            region: "eu-central-1".into(),
            availability_zone: "eu-central-1a".into(),
            instance_id: "i-0123".into(),
            instance_type: "t3.micro".into(),
            account_id: "1234".into(),
            project_id: "proj".into(),
            resource_group: "rg".into(),
            vpc_id: "vpc-1".into(),
            subnet_id: "subnet-1".into(),
            image_id: "ami-1".into(),
            service_id: "svc-1".into(),
            container_id: "abc123".into(),
            container_name: "web".into(),
            pod_name: "web-7d9f".into(),
            namespace: "default".into(),
            cluster_name: "prod-cluster".into(),
            node_name: "node-1".into(),
            container_image_name: "nginx".into(),
            container_image_id: "sha256:beef".into(),
            application: "shop 🛒".into(),
            environment: "prod".into(),
            service: "checkout".into(),
            version: "1.2.3".into(),
            deployment_id: "dep-9".into(),
            public_ip: "203.0.113.7".into(),
            private_ip: "10.0.0.2".into(),
            mac_address: "00:11:22:33:44:55".into(),
            network_interface: "eth0".into(),
            labels: map(&[("team", "ops"), ("tier", "web"), ("ключ", "значение")]),
            endpoint_id: "host-abc".into(),
            platform: "debian".into(),
            platform_family: "debian".into(),
            platform_version: "12".into(),
            kernel_architecture: "x86_64".into(),
            virtualization_system: "kvm".into(),
            virtualization_role: "guest".into(),
            host_id: "hid-1".into(),
            agent_version: "0.9".into(),
            agent_id: "agent-😀".into(),
            resource_id: "res-1".into(),
            kind: "host".into(),
            tags: map(&[("a", "1"), ("b", "2"), ("日本", "語")]),
        }
    }

    fn full_payload() -> LogPayload {
        LogPayload {
            agent_id: "agent-😀".into(),
            host_id: "hid-1".into(),
            hostname: "höst-01".into(),
            endpoint_id: "host-abc".into(),
            timestamp: Some(UNIX_EPOCH + Duration::new(1_700_000_000, 123_456_789)),
            logs: vec![
                LogEntry {
                    timestamp: Some(UNIX_EPOCH - Duration::new(86_400, 1)),
                    level: "error".into(),
                    message: "naïve café 🚀 failed\nline 2".into(),
                    source: "/var/log/app.log".into(),
                    category: "app".into(),
                    pid: -42,
                    fields: map(&[("k1", "v1"), ("k2", ""), ("", "empty key")]),
                    tags: map(&[("x", "y"), ("z", "🦀")]),
                    meta: Some(LogMeta {
                        platform: "docker".into(),
                        app_name: "shop".into(),
                        app_version: "1.0".into(),
                        container_id: "abc".into(),
                        container_name: "web".into(),
                        unit: "shop.service".into(),
                        service: "shop".into(),
                        event_id: "4624".into(),
                        user: "www-data".into(),
                        executable: "/usr/bin/shop".into(),
                        path: "/srv/shop".into(),
                        extra: map(&[("e1", "1"), ("e2", "2"), ("e3", "3")]),
                    }),
                },
                LogEntry {
                    timestamp: Some(UNIX_EPOCH - Duration::from_millis(200)),
                    level: "info".into(),
                    message: "second".into(),
                    pid: i32::MAX,
                    ..Default::default()
                },
            ],
            meta: Some(full_meta()),
        }
    }

    #[test]
    fn full_payload_round_trips() {
        let p = full_payload();
        let bytes = encode(&p);
        assert_eq!(decode(&bytes).unwrap(), p);
    }

    /// `encode` and `encode_owned` write the same bytes (a cloned map iterates like the
    /// original), exactly as many as `encoded_len` says, in a `Vec` without spare capacity
    /// (so grpcio takes it without a copy), and they decode to the original.
    fn assert_encodes(p: &LogPayload) {
        let bytes = encode(p);
        assert_eq!(encode_owned(p.clone()), bytes);
        assert_eq!(encoded_len(p), bytes.len());
        assert_eq!(bytes.capacity(), bytes.len());
        assert_eq!(decode(&bytes).unwrap(), *p);
    }

    #[test]
    fn encode_and_encode_owned_agree() {
        assert_encodes(&full_payload());
        assert_encodes(&LogPayload::default());
        let long = "ü".repeat(70_000);
        let mut p = full_payload();
        p.timestamp = Some(UNIX_EPOCH);
        p.meta
            .as_mut()
            .unwrap()
            .labels
            .insert(long.clone(), String::new());
        p.logs.extend((0..300).map(|i| LogEntry {
            timestamp: Some(UNIX_EPOCH - Duration::new(i, (i as u32) * 3_000_001)),
            message: long[..(i as usize) * 2].to_string(),
            pid: i32::MIN + i as i32,
            tags: map(&[("", "")]),
            meta: (i % 2 == 0).then(LogMeta::default),
            ..Default::default()
        }));
        assert_encodes(&p);
    }

    #[test]
    fn absent_and_present_empty_survive() {
        let absent = LogPayload {
            logs: vec![LogEntry::default()],
            ..Default::default()
        };
        let empty = LogPayload {
            timestamp: Some(UNIX_EPOCH),
            logs: vec![LogEntry {
                timestamp: Some(UNIX_EPOCH),
                meta: Some(LogMeta::default()),
                ..Default::default()
            }],
            meta: Some(Meta::default()),
            ..Default::default()
        };
        assert_eq!(decode(&encode(&absent)).unwrap(), absent);
        assert_eq!(decode(&encode(&empty)).unwrap(), empty);
        assert_ne!(encode(&absent), encode(&empty));
        assert_eq!(decode(&[]).unwrap(), LogPayload::default());
    }

    #[test]
    fn timestamps_are_exact() {
        let times = [
            UNIX_EPOCH,
            UNIX_EPOCH + Duration::new(0, 1),
            UNIX_EPOCH - Duration::new(0, 1),
            UNIX_EPOCH - Duration::new(1, 0),
            UNIX_EPOCH - Duration::new(62_135_596_800, 999_999_999),
            UNIX_EPOCH + Duration::new(253_402_300_799, 999_999_999),
            SystemTime::now(),
        ];
        for t in times {
            let ts = timestamp_to_pb(t);
            assert!((0..1_000_000_000).contains(&ts.nanos), "{ts:?}");
            assert_eq!(timestamp_from_pb(&ts).unwrap(), t);
        }
        // On Unix every (seconds, valid nanos) is a SystemTime: the extremes round-trip too.
        #[cfg(unix)]
        for (seconds, nanos) in [(i64::MIN, 0), (i64::MIN, 1), (i64::MAX, 999_999_999)] {
            let ts = Timestamp {
                seconds,
                nanos,
                ..Default::default()
            };
            assert_eq!(timestamp_to_pb(timestamp_from_pb(&ts).unwrap()), ts);
        }
        let ts = timestamp_to_pb(UNIX_EPOCH - Duration::from_millis(200));
        assert_eq!((ts.seconds, ts.nanos), (-1, 800_000_000));
        let ts = timestamp_to_pb(UNIX_EPOCH - Duration::from_secs(3));
        assert_eq!((ts.seconds, ts.nanos), (-3, 0));
    }

    fn payload_with_timestamp(seconds: i64, nanos: i32) -> Vec<u8> {
        let msg = pb::log::LogPayload {
            timestamp: MessageField::some(Timestamp {
                seconds,
                nanos,
                ..Default::default()
            }),
            ..Default::default()
        };
        msg.write_to_bytes().unwrap()
    }

    #[test]
    fn bad_timestamps_are_errors() {
        for (s, n) in [(0, 1_000_000_000), (0, -1), (-5, i32::MIN)] {
            match decode(&payload_with_timestamp(s, n)) {
                Err(Error::Decode(e)) => assert!(e.to_string().contains("Timestamp"), "{e}"),
                other => panic!("({s}, {n}) decoded as {other:?}"),
            }
        }
        assert!(decode(&payload_with_timestamp(-1, 999_999_999)).is_ok());
    }

    #[test]
    fn garbage_is_an_error() {
        for bytes in [
            &[0xff, 0xff, 0xff][..],
            &[0x0a, 0x05, b'a'][..],             // truncated string
            &[0x0a, 0x02, 0xc3, 0x28][..],       // invalid UTF-8
            &[0x32, 0x03, 0x1a, 0x09, b'x'][..], // truncated nested entry
            &[0x07][..],                         // wire type 7
            &[
                0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
            ][..],
        ] {
            assert!(decode(bytes).is_err(), "{bytes:x?}");
        }
    }

    /// Hand-encodes with raw field numbers, independent of the generated code.
    #[test]
    fn field_numbers_match_design() {
        let mut entry_meta = Vec::new();
        {
            let mut os = CodedOutputStream::vec(&mut entry_meta);
            os.write_string(2, "app").unwrap();
            os.write_string(11, "/p").unwrap();
            os.flush().unwrap();
        }
        let mut ts = Vec::new();
        {
            let mut os = CodedOutputStream::vec(&mut ts);
            os.write_int64(1, -2).unwrap();
            os.write_int32(2, 5).unwrap();
            os.flush().unwrap();
        }
        let mut entry = Vec::new();
        {
            let mut os = CodedOutputStream::vec(&mut entry);
            os.write_bytes(1, &ts).unwrap();
            os.write_string(2, "warn").unwrap();
            os.write_string(3, "hello").unwrap();
            os.write_string(5, "cat").unwrap();
            os.write_int32(6, -7).unwrap();
            let mut kv = Vec::new();
            {
                let mut kos = CodedOutputStream::vec(&mut kv);
                kos.write_string(1, "fk").unwrap();
                kos.write_string(2, "fv").unwrap();
                kos.flush().unwrap();
            }
            os.write_bytes(7, &kv).unwrap();
            os.write_bytes(9, &entry_meta).unwrap();
            os.flush().unwrap();
        }
        let mut meta = Vec::new();
        {
            let mut os = CodedOutputStream::vec(&mut meta);
            os.write_string(1, "mh").unwrap();
            os.write_string(35, "eth0").unwrap();
            os.write_string(46, "aid").unwrap();
            os.write_string(48, "host").unwrap();
            let mut kv = Vec::new();
            {
                let mut kos = CodedOutputStream::vec(&mut kv);
                kos.write_string(1, "tk").unwrap();
                kos.write_string(2, "tv").unwrap();
                kos.flush().unwrap();
            }
            os.write_bytes(49, &kv).unwrap();
            os.flush().unwrap();
        }
        let mut bytes = Vec::new();
        {
            let mut os = CodedOutputStream::vec(&mut bytes);
            os.write_string(1, "agent").unwrap();
            os.write_string(3, "hn").unwrap();
            os.write_string(4, "ep").unwrap();
            os.write_bytes(6, &entry).unwrap();
            os.write_bytes(7, &meta).unwrap();
            os.flush().unwrap();
        }

        let p = decode(&bytes).unwrap();
        let expected = LogPayload {
            agent_id: "agent".into(),
            hostname: "hn".into(),
            endpoint_id: "ep".into(),
            logs: vec![LogEntry {
                timestamp: Some(UNIX_EPOCH - Duration::new(1, 999_999_995)),
                level: "warn".into(),
                message: "hello".into(),
                category: "cat".into(),
                pid: -7,
                fields: map(&[("fk", "fv")]),
                meta: Some(LogMeta {
                    app_name: "app".into(),
                    path: "/p".into(),
                    ..Default::default()
                }),
                ..Default::default()
            }],
            meta: Some(Meta {
                hostname: "mh".into(),
                network_interface: "eth0".into(),
                agent_id: "aid".into(),
                kind: "host".into(),
                tags: map(&[("tk", "tv")]),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(p, expected);
        // Field order is ascending in both, maps have one entry: bytes must match too.
        assert_eq!(encode(&expected), bytes);
    }
}
