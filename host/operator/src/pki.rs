//! The private certificate authorities the operator keeps: the admission
//! webhook's (host/operator/src/webhook.rs) and each agent's collectors'
//! (host/operator/src/telemetry.rs). rcgen does the cryptography.

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
};
use time::OffsetDateTime;

/// A text entry of a Secret the operator keeps (a PEM file).
pub(crate) fn secret_text(secret: &k8s_openapi::api::core::v1::Secret, key: &str) -> Option<String> {
    let k8s_openapi::ByteString(bytes) = secret.data.as_ref()?.get(key)?;
    String::from_utf8(bytes.clone()).ok()
}

/// A time the operator wrote into an annotation (Unix seconds), such as
/// the end of a certificate's life.
pub(crate) fn annotated_time(secret: &k8s_openapi::api::core::v1::Secret, annotation: &str) -> Option<OffsetDateTime> {
    use kube::ResourceExt as _;
    let seconds = secret.annotations().get(annotation)?.parse::<i64>().ok()?;
    OffsetDateTime::from_unix_timestamp(seconds).ok()
}

/// Certificates start a little in the past: clocks across a cluster drift.
const BACKDATE: time::Duration = time::Duration::minutes(5);

/// A CA: its certificate and the key that signs with it.
pub(crate) struct Authority {
    pub(crate) cert_pem: String,
    pub(crate) key_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

/// A leaf certificate and its private key, PEM.
pub(crate) struct Leaf {
    pub(crate) cert_pem: String,
    pub(crate) key_pem: String,
}

/// What a leaf certificate is for.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Usage {
    Server,
    Client,
}

impl Authority {
    /// A new CA named `common_name`, valid until `not_after`, that signs
    /// end-entity certificates only (path length 0).
    pub(crate) fn new(common_name: &str, not_after: OffsetDateTime) -> Result<Self, rcgen::Error> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name.push(DnType::CommonName, common_name);
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        params.not_before = OffsetDateTime::now_utc() - BACKDATE;
        params.not_after = not_after;
        let cert_pem = params.self_signed(&key)?.pem();
        let key_pem = key.serialize_pem();
        Ok(Self { cert_pem, key_pem, issuer: Issuer::new(params, key) })
    }

    /// The CA kept from an earlier issue, to sign more certificates with.
    pub(crate) fn load(cert_pem: &str, key_pem: &str) -> Result<Self, rcgen::Error> {
        let key = KeyPair::from_pem(key_pem)?;
        let issuer = Issuer::from_ca_cert_pem(cert_pem, key)?;
        Ok(Self { cert_pem: cert_pem.to_string(), key_pem: key_pem.to_string(), issuer })
    }

    /// A certificate for `usage` named `common_name`, with `hosts` (DNS
    /// names or IP addresses) as its subject alternative names.
    pub(crate) fn issue(
        &self,
        common_name: &str,
        hosts: &[String],
        usage: Usage,
        not_after: OffsetDateTime,
    ) -> Result<Leaf, rcgen::Error> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(hosts.to_vec())?;
        params.distinguished_name.push(DnType::CommonName, common_name);
        params.extended_key_usages = vec![match usage {
            Usage::Server => ExtendedKeyUsagePurpose::ServerAuth,
            Usage::Client => ExtendedKeyUsagePurpose::ClientAuth,
        }];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.not_before = OffsetDateTime::now_utc() - BACKDATE;
        params.not_after = not_after;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(Leaf { cert_pem: cert.pem(), key_pem: key.serialize_pem() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_loaded_authority_signs_as_the_new_one_did() {
        let not_after = OffsetDateTime::now_utc() + time::Duration::days(1);
        let ca = Authority::new("test CA", not_after).unwrap();
        let again = Authority::load(&ca.cert_pem, &ca.key_pem).unwrap();
        let leaf = again.issue("node", &[], Usage::Client, not_after).unwrap();
        // The leaf names the CA's subject as its issuer.
        let (_, ca_cert) = x509_parser::pem::parse_x509_pem(ca.cert_pem.as_bytes()).unwrap();
        let (_, leaf_cert) = x509_parser::pem::parse_x509_pem(leaf.cert_pem.as_bytes()).unwrap();
        let ca_cert = ca_cert.parse_x509().unwrap();
        let leaf_cert = leaf_cert.parse_x509().unwrap();
        assert_eq!(leaf_cert.issuer(), ca_cert.subject());
        leaf_cert.verify_signature(Some(ca_cert.public_key())).unwrap();
    }
}
