//! Plain-Rust mirror of the types in `wit/feature.wit`.
//!
//! Both sides of the contract convert into these: the guest glue (in
//! `glue.rs`) and the host runtime. That keeps feature logic free of
//! wit-bindgen types, so the same code compiles natively for unit tests and
//! for the native-vs-WASM benchmark.

use serde::{Deserialize, Serialize};

/// Version of the WIT package this SDK implements. The host refuses modules
/// whose major (or, before 1.0, minor) differs from its own.
pub const CONTRACT_VERSION: &str = "0.1.0";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Metadata {
    pub id: String,
    pub priority: u32,
    pub contract_version: String,
    pub description: String,
    pub condition_type: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretRef {
    pub name: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct OutputSettings {
    pub endpoints: Vec<String>,
    pub auth_secret: Option<SecretRef>,
    pub ca_secret: Option<SecretRef>,
    pub index_inventory: String,
    pub index_events: String,
    pub index_vulnerabilities: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct Context {
    pub namespace: String,
    pub agent_name: String,
    pub cluster_name: String,
    pub output: OutputSettings,
    pub operator_image: String,
}

impl Context {
    /// Name for a cluster-scoped object (ClusterRole, binding): unique per
    /// agent namespace, because namespaced objects of two agents in one
    /// namespace collide anyway.
    pub fn cluster_scoped_name(&self, base: &str) -> String {
        format!("secop-{}-{}", self.namespace, base)
    }
}

/// A configuration the feature refuses. `field` is the JSON path inside
/// the feature's `config` ("." for the whole config).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigError {
    pub field: String,
    pub message: String,
}

impl ConfigError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self { field: field.into(), message: message.into() }
    }
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "config.{}: {}", self.field, self.message)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DiagnosticLevel {
    Info,
    Warning,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Diagnostic {
    pub level: DiagnosticLevel,
    pub field: String,
    pub message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TargetIndex {
    Inventory,
    Events,
    Vulnerabilities,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LineFormat {
    Json,
    ContainerJson,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TimestampLayout {
    Rfc3339Nano,
    EpochSeconds,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimestampField {
    pub field: String,
    pub layout: TimestampLayout,
}

/// A path into the parsed body, one map key per element.
pub type FieldPath = Vec<String>;

/// Build a [`FieldPath`] from string slices.
pub fn path(keys: &[&str]) -> FieldPath {
    keys.iter().map(|k| (*k).to_string()).collect()
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct SubjectPaths {
    pub namespace: Vec<FieldPath>,
    pub pod: Vec<FieldPath>,
    pub node: Vec<FieldPath>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeverityRule {
    pub path: FieldPath,
    pub equals: Option<String>,
    pub severity: u8,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldMatch {
    pub path: FieldPath,
    pub equals: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldLift {
    pub from: FieldPath,
    pub to: String,
    pub strip_pattern: Option<String>,
    pub when: Option<FieldMatch>,
}

impl FieldLift {
    /// Copy `from` to the document field `to` unchanged.
    pub fn copy(from: &[&str], to: &str) -> Self {
        Self { from: path(from), to: to.to_string(), strip_pattern: None, when: None }
    }

    /// Copy only for events whose `path` equals `value`.
    pub fn when_equals(mut self, path_keys: &[&str], value: &str) -> Self {
        self.when = Some(FieldMatch { path: path(path_keys), equals: Some(value.to_string()) });
        self
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OtelReceiver {
    pub name: String,
    pub include: Vec<String>,
    pub exclude: Vec<String>,
    pub format: LineFormat,
    pub timestamp: Option<TimestampField>,
    pub tool: String,
    pub target: TargetIndex,
    pub subject: SubjectPaths,
    pub severity: Vec<SeverityRule>,
    pub event_kind: String,
    pub lifts: Vec<FieldLift>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CollectorSlots {
    pub node_daemonset: String,
    pub node_container: String,
    pub gateway_deployment: String,
    pub node_config_map: String,
    pub gateway_config_map: String,
    pub config_key: String,
    pub gateway_endpoint: String,
    pub storage_directory: String,
    pub username_env: String,
    pub password_env: String,
    pub ca_file: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ConditionStatus {
    True,
    False,
    Unknown,
}

impl ConditionStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ConditionStatus::True => "True",
            ConditionStatus::False => "False",
            ConditionStatus::Unknown => "Unknown",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Condition {
    #[serde(rename = "type")]
    pub type_: String,
    pub status: ConditionStatus,
    pub reason: String,
    pub message: String,
}

/// Why the scoped cluster lookup did not return an object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum LookupError {
    Denied(String),
    NotFound,
    Unavailable(String),
}

/// The `cluster` import as seen by feature code.
pub trait ClusterReader {
    fn get(&self, api_version: &str, kind: &str, name: &str) -> Result<String, LookupError>;
}
