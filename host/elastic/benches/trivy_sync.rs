//! `secop trivy-sync` throughput against a real Elasticsearch node
//! (`cargo xtask bench` starts one and sets SECOP_E2E_ES_URL): 10,000
//! findings in 100 VulnerabilityReports, written the first time (create),
//! re-synced unchanged (update, no duplicates), and after 10 reports vanish
//! (1,000 findings resolved). Prints figures; asserts nothing about time.

use std::time::Instant;

use secop_elastic::bulk::BulkOptions;
use secop_elastic::templates::{self, Indices};
use secop_elastic::trivy::{self, Severity, SyncOptions};
use secop_elastic::{Elastic, ElasticConfig};
use serde_json::{Value, json};

const REPORTS: usize = 100;
const PER_REPORT: usize = 100;

fn report(i: usize) -> Value {
    let vulnerabilities: Vec<Value> = (0..PER_REPORT)
        .map(|j| {
            json!({
                "vulnerabilityID": format!("CVE-2026-{:05}", j),
                "resource": format!("pkg{}", j % 37),
                "severity": if j % 3 == 0 { "CRITICAL" } else { "HIGH" },
                "score": if j % 3 == 0 { 9.8 } else { 7.5 },
                "installedVersion": "1.0.0",
                "fixedVersion": if j % 2 == 0 { "1.0.1" } else { "" },
                "title": "synthetic finding for the throughput benchmark",
                "primaryLink": format!("https://avd.aquasec.com/nvd/cve-2026-{:05}", j),
                "target": "debian 12.8",
            })
        })
        .collect();
    json!({
        "metadata": { "name": format!("replicaset-app-{i}-main"), "namespace": format!("ns{}", i % 10), "uid": format!("00000000-0000-4000-8000-{i:012}"),
            "labels": { "trivy-operator.resource.kind": "ReplicaSet", "trivy-operator.resource.name": format!("app-{i}"), "trivy-operator.container.name": "main" } },
        "report": { "artifact": { "repository": format!("library/app{i}"), "tag": "1.0" }, "registry": { "server": "index.docker.io" }, "vulnerabilities": vulnerabilities },
    })
}

fn main() {
    let Ok(url) = std::env::var("SECOP_E2E_ES_URL") else {
        eprintln!("trivy_sync bench: needs a real Elasticsearch (run `cargo xtask bench`, which starts one)");
        std::process::exit(1);
    };
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let es = Elastic::new(&ElasticConfig::new(vec![url])).unwrap();
        let index = format!("bench-vuln-{}", std::process::id());
        templates::install(&es, &Indices { vulnerabilities: Some(index.clone()), ..Default::default() }).await.unwrap();
        let reports: Vec<Value> = (0..REPORTS).map(report).collect();
        let bulk = BulkOptions::default();
        let total = REPORTS * PER_REPORT;
        println!("trivy-sync throughput, {total} findings in {REPORTS} reports (bulk batches of {})", bulk.max_actions);
        println!("| pass | findings written | resolved | time | findings/s |");
        println!("|---|---|---|---|---|");
        let pass = |name: &'static str, reports: Vec<Value>| {
            let es = es.clone();
            let index = index.clone();
            let bulk = bulk.clone();
            async move {
                let options = SyncOptions::new(&index, "bench", Severity::High);
                let start = Instant::now();
                let r = trivy::sync(&es, &reports, &options, &bulk).await.unwrap();
                let secs = start.elapsed().as_secs_f64();
                assert!(r.ok(), "{r:?}");
                println!(
                    "| {name} | {} | {} | {:.2} s | {:.0} |",
                    r.upserts.written(),
                    r.resolved,
                    secs,
                    (r.upserts.written() + r.resolved) as f64 / secs
                );
                r
            }
        };
        let first = pass("first sync (create)", reports.clone()).await;
        assert_eq!(first.upserts.created, total);
        let again = pass("unchanged re-sync (update)", reports.clone()).await;
        assert_eq!(again.upserts.created, 0, "no duplicates");
        let vanished = pass("10 reports vanished (update + resolve)", reports[10..].to_vec()).await;
        assert_eq!(vanished.resolved, 10 * PER_REPORT);
        es.refresh(&index).await.unwrap();
        let count = es.ok(secop_elastic::Method::GET, &format!("{index}/_count"), None).await.unwrap();
        println!("documents in the index afterwards: {} (evidence kept)", count["count"]);
    });
}
