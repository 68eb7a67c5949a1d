//! Desired state → cluster: server-side apply, skip what is already right,
//! prune what no feature wants, and clean up cluster-scoped objects.
//!
//! Every managed object carries the owner and owner-namespace labels, so
//! "what we manage" is one labelled LIST per kind. A reconcile that changes
//! nothing makes no write request: an object is applied only when the
//! desired fields are not already in the live object.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use kube::Client;
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PropagationPolicy};
use kube::core::{ApiResource, GroupVersionKind};
use kube::discovery::{self, Scope};
use secop_engine::objects::ObjectKey;
use secop_engine::{FEATURE_LABEL, MANAGED_BY, MANAGED_BY_LABEL, OWNER_LABEL, OWNER_NAMESPACE_LABEL};
use serde_json::{Value, json};
use tokio::sync::Mutex;

use crate::error::{Conflict, ConflictKind, Error, Result, rbac_resource};

pub const FIELD_MANAGER: &str = "security-operator";

/// A kind as `apiVersion/Kind` (e.g. `apps/v1/DaemonSet`), how the status
/// inventory remembers what was applied.
pub fn kind_id(api_version: &str, kind: &str) -> String {
    format!("{api_version}/{kind}")
}

fn split_kind_id(id: &str) -> Option<(String, String)> {
    let (api_version, kind) = id.rsplit_once('/')?;
    Some((api_version.to_string(), kind.to_string()))
}

/// Discovery results, cached: resolving a kind costs a request.
#[derive(Default)]
pub struct Kinds {
    cache: Mutex<HashMap<(String, String), (ApiResource, bool)>>,
}

impl Kinds {
    /// The API resource of a kind and whether it is namespaced.
    pub async fn resolve(&self, client: &Client, api_version: &str, kind: &str) -> Result<(ApiResource, bool)> {
        let key = (api_version.to_string(), kind.to_string());
        if let Some(found) = self.cache.lock().await.get(&key) {
            return Ok(found.clone());
        }
        let (group, version) = match api_version.split_once('/') {
            Some((g, v)) => (g, v),
            None => ("", api_version),
        };
        let gvk = GroupVersionKind::gvk(group, version, kind);
        let (resource, caps) = discovery::pinned_kind(client, &gvk).await.map_err(|e| Error::UnknownKind {
            api_version: api_version.to_string(),
            kind: kind.to_string(),
            reason: e.to_string(),
        })?;
        let namespaced = caps.scope == Scope::Namespaced;
        self.cache.lock().await.insert(key, (resource.clone(), namespaced));
        Ok((resource, namespaced))
    }
}

fn dynamic_api(client: &Client, resource: &ApiResource, namespace: Option<&str>) -> Api<DynamicObject> {
    match namespace {
        Some(ns) => Api::namespaced_with(client.clone(), ns, resource),
        None => Api::all_with(client.clone(), resource),
    }
}

/// A value the API server leaves out of its output (Go's `omitempty`).
fn is_zero(value: &Value) -> bool {
    match value {
        Value::Null | Value::Bool(false) => true,
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
        Value::Number(_) | Value::Bool(true) => false,
    }
}

/// True when every field of `desired` has the same value in `live`
/// (server defaults and status may add fields; they do not count; a zero
/// value the server omits counts as present).
pub fn is_subset(desired: &Value, live: &Value) -> bool {
    match (desired, live) {
        (Value::Object(d), Value::Object(l)) => d.iter().all(|(k, v)| match l.get(k) {
            Some(lv) => is_subset(v, lv),
            None => is_zero(v),
        }),
        (Value::Array(d), Value::Array(l)) => d.len() == l.len() && d.iter().zip(l).all(|(a, b)| is_subset(a, b)),
        (Value::Number(a), Value::Number(b)) => a.as_f64() == b.as_f64(),
        (Value::Null, Value::Null) => true,
        // An explicit null/empty in desired may be omitted by the server.
        (Value::Null, _) => true,
        (Value::Object(d), Value::Null) | (Value::Object(d), _) if d.is_empty() => true,
        (a, b) => a == b,
    }
}

