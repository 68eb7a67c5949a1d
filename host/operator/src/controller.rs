//! The reconcile loop. Per SecurityAgent, top to bottom:
//! render (features → desired state → overrides) → apply and prune →
//! assess → status. Small and idempotent: run it twice, the second run
//! writes nothing.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::batch::v1::CronJob;
use k8s_openapi::api::core::v1::{ConfigMap, Service, ServiceAccount};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use kube::api::{Api, Patch, PatchParams};
use kube::core::PartialObjectMeta;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{WatchStreamExt, reflector, watcher};
use kube::{Client, Resource, ResourceExt};
use secop_api::{AgentId, Reason, SecurityAgent, SecurityAgentStatus};
use secop_engine::objects::ObjectKey;
use secop_engine::{Registry, RenderError, RenderOptions};
use secop_feature_sdk::model as m;
use secop_runtime::ClusterAccess;
use serde_json::{Value, json};

use crate::error::{Error, Result};
use crate::metrics::{self, FeatureErrorLabel, FeatureLabel, Metrics};
use crate::modules::{ModuleRender, Modules};
use crate::resources::{self, Kinds};
use crate::watches::{self, KindWatches};
use crate::{status, telemetry};

pub const FINALIZER: &str = "security.example.io/cleanup";
/// Periodic re-check: drift on objects we do not watch is repaired at least this often.
const RESYNC: Duration = Duration::from_secs(300);

/// Shared by every reconcile.
pub struct Context {
    pub client: Client,
    pub registry: Arc<Registry>,
    /// Modules named in `features[].module`, and the last good ones.
    pub modules: Modules,
    /// How often an agent is re-resolved while it pulls a module with
    /// `Always` or runs a degraded module (a moved tag or a recovered
    /// registry is noticed within this time).
    pub module_poll: Duration,
    pub kinds: Kinds,
    pub metrics: Metrics,
    pub recorder: Recorder,
    pub operator_image: String,
    pub policy: Arc<secop_policy::ClusterPolicy>,
    /// Consecutive failed reconciles per agent, for the backoff.
    pub retries: Retries,
    /// Watches on the kinds agents apply beyond the built-in ones.
    pub watches: KindWatches,
}

/// First retry after a failed reconcile; doubled per further failure.
const RETRY_FIRST: Duration = Duration::from_secs(5);
/// The longest wait between retries (the resync period).
const RETRY_MAX: Duration = RESYNC;

/// Consecutive failures per agent: an agent that keeps
/// failing (a Conflict nobody resolves, a permission the operator lacks)
/// is retried ever less often, so it cannot keep the shared operator and
/// the API server busy; a success starts over.
#[derive(Default)]
pub(crate) struct Retries(std::sync::Mutex<std::collections::HashMap<AgentId, u32>>);

impl Retries {
    /// Count one more failure; the delay before the next attempt.
    pub(crate) fn failed(&self, agent: &AgentId) -> Duration {
        let mut failures = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let n = failures.entry(agent.clone()).or_insert(0);
        *n = n.saturating_add(1);
        backoff(*n)
    }

    pub(crate) fn succeeded(&self, agent: &AgentId) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).remove(agent);
    }
}

/// 5 s, 10 s, 20 s, ... up to 5 min.
fn backoff(failures: u32) -> Duration {
    RETRY_FIRST.saturating_mul(1u32 << failures.saturating_sub(1).min(16)).min(RETRY_MAX)
}

/// Live objects after apply, for the features' scoped `cluster.get`.
struct Snapshot(BTreeMap<ObjectKey, String>);

impl Snapshot {
    fn new(live: &BTreeMap<ObjectKey, Value>) -> Self {
        Self(live.iter().map(|(k, v)| (k.clone(), v.to_string())).collect())
    }
}

impl ClusterAccess for Snapshot {
    fn get(
        &self,
        api_version: &str,
        kind: &str,
        namespace: Option<&str>,
        name: &str,
    ) -> Result<String, m::LookupError> {
        self.0.get(&ObjectKey::new(api_version, kind, namespace, name)).cloned().ok_or(m::LookupError::NotFound)
    }
}

fn has_finalizer(agent: &SecurityAgent) -> bool {
    agent.finalizers().iter().any(|f| f == FINALIZER)
}

