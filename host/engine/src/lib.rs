//! From a `SecurityAgent` to its desired state.
//!
//! The data path, top to bottom ([`render`]):
//!   1. CR → features: each enabled feature's module, in priority order.
//!   2. features → objects: configure + contribute in a fresh sandbox each;
//!      every object is checked (scope, namespace, grant) before it counts.
//!   3. collector configs: the host writes both OTel configs from every
//!      feature's `otel-config` into the pipeline feature's ConfigMaps.
//!   4. overrides: `nodeAgent`, then per tool.
//!
//! Applying and status are the operator's; offline render prints the result.
//!
//! A feature that fails contributes nothing and gets an error naming it and
//! the cause; the other features are unaffected (the operator then keeps the
//! failed feature's previously applied objects).

pub mod instance;
pub mod objects;
pub mod otel;
pub mod overrides;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use secop_api::{SecurityAgent, SpecError};
use secop_feature_sdk::model as m;
use secop_policy::{ClusterPolicy, Power, Violation};
use secop_runtime::{CallError, ClusterAccess, Limits, LoadError, Module, ReadableObject, Runtime};

pub use crate::instance::{FeatureInstance, NativeFactory};
use serde_json::{Value, json};

use crate::objects::{Admission, Grant, ObjectKey, ObjectRejection, Scopes};

/// Labels the host puts on everything it manages, for pruning and audit.
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
pub const MANAGED_BY: &str = "security-operator";
pub const OWNER_LABEL: &str = "security.example.io/owner";
pub const OWNER_NAMESPACE_LABEL: &str = "security.example.io/owner-namespace";
pub const FEATURE_LABEL: &str = "security.example.io/feature";

/// The operator image used when none is configured (Jobs run `secop`).
pub const DEFAULT_OPERATOR_IMAGE: &str = "ghcr.io/example/security-operator:0.1.0";

/// Where a feature's code comes from.
#[derive(Clone)]
pub enum Entry {
    /// A WASM component, run in the sandbox (the operator's only kind).
    Wasm(Module),
    /// The same feature compiled into the host (benchmarks and tests).
    Native { metadata: m::Metadata, factory: NativeFactory },
}

impl Entry {
    pub fn metadata(&self) -> &m::Metadata {
        match self {
            Entry::Wasm(module) => &module.metadata,
            Entry::Native { metadata, .. } => metadata,
        }
    }

    /// sha256 of the component; None for native features.
    pub fn digest(&self) -> Option<&str> {
        match self {
            Entry::Wasm(module) => Some(&module.digest),
            Entry::Native { .. } => None,
        }
    }
}

/// The loaded feature modules by feature name.
pub struct Registry {
    runtime: Arc<Runtime>,
    modules: BTreeMap<String, Entry>,
    memo: Memo,
}

/// A module that failed to load at startup, kept so status can report it.
#[derive(Debug)]
pub struct RegistryError {
    pub feature: String,
    pub error: LoadError,
}

impl Registry {
    /// A registry with the seven embedded built-in modules.
    pub fn with_builtins(runtime: Arc<Runtime>) -> Result<Self, RegistryError> {
        let mut registry = Self { runtime, modules: BTreeMap::new(), memo: Memo::default() };
        for (id, bytes) in secop_builtin::MODULES {
            let module =
                registry.runtime.load(id, bytes).map_err(|error| RegistryError { feature: id.to_string(), error })?;
            registry.modules.insert(id.to_string(), Entry::Wasm(module));
        }
        Ok(registry)
    }

    /// An empty registry (tests, author tooling).
    pub fn empty(runtime: Arc<Runtime>) -> Self {
        Self { runtime, modules: BTreeMap::new(), memo: Memo::default() }
    }

    pub fn runtime(&self) -> &Arc<Runtime> {
        &self.runtime
    }

    /// Load `bytes` and register it under the id it declares (replacing a
    /// module of the same id). Returns that id.
    pub fn load(&mut self, origin: &str, bytes: &[u8]) -> Result<String, LoadError> {
        let module = self.runtime.load(origin, bytes)?;
        let id = module.metadata.id.clone();
        self.modules.insert(id.clone(), Entry::Wasm(module));
        Ok(id)
    }

    pub fn insert(&mut self, module: Module) {
        self.modules.insert(module.metadata.id.clone(), Entry::Wasm(module));
    }

