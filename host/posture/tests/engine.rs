//! The posture engine on the checked-in snapshot and on small edits of it:
//! audits, exemptions, dirty checking, the NOT-IN diff, and alerts that
//! are resolved (not dropped) when their resource goes.

use std::collections::BTreeSet;

use secop_posture::config::PostureConfig;
use secop_posture::engine::{Target, Write};
use secop_posture::model::{Asset, Kind};
use secop_posture::{Posture, audit, snapshot};
use serde_json::{Value, json};

fn fixture() -> Vec<Asset> {
    let text =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../test/fixtures/posture/snapshot.json"))
            .unwrap();
    snapshot(&text).unwrap()
}

fn findings(config: &PostureConfig, assets: &[Asset]) -> BTreeSet<(String, String, Option<String>)> {
    let checks = config.active();
    assets
        .iter()
        .flat_map(|a| {
            audit(config, &checks, a).into_iter().map(move |f| (f.check.id.to_string(), a.name.clone(), f.container))
        })
        .collect()
}

fn ids(found: &BTreeSet<(String, String, Option<String>)>, name: &str) -> Vec<String> {
    found.iter().filter(|(_, n, _)| n == name).map(|(id, _, _)| id.clone()).collect()
}

#[test]
fn the_plans_risky_pod_raises_exactly_its_three_alerts() {
    let found = findings(&PostureConfig::default(), &fixture());
    assert_eq!(ids(&found, "risky-pod"), ["K8S-01", "PSS-B-02", "PSS-R-04"], "default namespace, privileged, root");
}

#[test]
fn the_snapshot_yields_the_expected_findings_and_nothing_from_exempt_or_controlled_resources() {
    let found = findings(&PostureConfig::default(), &fixture());
    assert_eq!(ids(&found, "log-shipper"), ["K8S-03", "PSS-B-01", "PSS-B-03", "PSS-B-04"]);
    assert_eq!(ids(&found, "report"), ["PSS-B-09"]);
    assert_eq!(ids(&found, "ci-admin"), ["RBAC-01"]);
    assert_eq!(ids(&found, "everything"), ["RBAC-02"]);
    assert_eq!(ids(&found, "debugger"), ["RBAC-03"]);
    // Compliant, controlled by a workload, exempt, or the system's own.
    for quiet in ["web", "web-6d8f", "web-6d8f-abcde", "kube-proxy-x1", "system:controller:foo"] {
        assert!(ids(&found, quiet).is_empty(), "{quiet}: {:?}", ids(&found, quiet));
    }
    // Without the default exemptions the kube-system pod is reported.
    let no_exemptions = PostureConfig { exemptions: vec![], ..Default::default() };
    assert_eq!(ids(&findings(&no_exemptions, &fixture()), "kube-proxy-x1"), ["PSS-B-01", "PSS-B-02"]);
}

