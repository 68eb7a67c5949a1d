//! Debian packages the test servers need, installed when we may.
//!
//! `cargo xtask test` is the README's test command and must pass on a fresh
//! Debian machine by itself: as root it installs what is missing with
//! apt-get; as anyone else it stops with one line naming the exact command,
//! never installing silently.

use std::process::Command;

use anyhow::{Result, bail};

/// A command the tests run, and the Debian package that provides it.
pub struct Tool {
    pub command: &'static str,
    pub package: &'static str,
}

pub const fn tool(command: &'static str, package: &'static str) -> Tool {
    Tool { command, package }
}

/// What every test run needs (the control plane, Elasticsearch, the module
/// registry, the Python feature's build).
pub const TEST_TOOLS: &[Tool] = &[
    tool("openssl", "openssl"),
    tool("curl", "curl"),
    tool("unshare", "util-linux"),
    tool("mvn", "maven"),
    tool("docker-registry", "docker-registry"),
    tool("python3", "python3"),
    // The console's browser test (host/secop/tests/e2e.rs): Debian's
    // Chromium and the ChromeDriver of the same version.
    tool("/usr/bin/chromium", "chromium"),
    tool("/usr/bin/chromedriver", "chromium-driver"),
];

/// What the real node needs (only as root, where it runs): container
/// runtime, OCI runtime, CNI plugins, the Service proxy's iptables, the
/// scenario image's busybox, skopeo to push the test images, and musl-gcc
/// for the operator image's static build (ring compiles C).
pub const NODE_TOOLS: &[Tool] = &[
    tool("containerd", "containerd"),
    tool("runc", "runc"),
    tool("/usr/lib/cni/bridge", "containernetworking-plugins"),
    tool("iptables", "iptables"),
    tool("conntrack", "conntrack"),
    tool("/bin/busybox", "busybox-static"),
    tool("skopeo", "skopeo"),
    tool("musl-gcc", "musl-tools"),
];

/// The tools of this machine's test run: the node's too where it can run.
pub fn for_this_machine() -> Vec<&'static Tool> {
    let mut tools: Vec<&Tool> = TEST_TOOLS.iter().collect();
    if crate::node::supported() {
        tools.extend(NODE_TOOLS);
    }
    tools
}

fn present(command: &str) -> bool {
    if command.starts_with('/') {
        return std::path::Path::new(command).exists();
    }
    Command::new("sh")
        .args(["-c", &format!("command -v {command}")])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

pub fn is_root() -> bool {
    Command::new("id").arg("-u").output().map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0").unwrap_or(false)
}

/// Packages of `tools` that are missing, plus the JDK and python3-venv
/// checks that a command lookup cannot answer.
fn missing(tools: &[&Tool]) -> Vec<&'static str> {
    let mut packages: Vec<&'static str> = tools.iter().filter(|t| !present(t.command)).map(|t| t.package).collect();
    // Elasticsearch 8.19 runs on JDK 17 or newer.
    let java = Command::new("java")
        .arg("-version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stderr).into_owned())
        .unwrap_or_default();
    let jdk_ok =
        java.split('"').nth(1).and_then(|v| v.split('.').next()?.parse::<u32>().ok()).is_some_and(|major| major >= 17);
    if !jdk_ok {
        packages.push("openjdk-17-jdk-headless");
    }
    // componentize-py runs in a venv.
    let venv = Command::new("python3")
        .args(["-c", "import venv, ensurepip"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !venv {
        packages.push("python3-venv");
    }
    packages.sort();
    packages.dedup();
    packages
}

/// Install what is missing (as root), or fail with the command to run.
pub fn ensure(tools: &[&Tool]) -> Result<()> {
    let packages = missing(tools);
    if packages.is_empty() {
        return Ok(());
    }
    let command = format!("apt-get update && apt-get install -y {}", packages.join(" "));
    if !is_root() {
        bail!("the test servers need Debian packages that are missing; run as root: {command}");
    }
    eprintln!("installing the test servers' packages: {}", packages.join(" "));
    crate::run({
        let mut cmd = Command::new("sh");
        cmd.args([
            "-c",
            &format!(
                "apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq {}",
                packages.join(" ")
            ),
        ]);
        cmd
    })?;
    let still = missing(tools);
    if !still.is_empty() {
        bail!("apt-get finished but these are still missing: {}", still.join(" "));
    }
    Ok(())
}
