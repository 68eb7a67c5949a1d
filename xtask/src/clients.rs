//! The clients feature authors sign and publish modules with, for the
//! interoperability tests (host/secop/tests/registry.rs, e2e.rs): cosign
//! and oras from their Go modules, wkg from crates.io, pinned and built
//! once into the test-infra cache like the test servers
//! (`~/.cache/secop-test-infra/<tool>-<version>/bin`). Versions and flags:
//! docs/research/module-signing.md.

use std::fs;
use std::path::PathBuf;
use std::process::Command;

use anyhow::Result;

use crate::cluster::{cache_root, run};

/// cosign v2 keeps the tag-based `.sig` format by default (v3 writes
/// Sigstore bundles to the referrers API, which distribution 2.8 lacks).
pub const COSIGN: &str = "v2.6.5";
pub const ORAS: &str = "v1.3.6";
pub const WKG: &str = "0.16.1";

fn go_install(name: &str, version: &str, package: &str, ldflags: &str) -> Result<PathBuf> {
    let dir = cache_root().join(format!("{name}-{version}"));
    let bin = dir.join(format!("bin/{name}"));
    if bin.exists() {
        return Ok(bin);
    }
    eprintln!("building {name} {version} (once; cached in {})", dir.display());
    fs::create_dir_all(dir.join("bin"))?;
    run(Command::new("go")
        .current_dir(&dir)
        .env("GOBIN", dir.join("bin"))
        .env("CGO_ENABLED", "0")
        .env("GOFLAGS", "-buildvcs=false")
        .args(["install", "-trimpath", "-ldflags", ldflags, &format!("{package}@{version}")]))?;
    Ok(bin)
}

pub fn cosign() -> Result<PathBuf> {
    go_install(
        "cosign",
        COSIGN,
        "github.com/sigstore/cosign/v2/cmd/cosign",
        &format!("-s -w -X sigs.k8s.io/release-utils/version.gitVersion={COSIGN}"),
    )
}

pub fn oras() -> Result<PathBuf> {
    go_install(
        "oras",
        ORAS,
        "oras.land/oras/cmd/oras",
        &format!(
            "-s -w -X oras.land/oras/internal/version.BuildMetadata=secop-test -X oras.land/oras/internal/version.Version={}",
            ORAS.trim_start_matches('v')
        ),
    )
}

pub fn wkg() -> Result<PathBuf> {
    let dir = cache_root().join(format!("wkg-{WKG}"));
    let bin = dir.join("bin/wkg");
    if bin.exists() {
        return Ok(bin);
    }
    eprintln!("building wkg {WKG} (once; cached in {})", dir.display());
    // Its own target directory inside the cache: the workspace's must not
    // be touched by another lock file.
    run(Command::new("cargo")
        .env("CARGO_TARGET_DIR", dir.join("target"))
        .args(["install", "wkg", "--version", WKG, "--locked", "--root"])
        .arg(&dir))?;
    let _ = fs::remove_dir_all(dir.join("target"));
    Ok(bin)
}
