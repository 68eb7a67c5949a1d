//! The data path on real servers: the collector configs `secop render`
//! writes, run by the real OpenTelemetry Collector (built by `cargo xtask`
//! with the Collector Builder), node → OTLP → gateway → a real
//! Elasticsearch node, fed with the sensor fixtures in
//! `test/fixtures/replay/`. Then the CTEM checks (host/elastic/src/ctem.rs) run as
//! queries against what landed.
//!
//! `cargo xtask test` provides the servers (SECOP_OTELCOL, SECOP_E2E_ES_URL,
//! SECOP_ES_HOME). Without them these tests fail when CI=true and are
//! skipped otherwise.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use secop_elastic::Method;
use secop_elastic::ctem::Outcome;
use secop_elastic::{Elastic, ElasticConfig};
use secop_test_harness::{free_port, validate_collector_config};

#[path = "common/cluster.rs"]
mod cluster;
#[path = "common/forger.rs"]
mod forger;
#[path = "common/pipeline.rs"]
mod pipeline;
use pipeline::{
    Replay, collector_env, count_or_zero, expected_per_tool, files_under, render_collector_configs, render_file, repo,
    sample, scratch, start_replay,
};
use serde_json::{Value, json};

struct Servers {
    otelcol: PathBuf,
    es_url: String,
}

fn servers() -> Option<Servers> {
    match (std::env::var_os("SECOP_OTELCOL"), std::env::var("SECOP_E2E_ES_URL")) {
        (Some(otelcol), Ok(es_url)) => Some(Servers { otelcol: otelcol.into(), es_url }),
        _ if std::env::var("CI").is_ok_and(|v| v == "true") => {
            panic!(
                "CI expects the data-path servers: run the suite with `cargo xtask test` (SECOP_OTELCOL / SECOP_E2E_ES_URL not set)"
            )
        }
        _ => {
            eprintln!("skipping data-path test: no collector/Elasticsearch (run `cargo xtask test`)");
            None
        }
    }
}

/// Issue 2's last point: the configs the operator generates pass the real
/// collector's `validate`, for both samples and with each feature off.
#[test]
fn rendered_collector_configs_pass_otelcol_validate() {
    let Some(servers) = servers() else { return };
    let dir = scratch("validate");
    let mut agents = vec![
        ("full".to_string(), sample("deploy/samples/securityagent_full.yaml")),
        ("minimal".to_string(), sample("deploy/samples/securityagent_minimal.yaml")),
    ];
    let full = agents[0].1.clone();
    for (i, feature) in full["spec"]["features"].as_array().unwrap().iter().enumerate() {
        if feature["name"] == "otel_pipeline" {
            continue;
        }
        let mut agent = full.clone();
        agent["spec"]["features"][i]["enabled"] = json!(false);
        agents.push((format!("full-without-{}", feature["name"].as_str().unwrap()), agent));
    }
    for (name, agent) in agents {
        let configs = render_collector_configs(&agent, &dir);
        assert_eq!(configs.len(), 2, "{name}: node and gateway configs");
        for (config_map, yaml) in configs {
            let path = dir.join(format!("{name}-{config_map}.yaml"));
            std::fs::write(&path, &yaml).unwrap();
            if let Err(complaint) = validate_collector_config(&servers.otelcol, &path, &collector_env()) {
                panic!("{name}: {config_map} fails `otelcol validate`:\n{complaint}\n--- config:\n{yaml}");
            }
        }
    }
}

async fn es(url: &str) -> Elastic {
    Elastic::new(&ElasticConfig::new(vec![url.to_string()])).unwrap()
}

async fn search(es: &Elastic, index: &str, body: Value) -> Value {
    es.ok(Method::POST, &format!("{index}/_search?ignore_unavailable=true"), Some(&body)).await.unwrap()
}

async fn count(es: &Elastic, index: &str, query: Value) -> u64 {
    let answer = es
        .ok(Method::POST, &format!("{index}/_count?ignore_unavailable=true"), Some(&json!({ "query": query })))
        .await
        .unwrap();
    answer["count"].as_u64().unwrap()
}

async fn try_count(es: &Elastic, index: &str) -> u64 {
    count_or_zero(es, index, &json!({ "match_all": {} })).await
}

fn bucket_keys(aggregation: &Value) -> BTreeSet<String> {
    aggregation["buckets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| {
            b["key_as_string"]
                .as_str()
                .map(str::to_string)
                .unwrap_or_else(|| b["key"].to_string().trim_matches('"').to_string())
        })
        .collect()
}

fn ctem_scope(replay: &Replay) -> secop_elastic::ctem::Scope {
    secop_elastic::ctem::Scope {
        inventory: replay.inventory.clone(),
        events: replay.events.clone(),
        vulnerabilities: replay.vuln.clone(),
        sensor_namespace: "security-system".into(),
        since: None,
    }
}

