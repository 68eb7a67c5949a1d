//! The render, as the steps of the data path ([`render`]): CR → features
//! ([`run_features`]) → desired state ([`admit_outputs`],
//! [`attach_collector_configs`]) → overrides ([`apply_overrides`]).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use secop_api::{AgentId, SecurityAgent};
use secop_feature_sdk::model as m;
use secop_policy::{ClusterPolicy, Power, Violation};
use secop_runtime::{CallError, ClusterAccess, Limits, ReadableObject};
use serde_json::{Value, json};

use crate::error::{FeatureError, RenderError};
use crate::instance::FeatureInstance;
use crate::memo::{GoodModule, Inputs};
use crate::objects::{self, Admission, Grant, ObjectKey, ObjectRejection, Scopes};
use crate::otel::TelemetryTls;
use crate::registry::{Entry, Registry};
use crate::{DEFAULT_OPERATOR_IMAGE, FEATURE_LABEL, MANAGED_BY, MANAGED_BY_LABEL, OWNER_LABEL, OWNER_NAMESPACE_LABEL};
use crate::{otel, overrides};

/// What happened to one feature.
#[derive(Debug, Clone)]
pub struct FeatureReport {
    pub name: String,
    pub enabled: bool,
    pub priority: u32,
    pub module_digest: Option<String>,
    pub diagnostics: Vec<m::Diagnostic>,
    pub error: Option<FeatureError>,
    pub receiver: Option<m::OtelReceiver>,
    /// Keys of the objects this feature owns in the desired state.
    pub objects: Vec<ObjectKey>,
    /// Time spent in the feature's calls (instantiate to collector).
    pub call_time: Duration,
    /// The readiness condition the feature reports (from its metadata).
    pub condition_type: String,
    /// The feature failed and its last good output (from the memo) stands in.
    pub stale: bool,
}

impl FeatureReport {
    /// `name: message` of the error, for CLI output and logs.
    pub fn error_line(&self) -> Option<String> {
        self.error.as_ref().map(|e| format!("feature `{}`: {e}", self.name))
    }
}

/// A feature whose objects made it into the desired state: enough to
/// create a fresh, configured instance for `assess` after apply.
pub struct LiveFeature {
    pub name: String,
    entry: Entry,
    limits: Limits,
    config: String,
    ctx: m::Context,
    readable: Vec<(ReadableObject, Option<String>)>,
}

/// The desired state of one agent.
pub struct Rendered {
    /// Objects in apply order, each labelled with its owner and feature.
    pub objects: Vec<(ObjectKey, Value)>,
    /// Feature of each object.
    pub owners: BTreeMap<ObjectKey, String>,
    /// One report per feature named in the spec, in spec order.
    pub features: Vec<FeatureReport>,
    /// Warnings not tied to a feature (e.g. an override that matches nothing).
    pub warnings: Vec<String>,
    /// Successfully configured features, for `assess` after apply.
    pub live: Vec<LiveFeature>,
    /// The collectors' mutual-TLS credential the objects mount, for the
    /// operator to issue before it applies them (none without a collector).
    pub telemetry: Option<TelemetryTls>,
}

impl Rendered {
    pub fn failed(&self) -> impl Iterator<Item = &FeatureReport> {
        self.features.iter().filter(|f| f.error.is_some())
    }
}

/// A module an agent names in `features[].module`, and the reference it
/// was fetched by: the cluster policy grants by source.
#[derive(Clone)]
pub struct AgentModule {
    pub image: String,
    pub entry: Entry,
}

impl From<GoodModule> for AgentModule {
    fn from(module: GoodModule) -> Self {
        Self { image: module.image.unwrap_or_default(), entry: module.entry }
    }
}

