//! Trivy Operator: vulnerability reports for every workload image, synced
//! into the vulnerabilities index by a Deployment that runs
//! `secop trivy-sync --watch` on the operator image: a report is in the
//! index within a minute of the Trivy Operator writing it. Trivy has no file to tail: no `otel-config`.
//!
//! Manifests follow the trivy-operator 0.26.1 static manifest (chart
//! 0.28.1); see assets/NOTES.md for provenance.

use secop_feature_sdk::k8s;
use secop_feature_sdk::*;
use serde::Deserialize;

pub const ID: &str = "trivy";
pub const DEFAULT_IMAGE: &str = "mirror.gcr.io/aquasec/trivy-operator:0.26.1";
const OPERATOR: &str = "trivy-operator";
const SYNC: &str = "trivy-es-sync";
const COMPONENT: &str = "trivy";

const CRDS: &str = include_str!("../assets/crds.json");
const RBAC: &str = include_str!("../assets/rbac.json");

pub const SEVERITIES: &[&str] = &["CRITICAL", "HIGH", "MEDIUM", "LOW", "UNKNOWN"];

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct TrivyConfig {
    /// How often the sync re-reads every report in full (`@every 6h`,
    /// `@hourly`, `@daily`); changed reports are synced as they change.
    pub scan_schedule: String,
    /// Lowest severity synced to the vulnerabilities index.
    pub severity_threshold: String,
    pub image: String,
    /// Namespaces the operator scans; empty = all.
    pub target_namespaces: Vec<String>,
    /// Image that runs `secop trivy-sync`; empty = the operator's own.
    pub sync_image: String,
}

impl Default for TrivyConfig {
    fn default() -> Self {
        Self {
            scan_schedule: "@every 6h".to_string(),
            severity_threshold: "HIGH".to_string(),
            image: DEFAULT_IMAGE.to_string(),
            target_namespaces: vec![],
            sync_image: String::new(),
        }
    }
}

/// Seconds between full syncs: `@every <duration>` (`6h`, `1h30m`, `90s`)
/// or a `@hourly`-style macro. None for anything else.
fn resync_seconds(schedule: &str) -> Option<u64> {
    let s = schedule.trim();
    let macro_seconds = match s {
        "@hourly" => Some(3_600),
        "@daily" | "@midnight" => Some(86_400),
        "@weekly" => Some(604_800),
        _ => None,
    };
    if macro_seconds.is_some() {
        return macro_seconds;
    }
    let duration = s.strip_prefix("@every ")?.trim();
    let (mut total, mut number) = (0u64, String::new());
    for c in duration.chars() {
        match c {
            '0'..='9' => number.push(c),
            'h' | 'm' | 's' if !number.is_empty() => {
                let unit = match c {
                    'h' => 3_600,
                    'm' => 60,
                    _ => 1,
                };
                total = total.checked_add(number.parse::<u64>().ok()?.checked_mul(unit)?)?;
                number.clear();
            }
            _ => return None,
        }
    }
    (number.is_empty() && total > 0).then_some(total)
}

#[derive(Debug, Default)]
pub struct Trivy {
    ctx: Context,
    config: TrivyConfig,
}

impl Trivy {
    fn operator_config_data(&self) -> Vec<(&'static str, String)> {
        let kv = |k: &'static str, v: &str| (k, v.to_string());
        vec![
            kv("OPERATOR_LOG_DEV_MODE", "false"),
            kv("OPERATOR_SCAN_JOB_TIMEOUT", "5m"),
            kv("OPERATOR_CONCURRENT_SCAN_JOBS_LIMIT", "10"),
            kv("OPERATOR_CONCURRENT_NODE_COLLECTOR_LIMIT", "1"),
            kv("OPERATOR_SCAN_JOB_RETRY_AFTER", "30s"),
            kv("OPERATOR_BATCH_DELETE_LIMIT", "10"),
            kv("OPERATOR_BATCH_DELETE_DELAY", "10s"),
            kv("OPERATOR_METRICS_BIND_ADDRESS", ":8080"),
            kv("OPERATOR_METRICS_FINDINGS_ENABLED", "true"),
            kv("OPERATOR_HEALTH_PROBE_BIND_ADDRESS", ":9090"),
            kv("OPERATOR_VULNERABILITY_SCANNER_ENABLED", "true"),
            kv("OPERATOR_VULNERABILITY_SCANNER_SCAN_ONLY_CURRENT_REVISIONS", "true"),
            kv("OPERATOR_SBOM_GENERATION_ENABLED", "false"),
            kv("OPERATOR_SCANNER_REPORT_TTL", "24h"),
            kv("OPERATOR_CACHE_REPORT_TTL", "120h"),
            kv("CONTROLLER_CACHE_SYNC_TIMEOUT", "5m"),
            kv("OPERATOR_CONFIG_AUDIT_SCANNER_ENABLED", "true"),
            kv("OPERATOR_CONFIG_AUDIT_SCANNER_SCAN_ONLY_CURRENT_REVISIONS", "true"),
            kv("OPERATOR_RBAC_ASSESSMENT_SCANNER_ENABLED", "true"),
            kv("OPERATOR_INFRA_ASSESSMENT_SCANNER_ENABLED", "false"),
            kv("OPERATOR_EXPOSED_SECRET_SCANNER_ENABLED", "true"),
            kv("OPERATOR_CLUSTER_COMPLIANCE_ENABLED", "false"),
            kv("OPERATOR_SEND_DELETED_REPORTS", "false"),
            kv("OPERATOR_PRIVATE_REGISTRY_SCAN_SECRETS_NAMES", "{}"),
            kv("OPERATOR_ACCESS_GLOBAL_SECRETS_SERVICE_ACCOUNTS", "true"),
            kv("OPERATOR_BUILT_IN_TRIVY_SERVER", "false"),
        ]
    }

