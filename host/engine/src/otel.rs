//! Synthesis of the node and gateway collector configs from every
//! feature's `otel-config`, for one pinned collector release.
//!
//! Document shape (the body map is the Elasticsearch document; the exporter
//! runs in `bodymap` mode):
//!
//! ```text
//! { "@timestamp": <epoch ms>,
//!   "labels": { "security_tool": "falco" },
//!   "event": { "kind": "alert", "dataset": "falco", "severity": 1..5 },
//!   "kubernetes": { "namespace", "pod": { "name" }, "node": { "name" } },   <- the SUBJECT
//!   "orchestrator": { "cluster": { "name" } },
//!   ...lifted ECS fields (process.*, container.*, host.*, network.*)...,
//!   "falco": { <the tool's event, unchanged> } }
//! ```
//!
//! The raw event sits under the tool's name so that tools sharing an index
//! never clash on a field's type (Falco's `rule` is a string, a posture
//! alert's `rule` is an object).

use std::collections::{BTreeMap, BTreeSet};

use secop_feature_sdk::k8s::content_hash;
use secop_feature_sdk::model as m;
use serde_json::{Map, Value, json};

use crate::objects::ObjectKey;

/// The collector release the configs are written for (component names,
/// OTTL functions, exporter keys). Build recipe: test/infra/otelcol-builder.yaml.
pub const COLLECTOR_VERSION: &str = "0.152.0";

/// Annotation on collector pod templates: a hash of their config, so the
/// pods roll when a feature is toggled.
pub const CONFIG_HASH_ANNOTATION: &str = "security.example.io/config-hash";

const HEALTH_ENDPOINT: &str = "0.0.0.0:13133";

/// Mutual TLS between the node collectors and the gateway: without it any
/// pod that reaches the gateway's OTLP port (every pod, where the cluster's
/// CNI does not enforce the pipeline's NetworkPolicy) could forge or flood
/// security events. The host, not the feature, owns the credential: a
/// module has no secret of its own and must not decide who may send
/// events. The operator issues it into this Secret of the agent namespace
/// (host/operator/src/telemetry.rs); each collector mounts only its files.
pub const TELEMETRY_SECRET: &str = "secop-telemetry-mtls";
const TELEMETRY_VOLUME: &str = "secop-telemetry-mtls";
/// Where each collector finds its files (tests that run the rendered
/// configs outside a cluster rewrite it).
pub const TELEMETRY_DIR: &str = "/etc/otelcol/telemetry-mtls";
/// Certificates are reissued long before they end; collectors re-read
/// theirs this often (the kubelet updates mounted Secrets in place).
const TELEMETRY_RELOAD: &str = "1h";

/// Keys of [`TELEMETRY_SECRET`]. `ca.key` stays in the Secret for the
/// operator's renewals and is mounted nowhere.
pub mod telemetry_keys {
    pub const CA_CERT: &str = "ca.crt";
    pub const CA_KEY: &str = "ca.key";
    pub const GATEWAY_CERT: &str = "gateway.crt";
    pub const GATEWAY_KEY: &str = "gateway.key";
    pub const NODE_CERT: &str = "node.crt";
    pub const NODE_KEY: &str = "node.key";
}

/// What the collectors of a desired state need issued: the Secret's name
/// and the names the gateway serves under (its certificate's DNS names).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TelemetryTls {
    pub secret: String,
    pub gateway_hosts: Vec<String>,
    /// The collectors that mount it (rolled when its CA is renewed).
    pub node_daemonset: String,
    pub gateway_deployment: String,
}

impl TelemetryTls {
    /// The gateway is reached at the host of `gateway-endpoint`; a Service
    /// name (`name.namespace.svc`) is also served with the cluster domain.
    pub fn for_slots(slots: &m::CollectorSlots) -> Self {
        let host = slots
            .gateway_endpoint
            .rsplit_once(':')
            .map_or(slots.gateway_endpoint.as_str(), |(host, _)| host)
            .to_string();
        let mut gateway_hosts = vec![host.clone()];
        if host.ends_with(".svc") {
            gateway_hosts.push(format!("{host}.cluster.local"));
        }
        Self {
            secret: TELEMETRY_SECRET.to_string(),
            gateway_hosts,
            node_daemonset: slots.node_daemonset.clone(),
            gateway_deployment: slots.gateway_deployment.clone(),
        }
    }
}

fn telemetry_file(key: &str) -> String {
    format!("{TELEMETRY_DIR}/{key}")
}
const RFC3339_NANO: &str = "2006-01-02T15:04:05.999999999Z07:00";

