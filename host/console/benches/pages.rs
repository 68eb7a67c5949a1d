//! The console's pages at 10k, 100k and 1M events in a real Elasticsearch
//! node (`cargo xtask bench console` starts one and sets
//! SECOP_E2E_ES_URL): the time to answer each page, through the console's
//! router as a browser's request would go, median of 5. Every count on a
//! page is an aggregation and tables are paged, so the time should barely
//! grow with the number of events; the ratio column says by how much.
//! Elasticsearch's request cache is cleared before every request: the
//! figures are what a page costs when its answer is not cached.
//! Prints figures; asserts nothing about time.

use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use secop_console::{Console, Indices, auth};
use secop_elastic::bulk::{self, BulkOptions, Operation};
use secop_elastic::templates::{self, Indices as TemplateIndices};
use secop_elastic::{Elastic, ElasticConfig};
use serde_json::json;
use tower::ServiceExt as _;

const SIZES: [usize; 3] = [10_000, 100_000, 1_000_000];
const TOOLS: [&str; 4] = ["falco", "tetragon", "falco", "posture"];
const PAGES: [(&str, &str); 5] = [
    ("events, last 7 days (panels + table)", "/events?range=7d"),
    ("events, all time", "/events?range=all"),
    ("events, page 150 of the table", "/events?range=all&page=150"),
    ("events, a search", "/events?range=all&q=rule-17"),
    ("inventory & alerts", "/posture"),
];

/// A synthetic runtime event or posture alert, `i`-th of the run.
fn event(i: usize, now_ms: i64) -> serde_json::Value {
    let tool = TOOLS[i % TOOLS.len()];
    // Spread over the last 7 days.
    let at = now_ms - (i as i64 * 7_919) % (7 * 86_400_000);
    let timestamp = k8s_openapi::jiff::Timestamp::from_millisecond(at).unwrap().to_string();
    let mut doc = json!({
        "@timestamp": timestamp,
        "labels": { "security_tool": tool },
        "event": { "kind": "alert", "severity": 1 + i % 5, "dataset": format!("{tool}.alerts") },
        "rule": { "name": format!("rule-{}", i % 40) },
        "kubernetes": { "namespace": format!("team-{}", i % 50), "pod": { "name": format!("app-{}", i % 500) } },
        "message": format!("synthetic event {i} from {tool}"),
    });
    if tool == "posture" {
        doc["event"]["dataset"] = json!("posture.audit");
        doc["finding"] = json!({ "status": if i.is_multiple_of(3) { "resolved" } else { "open" }, "first_seen": timestamp, "last_seen": timestamp });
        doc["kubernetes"]["resource"] = json!({ "kind": "Pod", "name": format!("app-{}", i % 500) });
        doc["evidence"] = json!({ "securityContext": { "privileged": true } });
    }
    doc
}

async fn load(es: &Elastic, index: &str, from: usize, to: usize) {
    let now_ms = k8s_openapi::jiff::Timestamp::now().as_millisecond();
    let options = BulkOptions { max_actions: 5_000, ..Default::default() };
    for chunk in (from..to).collect::<Vec<_>>().chunks(50_000) {
        let ops = chunk.iter().map(|i| Operation::index(index, &format!("e{i}"), event(*i, now_ms))).collect();
        let report = bulk::bulk(es, ops, &options).await.unwrap();
        assert!(report.failed.is_empty(), "{:?}", &report.failed[..report.failed.len().min(3)]);
    }
    es.refresh(index).await.unwrap();
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn main() {
    let Ok(url) = std::env::var("SECOP_E2E_ES_URL") else {
        eprintln!("console bench: needs a real Elasticsearch (run `cargo xtask bench console`, which starts one)");
        std::process::exit(1);
    };
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let es = Elastic::new(&ElasticConfig::new(vec![url.clone()])).unwrap();
        let run = std::process::id();
        let (inventory, events) = (format!("bench-console-inventory-{run}"), format!("bench-console-events-{run}"));
        let names =
            TemplateIndices { inventory: Some(inventory.clone()), events: Some(events.clone()), vulnerabilities: None };
        templates::install(&es, &names).await.unwrap();
        // The pages read no cluster: a client that is never called.
        let kube = kube::Client::try_from(kube::Config::new("http://127.0.0.1:9".parse().unwrap())).unwrap();
        let router = secop_console::router(Console {
            kube,
            elastic: Some(es.clone()),
            elastic_endpoints: vec![url],
            indices: Indices { inventory, events: events.clone(), vulnerabilities: "bench-console-vuln".into() },
            sensor_namespace: "security-system".into(),
            auth: auth::Mode::Open,
        });
        println!("console pages against a real Elasticsearch node, median of 5 (after one warm-up)");
        let mut rows: Vec<(&str, Vec<Duration>)> = PAGES.iter().map(|(name, _)| (*name, vec![])).collect();
        let mut loaded = 0;
        for size in SIZES {
            let start = Instant::now();
            load(&es, &events, loaded, size).await;
            eprintln!("indexed {} events in {:.1?}", size - loaded, start.elapsed());
            loaded = size;
            for (row, (_, path)) in rows.iter_mut().zip(PAGES) {
                let mut samples = vec![];
                for attempt in 0..6 {
                    // Elasticsearch's request cache would answer a repeated
                    // aggregation from memory; a live index (refreshed as
                    // events arrive) rarely lets it. Measure without it.
                    es.ok(secop_elastic::Method::POST, "_cache/clear?request=true", None).await.unwrap();
                    let request = Request::builder().uri(path).body(Body::empty()).unwrap();
                    let start = Instant::now();
                    let response = router.clone().oneshot(request).await.unwrap();
                    let status = response.status();
                    let body = axum::body::to_bytes(response.into_body(), 64 << 20).await.unwrap();
                    let took = start.elapsed();
                    assert_eq!(status, StatusCode::OK, "{path}: {}", String::from_utf8_lossy(&body));
                    if attempt > 0 {
                        samples.push(took);
                    }
                }
                row.1.push(median(samples));
            }
        }
        println!("| page | {} | 1M / 10k |", SIZES.map(|s| format!("{s} events")).join(" | "));
        println!("|---|{}---|", "---|".repeat(SIZES.len()));
        for (name, times) in rows {
            let cells: Vec<String> = times.iter().map(|t| format!("{:.1} ms", t.as_secs_f64() * 1e3)).collect();
            let ratio = times[times.len() - 1].as_secs_f64() / times[0].as_secs_f64();
            println!("| {name} | {} | {ratio:.1}x |", cells.join(" | "));
        }
    });
}
