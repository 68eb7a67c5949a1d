//! Feature modules from OCI registries.
//!
//! A feature author pushes a WebAssembly component as an OCI artifact; a
//! `SecurityAgent` names it in `features[].module.image`. This crate pulls
//! it (either wasm layout), checks its digest, and keeps it in an on-disk
//! cache addressed by the component's sha256, so a restarted operator can
//! start from the cache while the registry is down. Loading and checking
//! the component itself (is it a component, which contract) is the
//! runtime's job; this crate only moves verified bytes.
//!
//! Cache layout under the cache directory:
//! - `blobs/<sha256>.wasm`: component bytes, named by their own digest and
//!   re-verified on every read (a corrupted file is a miss, not a module);
//! - `refs/<sha256 of the image reference and credential scope>.json`:
//!   what a reference resolved to last time (manifest digest, component
//!   digest) for those credentials. A reference resolved with one tenant's
//!   pull secret is not served from the cache to anyone with other (or no)
//!   credentials: they must ask the registry, which decides;
//! - `sigs/<manifest digest hex>.json`: the signatures last read for a
//!   manifest ([`signature::FoundSignature`]), checked again against the
//!   current keys on every fetch that requires them, so a module verified
//!   once still starts while the registry is unreachable, and a key removed
//!   from the policy stops it.

pub mod provenance;
pub mod signature;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use std::time::Duration;

use futures::TryStreamExt as _;
use oci_client::client::{ClientConfig, ClientProtocol, Config, ImageLayer};
use oci_client::manifest::{OciDescriptor, OciImageManifest, WASM_CONFIG_MEDIA_TYPE, WASM_LAYER_MEDIA_TYPE};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};
pub use provenance::{Provenance, ProvenanceReport, VerifiedProvenance};
use secop_api::Reason;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
pub use signature::{Enforcement, FoundSignature, Signer, SigningKey, TrustedKey, Verification};

/// The layer of the CNCF TAG Runtime layout (what `wkg oci push` writes).
pub const WKG_LAYER_MEDIA_TYPE: &str = "application/wasm";
/// Its config media type.
pub const WKG_CONFIG_MEDIA_TYPE: &str = "application/vnd.wasm.config.v0+json";
/// Manifest annotations `secop feature push` writes (read by `inspect`).
pub const ANNOTATION_FEATURE: &str = "io.example.security.feature.id";
pub const ANNOTATION_CONTRACT: &str = "io.example.security.feature.contract";
pub const ANNOTATION_PRIORITY: &str = "io.example.security.feature.priority";
pub const ANNOTATION_COMPONENT_DIGEST: &str = "io.example.security.component.sha256";

/// When to ask the registry (compare Kubernetes' imagePullPolicy).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PullPolicy {
    /// Use the cached resolution of the reference when there is one.
    #[default]
    IfNotPresent,
    /// Resolve the reference on every fetch (a moved tag is noticed); fall
    /// back to the cache only when the registry cannot be reached.
    Always,
}

#[derive(Clone, Default)]
pub enum Credentials {
    #[default]
    Anonymous,
    Basic {
        username: String,
        password: String,
    },
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Credentials::Anonymous => f.write_str("Anonymous"),
            Credentials::Basic { username, .. } => write!(f, "Basic({username}, <redacted>)"),
        }
    }
}

impl Credentials {
    /// Who is asking, for keying cached resolutions: `anonymous`, or a
    /// hash of the credentials (never the credentials themselves).
    fn scope(&self) -> String {
        match self {
            Credentials::Anonymous => "anonymous".into(),
            Credentials::Basic { username, password } => {
                format!("basic:{}", sha256_hex(format!("{username}:{password}").as_bytes()))
            }
        }
    }

    fn auth(&self) -> RegistryAuth {
        match self {
            Credentials::Anonymous => RegistryAuth::Anonymous,
            Credentials::Basic { username, password } => RegistryAuth::Basic(username.clone(), password.clone()),
        }
    }

    /// The credentials for `registry` in a `.dockerconfigjson` document
    /// (`auths.<registry>.auth` = base64 `user:password`, or
    /// `username`/`password`). Anonymous when the registry is not listed.
    pub fn from_dockerconfigjson(json: &[u8], registry: &str) -> Result<Self, DockerConfigError> {
        use base64::Engine as _;
        let doc: serde_json::Value =
            serde_json::from_slice(json).map_err(|e| DockerConfigError::NotJson(e.to_string()))?;
        let auths = doc.get("auths").and_then(|a| a.as_object()).ok_or(DockerConfigError::NoAuths)?;
        let entry = auths.iter().find(|(key, _)| {
            let key = key.trim_start_matches("https://").trim_start_matches("http://");
            key == registry || key.split('/').next() == Some(registry)
        });
        let Some((_, entry)) = entry else { return Ok(Credentials::Anonymous) };
        if let (Some(u), Some(p)) =
            (entry.get("username").and_then(|v| v.as_str()), entry.get("password").and_then(|v| v.as_str()))
        {
            return Ok(Credentials::Basic { username: u.to_string(), password: p.to_string() });
        }
        let registry = registry.to_string();
        let encoded = entry
            .get("auth")
            .and_then(|v| v.as_str())
            .ok_or_else(|| DockerConfigError::NoCredentials { registry: registry.clone() })?;
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .map_err(|e| DockerConfigError::NotBase64 { registry: registry.clone(), cause: e.to_string() })?;
        let decoded =
            String::from_utf8(decoded).map_err(|_| DockerConfigError::NotUtf8 { registry: registry.clone() })?;
        let (u, p) = decoded.split_once(':').ok_or(DockerConfigError::NotUserPassword { registry })?;
        Ok(Credentials::Basic { username: u.to_string(), password: p.to_string() })
    }
}

