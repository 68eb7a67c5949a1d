//! The `SecurityAgent` custom resource (`security.example.io/v1alpha1`).
//!
//! Features are an array with a free-form `config`, so a new tool needs no
//! schema change (docs/seed-deviations.md, §2); the tool-specific
//! validation lives in the feature module, which names the offending
//! field. What the CRD schema can check cheaply (unique feature names,
//! non-negative replicas) it checks on the API server too, and
//! [`validate`] repeats it for offline render.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Affinity, EnvVar, ResourceRequirements, Toleration};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

mod reason;

pub use reason::Reason;

pub const GROUP: &str = "security.example.io";
pub const VERSION: &str = "v1alpha1";
pub const KIND: &str = "SecurityAgent";

/// The desired sensor grid: which features run with what config, where
/// their data goes, workload overrides and continuous validation.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "security.example.io",
    version = "v1alpha1",
    kind = "SecurityAgent",
    namespaced,
    status = "SecurityAgentStatus",
    shortname = "secagent",
    category = "security",
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Features","type":"string","jsonPath":".status.summary"}"#,
    printcolumn = r#"{"name":"Modules","type":"string","jsonPath":".status.conditions[?(@.type==\"Degraded\")].reason"}"#,
    printcolumn = r#"{"name":"Validated","type":"string","jsonPath":".status.conditions[?(@.type==\"Validated\")].status"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#,
    // Unique feature names, on the API server too.
    validation = "self.spec.features.all(f, self.spec.features.exists_one(g, g.name == f.name))",
    doc = "A CTEM security sensor grid: features (tools) with their config, where events go, and overrides."
)]
#[serde(rename_all = "camelCase")]
pub struct SecurityAgentSpec {
    /// Settings shared by every feature.
    #[serde(default)]
    pub global: GlobalSpec,
    /// The tools to run. Each name must be unique; unknown names are errors.
    #[schemars(length(max = 64))]
    pub features: Vec<FeatureSpec>,
    /// Where the features' events, inventory and findings are shipped.
    #[serde(default)]
    pub output: OutputSpec,
    /// Workload overrides: `nodeAgent` for every node DaemonSet, then one
    /// entry per tool (falco, tetragon, osquery, otelNode, otelGateway, trivy, ...).
    #[serde(default, rename = "override", skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "override_schema")]
    pub overrides: Option<OverrideSpec>,
    /// Continuous CTEM validation: scenarios performed on a schedule, their
    /// detections checked (result in `status.validation`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tests: Option<TestSpec>,
}

#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GlobalSpec {
    /// Name stamped on every document (defaults to the agent's name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_name: Option<String>,
}

#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FeatureSpec {
    /// Feature id, e.g. `falco`.
    #[schemars(length(min = 1, max = 63))]
    pub name: String,
    /// Run this feature (default true); a disabled feature's objects are pruned.
    #[serde(default = "enabled_default")]
    pub enabled: bool,
    /// Tool-specific configuration, decoded and validated by the feature.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "free_form")]
    pub config: Option<serde_json::Value>,
    /// Sandbox limits of this feature's module.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<FeatureLimits>,
    /// Where the module comes from; none = the built-in module.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub module: Option<ModuleRef>,
}

/// A map from `nodeAgent` or a tool name to an override: structural
/// schemas may not mix fixed `properties` with `additionalProperties`.
fn override_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
    let entry = generator.subschema_for::<ComponentOverride>();
    schemars::json_schema!({
        "type": "object",
        "description": "Workload overrides: `nodeAgent` for every node DaemonSet, then one entry per tool (falco, tetragon, osquery, otelNode, otelGateway, trivy, ...), which wins.",
        "additionalProperties": entry,
    })
}

fn enabled_default() -> bool {
    true
}

fn free_form(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({ "type": "object", "x-kubernetes-preserve-unknown-fields": true })
}

