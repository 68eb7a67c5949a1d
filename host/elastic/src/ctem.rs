//! The CTEM checklist (docs/seed-deviations.md, §7.2) as queries against the three
//! indices: what `secop ctem-report` prints and what the data-path tests
//! assert. One place says what "SCOPE-02 passes" means, so the report a
//! user reads and the test CI runs cannot drift apart.
//!
//! Every check is a handful of `_count`/`_search` requests; nothing is
//! written. A check that the indices alone cannot answer says so
//! (`NotChecked`) instead of passing.

use std::collections::{BTreeMap, BTreeSet};

use reqwest::Method;
use serde::Serialize;
use serde_json::{Value, json};

use crate::{Elastic, Error};

/// Where the documents are, and what to look for.
#[derive(Debug, Clone)]
pub struct Scope {
    pub inventory: String,
    pub events: String,
    pub vulnerabilities: String,
    /// Namespace of the sensors themselves: a runtime event attributed to a
    /// pod there names the sensor, not the subject (VAL-05).
    pub sensor_namespace: String,
    /// Only documents with `@timestamp` at or after this (an Elasticsearch
    /// date or date math such as `now-15m`); all of them when `None`.
    pub since: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Outcome {
    Pass,
    Fail,
    /// The indices cannot answer this (no such data yet, or it needs the cluster).
    NotChecked,
}

impl Outcome {
    pub fn label(self) -> &'static str {
        match self {
            Outcome::Pass => "PASS",
            Outcome::Fail => "FAIL",
            Outcome::NotChecked => "N/A",
        }
    }
}

/// One row of the checklist.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub id: &'static str,
    pub title: &'static str,
    pub outcome: Outcome,
    /// What was found, in a sentence; says what is missing on failure.
    pub detail: String,
    /// The counts behind the outcome, by name (for tests and dashboards).
    pub figures: BTreeMap<&'static str, u64>,
}

/// What shows that a tool saw a scenario: a document in the scenario's
/// index that matches. Data, not closures, so that a test can hold the
/// matrix against the rendered configuration (every Falco rule and
/// TracingPolicy cited here must be loaded by the shipped sample).
#[derive(Debug, Clone, Copy)]
pub enum Signal {
    /// An alert of any of these Falco rules.
    FalcoRule(&'static [&'static str]),
    /// A Tetragon exec of any of these binaries, in a pod.
    TetragonExec(&'static [&'static str]),
    /// A Tetragon exec of an HTTP client (curl, or busybox's wget), in a pod.
    TetragonHttpClient,
    /// A Tetragon kprobe event of this TracingPolicy.
    TetragonPolicy(&'static str),
    /// An osquery row of this query.
    OsqueryQuery(&'static str),
}

impl Signal {
    pub fn tool(self) -> &'static str {
        match self {
            Signal::FalcoRule(_) => "falco",
            Signal::TetragonExec(_) | Signal::TetragonHttpClient | Signal::TetragonPolicy(_) => "tetragon",
            Signal::OsqueryQuery(_) => "osquery",
        }
    }

    /// The query (a bool filter) that finds this signal's documents.
    pub fn query(self) -> Value {
        let of_tool = tool(self.tool());
        match self {
            Signal::FalcoRule(rules) => and(&[of_tool, terms("rule.name", rules)]),
            Signal::TetragonExec(binaries) => {
                and(&[of_tool, terms("process.executable", binaries), exists("kubernetes.pod.name")])
            }
            Signal::TetragonHttpClient => and(&[of_tool, http_client(), exists("kubernetes.pod.name")]),
            Signal::TetragonPolicy(policy) => and(&[of_tool, term("rule.ruleset", policy)]),
            Signal::OsqueryQuery(name) => and(&[of_tool, term("osquery.query_name", name)]),
        }
    }
}

/// Which of the CTEM indices a scenario's detections land in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IndexRole {
    Inventory,
    Events,
}

impl IndexRole {
    fn of(self, scope: &Scope) -> &str {
        match self {
            IndexRole::Inventory => &scope.inventory,
            IndexRole::Events => &scope.events,
        }
    }
}

