//! `secop diff -f agent.yaml`: what applying a SecurityAgent would change
//! on the cluster of the current kubeconfig, as `kubectl diff` shows it for
//! plain manifests. The agent is rendered as `secop render` does (built-in
//! modules, `--module` files, `--policy`); every object goes through a
//! server-side apply dry run with the operator's field manager
//! (`secop_operator::plan`), so defaults, admission and the merge with
//! fields others own are the server's own. Nothing is written.
//!
//! Exit status as kubectl diff's: 0 no change, 1 changes, 2 an error.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context as _, Result, bail};
use secop_engine::RenderOptions;
use secop_engine::objects::ObjectKey;
use serde_json::Value;

#[derive(clap::Args)]
pub struct Diff {
    /// The SecurityAgent (YAML or JSON); `-` for stdin. Its namespace
    /// (default `default`) and name select the live agent.
    #[arg(short = 'f', long = "filename")]
    file: PathBuf,
    /// Use a component file for a feature instead of the built-in one (repeatable).
    #[arg(long = "module", value_name = "PATH")]
    modules: Vec<PathBuf>,
    /// Image of the operator, as the chart sets it (Jobs that run `secop` use it).
    #[arg(long, default_value = secop_engine::DEFAULT_OPERATOR_IMAGE)]
    operator_image: String,
    /// The cluster policy (the chart's `policy` values as a file); default:
    /// the chart's default policy.
    #[arg(long, value_name = "FILE")]
    policy: Option<PathBuf>,
}

/// What `plan` found, as text: one unified diff per object that changes.
struct Changes {
    text: String,
    created: usize,
    changed: usize,
    pruned: usize,
}

