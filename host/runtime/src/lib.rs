//! The sandbox features run in.
//!
//! One [`Runtime`] per process holds the wasmtime `Engine` and `Linker`.
//! Each module is compiled once into an `InstancePre` ([`Module`]); every
//! reconcile gets a fresh `Store` and instance ([`Instance`]), so nothing a
//! feature does survives into the next reconcile.
//!
//! What a feature can reach: the `logging` and scoped `cluster` imports, and
//! a WASI context that denies everything that matters (no preopened
//! directories, no environment, no arguments, no sockets). Every call runs
//! under an epoch deadline and a memory limit; the size of what it returns is
//! capped. Any failure becomes a [`CallError`] for that feature alone.

mod cache;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use secop_api::Reason;
use secop_feature_sdk::model as m;
use sha2::{Digest, Sha256};
use wasmtime::component::{Component, HasSelf, Linker, ResourceTable};
use wasmtime::{Config, Engine, ResourceLimiter, Store, Trap};
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

pub use cache::{CompiledCache, PutError};

mod bindings {
    wasmtime::component::bindgen!({
        path: "../../wit",
        world: "feature",
    });
}

use bindings::security::feature::{cluster, logging, types as wit};

secop_feature_sdk::wit_model_conversions!(crate::bindings::security::feature::types);

/// How often the epoch advances. Deadlines are rounded up to this.
const EPOCH_TICK: Duration = Duration::from_millis(5);
/// A guest's stderr (panic messages) is kept up to this size for errors.
const STDERR_CAPACITY: usize = 16 * 1024;

/// Per-call limits of one feature. Overridable per feature in the CR.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Wall-clock budget of each exported call.
    pub deadline: Duration,
    /// Maximum linear memory of the instance.
    pub memory_bytes: usize,
    /// Maximum total size of the documents `contribute` returns.
    pub max_output_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self { deadline: Duration::from_secs(1), memory_bytes: 64 << 20, max_output_bytes: 16 << 20 }
    }
}

