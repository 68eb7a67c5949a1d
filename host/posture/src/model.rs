//! The lean model: only what the audits and the inventory need, parsed
//! from Kubernetes JSON (a `kubectl get -o json` list, or a watched
//! object). No managedFields, no status beyond the node, no annotations:
//! at 100k pods every retained byte counts (seed 004's memory goal).

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value;

/// The kinds the engine inventories and audits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum Kind {
    Pod,
    Deployment,
    DaemonSet,
    StatefulSet,
    ReplicaSet,
    Job,
    CronJob,
    Service,
    Namespace,
    Node,
    ServiceAccount,
    Role,
    ClusterRole,
    RoleBinding,
    ClusterRoleBinding,
}

impl Kind {
    pub const ALL: [Kind; 15] = [
        Kind::Pod,
        Kind::Deployment,
        Kind::DaemonSet,
        Kind::StatefulSet,
        Kind::ReplicaSet,
        Kind::Job,
        Kind::CronJob,
        Kind::Service,
        Kind::Namespace,
        Kind::Node,
        Kind::ServiceAccount,
        Kind::Role,
        Kind::ClusterRole,
        Kind::RoleBinding,
        Kind::ClusterRoleBinding,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Kind::Pod => "Pod",
            Kind::Deployment => "Deployment",
            Kind::DaemonSet => "DaemonSet",
            Kind::StatefulSet => "StatefulSet",
            Kind::ReplicaSet => "ReplicaSet",
            Kind::Job => "Job",
            Kind::CronJob => "CronJob",
            Kind::Service => "Service",
            Kind::Namespace => "Namespace",
            Kind::Node => "Node",
            Kind::ServiceAccount => "ServiceAccount",
            Kind::Role => "Role",
            Kind::ClusterRole => "ClusterRole",
            Kind::RoleBinding => "RoleBinding",
            Kind::ClusterRoleBinding => "ClusterRoleBinding",
        }
    }

    pub fn from_name(name: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.name() == name)
    }

    /// Workloads whose pod template is audited like a pod.
    pub fn has_pod_template(self) -> bool {
        matches!(
            self,
            Kind::Deployment | Kind::DaemonSet | Kind::StatefulSet | Kind::ReplicaSet | Kind::Job | Kind::CronJob
        )
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct Owner {
    /// `group/version` of the owner (empty for a role reference); matched
    /// by exemptions, not stored in documents.
    #[serde(skip)]
    pub api_version: String,
    pub kind: String,
    pub name: String,
    /// The managing controller (`controller: true`), not just a reference
    /// anyone may set.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub controller: bool,
}

/// One resource, as retained.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Asset {
    pub kind: Kind,
    pub uid: String,
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub owner: Option<Owner>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub images: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pod: Option<PodSpec>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rbac: Option<Rbac>,
}

/// The security-relevant part of a pod spec (a pod's, or a template's).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct PodSpec {
    pub host_network: bool,
    pub host_pid: bool,
    pub host_ipc: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub automount_token: Option<bool>,
    pub service_account: String,
    pub security: SecurityContext,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub sysctls: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub volumes: Vec<Volume>,
    pub containers: Vec<Container>,
    /// spec.hostUsers == false: a user namespace relaxes some checks.
    pub user_namespace: bool,
    /// spec.os.name == windows: the Linux-only restricted checks do not apply.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub windows: bool,
    /// spec.securityContext.windowsOptions.hostProcess
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub host_process: bool,
}

/// Fields shared by the pod- and container-level securityContext.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct SecurityContext {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub run_as_user: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub run_as_non_root: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seccomp: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub apparmor: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub selinux: Option<SeLinux>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct SeLinux {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub type_: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Volume {
    pub name: String,
    /// The volume source's key: hostPath, configMap, emptyDir, ...
    pub source: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host_path: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Container {
    pub name: String,
    pub image: String,
    /// init or ephemeral container
    pub init: bool,
    /// added with `kubectl debug` (audited even in a controller's pod)
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub ephemeral: bool,
    /// windowsOptions.hostProcess
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub host_process: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub privileged: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allow_privilege_escalation: Option<bool>,
    pub security: SecurityContext,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub caps_add: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub caps_drop: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub proc_mount: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub host_ports: Vec<i64>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub mounts: Vec<String>,
}

