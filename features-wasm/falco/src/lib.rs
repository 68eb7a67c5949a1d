//! Falco: syscall detection with the modern eBPF probe.
//!
//! Alerts go to stdout as one JSON line each. The kubelet writes them under
//! /var/log/pods and rotates them, which Falco's own `file_output` does not
//! (see docs/seed-deviations.md). The node collector tails that CRI log.

use secop_feature_sdk::k8s;
use secop_feature_sdk::*;
use serde::Deserialize;

pub const ID: &str = "falco";
pub const DEFAULT_IMAGE: &str = "docker.io/falcosecurity/falco:0.41.3";
const NAME: &str = "falco";
const WEBSERVER_PORT: u16 = 8765;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
pub enum Driver {
    /// CO-RE probe bundled in the Falco binary: no kernel headers, no
    /// driver loader, no /dev or /lib/modules mounts.
    #[default]
    #[serde(rename = "modern_ebpf")]
    ModernEbpf,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct FalcoConfig {
    pub driver: Driver,
    /// Must stay true: the pipeline parses JSON alerts.
    pub json_output: bool,
    pub image: String,
    /// Run with the capabilities modern_ebpf needs instead of `privileged`.
    pub least_privileged: bool,
    /// Minimum rule priority that is emitted.
    pub minimum_priority: Priority,
    /// Extra Falco rules (YAML) appended to the local rules file.
    pub custom_rules: String,
    /// Stock rules disabled by name (the seed plan's noise list by default).
    pub disabled_rules: Vec<String>,
    /// Incubating rules to load from the vendored file
    /// (assets/falco-incubating_rules.yaml); the Falco image ships only
    /// the stable rules. Default: the ones scenarios D and E need.
    pub incubating_rules: Vec<String>,
}

impl Default for FalcoConfig {
    fn default() -> Self {
        Self {
            driver: Driver::ModernEbpf,
            json_output: true,
            image: DEFAULT_IMAGE.to_string(),
            least_privileged: true,
            minimum_priority: Priority::Notice,
            custom_rules: String::new(),
            disabled_rules: NOISY_RULES.iter().map(|r| (*r).to_string()).collect(),
            incubating_rules: INCUBATING_RULES.iter().map(|r| (*r).to_string()).collect(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Priority {
    Emergency,
    Alert,
    Critical,
    Error,
    Warning,
    Notice,
    Informational,
    Debug,
}

impl Priority {
    fn as_str(self) -> &'static str {
        match self {
            Priority::Emergency => "emergency",
            Priority::Alert => "alert",
            Priority::Critical => "critical",
            Priority::Error => "error",
            Priority::Warning => "warning",
            Priority::Notice => "notice",
            Priority::Informational => "informational",
            Priority::Debug => "debug",
        }
    }
}

/// The seed plan's noise list (docs/seed-deviations.md, Falco §3.5): rules that fire constantly in a PoC cluster.
pub const NOISY_RULES: &[&str] = &[
    "Read sensitive file trusted after startup",
    "Contact cloud metadata service from container",
    "Unexpected outbound connection destination",
    "Redirect STDOUT/STDIN to Network Connection in Container",
    "Drop and execute new binary in container",
];

/// Incubating rules of falcosecurity/rules for Falco 0.41, copied unchanged
/// with the macros and lists they need (assets/vendor-rules.py says from
/// where): `Change thread namespace` sees scenario D's `nsenter`,
/// `Schedule Cron Jobs` scenario E's write under /etc/cron.d.
pub const INCUBATING_RULES_FILE: &str = include_str!("../assets/falco-incubating_rules.yaml");
pub const INCUBATING_RULES: &[&str] = &["Change thread namespace", "Schedule Cron Jobs"];
/// Names of the rules in the image's own /etc/falco/falco_rules.yaml
/// (falco-rules 4.0.0), one per line after the `#` header.
pub const STOCK_RULE_NAMES: &str = include_str!("../assets/falco_rules.names");

/// Scenario C reads the service-account token; no stock rule covers that
/// path ("Read sensitive file untrusted" is about /etc/shadow and friends).
/// Every client-go program re-reads its projected token about once a
/// minute, so the rule fires only for the tools a person (or a script an
/// attacker runs) reads a file with, not for the pod's own program: a
/// compromised application reading the token itself goes unseen here
/// (docs/ctem-mapping-results.md, "Noise").
const SA_TOKEN_RULE: &str = r#"- list: secop_file_reader_binaries
  items: [cat, head, tail, more, less, base64, xxd, od, hexdump, strings, grep,
          egrep, fgrep, cp, dd, tac, nl, sed, awk, gawk, busybox, ash, bash,
          csh, ksh, sh, tcsh, zsh, dash]

- rule: Read service account token in container
  desc: >
    A shell or a file tool in a container read the Kubernetes
    service-account token. Attackers do this to talk to the API server as
    the pod (T1552.001); the pod's own API client reading it is not alerted.
  condition: >
    open_read and container and proc.name in (secop_file_reader_binaries)
    and (fd.name startswith /var/run/secrets/kubernetes.io/serviceaccount/
         or fd.name startswith /run/secrets/kubernetes.io/serviceaccount/)
    and fd.name endswith /token
  output: >
    Service account token read in container (file=%fd.name user=%user.name
    process=%proc.name command=%proc.cmdline ns=%k8s.ns.name pod=%k8s.pod.name
    container=%container.id image=%container.image.repository)
  priority: WARNING
  tags: [container, k8s, mitre_credential_access, T1552.001]
"#;

#[derive(Debug, Default)]
pub struct Falco {
    ctx: Context,
    config: FalcoConfig,
}

impl Falco {
    fn falco_yaml(&self) -> String {
        let unselected = INCUBATING_RULES
            .iter()
            .filter(|r| !self.config.incubating_rules.iter().any(|s| s == *r))
            .map(|r| (*r).to_string());
        let disabled: String = self
            .config
            .disabled_rules
            .iter()
            .cloned()
            .chain(unselected)
            .map(|r| format!("  - disable:\n      rule: {}\n", serde_json::Value::String(r)))
            .collect();
        format!(
            r#"# Generated by security-operator. Falco {image}
engine:
  kind: modern_ebpf
  modern_ebpf:
    cpus_for_each_buffer: 2
    buf_size_preset: 4
    drop_failed_exit: false
rules_files:
  - /etc/falco/falco_rules.yaml
  - /etc/falco/rules.d
# Rule selection by name does not fail when a rule is absent from the
# loaded files, unlike redefining the rule with `enabled: false`.
rules:
{disabled}load_plugins: [container]
plugins:
  - name: container
    library_path: libcontainer.so
    init_config:
      label_max_len: 100
      with_size: false
      engines:
        containerd: {{ enabled: true, sockets: ["/host/run/containerd/containerd.sock", "/host/run/k3s/containerd/containerd.sock"] }}
        cri: {{ enabled: true, sockets: ["/host/run/crio/crio.sock"] }}
        docker: {{ enabled: false }}
        podman: {{ enabled: false }}
# Subject metadata in every alert: the node collector lifts these fields
# into kubernetes.namespace / kubernetes.pod.name.
append_output:
  - match:
      source: syscall
    extra_fields:
      - k8s.ns.name
      - k8s.pod.name
      - container.id
      - container.image.repository
priority: {priority}
json_output: true
json_include_output_property: true
json_include_tags_property: true
json_include_message_property: false
buffered_outputs: false
stdout_output:
  enabled: true
file_output:
  enabled: false
syslog_output:
  enabled: false
log_stderr: true
log_syslog: false
log_level: info
webserver:
  enabled: true
  listen_port: {port}
  k8s_healthz_endpoint: /healthz
"#,
            image = self.config.image,
            priority = self.config.minimum_priority.as_str(),
            port = WEBSERVER_PORT,
        )
    }

    fn local_rules(&self) -> String {
        let mut rules = String::from("# Generated by security-operator: local rules\n");
        rules.push_str(SA_TOKEN_RULE);
        if !self.config.custom_rules.trim().is_empty() {
            rules.push_str("\n# customRules from the SecurityAgent\n");
            rules.push_str(&self.config.custom_rules);
            if !rules.ends_with('\n') {
                rules.push('\n');
            }
        }
        rules
    }

    fn security_context(&self) -> Value {
        if self.config.least_privileged {
            // The capability set modern_ebpf needs (Falco docs, chart
            // driver.modernEbpf.leastPrivileged); AppArmor would block bpf().
            json!({
                "privileged": false,
                "capabilities": { "drop": ["ALL"], "add": ["BPF", "SYS_RESOURCE", "PERFMON", "SYS_PTRACE"] },
                "appArmorProfile": { "type": "Unconfined" },
            })
        } else {
            json!({ "privileged": true })
        }
    }

    fn daemonset(&self, config_hash: &str) -> Value {
        let ctx = &self.ctx;
        let pod_spec = json!({
            "serviceAccountName": NAME,
            "automountServiceAccountToken": false,
            "priorityClassName": "system-node-critical",
            "tolerations": [
                { "key": "node-role.kubernetes.io/control-plane", "operator": "Exists", "effect": "NoSchedule" },
            ],
            "containers": [{
                "name": NAME,
                "image": self.config.image,
                "imagePullPolicy": "IfNotPresent",
                "args": ["/usr/bin/falco", "-c", "/etc/falco/falco.yaml"],
                "env": [
                    { "name": "HOST_ROOT", "value": "/host" },
                    k8s::field_env("FALCO_HOSTNAME", "spec.nodeName"),
                    k8s::field_env("FALCO_K8S_NODE_NAME", "spec.nodeName"),
                ],
                "securityContext": self.security_context(),
                "resources": k8s::resources("100m", "512Mi", "500m", "1Gi"),
                "ports": [{ "name": "web", "containerPort": WEBSERVER_PORT, "protocol": "TCP" }],
                "livenessProbe": {
                    "httpGet": { "path": "/healthz", "port": WEBSERVER_PORT },
                    "initialDelaySeconds": 60, "periodSeconds": 15, "timeoutSeconds": 5,
                },
                "readinessProbe": {
                    "httpGet": { "path": "/healthz", "port": WEBSERVER_PORT },
                    "initialDelaySeconds": 30, "periodSeconds": 15, "timeoutSeconds": 5,
                },
                "volumeMounts": [
                    k8s::mount("proc", "/host/proc", true),
                    k8s::mount("etc", "/host/etc", true),
                    k8s::mount("containerd", "/host/run/containerd", true),
                    k8s::mount("k3s-containerd", "/host/run/k3s/containerd", true),
                    k8s::mount("crio", "/host/run/crio", true),
                    { "name": "config", "mountPath": "/etc/falco/falco.yaml", "subPath": "falco.yaml", "readOnly": true },
                    k8s::mount("local-rules", "/etc/falco/rules.d", true),
                ],
            }],
            "volumes": [
                k8s::host_path_volume("proc", "/proc", "Directory"),
                k8s::host_path_volume("etc", "/etc", "Directory"),
                k8s::host_path_volume("containerd", "/run/containerd", "DirectoryOrCreate"),
                k8s::host_path_volume("k3s-containerd", "/run/k3s/containerd", "DirectoryOrCreate"),
                k8s::host_path_volume("crio", "/run/crio", "DirectoryOrCreate"),
                k8s::config_map_volume("config", "falco-config"),
                k8s::config_map_volume("local-rules", "falco-rules"),
            ],
        });
        k8s::daemonset(ctx, NAME, NAME, pod_spec, json!({ "security.example.io/config-hash": config_hash }))
    }
}

impl Feature for Falco {
    fn metadata(&self) -> Metadata {
        Metadata {
            id: ID.to_string(),
            priority: 100,
            contract_version: CONTRACT_VERSION.to_string(),
            description: "Falco runtime threat detection (modern eBPF), JSON alerts to the events index".to_string(),
            condition_type: "FalcoReady".to_string(),
        }
    }

    fn configure(&mut self, config_json: &str, ctx: &Context) -> Result<Vec<Diagnostic>, ConfigError> {
        let (config, diagnostics): (FalcoConfig, _) = decode_config(config_json)?;
        if !config.json_output {
            return Err(ConfigError::new("jsonOutput", "must be true: the node collector parses Falco alerts as JSON"));
        }
        if config.image.trim().is_empty() {
            return Err(ConfigError::new("image", "must not be empty"));
        }
        for (i, rule) in config.incubating_rules.iter().enumerate() {
            if !INCUBATING_RULES.contains(&rule.as_str()) {
                return Err(ConfigError::new(
                    format!("incubatingRules[{i}]"),
                    format!("`{rule}` is not one of the vendored incubating rules: {}", INCUBATING_RULES.join(", ")),
                ));
            }
        }
        self.ctx = ctx.clone();
        self.config = config;
        Ok(diagnostics)
    }

    fn contribute(&mut self) -> Result<Vec<String>, String> {
        let ctx = &self.ctx;
        let falco_yaml = self.falco_yaml();
        let local_rules = self.local_rules();
        let hash = k8s::content_hash(&[&falco_yaml, INCUBATING_RULES_FILE, &local_rules]);
        Ok(to_documents(vec![
            k8s::service_account(ctx, NAME, NAME),
            k8s::config_map(ctx, "falco-config", NAME, &[("falco.yaml", falco_yaml)]),
            // rules.d loads in name order: the incubating file ('-' sorts
            // before '_') first, so local and custom rules may use its lists.
            k8s::config_map(
                ctx,
                "falco-rules",
                NAME,
                &[
                    ("falco-incubating_rules.yaml", INCUBATING_RULES_FILE.to_string()),
                    ("falco_rules.local.yaml", local_rules),
                ],
            ),
            self.daemonset(&hash),
        ]))
    }

    fn otel_config(&mut self) -> Option<OtelReceiver> {
        let ns = &self.ctx.namespace;
        let priority =
            |p: &str, severity: u8| SeverityRule { path: path(&["priority"]), equals: Some(p.to_string()), severity };
        Some(OtelReceiver {
            name: ID.to_string(),
            // `<restart>.log` only: the receiver follows the kubelet's
            // rotation by fingerprint, and the CRI parser needs the live
            // file's path (a rotated `0.log.<time>` fails its path match).
            include: vec![format!("/var/log/pods/{ns}_falco-*/falco/*.log")],
            exclude: vec![],
            format: LineFormat::ContainerJson,
            timestamp: Some(TimestampField { field: "time".to_string(), layout: TimestampLayout::Rfc3339Nano }),
            tool: ID.to_string(),
            target: TargetIndex::Events,
            subject: SubjectPaths {
                namespace: vec![path(&["output_fields", "k8s.ns.name"])],
                pod: vec![path(&["output_fields", "k8s.pod.name"])],
                node: vec![path(&["hostname"])],
            },
            // The seed plan's severity table (docs/seed-deviations.md, §5.4): Falco priority → 1..5.
            severity: vec![
                priority("Debug", 1),
                priority("Informational", 1),
                priority("Notice", 2),
                priority("Warning", 3),
                priority("Error", 3),
                priority("Critical", 4),
                priority("Alert", 5),
                priority("Emergency", 5),
            ],
            event_kind: "alert".to_string(),
            lifts: vec![
                FieldLift::copy(&["rule"], "rule.name"),
                FieldLift::copy(&["output_fields", "container.id"], "container.id"),
                FieldLift::copy(&["output_fields", "container.image.repository"], "container.image.name"),
                FieldLift::copy(&["output_fields", "proc.exepath"], "process.executable"),
                FieldLift::copy(&["output_fields", "proc.cmdline"], "process.command_line"),
            ],
        })
    }

    fn assess(&mut self, cluster: &dyn ClusterReader) -> Condition {
        daemonset_condition(cluster, "FalcoReady", NAME)
    }
}

// The hot-swap tests' "falco 0.2.0" (test/modules/falco_next) depends on
// this crate with `wrapped` and exports a wrapper instead.
#[cfg(not(feature = "wrapped"))]
export_feature!(Falco);

#[cfg(test)]
mod tests {
    use super::*;

    fn configured(config: &str) -> Result<Falco, ConfigError> {
        let mut f = Falco::default();
        f.configure(config, &Context { namespace: "security-system".into(), ..Default::default() })?;
        Ok(f)
    }

    #[test]
    fn plan_config_is_accepted_and_defaults_to_least_privilege() {
        let mut f = configured(r#"{"driver":"modern_ebpf","jsonOutput":true}"#).unwrap();
        let objects = f.contribute().unwrap();
        let ds: Value = serde_json::from_str(objects.last().unwrap()).unwrap();
        let sc = &ds["spec"]["template"]["spec"]["containers"][0]["securityContext"];
        assert_eq!(sc["privileged"], false);
        assert_eq!(sc["capabilities"]["add"], json!(["BPF", "SYS_RESOURCE", "PERFMON", "SYS_PTRACE"]));
    }

    #[test]
    fn falco_yaml_has_no_legacy_keys() {
        let f = configured("{}").unwrap();
        let yaml = f.falco_yaml();
        assert!(!yaml.contains("metadata_download"), "removed in Falco 0.37");
        assert!(!yaml.contains("rotate"), "file_output has no rotation keys");
        assert!(yaml.contains("json_output: true"));
        assert!(yaml.contains("rule: \"Drop and execute new binary in container\""));
    }

    #[test]
    fn the_scenario_rules_load_by_default_and_can_be_left_out() {
        let f = configured("{}").unwrap();
        let yaml = f.falco_yaml();
        for rule in INCUBATING_RULES {
            assert!(INCUBATING_RULES_FILE.contains(&format!("- rule: {rule}\n")), "{rule} is vendored");
            assert!(!yaml.contains(&format!("rule: \"{rule}\"")), "{rule} is not disabled by default");
        }
        let f = configured(r#"{"incubatingRules":["Schedule Cron Jobs"]}"#).unwrap();
        assert!(f.falco_yaml().contains("rule: \"Change thread namespace\""), "an unselected rule is disabled by name");
        let err = configured(r#"{"incubatingRules":["Schedule Cron Jobs","Write below etc"]}"#).unwrap_err();
        assert_eq!(err.field, "incubatingRules[1]");
        assert!(err.message.contains("Write below etc"), "{}", err.message);
    }

    #[test]
    fn wrong_types_name_the_field() {
        let err = configured(r#"{"jsonOutput":"yes"}"#).unwrap_err();
        assert_eq!(err.field, "jsonOutput");
        let err = configured(r#"{"driver":"kmod"}"#).unwrap_err();
        assert_eq!(err.field, "driver");
        let err = configured(r#"{"jsonOutput":false}"#).unwrap_err();
        assert_eq!(err.field, "jsonOutput");
    }
}
