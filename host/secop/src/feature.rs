//! `secop feature list | new | push | pull | inspect | test`: the built-in
//! modules, and the feature author's side: a new module's project, and
//! modules in OCI registries.
//!
//! Every command checks a module the way the operator will: `push` refuses
//! what the runtime would refuse (not a component, another contract), so a
//! broken module fails on the author's machine, not in a cluster.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context as _, Result};
use clap::{Args, Subcommand};
use secop_oci::signature::SignerSet;
use secop_oci::{
    Credentials, Enforcement, Layout, ModuleStore, PullPolicy, SignatureState, SigningKey, Source, TrustedKey,
    Verification,
};
use secop_runtime::{Module, Runtime};
use serde_json::json;

#[derive(Subcommand, Debug)]
pub enum FeatureCommand {
    /// List the built-in modules embedded in this binary (offline).
    List {
        #[arg(short = 'o', long = "output", value_enum, default_value_t = ListFormat::Table)]
        output: ListFormat,
    },
    /// Write a new feature module's project (Rust or Python) against the
    /// contract, ready to build and to pass `test --conformance`.
    New {
        /// The feature's id (lower case, digits, `_`), as SecurityAgents name it.
        name: String,
        #[arg(long, value_enum)]
        lang: crate::scaffold::Lang,
        /// Where (default: ./NAME); must not exist or be empty.
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Check a component and push it to a registry with our media types.
    Push {
        /// The component (.wasm, built for wasm32-wasip2).
        file: PathBuf,
        /// `registry/repo:tag`.
        image: String,
        /// Write the wkg layout (`application/wasm` layer) instead of ours.
        #[arg(long)]
        wkg_layout: bool,
        /// Sign the pushed manifest with this key (as `sign` does) and
        /// attach its provenance, signed with the same key (as `cosign
        /// attest --type slsaprovenance1` would): source, builder, contract
        /// version and the component's sha256.
        #[arg(long = "signing-key", value_name = "FILE")]
        signing_key: Option<PathBuf>,
        #[command(flatten)]
        provenance: ProvenanceArgs,
        #[command(flatten)]
        registry: RegistryArgs,
    },
    /// Fetch a module (checking its digest) into the cache, and optionally a file.
    Pull {
        image: String,
        /// Expected sha256 of the component.
        #[arg(long)]
        sha256: Option<String>,
        /// Also write the component here.
        #[arg(short = 'o', long)]
        output: Option<PathBuf>,
        #[command(flatten)]
        registry: RegistryArgs,
    },
    /// Sign a module in a registry with a cosign key, as `cosign sign
    /// --key` does (the signature goes under the manifest's `.sig` tag,
    /// beside any already there); `cosign verify --key` accepts it.
    Sign {
        /// `registry/repo:tag` or `registry/repo@sha256:...`.
        image: String,
        /// The private key: a cosign key file (`cosign.key`, its password in
        /// COSIGN_PASSWORD) or an unencrypted PKCS#8 PEM.
        #[arg(long = "signing-key", value_name = "FILE")]
        signing_key: PathBuf,
        #[command(flatten)]
        registry: RegistryArgs,
    },
    /// Check a module's signatures against public keys (`--key`, as
    /// `cosign verify --key`) and print who signed it; exit 1 when none of
    /// the keys did.
    Verify {
        image: String,
        /// Also require provenance, signed by one of the keys, whose
        /// builder id is this (e.g. your CI workflow's).
        #[arg(long = "require-builder", value_name = "ID")]
        require_builder: Option<String>,
        /// Also require provenance, signed by one of the keys, whose source
        /// repository is this (`git+https://...`, as recorded on push).
        #[arg(long = "require-source", value_name = "URI")]
        require_source: Option<String>,
        #[command(flatten)]
        registry: RegistryArgs,
    },
    /// Write a new signing key pair, as `cosign generate-key-pair` does:
    /// `cosign.key` (encrypted with COSIGN_PASSWORD) and `cosign.pub`.
    Keygen {
        /// Where to write them (default: the current directory); existing
        /// files are not overwritten.
        #[arg(long, default_value = ".")]
        dir: PathBuf,
    },
    /// Print a module's id, priority, contract version and digests.
    Inspect {
        /// A component file, `builtin:<id>` (or a built-in id alone), or an
        /// image reference.
        module: String,
        #[command(flatten)]
        registry: RegistryArgs,
    },
    /// Configure and contribute, as a reconcile would, and print the objects.
    Test {
        /// A component file, `builtin:<id>` (or a built-in id alone), or an
        /// image reference.
        module: String,
        /// The feature's `config` (YAML or JSON); none = the feature's defaults.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Check the contract rules every module must keep (deterministic
        /// output, objects the operator admits, default limits, errors and
        /// unknown fields named, a readiness condition from `assess`) and
        /// print a pass/fail table; exit 1 when one fails.
        #[arg(long)]
        conformance: bool,
        #[command(flatten)]
        registry: RegistryArgs,
    },
}

/// What `push --signing-key` records as the module's provenance. Source
/// and commit default to the git work tree the component file is in.
#[derive(Args, Debug)]
pub struct ProvenanceArgs {
    /// Who built the module (a URI; your CI workflow's, in CI). Default:
    /// this CLI, i.e. built on the author's machine.
    #[arg(long = "builder-id", value_name = "URI", requires = "signing_key")]
    builder_id: Option<String>,
    /// The source repository (default: the work tree's `origin` remote).
    #[arg(long = "source-uri", value_name = "URI", requires = "signing_key")]
    source_uri: Option<String>,
    /// The source commit (default: the work tree's HEAD).
    #[arg(long = "source-commit", value_name = "SHA", requires = "signing_key")]
    source_commit: Option<String>,
}

impl ProvenanceArgs {
    /// The provenance of `module`, read from `file` (pushed as-is).
    fn provenance(&self, file: &Path, module: &Module) -> secop_oci::Provenance {
        let work_tree = file.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
        let git = |args: &[&str]| {
            let out = std::process::Command::new("git").arg("-C").arg(work_tree).args(args).output().ok()?;
            out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
        };
        let commit = self.source_commit.clone().or_else(|| git(&["rev-parse", "HEAD"]));
        let uri = self.source_uri.clone().or_else(|| {
            let remote = git(&["config", "--get", "remote.origin.url"]).filter(|r| !r.is_empty())?;
            Some(if remote.starts_with("git+") { remote } else { format!("git+{remote}") })
        });
        // Dirty only says something about the commit it was read from.
        let dirty = (self.source_commit.is_none() && commit.is_some())
            .then(|| git(&["status", "--porcelain"]).map(|s| !s.is_empty()))
            .flatten();
        secop_oci::Provenance {
            builder_id: self.builder_id.clone().unwrap_or_else(|| {
                format!("https://security.example.io/secop/feature-push@v{}", env!("CARGO_PKG_VERSION"))
            }),
            build_type: secop_oci::provenance::BUILD_TYPE.into(),
            source_uri: uri,
            source_commit: commit,
            source_dirty: dirty,
            feature: Some(module.metadata.id.clone()),
            contract_version: Some(module.metadata.contract_version.clone()),
            component_sha256: Some(module.digest.clone()),
        }
    }
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum ListFormat {
    Table,
    Json,
}

/// How a module named on the command line is read: `builtin:falco` (or
/// `falco`, a built-in id that is no file) is the embedded module; an
/// existing path is a file; anything else an image reference.
const BUILTIN_PREFIX: &str = "builtin:";

#[derive(Args, Debug)]
pub struct RegistryArgs {
    /// A registry (`host:port`) reached over plain HTTP (repeatable; for loopback registries).
    #[arg(long = "plain-http", value_name = "HOST:PORT")]
    plain_http: Vec<String>,
    #[arg(long, env = "SECOP_REGISTRY_USERNAME")]
    username: Option<String>,
    #[arg(long, env = "SECOP_REGISTRY_PASSWORD", hide_env_values = true)]
    password: Option<String>,
    /// A public key (PEM, e.g. cosign.pub) that must have signed the module
    /// (repeatable: any one of them); the signature is checked before the
    /// module is read.
    #[arg(long = "key", value_name = "FILE")]
    keys: Vec<PathBuf>,
}

impl RegistryArgs {
    fn credentials(&self) -> Credentials {
        match (&self.username, &self.password) {
            (Some(u), Some(p)) => Credentials::Basic { username: u.clone(), password: p.clone() },
            _ => Credentials::Anonymous,
        }
    }

