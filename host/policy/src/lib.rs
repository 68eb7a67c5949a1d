//! The cluster policy: what the cluster admin lets agent authors and module
//! publishers do (the trust model is in docs/security.md).
//!
//! The admin writes it as chart values (`policy:` in
//! deploy/helm/security-operator/values.yaml); the chart puts it in a
//! ConfigMap the operator reads at start (`secop run --policy FILE`), and
//! `secop render --policy FILE` applies the same rules offline. A
//! `SecurityAgent` is a namespaced, tenant-written object: nothing in it can
//! widen this policy.
//!
//! Two kinds of checks:
//! - [`ClusterPolicy::check_agent`], on the spec before anything is fetched
//!   or rendered: the agent's namespace, module registries, image
//!   overrides, sandbox limits. A violation refuses the whole agent.
//! - [`ClusterPolicy::check_pod_spec`] and
//!   [`ClusterPolicy::check_log_path`], on what a feature renders: the
//!   engine (host/engine/src/objects.rs) refuses the feature that rendered
//!   it, naming the rule.

use std::fmt;

use oci_spec::distribution::Reference;
use secop_api::{SecurityAgent, VerifyMode};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The images the built-in features render with their default config. An
/// agent may run exactly these without any policy entry; another tag needs
/// an `images.allowed` entry. (The golden render of the samples goes
/// through [`ClusterPolicy::check_pod_spec`], so a feature whose default
/// image changes without this list fails its tests.)
pub const BUILT_IN_IMAGES: &[&str] = &[
    "docker.io/falcosecurity/falco:0.41.3",
    "quay.io/cilium/tetragon:v1.4.1",
    "quay.io/cilium/hubble-export-stdout:v1.0.4",
    "docker.io/osquery/osquery:5.14.1-ubuntu22.04",
    "docker.io/otel/opentelemetry-collector-contrib:0.152.0",
    "mirror.gcr.io/aquasec/trivy-operator:0.26.1",
    "docker.io/aquasec/kube-bench:v0.15.6",
    // ctem_validation's scenario runner (spec.tests.image)
    "docker.io/library/busybox:1.36.1",
];

/// The policy file (YAML or JSON). Every field has a safe default, so an
/// empty file is the default policy.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClusterPolicy {
    /// Namespaces whose SecurityAgents are honoured, besides the operator's
    /// own namespace and the one it watches. `"*"`: every namespace.
    #[serde(default)]
    pub agent_namespaces: Vec<String>,
    #[serde(default)]
    pub images: ImagePolicy,
    #[serde(default)]
    pub modules: ModulePolicy,
    #[serde(default)]
    pub limits: LimitCeilings,
    /// Host directories a feature's log receiver may tail (and so have
    /// mounted read-only into the node collector).
    #[serde(default = "default_log_roots")]
    pub log_roots: Vec<String>,
    /// Filled in by the operator (not the file): its own namespace and the
    /// watched one, always honoured.
    #[serde(skip)]
    pub operator_namespaces: Vec<String>,
    /// The built-in and allowed image entries, parsed once: every rendered
    /// container is checked against them on every render.
    #[serde(skip)]
    image_rules: ParsedRules,
}

/// A cache of parsed [`ImageRule`]s; equal whatever it holds (it follows
/// from the fields it is computed from).
#[derive(Debug, Clone, Default)]
struct ParsedRules(std::sync::OnceLock<Vec<ImageRule>>);

impl PartialEq for ParsedRules {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ImagePolicy {
    /// Images that rendered workloads may run besides the built-in ones and
    /// the operator's own image: an exact reference (`repo:tag`,
    /// `repo@sha256:...`), a repository (any tag of it), or a prefix ending
    /// in `/` (every repository beneath). Applies to `override.*.image` and
    /// to images set in a feature's config alike.
    #[serde(default)]
    pub allowed: Vec<String>,
}

#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ModulePolicy {
    /// Where `features[].module.image` may come from, and what a module
    /// from there may render. Empty: built-in modules only.
    #[serde(default)]
    pub allowed: Vec<ModuleSource>,
    /// Public keys that sources may require signatures by
    /// (`allowed[].signers`), and the namespaces whose agents may use them.
    #[serde(default)]
    pub signers: Vec<ModuleSigner>,
}

/// A key modules are signed with (cosign key-based signatures).
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ModuleSigner {
    pub name: String,
    /// PEM `PUBLIC KEY` (`cosign.pub`).
    pub public_key: String,
    /// Namespaces whose agents may run modules signed by this key; empty
    /// or `"*"`: every honoured namespace.
    #[serde(default)]
    pub namespaces: Vec<String>,
}

impl ModuleSigner {
    fn serves(&self, namespace: &str) -> bool {
        self.namespaces.is_empty() || self.namespaces.iter().any(|n| n == "*" || n == namespace)
    }
}

