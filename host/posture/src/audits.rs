//! The audits, as data: each check has an id, a title, a severity (1–5),
//! its Pod Security Standards level (if it is one), a MITRE ATT&CK
//! technique and a remediation; `eval` returns the offending fragments of
//! one asset (one per container for container-level checks). Sources:
//! k8s.io/pod-security-admission policy/check_*.go and
//! ../shared/reference/posture.md.

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::model::{Asset, Container, Kind, PodSpec};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Baseline,
    Restricted,
}

/// One violation: where, and the spec fragment that shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Violation {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
    pub evidence: Value,
}

pub struct Check {
    pub id: &'static str,
    pub title: &'static str,
    pub severity: u8,
    pub pss: Option<Level>,
    pub mitre: &'static str,
    pub remediation: &'static str,
    /// Run by default (at the baseline level); else only at `restricted`
    /// or when named in the config.
    pub default: bool,
    pub eval: fn(&Asset) -> Vec<Violation>,
}

/// Capabilities the baseline level allows to be added.
const BASELINE_CAPS: &[&str] = &[
    "AUDIT_WRITE",
    "CHOWN",
    "DAC_OVERRIDE",
    "FOWNER",
    "FSETID",
    "KILL",
    "MKNOD",
    "NET_BIND_SERVICE",
    "SETFCAP",
    "SETGID",
    "SETPCAP",
    "SETUID",
    "SYS_CHROOT",
];
/// The safe sysctls of the baseline level (1.34).
const SAFE_SYSCTLS: &[&str] = &[
    "kernel.shm_rmid_forced",
    "net.ipv4.ip_local_port_range",
    "net.ipv4.ip_unprivileged_port_start",
    "net.ipv4.tcp_syncookies",
    "net.ipv4.ping_group_range",
    "net.ipv4.ip_local_reserved_ports",
    "net.ipv4.tcp_keepalive_time",
    "net.ipv4.tcp_fin_timeout",
    "net.ipv4.tcp_keepalive_intvl",
    "net.ipv4.tcp_keepalive_probes",
];
/// Volume sources the restricted level allows.
const RESTRICTED_VOLUMES: &[&str] =
    &["configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim", "projected", "secret"];
/// Container runtime sockets: mounting one is control of every container on the node.
const RUNTIME_SOCKETS: &[&str] = &[
    "/var/run/docker.sock",
    "/run/docker.sock",
    "/var/run/containerd/containerd.sock",
    "/run/containerd/containerd.sock",
    "/var/run/crio/crio.sock",
    "/run/crio/crio.sock",
    "/var/run/cri-dockerd.sock",
];

fn pod(asset: &Asset) -> Option<&PodSpec> {
    asset.pod.as_ref()
}

/// One violation per container for which `bad` returns evidence.
fn per_container(asset: &Asset, bad: impl Fn(&PodSpec, &Container) -> Option<Value>) -> Vec<Violation> {
    let Some(spec) = pod(asset) else { return vec![] };
    spec.containers
        .iter()
        .filter_map(|c| bad(spec, c).map(|evidence| Violation { container: Some(c.name.clone()), evidence }))
        .collect()
}

fn once(evidence: Option<Value>) -> Vec<Violation> {
    evidence.map(|evidence| Violation { container: None, evidence }).into_iter().collect()
}

fn host_process(a: &Asset) -> Vec<Violation> {
    let mut found = once(
        pod(a)
            .filter(|p| p.host_process)
            .map(|_| json!({ "securityContext": { "windowsOptions": { "hostProcess": true } } })),
    );
    found.extend(per_container(a, |_, c| {
        c.host_process.then(|| json!({ "securityContext": { "windowsOptions": { "hostProcess": true } } }))
    }));
    found
}

fn host_namespaces(a: &Asset) -> Vec<Violation> {
    once(
        pod(a)
            .filter(|p| p.host_network || p.host_pid || p.host_ipc)
            .map(|p| json!({ "hostNetwork": p.host_network, "hostPID": p.host_pid, "hostIPC": p.host_ipc })),
    )
}

fn privileged(a: &Asset) -> Vec<Violation> {
    per_container(a, |_, c| (c.privileged == Some(true)).then(|| json!({ "securityContext": { "privileged": true } })))
}

fn added_capabilities(a: &Asset) -> Vec<Violation> {
    per_container(a, |_, c| {
        let extra: Vec<&String> =
            c.caps_add.iter().filter(|cap| !BASELINE_CAPS.contains(&cap.trim_start_matches("CAP_"))).collect();
        (!extra.is_empty()).then(|| json!({ "securityContext": { "capabilities": { "add": extra } } }))
    })
}

