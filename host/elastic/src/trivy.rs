//! `secop trivy-sync`: Trivy Operator VulnerabilityReports → the
//! vulnerabilities index (CTEM Discovery and Priority).
//!
//! One document per finding, `_id = <report uid>:<CVE>:<package>`, so a
//! re-run updates instead of duplicating. A finding carries
//! `finding.{status, first_seen, last_seen, resolved_at}`: the first write
//! sets `first_seen`, every run refreshes `last_seen` and the run's
//! `trivy.sync_id`, and at the end every open finding of this cluster that
//! the run did not see (its report vanished with its workload, or a rescan
//! no longer lists it) is marked `resolved`, never deleted.
//!
//! Resolution uses search + partial bulk updates, not `_update_by_query`:
//! that needs the reindex module and a scripting language, which some
//! clusters (managed offerings with scripting off, minimal builds) lack.

use std::fmt;
use std::str::FromStr;

use reqwest::Method;
use serde_json::{Value, json};

use crate::bulk::{BulkOptions, BulkReport, Operation, bulk};
use crate::{Elastic, Error};

/// Trivy's severities, lowest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    Unknown,
    Low,
    Medium,
    High,
    Critical,
}

impl Severity {
    pub const NAMES: [&str; 5] = ["UNKNOWN", "LOW", "MEDIUM", "HIGH", "CRITICAL"];

    /// The 1–5 scale (docs/seed-deviations.md, Trivy sync): CRITICAL 5 … UNKNOWN 1.
    pub fn score(self) -> u8 {
        self as u8 + 1
    }
}

/// A severity name Trivy does not use.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a Trivy severity (one of {names})", names = Severity::NAMES.join(", "))]
pub struct UnknownSeverity(pub String);

impl FromStr for Severity {
    type Err = UnknownSeverity;
    fn from_str(s: &str) -> Result<Self, UnknownSeverity> {
        match s.to_ascii_uppercase().as_str() {
            "UNKNOWN" => Ok(Severity::Unknown),
            "LOW" => Ok(Severity::Low),
            "MEDIUM" => Ok(Severity::Medium),
            "HIGH" => Ok(Severity::High),
            "CRITICAL" => Ok(Severity::Critical),
            other => Err(UnknownSeverity(other.to_string())),
        }
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(Severity::NAMES[*self as usize])
    }
}

#[derive(Debug, Clone)]
pub struct SyncOptions {
    pub index: String,
    pub cluster_name: String,
    /// Findings below this severity are not written.
    pub threshold: Severity,
    /// This run's id; findings not stamped with it at the end are resolved.
    pub sync_id: String,
    /// RFC 3339 time of this run.
    pub now: String,
}

impl SyncOptions {
    pub fn new(index: &str, cluster_name: &str, threshold: Severity) -> Self {
        let now = jiff::Timestamp::now();
        Self {
            index: index.into(),
            cluster_name: cluster_name.into(),
            threshold,
            sync_id: now.as_nanosecond().to_string(),
            now: now.to_string(),
        }
    }
}

/// One finding: its document id and the fields every run writes.
#[derive(Debug, Clone, PartialEq)]
pub struct Finding {
    pub id: String,
    pub doc: Value,
}

fn text<'a>(v: &'a Value, pointer: &str) -> Option<&'a str> {
    v.pointer(pointer).and_then(Value::as_str).filter(|s| !s.is_empty())
}

