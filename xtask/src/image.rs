//! `cargo xtask image`: the operator's container image, without a container
//! engine.
//!
//! The image is one layer on an empty base: a static `secop` (musl), the
//! build machine's CA bundle (for Elasticsearch endpoints signed by a public
//! CA) and passwd/group entries for the non-root user the chart runs as
//! (65532). It is written as an OCI image layout, which any OCI tool pushes,
//! e.g. `skopeo copy oci:target/image:0.1.0 docker://REGISTRY/security-operator:0.1.0`.
//!
//! Built with tar, gzip and sha256sum rather than a Dockerfile because the
//! build machines have no Docker engine, and kept deterministic: the same
//! binary gives the same digests (sorted entries, fixed owners and times, no
//! creation date).

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

/// A static build runs on an empty base image.
pub const TARGET: &str = "x86_64-unknown-linux-musl";
/// The chart's `runAsUser`/`runAsGroup`; also the image's default user.
const USER: &str = "65532:65532";
const CA_BUNDLE: &str = "etc/ssl/certs/ca-certificates.crt";

const MANIFEST_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
const CONFIG_TYPE: &str = "application/vnd.oci.image.config.v1+json";
const LAYER_TYPE: &str = "application/vnd.oci.image.layer.v1.tar+gzip";

/// What an image runs: its OCI config and labels. The operator's is
/// `operator()`; the real-node tests build others (xtask/src/testimages.rs).
pub struct Spec {
    /// `org.opencontainers.image.title`.
    pub title: &'static str,
    pub description: &'static str,
    /// `uid:gid`.
    pub user: &'static str,
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    pub env: Vec<String>,
    pub working_dir: &'static str,
    /// A directory the user owns (`home/nonroot`); everything else is root's.
    pub user_home: Option<&'static str>,
}

/// The operator image: `secop run` as the chart's non-root user.
pub fn operator() -> Spec {
    Spec {
        title: "security-operator",
        description: "SecurityAgent operator: WASM features for Falco, Tetragon, osquery, Trivy, posture and the OTel pipeline",
        user: USER,
        entrypoint: vec!["/usr/local/bin/secop".into()],
        cmd: vec!["run".into()],
        env: vec![
            "PATH=/usr/local/bin:/usr/bin:/bin".into(),
            format!("SSL_CERT_FILE=/{CA_BUNDLE}"),
            "HOME=/home/nonroot".into(),
        ],
        working_dir: "/home/nonroot",
        user_home: Some("home/nonroot"),
    }
}

/// What was written: the tag inside the layout and the manifest digest.
#[derive(Debug)]
pub struct Image {
    pub layout: PathBuf,
    pub tag: String,
    pub manifest_digest: String,
}

/// Build the static binary and write the image layout to `out`.
pub fn build(root: &Path, out: &Path, tag: &str) -> Result<Image> {
    let binary = build_binary(root)?;
    let rootfs = root.join("target/image-rootfs");
    stage_rootfs(&rootfs, &binary, Path::new("/").join(CA_BUNDLE).as_path())?;
    write_layout(&rootfs, out, tag, &operator())
}

/// `cargo build --release --target x86_64-unknown-linux-musl -p secop`,
/// adding the rustup target if it is missing. `ring` compiles C for the
/// target, which needs `musl-gcc` (Debian: musl-tools).
fn build_binary(root: &Path) -> Result<PathBuf> {
    let installed =
        Command::new("rustup").args(["target", "list", "--installed"]).output().context("running rustup")?;
    if !String::from_utf8_lossy(&installed.stdout).lines().any(|t| t.trim() == TARGET) {
        crate::run({
            let mut cmd = Command::new("rustup");
            cmd.args(["target", "add", TARGET]);
            cmd
        })?;
    }
    if Command::new("musl-gcc").arg("--version").output().is_err() {
        bail!(
            "musl-gcc not found: the static build compiles C (ring) for {TARGET}; install musl-tools (apt-get install musl-tools)"
        );
    }
    let mut cmd = crate::cargo();
    cmd.args(["build", "--locked", "--release", "--target", TARGET, "-p", "secop"]);
    crate::run(cmd)?;
    let target_dir = std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| root.join("target"));
    Ok(target_dir.join(TARGET).join("release/secop"))
}

