//! Hand-written prost messages mirroring proto/log.proto and proto/meta.proto (no
//! protoc, no tonic-build), and the conversion a tonic user would not need (they would
//! build these directly; it runs before the timed part).

use std::collections::HashMap;
use std::time::{SystemTime, UNIX_EPOCH};

#[derive(Clone, PartialEq, prost::Message)]
pub struct Timestamp {
    #[prost(int64, tag = "1")]
    pub seconds: i64,
    #[prost(int32, tag = "2")]
    pub nanos: i32,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct LogPayload {
    #[prost(string, tag = "1")]
    pub agent_id: String,
    #[prost(string, tag = "2")]
    pub host_id: String,
    #[prost(string, tag = "3")]
    pub hostname: String,
    #[prost(string, tag = "4")]
    pub endpoint_id: String,
    #[prost(message, optional, tag = "5")]
    pub timestamp: Option<Timestamp>,
    #[prost(message, repeated, tag = "6")]
    pub logs: Vec<LogEntry>,
    #[prost(message, optional, tag = "7")]
    pub meta: Option<Meta>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct LogEntry {
    #[prost(message, optional, tag = "1")]
    pub timestamp: Option<Timestamp>,
    #[prost(string, tag = "2")]
    pub level: String,
    #[prost(string, tag = "3")]
    pub message: String,
    #[prost(string, tag = "4")]
    pub source: String,
    #[prost(string, tag = "5")]
    pub category: String,
    #[prost(int32, tag = "6")]
    pub pid: i32,
    #[prost(map = "string, string", tag = "7")]
    pub fields: HashMap<String, String>,
    #[prost(map = "string, string", tag = "8")]
    pub tags: HashMap<String, String>,
    #[prost(message, optional, tag = "9")]
    pub meta: Option<LogMeta>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct LogMeta {
    #[prost(string, tag = "1")]
    pub platform: String,
    #[prost(string, tag = "2")]
    pub app_name: String,
    #[prost(string, tag = "3")]
    pub app_version: String,
    #[prost(string, tag = "4")]
    pub container_id: String,
    #[prost(string, tag = "5")]
    pub container_name: String,
    #[prost(string, tag = "6")]
    pub unit: String,
    #[prost(string, tag = "7")]
    pub service: String,
    #[prost(string, tag = "8")]
    pub event_id: String,
    #[prost(string, tag = "9")]
    pub user: String,
    #[prost(string, tag = "10")]
    pub executable: String,
    #[prost(string, tag = "11")]
    pub path: String,
    #[prost(map = "string, string", tag = "12")]
    pub extra: HashMap<String, String>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct LogResponse {
    #[prost(string, tag = "1")]
    pub status: String,
    #[prost(int32, tag = "2")]
    pub status_code: i32,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Meta {
    #[prost(string, tag = "1")]
    pub hostname: String,
    #[prost(string, tag = "2")]
    pub ip_address: String,
    #[prost(string, tag = "3")]
    pub os: String,
    #[prost(string, tag = "4")]
    pub os_version: String,
    #[prost(string, tag = "5")]
    pub kernel_version: String,
    #[prost(string, tag = "6")]
    pub architecture: String,
    #[prost(string, tag = "7")]
    pub cloud_provider: String,
    #[prost(string, tag = "8")]
    pub region: String,
    #[prost(string, tag = "9")]
    pub availability_zone: String,
    #[prost(string, tag = "10")]
    pub instance_id: String,
    #[prost(string, tag = "11")]
    pub instance_type: String,
    #[prost(string, tag = "12")]
    pub account_id: String,
    #[prost(string, tag = "13")]
    pub project_id: String,
    #[prost(string, tag = "14")]
    pub resource_group: String,
    #[prost(string, tag = "15")]
    pub vpc_id: String,
    #[prost(string, tag = "16")]
    pub subnet_id: String,
    #[prost(string, tag = "17")]
    pub image_id: String,
    #[prost(string, tag = "18")]
    pub service_id: String,
    #[prost(string, tag = "19")]
    pub container_id: String,
    #[prost(string, tag = "20")]
    pub container_name: String,
    #[prost(string, tag = "21")]
    pub pod_name: String,
    #[prost(string, tag = "22")]
    pub namespace: String,
    #[prost(string, tag = "23")]
    pub cluster_name: String,
    #[prost(string, tag = "24")]
    pub node_name: String,
    #[prost(string, tag = "25")]
    pub container_image_name: String,
    #[prost(string, tag = "26")]
    pub container_image_id: String,
    #[prost(string, tag = "27")]
    pub application: String,
    #[prost(string, tag = "28")]
    pub environment: String,
    #[prost(string, tag = "29")]
    pub service: String,
    #[prost(string, tag = "30")]
    pub version: String,
    #[prost(string, tag = "31")]
    pub deployment_id: String,
    #[prost(string, tag = "32")]
    pub public_ip: String,
    #[prost(string, tag = "33")]
    pub private_ip: String,
    #[prost(string, tag = "34")]
    pub mac_address: String,
    #[prost(string, tag = "35")]
    pub network_interface: String,
    #[prost(map = "string, string", tag = "36")]
    pub labels: HashMap<String, String>,
    #[prost(string, tag = "37")]
    pub endpoint_id: String,
    #[prost(string, tag = "38")]
    pub platform: String,
    #[prost(string, tag = "39")]
    pub platform_family: String,
    #[prost(string, tag = "40")]
    pub platform_version: String,
    #[prost(string, tag = "41")]
    pub kernel_architecture: String,
    #[prost(string, tag = "42")]
    pub virtualization_system: String,
    #[prost(string, tag = "43")]
    pub virtualization_role: String,
    #[prost(string, tag = "44")]
    pub host_id: String,
    #[prost(string, tag = "45")]
    pub agent_version: String,
    #[prost(string, tag = "46")]
    pub agent_id: String,
    #[prost(string, tag = "47")]
    pub resource_id: String,
    #[prost(string, tag = "48")]
    pub kind: String,
    #[prost(map = "string, string", tag = "49")]
    pub tags: HashMap<String, String>,
}

fn ts(t: Option<SystemTime>) -> Option<Timestamp> {
    let d = t?.duration_since(UNIX_EPOCH).ok()?;
    Some(Timestamp {
        seconds: d.as_secs() as i64,
        nanos: d.subsec_nanos() as i32,
    })
}

pub fn from(p: &logsender::LogPayload) -> LogPayload {
    LogPayload {
        agent_id: p.agent_id.clone(),
        host_id: p.host_id.clone(),
        hostname: p.hostname.clone(),
        endpoint_id: p.endpoint_id.clone(),
        timestamp: ts(p.timestamp),
        logs: p.logs.iter().map(entry).collect(),
        meta: p.meta.as_ref().map(meta),
    }
}

fn entry(e: &logsender::LogEntry) -> LogEntry {
    LogEntry {
        timestamp: ts(e.timestamp),
        level: e.level.clone(),
        message: e.message.clone(),
        source: e.source.clone(),
        category: e.category.clone(),
        pid: e.pid,
        fields: e.fields.clone(),
        tags: e.tags.clone(),
        meta: e.meta.as_ref().map(|m| LogMeta {
            platform: m.platform.clone(),
            app_name: m.app_name.clone(),
            app_version: m.app_version.clone(),
            container_id: m.container_id.clone(),
            container_name: m.container_name.clone(),
            unit: m.unit.clone(),
            service: m.service.clone(),
            event_id: m.event_id.clone(),
            user: m.user.clone(),
            executable: m.executable.clone(),
            path: m.path.clone(),
            extra: m.extra.clone(),
        }),
    }
}

fn meta(m: &logsender::Meta) -> Meta {
    Meta {
        hostname: m.hostname.clone(),
        ip_address: m.ip_address.clone(),
        os: m.os.clone(),
        os_version: m.os_version.clone(),
        kernel_version: m.kernel_version.clone(),
        architecture: m.architecture.clone(),
        cloud_provider: m.cloud_provider.clone(),
        region: m.region.clone(),
        availability_zone: m.availability_zone.clone(),
        instance_id: m.instance_id.clone(),
        instance_type: m.instance_type.clone(),
        account_id: m.account_id.clone(),
        project_id: m.project_id.clone(),
        resource_group: m.resource_group.clone(),
        vpc_id: m.vpc_id.clone(),
        subnet_id: m.subnet_id.clone(),
        image_id: m.image_id.clone(),
        service_id: m.service_id.clone(),
        container_id: m.container_id.clone(),
        container_name: m.container_name.clone(),
        pod_name: m.pod_name.clone(),
        namespace: m.namespace.clone(),
        cluster_name: m.cluster_name.clone(),
        node_name: m.node_name.clone(),
        container_image_name: m.container_image_name.clone(),
        container_image_id: m.container_image_id.clone(),
        application: m.application.clone(),
        environment: m.environment.clone(),
        service: m.service.clone(),
        version: m.version.clone(),
        deployment_id: m.deployment_id.clone(),
        public_ip: m.public_ip.clone(),
        private_ip: m.private_ip.clone(),
        mac_address: m.mac_address.clone(),
        network_interface: m.network_interface.clone(),
        labels: m.labels.clone(),
        endpoint_id: m.endpoint_id.clone(),
        platform: m.platform.clone(),
        platform_family: m.platform_family.clone(),
        platform_version: m.platform_version.clone(),
        kernel_architecture: m.kernel_architecture.clone(),
        virtualization_system: m.virtualization_system.clone(),
        virtualization_role: m.virtualization_role.clone(),
        host_id: m.host_id.clone(),
        agent_version: m.agent_version.clone(),
        agent_id: m.agent_id.clone(),
        resource_id: m.resource_id.clone(),
        kind: m.kind.clone(),
        tags: m.tags.clone(),
    }
}