/// What the cluster admin requires of a module's signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequiredSigners<'a> {
    /// `modules.allowed[N].signers`, for messages.
    pub rule: String,
    /// The signers usable in the agent's namespace (never empty).
    pub signers: Vec<&'a ModuleSigner>,
    pub enforcement: SignatureEnforcement,
}

/// `modules.allowed[].verify`.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SignatureEnforcement {
    /// A module without a signature by a required signer is refused.
    #[default]
    Enforce,
    /// It runs; the agent's Degraded condition says why it would not.
    Warn,
}

/// One allowed source of feature modules and its grant.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ModuleSource {
    /// A registry prefix ending in `/` (`registry.example.com/secop/`), a
    /// repository, or an exact reference, as in `images.allowed`.
    pub image: String,
    /// Cluster-scoped objects: ClusterRoles and their bindings, CRDs,
    /// cluster-scoped custom resources (Tetragon's TracingPolicy).
    #[serde(default)]
    pub cluster_scoped: bool,
    /// Pod specs with host access: privileged containers, added
    /// capabilities, hostPath volumes, host namespaces or ports.
    #[serde(default)]
    pub host_access: bool,
    /// Names in `modules.signers`: a module from this source must carry a
    /// signature by one of them that serves the agent's namespace. Empty:
    /// signatures are the agent's choice (`module.verify`).
    #[serde(default)]
    pub signers: Vec<String>,
    /// What happens to a module without such a signature (`Enforce`).
    #[serde(default)]
    pub verify: SignatureEnforcement,
}

/// Ceilings for `features[].limits`, so one agent cannot exhaust the
/// operator that every agent shares (its pod has 512 MiB by default).
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LimitCeilings {
    #[serde(default = "default_max_memory_mib")]
    pub max_memory_mib: u32,
    #[serde(default = "default_max_timeout_millis")]
    pub max_timeout_millis: u32,
}

fn default_max_memory_mib() -> u32 {
    128
}
fn default_max_timeout_millis() -> u32 {
    10_000
}
fn default_log_roots() -> Vec<String> {
    // Pod logs (Falco's stdout), and where the built-in sensors write
    // their own files (osquery under /var/log/security, Tetragon's export).
    vec!["/var/log".into(), "/var/run/cilium/tetragon".into()]
}

impl Default for LimitCeilings {
    fn default() -> Self {
        Self { max_memory_mib: default_max_memory_mib(), max_timeout_millis: default_max_timeout_millis() }
    }
}

impl Default for ClusterPolicy {
    fn default() -> Self {
        Self {
            agent_namespaces: vec![],
            images: ImagePolicy::default(),
            modules: ModulePolicy::default(),
            limits: LimitCeilings::default(),
            log_roots: default_log_roots(),
            operator_namespaces: vec![],
            image_rules: ParsedRules::default(),
        }
    }
}

/// What a feature's module may render beyond namespaced, unprivileged
/// objects in the agent's namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Power {
    pub cluster_scoped: bool,
    pub host_access: bool,
}

impl Power {
    /// The modules embedded in the operator (and local files given to
    /// `secop render --module`): reviewed with the operator itself.
    pub const BUILT_IN: Power = Power { cluster_scoped: true, host_access: true };
}

/// A rule of the policy that a spec or a rendered object breaks.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message} (cluster policy `{rule}`)")]
pub struct Violation {
    /// Path of the offending field (`spec.override.falco.image`).
    pub field: String,
    /// The policy field that decides (`images.allowed`).
    pub rule: &'static str,
    pub message: String,
}

/// A policy file that cannot be used, naming the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cluster policy {field}: {message}")]
pub struct PolicyFileError {
    pub field: String,
    pub message: String,
}

impl ClusterPolicy {
    /// Parse a policy file; unknown fields are errors (a typo must not
    /// silently leave the default in place).
    pub fn from_yaml(text: &str) -> Result<Self, PolicyFileError> {
        let value: serde_yaml::Value = serde_yaml::from_str(text)
            .map_err(|e| PolicyFileError { field: ".".into(), message: format!("not valid YAML: {e}") })?;
        let value = if value.is_null() { serde_yaml::Value::Mapping(Default::default()) } else { value };
        let policy: ClusterPolicy = serde_path_to_error::deserialize(value)
            .map_err(|e| PolicyFileError { field: e.path().to_string(), message: e.inner().to_string() })?;
        policy.validate()?;
        Ok(policy)
    }

