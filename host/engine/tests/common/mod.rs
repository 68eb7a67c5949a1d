//! Shared fixtures: one runtime per test binary (as in the operator) with a
//! precompiled cache under the target directory, and the samples.
#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use secop_api::SecurityAgent;
use secop_engine::{Registry, RenderOptions, Rendered};
use secop_runtime::Runtime;
use serde_json::Value;

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

pub fn runtime() -> Arc<Runtime> {
    static RUNTIME: OnceLock<Arc<Runtime>> = OnceLock::new();
    RUNTIME
        .get_or_init(|| {
            let cache = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("secop-module-cache");
            Arc::new(Runtime::new(Some(cache)).expect("runtime"))
        })
        .clone()
}

pub fn registry() -> Registry {
    Registry::with_builtins(runtime()).unwrap_or_else(|e| panic!("built-in {}: {}", e.feature, e.error))
}

pub fn sample(name: &str) -> SecurityAgent {
    let path = repo_root().join("deploy/samples").join(name);
    secop_api::parse(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

pub fn render(registry: &Registry, agent: &SecurityAgent) -> Rendered {
    secop_engine::render(registry, agent, &RenderOptions::default()).expect("render")
}

/// The objects as one YAML stream (the golden format).
pub fn yaml_stream(rendered: &Rendered) -> String {
    rendered.objects.iter().map(|(_, v)| format!("---\n{}", serde_yaml::to_string(v).unwrap())).collect()
}

pub fn find<'a>(rendered: &'a Rendered, kind: &str, name: &str) -> Option<&'a Value> {
    rendered.objects.iter().find(|(k, _)| k.kind == kind && k.name == name).map(|(_, v)| v)
}

/// The node collector config, parsed.
pub fn node_config(rendered: &Rendered) -> Value {
    let cm = find(rendered, "ConfigMap", "otel-node-config").expect("node config map");
    serde_yaml::from_str(cm["data"]["config.yaml"].as_str().unwrap()).unwrap()
}

pub fn gateway_config(rendered: &Rendered) -> Value {
    let cm = find(rendered, "ConfigMap", "otel-gateway-config").expect("gateway config map");
    serde_yaml::from_str(cm["data"]["config.yaml"].as_str().unwrap()).unwrap()
}
