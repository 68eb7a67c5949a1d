//! The CTEM page: the checklist `secop ctem-report` prints (the same
//! queries, host/elastic/src/ctem.rs) with PASS/FAIL/N/A and what was
//! found, and the continuous validation runs of every agent that has them
//! (`status.validation`, written by the validation Job).

use axum::Extension;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use kube::api::{Api, ListParams};
use maud::html;
use secop_api::SecurityAgent;

use crate::AppState;
use crate::auth::User;
use crate::page::{self, Nav};

pub(crate) async fn page(State(state): State<AppState>, user: Option<Extension<User>>) -> Response {
    let user = user.map(|Extension(u)| u);
    let console = &state.console;
    let checklist = match &console.elastic {
        None => Err(crate::elastic_missing()),
        Some(es) => {
            let scope = secop_elastic::ctem::Scope {
                inventory: console.indices.inventory.clone(),
                events: console.indices.events.clone(),
                vulnerabilities: console.indices.vulnerabilities.clone(),
                sensor_namespace: console.sensor_namespace.clone(),
                since: None,
            };
            secop_elastic::ctem::run(es, &scope).await.map_err(|e| crate::elastic_unreachable(&state, &e))
        }
    };
    let agents = Api::<SecurityAgent>::all(console.kube.clone()).list(&ListParams::default()).await;
    let body = html! {
        section #checklist {
            h2 { "CTEM checklist" }
            @match &checklist {
                Err(problem) => { (problem) }
                Ok(checks) => {
                    div.figures {
                        @for outcome in [secop_elastic::ctem::Outcome::Pass, secop_elastic::ctem::Outcome::Fail, secop_elastic::ctem::Outcome::NotChecked] {
                            (page::figure(outcome.label(), checks.iter().filter(|c| c.outcome == outcome).count() as u64, outcome.label()))
                        }
                    }
                    table.checklist {
                        thead { tr { th { "Check" } th { "Title" } th { "Outcome" } th { "What was found" } } }
                        tbody {
                            @for check in checks {
                                tr data-check=(check.id) data-outcome=(check.outcome.label()) {
                                    td { (check.id) } td { (check.title) }
                                    td { span class=(format!("badge {}", match check.outcome { secop_elastic::ctem::Outcome::Pass => "ok", secop_elastic::ctem::Outcome::Fail => "bad", secop_elastic::ctem::Outcome::NotChecked => "unknown" })) { (check.outcome.label()) } }
                                    td.message { (check.detail) }
                                }
                            }
                        }
                    }
                }
            }
        }
        section #validation {
            h2 { "Continuous validation runs" }
            @match &agents {
                Err(e) => { (page::problem("Cannot list SecurityAgents", &format!("The Kubernetes API server answered: {e}"))) }
                Ok(list) => {
                    @let runs: Vec<&SecurityAgent> = list.items.iter().filter(|a| a.status.as_ref().is_some_and(|s| s.validation.is_some())).collect();
                    @if runs.is_empty() {
                        p.empty { "No validation run yet: set spec.tests on an agent to run the MITRE ATT&CK scenarios on a schedule." }
                    }
                    @for agent in runs {
                        @let v = agent.status.as_ref().and_then(|s| s.validation.as_ref()).expect("filtered");
                        @let id = format!("{}/{}", agent.metadata.namespace.as_deref().unwrap_or_default(), agent.metadata.name.as_deref().unwrap_or_default());
                        article.run data-agent=(id) {
                            h3 { (id) }
                            p { "Last run " (v.last_run.as_deref().unwrap_or("never")) @if let Some(pod) = &v.pod { " by pod " code { (pod) } } }
                            @if let Some(error) = &v.error { (page::problem("The run could not check its detections", error)) }
                            table.scenarios {
                                thead { tr { th { "Scenario" } th { "Result" } th { "Detected by" } th { "Missing detections" } } }
                                tbody {
                                    @for s in &v.scenarios {
                                        tr data-scenario=(s.name) data-result=(s.result.to_string()) {
                                            td { (s.name) }
                                            td { span class=(format!("badge {}", if s.result == secop_api::ScenarioOutcome::Passed { "ok" } else { "bad" })) { (s.result.to_string()) } }
                                            td { (s.detected_by.join(", ")) }
                                            td { (s.missing.join(", ")) }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    };
    page::respond(StatusCode::OK, page::layout("CTEM", Nav::Ctem, user.as_ref(), body))
}
