//! Admission review of SecurityAgents: the checks a reconcile makes (spec,
//! cluster policy, each feature's own `configure` and the admission of what
//! it contributes), made when the object is written, so `kubectl apply`
//! names the field instead of a condition later. Served by `webhook.rs`
//! for the chart's ValidatingWebhookConfiguration
//! (deploy/helm/security-operator/templates/webhook.yaml).
//!
//! The review never changes state: it renders with the memo read but not
//! written (`RenderOptions::remember`), so unchanged features cost nothing
//! and a spec under review never becomes anyone's last good output. It
//! refuses only what is wrong whatever the moment (the spec, the policy, a
//! feature's config and objects); what may pass later (a module not fetched
//! yet, a busy sandbox) is a warning, and the reconciler reports it.

use std::sync::Arc;
use std::time::Duration;

use kube::core::DynamicObject;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, Operation};
use secop_api::{AgentId, SecurityAgent};
use secop_engine::{AgentModule, FeatureError, Registry, RenderError, RenderOptions};
use secop_feature_sdk::model as m;
use secop_policy::ClusterPolicy;
use secop_runtime::CallError;

/// What the review found: nothing refused means allowed.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Verdict {
    /// Each names the field (`spec.features[falco].config.driver: ...`).
    pub refusals: Vec<String>,
    /// Returned as admission warnings (kubectl prints them).
    pub warnings: Vec<String>,
}

impl Verdict {
    fn allowed(&self) -> bool {
        self.refusals.is_empty()
    }
}

/// The inputs of every review, shared by the webhook's requests.
pub(crate) struct Reviewer {
    pub registry: Arc<Registry>,
    pub policy: Arc<ClusterPolicy>,
    pub operator_image: String,
    /// Time the feature calls of one review may take before it answers
    /// "not checked" (the reconcile still checks it).
    pub budget: Duration,
}

impl Reviewer {
    /// One AdmissionReview request → its response.
    pub(crate) async fn respond(self: Arc<Self>, request: AdmissionRequest<DynamicObject>) -> AdmissionResponse {
        let response = AdmissionResponse::from(&request);
        let (agent, old) = match agents_of(&request) {
            Ok(agents) => agents,
            Err(unreadable) => return response.deny(unreadable),
        };
        let Some(agent) = agent else { return response };
        let reviewer = self.clone();
        let review = tokio::task::spawn_blocking(move || reviewer.verdict(&agent, old.as_ref()));
        // Feature calls are synchronous (spawn_blocking, as in the
        // reconcile); past the budget the answer is "not checked", never a
        // refusal: a slow operator must not block writes.
        let verdict = match tokio::time::timeout(self.budget, review).await {
            Ok(Ok(verdict)) => verdict,
            Ok(Err(join)) => Verdict {
                refusals: vec![],
                warnings: vec![format!("not checked at admission ({join}); the operator checks it when it reconciles")],
            },
            Err(_) => Verdict {
                refusals: vec![],
                warnings: vec![format!(
                    "not checked at admission within {} ms; the operator checks it when it reconciles",
                    self.budget.as_millis()
                )],
            },
        };
        respond_with(response, verdict)
    }

    /// The review of `agent` (its earlier version `old` on update).
    pub(crate) fn verdict(&self, agent: &SecurityAgent, old: Option<&SecurityAgent>) -> Verdict {
        // Finalizers, labels, a deletion: nothing the render reads changed.
        // Never refused, so the operator can always finish an agent.
        if agent.metadata.deletion_timestamp.is_some() || old.is_some_and(|old| old.spec == agent.spec) {
            return Verdict::default();
        }
        let mut verdict = Verdict::default();
        // The policy on the agent as written: a module from a source the
        // admin does not allow is refused, fetched or not.
        if let Err(violation) = self.policy.check_agent(agent) {
            verdict.refusals.push(violation.to_string());
            return verdict;
        }
        let (candidate, options) = self.candidate(agent, &mut verdict.warnings);
        let rendered = match secop_engine::render(&self.registry, &candidate, &options) {
            Ok(rendered) => rendered,
            Err(RenderError::Spec(e)) => {
                verdict.refusals.push(e.to_string());
                return verdict;
            }
            Err(RenderError::Policy(v)) => {
                verdict.refusals.push(format!("{v}"));
                return verdict;
            }
        };
        verdict.warnings.extend(rendered.warnings.iter().cloned());
        for report in rendered.features.iter().filter(|r| r.enabled) {
            let feature = &report.name;
            for d in report.diagnostics.iter().filter(|d| d.level == m::DiagnosticLevel::Warning) {
                verdict.warnings.push(format!("spec.features[{feature}].config.{}: {}", d.field, d.message));
            }
            let Some(error) = &report.error else { continue };
            let line = match error {
                FeatureError::Config(e) => format!("spec.features[{feature}].{e}"),
                other => format!("spec.features[{feature}]: {other}"),
            };
            if refuses(error) {
                verdict.refusals.push(line);
            } else {
                verdict.warnings.push(format!("{line} (checked again when the operator reconciles)"));
            }
        }
        verdict
    }

