//! Detection content held against the configuration that ships: the sample
//! agent rendered offline (`secop render`, embedded modules) must load
//! every Falco rule and TracingPolicy that the replay fixtures
//! (test/fixtures/replay) contain and that the CTEM detection matrix
//! (host/elastic/src/ctem.rs, `SCENARIOS`) cites. A fixture alert of a rule
//! the rendered configuration does not load would show a detection that a
//! real cluster never raises.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use secop_elastic::ctem::{SCENARIOS, Signal};
use serde_json::Value;

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").join(path)
}

/// The objects `secop render` writes for the full sample.
fn rendered_sample() -> Vec<Value> {
    let out = Command::new(env!("CARGO_BIN_EXE_secop"))
        .args(["render", "-f", repo("deploy/samples/securityagent_full.yaml").to_str().unwrap(), "-o", "json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "secop render: {}", String::from_utf8_lossy(&out.stderr));
    let rendered: Value = serde_json::from_slice(&out.stdout).unwrap();
    rendered["objects"].as_array().unwrap_or_else(|| panic!("render -o json has `objects`: {rendered}")).clone()
}

fn object<'a>(objects: &'a [Value], kind: &str, name: &str) -> &'a Value {
    objects
        .iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("{kind}/{name} is rendered"))
}

/// What the rendered Falco loads: the image's stable rules (the pinned,
/// sourced name list of features-wasm/falco/assets/falco_rules.names), then
/// every rules file of the `falco-rules` ConfigMap in the order Falco reads
/// `rules.d` (by file name), minus what falco.yaml disables by name.
fn loaded_falco_rules(objects: &[Value]) -> BTreeMap<String, Value> {
    let stock = std::fs::read_to_string(repo("features-wasm/falco/assets/falco_rules.names")).unwrap();
    let mut rules: BTreeMap<String, Value> = stock
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| (l.to_string(), Value::Null))
        .collect();
    assert!(rules.contains_key("Terminal shell in container") && rules.len() > 20, "the stock list is read: {rules:?}");
    let files = object(objects, "ConfigMap", "falco-rules")["data"].as_object().unwrap().clone();
    for (file, text) in &files {
        let entries: Vec<Value> =
            serde_yaml::from_str(text.as_str().unwrap()).unwrap_or_else(|e| panic!("rules file {file}: {e}"));
        for entry in entries {
            let Some(name) = entry["rule"].as_str() else { continue };
            if entry["enabled"] == Value::Bool(false) {
                rules.remove(name);
            } else if entry.get("condition").is_some() {
                rules.insert(name.to_string(), entry.clone());
            }
        }
    }
    let falco_yaml: Value =
        serde_yaml::from_str(object(objects, "ConfigMap", "falco-config")["data"]["falco.yaml"].as_str().unwrap())
            .unwrap();
    for selection in falco_yaml["rules"].as_array().into_iter().flatten() {
        if let Some(name) = selection["disable"]["rule"].as_str() {
            rules.remove(name);
        }
    }
    rules
}

/// TracingPolicy name → the kprobe functions it attaches, as Tetragon
/// reports them (`sys_mount` with `syscall: true` is `__x64_sys_mount`).
fn loaded_tracing_policies(objects: &[Value]) -> BTreeMap<String, BTreeSet<String>> {
    objects
        .iter()
        .filter(|o| o["kind"] == "TracingPolicy")
        .map(|o| {
            let calls = o["spec"]["kprobes"]
                .as_array()
                .unwrap()
                .iter()
                .map(|k| {
                    let call = k["call"].as_str().unwrap();
                    if k["syscall"] == true && !call.starts_with("__x64_") {
                        format!("__x64_{call}")
                    } else {
                        call.to_string()
                    }
                })
                .collect();
            (o["metadata"]["name"].as_str().unwrap().to_string(), calls)
        })
        .collect()
}

/// The JSON events of a CRI log (joining `P` partial lines), skipping the
/// tool's non-JSON lines.
fn cri_events(path: &Path) -> Vec<Value> {
    let mut events = vec![];
    let mut partial = String::new();
    for line in std::fs::read_to_string(path).unwrap().lines() {
        let mut fields = line.splitn(4, ' ');
        let (_time, _stream, tag, body) =
            (fields.next(), fields.next(), fields.next().unwrap_or(""), fields.next().unwrap_or(""));
        partial.push_str(body);
        if tag == "P" {
            continue;
        }
        if let Ok(event) = serde_json::from_str::<Value>(&partial) {
            events.push(event);
        }
        partial.clear();
    }
    events
}

fn replay_logs(container: &str) -> Vec<PathBuf> {
    let pods = repo("test/fixtures/replay/var/log/pods");
    let mut out: Vec<PathBuf> = std::fs::read_dir(&pods)
        .unwrap()
        .map(|d| d.unwrap().path().join(container).join("0.log"))
        .filter(|p| p.exists())
        .collect();
    out.sort();
    assert!(!out.is_empty(), "{container} logs under {}", pods.display());
    out
}