fn host_path(a: &Asset) -> Vec<Violation> {
    let Some(p) = pod(a) else { return vec![] };
    let paths: Vec<Value> = p
        .volumes
        .iter()
        .filter_map(|v| v.host_path.as_ref().map(|path| json!({ "name": v.name, "hostPath": { "path": path } })))
        .collect();
    once((!paths.is_empty()).then(|| json!({ "volumes": paths })))
}

fn host_ports(a: &Asset) -> Vec<Violation> {
    per_container(a, |_, c| {
        (!c.host_ports.is_empty())
            .then(|| json!({ "ports": c.host_ports.iter().map(|p| json!({ "hostPort": p })).collect::<Vec<_>>() }))
    })
}

fn apparmor_unconfined(a: &Asset) -> Vec<Violation> {
    let unconfined = |p: &Option<String>| p.as_deref().is_some_and(|p| p == "Unconfined" || p == "unconfined");
    let mut found = once(
        pod(a)
            .filter(|p| unconfined(&p.security.apparmor))
            .map(|_| json!({ "securityContext": { "appArmorProfile": { "type": "Unconfined" } } })),
    );
    found.extend(per_container(a, |_, c| {
        unconfined(&c.security.apparmor)
            .then(|| json!({ "securityContext": { "appArmorProfile": { "type": "Unconfined" } } }))
    }));
    found
}

fn selinux_custom(a: &Asset) -> Vec<Violation> {
    let custom = |s: &crate::model::SecurityContext| {
        s.selinux.as_ref().filter(|se| {
            let allowed_type = se.type_.as_deref().is_none_or(|t| t.is_empty() || t == "container_t" || t == "container_init_t" || t == "container_kvm_t" || t == "container_engine_t");
            !allowed_type || se.user.as_deref().is_some_and(|u| !u.is_empty()) || se.role.as_deref().is_some_and(|r| !r.is_empty())
        })
        .map(|se| json!({ "securityContext": { "seLinuxOptions": { "type": se.type_, "user": se.user, "role": se.role } } }))
    };
    let mut found = once(pod(a).and_then(|p| custom(&p.security)));
    found.extend(per_container(a, |_, c| custom(&c.security)));
    found
}

fn proc_mount(a: &Asset) -> Vec<Violation> {
    per_container(a, |p, c| {
        c.proc_mount
            .as_deref()
            .filter(|m| *m != "Default" && !p.user_namespace)
            .map(|m| json!({ "securityContext": { "procMount": m } }))
    })
}

fn seccomp_unconfined(a: &Asset) -> Vec<Violation> {
    let unconfined = |s: &Option<String>| s.as_deref() == Some("Unconfined");
    let mut found = once(
        pod(a)
            .filter(|p| unconfined(&p.security.seccomp))
            .map(|_| json!({ "securityContext": { "seccompProfile": { "type": "Unconfined" } } })),
    );
    found.extend(per_container(a, |_, c| {
        unconfined(&c.security.seccomp)
            .then(|| json!({ "securityContext": { "seccompProfile": { "type": "Unconfined" } } }))
    }));
    found
}

fn unsafe_sysctls(a: &Asset) -> Vec<Violation> {
    let Some(p) = pod(a) else { return vec![] };
    let bad: Vec<&String> = p.sysctls.iter().filter(|s| !SAFE_SYSCTLS.contains(&s.as_str())).collect();
    once((!bad.is_empty()).then(
        || json!({ "securityContext": { "sysctls": bad.iter().map(|n| json!({ "name": n })).collect::<Vec<_>>() } }),
    ))
}

fn restricted_volumes(a: &Asset) -> Vec<Violation> {
    let Some(p) = pod(a) else { return vec![] };
    let bad: Vec<Value> = p
        .volumes
        .iter()
        .filter(|v| !RESTRICTED_VOLUMES.contains(&v.source.as_str()))
        .map(|v| json!({ "name": v.name, "type": v.source }))
        .collect();
    once((!bad.is_empty()).then(|| json!({ "volumes": bad })))
}

fn privilege_escalation(a: &Asset) -> Vec<Violation> {
    per_container(a, |p, c| {
        (!p.windows && c.allow_privilege_escalation != Some(false))
            .then(|| json!({ "securityContext": { "allowPrivilegeEscalation": c.allow_privilege_escalation } }))
    })
}

