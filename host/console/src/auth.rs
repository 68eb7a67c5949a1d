//! Who may look. Without a login ([`Mode::Open`]) whoever reaches the port
//! may (the chart's Service is ClusterIP, reached with `kubectl
//! port-forward`, which the API server authorizes). With
//! [`Mode::Kubernetes`] the console asks for a Kubernetes bearer token
//! (`kubectl create token NAME`), has the API server check it (a
//! TokenReview: signature, expiry, revocation) and then asks whether its
//! user may list SecurityAgents (a SubjectAccessReview): the cluster's RBAC
//! decides, the console keeps no users of its own.
//!
//! The token lives in an HttpOnly, SameSite=Strict cookie and is checked
//! again at most every [`RECHECK`]: an expired or revoked token stops
//! working within that time.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use axum::Form;
use axum::extract::{Query, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use k8s_openapi::api::authorization::v1::{ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec};
use kube::api::{Api, PostParams};
use maud::html;
use serde::Deserialize;
use sha2::{Digest as _, Sha256};
use tokio::sync::Mutex;

use crate::AppState;
use crate::page::{self, Nav};

/// How visitors are let in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// No login: reaching the port is the permission.
    Open,
    /// A Kubernetes bearer token whose user may list SecurityAgents.
    Kubernetes,
}

/// The signed-in user, for the page header.
#[derive(Debug, Clone)]
pub struct User {
    pub name: String,
}

const COOKIE: &str = "secop_console_token";
/// How long a checked token is believed without asking again.
pub const RECHECK: Duration = Duration::from_secs(30);

/// Why a request is not let in.
#[derive(Debug, Clone)]
enum Denied {
    /// No token.
    Missing,
    /// The API server did not accept the token (expired, revoked, not
    /// this cluster's), with its reason.
    Rejected(String),
    /// The token's user may not list SecurityAgents.
    Forbidden(String),
    /// The API server could not be asked.
    Unavailable(String),
}

/// What a token check found.
type Verdict = Result<User, Denied>;

/// Tokens checked recently, by their sha256 (the token itself is not kept).
#[derive(Default)]
pub(crate) struct Sessions {
    checked: Mutex<HashMap<String, (Instant, Verdict)>>,
}

fn token_from(headers: &HeaderMap) -> Option<String> {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_string);
    bearer.or_else(|| {
        headers.get_all(header::COOKIE).iter().filter_map(|v| v.to_str().ok()).flat_map(|v| v.split(';')).find_map(
            |pair| {
                let (name, value) = pair.trim().split_once('=')?;
                (name == COOKIE && !value.is_empty()).then(|| value.to_string())
            },
        )
    })
}

/// A JWT-like token: what may go into a cookie unquoted.
fn plausible(token: &str) -> bool {
    !token.is_empty()
        && token.len() <= 16 << 10
        && token.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
}

async fn check(state: &AppState, token: Option<String>) -> Result<User, Denied> {
    let token = token.ok_or(Denied::Missing)?;
    if !plausible(&token) {
        return Err(Denied::Rejected("not a bearer token (expected the output of `kubectl create token`)".into()));
    }
    let key = hex::encode(Sha256::digest(token.as_bytes()));
    {
        let mut checked = state.sessions.checked.lock().await;
        checked.retain(|_, (at, _)| at.elapsed() < RECHECK);
        if let Some((_, verdict)) = checked.get(&key) {
            return verdict.clone();
        }
    }
    let verdict = review(&state.console.kube, &token).await;
    if !matches!(verdict, Err(Denied::Unavailable(_))) {
        state.sessions.checked.lock().await.insert(key, (Instant::now(), verdict.clone()));
    }
    verdict
}

/// TokenReview, then SubjectAccessReview for `list securityagents`.
async fn review(kube: &kube::Client, token: &str) -> Result<User, Denied> {
    let review = TokenReview {
        spec: TokenReviewSpec { token: Some(token.to_string()), ..Default::default() },
        ..Default::default()
    };
    let reviewed = Api::<TokenReview>::all(kube.clone())
        .create(&PostParams::default(), &review)
        .await
        .map_err(|e| Denied::Unavailable(format!("TokenReview: {e}")))?;
    let status = reviewed.status.unwrap_or_default();
    if status.authenticated != Some(true) {
        let reason = status.error.filter(|e| !e.is_empty()).unwrap_or_else(|| "the token is not valid".into());
        return Err(Denied::Rejected(reason));
    }
    let user = status.user.unwrap_or_default();
    let name = user.username.clone().unwrap_or_default();
    let access = SubjectAccessReview {
        spec: SubjectAccessReviewSpec {
            user: user.username,
            groups: user.groups,
            uid: user.uid,
            extra: user.extra,
            resource_attributes: Some(ResourceAttributes {
                group: Some(secop_api::GROUP.into()),
                resource: Some("securityagents".into()),
                verb: Some("list".into()),
                ..Default::default()
            }),
            ..Default::default()
        },
        ..Default::default()
    };
    let decided = Api::<SubjectAccessReview>::all(kube.clone())
        .create(&PostParams::default(), &access)
        .await
        .map_err(|e| Denied::Unavailable(format!("SubjectAccessReview: {e}")))?;
    if decided.status.is_some_and(|s| s.allowed) { Ok(User { name }) } else { Err(Denied::Forbidden(name)) }
}

