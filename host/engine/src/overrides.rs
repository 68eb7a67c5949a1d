//! Two-level workload overrides, applied after every feature contributed.
//!
//! `nodeAgent` applies to every DaemonSet; then each per-tool entry applies
//! to the workloads it names, so its fields win. Maps (resources, node
//! selector, env, labels) merge key by key; lists and scalars replace. A key
//! names a workload by its name or its `app.kubernetes.io/name` label, with
//! camelCase keys matching kebab-case names (`otelGateway` → `otel-gateway`).

use secop_api::{ComponentOverride, OverrideSpec, SpecError};
use serde_json::{Map, Value, json};

use crate::objects::ObjectKey;

const SELECTOR_LABELS: &[&str] = &["app.kubernetes.io/name", "app.kubernetes.io/part-of"];

fn kebab(key: &str) -> String {
    let mut out = String::with_capacity(key.len() + 4);
    for (i, c) in key.chars().enumerate() {
        if c.is_ascii_uppercase() {
            if i > 0 {
                out.push('-');
            }
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

fn is_workload(key: &ObjectKey) -> bool {
    matches!(
        (key.group(), key.kind.as_str()),
        ("apps", "DaemonSet" | "Deployment" | "StatefulSet") | ("batch", "CronJob")
    )
}

fn matches(key: &str, object: &Value) -> bool {
    let wanted = kebab(key);
    let name = object.pointer("/metadata/name").and_then(Value::as_str);
    let component = object.pointer("/metadata/labels/app.kubernetes.io~1name").and_then(Value::as_str);
    name == Some(wanted.as_str()) || component == Some(wanted.as_str()) || name == Some(key) || component == Some(key)
}

/// Apply the overrides to the workloads among `objects`. Returns warnings
/// (keys that match nothing, fields that do not apply to a kind).
pub fn apply(spec: Option<&OverrideSpec>, objects: &mut [(ObjectKey, Value)]) -> Result<Vec<String>, SpecError> {
    let Some(spec) = spec else { return Ok(vec![]) };
    let mut warnings = vec![];
    for (key, object) in objects.iter_mut().filter(|(k, _)| is_workload(k)) {
        if key.kind == "DaemonSet"
            && let Some(node_agent) = &spec.node_agent
        {
            apply_one("nodeAgent", node_agent, key, object, &mut warnings)?;
        }
        for (name, o) in &spec.components {
            if matches(name, object) {
                apply_one(name, o, key, object, &mut warnings)?;
            }
        }
    }
    for name in spec.components.keys() {
        if !objects.iter().any(|(k, o)| is_workload(k) && matches(name, o)) {
            warnings.push(format!("spec.override.{name}: matches no workload in the desired state (ignored)"));
        }
    }
    Ok(warnings)
}

fn pod_template_pointer(kind: &str) -> &'static str {
    if kind == "CronJob" { "/spec/jobTemplate/spec/template" } else { "/spec/template" }
}

/// The container an override's image/resources/env apply to: the one named
/// like the workload, else the first.
fn main_container<'a>(pod_spec: &'a mut Value, workload: &str) -> Option<&'a mut Map<String, Value>> {
    let containers = pod_spec.get_mut("containers")?.as_array_mut()?;
    let index = containers.iter().position(|c| c["name"] == workload).unwrap_or(0);
    containers.get_mut(index)?.as_object_mut()
}

fn merge_map(target: &mut Value, source: &Value) {
    if !target.is_object() {
        *target = json!({});
    }
    if let (Some(t), Some(s)) = (target.as_object_mut(), source.as_object()) {
        for (k, v) in s {
            t.insert(k.clone(), v.clone());
        }
    }
}