/// As the PSS admission check: an explicit `false` at the pod level is a
/// violation even when every container overrides it.
fn run_as_non_root(a: &Asset) -> Vec<Violation> {
    let mut found = once(
        pod(a)
            .filter(|p| p.security.run_as_non_root == Some(false) && !p.user_namespace)
            .map(|_| json!({ "securityContext": { "runAsNonRoot": false } })),
    );
    found.extend(per_container(a, |p, c| {
        let effective = c.security.run_as_non_root.or(p.security.run_as_non_root);
        (effective != Some(true) && !p.user_namespace)
            .then(|| json!({ "securityContext": { "runAsNonRoot": effective } }))
    }));
    found
}

/// Pod- and container-level `runAsUser: 0` are each a violation.
fn root_user(a: &Asset) -> Vec<Violation> {
    let mut found = once(
        pod(a)
            .filter(|p| p.security.run_as_user == Some(0) && !p.user_namespace)
            .map(|_| json!({ "securityContext": { "runAsUser": 0 } })),
    );
    found.extend(per_container(a, |p, c| {
        (c.security.run_as_user == Some(0) && !p.user_namespace)
            .then(|| json!({ "securityContext": { "runAsUser": 0 } }))
    }));
    found
}

fn seccomp_required(a: &Asset) -> Vec<Violation> {
    per_container(a, |p, c| {
        let effective = c.security.seccomp.as_deref().or(p.security.seccomp.as_deref());
        (!p.windows && !matches!(effective, Some("RuntimeDefault" | "Localhost")))
            .then(|| json!({ "securityContext": { "seccompProfile": { "type": effective } } }))
    })
}

fn capabilities_restricted(a: &Asset) -> Vec<Violation> {
    per_container(a, |p, c| {
        if p.windows {
            return None;
        }
        let drops_all = c.caps_drop.iter().any(|d| d == "ALL");
        let extra: Vec<&String> =
            c.caps_add.iter().filter(|cap| cap.trim_start_matches("CAP_") != "NET_BIND_SERVICE").collect();
        (!drops_all || !extra.is_empty())
            .then(|| json!({ "securityContext": { "capabilities": { "drop": c.caps_drop, "add": c.caps_add } } }))
    })
}

fn default_namespace(a: &Asset) -> Vec<Violation> {
    // The API server's own `default/kubernetes` Service is not a workload.
    let workload =
        a.kind == Kind::Pod || a.kind.has_pod_template() || (a.kind == Kind::Service && a.name != "kubernetes");
    once(
        (workload && a.namespace.as_deref() == Some("default"))
            .then(|| json!({ "metadata": { "namespace": "default" } })),
    )
}

fn token_automount(a: &Asset) -> Vec<Violation> {
    once(
        pod(a).filter(|p| p.automount_token != Some(false)).map(
            |p| json!({ "automountServiceAccountToken": p.automount_token, "serviceAccountName": p.service_account }),
        ),
    )
}

fn runtime_socket(a: &Asset) -> Vec<Violation> {
    let Some(p) = pod(a) else { return vec![] };
    let bad: Vec<Value> = p
        .volumes
        .iter()
        .filter(|v| {
            v.host_path.as_deref().is_some_and(|path| {
                RUNTIME_SOCKETS.contains(&path.trim_end_matches('/'))
                    || path.ends_with(".sock") && path.contains("containerd")
            })
        })
        .map(|v| json!({ "name": v.name, "hostPath": { "path": v.host_path } }))
        .collect();
    once((!bad.is_empty()).then(|| json!({ "volumes": bad })))
}

fn bindings_to(a: &Asset, role: impl Fn(&str, &str) -> bool) -> Option<Value> {
    let rbac = a.rbac.as_ref()?;
    let role_ref = rbac.role_ref.as_ref()?;
    role(&role_ref.kind, &role_ref.name)
        .then(|| json!({ "roleRef": { "kind": role_ref.kind, "name": role_ref.name }, "subjects": rbac.subjects }))
}

/// The API server's default roles and bindings (it labels them itself);
/// names are not trusted: anyone may call a binding `system:x`.
fn bootstrap(a: &Asset) -> bool {
    a.namespace.is_none() && a.labels.get("kubernetes.io/bootstrapping").is_some_and(|v| v == "rbac-defaults")
}