/// The findings of one VulnerabilityReport at or above the threshold.
/// A report without a uid cannot have stable ids: an error naming it.
pub fn findings(report: &Value, options: &SyncOptions) -> Result<Findings, Error> {
    let name = format!(
        "{}/{}",
        text(report, "/metadata/namespace").unwrap_or("-"),
        text(report, "/metadata/name").unwrap_or("-")
    );
    let uid = text(report, "/metadata/uid")
        .ok_or_else(|| Error::Report { report: name.clone(), reason: "has no metadata.uid".into() })?;
    let label = |key: &str| {
        report.pointer("/metadata/labels").and_then(|l| l.get(key)).and_then(Value::as_str).filter(|s| !s.is_empty())
    };
    let r = &report["report"];
    let repository = text(r, "/artifact/repository").unwrap_or("unknown");
    let image = match text(r, "/registry/server") {
        Some(server) => format!("{server}/{repository}"),
        None => repository.to_string(),
    };
    let Some(vulnerabilities) = r["vulnerabilities"].as_array() else { return Ok(Findings::default()) };
    let mut out = Findings::default();
    for (i, v) in vulnerabilities.iter().enumerate() {
        let Some(cve) = text(v, "/vulnerabilityID") else {
            // One malformed entry costs only itself: it has no identity to
            // write or resolve, and the rest of the report is good.
            out.skipped.push(
                Error::Report {
                    report: name.clone(),
                    reason: format!("report.vulnerabilities[{i}] has no vulnerabilityID"),
                }
                .to_string(),
            );
            continue;
        };
        let severity = text(v, "/severity").and_then(|s| s.parse().ok()).unwrap_or(Severity::Unknown);
        if severity < options.threshold {
            continue;
        }
        let package = text(v, "/resource").unwrap_or("unknown");
        let id = finding_id(uid, cve, package);
        let doc = json!({
            "@timestamp": options.now,
            "labels": { "security_tool": "trivy" },
            "event": { "kind": "alert", "dataset": "trivy", "category": "vulnerability", "severity": severity.score() },
            "orchestrator": { "cluster": { "name": options.cluster_name } },
            "kubernetes": { "namespace": text(report, "/metadata/namespace") },
            "workload": {
                "kind": label("trivy-operator.resource.kind").unwrap_or("unknown"),
                "name": label("trivy-operator.resource.name").unwrap_or("unknown"),
            },
            "container": {
                "name": label("trivy-operator.container.name"),
                "image": { "name": image, "tag": text(r, "/artifact/tag") },
            },
            "vulnerability": {
                "id": cve,
                "severity": severity.to_string(),
                "score": v.get("score").and_then(Value::as_f64),
                "title": text(v, "/title"),
                // Absent, not "none": "has a fix" is an `exists` query.
                "fixedVersion": text(v, "/fixedVersion"),
                "installedVersion": text(v, "/installedVersion"),
                "resource": package,
                "target": text(v, "/target"),
                "primaryLink": text(v, "/primaryLink"),
            },
            "trivy": { "report_uid": uid, "report_name": text(report, "/metadata/name"), "sync_id": options.sync_id },
            "finding": { "id": id, "status": "open", "last_seen": options.now, "resolved_at": null },
        });
        out.found.push(Finding { id, doc: strip_nulls(doc) });
    }
    Ok(out)
}

/// What one report yields: its findings, and the entries skipped as
/// malformed (each named).
#[derive(Debug, Default)]
pub struct Findings {
    pub found: Vec<Finding>,
    pub skipped: Vec<String>,
}

/// Elasticsearch refuses an `_id` over 512 bytes; a long package or image
/// path can make `uid:CVE:package` longer. Such an id is replaced by its
/// SHA-256, which is as stable, so upserts and resolution still match.
const MAX_ID_BYTES: usize = 512;

fn finding_id(uid: &str, cve: &str, package: &str) -> String {
    use sha2::Digest as _;
    let id = format!("{uid}:{cve}:{package}");
    if id.len() <= MAX_ID_BYTES { id } else { format!("sha256:{}", hex::encode(sha2::Sha256::digest(id.as_bytes()))) }
}

/// Drop null leaves (but keep `finding.resolved_at: null`, which reopens a
/// finding resolved earlier).
fn strip_nulls(mut doc: Value) -> Value {
    fn walk(v: &mut Value, keep: bool) {
        if let Value::Object(map) = v {
            map.retain(|k, child| !child.is_null() || (keep && k == "resolved_at"));
            for (k, child) in map.iter_mut() {
                walk(child, k == "finding");
            }
        }
    }
    walk(&mut doc, false);
    doc
}

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SyncReport {
    pub reports: usize,
    pub findings: usize,
    pub upserts: BulkReport,
    /// Findings marked resolved by this run.
    pub resolved: usize,
    /// Why resolution was skipped, when it was.
    pub resolve_skipped: Option<String>,
    /// Reports or entries skipped as malformed, each named with the reason.
    /// The rest of the cluster's findings are still written.
    pub skipped: Vec<String>,
}

