//! Builds the feature components from `features-wasm/` (and the hostile
//! test module) for wasm32-wasip2, then embeds the five built-in features.
//!
//! The nested cargo uses its own target directory, so it never waits on the
//! lock of the outer build. `SECOP_PREBUILT_MODULES=<dir>` skips the build
//! and embeds `feature_*.wasm` from that directory instead (release images).

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

/// (feature id, cargo package, artifact stem). Order is irrelevant: the
/// host orders features by the priority each module declares.
const BUILTIN: &[(&str, &str, &str)] = &[
    ("otel_pipeline", "feature-otel-pipeline", "feature_otel_pipeline"),
    ("falco", "feature-falco", "feature_falco"),
    ("tetragon", "feature-tetragon", "feature_tetragon"),
    ("osquery", "feature-osquery", "feature_osquery"),
    ("trivy", "feature-trivy", "feature_trivy"),
    ("posture", "feature-posture", "feature_posture"),
    ("ctem_validation", "feature-ctem-validation", "feature_ctem_validation"),
];
/// (cargo package, artifact stem) built for the sandbox and hot-swap
/// tests, never embedded.
const TEST_ONLY: &[(&str, &str)] = &[
    ("feature-hostile", "feature_hostile"),
    ("feature-falco-next", "feature_falco_next"),
    ("feature-falco-broken", "feature_falco_broken"),
    ("feature-falco-greedy", "feature_falco_greedy"),
];

fn main() {
    let manifest_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap());
    let root = manifest_dir.join("../..").canonicalize().expect("workspace root");
    for watched in ["features-wasm", "wit", "test/modules", "Cargo.lock"] {
        println!("cargo:rerun-if-changed={}", root.join(watched).display());
    }
    println!("cargo:rerun-if-env-changed=SECOP_PREBUILT_MODULES");

    let artifacts = match env::var_os("SECOP_PREBUILT_MODULES") {
        Some(dir) => PathBuf::from(dir),
        None => build_components(&root),
    };

    let mut generated = String::from(
        "/// (feature id, component bytes), built from features-wasm/.\npub static MODULES: &[(&str, &[u8])] = &[\n",
    );
    for (id, _, stem) in BUILTIN {
        let path = artifacts.join(format!("{stem}.wasm"));
        if !path.exists() {
            panic!("built-in feature component missing: {}", path.display());
        }
        generated.push_str(&format!("    ({id:?}, include_bytes!({:?})),\n", path.display().to_string()));
    }
    generated.push_str("];\n");
    generated.push_str(&format!(
        "/// Where the components (including test-only ones) were built.\npub const ARTIFACT_DIR: &str = {:?};\n",
        artifacts.display().to_string()
    ));
    let out = PathBuf::from(env::var("OUT_DIR").unwrap()).join("modules.rs");
    std::fs::write(out, generated).expect("write modules.rs");
}

fn build_components(root: &Path) -> PathBuf {
    let built_in = build_wasm(root, "target/wasm-features", BUILTIN.iter().map(|(_, package, _)| *package));
    // The test modules build on their own: test/modules/falco_next depends
    // on the built-in falco crate with its `wrapped` feature (which turns
    // its export off), and features are unified within one cargo
    // invocation, so built together the embedded falco would export nothing.
    let test_only = build_wasm(root, "target/wasm-test-modules", TEST_ONLY.iter().map(|(package, _)| *package));
    for (_, stem) in TEST_ONLY {
        let file = format!("{stem}.wasm");
        std::fs::copy(test_only.join(&file), built_in.join(&file)).expect("copy a test module beside the built-ins");
    }
    built_in
}

/// `cargo build` of `packages` for wasm32-wasip2 into `target_dir` (under
/// the workspace root); returns where the components are.
fn build_wasm<'a>(root: &Path, target_dir: &str, packages: impl Iterator<Item = &'a str>) -> PathBuf {
    let target_dir = root.join(target_dir);
    let cargo = env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(root)
        .args(["build", "--profile", "wasm", "--target", "wasm32-wasip2", "--lib"])
        .env("CARGO_TARGET_DIR", &target_dir)
        // Flags and wrappers meant for the host build must not leak into
        // the wasm build (cargo exports them to build scripts).
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("RUSTFLAGS")
        .env_remove("RUSTC_WORKSPACE_WRAPPER")
        .env_remove("RUSTC_WRAPPER")
        .env_remove("CARGO_BUILD_TARGET")
        .env_remove("CARGO_PRIMARY_PACKAGE");
    for package in packages {
        cmd.args(["-p", package]);
    }
    let status = cmd.status().expect("run cargo to build the feature components");
    if !status.success() {
        panic!(
            "building the feature components for wasm32-wasip2 failed (is the target installed? \
             `rustup target add wasm32-wasip2`)"
        );
    }
    target_dir.join("wasm32-wasip2/wasm")
}