    fn validate(&self) -> Result<(), PolicyFileError> {
        let bad = |field: String, message: String| Err(PolicyFileError { field, message });
        for (i, entry) in self.images.allowed.iter().enumerate() {
            if let Err(error) = ImageRule::parse(entry) {
                return bad(format!("images.allowed[{i}]"), error.to_string());
            }
        }
        for (i, signer) in self.modules.signers.iter().enumerate() {
            if signer.name.is_empty() || self.modules.signers[..i].iter().any(|s| s.name == signer.name) {
                return bad(format!("modules.signers[{i}].name"), format!("`{}` is empty or repeated", signer.name));
            }
            if !signer.public_key.contains("-----BEGIN PUBLIC KEY-----") {
                return bad(
                    format!("modules.signers[{i}].publicKey"),
                    "not a PEM `PUBLIC KEY` (the public half, e.g. cosign.pub)".into(),
                );
            }
        }
        for (i, source) in self.modules.allowed.iter().enumerate() {
            if let Err(error) = ImageRule::parse(&source.image) {
                return bad(format!("modules.allowed[{i}].image"), error.to_string());
            }
            for (j, name) in source.signers.iter().enumerate() {
                if !self.modules.signers.iter().any(|s| &s.name == name) {
                    return bad(
                        format!("modules.allowed[{i}].signers[{j}]"),
                        format!("`{name}` is not in modules.signers"),
                    );
                }
            }
        }
        for (i, root) in self.log_roots.iter().enumerate() {
            if !root.starts_with('/') || root.split('/').any(|c| c == ".." || c == ".") || root.contains('*') {
                return bad(
                    format!("logRoots[{i}]"),
                    format!("`{root}` must be an absolute directory without `.`, `..` or globs"),
                );
            }
            if root.trim_end_matches('/').is_empty() {
                return bad(
                    format!("logRoots[{i}]"),
                    "`/` would let a receiver mount the whole host file system".into(),
                );
            }
        }
        if self.limits.max_memory_mib == 0 || self.limits.max_timeout_millis == 0 {
            return bad("limits".into(), "ceilings must be at least 1".into());
        }
        Ok(())
    }

    /// The policy as the operator applies it: its own namespace and the
    /// watched one are always honoured.
    pub fn for_operator(mut self, own_namespace: &str, watched: Option<&str>) -> Self {
        self.operator_namespaces = std::iter::once(own_namespace).chain(watched).map(str::to_string).collect();
        self
    }

    /// Whether agents in `namespace` are honoured. Offline (no operator
    /// namespace known, no list in the file) every namespace is.
    pub fn honours_namespace(&self, namespace: &str) -> bool {
        if self.agent_namespaces.iter().any(|n| n == "*") {
            return true;
        }
        if self.agent_namespaces.is_empty() && self.operator_namespaces.is_empty() {
            return true;
        }
        self.agent_namespaces.iter().chain(&self.operator_namespaces).any(|n| n == namespace)
    }

    /// Spec-level rules, checked before any module is fetched or any
    /// feature runs. The first violation is returned.
    pub fn check_agent(&self, agent: &SecurityAgent) -> Result<(), Violation> {
        let namespace = agent.metadata.namespace.as_deref().unwrap_or("default");
        if !self.honours_namespace(namespace) {
            let mut honoured: Vec<&str> =
                self.agent_namespaces.iter().chain(&self.operator_namespaces).map(String::as_str).collect();
            honoured.dedup();
            return Err(Violation {
                field: "metadata.namespace".into(),
                rule: "agentNamespaces",
                message: format!(
                    "agents in namespace `{namespace}` are not honoured by this operator (honoured: {})",
                    honoured.join(", ")
                ),
            });
        }
        for (i, feature) in agent.spec.features.iter().enumerate() {
            if let Some(limits) = &feature.limits {
                if let Some(mib) = limits.memory_mib.filter(|&m| m > self.limits.max_memory_mib) {
                    return Err(Violation {
                        field: format!("spec.features[{i}].limits.memoryMib"),
                        rule: "limits.maxMemoryMib",
                        message: format!("{mib} exceeds the ceiling of {} MiB", self.limits.max_memory_mib),
                    });
                }
                if let Some(ms) = limits.timeout_millis.filter(|&t| t > self.limits.max_timeout_millis) {
                    return Err(Violation {
                        field: format!("spec.features[{i}].limits.timeoutMillis"),
                        rule: "limits.maxTimeoutMillis",
                        message: format!("{ms} exceeds the ceiling of {} ms", self.limits.max_timeout_millis),
                    });
                }
            }
            if let Some(module) = feature.module.as_ref().filter(|_| feature.enabled)
                && self.module_power(&module.image).is_some()
            {
                let required = self.required_signers(&module.image, namespace).map_err(|mut v| {
                    v.field = format!("spec.features[{i}].module.image");
                    v
                })?;
                let mode = module.verify.as_ref().and_then(|v| v.mode);
                if let Some(required) = required
                    && matches!(mode, Some(VerifyMode::Warn | VerifyMode::Off))
                {
                    return Err(Violation {
                        field: format!("spec.features[{i}].module.verify.mode"),
                        rule: "modules.allowed[].signers",
                        message: format!(
                            "`{}` cannot be weakened: the cluster admin requires a signature by {} ({})",
                            mode.map(|m| format!("{m:?}")).unwrap_or_default(),
                            required.signers.iter().map(|s| s.name.as_str()).collect::<Vec<_>>().join(" or "),
                            required.rule
                        ),
                    });
                }
            }
            if let Some(module) = feature.module.as_ref().filter(|_| feature.enabled)
                && self.module_power(&module.image).is_none()
            {
                return Err(Violation {
                    field: format!("spec.features[{i}].module.image"),
                    rule: "modules.allowed",
                    message: format!(
                        "`{}` is not from a module source the cluster admin allows{}",
                        module.image,
                        self.list_hint(self.modules.allowed.iter().map(|s| s.image.as_str()))
                    ),
                });
            }
        }
        if let Some(overrides) = &agent.spec.overrides {
            for (key, o) in overrides.entries() {
                if let Some(image) = &o.image
                    && !self.image_allowed(image, None)
                {
                    return Err(Violation {
                        field: format!("spec.override.{key}.image"),
                        rule: "images.allowed",
                        message: format!(
                            "`{image}` is neither a built-in image nor allowed by the cluster admin{}",
                            self.list_hint(self.images.allowed.iter().map(String::as_str))
                        ),
                    });
                }
            }
        }
        // The image that performs the validation scenarios (spec.tests).
        if let Some(image) = agent.spec.tests.as_ref().filter(|t| t.enabled).and_then(|t| t.image.as_ref())
            && !self.image_allowed(image, None)
        {
            return Err(Violation {
                field: "spec.tests.image".into(),
                rule: "images.allowed",
                message: format!(
                    "`{image}` is neither a built-in image nor allowed by the cluster admin{}",
                    self.list_hint(self.images.allowed.iter().map(String::as_str))
                ),
            });
        }
        Ok(())
    }

