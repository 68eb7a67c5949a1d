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
use pipeline::{component, run_ok, scratch, sha256_hex};

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

/// A scratch directory with a running registry and a CLI pointed at it.
struct Scene {
    dir: PathBuf,
    registry: Registry,
    host: String,
    cli: Cli,
}

fn scene(name: &str) -> Option<Scene> {
    let bin = registry_bin()?;
    let dir = scratch(name);
    let registry = Registry::start(&bin, &dir.join("registry"), free_port()).unwrap();
    let host = registry.host();
    let cli = Cli { cache: dir.join("cache"), registry: host.clone() };
    Some(Scene { dir, registry, host, cli })
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
            // For `--signing-key`: the password of the key files below.
            .env("COSIGN_PASSWORD", "pw-2")
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
    let Some(Scene { dir, mut registry, cli, .. }) = scene("registry") else { return };
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
    let Some(Scene { dir, mut registry, host, .. }) = scene("registry-limits") else { return };
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let falco = std::fs::read(component("feature_falco")).unwrap();
    let image = format!("{host}/features/falco:big");
    let source = |image: &str| secop_oci::Source {
        feature: "falco".into(),
        image: image.into(),
        sha256: None,
        pull_policy: secop_oci::PullPolicy::Always,
        credentials: Default::default(),
        verify: None,
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

/// A client built by `cargo xtask test` (SECOP_COSIGN, SECOP_ORAS,
/// SECOP_WKG): the tools feature authors use, for the interop tests.
fn client_tool(var: &str) -> Option<PathBuf> {
    match std::env::var_os(var) {
        Some(bin) => Some(bin.into()),
        None if std::env::var("CI").is_ok_and(|v| v == "true") => {
            panic!("CI expects {var}: run the suite with `cargo xtask test`")
        }
        None => {
            eprintln!("skipping: {var} not set (run `cargo xtask test`)");
            None
        }
    }
}

/// Issue 17's interop with cosign (v2, key pairs, tag-based signatures on
/// a plain distribution 2.8 registry): a module signed by `cosign sign`
/// verifies in `secop feature verify`; one signed by `secop feature sign`
/// verifies in `cosign verify`; signatures are appended, not replaced;
/// an unsigned module, another key and a moved tag are refused, naming
/// the module, the digest and the expected key.
#[test]
fn cosign_and_secop_signatures_verify_in_both_tools() {
    let (Some(cosign), Some(oras)) = (client_tool("SECOP_COSIGN"), client_tool("SECOP_ORAS")) else { return };
    let Some(Scene { dir, mut registry, host, cli }) = scene("signatures") else { return };
    let image = format!("{host}/features/falco:1");
    let pushed = cli.ok(&["feature", "push", component("feature_falco").to_str().unwrap(), &image]);
    let digest = line_value(&pushed, "manifest:").to_string();

    // The publisher's key from cosign, the other from secop (same format).
    let cosign_keys = dir.join("cosign-keys");
    std::fs::create_dir_all(&cosign_keys).unwrap();
    run_ok(Command::new(&cosign).current_dir(&cosign_keys).env("COSIGN_PASSWORD", "pw-1").arg("generate-key-pair"));
    let secop_keys = dir.join("secop-keys");
    let wrote = Command::new(env!("CARGO_BIN_EXE_secop"))
        .args(["feature", "keygen", "--dir", secop_keys.to_str().unwrap()])
        .env("COSIGN_PASSWORD", "pw-2")
        .output()
        .unwrap();
    assert!(wrote.status.success(), "{}", String::from_utf8_lossy(&wrote.stderr));
    let (cosign_pub, secop_pub) = (cosign_keys.join("cosign.pub"), secop_keys.join("cosign.pub"));
    let (cosign_pub, secop_pub) = (cosign_pub.to_str().unwrap(), secop_pub.to_str().unwrap());

    // Unsigned: refused, naming the module, the manifest digest and the key.
    let refused = cli.fails(&["feature", "verify", &image, "--key", cosign_pub]);
    for expected in ["falco", &digest, "no signature", "expected one by", cosign_pub] {
        assert!(refused.contains(expected), "`{expected}` not in: {refused}");
    }

    // cosign signs (by digest, no transparency log: offline) → secop verifies.
    let by_digest = format!("{host}/features/falco@{digest}");
    run_ok(Command::new(&cosign).env("COSIGN_PASSWORD", "pw-1").args([
        "sign",
        "--key",
        cosign_keys.join("cosign.key").to_str().unwrap(),
        "--tlog-upload=false",
        "--yes",
        &by_digest,
    ]));
    let verified = cli.ok(&["feature", "verify", &image, "--key", cosign_pub]);
    assert!(verified.contains(&format!("signed by {cosign_pub} (key sha256:")), "{verified}");
    let other = cli.fails(&["feature", "verify", &image, "--key", secop_pub]);
    assert!(other.contains("none of its 1 signature(s) is by") && other.contains(secop_pub), "{other}");
    // pull --key checks before reading the module, too.
    assert!(cli.ok(&["feature", "pull", &image, "--key", cosign_pub]).contains("signature: signed by"));

    // secop signs with its own key → cosign verifies; cosign's stays.
    let signing_key = secop_keys.join("cosign.key");
    let sign = |cli: &Cli| {
        let out = Command::new(env!("CARGO_BIN_EXE_secop"))
            .args(["feature", "sign", &image, "--signing-key", signing_key.to_str().unwrap(), "--plain-http", &host])
            .env("SECOP_CACHE_DIR", &cli.cache)
            .env("COSIGN_PASSWORD", "pw-2")
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let signed = sign(&cli);
    assert_eq!(line_value(&signed, "manifest:"), digest);
    let sig_tag = line_value(&signed, "signature:").to_string();
    assert!(sig_tag.ends_with(&format!("{}.sig", digest.replace(':', "-"))), "{sig_tag}");
    for key in [secop_pub, cosign_pub] {
        let verified =
            run_ok(Command::new(&cosign).args(["verify", "--key", key, "--insecure-ignore-tlog=true", &image]));
        assert!(verified.contains(&digest), "cosign verify --key {key}: {verified}");
    }
    assert!(cli.ok(&["feature", "verify", &image, "--key", secop_pub]).contains("signed by"));
    // Signing again with the same key adds nothing (oras reads the layers).
    sign(&cli);
    let signatures: serde_json::Value =
        serde_json::from_str(&run_ok(Command::new(&oras).args(["manifest", "fetch", "--plain-http", &sig_tag])))
            .unwrap();
    assert_eq!(signatures["layers"].as_array().unwrap().len(), 2, "{signatures}");

    // The tag moved to an unsigned module: its new digest has no signature.
    cli.ok(&["feature", "push", component("feature_falco_next").to_str().unwrap(), &image]);
    let moved = cli.fails(&["feature", "verify", &image, "--key", cosign_pub]);
    assert!(moved.contains("no signature") && !moved.contains(&digest), "{moved}");
    // The signed digest still verifies by digest, in both tools.
    assert!(cli.ok(&["feature", "verify", &by_digest, "--key", cosign_pub]).contains("signed by"));
    registry.stop();
}

/// Issue 17, point 4: `secop feature push --signing-key` signs the module
/// and attaches its provenance (source, builder, contract version,
/// component digest) as `cosign attest` would; real `cosign
/// verify-attestation --type slsaprovenance1` accepts it. Provenance that
/// `cosign attest` attached is read by `secop feature verify
/// --require-builder`; a builder or source other than the required one,
/// or provenance by another key, is refused, naming what was found.
#[test]
fn provenance_attached_on_push_verifies_in_both_tools() {
    use base64::Engine as _;
    let Some(cosign) = client_tool("SECOP_COSIGN") else { return };
    let Some(Scene { dir, mut registry, host, cli }) = scene("provenance") else { return };
    let (secop_keys, cosign_keys) = (dir.join("secop-keys"), dir.join("cosign-keys"));
    run_ok(
        Command::new(env!("CARGO_BIN_EXE_secop"))
            .args(["feature", "keygen", "--dir", secop_keys.to_str().unwrap()])
            .env("COSIGN_PASSWORD", "pw-2"),
    );
    std::fs::create_dir_all(&cosign_keys).unwrap();
    run_ok(Command::new(&cosign).current_dir(&cosign_keys).env("COSIGN_PASSWORD", "pw-1").arg("generate-key-pair"));
    let (secop_pub, cosign_pub) = (secop_keys.join("cosign.pub"), cosign_keys.join("cosign.pub"));
    let (secop_pub, cosign_pub) = (secop_pub.to_str().unwrap(), cosign_pub.to_str().unwrap());
    let signing_key = secop_keys.join("cosign.key");

    // Pushed from a git work tree: source and commit are read from it.
    let work = dir.join("work");
    std::fs::create_dir_all(&work).unwrap();
    let git = |args: &[&str]| {
        run_ok(
            Command::new("git")
                .current_dir(&work)
                .args(["-c", "user.name=a", "-c", "user.email=a@example.test"])
                .args(args),
        )
    };
    git(&["init", "-q"]);
    git(&["remote", "add", "origin", "https://git.example/team/falco-feature.git"]);
    std::fs::write(work.join(".gitignore"), "*.wasm\n").unwrap();
    git(&["add", ".gitignore"]);
    git(&["commit", "-q", "-m", "first"]);
    let commit = git(&["rev-parse", "HEAD"]).trim().to_string();
    let wasm = work.join("falco.wasm");
    std::fs::copy(component("feature_falco"), &wasm).unwrap();
    let component_sha = sha256_hex(&std::fs::read(&wasm).unwrap());
    let image = format!("{host}/features/falco:1");
    let pushed = cli.ok(&[
        "feature",
        "push",
        wasm.to_str().unwrap(),
        &image,
        "--signing-key",
        signing_key.to_str().unwrap(),
        "--builder-id",
        "https://ci.example/workflows/release",
    ]);
    let digest = line_value(&pushed, "manifest:").to_string();
    let attestations = line_value(&pushed, "provenance:");
    assert!(attestations.contains(&format!("{}.att", digest.replace(':', "-"))), "{pushed}");

    // Real cosign accepts the attestation (and the signature) by our key.
    run_ok(Command::new(&cosign).args(["verify", "--key", secop_pub, "--insecure-ignore-tlog=true", &image]));
    let attested = run_ok(Command::new(&cosign).args([
        "verify-attestation",
        "--key",
        secop_pub,
        "--type",
        "slsaprovenance1",
        "--insecure-ignore-tlog=true",
        &image,
    ]));
    let envelope: serde_json::Value = serde_json::from_str(attested.lines().next().unwrap()).unwrap();
    let statement: serde_json::Value = serde_json::from_slice(
        &base64::engine::general_purpose::STANDARD.decode(envelope["payload"].as_str().unwrap()).unwrap(),
    )
    .unwrap();
    assert_eq!(statement["predicate"]["runDetails"]["builder"]["id"], "https://ci.example/workflows/release");
    let external = &statement["predicate"]["buildDefinition"]["externalParameters"]["source"];
    assert_eq!(external["uri"], "git+https://git.example/team/falco-feature.git", "{statement}");
    assert_eq!(external["digest"]["gitCommit"], commit.as_str(), "{statement}");
    assert_eq!(statement["predicate"]["buildDefinition"]["internalParameters"]["sourceDirty"], false);
    let subjects: Vec<&str> =
        statement["subject"].as_array().unwrap().iter().map(|s| s["digest"]["sha256"].as_str().unwrap()).collect();
    assert_eq!(subjects, [digest.trim_start_matches("sha256:"), component_sha.as_str()]);

    // secop: inspect prints signer, provenance and contract; verify
    // requires a builder and a source.
    let inspected: serde_json::Value =
        serde_yaml::from_str(&cli.ok(&["feature", "inspect", &image, "--key", secop_pub])).unwrap();
    let provenance = &inspected["provenance"]["verified"][0];
    assert_eq!(provenance["builderId"], "https://ci.example/workflows/release", "{inspected}");
    assert_eq!(provenance["sourceCommit"], commit.as_str());
    assert_eq!(provenance["contractVersion"], inspected["contractVersion"]);
    assert_eq!(provenance["componentSha256"], component_sha.as_str());
    assert!(provenance["signer"].as_str().unwrap().starts_with(secop_pub), "{inspected}");
    assert!(inspected["signature"].as_str().unwrap().starts_with("signed by"), "{inspected}");
    let verified = cli.ok(&[
        "feature",
        "verify",
        &image,
        "--key",
        secop_pub,
        "--require-builder",
        "https://ci.example/workflows/release",
        "--require-source",
        "git+https://git.example/team/falco-feature.git",
    ]);
    assert!(
        verified.contains(&format!(
            "provenance: built by https://ci.example/workflows/release from git+https://git.example/team/falco-feature.git@{commit}"
        )),
        "{verified}"
    );
    let refused =
        cli.fails(&["feature", "verify", &image, "--key", secop_pub, "--require-builder", "https://ci.example/other"]);
    for expected in [
        "no provenance signed by --key with builder https://ci.example/other",
        "found built by https://ci.example/workflows/release",
        &digest,
    ] {
        assert!(refused.contains(expected), "`{expected}` not in: {refused}");
    }

    // cosign signs and attests another builder's provenance; secop reads
    // it, and ours stays (attestations are appended).
    let by_digest = format!("{host}/features/falco@{digest}");
    let predicate = dir.join("predicate.json");
    std::fs::write(
        &predicate,
        serde_json::json!({
            "buildDefinition": {
                "buildType": "https://ci.example/buildtypes/make/v1",
                "externalParameters": { "source": { "uri": "git+https://git.example/team/falco-feature.git", "digest": { "gitCommit": commit } } },
            },
            "runDetails": { "builder": { "id": "https://ci.example/workflows/nightly" } },
        })
        .to_string(),
    )
    .unwrap();
    let cosign_key = cosign_keys.join("cosign.key");
    for verb in [vec!["sign"], vec!["attest", "--type", "slsaprovenance1", "--predicate", predicate.to_str().unwrap()]]
    {
        run_ok(Command::new(&cosign).env("COSIGN_PASSWORD", "pw-1").args(&verb).args([
            "--key",
            cosign_key.to_str().unwrap(),
            "--tlog-upload=false",
            "--yes",
            &by_digest,
        ]));
    }
    let verified = cli.ok(&[
        "feature",
        "verify",
        &image,
        "--key",
        cosign_pub,
        "--require-builder",
        "https://ci.example/workflows/nightly",
    ]);
    assert!(
        verified.contains("provenance: built by https://ci.example/workflows/nightly from git+https://git.example"),
        "{verified}"
    );
    // Our key's provenance is still there; cosign's key did not sign it.
    cli.ok(&[
        "feature",
        "verify",
        &image,
        "--key",
        secop_pub,
        "--require-builder",
        "https://ci.example/workflows/release",
    ]);
    let refused = cli.fails(&[
        "feature",
        "verify",
        &image,
        "--key",
        cosign_pub,
        "--require-builder",
        "https://ci.example/workflows/release",
    ]);
    assert!(refused.contains("and 1 attestation(s) not by --key"), "{refused}");
    registry.stop();
}

/// Modules published with oras (our layout, by hand) and wkg (the CNCF
/// wasm layout) are pulled and loaded by secop; modules pushed by secop
/// are pulled by both, byte for byte: by oras in either layout, by wkg in
/// its own (`--wkg-layout`; wkg refuses other layer media types).
#[test]
fn oras_and_wkg_exchange_modules_with_secop() {
    let (Some(oras), Some(wkg)) = (client_tool("SECOP_ORAS"), client_tool("SECOP_WKG")) else { return };
    let Some(Scene { dir, mut registry, host, cli }) = scene("publishers") else { return };
    let falco = component("feature_falco");
    let falco_bytes = std::fs::read(&falco).unwrap();
    let want = format!("sha256:{}", sha256_hex(&falco_bytes));
    let work = dir.join("work");
    std::fs::create_dir_all(&work).unwrap();
    std::fs::copy(&falco, work.join("falco.wasm")).unwrap();

    // wkg → secop.
    let wkg_image = format!("{host}/features/falco-wkg:1");
    run_ok(Command::new(&wkg).current_dir(&work).args(["oci", "push", "--insecure", &host, &wkg_image, "falco.wasm"]));
    assert_eq!(line_value(&cli.ok(&["feature", "pull", &wkg_image]), "component:"), want);
    // oras, with our media types → secop.
    std::fs::write(work.join("config.json"), br#"{"architecture":"wasm","os":"wasip2"}"#).unwrap();
    let oras_image = format!("{host}/features/falco-oras:1");
    run_ok(Command::new(&oras).current_dir(&work).args([
        "push",
        "--plain-http",
        &oras_image,
        "--config",
        "config.json:application/vnd.wasm.config.v1+json",
        "falco.wasm:application/vnd.wasm.content.layer.v1+wasm",
    ]));
    let pulled = cli.ok(&["feature", "pull", &oras_image]);
    assert_eq!(line_value(&pulled, "component:"), want);
    assert!(pulled.contains("pulled feature falco"), "{pulled}");

    // secop → wkg and oras.
    let ours = format!("{host}/features/falco-secop:1");
    let ours_wkg = format!("{host}/features/falco-secop-wkg:1");
    cli.ok(&["feature", "push", falco.to_str().unwrap(), &ours]);
    cli.ok(&["feature", "push", falco.to_str().unwrap(), &ours_wkg, "--wkg-layout"]);
    let out = work.join("from-wkg.wasm");
    run_ok(Command::new(&wkg).args(["oci", "pull", "--insecure", &host, &ours_wkg, "-o", out.to_str().unwrap()]));
    assert_eq!(std::fs::read(&out).unwrap(), falco_bytes, "wkg pulls the bytes secop pushed");
    for image in [&ours, &ours_wkg] {
        let oras_out = work.join(format!("from-oras-{}", image.len()));
        run_ok(Command::new(&oras).args(["pull", "--plain-http", image, "-o", oras_out.to_str().unwrap()]));
        assert_eq!(std::fs::read(oras_out.join("falco.wasm")).unwrap(), falco_bytes, "oras writes the titled layer");
    }
    registry.stop();
}
