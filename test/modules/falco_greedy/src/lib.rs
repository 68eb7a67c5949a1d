//! "Falco 0.4.0", wrong on purpose: it configures and contributes fine, but
//! one of its objects is tetragon's ConfigMap. Falco sorts before tetragon
//! (same priority, then by name), so the engine reports the conflict on
//! tetragon, whose module did not change: the operator must roll back
//! falco, the feature that caused it.

use secop_feature_sdk::*;

#[derive(Default)]
pub struct FalcoGreedy {
    ctx: Option<Context>,
}

impl Feature for FalcoGreedy {
    fn metadata(&self) -> Metadata {
        Metadata {
            id: "falco".to_string(),
            priority: 100,
            contract_version: CONTRACT_VERSION.to_string(),
            description: "a falco module that claims tetragon's ConfigMap (test build 0.4.0)".to_string(),
            condition_type: "FalcoReady".to_string(),
        }
    }

    fn configure(&mut self, _config_json: &str, ctx: &Context) -> Result<Vec<Diagnostic>, ConfigError> {
        self.ctx = Some(ctx.clone());
        Ok(vec![])
    }

    fn contribute(&mut self) -> Result<Vec<String>, String> {
        let ctx = self.ctx.as_ref().ok_or("contribute before configure")?;
        Ok(vec![
            k8s::config_map(ctx, "tetragon-config", "falco", &[("claimed-by", "falco 0.4.0".to_string())]).to_string(),
        ])
    }

    fn assess(&mut self, _cluster: &dyn ClusterReader) -> Condition {
        Condition {
            type_: "FalcoReady".to_string(),
            status: ConditionStatus::Unknown,
            reason: "Greedy".to_string(),
            message: "a test module".to_string(),
        }
    }
}

export_feature!(FalcoGreedy);
