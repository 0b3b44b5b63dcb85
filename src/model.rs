//! Plain Rust types for what logsender ships: build these, not the generated protobuf types.
//!
//! Message-typed fields are `Option`s, so "absent" and "present but empty" survive a
//! round trip through [`crate::wire`].

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;
use std::time::SystemTime;

/// One batch of log entries from one agent, the unit sent on the stream.
///
/// **Identity.** A GoSight server keys logs on `meta.endpoint_id` (tags, alert rules,
/// storage) and labels them with `meta.host_id`, `meta.hostname` and `meta.agent_id`;
/// the top-level `endpoint_id` routes live views and events, and the top-level
/// `agent_id`, `host_id` and `hostname` go into event metadata. Always send `meta`,
/// with those four set, and repeat them at the top level: the GoSight agent does, and
/// some server paths fail on a payload without `meta`. [`LogPayload::from_host`] builds
/// such a payload for this machine.
///
/// ```
/// use logsender::{LogEntry, LogPayload};
/// use std::time::SystemTime;
///
/// let payload = LogPayload {
///     agent_id: "agent-1".into(),
///     hostname: "web-01".into(),
///     timestamp: Some(SystemTime::now()),
///     logs: vec![LogEntry {
///         timestamp: Some(SystemTime::now()),
///         level: "info".into(),
///         message: "service started".into(),
///         ..Default::default()
///     }],
///     ..Default::default()
/// };
/// assert_eq!(payload.logs.len(), 1);
/// ```
#[derive(Debug, Clone, PartialEq, Default)]
pub struct LogPayload {
    /// ID of the sending agent (GoSight copies it into event metadata; repeat it in
    /// `meta.agent_id`, which GoSight's queries use).
    pub agent_id: String,
    /// ID of the host the logs come from (repeat it in `meta.host_id`, which GoSight
    /// labels stored logs with).
    pub host_id: String,
    /// Host name of the host the logs come from (repeat it in `meta.hostname`).
    pub hostname: String,
    /// GoSight endpoint ID (`host-…` for a host): routes live views and events. Repeat
    /// it in `meta.endpoint_id`, the key GoSight files logs under.
    pub endpoint_id: String,
    /// When the batch was built; `None` leaves the field off the wire.
    pub timestamp: Option<SystemTime>,
    /// The log entries of this batch.
    pub logs: Vec<LogEntry>,
    /// Host and agent metadata; `None` leaves the field off the wire (GoSight servers
    /// expect it: send it).
    pub meta: Option<Meta>,
}

/// One log line with its attributes.
///
/// ```
/// use logsender::{Level, LogEntry};
///
/// let entry = LogEntry::new(Level::Warning, "disk 91% full")
///     .with_field("mount", "/var")
///     .with_tag("team", "storage");
/// assert_eq!(entry.level, "warning");
/// assert!(entry.timestamp.is_some());
/// ```
#[derive(Debug, Clone, PartialEq, Default)]
pub struct LogEntry {
    /// When the event happened; `None` leaves the field off the wire.
    pub timestamp: Option<SystemTime>,
    /// Severity (e.g. `info`, `error`).
    pub level: String,
    /// The log message.
    pub message: String,
    /// Where the line came from (e.g. `journald`, a file path).
    pub source: String,
    /// Free-form category.
    pub category: String,
    /// Process ID of the emitter (0 if unknown).
    pub pid: i32,
    /// Structured fields of the entry.
    pub fields: HashMap<String, String>,
    /// Tags of the entry.
    pub tags: HashMap<String, String>,
    /// Per-entry metadata; `None` leaves the field off the wire.
    pub meta: Option<LogMeta>,
}

/// Metadata about the program that produced one log entry.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct LogMeta {
    /// Platform (e.g. `linux`, `docker`).
    pub platform: String,
    /// Application name.
    pub app_name: String,
    /// Application version.
    pub app_version: String,
    /// Container ID.
    pub container_id: String,
    /// Container name.
    pub container_name: String,
    /// systemd unit.
    pub unit: String,
    /// Service name.
    pub service: String,
    /// Event ID (e.g. a Windows event ID).
    pub event_id: String,
    /// User the program runs as.
    pub user: String,
    /// Executable path or name.
    pub executable: String,
    /// Path (e.g. of the log file).
    pub path: String,
    /// Any other metadata.
    pub extra: HashMap<String, String>,
}

