//! osquery: node inventory for the CTEM Scope stage.
//!
//! osqueryd runs in the host PID and network namespaces (so `processes`,
//! `listening_ports` and `os_version` describe the node, not the container)
//! and logs to a host directory with its own size-based rotation.

use secop_feature_sdk::k8s;
use secop_feature_sdk::*;
use serde::Deserialize;

pub const ID: &str = "osquery";
pub const DEFAULT_IMAGE: &str = "docker.io/osquery/osquery:5.14.1-ubuntu22.04";
const NAME: &str = "osquery";
const LOG_DIR: &str = "/var/log/security/osquery";
const PACK: &str = "scope-minimal";

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct OsqueryConfig {
    /// Interval of the frequent queries (ports, containers, modules);
    /// inventory snapshots run hourly.
    pub interval_seconds: u32,
    pub packs: Vec<String>,
    pub image: String,
    pub log_rotate_size_mb: u32,
    pub log_rotate_max_files: u32,
}

impl Default for OsqueryConfig {
    fn default() -> Self {
        Self {
            interval_seconds: 300,
            packs: vec![PACK.to_string()],
            image: DEFAULT_IMAGE.to_string(),
            log_rotate_size_mb: 50,
            log_rotate_max_files: 3,
        }
    }
}

#[derive(Debug, Default)]
pub struct Osquery {
    ctx: Context,
    config: OsqueryConfig,
}

struct PackQuery {
    name: &'static str,
    sql: &'static str,
    /// Snapshot queries log every row on every run; the others log changes.
    snapshot: bool,
    description: &'static str,
}

/// The seed plan's Scope pack (docs/seed-deviations.md, osquery §9). os_version reads the host's /etc/os-release through
/// pid_with_namespace = 1 (otherwise it describes the container image).
const SCOPE_PACK: &[PackQuery] = &[
    PackQuery {
        name: "system_info",
        sql: "SELECT hostname, cpu_brand, physical_memory, hardware_vendor FROM system_info;",
        snapshot: true,
        description: "CTEM Scope: node hardware inventory",
    },
    PackQuery {
        name: "os_version",
        sql: "SELECT name, version, major, minor, patch, platform FROM os_version WHERE pid_with_namespace = 1;",
        snapshot: true,
        description: "CTEM Scope: OS version of the node",
    },
    PackQuery {
        name: "kernel_info",
        sql: "SELECT version, arguments, device FROM kernel_info;",
        snapshot: true,
        description: "CTEM Scope: kernel",
    },
    PackQuery {
        name: "listening_ports",
        sql: "SELECT lp.pid, lp.port, lp.protocol, lp.address, p.name, p.path FROM listening_ports lp JOIN processes p ON lp.pid = p.pid WHERE lp.port != 0;",
        snapshot: false,
        description: "CTEM Scope: open ports and their processes (node level)",
    },
    PackQuery {
        name: "docker_containers",
        sql: "SELECT id, name, image, state, status FROM docker_containers;",
        snapshot: false,
        description: "CTEM Scope: containers on the node (Docker Engine nodes only)",
    },
    // Containers of any runtime (containerd, CRI-O, Docker): the 64-hex
    // container id in the cgroup path of their processes, as the hostPID
    // pod sees them; pod sandboxes included. Not only under `kubepods`: a
    // kubelet with cgroupsPerQOS off puts pods under the root. Needs
    // osquery 5.5 (`processes.cgroup_path`).
    PackQuery {
        name: "containers",
        sql: "SELECT DISTINCT regex_match(cgroup_path, '[0-9a-f]{64}', 0) AS id, cgroup_path FROM processes WHERE regex_match(cgroup_path, '[0-9a-f]{64}', 0) IS NOT NULL;",
        snapshot: false,
        description: "CTEM Scope: running containers per node (any runtime)",
    },
    PackQuery {
        name: "kernel_modules",
        sql: "SELECT name, size, status FROM kernel_modules WHERE status = 'Live';",
        snapshot: false,
        description: "CTEM Scope: loaded kernel modules",
    },
    // eBPF support as the sensors need it: CO-RE programs (Falco's
    // modern_ebpf, Tetragon) load only where the kernel exposes its BTF.
    // sysfs is the host kernel's in every container, so no mount is needed.
    PackQuery {
        name: "kernel_btf",
        sql: "SELECT path, size FROM file WHERE path = '/sys/kernel/btf/vmlinux';",
        snapshot: true,
        description: "CTEM Scope: kernel BTF present (eBPF CO-RE support)",
    },
];

impl Osquery {
    fn pack_json(&self) -> String {
        let queries: serde_json::Map<String, Value> = SCOPE_PACK
            .iter()
            .map(|q| {
                let interval = if q.snapshot { 3600 } else { self.config.interval_seconds };
                let mut entry = json!({ "query": q.sql, "interval": interval, "description": q.description });
                if q.snapshot {
                    entry["snapshot"] = json!(true);
                }
                (q.name.to_string(), entry)
            })
            .collect();
        serde_json::to_string_pretty(&json!({ "platform": "linux", "queries": queries })).unwrap_or_default()
    }