/// The live objects this agent manages, by key.
pub struct Live {
    pub objects: BTreeMap<ObjectKey, Value>,
}

fn live_key(api_version: &str, kind: &str, v: &Value) -> ObjectKey {
    ObjectKey::new(
        api_version,
        kind,
        v.pointer("/metadata/namespace").and_then(Value::as_str),
        v.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default(),
    )
}

/// List every object of `kinds` labelled as this agent's. A kind the
/// server does not serve (its CRD is gone) has no objects.
pub async fn list_owned(
    client: &Client,
    kinds: &Kinds,
    kind_ids: &BTreeSet<String>,
    agent: &str,
    namespace: &str,
) -> Result<Live> {
    let selector = format!("{OWNER_LABEL}={agent},{OWNER_NAMESPACE_LABEL}={namespace}");
    let mut objects = BTreeMap::new();
    for id in kind_ids {
        let Some((api_version, kind)) = split_kind_id(id) else { continue };
        let (resource, namespaced) = match kinds.resolve(client, &api_version, &kind).await {
            Ok(r) => r,
            Err(Error::UnknownKind { .. }) => continue,
            Err(e) => return Err(e),
        };
        let api = dynamic_api(client, &resource, namespaced.then_some(namespace));
        let items = api.list(&ListParams::default().labels(&selector)).await.map_err(|source| Error::Request {
            verb: "list",
            resource: rbac_resource(&resource),
            object: format!("labelled {selector}"),
            source,
        })?;
        for item in items {
            let mut value = serde_json::to_value(&item)?;
            // Items of a LIST response carry no apiVersion/kind.
            value["apiVersion"] = json!(api_version);
            value["kind"] = json!(kind);
            objects.insert(live_key(&api_version, &kind, &value), value);
        }
    }
    Ok(Live { objects })
}

/// What one sync did.
#[derive(Debug, Default)]
pub struct SyncReport {
    pub applied: Vec<ObjectKey>,
    pub pruned: Vec<ObjectKey>,
    /// The live state after the sync (applied objects as the server
    /// returned them), for `assess`.
    pub live: BTreeMap<ObjectKey, Value>,
    /// Kinds present after the sync, for the next prune.
    pub kinds: BTreeSet<String>,
}

