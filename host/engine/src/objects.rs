//! Contributed objects: identity, scope, and the checks every object passes
//! before it joins the desired state.
//!
//! A feature is untrusted input. Each object must parse, name itself, live
//! in the agent's namespace (or be a cluster-scoped kind its module's source
//! may render), be of a kind the feature is granted, and pass the cluster
//! policy (host/policy/src/lib.rs: images, host access). RBAC gets extra
//! scrutiny: a feature may only bind roles it contributes itself, to its own
//! service accounts, and may not grant wildcards, the verbs that lead to
//! privilege escalation, or aggregate into other roles.

use std::collections::{BTreeSet, HashMap};
use std::fmt;

use secop_policy::{ClusterPolicy, Power, Violation};
use serde_json::Value;

/// Identity of an object in the desired state: apiVersion, kind, namespace,
/// name (the order of the derived `Ord`, for stable output). The apply
/// order is not part of it: [`ObjectKey::apply_rank`] derives it where
/// objects are sorted for apply.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectKey {
    pub api_version: String,
    pub kind: String,
    pub namespace: Option<String>,
    pub name: String,
}

impl ObjectKey {
    pub fn new(api_version: &str, kind: &str, namespace: Option<&str>, name: &str) -> Self {
        Self {
            api_version: api_version.to_string(),
            kind: kind.to_string(),
            namespace: namespace.map(str::to_string),
            name: name.to_string(),
        }
    }

    /// `group` part of apiVersion ("" for the core group).
    pub fn group(&self) -> &str {
        group_of(&self.api_version)
    }

    /// Where the object goes in apply order: CRDs and RBAC before the
    /// workloads that need them, custom resources last.
    pub fn apply_rank(&self) -> u8 {
        rank(self.group(), &self.kind)
    }

    /// An object of a kind no built-in API serves (its CRD may have been
    /// applied just before it).
    pub fn is_custom_resource(&self) -> bool {
        self.apply_rank() == CUSTOM_RESOURCE_RANK
    }
}

/// Sort objects into apply order; within a rank, by key (stable).
pub fn sort_for_apply(objects: &mut [(ObjectKey, Value)]) {
    objects.sort_by_key(|(key, _)| key.apply_rank());
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.namespace {
            Some(ns) => write!(f, "{} {}/{}", self.kind, ns, self.name),
            None => write!(f, "{} {}", self.kind, self.name),
        }
    }
}

pub fn group_of(api_version: &str) -> &str {
    api_version.rsplit_once('/').map_or("", |(g, _)| g)
}

/// Apply order: definitions and identities first, then configuration,
/// then workloads, then custom resources whose CRDs came first.
fn rank(group: &str, kind: &str) -> u8 {
    match (group, kind) {
        ("apiextensions.k8s.io", "CustomResourceDefinition") => 0,
        ("", "ServiceAccount") => 1,
        ("rbac.authorization.k8s.io", _) => 2,
        ("", "ConfigMap") | ("", "Secret") => 3,
        ("", "Service") => 4,
        ("apps", _) | ("batch", _) => 5,
        ("", _) | ("policy", _) | ("networking.k8s.io", _) => 4,
        _ => CUSTOM_RESOURCE_RANK,
    }
}

const CUSTOM_RESOURCE_RANK: u8 = 6;

/// Kinds that are cluster-scoped without any CRD.
const CLUSTER_SCOPED: &[(&str, &str)] = &[
    ("rbac.authorization.k8s.io", "ClusterRole"),
    ("rbac.authorization.k8s.io", "ClusterRoleBinding"),
    ("apiextensions.k8s.io", "CustomResourceDefinition"),
    ("", "Namespace"),
    ("", "Node"),
    ("", "PersistentVolume"),
    ("scheduling.k8s.io", "PriorityClass"),
    ("storage.k8s.io", "StorageClass"),
    ("admissionregistration.k8s.io", "MutatingWebhookConfiguration"),
    ("admissionregistration.k8s.io", "ValidatingWebhookConfiguration"),
    ("admissionregistration.k8s.io", "ValidatingAdmissionPolicy"),
    ("admissionregistration.k8s.io", "ValidatingAdmissionPolicyBinding"),
];

