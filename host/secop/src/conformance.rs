//! `secop feature test --conformance MODULE`: the contract rules every
//! module must keep, checked the way the operator runs modules (the
//! engine's render, admission and assess, with default limits), printed as
//! a pass/fail table. For feature authors before they push.

use std::sync::Arc;

use anyhow::Result;
use secop_engine::{FeatureError, Registry, RenderOptions, Rendered};
use secop_feature_sdk::model as m;
use secop_runtime::{CallError, Module};
use serde_json::{Value, json};

/// One rule and how the module did.
pub struct Check {
    pub rule: &'static str,
    pub passed: bool,
    pub detail: String,
}

/// A config field no feature has: reported back as unknown.
const PROBE_FIELD: &str = "conformanceProbeUnknownField";

/// The feature alone in an agent, next to the pipeline it feeds.
pub fn agent_for(id: &str, config: Value) -> Result<secop_api::SecurityAgent> {
    let mut features = vec![json!({ "name": id, "config": config })];
    if id != "otel_pipeline" {
        features.insert(0, json!({ "name": "otel_pipeline" }));
    }
    let agent = json!({
        "apiVersion": "security.example.io/v1alpha1", "kind": "SecurityAgent",
        "metadata": { "name": "feature-test", "namespace": "security-system" },
        "spec": { "features": features, "output": { "elasticsearch": { "endpoints": ["https://elasticsearch.example:9200"] } } },
    });
    secop_api::parse(&agent.to_string()).map_err(|e| anyhow::anyhow!("{e}"))
}

fn render(registry: &Registry, id: &str, config: Value) -> Result<Rendered> {
    let options = RenderOptions { memoize: false, ..Default::default() };
    secop_engine::render(registry, &agent_for(id, config)?, &options).map_err(|e| anyhow::anyhow!("{e}"))
}

fn own_objects<'a>(rendered: &'a Rendered, id: &str) -> Vec<&'a Value> {
    rendered.objects.iter().filter(|(k, _)| rendered.owners.get(k).is_some_and(|o| o == id)).map(|(_, v)| v).collect()
}

fn check(rule: &'static str, passed: bool, detail: impl Into<String>) -> Check {
    Check { rule, passed, detail: detail.into() }
}

/// Every rule, in order. `config` is the feature's config for the rendering
/// checks (its defaults when None).
pub fn checks(registry: &mut Registry, module: Module, config: Option<Value>) -> Result<Vec<Check>> {
    let id = module.metadata.id.clone();
    let condition_type = module.metadata.condition_type.clone();
    let mut out = vec![check(
        "loads as the operator loads it (a component of this contract)",
        true,
        format!("contract {}, sha256:{}", module.metadata.contract_version, module.digest),
    )];
    registry.insert(module);
    let config = config.unwrap_or_else(|| json!({}));

    let first = render(registry, &id, config.clone())?;
    let report = first.features.iter().find(|f| f.name == id).expect("the feature is in the agent");
    let limit = matches!(
        &report.error,
        Some(FeatureError::Sandbox(
            CallError::Timeout { .. } | CallError::MemoryLimit { .. } | CallError::OutputTooLarge { .. }
        ))
    );
    out.push(check(
        "stays inside the default limits (deadline, memory, output size)",
        !limit,
        report.error.as_ref().filter(|_| limit).map_or_else(|| "yes".to_string(), ToString::to_string),
    ));
    let rendered_ok = report.error.is_none();
    out.push(check(
        "configure, contribute and its objects pass the operator's admission",
        rendered_ok,
        match &report.error {
            None => format!("{} objects", report.objects.len()),
            Some(e) => format!("{}: {e}", e.reason()),
        },
    ));
    if rendered_ok {
        let second = render(registry, &id, config.clone())?;
        let same = own_objects(&first, &id) == own_objects(&second, &id);
        out.push(check(
            "deterministic: the same input gives the same objects",
            same,
            if same { "two renders agree" } else { "two renders of the same agent differ" },
        ));
        let assessed = secop_engine::assess(registry, &first.live, Arc::new(secop_runtime::NoCluster));
        let condition = assessed.iter().find(|(name, _)| *name == id).map(|(_, c)| c);
        out.push(check(
            "assess returns its readiness condition",
            condition.is_some_and(|c| c.type_ == condition_type),
            condition
                .map_or_else(|| "no condition".to_string(), |c| format!("{} {:?} ({})", c.type_, c.status, c.reason)),
        ));
    } else {
        for rule in ["deterministic: the same input gives the same objects", "assess returns its readiness condition"] {
            out.push(check(rule, false, "not run: the feature did not render"));
        }
    }

    // The API server and the spec check keep a non-object config from
    // ever reaching a feature; the module is called directly here, as a
    // stray caller would, to see it answer with a config error.
    let wrong_type = wrong_type_answer(registry, &id);
    out.push(check(
        "a config of the wrong type is a config error naming the field, not a crash",
        matches!(wrong_type, Ok(Err(_))),
        match wrong_type {
            Ok(Err(e)) => e.to_string(),
            Ok(Ok(_)) => "accepted".to_string(),
            Err(e) => format!("{}: {e}", e.reason()),
        },
    ));

    let mut probe = if config.is_object() { config } else { json!({}) };
    probe[PROBE_FIELD] = json!(true);
    let probed = render(registry, &id, probe)?;
    let report = probed.features.iter().find(|f| f.name == id).expect("the feature is in the agent");
    // A warning (the SDK's lenient decoding) or a refusal (a strict
    // config, like posture's) both tell the user; silence does not.
    let warned = report.diagnostics.iter().any(|d| d.level == m::DiagnosticLevel::Warning && d.field == PROBE_FIELD);
    let refused = matches!(&report.error, Some(FeatureError::Config(e)) if e.field == PROBE_FIELD || e.message.contains(PROBE_FIELD));
    out.push(check(
        "an unknown config field is reported, naming it",
        warned || refused,
        if warned {
            format!("warning for `{PROBE_FIELD}`")
        } else if refused {
            format!("refused naming `{PROBE_FIELD}`")
        } else {
            "silently ignored".to_string()
        },
    ));
    Ok(out)
}

/// `configure` of the module itself with a JSON string for a config.
fn wrong_type_answer(registry: &Registry, id: &str) -> Result<Result<Vec<m::Diagnostic>, m::ConfigError>, CallError> {
    let Some(secop_engine::Entry::Wasm(module)) = registry.get(id) else {
        return Err(CallError::Instantiate(format!("`{id}` is not a loaded component")));
    };
    let mut instance =
        registry.runtime().instantiate(module, secop_runtime::Limits::default(), Arc::new(secop_runtime::NoCluster))?;
    let ctx = m::Context {
        namespace: "security-system".into(),
        agent_name: "feature-test".into(),
        cluster_name: "feature-test".into(),
        ..Default::default()
    };
    instance.configure("\"not an object\"", &ctx)
}

/// The table `secop feature test --conformance` prints.
pub fn table(checks: &[Check]) -> String {
    let width = checks.iter().map(|c| c.rule.len()).max().unwrap_or(0);
    let mut out = format!("{:<width$}  RESULT  DETAIL\n", "RULE");
    for c in checks {
        out.push_str(&format!("{:<width$}  {:<6}  {}\n", c.rule, if c.passed { "PASS" } else { "FAIL" }, c.detail));
    }
    let failed = checks.iter().filter(|c| !c.passed).count();
    out.push_str(&format!("{} of {} rules kept\n", checks.len() - failed, checks.len()));
    out
}