    /// The keys `--key` names.
    fn trusted_keys(&self) -> Result<Vec<TrustedKey>> {
        self.keys
            .iter()
            .map(|path| {
                let pem = std::fs::read(path).with_context(|| format!("--key {}", path.display()))?;
                Ok(TrustedKey::from_pem(path.display().to_string(), &pem)?)
            })
            .collect()
    }

    /// The signature check `--key` asks for (None without one).
    fn verification(&self) -> Result<Option<Verification>> {
        if self.keys.is_empty() {
            return Ok(None);
        }
        let keys = self.trusted_keys()?;
        Ok(Some(Verification {
            sets: vec![SignerSet { required_by: "--key".into(), keys }],
            enforcement: Enforcement::Enforce,
        }))
    }
}

/// A private key file (a cosign key, its password in COSIGN_PASSWORD).
fn read_signing_key(path: &Path) -> Result<SigningKey> {
    let pem = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(SigningKey::from_pem(&path.display().to_string(), &pem, &cosign_password())?)
}

/// `image` pinned to manifest `digest` (`registry/repo@sha256:...`).
fn pinned_image(image: &str, digest: &str) -> String {
    let repository = image.split('@').next().unwrap_or(image);
    // A `:` after the last `/` starts the tag (not a registry's port).
    let repository = match repository.rfind(':') {
        Some(colon) if colon > repository.rfind('/').unwrap_or(0) => &repository[..colon],
        _ => repository,
    };
    format!("{repository}@{digest}")
}

/// The verified provenance of a fetched module; a statement that names
/// another component than the one the manifest holds is an error, not
/// provenance (a signer vouched for other bytes).
fn checked_provenance<'a>(
    report: &'a secop_oci::ProvenanceReport,
    fetched: &secop_oci::Fetched,
) -> Result<Vec<&'a secop_oci::VerifiedProvenance>> {
    for found in &report.verified {
        if let Some(component) = found.provenance.component_sha256.as_ref().filter(|c| **c != fetched.sha256) {
            anyhow::bail!(
                "the provenance signed by {} names component sha256:{component}, but manifest {} holds sha256:{}",
                found.signer,
                fetched.manifest_digest,
                fetched.sha256
            );
        }
    }
    Ok(report.verified.iter().collect())
}

