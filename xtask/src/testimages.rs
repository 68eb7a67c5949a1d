//! Container images for the real node, built without a container engine
//! and pushed to the test cluster's registry, from which containerd pulls
//! them like any registry image.
//!
//! - `secop/pause`: the pod sandbox (containerd's `sandbox_image`; the
//!   upstream pause image is not reachable from here);
//! - `secop/security-operator`: the operator image (`cargo xtask image`);
//! - `secop/otelcol`: the collector the data-path tests build, as an image;
//! - `secop/busybox`: Debian's busybox-static, for the scenario pods;
//! - `secop-standin/<tool>`: the sensor stand-ins (test/standins), one per
//!   real image, each installed at the path the rendered pod spec starts.
//!   They are selected only through a SecurityAgent's
//!   `override.<tool>.image`; the features' defaults stay the real images.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::image::{self, Spec};

/// The cluster's registry (xtask/src/node.rs starts it); containerd has it
/// as a plain-HTTP mirror.
pub const REGISTRY: &str = "127.0.0.1:15000";
pub const PAUSE: &str = "secop/pause:3.10";
pub const BUSYBOX: &str = "secop/busybox:1.35";

/// Image references the real-node tests use, as `NAME=REFERENCE` pairs
/// (also exported to the tests as SECOP_NODE_IMAGE_<NAME>).
pub fn references() -> Vec<(&'static str, String)> {
    let mut refs: Vec<(&'static str, String)> =
        standins().iter().map(|s| (s.env, format!("{REGISTRY}/{}", s.reference))).collect();
    refs.push(("OPERATOR", format!("{REGISTRY}/secop/security-operator:{}", env!("CARGO_PKG_VERSION"))));
    refs.push(("OTELCOL", format!("{REGISTRY}/secop/otelcol:{}", crate::datapath::OTELCOL)));
    refs.push(("BUSYBOX", format!("{REGISTRY}/{BUSYBOX}")));
    refs
}

/// One stand-in image: the stand-in program at the real tool's path.
struct Standin {
    env: &'static str,
    reference: &'static str,
    title: &'static str,
    path: &'static str,
    entrypoint: bool,
}

/// Tags match the real images the features render by default, so an
/// override changes only the registry and repository.
fn standins() -> Vec<Standin> {
    let s = |env, reference, title, path, entrypoint| Standin { env, reference, title, path, entrypoint };
    vec![
        // falco's pod spec passes `/usr/bin/falco -c ...` as args (the real
        // image's entrypoint runs its arguments).
        s("FALCO", "secop-standin/falco:0.41.3", "falco stand-in", "usr/bin/falco", false),
        s("TETRAGON", "secop-standin/tetragon:v1.4.1", "tetragon stand-in", "usr/bin/tetragon", true),
        s(
            "TETRAGON_EXPORT",
            "secop-standin/hubble-export-stdout:v1.0.4",
            "tetragon export-stdout stand-in",
            "usr/bin/hubble-export-stdout",
            false,
        ),
        s("OSQUERY", "secop-standin/osquery:5.14.1", "osquery stand-in", "opt/osquery/bin/osqueryd", false),
        s(
            "TRIVY_OPERATOR",
            "secop-standin/trivy-operator:0.26.1",
            "trivy-operator stand-in",
            "usr/local/bin/trivy-operator",
            true,
        ),
    ]
}

/// `go build` of test/standins into target/standins (static: CGO off).
pub fn build_standin(root: &Path) -> Result<PathBuf> {
    let out = root.join("target/standins/standin");
    let mut cmd = Command::new("go");
    cmd.current_dir(root.join("test/standins"))
        .env("CGO_ENABLED", "0")
        .env("GOFLAGS", "-mod=mod -buildvcs=false")
        .args(["build", "-trimpath", "-ldflags", "-s -w", "-o"])
        .arg(&out)
        .arg(".");
    crate::run(cmd).context("building the sensor stand-ins (test/standins)")?;
    Ok(out)
}

fn put(rootfs: &Path, path: &str, from: &Path, mode: u32) -> Result<()> {
    let target = rootfs.join(path);
    fs::create_dir_all(target.parent().expect("a parent"))?;
    fs::copy(from, &target).with_context(|| format!("copying {} into the image", from.display()))?;
    fs::set_permissions(&target, fs::Permissions::from_mode(mode))?;
    Ok(())
}

fn fresh(dir: &Path) -> Result<()> {
    if dir.exists() {
        fs::remove_dir_all(dir)?;
    }
    fs::create_dir_all(dir)?;
    Ok(())
}

fn spec(title: &'static str, description: &'static str, user: &'static str, entrypoint: &[&str], cmd: &[&str]) -> Spec {
    Spec {
        title,
        description,
        user,
        entrypoint: entrypoint.iter().map(|s| s.to_string()).collect(),
        cmd: cmd.iter().map(|s| s.to_string()).collect(),
        env: vec!["PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin".into()],
        working_dir: "/",
        user_home: None,
    }
}

/// Write `rootfs` as a layout and copy it to `REGISTRY/reference`.
fn push(root: &Path, rootfs: &Path, reference: &str, spec: &Spec) -> Result<()> {
    let (name, tag) = reference.rsplit_once(':').context("a reference with a tag")?;
    let layout = root.join("target/test-images").join(name.replace('/', "_"));
    image::write_layout(rootfs, &layout, tag, spec)?;
    skopeo_copy(&layout, tag, &format!("{REGISTRY}/{reference}"))
}

pub fn skopeo_copy(layout: &Path, tag: &str, destination: &str) -> Result<()> {
    let mut cmd = Command::new("skopeo");
    cmd.args(["copy", "--quiet", "--dest-tls-verify=false", "--insecure-policy"])
        .arg(format!("oci:{}:{tag}", layout.display()))
        .arg(format!("docker://{destination}"));
    crate::run(cmd).with_context(|| format!("pushing {destination}"))
}

/// The pause image, which every pod needs: pushed when the node starts.
pub fn push_pause(root: &Path, standin: &Path) -> Result<()> {
    let rootfs = root.join("target/test-images/rootfs-pause");
    fresh(&rootfs)?;
    put(&rootfs, "pause", standin, 0o755)?;
    push(root, &rootfs, PAUSE, &spec("pause", "pod sandbox (secop stand-in)", "65535:65535", &["/pause"], &[]))
}

/// Every other test image (the operator's static build takes ~10 min the
/// first time; later runs rebuild only our crates).
pub fn push_all(root: &Path) -> Result<()> {
    let standin = build_standin(root)?;
    for s in standins() {
        let rootfs = root.join("target/test-images/rootfs-standin");
        fresh(&rootfs)?;
        put(&rootfs, s.path, &standin, 0o755)?;
        let start = format!("/{}", s.path);
        let spec = if s.entrypoint {
            spec(s.title, "secop sensor stand-in (test/standins): not the real sensor", "0:0", &[&start], &[])
        } else {
            spec(s.title, "secop sensor stand-in (test/standins): not the real sensor", "0:0", &[], &[&start])
        };
        push(root, &rootfs, s.reference, &spec)?;
    }

    // The collector: `--config=...` arrives as args, like the contrib image.
    let otelcol = crate::datapath::build_otelcol(root)?;
    let rootfs = root.join("target/test-images/rootfs-otelcol");
    fresh(&rootfs)?;
    put(&rootfs, "otelcol", &otelcol, 0o755)?;
    push(
        root,
        &rootfs,
        &format!("secop/otelcol:{}", crate::datapath::OTELCOL),
        &spec(
            "otelcol",
            "OpenTelemetry Collector built by the Collector Builder (test/infra/otelcol-builder.yaml)",
            "10001:10001",
            &["/otelcol"],
            &[],
        ),
    )?;

    // busybox for the scenario pods, with every applet linked.
    let rootfs = root.join("target/test-images/rootfs-busybox");
    fresh(&rootfs)?;
    put(&rootfs, "bin/busybox", Path::new("/bin/busybox"), 0o755)?;
    let list = Command::new("/bin/busybox").arg("--list").output().context("busybox --list")?;
    if !list.status.success() {
        bail!("busybox --list failed");
    }
    for applet in String::from_utf8_lossy(&list.stdout).lines().filter(|a| !a.is_empty() && *a != "busybox") {
        std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(applet))?;
    }
    for (path, text) in [
        ("etc/passwd", "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n"),
        ("etc/group", "root:x:0:\nnobody:x:65534:\n"),
        // Scenario B reads it: a sensitive file that exists.
        ("etc/shadow", "root:*:19000:0:99999:7:::\nnobody:*:19000:0:99999:7:::\n"),
    ] {
        fs::create_dir_all(rootfs.join(path).parent().unwrap())?;
        fs::write(rootfs.join(path), text)?;
    }
    fs::create_dir_all(rootfs.join("tmp"))?;
    fs::set_permissions(rootfs.join("tmp"), fs::Permissions::from_mode(0o1777))?;
    push(root, &rootfs, BUSYBOX, &spec("busybox", "Debian busybox-static for the scenario pods", "0:0", &[], &["sh"]))?;

    // The operator image itself.
    let layout = root.join("target/image");
    let built = image::build(root, &layout, env!("CARGO_PKG_VERSION"))?;
    skopeo_copy(&built.layout, &built.tag, &format!("{REGISTRY}/secop/security-operator:{}", built.tag))?;
    forget_on_node();
    Ok(())
}

/// The images are pushed under fixed tags and pulled `IfNotPresent`: on a
/// node that is already up, drop containerd's copies so the next pod pulls
/// what was just pushed (a fresh cluster has none).
fn forget_on_node() {
    let socket = "/run/containerd/containerd.sock";
    if !Path::new(socket).exists() {
        return;
    }
    let refs: Vec<String> = references().into_iter().map(|(_, r)| r).collect();
    let _ = Command::new("ctr")
        .args(["--address", socket, "--namespace", "k8s.io", "images", "rm"])
        .args(&refs)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status();
}