    /// The agent as the review renders it, and the render's options: a
    /// feature whose module this operator has not run for this agent yet
    /// is left out with a warning (fetching is for the reconcile: the API
    /// server waits for this answer).
    fn candidate(&self, agent: &SecurityAgent, warnings: &mut Vec<String>) -> (SecurityAgent, RenderOptions) {
        let agent_id = AgentId::of(agent);
        let memo = self.registry.memo();
        let mut candidate = agent.clone();
        let mut options = RenderOptions {
            operator_image: self.operator_image.clone(),
            memoize: true,
            remember: false,
            keep_last_good: false,
            policy: self.policy.clone(),
            ..Default::default()
        };
        for feature in candidate.spec.features.iter_mut().filter(|f| f.enabled) {
            let Some(module) = &feature.module else { continue };
            let good = memo.last_good_module(&agent_id, &feature.name).filter(|good| {
                good.image.as_deref() == Some(module.image.as_str())
                    && module
                        .sha256
                        .as_deref()
                        .is_none_or(|pin| good.entry.digest() == Some(pin.strip_prefix("sha256:").unwrap_or(pin)))
            });
            match good {
                Some(good) => {
                    options.modules.insert(feature.name.clone(), Ok(AgentModule::from(good)));
                }
                None => {
                    warnings.push(format!(
                        "spec.features[{}].module: `{}` is not checked at admission (not yet fetched by the operator); the operator checks it when it reconciles",
                        feature.name, module.image
                    ));
                    feature.enabled = false;
                }
            }
        }
        (candidate, options)
    }
}

/// Refused at admission: what is wrong with this spec whatever the
/// moment. A busy or failing sandbox, a deadline on a loaded machine, a
/// module that cannot be had: warnings (the reconcile reports them).
fn refuses(error: &FeatureError) -> bool {
    match error {
        FeatureError::Unknown { .. }
        | FeatureError::Config(_)
        | FeatureError::Contribute(_)
        | FeatureError::Rejected(_)
        | FeatureError::Conflict { .. }
        | FeatureError::SecondCollector { .. }
        | FeatureError::Policy(_) => true,
        FeatureError::Sandbox(e) => {
            matches!(e, CallError::MemoryLimit { .. } | CallError::OutputTooLarge { .. } | CallError::Trap { .. })
        }
        FeatureError::Module { .. } => false,
    }
}

/// An object under review that is no SecurityAgent this operator can
/// read (the API server's schema should have caught it), naming the field.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {message}")]
struct UnreadableAgent {
    path: String,
    message: String,
}

fn read_agent(object: &DynamicObject) -> Result<SecurityAgent, UnreadableAgent> {
    let value =
        serde_json::to_value(object).map_err(|e| UnreadableAgent { path: ".".into(), message: e.to_string() })?;
    serde_path_to_error::deserialize(value)
        .map_err(|e| UnreadableAgent { path: e.path().to_string(), message: e.inner().to_string() })
}

/// The object under review and its earlier version, as SecurityAgents;
/// None for an operation the review has nothing to say about.
#[allow(clippy::type_complexity)]
fn agents_of(
    request: &AdmissionRequest<DynamicObject>,
) -> Result<(Option<SecurityAgent>, Option<SecurityAgent>), UnreadableAgent> {
    if !matches!(request.operation, Operation::Create | Operation::Update) {
        return Ok((None, None));
    }
    let agent = request.object.as_ref().map(read_agent).transpose()?;
    // An old version this operator cannot read is no reason to refuse the new one.
    let old = request.old_object.as_ref().and_then(|o| read_agent(o).ok());
    Ok((agent, old))
}