/// The kinds every feature may contribute (group, kind). Secrets, webhooks,
/// namespaces and anything else need an explicit grant in the CR.
pub const DEFAULT_GRANT: &[(&str, &str)] = &[
    ("", "ConfigMap"),
    ("", "Service"),
    ("", "ServiceAccount"),
    ("apps", "DaemonSet"),
    ("apps", "Deployment"),
    ("apps", "StatefulSet"),
    ("batch", "CronJob"),
    ("batch", "Job"),
    ("policy", "PodDisruptionBudget"),
    ("networking.k8s.io", "NetworkPolicy"),
    ("rbac.authorization.k8s.io", "Role"),
    ("rbac.authorization.k8s.io", "RoleBinding"),
    ("rbac.authorization.k8s.io", "ClusterRole"),
    ("rbac.authorization.k8s.io", "ClusterRoleBinding"),
    ("apiextensions.k8s.io", "CustomResourceDefinition"),
];

/// Verbs that let a holder give itself more than it has.
const ESCALATION_VERBS: &[&str] = &["escalate", "bind", "impersonate"];

/// A role with a label of this prefix is merged by the API server into the
/// role it names (`admin`, `edit`, `view`, ...): its rules would reach
/// whoever holds that role.
const AGGREGATION_LABEL_PREFIX: &str = "rbac.authorization.k8s.io/aggregate-to-";

/// Scope knowledge: the built-in cluster-scoped kinds plus the kinds
/// defined by contributed CRDs.
#[derive(Debug, Default, Clone)]
pub struct Scopes {
    /// (group, kind) → cluster-scoped?
    defined: HashMap<(String, String), bool>,
}

impl Scopes {
    pub fn new() -> Self {
        Self::default()
    }

    /// Learn the kind a CRD defines. Returns (group, kind).
    pub fn learn_crd(&mut self, crd: &Value) -> Option<(String, String)> {
        let group = crd.pointer("/spec/group")?.as_str()?.to_string();
        let kind = crd.pointer("/spec/names/kind")?.as_str()?.to_string();
        let cluster = crd.pointer("/spec/scope").and_then(Value::as_str) == Some("Cluster");
        self.defined.insert((group.clone(), kind.clone()), cluster);
        Some((group, kind))
    }

    pub fn is_cluster_scoped(&self, group: &str, kind: &str) -> bool {
        if CLUSTER_SCOPED.contains(&(group, kind)) {
            return true;
        }
        self.defined.get(&(group.to_string(), kind.to_string())).copied().unwrap_or(false)
    }
}

/// What a feature may contribute.
#[derive(Debug, Clone, Default)]
pub struct Grant {
    /// (group, kind) pairs.
    kinds: BTreeSet<(String, String)>,
}

impl Grant {
    /// The default grant plus `extra` entries ("Kind" or "group/Kind").
    pub fn with_extra(extra: &[String]) -> Self {
        let mut kinds: BTreeSet<(String, String)> =
            DEFAULT_GRANT.iter().map(|(g, k)| ((*g).to_string(), (*k).to_string())).collect();
        for entry in extra {
            let (group, kind) = entry.rsplit_once('/').unwrap_or(("", entry));
            kinds.insert((group.to_string(), kind.to_string()));
        }
        Self { kinds }
    }

    fn allows(&self, group: &str, kind: &str) -> bool {
        self.kinds.contains(&(group.to_string(), kind.to_string()))
    }
}

