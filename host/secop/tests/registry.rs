//! Feature modules in a real OCI registry (Debian's `docker-registry`,
//! distribution 2.8, on loopback): `secop feature push | pull | inspect |
//! test` with both wasm layouts, digest pins, refusal of non-components,
//! and the cache when the registry is down.
//!
//! `cargo xtask test` provides SECOP_REGISTRY_BIN; without it these tests
//! fail when CI=true and are skipped otherwise.

use std::path::PathBuf;
use std::process::{Command, Output};

use secop_test_harness::{Registry, free_port};

#[path = "common/pipeline.rs"]
mod pipeline;
use pipeline::{component, scratch, sha256_hex};

fn registry_bin() -> Option<PathBuf> {
    match std::env::var_os("SECOP_REGISTRY_BIN") {
        Some(bin) => Some(bin.into()),
        None if std::env::var("CI").is_ok_and(|v| v == "true") => {
            panic!("CI expects the OCI registry: run the suite with `cargo xtask test` (SECOP_REGISTRY_BIN not set)")
        }
        None => {
            eprintln!("skipping registry test: no docker-registry (run `cargo xtask test`)");
            None
        }
    }
}

struct Cli {
    cache: PathBuf,
    registry: String,
}

impl Cli {
    fn run(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_secop"))
            .args(args)
            .args(["--plain-http", &self.registry])
            .env("SECOP_CACHE_DIR", &self.cache)
            .output()
            .unwrap()
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "secop {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn fails(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(!out.status.success(), "secop {args:?} should fail: {}", String::from_utf8_lossy(&out.stdout));
        String::from_utf8_lossy(&out.stderr).into_owned()
    }
}

fn line_value<'a>(text: &'a str, prefix: &str) -> &'a str {
    text.lines().find_map(|l| l.strip_prefix(prefix)).unwrap_or_else(|| panic!("no `{prefix}` in:\n{text}")).trim()
}

#[test]
fn feature_modules_round_trip_through_a_real_registry() {
    let Some(bin) = registry_bin() else { return };
    let dir = scratch("registry");
    let mut registry = Registry::start(&bin, &dir.join("registry"), free_port()).unwrap();
    let cli = Cli { cache: dir.join("cache"), registry: registry.host() };
    let falco = component("feature_falco");
    let falco_bytes = std::fs::read(&falco).unwrap();
    let want = format!("sha256:{}", sha256_hex(&falco_bytes));
    let image = format!("{}/features/falco:0.1.0", registry.host());
    let wkg_image = format!("{}/features/falco-wkg:0.1.0", registry.host());

    // push, in both layouts: same component digest, different manifests.
    let pushed = cli.ok(&["feature", "push", falco.to_str().unwrap(), &image]);
    assert!(pushed.contains("pushed feature falco (contract 0.1.0)"), "{pushed}");
    assert_eq!(line_value(&pushed, "component:"), want);
    let pushed_wkg = cli.ok(&["feature", "push", falco.to_str().unwrap(), &wkg_image, "--wkg-layout"]);
    assert_ne!(line_value(&pushed, "manifest:"), line_value(&pushed_wkg, "manifest:"));

    // pull accepts both layouts and returns the very bytes pushed.
    for (reference, manifest) in
        [(&image, line_value(&pushed, "manifest:")), (&wkg_image, line_value(&pushed_wkg, "manifest:"))]
    {
        let out = dir.join("pulled.wasm");
        let pulled = cli.ok(&["feature", "pull", reference, "-o", out.to_str().unwrap()]);
        assert_eq!(line_value(&pulled, "component:"), want, "{reference}");
        assert_eq!(line_value(&pulled, "manifest:"), manifest);
        assert_eq!(std::fs::read(&out).unwrap(), falco_bytes);
    }
    // By digest, too.
    let by_digest = format!("{}/features/falco@{}", registry.host(), line_value(&pushed, "manifest:"));
    assert_eq!(line_value(&cli.ok(&["feature", "pull", &by_digest]), "component:"), want);

    // inspect: id, priority, contract, digests, our annotations.
    let inspected: serde_json::Value = serde_yaml::from_str(&cli.ok(&["feature", "inspect", &image])).unwrap();
    assert_eq!(inspected["id"], "falco");
    assert_eq!(inspected["priority"], 100);
    assert_eq!(inspected["contractVersion"], "0.1.0");
    assert_eq!(inspected["componentDigest"], want.as_str());
    assert_eq!(inspected["annotations"]["io.example.security.feature.id"], "falco");

    // test: configure + contribute with a config file, the feature's objects only.
    let config = dir.join("falco-config.yaml");
    std::fs::write(&config, "disabledRules: []\n").unwrap();
    let objects = cli.ok(&["feature", "test", &image, "--config", config.to_str().unwrap()]);
    assert!(objects.contains("kind: DaemonSet") && objects.contains("security.example.io/feature: falco"), "{objects}");
    assert!(!objects.contains("security.example.io/feature: otel_pipeline"), "only the tested feature's objects");
    let bad_config = dir.join("bad-config.yaml");
    std::fs::write(&bad_config, "disabledRules: 7\n").unwrap();
    let complaint = cli.fails(&["feature", "test", &image, "--config", bad_config.to_str().unwrap()]);
    assert!(complaint.contains("falco") && complaint.contains("disabledRules"), "{complaint}");

    // A wrong pin: refused, naming the module and both digests.
    let wrong = "0".repeat(64);
    let refused = cli.fails(&["feature", "pull", &image, "--sha256", &wrong]);
    assert!(
        refused.contains("falco") && refused.contains(&wrong) && refused.contains(want.trim_start_matches("sha256:")),
        "{refused}"
    );
    // A file that is not a component is refused before it reaches the registry.
    let junk = dir.join("junk.wasm");
    std::fs::write(&junk, b"not a component").unwrap();
    let refused =
        cli.fails(&["feature", "push", junk.to_str().unwrap(), &format!("{}/features/junk:1", registry.host())]);
    assert!(refused.contains("is not WebAssembly"), "{refused}");

    // Registry down: the cache answers, and says so.
    registry.stop();
    let cached = cli.ok(&["feature", "pull", &image]);
    assert!(cached.contains("CacheRegistryUnavailable"), "{cached}");
    assert_eq!(line_value(&cached, "component:"), want);
    // Nothing cached for this one: a clear error.
    let missing = cli.fails(&["feature", "pull", &format!("{}/features/never-pushed:1", registry.host())]);
    assert!(missing.contains("registry unreachable and nothing cached"), "{missing}");
}

