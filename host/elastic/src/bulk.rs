//! Bulk writes in bounded batches, with retries that never lose an item
//! silently: a whole request that fails with a transient status (429, 5xx)
//! or a transport error is sent again after a backoff; items rejected with
//! 429/503 are sent again on their own; every other item error is kept in
//! the report with the item's id and Elasticsearch's reason.

use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};

use crate::{Elastic, Error};

#[derive(Debug, Clone)]
pub struct BulkOptions {
    /// Items per request.
    pub max_actions: usize,
    /// Bytes per request (an item larger than this goes alone).
    pub max_bytes: usize,
    /// Tries per batch (the first one included).
    pub max_attempts: u32,
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
}

impl Default for BulkOptions {
    fn default() -> Self {
        Self {
            max_actions: 1000,
            max_bytes: 5 << 20,
            max_attempts: 6,
            initial_backoff: Duration::from_millis(250),
            max_backoff: Duration::from_secs(8),
        }
    }
}

/// One bulk item: the action line and, except for deletes, its source line.
#[derive(Debug, Clone)]
pub struct Operation {
    pub id: String,
    action: Value,
    source: Option<Value>,
}

impl Operation {
    /// Create or replace a document.
    pub fn index(index: &str, id: &str, doc: Value) -> Self {
        Self { id: id.into(), action: json!({ "index": { "_index": index, "_id": id } }), source: Some(doc) }
    }

    /// Merge `doc` into an existing document, or create it as `upsert`
    /// (what the first write has that later ones must not overwrite).
    pub fn upsert(index: &str, id: &str, doc: Value, upsert: Value) -> Self {
        Self {
            id: id.into(),
            action: json!({ "update": { "_index": index, "_id": id, "retry_on_conflict": 3 } }),
            source: Some(json!({ "doc": doc, "upsert": upsert })),
        }
    }

    /// Merge `doc` into an existing document; a missing one is an item error.
    pub fn update(index: &str, id: &str, doc: Value) -> Self {
        Self {
            id: id.into(),
            action: json!({ "update": { "_index": index, "_id": id, "retry_on_conflict": 3 } }),
            source: Some(json!({ "doc": doc })),
        }
    }

