//! What the posture feature's config says: the level, checks switched on
//! or off, and exemptions by namespace, owner or label. Errors name the
//! field.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::audits::{self, Check, Level};
use crate::model::Asset;

/// The served version of the SecurityAgent CRD (host/api; a test keeps
/// them equal). The default exemption names it: see `Exemption::owned_by`.
pub const AGENT_VERSION: &str = "v1alpha1";

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct PostureConfig {
    /// `baseline` (default): the baseline checks plus the default hygiene
    /// and RBAC checks; `restricted`: every check.
    pub level: Level,
    /// Check ids to run in addition to the level's.
    pub enable: Vec<String>,
    /// Check ids never to run.
    pub disable: Vec<String>,
    /// Resources whose findings are not reported.
    pub exemptions: Vec<Exemption>,
}

/// Matches when every given selector matches; `checks` empty = all checks.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct Exemption {
    /// Namespaces; a trailing `*` matches a prefix.
    pub namespaces: Vec<String>,
    /// Labels the resource must all carry. Anyone who may write a resource
    /// may label it: prefer `ownedBy` for namespaced resources.
    pub labels: BTreeMap<String, String>,
    /// `group/Kind` (any version) or `group/version/Kind` (that version
    /// only) of the controller that owns the resource (its
    /// `controller: true` owner reference), e.g.
    /// `security.example.io/v1alpha1/SecurityAgent`. Prefer the version:
    /// the garbage collector deletes an object whose owner of a served
    /// version does not exist, but keeps one whose owner's version is not
    /// served, so a made-up version would make a lasting exemption.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub owned_by: Vec<String>,
    /// Only cluster-scoped resources (`Cluster`) or only namespaced ones.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scope: Option<Scope>,
    pub checks: Vec<String>,
    /// Why (kept for the reviewer; not used).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
pub enum Scope {
    Cluster,
    Namespaced,
}

impl Default for PostureConfig {
    /// The control plane's own namespace and what this operator deploys
    /// (sensors privileged by necessity) are exempt by default; set
    /// `exemptions: []` to audit them too. What the operator deploys is
    /// recognised by who controls it, not by a label any tenant may put on
    /// a pod: namespaced workloads by their owner reference to a
    /// SecurityAgent; cluster-scoped RBAC (which has no owner) by the label,
    /// since whoever may write cluster-scoped RBAC is an admin already.
    fn default() -> Self {
        Self {
            level: Level::Baseline,
            enable: vec![],
            disable: vec![],
            exemptions: vec![
                Exemption {
                    namespaces: vec!["kube-system".into()],
                    reason: Some("the control plane's own workloads".into()),
                    ..Default::default()
                },
                Exemption {
                    owned_by: vec![format!("security.example.io/{AGENT_VERSION}/SecurityAgent")],
                    scope: Some(Scope::Namespaced),
                    reason: Some("the sensors this operator deploys need host access by design".into()),
                    ..Default::default()
                },
                Exemption {
                    labels: BTreeMap::from([("app.kubernetes.io/managed-by".into(), "security-operator".into())]),
                    scope: Some(Scope::Cluster),
                    reason: Some("the cluster roles this operator's features grant their sensors".into()),
                    ..Default::default()
                },
            ],
        }
    }
}

/// A config the engine cannot use; `field` is a JSON path in the config.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct ConfigError {
    pub field: String,
    pub message: String,
}

impl PostureConfig {
    pub fn parse(json: &str) -> Result<Self, ConfigError> {
        let trimmed = json.trim();
        let source = if trimmed.is_empty() || trimmed == "null" { "{}" } else { trimmed };
        let config: Self =
            serde_json::from_str(source).map_err(|e| ConfigError { field: ".".into(), message: e.to_string() })?;
        config.validate()?;
        Ok(config)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        let known = |field: String, id: &str| match audits::check(id) {
            Some(_) => Ok(()),
            None => Err(ConfigError {
                field,
                message: format!(
                    "unknown check `{id}` (known: {})",
                    audits::CHECKS.iter().map(|c| c.id).collect::<Vec<_>>().join(", ")
                ),
            }),
        };
        for (i, id) in self.enable.iter().enumerate() {
            known(format!("enable[{i}]"), id)?;
        }
        for (i, id) in self.disable.iter().enumerate() {
            known(format!("disable[{i}]"), id)?;
        }
        for (i, e) in self.exemptions.iter().enumerate() {
            for (j, id) in e.checks.iter().enumerate() {
                known(format!("exemptions[{i}].checks[{j}]"), id)?;
            }
            if e.namespaces.is_empty() && e.labels.is_empty() && e.owned_by.is_empty() {
                return Err(ConfigError {
                    field: format!("exemptions[{i}]"),
                    message: "needs `namespaces`, `labels` or `ownedBy` (an exemption of everything is `disable`)"
                        .into(),
                });
            }
            for (j, owner) in e.owned_by.iter().enumerate() {
                if owner.rsplit_once('/').is_none_or(|(group, kind)| group.is_empty() || kind.is_empty()) {
                    return Err(ConfigError {
                        field: format!("exemptions[{i}].ownedBy[{j}]"),
                        message: format!("`{owner}` is not `group/Kind`"),
                    });
                }
            }
        }
        Ok(())
    }