    fn trivy_config_data(&self) -> Vec<(&'static str, String)> {
        let kv = |k: &'static str, v: &str| (k, v.to_string());
        vec![
            kv("trivy.repository", "mirror.gcr.io/aquasec/trivy"),
            kv("trivy.tag", "0.62.1"),
            kv("trivy.imagePullPolicy", "IfNotPresent"),
            kv("trivy.severity", "UNKNOWN,LOW,MEDIUM,HIGH,CRITICAL"),
            kv("trivy.slow", "true"),
            kv("trivy.skipJavaDBUpdate", "false"),
            kv("trivy.includeDevDeps", "false"),
            kv("trivy.imageScanCacheDir", "/tmp/trivy/.cache"),
            kv("trivy.filesystemScanCacheDir", "/var/trivyoperator/trivy-db"),
            kv("trivy.dbRepository", "mirror.gcr.io/aquasec/trivy-db"),
            kv("trivy.javaDbRepository", "mirror.gcr.io/aquasec/trivy-java-db"),
            kv("trivy.command", "image"),
            kv("trivy.dbRepositoryInsecure", "false"),
            kv("trivy.useBuiltinRegoPolicies", "false"),
            kv("trivy.useEmbeddedRegoPolicies", "true"),
            kv(
                "trivy.supportedConfigAuditKinds",
                "Workload,Service,Role,ClusterRole,NetworkPolicy,Ingress,LimitRange,ResourceQuota",
            ),
            kv("trivy.timeout", "5m0s"),
            kv("trivy.mode", "Standalone"),
            kv("trivy.resources.requests.cpu", "100m"),
            kv("trivy.resources.requests.memory", "100M"),
            kv("trivy.resources.limits.cpu", "500m"),
            kv("trivy.resources.limits.memory", "500M"),
        ]
    }

    fn operator_main_config_data(&self) -> Vec<(&'static str, String)> {
        let kv = |k: &'static str, v: &str| (k, v.to_string());
        vec![
            kv("scanJob.useGCRServiceAccount", "true"),
            kv(
                "scanJob.podTemplateContainerSecurityContext",
                r#"{"allowPrivilegeEscalation":false,"capabilities":{"drop":["ALL"]},"privileged":false,"readOnlyRootFilesystem":true}"#,
            ),
            kv("scanJob.compressLogs", "true"),
            kv("vulnerabilityReports.scanner", "Trivy"),
            kv("vulnerabilityReports.scanJobsInSameNamespace", "false"),
            kv("configAuditReports.scanner", "Trivy"),
            kv("compliance.failEntriesLimit", "10"),
            kv("report.recordFailedChecksOnly", "true"),
            kv("policies.bundle.oci.ref", "mirror.gcr.io/aquasec/trivy-checks:1"),
            kv("policies.bundle.insecure", "false"),
        ]
    }