#[test]
fn restricted_level_adds_its_checks_and_the_compliant_workload_still_passes() {
    let restricted = PostureConfig::parse(r#"{"level": "restricted"}"#).unwrap();
    let found = findings(&restricted, &fixture());
    assert!(ids(&found, "web").is_empty(), "{:?}", ids(&found, "web"));
    let risky = ids(&found, "risky-pod");
    for id in ["PSS-R-02", "PSS-R-03", "PSS-R-05", "PSS-R-06"] {
        assert!(risky.contains(&id.to_string()), "{id} in {risky:?}");
    }
    assert!(!risky.contains(&"K8S-02".to_string()), "the risky pod does not automount its token");
    assert!(ids(&found, "report").contains(&"K8S-02".to_string()), "the CronJob does");
}

#[test]
fn every_check_fires_on_some_resource() {
    // A pod that breaks every pod-level rule, plus the snapshot's RBAC.
    let worst = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": { "name": "worst", "namespace": "default", "uid": "uid-worst",
            "annotations": { "container.apparmor.security.beta.kubernetes.io/c": "unconfined" } },
        "spec": {
            "hostPID": true,
            "securityContext": { "sysctls": [{ "name": "kernel.msgmax", "value": "1" }], "seLinuxOptions": { "user": "system_u" } },
            "volumes": [{ "name": "sock", "hostPath": { "path": "/var/run/docker.sock" } }],
            "containers": [{ "name": "c", "image": "x", "ports": [{ "containerPort": 80, "hostPort": 80 }],
                "securityContext": { "privileged": true, "runAsUser": 0, "procMount": "Unmasked",
                    "seccompProfile": { "type": "Unconfined" }, "capabilities": { "add": ["NET_ADMIN"] } } }]
        }
    });
    let windows = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": { "name": "win", "namespace": "shop", "uid": "uid-win" },
        "spec": { "os": { "name": "windows" }, "securityContext": { "windowsOptions": { "hostProcess": true } }, "hostNetwork": true,
            "containers": [{ "name": "w", "image": "mcr.microsoft.com/windows/nanoserver:ltsc2022" }] }
    });
    let mut assets = fixture();
    assets.push(secop_posture::model::parse(&worst).unwrap());
    assets.push(secop_posture::model::parse(&windows).unwrap());
    // Windows pods are exempt from the Linux-only restricted checks.
    let restricted_all =
        PostureConfig { level: secop_posture::audits::Level::Restricted, exemptions: vec![], ..Default::default() };
    let on_windows = ids(&findings(&restricted_all, &assets), "win");
    for linux_only in ["PSS-R-02", "PSS-R-05", "PSS-R-06"] {
        assert!(!on_windows.contains(&linux_only.to_string()), "{linux_only} on a Windows pod: {on_windows:?}");
    }
    let restricted =
        PostureConfig { level: secop_posture::audits::Level::Restricted, exemptions: vec![], ..Default::default() };
    let fired: BTreeSet<String> = findings(&restricted, &assets).into_iter().map(|(id, _, _)| id).collect();
    let all: BTreeSet<String> = secop_posture::audits::CHECKS.iter().map(|c| c.id.to_string()).collect();
    assert_eq!(fired, all);
}

