//! The posture engine (seed 004): a live inventory of the cluster's
//! resources, synced with the fewest writes, and security-context audits
//! whose alerts are kept as evidence after the offending resource is gone.
//!
//! Top to bottom: Kubernetes JSON → [`model::parse`] (lean assets) →
//! [`engine::Posture`] (dirty checking, NOT-IN diff, [`audits`]) →
//! [`engine::Write`]s for the inventory and events indices. Pure: the
//! watching and the Elasticsearch writes live elsewhere, so the same code
//! serves the offline `secop posture scan`.

pub mod audits;
pub mod config;
pub mod engine;
pub mod model;

pub use config::PostureConfig;
pub use engine::{Finding, Pass, Posture, Target, Write, audit};

/// Assets of a `kubectl get ... -o json` document: a List (`items`), a
/// single object, or several documents concatenated.
pub fn snapshot(text: &str) -> Result<Vec<model::Asset>, String> {
    let mut assets = vec![];
    for (i, doc) in serde_json::Deserializer::from_str(text).into_iter::<serde_json::Value>().enumerate() {
        let doc = doc.map_err(|e| format!("document {}: not JSON: {e}", i + 1))?;
        match doc["items"].as_array() {
            Some(items) => assets.extend(items.iter().filter_map(model::parse)),
            None => assets.extend(model::parse(&doc)),
        }
    }
    Ok(assets)
}