    fn operator_deployment(&self, config_hash: &str) -> Value {
        let pod_spec = json!({
            "serviceAccountName": OPERATOR,
            "automountServiceAccountToken": true,
            "securityContext": { "runAsNonRoot": true, "runAsUser": 10000, "seccompProfile": { "type": "RuntimeDefault" } },
            "containers": [{
                "name": OPERATOR,
                "image": self.config.image,
                "imagePullPolicy": "IfNotPresent",
                "env": [
                    { "name": "OPERATOR_NAMESPACE", "value": self.ctx.namespace },
                    { "name": "OPERATOR_TARGET_NAMESPACES", "value": self.config.target_namespaces.join(",") },
                    { "name": "OPERATOR_EXCLUDE_NAMESPACES", "value": "" },
                    { "name": "OPERATOR_TARGET_WORKLOADS", "value": "pod,replicaset,replicationcontroller,statefulset,daemonset,cronjob,job" },
                    { "name": "OPERATOR_SERVICE_ACCOUNT", "value": OPERATOR },
                ],
                "envFrom": [ { "configMapRef": { "name": "trivy-operator-config" } } ],
                "ports": [ { "name": "metrics", "containerPort": 8080 }, { "name": "probes", "containerPort": 9090 } ],
                "readinessProbe": { "httpGet": { "path": "/readyz/", "port": "probes" }, "initialDelaySeconds": 5, "periodSeconds": 10 },
                "livenessProbe": { "httpGet": { "path": "/healthz/", "port": "probes" }, "initialDelaySeconds": 5, "periodSeconds": 10, "failureThreshold": 10 },
                "securityContext": k8s::restricted_security_context(),
                "resources": k8s::resources("100m", "128Mi", "300m", "256Mi"),
                "volumeMounts": [ k8s::mount("cache-policies", "/tmp", false) ],
            }],
            "volumes": [ { "name": "cache-policies", "emptyDir": {} } ],
        });
        let mut d = k8s::deployment(
            &self.ctx,
            OPERATOR,
            COMPONENT,
            1,
            pod_spec,
            json!({ "security.example.io/config-hash": config_hash }),
        );
        // One scanner at a time: the operator's default strategy.
        d["spec"]["strategy"] = json!({ "type": "Recreate" });
        d
    }

    fn sync_deployment(&self, resync_seconds: u64) -> Value {
        let output = &self.ctx.output;
        let image = if self.config.sync_image.is_empty() { &self.ctx.operator_image } else { &self.config.sync_image };
        let mut args = vec![
            "trivy-sync".to_string(),
            format!("--severity-threshold={}", self.config.severity_threshold),
            format!("--index={}", output.index_vulnerabilities),
            format!("--cluster-name={}", self.ctx.cluster_name),
            "--watch".to_string(),
            format!("--resync-seconds={resync_seconds}"),
        ];
        let es = k8s::secop_elasticsearch(output);
        args.extend(es.args);
        let (env, mounts, volumes) = (es.env, es.mounts, es.volumes);
        let pod_spec = json!({
            "serviceAccountName": SYNC,
            "automountServiceAccountToken": true,
            "securityContext": { "runAsNonRoot": true, "runAsUser": 65532, "seccompProfile": { "type": "RuntimeDefault" } },
            "containers": [{
                "name": "sync",
                "image": image,
                "imagePullPolicy": "IfNotPresent",
                "command": ["secop"],
                "args": args,
                "env": env,
                "securityContext": k8s::restricted_security_context(),
                "resources": k8s::resources("50m", "64Mi", "500m", "256Mi"),
                "volumeMounts": mounts,
            }],
            "volumes": volumes,
        });
        // Its own component: the operator Deployment selects `trivy` pods.
        let mut d = k8s::deployment(&self.ctx, SYNC, SYNC, 1, pod_spec, json!({}));
        // One writer at a time: two syncs racing could reopen a finding the
        // other just resolved.
        d["spec"]["strategy"] = json!({ "type": "Recreate" });
        d
    }
}

impl Feature for Trivy {
    fn metadata(&self) -> Metadata {
        Metadata {
            id: ID.to_string(),
            priority: 200,
            contract_version: CONTRACT_VERSION.to_string(),
            description: "Trivy Operator vulnerability scanning, synced to the vulnerabilities index".to_string(),
            condition_type: "TrivyReady".to_string(),
        }
    }

    fn configure(&mut self, config_json: &str, ctx: &Context) -> Result<Vec<Diagnostic>, ConfigError> {
        let (mut config, diagnostics): (TrivyConfig, _) = decode_config(config_json)?;
        if resync_seconds(&config.scan_schedule).is_none() {
            return Err(ConfigError::new(
                "scanSchedule",
                format!(
                    "`{}` is not an interval: give `@every <duration>` (e.g. `@every 6h`) or @hourly/@daily/@weekly; \
                     the sync follows report changes as they happen, and this is how often it re-reads every report",
                    config.scan_schedule
                ),
            ));
        }
        config.severity_threshold = config.severity_threshold.to_ascii_uppercase();
        if !SEVERITIES.contains(&config.severity_threshold.as_str()) {
            return Err(ConfigError::new(
                "severityThreshold",
                format!("`{}` is not one of {}", config.severity_threshold, SEVERITIES.join(", ")),
            ));
        }
        self.ctx = ctx.clone();
        self.config = config;
        Ok(diagnostics)
    }

