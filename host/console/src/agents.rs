//! The Agents pages: what only this operator knows. Each SecurityAgent,
//! its conditions, each feature's module (image, digest, signer), the last
//! rollback and why, and the agent's Events.

use axum::Extension;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use k8s_openapi::api::core::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::api::{Api, ListParams};
use maud::{Markup, html};
use secop_api::{Reason, SecurityAgent};

use crate::AppState;
use crate::auth::User;
use crate::page::{self, Nav};

/// Reasons of a Degraded condition that mean a module was refused and the
/// last good one kept (host/api/src/reason.rs).
const ROLLBACK_REASONS: [Reason; 5] = [
    Reason::ModuleRolledBack,
    Reason::SignatureMissing,
    Reason::SignatureInvalid,
    Reason::VerificationKeyError,
    Reason::ModuleTooLarge,
];

fn condition<'a>(agent: &'a SecurityAgent, type_: &str) -> Option<&'a Condition> {
    agent.status.as_ref()?.conditions.iter().find(|c| c.type_ == type_)
}

fn badge(condition: Option<&Condition>, good: &str) -> Markup {
    match condition {
        None => html! { span.badge.unknown { "unknown" } },
        Some(c) => {
            let class = if c.status == good {
                "ok"
            } else if c.status == "Unknown" {
                "unknown"
            } else {
                "bad"
            };
            html! { span class=(format!("badge {class}")) title=(c.message) { (c.status) " · " (c.reason) } }
        }
    }
}

/// The Degraded condition when it reports a rollback.
fn last_rollback(agent: &SecurityAgent) -> Option<&Condition> {
    condition(agent, "Degraded")
        .filter(|c| c.status == "True" && ROLLBACK_REASONS.iter().any(|r| r.to_string() == c.reason))
}

fn name_of(agent: &SecurityAgent) -> (String, String) {
    (agent.metadata.namespace.clone().unwrap_or_default(), agent.metadata.name.clone().unwrap_or_default())
}

pub(crate) async fn list_page(State(state): State<AppState>, user: Option<Extension<User>>) -> Response {
    let user = user.map(|Extension(u)| u);
    let agents = Api::<SecurityAgent>::all(state.console.kube.clone()).list(&ListParams::default()).await;
    let body = match agents {
        Err(e) => page::problem("Cannot list SecurityAgents", &format!("The Kubernetes API server answered: {e}")),
        Ok(list) if list.items.is_empty() => html! {
            p.empty { "No SecurityAgent in this cluster yet. Create one (deploy/samples/securityagent_full.yaml)." }
        },
        Ok(list) => html! {
            table.agents {
                thead { tr { th { "Agent" } th { "Ready" } th { "Degraded" } th { "Features" } th { "Last rollback" } th { "Validation" } } }
                tbody {
                    @for agent in &list.items {
                        @let (namespace, name) = name_of(agent);
                        tr data-agent=(format!("{namespace}/{name}")) {
                            td { a href=(format!("/agents/{namespace}/{name}")) { (namespace) "/" (name) } }
                            td { (badge(condition(agent, "Ready"), "True")) }
                            td { (badge(condition(agent, "Degraded"), "False")) }
                            td { (agent.status.as_ref().and_then(|s| s.summary.clone()).unwrap_or_default()) }
                            td { @if let Some(c) = last_rollback(agent) { span.bad { (c.reason) } } @else { "—" } }
                            td { (validation_summary(agent)) }
                        }
                    }
                }
            }
        },
    };
    page::respond(StatusCode::OK, page::layout("Agents", Nav::Agents, user.as_ref(), body))
}

fn validation_summary(agent: &SecurityAgent) -> String {
    match agent.status.as_ref().and_then(|s| s.validation.as_ref()) {
        None => "—".into(),
        Some(v) if v.error.is_some() => "not checked".into(),
        Some(v) => {
            let passed = v.scenarios.iter().filter(|s| s.result == secop_api::ScenarioOutcome::Passed).count();
            format!("{passed}/{} passed", v.scenarios.len())
        }
    }
}

