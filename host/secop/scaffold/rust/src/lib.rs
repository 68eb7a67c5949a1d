//! The `{{id}}` feature, scaffolded by `secop feature new`: one ConfigMap
//! in the agent's namespace, and its readiness read back from the cluster.
//! Replace what `contribute` renders with what your tool needs, and keep
//! the rules `secop feature test --conformance` checks: the same input
//! gives the same objects, a bad config is a `ConfigError` naming the
//! field, unknown fields are reported, `assess` returns `CONDITION`.

wit_bindgen::generate!({ path: "wit", world: "feature" });

use std::sync::Mutex;

// The world's records (Metadata, Context, ConfigError, Diagnostic,
// OtelReceiver, CollectorSlots, Condition) are generated at the crate root.
use security::feature::cluster::{self, LookupError};
use security::feature::types::{ConditionStatus, DiagnosticLevel};
use serde_json::{Map, Value, json};

const ID: &str = "{{id}}";
/// The status condition `assess` reports.
const CONDITION: &str = "{{condition}}";
/// The version of the WIT package in wit/feature.wit.
const CONTRACT_VERSION: &str = "{{contract}}";
/// Name of the ConfigMap this feature renders.
const CONFIG_MAP: &str = "{{name}}-settings";

/// `features[].config` of the SecurityAgent, decoded.
struct Config {
    message: String,
}

/// What `configure` accepted, for the calls after it (one instance lives
/// for one reconcile).
struct Accepted {
    ctx: Context,
    config: Config,
}

static ACCEPTED: Mutex<Option<Accepted>> = Mutex::new(None);

fn config_error(field: &str, message: impl Into<String>) -> ConfigError {
    ConfigError { field: field.to_string(), message: message.into() }
}

/// Decode the config: a wrong type is an error naming the field, an
/// unknown field a warning naming it.
fn decode(config_json: &str) -> Result<(Config, Vec<Diagnostic>), ConfigError> {
    let value: Value = match config_json.trim() {
        "" | "null" => Value::Object(Map::new()),
        text => serde_json::from_str(text).map_err(|e| config_error(".", format!("config is not valid JSON: {e}")))?,
    };
    let Value::Object(fields) = value else {
        return Err(config_error(".", "config must be an object"));
    };
    let mut config = Config { message: "hello from {{id}}".to_string() };
    let mut diagnostics = vec![];
    for (field, value) in fields {
        match (field.as_str(), value) {
            ("message", Value::String(message)) => config.message = message,
            ("message", _) => return Err(config_error("message", "must be a string")),
            (_, _) => diagnostics.push(Diagnostic {
                level: DiagnosticLevel::Warning,
                message: format!("unknown field `{field}` ignored"),
                field,
            }),
        }
    }
    Ok((config, diagnostics))
}

struct Feature;

impl Guest for Feature {
    fn metadata() -> Metadata {
        Metadata {
            id: ID.to_string(),
            priority: 300,
            contract_version: CONTRACT_VERSION.to_string(),
            description: "{{id}} (scaffolded by secop feature new)".to_string(),
            condition_type: CONDITION.to_string(),
        }
    }

    fn configure(config_json: String, ctx: Context) -> Result<Vec<Diagnostic>, ConfigError> {
        let (config, diagnostics) = decode(&config_json)?;
        *ACCEPTED.lock().unwrap() = Some(Accepted { ctx, config });
        Ok(diagnostics)
    }

    fn contribute() -> Result<Vec<String>, String> {
        let accepted = ACCEPTED.lock().unwrap();
        let Some(Accepted { ctx, config }) = accepted.as_ref() else {
            return Err("contribute before configure".to_string());
        };
        let config_map = json!({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": { "name": CONFIG_MAP, "namespace": ctx.namespace },
            "data": { "message": config.message },
        });
        Ok(vec![config_map.to_string()])
    }

    fn otel_config() -> Option<OtelReceiver> {
        None
    }

    fn collector() -> Option<CollectorSlots> {
        None
    }

    fn assess() -> Condition {
        let (status, reason, message) = match cluster::get("v1", "ConfigMap", CONFIG_MAP) {
            Ok(_) => (ConditionStatus::True, "Ready", format!("ConfigMap {CONFIG_MAP} exists")),
            Err(LookupError::NotFound) => (ConditionStatus::False, "NotFound", format!("ConfigMap {CONFIG_MAP} not found")),
            Err(LookupError::Denied(why)) => (ConditionStatus::Unknown, "Denied", why),
            Err(LookupError::Unavailable(why)) => (ConditionStatus::Unknown, "Unavailable", why),
        };
        Condition { type_: CONDITION.to_string(), status, reason: reason.to_string(), message }
    }
}

export!(Feature);
