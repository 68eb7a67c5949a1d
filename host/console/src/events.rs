//! The Events page: the three panels of deploy/kibana/security-dashboards.ndjson
//! (events per tool over time, stacked; severity, a donut; top namespaces
//! and pods) over a time range, and a searchable event table with the ECS
//! fields, paged. Every figure is an Elasticsearch aggregation (one
//! request for the panels, one for the table), so the page costs the same
//! at a thousand events and at a million.

use axum::Extension;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use maud::{Markup, PreEscaped, html};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::AppState;
use crate::auth::User;
use crate::charts;
use crate::page::{self, Nav};

/// The time ranges offered: (value, label, Elasticsearch date math).
pub(crate) const RANGES: [(&str, &str, Option<&str>); 6] = [
    ("1h", "last hour", Some("now-1h")),
    ("24h", "last 24 hours", Some("now-24h")),
    ("7d", "last 7 days", Some("now-7d")),
    ("30d", "last 30 days", Some("now-30d")),
    ("90d", "last 90 days", Some("now-90d")),
    ("all", "all time", None),
];
pub(crate) const PAGE_SIZE: u64 = 50;
/// Elasticsearch's default `index.max_result_window`: deeper pages are
/// refused by it, so the console says to narrow the search instead.
const MAX_WINDOW: u64 = 10_000;

#[derive(Deserialize, Default)]
pub(crate) struct EventsQuery {
    range: Option<String>,
    q: Option<String>,
    page: Option<u64>,
}

/// The range's date math, or a message naming the parameter.
pub(crate) fn range_filter(range: Option<&str>) -> Result<(&'static str, Option<Value>), String> {
    let wanted = range.unwrap_or("24h");
    let &(value, _, since) = RANGES.iter().find(|(v, _, _)| *v == wanted).ok_or_else(|| {
        let known: Vec<&str> = RANGES.iter().map(|(v, _, _)| *v).collect();
        format!("range `{wanted}` is not one of {}", known.join(", "))
    })?;
    Ok((value, since.map(|since| json!({ "range": { "@timestamp": { "gte": since } } }))))
}

