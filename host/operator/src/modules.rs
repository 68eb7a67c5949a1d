//! Feature modules named in `features[].module`, and the rollback that
//! keeps a bad module from costing anything already applied.
//!
//! Per reconcile: [`Modules::resolve`] fetches every referenced module
//! (secop-oci: pull policy, digest pins, on-disk cache, pull secret) and
//! loads it (once per digest, in memory); [`Modules::render`] renders with
//! them and, for each feature whose new module fails (fetch, load,
//! configure, contribute), renders again with the module that last worked
//! for that agent and feature. Modules are swapped in place: a changed
//! reference, or a moved tag under `Always`, takes effect on the next
//! reconcile without a restart.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::Api;
use kube::{Client, ResourceExt};
use secop_api::{AgentId, ModuleRef, PublicKeyRef, PullPolicy, Reason, SecurityAgent, VerifyMode};
use secop_engine::{AgentModule, Entry, FeatureError, GoodModule, Registry, RenderError, RenderOptions, Rendered};
use secop_oci::signature::SignerSet;
use secop_oci::{Credentials, Enforcement, ModuleStore, Origin, SignatureState, Source, TrustedKey, Verification};
use secop_policy::{ClusterPolicy, SignatureEnforcement};
use secop_runtime::{Module, Runtime};

/// The module a feature runs and where it came from.
#[derive(Clone)]
pub struct InUse {
    /// The reference it was fetched by; None for the built-in module.
    pub image: Option<String>,
    pub entry: Entry,
    /// Served from the cache because the registry could not be reached.
    pub registry_unavailable: Option<String>,
    /// Who signed it (`key (key sha256:...)`), when verified.
    pub signer: Option<String>,
    /// A signature refusal that is not enforced (`Warn`): it runs, and the
    /// agent's Degraded condition says so.
    pub unenforced: Option<(Reason, String)>,
}

impl InUse {
    fn digest(&self) -> Option<&str> {
        self.entry.digest()
    }

    /// For the render: the entry and the reference the policy grants by.
    /// Only modules fetched by a reference are in `options.modules`.
    fn agent_module(&self) -> AgentModule {
        AgentModule { image: self.image.clone().unwrap_or_default(), entry: self.entry.clone() }
    }

    fn good(&self) -> GoodModule {
        GoodModule { image: self.image.clone(), entry: self.entry.clone(), signer: self.signer.clone() }
    }

    /// `image (sha256:...)`, or `the built-in module (sha256:...)`.
    fn describe(&self) -> String {
        let digest = self.digest().map(|d| format!(" (sha256:{d})")).unwrap_or_default();
        match &self.image {
            Some(image) => format!("{image}{digest}"),
            None => format!("the built-in module{digest}"),
        }
    }
}

impl From<GoodModule> for InUse {
    fn from(module: GoodModule) -> Self {
        Self {
            image: module.image,
            entry: module.entry,
            registry_unavailable: None,
            signer: module.signer,
            unenforced: None,
        }
    }
}

/// Something the agent's status must say about modules: Degraded=True.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModuleNote {
    pub feature: String,
    pub reason: Reason,
    pub message: String,
}

/// A note, or a rollback whose note waits for the final render; kept in
/// one list so notes keep the order they arose in (the first one gives
/// the Degraded condition its reason).
enum Pending {
    Note(ModuleNote),
    Rollback(Box<Rollback>),
}

impl Pending {
    fn into_note(self, rendered: &Rendered) -> ModuleNote {
        match self {
            Pending::Note(note) => note,
            Pending::Rollback(rollback) => rollback.note(rendered),
        }
    }
}

/// A feature that runs its last good module instead of the one it names:
/// a note once the render shows whether the last good module worked.
struct Rollback {
    feature: String,
    /// The module that failed, described.
    failed: String,
    /// `Reason: message` of its failure.
    cause: String,
    /// The condition's reason when the rollback worked: `ModuleRolledBack`,
    /// or the refusal itself when a signature policy refused the module
    /// (SignatureMissing, SignatureInvalid, VerificationKeyError), so
    /// alerts on a supply-chain refusal need not parse messages.
    reason: Reason,
    good: InUse,
}

/// The reason a rollback caused by `error` reports.
fn rollback_reason(error: &FeatureError) -> Reason {
    match error.reason() {
        reason @ (Reason::SignatureMissing | Reason::SignatureInvalid | Reason::VerificationKeyError) => reason,
        _ => Reason::ModuleRolledBack,
    }
}

