//! The desired state of the samples, rendered offline from the embedded
//! components: what is there, in what order, and what toggling removes.

mod common;

use std::collections::BTreeSet;

use common::*;
use secop_engine::objects::ObjectKey;
use serde_json::{Value, json};

const FEATURES: [&str; 5] = ["otel_pipeline", "falco", "tetragon", "osquery", "trivy"];

/// Compare with a checked-in golden file; `UPDATE_GOLDEN=1` rewrites it.
fn assert_golden(name: &str, actual: &str) {
    let path = repo_root().join("test/fixtures/golden").join(name);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (run with UPDATE_GOLDEN=1 to create it)", path.display()));
    if expected != actual {
        let line = expected
            .lines()
            .zip(actual.lines())
            .position(|(a, b)| a != b)
            .unwrap_or(expected.lines().count().min(actual.lines().count()));
        panic!(
            "{} differs from the rendered output at line {} (expected {:?}, got {:?}); rerun with UPDATE_GOLDEN=1 if the change is intended",
            path.display(),
            line + 1,
            expected.lines().nth(line),
            actual.lines().nth(line)
        );
    }
}

#[test]
fn full_sample_renders_every_piece_of_the_plan() {
    let registry = registry();
    let rendered = render(&registry, &sample("securityagent_full.yaml"));
    let errors: Vec<_> = rendered.failed().filter_map(|f| f.error_line()).collect();
    assert!(errors.is_empty(), "{errors:?}");
    for ds in ["falco", "tetragon", "osquery", "otel-node"] {
        assert!(find(&rendered, "DaemonSet", ds).is_some(), "DaemonSet {ds}");
    }
    assert!(find(&rendered, "Deployment", "otel-gateway").is_some());
    assert!(find(&rendered, "Deployment", "trivy-operator").is_some());
    assert!(find(&rendered, "TracingPolicy", "container-escape-monitor").is_some());
    let sync = find(&rendered, "Deployment", "trivy-es-sync").expect("trivy sync Deployment");
    assert!(
        sync["spec"]["template"]["spec"]["containers"][0]["args"]
            .as_array()
            .unwrap()
            .contains(&json!("--resync-seconds=21600")),
        "@every 6h"
    );
    let pack = find(&rendered, "ConfigMap", "osquery-pack-scope-minimal").expect("osquery pack");
    let pack: Value = serde_json::from_str(pack["data"]["pack.conf"].as_str().unwrap()).unwrap();
    assert_eq!(pack["queries"].as_object().unwrap().len(), 8);

    let node = node_config(&rendered);
    let receivers: BTreeSet<&str> = node["receivers"].as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(receivers, BTreeSet::from(["file_log/falco", "file_log/osquery", "file_log/tetragon"]));
    let gateway = gateway_config(&rendered);
    assert_eq!(gateway["exporters"]["elasticsearch/events"]["logs_index"], "security-events");
    assert_eq!(gateway["exporters"]["elasticsearch/inventory"]["logs_index"], "security-inventory");
    assert_eq!(gateway["connectors"]["routing/ctem"]["default_pipelines"][0], "logs/events");

    // The seed plan's override (docs/seed-deviations.md, §2): memory 2Gi on Falco only, tolerations everywhere.
    let limits = |ds: &str| {
        find(&rendered, "DaemonSet", ds).unwrap()["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["memory"].clone()
    };
    assert_eq!(limits("falco"), "2Gi");
    assert_eq!(limits("tetragon"), "512Mi");
    for ds in ["falco", "tetragon", "osquery", "otel-node"] {
        let tolerations = &find(&rendered, "DaemonSet", ds).unwrap()["spec"]["template"]["spec"]["tolerations"];
        assert_eq!(tolerations, &json!([{ "operator": "Exists" }]), "{ds}");
    }

    // Every object carries the host's management labels.
    for (key, object) in &rendered.objects {
        let labels = &object["metadata"]["labels"];
        assert_eq!(labels["app.kubernetes.io/managed-by"], "security-operator", "{key}");
        assert_eq!(labels["security.example.io/owner"], "poc-security", "{key}");
    }
    assert_golden("securityagent_full.yaml", &yaml_stream(&rendered));
}

#[test]
fn minimal_sample_is_locked_too() {
    let rendered = render(&registry(), &sample("securityagent_minimal.yaml"));
    assert!(rendered.failed().next().is_none());
    assert_golden("securityagent_minimal.yaml", &yaml_stream(&rendered));
}

#[test]
fn output_is_stable_and_in_apply_order() {
    let registry = registry();
    let agent = sample("securityagent_full.yaml");
    let first = yaml_stream(&render(&registry, &agent));
    let second = yaml_stream(&render(&registry, &agent));
    assert_eq!(first, second);
    let rendered = render(&registry, &agent);
    let keys: Vec<&ObjectKey> = rendered.objects.iter().map(|(k, _)| k).collect();
    assert!(keys.windows(2).all(|w| (w[0].apply_rank(), w[0]) <= (w[1].apply_rank(), w[1])));
    let position = |kind: &str| keys.iter().position(|k| k.kind == kind).unwrap();
    assert!(position("CustomResourceDefinition") < position("TracingPolicy"));
    assert!(position("ServiceAccount") < position("DaemonSet"));
}

#[test]
fn disabling_a_feature_removes_exactly_its_objects_and_receiver() {
    let registry = registry();
    let full_agent = sample("securityagent_full.yaml");
    let full = render(&registry, &full_agent);
    let full_receivers: BTreeSet<String> =
        node_config(&full)["receivers"].as_object().unwrap().keys().cloned().collect();
    // Objects whose content depends on the set of features: the collector
    // configs and the hash annotation / mounts of the collector workloads.
    let collector_objects = ["otel-node-config", "otel-gateway-config", "otel-node", "otel-gateway"];

    for feature in FEATURES {
        let mut agent = full_agent.clone();
        agent.spec.features.iter_mut().find(|f| f.name == feature).unwrap().enabled = false;
        let rendered = render(&registry, &agent);
        assert!(rendered.failed().next().is_none(), "{feature}");

        let owned: BTreeSet<&ObjectKey> =
            full.owners.iter().filter(|(_, o)| o.as_str() == feature).map(|(k, _)| k).collect();
        assert!(!owned.is_empty(), "{feature} owns objects");
        let expected: BTreeSet<&ObjectKey> =
            full.objects.iter().map(|(k, _)| k).filter(|k| !owned.contains(k)).collect();
        let actual: BTreeSet<&ObjectKey> = rendered.objects.iter().map(|(k, _)| k).collect();
        assert_eq!(actual, expected, "disabling {feature}");

        for (key, object) in &rendered.objects {
            if collector_objects.contains(&key.name.as_str()) {
                continue;
            }
            let before = full.objects.iter().find(|(k, _)| k == key).map(|(_, v)| v).unwrap();
            assert_eq!(object, before, "{key} changed when {feature} was disabled");
        }

        if feature != "otel_pipeline" {
            let receivers: BTreeSet<String> =
                node_config(&rendered)["receivers"].as_object().unwrap().keys().cloned().collect();
            let expected: BTreeSet<String> =
                full_receivers.iter().filter(|r| *r != &format!("file_log/{feature}")).cloned().collect();
            assert_eq!(receivers, expected, "receivers with {feature} disabled");
        } else {
            assert!(rendered.warnings.iter().any(|w| w.contains("no collector feature")), "{:?}", rendered.warnings);
        }
    }
}

#[test]
fn collector_roots_are_mounted_read_only_in_the_node_collector() {
    let rendered = render(&registry(), &sample("securityagent_full.yaml"));
    let node = find(&rendered, "DaemonSet", "otel-node").unwrap();
    let mounts = node["spec"]["template"]["spec"]["containers"][0]["volumeMounts"].as_array().unwrap();
    let osquery =
        mounts.iter().find(|m| m["mountPath"] == "/var/log/security/osquery").expect("osquery log dir mounted");
    assert_eq!(osquery["readOnly"], true);
    assert!(node["spec"]["template"]["metadata"]["annotations"]["security.example.io/config-hash"].is_string());
}

#[test]
fn native_and_wasm_features_render_the_same_state() {
    let agent = sample("securityagent_full.yaml");
    let wasm = yaml_stream(&render(&registry(), &agent));
    let mut native = secop_engine::Registry::empty(runtime());
    native.insert_native(|| Box::new(feature_otel_pipeline::OtelPipeline::default()));
    native.insert_native(|| Box::new(feature_falco::Falco::default()));
    native.insert_native(|| Box::new(feature_tetragon::Tetragon::default()));
    native.insert_native(|| Box::new(feature_osquery::Osquery::default()));
    native.insert_native(|| Box::new(feature_trivy::Trivy::default()));
    native.insert_native(|| Box::new(feature_posture::Posture::default()));
    native.insert_native(|| Box::new(feature_ctem_validation::Validation::default()));
    assert_eq!(yaml_stream(&render(&native, &agent)), wasm);
}

/// A file mounted with `subPath` inside another volume's mount never starts
/// on a real kubelet: it pre-creates nested mount points as directories
/// (the osquery pack did this; host/secop/tests/real_node.rs runs the pods).
#[test]
fn no_subpath_file_is_mounted_inside_another_mount() {
    let registry = registry();
    let rendered = render(&registry, &sample("securityagent_full.yaml"));
    let mut checked = 0;
    for (key, object) in &rendered.objects {
        let template =
            if key.kind == "CronJob" { "/spec/jobTemplate/spec/template/spec" } else { "/spec/template/spec" };
        let Some(pod) = object.pointer(template) else { continue };
        for container in pod["containers"]
            .as_array()
            .into_iter()
            .flatten()
            .chain(pod["initContainers"].as_array().into_iter().flatten())
        {
            let mounts: Vec<&Value> =
                container["volumeMounts"].as_array().map(|m| m.iter().collect()).unwrap_or_default();
            for file in mounts.iter().filter(|m| m.get("subPath").is_some()) {
                let path = file["mountPath"].as_str().unwrap();
                for outer in &mounts {
                    let outer_path = outer["mountPath"].as_str().unwrap().trim_end_matches('/');
                    assert!(
                        !path.starts_with(&format!("{outer_path}/")),
                        "{key}: container {} mounts {path} (subPath) inside {outer_path} ({})",
                        container["name"],
                        outer["name"]
                    );
                }
                checked += 1;
            }
        }
    }
    assert!(checked > 0, "the full sample has subPath mounts to check (falco.yaml)");
}

/// `spec.tests` and the feature it configures agree on the scenario names
/// and the defaults (the feature cannot depend on the API crate).
#[test]
fn the_validation_feature_knows_the_apis_scenarios_and_defaults() {
    assert_eq!(feature_ctem_validation::SCENARIOS, secop_api::VALIDATION_SCENARIOS);
    assert_eq!(feature_ctem_validation::DEFAULT_IMAGE, secop_api::TestSpec::DEFAULT_IMAGE);
    assert_eq!(feature_ctem_validation::ValidationConfig::default().schedule, secop_api::TestSpec::DEFAULT_SCHEDULE);
}