#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FeatureLimits {
    /// Deadline of each call into the module, in milliseconds (default 1000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 60000))]
    pub timeout_millis: Option<u32>,
    /// Memory of the module instance in MiB (default 64).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 4096))]
    pub memory_mib: Option<u32>,
}

/// A feature module in an OCI registry (compare Istio's WasmPlugin).
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ModuleRef {
    /// `registry/repo:tag` or `registry/repo@sha256:...`.
    pub image: String,
    /// Expected sha256 of the component, hex.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^(sha256:)?[0-9a-fA-F]{64}$"))]
    pub sha256: Option<String>,
    /// `IfNotPresent` (default: a cached module is used) or `Always` (the tag
    /// is resolved again on every module poll, so a moved tag is picked up).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pull_policy: Option<PullPolicy>,
    /// A dockerconfigjson Secret in the agent's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pull_secret: Option<String>,
    /// Verify the module's cosign signature (key-based, `.sig` tag) before
    /// it is compiled. Where the cluster policy names signers for the
    /// module's source, those are required whatever this says; keys here
    /// are then an additional requirement.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verify: Option<ModuleVerify>,
}

#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ModuleVerify {
    /// `Enforce` (default): a module without a signature by one of the keys
    /// is refused and the feature keeps its last good module. `Warn`: it
    /// runs and Degraded says why. `Off`: not verified (refused where the
    /// cluster policy requires signers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<VerifyMode>,
    /// Public keys (PEM, as `cosign.pub`); one of them must have signed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub public_keys: Vec<PublicKeyRef>,
}

#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum VerifyMode {
    Enforce,
    Warn,
    Off,
}

/// A public key in a Secret or a ConfigMap of the agent's namespace:
/// exactly one of `secretName` and `configMapName`.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PublicKeyRef {
    /// A Secret of the agent's namespace holding the key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_name: Option<String>,
    /// A ConfigMap of the agent's namespace holding the key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_map_name: Option<String>,
    /// The data key holding the PEM (default `cosign.pub`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum PullPolicy {
    IfNotPresent,
    Always,
}

#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OutputSpec {
    /// The Elasticsearch cluster the gateway collector writes to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub elasticsearch: Option<ElasticsearchSpec>,
}

#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ElasticsearchSpec {
    /// URLs of Elasticsearch nodes (`https://host:9200`).
    #[schemars(length(min = 1, max = 16), inner(length(max = 2048)))]
    #[schemars(extend("x-kubernetes-validations" = [{
        "rule": "self.all(e, e.startsWith('https://') || e.startsWith('http://'))",
        "message": "every endpoint is an http:// or https:// URL",
    }]))]
    pub endpoints: Vec<String>,
    /// Secret with `username` and `password`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_secret_ref: Option<SecretRef>,
    /// Secret with `ca.crt`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_secret_ref: Option<SecretRef>,
    /// Index names by CTEM purpose.
    #[serde(default)]
    pub indices: IndexSpec,
    /// Allow `http://` endpoints together with `authSecretRef`: the
    /// credentials then cross the network in clear text. For labs only.
    #[serde(default, rename = "insecureAllowPlainHTTP", skip_serializing_if = "std::ops::Not::not")]
    pub insecure_allow_plain_http: bool,
}

#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
pub struct SecretRef {
    /// Name of a Secret in the agent's namespace.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

/// The CTEM split: Scope, Validation, Discovery/Priority.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct IndexSpec {
    /// Scope: assets and posture (default `security-inventory`).
    #[serde(default = "default_inventory")]
    #[schemars(length(min = 1, max = 255), regex(pattern = r"^[a-z0-9][a-z0-9._-]*$"))]
    pub inventory: String,
    /// Validation: runtime detections (default `security-events`).
    #[serde(default = "default_events")]
    #[schemars(length(min = 1, max = 255), regex(pattern = r"^[a-z0-9][a-z0-9._-]*$"))]
    pub events: String,
    /// Discovery and Priority: vulnerability findings (default `security-vuln`).
    #[serde(default = "default_vulnerabilities")]
    #[schemars(length(min = 1, max = 255), regex(pattern = r"^[a-z0-9][a-z0-9._-]*$"))]
    pub vulnerabilities: String,
}

