//! `secop console`: a read-only web console for the sensor grid.
//!
//! Pages, each a named handler that reads its sources and renders HTML:
//! - **Agents** (`/agents`, `/agents/{ns}/{name}`): every SecurityAgent, its
//!   conditions, each feature's module (image, digest, signer) and last
//!   rollback, its Events ([`agents`]);
//! - **Events** (`/events`): the three panels of deploy/kibana (events per
//!   tool over time, severity, top namespaces and pods) and a searchable,
//!   paged event table ([`events`]);
//! - **Inventory and alerts** (`/posture`): assets by kind and state, and
//!   posture alerts open and resolved with their evidence ([`posture`]);
//! - **CTEM** (`/ctem`): the checklist of `secop ctem-report` and the
//!   continuous validation runs per scenario ([`ctem`]).
//!
//! Everything is read: the console's identity needs get/list/watch on
//! SecurityAgents and Events and read on the indices, nothing else
//! (deploy/helm/security-operator/templates/console.yaml). Aggregations
//! run in Elasticsearch, tables are paged, so a page costs a few requests
//! whatever the number of events. Elasticsearch credentials stay in this
//! process; the browser gets HTML with inline SVG, one stylesheet and no
//! script.

mod agents;
pub mod auth;
mod charts;
mod ctem;
mod events;
mod page;
mod posture;

use std::sync::Arc;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use secop_elastic::Elastic;

/// The three CTEM indices.
#[derive(Debug, Clone)]
pub struct Indices {
    pub inventory: String,
    pub events: String,
    pub vulnerabilities: String,
}

/// Where the console reads from and who may look.
pub struct Console {
    pub kube: kube::Client,
    /// None: Elasticsearch not configured (the pages that need it say so).
    pub elastic: Option<Elastic>,
    /// The endpoint(s), for messages (never credentials).
    pub elastic_endpoints: Vec<String>,
    pub indices: Indices,
    /// Namespace of the sensors (the CTEM checklist's VAL-05).
    pub sensor_namespace: String,
    pub auth: auth::Mode,
}

#[derive(Clone)]
pub(crate) struct AppState(Arc<Inner>);

pub(crate) struct Inner {
    pub(crate) console: Console,
    pub(crate) sessions: auth::Sessions,
}

impl std::ops::Deref for AppState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

/// The console's routes, with its security headers and login check.
pub fn router(console: Console) -> Router {
    let state = AppState(Arc::new(Inner { console, sessions: auth::Sessions::default() }));
    let pages = Router::new()
        .route("/", get(|| async { Redirect::to("/agents") }))
        .route("/agents", get(agents::list_page))
        .route("/agents/{namespace}/{name}", get(agents::detail_page))
        .route("/events", get(events::page))
        .route("/posture", get(posture::page))
        .route("/ctem", get(ctem::page))
        .fallback(not_found)
        .route_layer(middleware::from_fn_with_state(state.clone(), auth::require));
    Router::new()
        .route("/login", get(auth::login_page).post(auth::login))
        .route("/logout", axum::routing::post(auth::logout))
        .route("/assets/console.css", get(stylesheet))
        .route("/healthz", get(|| async { "ok" }))
        .merge(pages)
        .layer(middleware::from_fn(security_headers))
        .with_state(state)
}

/// Serve `router(console)` on `listener` until the process ends.
pub async fn serve(listener: tokio::net::TcpListener, console: Console) -> std::io::Result<()> {
    axum::serve(listener, router(console)).await
}

async fn stylesheet() -> Response {
    ([(header::CONTENT_TYPE, "text/css; charset=utf-8")], include_str!("../assets/console.css")).into_response()
}

async fn not_found(State(_): State<AppState>, request: Request) -> Response {
    page::not_found(None, &format!("No page at {}.", request.uri().path()))
}

/// Headers on every answer: no script, no framing, nothing cached (pages
/// show security data and may sit behind a login).
async fn security_headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    let set = |headers: &mut axum::http::HeaderMap, name: header::HeaderName, value: &'static str| {
        headers.insert(name, HeaderValue::from_static(value));
    };
    set(
        headers,
        header::CONTENT_SECURITY_POLICY,
        "default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    );
    set(headers, header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    set(headers, header::X_FRAME_OPTIONS, "DENY");
    set(headers, header::REFERRER_POLICY, "no-referrer");
    set(headers, header::CACHE_CONTROL, "no-store");
    response
}

/// What pages that need Elasticsearch show when none is configured.
pub(crate) fn elastic_missing() -> maud::Markup {
    page::problem(
        "Elasticsearch is not configured",
        "Start the console with --endpoint (the chart sets it from console.elasticsearch) to see events, posture and the CTEM checklist.",
    )
}

/// What pages show when Elasticsearch did not answer: which endpoint and
/// why, never credentials (the client's errors carry none).
pub(crate) fn elastic_unreachable(state: &AppState, error: &secop_elastic::Error) -> maud::Markup {
    let endpoints = state.console.elastic_endpoints.join(", ");
    let title = match error {
        secop_elastic::Error::Unreachable { .. } | secop_elastic::Error::Transport { .. } => {
            format!("Elasticsearch at {endpoints} is unreachable")
        }
        secop_elastic::Error::Status { status: 401 | 403, .. } => {
            format!("Elasticsearch at {endpoints} refused the console's credentials")
        }
        secop_elastic::Error::Status { status: 404, .. } => {
            format!("An index is missing in Elasticsearch at {endpoints} (run `secop es-setup`)")
        }
        _ => format!("Elasticsearch at {endpoints} could not answer"),
    };
    tracing::warn!(metric = error.metric_label(), "{error}");
    page::problem(&title, &error.to_string())
}