/// The password of an encrypted key file, as cosign reads it.
fn cosign_password() -> Vec<u8> {
    std::env::var("COSIGN_PASSWORD").unwrap_or_default().into_bytes()
}

/// What errors call a module given only by image: its repository's last
/// segment (`registry/features/falco:0.2.0` → `falco`).
fn name_of(image: &str) -> String {
    let path = image.split('@').next().unwrap_or(image);
    let last = path.rsplit('/').next().unwrap_or(path);
    last.split(':').next().unwrap_or(last).to_string()
}

/// A private key file, readable by its owner only.
fn write_private(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    file.write_all(bytes).with_context(|| format!("writing {}", path.display()))
}

/// Print, and stop quietly when the reader went away (`| head`).
fn emit(text: &str) -> Result<()> {
    use std::io::Write as _;
    match std::io::stdout().lock().write_all(text.as_bytes()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => Ok(other?),
    }
}

/// Where a module named on the command line came from.
enum Origin {
    BuiltIn,
    File,
    Registry(secop_oci::Fetched),
}

/// A module named on the command line: a built-in (`builtin:<id>`, or an
/// id alone that is no file), a file if one exists there, otherwise an
/// image reference (which has a registry host: a bare name is never sent
/// to Docker Hub).
async fn resolve(module: &str, registry: &RegistryArgs, store: &ModuleStore) -> Result<(String, Vec<u8>, Origin)> {
    let builtin_id = module.strip_prefix(BUILTIN_PREFIX).or_else(|| {
        let bare = !module.contains(['/', ':', '@', '.']);
        (bare && !Path::new(module).exists()).then_some(module)
    });
    if let Some(id) = builtin_id {
        let bytes = secop_builtin::module(id).with_context(|| {
            let ids: Vec<&str> = secop_builtin::MODULES.iter().map(|(id, _)| *id).collect();
            format!("`{module}`: no built-in feature `{id}` (built in: {}; a file path or an image reference with its registry also works)", ids.join(", "))
        })?;
        return Ok((format!("{BUILTIN_PREFIX}{id}"), bytes.to_vec(), Origin::BuiltIn));
    }
    if Path::new(module).is_file() {
        let bytes = std::fs::read(module).with_context(|| format!("reading {module}"))?;
        return Ok((module.to_string(), bytes, Origin::File));
    }
    let source = Source {
        feature: name_of(module),
        image: module.to_string(),
        sha256: None,
        pull_policy: PullPolicy::Always,
        credentials: registry.credentials(),
        verify: registry.verification()?,
    };
    let fetched = store.fetch(&source).await?;
    Ok((module.to_string(), fetched.bytes.clone(), Origin::Registry(fetched)))
}