/// The image's file system: the binary, the CA bundle (if the build machine
/// has one) and the non-root user. Everything belongs to root and is not
/// writable by the user the operator runs as.
pub fn stage_rootfs(rootfs: &Path, binary: &Path, ca_bundle: &Path) -> Result<()> {
    if rootfs.exists() {
        fs::remove_dir_all(rootfs).with_context(|| format!("clearing {}", rootfs.display()))?;
    }
    let put = |path: &str, mode: u32, write: &dyn Fn(&Path) -> std::io::Result<()>| -> Result<()> {
        let target = rootfs.join(path);
        fs::create_dir_all(target.parent().expect("a parent"))?;
        write(&target).with_context(|| format!("writing {}", target.display()))?;
        fs::set_permissions(&target, fs::Permissions::from_mode(mode))?;
        Ok(())
    };
    put("usr/local/bin/secop", 0o755, &|t| fs::copy(binary, t).map(drop))
        .with_context(|| format!("the binary {} (built?)", binary.display()))?;
    // Line tables make the release binary ~240 MB; symbols alone (~50 MB)
    // still name the functions in a backtrace.
    crate::run({
        let mut cmd = Command::new("strip");
        cmd.arg("--strip-debug").arg(rootfs.join("usr/local/bin/secop"));
        cmd
    })
    .context("strip (binutils) removes the debug info from the image's binary")?;
    // SSL_CERT_FILE points here: an image without it would fail every TLS
    // connection to a publicly signed endpoint, at run time.
    if !ca_bundle.is_file() {
        bail!("no CA bundle at {} (Debian: ca-certificates); the image's SSL_CERT_FILE needs one", ca_bundle.display());
    }
    put(CA_BUNDLE, 0o644, &|t| fs::copy(ca_bundle, t).map(drop))?;
    put("etc/passwd", 0o644, &|t| {
        fs::write(t, "root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n")
    })?;
    put("etc/group", 0o644, &|t| fs::write(t, "root:x:0:\nnonroot:x:65532:\n"))?;
    put("home/nonroot/.keep", 0o644, &|t| fs::write(t, ""))?;
    directories_0755(rootfs)
}

/// Directories are 0755 whatever the umask. (Owners are set in the tarball:
/// root, except the user's home; see `write_layout`.)
fn directories_0755(rootfs: &Path) -> Result<()> {
    for entry in walk(rootfs)? {
        if entry.is_dir() {
            fs::set_permissions(&entry, fs::Permissions::from_mode(0o755))?;
        }
    }
    Ok(())
}

fn walk(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut found = vec![];
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            found.extend(walk(&path)?);
        }
        found.push(path);
    }
    Ok(found)
}