pub fn diff(args: &Diff, cache_dir: Option<PathBuf>) -> ExitCode {
    match run(args, cache_dir) {
        Ok(changes) => {
            print!("{}", changes.text);
            eprintln!("{} to create, {} to change, {} to prune", changes.created, changes.changed, changes.pruned);
            if changes.created + changes.changed + changes.pruned == 0 { ExitCode::SUCCESS } else { ExitCode::from(1) }
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run(args: &Diff, cache_dir: Option<PathBuf>) -> Result<Changes> {
    let agent = crate::read_agent(&args.file)?;
    let (registry, loaded) = crate::registry_with(cache_dir, &args.modules)?;
    // Modules from registries are the operator's to fetch (with the
    // agent's pull secret); the diff renders a feature that names one with
    // the module loaded here, and says so.
    for (index, feature) in agent.spec.features.iter().enumerate().filter(|(_, f)| f.enabled) {
        let Some(module) = &feature.module else { continue };
        let used = if loaded.contains(&feature.name) { "the --module file" } else { "the built-in module" };
        eprintln!(
            "warning: spec.features[{index}].module: `{}` is not fetched by diff; `{}` is rendered with {used}",
            module.image, feature.name
        );
    }
    let options = RenderOptions {
        operator_image: args.operator_image.clone(),
        policy: Arc::new(crate::read_policy(args.policy.as_deref())?),
        ..Default::default()
    };
    let rendered = secop_engine::render(&registry, &agent, &options)
        .map_err(|e| anyhow::anyhow!("{}: {e}", args.file.display()))?;
    let failures: Vec<String> = rendered.failed().filter_map(|f| f.error_line()).collect();
    if !failures.is_empty() {
        // The operator would keep such a feature's objects as they are:
        // a diff of the rest would not be what happens.
        bail!("{}", failures.join("; "));
    }
    for warning in &rendered.warnings {
        eprintln!("warning: {warning}");
    }

    let tokio = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    let plan = tokio.block_on(async {
        let client = kube::Client::try_default().await.context("connecting with the current kubeconfig")?;
        secop_operator::plan(&client, &agent, &rendered).await.context("dry run on the cluster")
    })?;
    Ok(changes(&plan))
}

fn changes(plan: &secop_operator::Plan) -> Changes {
    let mut out = Changes { text: String::new(), created: 0, changed: 0, pruned: 0 };
    for (key, live, after) in &plan.applied {
        let before = live.as_ref().map(shown).unwrap_or_default();
        let after = shown(after);
        if before == after {
            continue;
        }
        if live.is_some() {
            out.changed += 1;
        } else {
            out.created += 1;
        }
        out.text.push_str(&unified(key, &before, &after));
    }
    for (key, live) in &plan.pruned {
        out.pruned += 1;
        out.text.push_str(&unified(key, &shown(live), ""));
    }
    out
}

/// `kubectl diff`'s file name for an object: group.version.Kind.namespace.name.
fn file_name(key: &ObjectKey) -> String {
    let group_version = key.api_version.replace('/', ".");
    match &key.namespace {
        Some(namespace) => format!("{group_version}.{}.{namespace}.{}", key.kind, key.name),
        None => format!("{group_version}.{}.{}", key.kind, key.name),
    }
}

fn unified(key: &ObjectKey, before: &str, after: &str) -> String {
    let name = file_name(key);
    let (old, new) = (format!("live/{name}"), format!("merged/{name}"));
    let diff = similar::TextDiff::from_lines(before, after);
    format!("diff -u -N {old} {new}\n{}", diff.unified_diff().context_radius(3).header(&old, &new))
}

/// An object as YAML without what the server changes on every write
/// (managedFields, resourceVersion, generation, timestamps, uid, the
/// DaemonSet controller's template generation) and the operator's
/// applied-hash annotation, which changes with any field: what is left
/// differs only where the object would.
fn shown(object: &Value) -> String {
    let mut object = object.clone();
    if let Some(metadata) = object.get_mut("metadata").and_then(Value::as_object_mut) {
        for field in ["managedFields", "resourceVersion", "generation", "creationTimestamp", "uid"] {
            metadata.remove(field);
        }
        if let Some(annotations) = metadata.get_mut("annotations").and_then(Value::as_object_mut) {
            annotations.remove(secop_operator::APPLIED_HASH_ANNOTATION);
            annotations.remove("deprecated.daemonset.template.generation");
            if annotations.is_empty() {
                metadata.remove("annotations");
            }
        }
    }
    serde_yaml::to_string(&object).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn daemonset(memory: &str, resource_version: &str) -> Value {
        json!({
            "apiVersion": "apps/v1", "kind": "DaemonSet",
            "metadata": {
                "name": "falco", "namespace": "security", "resourceVersion": resource_version, "generation": 3,
                "managedFields": [ { "manager": "security-operator" } ],
                "annotations": { secop_operator::APPLIED_HASH_ANNOTATION: resource_version },
            },
            "spec": { "template": { "spec": { "containers": [ { "name": "falco", "image": "falco:0.41",
                "resources": { "limits": { "memory": memory } } } ] } } },
        })
    }

    #[test]
    fn a_changed_field_is_the_only_line_that_differs() {
        let key = ObjectKey::new("apps/v1", "DaemonSet", Some("security"), "falco");
        let plan = secop_operator::Plan {
            applied: vec![(key.clone(), Some(daemonset("1Gi", "7")), daemonset("2Gi", "8"))],
            pruned: vec![],
        };
        let changes = changes(&plan);
        assert_eq!((changes.created, changes.changed, changes.pruned), (0, 1, 0));
        let changed: Vec<String> = changes
            .text
            .lines()
            .filter(|l| (l.starts_with('-') || l.starts_with('+')) && !l.starts_with("---") && !l.starts_with("+++"))
            .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
            .collect();
        assert_eq!(changed, ["- memory: 1Gi", "+ memory: 2Gi"], "{}", changes.text);
        assert!(changes.text.starts_with("diff -u -N live/apps.v1.DaemonSet.security.falco merged/"));
    }

    #[test]
    fn an_unchanged_object_is_not_shown_and_a_pruned_one_is_all_removed() {
        let key = ObjectKey::new("apps/v1", "DaemonSet", Some("security"), "falco");
        let plan = secop_operator::Plan {
            applied: vec![(key.clone(), Some(daemonset("1Gi", "7")), daemonset("1Gi", "8"))],
            pruned: vec![(key, daemonset("1Gi", "7"))],
        };
        let changes = changes(&plan);
        assert_eq!((changes.created, changes.changed, changes.pruned), (0, 0, 1));
        assert!(changes.text.lines().filter(|l| l.starts_with('+') && !l.starts_with("+++")).count() == 0);
        assert!(changes.text.contains("-kind: DaemonSet"), "{}", changes.text);
    }
}