/// Wait until a CRD is established, so objects of its kind can be applied.
async fn wait_established(client: &Client, kinds: &Kinds, name: &str) -> Result<()> {
    let (resource, _) = kinds.resolve(client, "apiextensions.k8s.io/v1", "CustomResourceDefinition").await?;
    let api = dynamic_api(client, &resource, None);
    for _ in 0..150 {
        let crd = api.get(name).await.map_err(|source| Error::Request {
            verb: "get",
            resource: rbac_resource(&resource),
            object: name.to_string(),
            source,
        })?;
        let established = crd.data["status"]["conditions"]
            .as_array()
            .is_some_and(|cs| cs.iter().any(|c| c["type"] == "Established" && c["status"] == "True"));
        if established {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Err(Error::CrdNotEstablished { name: name.to_string(), seconds: 30 })
}

/// The hash of an object as the operator last applied it. The subset test
/// sees drift in what is desired, but not a field the desired state no
/// longer has (an annotation, env var or rule a new module dropped); with
/// the hash, such an object differs and is applied, and server-side apply
/// removes the fields this manager stopped sending.
pub const APPLIED_HASH_ANNOTATION: &str = "security.example.io/applied-hash";

fn stamp_applied_hash(object: &mut Value) {
    use sha2::Digest as _;
    let hash = hex::encode(sha2::Sha256::digest(object.to_string().as_bytes()));
    object["metadata"]["annotations"][APPLIED_HASH_ANNOTATION] = json!(&hash[..16]);
}

/// The owner reference the agent's namespaced objects carry: deleting the
/// agent deletes them (the finalizer handles cluster-scoped ones).
pub fn owner_reference(agent: &secop_api::SecurityAgent) -> Value {
    use kube::{Resource as _, ResourceExt as _};
    json!({
        "apiVersion": secop_api::SecurityAgent::api_version(&()),
        "kind": secop_api::SecurityAgent::kind(&()),
        "name": agent.name_any(),
        "uid": agent.uid().unwrap_or_default(),
        "controller": true,
        "blockOwnerDeletion": true,
    })
}

/// The agent whose objects these are: its name and namespace select the
/// live objects, its owner reference is stamped on the namespaced ones.
#[derive(Clone, Copy)]
pub struct Owner<'a> {
    pub agent: &'a str,
    pub namespace: &'a str,
    pub reference: &'a Value,
}

/// What the agent manages now (its live objects, over the kinds it
/// renders and the kinds it applied before) and which desired CRDs exist
/// already and are left to their installer; a foreign object in the way is
/// [`Error::Conflict`]. The first step of both [`sync`] and [`plan`].
async fn managed_state(
    client: &Client,
    kinds: &Kinds,
    owner: &Owner<'_>,
    desired: &[(ObjectKey, Value)],
    previous_kinds: &BTreeSet<String>,
) -> Result<(BTreeMap<ObjectKey, Value>, BTreeSet<ObjectKey>)> {
    let mut kind_ids: BTreeSet<String> = desired.iter().map(|(k, _)| kind_id(&k.api_version, &k.kind)).collect();
    kind_ids.extend(previous_kinds.iter().cloned());
    let labelled = list_owned(client, kinds, &kind_ids, owner.agent, owner.namespace).await?.objects;
    let live = referencing_agent(labelled, owner.reference);
    let shared_crds = check_foreign(client, kinds, owner, desired, &live).await?;
    Ok((live, shared_crds))
}

/// The labelled objects that are this agent's: labels anyone who may write
/// an object can set, so a namespaced object counts only while it also
/// carries the agent's owner reference (its uid), which only the operator
/// may add or remove (the chart's agent-ownership policy). Otherwise a
/// tenant could create the DaemonSet an agent will render, labelled and
/// with a container of their own, and have the operator adopt it (what an
/// agent owns is exempt from the posture audits). Cluster-scoped objects
/// have no owner reference; only admins write them. Without a reference
/// (an agent not created yet, `secop diff` of a new agent) nothing is
/// filtered.
fn referencing_agent(labelled: BTreeMap<ObjectKey, Value>, reference: &Value) -> BTreeMap<ObjectKey, Value> {
    let Some(uid) = reference["uid"].as_str() else { return labelled };
    labelled
        .into_iter()
        .filter(|(key, live)| {
            key.namespace.is_none()
                || live["metadata"]["ownerReferences"]
                    .as_array()
                    .is_some_and(|refs| refs.iter().any(|r| r["uid"].as_str() == Some(uid)))
        })
        .collect()
}

/// Apply `desired` (in apply order) and prune what is live but no longer
/// desired, except the objects of `keep_features` (features that failed
/// this time: their last applied objects stay).
pub async fn sync(
    client: &Client,
    kinds: &Kinds,
    owner: &Owner<'_>,
    desired: &[(ObjectKey, Value)],
    previous_kinds: &BTreeSet<String>,
    keep_features: &BTreeSet<String>,
) -> Result<SyncReport> {
    let (mut live, shared_crds) = managed_state(client, kinds, owner, desired, previous_kinds).await?;
    let mut report = SyncReport::default();

    for (key, object) in desired {
        if shared_crds.contains(key) {
            continue;
        }
        let object = prepared(key, object, owner.reference);
        let current = live.get(key);
        if current.is_some_and(|l| is_subset(&object, l)) {
            continue;
        }
        if key.is_custom_resource() {
            // A custom resource: its CRD may have been applied just now.
            if let Some(crd) = desired.iter().find(|(k, v)| {
                k.kind == "CustomResourceDefinition"
                    && v["spec"]["names"]["kind"] == key.kind.as_str()
                    && v["spec"]["group"] == key.group()
            }) {
                wait_established(client, kinds, &crd.0.name).await?;
            }
        }
        let (resource, namespaced) = kinds.resolve(client, &key.api_version, &key.kind).await?;
        let applied = server_side_apply(client, &resource, namespaced, key, &object, false).await?;
        live.insert(key.clone(), applied);
        report.applied.push(key.clone());
    }

    // Prune in reverse apply order (workloads before the RBAC and config
    // they use). CRDs are never deleted: deleting one
    // deletes every object of its kind in the cluster (for Trivy, every
    // VulnerabilityReport), which is not ours to decide (Helm does the same).
    for (key, _) in stale(desired, &live, keep_features) {
        let (resource, namespaced) = kinds.resolve(client, &key.api_version, &key.kind).await?;
        let api = dynamic_api(client, &resource, if namespaced { key.namespace.as_deref() } else { None });
        match api
            .delete(
                &key.name,
                &DeleteParams { propagation_policy: Some(PropagationPolicy::Background), ..Default::default() },
            )
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(source) => {
                return Err(Error::Request {
                    verb: "delete",
                    resource: rbac_resource(&resource),
                    object: object_name(&key),
                    source,
                });
            }
        }
        live.remove(&key);
        report.pruned.push(key);
    }
    report.kinds = live.keys().map(|k| kind_id(&k.api_version, &k.kind)).collect();
    report.live = live;
    Ok(report)
}