/// What is wrong with a `.dockerconfigjson` document, naming the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DockerConfigError {
    #[error("not a .dockerconfigjson document: {0}")]
    NotJson(String),
    #[error("no `auths` object in .dockerconfigjson")]
    NoAuths,
    #[error("auths.{registry}: neither `auth` nor `username`/`password`")]
    NoCredentials { registry: String },
    #[error("auths.{registry}.auth: not base64: {cause}")]
    NotBase64 { registry: String, cause: String },
    #[error("auths.{registry}.auth: not UTF-8")]
    NotUtf8 { registry: String },
    #[error("auths.{registry}.auth: not `user:password`")]
    NotUserPassword { registry: String },
}

/// An image reference that does not parse.
#[derive(Debug, thiserror::Error)]
#[error("`{image}` is not a valid image reference: {cause}")]
pub struct ReferenceError {
    pub image: String,
    pub cause: oci_client::ParseError,
}

/// The registry host of an image reference (`docker.io` for bare names),
/// the key to look up in a `.dockerconfigjson`.
pub fn registry_of(image: &str) -> Result<String, ReferenceError> {
    let reference: Reference = image.parse().map_err(|cause| ReferenceError { image: image.to_string(), cause })?;
    Ok(reference.registry().to_string())
}

/// What to fetch, for which feature.
#[derive(Debug, Clone)]
pub struct Source {
    /// The feature that asked (named in every error).
    pub feature: String,
    /// `registry/repo:tag` or `registry/repo@sha256:...`.
    pub image: String,
    /// Expected sha256 (hex) of the component bytes.
    pub sha256: Option<String>,
    pub pull_policy: PullPolicy,
    pub credentials: Credentials,
    /// The signatures the module needs; None: not verified.
    pub verify: Option<Verification>,
}

impl Source {
    /// What signing and reading attestations need of a source: the image
    /// and credentials (they verify nothing themselves).
    fn attachments_of(image: &str, credentials: &Credentials) -> Self {
        Self {
            feature: String::new(),
            image: image.to_string(),
            sha256: None,
            pull_policy: PullPolicy::Always,
            credentials: credentials.clone(),
            verify: None,
        }
    }
}

/// What is known about the signature of a fetched module.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SignatureState {
    /// No verification was asked for.
    NotVerified,
    /// Every signer set is satisfied; who signed.
    Verified(Vec<Signer>),
    /// Under [`Enforcement::Warn`]: it runs, though it would be refused.
    Refused { reason: Reason, message: String },
}

/// Where the bytes came from this time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    Registry,
    /// The cached resolution, as the pull policy allows.
    Cache,
    /// The cache, because the registry could not be asked (`reason`).
    CacheRegistryUnavailable {
        reason: String,
    },
}

#[derive(Debug, Clone)]
pub struct Fetched {
    pub bytes: Vec<u8>,
    /// sha256 (hex) of the component bytes.
    pub sha256: String,
    /// `sha256:...` of the manifest the reference resolved to.
    pub manifest_digest: String,
    /// The manifest's annotations (feature id, contract, ... when pushed by us).
    pub annotations: BTreeMap<String, String>,
    pub origin: Origin,
    pub signature: SignatureState,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("feature {feature}: module image `{image}` is not a valid reference: {reason}")]
    Reference { feature: String, image: String, reason: String },
    #[error("feature {feature}: module {image}: registry unreachable and nothing cached: {reason}")]
    Unavailable { feature: String, image: String, reason: String },
    #[error("feature {feature}: module {image}: {reason}")]
    Registry { feature: String, image: String, reason: String },
    #[error(
        "feature {feature}: module {image} has no wasm layer (media types: {found}); expected one `{WASM_LAYER_MEDIA_TYPE}` or `{WKG_LAYER_MEDIA_TYPE}` layer"
    )]
    NoWasmLayer { feature: String, image: String, found: String },
    #[error(
        "feature {feature}: module {image}: digest mismatch: expected sha256:{expected}, the registry served sha256:{actual}"
    )]
    DigestMismatch { feature: String, image: String, expected: String, actual: String },
    #[error(
        "feature {feature}: module {image}: the wasm layer is {size}, over the limit of {limit} bytes (nothing was downloaded beyond it)"
    )]
    TooLarge { feature: String, image: String, size: String, limit: u64 },
    #[error("module cache {path}: {reason}")]
    Cache { path: PathBuf, reason: String },
    #[error("feature {feature}: module {image} (manifest {digest}): {refusal}")]
    Signature { feature: String, image: String, digest: String, refusal: Box<signature::Refusal> },
    #[error("{0}")]
    Key(#[from] signature::KeyError),
}

