//! The SecurityAgent status: observedGeneration, one condition per feature
//! (from `assess`, or the feature's error), an overall Ready, and what was
//! applied. Written with server-side apply on the status subresource, and
//! only when it changed: a no-op reconcile makes no write.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::tz::TimeZone;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams};
use secop_api::{FeatureStatus, Reason, SecurityAgent, SecurityAgentStatus};
use secop_engine::Rendered;
use secop_feature_sdk::model as m;
use serde_json::json;

use crate::error::Result;
use crate::modules::{InUse, ModuleNote};

pub const STATUS_MANAGER: &str = "security-operator-status";
pub const READY: &str = "Ready";
/// True while a feature runs another module than its spec asks for
/// (rolled back, or unavailable), or from the cache because the registry
/// is unreachable.
pub const DEGRADED: &str = "Degraded";
/// The last CTEM validation run (`spec.tests`): True when every scenario's
/// detections arrived, False naming each scenario and the missing tools.
pub const VALIDATED: &str = "Validated";

/// Keep a condition's lastTransitionTime while its status is unchanged.
fn condition(
    previous: &[Condition],
    type_: &str,
    status: &str,
    reason: &str,
    message: &str,
    generation: Option<i64>,
) -> Condition {
    let before = previous.iter().find(|c| c.type_ == type_);
    let last_transition_time = match before {
        Some(c) if c.status == status => c.last_transition_time.clone(),
        _ => Time(Timestamp::now()),
    };
    Condition {
        type_: type_.to_string(),
        status: status.to_string(),
        reason: if reason.is_empty() { "Unknown".to_string() } else { reason.to_string() },
        message: message.to_string(),
        last_transition_time,
        observed_generation: generation,
    }
}

/// Kinds the agent has applied, kept across reconciles so a disabled
/// feature's custom resources can still be found and pruned.
pub fn inventory(agent: &SecurityAgent) -> BTreeSet<String> {
    agent.status.as_ref().map(|s| s.inventory.iter().cloned().collect()).unwrap_or_default()
}

/// The status after a reconcile.
pub fn desired(
    agent: &SecurityAgent,
    rendered: &Rendered,
    modules: &BTreeMap<String, InUse>,
    notes: &[ModuleNote],
    assessed: &[(String, m::Condition)],
    applied_kinds: &BTreeSet<String>,
) -> SecurityAgentStatus {
    let previous: Vec<Condition> = agent.status.as_ref().map(|s| s.conditions.clone()).unwrap_or_default();
    let generation = agent.metadata.generation;
    let mut conditions = vec![];
    let mut features = BTreeMap::new();
    let (mut enabled, mut ready) = (0, 0);
    for report in &rendered.features {
        let mut status = FeatureStatus {
            enabled: report.enabled,
            module_digest: report.module_digest.clone(),
            module_image: modules.get(&report.name).and_then(|m| m.image.clone()),
            module_signer: modules.get(&report.name).and_then(|m| match &m.image {
                None => Some("built-in".to_string()),
                Some(_) => m.signer.clone(),
            }),
            message: None,
        };
        if report.enabled {
            enabled += 1;
            let (state, reason, message) = match (&report.error, assessed.iter().find(|(n, _)| n == &report.name)) {
                (Some(error), _) => {
                    let keeping = if report.stale {
                        "; its last good objects are kept"
                    } else {
                        "; previously applied objects are kept"
                    };
                    ("False".to_string(), error.reason().into(), format!("feature `{}`: {error}{keeping}", report.name))
                }
                (None, Some((_, c))) => (c.status.as_str().to_string(), c.reason.clone(), c.message.clone()),
                (None, None) => ("Unknown".to_string(), Reason::NotAssessed.into(), String::new()),
            };
            if state == "True" {
                ready += 1;
            }
            // A rollback note says more than the (healthy) assessment of
            // the module that stands in.
            let feature_notes: Vec<&str> =
                notes.iter().filter(|n| n.feature == report.name).map(|n| n.message.as_str()).collect();
            let note = (!feature_notes.is_empty()).then(|| feature_notes.join("; "));
            status.message = note.or_else(|| Some(message.clone())).filter(|m| !m.is_empty());
            conditions.push(condition(&previous, &report.condition_type, &state, &reason, &message, generation));
        }
        features.insert(report.name.clone(), status);
    }
    let all_ready = ready == enabled && rendered.failed().next().is_none();
    let not_ready: Vec<&str> = conditions.iter().filter(|c| c.status != "True").map(|c| c.type_.as_str()).collect();
    let (state, reason, message) = if all_ready {
        ("True", Reason::AllFeaturesReady, format!("{ready}/{enabled} features ready"))
    } else {
        (
            "False",
            Reason::FeaturesNotReady,
            format!("{ready}/{enabled} features ready; not ready: {}", not_ready.join(", ")),
        )
    };
    conditions.insert(0, condition(&previous, READY, state, reason.as_str(), &message, generation));
    let degraded = match notes.first() {
        Some(first) => {
            let message = notes.iter().map(|n| n.message.as_str()).collect::<Vec<_>>().join("; ");
            condition(&previous, DEGRADED, "True", first.reason.as_str(), &message, generation)
        }
        None => condition(
            &previous,
            DEGRADED,
            "False",
            Reason::ModulesAsSpecified.as_str(),
            "every feature runs the module its spec names",
            generation,
        ),
    };
    conditions.insert(1, degraded);
    if let Some(validated) = validated(agent, &previous, Timestamp::now()) {
        conditions.insert(2, validated);
    }
    SecurityAgentStatus {
        observed_generation: generation,
        conditions,
        features,
        summary: Some(format!("{ready}/{enabled}")),
        inventory: applied_kinds.iter().cloned().collect(),
        // Owned by the validation Job's field manager, never written here.
        validation: None,
    }
}