    fn osquery_conf(&self) -> String {
        let packs: serde_json::Map<String, Value> =
            self.config.packs.iter().map(|p| (p.clone(), json!(format!("/etc/osquery/packs/{p}.conf")))).collect();
        serde_json::to_string_pretty(&json!({ "options": { "schedule_splay_percent": 10 }, "packs": packs }))
            .unwrap_or_default()
    }

    fn flags(&self) -> String {
        let mb = 1024 * 1024;
        [
            "--config_plugin=filesystem".to_string(),
            "--config_path=/etc/osquery/osquery.conf".to_string(),
            "--logger_plugin=filesystem".to_string(),
            format!("--logger_path={LOG_DIR}"),
            "--logger_rotate=true".to_string(),
            format!("--logger_rotate_size={}", u64::from(self.config.log_rotate_size_mb) * mb),
            format!("--logger_rotate_max_files={}", self.config.log_rotate_max_files),
            // One line per snapshot row, in the results log, so every row
            // becomes one document (a snapshot line holds all rows).
            "--logger_snapshot_event_type=true".to_string(),
            "--host_identifier=specified".to_string(),
            "--database_path=/var/osquery/osquery.db".to_string(),
            "--pidfile=/var/osquery/osqueryd.pidfile".to_string(),
            "--disable_events=true".to_string(),
            "--disable_distributed=true".to_string(),
            "--utc=true".to_string(),
            "--verbose=false".to_string(),
        ]
        .join("\n")
            + "\n"
    }

    fn daemonset(&self, config_hash: &str) -> Value {
        let pod_spec = json!({
            "serviceAccountName": NAME,
            "automountServiceAccountToken": false,
            "hostPID": true,
            "hostNetwork": true,
            "dnsPolicy": "ClusterFirstWithHostNet",
            "tolerations": [ { "key": "node-role.kubernetes.io/control-plane", "operator": "Exists", "effect": "NoSchedule" } ],
            "containers": [{
                "name": NAME,
                "image": self.config.image,
                "imagePullPolicy": "IfNotPresent",
                "command": ["/opt/osquery/bin/osqueryd"],
                // The kubelet expands $(NODE_NAME); osquery's flag file would not.
                "args": ["--flagfile=/etc/osquery/osquery.flags", "--specified_identifier=$(NODE_NAME)"],
                "env": [ k8s::field_env("NODE_NAME", "spec.nodeName") ],
                // Root to read other processes' /proc entries; only the
                // capabilities that needs, not privileged.
                "securityContext": {
                    "privileged": false,
                    "runAsUser": 0,
                    "readOnlyRootFilesystem": true,
                    "capabilities": { "drop": ["ALL"], "add": ["SYS_PTRACE", "DAC_READ_SEARCH"] },
                },
                "resources": k8s::resources("50m", "128Mi", "200m", "256Mi"),
                "volumeMounts": [
                    k8s::mount("config", "/etc/osquery", true),
                    k8s::mount("logs", LOG_DIR, false),
                    k8s::mount("database", "/var/osquery", false),
                ],
            }],
            "volumes": [
                // One projected volume: the flags and config at the top, the
                // pack under packs/. A file mounted with subPath inside
                // another ConfigMap's mount never starts on a real kubelet,
                // which pre-creates nested mount points as directories.
                { "name": "config", "projected": { "sources": [
                    { "configMap": { "name": "osquery-config" } },
                    { "configMap": { "name": format!("osquery-pack-{PACK}"), "items": [ { "key": "pack.conf", "path": format!("packs/{PACK}.conf") } ] } },
                ] } },
                k8s::host_path_volume("logs", LOG_DIR, "DirectoryOrCreate"),
                { "name": "database", "emptyDir": { "sizeLimit": "256Mi" } },
            ],
        });
        k8s::daemonset(&self.ctx, NAME, NAME, pod_spec, json!({ "security.example.io/config-hash": config_hash }))
    }
}

impl Feature for Osquery {
    fn metadata(&self) -> Metadata {
        Metadata {
            id: ID.to_string(),
            priority: 100,
            contract_version: CONTRACT_VERSION.to_string(),
            description: "osquery node inventory (Scope pack), to the inventory index".to_string(),
            condition_type: "OSQueryReady".to_string(),
        }
    }

    fn configure(&mut self, config_json: &str, ctx: &Context) -> Result<Vec<Diagnostic>, ConfigError> {
        let (config, diagnostics): (OsqueryConfig, _) = decode_config(config_json)?;
        if !(10..=86_400).contains(&config.interval_seconds) {
            return Err(ConfigError::new("intervalSeconds", "must be between 10 and 86400"));
        }
        for (i, pack) in config.packs.iter().enumerate() {
            if pack != PACK {
                return Err(ConfigError::new(format!("packs[{i}]"), format!("unknown pack `{pack}`; known: {PACK}")));
            }
        }
        if config.log_rotate_size_mb == 0 {
            return Err(ConfigError::new("logRotateSizeMb", "must be at least 1"));
        }
        self.ctx = ctx.clone();
        self.config = config;
        Ok(diagnostics)
    }

