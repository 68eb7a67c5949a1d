//! Watches on the kinds the controller cannot know in advance: whatever a
//! feature renders beyond the built-in kinds it watches from the start
//! (host/operator/src/controller.rs, `run`), such as Tetragon's
//! cluster-scoped TracingPolicy or the Trivy Operator's CRDs. Each such kind
//! gets a metadata-only watch of the objects the operator manages (by its
//! label) once an agent has applied one; a change or deletion of one
//! triggers its agent's reconcile (by the owner labels every managed object
//! carries), so it is restored within seconds instead of at the resync.

use std::collections::BTreeSet;
use std::sync::Mutex;

use futures::StreamExt as _;
use futures::channel::mpsc;
use kube::api::{Api, DynamicObject};
use kube::core::ApiResource;
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{WatchStreamExt as _, watcher};
use kube::{Client, Resource as _};
use secop_api::SecurityAgent;
use secop_engine::{MANAGED_BY, MANAGED_BY_LABEL, OWNER_LABEL, OWNER_NAMESPACE_LABEL};

/// Kinds (`apiVersion/Kind`) the controller watches from the start.
const WATCHED_FROM_START: [&str; 11] = [
    "apps/v1/DaemonSet",
    "apps/v1/Deployment",
    "v1/ConfigMap",
    "batch/v1/CronJob",
    "v1/Service",
    "v1/ServiceAccount",
    "rbac.authorization.k8s.io/v1/Role",
    "rbac.authorization.k8s.io/v1/RoleBinding",
    "networking.k8s.io/v1/NetworkPolicy",
    "rbac.authorization.k8s.io/v1/ClusterRole",
    "rbac.authorization.k8s.io/v1/ClusterRoleBinding",
];

/// The watches started so far, and where their changes go.
pub(crate) struct KindWatches {
    client: Client,
    /// The watched namespace of a namespaced kind; None: all.
    namespace: Option<String>,
    started: Mutex<BTreeSet<String>>,
    trigger: mpsc::UnboundedSender<ObjectRef<SecurityAgent>>,
}

impl KindWatches {
    /// The watches, and the stream of agents to reconcile they feed.
    pub(crate) fn new(
        client: Client,
        namespace: Option<String>,
    ) -> (Self, mpsc::UnboundedReceiver<ObjectRef<SecurityAgent>>) {
        let (trigger, agents) = mpsc::unbounded();
        (Self { client, namespace, started: Mutex::default(), trigger }, agents)
    }

    /// Watch `kind_id` (a kind an agent has just applied), unless the
    /// controller already does. A watch the operator may not list keeps
    /// retrying with backoff; the resync still restores that kind.
    pub(crate) fn watch(&self, kind_id: &str, resource: &ApiResource, namespaced: bool) {
        if WATCHED_FROM_START.contains(&kind_id) {
            return;
        }
        if !self.started.lock().expect("watches lock").insert(kind_id.to_string()) {
            return;
        }
        // Metadata only: labels are all that map an object to its agent.
        let api: Api<PartialObjectMeta<DynamicObject>> = match (&self.namespace, namespaced) {
            (Some(namespace), true) => Api::namespaced_with(self.client.clone(), namespace, resource),
            _ => Api::all_with(self.client.clone(), resource),
        };
        let config = watcher::Config::default().labels(&format!("{MANAGED_BY_LABEL}={MANAGED_BY}"));
        let trigger = self.trigger.clone();
        let kind = kind_id.to_string();
        tracing::info!(kind = %kind, "watching a kind an agent applied");
        tokio::spawn(async move {
            let mut changes = watcher(api, config).default_backoff().touched_objects().boxed();
            while let Some(change) = changes.next().await {
                match change {
                    Ok(object) => {
                        if let Some(agent) = owner_of(object.meta())
                            && trigger.unbounded_send(agent).is_err()
                        {
                            return; // the controller stopped
                        }
                    }
                    Err(error) => tracing::debug!(kind = %kind, %error, "watch"),
                }
            }
        });
    }
}

/// The agent an object belongs to, by the owner labels the host puts on
/// everything it manages.
pub(crate) fn owner_of(meta: &kube::api::ObjectMeta) -> Option<ObjectRef<SecurityAgent>> {
    let labels = meta.labels.as_ref()?;
    let name = labels.get(OWNER_LABEL)?;
    let namespace = labels.get(OWNER_NAMESPACE_LABEL)?;
    Some(ObjectRef::new(name).within(namespace))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_object_maps_to_its_agent_by_the_owner_labels() {
        let meta = kube::api::ObjectMeta {
            labels: Some(
                [(OWNER_LABEL.to_string(), "poc".to_string()), (OWNER_NAMESPACE_LABEL.to_string(), "sec".to_string())]
                    .into(),
            ),
            ..Default::default()
        };
        assert_eq!(owner_of(&meta), Some(ObjectRef::new("poc").within("sec")));
        assert_eq!(owner_of(&kube::api::ObjectMeta::default()), None);
    }
}