impl Rollback {
    /// The note: rolled back, or, when the last good module failed too in
    /// the final render, that failure (a rollback that fails is no
    /// rollback).
    fn note(self, rendered: &Rendered) -> ModuleNote {
        let Rollback { feature, failed, cause, reason, good } = self;
        let error = rendered.features.iter().find(|r| r.name == feature).and_then(|r| r.error.as_ref());
        match error {
            None => ModuleNote {
                message: format!(
                    "feature `{feature}`: module {failed} failed ({cause}); rolled back to {}",
                    good.describe()
                ),
                feature,
                reason,
            },
            Some(error) => ModuleNote {
                message: format!(
                    "feature `{feature}`: module {failed} failed ({cause}); rolling back to {}; the last good module failed too: {error}",
                    good.describe()
                ),
                feature,
                reason: error.reason(),
            },
        }
    }
}

/// What one feature's module reference resolved to in this reconcile.
pub struct Resolution {
    feature: String,
    image: String,
    outcome: Result<InUse, FeatureError>,
}

/// The result of a render with per-agent modules.
pub struct ModuleRender {
    pub rendered: Rendered,
    /// The module each rendered feature ran, by feature.
    pub in_use: BTreeMap<String, InUse>,
    pub notes: Vec<ModuleNote>,
}

pub struct Modules {
    store: ModuleStore,
    runtime: Arc<Runtime>,
    /// The cluster policy's signers (`modules.signers`), parsed once.
    signers: BTreeMap<String, TrustedKey>,
    /// Loaded modules by component sha256: compiling (or reading the
    /// precompiled cache) and probing happen once per digest.
    loaded: Mutex<HashMap<String, Module>>,
    /// Digests that failed to load, with the error: not compiled again
    /// every reconcile (compiling is seconds of CPU and much memory).
    failed: Mutex<HashMap<String, FeatureError>>,
    /// The on-disk cache (fetched and precompiled modules) and its bound,
    /// enforced whenever a new module has been added to it.
    cache_bound: Option<(PathBuf, u64)>,
}

/// Failed digests remembered at most; past it the memory starts over.
const FAILED_DIGESTS_KEPT: usize = 256;

/// Compiles of one digest that may start without finishing (the operator
/// killed mid-compile, e.g. out of memory) before it is refused: without
/// this, a module that exhausts the operator would do so after every
/// restart, since its blob is already cached.
const UNFINISHED_COMPILES_ALLOWED: u32 = 2;

fn module_error(reason: Reason, message: String) -> FeatureError {
    FeatureError::Module { reason, message }
}

impl Modules {
    /// `cache`: where fetched components are kept by digest (next to the
    /// precompiled cache); `plain_http`: loopback registries without TLS.
    pub fn new(runtime: Arc<Runtime>, cache: PathBuf, plain_http: Vec<String>, limits: secop_oci::FetchLimits) -> Self {
        Self {
            store: ModuleStore::new(cache, plain_http).with_limits(limits),
            runtime,
            signers: BTreeMap::new(),
            loaded: Mutex::default(),
            failed: Mutex::default(),
            cache_bound: None,
        }
    }

    /// Parse the keys of the cluster policy's `modules.signers`; a key that
    /// does not parse stops the operator at start, naming it.
    pub fn with_signers(mut self, policy: &ClusterPolicy) -> Result<Self, secop_oci::signature::KeyError> {
        for (i, signer) in policy.modules.signers.iter().enumerate() {
            let name = format!("cluster policy modules.signers[{i}] `{}`", signer.name);
            let mut key = TrustedKey::from_pem(name, signer.public_key.as_bytes())?;
            key.name = signer.name.clone();
            self.signers.insert(signer.name.clone(), key);
        }
        Ok(self)
    }

    pub fn with_cache_bound(mut self, root: PathBuf, max_bytes: u64) -> Self {
        self.cache_bound = Some((root, max_bytes));
        self
    }

