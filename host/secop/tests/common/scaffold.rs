//! `secop feature new` projects built as their README says, outside this
//! repository: shared by the author's-kit tests (tests/scaffold.rs) and
//! the control-plane test that pushes, signs and runs them (tests/e2e.rs).
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub fn secop(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_secop")).args(args).output().expect("run secop")
}

pub fn ok(what: &str, out: Output) -> String {
    assert!(
        out.status.success(),
        "{what}: {}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A directory outside the repository (the target dir's tmp), empty.
pub fn project_dir(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("scaffold-{name}"));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// `secop feature new ID --lang rust` in `dir`, built with the README's
/// command; the component. Its target dir is kept between runs (outside
/// the project, which each run writes afresh).
pub fn build_rust(id: &str, dir: &Path) -> PathBuf {
    ok("secop feature new", secop(&["feature", "new", id, "--lang", "rust", "--dir", path(dir)]));
    let target = Path::new(env!("CARGO_TARGET_TMPDIR")).join("scaffold-rust-target");
    let build = Command::new("cargo")
        .args(["build", "--release", "--target", "wasm32-wasip2"])
        .current_dir(dir)
        .env("CARGO_TARGET_DIR", &target)
        .env_remove("RUSTFLAGS")
        .output()
        .unwrap();
    ok("cargo build of the scaffolded feature", build);
    target.join(format!("wasm32-wasip2/release/feature_{id}.wasm"))
}

/// `secop feature new ID --lang python` in `dir`, built with the README's
/// command (componentize-py, which `cargo xtask test` installs and passes
/// in SECOP_COMPONENTIZE_PY); the component.
pub fn build_python(id: &str, dir: &Path) -> PathBuf {
    let componentize_py = std::env::var_os("SECOP_COMPONENTIZE_PY").map(PathBuf::from).unwrap_or_else(|| {
        panic!("SECOP_COMPONENTIZE_PY is not set: run `cargo xtask test` (it installs componentize-py)")
    });
    ok("secop feature new", secop(&["feature", "new", id, "--lang", "python", "--dir", path(dir)]));
    let output = format!("{id}.wasm");
    let build = Command::new(componentize_py)
        .args(["-d", "wit", "-w", "feature", "componentize", "app", "-o", &output])
        .current_dir(dir)
        .output()
        .unwrap();
    ok("componentize-py of the scaffolded feature", build);
    dir.join(output)
}

/// Every rule of the conformance table passes for `module`.
pub fn passes_conformance(module: &Path) {
    let table = ok("secop feature test --conformance", secop(&["feature", "test", "--conformance", path(module)]));
    assert!(!table.contains("FAIL"), "{table}");
    assert_eq!(table.matches("PASS").count(), 7, "{table}");
}
