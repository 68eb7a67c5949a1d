//! The Python sample feature (`features-wasm/kube_bench`) as a component,
//! built with componentize-py from PyPI.
//!
//! componentize-py is installed once into a venv in the test-infra cache
//! (`~/.cache/secop-test-infra/componentize-py-<version>/venv`), with the
//! machine's `python3 -m venv` and pip: no other Python tooling is needed.
//! The component is cached in `target/py-features/` under a hash of the
//! Python sources, `wit/` and the componentize-py version, so an unchanged
//! feature costs nothing (a build takes ~20 s: componentize-py snapshots an
//! initialized CPython into the component).
//!
//! No generated bindings are checked in or written: `componentize-py
//! componentize` generates the real `wit_world` bindings on the fly. (Its
//! `bindings` subcommand only writes stubs for editors; see
//! docs/feature-authoring-python.md.)

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};

use crate::cluster::{cache_root, run};

/// componentize-py from PyPI. A new version means a new venv and a rebuild.
pub const COMPONENTIZE_PY: &str = "0.25.1";
/// The feature's directory and its app module (`app.py`).
const FEATURE_DIR: &str = "features-wasm/kube_bench";
const APP_MODULE: &str = "app";
const WORLD: &str = "feature";

/// The componentize-py executable, installed on first use.
pub fn componentize_py() -> Result<PathBuf> {
    let dir = cache_root().join(format!("componentize-py-{COMPONENTIZE_PY}"));
    let venv = dir.join("venv");
    let exe = venv.join("bin/componentize-py");
    let wanted = format!("componentize-py {COMPONENTIZE_PY}");
    let installed = |exe: &Path| {
        Command::new(exe).arg("--version").output().is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == wanted)
    };
    if installed(&exe) {
        return Ok(exe);
    }
    eprintln!("installing componentize-py {COMPONENTIZE_PY} from PyPI into {} (once)", venv.display());
    // A half-made venv from an interrupted run is not worth repairing.
    let _ = fs::remove_dir_all(&venv);
    fs::create_dir_all(&dir)?;
    let mut cmd = Command::new("python3");
    cmd.args(["-m", "venv"]).arg(&venv);
    run(&mut cmd).context(
        "creating a Python venv (needs python3 with the venv module and ensurepip; on Debian: apt-get install python3-venv)",
    )?;
    let mut cmd = Command::new(venv.join("bin/python"));
    cmd.args(["-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-input"])
        .arg(format!("componentize-py=={COMPONENTIZE_PY}"))
        // stdout is this task's answer (the component's path).
        .stdout(Stdio::from(std::io::stderr()));
    run(&mut cmd).context("pip install componentize-py")?;
    if !installed(&exe) {
        bail!("{} does not report version {COMPONENTIZE_PY} after installation", exe.display());
    }
    Ok(exe)
}

/// Every file under `dir` (sorted, relative to `base`), skipping bytecode
/// caches and dotfiles.
fn files(base: &Path, dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    let mut entries: Vec<_> =
        fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))?.collect::<Result<_, _>>()?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with('.') || name == "__pycache__" {
            continue;
        }
        let path = entry.path();
        if entry.file_type()?.is_dir() {
            files(base, &path, out)?;
        } else {
            out.push(path.strip_prefix(base)?.to_path_buf());
        }
    }
    Ok(())
}

/// FNV-1a over names and contents: a cache key, not a security hash (the
/// same function as the SDK's `content_hash`).
fn fnv1a(hash: &mut u64, bytes: &[u8]) {
    for byte in bytes.iter().chain(std::iter::once(&0u8)) {
        *hash ^= u64::from(*byte);
        *hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
}

/// The `"x.y.z"` after `marker` on a line of `text`.
fn quoted_after<'a>(text: &'a str, marker: &str) -> Option<&'a str> {
    let rest = &text[text.find(marker)? + marker.len()..];
    let rest = rest.trim_start().strip_prefix('"')?;
    Some(&rest[..rest.find('"')?])
}

/// The Python module cannot import the Rust SDK's constant, so check here
/// that both declare the same contract.
fn check_contract_version(root: &Path) -> Result<()> {
    let sdk = fs::read_to_string(root.join("features-wasm/sdk/src/model.rs"))?;
    let app = fs::read_to_string(root.join(FEATURE_DIR).join(format!("{APP_MODULE}.py")))?;
    let sdk_version = quoted_after(&sdk, "pub const CONTRACT_VERSION: &str =")
        .context("no CONTRACT_VERSION in the SDK's model.rs")?;
    let app_version =
        quoted_after(&app, "\nCONTRACT_VERSION =").context("no CONTRACT_VERSION in the Python feature")?;
    if sdk_version != app_version {
        bail!(
            "{FEATURE_DIR}/{APP_MODULE}.py declares contract {app_version}, the SDK {sdk_version}: update CONTRACT_VERSION"
        );
    }
    Ok(())
}

/// Build (or reuse) the kube_bench component; returns its path.
pub fn build(root: &Path) -> Result<PathBuf> {
    check_contract_version(root)?;
    let feature = root.join(FEATURE_DIR);
    let wit = root.join("wit");
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    fnv1a(&mut hash, COMPONENTIZE_PY.as_bytes());
    for base in [&feature, &wit] {
        let mut listed = vec![];
        files(base, base, &mut listed)?;
        for rel in listed {
            fnv1a(&mut hash, rel.to_string_lossy().as_bytes());
            fnv1a(&mut hash, &fs::read(base.join(&rel))?);
        }
    }
    let out_dir = root.join("target/py-features");
    let out = out_dir.join(format!("kube_bench-{hash:016x}.wasm"));
    if out.exists() {
        return Ok(out);
    }
    let exe = componentize_py()?;
    // Build from a copy, so componentize-py's __pycache__ stays out of the
    // source tree.
    let stage = out_dir.join(format!("src-{hash:016x}"));
    let _ = fs::remove_dir_all(&stage);
    let mut listed = vec![];
    files(&feature, &feature, &mut listed)?;
    for rel in &listed {
        let to = stage.join(rel);
        fs::create_dir_all(to.parent().expect("a file has a parent"))?;
        fs::copy(feature.join(rel), &to)?;
    }
    eprintln!("building {FEATURE_DIR} with componentize-py {COMPONENTIZE_PY}");
    let partial = out.with_extension("wasm.partial");
    let mut cmd = Command::new(&exe);
    cmd.current_dir(&stage)
        .arg("-d")
        .arg(&wit)
        .args(["-w", WORLD, "--quiet", "componentize", "-p"])
        .arg(&stage)
        .arg(APP_MODULE)
        .arg("-o")
        .arg(&partial)
        // Only the staged sources, not whatever venv the caller has active.
        .env_remove("VIRTUAL_ENV")
        .stdout(Stdio::from(std::io::stderr()));
    run(&mut cmd)?;
    fs::rename(&partial, &out)?;
    let _ = fs::remove_dir_all(&stage);
    // Components of older sources are dead weight (18 MB each).
    for entry in fs::read_dir(&out_dir)?.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with("kube_bench-") && name.ends_with(".wasm") && entry.path() != out {
            let _ = fs::remove_file(entry.path());
        }
    }
    Ok(out)
}