fn default_inventory() -> String {
    "security-inventory".into()
}
fn default_events() -> String {
    "security-events".into()
}
fn default_vulnerabilities() -> String {
    "security-vuln".into()
}

impl Default for IndexSpec {
    fn default() -> Self {
        Self { inventory: default_inventory(), events: default_events(), vulnerabilities: default_vulnerabilities() }
    }
}

#[derive(Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OverrideSpec {
    /// Applies to every node agent (DaemonSet); per-tool entries win.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_agent: Option<ComponentOverride>,
    /// Per-tool overrides, keyed by tool (`falco`, `otelGateway`, ...).
    #[serde(flatten)]
    pub components: BTreeMap<String, ComponentOverride>,
}

/// Written by hand because `#[serde(flatten)]` would lose the path of a
/// bad field (`spec.override.falco.tolerations` would become `spec.override`).
impl OverrideSpec {
    /// Every override with its key: `nodeAgent` first, then per tool.
    pub fn entries(&self) -> impl Iterator<Item = (&str, &ComponentOverride)> {
        self.node_agent.iter().map(|o| ("nodeAgent", o)).chain(self.components.iter().map(|(k, o)| (k.as_str(), o)))
    }
}

impl<'de> Deserialize<'de> for OverrideSpec {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = OverrideSpec;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a map from `nodeAgent` or a tool name to a workload override")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<OverrideSpec, A::Error> {
                let mut spec = OverrideSpec::default();
                while let Some(key) = map.next_key::<String>()? {
                    let value = map.next_value::<ComponentOverride>()?;
                    if key == "nodeAgent" {
                        spec.node_agent = Some(value);
                    } else {
                        spec.components.insert(key, value);
                    }
                }
                Ok(spec)
            }
        }
        deserializer.deserialize_map(Visitor)
    }
}

#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ComponentOverride {
    /// Container resources (merged key-wise: `limits.memory` keeps the CPU limit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// Pod tolerations (replace the rendered ones).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tolerations: Option<Vec<Toleration>>,
    /// Pod node selector (merged key-wise).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_selector: Option<BTreeMap<String, String>>,
    /// Pod affinity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<Affinity>,
    /// Pod priority class.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority_class_name: Option<String>,
    /// The tool container's image; only images the cluster policy allows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Replicas of a Deployment (ignored for DaemonSets).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub replicas: Option<i32>,
    /// Environment of the tool container (merged by name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<Vec<EnvVar>>,
    /// Labels added to the workload and its pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<BTreeMap<String, String>>,
    /// Annotations added to the workload and its pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
}

/// The built-in feature that `spec.tests` configures
/// (features-wasm/ctem_validation); it is not listed in `spec.features`.
pub const VALIDATION_FEATURE: &str = "ctem_validation";

/// The CTEM validation scenarios `spec.tests.scenarios` may name (the MITRE
/// ATT&CK scenarios A–E of test/scenarios/README.md).
pub const VALIDATION_SCENARIOS: &[&str] = &[
    "scope-inventory",
    "validate-shell",
    "validate-k8s-api",
    "validate-container-escape",
    "validate-cron-persistence",
];

/// Continuous CTEM validation: on a schedule, a Job in the agent's
/// namespace performs the scenarios' behaviour itself, then checks that
/// the expected detections arrived in Elasticsearch and records the result
/// per scenario in `status.validation` and in the events index.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TestSpec {
    /// Run the validation CronJob (its objects are pruned when off).
    #[serde(default)]
    pub enabled: bool,
    /// Scenario names (scope-inventory, validate-shell, validate-k8s-api,
    /// validate-container-escape, validate-cron-persistence); empty = all.
    #[serde(default)]
    pub scenarios: Vec<String>,
    /// CronJob schedule of a validation run (default `@hourly`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<String>,
    /// Image that performs the scenarios: a shell with busybox's tools
    /// (sh, cat, wget, ls, mount, nsenter, mkdir). Default busybox.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
}