/// Why an object was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("object #{index}{}: {reason}", .object.as_ref().map(|o| format!(" ({o})")).unwrap_or_default())]
pub struct ObjectRejection {
    /// Position in the feature's `contribute` output.
    pub index: usize,
    pub object: Option<String>,
    pub reason: String,
    /// The cluster policy rule that refused it; None for the rules every
    /// module obeys whatever the policy (scope, grant, RBAC).
    pub rule: Option<&'static str>,
}

/// Everything one feature's objects are admitted against.
pub struct Admission<'a> {
    /// The agent's namespace: namespaced objects live there.
    pub namespace: &'a str,
    pub scopes: &'a Scopes,
    pub grant: &'a Grant,
    pub policy: &'a ClusterPolicy,
    /// What the feature's module source may render.
    pub power: Power,
    pub operator_image: &'a str,
    /// Kinds of the CRDs the feature contributes itself.
    pub own_kinds: BTreeSet<(String, String)>,
    /// Roles (kind, name) the feature contributes: it may bind them.
    pub own_roles: BTreeSet<(String, String)>,
    /// ServiceAccounts the feature contributes: the only binding subjects.
    pub own_service_accounts: BTreeSet<String>,
}

/// A parsed, named object before scope checks.
#[derive(Debug, Clone)]
pub struct Parsed {
    pub index: usize,
    pub group: String,
    pub kind: String,
    pub value: Value,
}

/// Parse one contributed document and check it names itself.
pub fn parse(index: usize, document: &str) -> Result<Parsed, ObjectRejection> {
    let reject = |object: Option<String>, reason: String| ObjectRejection { index, object, reason, rule: None };
    let value: Value = serde_json::from_str(document).map_err(|e| reject(None, format!("not JSON: {e}")))?;
    if !value.is_object() {
        return Err(reject(None, "not a JSON object".into()));
    }
    let text = |ptr: &str| value.pointer(ptr).and_then(Value::as_str).filter(|s| !s.is_empty());
    let api_version = text("/apiVersion").ok_or_else(|| reject(None, "missing apiVersion".into()))?;
    let kind = text("/kind").ok_or_else(|| reject(None, "missing kind".into()))?;
    let name = text("/metadata/name").ok_or_else(|| reject(Some(kind.to_string()), "missing metadata.name".into()))?;
    if name.len() > 253 || name.contains('/') || name.chars().any(char::is_whitespace) {
        return Err(reject(Some(format!("{kind} {name}")), "metadata.name is not a valid object name".into()));
    }
    Ok(Parsed { index, group: group_of(api_version).to_string(), kind: kind.to_string(), value })
}

/// Where the pod spec of a workload kind sits (`/spec/template/spec`).
pub fn pod_spec_pointer(group: &str, kind: &str) -> Option<&'static str> {
    match (group, kind) {
        ("", "Pod") => Some("/spec"),
        ("batch", "CronJob") => Some("/spec/jobTemplate/spec/template/spec"),
        ("apps", "DaemonSet" | "Deployment" | "StatefulSet" | "ReplicaSet")
        | ("batch", "Job")
        | ("", "ReplicationController")
        | ("", "PodTemplate") => Some(if kind == "PodTemplate" { "/template/spec" } else { "/spec/template/spec" }),
        _ => None,
    }
}

