//! SDK for security-operator features.
//!
//! A feature implements [`Feature`] in plain Rust and calls
//! [`export_feature!`] once. Built for `wasm32-wasip2` that becomes a WASM
//! component implementing `security:feature/feature`; built natively it is an
//! ordinary library, used by unit tests and the native-vs-WASM benchmark.

pub mod k8s;
pub mod model;

mod convert;

#[cfg(target_arch = "wasm32")]
#[doc(hidden)]
pub mod glue;

#[cfg(target_arch = "wasm32")]
#[doc(hidden)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "../../wit",
        world: "feature",
        pub_export_macro: true,
        export_macro_name: "__export_feature_world",
        default_bindings_module: "secop_feature_sdk::bindings",
    });
}

pub use model::*;
pub use serde_json::{Value, json};

use serde::de::DeserializeOwned;

/// One tool, as the host sees it. Methods mirror the WIT exports and take
/// and return the same shapes (JSON strings for config and objects), so the
/// native build does the same work as the component.
pub trait Feature {
    fn metadata(&self) -> Metadata;
    /// Decode `features[].config` (JSON) into the feature's typed config.
    fn configure(&mut self, config_json: &str, ctx: &Context) -> Result<Vec<Diagnostic>, ConfigError>;
    /// Kubernetes objects as JSON documents.
    fn contribute(&mut self) -> Result<Vec<String>, String>;
    fn otel_config(&mut self) -> Option<OtelReceiver> {
        None
    }
    fn collector(&mut self) -> Option<CollectorSlots> {
        None
    }
    fn assess(&mut self, cluster: &dyn ClusterReader) -> Condition;
}

/// Decode a feature config into `T`.
///
/// Wrong types become a [`ConfigError`] naming the JSON path of the field;
/// unknown fields are accepted but reported as warnings, so a typo is
/// visible without breaking a config written for a newer module.
/// An empty string or `null` decodes as `{}` (all defaults).
pub fn decode_config<T: DeserializeOwned>(config_json: &str) -> Result<(T, Vec<Diagnostic>), ConfigError> {
    let trimmed = config_json.trim();
    let source = if trimmed.is_empty() || trimmed == "null" { "{}" } else { trimmed };
    let value: Value =
        serde_json::from_str(source).map_err(|e| ConfigError::new(".", format!("config is not valid JSON: {e}")))?;
    let mut unknown = Vec::new();
    let mut record_unknown = |path: serde_ignored::Path<'_>| unknown.push(path.to_string());
    let ignoring = serde_ignored::Deserializer::new(&value, &mut record_unknown);
    let decoded: Result<T, _> = serde_path_to_error::deserialize(ignoring);
    let typed = decoded.map_err(|e| {
        let field = e.path().to_string();
        ConfigError::new(if field.is_empty() { ".".to_string() } else { field }, e.inner().to_string())
    })?;
    let diagnostics = unknown
        .into_iter()
        .map(|field| Diagnostic {
            level: DiagnosticLevel::Warning,
            message: format!("unknown field `{field}` ignored"),
            field,
        })
        .collect();
    Ok((typed, diagnostics))
}

/// Serialize contributed objects for the `contribute` export.
pub fn to_documents(objects: Vec<Value>) -> Vec<String> {
    objects.into_iter().map(|o| o.to_string()).collect()
}

/// The elements of an embedded JSON array (e.g. upstream CRDs), as
/// documents, without building a value tree: large static manifests pass
/// through the contract verbatim, and the host labels and checks them.
pub fn embedded_documents(json_array: &str) -> Result<Vec<String>, String> {
    let items: Vec<&serde_json::value::RawValue> =
        serde_json::from_str(json_array).map_err(|e| format!("embedded manifest is not a JSON array: {e}"))?;
    Ok(items.into_iter().map(|raw| raw.get().to_string()).collect())
}

/// Readiness of a DaemonSet the feature contributed, as a condition.
///
/// Ready means the controller has seen the current generation and every
/// scheduled pod is ready and up to date. Zero scheduled pods is not ready:
/// a sensor that runs nowhere protects nothing.
pub fn daemonset_condition(cluster: &dyn ClusterReader, condition_type: &str, name: &str) -> Condition {
    workload_condition(cluster, condition_type, "DaemonSet", name)
}

/// Readiness of a Deployment the feature contributed.
pub fn deployment_condition(cluster: &dyn ClusterReader, condition_type: &str, name: &str) -> Condition {
    workload_condition(cluster, condition_type, "Deployment", name)
}

