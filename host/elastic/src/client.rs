//! A small Elasticsearch REST client: endpoints tried in turn, basic auth,
//! a private CA, JSON in and out, and errors that say which request failed
//! and why (Elasticsearch's own `error.reason` where there is one).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use reqwest::{Method, StatusCode, Url};
use serde_json::Value;

use crate::Error;

/// How to reach Elasticsearch: what the CR's `output.elasticsearch` says,
/// with the secrets resolved by whoever runs us (env vars, mounted files).
#[derive(Debug, Clone, Default)]
pub struct ElasticConfig {
    pub endpoints: Vec<String>,
    pub username: Option<String>,
    pub password: Option<String>,
    /// PEM file with the CA that signed the server's certificate. Without
    /// it, the system's roots are trusted.
    pub ca_file: Option<PathBuf>,
    /// Per-request timeout (a bulk request included).
    pub timeout: Duration,
}

impl ElasticConfig {
    pub fn new(endpoints: Vec<String>) -> Self {
        Self { endpoints, timeout: Duration::from_secs(60), ..Default::default() }
    }
}

/// A JSON answer with its status (2xx or not; the caller decides).
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub body: Value,
}

impl Answer {
    /// Elasticsearch's error type and reason, the innermost cause first
    /// when there is a chain (`caused_by`).
    pub fn error_reason(&self) -> String {
        let mut out = vec![];
        let mut node = self.body.get("error");
        while let Some(e) = node {
            match e {
                Value::String(s) => out.push(s.clone()),
                Value::Object(_) => {
                    let kind = e.get("type").and_then(Value::as_str).unwrap_or("error");
                    let reason = e.get("reason").and_then(Value::as_str).unwrap_or("");
                    out.push(format!("{kind}: {reason}"));
                }
                _ => {}
            }
            node = e.get("caused_by");
        }
        if out.is_empty() {
            return self.body.to_string().chars().take(300).collect();
        }
        out.join(" <- ")
    }

    /// Whether any error in the chain is of this type (e.g.
    /// `mapper_parsing_exception`).
    pub fn has_error_type(&self, kind: &str) -> bool {
        let mut node = self.body.get("error");
        while let Some(e) = node {
            if e.get("type").and_then(Value::as_str) == Some(kind) {
                return true;
            }
            node = e.get("caused_by");
        }
        false
    }
}

#[derive(Clone)]
pub struct Elastic {
    http: reqwest::Client,
    endpoints: Arc<Vec<Url>>,
    auth: Option<(String, String)>,
}

impl std::fmt::Debug for Elastic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the password.
        f.debug_struct("Elastic")
            .field("endpoints", &self.endpoints)
            .field("auth", &self.auth.as_ref().map(|a| &a.0))
            .finish()
    }
}

