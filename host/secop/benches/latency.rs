//! End-to-end latency of the data path: from a line appended to a file the
//! node collector tails until the document is visible to a search in
//! Elasticsearch (no forced refresh: what a Kibana user sees).
//!
//! The real pipeline of the data-path tests: `secop render`'s collector
//! configs on the real collector (node → OTLP → gateway), a real
//! Elasticsearch node. `cargo xtask bench latency` provides both.
//!
//! Prints single-event latencies (one Falco alert at a time, the next only
//! after the previous is visible) and a burst (many alerts at once, time
//! until the last is visible).

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use secop_elastic::{Elastic, ElasticConfig};
use serde_json::{Value, json};

#[path = "../tests/common/pipeline.rs"]
mod pipeline;

const SINGLE_EVENTS: usize = 15;
const BURST: usize = 2000;

/// A Falco alert as the CRI runtime writes it, built from the fixture's
/// first alert with its rule renamed to `rule`.
fn alert_line(template: &Value, rule: &str) -> String {
    let mut alert = template.clone();
    let now = jiff::Timestamp::now();
    alert["rule"] = json!(rule);
    alert["time"] = json!(now.to_string());
    alert["output"] = json!(format!("{now}: Notice {rule}"));
    format!("{now} stdout F {}\n", serde_json::to_string(&alert).unwrap())
}

fn falco_log(fixtures: &Path) -> PathBuf {
    let pods = fixtures.join("var/log/pods");
    let pod = std::fs::read_dir(&pods)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.file_name().unwrap().to_string_lossy().contains("_falco-"))
        .expect("a Falco pod in the fixtures");
    pod.join("falco/0.log")
}

/// Poll (every 20 ms, no refresh) until `query` matches `want` documents.
async fn wait_visible(es: &Elastic, index: &str, query: &Value, want: u64) -> Duration {
    let start = Instant::now();
    loop {
        if pipeline::count_or_zero(es, index, query).await >= want {
            return start.elapsed();
        }
        assert!(start.elapsed() < Duration::from_secs(180), "not visible after 180 s: {query}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn main() {
    let (Some(otelcol), Ok(es_url)) = (std::env::var_os("SECOP_OTELCOL"), std::env::var("SECOP_E2E_ES_URL")) else {
        eprintln!(
            "latency bench: needs the collector and a real Elasticsearch (run `cargo xtask bench latency`, which provides both)"
        );
        return;
    };
    let dir = pipeline::scratch("latency");
    let prefix = format!("latency{}", std::process::id());
    let replay = pipeline::start_replay(Path::new(&otelcol), &es_url, &prefix, &dir);
    let log = falco_log(&replay.fixtures);
    let template: Value = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .filter_map(|l| l.splitn(4, ' ').nth(3))
        .find_map(|json| serde_json::from_str::<Value>(json).ok().filter(|v| v.get("rule").is_some()))
        .expect("a Falco alert in the fixture");

    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    runtime.block_on(async {
        let es = Elastic::new(&ElasticConfig::new(vec![es_url.clone()])).unwrap();
        let events = replay.events.clone();
        // Let the fixtures' own round land first, so it does not queue
        // ahead of the probes.
        wait_visible(&es, &events, &json!({ "match_all": {} }), 1).await;
        tokio::time::sleep(Duration::from_secs(15)).await;

        let append = |text: &str| {
            let mut f = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
            f.write_all(text.as_bytes()).unwrap();
            f.flush().unwrap();
        };
        let mut single = vec![];
        for i in 0..SINGLE_EVENTS {
            let rule = format!("secop latency probe {i}");
            let written = Instant::now();
            append(&alert_line(&template, &rule));
            wait_visible(&es, &events, &json!({ "term": { "rule.name": rule } }), 1).await;
            single.push(written.elapsed());
        }
        single.sort();

        let burst: String = (0..BURST).map(|i| alert_line(&template, &format!("secop latency burst {i}"))).collect();
        let written = Instant::now();
        append(&burst);
        let first = wait_visible(&es, &events, &json!({ "prefix": { "rule.name": "secop latency burst " } }), 1).await;
        wait_visible(&es, &events, &json!({ "prefix": { "rule.name": "secop latency burst " } }), BURST as u64).await;
        let all = written.elapsed();

        println!(
            "data-path latency: line appended to a tailed file → visible to an Elasticsearch search (no forced refresh)"
        );
        println!("| measure | p50 | p95 | max |");
        println!("|---|---|---|---|");
        println!(
            "| one Falco alert at a time ({SINGLE_EVENTS} samples) | {:.2} s | {:.2} s | {:.2} s |",
            percentile(&single, 0.5).as_secs_f64(),
            percentile(&single, 0.95).as_secs_f64(),
            single.last().unwrap().as_secs_f64()
        );
        println!(
            "burst of {BURST} alerts: first visible after {:.2} s, all after {:.2} s ({:.0} events/s end to end)",
            first.as_secs_f64(),
            all.as_secs_f64(),
            BURST as f64 / all.as_secs_f64()
        );
    });
}