impl TestSpec {
    pub const DEFAULT_SCHEDULE: &'static str = "@hourly";
    pub const DEFAULT_IMAGE: &'static str = "docker.io/library/busybox:1.36.1";

    /// The scenarios a run performs: the listed ones, or all.
    pub fn selected(&self) -> Vec<&str> {
        if self.scenarios.is_empty() {
            VALIDATION_SCENARIOS.to_vec()
        } else {
            self.scenarios.iter().map(String::as_str).collect()
        }
    }
}

/// What the last validation run found; written by the validation Job
/// (field manager `secop-validation`), read by the operator for the
/// `Validated` condition.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ValidationStatus {
    /// When the last run's checks finished (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_run: Option<String>,
    /// The pod that performed the scenarios (its events carry this name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<String>,
    /// Why the last run could not check the detections (Elasticsearch
    /// unreachable, ...); its scenarios are then not checked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// One result per scenario of the run.
    #[serde(default)]
    pub scenarios: Vec<ScenarioResult>,
}

#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ScenarioResult {
    /// The scenario (`spec.tests.scenarios`).
    pub name: String,
    pub result: ScenarioOutcome,
    /// Tools whose detection arrived.
    #[serde(default)]
    pub detected_by: Vec<String>,
    /// Tools enabled in this agent whose detection did not arrive.
    #[serde(default)]
    pub missing: Vec<String>,
}

/// Whether every enabled tool's detection of a scenario arrived.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum ScenarioOutcome {
    Passed,
    /// Some enabled tool's detection did not arrive (`missing` names it).
    #[default]
    Failed,
}

impl ScenarioOutcome {
    pub fn passed(passed: bool) -> Self {
        if passed { Self::Passed } else { Self::Failed }
    }
}

impl std::fmt::Display for ScenarioOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(match self {
            Self::Passed => "Passed",
            Self::Failed => "Failed",
        })
    }
}

/// What the operator last observed and did (written with server-side
/// apply; `validation` by the validation runner).
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecurityAgentStatus {
    /// The generation of the spec this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready`, `Degraded`, `Validated` (with `spec.tests`) and one
    /// readiness condition per feature (`FalcoReady`, ...).
    #[serde(default)]
    pub conditions: Vec<Condition>,
    /// Per-feature state, keyed by feature name.
    #[serde(default)]
    pub features: BTreeMap<String, FeatureStatus>,
    /// "ready/enabled", for the printer column.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary: Option<String>,
    /// Kinds (`apiVersion/Kind`) of the objects applied, so a disabled
    /// feature's objects can be found and pruned.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub inventory: Vec<String>,
    /// The last CTEM validation run (`spec.tests`), per scenario.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub validation: Option<ValidationStatus>,
}

#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FeatureStatus {
    /// Whether the spec enables the feature.
    pub enabled: bool,
    /// sha256 of the module in use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub module_digest: Option<String>,
    /// The reference the module in use was fetched by; absent for the
    /// built-in module. After a rollback this is the last good module,
    /// not the one the spec asks for (see the Degraded condition).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub module_image: Option<String>,
    /// Who signed the module in use (`key-name (key sha256:...)`), when its
    /// signature was verified; `built-in` for an embedded module.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub module_signer: Option<String>,
    /// Why the feature is not ready, or the module notes (rollback,
    /// registry unreachable) of its last reconcile.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// An agent within the operator, `namespace/name`: the key of everything
/// kept per agent between reconciles (last good modules and outputs,
/// retry counts). An agent without a namespace (offline render of a file
/// that names none) is in `default`, as the API server would put it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AgentId {
    pub namespace: String,
    pub name: String,
}