/// Host and agent metadata of a payload (GoSight's `Meta`).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Meta {
    /// Host name of the machine the agent runs on.
    pub hostname: String,
    /// Primary IP address of the host.
    pub ip_address: String,
    /// Operating system name (e.g. `linux`).
    pub os: String,
    /// Operating system version.
    pub os_version: String,
    /// Kernel version.
    pub kernel_version: String,
    /// CPU architecture (e.g. `x86_64`).
    pub architecture: String,
    /// Cloud provider name, if any.
    pub cloud_provider: String,
    /// Cloud region.
    pub region: String,
    /// Cloud availability zone.
    pub availability_zone: String,
    /// Cloud instance ID.
    pub instance_id: String,
    /// Cloud instance type.
    pub instance_type: String,
    /// Cloud account ID.
    pub account_id: String,
    /// Cloud project ID.
    pub project_id: String,
    /// Cloud resource group.
    pub resource_group: String,
    /// VPC ID.
    pub vpc_id: String,
    /// Subnet ID.
    pub subnet_id: String,
    /// Machine image ID.
    pub image_id: String,
    /// Service ID.
    pub service_id: String,
    /// Container ID.
    pub container_id: String,
    /// Container name.
    pub container_name: String,
    /// Kubernetes pod name.
    pub pod_name: String,
    /// Kubernetes namespace.
    pub namespace: String,
    /// Cluster name.
    pub cluster_name: String,
    /// Cluster node name.
    pub node_name: String,
    /// Container image name.
    pub container_image_name: String,
    /// Container image ID.
    pub container_image_id: String,
    /// Application name.
    pub application: String,
    /// Deployment environment (e.g. `prod`).
    pub environment: String,
    /// Service name.
    pub service: String,
    /// Application or service version.
    pub version: String,
    /// Deployment ID.
    pub deployment_id: String,
    /// Public IP address.
    pub public_ip: String,
    /// Private IP address.
    pub private_ip: String,
    /// MAC address.
    pub mac_address: String,
    /// Network interface name.
    pub network_interface: String,
    /// Free-form labels.
    pub labels: HashMap<String, String>,
    /// GoSight endpoint ID: the key a GoSight server files logs under (tags, alert
    /// rules, storage). `host-` and the first 12 characters of the host ID for a host.
    pub endpoint_id: String,
    /// Platform (e.g. `ubuntu`).
    pub platform: String,
    /// Platform family (e.g. `debian`).
    pub platform_family: String,
    /// Platform version.
    pub platform_version: String,
    /// Kernel architecture.
    pub kernel_architecture: String,
    /// Virtualization system (e.g. `kvm`).
    pub virtualization_system: String,
    /// Virtualization role (`host` or `guest`).
    pub virtualization_role: String,
    /// Host ID.
    pub host_id: String,
    /// Agent version.
    pub agent_version: String,
    /// Agent ID.
    pub agent_id: String,
    /// Resource ID.
    pub resource_id: String,
    /// Resource kind.
    pub kind: String,
    /// Free-form tags.
    pub tags: HashMap<String, String>,
}

/// Severity of a [`LogEntry`], spelled as GoSight spells it (`LogEntry::level` is a
/// plain string on the wire).
///
/// The names are the syslog severities GoSight's server uses: `debug`, `info`, `notice`,
/// `warning`, `error`, `critical`, `alert`, `emergency`. A GoSight server raises an event
/// for `error` and `critical` entries; its rules compare the string exactly.
///
/// ```
/// use logsender::Level;
///
/// assert_eq!(Level::from(log::Level::Warn).as_str(), "warning");
/// assert_eq!(Level::from(log::Level::Trace), Level::Debug);
/// assert_eq!("crit".parse::<Level>(), Ok(Level::Critical));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Level {
    /// `debug` (syslog 7). `log`'s `Trace` maps here too.
    Debug,
    /// `info` (syslog 6).
    Info,
    /// `notice` (syslog 5).
    Notice,
    /// `warning` (syslog 4).
    Warning,
    /// `error` (syslog 3).
    Error,
    /// `critical` (syslog 2).
    Critical,
    /// `alert` (syslog 1).
    Alert,
    /// `emergency` (syslog 0).
    Emergency,
}