/// The replay: fixtures → node collector → gateway → Elasticsearch, then
/// the CTEM checks (host/elastic/src/ctem.rs) and the dashboards' aggregations.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sensor_events_reach_the_ctem_indices_through_the_real_collectors() {
    let Some(servers) = servers() else { return };
    let dir = scratch("replay");
    let prefix = format!("replay{}", std::process::id());
    let replay = start_replay(&servers.otelcol, &servers.es_url, &prefix, &dir);
    let (inventory, events, vuln) = (&replay.inventory, &replay.events, &replay.vuln);
    assert!(replay.setup_output.contains("written"), "{}", replay.setup_output);
    let expected = expected_per_tool(&replay.fixtures);
    assert!(expected.values().all(|n| *n > 0) && expected.len() == 3, "{expected:?}");

    let es = es(&servers.es_url).await;
    let want_events = (expected["falco"] + expected["tetragon"]) as u64;
    let want_inventory = expected["osquery"] as u64;
    let start = Instant::now();
    loop {
        let _ = es.refresh(&format!("{events},{inventory}")).await;
        // A just-created index answers 503 until its shard has started.
        let (e, i) = (try_count(&es, events).await, try_count(&es, inventory).await);
        if e >= want_events && i >= want_inventory {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "documents after 120 s: events {e}/{want_events}, inventory {i}/{want_inventory}\n--- gateway log:\n{}\n--- node log:\n{}",
            std::fs::read_to_string(dir.join("gateway.log")).unwrap_or_default(),
            std::fs::read_to_string(dir.join("node.log")).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // Exactly once: nothing more arrives (no duplicates, no stray lines).
    tokio::time::sleep(Duration::from_secs(3)).await;
    es.refresh(&format!("{events},{inventory}")).await.unwrap();
    assert_eq!(
        count(&es, events, json!({ "match_all": {} })).await,
        want_events,
        "events: exactly one document per event"
    );
    assert_eq!(
        count(&es, inventory, json!({ "match_all": {} })).await,
        want_inventory,
        "inventory: exactly one document per row"
    );

    let tool = |t: &str| json!({ "term": { "labels.security_tool": t } });
    let exists = |f: &str| json!({ "exists": { "field": f } });
    let all = |filters: Vec<Value>| json!({ "bool": { "filter": filters } });

    // Every document carries its tool; every tool lands only in its index.
    for index in [&events, &inventory] {
        assert_eq!(
            count(&es, index, json!({ "bool": { "must_not": [exists("labels.security_tool")] } })).await,
            0,
            "{index}: labels.security_tool on every document"
        );
    }
    assert_eq!(count(&es, events, tool("falco")).await, expected["falco"] as u64);
    assert_eq!(count(&es, events, tool("tetragon")).await, expected["tetragon"] as u64);
    assert_eq!(count(&es, events, tool("osquery")).await, 0, "osquery only in the inventory");
    assert_eq!(count(&es, inventory, tool("osquery")).await, expected["osquery"] as u64);
    assert_eq!(
        count(&es, inventory, json!({ "terms": { "labels.security_tool": ["falco", "tetragon"] } })).await,
        0,
        "runtime events only in the events index"
    );

    // The findings: the Trivy fixture's VulnerabilityReports in the real
    // control plane, synced into this replay's vulnerabilities index.
    let cluster = control_plane().await.expect("the replay needs the control plane for trivy-sync");
    let reports = cluster.vulnerability_reports(&format!("{prefix}-trivy")).await;
    trivy_sync(&servers.es_url, &cluster.kubeconfig, vuln, "replay", &reports.namespace);
    es.refresh(vuln).await.unwrap();

    // The CTEM checklist, exactly as `secop ctem-report` reads it. SCOPE-03
    // cannot be read from the indices (see ctem.rs).
    let checks = secop_elastic::ctem::run(&es, &ctem_scope(&replay)).await.unwrap();
    let check = |id: &str| checks.iter().find(|c| c.id == id).unwrap_or_else(|| panic!("no check {id}")).clone();
    for c in &checks {
        let want = if c.id == "SCOPE-03" { Outcome::NotChecked } else { Outcome::Pass };
        assert_eq!(c.outcome, want, "{}: {}\n{}", c.id, c.detail, secop_elastic::ctem::table(&checks));
    }
    // Stronger than the checklist needs, because the fixtures are known.
    assert!(
        check("SCOPE-01").figures["nodes"] >= 3 && check("SCOPE-04").figures["nodes_with_kernel"] >= 2,
        "{:?}",
        check("SCOPE-04")
    );
    assert_eq!(check("VAL-04").figures["detected"], 5, "{}", check("VAL-04").detail);
    assert_eq!(check("VAL-05").figures["runtime_events"], want_events);
    let kprobes = search(&es, events, json!({ "size": 0, "query": all(vec![tool("tetragon"), json!({ "term": { "rule.ruleset": "container-escape-monitor" } }), json!({ "term": { "event.severity": 4 } })]),
        "aggs": { "calls": { "terms": { "field": "rule.name" } } } })).await;
    assert_eq!(
        bucket_keys(&kprobes["aggregations"]["calls"]),
        BTreeSet::from(["__x64_sys_mount".to_string(), "__x64_sys_setns".to_string()]),
        "VAL-03"
    );

    // `secop ctem-report` prints the same, and exits 1 only on a failure.
    let report = Command::new(env!("CARGO_BIN_EXE_secop"))
        .args([
            "ctem-report",
            "--endpoint",
            &servers.es_url,
            "--index-inventory",
            inventory,
            "--index-events",
            events,
            "--index-vulnerabilities",
            vuln,
        ])
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&report.stdout);
    assert!(report.status.success(), "ctem-report: {table}{}", String::from_utf8_lossy(&report.stderr));
    assert!(table.contains("PASS  VAL-04") && table.contains("15 passed, 0 failed, 1 not checked"), "{table}");
    // What `cargo xtask ctem-report` shows (it runs this test with --nocapture).
    println!("\n`secop ctem-report` on the replayed fixtures and the synced Trivy findings:\n\n{table}");
    pasted_queries_find_the_replayed_scenarios(&es, &replay).await;
    reports.delete().await;

    // Severity 1–5 per tool, per the severity table (docs/seed-deviations.md, §5.4).
    let docs =
        search(&es, &format!("{events},{inventory}"), json!({ "size": 500, "query": { "match_all": {} } })).await;
    let falco_severity = |p: &str| match p {
        "Emergency" | "Alert" => 5,
        "Critical" => 4,
        "Error" | "Warning" => 3,
        "Notice" => 2,
        _ => 1,
    };
    let mut seen = BTreeMap::<String, BTreeSet<i64>>::new();
    for hit in docs["hits"]["hits"].as_array().unwrap() {
        let d = &hit["_source"];
        let t = d["labels"]["security_tool"].as_str().unwrap();
        let severity = d["event"]["severity"].as_i64().unwrap_or_else(|| panic!("event.severity missing: {d}"));
        let want = match t {
            "falco" => falco_severity(d["falco"]["priority"].as_str().unwrap()),
            "tetragon" if d["tetragon"].get("process_kprobe").is_some() => 4,
            "tetragon" => 2,
            "osquery" => 1,
            other => panic!("unexpected tool {other}"),
        };
        assert_eq!(severity, want, "severity of {t} document {d}");
        assert!(d["@timestamp"].is_number() || d["@timestamp"].is_string(), "@timestamp on {d}");
        seen.entry(t.to_string()).or_default().insert(severity);
    }
    assert!(seen["falco"].len() >= 2, "Falco documents cover several severities: {seen:?}");

    // The dashboards: each visualization's aggregation over its data view
    // finds buckets in what the replay wrote.
    dashboards_have_data(
        &es,
        &[
            ("security-*", format!("{prefix}-*")),
            ("security-events", events.clone()),
            ("security-events,security-vuln", format!("{events},{vuln}")),
        ],
    )
    .await;

    // Last, as it writes result documents into the events index.
    validation_names_the_tool_whose_detection_is_missing(&es, &servers.es_url, &replay).await;
}

