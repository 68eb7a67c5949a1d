//! The collectors' mutual-TLS credential (why: host/engine/src/otel.rs,
//! `TELEMETRY_SECRET`): one CA per agent namespace, a serving certificate
//! for the gateway and a client certificate for the node collectors, kept
//! in a Secret the rendered collectors mount. The operator issues it before
//! the first apply and renews it; it is never rendered (its keys are
//! random, a render is not), never pruned, and goes with its agent (owner
//! reference).
//!
//! Lifetimes: the CA 10 years, renewed in its last year; the certificates
//! 1 year, renewed 90 days before their end with the same CA, which the
//! collectors pick up without a restart (they re-read their files hourly).
//! A renewed CA rolls both collectors (a client reads its trusted CAs at
//! start only): the CA's fingerprint is part of their pod templates
//! ([`stamp`]), so a new one is an ordinary change of the desired state.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ObjectMeta, PostParams};
use kube::{Client, ResourceExt as _};
use secop_engine::objects::ObjectKey;
use secop_engine::{MANAGED_BY, MANAGED_BY_LABEL, TelemetryTls, telemetry_keys as keys};
use serde_json::{Value, json};
use time::OffsetDateTime;

use crate::error::{Conflict, ConflictKind, Error, Result};
use crate::pki::{Authority, Usage, annotated_time, secret_text};
use crate::resources::Owner;

const CA_LIFETIME: time::Duration = time::Duration::days(3650);
const CA_RENEW_BEFORE: time::Duration = time::Duration::days(365);
const LIFETIME: time::Duration = time::Duration::days(365);
const RENEW_BEFORE: time::Duration = time::Duration::days(90);

const NOT_AFTER: &str = "security.example.io/not-after";
const CA_NOT_AFTER: &str = "security.example.io/ca-not-after";
const HOSTS: &str = "security.example.io/hosts";

/// Pod-template annotation of both collectors: the fingerprint of the CA
/// they trust.
pub(crate) const CA_ANNOTATION: &str = "security.example.io/telemetry-ca";

/// Make sure the agent namespace holds a current credential for `tls`
/// before the collectors that mount it are applied. A Secret of that name
/// that this agent does not own is a [`Error::Conflict`]: never taken over.
/// Returns the fingerprint of the credential's CA.
pub(crate) async fn ensure(client: &Client, owner: &Owner<'_>, tls: &TelemetryTls) -> Result<String> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), owner.namespace);
    let object = format!("{}/{}", owner.namespace, tls.secret);
    let request = |verb: &'static str| {
        let object = object.clone();
        move |source| Error::Request { verb, resource: "secrets".into(), object, source }
    };
    let existing = secrets.get_opt(&tls.secret).await.map_err(request("get"))?;
    if let Some(secret) = &existing
        && !owned_by(secret, owner)
    {
        return Err(Error::Conflict {
            conflicts: vec![Conflict {
                object: format!("Secret {object}"),
                owner: agent_owner(secret).map(|name| format!("{}/{name}", owner.namespace)),
                kind: ConflictKind::Exists,
            }],
        });
    }
    let now = OffsetDateTime::now_utc();
    if let Some(secret) = existing.as_ref().filter(|s| current(s, &tls.gateway_hosts, now)) {
        return Ok(ca_fingerprint(secret));
    }
    let fresh = issue(existing.as_ref(), owner, tls, now)
        .map_err(|message| Error::Certificate(format!("Secret {object}: {message}")))?;
    let fingerprint = ca_fingerprint(&fresh);
    let written = match &existing {
        None => secrets.create(&PostParams::default(), &fresh).await.map_err(request("create")),
        Some(old) => {
            let mut fresh = fresh;
            fresh.metadata.resource_version = old.resource_version();
            secrets.replace(&tls.secret, &PostParams::default(), &fresh).await.map_err(request("update"))
        }
    };
    match written {
        Ok(_) => {
            tracing::info!(secret = %object, ca = %fingerprint, "collector mutual-TLS credential issued");
            Ok(fingerprint)
        }
        // Written meanwhile (a replica that just lost the lease): use that.
        Err(Error::Request { source: kube::Error::Api(e), .. }) if e.code == 409 => {
            let secret = secrets.get(&tls.secret).await.map_err(request("get"))?;
            Ok(ca_fingerprint(&secret))
        }
        Err(e) => Err(e),
    }
}

/// The fingerprint of the CA in the agent namespace's credential, if it
/// exists (read only: `secop diff`).
pub(crate) async fn existing_fingerprint(
    client: &Client,
    namespace: &str,
    tls: &TelemetryTls,
) -> Result<Option<String>> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let secret = secrets.get_opt(&tls.secret).await.map_err(|source| Error::Request {
        verb: "get",
        resource: "secrets".into(),
        object: format!("{namespace}/{}", tls.secret),
        source,
    })?;
    Ok(secret.as_ref().map(ca_fingerprint))
}

