//! Provenance of feature modules: where a module came from (source
//! repository and commit, builder, WIT contract version, the component's
//! sha256), as an in-toto statement with a SLSA v1 provenance predicate,
//! signed with the module's signing key in a DSSE envelope and attached
//! the way `cosign attest --key` attaches attestations: under the tag
//! `sha256-<hex>.att` beside the manifest, one layer per attestation, media
//! type [`ATTESTATION_MEDIA_TYPE`]. `cosign verify-attestation --key
//! --type slsaprovenance1` accepts ours, and ours reads cosign's.
//!
//! Formats: DSSE (github.com/secure-systems-lab/dsse, protocol.md: the
//! signature is over the pre-authentication encoding [`pae`]), in-toto
//! Statement v1, SLSA provenance v1 (slsa.dev/spec/v1.0/provenance).
//! Notes and sources: docs/research/module-signing.md.
//!
//! A statement counts only when a trusted key signed its envelope and one
//! of its subjects is the manifest digest being checked: a statement
//! copied from another module names another digest.

use std::fmt;

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::signature::{KeyError, Signer, SigningKey, TrustedKey};

/// The media type of an attestation layer (a DSSE envelope, JSON).
pub const ATTESTATION_MEDIA_TYPE: &str = "application/vnd.dsse.envelope.v1+json";
/// The envelope's `payloadType` for an in-toto statement.
pub const IN_TOTO_PAYLOAD_TYPE: &str = "application/vnd.in-toto+json";
/// `_type` of the statements we write (v0.1, cosign's, is read too).
pub const STATEMENT_TYPE: &str = "https://in-toto.io/Statement/v1";
/// `predicateType` of SLSA v1 provenance (cosign's `--type slsaprovenance1`).
pub const SLSA_PROVENANCE_V1: &str = "https://slsa.dev/provenance/v1";
/// `buildType` of a statement `secop feature push` writes.
pub const BUILD_TYPE: &str = "https://security.example.io/secop/feature-module/v1";
/// The layer annotation cosign reads the predicate type from.
pub const PREDICATE_TYPE_ANNOTATION: &str = "predicateType";
/// Largest envelope read (a provenance statement is ~1–2 KiB).
pub const MAX_ENVELOPE_BYTES: u64 = 256 << 10;

/// The tag under which cosign keeps the attestations of `digest`
/// (`sha256:<hex>` → `sha256-<hex>.att`).
pub fn attestation_tag(digest: &str) -> String {
    format!("{}.att", digest.replace(':', "-"))
}

/// DSSE's pre-authentication encoding: what the envelope's signatures sign.
pub fn pae(payload_type: &str, payload: &[u8]) -> Vec<u8> {
    let mut out = format!("DSSEv1 {} {} {} ", payload_type.len(), payload_type, payload.len()).into_bytes();
    out.extend_from_slice(payload);
    out
}

/// What a provenance statement says about a module. Fields other than the
/// builder are optional: statements written by other tools (`cosign attest`
/// with a CI system's predicate) may not carry ours.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Provenance {
    /// `runDetails.builder.id`: who built the module (a CI workflow, or
    /// `secop feature push` on an author's machine).
    pub builder_id: String,
    /// `buildDefinition.buildType`.
    pub build_type: String,
    /// The source repository (`git+https://...`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source_uri: Option<String>,
    /// Its commit.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source_commit: Option<String>,
    /// Whether the work tree had uncommitted changes at push time.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source_dirty: Option<bool>,
    /// The feature id the module declares.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub feature: Option<String>,
    /// The WIT contract version the module was built against.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub contract_version: Option<String>,
    /// sha256 (hex) of the component bytes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub component_sha256: Option<String>,
}

impl Provenance {
    /// The in-toto statement for manifest `digest` of `repository`: its
    /// subjects are the manifest and, when known, the component.
    pub fn statement(&self, repository: &str, digest: &str) -> Value {
        let mut subject = vec![json!({ "name": repository, "digest": { "sha256": hex_of(digest) } })];
        if let Some(component) = &self.component_sha256 {
            let name = format!("{}.wasm", self.feature.as_deref().unwrap_or("module"));
            subject.push(json!({ "name": name, "digest": { "sha256": component } }));
        }
        let mut external = serde_json::Map::new();
        let mut dependencies = vec![];
        if let Some(uri) = &self.source_uri {
            let mut source = json!({ "uri": uri });
            if let Some(commit) = &self.source_commit {
                source["digest"] = json!({ "gitCommit": commit });
            }
            dependencies.push(source.clone());
            external.insert("source".into(), source);
        } else if let Some(commit) = &self.source_commit {
            external.insert("source".into(), json!({ "digest": { "gitCommit": commit } }));
        }
        let internal = json!({
            "feature": self.feature,
            "contractVersion": self.contract_version,
            "sourceDirty": self.source_dirty,
        });
        json!({
            "_type": STATEMENT_TYPE,
            "subject": subject,
            "predicateType": SLSA_PROVENANCE_V1,
            "predicate": {
                "buildDefinition": {
                    "buildType": self.build_type,
                    "externalParameters": external,
                    "internalParameters": without_nulls(internal),
                    "resolvedDependencies": dependencies,
                },
                "runDetails": { "builder": { "id": self.builder_id } },
            },
        })
    }