/// The `Validated` condition from `status.validation`, which the
/// validation Job writes; none when `spec.tests` is off. "0 findings" must
/// never look healthy: a run that has not happened yet is Unknown, and so
/// is the last result once a scheduled run is overdue (the CronJob's Jobs
/// stopped running: image not pullable, pod refused, CronJob suspended).
fn validated(agent: &SecurityAgent, previous: &[Condition], now: Timestamp) -> Option<Condition> {
    let tests = agent.spec.tests.as_ref().filter(|t| t.enabled)?;
    let generation = agent.metadata.generation;
    let run = agent.status.as_ref().and_then(|s| s.validation.as_ref());
    let schedule = tests.schedule.as_deref().unwrap_or(secop_api::TestSpec::DEFAULT_SCHEDULE);
    let overdue = run
        .and_then(|r| r.last_run.as_deref())
        .and_then(|last| last.parse::<Timestamp>().ok())
        .and_then(|last| next_run(schedule, last))
        .filter(|due| now > *due + RUN_GRACE);
    let (state, reason, message) = match run {
        Some(run) if overdue.is_some() => (
            "Unknown",
            Reason::RunOverdue,
            format!(
                "the last validation run was at {}; the run due at {} has not reported (CronJob ctem-validation on `{schedule}`: see its Jobs and pods)",
                run.last_run.as_deref().unwrap_or_default(),
                overdue.expect("matched"),
            ),
        ),
        None => (
            "Unknown",
            Reason::NotRunYet,
            format!(
                "no validation run yet: CronJob ctem-validation runs on `{}`",
                tests.schedule.as_deref().unwrap_or(secop_api::TestSpec::DEFAULT_SCHEDULE)
            ),
        ),
        Some(run) if run.error.is_some() => (
            "False",
            Reason::CheckFailed,
            format!(
                "run at {}: the detections could not be checked: {}",
                run.last_run.as_deref().unwrap_or("an unknown time"),
                run.error.as_deref().unwrap_or_default()
            ),
        ),
        Some(run) => {
            let failed: Vec<String> = run
                .scenarios
                .iter()
                .filter(|s| s.result != secop_api::ScenarioOutcome::Passed)
                .map(|s| {
                    if s.missing.is_empty() {
                        format!("{}: no detection", s.name)
                    } else {
                        format!("{}: no detection from {}", s.name, s.missing.join(", "))
                    }
                })
                .collect();
            let at = run.last_run.as_deref().unwrap_or("an unknown time");
            if failed.is_empty() && !run.scenarios.is_empty() {
                (
                    "True",
                    Reason::ScenariosDetected,
                    format!("{} scenarios detected by every enabled tool (run at {at})", run.scenarios.len()),
                )
            } else {
                (
                    "False",
                    Reason::DetectionMissing,
                    format!(
                        "run at {at}: {}",
                        if failed.is_empty() { "no scenario checked".to_string() } else { failed.join("; ") }
                    ),
                )
            }
        }
    };
    Some(condition(previous, VALIDATED, state, reason.as_str(), &message, generation))
}

/// How long a scheduled run may take to report: the Job's pod starts (an
/// image pull), performs the scenarios, and the check waits up to five
/// minutes for the detections (host/secop/src/validate.rs).
const RUN_GRACE: SignedDuration = SignedDuration::from_mins(15);

/// The first time after `last` the CronJob runs on `schedule` (UTC, the
/// controller's default), or None for a schedule that never fires again.
/// `@every <duration>` is the CronJob controller's own extension; the rest
/// is cron (croner).
fn next_run(schedule: &str, last: Timestamp) -> Option<Timestamp> {
    let schedule = schedule.trim();
    if let Some(every) = schedule.strip_prefix("@every ") {
        let every: SignedDuration = every.trim().parse().ok()?;
        return last.checked_add(every).ok();
    }
    let pattern = if schedule.eq_ignore_ascii_case("@midnight") { "@daily" } else { schedule };
    let cron: croner::Cron = pattern.parse().ok()?;
    let next = cron.find_next_occurrence(&last.to_zoned(TimeZone::UTC), false).ok()?;
    Some(next.timestamp())
}