/// `secop validate` as the validation Job's check runs it, for the replay's
/// pod ctem-testbox: the shell (B) and the cron write (E) were seen by
/// both tools there, the inventory (A) by osquery; C and D only in part,
/// as the API contact and the nsenter ran in the other pod. Those two fail
/// naming the tool whose detection is missing, and every result lands in
/// the events index as a document.
async fn validation_names_the_tool_whose_detection_is_missing(es: &Elastic, es_url: &str, replay: &Replay) {
    let day = "2026-11-20T00:00:00Z";
    let out = Command::new(env!("CARGO_BIN_EXE_secop"))
        .args([
            "validate",
            "--endpoint",
            es_url,
            "--index-events",
            &replay.events,
            "--index-inventory",
            &replay.inventory,
        ])
        .args([
            "--pod",
            "ctem-testbox",
            "--since",
            day,
            "--inventory-since",
            day,
            "--timeout-seconds",
            "0",
            "-o",
            "json",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "secop validate: {}", String::from_utf8_lossy(&out.stderr));
    let run: Value = serde_json::from_slice(&out.stdout).unwrap();
    let results: BTreeMap<&str, (&str, Vec<&str>, Vec<&str>)> = run["scenarios"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let names = |k: &str| r[k].as_array().unwrap().iter().map(|t| t.as_str().unwrap()).collect::<Vec<_>>();
            (r["name"].as_str().unwrap(), (r["result"].as_str().unwrap(), names("detectedBy"), names("missing")))
        })
        .collect();
    let want = BTreeMap::from([
        ("scope-inventory", ("Passed", vec!["osquery"], vec![])),
        ("validate-shell", ("Passed", vec!["falco", "tetragon"], vec![])),
        ("validate-k8s-api", ("Failed", vec!["falco"], vec!["tetragon"])),
        ("validate-container-escape", ("Failed", vec!["tetragon"], vec!["falco"])),
        ("validate-cron-persistence", ("Passed", vec!["falco", "tetragon"], vec![])),
    ]);
    assert_eq!(results, want, "{run}");
    es.refresh(&replay.events).await.unwrap();
    let of_validation = json!({ "term": { "labels.security_tool": "ctem-validation" } });
    assert_eq!(count(es, &replay.events, of_validation.clone()).await, 5, "one result document per scenario");
    let failed = json!({ "bool": { "filter": [of_validation, { "term": { "event.outcome": "failure" } }] } });
    assert_eq!(count(es, &replay.events, failed).await, 2);
}