/// What `list` and `inspect` say about a module's signature: built-in
/// modules are trusted by being compiled into this binary; a registry
/// module's is checked with `--key`.
fn signature_state(origin: &Origin) -> String {
    match origin {
        Origin::BuiltIn => "built in (embedded in this binary; no signature needed)".into(),
        Origin::File => "a local file (not signed)".into(),
        Origin::Registry(fetched) => match &fetched.signature {
            SignatureState::NotVerified => "not checked (give --key to verify)".into(),
            SignatureState::Verified(signers) => {
                format!("signed by {}", signers.iter().map(ToString::to_string).collect::<Vec<_>>().join(", "))
            }
            SignatureState::Refused { message, .. } => format!("refused: {message}"),
        },
    }
}

/// `secop feature list`: every embedded module, loaded as the operator
/// loads it.
fn list(runtime: &Runtime, output: ListFormat) -> Result<String> {
    let mut rows = vec![];
    for (id, bytes) in secop_builtin::MODULES {
        let module = load(runtime, &format!("{BUILTIN_PREFIX}{id}"), bytes)?;
        let m = &module.metadata;
        rows.push(json!({
            "id": m.id,
            "priority": m.priority,
            "contractVersion": m.contract_version,
            "componentDigest": format!("sha256:{}", module.digest),
            "size": bytes.len(),
            "signature": signature_state(&Origin::BuiltIn),
        }));
    }
    Ok(match output {
        ListFormat::Json => serde_json::to_string_pretty(&rows)? + "\n",
        ListFormat::Table => {
            let mut out =
                format!("{:<16} {:>8} {:<9} {:<71} {:>8}  SIGNATURE\n", "ID", "PRIORITY", "CONTRACT", "DIGEST", "SIZE");
            for row in &rows {
                out.push_str(&format!(
                    "{:<16} {:>8} {:<9} {:<71} {:>8}  {}\n",
                    row["id"].as_str().unwrap_or_default(),
                    row["priority"].as_u64().unwrap_or_default(),
                    row["contractVersion"].as_str().unwrap_or_default(),
                    row["componentDigest"].as_str().unwrap_or_default(),
                    row["size"].as_u64().unwrap_or_default(),
                    row["signature"].as_str().unwrap_or_default(),
                ));
            }
            out
        }
    })
}

fn load(runtime: &Runtime, name: &str, bytes: &[u8]) -> Result<Module> {
    runtime.load(name, bytes).map_err(|e| anyhow::anyhow!("{e}"))
}

