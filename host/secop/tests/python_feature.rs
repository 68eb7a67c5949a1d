//! The Python sample feature (features-wasm/kube_bench, built with
//! componentize-py) through `secop`, as a user would load it: the contract
//! is language-neutral when a Python component renders like a Rust one.
//!
//! `cargo xtask test` builds the component and passes its path in
//! SECOP_PY_FEATURE (`cargo xtask build-py-feature` prints it). Without it
//! these tests fail rather than skip: CI must run them.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

#[path = "common/pipeline.rs"]
mod pipeline;
use pipeline::{render_file, sample, scratch};
use serde_json::{Value, json};

fn module() -> PathBuf {
    let path = std::env::var_os("SECOP_PY_FEATURE").map(PathBuf::from).unwrap_or_else(|| {
        panic!("SECOP_PY_FEATURE is not set: run `cargo xtask test`, or `SECOP_PY_FEATURE=$(cargo xtask build-py-feature) cargo test -p secop --test python_feature`")
    });
    assert!(path.is_file(), "SECOP_PY_FEATURE={} is not a file", path.display());
    path
}

fn secop(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_secop"))
        .args(args)
        // The cache render_file uses: the Python component compiles once.
        .env("SECOP_CACHE_DIR", Path::new(env!("CARGO_TARGET_TMPDIR")).join("secop-datapath-cache"))
        .output()
        .expect("run secop")
}

/// The full sample with a kube_bench feature of `config` added, written to
/// a scratch file.
fn agent_with_kube_bench(name: &str, config: Value) -> PathBuf {
    let mut agent = sample("deploy/samples/securityagent_full.yaml");
    agent["spec"]["features"]
        .as_array_mut()
        .unwrap()
        .push(json!({ "name": "kube_bench", "enabled": true, "config": config }));
    let file = scratch(name).join("agent.yaml");
    std::fs::write(&file, serde_yaml::to_string(&agent).unwrap()).unwrap();
    file
}

fn render(name: &str, config: Value) -> Value {
    let module = module();
    render_file(&agent_with_kube_bench(name, config), &["--module", module.to_str().unwrap()])
}

fn object<'a>(rendered: &'a Value, kind: &str, name: &str) -> &'a Value {
    rendered["objects"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name} rendered"))
}

fn collector_config(rendered: &Value, config_map: &str) -> serde_yaml::Value {
    serde_yaml::from_str(object(rendered, "ConfigMap", config_map)["data"]["config.yaml"].as_str().unwrap()).unwrap()
}