    /// Read a SLSA v1 predicate (ours, or another builder's: the fields
    /// it does not have stay None). `component` is the statement's
    /// component subject, if it has one.
    fn from_predicate(predicate: &Value, component: Option<String>) -> Result<Self, String> {
        let builder_id = predicate
            .pointer("/runDetails/builder/id")
            .and_then(Value::as_str)
            .ok_or("no runDetails.builder.id")?
            .to_string();
        let text = |pointer: &str| predicate.pointer(pointer).and_then(Value::as_str).map(str::to_string);
        let definition = "/buildDefinition";
        Ok(Self {
            builder_id,
            build_type: text(&format!("{definition}/buildType")).unwrap_or_default(),
            source_uri: text(&format!("{definition}/externalParameters/source/uri")),
            source_commit: text(&format!("{definition}/externalParameters/source/digest/gitCommit")),
            source_dirty: predicate
                .pointer(&format!("{definition}/internalParameters/sourceDirty"))
                .and_then(Value::as_bool),
            feature: text(&format!("{definition}/internalParameters/feature")),
            contract_version: text(&format!("{definition}/internalParameters/contractVersion")),
            component_sha256: component,
        })
    }
}

impl fmt::Display for Provenance {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "built by {}", self.builder_id)?;
        match (&self.source_uri, &self.source_commit) {
            (Some(uri), Some(commit)) => write!(f, " from {uri}@{commit}")?,
            (Some(uri), None) => write!(f, " from {uri}")?,
            (None, Some(commit)) => write!(f, " from commit {commit}")?,
            (None, None) => {}
        }
        if self.source_dirty == Some(true) {
            write!(f, " (uncommitted changes)")?;
        }
        if let Some(contract) = &self.contract_version {
            write!(f, ", contract {contract}")?;
        }
        Ok(())
    }
}

fn hex_of(digest: &str) -> &str {
    digest.strip_prefix("sha256:").unwrap_or(digest)
}

fn without_nulls(value: Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(map.into_iter().filter(|(_, v)| !v.is_null()).collect()),
        other => other,
    }
}

/// A DSSE envelope.
#[derive(Serialize, Deserialize)]
struct Envelope {
    #[serde(rename = "payloadType")]
    payload_type: String,
    /// base64 of the statement.
    payload: String,
    signatures: Vec<EnvelopeSignature>,
}

#[derive(Serialize, Deserialize)]
struct EnvelopeSignature {
    #[serde(default)]
    keyid: String,
    /// base64 of the signature over [`pae`].
    sig: String,
}

/// A statement whose envelope a trusted key signed, naming the digest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifiedProvenance {
    pub signer: Signer,
    pub provenance: Provenance,
}

/// The attestations of one manifest, sorted out.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProvenanceReport {
    /// SLSA v1 provenance signed by a trusted key, for this digest.
    pub verified: Vec<VerifiedProvenance>,
    /// Attestations that are not that: another signer, another digest,
    /// another predicate type, or not readable. Never shown as provenance.
    pub other: usize,
}

/// Sort the attestation envelopes of manifest `digest` by `keys`.
pub fn check(digest: &str, envelopes: &[Vec<u8>], keys: &[TrustedKey]) -> ProvenanceReport {
    let mut report = ProvenanceReport::default();
    for envelope in envelopes {
        match verified(digest, envelope, keys) {
            Some(found) => {
                if !report.verified.contains(&found) {
                    report.verified.push(found);
                }
            }
            None => report.other += 1,
        }
    }
    report
}

fn verified(digest: &str, envelope: &[u8], keys: &[TrustedKey]) -> Option<VerifiedProvenance> {
    let base64 = base64::engine::general_purpose::STANDARD;
    let envelope: Envelope = serde_json::from_slice(envelope).ok()?;
    if envelope.payload_type != IN_TOTO_PAYLOAD_TYPE {
        return None;
    }
    let payload = base64.decode(&envelope.payload).ok()?;
    let signed = pae(&envelope.payload_type, &payload);
    let key = envelope.signatures.iter().find_map(|s| {
        let signature = base64.decode(&s.sig).ok()?;
        keys.iter().find(|key| key.verifies(&signature, &signed))
    })?;
    // Only what was signed is read.
    let statement: Value = serde_json::from_slice(&payload).ok()?;
    let statement_type = statement.get("_type")?.as_str()?;
    if !statement_type.starts_with("https://in-toto.io/Statement/")
        || statement.get("predicateType")?.as_str()? != SLSA_PROVENANCE_V1
    {
        return None;
    }
    let subjects = statement.get("subject")?.as_array()?;
    let sha256 = |s: &Value| s.pointer("/digest/sha256").and_then(Value::as_str).map(str::to_string);
    if !subjects.iter().any(|s| sha256(s).as_deref() == Some(hex_of(digest))) {
        return None;
    }
    let component = subjects
        .iter()
        .find(|s| s.get("name").and_then(Value::as_str).is_some_and(|n| n.ends_with(".wasm")))
        .and_then(sha256);
    let provenance = Provenance::from_predicate(statement.get("predicate")?, component).ok()?;
    Some(VerifiedProvenance {
        signer: Signer { key: key.name.clone(), fingerprint: key.fingerprint.clone() },
        provenance,
    })
}

