//! The guest side of the contract: the exports of [`crate::export_feature!`]
//! call the feature through [`crate::model`] (conversions in
//! [`crate::convert`]). Only compiled for wasm32.

use crate::Feature;
use crate::bindings::security::feature::{cluster, logging, types as wit};
use crate::model as m;

crate::wit_model_conversions!(crate::bindings::security::feature::types);

pub fn metadata<F: Feature>(feature: &F) -> wit::Metadata {
    feature.metadata().into()
}

pub fn configure<F: Feature>(
    feature: &mut F,
    config_json: &str,
    ctx: wit::Context,
) -> Result<Vec<wit::Diagnostic>, wit::ConfigError> {
    match feature.configure(config_json, &ctx.into()) {
        Ok(diagnostics) => Ok(diagnostics.into_iter().map(Into::into).collect()),
        Err(e) => Err(e.into()),
    }
}

pub fn otel_config<F: Feature>(feature: &mut F) -> Option<wit::OtelReceiver> {
    feature.otel_config().map(Into::into)
}

pub fn collector<F: Feature>(feature: &mut F) -> Option<wit::CollectorSlots> {
    feature.collector().map(Into::into)
}

/// The `cluster` import, behind the SDK's [`m::ClusterReader`] trait.
struct HostCluster;

impl m::ClusterReader for HostCluster {
    fn get(&self, api_version: &str, kind: &str, name: &str) -> Result<String, m::LookupError> {
        cluster::get(api_version, kind, name).map_err(|e| match e {
            cluster::LookupError::Denied(why) => m::LookupError::Denied(why),
            cluster::LookupError::NotFound => m::LookupError::NotFound,
            cluster::LookupError::Unavailable(why) => m::LookupError::Unavailable(why),
        })
    }
}

pub fn assess<F: Feature>(feature: &mut F) -> wit::Condition {
    feature.assess(&HostCluster).into()
}

/// Log through the host, attributed to this feature.
pub fn log_warn(message: &str) {
    logging::log(logging::Level::Warn, message);
}
