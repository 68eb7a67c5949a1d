//! From a `SecurityAgent` to its desired state.
//!
//! The data path, top to bottom ([`render`], host/engine/src/render.rs):
//!   1. CR → features (`run_features`): each enabled feature's
//!      module, in priority order, configure + contribute in a fresh
//!      sandbox each (or from the memo, host/engine/src/memo.rs).
//!   2. features → desired state (`admit_outputs`): every object is checked
//!      (scope, namespace, grant, cluster policy) before it counts
//!      (host/engine/src/objects.rs).
//!   3. collector configs (`attach_collector_configs`): the host writes both
//!      OTel configs from every feature's `otel-config` into the pipeline
//!      feature's ConfigMaps (host/engine/src/otel.rs).
//!   4. overrides (`apply_overrides`): `nodeAgent`, then per tool
//!      (host/engine/src/overrides.rs).
//!
//! Applying and status are the operator's; offline render prints the result.
//!
//! A feature that fails contributes nothing and gets an error naming it and
//! the cause; the other features are unaffected (the operator then keeps the
//! failed feature's previously applied objects).

mod error;
mod instance;
mod memo;
pub mod objects;
mod otel;
mod overrides;
mod registry;
mod render;

pub use crate::error::{FeatureError, RenderError};
pub use crate::instance::{FeatureInstance, NativeFactory};
pub use crate::memo::{GoodModule, Memo};
pub use crate::otel::{TELEMETRY_DIR, TELEMETRY_SECRET, TelemetryTls, telemetry_keys};
pub use crate::registry::{Entry, Registry, RegistryError};
pub use crate::render::{AgentModule, FeatureReport, LiveFeature, RenderOptions, Rendered, assess, render};

/// Labels the host puts on everything it manages, for pruning and audit.
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
pub const MANAGED_BY: &str = "security-operator";
pub const OWNER_LABEL: &str = "security.example.io/owner";
pub const OWNER_NAMESPACE_LABEL: &str = "security.example.io/owner-namespace";
pub const FEATURE_LABEL: &str = "security.example.io/feature";

/// The operator image used when none is configured (Jobs run `secop`).
pub const DEFAULT_OPERATOR_IMAGE: &str = "ghcr.io/example/security-operator:0.1.0";
