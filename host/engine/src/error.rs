//! Why a feature, or a whole agent, renders nothing. Each error names its
//! [`Reason`] (condition reason and metric label); a feature's error never
//! stops the other features.

use secop_api::{Reason, SpecError};
use secop_feature_sdk::model as m;
use secop_policy::Violation;
use secop_runtime::CallError;

use crate::objects::ObjectRejection;

/// Why a feature produced nothing in this render.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FeatureError {
    #[error("unknown feature (available: {available})")]
    Unknown { available: String },
    #[error("invalid config: {0}")]
    Config(m::ConfigError),
    #[error("{0}")]
    Sandbox(#[from] CallError),
    #[error("contribute failed: {0}")]
    Contribute(String),
    #[error("rejected {0}")]
    Rejected(ObjectRejection),
    #[error("object {object} is also contributed by feature `{other}`")]
    Conflict { object: String, other: String },
    #[error("a second collector (the first is feature `{other}`)")]
    SecondCollector { other: String },
    /// Something other than an object breaks the cluster policy (the
    /// module's source, a log path its receiver tails).
    #[error("{0}")]
    Policy(Violation),
    /// The module the spec names could not be used (fetch, digest, load).
    #[error("{message}")]
    Module { reason: Reason, message: String },
}

impl FeatureError {
    /// Stable reason label (condition reason, metric label).
    pub fn reason(&self) -> Reason {
        match self {
            FeatureError::Unknown { .. } => Reason::UnknownFeature,
            FeatureError::Config(_) => Reason::InvalidConfig,
            FeatureError::Sandbox(e) => e.reason(),
            FeatureError::Contribute(_) => Reason::ContributeFailed,
            FeatureError::Rejected(r) if r.rule.is_some() => Reason::PolicyViolation,
            FeatureError::Rejected(_) => Reason::ObjectRejected,
            FeatureError::Policy(_) => Reason::PolicyViolation,
            FeatureError::Conflict { .. } => Reason::ObjectConflict,
            FeatureError::SecondCollector { .. } => Reason::SecondCollector,
            FeatureError::Module { reason, .. } => *reason,
        }
    }
}

/// Why nothing of an agent can be rendered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RenderError {
    #[error(transparent)]
    Spec(#[from] SpecError),
    #[error(transparent)]
    Policy(#[from] Violation),
}

impl RenderError {
    /// The condition reason (and Event reason).
    pub fn reason(&self) -> Reason {
        match self {
            RenderError::Spec(_) => Reason::InvalidSpec,
            RenderError::Policy(_) => Reason::PolicyViolation,
        }
    }
}