/// Write `rootfs` as a one-layer image into the OCI image layout `out`
/// (`oci-layout`, `index.json`, `blobs/sha256/`), tagged `tag`.
pub fn write_layout(rootfs: &Path, out: &Path, tag: &str, spec: &Spec) -> Result<Image> {
    if out.exists() {
        // Only ever replace an earlier layout (or an empty directory): `--out`
        // is the user's path, and `--out .` must not wipe a checkout.
        let empty = fs::read_dir(out).map(|mut d| d.next().is_none()).unwrap_or(false);
        if !empty && !out.join("oci-layout").is_file() {
            bail!("{} exists and is not an OCI image layout; pick an empty or new directory for --out", out.display());
        }
        fs::remove_dir_all(out).with_context(|| format!("clearing {}", out.display()))?;
    }
    let blobs = out.join("blobs/sha256");
    fs::create_dir_all(&blobs)?;

    // The layer: sorted, owned by root (the user's home by the user), no times.
    let tar = out.join("layer.tar");
    let mut entries: Vec<String> =
        fs::read_dir(rootfs)?.map(|e| Ok(e?.file_name().to_string_lossy().into_owned())).collect::<Result<_>>()?;
    entries.sort();
    let mut cmd = Command::new("tar");
    cmd.args(["--format=ustar", "--sort=name", "--mtime=@0", "--numeric-owner", "--owner=0", "--group=0"]);
    if let Some(home) = spec.user_home {
        cmd.arg(format!("--exclude={home}"));
    }
    cmd.arg("-C").arg(rootfs).arg("-cf").arg(&tar).args(&entries);
    crate::run(cmd)?;
    if let Some(home) = spec.user_home {
        let (uid, gid) = spec.user.split_once(':').unwrap_or((spec.user, spec.user));
        let mut cmd = Command::new("tar");
        cmd.args(["--format=ustar", "--sort=name", "--mtime=@0", "--numeric-owner"])
            .arg(format!("--owner={uid}"))
            .arg(format!("--group={gid}"))
            .arg("-C")
            .arg(rootfs)
            .arg("-rf")
            .arg(&tar)
            .arg(home);
        crate::run(cmd)?;
    }
    let diff_id = sha256_file(&tar)?;
    let gz = out.join("layer.tar.gz");
    let gzip = Command::new("gzip").args(["-n", "-9", "-c"]).arg(&tar).output().context("running gzip")?;
    if !gzip.status.success() {
        bail!("gzip failed: {}", String::from_utf8_lossy(&gzip.stderr));
    }
    fs::write(&gz, &gzip.stdout)?;
    fs::remove_file(&tar)?;
    let layer = blob(&blobs, &gz)?;
    fs::remove_file(&gz)?;

    let mut image_config = json!({
        "User": spec.user,
        "Env": spec.env,
        "WorkingDir": spec.working_dir,
        "Labels": labels(spec, tag),
    });
    if !spec.entrypoint.is_empty() {
        image_config["Entrypoint"] = json!(spec.entrypoint);
    }
    if !spec.cmd.is_empty() {
        image_config["Cmd"] = json!(spec.cmd);
    }
    let config = json!({
        "architecture": "amd64",
        "os": "linux",
        "config": image_config,
        "rootfs": { "type": "layers", "diff_ids": [format!("sha256:{diff_id}")] },
        "history": [ { "created_by": "cargo xtask image" } ],
    });
    let config = blob_bytes(&blobs, &serde_json::to_vec(&config)?)?;
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": MANIFEST_TYPE,
        "config": { "mediaType": CONFIG_TYPE, "digest": config.digest, "size": config.size },
        "layers": [ { "mediaType": LAYER_TYPE, "digest": layer.digest, "size": layer.size } ],
        "annotations": labels(spec, tag),
    });
    let manifest = blob_bytes(&blobs, &serde_json::to_vec(&manifest)?)?;
    let index = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [ {
            "mediaType": MANIFEST_TYPE,
            "digest": manifest.digest,
            "size": manifest.size,
            "annotations": { "org.opencontainers.image.ref.name": tag },
            "platform": { "architecture": "amd64", "os": "linux" },
        } ],
    });
    fs::write(out.join("index.json"), serde_json::to_vec_pretty(&index)?)?;
    fs::write(out.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#)?;
    Ok(Image { layout: out.to_path_buf(), tag: tag.to_string(), manifest_digest: manifest.digest })
}

fn labels(spec: &Spec, tag: &str) -> Value {
    json!({
        "org.opencontainers.image.title": spec.title,
        "org.opencontainers.image.description": spec.description,
        "org.opencontainers.image.version": tag,
        "org.opencontainers.image.licenses": "Apache-2.0",
    })
}

struct Blob {
    digest: String,
    size: u64,
}

fn blob(blobs: &Path, file: &Path) -> Result<Blob> {
    let hex = sha256_file(file)?;
    let size = fs::metadata(file)?.len();
    fs::copy(file, blobs.join(&hex))?;
    Ok(Blob { digest: format!("sha256:{hex}"), size })
}

fn blob_bytes(blobs: &Path, bytes: &[u8]) -> Result<Blob> {
    let tmp = blobs.join("incoming");
    fs::write(&tmp, bytes)?;
    let hex = sha256_file(&tmp)?;
    fs::rename(&tmp, blobs.join(&hex))?;
    Ok(Blob { digest: format!("sha256:{hex}"), size: bytes.len() as u64 })
}

/// sha256 by coreutils' sha256sum (xtask keeps to std plus serde_json).
fn sha256_file(path: &Path) -> Result<String> {
    let out = Command::new("sha256sum").arg(path).output().context("running sha256sum")?;
    if !out.status.success() {
        bail!("sha256sum {} failed", path.display());
    }
    let text = String::from_utf8(out.stdout)?;
    Ok(text.split_whitespace().next().context("sha256sum printed nothing")?.to_string())
}