pub fn run(command: &FeatureCommand, cache_dir: Option<PathBuf>) -> Result<ExitCode> {
    if let FeatureCommand::New { name, lang, dir } = command {
        let (dir, files) = crate::scaffold::create(name, *lang, dir.as_deref())?;
        for file in files {
            println!("wrote {}", file.display());
        }
        println!("next: the commands in {}", dir.join("README.md").display());
        return Ok(ExitCode::SUCCESS);
    }
    let cache =
        cache_dir.clone().unwrap_or_else(|| std::env::temp_dir().join(format!("secop-modules-{}", std::process::id())));
    let runtime = Arc::new(Runtime::new(cache_dir.clone()).map_err(anyhow::Error::msg)?);
    let tokio = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    let store = |registry: &RegistryArgs| ModuleStore::new(cache.join("oci"), registry.plain_http.clone());
    match command {
        FeatureCommand::New { .. } => unreachable!("handled above"),
        FeatureCommand::List { output } => {
            emit(&list(&runtime, *output)?)?;
            Ok(ExitCode::SUCCESS)
        }
        FeatureCommand::Push { file, image, wkg_layout, signing_key, provenance, registry } => {
            // The key is read before anything is pushed: a wrong password
            // leaves no unsigned module behind.
            let key = signing_key.as_deref().map(read_signing_key).transpose()?;
            let bytes = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
            let module = load(&runtime, &file.display().to_string(), &bytes)?;
            let annotations = BTreeMap::from([
                (secop_oci::ANNOTATION_FEATURE.to_string(), module.metadata.id.clone()),
                (secop_oci::ANNOTATION_CONTRACT.to_string(), module.metadata.contract_version.clone()),
                (secop_oci::ANNOTATION_PRIORITY.to_string(), module.metadata.priority.to_string()),
                ("org.opencontainers.image.description".to_string(), module.metadata.description.clone()),
            ]);
            let layout = if *wkg_layout { Layout::Wkg } else { Layout::Secop };
            let digest =
                tokio.block_on(store(registry).push(image, &bytes, annotations, layout, &registry.credentials()))?;
            println!(
                "pushed feature {} (contract {}) to {image}",
                module.metadata.id, module.metadata.contract_version
            );
            println!("manifest: {digest}");
            println!("component: sha256:{}", module.digest);
            if let Some(key) = key {
                // Signed and attested by digest: a tag moved meanwhile
                // does not get our signature.
                let pinned = pinned_image(image, &digest);
                let store = store(registry);
                let (_, tag) = tokio.block_on(store.sign(&pinned, &key, &registry.credentials()))?;
                println!("signature: {tag}");
                let provenance = provenance.provenance(file, &module);
                let tag = tokio.block_on(store.attest(&pinned, &digest, &key, &provenance, &registry.credentials()))?;
                println!("provenance: {tag} ({provenance})");
            }
            Ok(ExitCode::SUCCESS)
        }
        FeatureCommand::Sign { image, signing_key, registry } => {
            let key = read_signing_key(signing_key)?;
            let (digest, tag) = tokio.block_on(store(registry).sign(image, &key, &registry.credentials()))?;
            println!("signed {image}");
            println!("manifest: {digest}");
            println!("signature: {tag}");
            Ok(ExitCode::SUCCESS)
        }
        FeatureCommand::Verify { image, require_builder, require_source, registry } => {
            if registry.keys.is_empty() {
                anyhow::bail!("verify needs at least one --key (a PEM public key, e.g. cosign.pub)");
            }
            let store = store(registry);
            let (_, _, origin) = tokio.block_on(resolve(image, registry, &store))?;
            let Origin::Registry(fetched) = &origin else {
                anyhow::bail!("`{image}` is not an image reference: only modules in a registry carry signatures");
            };
            println!("{image}: {}", signature_state(&origin));
            println!("manifest: {}", fetched.manifest_digest);
            println!("component: sha256:{}", fetched.sha256);
            let report = tokio.block_on(store.provenance(
                image,
                &fetched.manifest_digest,
                &registry.trusted_keys()?,
                &registry.credentials(),
            ))?;
            let provenance = checked_provenance(&report, fetched)?;
            for found in &provenance {
                println!("provenance: {} (signed by {})", found.provenance, found.signer);
            }
            if require_builder.is_some() || require_source.is_some() {
                let matches = |p: &secop_oci::Provenance| {
                    require_builder.as_ref().is_none_or(|b| *b == p.builder_id)
                        && require_source.as_ref().is_none_or(|s| Some(s) == p.source_uri.as_ref())
                };
                if !provenance.iter().any(|found| matches(&found.provenance)) {
                    let wanted = [("builder", require_builder), ("source", require_source)]
                        .iter()
                        .filter_map(|(what, v)| v.as_ref().map(|v| format!("{what} {v}")))
                        .collect::<Vec<_>>()
                        .join(" and ");
                    let seen: Vec<String> = provenance.iter().map(|f| f.provenance.to_string()).collect();
                    anyhow::bail!(
                        "{image} ({}): no provenance signed by --key with {wanted}; found {}{}",
                        fetched.manifest_digest,
                        if seen.is_empty() { "none".to_string() } else { seen.join("; ") },
                        if report.other > 0 {
                            format!(
                                " (and {} attestation(s) not by --key, for another digest or unreadable)",
                                report.other
                            )
                        } else {
                            String::new()
                        }
                    );
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        FeatureCommand::Keygen { dir } => {
            let (private, public) = (dir.join("cosign.key"), dir.join("cosign.pub"));
            for path in [&private, &public] {
                if path.exists() {
                    anyhow::bail!("{} exists; not overwritten", path.display());
                }
            }
            let key = SigningKey::generate()?;
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            write_private(&private, key.to_encrypted_pem(&cosign_password())?.as_bytes())?;
            std::fs::write(&public, key.public_key_pem()?).with_context(|| format!("writing {}", public.display()))?;
            println!("wrote {} (encrypted with COSIGN_PASSWORD) and {}", private.display(), public.display());
            Ok(ExitCode::SUCCESS)
        }
        FeatureCommand::Pull { image, sha256, output, registry } => {
            let source = Source {
                feature: name_of(image),
                image: image.clone(),
                sha256: sha256.clone(),
                pull_policy: PullPolicy::Always,
                credentials: registry.credentials(),
                verify: registry.verification()?,
            };
            let fetched = tokio.block_on(store(registry).fetch(&source))?;
            let module = load(&runtime, image, &fetched.bytes)?;
            if let Some(path) = output {
                std::fs::write(path, &fetched.bytes).with_context(|| format!("writing {}", path.display()))?;
            }
            println!("pulled feature {} from {image} ({:?})", module.metadata.id, fetched.origin);
            println!("manifest: {}", fetched.manifest_digest);
            println!("component: sha256:{}", fetched.sha256);
            println!("signature: {}", signature_state(&Origin::Registry(fetched.clone())));
            Ok(ExitCode::SUCCESS)
        }
        FeatureCommand::Inspect { module, registry } => {
            let (name, bytes, origin) = tokio.block_on(resolve(module, registry, &store(registry)))?;
            let loaded = load(&runtime, &name, &bytes)?;
            let m = &loaded.metadata;
            let fetched = match &origin {
                Origin::Registry(fetched) => Some(fetched),
                Origin::BuiltIn | Origin::File => None,
            };
            let provenance = match fetched {
                None => json!("none (not from a registry)"),
                Some(_) if registry.keys.is_empty() => json!("not checked (give --key to verify)"),
                Some(fetched) => {
                    let report = tokio.block_on(store(registry).provenance(
                        module,
                        &fetched.manifest_digest,
                        &registry.trusted_keys()?,
                        &registry.credentials(),
                    ))?;
                    let verified = checked_provenance(&report, fetched)?;
                    json!({
                        "verified": verified.iter().map(|v| {
                            let mut entry = serde_json::to_value(&v.provenance).expect("json");
                            entry["signer"] = json!(v.signer.to_string());
                            entry
                        }).collect::<Vec<_>>(),
                        "otherAttestations": report.other,
                    })
                }
            };
            let out = json!({
                "source": name,
                "id": m.id,
                "priority": m.priority,
                "contractVersion": m.contract_version,
                "conditionType": m.condition_type,
                "description": m.description,
                "componentDigest": format!("sha256:{}", loaded.digest),
                "manifestDigest": fetched.as_ref().map(|f| f.manifest_digest.clone()),
                "annotations": fetched.as_ref().map(|f| f.annotations.clone()),
                "size": bytes.len(),
                "signature": signature_state(&origin),
                "provenance": provenance,
            });
            emit(&serde_yaml::to_string(&out)?)?;
            Ok(ExitCode::SUCCESS)
        }
        FeatureCommand::Test { module, config, conformance, registry } => {
            let (name, bytes, _) = tokio.block_on(resolve(module, registry, &store(registry)))?;
            let loaded = load(&runtime, &name, &bytes)?;
            let config: Option<serde_json::Value> = match config {
                Some(path) => Some(
                    serde_yaml::from_str(
                        &std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?,
                    )
                    .with_context(|| format!("{}: not YAML/JSON", path.display()))?,
                ),
                None => None,
            };
            let mut engine_registry = secop_engine::Registry::with_builtins(runtime.clone())
                .map_err(|e| anyhow::anyhow!("built-in feature `{}`: {}", e.feature, e.error))?;
            if *conformance {
                let checks = crate::conformance::checks(&mut engine_registry, loaded, config)?;
                emit(&crate::conformance::table(&checks))?;
                return Ok(if checks.iter().all(|c| c.passed) { ExitCode::SUCCESS } else { ExitCode::FAILURE });
            }
            let id = loaded.metadata.id.clone();
            let agent = crate::conformance::agent_for(&id, config.unwrap_or(json!({})))?;
            engine_registry.insert(loaded);
            let rendered = secop_engine::render(&engine_registry, &agent, &Default::default())
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            let failures: Vec<String> = rendered.failed().filter_map(|f| f.error_line()).collect();
            for line in &failures {
                eprintln!("error: {line}");
            }
            let objects: Vec<&serde_json::Value> = rendered
                .objects
                .iter()
                .filter(|(k, _)| rendered.owners.get(k).is_some_and(|o| *o == id))
                .map(|(_, v)| v)
                .collect();
            if failures.is_empty() {
                let mut out = String::new();
                for object in objects {
                    out.push_str(&format!("---\n{}", serde_yaml::to_string(object)?));
                }
                emit(&out)?;
            }
            Ok(if failures.is_empty() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
        }
    }
}
