//! Small builders for the Kubernetes objects features contribute.
//!
//! Objects are plain JSON: features must not depend on a Kubernetes client
//! library (size, and the contract is JSON anyway). The host adds owner
//! references and its management labels; features add only what describes
//! the workload itself.

use serde_json::{Map, Value, json};

use crate::model::{Context, OutputSettings};

pub const PART_OF: &str = "security-operator";

/// A schedule the CronJob controller accepts: five fields, a `@hourly`-style
/// macro, or `@every <duration>`. Shared by the validation feature and the
/// CRD's own check of `spec.tests.schedule` (host/api).
pub fn valid_cron_schedule(schedule: &str) -> bool {
    let s = schedule.trim();
    if let Some(d) = s.strip_prefix("@every ") {
        let d = d.trim();
        return d.chars().next().is_some_and(|c| c.is_ascii_digit())
            && d.chars().all(|c| c.is_ascii_digit() || "hms".contains(c));
    }
    if s.starts_with('@') {
        return ["@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly"].contains(&s);
    }
    let fields: Vec<&str> = s.split_whitespace().collect();
    fields.len() == 5 && fields.iter().all(|f| f.chars().all(|c| c.is_ascii_alphanumeric() || "*/,-?".contains(c)))
}

/// Labels every object of a feature carries; `component` is the tool.
pub fn labels(component: &str) -> Value {
    json!({
        "app.kubernetes.io/name": component,
        "app.kubernetes.io/part-of": PART_OF,
    })
}

/// Selector labels of a workload. Kept minimal and stable: a selector is
/// immutable once a DaemonSet/Deployment exists.
pub fn selector(component: &str) -> Value {
    json!({ "app.kubernetes.io/name": component, "app.kubernetes.io/part-of": PART_OF })
}

pub fn namespaced_meta(ctx: &Context, name: &str, component: &str) -> Value {
    json!({ "name": name, "namespace": ctx.namespace, "labels": labels(component) })
}

pub fn cluster_meta(name: &str, component: &str) -> Value {
    json!({ "name": name, "labels": labels(component) })
}

/// A ConfigMap; `data` keeps the order given (the host sorts keys anyway).
pub fn config_map(ctx: &Context, name: &str, component: &str, data: &[(&str, String)]) -> Value {
    let data: Map<String, Value> = data.iter().map(|(k, v)| ((*k).to_string(), Value::String(v.clone()))).collect();
    json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": namespaced_meta(ctx, name, component),
        "data": data,
    })
}

/// A ServiceAccount that does not automount its token: the pods that need
/// the API opt in explicitly (least privilege).
pub fn service_account(ctx: &Context, name: &str, component: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": namespaced_meta(ctx, name, component),
        "automountServiceAccountToken": false,
    })
}

pub fn cluster_role(name: &str, component: &str, rules: Value) -> Value {
    json!({
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": cluster_meta(name, component),
        "rules": rules,
    })
}

pub fn cluster_role_binding(ctx: &Context, name: &str, component: &str, role: &str, service_account: &str) -> Value {
    json!({
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRoleBinding",
        "metadata": cluster_meta(name, component),
        "roleRef": { "apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role },
        "subjects": [{ "kind": "ServiceAccount", "name": service_account, "namespace": ctx.namespace }],
    })
}

pub fn role(ctx: &Context, name: &str, component: &str, rules: Value) -> Value {
    json!({
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": namespaced_meta(ctx, name, component),
        "rules": rules,
    })
}

pub fn role_binding(ctx: &Context, name: &str, component: &str, role: &str, service_account: &str) -> Value {
    json!({
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": namespaced_meta(ctx, name, component),
        "roleRef": { "apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": role },
        "subjects": [{ "kind": "ServiceAccount", "name": service_account, "namespace": ctx.namespace }],
    })
}

fn pod_template(component: &str, pod_spec: Value, annotations: Value) -> Value {
    json!({
        "metadata": { "labels": labels(component), "annotations": annotations },
        "spec": pod_spec,
    })
}

/// A node agent. `annotations` go on the pod template (e.g. a config hash
/// so pods roll when their ConfigMap changes).
pub fn daemonset(ctx: &Context, name: &str, component: &str, pod_spec: Value, annotations: Value) -> Value {
    json!({
        "apiVersion": "apps/v1",
        "kind": "DaemonSet",
        "metadata": namespaced_meta(ctx, name, component),
        "spec": {
            "selector": { "matchLabels": selector(component) },
            "updateStrategy": { "type": "RollingUpdate", "rollingUpdate": { "maxUnavailable": 1 } },
            "template": pod_template(component, pod_spec, annotations),
        },
    })
}

pub fn deployment(
    ctx: &Context,
    name: &str,
    component: &str,
    replicas: u32,
    pod_spec: Value,
    annotations: Value,
) -> Value {
    json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": namespaced_meta(ctx, name, component),
        "spec": {
            "replicas": replicas,
            "selector": { "matchLabels": selector(component) },
            "template": pod_template(component, pod_spec, annotations),
        },
    })
}