fn workload_condition(cluster: &dyn ClusterReader, condition_type: &str, kind: &str, name: &str) -> Condition {
    let make = |status, reason: &str, message: String| Condition {
        type_: condition_type.to_string(),
        status,
        reason: reason.to_string(),
        message,
    };
    let raw = match cluster.get("apps/v1", kind, name) {
        Ok(raw) => raw,
        Err(LookupError::NotFound) => {
            return make(ConditionStatus::False, "NotFound", format!("{kind} {name} does not exist yet"));
        }
        Err(LookupError::Unavailable(why)) => {
            return make(ConditionStatus::Unknown, "ClusterUnavailable", format!("cannot read {kind} {name}: {why}"));
        }
        Err(LookupError::Denied(why)) => {
            return make(ConditionStatus::Unknown, "LookupDenied", why);
        }
    };
    let object: Value = match serde_json::from_str(&raw) {
        Ok(v) => v,
        Err(e) => return make(ConditionStatus::Unknown, "InvalidObject", format!("{kind} {name}: {e}")),
    };
    let int = |path: &str| object.pointer(path).and_then(Value::as_i64).unwrap_or(0);
    let generation = int("/metadata/generation");
    let observed = int("/status/observedGeneration");
    if observed < generation {
        return make(
            ConditionStatus::False,
            "Progressing",
            format!("{kind} {name}: generation {generation} not yet observed (at {observed})"),
        );
    }
    let (desired, ready, updated) = if kind == "DaemonSet" {
        (int("/status/desiredNumberScheduled"), int("/status/numberReady"), int("/status/updatedNumberScheduled"))
    } else {
        let replicas = object.pointer("/spec/replicas").and_then(Value::as_i64).unwrap_or(1);
        (replicas, int("/status/readyReplicas"), int("/status/updatedReplicas"))
    };
    let summary = format!("{ready}/{desired} ready, {updated} updated");
    if desired == 0 {
        make(ConditionStatus::False, "NoPodsScheduled", format!("{kind} {name}: {summary}"))
    } else if ready >= desired && updated >= desired {
        make(ConditionStatus::True, "Ready", format!("{kind} {name}: {summary}"))
    } else {
        make(ConditionStatus::False, "PodsNotReady", format!("{kind} {name}: {summary}"))
    }
}

/// Export a [`Feature`] type (which must implement `Default`) as the
/// component's `feature` world. Does nothing in native builds.
#[macro_export]
macro_rules! export_feature {
    ($feature:ty) => {
        #[cfg(target_arch = "wasm32")]
        mod __secop_feature_component {
            use super::*;

            thread_local! {
                static STATE: ::core::cell::RefCell<$feature> =
                    ::core::cell::RefCell::new(<$feature as ::core::default::Default>::default());
            }

            struct Component;

            impl $crate::bindings::Guest for Component {
                fn metadata() -> $crate::bindings::security::feature::types::Metadata {
                    STATE.with(|s| $crate::glue::metadata(&*s.borrow()))
                }
                fn configure(
                    config_json: ::std::string::String,
                    ctx: $crate::bindings::security::feature::types::Context,
                ) -> ::core::result::Result<
                    ::std::vec::Vec<$crate::bindings::security::feature::types::Diagnostic>,
                    $crate::bindings::security::feature::types::ConfigError,
                > {
                    STATE.with(|s| $crate::glue::configure(&mut *s.borrow_mut(), &config_json, ctx))
                }
                fn contribute() -> ::core::result::Result<::std::vec::Vec<::std::string::String>, ::std::string::String> {
                    STATE.with(|s| $crate::Feature::contribute(&mut *s.borrow_mut()))
                }
                fn otel_config() -> ::core::option::Option<$crate::bindings::security::feature::types::OtelReceiver> {
                    STATE.with(|s| $crate::glue::otel_config(&mut *s.borrow_mut()))
                }
                fn collector() -> ::core::option::Option<$crate::bindings::security::feature::types::CollectorSlots> {
                    STATE.with(|s| $crate::glue::collector(&mut *s.borrow_mut()))
                }
                fn assess() -> $crate::bindings::security::feature::types::Condition {
                    STATE.with(|s| $crate::glue::assess(&mut *s.borrow_mut()))
                }
            }

            $crate::bindings::__export_feature_world!(Component with_types_in $crate::bindings);
        }
    };
}
