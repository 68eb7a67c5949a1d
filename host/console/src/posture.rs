//! Inventory and alerts: the posture engine's assets by kind and state
//! (live or deleted), and its alerts open and resolved with their evidence,
//! which stays after the resource is gone (host/posture/src/engine.rs
//! writes them; this page only reads).

use axum::Extension;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use maud::{Markup, html};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::AppState;
use crate::auth::User;
use crate::page::{self, Nav};

const STATUSES: [&str; 3] = ["all", "open", "resolved"];
const ALERTS_SHOWN: u64 = 100;

#[derive(Deserialize, Default)]
pub(crate) struct PostureQuery {
    status: Option<String>,
}

pub(crate) async fn page(
    State(state): State<AppState>,
    user: Option<Extension<User>>,
    Query(query): Query<PostureQuery>,
) -> Response {
    let user = user.map(|Extension(u)| u);
    let respond =
        |status, body| page::respond(status, page::layout("Inventory & alerts", Nav::Posture, user.as_ref(), body));
    let wanted = query.status.as_deref().unwrap_or("all");
    if !STATUSES.contains(&wanted) {
        let message = format!("status `{wanted}` is not one of {}", STATUSES.join(", "));
        return respond(StatusCode::BAD_REQUEST, page::problem("Bad alert status", &message));
    }
    let Some(es) = &state.console.elastic else {
        return respond(StatusCode::OK, crate::elastic_missing());
    };
    let indices = &state.console.indices;
    let assets = json!({
        "size": 0,
        "query": { "bool": { "filter": [{ "exists": { "field": "asset.kind" } }] } },
        "aggs": { "kinds": { "terms": { "field": "asset.kind", "size": 30 }, "aggs": { "states": { "terms": { "field": "asset.state", "size": 5 } } } } },
    });
    let mut alert_filters = vec![json!({ "term": { "event.dataset": "posture.audit" } })];
    if wanted != "all" {
        alert_filters.push(json!({ "term": { "finding.status": wanted } }));
    }
    let alerts = json!({
        "size": ALERTS_SHOWN,
        "track_total_hits": true,
        "sort": [{ "finding.status": { "order": "asc" } }, { "@timestamp": { "order": "desc" } }],
        "query": { "bool": { "filter": alert_filters } },
        "aggs": { "statuses": { "global": {}, "aggs": { "audit": { "filter": { "term": { "event.dataset": "posture.audit" } }, "aggs": { "by": { "terms": { "field": "finding.status" } } } } } } },
    });
    let (assets, alerts) = tokio::join!(es.search(&indices.inventory, &assets), es.search(&indices.events, &alerts));
    let (assets, alerts) = match (assets, alerts) {
        (Ok(a), Ok(b)) => (a, b),
        (Err(e), _) | (_, Err(e)) => return respond(StatusCode::BAD_GATEWAY, crate::elastic_unreachable(&state, &e)),
    };
    let count = |status: &str| {
        alerts["aggregations"]["statuses"]["audit"]["by"]["buckets"]
            .as_array()
            .and_then(|b| b.iter().find(|b| b["key"] == status))
            .and_then(|b| b["doc_count"].as_u64())
            .unwrap_or(0)
    };
    let kinds = assets["aggregations"]["kinds"]["buckets"].as_array().cloned().unwrap_or_default();
    let hits = alerts["hits"]["hits"].as_array().cloned().unwrap_or_default();
    let body = html! {
        section #inventory {
            h2 { "Assets by kind" }
            @if kinds.is_empty() {
                p.empty { "No assets in " (indices.inventory) " yet: is the posture feature enabled?" }
            } @else {
                table.inventory {
                    thead { tr { th { "Kind" } th { "Live" } th { "Deleted" } th { "Total" } } }
                    tbody {
                        @for kind in &kinds {
                            @let state_count = |state: &str| kind["states"]["buckets"].as_array().and_then(|b| b.iter().find(|b| b["key"] == state)).and_then(|b| b["doc_count"].as_u64()).unwrap_or(0);
                            tr data-kind=(kind["key"].as_str().unwrap_or_default()) data-live=(state_count("active")) data-deleted=(state_count("deleted")) {
                                td { (kind["key"].as_str().unwrap_or_default()) }
                                td { (state_count("active")) }
                                td { (state_count("deleted")) }
                                td { (kind["doc_count"].as_u64().unwrap_or(0)) }
                            }
                        }
                    }
                }
            }
        }
        section #alerts {
            h2 { "Alerts" }
            div.figures {
                (page::figure("open", count("open"), "alerts-open"))
                (page::figure("resolved", count("resolved"), "alerts-resolved"))
            }
            form.filters method="get" action="/posture" {
                label { "Show " select name="status" {
                    @for status in STATUSES { option value=(status) selected[status == wanted] { (status) } }
                } }
                button type="submit" { "Show" }
            }
            (alert_table(&hits))
        }
    };
    respond(StatusCode::OK, body)
}

fn text(source: &Value, pointer: &str) -> String {
    match source.pointer(pointer) {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(items)) => items
            .iter()
            .map(|i| i.as_str().map_or_else(|| i.to_string(), str::to_string))
            .collect::<Vec<_>>()
            .join(", "),
        Some(other) => other.to_string(),
    }
}

fn alert_table(hits: &[Value]) -> Markup {
    html! {
        table.alerts {
            thead { tr { th { "Status" } th { "Check" } th { "Severity" } th { "Resource" } th { "Container" } th { "Seen" } th { "Evidence" } } }
            tbody {
                @for hit in hits {
                    @let s = &hit["_source"];
                    @let status = text(s, "/finding/status");
                    @let resource = format!("{} {}/{}", text(s, "/kubernetes/resource/kind"), text(s, "/kubernetes/namespace"), text(s, "/kubernetes/resource/name"));
                    tr data-status=(status) data-resource=(resource) data-check=(text(s, "/rule/id")) {
                        td { span class=(format!("badge {}", if status == "open" { "bad" } else { "ok" })) { (status) }
                             @let resolution = text(s, "/posture/resolution");
                             @if !resolution.is_empty() { br; small.resolution { (resolution) } } }
                        td { (text(s, "/rule/id")) " " (text(s, "/rule/name")) br; small { "MITRE " (text(s, "/threat/technique/id")) } }
                        td { (text(s, "/event/severity")) }
                        td { (resource) }
                        td { (text(s, "/container/name")) }
                        td { small { "first " (text(s, "/finding/first_seen")) br; "last " (text(s, "/finding/last_seen"))
                             @let resolved = text(s, "/finding/resolved_at");
                             @if !resolved.is_empty() { br; "resolved " (resolved) } } }
                        td.evidence {
                            details {
                                summary { "evidence" }
                                pre { (serde_json::to_string_pretty(&s["evidence"]).unwrap_or_default()) }
                                p.remediation { (text(s, "/posture/remediation")) }
                            }
                        }
                    }
                }
            }
        }
    }
}
