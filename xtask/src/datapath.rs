//! The data-path test servers: a real OpenTelemetry Collector built with
//! the Collector Builder, and a real Elasticsearch node from Maven Central.
//! Both are built or fetched once and cached outside the repo, keyed by
//! version (`~/.cache/secop-test-infra/<tool>-<version>`).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Result, bail};

use crate::cluster::{cache_root, run};

/// Must match `COLLECTOR_VERSION` in host/engine/src/otel.rs (the configs
/// are generated for it) and test/infra/otelcol-builder.yaml.
pub const OTELCOL: &str = "0.152.0";
/// Must match test/infra/elasticsearch/pom.xml.
pub const ELASTICSEARCH: &str = "8.19.21";

/// The collector binary (`otelcol-secop`), built once.
pub fn build_otelcol(root: &Path) -> Result<PathBuf> {
    let dir = cache_root().join(format!("otelcol-{OTELCOL}"));
    let bin = dir.join("bin/otelcol-secop");
    if bin.exists() {
        return Ok(bin);
    }
    eprintln!(
        "building the OpenTelemetry Collector {OTELCOL} with the Collector Builder (once, ~10 min; cached in {})",
        dir.display()
    );
    let builder_dir = cache_root().join(format!("otelcol-builder-v{OTELCOL}"));
    let builder = builder_dir.join("bin/builder");
    // Some contrib modules have no checksum-database record on the proxy
    // this machine reaches; their hashes still land in go.sum.
    let go_env = |cmd: &mut Command| {
        cmd.env("CGO_ENABLED", "0")
            .env(
                "GONOSUMDB",
                "github.com/open-telemetry/opentelemetry-collector-contrib,go.opentelemetry.io/ebpf-profiler",
            )
            .env("GOFLAGS", "-mod=mod -buildvcs=false");
    };
    if !builder.exists() {
        fs::create_dir_all(builder_dir.join("bin"))?;
        let mut cmd = Command::new("go");
        go_env(&mut cmd);
        cmd.env("GOBIN", builder_dir.join("bin"))
            .args(["install", &format!("go.opentelemetry.io/collector/cmd/builder@v{OTELCOL}")]);
        run(&mut cmd)?;
    }
    // The manifest with its output path pointed into the cache.
    let src = dir.join("src");
    fs::create_dir_all(&src)?;
    let manifest = fs::read_to_string(root.join("test/infra/otelcol-builder.yaml"))?;
    if !manifest.contains(&format!("version: \"{OTELCOL}\"")) {
        bail!("test/infra/otelcol-builder.yaml does not pin collector {OTELCOL}");
    }
    let manifest = manifest.replace("output_path: ./otelcol-secop", &format!("output_path: {}", src.display()));
    let manifest_path = dir.join("builder.yaml");
    fs::write(&manifest_path, manifest)?;
    // `go mod tidy` inside the builder would also fetch test-only modules the
    // proxy refuses; `go build -mod=mod` resolves just the build graph.
    let mut cmd = Command::new(&builder);
    go_env(&mut cmd);
    cmd.arg(format!("--config={}", manifest_path.display())).arg("--skip-get-modules");
    run(&mut cmd)?;
    let built = src.join("otelcol-secop");
    if !built.exists() {
        bail!("the Collector Builder finished but {} is missing", built.display());
    }
    fs::create_dir_all(dir.join("bin"))?;
    fs::rename(&built, &bin)?;
    Ok(bin)
}

/// `ES_HOME` of the Elasticsearch distribution, fetched once with Maven.
pub fn fetch_elasticsearch(root: &Path) -> Result<PathBuf> {
    let home = cache_root().join(format!("elasticsearch-{ELASTICSEARCH}"));
    if home.join("bin/elasticsearch").exists() && home.join("lib").exists() {
        return Ok(home);
    }
    eprintln!(
        "fetching Elasticsearch {ELASTICSEARCH} from Maven Central (once, ~110 MB; cached in {})",
        home.display()
    );
    let pom = root.join("test/infra/elasticsearch/pom.xml");
    if !fs::read_to_string(&pom)?.contains(&format!("<elasticsearch.version>{ELASTICSEARCH}</elasticsearch.version>")) {
        bail!("{} does not pin Elasticsearch {ELASTICSEARCH}", pom.display());
    }
    // A stale unpack marker would make Maven skip the unpack.
    let _ = fs::remove_dir_all(root.join("target/secop-test-infra/elasticsearch-maven"));
    run(Command::new("mvn")
        .args(["-q", "-B", "dependency:unpack-dependencies", "-f"])
        .arg(&pom)
        .arg(format!("-DoutputDirectory={}", cache_root().display())))?;
    if !home.join("bin/elasticsearch").exists() {
        bail!("Maven unpacked Elasticsearch, but {} has no bin/elasticsearch", home.display());
    }
    Ok(home)
}

/// Debian's `docker-registry` (distribution 2.8), the OCI registry of the
/// module tests. Installed by `.ci/run` (`apt-get install docker-registry`).
pub fn registry_bin() -> Result<PathBuf> {
    for dir in std::env::var_os("PATH").map(|p| std::env::split_paths(&p).collect::<Vec<_>>()).unwrap_or_default() {
        let candidate = dir.join("docker-registry");
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    anyhow::bail!("docker-registry not found on PATH: install it (`apt-get install docker-registry`), as .ci/run does")
}