    fn ndjson(&self) -> String {
        let mut out = self.action.to_string();
        out.push('\n');
        if let Some(s) = &self.source {
            out.push_str(&s.to_string());
            out.push('\n');
        }
        out
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ItemFailure {
    pub id: String,
    pub status: u16,
    pub reason: String,
}

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct BulkReport {
    pub created: usize,
    pub updated: usize,
    pub noop: usize,
    pub failed: Vec<ItemFailure>,
    /// `_bulk` requests sent, retries included.
    pub requests: usize,
}

impl BulkReport {
    pub fn written(&self) -> usize {
        self.created + self.updated
    }

    fn absorb(&mut self, other: BulkReport) {
        self.created += other.created;
        self.updated += other.updated;
        self.noop += other.noop;
        self.failed.extend(other.failed);
        self.requests += other.requests;
    }
}

fn transient(status: u16) -> bool {
    matches!(status, 429 | 502 | 503 | 504)
}

/// Split `ops` into batches of at most `max_actions` items and `max_bytes`.
fn batches(ops: Vec<Operation>, options: &BulkOptions) -> Vec<Vec<(Operation, String)>> {
    let mut out = vec![];
    let mut current: Vec<(Operation, String)> = vec![];
    let mut bytes = 0;
    for op in ops {
        let line = op.ndjson();
        if !current.is_empty()
            && (current.len() >= options.max_actions.max(1) || bytes + line.len() > options.max_bytes)
        {
            out.push(std::mem::take(&mut current));
            bytes = 0;
        }
        bytes += line.len();
        current.push((op, line));
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

/// Write `ops`. `Err` only when a batch could not be sent at all after every
/// attempt (the report up to then is lost with it: the caller treats the
/// whole run as failed); item errors are in the report.
pub async fn bulk(es: &Elastic, ops: Vec<Operation>, options: &BulkOptions) -> Result<BulkReport, Error> {
    let mut report = BulkReport::default();
    for batch in batches(ops, options) {
        report.absorb(send_batch(es, batch, options).await?);
    }
    Ok(report)
}

async fn send_batch(
    es: &Elastic,
    mut pending: Vec<(Operation, String)>,
    options: &BulkOptions,
) -> Result<BulkReport, Error> {
    let mut report = BulkReport::default();
    let mut backoff = options.initial_backoff;
    let mut attempt = 0;
    while !pending.is_empty() {
        attempt += 1;
        let body: String = pending.iter().map(|(_, line)| line.as_str()).collect();
        report.requests += 1;
        let answer = es.send_raw(Method::POST, "_bulk", "application/x-ndjson", Some(body.into_bytes())).await;
        let retry_whole = match &answer {
            Err(Error::Unreachable { reason, .. } | Error::Transport { reason, .. }) => Some(reason.clone()),
            Ok(a) if transient(a.status.as_u16()) => Some(format!("HTTP {}: {}", a.status, a.error_reason())),
            _ => None,
        };
        if let Some(reason) = retry_whole {
            if attempt >= options.max_attempts {
                return Err(Error::BulkGaveUp { attempts: attempt, reason });
            }
            tracing::warn!(attempt, %reason, "bulk request failed; retrying");
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(options.max_backoff);
            continue;
        }
        let answer = answer?;
        if !answer.status.is_success() {
            return Err(Error::Status {
                what: "POST _bulk".into(),
                status: answer.status.as_u16(),
                reason: answer.error_reason(),
            });
        }
        let items = answer.body["items"].as_array().cloned().unwrap_or_default();
        if items.len() != pending.len() {
            return Err(Error::Status {
                what: "POST _bulk".into(),
                status: answer.status.as_u16(),
                reason: format!("answered {} items for {} sent", items.len(), pending.len()),
            });
        }
        let mut again = vec![];
        for ((op, line), item) in pending.into_iter().zip(items) {
            // Each item is `{ "<action>": { "status", "result", "error" } }`.
            let result = item.as_object().and_then(|m| m.values().next()).cloned().unwrap_or(Value::Null);
            let status = result["status"].as_u64().unwrap_or(0) as u16;
            if (200..300).contains(&status) {
                match result["result"].as_str() {
                    Some("created") => report.created += 1,
                    Some("noop") => report.noop += 1,
                    _ => report.updated += 1,
                }
            } else if transient(status) && attempt < options.max_attempts {
                again.push((op, line));
            } else {
                let error = &result["error"];
                let reason = match (error["type"].as_str(), error["reason"].as_str()) {
                    (Some(t), Some(r)) => format!("{t}: {r}"),
                    _ => error.to_string(),
                };
                report.failed.push(ItemFailure { id: op.id, status, reason });
            }
        }
        pending = again;
        if !pending.is_empty() {
            tracing::warn!(
                attempt,
                items = pending.len(),
                "bulk items rejected with a transient status; retrying them"
            );
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(options.max_backoff);
        }
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_respect_count_and_size() {
        let ops: Vec<_> = (0..25).map(|i| Operation::index("x", &i.to_string(), json!({ "n": i }))).collect();
        let options = BulkOptions { max_actions: 10, ..Default::default() };
        assert_eq!(batches(ops.clone(), &options).iter().map(Vec::len).collect::<Vec<_>>(), [10, 10, 5]);
        let one = ops[0].ndjson().len();
        let options = BulkOptions { max_actions: 100, max_bytes: one * 3, ..Default::default() };
        let sizes: Vec<_> = batches(ops[..7].to_vec(), &options).iter().map(Vec::len).collect();
        assert_eq!(sizes, [3, 3, 1]);
        // An item bigger than the limit still goes, alone.
        let options = BulkOptions { max_bytes: 1, ..Default::default() };
        assert_eq!(batches(ops[..2].to_vec(), &options).len(), 2);
    }

    #[test]
    fn upsert_lines_carry_doc_and_upsert() {
        let op = Operation::upsert("v", "a:b:c", json!({ "x": 1 }), json!({ "x": 1, "first": 1 }));
        let lines: Vec<Value> = op.ndjson().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert_eq!(lines[0]["update"]["_id"], "a:b:c");
        assert_eq!(lines[1]["upsert"]["first"], 1);
        assert_eq!(lines[1]["doc"], json!({ "x": 1 }));
    }
}
