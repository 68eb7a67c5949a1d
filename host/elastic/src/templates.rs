//! The index templates of the three CTEM indices, installed idempotently.
//!
//! The canonical JSON lives in `deploy/elasticsearch/` (for people who
//! install templates by hand) and is embedded here. What the install adds:
//! - index patterns from the CR's index names (`<index>*`);
//! - a fallback for clusters without the `wildcard` field type (it is an
//!   X-Pack module; OSS builds and some managed offerings lack it): keyword
//!   for exact and prefix queries plus a `text` sub-field for full text;
//! - `_meta.content_hash`, so an unchanged template is never written again.

use reqwest::Method;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::{Elastic, Error};

const COMMON: &str = include_str!("../../../deploy/elasticsearch/security-common.json");
const EVENTS: &str = include_str!("../../../deploy/elasticsearch/security-events.json");
const INVENTORY: &str = include_str!("../../../deploy/elasticsearch/security-inventory.json");
const VULN: &str = include_str!("../../../deploy/elasticsearch/security-vuln.json");

/// The component template every index template is composed of.
pub const COMPONENT: &str = "security-common";

/// Who wrote a template, in its `_meta`.
pub const MANAGED_BY: &str = "security-operator";

/// The indices to prepare. A caller that writes only one index (the Trivy
/// sync) names only that one.
#[derive(Debug, Clone, Default)]
pub struct Indices {
    pub inventory: Option<String>,
    pub events: Option<String>,
    pub vulnerabilities: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TemplateKind {
    Component,
    Index,
}

impl TemplateKind {
    fn api(self) -> &'static str {
        match self {
            TemplateKind::Component => "_component_template",
            TemplateKind::Index => "_index_template",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Template {
    pub kind: TemplateKind,
    pub name: String,
    pub body: Value,
}

impl Template {
    fn path(&self) -> String {
        format!("{}/{}", self.kind.api(), self.name)
    }
}

fn parse(text: &str) -> Value {
    serde_json::from_str(text).expect("templates in deploy/elasticsearch are valid JSON (a unit test checks)")
}

/// Replace every `wildcard` field by keyword + text.
fn without_wildcard(value: &mut Value) {
    match value {
        Value::Object(map) => {
            if map.get("type").and_then(Value::as_str) == Some("wildcard") {
                *value = json!({ "type": "keyword", "ignore_above": 8191, "fields": { "text": { "type": "text" } } });
                return;
            }
            map.values_mut().for_each(without_wildcard);
        }
        Value::Array(items) => items.iter_mut().for_each(without_wildcard),
        _ => {}
    }
}

fn content_hash(body: &Value) -> String {
    // serde_json maps are sorted (no preserve_order), so the text is canonical.
    hex::encode(Sha256::digest(body.to_string().as_bytes()))
}

fn seal(mut body: Value) -> Value {
    let hash = content_hash(&body);
    body["_meta"] = json!({ "managed_by": MANAGED_BY, "content_hash": hash });
    body
}

/// The templates for `indices`, for a cluster with or without `wildcard`.
pub fn templates(indices: &Indices, wildcard: bool) -> Vec<Template> {
    let mut out = vec![];
    let mut common = parse(COMMON);
    if !wildcard {
        without_wildcard(&mut common);
    }
    out.push(Template { kind: TemplateKind::Component, name: COMPONENT.into(), body: seal(common) });
    for (index, text) in [(&indices.inventory, INVENTORY), (&indices.events, EVENTS), (&indices.vulnerabilities, VULN)]
    {
        let Some(index) = index else { continue };
        let mut body = parse(text);
        body["index_patterns"] = json!([format!("{index}*")]);
        if !wildcard {
            without_wildcard(&mut body);
        }
        out.push(Template { kind: TemplateKind::Index, name: index.clone(), body: seal(body) });
    }
    out
}

/// Whether the cluster knows the `wildcard` field type: simulate a template
/// that uses it (stores nothing).
pub async fn wildcard_supported(es: &Elastic) -> Result<bool, Error> {
    let probe = json!({
        "index_patterns": ["secop-wildcard-probe-*"],
        "template": { "mappings": { "properties": { "probe": { "type": "wildcard" } } } },
    });
    let answer = es.send(Method::POST, "_index_template/_simulate", Some(&probe)).await?;
    if answer.status.is_success() {
        return Ok(true);
    }
    if answer.status.as_u16() == 400 && answer.has_error_type("mapper_parsing_exception") {
        return Ok(false);
    }
    Err(Error::Status {
        what: "POST _index_template/_simulate (wildcard probe)".into(),
        status: answer.status.as_u16(),
        reason: answer.error_reason(),
    })
}

/// The `_meta.content_hash` of a template as installed, if it exists.
async fn installed_hash(es: &Elastic, template: &Template) -> Result<Option<String>, Error> {
    let answer = es.send(Method::GET, &template.path(), None).await?;
    if answer.status.as_u16() == 404 {
        return Ok(None);
    }
    if !answer.status.is_success() {
        return Err(Error::Status {
            what: format!("GET {}", template.path()),
            status: answer.status.as_u16(),
            reason: answer.error_reason(),
        });
    }
    let (list, inner) = match template.kind {
        TemplateKind::Component => ("component_templates", "component_template"),
        TemplateKind::Index => ("index_templates", "index_template"),
    };
    Ok(answer.body[list]
        .as_array()
        .and_then(|items| items.iter().find(|t| t["name"] == template.name.as_str()))
        .and_then(|t| t[inner]["_meta"]["content_hash"].as_str())
        .map(str::to_string))
}

#[derive(Debug, Default, PartialEq, Eq)]
pub struct InstallReport {
    pub wildcard: bool,
    /// Templates written by this call.
    pub written: Vec<String>,
    /// Templates already as wanted.
    pub unchanged: Vec<String>,
}

/// Install the templates of `indices`: the component template first (the
/// index templates refer to it), and only what differs from what is there.
pub async fn install(es: &Elastic, indices: &Indices) -> Result<InstallReport, Error> {
    let wildcard = wildcard_supported(es).await?;
    let mut report = InstallReport { wildcard, ..Default::default() };
    for template in templates(indices, wildcard) {
        let wanted = template.body["_meta"]["content_hash"].as_str().map(str::to_string);
        if installed_hash(es, &template).await? == wanted {
            report.unchanged.push(template.path());
            continue;
        }
        es.ok(Method::PUT, &template.path(), Some(&template.body)).await.map_err(|e| match e {
            Error::Status { status, reason, .. } => Error::Template { name: template.path(), status, reason },
            other => other,
        })?;
        tracing::info!(template = %template.path(), wildcard, "installed index template");
        report.written.push(template.path());
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all() -> Indices {
        Indices { inventory: Some("inv".into()), events: Some("ev".into()), vulnerabilities: Some("vu".into()) }
    }

    fn types(value: &Value, out: &mut Vec<String>) {
        match value {
            Value::Object(map) => {
                if let Some(t) = map.get("type").and_then(Value::as_str) {
                    out.push(t.to_string());
                }
                map.values().for_each(|v| types(v, out));
            }
            Value::Array(items) => items.iter().for_each(|v| types(v, out)),
            _ => {}
        }
    }

    #[test]
    fn patterns_follow_the_index_names_and_compose_the_common_template() {
        let set = templates(&all(), true);
        assert_eq!(set.len(), 4);
        assert_eq!(set[0].kind, TemplateKind::Component);
        let names: Vec<_> =
            set[1..].iter().map(|t| (t.name.as_str(), t.body["index_patterns"][0].as_str().unwrap())).collect();
        assert_eq!(names, [("inv", "inv*"), ("ev", "ev*"), ("vu", "vu*")]);
        assert!(set[1..].iter().all(|t| t.body["composed_of"] == json!([COMPONENT])));
        let only_vuln = templates(&Indices { vulnerabilities: Some("vu".into()), ..Default::default() }, true);
        assert_eq!(only_vuln.iter().map(|t| t.name.as_str()).collect::<Vec<_>>(), [COMPONENT, "vu"]);
    }

    #[test]
    fn without_wildcard_every_wildcard_field_becomes_keyword_with_text() {
        let with: Vec<String> = templates(&all(), true)
            .iter()
            .flat_map(|t| {
                let mut v = vec![];
                types(&t.body, &mut v);
                v
            })
            .collect();
        assert!(with.iter().any(|t| t == "wildcard"), "the events template uses wildcard for process arguments");
        let set = templates(&all(), false);
        let mut seen = vec![];
        set.iter().for_each(|t| types(&t.body, &mut seen));
        assert!(!seen.iter().any(|t| t == "wildcard"));
        let args = &set[2].body["template"]["mappings"]["properties"]["process"]["properties"]["args"];
        assert_eq!(args["type"], "keyword");
        assert_eq!(args["fields"]["text"]["type"], "text");
    }

    #[test]
    fn the_hash_changes_with_the_content_only() {
        let a = templates(&all(), true);
        let b = templates(&all(), true);
        let c = templates(&all(), false);
        assert_eq!(a[2].body["_meta"], b[2].body["_meta"]);
        assert_ne!(a[2].body["_meta"]["content_hash"], c[2].body["_meta"]["content_hash"]);
        assert_eq!(a[2].body["_meta"]["managed_by"], MANAGED_BY);
    }
}
