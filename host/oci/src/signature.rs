//! Cosign-compatible signatures of feature modules: key-based, in cosign's
//! tag-based format (what `cosign sign --key` writes by default and what a
//! plain distribution 2.8 registry can hold).
//!
//! A signature of the manifest `sha256:<hex>` of `registry/repo` lives in
//! the same repository under the tag `sha256-<hex>.sig`: an OCI manifest
//! with one layer per signature, media type
//! [`SIMPLE_SIGNING_MEDIA_TYPE`], whose blob is a "simple signing" JSON
//! payload naming the manifest digest and whose annotation
//! [`SIGNATURE_ANNOTATION`] is the base64 signature over the blob's exact
//! bytes. Facts and sources: docs/research/module-signing.md.
//!
//! Only the registry side is ours. Keys, cosign's encrypted key files,
//! signing and verifying are the `sigstore` crate's (sigstore-rs).
//!
//! What a check proves: a trusted key signed a payload that names this
//! manifest digest. The manifest names the wasm layer by digest, and
//! host/oci/src/lib.rs pulls that layer only after the check and refuses
//! bytes that do not match it. So the module that is compiled is the
//! module that was signed; a tag moved in between makes no difference.

use std::fmt;

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use sigstore::crypto::signing_key::SigStoreKeyPair;
use sigstore::crypto::signing_key::ecdsa::ECDSAKeys;
use sigstore::crypto::{CosignVerificationKey, Signature, SigningScheme};

/// The media type of a signature layer (cosign `pkg/types`).
pub const SIMPLE_SIGNING_MEDIA_TYPE: &str = "application/vnd.dev.cosign.simplesigning.v1+json";
/// The layer annotation holding the base64 signature.
pub const SIGNATURE_ANNOTATION: &str = "dev.cosignproject.cosign/signature";
/// `critical.type` of a simple-signing payload.
const PAYLOAD_TYPE: &str = "cosign container image signature";

/// Signatures read from one `.sig` manifest at most: a signature is a few
/// hundred bytes, and a registry that serves thousands must not make every
/// reconcile verify them all.
pub const MAX_SIGNATURES: usize = 32;
/// Largest signature payload read (cosign's are ~250 bytes).
pub const MAX_PAYLOAD_BYTES: u64 = 64 << 10;

/// The tag under which cosign keeps the signatures of `digest`
/// (`sha256:<hex>` → `sha256-<hex>.sig`).
pub fn signature_tag(digest: &str) -> String {
    format!("{}.sig", digest.replace(':', "-"))
}

/// A public key that modules may be signed with, by the name the policy
/// gives it.
#[derive(Clone, Debug)]
pub struct TrustedKey {
    /// Where the key was named (`cluster policy modules.signers[release]`,
    /// `spec.features[0].module.verify.publicKeys[0]`): in every refusal.
    pub name: String,
    /// sha256 (hex) of the key's DER SubjectPublicKeyInfo.
    pub fingerprint: String,
    key: CosignVerificationKey,
}

/// A key that cannot be used, naming it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{name}: {reason}")]
pub struct KeyError {
    pub name: String,
    pub reason: String,
}

impl TrustedKey {
    /// A PEM `PUBLIC KEY` (what `cosign generate-key-pair` writes to
    /// `cosign.pub`): ECDSA P-256/P-384/P-521, Ed25519 or RSA.
    pub fn from_pem(name: impl Into<String>, pem: &[u8]) -> Result<Self, KeyError> {
        let name = name.into();
        let fail = |reason: String| KeyError { name: name.clone(), reason };
        let parsed = pem::parse(pem).map_err(|e| fail(format!("not a PEM public key: {e}")))?;
        if parsed.tag() != "PUBLIC KEY" {
            return Err(fail(format!(
                "a PEM `{}`, not a `PUBLIC KEY` (give the public half, e.g. cosign.pub)",
                parsed.tag()
            )));
        }
        let key = CosignVerificationKey::try_from_der(parsed.contents())
            .map_err(|e| fail(format!("unsupported public key: {e}")))?;
        Ok(Self { fingerprint: hex::encode(Sha256::digest(parsed.contents())), name, key })
    }

    fn signed(&self, found: &FoundSignature) -> bool {
        let Ok(payload) = found.payload() else { return false };
        self.key.verify_signature(Signature::Base64Encoded(found.signature.as_bytes()), &payload).is_ok()
    }

    /// Whether `signature` (raw bytes) over `message` is by this key.
    pub(crate) fn verifies(&self, signature: &[u8], message: &[u8]) -> bool {
        self.key.verify_signature(Signature::Raw(signature), message).is_ok()
    }
}

