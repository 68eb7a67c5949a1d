//! Posture (seed 004): a Deployment running `secop posture run` on the
//! operator image, with a read-only ClusterRole over the kinds it
//! inventories. It writes asset documents to the inventory index and
//! security-context alerts to the events index itself (no file to tail:
//! no `otel-config`).

use secop_feature_sdk::k8s;
use secop_feature_sdk::*;
use secop_posture::PostureConfig;

pub const ID: &str = "posture";
const NAME: &str = "posture";
const COMPONENT: &str = "posture";
const CONFIG_PATH: &str = "/etc/secop/posture";

/// What the engine watches; read-only, nothing else (no secrets).
fn read_only_rules() -> Value {
    let read = json!(["get", "list", "watch"]);
    json!([
        { "apiGroups": [""], "resources": ["pods", "services", "namespaces", "nodes", "serviceaccounts"], "verbs": read },
        { "apiGroups": ["apps"], "resources": ["deployments", "daemonsets", "statefulsets", "replicasets"], "verbs": read },
        { "apiGroups": ["batch"], "resources": ["jobs", "cronjobs"], "verbs": read },
        { "apiGroups": ["rbac.authorization.k8s.io"], "resources": ["roles", "clusterroles", "rolebindings", "clusterrolebindings"], "verbs": read },
    ])
}

#[derive(Debug, Default)]
pub struct Posture {
    ctx: Context,
    /// The engine's config (level, enable, disable, exemptions), as JSON.
    engine: String,
    /// Image running `secop posture run`; empty = the operator's own.
    image: String,
}

impl Posture {
    fn deployment(&self, config_hash: &str) -> Value {
        let output = &self.ctx.output;
        let image = if self.image.is_empty() { &self.ctx.operator_image } else { &self.image };
        let mut args = vec![
            "posture".to_string(),
            "run".to_string(),
            format!("--cluster-name={}", self.ctx.cluster_name),
            format!("--index-inventory={}", output.index_inventory),
            format!("--index-events={}", output.index_events),
            format!("--config={CONFIG_PATH}/config.json"),
        ];
        let es = k8s::secop_elasticsearch(output);
        args.extend(es.args);
        let env = es.env;
        let mut mounts = vec![k8s::mount("config", CONFIG_PATH, true)];
        mounts.extend(es.mounts);
        let mut volumes = vec![k8s::config_map_volume("config", "posture-config")];
        volumes.extend(es.volumes);
        let pod_spec = json!({
            "serviceAccountName": NAME,
            "automountServiceAccountToken": true,
            "securityContext": { "runAsNonRoot": true, "runAsUser": 65532, "seccompProfile": { "type": "RuntimeDefault" } },
            "containers": [{
                "name": NAME,
                "image": image,
                "imagePullPolicy": "IfNotPresent",
                "command": ["secop"],
                "args": args,
                "env": env,
                "securityContext": k8s::restricted_security_context(),
                // The engine keeps hashes, not objects: ~75 MiB peak at 100k pods.
                "resources": k8s::resources("50m", "96Mi", "1", "512Mi"),
                "volumeMounts": mounts,
            }],
            "volumes": volumes,
        });
        let mut d = k8s::deployment(
            &self.ctx,
            NAME,
            COMPONENT,
            1,
            pod_spec,
            json!({ "security.example.io/config-hash": config_hash }),
        );
        // One writer per cluster: never two engines during a rollout.
        d["spec"]["strategy"] = json!({ "type": "Recreate" });
        d
    }
}

impl Feature for Posture {
    fn metadata(&self) -> Metadata {
        Metadata {
            id: ID.to_string(),
            priority: 200,
            contract_version: CONTRACT_VERSION.to_string(),
            description: "Posture engine: cluster inventory and security-context alerts kept as evidence".to_string(),
            condition_type: "PostureReady".to_string(),
        }
    }