/// Check scope, namespace, grant and the cluster policy; set the namespace
/// of namespaced objects that omit it. Returns the object's key.
pub fn admit(parsed: &mut Parsed, admission: &Admission) -> Result<ObjectKey, ObjectRejection> {
    let index = parsed.index;
    let api_version = parsed.value["apiVersion"].as_str().unwrap_or_default().to_string();
    let name = parsed.value["metadata"]["name"].as_str().unwrap_or_default().to_string();
    let label = format!("{} {}", parsed.kind, name);
    let reject = |reason: String| ObjectRejection { index, object: Some(label.clone()), reason, rule: None };
    let violation = |v: Violation| ObjectRejection {
        index,
        object: Some(label.clone()),
        reason: v.to_string(),
        rule: Some(v.rule),
    };

    let kind_key = (parsed.group.clone(), parsed.kind.clone());
    if !admission.grant.allows(&parsed.group, &parsed.kind) && !admission.own_kinds.contains(&kind_key) {
        let gk =
            if parsed.group.is_empty() { parsed.kind.clone() } else { format!("{}/{}", parsed.group, parsed.kind) };
        return Err(reject(format!("kind {gk} is not granted to this feature")));
    }

    let cluster_scoped = admission.scopes.is_cluster_scoped(&parsed.group, &parsed.kind);
    if cluster_scoped && !admission.power.cluster_scoped {
        return Err(violation(Violation {
            field: "kind".into(),
            rule: "modules.allowed[].clusterScoped",
            message: format!(
                "{} is cluster-scoped: cluster-scoped objects are not granted to modules from this source",
                parsed.kind
            ),
        }));
    }
    let declared_ns = parsed.value.pointer("/metadata/namespace").and_then(Value::as_str).map(str::to_string);
    let namespace = admission.namespace;
    let object_ns = if cluster_scoped {
        if let Some(ns) = declared_ns.filter(|ns| !ns.is_empty()) {
            return Err(reject(format!("is cluster-scoped but names namespace `{ns}`")));
        }
        None
    } else {
        match declared_ns.as_deref() {
            None | Some("") => {
                parsed.value["metadata"]["namespace"] = Value::String(namespace.to_string());
            }
            Some(ns) if ns == namespace => {}
            Some(ns) => {
                return Err(reject(format!("is in namespace `{ns}`, outside the agent namespace `{namespace}`")));
            }
        }
        Some(namespace.to_string())
    };

    if let Some(pointer) = pod_spec_pointer(&parsed.group, &parsed.kind) {
        let field = pointer.trim_start_matches('/').replace('/', ".");
        let null = Value::Null;
        let pod_spec = parsed.value.pointer(pointer).unwrap_or(&null);
        admission
            .policy
            .check_pod_spec(pod_spec, &field, admission.power, admission.operator_image)
            .map_err(violation)?;
    }
    check_rbac(&parsed.group, &parsed.kind, &parsed.value, admission).map_err(|e| reject(e.to_string()))?;

    Ok(ObjectKey { api_version, kind: parsed.kind.clone(), namespace: object_ns, name })
}

/// RBAC objects: bindings only of the feature's own roles to its own
/// service accounts; roles without wildcards, escalation verbs or
/// aggregation into other roles.
/// Why an RBAC object of a feature is refused.
#[derive(Debug, thiserror::Error)]
enum RbacRejection {
    #[error("binds {kind} `{name}`, which this feature did not contribute (features may only bind their own roles)")]
    ForeignRole { kind: String, name: String },
    #[error("subjects[{index}] is {kind} `{name}`{}: features may only bind their own ServiceAccounts in `{agent_namespace}`",
        if namespace.is_empty() { String::new() } else { format!(" in `{namespace}`") })]
    ForeignSubject { index: usize, kind: String, name: String, namespace: String, agent_namespace: String },
    #[error("aggregated roles are not allowed")]
    Aggregated,
    #[error("label `{0}` would aggregate its rules into another role")]
    AggregationLabel(String),
    #[error("rules[{rule}].{field} contains a wildcard")]
    Wildcard { rule: usize, field: &'static str },
    #[error("rules[{rule}].verbs grants `{verb}`")]
    EscalatingVerb { rule: usize, verb: String },
}