/// Why loading a module failed.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("module `{module}` is not WebAssembly")]
    NotWasm { module: String },
    #[error(
        "module `{module}` is a core WebAssembly module, not a component: build it for wasm32-wasip2 \
         (or wrap it with `wasm-tools component new`)"
    )]
    NotAComponent { module: String },
    #[error("module `{module}` failed to compile: {reason}")]
    Compile { module: String, reason: String },
    #[error("module `{module}` does not implement the security:feature@{host} contract: {reason}")]
    Contract { module: String, host: &'static str, reason: String },
    #[error("module `{module}` was built for contract {module_version}, this operator speaks {host}")]
    IncompatibleContract { module: String, module_version: String, host: &'static str },
    #[error("module `{module}`: {source}")]
    Call {
        module: String,
        #[source]
        source: CallError,
    },
}

impl LoadError {
    /// A short, stable label (for metrics and condition reasons).
    pub fn reason(&self) -> Reason {
        match self {
            LoadError::NotWasm { .. } => Reason::NotWasm,
            LoadError::NotAComponent { .. } => Reason::NotAComponent,
            LoadError::Compile { .. } => Reason::CompileFailed,
            LoadError::Contract { .. } => Reason::ContractMismatch,
            LoadError::IncompatibleContract { .. } => Reason::IncompatibleContract,
            LoadError::Call { source, .. } => source.reason(),
        }
    }
}

/// Why the runtime could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("wasmtime engine: {cause}")]
    Engine { cause: wasmtime::Error },
    #[error("linking the {imports} imports: {cause}")]
    Link { imports: &'static str, cause: wasmtime::Error },
    #[error("no system randomness for the cache key")]
    NoRandomness,
}

/// Why one call into a feature failed. The feature's other calls in this
/// reconcile are skipped; other features are not affected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    #[error("`{call}` exceeded its deadline of {deadline:?}")]
    Timeout { call: &'static str, deadline: Duration },
    #[error("`{call}` exceeded the memory limit of {limit_bytes} bytes")]
    MemoryLimit { call: &'static str, limit_bytes: usize },
    /// The process-wide budget of all instances together is spent (many
    /// features at once); transient, the next reconcile tries again.
    #[error(
        "`{call}` could not grow its memory: the operator's budget of {budget_bytes} bytes for all feature instances together is in use"
    )]
    MemoryBudget { call: &'static str, budget_bytes: usize },
    #[error("`{call}` trapped: {message}")]
    Trap { call: &'static str, message: String },
    #[error("`{call}` returned {bytes} bytes of output, over the limit of {limit} bytes")]
    OutputTooLarge { call: &'static str, bytes: usize, limit: usize },
    #[error("`{call}` cannot run: the instance trapped earlier in this reconcile")]
    Poisoned { call: &'static str },
    #[error("instantiation failed: {0}")]
    Instantiate(String),
}

impl CallError {
    /// A short, stable label (for metrics and condition reasons).
    pub fn reason(&self) -> Reason {
        match self {
            CallError::Timeout { .. } => Reason::Timeout,
            CallError::MemoryLimit { .. } => Reason::MemoryLimit,
            CallError::MemoryBudget { .. } => Reason::MemoryBudget,
            CallError::Trap { .. } => Reason::Trap,
            CallError::OutputTooLarge { .. } => Reason::OutputTooLarge,
            CallError::Poisoned { .. } => Reason::Poisoned,
            CallError::Instantiate(_) => Reason::InstantiateFailed,
        }
    }
}

/// The cluster, as the `cluster` import reads it. Implemented by the
/// operator (live objects) and by offline render (nothing available).
pub trait ClusterAccess: Send + Sync {
    fn get(&self, api_version: &str, kind: &str, namespace: Option<&str>, name: &str)
    -> Result<String, m::LookupError>;
}

/// No cluster: every lookup is `unavailable` (offline render).
pub struct NoCluster;

impl ClusterAccess for NoCluster {
    fn get(&self, _: &str, _: &str, _: Option<&str>, _: &str) -> Result<String, m::LookupError> {
        Err(m::LookupError::Unavailable("offline render: no cluster".to_string()))
    }
}

/// An object a feature may read back through `cluster.get`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ReadableObject {
    pub api_version: String,
    pub kind: String,
    pub name: String,
}

/// The `cluster` import's capability scoping: a feature reads only the
/// objects it contributed in this reconcile. Shared by the sandbox and by
/// natively compiled features (benchmarks, tests).
pub struct ScopedCluster {
    feature: String,
    cluster: Arc<dyn ClusterAccess>,
    /// Objects contributed in this reconcile, with their namespace (None for
    /// cluster-scoped). Reads of anything else are denied.
    readable: HashMap<ReadableObject, Option<String>>,
}

impl ScopedCluster {
    pub fn new(feature: &str, cluster: Arc<dyn ClusterAccess>) -> Self {
        Self { feature: feature.to_string(), cluster, readable: HashMap::new() }
    }

    pub fn set_readable(&mut self, objects: impl IntoIterator<Item = (ReadableObject, Option<String>)>) {
        self.readable = objects.into_iter().collect();
    }
}

impl m::ClusterReader for ScopedCluster {
    fn get(&self, api_version: &str, kind: &str, name: &str) -> Result<String, m::LookupError> {
        let key =
            ReadableObject { api_version: api_version.to_string(), kind: kind.to_string(), name: name.to_string() };
        let Some(namespace) = self.readable.get(&key) else {
            return Err(m::LookupError::Denied(format!(
                "{kind} {api_version}/{name} was not contributed by feature `{}` in this reconcile",
                self.feature
            )));
        };
        self.cluster.get(api_version, kind, namespace.as_deref(), name)
    }
}

/// What a Store carries: the WASI context, the scope of cluster reads and
/// the resource accounting.
struct HostState {
    feature: String,
    wasi: WasiCtx,
    table: ResourceTable,
    stderr: MemoryOutputPipe,
    limiter: MemoryLimiter,
    cluster: ScopedCluster,
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

impl logging::Host for HostState {
    fn log(&mut self, level: logging::Level, message: String) {
        let feature = &self.feature;
        match level {
            logging::Level::Debug => tracing::debug!(feature, "{message}"),
            logging::Level::Info => tracing::info!(feature, "{message}"),
            logging::Level::Warn => tracing::warn!(feature, "{message}"),
            logging::Level::Error => tracing::error!(feature, "{message}"),
        }
    }
}

impl cluster::Host for HostState {
    fn get(&mut self, api_version: String, kind: String, name: String) -> Result<String, cluster::LookupError> {
        use m::ClusterReader as _;
        self.cluster.get(&api_version, &kind, &name).map_err(|e| match e {
            m::LookupError::Denied(why) => cluster::LookupError::Denied(why),
            m::LookupError::NotFound => cluster::LookupError::NotFound,
            m::LookupError::Unavailable(why) => cluster::LookupError::Unavailable(why),
        })
    }
}

impl wit::Host for HostState {}

/// The memory of every live feature instance of the process, against one
/// budget. Each instance's own limit stops one feature; the budget stops
/// many at once (concurrent reconciles of many agents) from exhausting the
/// operator's memory, which every agent shares.
pub struct MemoryBudget {
    limit: usize,
    used: AtomicUsize,
}

impl MemoryBudget {
    pub fn new(limit: usize) -> Self {
        Self { limit, used: AtomicUsize::new(0) }
    }

    fn reserve(&self, bytes: usize) -> bool {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(bytes).filter(|&n| n <= self.limit)
            })
            .is_ok()
    }

    fn release(&self, bytes: usize) {
        self.used.fetch_sub(bytes, Ordering::AcqRel);
    }

    /// Bytes reserved by live instances now.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Acquire)
    }
}

/// Which limit refused a growth, so the trap that follows is reported as
/// such rather than as a generic trap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LimitHit {
    Instance,
    Budget,
}