async fn publish(ctx: &Context, agent: &SecurityAgent, type_: EventType, reason: Reason, action: &str, note: String) {
    let event = Event { type_, reason: reason.into(), note: Some(note), action: action.into(), secondary: None };
    if let Err(e) = ctx.recorder.publish(&event, &agent.object_ref(&())).await {
        tracing::warn!("publishing event {reason}: {e}");
    }
}

/// Remove cluster-scoped objects (namespaced ones follow through owner
/// references and the garbage collector), then the finalizer.
async fn finalize(agent: &SecurityAgent, api: &Api<SecurityAgent>, ctx: &Context, namespace: &str) -> Result<Action> {
    if !has_finalizer(agent) {
        return Ok(Action::await_change());
    }
    let mut kinds = status::inventory(agent);
    for (api_version, kind) in
        [("rbac.authorization.k8s.io/v1", "ClusterRole"), ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding")]
    {
        kinds.insert(resources::kind_id(api_version, kind));
    }
    let deleted =
        resources::delete_cluster_scoped(&ctx.client, &ctx.kinds, &agent.name_any(), namespace, &kinds).await?;
    ctx.modules.forget(&ctx.registry, agent);
    ctx.metrics.objects_pruned.inc_by(deleted as u64);
    let remaining: Vec<&String> = agent.finalizers().iter().filter(|f| *f != FINALIZER).collect();
    api.patch(
        &agent.name_any(),
        &PatchParams::default(),
        &Patch::Merge(json!({ "metadata": { "finalizers": remaining } })),
    )
    .await?;
    tracing::info!(agent = %agent.name_any(), namespace, deleted, "finalized: cluster-scoped objects removed");
    Ok(Action::await_change())
}

async fn reconcile_agent(agent: Arc<SecurityAgent>, ctx: Arc<Context>) -> Result<Action> {
    let namespace = agent.namespace().ok_or(Error::MissingNamespace)?;
    let name = agent.name_any();
    let api: Api<SecurityAgent> = Api::namespaced(ctx.client.clone(), &namespace);

    if agent.metadata.deletion_timestamp.is_some() {
        return finalize(&agent, &api, &ctx, &namespace).await;
    }
    // The cluster policy before anything else: an agent it refuses gets no
    // finalizer, no registry request, no write but its status; what an
    // earlier spec applied stays as it is.
    if let Err(violation) = ctx.policy.check_agent(&agent) {
        report_refusal(&ctx, &api, &agent, &RenderError::Policy(violation)).await?;
        return Ok(Action::await_change());
    }
    if !has_finalizer(&agent) {
        let mut finalizers = agent.finalizers().to_vec();
        finalizers.push(FINALIZER.to_string());
        api.patch(&name, &PatchParams::default(), &Patch::Merge(json!({ "metadata": { "finalizers": finalizers } })))
            .await?;
    }

    // CR → features (their modules, fetched and loaded) → desired state →
    // overrides; a failing new module is rolled back to the last good one.
    let resolutions = ctx.modules.resolve(&ctx.client, &ctx.policy, &agent).await;
    let options = RenderOptions {
        operator_image: ctx.operator_image.clone(),
        memoize: true,
        keep_last_good: true,
        policy: ctx.policy.clone(),
        ..Default::default()
    };
    // Feature calls run on a blocking thread: WASI's synchronous streams
    // (a module writing to stderr, e.g. a panic message) block on the
    // tokio runtime, which must not happen on an async worker.
    let render = {
        let (ctx, agent) = (ctx.clone(), agent.clone());
        tokio::task::spawn_blocking(move || ctx.modules.render(&ctx.registry, &agent, options, resolutions))
            .await
            .map_err(Error::task)?
    };
    let ModuleRender { mut rendered, in_use, notes } = match render {
        Ok(r) => r,
        Err(error) => {
            report_refusal(&ctx, &api, &agent, &error).await?;
            return Ok(Action::await_change());
        }
    };
    for report in rendered.features.iter().filter(|f| f.enabled) {
        let feature = metrics::feature_label(&ctx.registry, &report.name);
        ctx.metrics
            .feature_call_duration
            .get_or_create(&FeatureLabel { feature: feature.clone() })
            .observe(report.call_time.as_secs_f64());
        if let Some(error) = &report.error {
            ctx.metrics
                .feature_errors
                .get_or_create(&FeatureErrorLabel { feature, reason: error.reason().as_str() })
                .inc();
        }
    }

    // Apply and prune; a failed feature's objects are kept.
    let keep: BTreeSet<String> = rendered.failed().map(|f| f.name.clone()).collect();
    let owner = resources::owner_reference(&agent);
    let owner = resources::Owner { agent: &name, namespace: &namespace, reference: &owner };
    // The collectors' credential exists before the collectors that mount
    // it, and they trust its CA (a renewed one rolls them).
    if let Some(tls) = &rendered.telemetry {
        match telemetry::ensure(&ctx.client, &owner, tls).await {
            Ok(fingerprint) => telemetry::stamp(&mut rendered.objects, tls, &fingerprint),
            Err(error) => {
                report_sync_failure(&ctx, &api, &agent, &error).await;
                return Err(error);
            }
        }
    }
    let sync =
        match resources::sync(&ctx.client, &ctx.kinds, &owner, &rendered.objects, &status::inventory(&agent), &keep)
            .await
        {
            Ok(sync) => sync,
            Err(error) => {
                report_sync_failure(&ctx, &api, &agent, &error).await;
                return Err(error);
            }
        };

    watch_applied_kinds(&ctx, &rendered.objects).await;
    ctx.metrics.objects_applied.inc_by(sync.applied.len() as u64);
    ctx.metrics.objects_pruned.inc_by(sync.pruned.len() as u64);
    if !sync.applied.is_empty() {
        let names: Vec<String> = sync.applied.iter().take(10).map(ToString::to_string).collect();
        publish(
            &ctx,
            &agent,
            EventType::Normal,
            Reason::Applied,
            "Apply",
            format!("applied {} objects: {}", sync.applied.len(), names.join(", ")),
        )
        .await;
    }
    if !sync.pruned.is_empty() {
        let names: Vec<String> = sync.pruned.iter().take(10).map(ToString::to_string).collect();
        publish(
            &ctx,
            &agent,
            EventType::Normal,
            Reason::Pruned,
            "Prune",
            format!("deleted {} objects: {}", sync.pruned.len(), names.join(", ")),
        )
        .await;
    }

    // Assess against the live state, then status.
    let (rendered, assessed) = {
        let (ctx, snapshot) = (ctx.clone(), Arc::new(Snapshot::new(&sync.live)));
        tokio::task::spawn_blocking(move || {
            let assessed = secop_engine::assess(&ctx.registry, &rendered.live, snapshot);
            (rendered, assessed)
        })
        .await
        .map_err(Error::task)?
    };
    let previous = agent.status.clone().unwrap_or_default();
    let status = status::desired(&agent, &rendered, &in_use, &notes, &assessed, &sync.kinds);
    for report in rendered.failed() {
        let message = status.features.get(&report.name).and_then(|f| f.message.clone()).unwrap_or_default();
        if previous.features.get(&report.name).and_then(|f| f.message.clone()).unwrap_or_default() != message {
            tracing::warn!(agent = %name, feature = %report.name, "{message}");
            publish(&ctx, &agent, EventType::Warning, Reason::FeatureFailed, "Render", message).await;
        }
    }
    // A feature's module notes are its status message: announced once,
    // when that message changes.
    let message_of =
        |status: &SecurityAgentStatus, feature: &str| status.features.get(feature).and_then(|f| f.message.clone());
    for note in notes.iter().filter(|n| message_of(&previous, &n.feature) != message_of(&status, &n.feature)) {
        tracing::warn!(agent = %name, feature = %note.feature, reason = %note.reason, "{}", note.message);
        publish(&ctx, &agent, EventType::Warning, note.reason, "ResolveModule", note.message.clone()).await;
    }
    status::write(&api, &agent, status).await?;
    let pulls_always = agent
        .spec
        .features
        .iter()
        .any(|f| f.module.as_ref().is_some_and(|m| m.pull_policy == Some(secop_api::PullPolicy::Always)));
    Ok(Action::requeue(if pulls_always || !notes.is_empty() { ctx.module_poll } else { RESYNC }))
}

/// An agent that cannot be rendered at all (a bad spec, or one the cluster
/// policy refuses): Ready=False naming the field and the rule, one Warning
/// Event per new message, nothing applied or pruned.
async fn report_refusal(
    ctx: &Context,
    api: &Api<SecurityAgent>,
    agent: &SecurityAgent,
    error: &RenderError,
) -> Result<()> {
    let message = format!("{error}; nothing was applied or pruned");
    if status::write(api, agent, status::refused(agent, error.reason(), &message)).await? {
        tracing::warn!(agent = %agent.name_any(), reason = %error.reason(), "{message}");
        publish(ctx, agent, EventType::Warning, error.reason(), "Render", message).await;
    }
    Ok(())
}

/// A sync that failed part-way (objects before the failing request are
/// applied, nothing is pruned) or before its first write (a Conflict):
/// Ready=False naming the request or the objects in the way, and one
/// Warning Event per new message. A 403 names the verb and resource the
/// operator's role lacks.
async fn report_sync_failure(ctx: &Context, api: &Api<SecurityAgent>, agent: &SecurityAgent, error: &Error) {
    // Conflicts are found before the first write; other errors stop the
    // sync at the failing request.
    let what =
        if matches!(error, Error::Conflict { .. }) { "nothing was applied or pruned" } else { "nothing was pruned" };
    let message = format!(
        "{error}; {what}; retried after {} s, then less often (at least every {} min)",
        RETRY_FIRST.as_secs(),
        RETRY_MAX.as_secs() / 60
    );
    match status::write(api, agent, status::sync_failed(agent, error.sync_reason(), &message)).await {
        Ok(true) => publish(ctx, agent, EventType::Warning, error.sync_reason(), "Apply", message).await,
        Ok(false) => {}
        Err(e) => tracing::warn!(agent = %agent.name_any(), error = %e, "writing the status of a failed sync"),
    }
}

async fn reconcile(agent: Arc<SecurityAgent>, ctx: Arc<Context>) -> Result<Action> {
    let started = Instant::now();
    let result = reconcile_agent(agent.clone(), ctx.clone()).await;
    ctx.metrics.observe_reconcile(started.elapsed(), result.as_ref().err().map(Error::metric_label));
    if result.is_ok() {
        ctx.retries.succeeded(&AgentId::of(&agent));
    }
    result
}

fn error_policy(agent: Arc<SecurityAgent>, error: &Error, ctx: Arc<Context>) -> Action {
    let delay = ctx.retries.failed(&AgentId::of(&agent));
    tracing::warn!(agent = %agent.name_any(), error = %error, retry_in = ?delay, "reconcile failed");
    Action::requeue(delay)
}

/// Which namespaces to watch: one, or all.
pub fn api_for<K>(client: &Client, namespace: Option<&str>) -> Api<K>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// The agent a cluster-scoped object belongs to, by the labels the host
/// puts on everything (cluster-scoped objects carry no owner reference).
fn owner_of<K: Resource>(object: K) -> Option<ObjectRef<SecurityAgent>> {
    watches::owner_of(object.meta())
}

/// Watch every kind just applied (the controller's watches skip those it
/// watches from the start), so that its objects too are restored within
/// seconds.
async fn watch_applied_kinds(ctx: &Context, objects: &[(ObjectKey, serde_json::Value)]) {
    let kinds: BTreeSet<(&str, &str)> =
        objects.iter().map(|(k, _)| (k.api_version.as_str(), k.kind.as_str())).collect();
    for (api_version, kind) in kinds {
        // Resolved from the discovery cache; a kind watched already is a no-op.
        if let Ok((resource, namespaced)) = ctx.kinds.resolve(&ctx.client, api_version, kind).await {
            ctx.watches.watch(&resources::kind_id(api_version, kind), &resource, namespaced);
        }
    }
}

/// What makes an agent worth a reconcile: a new generation of its spec, or
/// a new validation run in its status (written by the validation Job, and
/// turned into the `Validated` condition). The operator's own status
/// writes change neither.
fn generation_or_validation_run(agent: &SecurityAgent) -> Option<u64> {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    agent.metadata.generation.hash(&mut hasher);
    agent.status.as_ref().and_then(|s| s.validation.as_ref()).and_then(|v| v.last_run.as_ref()).hash(&mut hasher);
    Some(hasher.finish())
}

/// Run the controller until shutdown. Reconciles on spec (generation)
/// changes of SecurityAgents and on changes of the objects they own, so a
/// managed object deleted or edited out of band is restored within
/// seconds: namespaced ones by owner reference, cluster-scoped RBAC by its
/// owner labels, and every other kind an agent applied (a feature's
/// TracingPolicy, CRDs) by the watches started for it
/// (host/operator/src/watches.rs), which feed `applied_kinds`. Its own
/// status writes change neither the generation nor the validation run, and
/// so trigger nothing.
pub async fn run(
    ctx: Arc<Context>,
    namespace: Option<String>,
    applied_kinds: impl futures::Stream<Item = ObjectRef<SecurityAgent>> + Send + 'static,
) {
    let client = ctx.client.clone();
    let ns = namespace.as_deref();
    let agents: Api<SecurityAgent> = api_for(&client, ns);
    let (reader, writer) = reflector::store();
    let trigger = watcher(agents, watcher::Config::default())
        .default_backoff()
        .reflect(writer)
        .applied_objects()
        .predicate_filter(generation_or_validation_run, Default::default());
    let config =
        watcher::Config::default().labels(&format!("{}={}", secop_engine::MANAGED_BY_LABEL, secop_engine::MANAGED_BY));
    // Metadata-only watches: owner references and labels are all that map a
    // change to its agent, and full objects (ConfigMaps with collector
    // configs, pod templates) would cost memory for nothing.
    fn meta<K>(
        api: Api<PartialObjectMeta<K>>,
        config: &watcher::Config,
    ) -> impl futures::Stream<Item = Result<PartialObjectMeta<K>, watcher::Error>> + Send + 'static
    where
        K: Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + Sync + 'static,
    {
        watcher(api, config.clone()).default_backoff().touched_objects()
    }
    Controller::for_stream(trigger, reader)
        .owns_stream(meta(api_for::<PartialObjectMeta<DaemonSet>>(&client, ns), &config))
        .owns_stream(meta(api_for::<PartialObjectMeta<Deployment>>(&client, ns), &config))
        .owns_stream(meta(api_for::<PartialObjectMeta<ConfigMap>>(&client, ns), &config))
        .owns_stream(meta(api_for::<PartialObjectMeta<CronJob>>(&client, ns), &config))
        .owns_stream(meta(api_for::<PartialObjectMeta<Service>>(&client, ns), &config))
        .owns_stream(meta(api_for::<PartialObjectMeta<ServiceAccount>>(&client, ns), &config))
        .owns_stream(meta(api_for::<PartialObjectMeta<Role>>(&client, ns), &config))
        .owns_stream(meta(api_for::<PartialObjectMeta<RoleBinding>>(&client, ns), &config))
        .owns_stream(meta(api_for::<PartialObjectMeta<NetworkPolicy>>(&client, ns), &config))
        .watches_stream(meta(Api::<PartialObjectMeta<ClusterRole>>::all(client.clone()), &config), owner_of)
        .watches_stream(meta(Api::<PartialObjectMeta<ClusterRoleBinding>>::all(client.clone()), &config), owner_of)
        .reconcile_on(applied_kinds)
        .shutdown_on_signal()
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            match result {
                Ok((object, _)) => tracing::debug!(agent = %object.name, "reconciled"),
                Err(e) => tracing::debug!("reconcile: {e}"),
            }
        })
        .await;
}

/// The event reporter of this replica.
pub fn reporter(identity: &str) -> Reporter {
    Reporter { controller: "security-operator".into(), instance: Some(identity.to_string()) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_back_off_per_agent_and_start_over_after_a_success() {
        let retries = Retries::default();
        let id = |namespace: &str, name: &str| AgentId { namespace: namespace.into(), name: name.into() };
        let waits: Vec<u64> = (0..9).map(|_| retries.failed(&id("a", "x")).as_secs()).collect();
        assert_eq!(waits, [5, 10, 20, 40, 80, 160, 300, 300, 300]);
        assert_eq!(retries.failed(&id("b", "y")).as_secs(), 5, "per agent");
        retries.succeeded(&id("a", "x"));
        assert_eq!(retries.failed(&id("a", "x")).as_secs(), 5);
        assert_eq!(backoff(u32::MAX), RETRY_MAX);
    }
}