/// Inputs that do not come from the CR itself.
pub struct RenderOptions {
    pub operator_image: String,
    pub cluster: Arc<dyn ClusterAccess>,
    /// Reuse a feature's output while its module, config, limits and
    /// context are unchanged (see [`crate::memo::Memo`]). Off only to measure the full
    /// computation.
    pub memoize: bool,
    /// Remember the outputs computed in this render as the agent's last
    /// good ones. Off for admission review (host/operator/src/admission.rs):
    /// a spec that may still be refused must never stand in for a failing
    /// feature later, nor evict the output of the spec that is applied.
    pub remember: bool,
    /// When a feature fails, keep its last good output in the desired state
    /// (the operator: nothing applied is lost to a bad config or module).
    /// The feature still reports its error.
    pub keep_last_good: bool,
    /// Per-agent modules (from `features[].module`), in place of the
    /// registry's entry of the same name; an `Err` fails that feature
    /// with the reason instead of silently running the built-in module.
    pub modules: BTreeMap<String, Result<AgentModule, FeatureError>>,
    /// What the cluster admin allows (the default policy offline).
    pub policy: Arc<ClusterPolicy>,
}

impl Default for RenderOptions {
    fn default() -> Self {
        Self {
            operator_image: DEFAULT_OPERATOR_IMAGE.to_string(),
            cluster: Arc::new(secop_runtime::NoCluster),
            memoize: true,
            remember: true,
            keep_last_good: false,
            modules: BTreeMap::new(),
            policy: Arc::new(ClusterPolicy::default()),
        }
    }
}

fn context(agent: &SecurityAgent, options: &RenderOptions) -> m::Context {
    let namespace = agent.metadata.namespace.clone().unwrap_or_else(|| "default".into());
    let name = agent.metadata.name.clone().unwrap_or_default();
    let es = agent.spec.output.elasticsearch.as_ref();
    let indices = es.map(|e| e.indices.clone()).unwrap_or_default();
    m::Context {
        cluster_name: agent.spec.global.cluster_name.clone().unwrap_or_else(|| name.clone()),
        namespace,
        agent_name: name,
        operator_image: options.operator_image.clone(),
        output: m::OutputSettings {
            endpoints: es.map(|e| e.endpoints.clone()).unwrap_or_default(),
            auth_secret: es.and_then(|e| e.auth_secret_ref.as_ref()).map(|s| m::SecretRef { name: s.name.clone() }),
            ca_secret: es.and_then(|e| e.ca_secret_ref.as_ref()).map(|s| m::SecretRef { name: s.name.clone() }),
            index_inventory: indices.inventory,
            index_events: indices.events,
            index_vulnerabilities: indices.vulnerabilities,
        },
    }
}

fn limits_of(spec: &secop_api::FeatureSpec) -> Limits {
    let mut limits = Limits::default();
    if let Some(l) = &spec.limits {
        if let Some(ms) = l.timeout_millis {
            limits.deadline = Duration::from_millis(u64::from(ms));
        }
        if let Some(mib) = l.memory_mib {
            limits.memory_bytes = (mib as usize) << 20;
        }
    }
    limits
}

/// What a feature produced from its calls, before cross-feature checks.
#[derive(Clone)]
pub(crate) struct Output {
    diagnostics: Vec<m::Diagnostic>,
    receiver: Option<m::OtelReceiver>,
    collector: Option<m::CollectorSlots>,
    /// The contributed documents, parsed; or the first unparseable one.
    parsed: Result<Vec<objects::Parsed>, ObjectRejection>,
}

/// The entry a feature runs: the agent's own module, else the registry's.
fn entry_for<'a>(
    registry: &'a Registry,
    options: &'a RenderOptions,
    name: &str,
) -> Result<Option<&'a Entry>, &'a FeatureError> {
    match options.modules.get(name) {
        Some(Ok(module)) => Ok(Some(&module.entry)),
        Some(Err(e)) => Err(e),
        None => Ok(registry.get(name)),
    }
}

/// What a feature's objects may be: the built-in modules (and the
/// registry's local files) everything the engine admits; an agent's module
/// what the cluster policy grants its source, and nothing from a source
/// the policy does not name (it changed since the module was fetched).
fn power_for(options: &RenderOptions, spec_index: usize, name: &str) -> Result<Power, Violation> {
    match options.modules.get(name) {
        Some(Ok(module)) => options.policy.module_power(&module.image).ok_or_else(|| Violation {
            field: format!("spec.features[{spec_index}].module.image"),
            rule: "modules.allowed",
            message: format!("`{}` (running) is not from a module source the cluster admin allows", module.image),
        }),
        _ => Ok(Power::BUILT_IN),
    }
}