/// Memory accounting of one instance: the total of all its memories (a
/// component may have several), reserved from the process budget and
/// returned when the instance is dropped.
struct MemoryLimiter {
    limit: usize,
    used: usize,
    hit: Option<LimitHit>,
    budget: Arc<MemoryBudget>,
}

impl ResourceLimiter for MemoryLimiter {
    fn memory_growing(&mut self, current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        let growth = desired.saturating_sub(current);
        if self.used + growth > self.limit {
            self.hit = Some(LimitHit::Instance);
            wasmtime::bail!(
                "memory limit of {} bytes reached (all memories of the instance would hold {})",
                self.limit,
                self.used + growth
            );
        }
        if !self.budget.reserve(growth) {
            self.hit = Some(LimitHit::Budget);
            wasmtime::bail!("the process memory budget of {} bytes is in use", self.budget.limit);
        }
        self.used += growth;
        Ok(true)
    }

    fn table_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        // Tables hold function references; tens of thousands is already absurd.
        Ok(desired <= 100_000)
    }
}

impl Drop for MemoryLimiter {
    fn drop(&mut self) {
        self.budget.release(self.used);
    }
}

/// Background thread advancing the engine epoch: deadlines cost one load
/// and compare per loop back-edge in guest code, not a timer per call.
struct EpochTicker {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl EpochTicker {
    fn start(engine: Engine) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("secop-epoch".into())
            .spawn(move || {
                while !flag.load(Ordering::Relaxed) {
                    std::thread::sleep(EPOCH_TICK);
                    engine.increment_epoch();
                }
            })
            .expect("spawn epoch ticker thread");
        Self { stop, thread: Some(thread) }
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// How a module was obtained, for logs and the benchmark.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoadSource {
    /// Deserialized from the on-disk precompiled cache.
    Cache,
    /// Compiled now (and written to the cache if there is one).
    Compiled,
}

/// A compiled, linked feature module, ready to instantiate.
#[derive(Clone)]
pub struct Module {
    pub metadata: m::Metadata,
    /// sha256 of the component bytes, hex.
    pub digest: String,
    pub source: LoadSource,
    pub load_time: Duration,
    pre: bindings::FeaturePre<HostState>,
}

impl std::fmt::Debug for Module {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Module").field("metadata", &self.metadata).field("digest", &self.digest).finish()
    }
}

/// The budget of all feature instances together unless the operator sets
/// another (`secop run --module-memory-budget-mib`): twice the policy's
/// default ceiling per instance, within the chart's 512 MiB pod limit.
pub const DEFAULT_MEMORY_BUDGET: usize = 256 << 20;