impl fmt::Display for TrustedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (key sha256:{})", self.name, &self.fingerprint[..16])
    }
}

/// Keys of which one must have signed the module, and who requires it.
#[derive(Clone, Debug)]
pub struct SignerSet {
    /// The policy that asks (`cluster policy modules.allowed[0].signers`,
    /// `spec.features[1].module.verify`).
    pub required_by: String,
    pub keys: Vec<TrustedKey>,
}

/// What happens to a module whose signatures do not satisfy the policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Enforcement {
    /// Refused: the feature keeps its last good module.
    Enforce,
    /// Runs, and the refusal is reported.
    Warn,
}

/// The signatures a module needs: every set satisfied.
#[derive(Clone, Debug)]
pub struct Verification {
    pub sets: Vec<SignerSet>,
    pub enforcement: Enforcement,
}

/// One signature found under a module's `.sig` tag (or kept in the module
/// cache, to check again while the registry is unreachable).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct FoundSignature {
    /// The simple-signing payload, base64 (its exact bytes are signed).
    pub payload_base64: String,
    /// The signature, base64, as in the layer annotation.
    pub signature: String,
}

impl FoundSignature {
    pub fn new(payload: &[u8], signature: String) -> Self {
        Self { payload_base64: base64::engine::general_purpose::STANDARD.encode(payload), signature }
    }

    pub fn payload(&self) -> Result<Vec<u8>, base64::DecodeError> {
        base64::engine::general_purpose::STANDARD.decode(&self.payload_base64)
    }

    /// Whether the payload is a cosign simple-signing payload for `digest`.
    fn names(&self, digest: &str) -> bool {
        #[derive(Deserialize)]
        struct Payload {
            critical: Critical,
        }
        #[derive(Deserialize)]
        struct Critical {
            image: Image,
            #[serde(rename = "type")]
            kind: String,
        }
        #[derive(Deserialize)]
        struct Image {
            #[serde(rename = "docker-manifest-digest")]
            digest: String,
        }
        let Ok(bytes) = self.payload() else { return false };
        serde_json::from_slice::<Payload>(&bytes)
            .is_ok_and(|p| p.critical.kind == PAYLOAD_TYPE && p.critical.image.digest == digest)
    }
}

/// Who signed the module that runs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Signer {
    /// The key's name in the policy.
    pub key: String,
    /// sha256 (hex) of the key.
    pub fingerprint: String,
}

impl fmt::Display for Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (key sha256:{})", self.key, &self.fingerprint[..16.min(self.fingerprint.len())])
    }
}

/// Why signatures do not satisfy a verification.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Nothing under the `.sig` tag.
    Missing { expected: String },
    /// Signatures, but none for this digest by a key of `required_by`.
    Invalid { required_by: String, expected: String, found: usize },
}

impl Refusal {
    pub fn reason(&self) -> secop_api::Reason {
        match self {
            Refusal::Missing { .. } => secop_api::Reason::SignatureMissing,
            Refusal::Invalid { .. } => secop_api::Reason::SignatureInvalid,
        }
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::Missing { expected } => write!(f, "no signature; expected one by {expected}"),
            Refusal::Invalid { required_by, expected, found } => write!(
                f,
                "none of its {found} signature(s) is by {expected} for this digest (required by {required_by})"
            ),
        }
    }
}

fn describe_keys(keys: &[TrustedKey]) -> String {
    if keys.is_empty() {
        return "a key (none is configured)".into();
    }
    let names: Vec<String> = keys.iter().map(ToString::to_string).collect();
    names.join(" or ")
}

/// Check the signatures of manifest `digest` against `verification`: for
/// every set, one signature of this digest by one of its keys. Returns
/// the signer that satisfied each set.
pub fn check(digest: &str, signatures: &[FoundSignature], verification: &Verification) -> Result<Vec<Signer>, Refusal> {
    if signatures.is_empty() {
        let expected: Vec<String> = verification.sets.iter().map(|s| describe_keys(&s.keys)).collect();
        return Err(Refusal::Missing { expected: expected.join(", and ") });
    }
    let mut signers = vec![];
    for set in &verification.sets {
        let signer = signatures
            .iter()
            .filter(|s| s.names(digest))
            .find_map(|s| set.keys.iter().find(|key| key.signed(s)))
            .ok_or_else(|| Refusal::Invalid {
                required_by: set.required_by.clone(),
                expected: describe_keys(&set.keys),
                found: signatures.len(),
            })?;
        let signer = Signer { key: signer.name.clone(), fingerprint: signer.fingerprint.clone() };
        if !signers.contains(&signer) {
            signers.push(signer);
        }
    }
    Ok(signers)
}