/// What a query of deploy/kibana/queries/ctem-checks.console must return
/// on the replay (test/fixtures/replay/README.md has the counts).
enum Expect {
    Hits(u64),
    /// Buckets of the named top-level aggregation.
    Buckets(&'static str, u64),
}

/// The Dev Tools queries users paste, run as Kibana's Console sends them,
/// against the replayed indices, in file order. The only rewrite besides
/// the index names: the replay's events are from 2026-11-20, so a window
/// of `now-15m` starts on that day instead.
async fn pasted_queries_find_the_replayed_scenarios(es: &Elastic, replay: &Replay) {
    let expected: &[(&str, Expect)] = &[
        ("SCOPE-01", Expect::Hits(3)),
        ("SCOPE-02", Expect::Hits(34)),
        ("SCOPE-04", Expect::Buckets("node", 3)),
        ("VAL-01: everything", Expect::Hits(17)),
        ("VAL-01 (B, T1059.004)", Expect::Hits(1)),
        ("VAL-01 (B)", Expect::Hits(3)),
        ("C (T1552.001)", Expect::Hits(1)),
        ("VAL-02 (C)", Expect::Hits(2)),
        ("VAL-03 (D, T1611)", Expect::Buckets("syscall", 2)),
        ("D (T1611)", Expect::Hits(1)),
        ("E (T1053.003)", Expect::Hits(2)),
        ("VAL-05", Expect::Hits(0)),
        ("DISC-01", Expect::Hits(13)),
        ("PRI-01", Expect::Hits(5)),
        ("PRI-02", Expect::Hits(4)),
    ];
    let text = std::fs::read_to_string(repo("deploy/kibana/queries/ctem-checks.console")).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let mut requests = vec![];
    for (i, line) in lines.iter().enumerate() {
        let Some((method, path)) = line.split_once(' ').filter(|(m, _)| ["GET", "POST"].contains(m)) else { continue };
        let title = lines[..i]
            .iter()
            .rev()
            .take_while(|l| l.starts_with('#'))
            .last()
            .map(|l| l.trim_start_matches("# ").to_string())
            .unwrap_or_default();
        let body: String =
            lines[i + 1..].iter().take_while(|l| !l.trim().is_empty()).copied().collect::<Vec<_>>().join("\n");
        requests.push((title, method.to_string(), path.to_string(), body));
    }
    assert_eq!(
        requests.len(),
        expected.len(),
        "one expectation per query: {:?}",
        requests.iter().map(|r| &r.0).collect::<Vec<_>>()
    );
    for ((title, method, path, body), (prefix, expect)) in requests.iter().zip(expected) {
        assert!(title.starts_with(prefix), "query `{title}` where `{prefix}` was expected (file order)");
        let (index, endpoint) = path.split_once('/').unwrap();
        let index = match index {
            "security-inventory" => &replay.inventory,
            "security-events" => &replay.events,
            "security-vuln" => &replay.vuln,
            other => panic!("{title}: index {other}"),
        };
        let body: Value = serde_json::from_str(&body.replace("\"now-15m\"", "\"2026-11-20T00:00:00Z\""))
            .unwrap_or_else(|e| panic!("{title}: body is not JSON: {e}"));
        let method = if method == "GET" { Method::GET } else { Method::POST };
        let answer =
            es.ok(method, &format!("{index}/{endpoint}"), Some(&body)).await.unwrap_or_else(|e| panic!("{title}: {e}"));
        match expect {
            Expect::Hits(n) => assert_eq!(answer["hits"]["total"]["value"].as_u64(), Some(*n), "{title}: {answer}"),
            Expect::Buckets(agg, n) => assert_eq!(
                answer["aggregations"][agg]["buckets"].as_array().map(Vec::len),
                Some(*n as usize),
                "{title}: {answer}"
            ),
        }
    }
}

/// Run every visualization of deploy/kibana/security-dashboards.ndjson as
/// the Elasticsearch aggregation it stands for; every one must have buckets.
async fn dashboards_have_data(es: &Elastic, index_for_title: &[(&str, String)]) {
    let text = std::fs::read_to_string(repo("deploy/kibana/security-dashboards.ndjson")).unwrap();
    let objects: Vec<Value> =
        text.lines().filter(|l| !l.trim().is_empty()).map(|l| serde_json::from_str(l).unwrap()).collect();
    let titles: BTreeMap<String, String> = objects
        .iter()
        .filter(|o| o["type"] == "index-pattern")
        .map(|o| (o["id"].as_str().unwrap().to_string(), o["attributes"]["title"].as_str().unwrap().to_string()))
        .collect();
    let dashboard = objects.iter().find(|o| o["type"] == "dashboard").expect("a dashboard");
    let panels: Vec<&str> =
        dashboard["references"].as_array().unwrap().iter().map(|r| r["id"].as_str().unwrap()).collect();
    let visualizations: Vec<&Value> = objects.iter().filter(|o| o["type"] == "visualization").collect();
    assert_eq!(visualizations.len(), 3, "the three panels of deploy/kibana");
    for vis in visualizations {
        let id = vis["id"].as_str().unwrap();
        assert!(panels.contains(&id), "{id} is on the dashboard");
        let state: Value = serde_json::from_str(vis["attributes"]["visState"].as_str().unwrap()).unwrap();
        let source: Value =
            serde_json::from_str(vis["attributes"]["kibanaSavedObjectMeta"]["searchSourceJSON"].as_str().unwrap())
                .unwrap();
        let data_view =
            vis["references"].as_array().unwrap().iter().find(|r| r["name"] == source["indexRefName"]).unwrap()["id"]
                .as_str()
                .unwrap();
        let title = &titles[data_view];
        let index = &index_for_title
            .iter()
            .find(|(t, _)| t == title)
            .unwrap_or_else(|| panic!("no index stands in for data view {title}"))
            .1;
        let filters: Vec<Value> =
            source["filter"].as_array().map(|f| f.iter().map(|f| f["query"].clone()).collect()).unwrap_or_default();
        // Nest the bucket aggregations in list order, as Kibana does.
        let mut aggs = Value::Null;
        for agg in state["aggs"].as_array().unwrap().iter().rev().filter(|a| a["type"] != "count") {
            let field = agg["params"]["field"].as_str().unwrap();
            let mut body = match agg["type"].as_str().unwrap() {
                "terms" => json!({ "terms": { "field": field, "size": agg["params"]["size"].as_u64().unwrap_or(10) } }),
                "date_histogram" => {
                    json!({ "date_histogram": { "field": field, "fixed_interval": agg["params"]["interval"].as_str().filter(|i| *i != "auto").unwrap_or("5m") } })
                }
                other => panic!("{id}: aggregation type {other} not understood by this test"),
            };
            if !aggs.is_null() {
                body["aggs"] = aggs;
            }
            aggs = json!({ agg["id"].as_str().unwrap(): body });
        }
        let answer =
            search(es, index, json!({ "size": 0, "query": { "bool": { "filter": filters } }, "aggs": aggs })).await;
        let first = answer["aggregations"].as_object().unwrap().values().next().unwrap();
        assert!(!first["buckets"].as_array().unwrap().is_empty(), "{id}: no buckets over {index}: {answer}");
        // Every nested level has buckets too.
        let mut level = first["buckets"][0].clone();
        while let Some(inner) = level.as_object().and_then(|m| m.values().find(|v| v.get("buckets").is_some())).cloned()
        {
            assert!(!inner["buckets"].as_array().unwrap().is_empty(), "{id}: empty nested buckets");
            level = inner["buckets"][0].clone();
        }
    }
}

/// The test control plane of `cargo xtask test` (SECOP_E2E_KUBECONFIG).
struct ControlPlane {
    kubeconfig: PathBuf,
    client: kube::Client,
}

async fn control_plane() -> Option<ControlPlane> {
    let kubeconfig = match std::env::var_os("SECOP_E2E_KUBECONFIG") {
        Some(k) => PathBuf::from(k),
        None if std::env::var("CI").is_ok_and(|v| v == "true") => {
            panic!("CI expects the e2e control plane (SECOP_E2E_KUBECONFIG)")
        }
        None => return None,
    };
    let config = kube::Config::from_custom_kubeconfig(
        kube::config::Kubeconfig::read_from(&kubeconfig).unwrap(),
        &Default::default(),
    )
    .await
    .unwrap();
    Some(ControlPlane { client: kube::Client::try_from(config).unwrap(), kubeconfig })
}

/// test/fixtures/trivy/vulnerabilityreports.yaml created in a namespace of
/// its own, under the CRD exactly as the trivy feature contributes it.
struct VulnerabilityReports {
    namespace: String,
    names: Vec<String>,
    high_or_above_per_report: Vec<u64>,
    api: kube::Api<kube::api::DynamicObject>,
    client: kube::Client,
}

impl ControlPlane {
    async fn vulnerability_reports(&self, ns: &str) -> VulnerabilityReports {
        use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
        use kube::core::{ApiResource, GroupVersionKind};
        let client = self.client.clone();
        let rendered = render_file(&repo("deploy/samples/securityagent_full.yaml"), &["--feature", "trivy"]);
        let crd = rendered["objects"]
            .as_array()
            .unwrap()
            .iter()
            .find(|o| o["metadata"]["name"] == "vulnerabilityreports.aquasecurity.github.io")
            .unwrap()
            .clone();
        let crds: Api<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition> =
            Api::all(client.clone());
        crds.patch(
            "vulnerabilityreports.aquasecurity.github.io",
            &PatchParams::apply("datapath-test").force(),
            &Patch::Apply(&crd),
        )
        .await
        .unwrap();
        let start = Instant::now();
        while !crds
            .get("vulnerabilityreports.aquasecurity.github.io")
            .await
            .unwrap()
            .status
            .and_then(|s| s.conditions)
            .unwrap_or_default()
            .iter()
            .any(|c| c.type_ == "Established" && c.status == "True")
        {
            assert!(start.elapsed() < Duration::from_secs(30), "CRD not established");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }

        let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
        namespaces
            .create(&PostParams::default(), &serde_json::from_value(json!({ "metadata": { "name": ns } })).unwrap())
            .await
            .unwrap();
        let resource = ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk("aquasecurity.github.io", "v1alpha1", "VulnerabilityReport"),
            "vulnerabilityreports",
        );
        let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &resource);
        let list: Value = serde_yaml::from_str(
            &std::fs::read_to_string(repo("test/fixtures/trivy/vulnerabilityreports.yaml")).unwrap(),
        )
        .unwrap();
        let mut names = vec![];
        let mut high_or_above_per_report = vec![];
        for item in list["items"].as_array().unwrap() {
            let mut item = item.clone();
            let meta = item["metadata"].as_object_mut().unwrap();
            // Owners that do not exist here would have the report collected.
            for key in ["uid", "resourceVersion", "creationTimestamp", "ownerReferences", "generation", "managedFields"]
            {
                meta.remove(key);
            }
            meta.insert("namespace".into(), json!(ns));
            names.push(meta["name"].as_str().unwrap().to_string());
            high_or_above_per_report.push(
                item["report"]["vulnerabilities"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .filter(|v| matches!(v["severity"].as_str(), Some("HIGH" | "CRITICAL")))
                    .count() as u64,
            );
            api.create(&PostParams::default(), &serde_json::from_value(item).unwrap()).await.unwrap();
        }
        assert!(names.len() >= 2 && high_or_above_per_report.iter().all(|n| *n > 0), "{high_or_above_per_report:?}");
        VulnerabilityReports { namespace: ns.to_string(), names, high_or_above_per_report, api, client }
    }
}