pub(crate) async fn detail_page(
    State(state): State<AppState>,
    user: Option<Extension<User>>,
    Path((namespace, name)): Path<(String, String)>,
) -> Response {
    let user = user.map(|Extension(u)| u);
    let api = Api::<SecurityAgent>::namespaced(state.console.kube.clone(), &namespace);
    let agent = match api.get_opt(&name).await {
        Ok(Some(agent)) => agent,
        Ok(None) => {
            return page::not_found(
                user.as_ref(),
                &format!(
                    "There is no SecurityAgent {name} in namespace {namespace} (deleted, or never created). See the list of agents."
                ),
            );
        }
        Err(e) => {
            let body =
                page::problem("Cannot read the SecurityAgent", &format!("The Kubernetes API server answered: {e}"));
            return page::respond(
                StatusCode::BAD_GATEWAY,
                page::layout(&format!("{namespace}/{name}"), Nav::Agents, user.as_ref(), body),
            );
        }
    };
    let events = agent_events(&state.console.kube, &namespace, &name).await;
    let status = agent.status.clone().unwrap_or_default();
    let body = html! {
        section {
            h2 { "Conditions" }
            table.conditions {
                thead { tr { th { "Type" } th { "Status" } th { "Reason" } th { "Message" } th { "Since" } } }
                tbody {
                    @for c in &status.conditions {
                        tr data-condition=(c.type_) {
                            td { (c.type_) } td { (c.status) } td { (c.reason) } td.message { (c.message) }
                            td { (c.last_transition_time.0.to_string()) }
                        }
                    }
                }
            }
        }
        @if let Some(c) = last_rollback(&agent) {
            section.rollback {
                h2 { "Last rollback" }
                (page::problem(&c.reason, &c.message))
            }
        }
        section {
            h2 { "Features and their modules" }
            table.features {
                thead { tr { th { "Feature" } th { "Enabled" } th { "Module" } th { "Component digest" } th { "Signed by" } th { "Notes" } } }
                tbody {
                    @for (feature, f) in &status.features {
                        tr data-feature=(feature) {
                            td { (feature) }
                            td { @if f.enabled { "yes" } @else { "no" } }
                            td { (f.module_image.clone().unwrap_or_else(|| "built-in".into())) }
                            td.digest { (f.module_digest.as_deref().map(|d| format!("sha256:{d}")).unwrap_or_default()) }
                            td { (f.module_signer.clone().unwrap_or_else(|| "not verified".into())) }
                            td.message { (f.message.clone().unwrap_or_default()) }
                        }
                    }
                }
            }
        }
        section {
            h2 { "Events" }
            @match &events {
                Err(e) => { (page::problem("Cannot list the agent's Events", e)) }
                Ok(events) if events.is_empty() => { p.empty { "No Events (the API server keeps them for an hour by default)." } }
                Ok(events) => { table.events {
                    thead { tr { th { "Last seen" } th { "Type" } th { "Reason" } th { "Message" } th { "Count" } } }
                    tbody {
                        @for e in events {
                            tr data-reason=(e.reason.clone().unwrap_or_default()) {
                                td { (event_time(e)) } td { (e.type_.clone().unwrap_or_default()) }
                                td { (e.reason.clone().unwrap_or_default()) } td.message { (e.message.clone().unwrap_or_default()) }
                                td { (e.count.unwrap_or(1)) }
                            }
                        }
                    }
                } }
            }
        }
    };
    page::respond(StatusCode::OK, page::layout(&format!("{namespace}/{name}"), Nav::Agents, user.as_ref(), body))
}

fn event_time(event: &Event) -> String {
    event
        .last_timestamp
        .as_ref()
        .map(|t| t.0.to_string())
        .or_else(|| event.event_time.as_ref().map(|t| t.0.to_string()))
        .unwrap_or_default()
}

/// The agent's Events, newest first.
async fn agent_events(kube: &kube::Client, namespace: &str, name: &str) -> Result<Vec<Event>, String> {
    let selector = format!("involvedObject.kind={},involvedObject.name={name}", secop_api::KIND);
    let mut events = Api::<Event>::namespaced(kube.clone(), namespace)
        .list(&ListParams::default().fields(&selector))
        .await
        .map_err(|e| format!("The Kubernetes API server answered: {e}"))?
        .items;
    events.sort_by_key(|e| std::cmp::Reverse(event_time(e)));
    Ok(events)
}
