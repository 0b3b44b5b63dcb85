//! `Meta::from_host` against what the system's own tools say about this machine.

use std::process::Command;

use logsender::{LogPayload, Meta};

/// The trimmed output of a command, if it runs.
fn run(cmd: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(cmd).args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

#[test]
fn host_metadata_matches_the_systems_own_tools() {
    let meta = Meta::from_host();
    println!("{meta:#?}");
    assert_eq!(meta.os, std::env::consts::OS);
    assert_eq!(meta.kind, "host");
    assert_eq!(meta.agent_version, env!("CARGO_PKG_VERSION"));
    if let Some(name) = run("hostname", &[]) {
        assert_eq!(meta.hostname, name);
    }
    if cfg!(target_os = "linux") {
        assert_eq!(Some(meta.kernel_version.clone()), run("uname", &["-r"]));
        assert_eq!(
            Some(meta.kernel_architecture.clone()),
            run("uname", &["-m"])
        );
        // gopsutil's host ID: the DMI UUID if readable, else the machine ID as a UUID.
        let dmi = std::fs::read_to_string("/sys/class/dmi/id/product_uuid").ok();
        let machine = std::fs::read_to_string("/etc/machine-id").ok();
        if let (None, Some(id)) = (dmi, machine) {
            let id = id.trim();
            assert_eq!(meta.host_id.replace('-', ""), id.to_ascii_lowercase());
            assert_eq!(meta.host_id.len(), 36);
        }
        assert!(!meta.host_id.is_empty());
        assert_eq!(
            meta.endpoint_id,
            format!("host-{}", &meta.host_id[..12]),
            "GoSight's endpoint ID of a host"
        );
        // The primary address is one of the host's own.
        if let Some(all) = run("hostname", &["-I"]) {
            if !all.is_empty() {
                assert!(
                    all.split_whitespace().any(|a| a == meta.ip_address),
                    "{} not in {all}",
                    meta.ip_address
                );
                assert!(!meta.network_interface.is_empty());
            }
        }
        if let Ok(release) = std::fs::read_to_string("/etc/os-release") {
            let id = release
                .lines()
                .find_map(|l| l.strip_prefix("ID="))
                .map(|v| v.trim_matches('"').to_string());
            assert_eq!(Some(meta.platform.clone()), id);
        }
    }
}

#[test]
fn a_payload_from_the_host_repeats_its_identity_at_the_top() {
    let p = LogPayload::from_host("agent-42");
    let meta = p.meta.clone().expect("meta is always sent");
    assert_eq!(p.agent_id, "agent-42");
    assert_eq!(meta.agent_id, "agent-42");
    assert_eq!(p.host_id, meta.host_id);
    assert_eq!(p.hostname, meta.hostname);
    assert_eq!(p.endpoint_id, meta.endpoint_id);
    assert!(p.logs.is_empty() && p.timestamp.is_none());
}
