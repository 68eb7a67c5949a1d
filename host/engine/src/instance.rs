//! A feature instance for one reconcile: a sandboxed component, or the same
//! feature compiled natively (benchmarks and tests compare the two through
//! one pipeline, so the ratio measures the sandbox and nothing else).

use std::sync::Arc;

use secop_feature_sdk::Feature;
use secop_feature_sdk::model as m;
use secop_runtime::{CallError, ClusterAccess, Instance, ReadableObject, ScopedCluster};

/// Builds a fresh native feature (its `Default`).
pub type NativeFactory = fn() -> Box<dyn Feature + Send>;

pub enum FeatureInstance {
    Wasm(Instance),
    Native { feature: Box<dyn Feature + Send>, cluster: ScopedCluster },
}

impl FeatureInstance {
    pub fn native(id: &str, factory: NativeFactory, cluster: Arc<dyn ClusterAccess>) -> Self {
        FeatureInstance::Native { feature: factory(), cluster: ScopedCluster::new(id, cluster) }
    }

    pub fn configure(
        &mut self,
        config: &str,
        ctx: &m::Context,
    ) -> Result<Result<Vec<m::Diagnostic>, m::ConfigError>, CallError> {
        match self {
            FeatureInstance::Wasm(i) => i.configure(config, ctx),
            FeatureInstance::Native { feature, .. } => Ok(feature.configure(config, ctx)),
        }
    }

    pub fn contribute(&mut self) -> Result<Result<Vec<String>, String>, CallError> {
        match self {
            FeatureInstance::Wasm(i) => i.contribute(),
            FeatureInstance::Native { feature, .. } => Ok(feature.contribute()),
        }
    }

    pub fn otel_config(&mut self) -> Result<Option<m::OtelReceiver>, CallError> {
        match self {
            FeatureInstance::Wasm(i) => i.otel_config(),
            FeatureInstance::Native { feature, .. } => Ok(feature.otel_config()),
        }
    }

    pub fn collector(&mut self) -> Result<Option<m::CollectorSlots>, CallError> {
        match self {
            FeatureInstance::Wasm(i) => i.collector(),
            FeatureInstance::Native { feature, .. } => Ok(feature.collector()),
        }
    }

    pub fn set_readable(&mut self, objects: impl IntoIterator<Item = (ReadableObject, Option<String>)>) {
        match self {
            FeatureInstance::Wasm(i) => i.set_readable(objects),
            FeatureInstance::Native { cluster, .. } => cluster.set_readable(objects),
        }
    }

    pub fn assess(&mut self) -> Result<m::Condition, CallError> {
        match self {
            FeatureInstance::Wasm(i) => i.assess(),
            FeatureInstance::Native { feature, cluster } => Ok(feature.assess(cluster)),
        }
    }
}