/// A MITRE ATT&CK scenario of test/scenarios/README.md and its signals. A
/// scenario counts as detected when any signal has a document; which tools
/// saw it is in the detail.
#[derive(Debug)]
pub struct Scenario {
    /// The name `spec.tests.scenarios` uses (secop_api::VALIDATION_SCENARIOS).
    pub id: &'static str,
    pub name: &'static str,
    pub index: IndexRole,
    pub signals: &'static [Signal],
}

/// The scenario `spec.tests.scenarios` calls `id`.
pub fn scenario(id: &str) -> Option<&'static Scenario> {
    SCENARIOS.iter().find(|s| s.id == id)
}

/// The detection matrix (docs/ctem-mapping-results.md): per scenario, the
/// rule or policy of each tool that fires with the shipped defaults.
pub const SCENARIOS: &[Scenario] = &[
    Scenario {
        id: "scope-inventory",
        name: "A Scope inventory",
        index: IndexRole::Inventory,
        signals: &[Signal::OsqueryQuery("system_info")],
    },
    Scenario {
        id: "validate-shell",
        name: "B T1059.004 Unix shell",
        index: IndexRole::Events,
        signals: &[
            Signal::FalcoRule(&["Terminal shell in container"]),
            Signal::TetragonExec(&["/bin/sh", "/bin/bash", "/bin/ash", "/bin/busybox"]),
        ],
    },
    Scenario {
        id: "validate-k8s-api",
        name: "C T1552.001 credentials + K8s API",
        index: IndexRole::Events,
        signals: &[
            Signal::FalcoRule(&["Read service account token in container", "Contact K8S API Server From Container"]),
            Signal::TetragonHttpClient,
        ],
    },
    Scenario {
        id: "validate-container-escape",
        name: "D T1611 container escape",
        index: IndexRole::Events,
        signals: &[Signal::FalcoRule(&["Change thread namespace"]), Signal::TetragonPolicy("container-escape-monitor")],
    },
    Scenario {
        id: "validate-cron-persistence",
        name: "E T1053.003 cron persistence",
        index: IndexRole::Events,
        signals: &[Signal::FalcoRule(&["Schedule Cron Jobs"]), Signal::TetragonPolicy("cron-persistence-monitor")],
    },
];

fn term(field: &str, value: &str) -> Value {
    json!({ "term": { field: value } })
}

fn terms(field: &str, values: &[&str]) -> Value {
    json!({ "terms": { field: values } })
}

fn exists(field: &str) -> Value {
    json!({ "exists": { "field": field } })
}

fn tool(name: &str) -> Value {
    term("labels.security_tool", name)
}

/// An exec of an HTTP client: curl, or busybox's wget where an image has no
/// curl (scenario C in test/scenarios runs curl; busybox-based pods have wget).
fn http_client() -> Value {
    json!({ "regexp": { "process.executable": ".*/(curl|wget)" } })
}

fn and(filters: &[Value]) -> Value {
    json!({ "bool": { "filter": filters } })
}

fn not(filters: &[Value]) -> Value {
    json!({ "bool": { "must_not": filters } })
}

/// Queries within the scope's time window.
struct Queries<'a> {
    es: &'a Elastic,
    scope: &'a Scope,
}

