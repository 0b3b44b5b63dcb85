//! What logsender can tell about the machine it runs on: [`Meta::from_host`] and
//! [`LogPayload::from_host`], the identity a GoSight server files logs under.

use std::net::IpAddr;
use std::path::Path;

use crate::model::{LogPayload, Meta};

impl Meta {
    /// Metadata of this machine, as the GoSight agent reports it. What is not detected
    /// is left empty; nothing here fails or blocks on the network.
    ///
    /// Detected (Linux; other systems get the portable ones):
    ///
    /// | field | from |
    /// |---|---|
    /// | `hostname` | the OS host name (`gethostname`) |
    /// | `host_id` | `/sys/class/dmi/id/product_uuid`, else `/etc/machine-id` (as a UUID), else `/proc/sys/kernel/random/boot_id`: gopsutil's order, so the ID matches a GoSight agent's on the same host |
    /// | `endpoint_id` | `host-` and the first 12 characters of `host_id`, GoSight's endpoint ID of a host |
    /// | `kind` | `host` |
    /// | `os` | the OS family (`linux`, `macos`, `windows`, ...) |
    /// | `os_version`, `platform_version` | `VERSION_ID` of `/etc/os-release` |
    /// | `platform` | `ID` of `/etc/os-release` (e.g. `debian`) |
    /// | `platform_family` | the first word of `ID_LIKE`, else `ID` |
    /// | `kernel_version` | `/proc/sys/kernel/osrelease` |
    /// | `kernel_architecture` | `/proc/sys/kernel/arch` (e.g. `x86_64`), else the build target's |
    /// | `architecture` | the CPU architecture in Go's spelling, as GoSight writes it (`amd64`, `arm64`, ...) |
    /// | `ip_address`, `network_interface`, `mac_address` | the interface of the default IPv4 route (`/proc/net/route`), else the first interface that is up and not loopback; its first IPv4 address (else IPv6) and its MAC address |
    /// | `agent_version` | logsender's version; set your program's own if it is the agent |
    ///
    /// Not detected: cloud, container, Kubernetes and virtualization fields, `agent_id`
    /// (your program's to choose and keep), labels and tags.
    ///
    /// ```
    /// let meta = logsender::Meta::from_host();
    /// assert_eq!(meta.os, std::env::consts::OS);
    /// assert_eq!(meta.kind, "host");
    /// ```
    pub fn from_host() -> Meta {
        let os_release = read_trimmed("/etc/os-release").unwrap_or_default();
        let field = |name: &str| os_release_field(&os_release, name);
        let platform = field("ID");
        let platform_family = field("ID_LIKE")
            .split_whitespace()
            .next()
            .map(str::to_string)
            .unwrap_or_else(|| platform.clone());
        let version = field("VERSION_ID");
        let host_id = host_id();
        let (interface, ip, mac) = primary_interface();
        Meta {
            hostname: gethostname::gethostname().to_string_lossy().into_owned(),
            endpoint_id: endpoint_id(&host_id),
            host_id,
            kind: "host".into(),
            os: std::env::consts::OS.into(),
            os_version: version.clone(),
            platform,
            platform_family,
            platform_version: version,
            kernel_version: read_trimmed("/proc/sys/kernel/osrelease").unwrap_or_default(),
            kernel_architecture: read_trimmed("/proc/sys/kernel/arch")
                .unwrap_or_else(|| std::env::consts::ARCH.into()),
            architecture: go_arch(std::env::consts::ARCH).into(),
            ip_address: ip.map(|ip| ip.to_string()).unwrap_or_default(),
            network_interface: interface,
            mac_address: mac,
            agent_version: env!("CARGO_PKG_VERSION").into(),
            ..Default::default()
        }
    }
}

impl LogPayload {
    /// An empty payload identifying this machine and the agent `agent_id`: `meta` from
    /// [`Meta::from_host`] with `agent_id` set, and `agent_id`, `host_id`, `hostname`
    /// and `endpoint_id` repeated at the top level, as GoSight expects. The template for
    /// an [`EntrySender`](crate::EntrySender).
    ///
    /// ```
    /// let template = logsender::LogPayload::from_host("agent-7");
    /// let meta = template.meta.as_ref().unwrap();
    /// assert_eq!((template.agent_id.as_str(), meta.agent_id.as_str()), ("agent-7", "agent-7"));
    /// assert_eq!(template.endpoint_id, meta.endpoint_id);
    /// ```
    pub fn from_host(agent_id: impl Into<String>) -> LogPayload {
        let mut meta = Meta::from_host();
        meta.agent_id = agent_id.into();
        LogPayload {
            agent_id: meta.agent_id.clone(),
            host_id: meta.host_id.clone(),
            hostname: meta.hostname.clone(),
            endpoint_id: meta.endpoint_id.clone(),
            meta: Some(meta),
            ..Default::default()
        }
    }
}