fn buckets(aggregations: &Value, name: &str) -> Vec<(String, u64)> {
    aggregations[name]["buckets"]
        .as_array()
        .map(|b| {
            b.iter()
                .map(|b| {
                    let key = b["key_as_string"].as_str().map(str::to_string).unwrap_or_else(|| match &b["key"] {
                        Value::String(s) => s.clone(),
                        other => other.to_string(),
                    });
                    (key, b["doc_count"].as_u64().unwrap_or(0))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// A histogram interval that gives at most ~30 buckets over `span_ms`.
fn interval_for(span_ms: f64) -> &'static str {
    const INTERVALS: [(&str, f64); 12] = [
        ("10s", 10e3),
        ("1m", 60e3),
        ("5m", 300e3),
        ("15m", 900e3),
        ("30m", 1800e3),
        ("1h", 3600e3),
        ("3h", 10800e3),
        ("6h", 21600e3),
        ("12h", 43200e3),
        ("1d", 86400e3),
        ("7d", 604800e3),
        ("30d", 2592000e3),
    ];
    INTERVALS.iter().find(|(_, ms)| span_ms / ms <= 30.0).map_or("365d", |(name, _)| name)
}

/// ECS `event.severity` (1–5 as our pipeline writes it) by name.
fn severity_name(key: &str) -> String {
    let name = match key {
        "1" => "info",
        "2" => "low",
        "3" => "medium",
        "4" => "high",
        "5" => "critical",
        _ => return format!("severity {key}"),
    };
    format!("{key} {name}")
}

pub(crate) async fn page(
    State(state): State<AppState>,
    user: Option<Extension<User>>,
    Query(query): Query<EventsQuery>,
) -> Response {
    let user = user.map(|Extension(u)| u);
    let respond = |status, body| page::respond(status, page::layout("Events", Nav::Events, user.as_ref(), body));
    let (range, filter) = match range_filter(query.range.as_deref()) {
        Ok(found) => found,
        Err(message) => return respond(StatusCode::BAD_REQUEST, page::problem("Bad time range", &message)),
    };
    let Some(es) = &state.console.elastic else {
        return respond(StatusCode::OK, crate::elastic_missing());
    };
    let index = &state.console.indices.events;
    let filters: Vec<Value> = filter.into_iter().collect();
    let panels = json!({
        "size": 0,
        "track_total_hits": true,
        "query": { "bool": { "filter": filters } },
        "aggs": {
            "first": { "min": { "field": "@timestamp" } },
            "last": { "max": { "field": "@timestamp" } },
            "tools": { "terms": { "field": "labels.security_tool", "size": 8 } },
            "severity": { "terms": { "field": "event.severity", "size": 10, "order": { "_key": "asc" } } },
            "namespaces": { "terms": { "field": "kubernetes.namespace", "size": 10 } },
            "pods": { "terms": { "field": "kubernetes.pod.name", "size": 10 } },
        },
    });
    let page_number = query.page.unwrap_or(0);
    let from = page_number * PAGE_SIZE;
    let text = query.q.as_deref().map(str::trim).filter(|q| !q.is_empty());
    let mut table_query = json!({ "bool": { "filter": filters } });
    if let Some(text) = text {
        table_query["bool"]["must"] = json!([{ "simple_query_string": {
            "query": text,
            "fields": ["message", "rule.name", "labels.security_tool", "kubernetes.namespace", "kubernetes.pod.name", "process.executable", "threat.technique.id"],
            "default_operator": "and",
            "lenient": true,
        } }]);
    }
    let table = json!({
        "size": PAGE_SIZE,
        "from": from.min(MAX_WINDOW - PAGE_SIZE),
        "track_total_hits": true,
        "sort": [{ "@timestamp": { "order": "desc" } }],
        "query": table_query,
        "_source": ["@timestamp", "labels.security_tool", "event.severity", "event.kind", "rule.name", "message", "kubernetes.namespace", "kubernetes.pod.name", "threat.technique.id"],
    });
    let (panels, table) = tokio::join!(es.search(index, &panels), es.search(index, &table));
    let (panels, table) = match (panels, table) {
        (Ok(p), Ok(t)) => (p, t),
        (Err(e), _) | (_, Err(e)) => {
            return respond(StatusCode::BAD_GATEWAY, crate::elastic_unreachable(&state, &e));
        }
    };
    let aggregations = &panels["aggregations"];
    let total = panels["hits"]["total"]["value"].as_u64().unwrap_or(0);
    let tools = buckets(aggregations, "tools");
    // The histogram's interval from the span of the events in range: a
    // second aggregation request (date_histogram needs a fixed interval).
    let span = (aggregations["first"]["value"].as_f64(), aggregations["last"]["value"].as_f64());
    let histogram = match span {
        (Some(first), Some(last)) => {
            let over_time = json!({
                "size": 0,
                "query": { "bool": { "filter": filters } },
                "aggs": { "over_time": {
                    "date_histogram": { "field": "@timestamp", "fixed_interval": interval_for(last - first), "format": "yyyy-MM-dd HH:mm", "min_doc_count": 0 },
                    "aggs": { "tools": { "terms": { "field": "labels.security_tool", "size": 8 } } },
                } },
            });
            match es.search(index, &over_time).await {
                Ok(answer) => answer,
                Err(e) => return respond(StatusCode::BAD_GATEWAY, crate::elastic_unreachable(&state, &e)),
            }
        }
        _ => json!({}),
    };
    let over_time: Vec<(String, Value)> = histogram["aggregations"]["over_time"]["buckets"]
        .as_array()
        .map(|b| {
            b.iter()
                .map(|b| (b["key_as_string"].as_str().unwrap_or_default().to_string(), b["tools"].clone()))
                .collect()
        })
        .unwrap_or_default();
    let series: Vec<(String, Vec<u64>)> = tools
        .iter()
        .map(|(tool, _)| {
            let counts = over_time
                .iter()
                .map(|(_, t)| buckets(&json!({ "t": t }), "t").iter().find(|(k, _)| k == tool).map_or(0, |(_, n)| *n))
                .collect();
            (tool.clone(), counts)
        })
        .collect();
    let labels: Vec<String> = over_time.iter().map(|(k, _)| k.chars().skip(5).collect()).collect();
    let severity: Vec<(String, u64)> =
        buckets(aggregations, "severity").into_iter().map(|(k, n)| (severity_name(&k), n)).collect();
    let namespaces = buckets(aggregations, "namespaces");
    let pods = buckets(aggregations, "pods");
    let hits = table["hits"]["hits"].as_array().cloned().unwrap_or_default();
    let matching = table["hits"]["total"]["value"].as_u64().unwrap_or(0);

    let body = html! {
        form.filters method="get" action="/events" {
            label { "Time range " select name="range" {
                @for (value, label, _) in RANGES { option value=(value) selected[value == range] { (label) } }
            } }
            label { "Search " input type="search" name="q" value=(text.unwrap_or_default()) placeholder="rule, message, pod, namespace, technique"; }
            button type="submit" { "Show" }
        }
        div.figures { (page::figure("events in range", total, "events-total")) }
        div.panels {
            section.panel #over-time {
                h2 { "Events per tool over time" }
                (PreEscaped(charts::stacked_area(&labels, &series)))
                (legend(&tools, "tool"))
            }
            section.panel #severity {
                h2 { "Severity" }
                (PreEscaped(charts::donut(&severity)))
                (legend(&severity, "severity"))
            }
            section.panel #top {
                h2 { "Top namespaces" }
                (PreEscaped(charts::bars(&namespaces)))
                (legend(&namespaces, "namespace"))
                h2 { "Top pods" }
                (PreEscaped(charts::bars(&pods)))
                (legend(&pods, "pod"))
            }
        }
        section #event-table {
            h2 { (matching) " events" @if let Some(text) = text { " matching “" (text) "”" } }
            (event_table(&hits))
            (pager(range, text, page_number, matching))
        }
    };
    respond(StatusCode::OK, body)
}