/// Server-side apply of one object with the operator's field manager
/// (forced: the operator owns the fields it renders); `dry_run` asks what
/// the server would store without storing it. The object as the server
/// returned it.
async fn server_side_apply(
    client: &Client,
    resource: &ApiResource,
    namespaced: bool,
    key: &ObjectKey,
    object: &Value,
    dry_run: bool,
) -> Result<Value> {
    let api = dynamic_api(client, resource, if namespaced { key.namespace.as_deref() } else { None });
    let mut params = PatchParams::apply(FIELD_MANAGER).force();
    params.dry_run = dry_run;
    let applied = api.patch(&key.name, &params, &Patch::Apply(object)).await.map_err(|source| Error::Request {
        verb: "patch",
        resource: rbac_resource(resource),
        object: object_name(key),
        source,
    })?;
    Ok(serde_json::to_value(&applied)?)
}

/// An object as it is applied: owned by the agent (namespaced objects; a
/// null reference, for an agent not created yet, leaves it out) and
/// stamped with the hash of what is sent.
fn prepared(key: &ObjectKey, object: &Value, owner_reference: &Value) -> Value {
    let mut object = object.clone();
    if key.namespace.is_some() && !owner_reference.is_null() {
        object["metadata"]["ownerReferences"] = json!([owner_reference]);
    }
    stamp_applied_hash(&mut object);
    object
}

/// What is live but no longer desired, in prune order (reverse apply
/// order: workloads before the RBAC and config they use), except the
/// objects of `keep_features`. CRDs are never deleted: deleting one
/// deletes every object of its kind in the cluster (for Trivy, every
/// VulnerabilityReport), which is not ours to decide (Helm does the same).
fn stale(
    desired: &[(ObjectKey, Value)],
    live: &BTreeMap<ObjectKey, Value>,
    keep_features: &BTreeSet<String>,
) -> Vec<(ObjectKey, Value)> {
    let desired_keys: BTreeSet<&ObjectKey> = desired.iter().map(|(k, _)| k).collect();
    let mut stale: Vec<(ObjectKey, Value)> = live
        .iter()
        .filter(|(k, _)| !desired_keys.contains(k) && !is_crd(k))
        .filter(|(_, v)| {
            let feature = label(v, FEATURE_LABEL);
            !feature.is_some_and(|f| keep_features.contains(f))
        })
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    stale.sort_by(|a, b| (b.0.apply_rank(), &b.0).cmp(&(a.0.apply_rank(), &a.0)));
    stale
}