impl AgentId {
    pub fn of(agent: &SecurityAgent) -> Self {
        Self {
            namespace: agent.metadata.namespace.clone().unwrap_or_else(|| "default".into()),
            name: agent.metadata.name.clone().unwrap_or_default(),
        }
    }
}

impl std::fmt::Display for AgentId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// Bad input, with the path of the offending field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct SpecError {
    pub field: String,
    pub message: String,
}

impl SpecError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self { field: field.into(), message: message.into() }
    }
}

/// Parse a SecurityAgent from YAML or JSON text; errors name the field.
pub fn parse(text: &str) -> Result<SecurityAgent, SpecError> {
    let value: serde_yaml::Value =
        serde_yaml::from_str(text).map_err(|e| SpecError::new(".", format!("not valid YAML: {e}")))?;
    let type_of = |key: &str| value.get(key).and_then(serde_yaml::Value::as_str).unwrap_or_default().to_string();
    let (api_version, kind) = (type_of("apiVersion"), type_of("kind"));
    if api_version != format!("{GROUP}/{VERSION}") || kind != KIND {
        return Err(SpecError::new(
            "apiVersion/kind",
            format!("expected {GROUP}/{VERSION} {KIND}, got `{api_version}` `{kind}`"),
        ));
    }
    let agent: SecurityAgent = serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        SpecError::new(path, e.inner().to_string())
    })?;
    validate(&agent.spec)?;
    Ok(agent)
}