/// Both collector configs, as YAML.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CollectorConfigs {
    pub node: String,
    pub gateway: String,
}

/// An OTTL string literal.
fn lit(s: &str) -> String {
    serde_json::to_string(s).expect("string serializes")
}

/// `log.body["a"]["b"]` for a path.
fn body_path(path: &[String]) -> String {
    let mut out = String::from("log.body");
    for key in path {
        out.push('[');
        out.push_str(&lit(key));
        out.push(']');
    }
    out
}

fn dotted(field: &str) -> Vec<String> {
    field.split('.').map(str::to_string).collect()
}

fn raw(tool: &str, path: &[String]) -> Vec<String> {
    std::iter::once(tool.to_string()).chain(path.iter().cloned()).collect()
}

fn index_name(ctx: &m::Context, target: m::TargetIndex) -> &str {
    match target {
        m::TargetIndex::Inventory => &ctx.output.index_inventory,
        m::TargetIndex::Events => &ctx.output.index_events,
        m::TargetIndex::Vulnerabilities => &ctx.output.index_vulnerabilities,
    }
}

fn target_label(target: m::TargetIndex) -> &'static str {
    match target {
        m::TargetIndex::Inventory => "inventory",
        m::TargetIndex::Events => "events",
        m::TargetIndex::Vulnerabilities => "vulnerabilities",
    }
}

/// The empty document every event of `r` is wrapped in: the fixed fields,
/// and empty parents for every lift destination outside the raw event.
fn skeleton(ctx: &m::Context, r: &m::OtelReceiver) -> Value {
    let mut doc = json!({
        "labels": { "security_tool": r.tool },
        "event": { "kind": r.event_kind, "dataset": r.tool },
        "kubernetes": { "pod": {}, "node": {} },
        "orchestrator": { "cluster": { "name": ctx.cluster_name } },
    });
    for lift in &r.lifts {
        let segments = dotted(&lift.to);
        if segments.first().map(String::as_str) == Some(r.tool.as_str()) {
            continue; // inside the raw event, which already exists
        }
        let mut node = &mut doc;
        for parent in &segments[..segments.len().saturating_sub(1)] {
            if !node.get(parent).is_some_and(Value::is_object) {
                node[parent.as_str()] = json!({});
            }
            node = &mut node[parent.as_str()];
        }
    }
    doc
}

/// The file_log receiver of one feature.
fn receiver(r: &m::OtelReceiver, storage: &str) -> Value {
    let mut operators = vec![];
    if r.format == m::LineFormat::ContainerJson {
        operators.push(json!({ "type": "container", "id": "cri" }));
    }
    // Sensors also write plain log lines (startup banners on stderr); only
    // JSON documents are events.
    operators.push(json!({ "type": "filter", "id": "only-json", "expr": "body not matches \"^\\\\s*\\\\{\"" }));
    let mut parser =
        json!({ "type": "json_parser", "id": "event-time", "parse_from": "body", "on_error": "send_quiet" });
    if let Some(ts) = &r.timestamp {
        parser["timestamp"] = match ts.layout {
            m::TimestampLayout::Rfc3339Nano => {
                json!({ "parse_from": format!("attributes[{}]", lit(&ts.field)), "layout_type": "gotime", "layout": RFC3339_NANO })
            }
            m::TimestampLayout::EpochSeconds => {
                json!({ "parse_from": format!("attributes[{}]", lit(&ts.field)), "layout_type": "epoch", "layout": "s" })
            }
        };
    }
    operators.push(parser);
    json!({
        "include": r.include,
        "exclude": r.exclude,
        "start_at": "beginning",
        "include_file_path": true,
        "include_file_name": false,
        "storage": storage,
        "operators": operators,
    })
}

