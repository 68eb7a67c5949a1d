//! The OpenTelemetry pipeline: a node collector on every node tails the
//! sensors' output and forwards OTLP to a gateway, which maps severity,
//! routes by CTEM purpose and writes to Elasticsearch.
//!
//! This feature contributes the collectors' workloads and RBAC; the HOST
//! writes both collector configs from every feature's `otel-config`, into
//! the ConfigMaps this feature names in `collector()`.

use secop_feature_sdk::k8s;
use secop_feature_sdk::*;
use serde::Deserialize;

pub const ID: &str = "otel_pipeline";
/// The host generates configs for this collector release (see
/// `secop_engine::otel::COLLECTOR_VERSION`); keep the image in step.
pub const DEFAULT_IMAGE: &str = "docker.io/otel/opentelemetry-collector-contrib:0.152.0";
const NODE: &str = "otel-node";
const GATEWAY: &str = "otel-gateway";
const CONFIG_KEY: &str = "config.yaml";
const CONFIG_DIR: &str = "/etc/otelcol";
const STORAGE_DIR: &str = "/var/lib/otelcol/storage";
const CA_DIR: &str = "/etc/otelcol/es-ca";
const OTLP_PORT: u16 = 4317;
const HEALTH_PORT: u16 = 13133;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
pub enum Mode {
    #[default]
    #[serde(rename = "node-to-gateway-to-es")]
    NodeToGatewayToEs,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct PipelineConfig {
    pub mode: Mode,
    /// The seed plan's `nodeLogBasePath` (docs/seed-deviations.md, pipeline). Refused when set: the collectors tail
    /// what each feature names (its receiver `include`), so one base path
    /// here could only be ignored (docs/seed-deviations.md).
    pub node_log_base_path: Option<String>,
    pub gateway_replicas: u32,
    pub image: String,
    /// Size of the gateway's on-disk sending queue volume.
    pub gateway_queue_size_limit: String,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        Self {
            mode: Mode::NodeToGatewayToEs,
            node_log_base_path: None,
            gateway_replicas: 1,
            image: DEFAULT_IMAGE.to_string(),
            gateway_queue_size_limit: "2Gi".to_string(),
        }
    }
}

#[derive(Debug, Default)]
pub struct OtelPipeline {
    ctx: Context,
    config: PipelineConfig,
}

fn health_probe() -> Value {
    json!({ "httpGet": { "path": "/", "port": HEALTH_PORT }, "periodSeconds": 10, "timeoutSeconds": 5 })
}

impl OtelPipeline {
    fn node_daemonset(&self) -> Value {
        let pod_spec = json!({
            "serviceAccountName": NODE,
            // The subject of an event comes from the event body, not from
            // k8sattributes (which would name the sensor pod): no API access.
            "automountServiceAccountToken": false,
            "priorityClassName": "system-node-critical",
            "tolerations": [ { "key": "node-role.kubernetes.io/control-plane", "operator": "Exists", "effect": "NoSchedule" } ],
            "containers": [{
                "name": NODE,
                "image": self.config.image,
                "imagePullPolicy": "IfNotPresent",
                "args": [format!("--config={CONFIG_DIR}/{CONFIG_KEY}")],
                "env": [ k8s::field_env("K8S_NODE_NAME", "spec.nodeName") ],
                // Pod logs are 0640 root:root: read them as root, with no
                // capabilities and a read-only root filesystem.
                "securityContext": {
                    "runAsUser": 0,
                    "runAsGroup": 0,
                    "allowPrivilegeEscalation": false,
                    "readOnlyRootFilesystem": true,
                    "capabilities": { "drop": ["ALL"] },
                    "seccompProfile": { "type": "RuntimeDefault" },
                },
                "resources": k8s::resources("100m", "128Mi", "300m", "256Mi"),
                "ports": [{ "name": "health", "containerPort": HEALTH_PORT }],
                "livenessProbe": health_probe(),
                "readinessProbe": health_probe(),
                "volumeMounts": [
                    k8s::mount("config", CONFIG_DIR, true),
                    k8s::mount("varlogpods", "/var/log/pods", true),
                    k8s::mount("storage", STORAGE_DIR, false),
                ],
            }],
            "volumes": [
                k8s::config_map_volume("config", "otel-node-config"),
                k8s::host_path_volume("varlogpods", "/var/log/pods", "Directory"),
                // File offsets survive restarts: no event is read twice or skipped.
                k8s::host_path_volume("storage", &format!("/var/lib/otelcol/{}", self.ctx.namespace), "DirectoryOrCreate"),
            ],
        });
        k8s::daemonset(&self.ctx, NODE, NODE, pod_spec, json!({}))
    }

