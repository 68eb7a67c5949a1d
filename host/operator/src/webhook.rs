//! The validating admission webhook: HTTPS for the API server, the
//! review in `admission.rs`.
//!
//! Its certificate needs no manual step. By default every replica keeps
//! one Secret in the operator's namespace current (a CA and a serving
//! certificate for the webhook Service's names, made with rcgen, renewed a
//! quarter of their life before they expire or when the names change) and
//! the ValidatingWebhookConfiguration's `caBundle` holding its CA (and the
//! CA before it, so replicas still serving the old certificate are trusted
//! while they pick up the new one). With cert-manager the chart mounts the
//! certificate and cert-manager injects the CA; the files are re-read when
//! they change.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::routing::post;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, PostParams};
use kube::core::DynamicObject;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview};
use kube::{Client, ResourceExt};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;

use crate::admission::Reviewer;

/// Where the API server posts SecurityAgent reviews (the chart's
/// ValidatingWebhookConfiguration names this path).
pub const REVIEW_PATH: &str = "/validate-securityagent";

/// How the webhook gets its certificate.
#[derive(Clone, Debug)]
pub enum TlsSource {
    /// The operator keeps `secret` (in `namespace`) and the caBundle of the
    /// ValidatingWebhookConfiguration `webhook_config` current itself.
    Managed { namespace: String, secret: String, webhook_config: String, hosts: Vec<String> },
    /// `tls.crt` and `tls.key` in a directory (cert-manager's Secret,
    /// mounted), re-read when they change.
    Files { dir: PathBuf },
}

/// `secop run --webhook-*`.
#[derive(Clone, Debug)]
pub struct WebhookOptions {
    pub addr: SocketAddr,
    pub tls: TlsSource,
    /// Time a review's feature calls may take; past it the answer is
    /// "not checked" (allowed, with a warning).
    pub budget: Duration,
}

/// Why the webhook could not serve.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    #[error("webhook address {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error("webhook certificate: {0}")]
    Certificate(String),
    #[error("webhook server stopped: {0}")]
    Stopped(String),
}

/// The certificate being served; replaced on renewal without a restart.
#[derive(Debug, Default)]
struct CurrentCert(RwLock<Option<Arc<CertifiedKey>>>);

impl CurrentCert {
    fn set(&self, key: Arc<CertifiedKey>) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = Some(key);
    }
}

impl ResolvesServerCert for CurrentCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// Serve reviews until the process ends; the certificate is kept current
/// alongside. Connections are refused (the API server then applies the
/// webhook's failurePolicy) until there is a certificate.
pub(crate) async fn serve(
    options: WebhookOptions,
    client: Client,
    reviewer: Arc<Reviewer>,
) -> Result<(), WebhookError> {
    let current = Arc::new(CurrentCert::default());
    let certificates = tokio::spawn(keep_certificate(options.tls.clone(), client, current.clone()));
    let result = serve_tls(options.addr, current, reviewer).await;
    certificates.abort();
    result
}

async fn serve_tls(addr: SocketAddr, current: Arc<CurrentCert>, reviewer: Arc<Reviewer>) -> Result<(), WebhookError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| WebhookError::Certificate(e.to_string()))?
        .with_no_client_auth()
        .with_cert_resolver(current.clone());
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let app = Router::new().route(
        REVIEW_PATH,
        post(move |Json(review): Json<AdmissionReview<DynamicObject>>| {
            let reviewer = reviewer.clone();
            async move { Json(review_one(reviewer, review).await) }
        }),
    );
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(|source| WebhookError::Bind { addr, source })?;
    tracing::info!(%addr, path = REVIEW_PATH, "admission webhook listening");
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                tracing::warn!(error = %e, "webhook accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let (acceptor, app) = (acceptor.clone(), app.clone());
        tokio::spawn(async move {
            let tls = match acceptor.accept(tcp).await {
                Ok(tls) => tls,
                Err(e) => {
                    tracing::debug!(%peer, error = %e, "webhook TLS handshake failed");
                    return;
                }
            };
            let service = TowerToHyperService::new(app);
            if let Err(e) =
                hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(tls), service).await
            {
                tracing::debug!(%peer, error = %e, "webhook connection ended");
            }
        });
    }
}

/// One AdmissionReview: a request the review cannot read is answered, not
/// dropped (an answer without a uid would be a webhook failure).
async fn review_one(reviewer: Arc<Reviewer>, review: AdmissionReview<DynamicObject>) -> AdmissionReview<DynamicObject> {
    let request: AdmissionRequest<DynamicObject> = match review.try_into() {
        Ok(request) => request,
        Err(e) => return AdmissionResponse::invalid(format!("not an AdmissionReview request: {e}")).into_review(),
    };
    let started = std::time::Instant::now();
    let (namespace, name) = (request.namespace.clone().unwrap_or_default(), request.name.clone());
    let response = reviewer.respond(request).await;
    tracing::info!(
        namespace,
        name,
        allowed = response.allowed,
        millis = started.elapsed().as_millis() as u64,
        "admission review"
    );
    response.into_review()
}

