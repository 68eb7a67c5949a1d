//! The state machine: which assets and open alerts the indices hold, and
//! the fewest writes that bring them up to date.
//!
//! Per asset only its uid, content hash, first_seen and open alerts are
//! kept (not the asset): an unchanged asset is recognised by its hash
//! (dirty checking) and costs no write; an asset missing from a re-list is
//! marked deleted (the NOT-IN diff) and its alerts resolved, with the last
//! evidence kept in the alert document.

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::{Value, json};

use crate::audits::Check;
use crate::config::PostureConfig;
use crate::model::{Asset, Kind};

/// Which index a write goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Inventory,
    Events,
}

/// One document write: a whole document, or a partial update of one.
#[derive(Debug, Clone, PartialEq)]
pub enum Write {
    Index { target: Target, id: String, doc: Value, uid: String },
    Update { target: Target, id: String, doc: Value, uid: String },
}

impl Write {
    pub fn target(&self) -> Target {
        match self {
            Write::Index { target, .. } | Write::Update { target, .. } => *target,
        }
    }
    pub fn id(&self) -> &str {
        match self {
            Write::Index { id, .. } | Write::Update { id, .. } => id,
        }
    }
    /// The resource the document is about.
    pub fn uid(&self) -> &str {
        match self {
            Write::Index { uid, .. } | Write::Update { uid, .. } => uid,
        }
    }
}

/// A finding of one check on one asset (and container).
#[derive(Debug, Clone, PartialEq)]
pub struct Finding {
    pub check: &'static Check,
    pub container: Option<String>,
    pub evidence: Value,
}

#[derive(Debug, Clone)]
struct OpenAlert {
    check: &'static str,
    container: Option<String>,
    first_seen: Arc<str>,
    evidence_hash: u64,
}

#[derive(Debug, Clone)]
struct Tracked {
    kind: Kind,
    hash: u64,
    /// Shared by every asset first seen in the same pass.
    first_seen: Arc<str>,
    /// The resync that last listed it (the NOT-IN diff without a set).
    epoch: u32,
    alerts: Vec<OpenAlert>,
}

