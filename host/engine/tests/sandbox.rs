//! A hostile feature in the same render as well-behaved ones: each kind of
//! misbehaviour ends in an error naming the feature and the cause, and the
//! other features still produce their objects.

mod common;

use common::*;
use secop_engine::{FeatureError, Registry};
use secop_runtime::CallError;
use serde_json::json;

fn registry_with_hostile() -> Registry {
    let mut registry = registry();
    let path = secop_builtin::artifact_path("feature_hostile");
    let bytes = std::fs::read(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (built by secop-builtin's build script)", path.display()));
    let id = registry.load("feature_hostile.wasm", &bytes).expect("hostile module loads");
    assert_eq!(id, "hostile");
    registry
}

/// Render the minimal sample plus the hostile feature in `mode`.
fn render_hostile(registry: &Registry, mode: &str, memory_mib: Option<u32>) -> secop_engine::Rendered {
    let mut agent = sample("securityagent_minimal.yaml");
    let mut feature: secop_api::FeatureSpec =
        serde_json::from_value(json!({ "name": "hostile", "config": { "mode": mode } })).unwrap();
    if let Some(mib) = memory_mib {
        feature.limits = Some(secop_api::FeatureLimits { memory_mib: Some(mib), timeout_millis: Some(5000) });
    }
    agent.spec.features.push(feature);
    // The limits these tests need exceed the default policy's ceilings:
    // they test the sandbox, not the policy.
    let mut policy = secop_policy::ClusterPolicy::default();
    policy.limits = secop_policy::LimitCeilings { max_memory_mib: 4096, max_timeout_millis: 60_000 };
    let options = secop_engine::RenderOptions { policy: std::sync::Arc::new(policy), ..Default::default() };
    secop_engine::render(registry, &agent, &options).expect("render")
}

fn hostile_error(rendered: &secop_engine::Rendered) -> (FeatureError, String) {
    let report = rendered.features.iter().find(|f| f.name == "hostile").unwrap();
    let error = report.error.clone().expect("the hostile feature must fail");
    let line = report.error_line().unwrap();
    assert!(line.starts_with("feature `hostile`: "), "{line}");
    // The well-behaved features are untouched.
    for good in ["otel_pipeline", "falco"] {
        let r = rendered.features.iter().find(|f| f.name == good).unwrap();
        assert!(r.error.is_none(), "{good}: {:?}", r.error);
    }
    assert!(find(rendered, "DaemonSet", "falco").is_some());
    assert!(find(rendered, "Deployment", "otel-gateway").is_some());
    assert!(rendered.owners.values().all(|owner| owner != "hostile"), "a failed feature contributes nothing");
    (error, line)
}

#[test]
fn benign_mode_contributes_normally() {
    let registry = registry_with_hostile();
    let rendered = render_hostile(&registry, "benign", None);
    assert!(rendered.failed().next().is_none());
    assert!(find(&rendered, "ConfigMap", "hostile").is_some());
}

#[test]
fn infinite_loop_hits_the_deadline() {
    let (error, line) = hostile_error(&render_hostile(&registry_with_hostile(), "loop-in-configure", None));
    assert!(matches!(error, FeatureError::Sandbox(CallError::Timeout { call: "configure", .. })), "{line}");
    assert!(line.contains("deadline"), "{line}");
}

#[test]
fn unbounded_memory_hits_the_memory_limit() {
    let (error, line) = hostile_error(&render_hostile(&registry_with_hostile(), "unbounded-memory", None));
    assert!(
        matches!(error, FeatureError::Sandbox(CallError::MemoryLimit { call: "contribute", limit_bytes: 67108864 })),
        "{line}"
    );
}

#[test]
fn panic_is_a_trap_with_the_panic_message() {
    let (error, line) = hostile_error(&render_hostile(&registry_with_hostile(), "panic", None));
    assert!(matches!(error, FeatureError::Sandbox(CallError::Trap { call: "contribute", .. })), "{line}");
    assert!(line.contains("hostile feature panics on purpose"), "{line}");
}

#[test]
fn hundred_megabytes_of_output_is_refused() {
    // Within the default 64 MiB the guest cannot even build it...
    let (error, line) = hostile_error(&render_hostile(&registry_with_hostile(), "huge-output", None));
    assert!(matches!(error, FeatureError::Sandbox(CallError::MemoryLimit { .. })), "{line}");
    // ...and with room to build it, the host refuses to take it.
    let (error, line) = hostile_error(&render_hostile(&registry_with_hostile(), "huge-output", Some(1024)));
    assert!(matches!(error, FeatureError::Sandbox(CallError::OutputTooLarge { call: "contribute", .. })), "{line}");
}

#[test]
fn invalid_objects_are_rejected() {
    let (error, line) = hostile_error(&render_hostile(&registry_with_hostile(), "invalid-object", None));
    assert!(matches!(error, FeatureError::Rejected(_)), "{line}");
    assert!(line.contains("object #0") && line.contains("not JSON"), "{line}");
}

#[test]
fn objects_in_other_namespaces_are_rejected() {
    let (_, line) = hostile_error(&render_hostile(&registry_with_hostile(), "other-namespace", None));
    assert!(
        line.contains("ConfigMap escaped") && line.contains("outside the agent namespace `security-system`"),
        "{line}"
    );
}

#[test]
fn binding_cluster_admin_is_rejected() {
    let (_, line) = hostile_error(&render_hostile(&registry_with_hostile(), "cluster-admin-binding", None));
    assert!(line.contains("binds ClusterRole `cluster-admin`"), "{line}");
}

#[test]
fn ungranted_kinds_are_rejected() {
    let (_, line) = hostile_error(&render_hostile(&registry_with_hostile(), "ungranted-secret", None));
    assert!(line.contains("kind Secret is not granted"), "{line}");
}

#[test]
fn a_core_module_is_refused_as_not_a_component() {
    let registry = registry();
    let core_module = b"\0asm\x01\0\0\0";
    let err = Registry::empty(registry.runtime().clone()).load("plain.wasm", core_module).unwrap_err();
    assert!(err.to_string().contains("module `plain.wasm` is a core WebAssembly module, not a component"), "{err}");
}

/// With `keep_last_good`, a failed feature's last *accepted* output stands
/// in for it. An output whose objects were rejected is never remembered as
/// good: the stand-in stays the last output that was accepted.
#[test]
fn only_an_accepted_output_stands_in_for_a_later_failure() {
    let registry = registry_with_hostile();
    let options = secop_engine::RenderOptions { keep_last_good: true, ..Default::default() };
    let render_mode = |mode: &str| {
        let mut agent = sample("securityagent_minimal.yaml");
        agent
            .spec
            .features
            .push(serde_json::from_value(json!({ "name": "hostile", "config": { "mode": mode } })).unwrap());
        let rendered = secop_engine::render(&registry, &agent, &options).expect("render");
        let report = rendered.features.iter().find(|f| f.name == "hostile").cloned().unwrap();
        let names: Vec<String> = rendered
            .objects
            .iter()
            .filter(|(_, o)| o["kind"] == "ConfigMap")
            .map(|(_, o)| o["metadata"]["name"].as_str().unwrap().to_string())
            .collect();
        (report, names)
    };

    // Accepted (ConfigMap `hostile` in the agent's namespace).
    let (benign, objects) = render_mode("benign");
    assert!(benign.error.is_none() && objects.contains(&"hostile".to_string()));

    // Rejected (ConfigMap `escaped` in kube-system).
    let (rejected, _) = render_mode("other-namespace");
    assert!(matches!(rejected.error, Some(FeatureError::Rejected(_))), "{:?}", rejected.error);

    // A trap: the accepted output stands in, not the rejected one.
    let (trapped, objects) = render_mode("panic");
    assert_eq!(trapped.error.as_ref().map(|e| e.reason().as_str()), Some("Trap"));
    assert!(trapped.stale, "a stand-in is used");
    assert!(objects.contains(&"hostile".to_string()) && !objects.contains(&"escaped".to_string()), "{objects:?}");
}

/// The hostile module as an agent's module fetched by `image` (not a
/// built-in), rendered under the cluster policy `policy_yaml`.
fn render_agent_module(
    mode: &str,
    image: &str,
    policy_yaml: &str,
) -> Result<secop_engine::Rendered, secop_engine::RenderError> {
    let registry = registry();
    let bytes = std::fs::read(secop_builtin::artifact_path("feature_hostile")).unwrap();
    let module = registry.runtime().load("feature_hostile.wasm", &bytes).expect("hostile module loads");
    let mut agent = sample("securityagent_minimal.yaml");
    agent.spec.features.push(
        serde_json::from_value(json!({ "name": "hostile", "module": { "image": image }, "config": { "mode": mode } }))
            .unwrap(),
    );
    let policy = secop_policy::ClusterPolicy::from_yaml(policy_yaml).unwrap();
    let mut options = secop_engine::RenderOptions { policy: std::sync::Arc::new(policy), ..Default::default() };
    let entry = secop_engine::Entry::Wasm(module);
    options.modules.insert("hostile".into(), Ok(secop_engine::AgentModule { image: image.into(), entry }));
    secop_engine::render(&registry, &agent, &options)
}

const REGISTRY_SOURCE: &str = "modules:\n  allowed:\n  - image: registry.example.com/secop/\n";

fn policy_error(rendered: &secop_engine::Rendered) -> (&'static str, String) {
    let (error, line) = hostile_error(rendered);
    assert_eq!(error.reason(), "PolicyViolation", "{line}");
    let rule = match &error {
        FeatureError::Rejected(r) => r.rule.unwrap(),
        FeatureError::Policy(v) => v.rule,
        other => panic!("{other:?}"),
    };
    (rule, line)
}

#[test]
fn a_module_from_a_source_the_policy_does_not_name_is_refused_before_it_runs() {
    let err = render_agent_module("benign", "evil.example.com/hostile:1", REGISTRY_SOURCE).err().expect("refused");
    assert_eq!(err.reason(), "PolicyViolation");
    assert!(
        err.to_string().contains("spec.features[2].module.image") && err.to_string().contains("modules.allowed"),
        "{err}"
    );
    assert!(
        render_agent_module("benign", "registry.example.com/secop/hostile:1", REGISTRY_SOURCE)
            .unwrap()
            .failed()
            .next()
            .is_none()
    );
}

#[test]
fn cluster_scoped_rbac_needs_the_sources_grant_built_ins_have_it() {
    let registry = registry_with_hostile();
    assert!(
        render_hostile(&registry, "own-cluster-role", None).failed().next().is_none(),
        "a built-in may bind its own ClusterRole to its own ServiceAccount"
    );
    let rendered =
        render_agent_module("own-cluster-role", "registry.example.com/secop/hostile:1", REGISTRY_SOURCE).unwrap();
    let (rule, line) = policy_error(&rendered);
    assert_eq!(rule, "modules.allowed[].clusterScoped", "{line}");
    assert!(line.contains("ClusterRole hostile-secrets"), "{line}");
    let granted = format!("{REGISTRY_SOURCE}    clusterScoped: true\n");
    assert!(
        render_agent_module("own-cluster-role", "registry.example.com/secop/hostile:1", &granted)
            .unwrap()
            .failed()
            .next()
            .is_none()
    );
}

#[test]
fn host_access_needs_the_sources_grant() {
    let rendered = render_agent_module("host-root", "registry.example.com/secop/hostile:1", REGISTRY_SOURCE).unwrap();
    let (rule, line) = policy_error(&rendered);
    assert_eq!(rule, "modules.allowed[].hostAccess", "{line}");
    assert!(line.contains("DaemonSet hostile-root") && line.contains("hostPath"), "{line}");
    let granted = format!("{REGISTRY_SOURCE}    hostAccess: true\n");
    assert!(
        render_agent_module("host-root", "registry.example.com/secop/hostile:1", &granted)
            .unwrap()
            .failed()
            .next()
            .is_none()
    );
}

#[test]
fn aggregation_foreign_subjects_and_root_globs_are_refused_whatever_the_source() {
    let registry = registry_with_hostile();
    let (error, line) = hostile_error(&render_hostile(&registry, "aggregate-to-admin", None));
    assert_eq!(error.reason(), "ObjectRejected", "{line}");
    assert!(line.contains("aggregate-to-admin"), "{line}");
    let (error, line) = hostile_error(&render_hostile(&registry, "foreign-subject", None));
    assert_eq!(error.reason(), "ObjectRejected", "{line}");
    assert!(line.contains("subjects[0] is ServiceAccount `default` in `kube-system`"), "{line}");
    let (rule, line) = policy_error(&render_hostile(&registry, "root-glob", None));
    assert_eq!(rule, "logRoots", "{line}");
    assert!(line.contains("`/*`"), "{line}");
}

/// Each instance's limit counts all of its memories; the runtime's budget
/// counts all live instances together, and gets back what a dropped
/// instance held.
#[test]
fn the_memory_budget_holds_all_instances_together() {
    let bytes = std::fs::read(secop_builtin::artifact_path("feature_hostile")).unwrap();
    let probe = secop_runtime::Runtime::new(None).unwrap();
    let module = probe.load("hostile", &bytes).unwrap();
    let limits = secop_runtime::Limits::default();
    let first = probe.instantiate(&module, limits, std::sync::Arc::new(secop_runtime::NoCluster)).unwrap();
    let one = probe.memory_budget().used();
    assert!(one > 0, "an instance's initial memory is counted");
    drop(first);
    assert_eq!(probe.memory_budget().used(), 0, "a dropped instance returns its memory");

    // Room for one instance and a half: the second cannot start while the
    // first lives, and can once it is gone.
    let runtime = secop_runtime::Runtime::new(None).unwrap().with_memory_budget(one + one / 2);
    let module = runtime.load("hostile", &bytes).unwrap();
    let first = runtime.instantiate(&module, limits, std::sync::Arc::new(secop_runtime::NoCluster)).unwrap();
    let refused = runtime
        .instantiate(&module, limits, std::sync::Arc::new(secop_runtime::NoCluster))
        .err()
        .expect("over the budget");
    assert!(matches!(refused, CallError::MemoryBudget { call: "instantiate", .. }), "{refused}");
    assert_eq!(refused.reason(), "MemoryBudget");
    drop(first);
    assert!(runtime.instantiate(&module, limits, std::sync::Arc::new(secop_runtime::NoCluster)).is_ok());
}

/// Precompiled modules are native code: with a key, only entries whose tag
/// this key wrote are loaded; a tampered entry or another key's entry is
/// recompiled, never deserialized.
#[test]
fn precompiled_modules_load_only_with_a_verified_tag() {
    use secop_runtime::{LoadSource, Runtime};
    let dir =
        std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("verified-cache-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let bytes = std::fs::read(secop_builtin::artifact_path("feature_hostile")).unwrap();
    let keyed = |key: &[u8]| Runtime::new(Some(dir.clone())).unwrap().with_cache_key(Some(key)).unwrap();

    assert_eq!(keyed(b"k1").load("hostile", &bytes).unwrap().source, LoadSource::Compiled);
    assert_eq!(
        keyed(b"k1").load("hostile", &bytes).unwrap().source,
        LoadSource::Cache,
        "the same key trusts its own entry"
    );
    assert_eq!(
        keyed(b"k2").load("hostile", &bytes).unwrap().source,
        LoadSource::Compiled,
        "another key's entry is not trusted"
    );
    // k2 rewrote the entry; tamper with its bytes (a shared volume, say).
    let entry = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "cwasm"))
        .unwrap();
    let mut native = std::fs::read(&entry).unwrap();
    let middle = native.len() / 2;
    native[middle] ^= 0xff;
    std::fs::write(&entry, &native).unwrap();
    assert_eq!(
        keyed(b"k2").load("hostile", &bytes).unwrap().source,
        LoadSource::Compiled,
        "a tampered entry is recompiled"
    );
    assert_eq!(keyed(b"k2").load("hostile", &bytes).unwrap().source, LoadSource::Cache, "and written again");
    let _ = std::fs::remove_dir_all(&dir);
}