/// Roles: their rules; bindings: what they bind to whom.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Rbac {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<Rule>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role_ref: Option<Owner>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub subjects: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Rule {
    pub api_groups: Vec<String>,
    pub resources: Vec<String>,
    pub verbs: Vec<String>,
}

fn str_of(v: &Value) -> Option<String> {
    v.as_str().map(str::to_string)
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array().map(|a| a.iter().filter_map(str_of).collect()).unwrap_or_default()
}

fn security_context(sc: &Value, annotations_apparmor: Option<String>) -> SecurityContext {
    let selinux = &sc["seLinuxOptions"];
    SecurityContext {
        run_as_user: sc["runAsUser"].as_i64(),
        run_as_non_root: sc["runAsNonRoot"].as_bool(),
        seccomp: str_of(&sc["seccompProfile"]["type"]),
        apparmor: str_of(&sc["appArmorProfile"]["type"]).or(annotations_apparmor),
        selinux: selinux.is_object().then(|| SeLinux {
            type_: str_of(&selinux["type"]),
            user: str_of(&selinux["user"]),
            role: str_of(&selinux["role"]),
        }),
    }
}

fn container(c: &Value, init: bool, ephemeral: bool, apparmor: Option<String>) -> Container {
    let sc = &c["securityContext"];
    Container {
        name: str_of(&c["name"]).unwrap_or_default(),
        image: str_of(&c["image"]).unwrap_or_default(),
        init,
        ephemeral,
        host_process: sc["windowsOptions"]["hostProcess"].as_bool() == Some(true),
        privileged: sc["privileged"].as_bool(),
        allow_privilege_escalation: sc["allowPrivilegeEscalation"].as_bool(),
        security: security_context(sc, apparmor),
        caps_add: strings(&sc["capabilities"]["add"]),
        caps_drop: strings(&sc["capabilities"]["drop"]),
        proc_mount: str_of(&sc["procMount"]),
        host_ports: c["ports"]
            .as_array()
            .map(|p| p.iter().filter_map(|p| p["hostPort"].as_i64()).filter(|p| *p != 0).collect())
            .unwrap_or_default(),
        mounts: c["volumeMounts"]
            .as_array()
            .map(|m| m.iter().filter_map(|m| str_of(&m["name"])).collect())
            .unwrap_or_default(),
    }
}

/// The lean form of a pod spec; `annotations` for the legacy AppArmor keys.
pub fn pod_spec(spec: &Value, annotations: &Value) -> PodSpec {
    let apparmor = |name: &str| str_of(&annotations[format!("container.apparmor.security.beta.kubernetes.io/{name}")]);
    let mut containers = vec![];
    for (key, init, ephemeral) in
        [("initContainers", true, false), ("containers", false, false), ("ephemeralContainers", true, true)]
    {
        for c in spec[key].as_array().into_iter().flatten() {
            let name = c["name"].as_str().unwrap_or_default();
            containers.push(container(c, init, ephemeral, apparmor(name)));
        }
    }
    let volumes = spec["volumes"]
        .as_array()
        .map(|vs| {
            vs.iter()
                .map(|v| {
                    let source =
                        v.as_object().and_then(|o| o.keys().find(|k| *k != "name").cloned()).unwrap_or_default();
                    Volume {
                        name: str_of(&v["name"]).unwrap_or_default(),
                        host_path: str_of(&v["hostPath"]["path"]),
                        source,
                    }
                })
                .collect()
        })
        .unwrap_or_default();
    PodSpec {
        host_network: spec["hostNetwork"].as_bool().unwrap_or(false),
        host_pid: spec["hostPID"].as_bool().unwrap_or(false),
        host_ipc: spec["hostIPC"].as_bool().unwrap_or(false),
        automount_token: spec["automountServiceAccountToken"].as_bool(),
        service_account: str_of(&spec["serviceAccountName"]).unwrap_or_else(|| "default".into()),
        security: security_context(&spec["securityContext"], None),
        sysctls: spec["securityContext"]["sysctls"]
            .as_array()
            .map(|s| s.iter().filter_map(|s| str_of(&s["name"])).collect())
            .unwrap_or_default(),
        volumes,
        containers,
        user_namespace: spec["hostUsers"].as_bool() == Some(false),
        windows: spec["os"]["name"].as_str() == Some("windows"),
        host_process: spec["securityContext"]["windowsOptions"]["hostProcess"].as_bool() == Some(true),
    }
}