/// The process-wide runtime.
pub struct Runtime {
    engine: Engine,
    linker: Linker<HostState>,
    cache: Option<CompiledCache>,
    budget: Arc<MemoryBudget>,
    _ticker: EpochTicker,
}

impl Runtime {
    /// A runtime; with `cache_dir`, compiled modules are kept there.
    pub fn new(cache_dir: Option<PathBuf>) -> Result<Self, StartError> {
        let mut config = Config::new();
        config.wasm_component_model(true);
        config.epoch_interruption(true);
        let engine = Engine::new(&config).map_err(|cause| StartError::Engine { cause })?;
        let mut linker: Linker<HostState> = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker)
            .map_err(|cause| StartError::Link { imports: "WASI", cause })?;
        bindings::Feature::add_to_linker::<HostState, HasSelf<HostState>>(&mut linker, |state| state)
            .map_err(|cause| StartError::Link { imports: "feature", cause })?;
        let cache = cache_dir.and_then(|dir| match CompiledCache::open(dir, &engine) {
            Ok(c) => Some(c),
            Err(e) => {
                tracing::warn!("precompiled module cache disabled: {e}");
                None
            }
        });
        let ticker = EpochTicker::start(engine.clone());
        Ok(Self { engine, linker, cache, budget: Arc::new(MemoryBudget::new(DEFAULT_MEMORY_BUDGET)), _ticker: ticker })
    }

    /// Verify precompiled entries with an HMAC under `secret` (the
    /// operator's key), or under a random key of this process when there is
    /// none: then entries of earlier processes are recompiled, never trusted
    /// (see [`CompiledCache`]).
    pub fn with_cache_key(mut self, secret: Option<&[u8]>) -> Result<Self, StartError> {
        let random;
        let secret = match secret {
            Some(s) => s,
            None => {
                let mut bytes = [0u8; 32];
                ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes)
                    .map_err(|_| StartError::NoRandomness)?;
                random = bytes;
                &random[..]
            }
        };
        self.cache = self.cache.map(|c| c.with_key(secret));
        Ok(self)
    }

    /// Replace the budget of all instances together (before any runs).
    pub fn with_memory_budget(mut self, bytes: usize) -> Self {
        self.budget = Arc::new(MemoryBudget::new(bytes));
        self
    }

    pub fn memory_budget(&self) -> &MemoryBudget {
        &self.budget
    }

    /// The cache directory in use, if any.
    pub fn cache(&self) -> Option<&CompiledCache> {
        self.cache.as_ref()
    }

    /// Compile (or load from cache) a component, link it, and read its
    /// metadata. `name` identifies the module in errors (e.g. `falco` or
    /// a file path).
    pub fn load(&self, name: &str, bytes: &[u8]) -> Result<Module, LoadError> {
        let started = Instant::now();
        check_component_header(name, bytes)?;
        let digest = hex::encode(Sha256::digest(bytes));
        let (component, source) = self.compile(name, &digest, bytes)?;
        let instance_pre = self.linker.instantiate_pre(&component).map_err(|e| LoadError::Contract {
            module: name.to_string(),
            host: m::CONTRACT_VERSION,
            reason: format!("{e:#}"),
        })?;
        let pre = bindings::FeaturePre::new(instance_pre).map_err(|e| LoadError::Contract {
            module: name.to_string(),
            host: m::CONTRACT_VERSION,
            reason: format!("{e:#}"),
        })?;
        let mut module = Module {
            metadata: m::Metadata {
                id: name.to_string(),
                priority: 0,
                contract_version: String::new(),
                description: String::new(),
                condition_type: String::new(),
            },
            digest,
            source,
            load_time: Duration::ZERO,
            pre,
        };
        let mut probe = self
            .instantiate(&module, Limits::default(), Arc::new(NoCluster))
            .map_err(|source| LoadError::Call { module: name.to_string(), source })?;
        let metadata = probe.metadata().map_err(|source| LoadError::Call { module: name.to_string(), source })?;
        if !contract_compatible(&metadata.contract_version) {
            return Err(LoadError::IncompatibleContract {
                module: name.to_string(),
                module_version: metadata.contract_version,
                host: m::CONTRACT_VERSION,
            });
        }
        module.metadata = metadata;
        module.load_time = started.elapsed();
        Ok(module)
    }

    fn compile(&self, name: &str, digest: &str, bytes: &[u8]) -> Result<(Component, LoadSource), LoadError> {
        if let Some(cache) = &self.cache
            && let Some(component) = cache.get(&self.engine, digest)
        {
            return Ok((component, LoadSource::Cache));
        }
        let component = Component::new(&self.engine, bytes)
            .map_err(|e| LoadError::Compile { module: name.to_string(), reason: format!("{e:#}") })?;
        if let Some(cache) = &self.cache
            && let Err(e) = cache.put(digest, &component)
        {
            tracing::warn!(module = name, "could not write precompiled module to cache: {e}");
        }
        Ok((component, LoadSource::Compiled))
    }

    /// A fresh instance of `module` for one reconcile.
    pub fn instantiate(
        &self,
        module: &Module,
        limits: Limits,
        cluster: Arc<dyn ClusterAccess>,
    ) -> Result<Instance, CallError> {
        // Deny-all WASI: no preopens, env, args or network (all off by
        // default in WasiCtxBuilder; sockets spelled out for the reader).
        let stderr = MemoryOutputPipe::new(STDERR_CAPACITY);
        let wasi = WasiCtx::builder()
            .stderr(stderr.clone())
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .build();
        let state = HostState {
            feature: module.metadata.id.clone(),
            wasi,
            table: ResourceTable::new(),
            stderr,
            limiter: MemoryLimiter { limit: limits.memory_bytes, used: 0, hit: None, budget: self.budget.clone() },
            cluster: ScopedCluster::new(&module.metadata.id, cluster),
        };
        let mut store = Store::new(&self.engine, state);
        store.limiter(|s| &mut s.limiter);
        store.set_epoch_deadline(deadline_ticks(limits.deadline));
        let feature = module.pre.instantiate(&mut store).map_err(|e| classify(&mut store, "instantiate", limits, e))?;
        Ok(Instance { store, feature, limits, poisoned: false })
    }
}