    fn list_hint<'a>(&self, entries: impl Iterator<Item = &'a str>) -> String {
        let entries: Vec<&str> = entries.collect();
        if entries.is_empty() {
            " (the policy allows none)".into()
        } else {
            format!(" (allowed: {})", entries.join(", "))
        }
    }

    /// The grant of a module fetched by `image`; None when no allowed
    /// source names it. The first matching source decides.
    pub fn module_power(&self, image: &str) -> Option<Power> {
        let reference = Reference::try_from(image).ok()?;
        self.modules
            .allowed
            .iter()
            .find(|s| ImageRule::parse(&s.image).is_ok_and(|rule| rule.names(&reference)))
            .map(|s| Power { cluster_scoped: s.cluster_scoped, host_access: s.host_access })
    }

    /// The signers the cluster admin requires for a module fetched by
    /// `image` into `namespace`: None when its source names none. A source
    /// whose signers all serve other namespaces is a violation (no module
    /// from it can run here).
    pub fn required_signers(&self, image: &str, namespace: &str) -> Result<Option<RequiredSigners<'_>>, Violation> {
        let Ok(reference) = Reference::try_from(image) else { return Ok(None) };
        let Some((index, source)) = self
            .modules
            .allowed
            .iter()
            .enumerate()
            .find(|(_, s)| ImageRule::parse(&s.image).is_ok_and(|rule| rule.names(&reference)))
        else {
            return Ok(None);
        };
        if source.signers.is_empty() {
            return Ok(None);
        }
        let rule = format!("modules.allowed[{index}].signers");
        let signers: Vec<&ModuleSigner> =
            self.modules.signers.iter().filter(|s| source.signers.contains(&s.name) && s.serves(namespace)).collect();
        if signers.is_empty() {
            return Err(Violation {
                field: "module.image".into(),
                rule: "modules.signers[].namespaces",
                message: format!(
                    "modules from `{}` must be signed by {} ({rule}), and none of them serves namespace `{namespace}`",
                    source.image,
                    source.signers.join(" or ")
                ),
            });
        }
        Ok(Some(RequiredSigners { rule, signers, enforcement: source.verify }))
    }

    /// Whether a workload may run `image`: a built-in image, the operator's
    /// own, or one the policy allows.
    pub fn image_allowed(&self, image: &str, operator_image: Option<&str>) -> bool {
        if operator_image == Some(image) {
            return true;
        }
        let Ok(reference) = Reference::try_from(image) else { return false };
        let rules = self.image_rules.0.get_or_init(|| {
            BUILT_IN_IMAGES
                .iter()
                .copied()
                .chain(self.images.allowed.iter().map(String::as_str))
                .filter_map(|entry| ImageRule::parse(entry).ok())
                .collect()
        });
        rules.iter().any(|rule| rule.names(&reference))
    }

    /// A pod spec a feature renders: every image allowed, and host access
    /// only with `power.host_access`. `field` locates the pod spec in the
    /// object (`spec.template.spec`).
    pub fn check_pod_spec(
        &self,
        pod_spec: &Value,
        field: &str,
        power: Power,
        operator_image: &str,
    ) -> Result<(), Violation> {
        let mut containers = vec![];
        for list in ["initContainers", "containers", "ephemeralContainers"] {
            for (i, c) in pod_spec.get(list).and_then(Value::as_array).into_iter().flatten().enumerate() {
                containers.push((format!("{field}.{list}[{i}]"), c));
            }
        }
        for (path, container) in &containers {
            let image = container.get("image").and_then(Value::as_str).unwrap_or_default();
            if !self.image_allowed(image, Some(operator_image)) {
                return Err(Violation {
                    field: format!("{path}.image"),
                    rule: "images.allowed",
                    message: format!(
                        "`{image}` is neither a built-in image nor allowed by the cluster admin{}",
                        self.list_hint(self.images.allowed.iter().map(String::as_str))
                    ),
                });
            }
        }
        if power.host_access {
            return Ok(());
        }
        let host = |path: String, what: &str| Violation {
            field: path,
            rule: "modules.allowed[].hostAccess",
            message: format!("{what}: host access is not granted to modules from this source"),
        };
        for namespace in ["hostPID", "hostIPC", "hostNetwork"] {
            if pod_spec.get(namespace).and_then(Value::as_bool) == Some(true) {
                return Err(host(format!("{field}.{namespace}"), "shares a host namespace"));
            }
        }
        for (i, volume) in pod_spec.get("volumes").and_then(Value::as_array).into_iter().flatten().enumerate() {
            if volume.get("hostPath").is_some() {
                return Err(host(format!("{field}.volumes[{i}].hostPath"), "mounts a host path"));
            }
        }
        for (path, container) in &containers {
            let security = container.get("securityContext");
            if security.and_then(|s| s.get("privileged")).and_then(Value::as_bool) == Some(true) {
                return Err(host(format!("{path}.securityContext.privileged"), "runs privileged"));
            }
            if security
                .and_then(|s| s.pointer("/capabilities/add"))
                .and_then(Value::as_array)
                .is_some_and(|a| !a.is_empty())
            {
                return Err(host(format!("{path}.securityContext.capabilities.add"), "adds capabilities"));
            }
            if security.and_then(|s| s.get("procMount")).and_then(Value::as_str) == Some("Unmasked") {
                return Err(host(format!("{path}.securityContext.procMount"), "unmasks /proc"));
            }
            let ports = container.get("ports").and_then(Value::as_array).into_iter().flatten();
            if let Some(i) = ports.enumerate().find(|(_, p)| p.get("hostPort").is_some()).map(|(i, _)| i) {
                return Err(host(format!("{path}.ports[{i}].hostPort"), "binds a host port"));
            }
        }
        Ok(())
    }

    /// A path glob a feature's log receiver tails must lie under a log
    /// root: the host mounts its directory into the uid-0 node collector.
    pub fn check_log_path(&self, glob: &str, field: &str) -> Result<(), Violation> {
        let outside = |why: &str| Violation {
            field: field.to_string(),
            rule: "logRoots",
            message: format!("`{glob}` {why} (log roots: {})", self.log_roots.join(", ")),
        };
        if !glob.starts_with('/') {
            return Err(outside("is not an absolute path"));
        }
        if glob.split('/').any(|c| c == ".." || c == ".") {
            return Err(outside("contains `.` or `..`"));
        }
        let under = self.log_roots.iter().any(|root| {
            let root = root.trim_end_matches('/');
            glob.strip_prefix(root).is_some_and(|rest| rest.starts_with('/') && rest.len() > 1)
        });
        if under { Ok(()) } else { Err(outside("is not under a log root")) }
    }
}