/// What a sync of `desired` would do, found without a write: each object
/// as the server would store it (a server-side apply dry run with the
/// operator's field manager), beside the live one; and what would be
/// pruned. A foreign object in the way is the sync's [`Error::Conflict`].
pub struct Plan {
    /// (object, live version or None when it would be created, the
    /// object as it would be after the apply), in apply order.
    pub applied: Vec<(ObjectKey, Option<Value>, Value)>,
    /// Objects that would be deleted, in prune order.
    pub pruned: Vec<(ObjectKey, Value)>,
}

pub async fn plan(
    client: &Client,
    kinds: &Kinds,
    owner: &Owner<'_>,
    desired: &[(ObjectKey, Value)],
    previous_kinds: &BTreeSet<String>,
) -> Result<Plan> {
    let (live, shared_crds) = managed_state(client, kinds, owner, desired, previous_kinds).await?;
    let mut applied = vec![];
    for (key, object) in desired.iter().filter(|(k, _)| !shared_crds.contains(k)) {
        let object = prepared(key, object, owner.reference);
        let current = live.get(key).cloned();
        let (resource, namespaced) = match kinds.resolve(client, &key.api_version, &key.kind).await {
            Ok(found) => found,
            // A custom resource whose CRD this apply would create: the
            // server cannot dry-run it yet; it would be created as sent.
            Err(Error::UnknownKind { .. }) if current.is_none() => {
                applied.push((key.clone(), None, object));
                continue;
            }
            Err(e) => return Err(e),
        };
        let after = server_side_apply(client, &resource, namespaced, key, &object, true).await?;
        applied.push((key.clone(), current, after));
    }
    Ok(Plan { applied, pruned: stale(desired, &live, &BTreeSet::new()) })
}

/// Whether any object the agent renders, and does not manage yet, already
/// exists (one GET each, before anything is applied). Server-side apply
/// with force would take such an object over, and a later prune or the
/// agent's deletion would delete it: another agent's TracingPolicy, a
/// `system:` ClusterRole, another team's ConfigMap. Each is a conflict, and
/// the sync stops before its first write.
///
/// CRDs are the exception: they define a kind for the whole cluster, any
/// installer of the tool brings the same ones, and the operator never
/// deletes a CRD. One that exists already is used as it is and left to
/// whoever installed it; the returned keys are those CRDs, not to be
/// applied.
async fn check_foreign(
    client: &Client,
    kinds: &Kinds,
    this: &Owner<'_>,
    desired: &[(ObjectKey, Value)],
    live: &BTreeMap<ObjectKey, Value>,
) -> Result<BTreeSet<ObjectKey>> {
    let mut conflicts = vec![];
    let mut shared_crds = BTreeSet::new();
    for (key, _) in desired.iter().filter(|(k, _)| !live.contains_key(k)) {
        let (resource, namespaced) = match kinds.resolve(client, &key.api_version, &key.kind).await {
            Ok(r) => r,
            // A kind whose CRD this sync applies first: nothing of it exists.
            Err(Error::UnknownKind { .. }) => continue,
            Err(e) => return Err(e),
        };
        let api = dynamic_api(client, &resource, if namespaced { key.namespace.as_deref() } else { None });
        let existing = api.get_opt(&key.name).await.map_err(|source| Error::Request {
            verb: "get",
            resource: rbac_resource(&resource),
            object: object_name(key),
            source,
        })?;
        let Some(existing) = existing else { continue };
        if is_crd(key) {
            shared_crds.insert(key.clone());
            continue;
        }
        // Another agent's (this agent's own were in the labelled LIST), or
        // nobody's the operator knows: labelled as this agent's without its
        // owner reference is not the operator's work.
        let owner = owner_agent(&existing.metadata.labels.unwrap_or_default())
            .filter(|o| *o != format!("{}/{}", this.namespace, this.agent));
        conflicts.push(Conflict {
            object: format!("{} {}", key.kind, object_name(key)),
            owner,
            kind: ConflictKind::Exists,
        });
    }
    conflicts.extend(check_node_sensors(client, desired, live).await?);
    if conflicts.is_empty() { Ok(shared_crds) } else { Err(Error::Conflict { conflicts }) }
}

