//! Tetragon: process and kprobe events from eBPF.
//!
//! Tetragon writes its export file itself (with size-based rotation). In
//! `stdout` mode the chart's `export-stdout` sidecar streams that file to
//! stdout and the collector tails the sidecar's CRI log; in `file` mode the
//! collector tails the rotated export file on the host directly.

use secop_feature_sdk::k8s;
use secop_feature_sdk::*;
use serde::Deserialize;

pub const ID: &str = "tetragon";
pub const DEFAULT_IMAGE: &str = "quay.io/cilium/tetragon:v1.4.1";
pub const EXPORT_STDOUT_IMAGE: &str = "quay.io/cilium/hubble-export-stdout:v1.0.4";
const NAME: &str = "tetragon";
const EXPORT_DIR: &str = "/var/run/cilium/tetragon";
/// TracingPolicy, TracingPolicyNamespaced and PodInfo: without the
/// tetragon-operator nobody else installs them (assets/NOTES.md).
const CRDS: &str = include_str!("../assets/crds.json");

/// Policies this feature knows how to deploy. `process-exec` needs no
/// TracingPolicy (exec events are built in): it turns on their export.
pub const KNOWN_POLICIES: &[&str] =
    &["process-exec", "container-escape-monitor", "cron-persistence-monitor", "sensitive-file-access"];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ExportMode {
    #[default]
    Stdout,
    File,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct TetragonConfig {
    pub export_mode: ExportMode,
    pub policies: Vec<String>,
    pub image: String,
    /// The export-stdout sidecar's image (a mirror in air-gapped clusters).
    pub export_image: String,
    /// Rotation of the export file Tetragon writes.
    pub export_file_max_size_mb: u32,
    pub export_file_max_backups: u32,
}

impl Default for TetragonConfig {
    fn default() -> Self {
        Self {
            export_mode: ExportMode::Stdout,
            policies: vec!["process-exec".into(), "container-escape-monitor".into(), "cron-persistence-monitor".into()],
            image: DEFAULT_IMAGE.to_string(),
            export_image: EXPORT_STDOUT_IMAGE.to_string(),
            export_file_max_size_mb: 10,
            export_file_max_backups: 5,
        }
    }
}

#[derive(Debug, Default)]
pub struct Tetragon {
    ctx: Context,
    config: TetragonConfig,
}

fn tracing_policy(name: &str, spec: Value) -> Value {
    json!({
        "apiVersion": "cilium.io/v1alpha1",
        "kind": "TracingPolicy",
        "metadata": k8s::cluster_meta(name, NAME),
        "spec": spec,
    })
}

/// T1611: entering another process's namespaces or mounting from inside a
/// container. `call` names the syscall without the arch prefix; Tetragon
/// resolves it (events report `__x64_sys_setns`).
fn container_escape_monitor() -> Value {
    tracing_policy(
        "container-escape-monitor",
        json!({
            "kprobes": [
                {
                    "call": "sys_setns",
                    "syscall": true,
                    "args": [ { "index": 0, "type": "int" }, { "index": 1, "type": "int" } ],
                },
                {
                    "call": "sys_mount",
                    "syscall": true,
                    "args": [
                        { "index": 0, "type": "string" },
                        { "index": 1, "type": "string" },
                        { "index": 2, "type": "string" },
                    ],
                },
            ],
        }),
    )
}

/// A `security_file_permission` kprobe on paths under `prefixes` with the
/// access `mask` (MAY_WRITE 2, MAY_READ 4). The hook runs on every read and
/// write of an open file; the path is the file's as the accessing process
/// sees it, so a container's own files match. Shaped like Tetragon's
/// file-monitoring example (docs "File access monitoring").
fn file_permission_policy(name: &str, prefixes: &[&str], mask: &str) -> Value {
    tracing_policy(
        name,
        json!({
            "kprobes": [{
                "call": "security_file_permission",
                "syscall": false,
                "return": true,
                "args": [ { "index": 0, "type": "file" }, { "index": 1, "type": "int" } ],
                "returnArg": { "index": 0, "type": "int" },
                "returnArgAction": "Post",
                "selectors": [{
                    "matchArgs": [
                        { "index": 0, "operator": "Prefix", "values": prefixes },
                        { "index": 1, "operator": "Equal", "values": [mask] },
                    ],
                }],
            }],
        }),
    )
}

/// T1053.003: a write to a cron table (scenario E's `echo ... >
/// /etc/cron.d/backdoor`).
fn cron_persistence_monitor() -> Value {
    file_permission_policy("cron-persistence-monitor", &["/etc/cron", "/etc/crontab", "/var/spool/cron"], "2")
}

/// Reads of service-account tokens and /etc/shadow (scenario C).
fn sensitive_file_access() -> Value {
    file_permission_policy(
        "sensitive-file-access",
        &["/etc/shadow", "/var/run/secrets/kubernetes.io/serviceaccount", "/run/secrets/kubernetes.io/serviceaccount"],
        "4",
    )
}

impl Tetragon {
    fn exports_exec(&self) -> bool {
        self.config.policies.iter().any(|p| p == "process-exec")
    }

    /// Files of Tetragon's config directory (one option per file).
    fn config_files(&self) -> Vec<(&'static str, String)> {
        let mut events = vec!["PROCESS_KPROBE", "PROCESS_TRACEPOINT", "PROCESS_LSM"];
        if self.exports_exec() {
            events.insert(0, "PROCESS_EXEC");
        }
        let allow = json!({ "event_set": events }).to_string();
        vec![
            ("procfs", "/procRoot".to_string()),
            ("enable-k8s-api", "true".to_string()),
            ("enable-process-cred", "true".to_string()),
            ("enable-process-ns", "true".to_string()),
            ("export-filename", format!("{EXPORT_DIR}/tetragon.log")),
            ("export-file-max-size-mb", self.config.export_file_max_size_mb.to_string()),
            ("export-file-max-backups", self.config.export_file_max_backups.to_string()),
            ("export-file-compress", "false".to_string()),
            ("export-allowlist", allow),
            // The chart's default (docs/research/sensor-manifests.md): no
            // health checks, and no events of processes outside a pod ("")
            // or of the cluster's own system namespaces. Without it, every
            // exec on the node's host lands in security-events with no
            // subject pod (the CTEM check VAL-05).
            (
                "export-denylist",
                format!(
                    "{}\n{}",
                    json!({ "health_check": true }),
                    json!({ "namespace": ["", "cilium", "kube-system"] })
                ),
            ),
            ("export-rate-limit", "-1".to_string()),
            ("metrics-server", ":2112".to_string()),
            ("health-server-address", ":6789".to_string()),
            ("server-address", "localhost:54321".to_string()),
        ]
    }

    fn daemonset(&self, config_hash: &str) -> Value {
        let mut containers = vec![json!({
            "name": NAME,
            "image": self.config.image,
            "imagePullPolicy": "IfNotPresent",
            "args": ["--config-dir=/etc/tetragon/tetragon.conf.d/"],
            "env": [ k8s::field_env("NODE_NAME", "spec.nodeName") ],
            // Tetragon loads BPF programs and pins maps: it must be privileged.
            "securityContext": { "privileged": true },
            "resources": k8s::resources("100m", "256Mi", "500m", "512Mi"),
            "livenessProbe": {
                "grpc": { "port": 6789, "service": "liveness" },
                "initialDelaySeconds": 30, "periodSeconds": 15, "timeoutSeconds": 5,
            },
            "volumeMounts": [
                k8s::mount("tetragon-config", "/etc/tetragon/tetragon.conf.d/", true),
                { "name": "bpf-maps", "mountPath": "/sys/fs/bpf", "mountPropagation": "Bidirectional" },
                k8s::mount("cilium-run", "/var/run/cilium", false),
                k8s::mount("export-logs", EXPORT_DIR, false),
                k8s::mount("host-proc", "/procRoot", true),
            ],
        })];
        if self.config.export_mode == ExportMode::Stdout {
            containers.push(json!({
                "name": "export-stdout",
                "image": self.config.export_image,
                "imagePullPolicy": "IfNotPresent",
                "command": ["hubble-export-stdout"],
                "args": [format!("{EXPORT_DIR}/tetragon.log")],
                "securityContext": {
                    "allowPrivilegeEscalation": false,
                    "readOnlyRootFilesystem": true,
                    "capabilities": { "drop": ["ALL"] },
                },
                "resources": k8s::resources("10m", "16Mi", "100m", "64Mi"),
                "volumeMounts": [ k8s::mount("export-logs", EXPORT_DIR, true) ],
            }));
        }
        let pod_spec = json!({
            "serviceAccountName": NAME,
            // The agent watches pods to attribute events to workloads.
            "automountServiceAccountToken": true,
            "hostNetwork": true,
            "dnsPolicy": "Default",
            "priorityClassName": "system-node-critical",
            "terminationGracePeriodSeconds": 1,
            "tolerations": [ { "operator": "Exists" } ],
            "containers": containers,
            "volumes": [
                k8s::config_map_volume("tetragon-config", "tetragon-config"),
                k8s::host_path_volume("bpf-maps", "/sys/fs/bpf", "DirectoryOrCreate"),
                k8s::host_path_volume("cilium-run", "/var/run/cilium", "DirectoryOrCreate"),
                k8s::host_path_volume("export-logs", EXPORT_DIR, "DirectoryOrCreate"),
                k8s::host_path_volume("host-proc", "/proc", "Directory"),
            ],
        });
        k8s::daemonset(&self.ctx, NAME, NAME, pod_spec, json!({ "security.example.io/config-hash": config_hash }))
    }
}

impl Feature for Tetragon {
    fn metadata(&self) -> Metadata {
        Metadata {
            id: ID.to_string(),
            priority: 100,
            contract_version: CONTRACT_VERSION.to_string(),
            description: "Tetragon eBPF process and kprobe events (TracingPolicies), to the events index".to_string(),
            condition_type: "TetragonReady".to_string(),
        }
    }

    fn configure(&mut self, config_json: &str, ctx: &Context) -> Result<Vec<Diagnostic>, ConfigError> {
        let (config, diagnostics): (TetragonConfig, _) = decode_config(config_json)?;
        for (i, policy) in config.policies.iter().enumerate() {
            if !KNOWN_POLICIES.contains(&policy.as_str()) {
                return Err(ConfigError::new(
                    format!("policies[{i}]"),
                    format!("unknown TracingPolicy `{policy}`; known: {}", KNOWN_POLICIES.join(", ")),
                ));
            }
        }
        if config.export_file_max_size_mb == 0 {
            return Err(ConfigError::new("exportFileMaxSizeMb", "must be at least 1"));
        }
        for (field, image) in [("image", &config.image), ("exportImage", &config.export_image)] {
            if image.trim().is_empty() {
                return Err(ConfigError::new(field, "must name an image"));
            }
        }
        self.ctx = ctx.clone();
        self.config = config;
        Ok(diagnostics)
    }

    fn contribute(&mut self) -> Result<Vec<String>, String> {
        let ctx = &self.ctx;
        let files = self.config_files();
        let hash = k8s::content_hash(&files.iter().map(|(_, v)| v.as_str()).collect::<Vec<_>>());
        let role = ctx.cluster_scoped_name(NAME);
        let mut objects = vec![
            k8s::service_account(ctx, NAME, NAME),
            k8s::cluster_role(
                &role,
                NAME,
                json!([
                    { "apiGroups": [""], "resources": ["pods", "services", "namespaces"], "verbs": ["get", "list", "watch"] },
                    { "apiGroups": ["cilium.io"], "resources": ["tracingpolicies", "tracingpoliciesnamespaced", "podinfo"], "verbs": ["get", "list", "watch"] },
                ]),
            ),
            k8s::cluster_role_binding(ctx, &role, NAME, &role, NAME),
            k8s::config_map(ctx, "tetragon-config", NAME, &files),
            self.daemonset(&hash),
        ];
        for policy in &self.config.policies {
            match policy.as_str() {
                "container-escape-monitor" => objects.push(container_escape_monitor()),
                "cron-persistence-monitor" => objects.push(cron_persistence_monitor()),
                "sensitive-file-access" => objects.push(sensitive_file_access()),
                _ => {} // process-exec: export setting only
            }
        }
        let mut documents = embedded_documents(CRDS)?;
        documents.extend(to_documents(objects));
        Ok(documents)
    }

    fn otel_config(&mut self) -> Option<OtelReceiver> {
        let ns = &self.ctx.namespace;
        let (include, exclude, format) = match self.config.export_mode {
            ExportMode::Stdout => (
                // Live files only, as for Falco (the kubelet rotates them).
                vec![format!("/var/log/pods/{ns}_tetragon-*/export-stdout/*.log")],
                vec![],
                LineFormat::ContainerJson,
            ),
            ExportMode::File => (
                vec![format!("{EXPORT_DIR}/tetragon.log"), format!("{EXPORT_DIR}/tetragon*.log")],
                vec![],
                LineFormat::Json,
            ),
        };
        let subject = |field: &str| {
            vec![path(&["process_exec", "process", "pod", field]), path(&["process_kprobe", "process", "pod", field])]
        };
        Some(OtelReceiver {
            name: ID.to_string(),
            include,
            exclude,
            format,
            timestamp: Some(TimestampField { field: "time".to_string(), layout: TimestampLayout::Rfc3339Nano }),
            tool: ID.to_string(),
            target: TargetIndex::Events,
            subject: SubjectPaths {
                namespace: subject("namespace"),
                pod: subject("name"),
                node: vec![path(&["node_name"])],
            },
            // The seed plan's severity table (docs/seed-deviations.md, §5.4): exec 2, kprobe match 4.
            severity: vec![
                SeverityRule { path: path(&["process_exec"]), equals: None, severity: 2 },
                SeverityRule { path: path(&["process_kprobe"]), equals: None, severity: 4 },
            ],
            event_kind: "event".to_string(),
            lifts: vec![
                FieldLift::copy(&["process_exec", "process", "binary"], "process.executable"),
                FieldLift::copy(&["process_exec", "process", "arguments"], "process.args"),
                FieldLift::copy(&["process_kprobe", "process", "binary"], "process.executable"),
                FieldLift::copy(&["process_kprobe", "function_name"], "rule.name"),
                FieldLift::copy(&["process_kprobe", "policy_name"], "rule.ruleset"),
            ],
        })
    }

    fn assess(&mut self, cluster: &dyn ClusterReader) -> Condition {
        daemonset_condition(cluster, "TetragonReady", NAME)
    }
}

export_feature!(Tetragon);

#[cfg(test)]
mod tests {
    use super::*;

    fn configure(config: &str) -> Result<Tetragon, ConfigError> {
        let mut t = Tetragon::default();
        t.configure(config, &Context { namespace: "security-system".into(), ..Default::default() })?;
        Ok(t)
    }

    #[test]
    fn unknown_policy_is_named() {
        let err = configure(r#"{"policies":["process-exec","no-such-policy"]}"#).err().unwrap();
        assert_eq!(err.field, "policies[1]");
        assert!(err.message.contains("no-such-policy"));
    }

    #[test]
    fn escape_monitor_has_setns_and_mount_kprobes() {
        let mut t = configure(r#"{"policies":["container-escape-monitor"]}"#).unwrap();
        let objects: Vec<Value> = t.contribute().unwrap().iter().map(|o| serde_json::from_str(o).unwrap()).collect();
        let tp = objects.iter().find(|o| o["kind"] == "TracingPolicy").unwrap();
        assert_eq!(tp["metadata"]["name"], "container-escape-monitor");
        let calls: Vec<&str> =
            tp["spec"]["kprobes"].as_array().unwrap().iter().map(|k| k["call"].as_str().unwrap()).collect();
        assert_eq!(calls, ["sys_setns", "sys_mount"]);
        // Without process-exec, exec events are not exported.
        let cm = objects.iter().find(|o| o["kind"] == "ConfigMap").unwrap();
        assert!(!cm["data"]["export-allowlist"].as_str().unwrap().contains("PROCESS_EXEC"));
    }

    #[test]
    fn file_mode_tails_the_export_file() {
        let mut t = configure(r#"{"exportMode":"file"}"#).unwrap();
        let r = t.otel_config().unwrap();
        assert_eq!(r.format, LineFormat::Json);
        assert!(r.include[0].starts_with(EXPORT_DIR));
    }
}