fn apply_one(
    name: &str,
    o: &ComponentOverride,
    key: &ObjectKey,
    object: &mut Value,
    warnings: &mut Vec<String>,
) -> Result<(), SpecError> {
    let field = |f: &str| format!("spec.override.{name}.{f}");
    let to_value = |f: &str, v: &dyn erased::Ser| v.to_value().map_err(|e| SpecError::new(field(f), e.to_string()));

    for (label_field, values) in [("labels", &o.labels), ("annotations", &o.annotations)] {
        let Some(values) = values else { continue };
        if label_field == "labels" {
            for selector in SELECTOR_LABELS {
                if let Some(v) = values.get(*selector) {
                    return Err(SpecError::new(
                        format!("{}.{selector}", field("labels")),
                        format!("`{v}` would change the workload's selector label; it cannot be overridden"),
                    ));
                }
            }
        }
        let values = json!(values);
        merge_map(&mut object["metadata"][label_field], &values);
        let template = pod_template_pointer(&key.kind);
        if let Some(t) = object.pointer_mut(template) {
            merge_map(&mut t["metadata"][label_field], &values);
        }
    }

    if let Some(replicas) = o.replicas {
        match key.kind.as_str() {
            "Deployment" | "StatefulSet" => object["spec"]["replicas"] = json!(replicas),
            _ => warnings.push(format!("{}: ignored for {} {}", field("replicas"), key.kind, key.name)),
        }
    }

    let workload = key.name.clone();
    let Some(pod_spec) = object.pointer_mut(&format!("{}/spec", pod_template_pointer(&key.kind))) else {
        return Ok(());
    };
    if let Some(tolerations) = &o.tolerations {
        pod_spec["tolerations"] = to_value("tolerations", tolerations)?;
    }
    if let Some(selector) = &o.node_selector {
        merge_map(&mut pod_spec["nodeSelector"], &json!(selector));
    }
    if let Some(affinity) = &o.affinity {
        pod_spec["affinity"] = to_value("affinity", affinity)?;
    }
    if let Some(class) = &o.priority_class_name {
        pod_spec["priorityClassName"] = json!(class);
    }
    let Some(container) = main_container(pod_spec, &workload) else {
        return Ok(());
    };
    if let Some(image) = &o.image {
        container.insert("image".into(), json!(image));
    }
    if let Some(resources) = &o.resources {
        let resources = to_value("resources", resources)?;
        let target = container.entry("resources").or_insert_with(|| json!({}));
        for part in ["requests", "limits", "claims"] {
            if let Some(values) = resources.get(part) {
                merge_map(&mut target[part], values);
            }
        }
    }
    if let Some(env) = &o.env {
        let target = container.entry("env").or_insert_with(|| json!([]));
        if !target.is_array() {
            *target = json!([]);
        }
        let list = target.as_array_mut().expect("env is an array");
        for var in env {
            let var_value = to_value("env", var)?;
            match list.iter_mut().find(|e| e["name"] == var.name.as_str()) {
                Some(existing) => *existing = var_value,
                None => list.push(var_value),
            }
        }
    }
    Ok(())
}