fn deadline_ticks(deadline: Duration) -> u64 {
    (deadline.as_nanos().div_ceil(EPOCH_TICK.as_nanos())).max(1) as u64
}

/// Module contract `a.b.c` is compatible with the host's when the major
/// matches and, before 1.0, the minor too (semver's 0.x rule).
fn contract_compatible(version: &str) -> bool {
    let parse = |v: &str| -> Option<(u64, u64)> {
        let mut it = v.split('.');
        Some((it.next()?.parse().ok()?, it.next()?.parse().ok()?))
    };
    match (parse(version), parse(m::CONTRACT_VERSION)) {
        (Some((maj, min)), Some((hmaj, hmin))) => maj == hmaj && (hmaj != 0 || min == hmin),
        _ => false,
    }
}

/// A component starts with `\0asm` followed by version 0x0d and layer 1;
/// a core module has version 1 and layer 0.
fn check_component_header(name: &str, bytes: &[u8]) -> Result<(), LoadError> {
    if bytes.len() < 8 || &bytes[0..4] != b"\0asm" {
        return Err(LoadError::NotWasm { module: name.to_string() });
    }
    if bytes[6..8] == [0, 0] {
        return Err(LoadError::NotAComponent { module: name.to_string() });
    }
    Ok(())
}

fn classify(store: &mut Store<HostState>, call: &'static str, limits: Limits, error: wasmtime::Error) -> CallError {
    match store.data().limiter.hit {
        Some(LimitHit::Instance) => return CallError::MemoryLimit { call, limit_bytes: limits.memory_bytes },
        Some(LimitHit::Budget) => {
            return CallError::MemoryBudget { call, budget_bytes: store.data().limiter.budget.limit };
        }
        None => {}
    }
    match error.downcast_ref::<Trap>() {
        Some(Trap::Interrupt) => CallError::Timeout { call, deadline: limits.deadline },
        Some(trap) => {
            let stderr = String::from_utf8_lossy(&store.data().stderr.contents()).trim().to_string();
            let message = if stderr.is_empty() { trap.to_string() } else { format!("{trap}; guest stderr: {stderr}") };
            CallError::Trap { call, message }
        }
        None if call == "instantiate" => CallError::Instantiate(format!("{error:#}")),
        None => CallError::Trap { call, message: format!("{error:#}") },
    }
}

