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
    /// A ClusterRole that reads every Secret, bound to its own
    /// ServiceAccount: fine for a built-in, needs `clusterScoped` for a
    /// module from a registry.
    OwnClusterRole,
    /// A privileged DaemonSet that mounts the host's `/`.
    HostRoot,
    /// A ClusterRole labelled to aggregate into `admin`.
    AggregateToAdmin,
    /// Binds its own Role to kube-system's default ServiceAccount.
    ForeignSubject,
    /// A log receiver tailing `/*`: the host would mount `/` into the
    /// node collector.
    RootGlob,
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
    operator_image: String,
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
        self.operator_image = ctx.operator_image.clone();
        if self.mode == Mode::LoopInConfigure {
            let mut n: u64 = 0;
            loop {
                n = std::hint::black_box(n.wrapping_add(1));
            }
        }
        Ok(diags)
    }

    fn contribute(&mut self) -> Result<Vec<String>, String> {
        let cm = |name: &str, ns: &str| json!({ "apiVersion": "v1", "kind": "ConfigMap", "metadata": { "name": name, "namespace": ns }, "data": {} });
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
            Mode::InvalidObject => {
                vec!["this is not json".to_string(), json!({ "metadata": { "name": "no-kind" } }).to_string()]
            }
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
            Mode::OwnClusterRole => to_documents(vec![
                json!({ "apiVersion": "v1", "kind": "ServiceAccount", "metadata": { "name": "hostile", "namespace": self.namespace } }),
                json!({
                    "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": { "name": "hostile-secrets" },
                    "rules": [{ "apiGroups": [""], "resources": ["secrets"], "verbs": ["get", "list"] }],
                }),
                json!({
                    "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding", "metadata": { "name": "hostile-secrets" },
                    "roleRef": { "apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "hostile-secrets" },
                    "subjects": [{ "kind": "ServiceAccount", "name": "hostile", "namespace": self.namespace }],
                }),
            ]),
            Mode::HostRoot => to_documents(vec![json!({
                "apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": { "name": "hostile-root", "namespace": self.namespace },
                "spec": {
                    "selector": { "matchLabels": { "app": "hostile-root" } },
                    "template": {
                        "metadata": { "labels": { "app": "hostile-root" } },
                        "spec": {
                            "volumes": [{ "name": "root", "hostPath": { "path": "/" } }],
                            "containers": [{
                                "name": "root", "image": self.operator_image,
                                "securityContext": { "privileged": true },
                                "volumeMounts": [{ "name": "root", "mountPath": "/host" }],
                            }],
                        },
                    },
                },
            })]),
            Mode::AggregateToAdmin => to_documents(vec![json!({
                "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
                "metadata": { "name": "hostile-aggregated", "labels": { "rbac.authorization.k8s.io/aggregate-to-admin": "true" } },
                "rules": [{ "apiGroups": [""], "resources": ["nodes/proxy"], "verbs": ["get", "create"] }],
            })]),
            Mode::ForeignSubject => to_documents(vec![
                json!({
                    "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": { "name": "hostile", "namespace": self.namespace },
                    "rules": [{ "apiGroups": [""], "resources": ["configmaps"], "verbs": ["get"] }],
                }),
                json!({
                    "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": { "name": "hostile", "namespace": self.namespace },
                    "roleRef": { "apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "hostile" },
                    "subjects": [{ "kind": "ServiceAccount", "name": "default", "namespace": "kube-system" }],
                }),
            ]),
            Mode::RootGlob => to_documents(vec![cm("hostile", &self.namespace)]),
        })
    }

    fn otel_config(&mut self) -> Option<OtelReceiver> {
        (self.mode == Mode::RootGlob).then(|| OtelReceiver {
            name: "hostile".into(),
            include: vec!["/*".into()],
            exclude: vec![],
            format: LineFormat::Json,
            timestamp: None,
            tool: "hostile".into(),
            target: TargetIndex::Events,
            subject: SubjectPaths { namespace: vec![], pod: vec![], node: vec![] },
            severity: vec![],
            event_kind: "alert".into(),
            lifts: vec![],
        })
    }

    fn assess(&mut self, _cluster: &dyn ClusterReader) -> Condition {
        Condition {
            type_: "HostileReady".into(),
            status: ConditionStatus::Unknown,
            reason: "Hostile".into(),
            message: String::new(),
        }
    }
}

export_feature!(Hostile);