/// One entry of `images.allowed` or `modules.allowed[].image`.
#[derive(Debug, Clone, PartialEq, Eq)]
enum ImageRule {
    /// `registry/path/`: every repository beneath.
    Prefix(String),
    /// `registry/repository`: any tag or digest of it.
    Repository(String),
    /// `registry/repository:tag` or `@digest`: exactly that.
    Exact(Reference),
}

/// What is wrong with an entry of an image allow-list.
#[derive(Debug, thiserror::Error)]
enum ImageRuleError {
    #[error("must not be empty")]
    Empty,
    #[error("`{0}`: a prefix must start with a registry host (`registry.example.com/team/`)")]
    PrefixWithoutHost(String),
    #[error("`{entry}` is not an image reference: {cause}")]
    NotAReference { entry: String, cause: String },
}

impl ImageRule {
    fn parse(entry: &str) -> Result<Self, ImageRuleError> {
        if entry.is_empty() {
            return Err(ImageRuleError::Empty);
        }
        if let Some(prefix) = entry.strip_suffix('/') {
            // A bare host (`registry.example.com/`) must be a host, not a
            // Docker Hub namespace that the runtime would resolve elsewhere.
            if prefix.is_empty()
                || !prefix.split('/').next().is_some_and(|h| h.contains('.') || h.contains(':') || h == "localhost")
            {
                return Err(ImageRuleError::PrefixWithoutHost(entry.to_string()));
            }
            return Ok(ImageRule::Prefix(entry.to_string()));
        }
        let reference = Reference::try_from(entry)
            .map_err(|e| ImageRuleError::NotAReference { entry: entry.to_string(), cause: e.to_string() })?;
        let last = entry.rsplit('/').next().unwrap_or(entry);
        if entry.contains('@') || last.contains(':') {
            Ok(ImageRule::Exact(reference))
        } else {
            Ok(ImageRule::Repository(format!("{}/{}", reference.registry(), reference.repository())))
        }
    }