    fn contribute(&mut self) -> Result<Vec<String>, String> {
        let ctx = &self.ctx;
        let (flags, conf, pack) = (self.flags(), self.osquery_conf(), self.pack_json());
        let hash = k8s::content_hash(&[&flags, &conf, &pack]);
        Ok(to_documents(vec![
            k8s::service_account(ctx, NAME, NAME),
            k8s::config_map(ctx, "osquery-config", NAME, &[("osquery.flags", flags), ("osquery.conf", conf)]),
            k8s::config_map(ctx, &format!("osquery-pack-{PACK}"), NAME, &[("pack.conf", pack)]),
            self.daemonset(&hash),
        ]))
    }

    fn otel_config(&mut self) -> Option<OtelReceiver> {
        // Column names mean different things per query (`name` is a
        // process, an OS or a kernel module), so each lift names its query.
        let column =
            |query: &str, c: &str, to: &str| FieldLift::copy(&["columns", c], to).when_equals(&["query_name"], query);
        Some(OtelReceiver {
            name: ID.to_string(),
            include: vec![format!("{LOG_DIR}/osqueryd.results.log*"), format!("{LOG_DIR}/osqueryd.snapshots.log*")],
            // Rotated files are zstd-compressed by osquery.
            exclude: vec![format!("{LOG_DIR}/*.zst")],
            format: LineFormat::Json,
            timestamp: Some(TimestampField { field: "unixTime".to_string(), layout: TimestampLayout::EpochSeconds }),
            tool: ID.to_string(),
            target: TargetIndex::Inventory,
            subject: SubjectPaths { namespace: vec![], pod: vec![], node: vec![path(&["hostIdentifier"])] },
            severity: vec![SeverityRule { path: path(&["name"]), equals: None, severity: 1 }],
            event_kind: "state".to_string(),
            lifts: vec![
                // First, so the others can test the query by its short name.
                FieldLift {
                    from: path(&["name"]),
                    to: "osquery.query_name".to_string(),
                    strip_pattern: Some("^pack_[^_]+_".to_string()),
                    when: None,
                },
                column("system_info", "hostname", "host.hostname"),
                column("system_info", "cpu_brand", "host.cpu.brand"),
                column("os_version", "name", "host.os.name"),
                column("os_version", "version", "host.os.version"),
                column("os_version", "platform", "host.os.platform"),
                column("kernel_info", "version", "host.os.kernel"),
                column("listening_ports", "port", "network.port"),
                column("listening_ports", "protocol", "network.protocol"),
                column("listening_ports", "address", "network.address"),
                column("listening_ports", "name", "process.name"),
                column("listening_ports", "path", "process.executable"),
                column("listening_ports", "pid", "process.pid"),
                column("docker_containers", "id", "container.id"),
                column("docker_containers", "name", "container.name"),
                column("docker_containers", "image", "container.image.name"),
                column("containers", "id", "container.id"),
                column("kernel_btf", "path", "file.path"),
                column("kernel_btf", "size", "file.size"),
            ],
        })
    }

    fn assess(&mut self, cluster: &dyn ClusterReader) -> Condition {
        daemonset_condition(cluster, "OSQueryReady", NAME)
    }
}

export_feature!(Osquery);

#[cfg(test)]
mod tests {
    use super::*;

    fn configure(config: &str) -> Result<Osquery, ConfigError> {
        let mut o = Osquery::default();
        o.configure(config, &Context { namespace: "security-system".into(), ..Default::default() })?;
        Ok(o)
    }

    #[test]
    fn pack_has_the_scope_queries_for_every_runtime() {
        let o = configure(r#"{"intervalSeconds":60,"packs":["scope-minimal"]}"#).unwrap();
        let pack: Value = serde_json::from_str(&o.pack_json()).unwrap();
        let names: Vec<&str> = pack["queries"].as_object().unwrap().keys().map(String::as_str).collect();
        // The seed plan's six (docs/seed-deviations.md, osquery), plus containers of any runtime and the kernel's BTF
        // (SCOPE-06 and SCOPE-05 on containerd nodes).
        assert_eq!(
            names,
            [
                "containers",
                "docker_containers",
                "kernel_btf",
                "kernel_info",
                "kernel_modules",
                "listening_ports",
                "os_version",
                "system_info"
            ]
        );
        assert_eq!(pack["queries"]["listening_ports"]["interval"], 60);
        assert_eq!(pack["queries"]["system_info"]["snapshot"], true);
    }

    #[test]
    fn string_interval_names_the_field() {
        let err = configure(r#"{"intervalSeconds":"x"}"#).err().unwrap();
        assert_eq!(err.field, "intervalSeconds");
    }

    #[test]
    fn rotation_flags_are_set() {
        let o = configure("{}").unwrap();
        let flags = o.flags();
        assert!(flags.contains("--logger_rotate=true"));
        assert!(flags.contains("--logger_rotate_size=52428800"));
    }
}