/// The numbers behind a chart, as a table (`data-<kind>` per row).
fn legend(parts: &[(String, u64)], kind: &str) -> Markup {
    html! {
        table.legend data-legend=(kind) {
            @for (i, (name, count)) in parts.iter().enumerate() {
                tr data-key=(name) data-count=(count) {
                    td { span.swatch data-color=(charts::css_color(i)) {} (name) }
                    td.count { (count) }
                }
            }
        }
    }
}

fn text_at(source: &Value, path: &str) -> String {
    let value = path.split('.').fold(source, |v, key| &v[key]);
    match value {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        Value::Array(items) => items
            .iter()
            .map(|i| i.as_str().map_or_else(|| i.to_string(), str::to_string))
            .collect::<Vec<_>>()
            .join(", "),
        other => other.to_string(),
    }
}

fn event_table(hits: &[Value]) -> Markup {
    const COLUMNS: [(&str, &str); 8] = [
        ("@timestamp", "@timestamp"),
        ("labels.security_tool", "tool"),
        ("event.severity", "severity"),
        ("rule.name", "rule.name"),
        ("threat.technique.id", "technique"),
        ("kubernetes.namespace", "kubernetes.namespace"),
        ("kubernetes.pod.name", "kubernetes.pod.name"),
        ("message", "message"),
    ];
    html! {
        table.events {
            thead { tr { @for (_, title) in COLUMNS { th { (title) } } } }
            tbody {
                @for hit in hits {
                    @let source = &hit["_source"];
                    tr data-tool=(text_at(source, "labels.security_tool")) {
                        @for (field, _) in COLUMNS {
                            @if field == "@timestamp" {
                                td { (source["@timestamp"].as_str().unwrap_or_default()) }
                            } @else {
                                td class=(field.replace('.', "-")) { (text_at(source, field)) }
                            }
                        }
                    }
                }
            }
        }
    }
}

fn pager(range: &str, text: Option<&str>, page_number: u64, matching: u64) -> Markup {
    let pages = matching.min(MAX_WINDOW).div_ceil(PAGE_SIZE);
    let link = |page: u64| {
        let mut url = format!("/events?range={range}&page={page}");
        if let Some(text) = text {
            url.push_str("&q=");
            url.push_str(&encode(text));
        }
        url
    };
    html! {
        nav.pager {
            @if page_number > 0 { a href=(link(page_number - 1)) { "← newer" } }
            span { "page " (page_number + 1) " of " (pages.max(1)) }
            @if page_number + 1 < pages { a href=(link(page_number + 1)) { "older →" } }
            @if matching > MAX_WINDOW { span.hint { "Only the newest " (MAX_WINDOW) " can be paged through: narrow the range or the search." } }
        }
    }
}

/// Percent-encode a query value.
fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}