impl SigningKey {
    /// The DSSE envelope (JSON bytes) of `provenance` for manifest `digest`
    /// of `repository`, signed with this key.
    pub fn attest(&self, repository: &str, digest: &str, provenance: &Provenance) -> Result<Vec<u8>, KeyError> {
        let base64 = base64::engine::general_purpose::STANDARD;
        let payload = serde_json::to_vec(&provenance.statement(repository, digest)).expect("json");
        let signature = self.sign_bytes(&pae(IN_TOTO_PAYLOAD_TYPE, &payload))?;
        let envelope = Envelope {
            payload_type: IN_TOTO_PAYLOAD_TYPE.into(),
            payload: base64.encode(&payload),
            signatures: vec![EnvelopeSignature { keyid: String::new(), sig: base64.encode(signature) }],
        };
        Ok(serde_json::to_vec(&envelope).expect("json"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DIGEST: &str = "sha256:00000000000000000000000000000000000000000000000000000000000000aa";

    fn key(name: &str) -> (SigningKey, TrustedKey) {
        let signing = SigningKey::generate().unwrap();
        let trusted = TrustedKey::from_pem(name, signing.public_key_pem().unwrap().as_bytes()).unwrap();
        (signing, trusted)
    }

    fn ours() -> Provenance {
        Provenance {
            builder_id: "https://ci.example/workflows/release".into(),
            build_type: BUILD_TYPE.into(),
            source_uri: Some("git+https://git.example/team/port-scan".into()),
            source_commit: Some("0123456789abcdef0123456789abcdef01234567".into()),
            source_dirty: Some(false),
            feature: Some("port_scan".into()),
            contract_version: Some("0.4.0".into()),
            component_sha256: Some("ab".repeat(32)),
        }
    }

    #[test]
    fn pae_is_dsse_protocol_encoding() {
        // The example of DSSE's protocol.md.
        assert_eq!(
            pae("http://example.com/HelloWorld", b"hello world"),
            b"DSSEv1 29 http://example.com/HelloWorld 11 hello world"
        );
    }

    #[test]
    fn a_signed_statement_for_this_digest_reads_back_whole() {
        let (signing, trusted) = key("release");
        let envelope = signing.attest("registry.test/features/port-scan", DIGEST, &ours()).unwrap();
        let report = check(DIGEST, &[envelope], std::slice::from_ref(&trusted));
        assert_eq!(report.other, 0);
        assert_eq!(
            report.verified,
            vec![VerifiedProvenance {
                signer: Signer { key: "release".into(), fingerprint: trusted.fingerprint },
                provenance: ours(),
            }]
        );
    }

    #[test]
    fn another_signer_digest_or_a_tampered_statement_is_not_provenance() {
        let (signing, trusted) = key("release");
        let (_, other) = key("other");
        let envelope = signing.attest("r/f", DIGEST, &ours()).unwrap();
        assert_eq!(check(DIGEST, std::slice::from_ref(&envelope), &[other]).other, 1);
        assert_eq!(
            check(&DIGEST.replace("aa", "bb"), std::slice::from_ref(&envelope), std::slice::from_ref(&trusted)).other,
            1
        );

        let mut parsed: Envelope = serde_json::from_slice(&envelope).unwrap();
        let base64 = base64::engine::general_purpose::STANDARD;
        let statement = String::from_utf8(base64.decode(&parsed.payload).unwrap()).unwrap();
        parsed.payload = base64.encode(statement.replace("ci.example", "evil.example"));
        let tampered = serde_json::to_vec(&parsed).unwrap();
        let report = check(DIGEST, &[tampered, b"not json".to_vec()], &[trusted]);
        assert_eq!((report.verified.len(), report.other), (0, 2));
    }

    #[test]
    fn another_builders_predicate_keeps_what_it_has() {
        let predicate = json!({
            "buildDefinition": { "buildType": "https://actions.github.io/buildtypes/workflow/v1", "externalParameters": {} },
            "runDetails": { "builder": { "id": "https://github.com/actions/runner" } },
        });
        let read = Provenance::from_predicate(&predicate, None).unwrap();
        assert_eq!(read.builder_id, "https://github.com/actions/runner");
        assert_eq!((read.source_uri, read.contract_version), (None, None));
        assert!(Provenance::from_predicate(&json!({}), None).is_err());
    }
}