fn check_rbac(group: &str, kind: &str, value: &Value, admission: &Admission) -> Result<(), RbacRejection> {
    if group != "rbac.authorization.k8s.io" {
        return Ok(());
    }
    match kind {
        "ClusterRoleBinding" | "RoleBinding" => {
            let role_kind = value.pointer("/roleRef/kind").and_then(Value::as_str).unwrap_or_default();
            let role_name = value.pointer("/roleRef/name").and_then(Value::as_str).unwrap_or_default();
            if !admission.own_roles.contains(&(role_kind.to_string(), role_name.to_string())) {
                return Err(RbacRejection::ForeignRole { kind: role_kind.to_string(), name: role_name.to_string() });
            }
            let subjects = value.get("subjects").and_then(Value::as_array).cloned().unwrap_or_default();
            for (i, subject) in subjects.iter().enumerate() {
                let text = |key: &str| subject.get(key).and_then(Value::as_str).unwrap_or_default();
                // A RoleBinding's ServiceAccount subject may omit its namespace
                // (then the binding's own, the agent's).
                let namespace_ok =
                    text("namespace") == admission.namespace || (kind == "RoleBinding" && text("namespace").is_empty());
                if text("kind") != "ServiceAccount"
                    || !namespace_ok
                    || !admission.own_service_accounts.contains(text("name"))
                {
                    return Err(RbacRejection::ForeignSubject {
                        index: i,
                        kind: text("kind").to_string(),
                        name: text("name").to_string(),
                        namespace: text("namespace").to_string(),
                        agent_namespace: admission.namespace.to_string(),
                    });
                }
            }
        }
        "ClusterRole" | "Role" => {
            if value.get("aggregationRule").is_some() {
                return Err(RbacRejection::Aggregated);
            }
            let labels = value.pointer("/metadata/labels").and_then(Value::as_object);
            if let Some(label) = labels.and_then(|l| l.keys().find(|k| k.starts_with(AGGREGATION_LABEL_PREFIX))) {
                return Err(RbacRejection::AggregationLabel(label.clone()));
            }
            let rules = value.get("rules").and_then(Value::as_array).cloned().unwrap_or_default();
            for (i, rule) in rules.iter().enumerate() {
                for field in ["verbs", "resources", "apiGroups", "nonResourceURLs"] {
                    let values = rule.get(field).and_then(Value::as_array).cloned().unwrap_or_default();
                    if values.iter().any(|v| v == "*") {
                        return Err(RbacRejection::Wildcard { rule: i, field });
                    }
                    if field == "verbs"
                        && let Some(v) = values.iter().filter_map(Value::as_str).find(|v| ESCALATION_VERBS.contains(v))
                    {
                        return Err(RbacRejection::EscalatingVerb { rule: i, verb: v.to_string() });
                    }
                }
            }
        }
        _ => {}
    }
    Ok(())
}

/// Roles (kind, name) a feature contributes, which it may bind.
pub fn own_roles(parsed: &[Parsed]) -> BTreeSet<(String, String)> {
    parsed
        .iter()
        .filter(|p| p.group == "rbac.authorization.k8s.io" && (p.kind == "Role" || p.kind == "ClusterRole"))
        .filter_map(|p| p.value["metadata"]["name"].as_str().map(|n| (p.kind.clone(), n.to_string())))
        .collect()
}