    fn configure(&mut self, config_json: &str, ctx: &Context) -> Result<Vec<Diagnostic>, ConfigError> {
        let trimmed = config_json.trim();
        let mut value: Value = if trimmed.is_empty() || trimmed == "null" {
            json!({})
        } else {
            serde_json::from_str(trimmed)
                .map_err(|e| ConfigError::new(".", format!("config is not valid JSON: {e}")))?
        };
        let Some(fields) = value.as_object_mut() else { return Err(ConfigError::new(".", "must be an object")) };
        let image = match fields.remove("image") {
            None => String::new(),
            Some(Value::String(s)) => s,
            Some(_) => return Err(ConfigError::new("image", "must be a string")),
        };
        let engine = PostureConfig::parse(&value.to_string()).map_err(|e| ConfigError::new(&e.field, e.message))?;
        self.engine = serde_json::to_string_pretty(&engine).map_err(|e| ConfigError::new(".", e.to_string()))?;
        self.image = image;
        self.ctx = ctx.clone();
        Ok(vec![])
    }

    fn contribute(&mut self) -> Result<Vec<String>, String> {
        let ctx = &self.ctx;
        let role = ctx.cluster_scoped_name(NAME);
        let config = [("config.json", self.engine.clone())];
        let hash = k8s::content_hash(&[&self.engine]);
        let mut service_account = k8s::service_account(ctx, NAME, COMPONENT);
        service_account["automountServiceAccountToken"] = json!(true);
        Ok(to_documents(vec![
            service_account,
            k8s::cluster_role(&role, COMPONENT, read_only_rules()),
            k8s::cluster_role_binding(ctx, &role, COMPONENT, &role, NAME),
            k8s::config_map(ctx, "posture-config", COMPONENT, &config),
            self.deployment(&hash),
        ]))
    }

    fn assess(&mut self, cluster: &dyn ClusterReader) -> Condition {
        deployment_condition(cluster, "PostureReady", NAME)
    }
}

export_feature!(Posture);

#[cfg(test)]
mod tests {
    use super::*;

    fn configure(config: &str) -> Result<Posture, ConfigError> {
        let mut p = Posture::default();
        p.configure(
            config,
            &Context {
                namespace: "security-system".into(),
                operator_image: "secop:dev".into(),
                cluster_name: "c1".into(),
                ..Default::default()
            },
        )?;
        Ok(p)
    }

    #[test]
    fn deploys_the_engine_read_only_with_its_config() {
        let mut p = configure(r#"{"level": "restricted", "image": "secop:posture"}"#).unwrap();
        let objects: Vec<Value> = p.contribute().unwrap().iter().map(|o| serde_json::from_str(o).unwrap()).collect();
        let role = objects.iter().find(|o| o["kind"] == "ClusterRole").unwrap();
        let verbs: Vec<&Value> =
            role["rules"].as_array().unwrap().iter().flat_map(|r| r["verbs"].as_array().unwrap()).collect();
        assert!(verbs.iter().all(|v| ["get", "list", "watch"].contains(&v.as_str().unwrap())), "read-only: {verbs:?}");
        let text = role.to_string();
        assert!(!text.contains("secrets") && !text.contains('*'), "{text}");
        let deployment = objects.iter().find(|o| o["kind"] == "Deployment").unwrap();
        let container = &deployment["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(container["image"], "secop:posture");
        assert!(container["args"].as_array().unwrap().contains(&json!("--cluster-name=c1")));
        let config = objects.iter().find(|o| o["kind"] == "ConfigMap").unwrap();
        let engine: Value = serde_json::from_str(config["data"]["config.json"].as_str().unwrap()).unwrap();
        assert_eq!(engine["level"], "restricted");
    }

    #[test]
    fn bad_config_names_the_field() {
        assert_eq!(configure(r#"{"disable": ["PSS-B-02", "NOPE"]}"#).err().unwrap().field, "disable[1]");
        assert_eq!(configure(r#"{"image": 3}"#).err().unwrap().field, "image");
        assert_eq!(configure(r#"{"exemptions": [{"labels": {}}]}"#).err().unwrap().field, "exemptions[0]");
    }
}