    fn gateway_deployment(&self) -> Value {
        let output = &self.ctx.output;
        let mut env = vec![];
        let mut mounts = vec![k8s::mount("config", CONFIG_DIR, true), k8s::mount("queue", STORAGE_DIR, false)];
        let mut volumes = vec![
            k8s::config_map_volume("config", "otel-gateway-config"),
            json!({ "name": "queue", "emptyDir": { "sizeLimit": self.config.gateway_queue_size_limit } }),
        ];
        if let Some(auth) = &output.auth_secret {
            for (var, key) in [("ES_USERNAME", "username"), ("ES_PASSWORD", "password")] {
                env.push(json!({ "name": var, "valueFrom": { "secretKeyRef": { "name": auth.name, "key": key } } }));
            }
        }
        let mut setup_args = vec![
            "es-setup".to_string(),
            format!("--index-inventory={}", output.index_inventory),
            format!("--index-events={}", output.index_events),
            format!("--index-vulnerabilities={}", output.index_vulnerabilities),
        ];
        setup_args.extend(output.endpoints.iter().map(|e| format!("--endpoint={e}")));
        let mut setup_mounts = vec![];
        if let Some(ca) = &output.ca_secret {
            mounts.push(k8s::mount("es-ca", CA_DIR, true));
            setup_mounts.push(k8s::mount("es-ca", CA_DIR, true));
            volumes.push(json!({ "name": "es-ca", "secret": { "secretName": ca.name } }));
            setup_args.push(format!("--ca-file={CA_DIR}/ca.crt"));
        }
        let pod_spec = json!({
            // The index templates must exist before the first document, or
            // Elasticsearch guesses the mappings of the new indices. The
            // operator's own image does it, with the gateway's credentials;
            // the operator never holds them.
            "initContainers": [{
                "name": "es-setup",
                "image": self.ctx.operator_image,
                "imagePullPolicy": "IfNotPresent",
                "command": ["secop"],
                "args": setup_args,
                "env": env.clone(),
                "securityContext": k8s::restricted_security_context(),
                "resources": k8s::resources("10m", "32Mi", "200m", "64Mi"),
                "volumeMounts": setup_mounts,
            }],
            "serviceAccountName": GATEWAY,
            "automountServiceAccountToken": false,
            "securityContext": { "runAsNonRoot": true, "runAsUser": 10001, "fsGroup": 10001, "seccompProfile": { "type": "RuntimeDefault" } },
            "containers": [{
                "name": GATEWAY,
                "image": self.config.image,
                "imagePullPolicy": "IfNotPresent",
                "args": [format!("--config={CONFIG_DIR}/{CONFIG_KEY}")],
                "env": env,
                "securityContext": k8s::restricted_security_context(),
                "resources": k8s::resources("100m", "128Mi", "500m", "256Mi"),
                "ports": [
                    { "name": "otlp-grpc", "containerPort": OTLP_PORT },
                    { "name": "health", "containerPort": HEALTH_PORT },
                ],
                "livenessProbe": health_probe(),
                "readinessProbe": health_probe(),
                "volumeMounts": mounts,
            }],
            "volumes": volumes,
        });
        k8s::deployment(&self.ctx, GATEWAY, GATEWAY, self.config.gateway_replicas, pod_spec, json!({}))
    }

    fn gateway_service(&self) -> Value {
        json!({
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": k8s::namespaced_meta(&self.ctx, GATEWAY, GATEWAY),
            "spec": {
                "selector": k8s::selector(GATEWAY),
                "ports": [{ "name": "otlp-grpc", "port": OTLP_PORT, "targetPort": "otlp-grpc", "protocol": "TCP" }],
            },
        })
    }
}