fn cluster_admin_binding(a: &Asset) -> Vec<Violation> {
    if bootstrap(a) {
        return vec![];
    }
    once(bindings_to(a, |kind, name| kind == "ClusterRole" && name == "cluster-admin"))
}

fn wildcard_role(a: &Asset) -> Vec<Violation> {
    if bootstrap(a) {
        return vec![];
    }
    let Some(rbac) = &a.rbac else { return vec![] };
    let wild: Vec<Value> = rbac
        .rules
        .iter()
        .filter(|r| {
            r.verbs.iter().any(|v| v == "*")
                || r.resources.iter().any(|x| x == "*")
                || r.api_groups.iter().any(|g| g == "*")
        })
        .map(|r| json!({ "apiGroups": r.api_groups, "resources": r.resources, "verbs": r.verbs }))
        .collect();
    once((!wild.is_empty()).then(|| json!({ "rules": wild })))
}

fn exec_permission(a: &Asset) -> Vec<Violation> {
    if bootstrap(a) {
        return vec![];
    }
    let Some(rbac) = &a.rbac else { return vec![] };
    let exec: Vec<Value> = rbac
        .rules
        .iter()
        .filter(|r| {
            r.resources.iter().any(|x| x == "pods/exec" || x == "pods/attach")
                && r.verbs.iter().any(|v| v == "create" || v == "*" || v == "get")
        })
        .map(|r| json!({ "apiGroups": r.api_groups, "resources": r.resources, "verbs": r.verbs }))
        .collect();
    once((!exec.is_empty()).then(|| json!({ "rules": exec })))
}