/// One feature, instantiated for one reconcile.
pub struct Instance {
    store: Store<HostState>,
    feature: bindings::Feature,
    limits: Limits,
    poisoned: bool,
}

impl Instance {
    /// Run one export under the deadline; a failure poisons the instance
    /// (a trapped component instance cannot be entered again).
    fn call<T>(
        &mut self,
        call: &'static str,
        f: impl FnOnce(&bindings::Feature, &mut Store<HostState>) -> wasmtime::Result<T>,
    ) -> Result<T, CallError> {
        if self.poisoned {
            return Err(CallError::Poisoned { call });
        }
        self.store.set_epoch_deadline(deadline_ticks(self.limits.deadline));
        match f(&self.feature, &mut self.store) {
            Ok(v) => Ok(v),
            Err(e) => {
                self.poisoned = true;
                Err(classify(&mut self.store, call, self.limits, e))
            }
        }
    }

    pub fn metadata(&mut self) -> Result<m::Metadata, CallError> {
        Ok(self.call("metadata", |f, s| f.call_metadata(s))?.into())
    }

    pub fn configure(
        &mut self,
        config_json: &str,
        ctx: &m::Context,
    ) -> Result<Result<Vec<m::Diagnostic>, m::ConfigError>, CallError> {
        let wit_ctx: wit::Context = ctx.clone().into();
        let result = self.call("configure", |f, s| f.call_configure(s, config_json, &wit_ctx))?;
        Ok(result.map(|diagnostics| diagnostics.into_iter().map(Into::into).collect()).map_err(Into::into))
    }

    pub fn contribute(&mut self) -> Result<Result<Vec<String>, String>, CallError> {
        let result = self.call("contribute", |f, s| f.call_contribute(s))?;
        if let Ok(docs) = &result {
            let bytes: usize = docs.iter().map(String::len).sum();
            if bytes > self.limits.max_output_bytes {
                self.poisoned = true;
                return Err(CallError::OutputTooLarge {
                    call: "contribute",
                    bytes,
                    limit: self.limits.max_output_bytes,
                });
            }
        }
        Ok(result)
    }

    pub fn otel_config(&mut self) -> Result<Option<m::OtelReceiver>, CallError> {
        Ok(self.call("otel-config", |f, s| f.call_otel_config(s))?.map(Into::into))
    }

    pub fn collector(&mut self) -> Result<Option<m::CollectorSlots>, CallError> {
        Ok(self.call("collector", |f, s| f.call_collector(s))?.map(Into::into))
    }

    /// Allow `assess` to read these objects (what the feature contributed
    /// and the host accepted), and nothing else.
    pub fn set_readable(&mut self, objects: impl IntoIterator<Item = (ReadableObject, Option<String>)>) {
        self.store.data_mut().cluster.set_readable(objects);
    }

    pub fn assess(&mut self) -> Result<m::Condition, CallError> {
        Ok(self.call("assess", |f, s| f.call_assess(s))?.into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contract_versions() {
        assert!(contract_compatible("0.1.0"));
        assert!(contract_compatible("0.1.7"));
        assert!(!contract_compatible("0.2.0"));
        assert!(!contract_compatible("1.1.0"));
        assert!(!contract_compatible("garbage"));
    }

    #[test]
    fn header_check_tells_core_modules_from_components() {
        let core = b"\0asm\x01\0\0\0";
        let component = b"\0asm\x0d\0\x01\0";
        assert!(matches!(check_component_header("x", core), Err(LoadError::NotAComponent { .. })));
        assert!(check_component_header("x", component).is_ok());
        assert!(matches!(check_component_header("x", b"PK\x03\x04zip"), Err(LoadError::NotWasm { .. })));
    }

    #[test]
    fn deadline_rounds_up_to_ticks() {
        assert_eq!(deadline_ticks(Duration::from_millis(1)), 1);
        assert_eq!(deadline_ticks(Duration::from_secs(1)), 200);
    }
}