    fn names(&self, image: &Reference) -> bool {
        let repository = format!("{}/{}", image.registry(), image.repository());
        match self {
            ImageRule::Prefix(prefix) => repository.starts_with(prefix.as_str()),
            ImageRule::Repository(r) => &repository == r,
            ImageRule::Exact(e) => {
                e.registry() == image.registry()
                    && e.repository() == image.repository()
                    && match e.digest() {
                        Some(digest) => image.digest() == Some(digest),
                        // A tag names what runs only while no digest says otherwise.
                        None => image.digest().is_none() && e.tag() == image.tag(),
                    }
            }
        }
    }
}

impl fmt::Display for Power {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "cluster-scoped: {}, host access: {}", self.cluster_scoped, self.host_access)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn agent(yaml_spec: &str) -> SecurityAgent {
        secop_api::parse(&format!("apiVersion: security.example.io/v1alpha1\nkind: SecurityAgent\nmetadata: {{name: a, namespace: tenant-a}}\nspec:\n{yaml_spec}")).unwrap()
    }

    fn policy(yaml: &str) -> ClusterPolicy {
        ClusterPolicy::from_yaml(yaml).unwrap()
    }

    #[test]
    fn an_empty_file_is_the_default_policy() {
        assert_eq!(policy(""), ClusterPolicy::default());
        assert_eq!(policy("{}"), ClusterPolicy::default());
    }

    #[test]
    fn unknown_and_bad_fields_are_named() {
        let err = ClusterPolicy::from_yaml("images:\n  alowed: []\n").unwrap_err();
        assert_eq!(err.field, "images.alowed");
        assert!(err.message.contains("alowed"), "{err}");
        let err = ClusterPolicy::from_yaml("logRoots: [\"/\"]\n").unwrap_err();
        assert_eq!(err.field, "logRoots[0]");
        let err = ClusterPolicy::from_yaml("modules:\n  allowed: [{image: \"falcosecurity/\"}]\n").unwrap_err();
        assert_eq!(err.field, "modules.allowed[0].image");
        let err = ClusterPolicy::from_yaml("limits: {maxMemoryMib: many}\n").unwrap_err();
        assert_eq!(err.field, "limits.maxMemoryMib");
    }

    #[test]
    fn namespaces_honoured_are_the_listed_and_the_operators_own() {
        let offline = ClusterPolicy::default();
        assert!(offline.honours_namespace("anything"), "offline render without a list checks no namespace");
        let operator = ClusterPolicy::default().for_operator("security-system", None);
        assert!(operator.honours_namespace("security-system"));
        let err = operator.check_agent(&agent("  features: []\n")).unwrap_err();
        assert_eq!((err.field.as_str(), err.rule), ("metadata.namespace", "agentNamespaces"));
        assert!(err.message.contains("tenant-a") && err.message.contains("security-system"), "{err}");
        let listed = policy("agentNamespaces: [tenant-a]").for_operator("security-system", None);
        assert!(listed.check_agent(&agent("  features: []\n")).is_ok());
        assert!(policy("agentNamespaces: ['*']").for_operator("x", Some("y")).honours_namespace("z"));
        assert!(ClusterPolicy::default().for_operator("x", Some("watched")).honours_namespace("watched"));
    }

    #[test]
    fn limits_above_the_ceilings_are_refused() {
        let err = ClusterPolicy::default()
            .check_agent(&agent("  features:\n  - name: falco\n    limits: {memoryMib: 4096}\n"))
            .unwrap_err();
        assert_eq!((err.field.as_str(), err.rule), ("spec.features[0].limits.memoryMib", "limits.maxMemoryMib"));
        let err = ClusterPolicy::default()
            .check_agent(&agent("  features:\n  - name: falco\n    limits: {timeoutMillis: 60000}\n"))
            .unwrap_err();
        assert_eq!(err.rule, "limits.maxTimeoutMillis");
        assert!(
            ClusterPolicy::default()
                .check_agent(&agent("  features:\n  - name: falco\n    limits: {memoryMib: 128}\n"))
                .is_ok()
        );
    }

    #[test]
    fn modules_come_only_from_allowed_sources() {
        let spec = "  features:\n  - name: falco\n    module: {image: \"evil.example.com/falco:1\"}\n";
        let err = ClusterPolicy::default().check_agent(&agent(spec)).unwrap_err();
        assert_eq!((err.field.as_str(), err.rule), ("spec.features[0].module.image", "modules.allowed"));
        assert!(err.message.contains("allows none"), "{err}");
        let p = policy("modules:\n  allowed:\n  - image: registry.example.com/secop/\n    hostAccess: true\n");
        assert!(p.check_agent(&agent(spec)).is_err());
        assert_eq!(
            p.module_power("registry.example.com/secop/falco:1"),
            Some(Power { cluster_scoped: false, host_access: true })
        );
        assert_eq!(p.module_power("registry.example.com/secop-evil/falco:1"), None, "a prefix ends at a path boundary");
        assert_eq!(p.module_power("registry.example.com/other/falco:1"), None);
        // A disabled feature's module is never fetched: not checked.
        assert!(ClusterPolicy::default().check_agent(&agent("  features:\n  - name: falco\n    enabled: false\n    module: {image: \"evil.example.com/falco:1\"}\n")).is_ok());
    }

    const PEM: &str =
        "-----BEGIN PUBLIC KEY-----\n      MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE\n      -----END PUBLIC KEY-----";

    fn signed_policy(namespaces: &str) -> ClusterPolicy {
        policy(&format!(
            "modules:\n  signers:\n  - name: release\n    namespaces: {namespaces}\n    publicKey: |\n      {PEM}\n  allowed:\n  - image: registry.example.com/secop/\n    signers: [release]\n  - image: registry.example.com/lab/\n"
        ))
    }

    #[test]
    fn signers_required_by_a_source_serve_only_their_namespaces() {
        let p = signed_policy("[tenant-a]");
        let required = p.required_signers("registry.example.com/secop/falco:1", "tenant-a").unwrap().unwrap();
        assert_eq!(required.rule, "modules.allowed[0].signers");
        assert_eq!(required.signers.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(), ["release"]);
        assert_eq!(required.enforcement, SignatureEnforcement::Enforce);
        assert_eq!(p.required_signers("registry.example.com/lab/falco:1", "tenant-a").unwrap(), None);
        let err = p.required_signers("registry.example.com/secop/falco:1", "tenant-b").unwrap_err();
        assert_eq!(err.rule, "modules.signers[].namespaces");
        assert!(err.message.contains("none of them serves namespace `tenant-b`"), "{err}");
        assert!(
            signed_policy("[\"*\"]").required_signers("registry.example.com/secop/f:1", "tenant-b").unwrap().is_some()
        );
    }

    #[test]
    fn a_tenant_cannot_switch_off_a_required_signature() {
        let p = signed_policy("[]");
        for mode in ["Off", "Warn"] {
            let spec = format!(
                "  features:\n  - name: falco\n    module:\n      image: registry.example.com/secop/falco:1\n      verify: {{mode: {mode}}}\n"
            );
            let err = p.check_agent(&agent(&spec)).unwrap_err();
            assert_eq!(
                (err.field.as_str(), err.rule),
                ("spec.features[0].module.verify.mode", "modules.allowed[].signers")
            );
            assert!(err.message.contains("requires a signature by release"), "{err}");
        }
        let spec = "  features:\n  - name: falco\n    module:\n      image: registry.example.com/lab/falco:1\n      verify: {mode: Off}\n";
        assert!(p.check_agent(&agent(spec)).is_ok(), "where the admin requires none, the tenant decides");
    }

    #[test]
    fn signer_entries_are_checked_when_the_file_is_read() {
        let err =
            ClusterPolicy::from_yaml("modules:\n  allowed:\n  - {image: r.example/, signers: [nobody]}\n").unwrap_err();
        assert_eq!(err.field, "modules.allowed[0].signers[0]");
        let err = ClusterPolicy::from_yaml(
            "modules:\n  signers:\n  - {name: k, publicKey: \"-----BEGIN PRIVATE KEY-----\"}\n",
        )
        .unwrap_err();
        assert_eq!(err.field, "modules.signers[0].publicKey");
    }

    #[test]
    fn image_overrides_need_an_allowed_image() {
        let spec = |image: &str| format!("  features: []\n  override:\n    tetragon: {{image: \"{image}\"}}\n");
        let err = ClusterPolicy::default().check_agent(&agent(&spec("evil.example.com/tetragon:1"))).unwrap_err();
        assert_eq!((err.field.as_str(), err.rule), ("spec.override.tetragon.image", "images.allowed"));
        // Another tag of a built-in image is another image.
        assert!(ClusterPolicy::default().check_agent(&agent(&spec("quay.io/cilium/tetragon:v9"))).is_err());
        assert!(ClusterPolicy::default().check_agent(&agent(&spec("quay.io/cilium/tetragon:v1.4.1"))).is_ok());
        let p = policy("images:\n  allowed: [quay.io/cilium/tetragon, \"mirror.example.com/\"]\n");
        assert!(p.check_agent(&agent(&spec("quay.io/cilium/tetragon:v9"))).is_ok());
        assert!(p.check_agent(&agent(&spec("mirror.example.com/cilium/tetragon:v1"))).is_ok());
        assert!(p.check_agent(&agent(&spec("quay.io/cilium/tetragon-evil:v9"))).is_err());
    }

    #[test]
    fn the_validation_image_needs_an_allowed_image() {
        let spec = |image: &str| format!("  features: []\n  tests: {{enabled: true, image: \"{image}\"}}\n");
        let err = ClusterPolicy::default().check_agent(&agent(&spec("evil.example.com/busybox:1"))).unwrap_err();
        assert_eq!((err.field.as_str(), err.rule), ("spec.tests.image", "images.allowed"));
        assert!(
            ClusterPolicy::default().check_agent(&agent(&spec("busybox:1.36.1"))).is_ok(),
            "the built-in default, as Docker Hub shorthand"
        );
        assert!(
            ClusterPolicy::default()
                .check_agent(&agent("  features: []\n  tests: {enabled: false, image: \"evil.example.com/b:1\"}\n"))
                .is_ok(),
            "off: nothing runs"
        );
    }

    #[test]
    fn image_rules_normalise_docker_hub_and_respect_digests() {
        let p = ClusterPolicy::default();
        assert!(p.image_allowed("falcosecurity/falco:0.41.3", None), "Docker Hub short names are normalised");
        assert!(!p.image_allowed("docker.io/falcosecurity/falco:0.41.3@sha256:0123456789012345678901234567890123456789012345678901234567890123", None), "a digest overrides the tag");
        assert!(!p.image_allowed("not a reference", None));
        assert!(p.image_allowed("ghcr.io/x/op:1", Some("ghcr.io/x/op:1")));
        let pinned = policy(
            "images:\n  allowed: [\"docker.io/busybox@sha256:0123456789012345678901234567890123456789012345678901234567890123\"]\n",
        );
        assert!(
            pinned
                .image_allowed("busybox@sha256:0123456789012345678901234567890123456789012345678901234567890123", None)
        );
        assert!(!pinned.image_allowed("busybox:latest", None));
    }

    #[test]
    fn host_access_needs_a_grant_images_always_count() {
        let p = ClusterPolicy::default();
        let none = Power { cluster_scoped: false, host_access: false };
        let op = "ghcr.io/example/security-operator:0.1.0";
        let plain = json!({"containers":[{"name":"a","image":op}]});
        assert!(p.check_pod_spec(&plain, "spec.template.spec", none, op).is_ok());
        let cases = [
            (json!({"hostPID":true,"containers":[{"name":"a","image":op}]}), "spec.template.spec.hostPID"),
            (
                json!({"volumes":[{"name":"r","hostPath":{"path":"/"}}],"containers":[{"name":"a","image":op}]}),
                "spec.template.spec.volumes[0].hostPath",
            ),
            (
                json!({"containers":[{"name":"a","image":op,"securityContext":{"privileged":true}}]}),
                "spec.template.spec.containers[0].securityContext.privileged",
            ),
            (
                json!({"initContainers":[{"name":"i","image":op,"securityContext":{"capabilities":{"add":["SYS_ADMIN"]}}}],"containers":[]}),
                "spec.template.spec.initContainers[0].securityContext.capabilities.add",
            ),
            (
                json!({"containers":[{"name":"a","image":op,"ports":[{"containerPort":1,"hostPort":1}]}]}),
                "spec.template.spec.containers[0].ports[0].hostPort",
            ),
        ];
        for (spec, field) in cases {
            let err = p.check_pod_spec(&spec, "spec.template.spec", none, op).unwrap_err();
            assert_eq!((err.field.as_str(), err.rule), (field, "modules.allowed[].hostAccess"));
            assert!(p.check_pod_spec(&spec, "spec.template.spec", Power::BUILT_IN, op).is_ok());
        }
        let evil = json!({"containers":[{"name":"a","image":"evil.example.com/x:1"}]});
        let err = p.check_pod_spec(&evil, "spec.template.spec", Power::BUILT_IN, op).unwrap_err();
        assert_eq!((err.field.as_str(), err.rule), ("spec.template.spec.containers[0].image", "images.allowed"));
    }

    #[test]
    fn log_paths_stay_under_the_log_roots() {
        let p = ClusterPolicy::default();
        assert!(p.check_log_path("/var/log/pods/ns_falco-*/falco/*.log", "f").is_ok());
        assert!(p.check_log_path("/var/run/cilium/tetragon/tetragon.log", "f").is_ok());
        for bad in ["/*", "/etc/*", "/var/log/../../etc/shadow", "var/log/x", "/var/logs/x", "/var/log"] {
            let err = p.check_log_path(bad, "f").unwrap_err();
            assert_eq!(err.rule, "logRoots", "{bad}");
        }
    }
}