impl OtelPipeline {
    /// Only this agent's node collectors may send to the gateway's OTLP
    /// port: any other pod could otherwise forge or flood security events
    /// (where the cluster's CNI enforces NetworkPolicies). The health port
    /// stays open for the kubelet's probes. Egress to Elasticsearch is not
    /// restricted: its endpoints are host names, which a NetworkPolicy
    /// cannot name.
    fn gateway_network_policy(&self) -> Value {
        json!({
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": k8s::namespaced_meta(&self.ctx, GATEWAY, GATEWAY),
            "spec": {
                "podSelector": { "matchLabels": k8s::selector(GATEWAY) },
                "policyTypes": ["Ingress"],
                "ingress": [
                    {
                        "from": [{ "podSelector": { "matchLabels": k8s::selector(NODE) } }],
                        "ports": [{ "port": OTLP_PORT, "protocol": "TCP" }],
                    },
                    { "ports": [{ "port": HEALTH_PORT, "protocol": "TCP" }] },
                ],
            },
        })
    }
}

impl Feature for OtelPipeline {
    fn metadata(&self) -> Metadata {
        Metadata {
            id: ID.to_string(),
            priority: 10,
            contract_version: CONTRACT_VERSION.to_string(),
            description: "OpenTelemetry node collectors and gateway shipping sensor events to Elasticsearch"
                .to_string(),
            condition_type: "PipelineReady".to_string(),
        }
    }

    fn configure(&mut self, config_json: &str, ctx: &Context) -> Result<Vec<Diagnostic>, ConfigError> {
        let (config, diagnostics): (PipelineConfig, _) = decode_config(config_json)?;
        if config.gateway_replicas == 0 {
            return Err(ConfigError::new(
                "gatewayReplicas",
                "must be at least 1: the gateway is the only path to Elasticsearch",
            ));
        }
        if config.node_log_base_path.is_some() {
            return Err(ConfigError::new(
                "nodeLogBasePath",
                "is not supported: each feature names the files its collector tails (osquery writes under /var/log/security/osquery, \
                 Falco and Tetragon to their pods' logs under /var/log/pods); remove the field",
            ));
        }
        if ctx.output.endpoints.is_empty() {
            return Err(ConfigError::new(
                "output.elasticsearch.endpoints",
                "the pipeline needs at least one Elasticsearch endpoint",
            ));
        }
        self.ctx = ctx.clone();
        self.config = config;
        Ok(diagnostics)
    }

    fn contribute(&mut self) -> Result<Vec<String>, String> {
        let ctx = &self.ctx;
        Ok(to_documents(vec![
            k8s::service_account(ctx, NODE, NODE),
            k8s::service_account(ctx, GATEWAY, GATEWAY),
            self.node_daemonset(),
            self.gateway_deployment(),
            self.gateway_service(),
            self.gateway_network_policy(),
        ]))
    }

    fn collector(&mut self) -> Option<CollectorSlots> {
        Some(CollectorSlots {
            node_daemonset: NODE.to_string(),
            node_container: NODE.to_string(),
            gateway_deployment: GATEWAY.to_string(),
            node_config_map: "otel-node-config".to_string(),
            gateway_config_map: "otel-gateway-config".to_string(),
            config_key: CONFIG_KEY.to_string(),
            gateway_endpoint: format!("{GATEWAY}.{}.svc:{OTLP_PORT}", self.ctx.namespace),
            storage_directory: STORAGE_DIR.to_string(),
            username_env: "ES_USERNAME".to_string(),
            password_env: "ES_PASSWORD".to_string(),
            ca_file: format!("{CA_DIR}/ca.crt"),
        })
    }

    fn assess(&mut self, cluster: &dyn ClusterReader) -> Condition {
        let node = daemonset_condition(cluster, "PipelineReady", NODE);
        if node.status != ConditionStatus::True {
            return node;
        }
        let gateway = deployment_condition(cluster, "PipelineReady", GATEWAY);
        if gateway.status != ConditionStatus::True {
            return gateway;
        }
        Condition { message: format!("{}; {}", node.message, gateway.message), ..gateway }
    }
}