    /// The checks this config runs.
    pub fn active(&self) -> Vec<&'static Check> {
        audits::CHECKS
            .iter()
            .filter(|c| {
                (c.default || self.level == Level::Restricted || self.enable.iter().any(|e| e == c.id))
                    && !self.disable.iter().any(|d| d == c.id)
            })
            .collect()
    }

    /// Whether `check`'s findings on `asset` are exempt.
    pub fn exempt(&self, asset: &Asset, check: &str) -> bool {
        self.exemptions.iter().any(|e| {
            let namespace = e.namespaces.is_empty()
                || asset.namespace.as_deref().is_some_and(|ns| {
                    e.namespaces.iter().any(|p| p.strip_suffix('*').map_or(p == ns, |prefix| ns.starts_with(prefix)))
                });
            let labels = e.labels.iter().all(|(k, v)| asset.labels.get(k) == Some(v));
            let owner = e.owned_by.is_empty()
                || asset.owner.as_ref().filter(|o| o.controller).is_some_and(|o| {
                    let group = o.api_version.rsplit_once('/').map_or("", |(g, _)| g);
                    e.owned_by.iter().any(|wanted| {
                        wanted.rsplit_once('/').is_some_and(|(api, kind)| {
                            kind == o.kind && if api.contains('/') { api == o.api_version } else { api == group }
                        })
                    })
                });
            let scope = match e.scope {
                None => true,
                Some(Scope::Cluster) => asset.namespace.is_none(),
                Some(Scope::Namespaced) => asset.namespace.is_some(),
            };
            let checks = e.checks.is_empty() || e.checks.iter().any(|c| c == check);
            namespace && labels && owner && scope && checks
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn asset(object: serde_json::Value) -> Asset {
        crate::model::parse(&object).expect("a kept kind")
    }

    /// The operator's own sensors are recognised by their controller, not by
    /// a label: a tenant's privileged pod with the operator's label is
    /// audited like any other.
    #[test]
    fn the_default_exemption_follows_ownership_not_a_label() {
        let config = PostureConfig::default();
        let labelled = json!({"apiVersion":"v1","kind":"Pod","metadata":{"name":"sneaky","namespace":"tenant-a","uid":"1",
            "labels":{"app.kubernetes.io/managed-by":"security-operator"}},"spec":{"containers":[{"name":"c","image":"x","securityContext":{"privileged":true}}]}});
        assert!(!config.exempt(&asset(labelled), "PSS-B-02"));
        let owned = json!({"apiVersion":"apps/v1","kind":"DaemonSet","metadata":{"name":"falco","namespace":"security-system","uid":"2",
            "ownerReferences":[{"apiVersion":"security.example.io/v1alpha1","kind":"SecurityAgent","name":"poc","uid":"9","controller":true}]},
            "spec":{"template":{"spec":{"containers":[{"name":"c","image":"x"}]}}}});
        assert!(config.exempt(&asset(owned.clone()), "PSS-B-02"));
        // The same kind from another group is not ours, nor from a version
        // the API server does not serve (its garbage collector would keep
        // such an object for good).
        let mut impostor = owned.clone();
        impostor["metadata"]["ownerReferences"][0]["apiVersion"] = json!("evil.example.io/v1");
        assert!(!config.exempt(&asset(impostor), "PSS-B-02"));
        let mut unserved = owned.clone();
        unserved["metadata"]["ownerReferences"][0]["apiVersion"] = json!("security.example.io/v0");
        assert!(!config.exempt(&asset(unserved), "PSS-B-02"));
        // Cluster-scoped objects cannot be owned by a namespaced agent.
        let mut cluster_wide = owned;
        cluster_wide["metadata"].as_object_mut().unwrap().remove("namespace");
        assert!(!config.exempt(&asset(cluster_wide), "PSS-B-02"));
        // Cluster-scoped RBAC has no owner: the label counts there only.
        let role = |kind: &str, namespace: Option<&str>| {
            let mut o = json!({"apiVersion":"rbac.authorization.k8s.io/v1","kind":kind,"metadata":{"name":"r","uid":"3",
                "labels":{"app.kubernetes.io/managed-by":"security-operator"}},"rules":[]});
            if let Some(ns) = namespace {
                o["metadata"]["namespace"] = json!(ns);
            }
            asset(o)
        };
        assert!(config.exempt(&role("ClusterRole", None), "RBAC-02"));
        assert!(!config.exempt(&role("Role", Some("tenant-a")), "RBAC-02"));
    }

    #[test]
    fn the_exempted_agent_version_is_the_served_one() {
        assert_eq!(AGENT_VERSION, secop_api::VERSION);
    }

    #[test]
    fn owned_by_must_be_group_and_kind() {
        let err = PostureConfig::parse(r#"{"exemptions":[{"ownedBy":["SecurityAgent"]}]}"#).unwrap_err();
        assert_eq!(err.field, "exemptions[0].ownedBy[0]");
    }
}