/// The login check in front of every page.
pub(crate) async fn require(State(state): State<AppState>, mut request: Request, next: Next) -> Response {
    if state.console.auth == Mode::Open {
        return next.run(request).await;
    }
    match check(&state, token_from(request.headers())).await {
        Ok(user) => {
            request.extensions_mut().insert(user);
            next.run(request).await
        }
        Err(Denied::Missing) => Redirect::to("/login").into_response(),
        Err(Denied::Rejected(_)) => Redirect::to("/login?why=rejected").into_response(),
        Err(denied) => refusal(denied),
    }
}

fn refusal(denied: Denied) -> Response {
    let (status, title, detail) = match denied {
        Denied::Forbidden(user) => (
            StatusCode::FORBIDDEN,
            "Not allowed",
            format!(
                "{user} may not list SecurityAgents (security.example.io), which the console requires. Ask for a RoleBinding to the chart's console-viewer ClusterRole."
            ),
        ),
        Denied::Unavailable(reason) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "Cannot check the token",
            format!("The Kubernetes API server could not be asked ({reason}). Try again shortly."),
        ),
        Denied::Rejected(reason) => (StatusCode::UNAUTHORIZED, "Token not accepted", reason),
        Denied::Missing => (StatusCode::UNAUTHORIZED, "Log in", "No token given.".into()),
    };
    page::respond(status, page::layout(title, Nav::None, None, page::problem(title, &detail)))
}

#[derive(Deserialize)]
pub(crate) struct LoginQuery {
    why: Option<String>,
}

pub(crate) async fn login_page(State(state): State<AppState>, Query(query): Query<LoginQuery>) -> Response {
    if state.console.auth == Mode::Open {
        return Redirect::to("/agents").into_response();
    }
    // Fixed messages by code: the query string never puts text on the page.
    let notice = match query.why.as_deref() {
        Some("rejected") => Some((
            "Your token is no longer accepted",
            "It has expired, was revoked, or is not a token of this cluster. Log in with a new one.",
        )),
        Some("logout") => Some(("Logged out", "The token was removed from this browser.")),
        _ => None,
    };
    login_form(StatusCode::OK, notice.map(|(t, d)| (t.to_string(), d.to_string())))
}

fn login_form(status: StatusCode, notice: Option<(String, String)>) -> Response {
    let body = html! {
        @if let Some((title, detail)) = &notice {
            (page::problem(title, detail))
        }
        form.login method="post" action="/login" {
            label for="token" { "Kubernetes bearer token" }
            input #token type="password" name="token" autocomplete="off" required;
            button type="submit" { "Log in" }
        }
        p.hint {
            "Create one with " code { "kubectl create token NAME -n NAMESPACE --duration 8h" }
            " for a ServiceAccount bound to the console-viewer ClusterRole. The console checks it with the API server and keeps it only in this browser's cookie."
        }
    };
    page::respond(status, page::layout("Log in", Nav::None, None, body))
}

#[derive(Deserialize)]
pub(crate) struct LoginForm {
    token: String,
}

pub(crate) async fn login(State(state): State<AppState>, Form(form): Form<LoginForm>) -> Response {
    let token = form.token.trim().to_string();
    match check(&state, Some(token.clone())).await {
        Ok(_) => {
            let cookie = format!("{COOKIE}={token}; HttpOnly; SameSite=Strict; Path=/");
            ([(header::SET_COOKIE, cookie)], Redirect::to("/agents")).into_response()
        }
        Err(Denied::Rejected(reason)) => {
            login_form(StatusCode::UNAUTHORIZED, Some(("The token was not accepted".into(), reason)))
        }
        Err(Denied::Missing) => {
            login_form(StatusCode::UNAUTHORIZED, Some(("No token".into(), "Paste a token.".into())))
        }
        Err(denied) => refusal(denied),
    }
}

pub(crate) async fn logout() -> Response {
    let cookie = format!("{COOKIE}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0");
    ([(header::SET_COOKIE, cookie)], Redirect::to("/login?why=logout")).into_response()
}
