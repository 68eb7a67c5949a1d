//! The Elasticsearch side of the operator, for the commands that run next
//! to the data rather than in the reconcile loop:
//! - `secop es-setup` (the gateway's init container): index templates;
//! - `secop trivy-sync` (the trivy feature's sync Deployment): findings upserts;
//! - `secop ctem-report`: the CTEM checklist read from the indices.
//!
//! The operator itself never talks to Elasticsearch and never reads its
//! credentials: those stay in the pods that mount the CR's secrets.

pub mod bulk;
pub mod client;
pub mod ctem;
pub mod templates;
pub mod trivy;

use std::path::PathBuf;

pub use client::{Elastic, ElasticConfig};
pub use reqwest::Method;

/// Everything that can go wrong talking to Elasticsearch. `metric_label`
/// names the kind for logs and exit messages.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Elasticsearch endpoint `{endpoint}`: {reason}")]
    Endpoint { endpoint: String, reason: String },
    #[error("Elasticsearch credentials: {0}")]
    Auth(String),
    #[error("CA file {path}: {reason}")]
    CaFile { path: PathBuf, reason: String },
    #[error("TLS setup: {0}")]
    Tls(String),
    #[error("{what}: Elasticsearch unreachable ({reason})")]
    Unreachable { what: String, reason: String },
    #[error("{what}: transport error: {reason}")]
    Transport { what: String, reason: String },
    #[error("{what}: HTTP {status}: {reason}")]
    Status { what: String, status: u16, reason: String },
    #[error("index template {name} refused: HTTP {status}: {reason}")]
    Template { name: String, status: u16, reason: String },
    #[error("bulk request gave up after {attempts} attempts: {reason}")]
    BulkGaveUp { attempts: u32, reason: String },
    #[error("VulnerabilityReport {report}: {reason}")]
    Report { report: String, reason: String },
}

impl Error {
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Endpoint { .. } | Error::Auth(_) | Error::CaFile { .. } | Error::Tls(_) => "config",
            Error::Unreachable { .. } | Error::Transport { .. } => "unreachable",
            Error::Status { .. } => "status",
            Error::Template { .. } => "template",
            Error::BulkGaveUp { .. } => "bulk",
            Error::Report { .. } => "report",
        }
    }

    /// Worth trying again later (the server may come back).
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Unreachable { .. } | Error::Transport { .. } | Error::BulkGaveUp { .. } => true,
            Error::Status { status, .. } => matches!(status, 429 | 502 | 503 | 504),
            _ => false,
        }
    }
}