#[test]
fn every_rule_in_the_replay_fixtures_is_loaded_by_the_rendered_sample() {
    let objects = rendered_sample();
    let falco = loaded_falco_rules(&objects);
    let policies = loaded_tracing_policies(&objects);
    let mut problems = vec![];

    let mut falco_alerts = 0;
    for log in replay_logs("falco") {
        for alert in cri_events(&log) {
            let rule =
                alert["rule"].as_str().unwrap_or_else(|| panic!("{}: alert without rule: {alert}", log.display()));
            falco_alerts += 1;
            match falco.get(rule) {
                None => problems.push(format!(
                    "{}: Falco alert of rule `{rule}`, which the rendered falco.yaml and rules files do not load",
                    log.display()
                )),
                // A rule whose text is rendered: the fixture's priority and
                // tags are what that rule says.
                Some(definition) if !definition.is_null() => {
                    let priority = definition["priority"].as_str().unwrap().trim().to_lowercase();
                    if alert["priority"].as_str().unwrap().to_lowercase() != priority {
                        problems.push(format!(
                            "{}: `{rule}` alert with priority {}, the rule says {priority}",
                            log.display(),
                            alert["priority"]
                        ));
                    }
                }
                Some(_) => {}
            }
        }
    }
    assert!(falco_alerts >= 5, "the Falco fixtures hold the scenarios' alerts: {falco_alerts}");

    let allowlist =
        object(&objects, "ConfigMap", "tetragon-config")["data"]["export-allowlist"].as_str().unwrap().to_string();
    let mut tetragon_events = 0;
    for log in replay_logs("export-stdout") {
        for event in cri_events(&log) {
            tetragon_events += 1;
            if event.get("process_exec").is_some() && !allowlist.contains("PROCESS_EXEC") {
                problems.push(format!(
                    "{}: process_exec event, but the rendered export-allowlist ({allowlist}) drops exec events",
                    log.display()
                ));
            }
            if let Some(kprobe) = event.get("process_kprobe") {
                let (policy, function) =
                    (kprobe["policy_name"].as_str().unwrap(), kprobe["function_name"].as_str().unwrap());
                match policies.get(policy) {
                    None => problems.push(format!(
                        "{}: kprobe event of TracingPolicy `{policy}`, which is not rendered (rendered: {:?})",
                        log.display(),
                        policies.keys()
                    )),
                    Some(calls) if !calls.contains(function) => problems.push(format!(
                        "{}: `{policy}` event of `{function}`, but the policy attaches {calls:?}",
                        log.display()
                    )),
                    Some(_) => {}
                }
            }
        }
    }
    assert!(tetragon_events >= 10, "the Tetragon fixtures hold the scenarios' events: {tetragon_events}");

    // The matrix `secop ctem-report` checks cites only what is loaded.
    for scenario in SCENARIOS {
        for signal in scenario.signals {
            match signal {
                Signal::FalcoRule(rules) => {
                    for rule in *rules {
                        if !falco.contains_key(*rule) {
                            problems.push(format!(
                                "ctem.rs scenario {}: Falco rule `{rule}` is not loaded by the sample",
                                scenario.name
                            ));
                        }
                    }
                }
                Signal::TetragonPolicy(policy) if !policies.contains_key(*policy) => {
                    problems.push(format!(
                        "ctem.rs scenario {}: TracingPolicy `{policy}` is not rendered for the sample",
                        scenario.name
                    ));
                }
                _ => {}
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// The detection matrix of docs/ctem-mapping-results.md is the one
/// `secop ctem-report` checks, rule for rule.
#[test]
fn the_documented_detection_matrix_is_the_one_the_report_checks() {
    let mut table = String::from("| Scenario | Falco rule | Tetragon | osquery |\n|---|---|---|---|\n");
    for scenario in SCENARIOS {
        let mut cells: BTreeMap<&str, Vec<String>> = BTreeMap::new();
        for signal in scenario.signals {
            let text = match signal {
                Signal::FalcoRule(rules) => rules.iter().map(|r| format!("`{r}`")).collect::<Vec<_>>().join(", "),
                Signal::TetragonExec(binaries) => format!(
                    "`process_exec` of {}",
                    binaries.iter().map(|b| format!("`{b}`")).collect::<Vec<_>>().join(", ")
                ),
                Signal::TetragonHttpClient => "`process_exec` of `curl` or `wget`".to_string(),
                Signal::TetragonPolicy(policy) => format!("kprobe, TracingPolicy `{policy}`"),
                Signal::OsqueryQuery(query) => format!("query `{query}`"),
            };
            cells.entry(signal.tool()).or_default().push(text);
        }
        let cell = |tool: &str| cells.get(tool).map(|c| c.join("; ")).unwrap_or_else(|| "–".to_string());
        table.push_str(&format!(
            "| {} | {} | {} | {} |\n",
            scenario.name,
            cell("falco"),
            cell("tetragon"),
            cell("osquery")
        ));
    }
    let doc = std::fs::read_to_string(repo("docs/ctem-mapping-results.md")).unwrap();
    assert!(
        doc.contains(&table),
        "docs/ctem-mapping-results.md must hold the detection matrix as ctem.rs checks it:\n\n{table}"
    );
}

/// Every scenario `spec.tests` may name is one the report checks, and back.
#[test]
fn the_validation_scenarios_are_the_matrix_scenarios() {
    let ids: Vec<&str> = SCENARIOS.iter().map(|s| s.id).collect();
    assert_eq!(ids, secop_api::VALIDATION_SCENARIOS);
}