/// A private key to sign modules with: a cosign key file
/// (`ENCRYPTED SIGSTORE PRIVATE KEY`, as `cosign generate-key-pair`
/// writes) or an unencrypted PKCS#8 `PRIVATE KEY`.
pub struct SigningKey {
    pair: SigStoreKeyPair,
    scheme: SigningScheme,
}

impl SigningKey {
    /// `password` decrypts an encrypted key (cosign's may be empty).
    pub fn from_pem(name: &str, pem: &[u8], password: &[u8]) -> Result<Self, KeyError> {
        let fail = |reason: String| KeyError { name: name.to_string(), reason };
        let text = String::from_utf8_lossy(pem);
        let pair = if text.contains("ENCRYPTED") {
            SigStoreKeyPair::from_encrypted_pem(pem, password)
                .map_err(|e| fail(format!("cannot decrypt the key (wrong password?): {e}")))?
        } else {
            SigStoreKeyPair::from_pem(pem).map_err(|e| fail(format!("not a private key PEM: {e}")))?
        };
        let scheme = match &pair {
            SigStoreKeyPair::ECDSA(ECDSAKeys::P256(_)) => SigningScheme::ECDSA_P256_SHA256_ASN1,
            SigStoreKeyPair::ECDSA(ECDSAKeys::P384(_)) => SigningScheme::ECDSA_P384_SHA384_ASN1,
            SigStoreKeyPair::ECDSA(ECDSAKeys::P521(_)) => SigningScheme::ECDSA_P521_SHA512_ASN1,
            SigStoreKeyPair::ED25519(_) => SigningScheme::ED25519,
            SigStoreKeyPair::RSA(_) => SigningScheme::RSA_PKCS1_SHA256(0),
        };
        Ok(Self { pair, scheme })
    }

    /// A new ECDSA P-256 key (cosign's default kind).
    pub fn generate() -> Result<Self, KeyError> {
        let fail = |e: sigstore::errors::SigstoreError| KeyError { name: "new key".into(), reason: e.to_string() };
        let signer = SigningScheme::ECDSA_P256_SHA256_ASN1.create_signer().map_err(fail)?;
        Ok(Self { pair: signer.to_sigstore_keypair().map_err(fail)?, scheme: SigningScheme::ECDSA_P256_SHA256_ASN1 })
    }

    /// The public half, PEM (for `cosign verify --key` and the policy).
    pub fn public_key_pem(&self) -> Result<String, KeyError> {
        self.pair.public_key_to_pem().map_err(|e| KeyError { name: "public key".into(), reason: e.to_string() })
    }

    /// The private key as cosign writes it, encrypted with `password`.
    pub fn to_encrypted_pem(&self, password: &[u8]) -> Result<String, KeyError> {
        self.pair
            .private_key_to_encrypted_pem(password)
            .map(|pem| pem.to_string())
            .map_err(|e| KeyError { name: "private key".into(), reason: e.to_string() })
    }

    /// Sign manifest `digest` of `repository` (`registry/repo`), as
    /// `cosign sign` would: its payload, the base64 signature over it.
    pub fn sign(&self, repository: &str, digest: &str) -> Result<FoundSignature, KeyError> {
        let payload = serde_json::to_vec(&serde_json::json!({
            "critical": {
                "identity": { "docker-reference": repository },
                "image": { "docker-manifest-digest": digest },
                "type": PAYLOAD_TYPE,
            },
            "optional": null,
        }))
        .expect("json");
        let signature = self.sign_bytes(&payload)?;
        Ok(FoundSignature::new(&payload, base64::engine::general_purpose::STANDARD.encode(signature)))
    }