    fn contribute(&mut self) -> Result<Vec<String>, String> {
        let ctx = &self.ctx;
        let rbac: Value = serde_json::from_str(RBAC).map_err(|e| format!("embedded rbac.json: {e}"))?;
        let operator_config = self.operator_config_data();
        let main_config = self.operator_main_config_data();
        let trivy_config = self.trivy_config_data();
        let flat: Vec<&str> =
            operator_config.iter().chain(&main_config).chain(&trivy_config).map(|(_, v)| v.as_str()).collect();
        let hash = k8s::content_hash(&flat);

        let operator_role = ctx.cluster_scoped_name(OPERATOR);
        let sync_role = ctx.cluster_scoped_name(SYNC);
        let mut objects = vec![];
        let mut operator_sa = k8s::service_account(ctx, OPERATOR, COMPONENT);
        operator_sa["automountServiceAccountToken"] = json!(true);
        objects.extend([
            operator_sa,
            k8s::cluster_role(&operator_role, COMPONENT, rbac["clusterRoleRules"].clone()),
            k8s::cluster_role_binding(ctx, &operator_role, COMPONENT, &operator_role, OPERATOR),
            k8s::role(ctx, OPERATOR, COMPONENT, rbac["roleRules"].clone()),
            k8s::role_binding(ctx, OPERATOR, COMPONENT, OPERATOR, OPERATOR),
            k8s::config_map(ctx, "trivy-operator", COMPONENT, &main_config),
            k8s::config_map(ctx, "trivy-operator-config", COMPONENT, &operator_config),
            k8s::config_map(ctx, "trivy-operator-trivy-config", COMPONENT, &trivy_config),
            self.operator_deployment(&hash),
            k8s::service_account(ctx, SYNC, COMPONENT),
            k8s::cluster_role(
                &sync_role,
                COMPONENT,
                json!([{ "apiGroups": ["aquasecurity.github.io"], "resources": ["vulnerabilityreports"], "verbs": ["get", "list", "watch"] }]),
            ),
            k8s::cluster_role_binding(ctx, &sync_role, COMPONENT, &sync_role, SYNC),
            self.sync_deployment(resync_seconds(&self.config.scan_schedule).unwrap_or(21_600)),
        ]);
        // The upstream CRDs pass through verbatim (crds.json, chart 0.28.1).
        let mut documents = embedded_documents(CRDS)?;
        documents.extend(to_documents(objects));
        Ok(documents)
    }

    fn assess(&mut self, cluster: &dyn ClusterReader) -> Condition {
        deployment_condition(cluster, "TrivyReady", OPERATOR)
    }
}

export_feature!(Trivy);

#[cfg(test)]
mod tests {
    use super::*;

    fn configure(config: &str) -> Result<Trivy, ConfigError> {
        let mut t = Trivy::default();
        t.configure(
            config,
            &Context { namespace: "security-system".into(), operator_image: "secop:dev".into(), ..Default::default() },
        )?;
        Ok(t)
    }

    #[test]
    fn plan_schedule_and_threshold_are_accepted() {
        let mut t = configure(r#"{"scanSchedule":"@every 6h","severityThreshold":"HIGH"}"#).unwrap();
        let objects: Vec<Value> = t.contribute().unwrap().iter().map(|o| serde_json::from_str(o).unwrap()).collect();
        let sync = objects.iter().find(|o| o["kind"] == "Deployment" && o["metadata"]["name"] == SYNC).unwrap();
        let args = sync["spec"]["template"]["spec"]["containers"][0]["args"].as_array().unwrap();
        for arg in ["--severity-threshold=HIGH", "--watch", "--resync-seconds=21600"] {
            assert!(args.contains(&json!(arg)), "{arg} in {args:?}");
        }
        let operator = objects.iter().find(|o| o["kind"] == "Deployment" && o["metadata"]["name"] == OPERATOR).unwrap();
        assert_ne!(sync["spec"]["selector"], operator["spec"]["selector"], "each Deployment selects only its own pods");
        assert_eq!(objects.iter().filter(|o| o["kind"] == "CustomResourceDefinition").count(), 12);
    }

    #[test]
    fn bad_schedule_and_threshold_name_the_field() {
        assert_eq!(configure(r#"{"scanSchedule":"every day"}"#).err().unwrap().field, "scanSchedule");
        let cron = configure(r#"{"scanSchedule":"0 */6 * * *"}"#).err().unwrap();
        assert_eq!(cron.field, "scanSchedule");
        assert!(cron.message.contains("@every"), "{}", cron.message);
        assert_eq!(resync_seconds("@every 1h30m"), Some(5_400));
        assert_eq!(resync_seconds("@hourly"), Some(3_600));
        for bad in ["@every 0s", "@every 6", "@every h", "@every 6d"] {
            assert_eq!(resync_seconds(bad), None, "{bad}");
        }
        assert_eq!(configure(r#"{"severityThreshold":"SEVERE"}"#).err().unwrap().field, "severityThreshold");
        assert_eq!(configure(r#"{"targetNamespaces":"a"}"#).err().unwrap().field, "targetNamespaces");
    }
}