impl SyncReport {
    pub fn ok(&self) -> bool {
        self.upserts.failed.is_empty() && self.resolve_skipped.is_none() && self.skipped.is_empty()
    }
}

/// Upsert the findings of `reports` and resolve the ones no longer seen.
/// Nothing is resolved when any upsert failed (a failed item would look
/// vanished) — the run reports the failures and the next run resolves.
pub async fn sync(
    es: &Elastic,
    reports: &[Value],
    options: &SyncOptions,
    bulk_options: &BulkOptions,
) -> Result<SyncReport, Error> {
    let mut report = SyncReport { reports: reports.len(), ..Default::default() };
    let mut ops = vec![];
    // Reports skipped whole: their findings were not seen this run, but
    // have not vanished either.
    let mut unread_reports = vec![];
    for r in reports {
        match findings(r, options) {
            Ok(found) => {
                report.skipped.extend(found.skipped);
                for finding in found.found {
                    let mut first = finding.doc.clone();
                    first["finding"]["first_seen"] = json!(options.now);
                    ops.push(Operation::upsert(&options.index, &finding.id, finding.doc, first));
                }
            }
            Err(e) => {
                report.skipped.push(e.to_string());
                unread_reports.push(text(r, "/metadata/uid").map(str::to_string));
            }
        }
    }
    report.findings = ops.len();
    report.upserts = bulk(es, ops, bulk_options).await?;
    if !report.upserts.failed.is_empty() {
        report.resolve_skipped = Some(format!("{} findings failed to write", report.upserts.failed.len()));
        return Ok(report);
    }
    let Some(unread): Option<Vec<String>> = unread_reports.into_iter().collect() else {
        // A report without a uid: which findings are its cannot be told.
        report.resolve_skipped =
            Some("a VulnerabilityReport without metadata.uid was skipped, so no finding can be told vanished".into());
        return Ok(report);
    };
    es.refresh(&options.index).await?;
    report.resolved = resolve_unseen(es, options, bulk_options, &unread).await?;
    Ok(report)
}