/// A module source may be hostile: a layer over the size limit is refused
/// by its manifest before any byte of it is downloaded, nothing is cached,
/// and a registry that does not answer counts as unreachable after the
/// fetch's time limit.
#[test]
fn an_oversized_module_is_refused_before_its_download() {
    let Some(bin) = registry_bin() else { return };
    let dir = scratch("registry-limits");
    let mut registry = Registry::start(&bin, &dir.join("registry"), free_port()).unwrap();
    let host = registry.host();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let falco = std::fs::read(component("feature_falco")).unwrap();
    let image = format!("{host}/features/falco:big");
    let source = |image: &str| secop_oci::Source {
        feature: "falco".into(),
        image: image.into(),
        sha256: None,
        pull_policy: secop_oci::PullPolicy::Always,
        credentials: Default::default(),
    };
    let limits =
        secop_oci::FetchLimits { max_module_bytes: falco.len() as u64 - 1, timeout: std::time::Duration::from_secs(5) };
    let store = secop_oci::ModuleStore::new(dir.join("cache"), vec![host.clone()]).with_limits(limits);
    runtime
        .block_on(store.push(&image, &falco, Default::default(), secop_oci::Layout::Secop, &Default::default()))
        .unwrap();

    let error = runtime.block_on(store.fetch(&source(&image))).expect_err("over the limit");
    assert_eq!(error.reason(), "ModuleTooLarge", "{error}");
    assert!(error.to_string().contains(&format!("{} bytes (per its manifest)", falco.len())), "{error}");
    assert!(
        !dir.join("cache/blobs").exists() || std::fs::read_dir(dir.join("cache/blobs")).unwrap().next().is_none(),
        "nothing cached"
    );
    let fits = secop_oci::ModuleStore::new(dir.join("cache"), vec![host.clone()]);
    assert!(runtime.block_on(fits.fetch(&source(&image))).is_ok(), "within the default limit it is fetched");

    // A registry that accepts the connection and never answers.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_host = silent.local_addr().unwrap().to_string();
    let store = secop_oci::ModuleStore::new(dir.join("cache-silent"), vec![silent_host.clone()])
        .with_limits(secop_oci::FetchLimits { timeout: std::time::Duration::from_secs(2), ..Default::default() });
    let started = std::time::Instant::now();
    let error =
        runtime.block_on(store.fetch(&source(&format!("{silent_host}/features/falco:1")))).expect_err("no answer");
    assert_eq!(error.reason(), "RegistryUnavailable", "{error}");
    assert!(error.to_string().contains("no complete answer within 2s"), "{error}");
    eprintln!("silent registry given up after {:.1?}", started.elapsed());
    registry.stop();
}
