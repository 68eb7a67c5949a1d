//! Prometheus metrics of the controller.

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabel {
    pub error: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FeatureLabel {
    pub feature: String,
}

/// Label value for a feature: its name when the operator has a built-in
/// module of that name, else `other`. Feature names are tenant input;
/// label values must stay a small, fixed set or every agent could grow
/// the metrics without bound.
pub fn feature_label(registry: &secop_engine::Registry, name: &str) -> String {
    if registry.get(name).is_some() { name.to_string() } else { "other".to_string() }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FeatureErrorLabel {
    pub feature: String,
    pub reason: &'static str,
}

/// Every metric the operator exports, registered once.
#[derive(Clone)]
pub struct Metrics {
    pub registry: Arc<Registry>,
    pub reconciles: Family<ResultLabel, Counter>,
    pub reconcile_errors: Family<ErrorLabel, Counter>,
    pub reconcile_duration: Histogram,
    pub feature_call_duration: Family<FeatureLabel, Histogram>,
    pub feature_errors: Family<FeatureErrorLabel, Counter>,
    pub objects_applied: Counter,
    pub objects_pruned: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("secop");
        let reconciles = Family::<ResultLabel, Counter>::default();
        let reconcile_errors = Family::<ErrorLabel, Counter>::default();
        let reconcile_duration = Histogram::new(exponential_buckets(0.001, 2.0, 16));
        let feature_call_duration = Family::<FeatureLabel, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.0001, 2.0, 16))
        });
        let feature_errors = Family::<FeatureErrorLabel, Counter>::default();
        let objects_applied = Counter::default();
        let objects_pruned = Counter::default();
        registry.register("reconcile", "Reconciles by result", reconciles.clone());
        registry.register("reconcile_errors", "Failed reconciles by error", reconcile_errors.clone());
        registry.register("reconcile_duration_seconds", "Duration of a reconcile", reconcile_duration.clone());
        registry.register(
            "feature_call_duration_seconds",
            "Time in a feature's WASM calls per reconcile (zero when memoized)",
            feature_call_duration.clone(),
        );
        registry.register("feature_errors", "Feature failures by feature and reason", feature_errors.clone());
        registry.register("objects_applied", "Objects written with server-side apply", objects_applied.clone());
        registry.register(
            "objects_pruned",
            "Objects deleted because no feature wants them any more",
            objects_pruned.clone(),
        );
        Self {
            registry: Arc::new(registry),
            reconciles,
            reconcile_errors,
            reconcile_duration,
            feature_call_duration,
            feature_errors,
            objects_applied,
            objects_pruned,
        }
    }
}

impl Metrics {
    pub fn observe_reconcile(&self, elapsed: Duration, error: Option<&'static str>) {
        self.reconcile_duration.observe(elapsed.as_secs_f64());
        self.reconciles.get_or_create(&ResultLabel { result: if error.is_some() { "error" } else { "ok" } }).inc();
        if let Some(error) = error {
            self.reconcile_errors.get_or_create(&ErrorLabel { error }).inc();
        }
    }

    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry).expect("encoding metrics into a String");
        out
    }
}