/// Serialize k8s-openapi types to JSON without naming each type.
mod erased {
    pub trait Ser {
        fn to_value(&self) -> Result<serde_json::Value, serde_json::Error>;
    }
    impl<T: serde::Serialize> Ser for T {
        fn to_value(&self) -> Result<serde_json::Value, serde_json::Error> {
            serde_json::to_value(self)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn workload(kind: &str, name: &str) -> (ObjectKey, Value) {
        let group = if kind == "CronJob" { "batch/v1" } else { "apps/v1" };
        let key =
            ObjectKey { api_version: group.into(), kind: kind.into(), namespace: Some("s".into()), name: name.into() };
        let template = json!({ "metadata": {}, "spec": { "containers": [
            { "name": name, "image": "old", "resources": { "limits": { "cpu": "500m", "memory": "1Gi" } } },
            { "name": "sidecar", "image": "side" } ] } });
        let mut object = json!({ "apiVersion": group, "kind": kind, "metadata": { "name": name, "labels": { "app.kubernetes.io/name": name } }, "spec": {} });
        if kind == "CronJob" {
            object["spec"]["jobTemplate"] = json!({ "spec": { "template": template } });
        } else {
            object["spec"]["template"] = template;
        }
        (key, object)
    }

    fn spec(yaml: &str) -> OverrideSpec {
        serde_yaml::from_str(yaml).unwrap()
    }

    #[test]
    fn node_agent_hits_every_daemonset_and_tool_entries_win() {
        let mut objects = vec![
            workload("DaemonSet", "falco"),
            workload("DaemonSet", "osquery"),
            workload("Deployment", "otel-gateway"),
        ];
        let s = spec(
            "nodeAgent:\n  tolerations: [{operator: Exists}]\n  resources: {limits: {memory: 512Mi}}\nfalco:\n  resources: {limits: {memory: 2Gi}}\n",
        );
        apply(Some(&s), &mut objects).unwrap();
        let limits =
            |i: usize| objects[i].1["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"].clone();
        assert_eq!(limits(0), json!({ "cpu": "500m", "memory": "2Gi" }));
        assert_eq!(limits(1), json!({ "cpu": "500m", "memory": "512Mi" }));
        assert_eq!(limits(2), json!({ "cpu": "500m", "memory": "1Gi" }), "a Deployment is not a node agent");
        assert_eq!(objects[1].1["spec"]["template"]["spec"]["tolerations"], json!([{ "operator": "Exists" }]));
        assert!(objects[2].1["spec"]["template"]["spec"].get("tolerations").is_none());
    }

    #[test]
    fn camel_case_keys_match_kebab_workloads_and_replicas_apply_to_deployments() {
        let mut objects = vec![workload("Deployment", "otel-gateway"), workload("DaemonSet", "otel-node")];
        let s = spec("otelGateway: {replicas: 3, image: gw:2}\notelNode: {replicas: 2}\n");
        let warnings = apply(Some(&s), &mut objects).unwrap();
        assert_eq!(objects[0].1["spec"]["replicas"], 3);
        assert_eq!(objects[0].1["spec"]["template"]["spec"]["containers"][0]["image"], "gw:2");
        assert_eq!(objects[0].1["spec"]["template"]["spec"]["containers"][1]["image"], "side");
        assert!(warnings.iter().any(|w| w.contains("otelNode.replicas")), "{warnings:?}");
    }

    #[test]
    fn env_merges_by_name_and_cronjobs_are_reached() {
        let mut objects = vec![workload("CronJob", "trivy-es-sync")];
        objects[0].1["metadata"]["labels"]["app.kubernetes.io/name"] = json!("trivy");
        let s = spec("trivy:\n  env: [{name: A, value: '1'}]\n  nodeSelector: {pool: sec}\n");
        apply(Some(&s), &mut objects).unwrap();
        let pod = &objects[0].1["spec"]["jobTemplate"]["spec"]["template"]["spec"];
        assert_eq!(pod["containers"][0]["env"], json!([{ "name": "A", "value": "1" }]));
        assert_eq!(pod["nodeSelector"], json!({ "pool": "sec" }));
    }

    #[test]
    fn selector_labels_cannot_be_overridden_and_unknown_keys_warn() {
        let mut objects = vec![workload("DaemonSet", "falco")];
        let mut labels = BTreeMap::new();
        labels.insert("app.kubernetes.io/name".to_string(), "x".to_string());
        let s = OverrideSpec {
            components: [("falco".to_string(), ComponentOverride { labels: Some(labels), ..Default::default() })]
                .into(),
            ..Default::default()
        };
        let err = apply(Some(&s), &mut objects).unwrap_err();
        assert_eq!(err.field, "spec.override.falco.labels.app.kubernetes.io/name");
        let warnings = apply(Some(&spec("nosuch: {image: x}\n")), &mut objects).unwrap();
        assert_eq!(warnings, ["spec.override.nosuch: matches no workload in the desired state (ignored)"]);
    }
}