impl Error {
    /// One word per kind, for condition reasons and metric labels.
    pub fn reason(&self) -> Reason {
        match self {
            Error::Reference { .. } => Reason::InvalidModuleReference,
            Error::Unavailable { .. } => Reason::RegistryUnavailable,
            Error::Registry { .. } => Reason::RegistryError,
            Error::NoWasmLayer { .. } => Reason::NotAWasmArtifact,
            Error::DigestMismatch { .. } => Reason::DigestMismatch,
            Error::TooLarge { .. } => Reason::ModuleTooLarge,
            Error::Cache { .. } => Reason::ModuleCacheError,
            Error::Signature { refusal, .. } => refusal.reason(),
            Error::Key(_) => Reason::VerificationKeyError,
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct RefRecord {
    image: String,
    manifest_digest: String,
    sha256: String,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

fn normalize_pin(pin: &str) -> String {
    pin.trim().trim_start_matches("sha256:").to_ascii_lowercase()
}

/// What one fetch from a registry may cost. A registry is outside the
/// cluster admin's control once a module source is allowed: a hostile or
/// broken one must not hang a reconcile or fill the operator's memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FetchLimits {
    /// Largest wasm layer accepted, checked against the manifest before the
    /// download and again while streaming it.
    pub max_module_bytes: u64,
    /// The whole fetch (manifest and layer); past it the registry counts as
    /// unreachable (the cache may answer).
    pub timeout: Duration,
}

impl Default for FetchLimits {
    fn default() -> Self {
        // The largest built-in-style module, Python with its embedded
        // interpreter, is about 40 MB.
        Self { max_module_bytes: 64 << 20, timeout: Duration::from_secs(60) }
    }
}

/// Pulls, pushes and caches feature modules.
pub struct ModuleStore {
    client: Client,
    cache: PathBuf,
    limits: FetchLimits,
}

impl ModuleStore {
    /// `plain_http`: registries (`host:port`) reached over plain HTTP, for
    /// loopback test registries; every other one is HTTPS.
    pub fn new(cache: PathBuf, plain_http: Vec<String>) -> Self {
        // reqwest without a bundled provider needs a process default; ring,
        // as kube and secop-elastic use. Already installed is fine.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let protocol =
            if plain_http.is_empty() { ClientProtocol::Https } else { ClientProtocol::HttpsExcept(plain_http) };
        let client = Client::new(ClientConfig {
            protocol,
            connect_timeout: Some(Duration::from_secs(10)),
            read_timeout: Some(Duration::from_secs(30)),
            ..Default::default()
        });
        Self { client, cache, limits: FetchLimits::default() }
    }

    pub fn with_limits(mut self, limits: FetchLimits) -> Self {
        self.limits = limits;
        self
    }

    pub fn cache_dir(&self) -> &Path {
        &self.cache
    }

    fn blob_path(&self, sha256: &str) -> PathBuf {
        self.cache.join("blobs").join(format!("{sha256}.wasm"))
    }

    fn ref_path(&self, image: &str, credentials: &Credentials) -> PathBuf {
        self.cache
            .join("refs")
            .join(format!("{}.json", sha256_hex(format!("{image}\n{}", credentials.scope()).as_bytes())))
    }

    fn cached_blob(&self, sha256: &str) -> Option<Vec<u8>> {
        let bytes = std::fs::read(self.blob_path(sha256)).ok()?;
        (sha256_hex(&bytes) == sha256).then_some(bytes)
    }

    fn cached_ref(&self, image: &str, credentials: &Credentials) -> Option<(RefRecord, Vec<u8>)> {
        let record: RefRecord = serde_json::from_slice(&std::fs::read(self.ref_path(image, credentials)).ok()?).ok()?;
        let bytes = self.cached_blob(&record.sha256)?;
        Some((record, bytes))
    }

    /// Write `bytes` to `path` atomically (a reader never sees half a file).
    fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), Error> {
        let fail = |e: std::io::Error| Error::Cache { path: path.to_path_buf(), reason: e.to_string() };
        std::fs::create_dir_all(path.parent().expect("cache paths have a parent")).map_err(fail)?;
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        std::fs::write(&tmp, bytes).map_err(fail)?;
        std::fs::rename(&tmp, path).map_err(fail)
    }

    fn remember(&self, record: &RefRecord, credentials: &Credentials, bytes: &[u8]) -> Result<(), Error> {
        Self::write_atomic(&self.blob_path(&record.sha256), bytes)?;
        Self::write_atomic(
            &self.ref_path(&record.image, credentials),
            &serde_json::to_vec_pretty(record).expect("a record serializes"),
        )
    }

    fn check_pin(source: &Source, actual: &str) -> Result<(), Error> {
        match &source.sha256 {
            Some(pin) if normalize_pin(pin) != actual => Err(Error::DigestMismatch {
                feature: source.feature.clone(),
                image: source.image.clone(),
                expected: normalize_pin(pin),
                actual: actual.to_string(),
            }),
            _ => Ok(()),
        }
    }

    /// The component `source` names: from the cache when the pull policy
    /// allows, else from the registry (then cached); from the cache again
    /// when the registry cannot be reached. The sha256 pin is checked on
    /// every path, including the cache.
    pub async fn fetch(&self, source: &Source) -> Result<Fetched, Error> {
        let reference: Reference = source.image.parse().map_err(|e: oci_client::ParseError| Error::Reference {
            feature: source.feature.clone(),
            image: source.image.clone(),
            reason: e.to_string(),
        })?;
        // The cache is read only when it may answer: first with
        // IfNotPresent, else only once the registry has failed.
        if source.pull_policy == PullPolicy::IfNotPresent
            && let Some((record, bytes)) = self.cached_ref(&source.image, &source.credentials)
        {
            Self::check_pin(source, &record.sha256)?;
            let signature = self.cached_signature(source, &reference, &record.manifest_digest, true).await?;
            return Ok(Self::from_cache(record, bytes, Origin::Cache, signature));
        }
        match self.pull(source, &reference).await {
            Err(Error::Unavailable { feature, image, reason }) => {
                match self.cached_ref(&source.image, &source.credentials) {
                    Some((record, bytes)) => {
                        tracing::warn!(%feature, %image, %reason, "registry unavailable; using the cached module");
                        Self::check_pin(source, &record.sha256)?;
                        let signature =
                            self.cached_signature(source, &reference, &record.manifest_digest, false).await?;
                        let origin = Origin::CacheRegistryUnavailable { reason };
                        Ok(Self::from_cache(record, bytes, origin, signature))
                    }
                    None => Err(Error::Unavailable { feature, image, reason }),
                }
            }
            other => other,
        }
    }

    fn from_cache(record: RefRecord, bytes: Vec<u8>, origin: Origin, signature: SignatureState) -> Fetched {
        Fetched {
            bytes,
            sha256: record.sha256,
            manifest_digest: record.manifest_digest,
            annotations: record.annotations,
            origin,
            signature,
        }
    }

    fn signatures_path(&self, digest: &str) -> PathBuf {
        let hex = digest.split_once(':').map_or(digest, |(_, hex)| hex);
        self.cache.join("sigs").join(format!("{hex}.json"))
    }

    /// The signatures last read for manifest `digest` (none if unreadable).
    fn kept_signatures(&self, digest: &str) -> Vec<FoundSignature> {
        std::fs::read(self.signatures_path(digest))
            .ok()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .unwrap_or_default()
    }

    /// The signature verdict for a module served from the cache: the kept
    /// signatures, checked against the keys of now; when they fall short
    /// and the registry may be asked, the registry's (signed since).
    async fn cached_signature(
        &self,
        source: &Source,
        reference: &Reference,
        digest: &str,
        may_ask_registry: bool,
    ) -> Result<SignatureState, Error> {
        let Some(verification) = &source.verify else { return Ok(SignatureState::NotVerified) };
        let kept = self.kept_signatures(digest);
        if signature::check(digest, &kept, verification).is_ok() || !may_ask_registry {
            return self.verdict(source, digest, &kept, verification);
        }
        let timeout = self.limits.timeout;
        match tokio::time::timeout(timeout, self.fetch_signatures(source, reference, digest)).await {
            Ok(Ok(found)) => self.verdict(source, digest, &found, verification),
            // Unreachable now: the kept signatures decide.
            Ok(Err(Error::Unavailable { .. })) | Err(_) => self.verdict(source, digest, &kept, verification),
            Ok(Err(error)) => Err(error),
        }
    }

    /// `found` against `verification`: the signers, or the refusal (an
    /// error under Enforce, a state under Warn).
    fn verdict(
        &self,
        source: &Source,
        digest: &str,
        found: &[FoundSignature],
        verification: &Verification,
    ) -> Result<SignatureState, Error> {
        match signature::check(digest, found, verification) {
            Ok(signers) => Ok(SignatureState::Verified(signers)),
            Err(refusal) => {
                let error = Error::Signature {
                    feature: source.feature.clone(),
                    image: source.image.clone(),
                    digest: digest.to_string(),
                    refusal: Box::new(refusal),
                };
                match verification.enforcement {
                    Enforcement::Enforce => Err(error),
                    Enforcement::Warn => {
                        tracing::warn!(feature = %source.feature, image = %source.image, "{error} (not enforced)");
                        Ok(SignatureState::Refused { reason: error.reason(), message: error.to_string() })
                    }
                }
            }
        }
    }

    /// The signatures under the `.sig` tag of manifest `digest` in the
    /// module's repository (none when the tag does not exist), bounded in
    /// number and size; each layer's bytes checked against its digest.
    /// Kept in the cache for checks while the registry is unreachable.
    async fn fetch_signatures(
        &self,
        source: &Source,
        reference: &Reference,
        digest: &str,
    ) -> Result<Vec<FoundSignature>, Error> {
        let signature_of = |layer: &OciDescriptor| {
            layer.annotations.as_ref().and_then(|a| a.get(signature::SIGNATURE_ANNOTATION)).cloned()
        };
        let attached = self
            .fetch_attached(
                source,
                reference,
                signature::signature_tag(digest),
                |layer| {
                    layer.media_type == signature::SIMPLE_SIGNING_MEDIA_TYPE
                        && signature_of(layer).is_some()
                        && layer.size >= 0
                        && layer.size as u64 <= signature::MAX_PAYLOAD_BYTES
                },
                signature::MAX_PAYLOAD_BYTES,
            )
            .await?;
        let found: Vec<FoundSignature> = attached
            .into_iter()
            .filter_map(|(layer, payload)| Some(FoundSignature::new(&payload, signature_of(&layer)?)))
            .collect();
        if !found.is_empty() {
            Self::write_atomic(&self.signatures_path(digest), &serde_json::to_vec_pretty(&found).expect("json"))?;
        }
        Ok(found)
    }

    /// What is attached to a manifest under `tag` in its repository
    /// (cosign's `.sig` and `.att`): the layers `wanted` accepts, at most
    /// [`signature::MAX_SIGNATURES`], each read up to `max_bytes` and
    /// checked against its digest (others dropped). None when the tag does
    /// not exist.
    async fn fetch_attached(
        &self,
        source: &Source,
        reference: &Reference,
        tag: String,
        wanted: impl Fn(&OciDescriptor) -> bool,
        max_bytes: u64,
    ) -> Result<Vec<(OciDescriptor, Vec<u8>)>, Error> {
        let (feature, image) = (source.feature.as_str(), source.image.as_str());
        let attached = Reference::with_tag(reference.registry().to_string(), reference.repository().to_string(), tag);
        let auth = source.credentials.auth();
        let manifest = match self.client.pull_image_manifest(&attached, &auth).await {
            Ok((manifest, _)) => manifest,
            Err(e) if is_not_found(&e) => return Ok(vec![]),
            Err(e) => return Err(classify(feature, image, e)),
        };
        let mut found = vec![];
        for layer in manifest.layers.into_iter().filter(|l| wanted(l)).take(signature::MAX_SIGNATURES) {
            let stream =
                self.client.pull_blob_stream(&attached, &layer).await.map_err(|e| classify(feature, image, e))?;
            let bytes = read_capped(stream, max_bytes).await.map_err(|e| Error::Registry {
                feature: feature.to_string(),
                image: image.to_string(),
                reason: format!("reading {}: {e}", attached.whole()),
            })?;
            if let Some(bytes) = bytes.filter(|b| layer.digest == format!("sha256:{}", sha256_hex(b))) {
                found.push((layer, bytes));
            }
        }
        Ok(found)
    }

    async fn pull(&self, source: &Source, reference: &Reference) -> Result<Fetched, Error> {
        let timeout = self.limits.timeout;
        match tokio::time::timeout(timeout, self.pull_bounded(source, reference)).await {
            Ok(result) => result,
            Err(_) => Err(Error::Unavailable {
                feature: source.feature.clone(),
                image: source.image.clone(),
                reason: format!("no complete answer within {timeout:?}"),
            }),
        }
    }

    /// Manifest first, then the one wasm layer it names, streamed: a layer
    /// over the size limit is refused before its download (by its
    /// descriptor) or at the limit (a registry that lies about the size).
    async fn pull_bounded(&self, source: &Source, reference: &Reference) -> Result<Fetched, Error> {
        let (feature, image) = (source.feature.clone(), source.image.clone());
        let auth = source.credentials.auth();
        let (manifest, manifest_digest) =
            self.client.pull_image_manifest(reference, &auth).await.map_err(|e| classify(&feature, &image, e))?;
        let wasm: Vec<&OciDescriptor> = manifest
            .layers
            .iter()
            .filter(|l| l.media_type == WASM_LAYER_MEDIA_TYPE || l.media_type == WKG_LAYER_MEDIA_TYPE)
            .collect();
        let [layer] = wasm.as_slice() else {
            let found = manifest.layers.iter().map(|l| l.media_type.as_str()).collect::<Vec<_>>().join(", ");
            return Err(Error::NoWasmLayer { feature, image, found });
        };
        // The signature covers the manifest digest, and the manifest names
        // the layer by digest: checked before a byte of the module is read.
        let signature = match &source.verify {
            None => SignatureState::NotVerified,
            Some(verification) => {
                let found = self.fetch_signatures(source, reference, &manifest_digest).await?;
                self.verdict(source, &manifest_digest, &found, verification)?
            }
        };
        let limit = self.limits.max_module_bytes;
        if layer.size < 0 || layer.size as u64 > limit {
            return Err(Error::TooLarge {
                feature,
                image,
                size: format!("{} bytes (per its manifest)", layer.size),
                limit,
            });
        }
        let stream =
            self.client.pull_blob_stream(reference, *layer).await.map_err(|e| classify(&feature, &image, e))?;
        let read = read_capped(stream, limit).await.map_err(|e| Error::Registry {
            feature: feature.clone(),
            image: image.clone(),
            reason: format!("reading the wasm layer: {e}"),
        })?;
        let Some(bytes) = read else {
            return Err(Error::TooLarge {
                feature,
                image,
                size: format!("more than the {} bytes its manifest declares", layer.size),
                limit,
            });
        };
        let sha256 = sha256_hex(&bytes);
        if layer.digest != format!("sha256:{sha256}") {
            return Err(Error::DigestMismatch {
                feature,
                image,
                expected: layer.digest.trim_start_matches("sha256:").into(),
                actual: sha256,
            });
        }
        Self::check_pin(source, &sha256)?;
        if let Some(pinned) = reference.digest()
            && pinned != manifest_digest
        {
            return Err(Error::DigestMismatch {
                feature,
                image,
                expected: pinned.trim_start_matches("sha256:").into(),
                actual: manifest_digest.trim_start_matches("sha256:").into(),
            });
        }
        let annotations = manifest.annotations.clone().unwrap_or_default();
        let record = RefRecord {
            image: source.image.clone(),
            manifest_digest: manifest_digest.clone(),
            sha256: sha256.clone(),
            annotations: annotations.clone(),
        };
        self.remember(&record, &source.credentials, &bytes)?;
        Ok(Fetched { bytes, sha256, manifest_digest, annotations, origin: Origin::Registry, signature })
    }

    /// Push `component` to `image` in our layout (or wkg's, for tests and
    /// for authors who publish with wkg), with `annotations` on the
    /// manifest. Returns the manifest digest.
    pub async fn push(
        &self,
        image: &str,
        component: &[u8],
        annotations: BTreeMap<String, String>,
        layout: Layout,
        credentials: &Credentials,
    ) -> Result<String, Error> {
        let fail = |reason: String| Error::Registry {
            feature: annotations.get(ANNOTATION_FEATURE).cloned().unwrap_or_default(),
            image: image.to_string(),
            reason,
        };
        let reference: Reference = image.parse().map_err(|e: oci_client::ParseError| fail(e.to_string()))?;
        let sha256 = sha256_hex(component);
        let (layer_type, config_type) = match layout {
            Layout::Secop => (WASM_LAYER_MEDIA_TYPE, WASM_CONFIG_MEDIA_TYPE),
            Layout::Wkg => (WKG_LAYER_MEDIA_TYPE, WKG_CONFIG_MEDIA_TYPE),
        };
        let config =
            serde_json::json!({ "architecture": "wasm", "os": "wasip2", "layerDigests": [format!("sha256:{sha256}")] });
        // A file name for the layer: `oras pull` writes only titled layers.
        let title = format!("{}.wasm", annotations.get(ANNOTATION_FEATURE).map_or("module", String::as_str));
        let layer_annotations = BTreeMap::from([("org.opencontainers.image.title".to_string(), title)]);
        let layers = vec![ImageLayer::new(component.to_vec(), layer_type.to_string(), Some(layer_annotations))];
        let config = Config::new(serde_json::to_vec(&config).expect("json"), config_type.to_string(), None);
        let mut annotations = annotations.clone();
        annotations.insert(ANNOTATION_COMPONENT_DIGEST.into(), sha256);
        let manifest = OciImageManifest::build(&layers, &config, Some(annotations));
        self.client
            .push(&reference, &layers, config, &credentials.auth(), Some(manifest))
            .await
            .map_err(|e| fail(e.to_string()))?;
        let digest = self
            .client
            .fetch_manifest_digest(&reference, &credentials.auth())
            .await
            .map_err(|e| fail(e.to_string()))?;
        Ok(digest)
    }
}

impl ModuleStore {
    /// Sign the manifest `image` resolves to with `key`, as `cosign sign
    /// --key` does, and add the signature under the manifest's `.sig` tag,
    /// keeping the signatures already there (cosign appends too). Signing
    /// again with the same key adds nothing. Returns the signed manifest
    /// digest and the signature tag's reference.
    pub async fn sign(
        &self,
        image: &str,
        key: &SigningKey,
        credentials: &Credentials,
    ) -> Result<(String, String), Error> {
        let fail = |reason: String| Error::Registry { feature: String::new(), image: image.to_string(), reason };
        let reference: Reference = image.parse().map_err(|e: oci_client::ParseError| fail(e.to_string()))?;
        let auth = credentials.auth();
        let digest = self.client.fetch_manifest_digest(&reference, &auth).await.map_err(|e| fail(e.to_string()))?;
        let source = Source::attachments_of(image, credentials);
        let mut signatures = self.fetch_signatures(&source, &reference, &digest).await?;
        let own = TrustedKey::from_pem("signing key", key.public_key_pem()?.as_bytes())?;
        let own = Verification {
            sets: vec![signature::SignerSet { required_by: "signing key".into(), keys: vec![own] }],
            enforcement: Enforcement::Enforce,
        };
        let tag = Reference::with_tag(
            reference.registry().to_string(),
            reference.repository().to_string(),
            signature::signature_tag(&digest),
        );
        if signature::check(&digest, &signatures, &own).is_ok() {
            return Ok((digest, tag.whole()));
        }
        signatures.push(key.sign(&format!("{}/{}", reference.registry(), reference.repository()), &digest)?);
        let layers: Vec<ImageLayer> = signatures
            .iter()
            .map(|s| {
                let payload = s.payload().map_err(|e| fail(format!("a kept signature is not base64: {e}")))?;
                let annotations = BTreeMap::from([(signature::SIGNATURE_ANNOTATION.to_string(), s.signature.clone())]);
                Ok(ImageLayer::new(payload, signature::SIMPLE_SIGNING_MEDIA_TYPE.to_string(), Some(annotations)))
            })
            .collect::<Result<_, Error>>()?;
        self.push_attached(&tag, layers, &auth).await.map_err(fail)?;
        Ok((digest, tag.whole()))
    }

    /// Attach `provenance`, signed with `key`, to manifest `digest` of
    /// `image`'s repository as `cosign attest --key` does (under the
    /// manifest's `.att` tag, beside the attestations already there). The
    /// same provenance by the same key is not added twice. Returns the
    /// attestation tag's reference.
    pub async fn attest(
        &self,
        image: &str,
        digest: &str,
        key: &SigningKey,
        provenance: &Provenance,
        credentials: &Credentials,
    ) -> Result<String, Error> {
        let fail = |reason: String| Error::Registry { feature: String::new(), image: image.to_string(), reason };
        let reference: Reference = image.parse().map_err(|e: oci_client::ParseError| fail(e.to_string()))?;
        let tag = Reference::with_tag(
            reference.registry().to_string(),
            reference.repository().to_string(),
            provenance::attestation_tag(digest),
        );
        let mut envelopes = self.fetch_attestations(image, &reference, digest, credentials).await?;
        let own = TrustedKey::from_pem("signing key", key.public_key_pem()?.as_bytes())?;
        let kept = provenance::check(digest, &envelopes, std::slice::from_ref(&own));
        if kept.verified.iter().any(|v| v.provenance == *provenance) {
            return Ok(tag.whole());
        }
        let repository = format!("{}/{}", reference.registry(), reference.repository());
        envelopes.push(key.attest(&repository, digest, provenance)?);
        let layers = envelopes
            .into_iter()
            .map(|envelope| {
                // cosign's attestation layers: an empty signature annotation
                // (the signature is inside the envelope) and the predicate type.
                let annotations = BTreeMap::from([
                    (signature::SIGNATURE_ANNOTATION.to_string(), String::new()),
                    (provenance::PREDICATE_TYPE_ANNOTATION.to_string(), provenance::SLSA_PROVENANCE_V1.to_string()),
                ]);
                ImageLayer::new(envelope, provenance::ATTESTATION_MEDIA_TYPE.to_string(), Some(annotations))
            })
            .collect();
        self.push_attached(&tag, layers, &credentials.auth()).await.map_err(fail)?;
        Ok(tag.whole())
    }

    /// The provenance attached to manifest `digest` of `image`'s
    /// repository, sorted by `keys` (only what they signed counts).
    pub async fn provenance(
        &self,
        image: &str,
        digest: &str,
        keys: &[TrustedKey],
        credentials: &Credentials,
    ) -> Result<ProvenanceReport, Error> {
        let reference: Reference = image.parse().map_err(|e: oci_client::ParseError| Error::Registry {
            feature: String::new(),
            image: image.to_string(),
            reason: e.to_string(),
        })?;
        let envelopes = self.fetch_attestations(image, &reference, digest, credentials).await?;
        Ok(provenance::check(digest, &envelopes, keys))
    }

    async fn fetch_attestations(
        &self,
        image: &str,
        reference: &Reference,
        digest: &str,
        credentials: &Credentials,
    ) -> Result<Vec<Vec<u8>>, Error> {
        let source = Source::attachments_of(image, credentials);
        let wanted = |layer: &OciDescriptor| {
            layer.media_type == provenance::ATTESTATION_MEDIA_TYPE
                && layer.size >= 0
                && layer.size as u64 <= provenance::MAX_ENVELOPE_BYTES
        };
        let attached = self
            .fetch_attached(
                &source,
                reference,
                provenance::attestation_tag(digest),
                wanted,
                provenance::MAX_ENVELOPE_BYTES,
            )
            .await?;
        Ok(attached.into_iter().map(|(_, envelope)| envelope).collect())
    }

    /// Push `layers` as the manifest of `tag` (an empty `{}` config, as
    /// cosign writes), replacing what the tag named.
    async fn push_attached(&self, tag: &Reference, layers: Vec<ImageLayer>, auth: &RegistryAuth) -> Result<(), String> {
        let config = Config::oci_v1(b"{}".to_vec(), None);
        let manifest = OciImageManifest::build(&layers, &config, None);
        self.client.push(tag, &layers, config, auth, Some(manifest)).await.map_err(|e| e.to_string())?;
        Ok(())
    }
}

/// Which OCI layout `push` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// Layer `application/vnd.wasm.content.layer.v1+wasm` (oci-client, Kubewarden).
    Secop,
    /// Layer `application/wasm`, config `application/vnd.wasm.config.v0+json` (wkg).
    Wkg,
}

/// Read `stream` whole unless it passes `limit` bytes (then None).
async fn read_capped<B: AsRef<[u8]>, E>(
    mut stream: impl futures::Stream<Item = Result<B, E>> + Unpin,
    limit: u64,
) -> Result<Option<Vec<u8>>, E> {
    let mut bytes = vec![];
    while let Some(chunk) = stream.try_next().await? {
        let chunk = chunk.as_ref();
        if (bytes.len() + chunk.len()) as u64 > limit {
            return Ok(None);
        }
        bytes.extend_from_slice(chunk);
    }
    Ok(Some(bytes))
}

/// The registry's answer that a manifest (a signature tag) does not exist.
fn is_not_found(e: &oci_client::errors::OciDistributionError) -> bool {
    use oci_client::errors::{OciDistributionError as E, OciErrorCode as C};
    match e {
        E::ImageManifestNotFoundError(_) => true,
        E::ServerError { code, .. } => *code == 404,
        E::RegistryError { envelope, .. } => {
            envelope.errors.iter().any(|e| matches!(e.code, C::ManifestUnknown | C::NameUnknown | C::NotFound))
        }
        _ => false,
    }
}

/// Transport failures (the registry may come back) vs. answers.
fn classify(feature: &str, image: &str, e: oci_client::errors::OciDistributionError) -> Error {
    use oci_client::errors::OciDistributionError as E;
    let reason = e.to_string();
    let unavailable = match &e {
        E::RequestError(r) => r.is_connect() || r.is_timeout() || r.is_request(),
        E::ServerError { code, .. } => *code >= 500,
        _ => false,
    };
    if unavailable {
        Error::Unavailable { feature: feature.into(), image: image.into(), reason }
    } else if let E::IncompatibleLayerMediaTypeError(found) = &e {
        Error::NoWasmLayer { feature: feature.into(), image: image.into(), found: found.clone() }
    } else {
        Error::Registry { feature: feature.into(), image: image.into(), reason }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dockerconfigjson_auth_and_username_forms() {
        let json = br#"{"auths":{"registry.example:5000":{"auth":"dXNlcjpzM2NyZXQ="},"https://other.example":{"username":"a","password":"b"}}}"#;
        match Credentials::from_dockerconfigjson(json, "registry.example:5000").unwrap() {
            Credentials::Basic { username, password } => {
                assert_eq!((username.as_str(), password.as_str()), ("user", "s3cret"))
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            Credentials::from_dockerconfigjson(json, "other.example").unwrap(),
            Credentials::Basic { .. }
        ));
        assert!(matches!(
            Credentials::from_dockerconfigjson(json, "unlisted.example").unwrap(),
            Credentials::Anonymous
        ));
        let err = Credentials::from_dockerconfigjson(br#"{"auths":{"r":{"auth":"!!"}}}"#, "r").unwrap_err();
        assert!(err.to_string().contains("auths.r.auth"), "{err}");
        assert!(
            format!("{:?}", Credentials::Basic { username: "u".into(), password: "p".into() }).contains("redacted")
        );
    }

    /// One tenant's resolution (made with its pull secret) is not another's.
    #[test]
    fn cached_resolutions_belong_to_the_credentials_that_made_them() {
        let dir = std::env::temp_dir().join(format!("secop-oci-scope-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let store = ModuleStore::new(dir.clone(), vec![]);
        let bytes = b"\0asm private module".to_vec();
        let record = RefRecord {
            image: "r.example/private:1".into(),
            manifest_digest: "sha256:m".into(),
            sha256: sha256_hex(&bytes),
            annotations: BTreeMap::new(),
        };
        let tenant_a = Credentials::Basic { username: "a".into(), password: "secret-a".into() };
        store.remember(&record, &tenant_a, &bytes).unwrap();
        assert!(store.cached_ref("r.example/private:1", &tenant_a).is_some());
        assert!(store.cached_ref("r.example/private:1", &Credentials::Anonymous).is_none());
        assert!(
            store
                .cached_ref("r.example/private:1", &Credentials::Basic { username: "b".into(), password: "x".into() })
                .is_none()
        );
        let refs: Vec<String> = std::fs::read_dir(dir.join("refs"))
            .unwrap()
            .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap())
            .collect();
        assert!(refs.iter().all(|r| !r.contains("secret-a")), "credentials are not written to the cache");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn corrupted_cache_entries_are_misses() {
        let dir = std::env::temp_dir().join(format!("secop-oci-cache-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let store = ModuleStore::new(dir.clone(), vec![]);
        let bytes = b"\0asm component bytes".to_vec();
        let record = RefRecord {
            image: "r.example/f:1".into(),
            manifest_digest: "sha256:m".into(),
            sha256: sha256_hex(&bytes),
            annotations: BTreeMap::new(),
        };
        let anonymous = Credentials::Anonymous;
        store.remember(&record, &anonymous, &bytes).unwrap();
        assert_eq!(store.cached_ref("r.example/f:1", &anonymous).unwrap().1, bytes);
        std::fs::write(store.blob_path(&record.sha256), b"tampered").unwrap();
        assert!(
            store.cached_ref("r.example/f:1", &anonymous).is_none(),
            "a blob that no longer matches its name is not served"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn pin_mismatch_on_the_cache_path_names_the_feature_and_both_digests() {
        let dir = std::env::temp_dir().join(format!("secop-oci-pin-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let store = ModuleStore::new(dir.clone(), vec![]);
        let bytes = b"component".to_vec();
        let actual = sha256_hex(&bytes);
        store
            .remember(
                &RefRecord {
                    image: "r.example/falco:0.1.0".into(),
                    manifest_digest: "sha256:m".into(),
                    sha256: actual.clone(),
                    annotations: BTreeMap::new(),
                },
                &Credentials::Anonymous,
                &bytes,
            )
            .unwrap();
        let source = Source {
            feature: "falco".into(),
            image: "r.example/falco:0.1.0".into(),
            sha256: Some(format!("sha256:{}", "ab".repeat(32))),
            pull_policy: PullPolicy::IfNotPresent,
            credentials: Credentials::Anonymous,
            verify: None,
        };
        let err = store.fetch(&source).await.unwrap_err().to_string();
        assert!(err.contains("feature falco") && err.contains(&"ab".repeat(32)) && err.contains(&actual), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