/// `spec.tests` as the entry of the built-in `ctem_validation` feature
/// (features-wasm/ctem_validation): the scenario runner is a feature like
/// any other (sandboxed, memoized, its objects pruned when tests are
/// turned off); the host only hands it `spec.tests` as its config.
fn with_validation_feature(agent: &SecurityAgent) -> std::borrow::Cow<'_, SecurityAgent> {
    match &agent.spec.tests {
        Some(tests) if tests.enabled => {
            let mut agent = agent.clone();
            let mut config = serde_json::json!({ "scenarios": tests.scenarios });
            if let Some(schedule) = &tests.schedule {
                config["schedule"] = Value::String(schedule.clone());
            }
            if let Some(image) = &tests.image {
                config["image"] = Value::String(image.clone());
            }
            agent.spec.features.push(secop_api::FeatureSpec {
                name: secop_api::VALIDATION_FEATURE.to_string(),
                enabled: true,
                config: Some(config),
                limits: None,
                module: None,
            });
            std::borrow::Cow::Owned(agent)
        }
        _ => std::borrow::Cow::Borrowed(agent),
    }
}

/// Compute the desired state of `agent`. Spec-level errors (bad overrides)
/// fail the whole render: nothing may be half-applied. Feature errors are
/// reported per feature.
///
/// Feature calls are synchronous, and so is WASI in the sandbox: inside a
/// tokio runtime call this (and [`assess`]) from a blocking thread
/// (`spawn_blocking`), never from an async task.
pub fn render(registry: &Registry, agent: &SecurityAgent, options: &RenderOptions) -> Result<Rendered, RenderError> {
    secop_api::validate(&agent.spec)?;
    let agent = &with_validation_feature(agent);
    // The cluster policy, before any feature code runs.
    options.policy.check_agent(agent)?;
    let run = Run { registry, options, agent, ctx: context(agent, options), agent_id: AgentId::of(agent) };
    let mut reports = initial_reports(&run);
    let (outputs, new_outputs) = run_features(&run, &mut reports);
    let mut admitted = admit_outputs(&run, &mut reports, outputs);
    let mut warnings = attach_collector_configs(&run.ctx, &mut reports, &mut admitted);
    let objects = apply_overrides(agent, admitted.desired, &mut warnings)?;
    remember_good_outputs(&run, &reports, new_outputs);
    let telemetry = admitted.collector.as_ref().map(|c| TelemetryTls::for_slots(&c.slots));
    Ok(Rendered { objects, owners: admitted.owners, features: reports, warnings, live: admitted.live, telemetry })
}

/// The fixed inputs of one render.
struct Run<'a> {
    registry: &'a Registry,
    options: &'a RenderOptions,
    agent: &'a SecurityAgent,
    ctx: m::Context,
    agent_id: AgentId,
}

/// A feature's output waiting for admission: from its calls in this
/// render, from the memo, or its last good output standing in.
struct FeatureOutput {
    /// Index of the feature in the spec (and in the reports).
    index: usize,
    output: Output,
    config: String,
}

/// An output computed in this render, remembered once it is admitted
/// without error.
struct NewOutput {
    index: usize,
    inputs: Inputs,
    output: Arc<Output>,
}

/// The desired state as it is assembled.
#[derive(Default)]
struct Admitted {
    desired: BTreeMap<ObjectKey, Value>,
    /// Feature of each object.
    owners: BTreeMap<ObjectKey, String>,
    live: Vec<LiveFeature>,
    collector: Option<Collector>,
}

/// The feature that declares the collector, and its slots.
struct Collector {
    feature: String,
    slots: m::CollectorSlots,
}