/// Keep `current` serving a valid certificate, checked every minute.
async fn keep_certificate(source: TlsSource, client: Client, current: Arc<CurrentCert>) {
    let mut served: Option<String> = None;
    loop {
        let outcome = match &source {
            TlsSource::Managed { namespace, secret, webhook_config, hosts } => {
                managed::ensure(&client, namespace, secret, webhook_config, hosts).await
            }
            TlsSource::Files { dir } => read_files(dir).await,
        };
        match outcome {
            Ok(pair) if served.as_ref() != Some(&pair.cert_pem) => match certified_key(&pair) {
                Ok(key) => {
                    current.set(key);
                    tracing::info!("admission webhook serving its certificate");
                    served = Some(pair.cert_pem);
                }
                Err(e) => tracing::warn!(error = %e, "webhook certificate unusable"),
            },
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "webhook certificate not current; retrying"),
        }
        tokio::time::sleep(Duration::from_secs(if served.is_some() { 60 } else { 5 })).await;
    }
}

/// A serving certificate (PEM, chain) and its key (PEM).
#[derive(Clone, PartialEq, Eq)]
struct CertPair {
    cert_pem: String,
    key_pem: String,
}

async fn read_files(dir: &std::path::Path) -> Result<CertPair, WebhookError> {
    let read = |name: &str| {
        std::fs::read_to_string(dir.join(name))
            .map_err(|e| WebhookError::Certificate(format!("{}: {e}", dir.join(name).display())))
    };
    Ok(CertPair { cert_pem: read("tls.crt")?, key_pem: read("tls.key")? })
}

fn certified_key(pair: &CertPair) -> Result<Arc<CertifiedKey>, WebhookError> {
    let bad = |e: &dyn std::fmt::Display| WebhookError::Certificate(e.to_string());
    let chain: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(pair.cert_pem.as_bytes()).collect::<Result<_, _>>().map_err(|e| bad(&e))?;
    let key = PrivateKeyDer::from_pem_slice(pair.key_pem.as_bytes()).map_err(|e| bad(&e))?;
    let provider = rustls::crypto::ring::default_provider();
    let key = CertifiedKey::from_der(chain, key, &provider).map_err(|e| bad(&e))?;
    Ok(Arc::new(key))
}

/// The operator-kept certificate: a Secret every replica reads, written by
/// whichever replica finds it missing or due (optimistic concurrency: the
/// loser of a race reads the winner's).
mod managed {
    use super::*;
    use std::collections::BTreeMap;

    use time::OffsetDateTime;

    use crate::pki::{Authority, Usage, annotated_time, secret_text};

    /// Lifetime of a CA and serving certificate pair.
    const LIFETIME: time::Duration = time::Duration::days(365);
    /// Renewed when less than this is left.
    const RENEW_BEFORE: time::Duration = time::Duration::days(90);
    const NOT_AFTER: &str = "security.example.io/not-after";
    const HOSTS: &str = "security.example.io/hosts";
    const CA_KEY: &str = "ca.crt";
    const PREVIOUS_CA_KEY: &str = "ca-previous.crt";

    pub(super) async fn ensure(
        client: &Client,
        namespace: &str,
        name: &str,
        webhook_config: &str,
        hosts: &[String],
    ) -> Result<CertPair, WebhookError> {
        let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
        let k8s = |e: kube::Error| WebhookError::Certificate(format!("Secret {namespace}/{name}: {e}"));
        let existing = secrets.get_opt(name).await.map_err(k8s)?;
        let secret = match existing.as_ref().filter(|s| current(s, hosts, OffsetDateTime::now_utc())) {
            Some(secret) => secret.clone(),
            None => {
                let previous_ca = existing.as_ref().and_then(|s| secret_text(s, CA_KEY));
                let fresh = issue(name, namespace, hosts, previous_ca)?;
                let written = match &existing {
                    None => secrets.create(&PostParams::default(), &fresh).await,
                    Some(old) => {
                        let mut fresh = fresh;
                        fresh.metadata.resource_version = old.resource_version();
                        secrets.replace(name, &PostParams::default(), &fresh).await
                    }
                };
                match written {
                    Ok(secret) => {
                        tracing::info!(secret = name, namespace, "admission webhook certificate issued");
                        secret
                    }
                    // Another replica wrote it first: use theirs.
                    Err(kube::Error::Api(e)) if e.code == 409 => secrets.get(name).await.map_err(k8s)?,
                    Err(e) => return Err(k8s(e)),
                }
            }
        };
        publish_ca(client, webhook_config, &secret).await?;
        match (secret_text(&secret, "tls.crt"), secret_text(&secret, "tls.key")) {
            (Some(cert_pem), Some(key_pem)) => Ok(CertPair { cert_pem, key_pem }),
            _ => Err(WebhookError::Certificate(format!("Secret {namespace}/{name} has no tls.crt and tls.key"))),
        }
    }

