//! "Falco 0.2.0": a second, distinguishable version of the falco module for
//! the hot-swap tests. It runs the built-in Falco feature's own source and
//! marks the DaemonSet's pod template with its version, so a swap is
//! visible as a rollout.

use secop_feature_sdk::*;
use serde_json::Value;

use feature_falco as falco;

pub const VERSION: &str = env!("CARGO_PKG_VERSION");
pub const VERSION_ANNOTATION: &str = "security.example.io/module-version";

#[derive(Default)]
pub struct FalcoNext(falco::Falco);

impl Feature for FalcoNext {
    fn metadata(&self) -> Metadata {
        let mut metadata = self.0.metadata();
        metadata.description = format!("{} (test build {VERSION})", metadata.description);
        metadata
    }

    fn configure(&mut self, config_json: &str, ctx: &Context) -> Result<Vec<Diagnostic>, ConfigError> {
        self.0.configure(config_json, ctx)
    }

    fn contribute(&mut self) -> Result<Vec<String>, String> {
        let mut documents = self.0.contribute()?;
        for document in documents.iter_mut() {
            let mut object: Value = serde_json::from_str(document).map_err(|e| e.to_string())?;
            if object["kind"] == "DaemonSet" {
                object["spec"]["template"]["metadata"]["annotations"][VERSION_ANNOTATION] = Value::from(VERSION);
                *document = object.to_string();
            }
        }
        Ok(documents)
    }

    fn otel_config(&mut self) -> Option<OtelReceiver> {
        self.0.otel_config()
    }

    fn assess(&mut self, cluster: &dyn ClusterReader) -> Condition {
        self.0.assess(cluster)
    }
}

secop_feature_sdk::export_feature!(FalcoNext);
