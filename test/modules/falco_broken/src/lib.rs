//! "Falco 0.3.0", broken on purpose: it loads (right id, right contract)
//! and traps in `configure`, the failure the operator must roll back from
//! without deleting what the last good falco module applied.

use secop_feature_sdk::*;

#[derive(Default)]
pub struct FalcoBroken;

impl Feature for FalcoBroken {
    fn metadata(&self) -> Metadata {
        Metadata {
            id: "falco".to_string(),
            priority: 100,
            contract_version: CONTRACT_VERSION.to_string(),
            description: "a falco module that traps in configure (test build 0.3.0)".to_string(),
            condition_type: "FalcoReady".to_string(),
        }
    }

    fn configure(&mut self, _config_json: &str, _ctx: &Context) -> Result<Vec<Diagnostic>, ConfigError> {
        panic!("falco 0.3.0 is broken on purpose: configure traps")
    }

    fn contribute(&mut self) -> Result<Vec<String>, String> {
        Ok(vec![])
    }

    fn assess(&mut self, _cluster: &dyn ClusterReader) -> Condition {
        Condition {
            type_: "FalcoReady".to_string(),
            status: ConditionStatus::Unknown,
            reason: "Broken".to_string(),
            message: "never configured".to_string(),
        }
    }
}

export_feature!(FalcoBroken);