    /// Issued by this operator for these names and not due for renewal.
    fn current(secret: &Secret, hosts: &[String], now: OffsetDateTime) -> bool {
        let not_after = annotated_time(secret, NOT_AFTER);
        let same_hosts = secret.annotations().get(HOSTS).is_some_and(|h| *h == hosts.join(","));
        let complete = ["tls.crt", "tls.key", CA_KEY].iter().all(|k| secret_text(secret, k).is_some());
        same_hosts && complete && not_after.is_some_and(|t| t - now > RENEW_BEFORE)
    }

    /// A new CA and a serving certificate for `hosts` (DNS names or IP
    /// addresses), as the Secret that holds them.
    fn issue(
        name: &str,
        namespace: &str,
        hosts: &[String],
        previous_ca: Option<String>,
    ) -> Result<Secret, WebhookError> {
        let bad = |e: rcgen::Error| WebhookError::Certificate(e.to_string());
        let not_after = OffsetDateTime::now_utc() + LIFETIME;
        let ca = Authority::new(&format!("{name} CA"), not_after).map_err(bad)?;
        let leaf = ca.issue(hosts.first().map_or("", String::as_str), hosts, Usage::Server, not_after).map_err(bad)?;
        let (cert, key, ca_cert) = (leaf.cert_pem, leaf.key_pem, ca.cert_pem);

        let mut data = BTreeMap::from([
            ("tls.crt".to_string(), ByteString(cert.into_bytes())),
            ("tls.key".to_string(), ByteString(key.into_bytes())),
            (CA_KEY.to_string(), ByteString(ca_cert.into_bytes())),
        ]);
        if let Some(previous) = previous_ca {
            data.insert(PREVIOUS_CA_KEY.to_string(), ByteString(previous.into_bytes()));
        }
        Ok(Secret {
            metadata: kube::api::ObjectMeta {
                name: Some(name.to_string()),
                namespace: Some(namespace.to_string()),
                annotations: Some(BTreeMap::from([
                    (NOT_AFTER.to_string(), not_after.unix_timestamp().to_string()),
                    (HOSTS.to_string(), hosts.join(",")),
                ])),
                labels: Some(BTreeMap::from([(
                    "app.kubernetes.io/managed-by".to_string(),
                    secop_engine::MANAGED_BY.to_string(),
                )])),
                ..Default::default()
            },
            type_: Some("kubernetes.io/tls".into()),
            data: Some(data),
            ..Default::default()
        })
    }

    /// The webhook configuration trusts the Secret's CA (and the one
    /// before it, for replicas still serving the old certificate).
    async fn publish_ca(client: &Client, config_name: &str, secret: &Secret) -> Result<(), WebhookError> {
        let bundle: String =
            [secret_text(secret, CA_KEY), secret_text(secret, PREVIOUS_CA_KEY)].into_iter().flatten().collect();
        let configs: Api<ValidatingWebhookConfiguration> = Api::all(client.clone());
        let k8s =
            |e: kube::Error| WebhookError::Certificate(format!("ValidatingWebhookConfiguration {config_name}: {e}"));
        let mut config = configs.get(config_name).await.map_err(k8s)?;
        let webhooks = config.webhooks.get_or_insert_with(Vec::new);
        let wanted = ByteString(bundle.into_bytes());
        if webhooks.iter().all(|w| w.client_config.ca_bundle.as_ref() == Some(&wanted)) {
            return Ok(());
        }
        for webhook in webhooks.iter_mut() {
            webhook.client_config.ca_bundle = Some(wanted.clone());
        }
        // resourceVersion is kept: a concurrent change (helm upgrade) makes
        // this a 409, retried with the fresh object next round.
        configs.replace(config_name, &PostParams::default(), &config).await.map_err(k8s)?;
        tracing::info!(config = config_name, "admission webhook caBundle updated");
        Ok(())
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn an_issued_certificate_is_current_until_renewal_is_due_or_the_names_change() {
            let hosts = vec!["secop-webhook.security.svc".to_string(), "127.0.0.1".to_string()];
            let secret = issue("secop-webhook-tls", "security", &hosts, None).unwrap();
            let now = OffsetDateTime::now_utc();
            assert!(current(&secret, &hosts, now));
            assert!(!current(&secret, &hosts[..1], now), "other names");
            assert!(!current(&secret, &hosts, now + LIFETIME - RENEW_BEFORE + time::Duration::days(1)), "renewal due");
            assert!(
                super::super::certified_key(&CertPair {
                    cert_pem: secret_text(&secret, "tls.crt").unwrap(),
                    key_pem: secret_text(&secret, "tls.key").unwrap()
                })
                .is_ok()
            );
            let renewed = issue("secop-webhook-tls", "security", &hosts, secret_text(&secret, CA_KEY)).unwrap();
            assert_eq!(
                secret_text(&renewed, PREVIOUS_CA_KEY),
                secret_text(&secret, CA_KEY),
                "the old CA stays trusted"
            );
        }
    }
}