/// Node-level sensors are singletons: a DaemonSet this agent would create
/// conflicts with one of the same feature that another agent already runs,
/// unless their node selectors are disjoint (some key both set to
/// different values). Affinity is not compared, so its overlap counts.
/// Only DaemonSets not live yet are checked: a sensor already running is
/// never taken down by this check.
async fn check_node_sensors(
    client: &Client,
    desired: &[(ObjectKey, Value)],
    live: &BTreeMap<ObjectKey, Value>,
) -> Result<Vec<Conflict>> {
    let mut conflicts = vec![];
    let new_daemonsets =
        desired.iter().filter(|(k, _)| k.kind == "DaemonSet" && k.group() == "apps" && !live.contains_key(k));
    for (_, object) in new_daemonsets {
        let feature = label(object, FEATURE_LABEL).unwrap_or_default();
        let ours = (label(object, OWNER_NAMESPACE_LABEL), label(object, OWNER_LABEL));
        let our_nodes: BTreeMap<String, String> =
            serde_json::from_value(object.pointer("/spec/template/spec/nodeSelector").cloned().unwrap_or(Value::Null))
                .unwrap_or_default();
        let selector = format!("{MANAGED_BY_LABEL}={MANAGED_BY},{FEATURE_LABEL}={feature}");
        let api: Api<k8s_openapi::api::apps::v1::DaemonSet> = Api::all(client.clone());
        let running = api.list(&ListParams::default().labels(&selector)).await.map_err(|source| Error::Request {
            verb: "list",
            resource: "daemonsets.apps".into(),
            object: format!("(all namespaces, {selector})"),
            source,
        })?;
        for other in running {
            let labels = other.metadata.labels.clone().unwrap_or_default();
            if (labels.get(OWNER_NAMESPACE_LABEL).map(String::as_str), labels.get(OWNER_LABEL).map(String::as_str))
                == ours
            {
                continue;
            }
            let their_nodes = other
                .spec
                .as_ref()
                .and_then(|s| s.template.spec.as_ref())
                .and_then(|s| s.node_selector.clone())
                .unwrap_or_default();
            if !node_selectors_disjoint(&our_nodes, &their_nodes) {
                conflicts.push(Conflict {
                    object: format!(
                        "DaemonSet {}/{}",
                        other.metadata.namespace.clone().unwrap_or_default(),
                        other.metadata.name.clone().unwrap_or_default()
                    ),
                    owner: owner_agent(&labels),
                    kind: ConflictKind::SameNodes { feature: feature.to_string() },
                });
            }
        }
    }
    Ok(conflicts)
}

/// A label of a desired or live object (as JSON).
fn label<'a>(object: &'a Value, key: &str) -> Option<&'a str> {
    object.pointer("/metadata/labels").and_then(|l| l.get(key)).and_then(Value::as_str)
}

/// `namespace/name` of the agent whose owner labels an object carries.
fn owner_agent(labels: &BTreeMap<String, String>) -> Option<String> {
    Some(format!("{}/{}", labels.get(OWNER_NAMESPACE_LABEL)?, labels.get(OWNER_LABEL)?))
}

/// No node can match both: some key is required with different values.
fn node_selectors_disjoint(a: &BTreeMap<String, String>, b: &BTreeMap<String, String>) -> bool {
    a.iter().any(|(k, v)| b.get(k).is_some_and(|w| w != v))
}

/// `namespace/name`, or `name` for a cluster-scoped object.
fn object_name(key: &ObjectKey) -> String {
    match &key.namespace {
        Some(ns) => format!("{ns}/{}", key.name),
        None => key.name.clone(),
    }
}

fn is_crd(key: &ObjectKey) -> bool {
    key.kind == "CustomResourceDefinition" && key.group() == "apiextensions.k8s.io"
}