impl VulnerabilityReports {
    async fn delete(&self) {
        let namespaces: kube::Api<k8s_openapi::api::core::v1::Namespace> = kube::Api::all(self.client.clone());
        namespaces.delete(&self.namespace, &Default::default()).await.unwrap();
    }
}

/// `secop trivy-sync` of one namespace's reports at threshold HIGH; its summary line.
fn trivy_sync(es_url: &str, kubeconfig: &Path, index: &str, cluster_name: &str, ns: &str) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_secop"))
        .args([
            "trivy-sync",
            "--endpoint",
            es_url,
            "--index",
            index,
            "--cluster-name",
            cluster_name,
            "--severity-threshold",
            "HIGH",
            "--namespace",
            ns,
        ])
        .env("KUBECONFIG", kubeconfig)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "trivy-sync: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// `secop trivy-sync` between the real control plane (VulnerabilityReports
/// of the Trivy Operator's CRD) and the real Elasticsearch: upserts at or
/// above the threshold, re-runs without duplicates, resolves findings whose
/// report vanished and keeps them as evidence; DISC-01, PRI-01, PRI-02.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trivy_sync_upserts_findings_and_resolves_vanished_reports() {
    let Some(servers) = servers() else { return };
    let Some(cluster) = control_plane().await else { return };
    let fixture = cluster.vulnerability_reports(&format!("trivy-sync-{}", std::process::id())).await;
    let (ns, names, high_or_above_per_report, kubeconfig) =
        (&fixture.namespace, &fixture.names, &fixture.high_or_above_per_report, &cluster.kubeconfig);
    let want: u64 = high_or_above_per_report.iter().sum();
    let reports = &fixture.api;

    let index = format!("trivysync{}-vuln", std::process::id());
    let cluster_name = format!("c{}", std::process::id());
    let sync = || trivy_sync(&servers.es_url, kubeconfig, &index, &cluster_name, ns);
    let first = sync();
    assert!(first.contains(&format!("{want} findings at or above HIGH: {want} created")), "{first}");
    let es = es(&servers.es_url).await;
    es.refresh(&index).await.unwrap();
    let total = || async { count(&es, &index, json!({ "match_all": {} })).await };
    assert_eq!(total().await, want);
    let open = json!({ "term": { "finding.status": "open" } });
    assert_eq!(count(&es, &index, open.clone()).await, want);
    assert_eq!(
        count(&es, &index, json!({ "terms": { "vulnerability.severity": ["MEDIUM", "LOW", "UNKNOWN"] } })).await,
        0,
        "below the threshold"
    );
    // DISC-01, PRI-01, PRI-02 as `secop ctem-report` reads them.
    let scope = secop_elastic::ctem::Scope {
        inventory: format!("{index}-none"),
        events: format!("{index}-none"),
        vulnerabilities: index.clone(),
        sensor_namespace: "security-system".into(),
        since: None,
    };
    let checks = secop_elastic::ctem::run(&es, &scope).await.unwrap();
    let check = |id: &str| checks.iter().find(|c| c.id == id).unwrap().clone();
    for id in ["DISC-01", "PRI-01", "PRI-02", "ROUTING", "SEVERITY"] {
        assert_eq!(check(id).outcome, Outcome::Pass, "{id}: {}", check(id).detail);
    }
    assert_eq!(check("DISC-01").figures["searchable"], want, "DISC-01");
    let critical = json!({ "term": { "vulnerability.severity": "CRITICAL" } });
    assert_eq!(
        count(&es, &index, json!({ "bool": { "filter": [critical.clone(), { "term": { "event.severity": 5 } }] } }))
            .await,
        check("PRI-01").figures["critical"]
    );
    let (patchable, unpatchable) = (check("PRI-02").figures["patchable"], check("PRI-02").figures["unpatchable"]);
    assert!(patchable > 0 && unpatchable > 0, "PRI-02: {patchable} patchable, {unpatchable} without a fix");
    // A finding below 9.0 filed as CRITICAL would fail PRI-01.
    assert_eq!(check("PRI-01").figures["critical_below_9"], 0);

    // A re-run: the same documents, updated, no duplicates; first_seen kept.
    let some =
        search(&es, &index, json!({ "size": 1, "sort": [{ "finding.id": "asc" }] })).await["hits"]["hits"][0].clone();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let second = sync();
    assert!(second.contains(&format!("0 created, {want} updated, 0 failed; 0 resolved")), "{second}");
    es.refresh(&index).await.unwrap();
    assert_eq!(total().await, want, "no duplicates on a re-run");
    let again = es
        .ok(Method::GET, &format!("{index}/_doc/{}", some["_id"].as_str().unwrap().replace(':', "%3A")), None)
        .await
        .unwrap();
    assert_eq!(again["_source"]["finding"]["first_seen"], some["_source"]["finding"]["first_seen"]);
    assert_ne!(again["_source"]["finding"]["last_seen"], some["_source"]["finding"]["last_seen"]);

    // The first report vanishes (its workload was deleted): its findings
    // are resolved, not dropped, and still queryable.
    reports.delete(&names[0], &Default::default()).await.unwrap();
    let third = sync();
    assert!(third.contains(&format!("{} resolved", high_or_above_per_report[0])), "{third}");
    es.refresh(&index).await.unwrap();
    assert_eq!(total().await, want, "evidence kept");
    let exists = |f: &str| json!({ "exists": { "field": f } });
    let resolved = json!({ "bool": { "filter": [{ "term": { "finding.status": "resolved" } }, exists("finding.resolved_at"), exists("vulnerability.id")] } });
    assert_eq!(count(&es, &index, resolved).await, high_or_above_per_report[0]);
    assert_eq!(count(&es, &index, open).await, want - high_or_above_per_report[0]);
    fixture.delete().await;
}