/// Put the CA's fingerprint on both collectors' pod templates.
pub(crate) fn stamp(objects: &mut [(ObjectKey, Value)], tls: &TelemetryTls, fingerprint: &str) {
    for (key, object) in objects.iter_mut() {
        let collector = match key.kind.as_str() {
            "DaemonSet" => key.name == tls.node_daemonset,
            "Deployment" => key.name == tls.gateway_deployment,
            _ => false,
        };
        if collector && object.pointer("/spec/template").is_some() {
            object["spec"]["template"]["metadata"]["annotations"][CA_ANNOTATION] = json!(fingerprint);
        }
    }
}

/// sha256 of the CA certificate (its PEM), 16 hex digits.
fn ca_fingerprint(secret: &Secret) -> String {
    use sha2::Digest as _;
    let pem = secret_text(secret, keys::CA_CERT).unwrap_or_default();
    hex::encode(sha2::Sha256::digest(pem.as_bytes()))[..16].to_string()
}

/// The Secret's owner reference names this agent (by uid).
fn owned_by(secret: &Secret, owner: &Owner<'_>) -> bool {
    let uid = owner.reference["uid"].as_str().unwrap_or_default();
    secret.owner_references().iter().any(|r| r.kind == "SecurityAgent" && r.uid == uid)
}

/// The SecurityAgent that owns the Secret, if one does.
fn agent_owner(secret: &Secret) -> Option<String> {
    secret.owner_references().iter().find(|r| r.kind == "SecurityAgent").map(|r| r.name.clone())
}

const ALL_KEYS: [&str; 6] =
    [keys::CA_CERT, keys::CA_KEY, keys::GATEWAY_CERT, keys::GATEWAY_KEY, keys::NODE_CERT, keys::NODE_KEY];

/// Complete, for these gateway names, and neither the certificates nor
/// the CA due for renewal.
fn current(secret: &Secret, hosts: &[String], now: OffsetDateTime) -> bool {
    let complete = ALL_KEYS.iter().all(|k| secret_text(secret, k).is_some());
    let same_hosts = secret.annotations().get(HOSTS).is_some_and(|h| *h == hosts.join(","));
    let leaves = annotated_time(secret, NOT_AFTER).is_some_and(|t| t - now > RENEW_BEFORE);
    complete && same_hosts && leaves && ca_current(secret, now)
}

fn ca_current(secret: &Secret, now: OffsetDateTime) -> bool {
    annotated_time(secret, CA_NOT_AFTER).is_some_and(|t| t - now > CA_RENEW_BEFORE)
}

/// New certificates, signed by the Secret's CA while that is current,
/// else by a new one.
fn issue(
    existing: Option<&Secret>,
    owner: &Owner<'_>,
    tls: &TelemetryTls,
    now: OffsetDateTime,
) -> std::result::Result<Secret, String> {
    let bad = |e: rcgen::Error| e.to_string();
    let kept = existing.filter(|s| ca_current(s, now)).and_then(|s| {
        let (cert, key) = (secret_text(s, keys::CA_CERT)?, secret_text(s, keys::CA_KEY)?);
        Some((Authority::load(&cert, &key).ok()?, annotated_time(s, CA_NOT_AFTER)?))
    });
    let (ca, ca_not_after) = match kept {
        Some(kept) => kept,
        None => {
            let not_after = now + CA_LIFETIME;
            (Authority::new(&format!("{} collectors CA", owner.namespace), not_after).map_err(bad)?, not_after)
        }
    };
    let files = credentials(&ca, &tls.gateway_hosts, owner.namespace, now + LIFETIME).map_err(bad)?;
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some(tls.secret.clone()),
            namespace: Some(owner.namespace.to_string()),
            annotations: Some(BTreeMap::from([
                (NOT_AFTER.to_string(), (now + LIFETIME).unix_timestamp().to_string()),
                (CA_NOT_AFTER.to_string(), ca_not_after.unix_timestamp().to_string()),
                (HOSTS.to_string(), tls.gateway_hosts.join(",")),
            ])),
            labels: Some(BTreeMap::from([(MANAGED_BY_LABEL.to_string(), MANAGED_BY.to_string())])),
            owner_references: Some(vec![
                serde_json::from_value(owner.reference.clone()).map_err(|e| format!("owner reference: {e}"))?,
            ]),
            ..Default::default()
        },
        type_: Some("Opaque".into()),
        data: Some(files.into_iter().map(|(k, v)| (k.to_string(), ByteString(v.into_bytes()))).collect()),
        ..Default::default()
    };
    Ok(secret)
}