/// The node-side transform of one feature: wrap, subject, lifts, time.
fn node_statements(ctx: &m::Context, r: &m::OtelReceiver) -> Vec<String> {
    let tool = &r.tool;
    let mut skeleton_text = skeleton(ctx, r).to_string();
    // Splice the skeleton after the raw event: `{"falco": <line>, ...skeleton}`.
    skeleton_text.remove(0);
    let mut out = vec![format!(
        "set(log.body, ParseJSON(Concat([{}, log.body, {}], \"\"))) where IsString(log.body)",
        lit(&format!("{{{}:", lit(tool))),
        lit(&format!(",{skeleton_text}")),
    )];
    let guard = |p: &str| format!("IsMap(log.body) and {p} != nil");
    let subject = [
        ("namespace", &r.subject.namespace, "kubernetes.namespace"),
        ("pod", &r.subject.pod, "kubernetes.pod.name"),
        ("node", &r.subject.node, "kubernetes.node.name"),
    ];
    for (_, alternatives, field) in subject {
        let target = body_path(&dotted(field));
        for alt in alternatives {
            let source = body_path(&raw(tool, alt));
            out.push(format!("set({target}, {source}) where {} and {target} == nil", guard(&source)));
        }
    }
    // A node agent's event happened on its own node.
    let node = body_path(&dotted("kubernetes.node.name"));
    out.push(format!("set({node}, \"${{env:K8S_NODE_NAME}}\") where IsMap(log.body) and {node} == nil"));
    for lift in &r.lifts {
        let target = body_path(&dotted(&lift.to));
        let source = body_path(&raw(tool, &lift.from));
        let when = match &lift.when {
            Some(w) => {
                let path = body_path(&raw(tool, &w.path));
                match &w.equals {
                    Some(v) => format!(" and {path} == {}", lit(v)),
                    None => format!(" and {path} != nil"),
                }
            }
            None => String::new(),
        };
        out.push(format!("set({target}, {source}) where {}{when}", guard(&source)));
        if let Some(pattern) = &lift.strip_pattern {
            out.push(format!("replace_pattern({target}, {}, \"\") where {}", lit(pattern), guard(&target)));
        }
    }
    let ts = body_path(&["@timestamp".to_string()]);
    out.push(format!("set({ts}, UnixMilli(log.time)) where IsMap(log.body) and log.time_unix_nano > 0"));
    out.push(format!("set({ts}, UnixMilli(log.observed_time)) where IsMap(log.body) and {ts} == nil"));
    // The parsed copy in attributes was only needed for the timestamp.
    out.push("keep_keys(log.attributes, [])".to_string());
    out
}

/// Gateway: the severity table (docs/seed-deviations.md, §5.4), per tool, from the features' rules.
fn severity_statements(receivers: &[(String, m::OtelReceiver)]) -> Vec<String> {
    let mut out = vec![];
    for (_, r) in receivers {
        let tool_is = format!("log.body[\"labels\"][\"security_tool\"] == {}", lit(&r.tool));
        for rule in &r.severity {
            let path = body_path(&raw(&r.tool, &rule.path));
            let condition = match &rule.equals {
                Some(v) => format!("{path} == {}", lit(v)),
                None => format!("{path} != nil"),
            };
            out.push(format!(
                "set(log.body[\"event\"][\"severity\"], {}) where IsMap(log.body) and {tool_is} and {condition}",
                rule.severity.clamp(1, 5)
            ));
        }
    }
    out
}

/// How long the gateway keeps retrying one batch against an unreachable
/// Elasticsearch before the batch is lost. The exporter (0.152) bounds each
/// flush, retries included, by its `timeout` (default 90 s) and has no
/// exporterhelper retry behind it: when the flush gives up, the persistent
/// queue deletes the batch. So `timeout` *is* the outage the pipeline
/// survives. While the consumers wait, new batches stay in the on-disk
/// queue, then back-pressure reaches the node collectors, whose own queues
/// retry without limit. A hung (connected but silent) Elasticsearch holds a
/// consumer this long too; dead peers are found sooner by TCP keepalive.
pub const GATEWAY_EXPORT_TIMEOUT: &str = "6h";

fn exporter(ctx: &m::Context, slots: &m::CollectorSlots, index: &str) -> Value {
    let mut e = json!({
        "endpoints": ctx.output.endpoints,
        "logs_index": index,
        "timeout": GATEWAY_EXPORT_TIMEOUT,
        "sending_queue": {
            "enabled": true,
            "storage": "file_storage/queue",
            "queue_size": 1000,
            "num_consumers": 4,
            "block_on_overflow": true,
            // The exporter's default waits up to 10 s for 1 MB: a lone
            // alert then took 11 s to become searchable (latency bench).
            // 1 s keeps busy periods in full batches (size still flushes
            // first) and quiet ones near real time.
            "batch": { "flush_timeout": "1s", "min_size": 1000000, "max_size": 5000000, "sizer": "bytes" },
        },
        "retry": {
            "enabled": true,
            // Enough attempts to fill the timeout at the 30 s ceiling
            // (6 h / 30 s = 720), so the timeout alone bounds the wait.
            "max_retries": 10000,
            "initial_interval": "1s",
            "max_interval": "30s",
            "retry_on_status": [429, 500, 502, 503, 504],
        },
    });
    if ctx.output.auth_secret.is_some() {
        e["auth"] = json!({ "authenticator": "basicauth/es" });
    }
    if ctx.output.ca_secret.is_some() {
        e["tls"] = json!({ "ca_file": slots.ca_file });
    }
    e
}