/// FNV-1a 64: stable across processes and versions (the hash is stored in
/// the inventory document and compared after a restart).
pub fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in bytes {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

/// FNV-1a as an `io::Write`: the asset is hashed as it serializes, with
/// no buffer.
struct Fnv(u64);

impl std::io::Write for Fnv {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        for byte in bytes {
            self.0 ^= u64::from(*byte);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Bump when a check's logic changes: stored hashes then no longer match
/// and every asset is audited again after the upgrade.
pub const AUDIT_VERSION: u32 = 1;

/// What the audit of an unchanged asset depends on besides the asset: the
/// audits' version and the config (level, checks, exemptions).
fn config_fingerprint(config: &PostureConfig) -> u64 {
    fnv1a(format!("{AUDIT_VERSION}\n{}", serde_json::to_string(config).expect("a config serializes")).as_bytes())
}

fn hash_with(seed: u64, asset: &Asset) -> u64 {
    let mut hasher = Fnv(seed);
    serde_json::to_writer(&mut hasher, asset).expect("an asset serializes");
    hasher.0
}

/// The hash stored with an asset: its lean JSON form, seeded with the
/// config's fingerprint, so a new config or audit version re-audits every
/// asset once instead of skipping it as unchanged.
pub fn content_hash(config: &PostureConfig, asset: &Asset) -> u64 {
    hash_with(config_fingerprint(config), asset)
}

/// Run the config's active checks on `asset`, minus exemptions.
pub fn audit(config: &PostureConfig, checks: &[&'static Check], asset: &Asset) -> Vec<Finding> {
    // A pod run by a controller is audited through the controller's
    // template (one alert per workload, not per replica); likewise a
    // ReplicaSet of a Deployment and a Job of a CronJob.
    // Only a `controller: true` owner of a kind whose template is audited
    // counts: an owner reference anyone can add must not hide a pod, nor
    // may a controller the engine does not watch. Its apiVersion must be
    // the served one: the garbage collector deletes a pod whose controller
    // of a served version does not exist, but keeps one that names a
    // version it cannot resolve.
    let by = |controllers: &[(&str, &str)]| {
        asset.owner.as_ref().is_some_and(|o| {
            o.controller && controllers.iter().any(|(api, kind)| o.api_version == *api && o.kind == *kind)
        })
    };
    let controlled = match asset.kind {
        Kind::Pod => {
            by(&[("apps/v1", "ReplicaSet"), ("apps/v1", "DaemonSet"), ("apps/v1", "StatefulSet"), ("batch/v1", "Job")])
        }
        Kind::ReplicaSet => by(&[("apps/v1", "Deployment")]),
        Kind::Job => by(&[("batch/v1", "CronJob")]),
        _ => false,
    };
    // A controlled pod's template is audited on its workload; what it adds
    // on its own are ephemeral (`kubectl debug`) containers.
    let ephemeral: Vec<&str> = match (&asset.pod, controlled) {
        (Some(p), true) => p.containers.iter().filter(|c| c.ephemeral).map(|c| c.name.as_str()).collect(),
        _ => vec![],
    };
    if controlled && ephemeral.is_empty() {
        return vec![];
    }
    let mut findings = vec![];
    for check in checks {
        if config.exempt(asset, check.id) {
            continue;
        }
        for v in (check.eval)(asset) {
            if controlled && !v.container.as_deref().is_some_and(|c| ephemeral.contains(&c)) {
                continue;
            }
            findings.push(Finding { check, container: v.container, evidence: v.evidence });
        }
    }
    findings
}

/// The engine's memory of what the indices hold.
pub struct Posture {
    cluster: String,
    config: PostureConfig,
    checks: Vec<&'static Check>,
    /// Seeds every content hash (see [`content_hash`]).
    fingerprint: u64,
    tracked: HashMap<String, Tracked>,
    /// Per kind: the number of the current (or last) full list.
    epochs: [u32; Kind::ALL.len()],
    /// The `now` of the current pass, shared by the assets it creates.
    now: Arc<str>,
}

/// Counters of one pass, for logs, metrics and the benchmark.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pass {
    pub seen: usize,
    pub unchanged: usize,
    pub created: usize,
    pub changed: usize,
    pub deleted: usize,
    pub alerts_opened: usize,
    pub alerts_resolved: usize,
}

impl Posture {
    pub fn new(cluster: &str, config: PostureConfig) -> Self {
        let checks = config.active();
        let fingerprint = config_fingerprint(&config);
        Self {
            cluster: cluster.to_string(),
            config,
            checks,
            fingerprint,
            tracked: HashMap::new(),
            epochs: [0; Kind::ALL.len()],
            now: Arc::from(""),
        }
    }

    pub fn tracked(&self) -> usize {
        self.tracked.len()
    }

    pub fn open_alerts(&self) -> usize {
        self.tracked.values().map(|t| t.alerts.len()).sum()
    }

    /// One document per occurrence: (cluster, resource, check, container)
    /// and when it opened, so a problem that comes back after it was
    /// resolved gets a new document and the earlier evidence stays.
    fn alert_id(&self, uid: &str, check: &str, container: Option<&str>, first_seen: &str) -> String {
        format!(
            "{:016x}",
            fnv1a(format!("{}\0{uid}\0{check}\0{}\0{first_seen}", self.cluster, container.unwrap_or("")).as_bytes())
        )
    }

    fn inventory_id(&self, uid: &str) -> String {
        format!("{:016x}", fnv1a(format!("{}\0{uid}", self.cluster).as_bytes()))
    }

    /// An added or modified asset (a watch event, or one of a re-list).
    pub fn apply(&mut self, asset: &Asset, now: &str, writes: &mut Vec<Write>, pass: &mut Pass) {
        pass.seen += 1;
        let hash = hash_with(self.fingerprint, asset);
        let epoch = self.epochs[asset.kind as usize];
        if let Some(t) = self.tracked.get_mut(&asset.uid) {
            t.epoch = epoch;
            if t.hash == hash {
                pass.unchanged += 1;
                return;
            }
        }
        if &*self.now != now {
            self.now = Arc::from(now);
        }
        let first_seen = self.tracked.get(&asset.uid).map_or_else(|| self.now.clone(), |t| t.first_seen.clone());
        let (event_type, before) = match self.tracked.remove(&asset.uid) {
            Some(t) => {
                pass.changed += 1;
                ("change", t.alerts)
            }
            None => {
                pass.created += 1;
                ("creation", vec![])
            }
        };
        writes.push(Write::Index {
            target: Target::Inventory,
            id: self.inventory_id(&asset.uid),
            doc: self.asset_doc(asset, hash, &first_seen, now, event_type),
            uid: asset.uid.clone(),
        });

        // Alerts: open new ones, refresh changed evidence, resolve fixed ones.
        let mut alerts = vec![];
        for finding in audit(&self.config, &self.checks, asset) {
            let evidence_hash = fnv1a(finding.evidence.to_string().as_bytes());
            let known = before.iter().find(|a| a.check == finding.check.id && a.container == finding.container);
            let first = known.map_or_else(|| self.now.clone(), |a| a.first_seen.clone());
            if known.is_none_or(|a| a.evidence_hash != evidence_hash) {
                if known.is_none() {
                    pass.alerts_opened += 1;
                }
                let id = self.alert_id(&asset.uid, finding.check.id, finding.container.as_deref(), &first);
                let doc = self.alert_doc(asset, &finding, &id, evidence_hash, &first, now);
                writes.push(Write::Index { target: Target::Events, id, doc, uid: asset.uid.clone() });
            }
            alerts.push(OpenAlert {
                check: finding.check.id,
                container: finding.container,
                first_seen: first,
                evidence_hash,
            });
        }
        for gone in before.iter().filter(|b| !alerts.iter().any(|a| a.check == b.check && a.container == b.container)) {
            pass.alerts_resolved += 1;
            writes.push(self.resolve(&asset.uid, gone, now, "fixed"));
        }
        self.tracked.insert(asset.uid.clone(), Tracked { kind: asset.kind, hash, first_seen, epoch, alerts });
    }

    /// A deleted asset: marked deleted in the inventory, its alerts
    /// resolved (their documents, evidence included, stay).
    pub fn delete(&mut self, uid: &str, now: &str, writes: &mut Vec<Write>, pass: &mut Pass) {
        let Some(tracked) = self.tracked.remove(uid) else { return };
        pass.deleted += 1;
        writes.push(Write::Update {
            target: Target::Inventory,
            id: self.inventory_id(uid),
            doc: json!({ "@timestamp": now, "event": { "type": "deletion" }, "asset": { "state": "deleted", "last_seen": now } }),
            uid: uid.to_string(),
        });
        for alert in &tracked.alerts {
            pass.alerts_resolved += 1;
            writes.push(self.resolve(uid, alert, now, "resource deleted"));
        }
    }

    /// A write about `uid` was rejected: forget its hash, so the next event
    /// or list of the asset writes it (and its alerts) again.
    pub fn invalidate(&mut self, uid: &str) {
        if let Some(t) = self.tracked.get_mut(uid) {
            t.hash = 0;
        }
    }

    /// Start a full list of `kinds` (a resync, or a watch's re-list after
    /// 410 Gone): their assets applied from now on count as listed.
    pub fn begin_list(&mut self, kinds: &[Kind]) {
        for kind in kinds {
            self.epochs[*kind as usize] = self.epochs[*kind as usize].wrapping_add(1);
        }
    }

    /// End a full list of `kinds`: the tracked assets of those kinds that
    /// it did not contain are deleted (the NOT-IN diff). Other kinds are
    /// untouched: a re-list of pods says nothing about services.
    pub fn end_list(&mut self, kinds: &[Kind], now: &str, writes: &mut Vec<Write>, pass: &mut Pass) {
        let missing: Vec<String> = self
            .tracked
            .iter()
            .filter(|(_, t)| kinds.contains(&t.kind) && t.epoch != self.epochs[t.kind as usize])
            .map(|(uid, _)| uid.clone())
            .collect();
        for uid in missing {
            self.delete(&uid, now, writes, pass);
        }
    }

    /// What the indices already hold, read back after a restart, so the
    /// first list writes only what changed meanwhile.
    pub fn restore_asset(&mut self, uid: &str, kind: Kind, hash: u64, first_seen: &str) {
        let epoch = self.epochs[kind as usize];
        self.tracked
            .insert(uid.to_string(), Tracked { kind, hash, first_seen: Arc::from(first_seen), epoch, alerts: vec![] });
    }

    /// An open alert read back after a restart (its asset restored first).
    /// One whose asset is not active any more (its deletion was written but
    /// not the resolution) is resolved now: the returned write.
    pub fn restore_alert(
        &mut self,
        uid: &str,
        check: &str,
        container: Option<&str>,
        first_seen: &str,
        evidence_hash: u64,
        now: &str,
    ) -> Option<Write> {
        let alert = OpenAlert {
            check: crate::audits::check(check).map_or("unknown", |c| c.id),
            container: container.map(str::to_string),
            first_seen: Arc::from(first_seen),
            evidence_hash,
        };
        match self.tracked.get_mut(uid) {
            Some(t) if alert.check != "unknown" => {
                t.alerts.push(alert);
                None
            }
            // A check that no longer exists, or an asset that is gone.
            _ => Some(Write::Update {
                target: Target::Events,
                id: self.alert_id(uid, check, container, first_seen),
                doc: json!({ "finding": { "status": "resolved", "resolved_at": now, "last_seen": now }, "posture": { "resolution": if self.tracked.contains_key(uid) { "check removed" } else { "resource deleted" } } }),
                uid: uid.to_string(),
            }),
        }
    }

    /// A full list of `kinds` in one call: `begin_list`, apply each, `end_list`.
    pub fn resync<'a>(
        &mut self,
        kinds: &[Kind],
        listed: impl IntoIterator<Item = &'a Asset>,
        now: &str,
    ) -> (Vec<Write>, Pass) {
        let (mut writes, mut pass) = (vec![], Pass::default());
        self.begin_list(kinds);
        for asset in listed {
            self.apply(asset, now, &mut writes, &mut pass);
        }
        self.end_list(kinds, now, &mut writes, &mut pass);
        (writes, pass)
    }

    fn resolve(&self, uid: &str, alert: &OpenAlert, now: &str, why: &str) -> Write {
        Write::Update {
            target: Target::Events,
            id: self.alert_id(uid, alert.check, alert.container.as_deref(), &alert.first_seen),
            doc: json!({ "finding": { "status": "resolved", "resolved_at": now, "last_seen": now }, "posture": { "resolution": why } }),
            uid: uid.to_string(),
        }
    }

    fn asset_doc(&self, asset: &Asset, hash: u64, first_seen: &str, now: &str, event_type: &str) -> Value {
        json!({
            "@timestamp": now,
            // Severity 1: an asset is information (the CTEM report expects
            // a 1–5 severity and a tool label on every document).
            "event": { "kind": "asset", "category": ["configuration"], "type": event_type, "dataset": "posture.inventory", "module": "posture", "severity": 1 },
            "labels": { "security_tool": "posture" },
            "orchestrator": { "cluster": { "name": self.cluster }, "resource": { "type": asset.kind.name(), "name": asset.name } },
            "asset": {
                "kind": asset.kind.name(),
                "name": asset.name,
                "namespace": asset.namespace,
                "uid": asset.uid,
                "labels": asset.labels,
                "images": asset.images,
                "node": asset.node,
                "owner": asset.owner.as_ref().map(|o| format!("{}/{}", o.kind, o.name)),
                "first_seen": first_seen,
                "last_seen": now,
                "state": "active",
                "hash": format!("{hash:016x}"),
            },
        })
    }

    fn alert_doc(
        &self,
        asset: &Asset,
        finding: &Finding,
        id: &str,
        evidence_hash: u64,
        first_seen: &str,
        now: &str,
    ) -> Value {
        let check = finding.check;
        let ruleset = match check.pss {
            Some(crate::audits::Level::Baseline) => "pss-baseline",
            Some(crate::audits::Level::Restricted) => "pss-restricted",
            None => "kubernetes-hygiene",
        };
        let pod = (asset.kind == Kind::Pod).then(|| json!({ "name": asset.name, "uid": asset.uid }));
        let namespace = asset.namespace.as_deref().map(|n| format!("{n}/")).unwrap_or_default();
        let container = finding.container.as_deref().map(|c| format!(", container {c}")).unwrap_or_default();
        // Labels are left out: their dotted keys would clash as object
        // paths in a keyword mapping (the inventory keeps them, flattened).
        json!({
            "@timestamp": now,
            "event": { "kind": "alert", "category": ["configuration"], "type": ["info"], "dataset": "posture.audit", "module": "posture", "severity": check.severity },
            "labels": { "security_tool": "posture" },
            "rule": { "id": check.id, "name": check.title, "ruleset": ruleset, "category": "security-context" },
            "threat": { "framework": "MITRE ATT&CK", "technique": { "id": [check.mitre] } },
            "orchestrator": { "cluster": { "name": self.cluster }, "namespace": asset.namespace, "resource": { "type": asset.kind.name(), "name": asset.name } },
            "kubernetes": {
                "namespace": asset.namespace,
                "pod": pod,
                "node": asset.node.as_ref().map(|n| json!({ "name": n })),
                "resource": { "kind": asset.kind.name(), "name": asset.name, "uid": asset.uid },
            },
            "container": finding.container.as_ref().map(|c| json!({ "name": c })),
            "message": format!("{}: {} {namespace}{}{container}", check.title, asset.kind.name(), asset.name),
            "finding": { "id": id, "status": "open", "first_seen": first_seen, "last_seen": now, "resolved_at": null },
            "evidence": finding.evidence,
            "posture": { "remediation": check.remediation, "evidence_hash": format!("{evidence_hash:016x}") },
        })
    }
}