    /// Register a natively compiled feature under the id it declares.
    pub fn insert_native(&mut self, factory: NativeFactory) {
        let metadata = factory().metadata();
        self.modules.insert(metadata.id.clone(), Entry::Native { metadata, factory });
    }

    pub fn get(&self, name: &str) -> Option<&Entry> {
        self.modules.get(name)
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.modules.keys().map(String::as_str)
    }
}

/// Why a feature produced nothing in this render.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FeatureError {
    #[error("unknown feature (available: {available})")]
    Unknown { available: String },
    #[error("invalid config: {0}")]
    Config(m::ConfigError),
    #[error("{0}")]
    Sandbox(#[from] CallError),
    #[error("contribute failed: {0}")]
    Contribute(String),
    #[error("rejected {0}")]
    Rejected(ObjectRejection),
    #[error("object {object} is also contributed by feature `{other}`")]
    Conflict { object: String, other: String },
    #[error("a second collector (the first is feature `{other}`)")]
    SecondCollector { other: String },
    /// Something other than an object breaks the cluster policy (the
    /// module's source, a log path its receiver tails).
    #[error("{0}")]
    Policy(Violation),
    /// The module the spec names could not be used (fetch, digest, load).
    #[error("{message}")]
    Module { reason: &'static str, message: String },
}

impl FeatureError {
    /// Stable reason label (condition reason, metric label).
    pub fn reason(&self) -> &'static str {
        match self {
            FeatureError::Unknown { .. } => "UnknownFeature",
            FeatureError::Config(_) => "InvalidConfig",
            FeatureError::Sandbox(e) => e.reason(),
            FeatureError::Contribute(_) => "ContributeFailed",
            FeatureError::Rejected(r) if r.rule.is_some() => "PolicyViolation",
            FeatureError::Rejected(_) => "ObjectRejected",
            FeatureError::Policy(_) => "PolicyViolation",
            FeatureError::Conflict { .. } => "ObjectConflict",
            FeatureError::SecondCollector { .. } => "SecondCollector",
            FeatureError::Module { reason, .. } => reason,
        }
    }
}

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

/// Why nothing of an agent can be rendered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RenderError {
    #[error(transparent)]
    Spec(#[from] SpecError),
    #[error(transparent)]
    Policy(#[from] Violation),
}

impl RenderError {
    /// The condition reason (and Event reason).
    pub fn reason(&self) -> &'static str {
        match self {
            RenderError::Spec(_) => "InvalidSpec",
            RenderError::Policy(_) => "PolicyViolation",
        }
    }
}

/// Inputs that do not come from the CR itself.
pub struct RenderOptions {
    pub operator_image: String,
    pub cluster: Arc<dyn ClusterAccess>,
    /// Reuse a feature's output while its module, config, limits and
    /// context are unchanged (see [`Memo`]). Off only to measure the full
    /// computation.
    pub memoize: bool,
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
struct Output {
    diagnostics: Vec<m::Diagnostic>,
    receiver: Option<m::OtelReceiver>,
    collector: Option<m::CollectorSlots>,
    /// The contributed documents, parsed; or the first unparseable one.
    parsed: Result<Vec<objects::Parsed>, ObjectRejection>,
}

/// Outputs of features, reused while the module, config, limits and
/// context are unchanged: a feature's calls are a function of those inputs,
/// so a reconcile of an unchanged agent runs no feature code at all. One
/// entry per (agent, feature), replaced on change; failures are not kept.
#[derive(Default)]
pub struct Memo {
    entries: Mutex<HashMap<MemoSlot, (String, Arc<Output>)>>,
}

/// (agent `namespace/name`, feature): one memoized output each.
type MemoSlot = (String, String);

impl Memo {
    fn get(&self, slot: &MemoSlot, key: &str) -> Option<Arc<Output>> {
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries.get(slot).filter(|(k, _)| k == key).map(|(_, o)| o.clone())
    }