/// Delete this agent's cluster-scoped objects (namespaced ones go with the
/// agent through their owner references), except CRDs (see `sync`).
/// Returns how many were deleted.
pub async fn delete_cluster_scoped(
    client: &Client,
    kinds: &Kinds,
    agent: &str,
    namespace: &str,
    kind_ids: &BTreeSet<String>,
) -> Result<usize> {
    let live = list_owned(client, kinds, kind_ids, agent, namespace).await?;
    let mut deleted = 0;
    let mut cluster_scoped: Vec<&ObjectKey> =
        live.objects.keys().filter(|k| k.namespace.is_none() && !is_crd(k)).collect();
    // Bindings before the roles they bind.
    cluster_scoped.sort_by_key(|k| k.kind == "ClusterRole");
    for key in cluster_scoped {
        let (resource, _) = kinds.resolve(client, &key.api_version, &key.kind).await?;
        let api = dynamic_api(client, &resource, None);
        match api.delete(&key.name, &DeleteParams::default()).await {
            Ok(_) => deleted += 1,
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(source) => {
                return Err(Error::Request {
                    verb: "delete",
                    resource: rbac_resource(&resource),
                    object: object_name(key),
                    source,
                });
            }
        }
    }
    Ok(deleted)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_labelled_object_is_the_agents_only_with_its_owner_reference() {
        let key = |namespace: Option<&str>, name: &str| ObjectKey::new("apps/v1", "DaemonSet", namespace, name);
        let with_refs = |uids: &[&str]| json!({ "metadata": { "ownerReferences": uids.iter().map(|u| json!({ "kind": "SecurityAgent", "uid": u })).collect::<Vec<_>>() } });
        let labelled = BTreeMap::from([
            (key(Some("team"), "ours"), with_refs(&["uid-1"])),
            (key(Some("team"), "planted"), json!({ "metadata": { "labels": { "security.example.io/owner": "poc" } } })),
            (key(Some("team"), "old-agent"), with_refs(&["uid-0"])),
            (key(None, "cluster-wide"), json!({ "metadata": {} })),
        ]);
        let live = referencing_agent(labelled.clone(), &json!({ "uid": "uid-1" }));
        let names: Vec<&str> = live.keys().map(|k| k.name.as_str()).collect();
        assert_eq!(names, ["cluster-wide", "ours"]);
        assert_eq!(referencing_agent(labelled, &Value::Null).len(), 4, "no reference yet: nothing filtered");
    }

    #[test]
    fn node_selectors_are_disjoint_only_when_a_shared_key_differs() {
        let map = |pairs: &[(&str, &str)]| {
            pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<BTreeMap<_, _>>()
        };
        assert!(node_selectors_disjoint(&map(&[("pool", "a")]), &map(&[("pool", "b")])));
        assert!(!node_selectors_disjoint(&map(&[("pool", "a")]), &map(&[("pool", "a")])));
        assert!(
            !node_selectors_disjoint(&map(&[("pool", "a")]), &map(&[("zone", "x")])),
            "different keys can match one node"
        );
        assert!(!node_selectors_disjoint(&map(&[]), &map(&[("pool", "a")])), "no selector: every node");
    }

    #[test]
    fn subset_ignores_server_defaults_but_not_changes() {
        let desired = json!({ "spec": { "replicas": 1, "template": { "spec": { "containers": [{ "name": "a", "image": "x" }] } } } });
        let live = json!({ "spec": { "replicas": 1, "revisionHistoryLimit": 10, "template": { "spec": { "containers": [{ "name": "a", "image": "x", "imagePullPolicy": "IfNotPresent" }] } } }, "status": {} });
        assert!(is_subset(&desired, &live));
        let changed = json!({ "spec": { "replicas": 2 } });
        assert!(!is_subset(&changed, &live));
        let more_containers =
            json!({ "spec": { "template": { "spec": { "containers": [{ "name": "a" }, { "name": "b" }] } } } });
        assert!(!is_subset(&more_containers, &live));
        assert!(is_subset(&json!({ "metadata": { "annotations": {} } }), &json!({ "metadata": {} })));
        // Zero values the server omits.
        assert!(is_subset(
            &json!({ "hostPID": false, "env": [{ "name": "A", "value": "" }] }),
            &json!({ "env": [{ "name": "A" }] })
        ));
        assert!(!is_subset(&json!({ "hostPID": true }), &json!({})));
    }
}
