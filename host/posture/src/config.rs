//! What the posture feature's config says: the level, checks switched on
//! or off, and exemptions by namespace or label. Errors name the field.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::audits::{self, Check, Level};
use crate::model::Asset;

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
    /// Labels the resource must all carry.
    pub labels: BTreeMap<String, String>,
    pub checks: Vec<String>,
    /// Why (kept for the reviewer; not used).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl Default for PostureConfig {
    /// The control plane's own namespace and the sensors this operator
    /// deploys (privileged by necessity) are exempt by default; set
    /// `exemptions: []` to audit them too.
    fn default() -> Self {
        Self {
            level: Level::Baseline,
            enable: vec![],
            disable: vec![],
            exemptions: vec![
                Exemption { namespaces: vec!["kube-system".into()], reason: Some("the control plane's own workloads".into()), ..Default::default() },
                Exemption {
                    labels: BTreeMap::from([("app.kubernetes.io/managed-by".into(), "security-operator".into())]),
                    reason: Some("the sensors this operator deploys need host access by design".into()),
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
        let config: Self = serde_json::from_str(source).map_err(|e| ConfigError { field: ".".into(), message: e.to_string() })?;
        config.validate()?;
        Ok(config)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        let known = |field: String, id: &str| match audits::check(id) {
            Some(_) => Ok(()),
            None => Err(ConfigError { field, message: format!("unknown check `{id}` (known: {})", audits::CHECKS.iter().map(|c| c.id).collect::<Vec<_>>().join(", ")) }),
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
            if e.namespaces.is_empty() && e.labels.is_empty() {
                return Err(ConfigError { field: format!("exemptions[{i}]"), message: "needs `namespaces` or `labels` (an exemption of everything is `disable`)".into() });
            }
        }
        Ok(())
    }

    /// The checks this config runs.
    pub fn active(&self) -> Vec<&'static Check> {
        audits::CHECKS
            .iter()
            .filter(|c| (c.default || self.level == Level::Restricted || self.enable.iter().any(|e| e == c.id)) && !self.disable.iter().any(|d| d == c.id))
            .collect()
    }

    /// Whether `check`'s findings on `asset` are exempt.
    pub fn exempt(&self, asset: &Asset, check: &str) -> bool {
        self.exemptions.iter().any(|e| {
            let namespace = e.namespaces.is_empty()
                || asset.namespace.as_deref().is_some_and(|ns| e.namespaces.iter().any(|p| p.strip_suffix('*').map_or(p == ns, |prefix| ns.starts_with(prefix))));
            let labels = e.labels.iter().all(|(k, v)| asset.labels.get(k) == Some(v));
            let checks = e.checks.is_empty() || e.checks.iter().any(|c| c == check);
            namespace && labels && checks
        })
    }
}