    /// The last good output of a feature, whatever its inputs were.
    fn last_good(&self, slot: &MemoSlot) -> Option<Arc<Output>> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner()).get(slot).map(|(_, o)| o.clone())
    }

    fn put(&self, slot: MemoSlot, key: String, output: Arc<Output>) {
        self.entries.lock().unwrap_or_else(|e| e.into_inner()).insert(slot, (key, output));
    }

    /// Forget one feature's output for an agent: the module that produced
    /// it was rolled back, so it must not stand in later.
    pub fn forget(&self, agent_id: &str, feature: &str) {
        self.entries.lock().unwrap_or_else(|e| e.into_inner()).remove(&(agent_id.to_string(), feature.to_string()));
    }

    /// Forget one agent's outputs (`namespace/name`; it was deleted).
    pub fn forget_agent(&self, agent_id: &str) {
        self.entries.lock().unwrap_or_else(|e| e.into_inner()).retain(|(agent, _), _| agent != agent_id);
    }

    /// Forget everything (benchmarks, module swaps are keyed anyway).
    pub fn clear(&self) {
        self.entries.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }
}

impl Registry {
    pub fn memo(&self) -> &Memo {
        &self.memo
    }
}

fn memo_key(entry: &Entry, limits: Limits, config: &str, ctx: &m::Context) -> String {
    format!(
        "{}\n{:?}\n{config}\n{}",
        entry.digest().unwrap_or("native"),
        limits,
        serde_json::to_string(ctx).unwrap_or_default()
    )
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
    // 0. The cluster policy, before any feature code runs.
    options.policy.check_agent(agent)?;
    let ctx = context(agent, options);
    let agent_id = format!("{}/{}", ctx.namespace, ctx.agent_name);
    let mut reports: Vec<FeatureReport> = agent
        .spec
        .features
        .iter()
        .map(|f| {
            // A feature whose module failed keeps the identity (priority,
            // condition type) of the built-in module of that name.
            let running = entry_for(registry, options, &f.name).ok().flatten();
            let entry = running.or_else(|| registry.get(&f.name));
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
        .collect();

    // 1. Enabled features in priority order (ties by name, for stability).
    let mut order: Vec<usize> = (0..reports.len()).filter(|&i| reports[i].enabled).collect();
    order.sort_by(|&a, &b| (reports[a].priority, &reports[a].name).cmp(&(reports[b].priority, &reports[b].name)));

    // 2. Configure and contribute, each in its own sandbox (or from the memo).
    let mut outputs: Vec<(usize, Output, String)> = vec![];
    // Written once the outputs are admitted: the memo's "last good" output
    // stands in for a failed feature, so it must be one that was accepted.
    let mut memo_writes: Vec<(usize, MemoSlot, String, Arc<Output>)> = vec![];
    for i in order {
        let spec = &agent.spec.features[i];
        let entry = match entry_for(registry, options, &spec.name) {
            Ok(Some(entry)) => entry,
            Ok(None) => {
                // ctem_validation is configured through spec.tests, not listed.
                let available =
                    registry.names().filter(|n| *n != secop_api::VALIDATION_FEATURE).collect::<Vec<_>>().join(", ");
                reports[i].error = Some(FeatureError::Unknown { available });
                continue;
            }
            Err(module_error) => {
                reports[i].error = Some(module_error.clone());
                if let Some(last) = stand_in(registry, options, &agent_id, &spec.name) {
                    reports[i].stale = true;
                    reports[i].receiver = last.receiver.clone();
                    outputs.push((i, (*last).clone(), String::new()));
                }
                continue;
            }
        };
        let config = spec.config.as_ref().map_or_else(|| "{}".to_string(), Value::to_string);
        let limits = limits_of(spec);
        let slot = (agent_id.clone(), spec.name.clone());
        let key = memo_key(entry, limits, &config, &ctx);
        let started = std::time::Instant::now();
        let cached = if options.memoize { registry.memo.get(&slot, &key) } else { None };
        let outcome = match &cached {
            Some(output) => Ok((**output).clone()),
            None => run_feature(registry, entry, &spec.name, limits, &config, &ctx, options),
        };
        reports[i].call_time = started.elapsed();
        match outcome {
            Ok(output) => {
                if options.memoize && cached.is_none() {
                    memo_writes.push((i, slot, key, Arc::new(output.clone())));
                }
                reports[i].diagnostics = output.diagnostics.clone();
                reports[i].receiver = output.receiver.clone();
                outputs.push((i, output, config));
            }
            Err((diagnostics, error)) => {
                reports[i].diagnostics = diagnostics;
                reports[i].error = Some(error);
                if let Some(last) = stand_in(registry, options, &agent_id, &spec.name) {
                    reports[i].stale = true;
                    reports[i].receiver = last.receiver.clone();
                    outputs.push((i, (*last).clone(), config));
                }
            }
        }
    }

    // Kinds defined by contributed CRDs are known before any object is
    // admitted, so custom resources get their scope right.
    let mut scopes = Scopes::new();
    let mut kinds_by_feature: BTreeMap<usize, BTreeSet<(String, String)>> = BTreeMap::new();
    for (index, output, _) in &outputs {
        if let Ok(parsed) = &output.parsed {
            for p in parsed.iter().filter(|p| p.group == "apiextensions.k8s.io" && p.kind == "CustomResourceDefinition")
            {
                if let Some(kind) = scopes.learn_crd(&p.value) {
                    kinds_by_feature.entry(*index).or_default().insert(kind);
                }
            }
        }
    }

    // Admit objects feature by feature; a feature with any rejected object
    // contributes nothing (all or nothing).
    let mut desired: BTreeMap<ObjectKey, Value> = BTreeMap::new();
    let mut owners: BTreeMap<ObjectKey, String> = BTreeMap::new();
    let mut live = vec![];
    let mut collector: Option<(String, m::CollectorSlots)> = None;
    for (index, output, config) in outputs {
        let report = &mut reports[index];
        let mut parsed = match output.parsed {
            Ok(parsed) => parsed,
            Err(r) => {
                report.error = Some(FeatureError::Rejected(r));
                report.receiver = None;
                continue;
            }
        };
        let grant = Grant::with_extra(&[]);
        let power = match power_for(options, index, &report.name) {
            Ok(power) => power,
            Err(violation) => {
                report.error = Some(FeatureError::Policy(violation));
                report.receiver = None;
                continue;
            }
        };
        let admission = Admission {
            namespace: &ctx.namespace,
            scopes: &scopes,
            grant: &grant,
            policy: &options.policy,
            power,
            operator_image: &ctx.operator_image,
            own_kinds: kinds_by_feature.remove(&index).unwrap_or_default(),
            own_roles: objects::own_roles(&parsed),
            own_service_accounts: objects::own_service_accounts(&parsed),
        };
        let mut admitted: Vec<(ObjectKey, Value)> = vec![];
        let mut failure = check_receiver(&options.policy, output.receiver.as_ref()).err().map(FeatureError::Policy);
        for p in parsed.iter_mut().filter(|_| failure.is_none()) {
            match objects::admit(p, &admission) {
                Ok(key) => {
                    if let Some(other) = owners.get(&key) {
                        failure = Some(FeatureError::Conflict { object: key.to_string(), other: other.clone() });
                        break;
                    }
                    if admitted.iter().any(|(k, _)| k == &key) {
                        failure = Some(FeatureError::Rejected(ObjectRejection {
                            index: p.index,
                            object: Some(key.to_string()),
                            reason: "contributed twice".into(),
                            rule: None,
                        }));
                        break;
                    }
                    admitted.push((key, std::mem::take(&mut p.value)));
                }
                Err(r) => {
                    failure = Some(FeatureError::Rejected(r));
                    break;
                }
            }
        }
        if failure.is_none()
            && let Some(slots) = output.collector
        {
            match &collector {
                Some((other, _)) => failure = Some(FeatureError::SecondCollector { other: other.clone() }),
                None => collector = Some((report.name.clone(), slots)),
            }
        }
        if let Some(e) = failure {
            if !report.stale {
                report.error = Some(e);
            }
            report.receiver = None;
            continue;
        }
        let spec = &agent.spec.features[index];
        // A stale feature's objects stay, but it is not assessed: its
        // condition is its error.
        if !report.stale {
            live.push(LiveFeature {
                name: report.name.clone(),
                entry: entry_for(registry, options, &report.name)
                    .ok()
                    .flatten()
                    .expect("a rendered feature has an entry")
                    .clone(),
                limits: limits_of(spec),
                config,
                ctx: ctx.clone(),
                readable: admitted
                    .iter()
                    .map(|(k, _)| {
                        (
                            ReadableObject {
                                api_version: k.api_version.clone(),
                                kind: k.kind.clone(),
                                name: k.name.clone(),
                            },
                            k.namespace.clone(),
                        )
                    })
                    .collect(),
            });
        }
        for (key, mut value) in admitted {
            label(&mut value, &ctx, &report.name);
            report.objects.push(key.clone());
            owners.insert(key.clone(), report.name.clone());
            desired.insert(key, value);
        }
    }

    // 3. Collector configs from every healthy feature's receiver.
    let mut warnings = vec![];
    let receivers: Vec<(String, m::OtelReceiver)> = {
        let mut by_priority: Vec<&FeatureReport> =
            reports.iter().filter(|r| (r.error.is_none() || r.stale) && r.receiver.is_some()).collect();
        by_priority.sort_by(|a, b| (a.priority, &a.name).cmp(&(b.priority, &b.name)));
        by_priority.into_iter().map(|r| (r.name.clone(), r.receiver.clone().expect("filtered"))).collect()
    };
    match &collector {
        Some((pipeline, slots)) => {
            let synthesized = otel::synthesize(&ctx, slots, &receivers);
            for (key, mut value) in otel::attach(&ctx, slots, &synthesized, &receivers, &mut desired) {
                label(&mut value, &ctx, pipeline);
                if let Some(report) = reports.iter_mut().find(|r| &r.name == pipeline) {
                    report.objects.push(key.clone());
                }
                owners.insert(key.clone(), pipeline.clone());
                desired.insert(key, value);
            }
        }
        None if !receivers.is_empty() => warnings.push(format!(
            "features {} produce events but no collector feature (otel_pipeline) is enabled: their events are not shipped",
            receivers.iter().map(|(n, _)| format!("`{n}`")).collect::<Vec<_>>().join(", ")
        )),
        None => {}
    }

    // 4. Overrides.
    let mut objects: Vec<(ObjectKey, Value)> = desired.into_iter().collect();
    warnings.extend(overrides::apply(agent.spec.overrides.as_ref(), &mut objects)?);

    // Only a render that can be applied makes its outputs "last good".
    for (index, slot, key, output) in memo_writes {
        if reports[index].error.is_none() {
            registry.memo.put(slot, key, output);
        }
    }

    Ok(Rendered { objects, owners, features: reports, warnings, live })
}

/// Every path a feature's log receiver tails lies under a log root: the
/// host mounts its directory into the node collector.
fn check_receiver(policy: &ClusterPolicy, receiver: Option<&m::OtelReceiver>) -> Result<(), Violation> {
    for (i, glob) in receiver.map(|r| r.include.as_slice()).unwrap_or_default().iter().enumerate() {
        policy.check_log_path(glob, &format!("otel-config include[{i}]"))?;
    }
    Ok(())
}

/// With `keep_last_good`, the last good output of a failed feature, to
/// stand in for it: its objects stay applied while it reports its error.
fn stand_in(registry: &Registry, options: &RenderOptions, agent_id: &str, name: &str) -> Option<Arc<Output>> {
    options.keep_last_good.then(|| registry.memo.last_good(&(agent_id.to_string(), name.to_string()))).flatten()
}

/// A fresh instance of a registry entry.
fn instantiate(
    registry: &Registry,
    entry: &Entry,
    name: &str,
    limits: Limits,
    cluster: Arc<dyn ClusterAccess>,
    namespace: &str,
) -> Result<FeatureInstance, CallError> {
    Ok(match entry {
        Entry::Wasm(module) => {
            FeatureInstance::Wasm(registry.runtime().instantiate(module, limits, cluster, namespace)?)
        }
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
    let mut instance = instantiate(registry, entry, name, limits, options.cluster.clone(), &ctx.namespace)
        .map_err(|e| (vec![], e.into()))?;
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
                let mut instance =
                    instantiate(registry, &f.entry, &f.name, f.limits, cluster.clone(), &f.ctx.namespace)?;
                if let Err(e) = instance.configure(&f.config, &f.ctx)? {
                    return Ok(unknown("InvalidConfig", format!("configure failed during assess: {e}")));
                }
                instance.set_readable(f.readable.iter().cloned());
                instance.assess()
            })();
            let condition = condition.unwrap_or_else(|e: CallError| unknown(e.reason(), format!("assess failed: {e}")));
            (f.name.clone(), condition)
        })
        .collect()
}