#[cfg(test)]
mod tests {
    //! The layout from a stand-in binary: every reference resolves to a
    //! blob of the stated size and digest, the layer holds what the config
    //! promises, and a second build gives the same digest.

    use super::*;

    fn read_json(path: &Path) -> Value {
        serde_json::from_slice(&fs::read(path).unwrap()).unwrap()
    }

    fn resolve(layout: &Path, descriptor: &Value) -> PathBuf {
        let hex = descriptor["digest"].as_str().unwrap().strip_prefix("sha256:").unwrap();
        let path = layout.join("blobs/sha256").join(hex);
        assert_eq!(sha256_file(&path).unwrap(), hex, "blob content matches its digest");
        assert_eq!(fs::metadata(&path).unwrap().len(), descriptor["size"].as_u64().unwrap(), "size");
        path
    }

    #[test]
    fn the_layout_is_complete_consistent_and_reproducible() {
        let dir = std::env::temp_dir().join(format!("secop-xtask-image-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        // Any ELF executable stands in for secop (the layout strips it).
        let binary =
            ["/usr/bin/true", "/bin/true"].iter().map(PathBuf::from).find(|p| p.exists()).expect("an ELF to stand in");
        let ca = dir.join("ca.crt");
        fs::write(&ca, "-----BEGIN CERTIFICATE-----\n").unwrap();
        let rootfs = dir.join("rootfs");
        stage_rootfs(&rootfs, &binary, &ca).unwrap();

        let image = write_layout(&rootfs, &dir.join("layout"), "0.1.0", &operator()).unwrap();
        let layout = &image.layout;
        assert_eq!(read_json(&layout.join("oci-layout"))["imageLayoutVersion"], "1.0.0");
        let index = read_json(&layout.join("index.json"));
        let entry = &index["manifests"][0];
        assert_eq!(entry["annotations"]["org.opencontainers.image.ref.name"], "0.1.0");
        assert_eq!(entry["digest"], image.manifest_digest.as_str());
        let manifest = read_json(&resolve(layout, entry));
        assert_eq!(manifest["mediaType"], MANIFEST_TYPE);
        let config = read_json(&resolve(layout, &manifest["config"]));
        assert_eq!(config["config"]["User"], USER, "runs as the chart's non-root user");
        assert_eq!(config["config"]["Entrypoint"][0], "/usr/local/bin/secop");
        let layer = resolve(layout, &manifest["layers"][0]);

        // diff_id = sha256 of the uncompressed layer.
        let tar = Command::new("gzip").args(["-dc"]).arg(&layer).output().unwrap().stdout;
        let tar_path = dir.join("layer.tar");
        fs::write(&tar_path, &tar).unwrap();
        assert_eq!(config["rootfs"]["diff_ids"][0], format!("sha256:{}", sha256_file(&tar_path).unwrap()));
        let listing = Command::new("tar").args(["-tvf"]).arg(&tar_path).output().unwrap().stdout;
        let listing = String::from_utf8(listing).unwrap();
        for (path, owner, mode) in [
            ("usr/local/bin/secop", "0/0", "-rwxr-xr-x"),
            ("etc/ssl/certs/ca-certificates.crt", "0/0", "-rw-r--r--"),
            ("etc/passwd", "0/0", "-rw-r--r--"),
            ("home/nonroot/", "65532/65532", "drwxr-xr-x"),
        ] {
            let line = listing
                .lines()
                .find(|l| l.ends_with(&format!(" {path}")))
                .unwrap_or_else(|| panic!("{path} missing from\n{listing}"));
            assert!(line.starts_with(mode) && line.contains(&format!(" {owner} ")), "{line}");
        }

        // Same input, same digest, also when replacing the earlier layout.
        let again = write_layout(&rootfs, &dir.join("layout"), "0.1.0", &operator()).unwrap();
        assert_eq!(again.manifest_digest, image.manifest_digest);

        // A directory that is not a layout is never cleared.
        let error = write_layout(&rootfs, &rootfs, "0.1.0", &operator()).unwrap_err().to_string();
        assert!(error.contains("not an OCI image layout"), "{error}");
        assert!(rootfs.join("etc/passwd").exists());
        fs::remove_dir_all(&dir).unwrap();
    }
}
