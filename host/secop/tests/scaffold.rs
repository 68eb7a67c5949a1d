//! `secop feature new` as a feature author uses it, outside this
//! repository: the scaffolded Rust and Python projects build with the
//! command their README gives, pass `secop feature test --conformance`, and
//! render through `secop render --module`.
//!
//! The Rust build needs the wasm32-wasip2 target and crates.io; the Python
//! build the componentize-py that `cargo xtask test` installs and passes in
//! SECOP_COMPONENTIZE_PY. Without it these tests fail rather than skip.

use std::path::Path;

use serde_json::Value;

#[path = "common/scaffold.rs"]
mod scaffold;
use scaffold::{build_python, build_rust, ok, passes_conformance, path, project_dir, secop};

/// `secop render` of an agent with the feature, from the module file: its
/// ConfigMap with the configured message, in the agent's namespace.
fn renders_with(id: &str, module: &Path, dir: &Path) {
    let agent = dir.join("agent.yaml");
    std::fs::write(
        &agent,
        format!(
            "apiVersion: security.example.io/v1alpha1\nkind: SecurityAgent\nmetadata: {{ name: demo, namespace: security-system }}\n\
             spec:\n  features:\n    - name: {id}\n      config: {{ message: from the author }}\n"
        ),
    )
    .unwrap();
    let rendered: Value = serde_json::from_str(&ok(
        "secop render --module",
        secop(&["render", "-o", "json", "-f", path(&agent), "--module", path(module)]),
    ))
    .unwrap();
    let name = format!("{}-settings", id.replace('_', "-"));
    let config_map = rendered["objects"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["kind"] == "ConfigMap" && o["metadata"]["name"] == name.as_str())
        .unwrap_or_else(|| panic!("no ConfigMap {name} in {rendered}"));
    assert_eq!(config_map["metadata"]["namespace"], "security-system");
    assert_eq!(config_map["data"]["message"], "from the author");
}

#[test]
fn a_scaffolded_rust_feature_builds_and_keeps_the_contract() {
    let dir = project_dir("rust");
    let module = build_rust("port_scan", &dir);
    passes_conformance(&module);
    renders_with("port_scan", &module, &dir);
}

#[test]
fn a_scaffolded_python_feature_builds_and_keeps_the_contract() {
    let dir = project_dir("python");
    let module = build_python("audit_trail", &dir);
    passes_conformance(&module);
    renders_with("audit_trail", &module, &dir);
}

#[test]
fn new_refuses_a_bad_name_and_a_directory_in_use() {
    let out = secop(&["feature", "new", "Port-Scan", "--lang", "rust", "--dir", "/nonexistent/never-written"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("feature name `Port-Scan`"));
    let dir = project_dir("in-use");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("keep.txt"), "mine").unwrap();
    let out = secop(&["feature", "new", "port_scan", "--lang", "python", "--dir", path(&dir)]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not empty: nothing written"));
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1, "nothing written next to keep.txt");
}