/// One report per feature named in the spec, before anything runs. A
/// feature whose module failed keeps the identity (priority, condition
/// type) of the built-in module of that name.
fn initial_reports(run: &Run) -> Vec<FeatureReport> {
    run.agent
        .spec
        .features
        .iter()
        .map(|f| {
            let running = entry_for(run.registry, run.options, &f.name).ok().flatten();
            let entry = running.or_else(|| run.registry.get(&f.name));
            FeatureReport {
                name: f.name.clone(),
                enabled: f.enabled,
                priority: entry.map_or(u32::MAX, |e| e.metadata().priority),
                module_digest: running.and_then(|e| e.digest().map(str::to_string)),
                diagnostics: vec![],
                error: None,
                receiver: None,
                objects: vec![],
                call_time: Duration::ZERO,
                condition_type: entry
                    .map_or_else(|| format!("{}Ready", f.name), |e| e.metadata().condition_type.clone()),
                stale: false,
            }
        })
        .collect()
}

/// CR → features: configure and contribute every enabled feature in
/// priority order (ties by name, for stability), each in its own sandbox,
/// or from the memo while its inputs are unchanged.
fn run_features(run: &Run, reports: &mut [FeatureReport]) -> (Vec<FeatureOutput>, Vec<NewOutput>) {
    let mut order: Vec<usize> = (0..reports.len()).filter(|&i| reports[i].enabled).collect();
    order.sort_by(|&a, &b| (reports[a].priority, &reports[a].name).cmp(&(reports[b].priority, &reports[b].name)));
    let mut outputs = vec![];
    let mut new_outputs = vec![];
    for index in order {
        let spec = &run.agent.spec.features[index];
        let report = &mut reports[index];
        let entry = match entry_for(run.registry, run.options, &spec.name) {
            Ok(Some(entry)) => entry,
            Ok(None) => {
                // ctem_validation is configured through spec.tests, not listed.
                let available =
                    run.registry.names().filter(|n| *n != secop_api::VALIDATION_FEATURE).collect::<Vec<_>>().join(", ");
                report.error = Some(FeatureError::Unknown { available });
                continue;
            }
            Err(module_error) => {
                report.error = Some(module_error.clone());
                outputs.extend(stand_in(run, index, report, String::new()));
                continue;
            }
        };
        let config = spec.config.as_ref().map_or_else(|| "{}".to_string(), Value::to_string);
        let limits = limits_of(spec);
        let inputs = Inputs::new(entry, limits, &config, &run.ctx);
        let started = Instant::now();
        let cached =
            if run.options.memoize { run.registry.memo().output(&run.agent_id, &spec.name, &inputs) } else { None };
        let outcome = match &cached {
            Some(output) => Ok((**output).clone()),
            None => run_feature(run.registry, entry, &spec.name, limits, &config, &run.ctx, run.options),
        };
        report.call_time = started.elapsed();
        match outcome {
            Ok(output) => {
                if run.options.memoize && run.options.remember && cached.is_none() {
                    new_outputs.push(NewOutput { index, inputs, output: Arc::new(output.clone()) });
                }
                report.diagnostics = output.diagnostics.clone();
                report.receiver = output.receiver.clone();
                outputs.push(FeatureOutput { index, output, config });
            }
            Err((diagnostics, error)) => {
                report.diagnostics = diagnostics;
                report.error = Some(error);
                outputs.extend(stand_in(run, index, report, config));
            }
        }
    }
    (outputs, new_outputs)
}