/// Checks the CRD schema also makes, for input that never saw an API server.
pub fn validate(spec: &SecurityAgentSpec) -> Result<(), SpecError> {
    for (i, feature) in spec.features.iter().enumerate() {
        if feature.name.trim().is_empty() {
            return Err(SpecError::new(format!("spec.features[{i}].name"), "must not be empty"));
        }
        if let Some(first) = spec.features[..i].iter().position(|f| f.name == feature.name) {
            return Err(SpecError::new(
                format!("spec.features[{i}].name"),
                format!("duplicate feature `{}` (also spec.features[{first}])", feature.name),
            ));
        }
        if feature.name == VALIDATION_FEATURE {
            return Err(SpecError::new(
                format!("spec.features[{i}].name"),
                format!("`{VALIDATION_FEATURE}` is configured through spec.tests"),
            ));
        }
        if let Some(config) = &feature.config
            && !config.is_object()
        {
            return Err(SpecError::new(format!("spec.features[{i}].config"), "must be an object"));
        }
    }
    if let Some(overrides) = &spec.overrides {
        for (key, o) in overrides.entries() {
            if let Some(replicas) = o.replicas
                && replicas < 0
            {
                return Err(SpecError::new(
                    format!("spec.override.{key}.replicas"),
                    format!("must be >= 0, got {replicas}"),
                ));
            }
            if let Some(image) = &o.image
                && image.trim().is_empty()
            {
                return Err(SpecError::new(format!("spec.override.{key}.image"), "must not be empty"));
            }
        }
    }
    if let Some(tests) = &spec.tests {
        for (i, name) in tests.scenarios.iter().enumerate() {
            if !VALIDATION_SCENARIOS.contains(&name.as_str()) {
                return Err(SpecError::new(
                    format!("spec.tests.scenarios[{i}]"),
                    format!("unknown scenario `{name}`; known: {}", VALIDATION_SCENARIOS.join(", ")),
                ));
            }
            if let Some(first) = tests.scenarios[..i].iter().position(|n| n == name) {
                return Err(SpecError::new(
                    format!("spec.tests.scenarios[{i}]"),
                    format!("duplicate scenario `{name}` (also spec.tests.scenarios[{first}])"),
                ));
            }
        }
        // The feature checks this too; here the error names the field the
        // user wrote, before anything renders.
        if let Some(schedule) = &tests.schedule
            && !secop_feature_sdk::k8s::valid_cron_schedule(schedule)
        {
            return Err(SpecError::new(
                "spec.tests.schedule",
                format!("`{schedule}` is not a cron schedule (5 fields, @hourly/@daily/..., or `@every 1h`)"),
            ));
        }
        if let Some(image) = &tests.image
            && image.trim().is_empty()
        {
            return Err(SpecError::new("spec.tests.image", "must not be empty"));
        }
    }
    if let Some(es) = &spec.output.elasticsearch {
        if es.endpoints.is_empty() {
            return Err(SpecError::new("spec.output.elasticsearch.endpoints", "needs at least one endpoint"));
        }
        for (i, e) in es.endpoints.iter().enumerate() {
            if !(e.starts_with("http://") || e.starts_with("https://")) {
                return Err(SpecError::new(
                    format!("spec.output.elasticsearch.endpoints[{i}]"),
                    format!("`{e}` must start with http:// or https://"),
                ));
            }
            if e.starts_with("http://") && es.auth_secret_ref.is_some() && !es.insecure_allow_plain_http {
                return Err(SpecError::new(
                    format!("spec.output.elasticsearch.endpoints[{i}]"),
                    format!(
                        "`{e}` is plain HTTP: the credentials of authSecretRef would cross the network in clear text; use https:// (with caSecretRef), or set insecureAllowPlainHTTP: true for a lab"
                    ),
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `kubectl explain securityagent --recursive` is useful: every field
    /// of the CRD's schema has a description.
    #[test]
    fn every_field_of_the_crd_has_a_description() {
        use kube::CustomResourceExt as _;
        fn walk(schema: &serde_json::Value, path: &str, missing: &mut Vec<String>) {
            if !schema.is_object() {
                return;
            }
            for (name, field) in schema["properties"].as_object().into_iter().flatten() {
                let path = format!("{path}.{name}");
                if field["description"].as_str().is_none_or(str::is_empty) {
                    missing.push(path.clone());
                }
                walk(field, &path, missing);
            }
            walk(&schema["items"], &format!("{path}[]"), missing);
            walk(&schema["additionalProperties"], &format!("{path}{{}}"), missing);
        }
        let crd = serde_json::to_value(SecurityAgent::crd()).unwrap();
        let mut missing = vec![];
        walk(&crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"], "", &mut missing);
        // apiVersion, kind and metadata are described by Kubernetes itself.
        missing.retain(|p| !matches!(p.as_str(), ".apiVersion" | ".kind" | ".metadata"));
        assert!(missing.is_empty(), "fields without a description: {missing:?}");
    }

    #[test]
    fn the_validation_status_policy_guards_every_other_status_field() {
        let policy = include_str!("../../../deploy/helm/security-operator/files/validation-status-policy.yaml");
        let every_field = SecurityAgentStatus {
            observed_generation: Some(1),
            conditions: vec![],
            features: BTreeMap::new(),
            summary: Some("0/0".into()),
            inventory: vec!["v1/ConfigMap".into()],
            validation: Some(ValidationStatus::default()),
        };
        let fields = serde_json::to_value(&every_field).unwrap();
        for field in fields.as_object().unwrap().keys().filter(|k| *k != "validation") {
            assert!(
                policy.contains(&format!("object.?status.?{field} == oldObject.?status.?{field}")),
                "status.{field} is not guarded by the validation runner's policy"
            );
        }
    }

    const MINIMAL: &str =
        "apiVersion: security.example.io/v1alpha1\nkind: SecurityAgent\nmetadata: {name: a, namespace: s}\n";

    #[test]
    fn duplicate_feature_is_named() {
        let text = format!("{MINIMAL}spec:\n  features:\n  - name: falco\n  - name: osquery\n  - name: falco\n");
        let err = parse(&text).unwrap_err();
        assert_eq!(err.field, "spec.features[2].name");
        assert!(err.message.contains("duplicate feature `falco`"));
    }

    #[test]
    fn negative_replicas_are_named() {
        let text = format!("{MINIMAL}spec:\n  features: []\n  override:\n    otelGateway:\n      replicas: -1\n");
        let err = parse(&text).unwrap_err();
        assert_eq!(err.field, "spec.override.otelGateway.replicas");
    }

    #[test]
    fn wrong_types_are_named() {
        let text = format!("{MINIMAL}spec:\n  features:\n  - name: falco\n    enabled: maybe\n");
        let err = parse(&text).unwrap_err();
        assert_eq!(err.field, "spec.features[0].enabled");
        let text = format!(
            "{MINIMAL}spec:\n  features: []\n  override:\n    falco:\n      tolerations: {{operator: Exists}}\n"
        );
        assert_eq!(parse(&text).unwrap_err().field, "spec.override.falco.tolerations");
    }

    #[test]
    fn credentials_over_plain_http_need_the_explicit_opt_in() {
        let spec = |extra: &str| {
            format!(
                "{MINIMAL}spec:\n  features: []\n  output:\n    elasticsearch:\n      endpoints: [\"https://es:9200\", \"http://es:9200\"]\n      authSecretRef: {{name: es}}\n{extra}"
            )
        };
        let err = parse(&spec("")).unwrap_err();
        assert_eq!(err.field, "spec.output.elasticsearch.endpoints[1]");
        assert!(err.message.contains("clear text") && err.message.contains("insecureAllowPlainHTTP"), "{err}");
        assert!(parse(&spec("      insecureAllowPlainHTTP: true\n")).is_ok());
        // Without credentials plain HTTP sends nothing secret.
        assert!(
            parse(&format!(
                "{MINIMAL}spec:\n  features: []\n  output:\n    elasticsearch:\n      endpoints: [\"http://es:9200\"]\n"
            ))
            .is_ok()
        );
    }

    #[test]
    fn unknown_validation_scenarios_are_named() {
        let text = format!(
            "{MINIMAL}spec:\n  features: []\n  tests:\n    enabled: true\n    scenarios: [validate-shell, validate-everything]\n"
        );
        let err = parse(&text).unwrap_err();
        assert_eq!(err.field, "spec.tests.scenarios[1]");
        assert!(
            err.message.contains("validate-everything") && err.message.contains("validate-cron-persistence"),
            "{err}"
        );
        let twice = parse(&format!(
            "{MINIMAL}spec:\n  features: []\n  tests: {{enabled: true, scenarios: [validate-shell, validate-shell]}}\n"
        ))
        .unwrap_err();
        assert_eq!(twice.field, "spec.tests.scenarios[1]");
        let schedule = parse(&format!("{MINIMAL}spec:\n  features: []\n  tests: {{enabled: true, schedule: often}}\n"))
            .unwrap_err();
        assert_eq!(schedule.field, "spec.tests.schedule");
        assert!(
            parse(&format!("{MINIMAL}spec:\n  features: []\n  tests: {{enabled: true, schedule: \"*/20 * * * *\"}}\n"))
                .is_ok()
        );
        let all = parse(&format!("{MINIMAL}spec:\n  features: []\n  tests: {{enabled: true}}\n")).unwrap();
        assert_eq!(all.spec.tests.unwrap().selected(), VALIDATION_SCENARIOS, "no list: every scenario");
    }

    #[test]
    fn enabled_defaults_to_true_and_indices_default() {
        let text = format!(
            "{MINIMAL}spec:\n  features:\n  - name: falco\n  output:\n    elasticsearch:\n      endpoints: [\"http://es:9200\"]\n"
        );
        let agent = parse(&text).unwrap();
        assert!(agent.spec.features[0].enabled);
        assert_eq!(agent.spec.output.elasticsearch.unwrap().indices.vulnerabilities, "security-vuln");
    }
}