fn rule(r: &Value) -> Rule {
    Rule { api_groups: strings(&r["apiGroups"]), resources: strings(&r["resources"]), verbs: strings(&r["verbs"]) }
}

/// Parse one Kubernetes object; None for kinds the engine does not keep
/// (and for objects without a uid).
pub fn parse(object: &Value) -> Option<Asset> {
    let kind = Kind::from_name(object["kind"].as_str()?)?;
    let meta = &object["metadata"];
    let uid = str_of(&meta["uid"])?;
    let labels = meta["labels"]
        .as_object()
        .map(|l| l.iter().filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string()))).collect())
        .unwrap_or_default();
    let owner = meta["ownerReferences"].as_array().and_then(|refs| {
        let r = refs.iter().find(|r| r["controller"] == true).or(refs.first())?;
        Some(Owner {
            api_version: str_of(&r["apiVersion"]).unwrap_or_default(),
            kind: str_of(&r["kind"])?,
            name: str_of(&r["name"])?,
            controller: r["controller"] == true,
        })
    });
    let spec = &object["spec"];
    let template = match kind {
        Kind::Pod => Some((spec, &meta["annotations"])),
        Kind::CronJob => Some((
            &spec["jobTemplate"]["spec"]["template"]["spec"],
            &spec["jobTemplate"]["spec"]["template"]["metadata"]["annotations"],
        )),
        k if k.has_pod_template() => Some((&spec["template"]["spec"], &spec["template"]["metadata"]["annotations"])),
        _ => None,
    };
    let pod = template.map(|(spec, annotations)| pod_spec(spec, annotations));
    let rbac = match kind {
        Kind::Role | Kind::ClusterRole => Some(Rbac {
            rules: object["rules"].as_array().map(|rs| rs.iter().map(rule).collect()).unwrap_or_default(),
            ..Default::default()
        }),
        Kind::RoleBinding | Kind::ClusterRoleBinding => Some(Rbac {
            rules: vec![],
            role_ref: Some(Owner {
                api_version: String::new(),
                kind: str_of(&object["roleRef"]["kind"]).unwrap_or_default(),
                name: str_of(&object["roleRef"]["name"]).unwrap_or_default(),
                controller: false,
            }),
            subjects: object["subjects"]
                .as_array()
                .map(|s| {
                    s.iter()
                        .map(|s| match s["namespace"].as_str() {
                            Some(ns) => format!(
                                "{}:{ns}/{}",
                                s["kind"].as_str().unwrap_or(""),
                                s["name"].as_str().unwrap_or("")
                            ),
                            None => {
                                format!("{}:{}", s["kind"].as_str().unwrap_or(""), s["name"].as_str().unwrap_or(""))
                            }
                        })
                        .collect()
                })
                .unwrap_or_default(),
        }),
        _ => None,
    };
    let mut images: Vec<String> =
        pod.as_ref().map(|p| p.containers.iter().map(|c| c.image.clone()).collect()).unwrap_or_default();
    images.sort();
    images.dedup();
    Some(Asset {
        kind,
        uid,
        name: str_of(&meta["name"]).unwrap_or_default(),
        namespace: str_of(&meta["namespace"]),
        labels,
        owner,
        node: if kind == Kind::Pod { str_of(&spec["nodeName"]) } else { None },
        images,
        pod,
        rbac,
    })
}