impl Level {
    /// The string GoSight uses for this level.
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Debug => "debug",
            Level::Info => "info",
            Level::Notice => "notice",
            Level::Warning => "warning",
            Level::Error => "error",
            Level::Critical => "critical",
            Level::Alert => "alert",
            Level::Emergency => "emergency",
        }
    }

    /// The level of a syslog severity (0 = emergency ..= 7 = debug); `None` above 7.
    pub fn from_syslog(severity: u8) -> Option<Level> {
        Some(match severity {
            0 => Level::Emergency,
            1 => Level::Alert,
            2 => Level::Critical,
            3 => Level::Error,
            4 => Level::Warning,
            5 => Level::Notice,
            6 => Level::Info,
            7 => Level::Debug,
            _ => return None,
        })
    }
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<log::Level> for Level {
    fn from(level: log::Level) -> Level {
        match level {
            log::Level::Error => Level::Error,
            log::Level::Warn => Level::Warning,
            log::Level::Info => Level::Info,
            log::Level::Debug | log::Level::Trace => Level::Debug,
        }
    }
}

/// A string that names no [`Level`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownLevel(pub String);

impl fmt::Display for UnknownLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "unknown log level {:?}", self.0)
    }
}

impl std::error::Error for UnknownLevel {}

impl FromStr for Level {
    type Err = UnknownLevel;

    /// Accepts GoSight's names and the usual short forms (`warn`, `err`, `crit`,
    /// `emerg`, `fatal`, `trace`), in any case.
    fn from_str(s: &str) -> Result<Level, UnknownLevel> {
        Ok(match s.trim().to_ascii_lowercase().as_str() {
            "trace" | "debug" => Level::Debug,
            "info" | "informational" => Level::Info,
            "notice" => Level::Notice,
            "warn" | "warning" => Level::Warning,
            "err" | "error" => Level::Error,
            "crit" | "critical" | "fatal" => Level::Critical,
            "alert" => Level::Alert,
            "emerg" | "emergency" | "panic" => Level::Emergency,
            _ => return Err(UnknownLevel(s.to_string())),
        })
    }
}

impl LogEntry {
    /// An entry with this level and message, timestamped now.
    pub fn new(level: Level, message: impl Into<String>) -> LogEntry {
        LogEntry {
            timestamp: Some(SystemTime::now()),
            level: level.as_str().to_string(),
            message: message.into(),
            ..Default::default()
        }
    }

    /// Adds a structured field (replacing one of the same name).
    #[must_use]
    pub fn with_field(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.fields.insert(name.into(), value.into());
        self
    }

    /// Adds a tag (replacing one of the same name).
    #[must_use]
    pub fn with_tag(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.tags.insert(name.into(), value.into());
        self
    }

    /// Sets where the line came from (e.g. `journald`, a file path).
    #[must_use]
    pub fn with_source(mut self, source: impl Into<String>) -> Self {
        self.source = source.into();
        self
    }

    /// Sets the category.
    #[must_use]
    pub fn with_category(mut self, category: impl Into<String>) -> Self {
        self.category = category.into();
        self
    }

    /// Sets the process ID of the emitter.
    #[must_use]
    pub fn with_pid(mut self, pid: i32) -> Self {
        self.pid = pid;
        self
    }

    /// Sets when the event happened (`new` uses now).
    #[must_use]
    pub fn with_timestamp(mut self, timestamp: SystemTime) -> Self {
        self.timestamp = Some(timestamp);
        self
    }

    /// Sets the per-entry metadata.
    #[must_use]
    pub fn with_meta(mut self, meta: LogMeta) -> Self {
        self.meta = Some(meta);
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_round_trip_through_their_names() {
        for severity in 0..8 {
            let level = Level::from_syslog(severity).expect("0..8 are levels");
            assert_eq!(level.as_str().parse::<Level>(), Ok(level));
            assert_eq!(level.to_string(), level.as_str());
        }
        assert_eq!(Level::from_syslog(8), None);
        assert_eq!("WARN".parse::<Level>(), Ok(Level::Warning));
        assert_eq!("fatal".parse::<Level>(), Ok(Level::Critical));
        assert!("verbose".parse::<Level>().is_err());
        assert!(Level::Debug < Level::Emergency);
    }

    #[test]
    fn builders_fill_what_they_name() {
        let before = SystemTime::now();
        let e = LogEntry::new(Level::Error, "boom")
            .with_field("k", "v")
            .with_tag("t", "u")
            .with_source("app")
            .with_category("c")
            .with_pid(7);
        assert!(e.timestamp.is_some_and(|t| t >= before));
        assert_eq!(
            (
                e.level.as_str(),
                e.message.as_str(),
                e.source.as_str(),
                e.category.as_str(),
                e.pid
            ),
            ("error", "boom", "app", "c", 7)
        );
        assert_eq!(e.fields["k"], "v");
        assert_eq!(e.tags["t"], "u");
    }
}
