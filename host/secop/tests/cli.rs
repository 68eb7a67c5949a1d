//! `secop` as a user runs it: the README's main command, and bad input that
//! must fail with a message naming the field or module.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").join(path)
}

fn secop(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_secop"))
        .args(args)
        .env("SECOP_CACHE_DIR", Path::new(env!("CARGO_TARGET_TMPDIR")).join("secop-cli-cache"))
        .current_dir(repo(""))
        .output()
        .expect("run secop")
}

fn render_bad(fixture: &str) -> (i32, String, String) {
    let path = repo("test/fixtures/bad").join(fixture);
    let out = secop(&["render", "-f", path.to_str().unwrap()]);
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

#[test]
fn readme_main_command_renders_the_full_sample() {
    let out = secop(&["render", "-f", "deploy/samples/securityagent_full.yaml"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let docs: Vec<serde_yaml::Value> = serde_yaml::Deserializer::from_str(&stdout)
        .map(|d| serde::Deserialize::deserialize(d).unwrap())
        .filter(|d: &serde_yaml::Value| !d.is_null())
        .collect();
    let has = |kind: &str, name: &str| {
        docs.iter().any(|d| d["kind"].as_str() == Some(kind) && d["metadata"]["name"].as_str() == Some(name))
    };
    for (kind, name) in [
        ("DaemonSet", "falco"),
        ("DaemonSet", "tetragon"),
        ("DaemonSet", "osquery"),
        ("DaemonSet", "otel-node"),
        ("Deployment", "otel-gateway"),
        ("TracingPolicy", "container-escape-monitor"),
        ("ConfigMap", "osquery-pack-scope-minimal"),
        ("ConfigMap", "otel-node-config"),
        ("ConfigMap", "otel-gateway-config"),
        ("Deployment", "trivy-es-sync"),
        ("TracingPolicy", "cron-persistence-monitor"),
    ] {
        assert!(has(kind, name), "missing {kind} {name}");
    }
    assert!(docs.len() > 40, "{} documents", docs.len());
}

#[test]
fn json_output_and_feature_filter() {
    let out = secop(&["render", "-f", "deploy/samples/securityagent_full.yaml", "-o", "json", "--feature", "tetragon"]);
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["features"].as_array().unwrap().len(), 1);
    let objects = v["objects"].as_array().unwrap();
    assert!(objects.iter().all(|o| o["metadata"]["labels"]["security.example.io/feature"] == "tetragon"));
    assert!(objects.iter().any(|o| o["kind"] == "TracingPolicy"));
}

#[test]
fn wrong_type_in_a_feature_config_names_the_feature_and_field() {
    let (code, stdout, stderr) = render_bad("wrong-type-in-feature-config.yaml");
    assert_eq!(code, 1);
    assert!(stdout.is_empty(), "nothing is printed for a failed render");
    assert!(
        stderr.contains("feature `osquery`: invalid config: config.intervalSeconds: invalid type: string \"x\""),
        "{stderr}"
    );
}

#[test]
fn unknown_feature_is_named_with_the_alternatives() {
    let (code, _, stderr) = render_bad("unknown-feature.yaml");
    assert_eq!(code, 1);
    assert!(
        stderr.contains(
            "feature `falcon`: unknown feature (available: falco, osquery, otel_pipeline, posture, tetragon, trivy)"
        ),
        "{stderr}"
    );
}

#[test]
fn duplicate_feature_is_named() {
    let (code, _, stderr) = render_bad("duplicate-feature.yaml");
    assert_eq!(code, 1);
    assert!(stderr.contains("spec.features[2].name: duplicate feature `falco` (also spec.features[0])"), "{stderr}");
}

#[test]
fn negative_replicas_are_named() {
    let (code, _, stderr) = render_bad("negative-replicas.yaml");
    assert_eq!(code, 1);
    assert!(stderr.contains("spec.override.otelGateway.replicas: must be >= 0, got -2"), "{stderr}");
}

#[test]
fn wrong_type_in_the_spec_is_named() {
    let (code, _, stderr) = render_bad("wrong-type-in-spec.yaml");
    assert_eq!(code, 1);
    assert!(stderr.contains("spec.features[0].enabled: invalid type"), "{stderr}");
}

#[test]
fn unknown_validation_scenario_is_named() {
    let (code, stdout, stderr) = render_bad("unknown-validation-scenario.yaml");
    assert_eq!(code, 1);
    assert!(stdout.is_empty(), "nothing is printed for a failed render");
    assert!(stderr.contains("spec.tests.scenarios[1]: unknown scenario `validate-ransomware`"), "{stderr}");
}

#[test]
fn spec_tests_render_the_validation_runner_and_leave_it_out_when_off() {
    let out = secop(&["render", "-f", "deploy/samples/securityagent_full.yaml", "-o", "json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let cron = v["objects"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["kind"] == "CronJob" && o["metadata"]["name"] == "ctem-validation")
        .expect("the validation CronJob");
    assert_eq!(cron["spec"]["schedule"], "@hourly");
    let args = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["args"].as_array().unwrap();
    assert!(args.contains(&serde_json::json!("--agent=security-system/poc-security")), "{args:?}");
    let off = std::fs::read_to_string(repo("deploy/samples/securityagent_full.yaml"))
        .unwrap()
        .replace("  tests:\n    enabled: true", "  tests:\n    enabled: false");
    let file = Path::new(env!("CARGO_TARGET_TMPDIR")).join("tests-off.yaml");
    std::fs::write(&file, off).unwrap();
    let out = secop(&["render", "-f", file.to_str().unwrap(), "-o", "json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        !v["objects"].as_array().unwrap().iter().any(|o| o["metadata"]["name"] == "ctem-validation"),
        "nothing of the runner with tests off"
    );
}

#[test]
fn unknown_tracing_policy_is_named() {
    let (code, _, stderr) = render_bad("unknown-tracing-policy.yaml");
    assert_eq!(code, 1);
    assert!(
        stderr.contains(
            "feature `tetragon`: invalid config: config.policies[1]: unknown TracingPolicy `kernel-rootkit-hunter`"
        ),
        "{stderr}"
    );
}

#[test]
fn crd_file_in_deploy_is_current() {
    let out = secop(&["crd"]);
    assert!(out.status.success());
    let path = repo("deploy/crds/security.example.io_securityagents.yaml");
    let current = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        current == String::from_utf8_lossy(&out.stdout),
        "{} is stale: regenerate it with `cargo run -p secop -- crd > {}`",
        path.display(),
        path.display()
    );
}

#[test]
fn helm_chart_files_are_current() {
    let out = secop(&["feature-rules"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let chart = repo("deploy/helm/security-operator");
    let rules = std::fs::read_to_string(chart.join("files/feature-rules.json")).unwrap_or_default();
    assert!(
        rules == String::from_utf8_lossy(&out.stdout),
        "files/feature-rules.json is stale: run `cargo xtask chart`"
    );
    let crd = std::fs::read_to_string(chart.join("crds/security.example.io_securityagents.yaml")).unwrap_or_default();
    let generated = std::fs::read_to_string(repo("deploy/crds/security.example.io_securityagents.yaml")).unwrap();
    assert!(crd == generated, "the chart's CRD differs from deploy/crds: run `cargo xtask chart`");
    // The operator role holds every rule the features grant, and no wildcard.
    let parsed: serde_json::Value = serde_json::from_str(&rules).unwrap();
    assert!(parsed["cluster"].as_array().unwrap().len() > 10);
    assert!(!parsed["namespaced"].as_array().unwrap().is_empty());
    assert!(!rules.contains("\"*\""));
    let table = secop(&["feature-rules", "--markdown"]);
    let docs = std::fs::read_to_string(repo("docs/rbac.md")).unwrap_or_default();
    assert!(docs == String::from_utf8_lossy(&table.stdout), "docs/rbac.md is stale: run `cargo xtask chart`");
}

/// `secop posture scan` on the checked-in snapshot: no cluster, no cache.
#[test]
fn posture_scan_works_offline_on_the_checked_in_snapshot() {
    let snapshot = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../test/fixtures/posture/snapshot.json");
    let out = secop(&["posture", "scan", "-f", snapshot.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let table = String::from_utf8_lossy(&out.stdout);
    for line in [
        "5    PSS-B-02  Pod/default/risky-pod",
        "4    PSS-R-04  Pod/default/risky-pod",
        "2    K8S-01    Pod/default/risky-pod",
        "K8S-03    DaemonSet/shop/log-shipper",
    ] {
        assert!(table.contains(line), "`{line}` not in:\n{table}");
    }
    assert!(table.contains("11 findings on 16 assets (17 checks at level baseline)"), "{table}");

    let out = secop(&["posture", "scan", "-f", snapshot.to_str().unwrap(), "-o", "json"]);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let findings = report["findings"].as_array().unwrap();
    assert_eq!(findings.len(), 11);
    let privileged = findings.iter().find(|f| f["rule"]["id"] == "PSS-B-02").unwrap();
    assert_eq!(privileged["evidence"], serde_json::json!({ "securityContext": { "privileged": true } }));
    assert_eq!(privileged["rule"]["mitre"], "T1611");

    // A config file switches the level; a bad one names the field.
    let dir = std::env::temp_dir().join(format!("secop-posture-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("restricted.yaml"), "level: restricted\nexemptions: []\n").unwrap();
    let out = secop(&[
        "posture",
        "scan",
        "-f",
        snapshot.to_str().unwrap(),
        "--config",
        dir.join("restricted.yaml").to_str().unwrap(),
    ]);
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.contains("PSS-R-02") && table.contains("Pod/kube-system/kube-proxy-x1"), "{table}");
    // The check list names what a config may refer to, defaults marked.
    let listed: serde_json::Value =
        serde_json::from_slice(&secop(&["posture", "checks", "-o", "json"]).stdout).unwrap();
    let listed = listed.as_array().unwrap();
    assert_eq!(listed.len(), 23);
    let root = listed.iter().find(|c| c["id"] == "PSS-R-04").unwrap();
    assert_eq!((root["default"].as_bool(), root["pss"].as_str()), (Some(true), Some("restricted")));
    assert_eq!(listed.iter().find(|c| c["id"] == "K8S-02").unwrap()["default"], false);
    std::fs::write(dir.join("bad.yaml"), "disable: [PSS-B-02, NOPE]\n").unwrap();
    let out = secop(&[
        "posture",
        "scan",
        "-f",
        snapshot.to_str().unwrap(),
        "--config",
        dir.join("bad.yaml").to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("disable[1]: unknown check `NOPE`"), "{stderr}");
}

#[test]
fn the_charts_default_policy_is_the_operators_default() {
    let values: serde_yaml::Value =
        serde_yaml::from_str(&std::fs::read_to_string(repo("deploy/helm/security-operator/values.yaml")).unwrap())
            .unwrap();
    let chart = secop_policy::ClusterPolicy::from_yaml(&serde_yaml::to_string(&values["policy"]).unwrap())
        .expect("the chart's policy values parse");
    assert_eq!(
        chart,
        secop_policy::ClusterPolicy::default(),
        "deploy/helm/security-operator/values.yaml `policy` differs from host/policy's defaults"
    );
}

#[test]
fn render_applies_the_cluster_policy_and_names_field_and_rule() {
    let policy = repo("test/fixtures/policy/tenant-a.yaml");
    let policy = policy.to_str().unwrap();
    for (fixture, field, rule) in [
        ("image-override-unlisted.yaml", "spec.override.tetragon.image", "images.allowed"),
        ("memory-above-ceiling.yaml", "spec.features[0].limits.memoryMib", "limits.maxMemoryMib"),
    ] {
        let path = repo("test/fixtures/bad").join(fixture);
        let out = secop(&["render", "-f", path.to_str().unwrap(), "--policy", policy]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{fixture}: {stderr}");
        assert!(out.stdout.is_empty(), "nothing rendered for {fixture}");
        assert!(stderr.contains(field) && stderr.contains(&format!("cluster policy `{rule}`")), "{fixture}: {stderr}");
    }
    // The default policy refuses the same; a mirror the file allows passes.
    let out = secop(&["render", "-f", repo("test/fixtures/bad/image-override-unlisted.yaml").to_str().unwrap()]);
    assert!(!out.status.success());
    let mirrored = std::fs::read_to_string(repo("test/fixtures/bad/image-override-unlisted.yaml"))
        .unwrap()
        .replace("evil.example.com/", "mirror.example.com/cilium/");
    let file = Path::new(env!("CARGO_TARGET_TMPDIR")).join("mirrored-agent.yaml");
    std::fs::write(&file, mirrored).unwrap();
    let out = secop(&["render", "-f", file.to_str().unwrap(), "--policy", policy]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // A broken policy file names its field.
    let broken = Path::new(env!("CARGO_TARGET_TMPDIR")).join("broken-policy.yaml");
    std::fs::write(&broken, "modules:\n  allowed:\n  - image: registry.example.com/\n    hostAcess: true\n").unwrap();
    let out = secop(&["render", "-f", file.to_str().unwrap(), "--policy", broken.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains("modules.allowed[0].hostAcess"), "{stderr}");
}

/// Issue 17, point 5: the built-in modules are first-class, offline.
#[test]
fn feature_list_and_inspect_builtin_work_offline() {
    let out = secop(&["feature", "list", "-o", "json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let listed: Value = serde_json::from_slice(&out.stdout).unwrap();
    let ids: Vec<&str> = listed.as_array().unwrap().iter().map(|m| m["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["otel_pipeline", "falco", "tetragon", "osquery", "trivy", "posture", "ctem_validation"]);
    let falco = listed.as_array().unwrap().iter().find(|m| m["id"] == "falco").unwrap();
    assert!(falco["componentDigest"].as_str().unwrap().starts_with("sha256:"));
    assert!(falco["signature"].as_str().unwrap().starts_with("built in"));

    let table = secop(&["feature", "list"]);
    let table = String::from_utf8_lossy(&table.stdout);
    assert!(table.starts_with("ID "), "{table}");
    assert_eq!(table.lines().count(), 8, "a header and seven modules: {table}");

    for name in ["builtin:falco", "falco"] {
        let out = secop(&["feature", "inspect", name]);
        assert!(out.status.success(), "inspect {name}: {}", String::from_utf8_lossy(&out.stderr));
        let inspected: Value = serde_yaml::from_slice(&out.stdout).unwrap();
        assert_eq!(inspected["id"], "falco");
        assert_eq!(inspected["source"], "builtin:falco");
        assert_eq!(inspected["componentDigest"], falco["componentDigest"], "the digest `list` prints");
        assert_eq!(inspected["manifestDigest"], Value::Null);
    }

    let out = secop(&["feature", "inspect", "builtin:falcon"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("no built-in feature `falcon` (built in: otel_pipeline, falco,"), "{stderr}");
}

/// Issue 17, point 6: the conformance rules, kept by every built-in module
/// and broken by a module that traps in `configure`.
#[test]
fn conformance_passes_for_the_built_ins_and_fails_for_a_broken_module() {
    for id in ["otel_pipeline", "falco", "tetragon", "osquery", "trivy", "posture"] {
        let out = secop(&["feature", "test", "--conformance", &format!("builtin:{id}")]);
        let table = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{id}:\n{table}{}", String::from_utf8_lossy(&out.stderr));
        assert!(table.contains("7 of 7 rules kept"), "{id}:\n{table}");
    }
    let broken = secop_builtin::artifact_path("feature_falco_broken");
    let out = secop(&["feature", "test", "--conformance", broken.to_str().unwrap()]);
    let table = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{table}");
    let row = |rule: &str| table.lines().find(|l| l.starts_with(rule)).unwrap_or_else(|| panic!("{rule}:\n{table}"));
    assert!(row("loads as the operator loads it").contains(" PASS "), "{table}");
    assert!(row("configure, contribute and its objects pass").contains(" FAIL "), "{table}");
    assert!(row("configure, contribute and its objects pass").contains("Trap"), "{table}");
    assert!(row("a config of the wrong type is a config error").contains(" FAIL "), "{table}");
}

/// Issue 17's acceptance: the hostile test module fails `--conformance`,
/// naming the rule each of its misbehaviours breaks and why; the rules
/// that do not depend on rendering still pass, and those that need a
/// render say they did not run.
#[test]
fn the_hostile_module_fails_conformance_naming_the_rules_it_breaks() {
    let hostile = secop_builtin::artifact_path("feature_hostile");
    let dir = std::env::temp_dir().join(format!("secop-hostile-conformance-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let admission = "configure, contribute and its objects pass the operator's admission";
    let limits = "stays inside the default limits";
    for (mode, broken, why) in [
        ("other-namespace", admission, "is in namespace `kube-system`, outside the agent namespace"),
        (
            "cluster-admin-binding",
            admission,
            "binds ClusterRole `cluster-admin`, which this feature did not contribute",
        ),
        ("panic", admission, "Trap: `contribute` trapped"),
        ("huge-output", limits, "exceeded the memory limit"),
    ] {
        let config = dir.join(format!("{mode}.yaml"));
        std::fs::write(&config, format!("mode: {mode}\n")).unwrap();
        let out = secop(&[
            "feature",
            "test",
            "--conformance",
            hostile.to_str().unwrap(),
            "--config",
            config.to_str().unwrap(),
        ]);
        let table = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(1), "{mode}:\n{table}{}", String::from_utf8_lossy(&out.stderr));
        let row =
            |rule: &str| table.lines().find(|l| l.starts_with(rule)).unwrap_or_else(|| panic!("{rule}:\n{table}"));
        assert!(
            row(broken).contains(" FAIL ") && row(broken).contains(why),
            "{mode} breaks `{broken}` ({why}):\n{table}"
        );
        for kept in [
            "loads as the operator loads it",
            "a config of the wrong type is a config error",
            "an unknown config field is reported",
        ] {
            assert!(row(kept).contains(" PASS "), "{mode} keeps `{kept}`:\n{table}");
        }
        for dependent in ["deterministic", "assess returns its readiness condition"] {
            assert!(row(dependent).contains("not run: the feature did not render"), "{mode}:\n{table}");
        }
    }
    // Its benign mode keeps every rule.
    let out = secop(&["feature", "test", "--conformance", hostile.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
}