fn respond_with(response: AdmissionResponse, verdict: Verdict) -> AdmissionResponse {
    let allowed = verdict.allowed();
    let mut response = if allowed {
        response
    } else {
        response.deny(format!("refused by the security operator: {}", verdict.refusals.join("; ")))
    };
    if !verdict.warnings.is_empty() {
        response.warnings = Some(verdict.warnings);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use secop_runtime::Runtime;
    use serde_json::json;

    fn reviewer() -> Reviewer {
        let runtime = Arc::new(Runtime::new(None).unwrap());
        Reviewer {
            registry: Arc::new(Registry::with_builtins(runtime).unwrap()),
            policy: Arc::new(ClusterPolicy::default().for_operator("security", None)),
            operator_image: secop_engine::DEFAULT_OPERATOR_IMAGE.into(),
            budget: Duration::from_secs(5),
        }
    }

    fn agent(features: serde_json::Value) -> SecurityAgent {
        serde_json::from_value(json!({
            "apiVersion": "security.example.io/v1alpha1",
            "kind": "SecurityAgent",
            "metadata": { "name": "grid", "namespace": "security" },
            "spec": { "features": features },
        }))
        .unwrap()
    }

    #[test]
    fn a_bad_feature_config_is_refused_naming_the_field() {
        let verdict =
            reviewer().verdict(&agent(json!([{ "name": "falco", "config": { "driver": "kmod-typo" } }])), None);
        assert_eq!(verdict.refusals.len(), 1, "{verdict:?}");
        assert!(verdict.refusals[0].starts_with("spec.features[falco].config.driver: "), "{verdict:?}");
    }

    #[test]
    fn a_good_agent_passes_and_unknown_config_fields_are_warnings() {
        let verdict = reviewer().verdict(&agent(json!([{ "name": "falco", "config": { "drivr": "ebpf" } }])), None);
        assert!(verdict.refusals.is_empty(), "{verdict:?}");
        assert!(
            verdict.warnings.iter().any(|w| w.starts_with("spec.features[falco].config.drivr: unknown field")),
            "{verdict:?}"
        );
    }

    #[test]
    fn the_cluster_policy_is_checked_naming_field_and_rule() {
        let verdict = reviewer().verdict(&agent(json!([{ "name": "falco", "limits": { "memoryMib": 1024 } }])), None);
        assert_eq!(verdict.refusals.len(), 1, "{verdict:?}");
        assert!(verdict.refusals[0].starts_with("spec.features[0].limits.memoryMib: "), "{verdict:?}");
        assert!(verdict.refusals[0].contains("limits.maxMemoryMib"), "{verdict:?}");
        let mut elsewhere = agent(json!([]));
        elsewhere.metadata.namespace = Some("team-b".into());
        let verdict = reviewer().verdict(&elsewhere, None);
        assert_eq!(verdict.refusals.len(), 1, "an agent in a namespace the policy does not honour: {verdict:?}");
    }

    #[test]
    fn an_unchanged_spec_or_a_deletion_is_never_refused() {
        let bad = agent(json!([{ "name": "falco", "config": { "driver": "kmod-typo" } }]));
        let mut finalized = bad.clone();
        finalized.metadata.finalizers = Some(vec![]);
        assert_eq!(reviewer().verdict(&finalized, Some(&bad)), Verdict::default());
        let mut deleting = bad.clone();
        deleting.metadata.deletion_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(k8s_openapi::jiff::Timestamp::now()));
        assert_eq!(reviewer().verdict(&deleting, None), Verdict::default());
    }

    #[test]
    fn a_module_not_yet_fetched_is_a_warning_but_an_unallowed_source_is_refused() {
        let module = json!([{ "name": "falco", "module": { "image": "registry.example/secop/falco:1" } }]);
        let verdict = reviewer().verdict(&agent(module.clone()), None);
        assert_eq!(verdict.refusals.len(), 1, "the default policy allows no module source: {verdict:?}");
        assert!(verdict.refusals[0].starts_with("spec.features[0].module.image: "), "{verdict:?}");

        let mut allowing = reviewer();
        allowing.policy = Arc::new(
            ClusterPolicy::from_yaml("modules:\n  allowed:\n    - image: registry.example/secop/\n")
                .unwrap()
                .for_operator("security", None),
        );
        let verdict = allowing.verdict(&agent(module), None);
        assert!(verdict.refusals.is_empty(), "{verdict:?}");
        assert!(verdict.warnings.iter().any(|w| w.starts_with("spec.features[falco].module: ")), "{verdict:?}");
    }

    #[test]
    fn the_review_leaves_the_memo_as_it_was() {
        let reviewer = reviewer();
        let good = agent(json!([{ "name": "falco" }]));
        assert!(reviewer.verdict(&good, None).refusals.is_empty());
        // Nothing remembered: with keep_last_good a failing feature has no
        // stand-in from the review.
        let bad = agent(json!([{ "name": "falco", "config": { "driver": "kmod-typo" } }]));
        let options = RenderOptions { keep_last_good: true, ..Default::default() };
        let rendered = secop_engine::render(&reviewer.registry, &bad, &options).unwrap();
        assert!(!rendered.features[0].stale, "the review's output stood in");
        // What a render that remembers does, for contrast.
        secop_engine::render(&reviewer.registry, &good, &RenderOptions::default()).unwrap();
        let rendered = secop_engine::render(&reviewer.registry, &bad, &options).unwrap();
        assert!(rendered.features[0].stale, "a remembered output stands in");
    }
}