impl Queries<'_> {
    fn windowed(&self, query: Value) -> Value {
        match &self.scope.since {
            Some(since) => and(&[query, json!({ "range": { "@timestamp": { "gte": since } } })]),
            None => query,
        }
    }

    async fn count(&self, index: &str, query: Value) -> Result<u64, Error> {
        let body = json!({ "query": self.windowed(query) });
        let answer = self.es.ok(Method::POST, &format!("{index}/_count?ignore_unavailable=true"), Some(&body)).await?;
        Ok(answer["count"].as_u64().unwrap_or(0))
    }

    /// Bucket keys of a terms aggregation on `field`, with doc counts.
    async fn terms(&self, index: &str, query: Value, field: &str) -> Result<BTreeMap<String, u64>, Error> {
        let body = json!({ "size": 0, "query": self.windowed(query), "aggs": { "t": { "terms": { "field": field, "size": 1000 } } } });
        let answer = self.es.ok(Method::POST, &format!("{index}/_search?ignore_unavailable=true"), Some(&body)).await?;
        Ok(answer["aggregations"]["t"]["buckets"]
            .as_array()
            .map(|buckets| {
                buckets
                    .iter()
                    .map(|b| {
                        (
                            b["key"].as_str().map(str::to_string).unwrap_or_else(|| b["key"].to_string()),
                            b["doc_count"].as_u64().unwrap_or(0),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default())
    }

    /// For each `outer` bucket, the `inner` keys: one request, however
    /// many buckets (SCOPE-04 compares kernels over every node).
    async fn terms_by(
        &self,
        index: &str,
        query: Value,
        outer: &str,
        inner: &str,
    ) -> Result<BTreeMap<String, BTreeSet<String>>, Error> {
        let body = json!({ "size": 0, "query": self.windowed(query),
            "aggs": { "o": { "terms": { "field": outer, "size": 1000 }, "aggs": { "i": { "terms": { "field": inner, "size": 100 } } } } } });
        let answer = self.es.ok(Method::POST, &format!("{index}/_search?ignore_unavailable=true"), Some(&body)).await?;
        let key = |b: &Value| b["key"].as_str().map(str::to_string).unwrap_or_else(|| b["key"].to_string());
        let buckets = |v: &Value| v["buckets"].as_array().cloned().unwrap_or_default();
        Ok(buckets(&answer["aggregations"]["o"])
            .iter()
            .map(|o| (key(o), buckets(&o["i"]).iter().map(key).collect()))
            .collect())
    }

    async fn min(&self, index: &str, query: Value, field: &str) -> Result<Option<f64>, Error> {
        let body = json!({ "size": 0, "query": self.windowed(query), "aggs": { "m": { "min": { "field": field } } } });
        let answer = self.es.ok(Method::POST, &format!("{index}/_search?ignore_unavailable=true"), Some(&body)).await?;
        Ok(answer["aggregations"]["m"]["value"].as_f64())
    }
}

struct Row {
    figures: BTreeMap<&'static str, u64>,
}

impl Row {
    fn new() -> Self {
        Row { figures: BTreeMap::new() }
    }

    fn n(&mut self, name: &'static str, value: u64) -> u64 {
        self.figures.insert(name, value);
        value
    }

    fn done(self, id: &'static str, title: &'static str, outcome: Outcome, detail: String) -> Check {
        Check { id, title, outcome, detail, figures: self.figures }
    }
}

fn pass_if(ok: bool) -> Outcome {
    if ok { Outcome::Pass } else { Outcome::Fail }
}

/// Run the whole checklist. Fails only when Elasticsearch cannot be asked;
/// a check that finds nothing is a `Fail` row, not an error.
pub async fn run(es: &Elastic, scope: &Scope) -> Result<Vec<Check>, Error> {
    let q = Queries { es, scope };
    let (inv, ev, vuln) = (scope.inventory.as_str(), scope.events.as_str(), scope.vulnerabilities.as_str());
    let runtime = terms("labels.security_tool", &["falco", "tetragon"]);
    let mut checks = vec![];

    // SCOPE-01: system_info with host.hostname; the kernel of every
    // inventoried node (host.os.kernel, from kernel_info: osquery's
    // system_info has no kernel column).
    let mut row = Row::new();
    let info = row.n("system_info", q.count(inv, term("osquery.query_name", "system_info")).await?);
    let with_host = row.n(
        "system_info_with_hostname",
        q.count(inv, and(&[term("osquery.query_name", "system_info"), exists("host.hostname")])).await?,
    );
    let nodes = q.terms(inv, term("osquery.query_name", "system_info"), "kubernetes.node.name").await?;
    let kernels = q.terms_by(inv, exists("host.os.kernel"), "kubernetes.node.name", "host.os.kernel").await?;
    let without_kernel: Vec<&String> = nodes.keys().filter(|n| !kernels.contains_key(*n)).collect();
    row.n("nodes", nodes.len() as u64);
    row.n("nodes_without_kernel", without_kernel.len() as u64);
    let detail = if info == 0 {
        format!(
            "no system_info document in {inv}: check osquery's results log, the node collector's filelog receiver and Pod Security admission"
        )
    } else {
        format!(
            "{info} system_info documents ({with_host} with host.hostname) from {} nodes; nodes without host.os.kernel: {without_kernel:?}",
            nodes.len()
        )
    };
    checks.push(row.done(
        "SCOPE-01",
        "system_info with host.hostname and host.os.kernel",
        pass_if(info > 0 && with_host == info && without_kernel.is_empty()),
        detail,
    ));

    // SCOPE-02: listening ports with port, protocol and process.
    let mut row = Row::new();
    let ports = row.n("listening_ports", q.count(inv, term("osquery.query_name", "listening_ports")).await?);
    let complete = row.n(
        "complete",
        q.count(
            inv,
            and(&[
                term("osquery.query_name", "listening_ports"),
                json!({ "range": { "network.port": { "gte": 0, "lte": 65535 } } }),
                exists("network.protocol"),
                exists("process.name"),
            ]),
        )
        .await?,
    );
    checks.push(row.done(
        "SCOPE-02",
        "listening_ports with network.port, network.protocol, process.name",
        pass_if(ports > 0 && complete == ports),
        format!("{ports} listening_ports documents, {complete} with a numeric network.port, network.protocol and process.name"),
    ));

    // SCOPE-03: the vulnerabilities index holds findings, not scans; an
    // image without a finding at or above the threshold leaves no document,
    // so coverage of every workload image cannot be read from it.
    let mut row = Row::new();
    let images = q.terms(vuln, exists("container.image.name"), "container.image.name").await?;
    row.n("images_with_findings", images.len() as u64);
    checks.push(row.done(
        "SCOPE-03",
        "every workload image scanned into security-vuln",
        Outcome::NotChecked,
        format!(
            "{} images have findings in {vuln}; an image with no finding at or above the threshold leaves no document, so compare `kubectl get vulnerabilityreports -A` with the cluster's workloads",
            images.len()
        ),
    ));

    // SCOPE-04: kernel versions compared per node.
    let mut row = Row::new();
    row.n("nodes_with_kernel", kernels.len() as u64);
    let versions: Vec<String> = kernels
        .iter()
        .map(|(node, kernel)| format!("{node}={}", kernel.iter().cloned().collect::<Vec<_>>().join("|")))
        .collect();
    row.n("distinct_kernels", kernels.values().flatten().collect::<BTreeSet<_>>().len() as u64);
    checks.push(row.done(
        "SCOPE-04",
        "kernel version per node (osquery inventory)",
        pass_if(!kernels.is_empty()),
        if kernels.is_empty() {
            format!("no document in {inv} has host.os.kernel and kubernetes.node.name")
        } else {
            versions.join(", ")
        },
    ));

    // SCOPE-05: eBPF support per node, as the sensors need it: the kernel's
    // BTF (CO-RE programs load only with it). Every node that reports its
    // inventory should report it; a node without is a finding (no Falco
    // modern_ebpf, no Tetragon there). Loaded modules are counted alongside:
    // BPF is built into most kernels, so modules alone prove nothing.
    let mut row = Row::new();
    let btf = q
        .terms(inv, and(&[term("osquery.query_name", "kernel_btf"), exists("file.path")]), "kubernetes.node.name")
        .await?;
    let modules = row.n("kernel_modules", q.count(inv, term("osquery.query_name", "kernel_modules")).await?);
    row.n("nodes_with_btf", btf.len() as u64);
    let without_btf: Vec<&String> = nodes.keys().filter(|n| !btf.contains_key(*n)).collect();
    row.n("nodes_without_btf", without_btf.len() as u64);
    checks.push(row.done(
        "SCOPE-05",
        "eBPF support per node (kernel BTF; kernel_modules)",
        if nodes.is_empty() { Outcome::NotChecked } else { pass_if(without_btf.is_empty()) },
        if nodes.is_empty() {
            "no node inventory yet (SCOPE-01)".to_string()
        } else if without_btf.is_empty() {
            format!("{} of {} nodes expose /sys/kernel/btf/vmlinux; {modules} kernel_modules documents", btf.len(), nodes.len())
        } else {
            format!("nodes without /sys/kernel/btf/vmlinux (eBPF CO-RE sensors cannot load there): {without_btf:?}; {modules} kernel_modules documents")
        },
    ));

    // SCOPE-06: running containers per node, of any runtime: osquery's
    // `containers` query (container ids from the pods' cgroups) and, on
    // Docker Engine nodes, `docker_containers`. Every node runs at least the
    // sensors' pods, so a node without a container row is a finding.
    let mut row = Row::new();
    let with_id = and(&[terms("osquery.query_name", &["containers", "docker_containers"]), exists("container.id")]);
    let documents = row.n("documents", q.count(inv, with_id.clone()).await?);
    let per_node = q.terms(inv, with_id, "kubernetes.node.name").await?;
    row.n("nodes", per_node.len() as u64);
    let without: Vec<&String> = nodes.keys().filter(|n| !per_node.contains_key(*n)).collect();
    checks.push(row.done(
        "SCOPE-06",
        "running containers per node (any runtime)",
        if nodes.is_empty() { Outcome::NotChecked } else { pass_if(without.is_empty()) },
        if nodes.is_empty() {
            "no node inventory yet (SCOPE-01)".to_string()
        } else {
            format!(
                "{documents} container documents with container.id from {} of {} nodes; nodes without: {without:?}",
                per_node.len(),
                nodes.len()
            )
        },
    ));

    // VAL-01: the shell on the test pod, seen by Falco AND Tetragon.
    let mut row = Row::new();
    let testbox = |t: &str| {
        and(&[term("kubernetes.namespace", "ctem-test"), term("kubernetes.pod.name", "ctem-testbox"), tool(t)])
    };
    let falco = row.n("falco", q.count(ev, testbox("falco")).await?);
    let tetragon = row.n("tetragon", q.count(ev, testbox("tetragon")).await?);
    let detail = match (falco > 0, tetragon > 0) {
        (true, true) => format!("ctem-test/ctem-testbox: {falco} Falco and {tetragon} Tetragon events"),
        (true, false) => {
            format!("only Falco ({falco}) saw ctem-test/ctem-testbox: check the Tetragon feature and its export filter")
        }
        (false, true) => format!(
            "only Tetragon ({tetragon}) saw ctem-test/ctem-testbox: check Falco's rules (the shell rule needs `kubectl exec -it`)"
        ),
        (false, false) => "no event for pod ctem-test/ctem-testbox: run scenario B of test/scenarios".to_string(),
    };
    checks.push(row.done(
        "VAL-01",
        "shell in ctem-testbox seen by Falco and Tetragon",
        pass_if(falco > 0 && tetragon > 0),
        detail,
    ));

    // VAL-02: contact with the API server from a pod.
    let mut row = Row::new();
    let falco = row.n(
        "falco",
        q.count(ev, and(&[tool("falco"), term("rule.name", "Contact K8S API Server From Container")])).await?,
    );
    let tetragon =
        row.n("tetragon", q.count(ev, and(&[tool("tetragon"), http_client(), exists("kubernetes.pod.name")])).await?);
    checks.push(row.done(
        "VAL-02",
        "Kubernetes API contacted from a pod (Falco and Tetragon)",
        pass_if(falco > 0 && tetragon > 0),
        format!(
            "{falco} Falco `Contact K8S API Server From Container` alerts, {tetragon} Tetragon curl/wget execs in pods"
        ),
    ));

    // VAL-03: container-escape kprobes.
    let mut row = Row::new();
    let calls =
        q.terms(ev, and(&[tool("tetragon"), term("rule.ruleset", "container-escape-monitor")]), "rule.name").await?;
    let n = row.n("kprobe_events", calls.values().sum());
    checks.push(row.done(
        "VAL-03",
        "container escape (mount/setns) as Tetragon kprobe events",
        pass_if(n > 0),
        if n == 0 {
            "no event of TracingPolicy container-escape-monitor: check the Tetragon feature's tracing policies".into()
        } else {
            format!("{n} kprobe events: {calls:?}")
        },
    ));

    // VAL-04: at least 4 of the 5 scenarios detected.
    let mut row = Row::new();
    let mut detected = 0;
    let mut lines = vec![];
    for scenario in SCENARIOS {
        let mut seen_by = vec![];
        for signal in scenario.signals {
            if q.count(scenario.index.of(scope), signal.query()).await? > 0 {
                seen_by.push(signal.tool());
            }
        }
        if !seen_by.is_empty() {
            detected += 1;
        }
        lines.push(format!(
            "{}: {}",
            scenario.name,
            if seen_by.is_empty() { "not detected".to_string() } else { seen_by.join("+") }
        ));
    }
    row.n("detected", detected);
    checks.push(row.done(
        "VAL-04",
        "at least 4 of the 5 MITRE scenarios detected",
        pass_if(detected >= 4),
        format!("{detected}/5: {}", lines.join("; ")),
    ));

    // VAL-05: the subject's namespace and pod on every runtime event, and
    // not the sensor's own pod for all of a tool's events: that is what a
    // collector attributing events by the log file they came from does
    // (every event names the sensor). A sensor may report its own pod now
    // and then (Tetragon sees its sidecar start), and other pods of the
    // sensors' namespace are subjects like any other (the posture reader
    // reading its token).
    let mut row = Row::new();
    let per_tool = q.terms(ev, runtime.clone(), "labels.security_tool").await?;
    let total = row.n("runtime_events", per_tool.values().sum());
    let attributed = row.n(
        "attributed",
        q.count(ev, and(&[runtime.clone(), exists("kubernetes.namespace"), exists("kubernetes.pod.name")])).await?,
    );
    let mut own_pod_tools = vec![];
    let mut own_pod_events = 0;
    for t in ["falco", "tetragon"] {
        let of_tool = per_tool.get(t).copied().unwrap_or(0);
        let own = q
            .count(
                ev,
                and(&[
                    tool(t),
                    term("kubernetes.namespace", &scope.sensor_namespace),
                    json!({ "prefix": { "kubernetes.pod.name": format!("{t}-") } }),
                ]),
            )
            .await?;
        own_pod_events += own;
        if of_tool > 0 && own == of_tool {
            own_pod_tools.push(t);
        }
    }
    row.n("attributed_to_sensors", own_pod_events);
    checks.push(row.done(
        "VAL-05",
        "kubernetes.namespace and kubernetes.pod.name of the subject on every event",
        pass_if(total > 0 && attributed == total && own_pod_tools.is_empty()),
        format!(
            "{attributed} of {total} Falco/Tetragon events name a namespace and pod; {own_pod_events} name the sensor's own pod in {}{}",
            scope.sensor_namespace,
            if own_pod_tools.is_empty() { String::new() } else { format!(" (every event of {}: the collector names the pod it read the log from, not the subject)", own_pod_tools.join(", ")) }
        ),
    ));

    // DISC-01: findings searchable by CVE, severity and image. Only image
    // vulnerability findings count: other Discovery documents in the index
    // (a kube-bench CIS report) have no CVE or image to search by.
    let mut row = Row::new();
    let is_finding = term("event.category", "vulnerability");
    let findings = row.n("findings", q.count(vuln, is_finding.clone()).await?);
    let searchable = row.n(
        "searchable",
        q.count(
            vuln,
            and(&[
                is_finding,
                exists("vulnerability.id"),
                exists("vulnerability.severity"),
                exists("container.image.name"),
            ]),
        )
        .await?,
    );
    checks.push(row.done(
        "DISC-01",
        "vulnerability.id, vulnerability.severity, container.image.name searchable",
        if findings == 0 { Outcome::NotChecked } else { pass_if(searchable == findings) },
        if findings == 0 { format!("no finding in {vuln} yet: is the trivy-es-sync Deployment running, and has the Trivy Operator written reports?") } else { format!("{searchable} of {findings} findings carry all three fields") },
    ));

    // PRI-01: the CRITICAL filter returns only CVSS >= 9.0.
    let mut row = Row::new();
    let critical = term("vulnerability.severity", "CRITICAL");
    let criticals = row.n("critical", q.count(vuln, critical.clone()).await?);
    let below = row.n(
        "critical_below_9",
        q.count(vuln, and(&[critical.clone(), json!({ "range": { "vulnerability.score": { "lt": 9.0 } } })])).await?,
    );
    let lowest = q.min(vuln, critical.clone(), "vulnerability.score").await?;
    checks.push(row.done(
        "PRI-01",
        "CRITICAL filter returns only CVSS >= 9.0",
        if criticals == 0 { Outcome::NotChecked } else { pass_if(below == 0) },
        if criticals == 0 {
            "no CRITICAL finding to filter".into()
        } else {
            format!(
                "{criticals} CRITICAL findings, lowest score {}, {below} below 9.0",
                lowest.map_or("none".to_string(), |s| format!("{s:.1}"))
            )
        },
    ));

    // PRI-02: patchable criticals (with a fixedVersion) told apart.
    let mut row = Row::new();
    let patchable =
        row.n("patchable", q.count(vuln, and(&[critical.clone(), exists("vulnerability.fixedVersion")])).await?);
    let unpatchable = row
        .n("unpatchable", q.count(vuln, and(&[critical.clone(), not(&[exists("vulnerability.fixedVersion")])])).await?);
    checks.push(row.done(
        "PRI-02",
        "patchable CRITICAL findings (vulnerability.fixedVersion present)",
        if criticals == 0 { Outcome::NotChecked } else { pass_if(patchable + unpatchable == criticals) },
        format!("{patchable} CRITICAL findings with a fixed version, {unpatchable} without"),
    ));

    // Beyond the seed plan's list, what every query above relies on: each tool
    // in its own index, and a 1–5 severity on every document.
    let mut row = Row::new();
    let unlabelled =
        row.n("unlabelled", q.count(&format!("{inv},{ev},{vuln}"), not(&[exists("labels.security_tool")])).await?);
    let misrouted = row.n(
        "misrouted",
        q.count(ev, terms("labels.security_tool", &["osquery", "trivy"])).await?
            + q.count(inv, runtime.clone()).await?
            + q.count(vuln, runtime.clone()).await?,
    );
    checks.push(row.done(
        "ROUTING",
        "labels.security_tool on every document, each tool in its index",
        pass_if(unlabelled == 0 && misrouted == 0),
        format!("{unlabelled} documents without labels.security_tool, {misrouted} in another tool's index"),
    ));
    let mut row = Row::new();
    let all_docs = row.n("documents", q.count(&format!("{inv},{ev},{vuln}"), json!({ "match_all": {} })).await?);
    let out_of_range = row.n(
        "out_of_range",
        q.count(
            &format!("{inv},{ev},{vuln}"),
            not(&[json!({ "range": { "event.severity": { "gte": 1, "lte": 5 } } })]),
        )
        .await?,
    );
    checks.push(row.done(
        "SEVERITY",
        "event.severity between 1 and 5 on every document",
        if all_docs == 0 { Outcome::NotChecked } else { pass_if(out_of_range == 0) },
        format!("{out_of_range} of {all_docs} documents without a severity in 1..=5"),
    ));
    Ok(checks)
}

/// The checklist as a fixed-width table, one row per check.
pub fn table(checks: &[Check]) -> String {
    let mut out = String::new();
    for c in checks {
        out.push_str(&format!("{:<4}  {:<9} {}\n      {}\n", c.outcome.label(), c.id, c.title, c.detail));
    }
    let count = |o| checks.iter().filter(|c| c.outcome == o).count();
    out.push_str(&format!(
        "\n{} passed, {} failed, {} not checked\n",
        count(Outcome::Pass),
        count(Outcome::Fail),
        count(Outcome::NotChecked)
    ));
    out
}