/// Every check, in report order.
pub static CHECKS: &[Check] = &[
    Check {
        id: "PSS-B-00",
        title: "Windows HostProcess container",
        severity: 5,
        pss: Some(Level::Baseline),
        mitre: "T1611",
        remediation: "Remove windowsOptions.hostProcess.",
        default: true,
        eval: host_process,
    },
    Check {
        id: "PSS-B-01",
        title: "Host namespaces shared (hostNetwork, hostPID or hostIPC)",
        severity: 4,
        pss: Some(Level::Baseline),
        mitre: "T1611",
        remediation: "Remove hostNetwork, hostPID and hostIPC from the pod spec.",
        default: true,
        eval: host_namespaces,
    },
    Check {
        id: "PSS-B-02",
        title: "Privileged container",
        severity: 5,
        pss: Some(Level::Baseline),
        mitre: "T1611",
        remediation: "Set securityContext.privileged to false; grant only the capabilities needed.",
        default: true,
        eval: privileged,
    },
    Check {
        id: "PSS-B-03",
        title: "Capabilities added beyond the baseline set",
        severity: 4,
        pss: Some(Level::Baseline),
        mitre: "T1611",
        remediation: "Remove capabilities such as SYS_ADMIN or NET_ADMIN from capabilities.add.",
        default: true,
        eval: added_capabilities,
    },
    Check {
        id: "PSS-B-04",
        title: "hostPath volume",
        severity: 4,
        pss: Some(Level::Baseline),
        mitre: "T1611",
        remediation: "Use configMap, secret, emptyDir or a PersistentVolumeClaim instead of hostPath.",
        default: true,
        eval: host_path,
    },
    Check {
        id: "PSS-B-05",
        title: "Host port",
        severity: 3,
        pss: Some(Level::Baseline),
        mitre: "T1611",
        remediation: "Remove hostPort; expose the container through a Service.",
        default: true,
        eval: host_ports,
    },
    Check {
        id: "PSS-B-06",
        title: "AppArmor profile Unconfined",
        severity: 3,
        pss: Some(Level::Baseline),
        mitre: "T1611",
        remediation: "Use the RuntimeDefault or a Localhost AppArmor profile.",
        default: true,
        eval: apparmor_unconfined,
    },
    Check {
        id: "PSS-B-07",
        title: "Custom SELinux type, user or role",
        severity: 3,
        pss: Some(Level::Baseline),
        mitre: "T1611",
        remediation: "Remove seLinuxOptions user and role; use a container_* type.",
        default: true,
        eval: selinux_custom,
    },
    Check {
        id: "PSS-B-08",
        title: "procMount other than Default",
        severity: 3,
        pss: Some(Level::Baseline),
        mitre: "T1611",
        remediation: "Remove securityContext.procMount (or set it to Default).",
        default: true,
        eval: proc_mount,
    },
    Check {
        id: "PSS-B-09",
        title: "Seccomp profile Unconfined",
        severity: 3,
        pss: Some(Level::Baseline),
        mitre: "T1611",
        remediation: "Set seccompProfile.type to RuntimeDefault.",
        default: true,
        eval: seccomp_unconfined,
    },
    Check {
        id: "PSS-B-10",
        title: "Unsafe sysctls",
        severity: 3,
        pss: Some(Level::Baseline),
        mitre: "T1611",
        remediation: "Set only the namespaced safe sysctls.",
        default: true,
        eval: unsafe_sysctls,
    },
    Check {
        id: "PSS-R-01",
        title: "Volume type outside the restricted set",
        severity: 2,
        pss: Some(Level::Restricted),
        mitre: "T1611",
        remediation: "Use configMap, csi, downwardAPI, emptyDir, ephemeral, persistentVolumeClaim, projected or secret volumes.",
        default: false,
        eval: restricted_volumes,
    },
    Check {
        id: "PSS-R-02",
        title: "Privilege escalation allowed",
        severity: 3,
        pss: Some(Level::Restricted),
        mitre: "T1548",
        remediation: "Set securityContext.allowPrivilegeEscalation to false.",
        default: false,
        eval: privilege_escalation,
    },
    Check {
        id: "PSS-R-03",
        title: "runAsNonRoot not set to true",
        severity: 2,
        pss: Some(Level::Restricted),
        mitre: "T1611",
        remediation: "Set securityContext.runAsNonRoot to true and run as a non-zero UID.",
        default: false,
        eval: run_as_non_root,
    },
    Check {
        id: "PSS-R-04",
        title: "Container runs as root (runAsUser: 0)",
        severity: 4,
        pss: Some(Level::Restricted),
        mitre: "T1611",
        remediation: "Set runAsUser to a non-zero UID and runAsNonRoot to true.",
        default: true,
        eval: root_user,
    },
    Check {
        id: "PSS-R-05",
        title: "Seccomp profile not RuntimeDefault or Localhost",
        severity: 2,
        pss: Some(Level::Restricted),
        mitre: "T1611",
        remediation: "Set seccompProfile.type to RuntimeDefault at the pod level.",
        default: false,
        eval: seccomp_required,
    },
    Check {
        id: "PSS-R-06",
        title: "Capabilities not dropped (drop ALL, add at most NET_BIND_SERVICE)",
        severity: 2,
        pss: Some(Level::Restricted),
        mitre: "T1611",
        remediation: "Set capabilities.drop: [ALL] and add back only NET_BIND_SERVICE if needed.",
        default: false,
        eval: capabilities_restricted,
    },
    Check {
        id: "K8S-01",
        title: "Workload in the default namespace",
        severity: 2,
        pss: None,
        mitre: "T1610",
        remediation: "Deploy workloads into a dedicated namespace with its own policies.",
        default: true,
        eval: default_namespace,
    },
    Check {
        id: "K8S-02",
        title: "Service-account token automounted",
        severity: 2,
        pss: None,
        mitre: "T1528",
        remediation: "Set automountServiceAccountToken: false unless the pod calls the API.",
        default: false,
        eval: token_automount,
    },
    Check {
        id: "K8S-03",
        title: "Container runtime socket mounted",
        severity: 5,
        pss: None,
        mitre: "T1611",
        remediation: "Never mount the container runtime socket into a workload.",
        default: true,
        eval: runtime_socket,
    },
    Check {
        id: "RBAC-01",
        title: "Binding to cluster-admin",
        severity: 5,
        pss: None,
        mitre: "T1098",
        remediation: "Bind a role with only the verbs and resources needed.",
        default: true,
        eval: cluster_admin_binding,
    },
    Check {
        id: "RBAC-02",
        title: "Role with wildcard verbs, resources or API groups",
        severity: 4,
        pss: None,
        mitre: "T1098",
        remediation: "List verbs, resources and API groups explicitly.",
        default: true,
        eval: wildcard_role,
    },
    Check {
        id: "RBAC-03",
        title: "Role grants pods/exec or pods/attach",
        severity: 3,
        pss: None,
        mitre: "T1609",
        remediation: "Grant exec only to break-glass roles.",
        default: true,
        eval: exec_permission,
    },
];

impl std::fmt::Debug for Check {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.id)
    }
}

/// Checks are identified by id.
impl PartialEq for Check {
    fn eq(&self, other: &Self) -> bool {
        self.id == other.id
    }
}

pub fn check(id: &str) -> Option<&'static Check> {
    CHECKS.iter().find(|c| c.id == id)
}