/// features → desired state: every object is checked (scope, namespace,
/// grant, cluster policy) before it counts, and a feature with any
/// rejected object contributes nothing (all or nothing).
fn admit_outputs(run: &Run, reports: &mut [FeatureReport], outputs: Vec<FeatureOutput>) -> Admitted {
    // Kinds defined by contributed CRDs are known before any object is
    // admitted, so custom resources get their scope right.
    let mut scopes = Scopes::new();
    let mut kinds_by_feature: BTreeMap<usize, BTreeSet<(String, String)>> = BTreeMap::new();
    for feature in &outputs {
        let Ok(parsed) = &feature.output.parsed else { continue };
        for p in parsed.iter().filter(|p| p.group == "apiextensions.k8s.io" && p.kind == "CustomResourceDefinition") {
            if let Some(kind) = scopes.learn_crd(&p.value) {
                kinds_by_feature.entry(feature.index).or_default().insert(kind);
            }
        }
    }
    let mut admitted = Admitted::default();
    for feature in outputs {
        let own_kinds = kinds_by_feature.remove(&feature.index).unwrap_or_default();
        let report = &mut reports[feature.index];
        admit_feature(run, &scopes, own_kinds, feature, report, &mut admitted);
    }
    admitted
}

/// Admit one feature's output into `admitted`, or record on its report why
/// it contributes nothing.
fn admit_feature(
    run: &Run,
    scopes: &Scopes,
    own_kinds: BTreeSet<(String, String)>,
    feature: FeatureOutput,
    report: &mut FeatureReport,
    admitted: &mut Admitted,
) {
    let FeatureOutput { index, output, config } = feature;
    let mut parsed = match output.parsed {
        Ok(parsed) => parsed,
        Err(r) => {
            report.error = Some(FeatureError::Rejected(r));
            report.receiver = None;
            return;
        }
    };
    let power = match power_for(run.options, index, &report.name) {
        Ok(power) => power,
        Err(violation) => {
            report.error = Some(FeatureError::Policy(violation));
            report.receiver = None;
            return;
        }
    };
    let grant = Grant::with_extra(&[]);
    let admission = Admission {
        namespace: &run.ctx.namespace,
        scopes,
        grant: &grant,
        policy: &run.options.policy,
        power,
        operator_image: &run.ctx.operator_image,
        own_kinds,
        own_roles: objects::own_roles(&parsed),
        own_service_accounts: objects::own_service_accounts(&parsed),
    };
    let checked = check_receiver(&run.options.policy, output.receiver.as_ref())
        .map_err(FeatureError::Policy)
        .and_then(|()| admit_objects(&mut parsed, &admission, &admitted.owners))
        .and_then(|objects| match (output.collector, &admitted.collector) {
            (Some(_), Some(other)) => Err(FeatureError::SecondCollector { other: other.feature.clone() }),
            (Some(slots), None) => {
                admitted.collector = Some(Collector { feature: report.name.clone(), slots });
                Ok(objects)
            }
            (None, _) => Ok(objects),
        });
    let objects = match checked {
        Ok(objects) => objects,
        Err(e) => {
            // A stale feature keeps reporting why it is stale.
            if !report.stale {
                report.error = Some(e);
            }
            report.receiver = None;
            return;
        }
    };
    // A stale feature's objects stay, but it is not assessed: its
    // condition is its error.
    if !report.stale {
        let spec = &run.agent.spec.features[index];
        admitted.live.push(LiveFeature {
            name: report.name.clone(),
            entry: entry_for(run.registry, run.options, &report.name)
                .ok()
                .flatten()
                .expect("a rendered feature has an entry")
                .clone(),
            limits: limits_of(spec),
            config,
            ctx: run.ctx.clone(),
            readable: objects
                .iter()
                .map(|(k, _)| {
                    let object = ReadableObject {
                        api_version: k.api_version.clone(),
                        kind: k.kind.clone(),
                        name: k.name.clone(),
                    };
                    (object, k.namespace.clone())
                })
                .collect(),
        });
    }
    for (key, mut value) in objects {
        label(&mut value, &run.ctx, &report.name);
        report.objects.push(key.clone());
        admitted.owners.insert(key.clone(), report.name.clone());
        admitted.desired.insert(key, value);
    }
}

