//! One error type for the controller; its variant doubles as the metric
//! label of `secop_reconcile_errors_total` (controller-rs style).

use secop_api::{Reason, SpecError};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    /// A request about one object (or one kind) failed. `verb` and
    /// `resource` are the RBAC terms, so a 403 names the missing permission.
    #[error("cannot {verb} {resource} {object}: {source}")]
    Request { verb: &'static str, resource: String, object: String, source: kube::Error },
    #[error("invalid SecurityAgent: {0}")]
    Spec(#[from] SpecError),
    #[error("{kind} ({api_version}) is not served by the API server: {reason}")]
    UnknownKind { api_version: String, kind: String, reason: String },
    #[error("CustomResourceDefinition {name} not established after {seconds}s")]
    CrdNotEstablished { name: String, seconds: u64 },
    #[error("the SecurityAgent has no namespace")]
    MissingNamespace,
    /// Objects the agent renders already exist and are not its own: the
    /// operator never takes over (or later deletes) what it did not create.
    /// Nothing was applied.
    #[error("{}", .conflicts.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Conflict { conflicts: Vec<Conflict> },
    #[error("{0}")]
    Serialization(#[from] serde_json::Error),
    /// Issuing a certificate the operator keeps (the collectors' mutual TLS).
    #[error("issuing a certificate: {0}")]
    Certificate(String),
    /// The blocking task of the feature calls panicked or was cancelled
    /// (a host bug; the sandbox turns module faults into feature errors).
    #[error("feature calls task failed: {0}")]
    Task(String),
}

impl Error {
    /// Stable, low-cardinality label for metrics.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Kube(_) => "kube",
            Error::Request { .. } if self.is_forbidden() => "forbidden",
            Error::Request { .. } => "request",
            Error::Spec(_) => "spec",
            Error::UnknownKind { .. } => "unknown_kind",
            Error::CrdNotEstablished { .. } => "crd_not_established",
            Error::MissingNamespace => "missing_namespace",
            Error::Conflict { .. } => "conflict",
            Error::Serialization(_) => "serialization",
            Error::Certificate(_) => "certificate",
            Error::Task(_) => "task",
        }
    }
}

impl Error {
    pub fn task(e: tokio::task::JoinError) -> Self {
        Error::Task(e.to_string())
    }

    /// The API server refused for lack of permission (HTTP 403).
    pub fn is_forbidden(&self) -> bool {
        let source = match self {
            Error::Request { source, .. } | Error::Kube(source) => source,
            _ => return false,
        };
        matches!(source, kube::Error::Api(status) if status.code == 403)
    }

    /// The condition reason (and Event reason) for a failed sync.
    pub fn sync_reason(&self) -> Reason {
        match self {
            Error::Conflict { .. } => Reason::Conflict,
            _ if self.is_forbidden() => Reason::Forbidden,
            _ => Reason::SyncFailed,
        }
    }
}

/// One object in the way: what it is and who has it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conflict {
    /// `Kind namespace/name` (or `Kind name`, cluster-scoped).
    pub object: String,
    /// The SecurityAgent (`namespace/name`) that manages it, or `None` for
    /// an object the operator does not manage.
    pub owner: Option<String>,
    pub kind: ConflictKind,
}

/// Why the object is in the way.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConflictKind {
    /// It has the name of an object the agent renders.
    Exists,
    /// It runs the same node-level sensor (feature) on nodes the agent's
    /// DaemonSet would run on too: two privileged sensors of one kind per
    /// node double the load and the events.
    SameNodes { feature: String },
}

impl std::fmt::Display for Conflict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (&self.kind, &self.owner) {
            (ConflictKind::Exists, Some(agent)) => {
                write!(f, "{} already exists and belongs to SecurityAgent {agent}", self.object)
            }
            (ConflictKind::Exists, None) => {
                write!(f, "{} already exists and is not managed by the security operator", self.object)
            }
            (ConflictKind::SameNodes { feature }, owner) => write!(
                f,
                "feature `{feature}` already runs on these nodes: {} of SecurityAgent {} (node selectors not disjoint)",
                self.object,
                owner.as_deref().unwrap_or("?")
            ),
        }
    }
}

/// The RBAC name of a resource: `daemonsets.apps`, or `configmaps` for the
/// core group, as `kubectl auth can-i` takes it.
pub fn rbac_resource(resource: &kube::core::ApiResource) -> String {
    if resource.group.is_empty() { resource.plural.clone() } else { format!("{}.{}", resource.plural, resource.group) }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why `secop run` did not start, or stopped.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Runtime(#[from] secop_runtime::StartError),
    #[error(transparent)]
    BuiltIn(#[from] secop_engine::RegistryError),
    #[error("connecting to the API server: {0}")]
    Connect(kube::Error),
    #[error("reaching the API server: {0}")]
    Reach(kube::Error),
    #[error("lost leadership")]
    LostLeadership,
    #[error("metrics server stopped: {0}")]
    MetricsServer(String),
    #[error("admission webhook: {0}")]
    Webhook(crate::webhook::WebhookError),
    #[error("cluster policy: {0}")]
    SignerKey(#[from] secop_oci::signature::KeyError),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_conflict_names_each_object_and_its_owner() {
        let error = Error::Conflict {
            conflicts: vec![
                Conflict { object: "ConfigMap team-a/falco-config".into(), owner: None, kind: ConflictKind::Exists },
                Conflict {
                    object: "TracingPolicy container-escape-monitor".into(),
                    owner: Some("security-system/poc-security".into()),
                    kind: ConflictKind::Exists,
                },
                Conflict {
                    object: "DaemonSet security-system/falco".into(),
                    owner: Some("security-system/poc-security".into()),
                    kind: ConflictKind::SameNodes { feature: "falco".into() },
                },
            ],
        };
        assert_eq!(
            error.to_string(),
            "ConfigMap team-a/falco-config already exists and is not managed by the security operator; \
             TracingPolicy container-escape-monitor already exists and belongs to SecurityAgent security-system/poc-security; \
             feature `falco` already runs on these nodes: DaemonSet security-system/falco of SecurityAgent security-system/poc-security (node selectors not disjoint)"
        );
        assert_eq!(error.sync_reason(), "Conflict");
        assert_eq!(error.metric_label(), "conflict");
    }
}
