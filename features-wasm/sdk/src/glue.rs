//! Conversions between wit-bindgen's generated types and [`crate::model`].
//! Only compiled for wasm32; used by [`crate::export_feature!`].

use crate::Feature;
use crate::bindings::security::feature::{cluster, logging, types as wit};
use crate::model as m;

pub fn metadata<F: Feature>(feature: &F) -> wit::Metadata {
    let md = feature.metadata();
    wit::Metadata {
        id: md.id,
        priority: md.priority,
        contract_version: md.contract_version,
        description: md.description,
        condition_type: md.condition_type,
    }
}

pub fn configure<F: Feature>(
    feature: &mut F,
    config_json: &str,
    ctx: wit::Context,
) -> Result<Vec<wit::Diagnostic>, wit::ConfigError> {
    let ctx = m::Context {
        namespace: ctx.namespace,
        agent_name: ctx.agent_name,
        cluster_name: ctx.cluster_name,
        operator_image: ctx.operator_image,
        output: m::OutputSettings {
            endpoints: ctx.output.endpoints,
            auth_secret: ctx.output.auth_secret.map(|s| m::SecretRef { name: s.name }),
            ca_secret: ctx.output.ca_secret.map(|s| m::SecretRef { name: s.name }),
            index_inventory: ctx.output.index_inventory,
            index_events: ctx.output.index_events,
            index_vulnerabilities: ctx.output.index_vulnerabilities,
        },
    };
    match feature.configure(config_json, &ctx) {
        Ok(diags) => Ok(diags
            .into_iter()
            .map(|d| wit::Diagnostic {
                level: match d.level {
                    m::DiagnosticLevel::Info => wit::DiagnosticLevel::Info,
                    m::DiagnosticLevel::Warning => wit::DiagnosticLevel::Warning,
                },
                field: d.field,
                message: d.message,
            })
            .collect()),
        Err(e) => Err(wit::ConfigError { field: e.field, message: e.message }),
    }
}

pub fn otel_config<F: Feature>(feature: &mut F) -> Option<wit::OtelReceiver> {
    feature.otel_config().map(|r| wit::OtelReceiver {
        name: r.name,
        include: r.include,
        exclude: r.exclude,
        format: match r.format {
            m::LineFormat::Json => wit::LineFormat::Json,
            m::LineFormat::ContainerJson => wit::LineFormat::ContainerJson,
        },
        timestamp: r.timestamp.map(|t| wit::TimestampField {
            field: t.field,
            layout: match t.layout {
                m::TimestampLayout::Rfc3339Nano => wit::TimestampLayout::Rfc3339Nano,
                m::TimestampLayout::EpochSeconds => wit::TimestampLayout::EpochSeconds,
            },
        }),
        tool: r.tool,
        target: match r.target {
            m::TargetIndex::Inventory => wit::TargetIndex::Inventory,
            m::TargetIndex::Events => wit::TargetIndex::Events,
            m::TargetIndex::Vulnerabilities => wit::TargetIndex::Vulnerabilities,
        },
        subject: wit::SubjectPaths { namespace: r.subject.namespace, pod: r.subject.pod, node: r.subject.node },
        severity: r
            .severity
            .into_iter()
            .map(|s| wit::SeverityRule { path: s.path, equals: s.equals, severity: s.severity })
            .collect(),
        event_kind: r.event_kind,
        lifts: r
            .lifts
            .into_iter()
            .map(|l| wit::FieldLift {
                from: l.from,
                to: l.to,
                strip_pattern: l.strip_pattern,
                when: l.when.map(|w| wit::FieldMatch { path: w.path, equals: w.equals }),
            })
            .collect(),
    })
}

pub fn collector<F: Feature>(feature: &mut F) -> Option<wit::CollectorSlots> {
    feature.collector().map(|c| wit::CollectorSlots {
        node_daemonset: c.node_daemonset,
        node_container: c.node_container,
        gateway_deployment: c.gateway_deployment,
        node_config_map: c.node_config_map,
        gateway_config_map: c.gateway_config_map,
        config_key: c.config_key,
        gateway_endpoint: c.gateway_endpoint,
        storage_directory: c.storage_directory,
        username_env: c.username_env,
        password_env: c.password_env,
        ca_file: c.ca_file,
    })
}

/// The `cluster` import, behind the SDK's [`m::ClusterReader`] trait.
struct HostCluster;

impl m::ClusterReader for HostCluster {
    fn get(&self, api_version: &str, kind: &str, name: &str) -> Result<String, m::LookupError> {
        cluster::get(api_version, kind, name).map_err(|e| match e {
            cluster::LookupError::Denied(why) => m::LookupError::Denied(why),
            cluster::LookupError::NotFound => m::LookupError::NotFound,
            cluster::LookupError::Unavailable(why) => m::LookupError::Unavailable(why),
        })
    }
}

pub fn assess<F: Feature>(feature: &mut F) -> wit::Condition {
    let c = feature.assess(&HostCluster);
    wit::Condition {
        type_: c.type_,
        status: match c.status {
            m::ConditionStatus::True => wit::ConditionStatus::True,
            m::ConditionStatus::False => wit::ConditionStatus::False,
            m::ConditionStatus::Unknown => wit::ConditionStatus::Unknown,
        },
        reason: c.reason,
        message: c.message,
    }
}

/// Log through the host, attributed to this feature.
pub fn log_warn(message: &str) {
    logging::log(logging::Level::Warn, message);
}