/// Durability: with Elasticsearch stopped while events keep coming, the
/// gateway's persistent sending queue holds them; once Elasticsearch is
/// back, every event lands exactly once. This test runs its own node, so it
/// can stop it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_event_is_lost_while_elasticsearch_is_down() {
    let Some(servers) = servers() else { return };
    let es_home = PathBuf::from(
        std::env::var_os("SECOP_ES_HOME").expect("SECOP_ES_HOME (cargo xtask test fetches Elasticsearch)"),
    );
    let dir = scratch("durability");
    let mut node = secop_test_harness::Elasticsearch::start(&es_home, &dir.join("es"), free_port()).unwrap();
    let replay = start_replay(&servers.otelcol, &node.url(), &format!("durable{}", std::process::id()), &dir);
    let (inventory, events, fixtures) = (replay.inventory.clone(), replay.events.clone(), replay.fixtures.clone());
    // First round: the fixtures as they are; the second while Elasticsearch is down.
    let expected = expected_per_tool(&fixtures);
    let per_round = expected.values().sum::<usize>() as u64;
    let es = es(&node.url()).await;
    let landed = |want: u64| {
        let es = es.clone();
        let (events, inventory) = (events.clone(), inventory.clone());
        async move {
            let start = Instant::now();
            loop {
                let _ = es.refresh(&format!("{events},{inventory}")).await;
                let n = try_count(&es, &events).await + try_count(&es, &inventory).await;
                if n >= want || start.elapsed() > Duration::from_secs(180) {
                    return n;
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    };
    assert_eq!(landed(per_round).await, per_round, "first round");

    node.stop();
    // The sensors keep writing: a second copy of every fixture file, as a
    // restarted sensor container (`1.log`) and osquery's rotation
    // (`osqueryd.results.log.1`).
    let mut files = vec![];
    files_under(&fixtures, &mut files);
    for f in &files {
        // The collector knows files by their first bytes: a distinct first
        // line (not JSON, so dropped like a sensor's banner) makes the copy
        // a new file, as a real rotation is.
        let banner = if f.to_string_lossy().contains("/var/log/pods/") {
            "2026-11-20T11:00:00.000000000Z stderr F sensor restarted\n"
        } else {
            "sensor restarted\n"
        };
        let text = std::fs::read_to_string(f).unwrap();
        let copy = match f.file_name().and_then(|n| n.to_str()) {
            Some("0.log") => f.with_file_name("1.log"),
            _ => PathBuf::from(format!("{}.1", f.display())),
        };
        std::fs::write(copy, format!("{banner}{text}")).unwrap();
    }
    // An outage longer than the exporter's default 90 s request timeout,
    // after which 0.152 drops the batch from its persistent queue: the
    // rendered gateway sets a longer one (GATEWAY_EXPORT_TIMEOUT), so the
    // batches wait for Elasticsearch instead.
    tokio::time::sleep(Duration::from_secs(100)).await;
    node.start_again().unwrap();
    assert_eq!(landed(2 * per_round).await, 2 * per_round, "every event of the outage landed");
    tokio::time::sleep(Duration::from_secs(3)).await;
    es.refresh(&format!("{events},{inventory}")).await.unwrap();
    assert_eq!(try_count(&es, &events).await + try_count(&es, &inventory).await, 2 * per_round, "exactly once");
    let gateway_log = std::fs::read_to_string(dir.join("gateway.log")).unwrap();
    assert!(!gateway_log.contains("Dropping data"), "the gateway dropped a batch:\n{gateway_log}");
}

/// Only the agent's node collectors may send events: the gateway asks for
/// a client certificate of the agent's CA (issued by the operator,
/// host/operator/src/telemetry.rs). A sender on the network (a plain pod,
/// where the pipeline's NetworkPolicy is not enforced) tries plain OTLP,
/// TLS without a certificate, and a certificate of a CA it made itself;
/// none of its events land. The same sender with the node collectors'
/// certificate is the control: its event lands, so the refusals are the
/// gateway's, not a broken sender.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_agents_node_collectors_can_put_events_into_the_indices() {
    let Some(servers) = servers() else { return };
    let dir = scratch("forged");
    let replay = start_replay(&servers.otelcol, &servers.es_url, &format!("forged{}", std::process::id()), &dir);
    let own_ca = dir.join("own-ca");
    pipeline::write_telemetry_credentials(&own_ca, &replay.gateway_host);
    let forged = dir.join("forged.log");
    std::fs::write(&forged, forger::forged_alert()).unwrap();
    let tls = |dir: &Path, key: &str| dir.join(key).display().to_string();
    let ca = tls(&replay.tls, "ca.crt");
    let senders = [
        ("plain", json!({ "insecure": true })),
        ("no-certificate", json!({ "ca_file": ca, "server_name_override": replay.gateway_host })),
        (
            "own-ca",
            json!({ "ca_file": ca, "server_name_override": replay.gateway_host,
                    "cert_file": tls(&own_ca, "node.crt"), "key_file": tls(&own_ca, "node.key") }),
        ),
        (
            "control",
            json!({ "ca_file": ca, "server_name_override": replay.gateway_host,
                    "cert_file": tls(&replay.tls, "node.crt"), "key_file": tls(&replay.tls, "node.key") }),
        ),
    ];
    let health = free_port();
    let config = forger::sender_config(
        &forged.display().to_string(),
        &format!("127.0.0.1:{}", replay.gateway_port),
        &senders,
        Some(health),
    );
    let config_file = dir.join("sender.yaml");
    std::fs::write(&config_file, serde_yaml::to_string(&config).unwrap()).unwrap();
    let _sender = secop_test_harness::Collector::start(
        &servers.otelcol,
        "sender",
        &config_file,
        health,
        &collector_env(),
        &dir.join("sender.log"),
    )
    .unwrap();

    let es = es(&servers.es_url).await;
    let sent_by =
        |name: &str| json!({ "bool": { "filter": [{ "term": { "forged": true } }, { "term": { "sender": name } }] } });
    let start = Instant::now();
    while count_or_zero(&es, &replay.events, &sent_by("control")).await == 0 {
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "the control sender's event did not land in 120 s\n--- sender log:\n{}\n--- gateway log:\n{}",
            std::fs::read_to_string(dir.join("sender.log")).unwrap_or_default(),
            std::fs::read_to_string(dir.join("gateway.log")).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
        let _ = es.refresh(&replay.events).await;
    }
    // All four exporters got the event at the same moment; a refused one
    // does not retry, and an accepted one would have landed with the control.
    tokio::time::sleep(Duration::from_secs(3)).await;
    es.refresh(&replay.events).await.unwrap();
    for name in ["plain", "no-certificate", "own-ca"] {
        assert_eq!(count(&es, &replay.events, sent_by(name)).await, 0, "{name}: a forged event landed");
    }
    assert_eq!(count(&es, &replay.events, json!({ "term": { "forged": true } })).await, 1, "the control's only");
}

/// Kills the child process when the test ends, however it ends.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Vulnerabilities within minutes of the scan: `secop trivy-sync --watch`,
/// as the trivy feature's Deployment runs it and with that Deployment's own
/// ClusterRole, puts a report's findings into the index seconds after the
/// report is written and resolves them once it is deleted, with no
/// scheduled run in between.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_watching_sync_fills_the_index_as_reports_appear_and_resolves_them_as_they_vanish() {
    let Some(servers) = servers() else { return };
    let Some(cluster) = control_plane().await else { return };
    let run = std::process::id();
    let rendered = render_file(&repo("deploy/samples/securityagent_full.yaml"), &["--feature", "trivy"]);
    let objects = rendered["objects"].as_array().unwrap();
    let sync_role = objects
        .iter()
        .find(|o| o["kind"] == "ClusterRole" && o["metadata"]["name"].as_str().unwrap().ends_with("trivy-es-sync"))
        .unwrap();
    let sync = objects
        .iter()
        .find(|o| o["kind"] == "Deployment" && o["metadata"]["name"] == "trivy-es-sync")
        .expect("the sync runs as a Deployment");
    let rendered_args: Vec<&str> = sync["spec"]["template"]["spec"]["containers"][0]["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert!(rendered_args.contains(&"--watch"), "{rendered_args:?}");
    let kubeconfig = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("kubeconfig-trivy-watch-{run}"));
    let account_ns = format!("trivy-watch-sa-{run}");
    cluster::service_account_kubeconfig(
        &cluster.client,
        &cluster.kubeconfig,
        &account_ns,
        "trivy-es-sync",
        &sync_role["rules"],
        &kubeconfig,
    )
    .await;

    let ns = format!("trivy-watch-{run}");
    let index = format!("trivywatch{run}-vuln");
    let log = scratch("trivy-watch").join("sync.log");
    let _sync = KillOnDrop(
        Command::new(env!("CARGO_BIN_EXE_secop"))
            .args([
                "trivy-sync",
                "--endpoint",
                &servers.es_url,
                "--index",
                &index,
                "--cluster-name",
                &format!("w{run}"),
                "--namespace",
                &ns,
                "--watch",
                "--settle-seconds",
                "2",
            ])
            .env("KUBECONFIG", &kubeconfig)
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(std::fs::File::create(log.with_extension("err")).unwrap())
            .spawn()
            .unwrap(),
    );
    let es = es(&servers.es_url).await;
    let sync_log = || {
        format!(
            "{}{}",
            std::fs::read_to_string(&log).unwrap_or_default(),
            std::fs::read_to_string(log.with_extension("err")).unwrap_or_default()
        )
    };
    let wait_count = |query: Value, want: u64, what: &'static str| {
        let (es, index) = (&es, &index);
        async move {
            let start = Instant::now();
            loop {
                let _ = es.refresh(index).await;
                let n = count_or_zero(es, index, &query).await;
                if n == want {
                    return start.elapsed();
                }
                assert!(start.elapsed() < Duration::from_secs(90), "{what}: {n} of {want} after 90 s\n{}", sync_log());
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    };

    // The Trivy Operator writes its reports after the sync started.
    let fixture = cluster.vulnerability_reports(&ns).await;
    let want: u64 = fixture.high_or_above_per_report.iter().sum();
    let arrived = wait_count(json!({ "term": { "finding.status": "open" } }), want, "findings of new reports").await;
    println!("findings in the index {:.1} s after their reports were written", arrived.as_secs_f64());

    // A report vanishes (its workload is gone): resolved, kept as evidence.
    fixture.api.delete(&fixture.names[0], &Default::default()).await.unwrap();
    let resolved = wait_count(
        json!({ "term": { "finding.status": "resolved" } }),
        fixture.high_or_above_per_report[0],
        "findings of a deleted report resolved",
    )
    .await;
    println!("resolved {:.1} s after the report was deleted", resolved.as_secs_f64());
    assert_eq!(count(&es, &index, json!({ "match_all": {} })).await, want, "evidence kept");
    assert!(sync_log().contains("trivy-sync: watching VulnerabilityReports"), "{}", sync_log());
    fixture.delete().await;
    let namespaces: kube::Api<k8s_openapi::api::core::v1::Namespace> = kube::Api::all(cluster.client.clone());
    let _ = namespaces.delete(&account_ns, &Default::default()).await;
}