/// Write both configs. `receivers` are (feature, receiver) in priority order.
pub fn synthesize(
    ctx: &m::Context,
    slots: &m::CollectorSlots,
    receivers: &[(String, m::OtelReceiver)],
) -> CollectorConfigs {
    // Node.
    let mut node_receivers = Map::new();
    let mut node_processors = Map::new();
    let mut node_pipelines = Map::new();
    node_processors.insert("batch".into(), json!({ "send_batch_size": 512, "timeout": "500ms" }));
    for (_, r) in receivers {
        let id = format!("file_log/{}", r.name);
        node_receivers.insert(id.clone(), receiver(r, "file_storage/offsets"));
        let transform = format!("transform/{}", r.name);
        node_processors
            .insert(transform.clone(), json!({ "error_mode": "ignore", "log_statements": node_statements(ctx, r) }));
        node_pipelines.insert(
            format!("logs/{}", r.name),
            json!({ "receivers": [id], "processors": [transform, "batch"], "exporters": ["otlp_grpc/gateway"] }),
        );
    }
    if node_pipelines.is_empty() {
        // No feature tails anything: keep a valid config that accepts
        // local OTLP only.
        node_receivers.insert("otlp".into(), json!({ "protocols": { "grpc": { "endpoint": "127.0.0.1:4317" } } }));
        node_pipelines.insert(
            "logs/local".into(),
            json!({ "receivers": ["otlp"], "processors": ["batch"], "exporters": ["otlp_grpc/gateway"] }),
        );
    }
    let node = json!({
        "extensions": {
            "health_check": { "endpoint": HEALTH_ENDPOINT },
            "file_storage/offsets": { "directory": format!("{}/offsets", slots.storage_directory), "create_directory": true },
            "file_storage/queue": { "directory": format!("{}/queue", slots.storage_directory), "create_directory": true },
        },
        "receivers": node_receivers,
        "processors": node_processors,
        "exporters": {
            "otlp_grpc/gateway": {
                "endpoint": slots.gateway_endpoint,
                // The gateway's certificate must chain to the agent's CA, and
                // this collector proves itself with its client certificate.
                "tls": {
                    "ca_file": telemetry_file(telemetry_keys::CA_CERT),
                    "cert_file": telemetry_file(telemetry_keys::NODE_CERT),
                    "key_file": telemetry_file(telemetry_keys::NODE_KEY),
                    "min_version": "1.3",
                    "reload_interval": TELEMETRY_RELOAD,
                },
                // Full queue: block the receivers (filelog stops reading and
                // keeps its offsets) instead of refusing, which drops.
                "sending_queue": { "enabled": true, "storage": "file_storage/queue", "queue_size": 1000, "block_on_overflow": true },
                "retry_on_failure": { "enabled": true, "max_elapsed_time": "0s" },
            },
        },
        "service": {
            "extensions": ["health_check", "file_storage/offsets", "file_storage/queue"],
            "pipelines": node_pipelines,
        },
    });

    // Gateway: severity, then route by CTEM purpose to one exporter per index.
    let mut targets: BTreeMap<m::TargetIndex, BTreeSet<&str>> = BTreeMap::new();
    targets.entry(m::TargetIndex::Events).or_default();
    for (_, r) in receivers {
        targets.entry(r.target).or_default().insert(r.tool.as_str());
    }
    let mut exporters = Map::new();
    let mut pipelines = Map::new();
    let mut table = vec![];
    for (target, tools) in &targets {
        let label = target_label(*target);
        exporters.insert(format!("elasticsearch/{label}"), exporter(ctx, slots, index_name(ctx, *target)));
        pipelines.insert(
            format!("logs/{label}"),
            json!({ "receivers": ["routing/ctem"], "exporters": [format!("elasticsearch/{label}")] }),
        );
        if *target != m::TargetIndex::Events && !tools.is_empty() {
            let any = tools
                .iter()
                .map(|t| format!("body[\"labels\"][\"security_tool\"] == {}", lit(t)))
                .collect::<Vec<_>>()
                .join(" or ");
            table.push(json!({ "context": "log", "condition": format!("IsMap(body) and ({any})"), "pipelines": [format!("logs/{label}")] }));
        }
    }
    if table.is_empty() {
        // The connector needs a table; route events explicitly.
        table.push(json!({ "context": "log", "condition": "IsMap(body)", "pipelines": ["logs/events"] }));
    }
    pipelines.insert(
        "logs/in".into(),
        json!({ "receivers": ["otlp"], "processors": ["transform/ctem"], "exporters": ["routing/ctem"] }),
    );
    let mut ctem_statements = vec![
        json!({ "context": "scope", "statements": ["set(scope.attributes[\"elastic.mapping.mode\"], \"bodymap\")"] }),
    ];
    let severity = severity_statements(receivers);
    if !severity.is_empty() {
        ctem_statements.push(json!({ "context": "log", "statements": severity }));
    }
    let mut extensions = json!({
        "health_check": { "endpoint": HEALTH_ENDPOINT },
        "file_storage/queue": { "directory": format!("{}/queue", slots.storage_directory), "create_directory": true },
    });
    let mut extension_ids = vec!["health_check", "file_storage/queue"];
    if ctx.output.auth_secret.is_some() {
        extensions["basicauth/es"] = json!({ "client_auth": {
            "username": format!("${{env:{}}}", slots.username_env),
            "password": format!("${{env:{}}}", slots.password_env),
        } });
        extension_ids.push("basicauth/es");
    }
    let gateway = json!({
        "extensions": extensions,
        // Only a client certificate issued by the agent's CA may send:
        // a connection without one fails its TLS handshake.
        "receivers": { "otlp": { "protocols": { "grpc": {
            "endpoint": "0.0.0.0:4317",
            "tls": {
                "cert_file": telemetry_file(telemetry_keys::GATEWAY_CERT),
                "key_file": telemetry_file(telemetry_keys::GATEWAY_KEY),
                "client_ca_file": telemetry_file(telemetry_keys::CA_CERT),
                "min_version": "1.3",
                "reload_interval": TELEMETRY_RELOAD,
            },
        } } } },
        "processors": { "transform/ctem": { "error_mode": "ignore", "log_statements": ctem_statements } },
        "connectors": { "routing/ctem": { "default_pipelines": ["logs/events"], "error_mode": "ignore", "table": table } },
        "exporters": exporters,
        "service": { "extensions": extension_ids, "pipelines": pipelines },
    });

    let header =
        format!("# Generated by security-operator for OpenTelemetry Collector {COLLECTOR_VERSION}. Do not edit.\n");
    CollectorConfigs {
        node: header.clone() + &serde_yaml::to_string(&node).expect("yaml"),
        gateway: header + &serde_yaml::to_string(&gateway).expect("yaml"),
    }
}