export_feature!(OtelPipeline);

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx() -> Context {
        Context {
            namespace: "security-system".into(),
            output: OutputSettings {
                endpoints: vec!["https://es:9200".into()],
                auth_secret: Some(SecretRef { name: "es-credentials".into() }),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    #[test]
    fn only_node_collectors_reach_the_gateways_otlp_port() {
        let mut pipeline = OtelPipeline::default();
        pipeline.configure("{}", &ctx()).unwrap();
        let policy = pipeline.gateway_network_policy();
        assert_eq!(policy["spec"]["podSelector"]["matchLabels"]["app.kubernetes.io/name"], GATEWAY);
        let ingress = policy["spec"]["ingress"].as_array().unwrap();
        let otlp = ingress.iter().find(|r| r["ports"][0]["port"] == OTLP_PORT).unwrap();
        assert_eq!(otlp["from"], json!([{ "podSelector": { "matchLabels": k8s::selector(NODE) } }]));
        assert!(
            ingress
                .iter()
                .filter(|r| r.get("from").is_none())
                .all(|r| r["ports"] == json!([{ "port": HEALTH_PORT, "protocol": "TCP" }])),
            "only the health port is open to all"
        );
    }

    #[test]
    fn the_plans_node_log_base_path_is_refused_by_name() {
        let err = OtelPipeline::default().configure(r#"{"nodeLogBasePath":"/var/log/security"}"#, &ctx()).unwrap_err();
        assert_eq!(err.field, "nodeLogBasePath");
        assert!(err.message.contains("/var/log/security/osquery"), "{}", err.message);
    }

    #[test]
    fn zero_replicas_is_refused() {
        let err = OtelPipeline::default().configure(r#"{"gatewayReplicas":0}"#, &ctx()).unwrap_err();
        assert_eq!(err.field, "gatewayReplicas");
    }

    #[test]
    fn unknown_mode_is_refused_and_unknown_fields_warn() {
        let err = OtelPipeline::default().configure(r#"{"mode":"direct"}"#, &ctx()).unwrap_err();
        assert_eq!(err.field, "mode");
        let diags = OtelPipeline::default().configure(r#"{"gatewayReplica":2}"#, &ctx()).unwrap();
        assert_eq!(diags[0].field, "gatewayReplica");
        assert_eq!(diags[0].level, DiagnosticLevel::Warning);
    }

    #[test]
    fn gateway_reads_credentials_from_the_secret() {
        let mut p = OtelPipeline::default();
        p.configure("{}", &ctx()).unwrap();
        let d = p.gateway_deployment();
        let env = &d["spec"]["template"]["spec"]["containers"][0]["env"];
        assert_eq!(env[0]["valueFrom"]["secretKeyRef"]["name"], "es-credentials");
        assert_eq!(env[1]["name"], "ES_PASSWORD");
    }

    #[test]
    fn gateway_installs_the_index_templates_before_it_starts() {
        let mut p = OtelPipeline::default();
        let mut c = ctx();
        c.operator_image = "registry.example/secop:1".into();
        c.output.ca_secret = Some(SecretRef { name: "es-ca".into() });
        c.output.index_events = "ev".into();
        p.configure("{}", &c).unwrap();
        let d = p.gateway_deployment();
        let init = &d["spec"]["template"]["spec"]["initContainers"][0];
        assert_eq!(init["image"], "registry.example/secop:1");
        let args: Vec<&str> = init["args"].as_array().unwrap().iter().map(|a| a.as_str().unwrap()).collect();
        assert_eq!(args[0], "es-setup");
        assert!(args.contains(&"--endpoint=https://es:9200") && args.contains(&"--index-events=ev"), "{args:?}");
        assert!(args.contains(&"--ca-file=/etc/otelcol/es-ca/ca.crt"));
        assert_eq!(init["env"], d["spec"]["template"]["spec"]["containers"][0]["env"], "the gateway's credentials");
        assert_eq!(init["volumeMounts"][0]["name"], "es-ca");
    }
}