/// One feature's objects through admission, all or nothing: the first
/// rejected object, or one already contributed (by another feature or
/// twice by this one), fails the feature.
fn admit_objects(
    parsed: &mut [objects::Parsed],
    admission: &Admission,
    owners: &BTreeMap<ObjectKey, String>,
) -> Result<Vec<(ObjectKey, Value)>, FeatureError> {
    let mut admitted: Vec<(ObjectKey, Value)> = vec![];
    for p in parsed.iter_mut() {
        let key = objects::admit(p, admission).map_err(FeatureError::Rejected)?;
        if let Some(other) = owners.get(&key) {
            return Err(FeatureError::Conflict { object: key.to_string(), other: other.clone() });
        }
        if admitted.iter().any(|(k, _)| k == &key) {
            return Err(FeatureError::Rejected(ObjectRejection {
                index: p.index,
                object: Some(key.to_string()),
                reason: "contributed twice".into(),
                rule: None,
            }));
        }
        admitted.push((key, std::mem::take(&mut p.value)));
    }
    Ok(admitted)
}

/// The host writes both collector configs from every healthy feature's
/// receiver into the collector feature's ConfigMaps (host/engine/src/otel.rs).
/// Returns the warnings of this step.
fn attach_collector_configs(ctx: &m::Context, reports: &mut [FeatureReport], admitted: &mut Admitted) -> Vec<String> {
    let receivers: Vec<(String, m::OtelReceiver)> = {
        let mut by_priority: Vec<&FeatureReport> =
            reports.iter().filter(|r| (r.error.is_none() || r.stale) && r.receiver.is_some()).collect();
        by_priority.sort_by(|a, b| (a.priority, &a.name).cmp(&(b.priority, &b.name)));
        by_priority.into_iter().map(|r| (r.name.clone(), r.receiver.clone().expect("filtered"))).collect()
    };
    let Some(Collector { feature: pipeline, slots }) = &admitted.collector else {
        if receivers.is_empty() {
            return vec![];
        }
        return vec![format!(
            "features {} produce events but no collector feature (otel_pipeline) is enabled: their events are not shipped",
            receivers.iter().map(|(n, _)| format!("`{n}`")).collect::<Vec<_>>().join(", ")
        )];
    };
    let synthesized = otel::synthesize(ctx, slots, &receivers);
    for (key, mut value) in otel::attach(ctx, slots, &synthesized, &receivers, &mut admitted.desired) {
        label(&mut value, ctx, pipeline);
        if let Some(report) = reports.iter_mut().find(|r| &r.name == pipeline) {
            report.objects.push(key.clone());
        }
        admitted.owners.insert(key.clone(), pipeline.clone());
        admitted.desired.insert(key, value);
    }
    vec![]
}

/// Overrides (`nodeAgent`, then per tool) on the desired state, which then
/// goes into apply order.
fn apply_overrides(
    agent: &SecurityAgent,
    desired: BTreeMap<ObjectKey, Value>,
    warnings: &mut Vec<String>,
) -> Result<Vec<(ObjectKey, Value)>, RenderError> {
    let mut objects: Vec<(ObjectKey, Value)> = desired.into_iter().collect();
    warnings.extend(overrides::apply(agent.spec.overrides.as_ref(), &mut objects)?);
    objects::sort_for_apply(&mut objects);
    Ok(objects)
}

/// Only a render that can be applied makes its outputs "last good".
fn remember_good_outputs(run: &Run, reports: &[FeatureReport], new_outputs: Vec<NewOutput>) {
    for NewOutput { index, inputs, output } in new_outputs {
        let report = &reports[index];
        if report.error.is_none() {
            run.registry.memo().remember_output(&run.agent_id, &report.name, inputs, output);
        }
    }
}

/// Every path a feature's log receiver tails lies under a log root: the
/// host mounts its directory into the node collector.
fn check_receiver(policy: &ClusterPolicy, receiver: Option<&m::OtelReceiver>) -> Result<(), Violation> {
    for (i, glob) in receiver.map(|r| r.include.as_slice()).unwrap_or_default().iter().enumerate() {
        policy.check_log_path(glob, &format!("otel-config include[{i}]"))?;
    }
    Ok(())
}