/// The Secret's files, by key: the CA (certificate and key), the
/// gateway's serving certificate for `gateway_hosts`, the node
/// collectors' client certificate.
fn credentials(
    ca: &Authority,
    gateway_hosts: &[String],
    namespace: &str,
    not_after: OffsetDateTime,
) -> std::result::Result<BTreeMap<&'static str, String>, rcgen::Error> {
    let first = gateway_hosts.first().map_or("otel-gateway", String::as_str);
    let gateway = ca.issue(first, gateway_hosts, Usage::Server, not_after)?;
    let node = ca.issue(&format!("node collectors of {namespace}"), &[], Usage::Client, not_after)?;
    Ok(BTreeMap::from([
        (keys::CA_CERT, ca.cert_pem.clone()),
        (keys::CA_KEY, ca.key_pem.clone()),
        (keys::GATEWAY_CERT, gateway.cert_pem),
        (keys::GATEWAY_KEY, gateway.key_pem),
        (keys::NODE_CERT, node.cert_pem),
        (keys::NODE_KEY, node.key_pem),
    ]))
}

/// A credential as the operator issues it, for collectors run outside a
/// cluster (the data-path tests and benchmarks run the rendered configs
/// with these files in place of the mounted Secret).
pub fn issue_telemetry_files(gateway_hosts: &[String]) -> std::result::Result<BTreeMap<&'static str, String>, String> {
    let not_after = OffsetDateTime::now_utc() + LIFETIME;
    let ca = Authority::new("collectors CA", not_after).map_err(|e| e.to_string())?;
    credentials(&ca, gateway_hosts, "local", not_after).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owner_reference() -> serde_json::Value {
        json!({ "apiVersion": "security.example.io/v1alpha1", "kind": "SecurityAgent", "name": "poc", "uid": "u-1", "controller": true })
    }

    fn tls() -> TelemetryTls {
        TelemetryTls {
            secret: "secop-telemetry-mtls".into(),
            gateway_hosts: vec!["otel-gateway.sec.svc".into(), "otel-gateway.sec.svc.cluster.local".into()],
            node_daemonset: "otel-node".into(),
            gateway_deployment: "otel-gateway".into(),
        }
    }

    fn parse(pem: &str) -> Vec<u8> {
        x509_parser::pem::parse_x509_pem(pem.as_bytes()).unwrap().1.contents
    }

    #[test]
    fn certificates_are_renewed_with_the_same_ca_and_the_ca_in_its_last_year() {
        let reference = owner_reference();
        let owner = Owner { agent: "poc", namespace: "sec", reference: &reference };
        let now = OffsetDateTime::now_utc();
        let first = issue(None, &owner, &tls(), now).unwrap();
        assert!(current(&first, &tls().gateway_hosts, now));
        assert!(owned_by(&first, &owner));
        assert!(!current(&first, &["otel-gateway.other.svc".to_string()], now), "names changed");

        // 10 months on: the certificates are due, the CA is kept.
        let later = now + time::Duration::days(300);
        assert!(!current(&first, &tls().gateway_hosts, later));
        let second = issue(Some(&first), &owner, &tls(), later).unwrap();
        assert_eq!(secret_text(&second, keys::CA_CERT), secret_text(&first, keys::CA_CERT));
        assert_eq!(ca_fingerprint(&second), ca_fingerprint(&first), "the collectors do not roll");
        assert_ne!(secret_text(&second, keys::NODE_CERT), secret_text(&first, keys::NODE_CERT));
        let ca = parse(&secret_text(&second, keys::CA_CERT).unwrap());
        let ca = x509_parser::parse_x509_certificate(&ca).unwrap().1;
        for leaf in [keys::GATEWAY_CERT, keys::NODE_CERT] {
            let der = parse(&secret_text(&second, leaf).unwrap());
            let cert = x509_parser::parse_x509_certificate(&der).unwrap().1;
            cert.verify_signature(Some(ca.public_key())).unwrap();
        }

        // In the CA's last year: a new CA.
        let late = now + time::Duration::days(3400);
        let third = issue(Some(&second), &owner, &tls(), late).unwrap();
        assert_ne!(secret_text(&third, keys::CA_CERT), secret_text(&second, keys::CA_CERT));
        assert_ne!(ca_fingerprint(&third), ca_fingerprint(&second), "the collectors roll");
    }

    #[test]
    fn the_gateway_certificate_names_the_service_and_the_node_one_is_for_clients() {
        let files = issue_telemetry_files(&tls().gateway_hosts).unwrap();
        let der = parse(&files[keys::GATEWAY_CERT]);
        let gateway = x509_parser::parse_x509_certificate(&der).unwrap().1;
        let names: Vec<String> = gateway
            .subject_alternative_name()
            .unwrap()
            .unwrap()
            .value
            .general_names
            .iter()
            .filter_map(|n| match n {
                x509_parser::extensions::GeneralName::DNSName(name) => Some(name.to_string()),
                _ => None,
            })
            .collect();
        assert_eq!(names, ["otel-gateway.sec.svc", "otel-gateway.sec.svc.cluster.local"]);
        assert!(gateway.extended_key_usage().unwrap().unwrap().value.server_auth);
        let der = parse(&files[keys::NODE_CERT]);
        let node = x509_parser::parse_x509_certificate(&der).unwrap().1;
        let usage = node.extended_key_usage().unwrap().unwrap().value;
        assert!(usage.client_auth && !usage.server_auth);
    }
}