/// ServiceAccounts a feature contributes, which its bindings may name.
pub fn own_service_accounts(parsed: &[Parsed]) -> BTreeSet<String> {
    parsed
        .iter()
        .filter(|p| p.group.is_empty() && p.kind == "ServiceAccount")
        .filter_map(|p| p.value["metadata"]["name"].as_str().map(str::to_string))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const OPERATOR_IMAGE: &str = "ghcr.io/example/security-operator:0.1.0";

    fn admission<'a>(
        scopes: &'a Scopes,
        grant: &'a Grant,
        policy: &'a ClusterPolicy,
        power: Power,
        own_roles: &[(&str, &str)],
    ) -> Admission<'a> {
        Admission {
            namespace: "security-system",
            scopes,
            grant,
            policy,
            power,
            operator_image: OPERATOR_IMAGE,
            own_kinds: BTreeSet::new(),
            own_roles: own_roles.iter().map(|(k, n)| (k.to_string(), n.to_string())).collect(),
            own_service_accounts: ["mine".to_string()].into(),
        }
    }

    fn admit_with(doc: Value, power: Power, own_roles: &[(&str, &str)]) -> Result<ObjectKey, ObjectRejection> {
        let mut parsed = parse(0, &doc.to_string())?;
        let (scopes, grant, policy) = (Scopes::new(), Grant::with_extra(&[]), ClusterPolicy::default());
        admit(&mut parsed, &admission(&scopes, &grant, &policy, power, own_roles))
    }

    fn admit_one(doc: Value, own_roles: &[(&str, &str)]) -> Result<ObjectKey, ObjectRejection> {
        admit_with(doc, Power::BUILT_IN, own_roles)
    }

    #[test]
    fn namespaced_objects_default_to_the_agent_namespace() {
        let key = admit_one(json!({"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"x"}}), &[]).unwrap();
        assert_eq!(key.namespace.as_deref(), Some("security-system"));
    }

    #[test]
    fn other_namespace_is_refused() {
        let err = admit_one(
            json!({"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"x","namespace":"kube-system"}}),
            &[],
        )
        .unwrap_err();
        assert!(err.reason.contains("outside the agent namespace"), "{err}");
    }

    #[test]
    fn secrets_need_a_grant() {
        let err = admit_one(json!({"apiVersion":"v1","kind":"Secret","metadata":{"name":"x"}}), &[]).unwrap_err();
        assert!(err.reason.contains("kind Secret is not granted"), "{err}");
        let mut parsed =
            parse(0, &json!({"apiVersion":"v1","kind":"Secret","metadata":{"name":"x"}}).to_string()).unwrap();
        let (scopes, granted, policy) =
            (Scopes::new(), Grant::with_extra(&["Secret".to_string()]), ClusterPolicy::default());
        assert!(admit(&mut parsed, &admission(&scopes, &granted, &policy, Power::BUILT_IN, &[])).is_ok());
    }

    #[test]
    fn binding_cluster_admin_is_refused() {
        let binding = json!({"apiVersion":"rbac.authorization.k8s.io/v1","kind":"ClusterRoleBinding","metadata":{"name":"b"},
            "roleRef":{"kind":"ClusterRole","name":"cluster-admin"},"subjects":[]});
        let err = admit_one(binding.clone(), &[]).unwrap_err();
        assert!(err.reason.contains("cluster-admin"), "{err}");
        let own = json!({"apiVersion":"rbac.authorization.k8s.io/v1","kind":"ClusterRoleBinding","metadata":{"name":"b"},
            "roleRef":{"kind":"ClusterRole","name":"mine"},"subjects":[]});
        assert!(admit_one(own, &[("ClusterRole", "mine")]).is_ok());
    }

    #[test]
    fn bindings_name_only_the_features_own_service_accounts() {
        let binding = |kind: &str, subject: Value| {
            json!({"apiVersion":"rbac.authorization.k8s.io/v1","kind":kind,"metadata":{"name":"b"},
                "roleRef":{"kind":"ClusterRole","name":"mine"},"subjects":[subject]})
        };
        let own = [("ClusterRole", "mine")];
        assert!(
            admit_one(
                binding(
                    "ClusterRoleBinding",
                    json!({"kind":"ServiceAccount","name":"mine","namespace":"security-system"})
                ),
                &own
            )
            .is_ok()
        );
        assert!(
            admit_one(binding("RoleBinding", json!({"kind":"ServiceAccount","name":"mine"})), &own).is_ok(),
            "a RoleBinding's subject defaults to its namespace"
        );
        for subject in [
            json!({"kind":"ServiceAccount","name":"default","namespace":"kube-system"}),
            json!({"kind":"ServiceAccount","name":"mine","namespace":"kube-system"}),
            json!({"kind":"User","name":"alice"}),
            json!({"kind":"Group","name":"system:authenticated"}),
        ] {
            let err = admit_one(binding("ClusterRoleBinding", subject.clone()), &own).unwrap_err();
            assert!(
                err.reason.contains("subjects[0]") && err.reason.contains("their own ServiceAccounts"),
                "{subject}: {err}"
            );
        }
    }

    #[test]
    fn roles_that_aggregate_into_others_are_refused() {
        let role = json!({"apiVersion":"rbac.authorization.k8s.io/v1","kind":"ClusterRole",
            "metadata":{"name":"r","labels":{"rbac.authorization.k8s.io/aggregate-to-admin":"true"}},
            "rules":[{"apiGroups":[""],"resources":["secrets"],"verbs":["get"]}]});
        let err = admit_one(role, &[]).unwrap_err();
        assert!(err.reason.contains("aggregate-to-admin"), "{err}");
    }

    #[test]
    fn modules_without_a_grant_render_no_cluster_scoped_or_host_objects() {
        let none = Power { cluster_scoped: false, host_access: false };
        let role = json!({"apiVersion":"rbac.authorization.k8s.io/v1","kind":"ClusterRole","metadata":{"name":"r"},"rules":[]});
        let err = admit_with(role.clone(), none, &[]).unwrap_err();
        assert_eq!(err.rule, Some("modules.allowed[].clusterScoped"), "{err}");
        assert!(admit_with(role, Power { cluster_scoped: true, host_access: false }, &[]).is_ok());

        let daemonset = json!({"apiVersion":"apps/v1","kind":"DaemonSet","metadata":{"name":"d"},"spec":{"template":{"spec":{
            "volumes":[{"name":"root","hostPath":{"path":"/"}}],"containers":[{"name":"c","image":OPERATOR_IMAGE}]}}}});
        let err = admit_with(daemonset.clone(), none, &[]).unwrap_err();
        assert_eq!(err.rule, Some("modules.allowed[].hostAccess"));
        assert!(err.reason.contains("spec.template.spec.volumes[0].hostPath"), "{err}");
        assert!(admit_with(daemonset, Power::BUILT_IN, &[]).is_ok());
    }

    #[test]
    fn every_workload_image_passes_the_policy() {
        let cronjob = json!({"apiVersion":"batch/v1","kind":"CronJob","metadata":{"name":"j"},"spec":{"schedule":"@daily","jobTemplate":{"spec":{"template":{"spec":{
            "containers":[{"name":"c","image":"evil.example.com/miner:1"}]}}}}}});
        let err = admit_one(cronjob, &[]).unwrap_err();
        assert_eq!(err.rule, Some("images.allowed"));
        assert!(err.reason.contains("spec.jobTemplate.spec.template.spec.containers[0].image"), "{err}");
    }

    #[test]
    fn wildcard_and_escalation_rules_are_refused() {
        let role = |rules: Value| json!({"apiVersion":"rbac.authorization.k8s.io/v1","kind":"ClusterRole","metadata":{"name":"r"},"rules":rules});
        assert!(admit_one(role(json!([{"apiGroups":[""],"resources":["*"],"verbs":["get"]}])), &[]).is_err());
        assert!(admit_one(role(json!([{"apiGroups":["rbac.authorization.k8s.io"],"resources":["clusterroles"],"verbs":["escalate"]}])), &[]).is_err());
        assert!(admit_one(role(json!([{"apiGroups":[""],"resources":["pods"],"verbs":["get","list"]}])), &[]).is_ok());
    }

    #[test]
    fn unparseable_and_nameless_documents_are_refused() {
        assert!(parse(0, "nope").unwrap_err().reason.starts_with("not JSON"));
        assert_eq!(parse(1, r#"{"kind":"ConfigMap"}"#).unwrap_err().reason, "missing apiVersion");
        assert_eq!(
            parse(2, r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{}}"#).unwrap_err().reason,
            "missing metadata.name"
        );
    }
}