fn read_trimmed(path: impl AsRef<Path>) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    let text = text.trim();
    (!text.is_empty()).then(|| text.to_string())
}

/// `NAME=value` or `NAME="value"` from an os-release file.
fn os_release_field(text: &str, name: &str) -> String {
    text.lines()
        .filter_map(|line| line.split_once('='))
        .find(|(k, _)| k.trim() == name)
        .map(|(_, v)| v.trim().trim_matches(|c| c == '"' || c == '\'').to_string())
        .unwrap_or_default()
}

/// gopsutil's host ID: the DMI product UUID, else the machine ID written as a UUID,
/// else this boot's ID; lower case.
fn host_id() -> String {
    if let Some(uuid) = read_trimmed("/sys/class/dmi/id/product_uuid") {
        return uuid.to_ascii_lowercase();
    }
    if let Some(id) = read_trimmed("/etc/machine-id") {
        if id.len() == 32 && id.is_ascii() {
            return format!(
                "{}-{}-{}-{}-{}",
                &id[0..8],
                &id[8..12],
                &id[12..16],
                &id[16..20],
                &id[20..32]
            )
            .to_ascii_lowercase();
        }
    }
    read_trimmed("/proc/sys/kernel/random/boot_id")
        .map(|id| id.to_ascii_lowercase())
        .unwrap_or_default()
}

/// GoSight's endpoint ID of a host: `host-` and the first 12 characters of its ID,
/// lower case, spaces as dashes; empty when the host ID is unknown.
fn endpoint_id(host_id: &str) -> String {
    if host_id.is_empty() {
        return String::new();
    }
    let short: String = host_id.chars().take(12).collect();
    format!("host-{}", short.to_lowercase().replace(' ', "-"))
}

/// Rust's architecture names in Go's spelling (`runtime.GOARCH`), which GoSight reports.
fn go_arch(arch: &str) -> &str {
    match arch {
        "x86_64" => "amd64",
        "x86" => "386",
        "aarch64" => "arm64",
        "powerpc64" => "ppc64",
        "loongarch64" => "loong64",
        other => other,
    }
}

/// The interface of the default IPv4 route (else the first up, non-loopback one with
/// an address), its first address (IPv4 preferred) and its MAC address.
fn primary_interface() -> (String, Option<IpAddr>, String) {
    let Ok(interfaces) = if_addrs::get_if_addrs() else {
        return (String::new(), None, String::new());
    };
    let usable: Vec<_> = interfaces.iter().filter(|i| !i.is_loopback()).collect();
    let chosen = default_route_interface()
        .and_then(|name| {
            usable
                .iter()
                .find(|i| i.name == name)
                .map(|i| i.name.clone())
        })
        .or_else(|| {
            usable
                .iter()
                .find(|i| i.ip().is_ipv4())
                .or_else(|| usable.first())
                .map(|i| i.name.clone())
        });
    let Some(name) = chosen else {
        return (String::new(), None, String::new());
    };
    let addresses: Vec<IpAddr> = usable
        .iter()
        .filter(|i| i.name == name)
        .map(|i| i.ip())
        .collect();
    let ip = addresses
        .iter()
        .find(|ip| ip.is_ipv4())
        .or_else(|| addresses.first())
        .copied();
    let mac = read_trimmed(format!("/sys/class/net/{name}/address")).unwrap_or_default();
    (name, ip, mac)
}

/// The interface of the default IPv4 route, from `/proc/net/route`.
fn default_route_interface() -> Option<String> {
    let table = std::fs::read_to_string("/proc/net/route").ok()?;
    table.lines().skip(1).find_map(|line| {
        let mut cols = line.split_whitespace();
        let name = cols.next()?;
        (cols.next()? == "00000000").then(|| name.to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn os_release_fields_are_unquoted() {
        let text =
            "NAME=\"Debian GNU/Linux\"\nID=debian\nID_LIKE=\"rhel fedora\"\nVERSION_ID='12'\n";
        assert_eq!(os_release_field(text, "NAME"), "Debian GNU/Linux");
        assert_eq!(os_release_field(text, "ID"), "debian");
        assert_eq!(os_release_field(text, "ID_LIKE"), "rhel fedora");
        assert_eq!(os_release_field(text, "VERSION_ID"), "12");
        assert_eq!(os_release_field(text, "MISSING"), "");
    }

    #[test]
    fn endpoint_ids_follow_gosight() {
        assert_eq!(
            endpoint_id("4c4c4544-0042-3510-8052-b4c04f4e4b32"),
            "host-4c4c4544-004"
        );
        assert_eq!(endpoint_id(""), "");
        assert_eq!(go_arch("x86_64"), "amd64");
        assert_eq!(go_arch("riscv64"), "riscv64");
    }
}