#[test]
fn inspect_shows_the_python_feature_and_its_contract() {
    let out = secop(&["feature", "inspect", module().to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let info: serde_yaml::Value = serde_yaml::from_slice(&out.stdout).unwrap();
    assert_eq!(info["id"].as_str(), Some("kube_bench"));
    assert_eq!(info["priority"].as_u64(), Some(200));
    assert_eq!(info["contractVersion"].as_str(), Some(secop_feature_contract()));
    assert_eq!(info["conditionType"].as_str(), Some("KubeBenchReady"));
}

/// The SDK's contract version, read from its source (the test crate does
/// not depend on the SDK).
fn secop_feature_contract() -> &'static str {
    let model = include_str!("../../../features-wasm/sdk/src/model.rs");
    let line = model.lines().find(|l| l.starts_with("pub const CONTRACT_VERSION")).unwrap();
    line.split('"').nth(1).unwrap()
}

#[test]
fn renders_a_least_privilege_cronjob_and_its_receiver() {
    let rendered =
        render("py-kube-bench", json!({ "schedule": "15 4 * * *", "benchmark": "cis-1.10", "colour": "blue" }));

    // The feature as the render header reports it: the unknown field is a
    // warning, not an error.
    let feature = rendered["features"].as_array().unwrap().iter().find(|f| f["name"] == "kube_bench").unwrap();
    assert_eq!(feature["priority"], 200);
    assert_eq!(feature["error"], Value::Null);
    assert_eq!(feature["receiver"], "file_log/kube_bench");
    assert_eq!(feature["diagnostics"], json!(["warning config.colour: unknown field `colour` ignored"]));

    let sa = object(&rendered, "ServiceAccount", "kube-bench");
    assert_eq!(sa["automountServiceAccountToken"], false);
    let cron = object(&rendered, "CronJob", "kube-bench");
    assert_eq!(cron["metadata"]["namespace"], "security-system");
    assert_eq!(cron["spec"]["schedule"], "15 4 * * *");
    assert_eq!(cron["spec"]["concurrencyPolicy"], "Forbid");
    let pod = &cron["spec"]["jobTemplate"]["spec"]["template"]["spec"];
    assert_eq!(pod["hostPID"], true, "kube-bench reads the node's process flags");
    assert_eq!(pod["automountServiceAccountToken"], false);
    assert_eq!(pod["serviceAccountName"], "kube-bench");
    assert!(pod["hostNetwork"].is_null() && pod["hostIPC"].is_null());
    let container = &pod["containers"][0];
    assert_eq!(container["image"], "docker.io/aquasec/kube-bench:v0.15.6");
    assert_eq!(container["command"], json!(["kube-bench"]));
    assert_eq!(container["args"], json!(["run", "--json", "--benchmark", "cis-1.10"]));
    let sc = &container["securityContext"];
    assert_eq!(sc["privileged"], false);
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    assert_eq!(sc["capabilities"], json!({ "drop": ["ALL"] }), "no capability added back");
    assert_eq!(sc["seccompProfile"]["type"], "RuntimeDefault");
    for key in ["requests", "limits"] {
        assert!(
            container["resources"][key]["cpu"].is_string() && container["resources"][key]["memory"].is_string(),
            "resources.{key}"
        );
    }
    // Every host path is mounted, and read-only.
    let volumes = pod["volumes"].as_array().unwrap();
    let host_paths: Vec<&str> =
        volumes.iter().filter(|v| v["hostPath"].is_object()).map(|v| v["name"].as_str().unwrap()).collect();
    assert!(host_paths.contains(&"etc-kubernetes") && host_paths.contains(&"var-lib-kubelet"), "{host_paths:?}");
    let mounts = container["volumeMounts"].as_array().unwrap();
    for name in &host_paths {
        let mount = mounts.iter().find(|m| m["name"] == *name).unwrap_or_else(|| panic!("hostPath {name} not mounted"));
        assert_eq!(mount["readOnly"], true, "hostPath {name} must be read-only");
    }

    // The node collector tails the CronJob pods' CRI logs...
    let node = collector_config(&rendered, "otel-node-config");
    let receiver = &node["receivers"]["file_log/kube_bench"];
    assert_eq!(receiver["include"][0].as_str(), Some("/var/log/pods/security-system_kube-bench-*/kube-bench/*.log"));
    assert_eq!(receiver["operators"][0]["type"].as_str(), Some("container"), "CRI framing");
    let pipeline = &node["service"]["pipelines"]["logs/kube_bench"];
    assert_eq!(pipeline["receivers"][0].as_str(), Some("file_log/kube_bench"));
    // ...and the gateway routes the reports to the vulnerabilities index.
    let gateway = collector_config(&rendered, "otel-gateway-config");
    let routes = gateway["connectors"]["routing/ctem"]["table"].as_sequence().unwrap();
    let route = routes
        .iter()
        .find(|r| r["condition"].as_str().unwrap().contains("\"kube_bench\""))
        .expect("a route for kube_bench");
    assert_eq!(route["pipelines"][0].as_str(), Some("logs/vulnerabilities"));
    let index = gateway["exporters"]
        .as_mapping()
        .unwrap()
        .values()
        .filter_map(|e| e["logs_index"].as_str())
        .find(|i| *i == "security-vuln");
    assert_eq!(index, Some("security-vuln"));
}

#[test]
fn defaults_and_image_from_config() {
    let rendered = render("py-kube-bench-defaults", json!({}));
    let container =
        &object(&rendered, "CronJob", "kube-bench")["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(object(&rendered, "CronJob", "kube-bench")["spec"]["schedule"], "0 3 * * *");
    assert_eq!(
        container["args"],
        json!(["run", "--json"]),
        "no --benchmark: kube-bench picks it from the node's version"
    );

    // An image from the config: the cluster policy must allow it (the
    // default allows only the built-in one), as it would in the operator.
    let file =
        agent_with_kube_bench("py-kube-bench-image", json!({ "image": "registry.example:5000/kube-bench:v0.15.6" }));
    let module = module();
    let out = secop(&["render", "-o", "json", "--module", module.to_str().unwrap(), "-f", file.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success()
            && stderr.contains("images.allowed")
            && stderr.contains("registry.example:5000/kube-bench"),
        "{stderr}"
    );
    let policy = scratch("py-kube-bench-policy").join("policy.yaml");
    std::fs::write(&policy, "images:\n  allowed: [\"registry.example:5000/\"]\n").unwrap();
    let rendered = render_file(&file, &["--module", module.to_str().unwrap(), "--policy", policy.to_str().unwrap()]);
    let container =
        &object(&rendered, "CronJob", "kube-bench")["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(container["image"], "registry.example:5000/kube-bench:v0.15.6");
}

#[test]
fn a_bad_config_names_the_field() {
    let module = module();
    for (config, field) in [
        (json!({ "schedule": "every day" }), "config.schedule"),
        (json!({ "schedule": 5 }), "config.schedule"),
        (json!({ "image": "" }), "config.image"),
        (json!({ "benchmark": "CIS 1.10" }), "config.benchmark"),
    ] {
        let file = agent_with_kube_bench("py-kube-bench-bad", config.clone());
        let out = secop(&["render", "-o", "json", "--module", module.to_str().unwrap(), "-f", file.to_str().unwrap()]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{config}: {stderr}");
        assert!(
            stderr.contains("feature `kube_bench`") && stderr.contains(field),
            "{config}: expected {field} in: {stderr}"
        );
        assert!(out.stdout.is_empty(), "no objects on a bad config");
    }
}

/// The Python feature keeps the contract's rules, as the Rust ones do
/// (`secop feature test --conformance`, issue 17).
#[test]
fn the_python_feature_keeps_the_conformance_rules() {
    let out = secop(&["feature", "test", "--conformance", module().to_str().unwrap()]);
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{table}{}", String::from_utf8_lossy(&out.stderr));
    assert!(table.contains("7 of 7 rules kept"), "{table}");
    assert!(table.contains("KubeBenchReady"), "assess names the feature's condition: {table}");
}