/// The status of an agent that cannot be rendered (`reason`: InvalidSpec
/// or PolicyViolation).
pub fn refused(agent: &SecurityAgent, reason: Reason, message: &str) -> SecurityAgentStatus {
    not_ready(agent, reason, message)
}

/// The status when applying or pruning failed (`reason`: Forbidden or
/// SyncFailed): Ready=False with the request that failed.
pub fn sync_failed(agent: &SecurityAgent, reason: Reason, message: &str) -> SecurityAgentStatus {
    not_ready(agent, reason, message)
}

/// The current status with Ready=False for `reason`; the feature
/// conditions stay as they were.
fn not_ready(agent: &SecurityAgent, reason: Reason, message: &str) -> SecurityAgentStatus {
    let previous: Vec<Condition> = agent.status.as_ref().map(|s| s.conditions.clone()).unwrap_or_default();
    let mut status = agent.status.clone().unwrap_or_default();
    status.observed_generation = agent.metadata.generation;
    status.conditions.retain(|c| c.type_ != READY);
    status
        .conditions
        .insert(0, condition(&previous, READY, "False", reason.as_str(), message, agent.metadata.generation));
    status
}

/// Write `status` if it differs from the current one. Returns whether it wrote.
pub async fn write(api: &Api<SecurityAgent>, agent: &SecurityAgent, mut status: SecurityAgentStatus) -> Result<bool> {
    // `validation` has another owner (the validation Job's field manager):
    // it is neither compared nor sent, so this apply never takes it over.
    status.validation = None;
    let current = agent.status.clone().map(|mut s| {
        s.validation = None;
        s
    });
    if current.as_ref() == Some(&status) {
        return Ok(false);
    }
    let patch = json!({
        "apiVersion": format!("{}/{}", secop_api::GROUP, secop_api::VERSION),
        "kind": secop_api::KIND,
        "status": status,
    });
    api.patch_status(&agent.name_any(), &PatchParams::apply(STATUS_MANAGER).force(), &Patch::Apply(&patch)).await?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use secop_api::{ScenarioOutcome, ScenarioResult, ValidationStatus};

    fn at(text: &str) -> Timestamp {
        text.parse().unwrap()
    }

    #[test]
    fn the_next_run_follows_the_schedule() {
        let last = at("2026-12-02T10:20:00Z");
        assert_eq!(next_run("@hourly", last), Some(at("2026-12-02T11:00:00Z")));
        assert_eq!(next_run("*/15 * * * *", last), Some(at("2026-12-02T10:30:00Z")));
        assert_eq!(next_run("@midnight", last), Some(at("2026-12-03T00:00:00Z")));
        assert_eq!(next_run("@every 2h", last), Some(at("2026-12-02T12:20:00Z")));
        assert_eq!(next_run("@every 1h30m", last), Some(at("2026-12-02T11:50:00Z")));
        // 31 February: the tests' schedule, which never fires.
        assert_eq!(next_run("0 0 31 2 *", last), None);
    }

    #[test]
    fn a_passed_run_turns_unknown_once_the_next_scheduled_run_is_overdue() {
        let mut agent = secop_api::parse(
            "apiVersion: security.example.io/v1alpha1\nkind: SecurityAgent\nmetadata: { name: a, namespace: sec }\nspec:\n  features: [{ name: falco }]\n  tests: { enabled: true, schedule: '@hourly', scenarios: [validate-shell] }\n",
        )
        .unwrap();
        agent.status = Some(SecurityAgentStatus {
            validation: Some(ValidationStatus {
                last_run: Some("2026-12-02T10:20:00Z".into()),
                pod: Some("ctem-validation-1".into()),
                error: None,
                scenarios: vec![ScenarioResult {
                    name: "validate-shell".into(),
                    result: ScenarioOutcome::Passed,
                    detected_by: vec!["falco".into()],
                    missing: vec![],
                }],
            }),
            ..Default::default()
        });
        // The 11:00 run may take until 11:15 to report.
        let fresh = validated(&agent, &[], at("2026-12-02T11:14:00Z")).unwrap();
        assert_eq!((fresh.status.as_str(), fresh.reason.as_str()), ("True", "ScenariosDetected"));
        let overdue = validated(&agent, &[], at("2026-12-02T11:16:00Z")).unwrap();
        assert_eq!(
            (overdue.status.as_str(), overdue.reason.as_str()),
            ("Unknown", "RunOverdue"),
            "{}",
            overdue.message
        );
        assert!(overdue.message.contains("2026-12-02T11:00:00Z"), "{}", overdue.message);
    }
}