fn tls_config(ca_file: Option<&Path>) -> Result<rustls::ClientConfig, Error> {
    let mut roots = rustls::RootCertStore::empty();
    match ca_file {
        Some(path) => {
            let pem =
                std::fs::read(path).map_err(|e| Error::CaFile { path: path.to_path_buf(), reason: e.to_string() })?;
            let certs: Vec<_> = rustls::pki_types::pem::PemObject::pem_slice_iter(&pem)
                .collect::<Result<Vec<rustls::pki_types::CertificateDer<'static>>, _>>()
                .map_err(|e| Error::CaFile {
                    path: path.to_path_buf(),
                    reason: format!("not PEM certificates: {e}"),
                })?;
            if certs.is_empty() {
                return Err(Error::CaFile { path: path.to_path_buf(), reason: "holds no certificate".into() });
            }
            for cert in certs {
                roots.add(cert).map_err(|e| Error::CaFile { path: path.to_path_buf(), reason: e.to_string() })?;
            }
        }
        None => {
            // Unreadable system certificates only narrow what we trust.
            for cert in rustls_native_certs::load_native_certs().certs {
                let _ = roots.add(cert);
            }
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Tls(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(config)
}

impl Elastic {
    pub fn new(config: &ElasticConfig) -> Result<Self, Error> {
        if config.endpoints.is_empty() {
            return Err(Error::Endpoint { endpoint: String::new(), reason: "no endpoint given".into() });
        }
        let endpoints = config
            .endpoints
            .iter()
            .map(|e| {
                let url =
                    Url::parse(e).map_err(|err| Error::Endpoint { endpoint: e.clone(), reason: err.to_string() })?;
                if !matches!(url.scheme(), "http" | "https") {
                    return Err(Error::Endpoint { endpoint: e.clone(), reason: "scheme must be http or https".into() });
                }
                Ok(url)
            })
            .collect::<Result<Vec<_>, _>>()?;
        let auth = match (&config.username, &config.password) {
            (Some(u), Some(p)) => Some((u.clone(), p.clone())),
            (None, None) => None,
            _ => return Err(Error::Auth("a username needs a password and the other way round".into())),
        };
        let http = reqwest::Client::builder()
            .tls_backend_preconfigured(tls_config(config.ca_file.as_deref())?)
            .timeout(config.timeout)
            .connect_timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| Error::Tls(e.to_string()))?;
        Ok(Self { http, endpoints: Arc::new(endpoints), auth })
    }

    /// Send one request, trying each endpoint until one answers (any HTTP
    /// status counts as an answer). `body` is sent as is with `content_type`.
    pub async fn send_raw(
        &self,
        method: Method,
        path: &str,
        content_type: &str,
        body: Option<Vec<u8>>,
    ) -> Result<Answer, Error> {
        let mut last = String::new();
        for base in self.endpoints.iter() {
            let url = base
                .join(path.trim_start_matches('/'))
                .map_err(|e| Error::Endpoint { endpoint: base.to_string(), reason: e.to_string() })?;
            let mut request = self.http.request(method.clone(), url).header("Accept", "application/json");
            if let Some((u, p)) = &self.auth {
                request = request.basic_auth(u, Some(p));
            }
            if let Some(b) = &body {
                request = request.header("Content-Type", content_type).body(b.clone());
            }
            match request.send().await {
                Ok(response) => {
                    let status = response.status();
                    let bytes = response
                        .bytes()
                        .await
                        .map_err(|e| Error::Transport { what: format!("{method} {path}"), reason: e.to_string() })?;
                    let body = if bytes.is_empty() {
                        Value::Null
                    } else {
                        serde_json::from_slice(&bytes)
                            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()))
                    };
                    return Ok(Answer { status, body });
                }
                Err(e) => last = format!("{base}: {}", error_chain(&e)),
            }
        }
        Err(Error::Unreachable { what: format!("{method} {path}"), reason: last })
    }

    pub async fn send(&self, method: Method, path: &str, body: Option<&Value>) -> Result<Answer, Error> {
        let bytes = body.map(|b| serde_json::to_vec(b).expect("JSON value serializes"));
        self.send_raw(method, path, "application/json", bytes).await
    }

    /// A request that must succeed: a non-2xx status becomes an error with
    /// Elasticsearch's reason.
    pub async fn ok(&self, method: Method, path: &str, body: Option<&Value>) -> Result<Value, Error> {
        let answer = self.send(method.clone(), path, body).await?;
        if !answer.status.is_success() {
            return Err(Error::Status {
                what: format!("{method} {path}"),
                status: answer.status.as_u16(),
                reason: answer.error_reason(),
            });
        }
        Ok(answer.body)
    }

    /// `POST <index>/_search` with `body`; the answer's JSON. An index
    /// that does not exist yet answers no hits (nothing written there yet).
    pub async fn search(&self, index: &str, body: &Value) -> Result<Value, Error> {
        self.ok(Method::POST, &format!("{index}/_search?ignore_unavailable=true"), Some(body)).await
    }

    /// Make every write so far visible to search (tests, and the sync
    /// before it looks for vanished findings).
    pub async fn refresh(&self, index: &str) -> Result<(), Error> {
        self.ok(Method::POST, &format!("{index}/_refresh?ignore_unavailable=true"), None).await.map(|_| ())
    }
}

fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn error_reason_follows_the_cause_chain() {
        let answer = Answer {
            status: StatusCode::BAD_REQUEST,
            body: json!({ "error": { "type": "illegal_argument_exception", "reason": "invalid template",
                "caused_by": { "type": "mapper_parsing_exception", "reason": "The mapper type [wildcard] declared on field [p] does not exist." } } }),
        };
        assert!(answer.has_error_type("mapper_parsing_exception"));
        assert!(!answer.has_error_type("index_not_found_exception"));
        assert_eq!(
            answer.error_reason(),
            "illegal_argument_exception: invalid template <- mapper_parsing_exception: The mapper type [wildcard] declared on field [p] does not exist."
        );
    }

    #[test]
    fn bad_endpoints_and_half_credentials_are_named() {
        let err = Elastic::new(&ElasticConfig::new(vec!["ftp://es:21".into()])).unwrap_err();
        assert!(err.to_string().contains("ftp://es:21"), "{err}");
        let mut config = ElasticConfig::new(vec!["https://es:9200".into()]);
        config.username = Some("elastic".into());
        assert!(Elastic::new(&config).unwrap_err().to_string().contains("password"));
        config.password = Some("x".into());
        config.ca_file = Some("/nonexistent/ca.crt".into());
        assert!(Elastic::new(&config).unwrap_err().to_string().contains("/nonexistent/ca.crt"));
    }
}