/// Mark open findings of this cluster that this run did not stamp as
/// resolved, except those of `unread` reports (skipped as malformed).
async fn resolve_unseen(
    es: &Elastic,
    options: &SyncOptions,
    bulk_options: &BulkOptions,
    unread: &[String],
) -> Result<usize, Error> {
    let mut resolved = 0;
    let mut after: Option<Value> = None;
    loop {
        let mut query = json!({
            "size": 1000,
            "_source": false,
            "sort": [{ "finding.id": "asc" }],
            "query": { "bool": {
                "filter": [
                    { "term": { "labels.security_tool": "trivy" } },
                    { "term": { "orchestrator.cluster.name": options.cluster_name } },
                    { "term": { "finding.status": "open" } },
                ],
                "must_not": [{ "term": { "trivy.sync_id": options.sync_id } }],
            } },
        });
        if !unread.is_empty() {
            query["query"]["bool"]["must_not"]
                .as_array_mut()
                .unwrap()
                .push(json!({ "terms": { "trivy.report_uid": unread } }));
        }
        if let Some(a) = &after {
            query["search_after"] = a.clone();
        }
        let page =
            es.ok(Method::POST, &format!("{}/_search?ignore_unavailable=true", options.index), Some(&query)).await?;
        let hits = page["hits"]["hits"].as_array().cloned().unwrap_or_default();
        if hits.is_empty() {
            return Ok(resolved);
        }
        after = hits.last().map(|h| h["sort"].clone());
        let ops: Vec<_> = hits
            .iter()
            .filter_map(|h| h["_id"].as_str())
            .map(|id| {
                Operation::update(
                    &options.index,
                    id,
                    json!({ "finding": { "status": "resolved", "resolved_at": options.now } }),
                )
            })
            .collect();
        let written = bulk(es, ops, bulk_options).await?;
        if let Some(f) = written.failed.first() {
            return Err(Error::Status {
                what: format!("resolving finding {}", f.id),
                status: f.status,
                reason: f.reason.clone(),
            });
        }
        resolved += written.written();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report() -> Value {
        json!({
            "metadata": { "name": "replicaset-web-nginx", "namespace": "shop", "uid": "u-1",
                "labels": { "trivy-operator.resource.kind": "ReplicaSet", "trivy-operator.resource.name": "web-6d8f", "trivy-operator.container.name": "nginx" } },
            "report": {
                "artifact": { "repository": "library/nginx", "tag": "1.25" },
                "registry": { "server": "index.docker.io" },
                "vulnerabilities": [
                    { "vulnerabilityID": "CVE-1", "resource": "zlib1g", "severity": "CRITICAL", "score": 9.8, "installedVersion": "1", "fixedVersion": "" },
                    { "vulnerabilityID": "CVE-2", "resource": "libssl3", "severity": "HIGH", "score": 7.5, "fixedVersion": "3.0.15" },
                    { "vulnerabilityID": "CVE-3", "resource": "libc6", "severity": "LOW" },
                ],
            },
        })
    }

    #[test]
    fn findings_at_or_above_the_threshold_with_stable_ids() {
        let options = SyncOptions::new("security-vuln", "poc", Severity::High);
        let f = findings(&report(), &options).unwrap().found;
        assert_eq!(f.iter().map(|f| f.id.as_str()).collect::<Vec<_>>(), ["u-1:CVE-1:zlib1g", "u-1:CVE-2:libssl3"]);
        let d = &f[0].doc;
        assert_eq!(d["event"]["severity"], 5);
        assert_eq!(d["container"]["image"]["name"], "index.docker.io/library/nginx");
        assert_eq!(d["workload"], json!({ "kind": "ReplicaSet", "name": "web-6d8f" }));
        assert!(d["vulnerability"].get("fixedVersion").is_none(), "an empty fixedVersion is absent");
        assert_eq!(f[1].doc["vulnerability"]["fixedVersion"], "3.0.15");
        assert_eq!(d["finding"]["resolved_at"], Value::Null, "kept, to reopen a resolved finding");
        assert!(d["finding"].get("first_seen").is_none(), "first_seen is only in the upsert");
        let all = findings(&report(), &SyncOptions::new("v", "poc", Severity::Unknown)).unwrap().found;
        assert_eq!(all.len(), 3);
        assert_eq!(all[2].doc["event"]["severity"], 2);
    }

    #[test]
    fn a_report_without_uid_is_named_and_an_entry_without_cve_costs_only_itself() {
        let mut r = report();
        r["metadata"].as_object_mut().unwrap().remove("uid");
        let err = findings(&r, &SyncOptions::new("v", "c", Severity::Low)).unwrap_err().to_string();
        assert!(err.contains("shop/replicaset-web-nginx") && err.contains("uid"), "{err}");
        let mut r = report();
        r["report"]["vulnerabilities"][1].as_object_mut().unwrap().remove("vulnerabilityID");
        let f = findings(&r, &SyncOptions::new("v", "c", Severity::Unknown)).unwrap();
        assert_eq!(f.skipped.len(), 1);
        assert!(
            f.skipped[0].contains("shop/replicaset-web-nginx") && f.skipped[0].contains("vulnerabilities[1]"),
            "{:?}",
            f.skipped
        );
        assert_eq!(
            f.found.iter().map(|f| f.id.as_str()).collect::<Vec<_>>(),
            ["u-1:CVE-1:zlib1g", "u-1:CVE-3:libc6"],
            "the other entries are kept"
        );
    }

    #[test]
    fn an_id_too_long_for_elasticsearch_is_its_stable_hash() {
        let package = "p".repeat(600);
        let id = finding_id("u-1", "CVE-1", &package);
        assert!(id.starts_with("sha256:") && id.len() == 7 + 64, "{id}");
        assert_eq!(id, finding_id("u-1", "CVE-1", &package), "stable across runs");
        assert_ne!(id, finding_id("u-1", "CVE-2", &package));
        assert_eq!(finding_id("u-1", "CVE-1", "zlib1g"), "u-1:CVE-1:zlib1g");
    }

    #[test]
    fn severities_parse_and_order() {
        assert!("critical".parse::<Severity>().unwrap() > Severity::High);
        assert_eq!(
            "SEVERE".parse::<Severity>().unwrap_err().to_string(),
            "`SEVERE` is not a Trivy severity (one of UNKNOWN, LOW, MEDIUM, HIGH, CRITICAL)"
        );
        assert_eq!(Severity::Unknown.score(), 1);
    }
}