    /// The raw signature of `message` with this key.
    pub(crate) fn sign_bytes(&self, message: &[u8]) -> Result<Vec<u8>, KeyError> {
        let fail = |e: sigstore::errors::SigstoreError| KeyError { name: "signing key".into(), reason: e.to_string() };
        let signer = self.pair.to_sigstore_signer(&self.scheme).map_err(fail)?;
        signer.sign(message).map_err(fail)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DIGEST: &str = "sha256:0000000000000000000000000000000000000000000000000000000000000001";

    fn key(name: &str) -> (SigningKey, TrustedKey) {
        let signing = SigningKey::generate().unwrap();
        let trusted = TrustedKey::from_pem(name, signing.public_key_pem().unwrap().as_bytes()).unwrap();
        (signing, trusted)
    }

    fn enforce(sets: Vec<(&str, Vec<TrustedKey>)>) -> Verification {
        Verification {
            sets: sets.into_iter().map(|(by, keys)| SignerSet { required_by: by.into(), keys }).collect(),
            enforcement: Enforcement::Enforce,
        }
    }

    #[test]
    fn a_signature_by_a_trusted_key_for_this_digest_names_its_signer() {
        let (signing, trusted) = key("release");
        let signature = signing.sign("registry.test/features/falco", DIGEST).unwrap();
        let signers = check(DIGEST, &[signature], &enforce(vec![("policy", vec![trusted.clone()])])).unwrap();
        assert_eq!(signers, vec![Signer { key: "release".into(), fingerprint: trusted.fingerprint }]);
    }

    #[test]
    fn another_key_another_digest_or_a_tampered_payload_is_refused() {
        let (signing, _) = key("release");
        let (_, other) = key("other");
        let policy = enforce(vec![("cluster policy modules.allowed[0].signers", vec![other])]);
        let signature = signing.sign("r/f", DIGEST).unwrap();
        let refusal = check(DIGEST, std::slice::from_ref(&signature), &policy).unwrap_err();
        assert!(matches!(&refusal, Refusal::Invalid { found: 1, .. }), "{refusal:?}");
        assert!(refusal.to_string().contains("other (key sha256:"), "{refusal}");
        assert!(refusal.to_string().contains("modules.allowed[0].signers"), "{refusal}");

        let (signing, trusted) = key("release");
        let policy = enforce(vec![("p", vec![trusted])]);
        let elsewhere = signing.sign("r/f", &DIGEST.replace("01", "02")).unwrap();
        assert!(matches!(check(DIGEST, &[elsewhere], &policy), Err(Refusal::Invalid { .. })));
        let mut tampered = signing.sign("r/f", DIGEST).unwrap();
        let payload = String::from_utf8(tampered.payload().unwrap()).unwrap().replace("r/f", "r/g");
        tampered.payload_base64 = base64::engine::general_purpose::STANDARD.encode(payload);
        assert!(matches!(check(DIGEST, &[tampered], &policy), Err(Refusal::Invalid { .. })));
        assert!(matches!(check(DIGEST, &[], &policy), Err(Refusal::Missing { .. })));
    }

    #[test]
    fn every_set_must_be_satisfied() {
        let (admin, admin_key) = key("release");
        let (tenant, tenant_key) = key("team");
        let policy = enforce(vec![("admin", vec![admin_key]), ("tenant", vec![tenant_key])]);
        let by_admin = admin.sign("r/f", DIGEST).unwrap();
        let refusal = check(DIGEST, std::slice::from_ref(&by_admin), &policy).unwrap_err();
        assert!(matches!(&refusal, Refusal::Invalid { required_by, .. } if required_by == "tenant"), "{refusal:?}");
        let both = [by_admin, tenant.sign("r/f", DIGEST).unwrap()];
        let signers: Vec<String> = check(DIGEST, &both, &policy).unwrap().into_iter().map(|s| s.key).collect();
        assert_eq!(signers, ["release", "team"]);
    }

    #[test]
    fn keys_are_read_from_pem_and_cosign_key_files() {
        let signing = SigningKey::generate().unwrap();
        let encrypted = signing.to_encrypted_pem(b"pw").unwrap();
        assert!(encrypted.contains("ENCRYPTED SIGSTORE PRIVATE KEY"), "{encrypted}");
        let again = SigningKey::from_pem("cosign.key", encrypted.as_bytes(), b"pw").unwrap();
        assert_eq!(again.public_key_pem().unwrap(), signing.public_key_pem().unwrap());
        let wrong = SigningKey::from_pem("cosign.key", encrypted.as_bytes(), b"nope").err().unwrap();
        assert!(wrong.to_string().starts_with("cosign.key: cannot decrypt"), "{wrong}");
        // The private key given where a public one belongs: named, refused.
        let error = TrustedKey::from_pem("modules.signers[release]", encrypted.as_bytes()).unwrap_err();
        assert!(
            error.to_string().contains("modules.signers[release]") && error.to_string().contains("not a `PUBLIC KEY`")
        );
        let error = TrustedKey::from_pem("k", b"hello").unwrap_err();
        assert!(error.to_string().starts_with("k: not a PEM public key"), "{error}");
    }
}
