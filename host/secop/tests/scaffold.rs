//! `secop feature new` as a feature author uses it, outside this
//! repository: the scaffolded Rust and Python projects build with the
//! command their README gives, pass `secop feature test --conformance`, and
//! render through `secop render --module`.
//!
//! The Rust build needs the wasm32-wasip2 target and crates.io; the Python
//! build the componentize-py that `cargo xtask test` installs and passes in
//! SECOP_COMPONENTIZE_PY. Without it these tests fail rather than skip.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

/// A directory outside the repository (the target dir's tmp), empty.
fn project_dir(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("scaffold-{name}"));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn secop(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_secop")).args(args).output().expect("run secop")
}

fn ok(what: &str, out: Output) -> String {
    assert!(
        out.status.success(),
        "{what}: {}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Every rule of the conformance table passes for `module`.
fn passes_conformance(module: &Path) {
    let table = ok("secop feature test --conformance", secop(&["feature", "test", "--conformance", path(module)]));
    assert!(!table.contains("FAIL"), "{table}");
    assert_eq!(table.matches("PASS").count(), 7, "{table}");
}

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

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn a_scaffolded_rust_feature_builds_and_keeps_the_contract() {
    let dir = project_dir("rust");
    ok("secop feature new", secop(&["feature", "new", "port_scan", "--lang", "rust", "--dir", path(&dir)]));
    // The README's build command, in the project; its own target dir kept
    // between runs (outside the project, which each run writes afresh).
    let target = Path::new(env!("CARGO_TARGET_TMPDIR")).join("scaffold-rust-target");
    let build = Command::new("cargo")
        .args(["build", "--release", "--target", "wasm32-wasip2"])
        .current_dir(&dir)
        .env("CARGO_TARGET_DIR", &target)
        .env_remove("RUSTFLAGS")
        .output()
        .unwrap();
    ok("cargo build of the scaffolded feature", build);
    let module = target.join("wasm32-wasip2/release/feature_port_scan.wasm");
    passes_conformance(&module);
    renders_with("port_scan", &module, &dir);
}

#[test]
fn a_scaffolded_python_feature_builds_and_keeps_the_contract() {
    let componentize_py = std::env::var_os("SECOP_COMPONENTIZE_PY").map(PathBuf::from).unwrap_or_else(|| {
        panic!("SECOP_COMPONENTIZE_PY is not set: run `cargo xtask test` (it installs componentize-py)")
    });
    let dir = project_dir("python");
    ok("secop feature new", secop(&["feature", "new", "audit_trail", "--lang", "python", "--dir", path(&dir)]));
    // The README's build command, in the project.
    let build = Command::new(componentize_py)
        .args(["-d", "wit", "-w", "feature", "componentize", "app", "-o", "audit_trail.wasm"])
        .current_dir(&dir)
        .output()
        .unwrap();
    ok("componentize-py of the scaffolded feature", build);
    let module = dir.join("audit_trail.wasm");
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