/// The directory a glob is rooted in: its leading components without
/// wildcard characters (for a plain file, its parent directory).
pub fn glob_root(glob: &str) -> String {
    let mut root = vec![];
    let parts: Vec<&str> = glob.split('/').collect();
    for (i, part) in parts.iter().enumerate() {
        if part.contains(['*', '?', '[', '{']) || i == parts.len() - 1 {
            break;
        }
        root.push(*part);
    }
    let joined = root.join("/");
    if joined.is_empty() { "/".to_string() } else { joined }
}

/// Put the configs into the desired state: the two ConfigMaps (returned,
/// for the caller to label and own), read-only host mounts of every tailed
/// directory in the node collector, the mutual-TLS files of each collector,
/// and config hashes on both pod templates.
pub fn attach(
    ctx: &m::Context,
    slots: &m::CollectorSlots,
    configs: &CollectorConfigs,
    receivers: &[(String, m::OtelReceiver)],
    desired: &mut BTreeMap<ObjectKey, Value>,
) -> Vec<(ObjectKey, Value)> {
    let config_map = |name: &str, yaml: &str| {
        let key = ObjectKey {
            api_version: "v1".into(),
            kind: "ConfigMap".into(),
            namespace: Some(ctx.namespace.clone()),
            name: name.into(),
        };
        let value = json!({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": { "name": name, "namespace": ctx.namespace, "labels": secop_feature_sdk::k8s::labels("otel-collector") },
            "data": { slots.config_key.clone(): yaml },
        });
        (key, value)
    };
    let roots: BTreeSet<String> = receivers.iter().flat_map(|(_, r)| r.include.iter().map(|g| glob_root(g))).collect();
    for (key, object) in desired.iter_mut() {
        let template = match (key.kind.as_str(), key.name.as_str()) {
            ("DaemonSet", n) if n == slots.node_daemonset => {
                mount_roots(object, &slots.node_container, &roots);
                mount_telemetry_tls(
                    object,
                    |name| name == slots.node_container,
                    [telemetry_keys::CA_CERT, telemetry_keys::NODE_CERT, telemetry_keys::NODE_KEY],
                );
                &configs.node
            }
            ("Deployment", n) if n == slots.gateway_deployment => {
                // The slots do not name the gateway's container: every
                // container of the pod gets the files (init containers not).
                mount_telemetry_tls(
                    object,
                    |_| true,
                    [telemetry_keys::CA_CERT, telemetry_keys::GATEWAY_CERT, telemetry_keys::GATEWAY_KEY],
                );
                &configs.gateway
            }
            _ => continue,
        };
        object["spec"]["template"]["metadata"]["annotations"][CONFIG_HASH_ANNOTATION] =
            json!(content_hash(&[template]));
    }
    vec![config_map(&slots.node_config_map, &configs.node), config_map(&slots.gateway_config_map, &configs.gateway)]
}