pub fn host_path_volume(name: &str, path: &str, type_: &str) -> Value {
    json!({ "name": name, "hostPath": { "path": path, "type": type_ } })
}

pub fn config_map_volume(name: &str, config_map: &str) -> Value {
    json!({ "name": name, "configMap": { "name": config_map } })
}

pub fn mount(name: &str, path: &str, read_only: bool) -> Value {
    if read_only {
        json!({ "name": name, "mountPath": path, "readOnly": true })
    } else {
        json!({ "name": name, "mountPath": path })
    }
}

/// What a container running a `secop` subcommand needs to reach
/// Elasticsearch: `--endpoint`/`--ca-file` arguments, the credentials of
/// the auth Secret as `ES_USERNAME`/`ES_PASSWORD`, and the CA Secret
/// mounted. Callers append these to their own arguments, env and volumes.
#[derive(Debug, Default)]
pub struct SecopElasticsearch {
    pub args: Vec<String>,
    pub env: Vec<Value>,
    pub mounts: Vec<Value>,
    pub volumes: Vec<Value>,
}

pub fn secop_elasticsearch(output: &OutputSettings) -> SecopElasticsearch {
    let mut es = SecopElasticsearch {
        args: output.endpoints.iter().map(|e| format!("--endpoint={e}")).collect(),
        ..Default::default()
    };
    if let Some(auth) = &output.auth_secret {
        for (var, key) in [("ES_USERNAME", "username"), ("ES_PASSWORD", "password")] {
            es.env.push(json!({ "name": var, "valueFrom": { "secretKeyRef": { "name": auth.name, "key": key } } }));
        }
    }
    if let Some(ca) = &output.ca_secret {
        es.args.push("--ca-file=/etc/secop/es-ca/ca.crt".to_string());
        es.mounts.push(mount("es-ca", "/etc/secop/es-ca", true));
        es.volumes.push(json!({ "name": "es-ca", "secret": { "secretName": ca.name } }));
    }
    es
}

/// Container securityContext of the Pod Security Standards `restricted`
/// profile, for every container that needs no host access.
pub fn restricted_security_context() -> Value {
    json!({
        "allowPrivilegeEscalation": false,
        "readOnlyRootFilesystem": true,
        "runAsNonRoot": true,
        "capabilities": { "drop": ["ALL"] },
        "seccompProfile": { "type": "RuntimeDefault" },
    })
}

/// A resources block from request/limit strings.
pub fn resources(cpu_request: &str, memory_request: &str, cpu_limit: &str, memory_limit: &str) -> Value {
    json!({
        "requests": { "cpu": cpu_request, "memory": memory_request },
        "limits": { "cpu": cpu_limit, "memory": memory_limit },
    })
}

/// Environment variable from the pod's own fields (downward API).
pub fn field_env(name: &str, field_path: &str) -> Value {
    json!({ "name": name, "valueFrom": { "fieldRef": { "fieldPath": field_path } } })
}

/// FNV-1a of a string, hex. Used for pod-template annotations that roll
/// pods when their configuration changes; not a security hash.
pub fn content_hash(parts: &[&str]) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for byte in part.bytes().chain(std::iter::once(0u8)) {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
    }
    format!("{hash:016x}")
}