    /// Fetch and load the module of every enabled feature that names one.
    /// Never fails as a whole: each feature gets its own outcome.
    pub async fn resolve(&self, client: &Client, policy: &ClusterPolicy, agent: &SecurityAgent) -> Vec<Resolution> {
        let namespace = agent.namespace().unwrap_or_default();
        let mut resolutions = vec![];
        for (index, feature) in agent.spec.features.iter().enumerate().filter(|(_, f)| f.enabled) {
            let Some(module) = &feature.module else { continue };
            let field = format!("spec.features[{index}].module");
            let outcome = match self.verification(client, policy, &namespace, &field, module).await {
                Ok(verify) => self.resolve_one(client, &namespace, &feature.name, &field, module, verify).await,
                Err(error) => Err(error),
            };
            resolutions.push(Resolution { feature: feature.name.clone(), image: module.image.clone(), outcome });
        }
        resolutions
    }

    async fn resolve_one(
        &self,
        client: &Client,
        namespace: &str,
        feature: &str,
        field: &str,
        module: &ModuleRef,
        verify: Option<Verification>,
    ) -> Result<InUse, FeatureError> {
        // A pull secret that cannot be read does not stop a module the
        // cache already holds (IfNotPresent); it fails only what needs the
        // registry.
        let (credentials, secret_error) = match &module.pull_secret {
            Some(secret) => match pull_credentials(client, namespace, secret, &module.image).await {
                Ok(credentials) => (credentials, None),
                Err(error) => (
                    Credentials::Anonymous,
                    Some(module_error(Reason::PullSecretError, format!("{field}.pullSecret: {error}"))),
                ),
            },
            None => (Credentials::Anonymous, None),
        };
        let source = Source {
            feature: feature.to_string(),
            image: module.image.clone(),
            sha256: module.sha256.clone(),
            pull_policy: match module.pull_policy {
                Some(PullPolicy::Always) => secop_oci::PullPolicy::Always,
                _ => secop_oci::PullPolicy::IfNotPresent,
            },
            credentials,
            verify,
        };
        let fetched = match self.store.fetch(&source).await {
            Ok(fetched) => fetched,
            Err(e) => return Err(secret_error.unwrap_or_else(|| module_error(e.reason(), e.to_string()))),
        };
        let loaded = self.loaded.lock().unwrap_or_else(|e| e.into_inner()).get(&fetched.sha256).cloned();
        let module = match loaded {
            Some(module) => module,
            None => self.load(feature, &module.image, &fetched.sha256, fetched.bytes).await?,
        };
        if module.metadata.id != feature {
            return Err(module_error(
                Reason::ModuleIdMismatch,
                format!(
                    "{field}: {} (sha256:{}) is the module of feature `{}`, not `{feature}`",
                    source.image, module.digest, module.metadata.id
                ),
            ));
        }
        let registry_unavailable = match fetched.origin {
            Origin::CacheRegistryUnavailable { reason } => Some(reason),
            Origin::Registry | Origin::Cache => None,
        };
        let (signer, unenforced) = match fetched.signature {
            SignatureState::NotVerified => (None, None),
            SignatureState::Verified(signers) => {
                (Some(signers.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")), None)
            }
            SignatureState::Refused { reason, message } => (None, Some((reason, message))),
        };
        Ok(InUse { image: Some(source.image), entry: Entry::Wasm(module), registry_unavailable, signer, unenforced })
    }

    /// The signatures a module needs: the cluster admin's signers for its
    /// source (host/policy/src/lib.rs `required_signers`), and the keys of
    /// `module.verify` (each set must be satisfied). None: not verified.
    async fn verification(
        &self,
        client: &Client,
        policy: &ClusterPolicy,
        namespace: &str,
        field: &str,
        module: &ModuleRef,
    ) -> Result<Option<Verification>, FeatureError> {
        let key_error = |message: String| module_error(Reason::VerificationKeyError, message);
        let required = policy
            .required_signers(&module.image, namespace)
            .map_err(|v| module_error(Reason::PolicyViolation, format!("{field}.image: {v}")))?;
        let mut sets = vec![];
        let mut enforcement = Enforcement::Enforce;
        if let Some(required) = &required {
            let keys = required
                .signers
                .iter()
                .map(|s| {
                    self.signers.get(&s.name).cloned().ok_or_else(|| {
                        key_error(format!("{}: signer `{}` was not loaded at start", required.rule, s.name))
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            sets.push(SignerSet { required_by: format!("cluster policy {}", required.rule), keys });
            if required.enforcement == SignatureEnforcement::Warn {
                enforcement = Enforcement::Warn;
            }
        }
        if let Some(verify) = module.verify.as_ref().filter(|v| v.mode != Some(VerifyMode::Off)) {
            if verify.public_keys.is_empty() && required.is_none() {
                return Err(key_error(format!(
                    "{field}.verify.publicKeys: empty; name the public key(s) the module must be signed with"
                )));
            }
            let mut keys = vec![];
            for (i, key_ref) in verify.public_keys.iter().enumerate() {
                keys.push(public_key(client, namespace, &format!("{field}.verify.publicKeys[{i}]"), key_ref).await?);
            }
            if !keys.is_empty() {
                sets.push(SignerSet { required_by: format!("{field}.verify"), keys });
            }
            if required.is_none() && verify.mode == Some(VerifyMode::Warn) {
                enforcement = Enforcement::Warn;
            }
        }
        Ok((!sets.is_empty()).then_some(Verification { sets, enforcement }))
    }

    /// Compile and probe a fetched component once per digest. A digest that
    /// failed is refused from memory; one whose compiles keep not finishing
    /// (a marker file per digest in the module cache counts them across
    /// restarts) is refused before a new attempt.
    async fn load(&self, feature: &str, image: &str, sha256: &str, bytes: Vec<u8>) -> Result<Module, FeatureError> {
        if let Some(error) = self.failed.lock().unwrap_or_else(|e| e.into_inner()).get(sha256) {
            return Err(error.clone());
        }
        let marker = self.store.cache_dir().join("compiling").join(sha256);
        let attempts: u32 = std::fs::read_to_string(&marker).ok().and_then(|t| t.trim().parse().ok()).unwrap_or(0);
        if attempts >= UNFINISHED_COMPILES_ALLOWED {
            return Err(module_error(
                Reason::CompileAborted,
                format!(
                    "module {image} (sha256:{sha256}): {attempts} compiles did not finish (the operator likely ran out of memory); refused until the operator's module cache is cleared, e.g. by a new operator pod"
                ),
            ));
        }
        if let Err(e) = std::fs::create_dir_all(marker.parent().expect("has a parent"))
            .and_then(|()| std::fs::write(&marker, (attempts + 1).to_string()))
        {
            tracing::warn!(marker = %marker.display(), "cannot count compile attempts: {e}");
        }
        // Compiling is CPU work for seconds: off the async workers.
        let runtime = self.runtime.clone();
        let name = format!("{feature} ({image})");
        let loaded = tokio::task::spawn_blocking(move || runtime.load(&name, &bytes)).await;
        let _ = std::fs::remove_file(&marker);
        // Out of the shared budget is about other instances, not this
        // module: worth another try.
        let transient = matches!(
            &loaded,
            Ok(Err(secop_runtime::LoadError::Call { source: secop_runtime::CallError::MemoryBudget { .. }, .. }))
        );
        let result = loaded
            .map_err(|e| module_error(Reason::LoadFailed, format!("loading the module of `{feature}`: {e}")))
            .and_then(|r| r.map_err(|e| module_error(e.reason(), e.to_string())));
        match &result {
            Ok(module) => {
                self.loaded.lock().unwrap_or_else(|e| e.into_inner()).insert(sha256.to_string(), module.clone());
                if let Some((root, max_bytes)) = &self.cache_bound {
                    crate::cache::trim(root, *max_bytes);
                }
            }
            Err(_) if transient => {}
            Err(error) => {
                let mut failed = self.failed.lock().unwrap_or_else(|e| e.into_inner());
                if failed.len() >= FAILED_DIGESTS_KEPT {
                    failed.clear();
                }
                failed.insert(sha256.to_string(), error.clone());
            }
        }
        result
    }

    /// Render `agent` with its modules. A feature whose module failed (to
    /// resolve, or in its calls) runs the module that last worked for it
    /// instead, and a note says so; without one it fails with the cause
    /// (its applied objects are kept by the caller). The last good modules
    /// are the engine's memo's (host/engine/src/memo.rs), like the last good
    /// outputs.
    pub fn render(
        &self,
        registry: &Registry,
        agent: &SecurityAgent,
        options: RenderOptions,
        resolutions: Vec<Resolution>,
    ) -> Result<ModuleRender, RenderError> {
        let agent_id = AgentId::of(agent);
        let memo = registry.memo();
        let last_good = |feature: &str| memo.last_good_module(&agent_id, feature).map(InUse::from);
        let mut options = options;
        let mut in_use: BTreeMap<String, InUse> = BTreeMap::new();
        let mut pending = vec![];
        for feature in agent.spec.features.iter().filter(|f| f.enabled && f.module.is_none()) {
            if let Some(entry) = registry.get(&feature.name) {
                in_use.insert(
                    feature.name.clone(),
                    InUse {
                        image: None,
                        entry: entry.clone(),
                        registry_unavailable: None,
                        signer: None,
                        unenforced: None,
                    },
                );
            }
        }
        for resolution in resolutions {
            let (feature, image) = (resolution.feature, resolution.image);
            match resolution.outcome {
                Ok(module) => {
                    if let Some((reason, message)) = &module.unenforced {
                        pending.push(Pending::Note(ModuleNote {
                            feature: feature.clone(),
                            reason: *reason,
                            message: format!("feature `{feature}`: {message} (not enforced: verify mode Warn)"),
                        }));
                    }
                    if let Some(reason) = &module.registry_unavailable {
                        pending.push(Pending::Note(ModuleNote {
                            feature: feature.clone(),
                            reason: Reason::RegistryUnavailable,
                            message: format!(
                                "feature `{feature}`: registry unreachable ({reason}); running the cached {}",
                                module.describe()
                            ),
                        }));
                    }
                    options.modules.insert(feature.clone(), Ok(module.agent_module()));
                    in_use.insert(feature, module);
                }
                Err(error) => match last_good(&feature) {
                    Some(good) => {
                        options.modules.insert(feature.clone(), Ok(good.agent_module()));
                        in_use.insert(feature.clone(), good.clone());
                        let cause = format!("{}: {error}", error.reason());
                        let reason = rollback_reason(&error);
                        pending.push(Pending::Rollback(Box::new(Rollback {
                            feature,
                            failed: image,
                            cause,
                            reason,
                            good,
                        })));
                    }
                    None => {
                        pending.push(Pending::Note(ModuleNote {
                            feature: feature.clone(),
                            reason: error.reason(),
                            message: format!("feature `{feature}`: {error}"),
                        }));
                        options.modules.insert(feature, Err(error));
                    }
                },
            }
        }

        let mut rendered = secop_engine::render(registry, agent, &options)?;
        // A new module that fails in its calls: back to the last good one.
        let changed = |feature: &str, in_use: &BTreeMap<String, InUse>| match (in_use.get(feature), last_good(feature))
        {
            (Some(current), Some(good)) => current.digest() != good.digest(),
            _ => false,
        };
        let mut retry = false;
        for report in rendered.failed() {
            let Some(error) = &report.error else { continue };
            if matches!(error, FeatureError::Module { .. }) {
                continue;
            }
            // A conflict (an object, or the collector slot) is reported on
            // the feature that sorts later. When its module did not change
            // and the other's did, the other's new module claimed it: that
            // one goes back.
            let (culprit, cause) = match error {
                FeatureError::Conflict { object, other }
                    if !changed(&report.name, &in_use) && changed(other, &in_use) =>
                {
                    (
                        other.clone(),
                        format!(
                            "ObjectConflict: it contributes {object}, which feature `{}` contributes too",
                            report.name
                        ),
                    )
                }
                FeatureError::SecondCollector { other }
                    if !changed(&report.name, &in_use) && changed(other, &in_use) =>
                {
                    (
                        other.clone(),
                        format!("SecondCollector: it declares a collector, which feature `{}` provides", report.name),
                    )
                }
                _ => (report.name.clone(), format!("{}: {error}", error.reason())),
            };
            // Unchanged also covers a culprit already rolled back (in use =
            // its last good module): each is rolled back at most once.
            if !changed(&culprit, &in_use) {
                continue;
            }
            let (Some(current), Some(good)) = (in_use.get(&culprit), last_good(&culprit)) else { continue };
            // A culprit other than the reporter had its output admitted, so
            // the memo holds it as last good: drop it, or it would stand in
            // should the retry fail too. (A failed reporter's slot still
            // holds its last good module's output, the right stand-in.)
            if culprit != report.name {
                memo.forget_output(&agent_id, &culprit);
            }
            options.modules.insert(culprit.clone(), Ok(good.agent_module()));
            let failed = current.describe();
            pending.push(Pending::Rollback(Box::new(Rollback {
                feature: culprit.clone(),
                failed,
                cause,
                reason: Reason::ModuleRolledBack,
                good: good.clone(),
            })));
            in_use.insert(culprit, good);
            retry = true;
        }
        if retry {
            rendered = secop_engine::render(registry, agent, &options)?;
        }
        let notes: Vec<ModuleNote> = pending.into_iter().map(|p| p.into_note(&rendered)).collect();

        for report in rendered.features.iter().filter(|r| r.enabled && r.error.is_none()) {
            if let Some(module) = in_use.get(&report.name) {
                memo.remember_module(&agent_id, &report.name, module.good());
            }
        }
        in_use.retain(|name, _| rendered.features.iter().any(|r| &r.name == name));
        // Compiled modules nobody runs or may roll back to are released (a
        // tag that keeps moving under `Always` would otherwise pile them up).
        let mut kept = memo.module_digests();
        kept.extend(in_use.values().filter_map(|m| m.digest().map(str::to_string)));
        self.loaded.lock().unwrap_or_else(|e| e.into_inner()).retain(|digest, _| kept.contains(digest));
        Ok(ModuleRender { rendered, in_use, notes })
    }

    /// Forget an agent's last good modules and outputs (it was deleted): a
    /// new agent of the same name starts clean.
    pub fn forget(&self, registry: &Registry, agent: &SecurityAgent) {
        registry.memo().forget_agent(&AgentId::of(agent));
    }
}

/// A public key named by `module.verify.publicKeys[i]`: the PEM in a
/// Secret or ConfigMap of the agent's namespace, named after the field
/// and the object it came from.
async fn public_key(
    client: &Client,
    namespace: &str,
    field: &str,
    key_ref: &PublicKeyRef,
) -> Result<TrustedKey, FeatureError> {
    let fail = |message: String| module_error(Reason::VerificationKeyError, format!("{field}: {message}"));
    let data_key = key_ref.key.as_deref().unwrap_or("cosign.pub");
    let (what, pem) = match (&key_ref.secret_name, &key_ref.config_map_name) {
        (Some(name), None) => {
            let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
            let found = api.get_opt(name).await.map_err(|e| fail(format!("reading Secret {namespace}/{name}: {e}")))?;
            let found = found.ok_or_else(|| fail(format!("Secret {namespace}/{name} not found")))?;
            let pem = found.data.and_then(|d| d.get(data_key).map(|v| v.0.clone()));
            (format!("Secret {namespace}/{name}"), pem)
        }
        (None, Some(name)) => {
            let api: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
            let found =
                api.get_opt(name).await.map_err(|e| fail(format!("reading ConfigMap {namespace}/{name}: {e}")))?;
            let found = found.ok_or_else(|| fail(format!("ConfigMap {namespace}/{name} not found")))?;
            let pem = found.data.and_then(|d| d.get(data_key).map(|v| v.as_bytes().to_vec()));
            (format!("ConfigMap {namespace}/{name}"), pem)
        }
        _ => return Err(fail("exactly one of `secretName` and `configMapName`".into())),
    };
    let pem = pem.ok_or_else(|| fail(format!("{what} has no key `{data_key}`")))?;
    let mut key = TrustedKey::from_pem(format!("{field} ({what})"), &pem).map_err(|e| fail(e.to_string()))?;
    key.name = format!("{what}/{data_key}");
    Ok(key)
}

/// Registry credentials from a `kubernetes.io/dockerconfigjson` Secret in
/// the agent's namespace, for the registry of `image`.
async fn pull_credentials(
    client: &Client,
    namespace: &str,
    secret: &str,
    image: &str,
) -> Result<Credentials, PullSecretError> {
    let at = || format!("{namespace}/{secret}");
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let found = api.get_opt(secret).await.map_err(|source| PullSecretError::Read { secret: at(), source })?;
    let found = found.ok_or_else(|| PullSecretError::NotFound { secret: at() })?;
    let json = found
        .data
        .as_ref()
        .and_then(|d| d.get(".dockerconfigjson"))
        .ok_or_else(|| PullSecretError::NoDockerConfig { secret: at() })?;
    let registry = secop_oci::registry_of(image)?;
    Credentials::from_dockerconfigjson(&json.0, &registry)
        .map_err(|source| PullSecretError::Document { secret: at(), source })
}

/// Why a module's pull secret gives no credentials.
#[derive(Debug, thiserror::Error)]
enum PullSecretError {
    #[error("reading Secret {secret}: {source}")]
    Read { secret: String, source: kube::Error },
    #[error("Secret {secret} not found")]
    NotFound { secret: String },
    #[error("Secret {secret} has no `.dockerconfigjson` key (type kubernetes.io/dockerconfigjson)")]
    NoDockerConfig { secret: String },
    #[error(transparent)]
    Reference(#[from] secop_oci::ReferenceError),
    #[error("Secret {secret}: {source}")]
    Document { secret: String, source: secop_oci::DockerConfigError },
}

#[cfg(test)]
mod tests {
    //! The rollback decisions of [`Modules::render`], without a cluster:
    //! resolutions are built by hand from the built-in falco module and the
    //! test module that traps in configure.

    use super::*;

    /// The built-in registry, an empty module store, and three falco
    /// modules: the built-in one, the one that traps in configure and the
    /// one that claims tetragon's ConfigMap.
    struct Setup {
        registry: Registry,
        modules: Modules,
        good: Entry,
        broken: Entry,
        greedy: Entry,
    }

    fn setup() -> Setup {
        let runtime = Arc::new(Runtime::new(None).unwrap());
        let load = |bytes: &[u8]| Entry::Wasm(runtime.load("falco", bytes).unwrap());
        Setup {
            registry: Registry::with_builtins(runtime.clone()).unwrap(),
            modules: Modules::new(
                runtime.clone(),
                std::env::temp_dir().join("secop-modules-unit"),
                vec![],
                Default::default(),
            ),
            good: load(secop_builtin::module("falco").unwrap()),
            broken: load(&std::fs::read(secop_builtin::artifact_path("feature_falco_broken")).unwrap()),
            greedy: load(&std::fs::read(secop_builtin::artifact_path("feature_falco_greedy")).unwrap()),
        }
    }

    /// An agent whose falco runs a module, with `falco_config`, followed
    /// by the built-in features named in `also`.
    fn agent_also(name: &str, falco_config: &str, also: &[&str]) -> SecurityAgent {
        let mut yaml = format!(
            "apiVersion: security.example.io/v1alpha1\nkind: SecurityAgent\nmetadata: {{ name: {name}, namespace: sec }}\nspec:\n  features:\n    - name: falco\n      module: {{ image: reg/falco:x }}\n      config: {falco_config}\n"
        );
        for feature in also {
            yaml.push_str(&format!("    - name: {feature}\n"));
        }
        secop_api::parse(&yaml).unwrap()
    }

    fn agent(name: &str, falco_config: &str) -> SecurityAgent {
        agent_also(name, falco_config, &[])
    }

    fn resolution(image: &str, outcome: Result<Entry, FeatureError>) -> Vec<Resolution> {
        vec![Resolution {
            feature: "falco".into(),
            image: image.into(),
            outcome: outcome.map(|entry| InUse {
                image: Some(image.into()),
                entry,
                registry_unavailable: None,
                signer: None,
                unenforced: None,
            }),
        }]
    }

    /// The test modules come from `reg/`, a source the policy allows with
    /// the built-ins' power (these tests are about rollback, not grants).
    fn options() -> RenderOptions {
        let policy = secop_policy::ClusterPolicy::from_yaml(
            "modules:\n  allowed:\n  - {image: \"docker.io/reg/\", clusterScoped: true, hostAccess: true}\n",
        )
        .unwrap();
        RenderOptions { keep_last_good: true, policy: Arc::new(policy), ..Default::default() }
    }

    #[test]
    fn a_failing_new_module_is_rolled_back_to_the_last_good_one() {
        let Setup { registry, modules, good, broken, .. } = setup();
        let agent = agent("a", "{}");

        let first =
            modules.render(&registry, &agent, options(), resolution("reg/falco:0.1.0", Ok(good.clone()))).unwrap();
        assert!(first.notes.is_empty() && first.rendered.failed().next().is_none());
        let objects = first.rendered.objects.len();

        // Traps in configure: the last good module renders instead.
        let swapped =
            modules.render(&registry, &agent, options(), resolution("reg/falco:0.3.0", Ok(broken.clone()))).unwrap();
        assert!(swapped.rendered.failed().next().is_none(), "the rollback renders cleanly");
        assert_eq!(swapped.rendered.objects.len(), objects, "nothing dropped");
        assert_eq!(swapped.in_use["falco"].image.as_deref(), Some("reg/falco:0.1.0"));
        let note = &swapped.notes[0];
        assert_eq!(note.reason, "ModuleRolledBack");
        assert!(
            note.message.contains("reg/falco:0.3.0")
                && note.message.contains("Trap")
                && note.message.contains("rolled back to reg/falco:0.1.0"),
            "{}",
            note.message
        );

        // Not even fetched (a digest mismatch): rolled back as well.
        let mismatch = FeatureError::Module {
            reason: Reason::DigestMismatch,
            message: "digest mismatch: expected sha256:aa, the registry served sha256:bb".into(),
        };
        let refused =
            modules.render(&registry, &agent, options(), resolution("reg/falco:0.3.0", Err(mismatch))).unwrap();
        assert!(refused.rendered.failed().next().is_none());
        assert!(refused.notes[0].message.contains("DigestMismatch"), "{}", refused.notes[0].message);
    }

    #[test]
    fn without_a_last_good_module_the_feature_fails_with_the_cause() {
        let Setup { registry, modules, broken, .. } = setup();
        let fresh =
            modules.render(&registry, &agent("b", "{}"), options(), resolution("reg/falco:0.3.0", Ok(broken))).unwrap();
        let failed: Vec<_> = fresh.rendered.failed().collect();
        assert_eq!(failed.len(), 1);
        assert_eq!(failed[0].error.as_ref().unwrap().reason(), "Trap");
        assert_eq!(failed[0].condition_type, "FalcoReady");
    }

    #[test]
    fn a_rollback_that_fails_too_is_reported_as_the_failure() {
        let Setup { registry, modules, good, broken, .. } = setup();
        modules.render(&registry, &agent("c", "{}"), options(), resolution("reg/falco:0.1.0", Ok(good))).unwrap();
        // A new module and a config the old module refuses, in one change.
        let both = modules
            .render(
                &registry,
                &agent("c", "{ jsonOutput: false }"),
                options(),
                resolution("reg/falco:0.3.0", Ok(broken)),
            )
            .unwrap();
        let note = &both.notes[0];
        assert_eq!(note.reason, "InvalidConfig", "{}", note.message);
        assert!(
            note.message.contains("the last good module failed too") && note.message.contains("jsonOutput"),
            "{}",
            note.message
        );
    }

    #[test]
    fn a_conflict_rolls_back_the_new_module_that_caused_it_not_the_feature_it_shows_on() {
        let Setup { registry, modules, good, greedy, .. } = setup();
        // falco (by module) and tetragon (built in): falco sorts first, so a
        // conflict between them is reported on tetragon.
        let agent = agent_also("d", "{}", &["tetragon"]);
        let first = modules.render(&registry, &agent, options(), resolution("reg/falco:0.1.0", Ok(good))).unwrap();
        assert!(first.notes.is_empty() && first.rendered.failed().next().is_none());
        let objects = first.rendered.objects.len();

        let swapped =
            modules.render(&registry, &agent, options(), resolution("reg/falco:0.4.0", Ok(greedy.clone()))).unwrap();
        assert!(swapped.rendered.failed().next().is_none(), "after falco's rollback tetragon renders too");
        assert_eq!(swapped.rendered.objects.len(), objects, "nothing dropped");
        assert_eq!(swapped.in_use["falco"].image.as_deref(), Some("reg/falco:0.1.0"));
        assert_eq!(swapped.notes.len(), 1, "{:?}", swapped.notes);
        let note = &swapped.notes[0];
        assert_eq!((note.feature.as_str(), note.reason.as_str()), ("falco", "ModuleRolledBack"));
        assert!(
            note.message.contains("reg/falco:0.4.0")
                && note.message.contains("tetragon-config")
                && note.message.contains("feature `tetragon`"),
            "{}",
            note.message
        );

        // Again, with a config the last good module refuses: the rollback
        // fails too, and the greedy output (admitted in the first pass)
        // must not stand in for falco and take tetragon's ConfigMap.
        let refused = modules
            .render(
                &registry,
                &agent_also("d", "{ jsonOutput: false }", &["tetragon"]),
                options(),
                resolution("reg/falco:0.4.0", Ok(greedy)),
            )
            .unwrap();
        let tetragon = refused.rendered.features.iter().find(|f| f.name == "tetragon").unwrap();
        assert!(tetragon.error.is_none(), "{:?}", tetragon.error);
        assert!(
            refused.rendered.objects.iter().all(|(_, o)| o["data"]["claimed-by"].is_null()),
            "the greedy ConfigMap is not in the desired state"
        );
    }
}