/// With `keep_last_good`, the last good output of a failed feature stands
/// in for it: its objects stay applied while it reports its error.
fn stand_in(run: &Run, index: usize, report: &mut FeatureReport, config: String) -> Option<FeatureOutput> {
    if !run.options.keep_last_good {
        return None;
    }
    let last = run.registry.memo().last_good_output(&run.agent_id, &report.name)?;
    report.stale = true;
    report.receiver = last.receiver.clone();
    Some(FeatureOutput { index, output: (*last).clone(), config })
}

/// A fresh instance of a registry entry.
fn instantiate(
    registry: &Registry,
    entry: &Entry,
    name: &str,
    limits: Limits,
    cluster: Arc<dyn ClusterAccess>,
) -> Result<FeatureInstance, CallError> {
    Ok(match entry {
        Entry::Wasm(module) => FeatureInstance::Wasm(registry.runtime().instantiate(module, limits, cluster)?),
        Entry::Native { factory, .. } => FeatureInstance::native(name, *factory, cluster),
    })
}

/// configure → contribute → otel-config → collector for one feature, then
/// parse what it contributed.
fn run_feature(
    registry: &Registry,
    entry: &Entry,
    name: &str,
    limits: Limits,
    config: &str,
    ctx: &m::Context,
    options: &RenderOptions,
) -> Result<Output, (Vec<m::Diagnostic>, FeatureError)> {
    let mut instance =
        instantiate(registry, entry, name, limits, options.cluster.clone()).map_err(|e| (vec![], e.into()))?;
    let diagnostics = match instance.configure(config, ctx).map_err(|e| (vec![], e.into()))? {
        Ok(d) => d,
        Err(e) => return Err((vec![], FeatureError::Config(e))),
    };
    let fail = |e: FeatureError| (diagnostics.clone(), e);
    let documents =
        instance.contribute().map_err(|e| fail(e.into()))?.map_err(|e| fail(FeatureError::Contribute(e)))?;
    let receiver = instance.otel_config().map_err(|e| fail(e.into()))?;
    let collector = instance.collector().map_err(|e| fail(e.into()))?;
    let parsed = documents.iter().enumerate().map(|(i, doc)| objects::parse(i, doc)).collect();
    Ok(Output { diagnostics, receiver, collector, parsed })
}

/// The host's labels: who manages the object, for which agent and feature.
/// The owner's namespace is a label too: cluster-scoped objects of agents
/// with the same name in two namespaces must not be confused.
fn label(object: &mut Value, ctx: &m::Context, feature: &str) {
    let labels = &mut object["metadata"]["labels"];
    if !labels.is_object() {
        *labels = json!({});
    }
    labels[MANAGED_BY_LABEL] = json!(MANAGED_BY);
    labels[OWNER_LABEL] = json!(ctx.agent_name);
    labels[OWNER_NAMESPACE_LABEL] = json!(ctx.namespace);
    labels[FEATURE_LABEL] = json!(feature);
}

/// Call `assess` on every live feature, each in a fresh instance configured
/// as in the render, reading `cluster` through its scoped view. Errors
/// become Unknown conditions that name the cause.
pub fn assess(
    registry: &Registry,
    live: &[LiveFeature],
    cluster: Arc<dyn ClusterAccess>,
) -> Vec<(String, m::Condition)> {
    live.iter()
        .map(|f| {
            let unknown = |reason: &str, message: String| m::Condition {
                type_: f.entry.metadata().condition_type.clone(),
                status: m::ConditionStatus::Unknown,
                reason: reason.to_string(),
                message: format!("feature `{}`: {message}", f.name),
            };
            let condition = (|| {
                let mut instance = instantiate(registry, &f.entry, &f.name, f.limits, cluster.clone())?;
                if let Err(e) = instance.configure(&f.config, &f.ctx)? {
                    return Ok(unknown("InvalidConfig", format!("configure failed during assess: {e}")));
                }
                instance.set_readable(f.readable.iter().cloned());
                instance.assess()
            })();
            let condition =
                condition.unwrap_or_else(|e: CallError| unknown(e.reason().as_str(), format!("assess failed: {e}")));
            (f.name.clone(), condition)
        })
        .collect()
}
