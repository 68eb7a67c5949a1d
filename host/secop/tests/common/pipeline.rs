//! The data path's moving parts, shared by the data-path tests and the
//! latency benchmark: `secop render`'s collector configs, rewritten for
//! this machine, and a running node → gateway → Elasticsearch pipeline.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use secop_test_harness::{Collector, free_port};
use serde_json::{Value, json};

pub fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").join(path)
}

/// A feature component as the build of secop-builtin leaves it (the
/// built-ins and the test modules), by artifact stem, e.g. `feature_falco`.
pub fn component(stem: &str) -> PathBuf {
    let path = repo(&format!("target/wasm-features/wasm32-wasip2/wasm/{stem}.wasm"));
    assert!(path.is_file(), "{} missing: the build of secop-builtin writes it", path.display());
    path
}

/// sha256 (hex) of `bytes`, as module digests are written.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(bytes))
}

pub fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// `secop render -o json <extra> -f <file>`, parsed.
pub fn render_file(file: &Path, extra: &[&str]) -> Value {
    let out = Command::new(env!("CARGO_BIN_EXE_secop"))
        .args(["render", "-o", "json"])
        .args(extra)
        .arg("-f")
        .arg(file)
        .env("SECOP_CACHE_DIR", Path::new(env!("CARGO_TARGET_TMPDIR")).join("secop-datapath-cache"))
        .output()
        .unwrap();
    assert!(out.status.success(), "render {}: {}", file.display(), String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// `secop render -o json` of `agent`; the collector configs by ConfigMap name.
pub fn render_collector_configs(agent: &Value, dir: &Path) -> BTreeMap<String, String> {
    let file = dir.join("agent.yaml");
    std::fs::write(&file, serde_yaml::to_string(agent).unwrap()).unwrap();
    render_file(&file, &[])["objects"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|o| o["kind"] == "ConfigMap" && o["metadata"]["name"].as_str().unwrap().starts_with("otel-"))
        .map(|o| {
            (
                o["metadata"]["name"].as_str().unwrap().to_string(),
                o["data"]["config.yaml"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// `_count` of `query`, 0 while the index cannot answer yet (a
/// just-created index answers 503 until its shard has started).
pub async fn count_or_zero(es: &secop_elastic::Elastic, index: &str, query: &Value) -> u64 {
    match es
        .ok(
            secop_elastic::Method::POST,
            &format!("{index}/_count?ignore_unavailable=true"),
            Some(&json!({ "query": query })),
        )
        .await
    {
        Ok(answer) => answer["count"].as_u64().unwrap_or(0),
        Err(_) => 0,
    }
}

pub fn sample(path: &str) -> Value {
    serde_yaml::from_str(&std::fs::read_to_string(repo(path)).unwrap()).unwrap()
}

/// What the collectors' `${env:...}` references need.
pub fn collector_env() -> Vec<(&'static str, String)> {
    vec![("K8S_NODE_NAME", "kwok-node-1".into()), ("ES_USERNAME", "elastic".into()), ("ES_PASSWORD", "unused".into())]
}

/// The host name the node collector of `node_config` sends to.
pub fn gateway_host(node_config: &str) -> String {
    let c: serde_yaml::Value = serde_yaml::from_str(node_config).unwrap();
    let endpoint = c["exporters"]["otlp_grpc/gateway"]["endpoint"].as_str().unwrap();
    endpoint.rsplit_once(':').unwrap().0.to_string()
}

/// The collectors' mutual-TLS files as the operator issues them, for a
/// gateway named `gateway_host`, written to `dir` for collectors run on
/// this machine.
pub fn write_telemetry_credentials(dir: &Path, gateway_host: &str) {
    std::fs::create_dir_all(dir).unwrap();
    for (key, pem) in secop_operator::issue_telemetry_files(&[gateway_host.to_string()]).unwrap() {
        std::fs::write(dir.join(key), pem).unwrap();
    }
}

/// Prefix every include/exclude glob with `root`; point ports and storage
/// at this machine, and the mutual-TLS files at `tls` (the node collector
/// reaches the gateway at 127.0.0.1 and checks its certificate for the
/// Service name it has in a cluster). Nothing else changes.
pub fn localize(
    config: &str,
    fixtures: &Path,
    storage: &Path,
    tls: &Path,
    gateway_port: u16,
    health_port: u16,
) -> String {
    let config = config.replace(secop_engine::TELEMETRY_DIR, &tls.display().to_string());
    let mut c: serde_yaml::Value = serde_yaml::from_str(&config).unwrap();
    if let Some(receivers) = c["receivers"].as_mapping_mut() {
        for (_, r) in receivers.iter_mut() {
            for key in ["include", "exclude"] {
                if let Some(globs) = r.get_mut(key).and_then(|g| g.as_sequence_mut()) {
                    for g in globs.iter_mut() {
                        *g = format!("{}{}", fixtures.display(), g.as_str().unwrap()).into();
                    }
                }
            }
            if r.get("protocols").is_some() {
                r["protocols"]["grpc"]["endpoint"] = format!("127.0.0.1:{gateway_port}").into();
            }
        }
    }
    if let Some(extensions) = c["extensions"].as_mapping_mut() {
        for (name, e) in extensions.iter_mut() {
            if e["directory"].is_string() {
                e["directory"] = storage.join(name.as_str().unwrap().replace('/', "-")).display().to_string().into();
            }
            if name.as_str() == Some("health_check") {
                e["endpoint"] = format!("127.0.0.1:{health_port}").into();
            }
        }
    }
    // (`get_mut`: indexing a mapping mutably would insert the key.)
    if let Some(exporter) = c.get_mut("exporters").and_then(|e| e.get_mut("otlp_grpc/gateway")) {
        let host = exporter["endpoint"].as_str().unwrap().rsplit_once(':').unwrap().0.to_string();
        exporter["endpoint"] = format!("127.0.0.1:{gateway_port}").into();
        exporter["tls"]["server_name_override"] = host.into();
    }
    // Two collectors on one machine: no internal metrics server (port 8888).
    c["service"]["telemetry"] = serde_yaml::from_str("{ metrics: { level: none } }").unwrap();
    serde_yaml::to_string(&c).unwrap()
}

/// The full sample's pipeline, pointed at `es_url` with indices of its own
/// (`<prefix>-inventory|events|vuln`, so tests sharing a node cannot
/// interfere): templates installed by `secop es-setup` (as the gateway's
/// init container does), the fixtures copied to `dir/fixtures`, and the
/// rendered gateway and node collectors running on them.
pub struct Replay {
    pub inventory: String,
    pub events: String,
    pub vuln: String,
    pub fixtures: PathBuf,
    pub setup_output: String,
    /// Where the gateway listens, under which name its certificate is,
    /// and the mutual-TLS files both collectors use.
    pub gateway_port: u16,
    pub gateway_host: String,
    pub tls: PathBuf,
    pub _gateway: Collector,
    pub _node: Collector,
}

pub fn start_replay(otelcol: &Path, es_url: &str, prefix: &str, dir: &Path) -> Replay {
    let (inventory, events, vuln) =
        (format!("{prefix}-inventory"), format!("{prefix}-events"), format!("{prefix}-vuln"));
    let mut agent = sample("deploy/samples/securityagent_full.yaml");
    let output = &mut agent["spec"]["output"]["elasticsearch"];
    output["endpoints"] = json!([es_url]);
    output.as_object_mut().unwrap().remove("authSecretRef");
    output.as_object_mut().unwrap().remove("caSecretRef");
    output["indices"] = json!({ "inventory": inventory, "events": events, "vulnerabilities": vuln });
    let configs = render_collector_configs(&agent, dir);

    let setup = Command::new(env!("CARGO_BIN_EXE_secop"))
        .args([
            "es-setup",
            "--endpoint",
            es_url,
            "--index-inventory",
            &inventory,
            "--index-events",
            &events,
            "--index-vulnerabilities",
            &vuln,
        ])
        .output()
        .unwrap();
    assert!(setup.status.success(), "es-setup: {}", String::from_utf8_lossy(&setup.stderr));

    let fixtures = dir.join("fixtures");
    secop_test_harness::copy_dir(&repo("test/fixtures/replay"), &fixtures).unwrap();
    let gateway_port = free_port();
    let (node_health, gateway_health) = (free_port(), free_port());
    let tls = dir.join("telemetry-mtls");
    let host = gateway_host(&configs["otel-node-config"]);
    write_telemetry_credentials(&tls, &host);
    std::fs::write(
        dir.join("gateway.yaml"),
        localize(
            &configs["otel-gateway-config"],
            &fixtures,
            &dir.join("gateway-storage"),
            &tls,
            gateway_port,
            gateway_health,
        ),
    )
    .unwrap();
    std::fs::write(
        dir.join("node.yaml"),
        localize(&configs["otel-node-config"], &fixtures, &dir.join("node-storage"), &tls, gateway_port, node_health),
    )
    .unwrap();
    let gateway = Collector::start(
        otelcol,
        "gateway",
        &dir.join("gateway.yaml"),
        gateway_health,
        &collector_env(),
        &dir.join("gateway.log"),
    )
    .unwrap();
    let node =
        Collector::start(otelcol, "node", &dir.join("node.yaml"), node_health, &collector_env(), &dir.join("node.log"))
            .unwrap();
    Replay {
        inventory,
        events,
        vuln,
        fixtures,
        setup_output: String::from_utf8_lossy(&setup.stdout).into_owned(),
        gateway_port,
        gateway_host: host,
        tls,
        _gateway: gateway,
        _node: node,
    }
}

/// Events in a fixture file, counted the way the pipeline must: CRI
/// partial lines (`P`) joined with what follows, non-JSON lines dropped.
pub fn count_events(path: &Path) -> usize {
    let text = std::fs::read_to_string(path).unwrap();
    if !path.to_string_lossy().contains("/var/log/pods/") {
        return text.lines().filter(|l| l.trim_start().starts_with('{')).count();
    }
    let mut count = 0;
    let mut message = String::new();
    for line in text.lines() {
        let mut parts = line.splitn(4, ' ');
        let (_, _, tag, content) = (parts.next(), parts.next(), parts.next().unwrap_or(""), parts.next().unwrap_or(""));
        message.push_str(content);
        if tag == "F" {
            if message.trim_start().starts_with('{') {
                count += 1;
            }
            message.clear();
        }
    }
    count
}

pub fn files_under(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files_under(&path, out);
        } else if path.extension().is_some_and(|e| e == "log") {
            out.push(path);
        }
    }
}

/// Expected documents per tool, from the fixtures themselves.
pub fn expected_per_tool(fixtures: &Path) -> BTreeMap<&'static str, usize> {
    let mut files = vec![];
    files_under(fixtures, &mut files);
    let mut out = BTreeMap::new();
    for f in files {
        let p = f.to_string_lossy();
        let tool = if p.contains("_falco-") {
            "falco"
        } else if p.contains("_tetragon-") {
            "tetragon"
        } else if p.contains("/osquery/") {
            "osquery"
        } else {
            continue;
        };
        *out.entry(tool).or_default() += count_events(&f);
    }
    out
}

/// Run a client or `secop`; its stdout, or a panic with what it said.
pub fn run_ok(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}