/// The Secret's `keys`, and only those, read-only at [`TELEMETRY_DIR`] in
/// the pod's containers that `container` selects.
fn mount_telemetry_tls(workload: &mut Value, container: impl Fn(&str) -> bool, keys: [&str; 3]) {
    let Some(spec) = workload.pointer_mut("/spec/template/spec") else { return };
    let items: Vec<Value> = keys.iter().map(|k| json!({ "key": k, "path": k })).collect();
    push(
        &mut spec["volumes"],
        json!({
            "name": TELEMETRY_VOLUME,
            // Owner and group only: the gateway reads them through its
            // fsGroup, the node collector as their owner.
            "secret": { "secretName": TELEMETRY_SECRET, "items": items, "defaultMode": 0o440 },
        }),
    );
    for c in spec["containers"].as_array_mut().into_iter().flatten() {
        if c["name"].as_str().is_some_and(&container) {
            push(
                &mut c["volumeMounts"],
                json!({ "name": TELEMETRY_VOLUME, "mountPath": TELEMETRY_DIR, "readOnly": true }),
            );
        }
    }
}

/// Mount each root read-only unless an existing mount already covers it.
fn mount_roots(daemonset: &mut Value, container: &str, roots: &BTreeSet<String>) {
    let Some(spec) = daemonset.pointer_mut("/spec/template/spec") else { return };
    let Some(index) = spec["containers"].as_array().and_then(|cs| cs.iter().position(|c| c["name"] == container))
    else {
        return;
    };
    let mut mounted: Vec<String> = spec["containers"][index]["volumeMounts"]
        .as_array()
        .map(|ms| ms.iter().filter_map(|m| m["mountPath"].as_str().map(str::to_string)).collect())
        .unwrap_or_default();
    for (i, root) in roots.iter().enumerate() {
        let covered = mounted.iter().any(|m| root == m || root.starts_with(&format!("{}/", m.trim_end_matches('/'))));
        if covered {
            continue;
        }
        let name = format!("tail-{i}");
        push(&mut spec["volumes"], json!({ "name": name, "hostPath": { "path": root, "type": "DirectoryOrCreate" } }));
        push(
            &mut spec["containers"][index]["volumeMounts"],
            json!({ "name": name, "mountPath": root, "readOnly": true }),
        );
        mounted.push(root.clone());
    }
}

/// Append to a pod-spec list (volumes, volumeMounts), creating it if absent.
fn push(list: &mut Value, item: Value) {
    if !list.is_array() {
        *list = json!([]);
    }
    list.as_array_mut().expect("array").push(item);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob_roots() {
        assert_eq!(glob_root("/var/log/pods/ns_falco-*/falco/*.log"), "/var/log/pods");
        assert_eq!(glob_root("/var/log/security/osquery/osqueryd.results.log*"), "/var/log/security/osquery");
        assert_eq!(glob_root("/var/run/cilium/tetragon/tetragon.log"), "/var/run/cilium/tetragon");
    }

    #[test]
    fn ottl_paths_quote_keys_with_dots() {
        assert_eq!(
            body_path(&raw("falco", &m::path(&["output_fields", "k8s.ns.name"]))),
            r#"log.body["falco"]["output_fields"]["k8s.ns.name"]"#
        );
    }
}
