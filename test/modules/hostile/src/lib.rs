//! A feature that misbehaves on purpose, for the sandbox tests. Its config
//! `{"mode": ...}` picks the misbehaviour; a well-behaved render must
//! survive every one of them.

use secop_feature_sdk::*;
use serde::Deserialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    #[default]
    Benign,
    /// Never returns from configure.
    LoopInConfigure,
    /// Allocates until something stops it.
    UnboundedMemory,
    /// Panics (a trap once compiled to WASM).
    Panic,
    /// Returns about 100 MB of objects.
    HugeOutput,
    /// Returns something that is not a Kubernetes object.
    InvalidObject,
    /// Puts a Deployment into kube-system.
    OtherNamespace,
    /// Binds its service account to cluster-admin.
    ClusterAdminBinding,
    /// Contributes a Secret without a grant.
    UngrantedSecret,
}

#[derive(Debug, Deserialize, Default)]
#[serde(default)]
struct HostileConfig {
    mode: Mode,
}

#[derive(Debug, Default)]
pub struct Hostile {
    mode: Mode,
    namespace: String,
}

impl Feature for Hostile {
    fn metadata(&self) -> Metadata {
        Metadata {
            id: "hostile".into(),
            priority: 150,
            contract_version: CONTRACT_VERSION.into(),
            description: "misbehaves on purpose (sandbox tests)".into(),
            condition_type: "HostileReady".into(),
        }
    }

    fn configure(&mut self, config_json: &str, ctx: &Context) -> Result<Vec<Diagnostic>, ConfigError> {
        let (config, diags): (HostileConfig, _) = decode_config(config_json)?;
        self.mode = config.mode;
        self.namespace = ctx.namespace.clone();
        if self.mode == Mode::LoopInConfigure {
            let mut n: u64 = 0;
            loop {
                n = std::hint::black_box(n.wrapping_add(1));
            }
        }
        Ok(diags)
    }

    fn contribute(&mut self) -> Result<Vec<String>, String> {
        let cm = |name: &str, ns: &str| {
            json!({ "apiVersion": "v1", "kind": "ConfigMap", "metadata": { "name": name, "namespace": ns }, "data": {} })
        };
        Ok(match self.mode {
            Mode::Benign | Mode::LoopInConfigure => to_documents(vec![cm("hostile", &self.namespace)]),
            Mode::UnboundedMemory => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(vec![1u8; 1 << 20]);
                    std::hint::black_box(&hoard);
                }
            }
            Mode::Panic => panic!("hostile feature panics on purpose"),
            Mode::HugeOutput => {
                let filler = "x".repeat(1 << 20);
                (0..100)
                    .map(|i| json!({ "apiVersion": "v1", "kind": "ConfigMap", "metadata": { "name": format!("big-{i}"), "namespace": self.namespace }, "data": { "x": filler } }).to_string())
                    .collect()
            }
            Mode::InvalidObject => vec!["this is not json".to_string(), json!({ "metadata": { "name": "no-kind" } }).to_string()],
            Mode::OtherNamespace => to_documents(vec![cm("escaped", "kube-system")]),
            Mode::ClusterAdminBinding => to_documents(vec![json!({
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "ClusterRoleBinding",
                "metadata": { "name": "hostile-admin" },
                "roleRef": { "apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin" },
                "subjects": [{ "kind": "ServiceAccount", "name": "default", "namespace": self.namespace }],
            })]),
            Mode::UngrantedSecret => to_documents(vec![json!({
                "apiVersion": "v1", "kind": "Secret", "metadata": { "name": "stolen", "namespace": self.namespace }, "data": {},
            })]),
        })
    }

    fn assess(&mut self, _cluster: &dyn ClusterReader) -> Condition {
        Condition { type_: "HostileReady".into(), status: ConditionStatus::Unknown, reason: "Hostile".into(), message: String::new() }
    }
}

export_feature!(Hostile);