#[test]
fn bad_config_names_the_field() {
    assert_eq!(PostureConfig::parse(r#"{"disable": ["PSS-B-02", "NOPE"]}"#).unwrap_err().field, "disable[1]");
    assert_eq!(PostureConfig::parse(r#"{"exemptions": [{"reason": "x"}]}"#).unwrap_err().field, "exemptions[0]");
    assert_eq!(
        PostureConfig::parse(r#"{"exemptions": [{"namespaces": ["a"], "checks": ["X"]}]}"#).unwrap_err().field,
        "exemptions[0].checks[0]"
    );
    let unknown = PostureConfig::parse(r#"{"levle": "restricted"}"#).unwrap_err();
    assert!(unknown.message.contains("levle"), "{unknown}");
    let exempted = PostureConfig::parse(r#"{"exemptions": [{"namespaces": ["def*"], "checks": ["K8S-01"]}]}"#).unwrap();
    assert_eq!(
        ids(&findings(&exempted, &fixture()), "risky-pod"),
        ["PSS-R-04", "PSS-B-02"].iter().rev().map(|s| s.to_string()).collect::<Vec<_>>()
    );
}

fn count(writes: &[Write], target: Target) -> usize {
    writes.iter().filter(|w| w.target() == target).count()
}

fn doc(writes: &[Write], target: Target, pred: impl Fn(&Value) -> bool) -> Vec<&Value> {
    writes
        .iter()
        .filter(|w| w.target() == target)
        .map(|w| match w {
            Write::Index { doc, .. } | Write::Update { doc, .. } => doc,
        })
        .filter(|d| pred(d))
        .collect()
}

#[test]
fn an_unchanged_resync_writes_nothing_and_a_change_writes_only_that_asset() {
    let assets = fixture();
    let mut posture = Posture::new("test", PostureConfig::default());
    let (writes, pass) = posture.resync(&Kind::ALL, &assets, "2026-11-24T10:00:00Z");
    assert_eq!(count(&writes, Target::Inventory), assets.len(), "first pass: every asset");
    assert_eq!(pass.alerts_opened, 11);
    assert_eq!(count(&writes, Target::Events), 11);

    let (writes, pass) = posture.resync(&Kind::ALL, &assets, "2026-11-24T10:05:00Z");
    assert!(writes.is_empty(), "unchanged resync wrote {writes:?}");
    assert_eq!(pass.unchanged, assets.len());

    // Relabel the service: one inventory document, no alert.
    let mut changed = assets.clone();
    changed.iter_mut().find(|a| a.kind == Kind::Service).unwrap().labels.insert("tier".into(), "front".into());
    let (writes, pass) = posture.resync(&Kind::ALL, &changed, "2026-11-24T10:10:00Z");
    assert_eq!((writes.len(), pass.changed), (1, 1));
    let service = doc(&writes, Target::Inventory, |_| true)[0];
    assert_eq!(service["asset"]["first_seen"], "2026-11-24T10:00:00Z", "first_seen kept");
    assert_eq!(service["asset"]["last_seen"], "2026-11-24T10:10:00Z");
    assert_eq!(service["event"]["type"], "change");
    assert_eq!(
        (service["labels"]["security_tool"].as_str(), service["event"]["severity"].as_u64()),
        (Some("posture"), Some(1)),
        "what the CTEM report's ROUTING and SEVERITY checks read"
    );
}

#[test]
fn a_deleted_pod_is_marked_deleted_and_its_alerts_resolved_with_their_evidence() {
    let assets = fixture();
    let mut posture = Posture::new("test", PostureConfig::default());
    let (first, _) = posture.resync(&Kind::ALL, &assets, "t1");
    let risky_alerts = doc(&first, Target::Events, |d| d["kubernetes"]["resource"]["name"] == "risky-pod");
    assert_eq!(risky_alerts.len(), 3);
    let privileged = risky_alerts.iter().find(|d| d["rule"]["id"] == "PSS-B-02").unwrap();
    assert_eq!(privileged["finding"]["status"], "open");
    assert_eq!(privileged["event"]["severity"], 5);
    assert_eq!(privileged["container"]["name"], "risky");
    assert_eq!(privileged["kubernetes"]["pod"]["name"], "risky-pod");
    assert_eq!(privileged["evidence"], json!({ "securityContext": { "privileged": true } }));

    // Re-list of pods without the risky pod: NOT IN → deleted, 3 resolved.
    let pods: Vec<&Asset> = assets.iter().filter(|a| a.kind == Kind::Pod && a.name != "risky-pod").collect();
    assert_eq!(pods.len(), 2);
    let (writes, pass) = posture.resync(&[Kind::Pod], pods, "t2");
    assert_eq!((pass.deleted, pass.alerts_resolved), (1, 3));
    let deleted = doc(&writes, Target::Inventory, |_| true);
    assert_eq!(deleted.len(), 1, "only the pod; other kinds were not re-listed");
    assert_eq!(deleted[0]["asset"], json!({ "state": "deleted", "last_seen": "t2" }));
    let resolved = doc(&writes, Target::Events, |_| true);
    assert!(
        resolved
            .iter()
            .all(|d| d["finding"]["status"] == "resolved" && d["posture"]["resolution"] == "resource deleted")
    );
    // Resolution is a partial update of the same documents: the evidence stays.
    let opened: BTreeSet<&str> = first.iter().filter(|w| w.target() == Target::Events).map(Write::id).collect();
    assert!(
        writes
            .iter()
            .filter(|w| w.target() == Target::Events)
            .all(|w| matches!(w, Write::Update { .. }) && opened.contains(w.id()))
    );
    assert_eq!(posture.open_alerts(), 8);
}

#[test]
fn fixing_the_pod_resolves_only_the_fixed_alert() {
    let mut assets = fixture();
    let mut posture = Posture::new("test", PostureConfig::default());
    posture.resync(&Kind::ALL, &assets, "t1");
    let risky = assets.iter_mut().find(|a| a.name == "risky-pod").unwrap();
    risky.pod.as_mut().unwrap().containers[0].privileged = Some(false);
    let (writes, pass) = posture.resync(&Kind::ALL, &assets, "t2");
    assert_eq!((pass.changed, pass.alerts_resolved, pass.alerts_opened), (1, 1, 0));
    let resolved = doc(&writes, Target::Events, |_| true);
    assert_eq!(resolved.len(), 1);
    assert_eq!(resolved[0]["posture"]["resolution"], "fixed");
}

#[test]
fn an_owner_reference_alone_does_not_hide_a_pod_but_a_controller_does_except_for_debug_containers() {
    let pod = |owner: Value, ephemeral: bool| {
        let mut p = json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": { "name": "p", "namespace": "shop", "uid": "uid-p", "ownerReferences": [owner] },
            "spec": { "containers": [{ "name": "app", "image": "x", "securityContext": { "privileged": true } }] }
        });
        if ephemeral {
            p["spec"]["ephemeralContainers"] =
                json!([{ "name": "debugger", "image": "busybox", "securityContext": { "privileged": true } }]);
        }
        secop_posture::model::parse(&p).unwrap()
    };
    let config = PostureConfig::default();
    let found = |a: &Asset| {
        findings(&config, std::slice::from_ref(a))
            .into_iter()
            .map(|(id, _, c)| format!("{id}/{}", c.unwrap_or_default()))
            .collect::<Vec<_>>()
    };
    let by_replicaset = json!({ "apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "rs", "controller": true });
    assert!(found(&pod(by_replicaset.clone(), false)).is_empty(), "audited through its workload");
    assert_eq!(
        found(&pod(json!({ "apiVersion": "apps/v0", "kind": "ReplicaSet", "name": "rs", "controller": true }), false)),
        ["PSS-B-02/app"],
        "a version the API server does not serve (the garbage collector keeps such a pod)"
    );
    assert_eq!(
        found(&pod(json!({ "kind": "ConfigMap", "name": "cm" }), false)),
        ["PSS-B-02/app"],
        "a plain owner reference hides nothing"
    );
    assert_eq!(
        found(&pod(json!({ "kind": "Workflow", "name": "argo", "controller": true }), false)),
        ["PSS-B-02/app"],
        "a controller the engine does not watch"
    );
    assert_eq!(found(&pod(by_replicaset, true)), ["PSS-B-02/debugger"], "kubectl debug adds what the template lacks");
}

#[test]
fn a_config_change_re_audits_unchanged_assets() {
    let assets = fixture();
    let mut posture = Posture::new("test", PostureConfig::default());
    posture.resync(&Kind::ALL, &assets, "t1");
    // The same resources under another config: a new engine restored from
    // the indices (as after the feature's rollout) must not skip them.
    let mut restarted = Posture::new("test", PostureConfig::parse(r#"{"disable": ["K8S-01"]}"#).unwrap());
    for a in &assets {
        restarted.restore_asset(
            &a.uid,
            a.kind,
            secop_posture::engine::content_hash(&PostureConfig::default(), a),
            "t1",
        );
    }
    let (writes, pass) = restarted.resync(&Kind::ALL, &assets, "t2");
    assert_eq!(pass.unchanged, 0, "every asset is re-audited under the new config");
    assert!(!writes.is_empty());
}

#[test]
fn lean_parse_drops_what_no_audit_needs() {
    let assets = fixture();
    let risky = assets.iter().find(|a| a.name == "risky-pod").unwrap();
    let kept = serde_json::to_string(risky).unwrap();
    assert!(
        !kept.contains("managedFields") && !kept.contains("resourceVersion") && !kept.contains("Running"),
        "{kept}"
    );
    assert_eq!(risky.node.as_deref(), Some("node-1"));
    assert_eq!(risky.images, ["nginx:1.27"]);
    assert!(!assets.iter().any(|a| a.name == "settings"), "ConfigMaps are not kept");
}
