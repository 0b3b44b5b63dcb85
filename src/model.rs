//! Plain Rust types for what logsender ships: build these, not the generated protobuf types.
//!
//! Message-typed fields are `Option`s, so "absent" and "present but empty" survive a
//! round trip through [`crate::wire`].

use std::collections::HashMap;
use std::time::SystemTime;

/// One batch of log entries from one agent, the unit sent on the stream.
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
    /// ID of the sending agent.
    pub agent_id: String,
    /// ID of the host the logs come from.
    pub host_id: String,
    /// Host name of the host the logs come from.
    pub hostname: String,
    /// GoSight endpoint ID.
    pub endpoint_id: String,
    /// When the batch was built; `None` leaves the field off the wire.
    pub timestamp: Option<SystemTime>,
    /// The log entries of this batch.
    pub logs: Vec<LogEntry>,
    /// Host and agent metadata; `None` leaves the field off the wire.
    pub meta: Option<Meta>,
}

/// One log line with its attributes.
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
    /// GoSight endpoint ID.
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
