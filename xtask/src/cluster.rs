//! A real Kubernetes control plane on loopback for the e2e tests:
//! etcd, kube-apiserver, kube-controller-manager, kube-scheduler and kwok
//! (fake kubelets that make DaemonSet pods Ready) with three fake nodes,
//! plus one real node (kubelet, containerd; xtask/src/node.rs) where the
//! machine allows it.
//!
//! Binaries are built from Go modules once and cached outside the repo,
//! keyed by tool and version (`~/.cache/secop-test-infra/<tool>-<version>`).
//! Recipe notes: shared/reference/test-infra.md.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::node;

pub const KUBERNETES: &str = "v1.34.4";
pub const ETCD: &str = "v3.5.35";
pub const KWOK: &str = "v0.7.0";
pub const HELM: &str = "v3.19.5";
/// The real node's cluster DNS (xtask/src/node.rs).
pub const COREDNS: &str = "v1.14.7";

const ETCD_CLIENT: &str = "127.0.0.1:23790";
const ETCD_PEER: &str = "127.0.0.1:23800";
const APISERVER_PORT: u16 = 16443;
const TOKEN: &str = "secop-e2e-admin-token";
/// The operator under test runs as the chart's ServiceAccount of a release
/// installed with no replicas: exactly the chart's permissions, never
/// system:masters. Its own identity also lets the audit log count exactly
/// its requests.
pub const OPERATOR_NAMESPACE: &str = "secop-e2e";
const OPERATOR_RELEASE: &str = "secop-e2e";
/// Where the e2e operator process serves the admission webhook: the e2e
/// release's ValidatingWebhookConfiguration calls this URL (`webhook.url`),
/// since the operator under test runs on the machine, not in a pod.
pub const WEBHOOK_ADDR: &str = "127.0.0.1:19443";
pub const OPERATOR_USER: &str = "system:serviceaccount:secop-e2e:secop-e2e";
pub const NODES: [&str; 3] = ["kwok-node-0", "kwok-node-1", "kwok-node-2"];

pub fn cache_root() -> PathBuf {
    if let Some(dir) = std::env::var_os("SECOP_TEST_INFRA_CACHE") {
        return PathBuf::from(dir);
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(|| PathBuf::from("/tmp"));
    base.join("secop-test-infra")
}

/// Where a running cluster keeps its state: data, certs, logs, kubeconfig.
pub fn state_dir(root: &Path) -> PathBuf {
    root.join("target/test-cluster")
}

pub fn kubeconfig(root: &Path) -> PathBuf {
    state_dir(root).join("kubeconfig")
}

/// Kubeconfig of the operator under test (user `secop-operator`).
pub fn operator_kubeconfig(root: &Path) -> PathBuf {
    state_dir(root).join("kubeconfig-operator")
}

/// The API server's audit log: every request of the operator user.
pub fn audit_log(root: &Path) -> PathBuf {
    state_dir(root).join("audit.log")
}

fn kubeconfig_text(token: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: e2e\n  cluster:\n    server: https://127.0.0.1:{APISERVER_PORT}\n    insecure-skip-tls-verify: true\n\
         users:\n- name: user\n  user:\n    token: {token}\ncontexts:\n- name: e2e\n  context:\n    cluster: e2e\n    user: user\ncurrent-context: e2e\n"
    )
}

pub(crate) fn run(cmd: &mut Command) -> Result<()> {
    let shown = format!("{cmd:?}");
    let status = cmd.status().with_context(|| format!("starting {shown}"))?;
    if !status.success() {
        bail!("{shown} failed with {status}");
    }
    Ok(())
}

fn go(dir: &Path) -> Command {
    let mut cmd = Command::new("go");
    cmd.current_dir(dir)
        .env("CGO_ENABLED", "0")
        .env("GOFLAGS", "-mod=mod -buildvcs=false")
        // Some module versions have no checksum-database record on the
        // proxy this machine reaches; their hashes still land in go.sum.
        .env("GONOSUMDB", "go.etcd.io,sigs.k8s.io/kwok");
    cmd
}

/// Build (or find cached) binaries; returns the bin directories.
pub struct Binaries {
    pub etcd: PathBuf,
    pub kubernetes: PathBuf,
    pub kwok: PathBuf,
    pub coredns: PathBuf,
}

pub fn build() -> Result<Binaries> {
    let cache = cache_root();
    Ok(Binaries {
        etcd: build_etcd(&cache)?,
        kubernetes: build_kubernetes(&cache)?,
        kwok: build_kwok(&cache)?,
        coredns: build_coredns(&cache)?,
    })
}

/// A `main.go` of our own in a module that requires `module version`,
/// built once into `<cache>/<name>-<version>/bin/<name>`. For programs
/// whose own module cannot be `go install`ed (replace directives) or whose
/// plugins are chosen by imports.
fn build_go_main(cache: &Path, name: &str, version: &str, require: &str, main_go: &str) -> Result<PathBuf> {
    let dir = cache.join(format!("{name}-{version}"));
    let bin = dir.join(format!("bin/{name}"));
    if bin.exists() {
        return Ok(bin);
    }
    eprintln!("building {name} {version} (once; cached in {})", dir.display());
    let src = dir.join("src");
    fs::create_dir_all(&src)?;
    fs::write(src.join("go.mod"), format!("module secop.local/{name}\n\ngo 1.25\n\nrequire {require} {version}\n"))?;
    fs::write(src.join("main.go"), main_go)?;
    run(go(&src).args(["mod", "tidy"]))?;
    run(go(&src).args(["build", "-ldflags", "-s -w", "-o"]).arg(&bin).arg("."))?;
    Ok(bin)
}

/// `go install go.etcd.io/etcd/server/v3@...` fails on its replace
/// directives; a two-line main in our own module does not.
fn build_etcd(cache: &Path) -> Result<PathBuf> {
    build_go_main(
        cache,
        "etcd",
        ETCD,
        "go.etcd.io/etcd/server/v3",
        "package main\n\nimport (\n\t\"os\"\n\n\t\"go.etcd.io/etcd/server/v3/etcdmain\"\n)\n\nfunc main() { etcdmain.Main(os.Args) }\n",
    )
}

/// CoreDNS with only the plugins the real node's cluster DNS uses (a main
/// of our own that imports them, CoreDNS's documented way to choose
/// plugins without its source tree): no forwarding, so pods resolve
/// cluster names and nothing else.
fn build_coredns(cache: &Path) -> Result<PathBuf> {
    build_go_main(
        cache,
        "coredns",
        COREDNS,
        "github.com/coredns/coredns",
        "package main\n\nimport (\n\t\"github.com/coredns/coredns/core/dnsserver\"\n\t\"github.com/coredns/coredns/coremain\"\n\n\
         \t_ \"github.com/coredns/coredns/plugin/bind\"\n\t_ \"github.com/coredns/coredns/plugin/errors\"\n\t_ \"github.com/coredns/coredns/plugin/kubernetes\"\n\t_ \"github.com/coredns/coredns/plugin/log\"\n)\n\n\
         // The order in which the plugins handle a query (CoreDNS's plugin.cfg order).\n\
         func init() { dnsserver.Directives = []string{\"bind\", \"errors\", \"log\", \"kubernetes\"} }\n\nfunc main() { coremain.Run() }\n",
    )
}

/// kube-apiserver, kube-controller-manager, kube-scheduler from
/// k8s.io/kubernetes, with its `./staging` replaces pointed at the
/// published v0.<minor>.<patch> modules.
fn build_kubernetes(cache: &Path) -> Result<PathBuf> {
    let dir = cache.join(format!("kubernetes-{KUBERNETES}"));
    let bin = dir.join("bin");
    // The control plane, the real node's kubelet and kube-proxy, and the
    // kubectl that test/run-ctem-scenarios.sh and demo/live-demo.sh use.
    let wanted = ["kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubelet", "kube-proxy", "kubectl"];
    if wanted.iter().all(|b| bin.join(b).exists()) {
        return Ok(bin);
    }
    eprintln!(
        "building Kubernetes {KUBERNETES} control plane, kubelet, kube-proxy and kubectl (once, ~10 min; cached in {})",
        dir.display()
    );
    let src = dir.join("src");
    fs::create_dir_all(&src)?;
    // Read the staging replace list from that release's go.mod.
    let out = go(&src).args(["mod", "download", "-json", &format!("k8s.io/kubernetes@{KUBERNETES}")]).output()?;
    if !out.status.success() {
        bail!("go mod download k8s.io/kubernetes: {}", String::from_utf8_lossy(&out.stderr));
    }
    let info: serde_json_lite::Info = serde_json_lite::parse(&String::from_utf8_lossy(&out.stdout))?;
    let upstream = fs::read_to_string(&info.go_mod)?;
    let staging_version = KUBERNETES.replacen("v1.", "v0.", 1);
    let mut go_mod =
        format!("module secop.local/kubernetes\n\ngo 1.24\n\nrequire k8s.io/kubernetes {KUBERNETES}\n\nreplace (\n");
    let mut replaced = 0;
    for line in upstream.lines() {
        let line = line.trim();
        if let Some((module, target)) = line.split_once("=>")
            && target.trim().starts_with("./staging/")
        {
            go_mod.push_str(&format!("\t{} => {} {staging_version}\n", module.trim(), module.trim()));
            replaced += 1;
        }
    }
    go_mod.push_str(")\n");
    if replaced < 20 {
        bail!("found only {replaced} staging replaces in k8s.io/kubernetes {KUBERNETES} go.mod");
    }
    fs::write(src.join("go.mod"), go_mod)?;
    fs::write(src.join("doc.go"), "// Package kubernetes only pins the control-plane build.\npackage kubernetes\n")?;
    let minor = KUBERNETES.split('.').nth(1).unwrap_or("0");
    let ldflags = format!(
        "-s -w -X k8s.io/component-base/version.gitVersion={KUBERNETES} -X k8s.io/component-base/version.gitMajor=1 \
         -X k8s.io/component-base/version.gitMinor={minor} -X k8s.io/component-base/version.gitTreeState=clean \
         -X k8s.io/client-go/pkg/version.gitVersion={KUBERNETES} -X k8s.io/client-go/pkg/version.gitMajor=1 \
         -X k8s.io/client-go/pkg/version.gitMinor={minor}"
    );
    fs::create_dir_all(&bin)?;
    for b in wanted.iter().filter(|b| !bin.join(b).exists()) {
        run(go(&src)
            .args(["build", "-ldflags", &ldflags, "-o"])
            .arg(bin.join(b))
            .arg(format!("k8s.io/kubernetes/cmd/{b}")))?;
    }
    Ok(bin)
}

/// kubectl of the same release as the test cluster (built with it).
pub fn kubectl() -> PathBuf {
    cache_root().join(format!("kubernetes-{KUBERNETES}/bin/kubectl"))
}

fn build_kwok(cache: &Path) -> Result<PathBuf> {
    let dir = cache.join(format!("kwok-{KWOK}"));
    let bin = dir.join("bin/kwok");
    if bin.exists() {
        return Ok(bin);
    }
    eprintln!("building kwok {KWOK} (once; cached in {})", dir.display());
    fs::create_dir_all(dir.join("bin"))?;
    run(go(&dir)
        .env("GOBIN", dir.join("bin"))
        .env("GOFLAGS", "-buildvcs=false")
        .args(["install", &format!("sigs.k8s.io/kwok/cmd/kwok@{KWOK}")]))?;
    Ok(bin)
}

/// Helm, for `helm lint` and `helm template` of the chart.
pub fn build_helm() -> Result<PathBuf> {
    let dir = cache_root().join(format!("helm-{HELM}"));
    let bin = dir.join("bin/helm");
    if bin.exists() {
        return Ok(bin);
    }
    eprintln!("building helm {HELM} (once; cached in {})", dir.display());
    fs::create_dir_all(dir.join("bin"))?;
    run(go(&dir).env("GOBIN", dir.join("bin")).env("GOFLAGS", "-buildvcs=false").args([
        "install",
        "-ldflags",
        &format!("-s -w -X helm.sh/helm/v3/internal/version.version={HELM}"),
        &format!("helm.sh/helm/v3/cmd/helm@{HELM}"),
    ]))?;
    Ok(bin)
}

/// Minimal reader of `go mod download -json` output (the xtask stays free
/// of a JSON dependency).
mod serde_json_lite {
    use anyhow::{Result, bail};

    pub struct Info {
        pub go_mod: String,
    }

    pub fn parse(text: &str) -> Result<Info> {
        for line in text.lines() {
            let line = line.trim();
            if let Some(rest) = line.strip_prefix("\"GoMod\":") {
                let value = rest.trim().trim_end_matches(',').trim_matches('"');
                return Ok(Info { go_mod: value.replace("\\\\", "\\") });
            }
        }
        bail!("no GoMod in go mod download output")
    }
}

fn curl(root: &Path, method: &str, path: &str, body: Option<&str>) -> Result<(u16, String)> {
    let mut cmd = Command::new("curl");
    cmd.args(["-sk", "-o", "-", "-w", "\n%{http_code}", "-X", method, "-H"])
        .arg(format!("Authorization: Bearer {TOKEN}"))
        .arg(format!("https://127.0.0.1:{APISERVER_PORT}{path}"));
    if let Some(b) = body {
        cmd.args(["-H", "Content-Type: application/json", "--data-binary", b]);
    }
    let _ = root;
    let out = cmd.output().context("running curl")?;
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    Ok((code.trim().parse().unwrap_or(0), body.to_string()))
}

pub(crate) fn spawn(state: &Path, name: &str, program: &Path, args: &[String]) -> Result<()> {
    let log = fs::File::create(state.join(format!("{name}.log")))?;
    let child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .with_context(|| format!("starting {}", program.display()))?;
    fs::write(state.join(format!("{name}.pid")), child.id().to_string())?;
    Ok(())
}

pub(crate) fn wait_for(what: &str, timeout: Duration, ready: impl FnMut() -> bool) -> Result<()> {
    secop_test_harness::wait_until(what, timeout, ready).map_err(anyhow::Error::msg)
}

/// Start the control plane (building it first if needed), the kwok nodes
/// and, where this machine can run one (root), the real node
/// (xtask/src/node.rs). Idempotent: a running cluster is left alone.
pub fn up(root: &Path) -> Result<()> {
    let state = state_dir(root);
    if state.join("apiserver.pid").exists()
        && curl(root, "GET", "/readyz", None).map(|(c, _)| c == 200).unwrap_or(false)
    {
        eprintln!("test cluster already running ({})", kubeconfig(root).display());
        return Ok(());
    }
    let bins = build()?;
    down(root)?;
    let real_node = node::supported();
    if !real_node {
        eprintln!(
            "note: the real node needs root (containerd, network namespaces, iptables); starting the kwok nodes only"
        );
    }
    fs::create_dir_all(state.join("certs"))?;
    let sa_key = state.join("sa.key");
    let sa_pub = state.join("sa.pub");
    run(Command::new("openssl").args(["genrsa", "-out"]).arg(&sa_key).arg("2048").stderr(Stdio::null()))?;
    run(Command::new("openssl")
        .args(["rsa", "-pubout", "-in"])
        .arg(&sa_key)
        .arg("-out")
        .arg(&sa_pub)
        .stderr(Stdio::null()))?;
    let pki = node::pki(&state)?;
    // The node's identities: the kubelet as system:node:<name> (the Node
    // authorizer limits it to its own node and pods) and kube-proxy as
    // system:kube-proxy (bound to system:node-proxier by default).
    let tokens = state.join("tokens.csv");
    fs::write(
        &tokens,
        format!(
            "{TOKEN},secop-e2e-admin,secop-e2e-admin,\"system:masters\"\n\
             {},system:node:{},system:node:{},\"system:nodes\"\n{},system:kube-proxy,system:kube-proxy,\n{},{},{},\n",
            node::KUBELET_TOKEN,
            node::NAME,
            node::NAME,
            node::PROXY_TOKEN,
            node::DNS_TOKEN,
            node::DNS_USER,
            node::DNS_USER
        ),
    )?;
    let kubeconfig = kubeconfig(root);
    fs::write(&kubeconfig, kubeconfig_text(TOKEN))?;
    let audit_policy = state.join("audit-policy.yaml");
    fs::write(
        &audit_policy,
        format!(
            "apiVersion: audit.k8s.io/v1\nkind: Policy\nomitStages: [RequestReceived, ResponseStarted]\nrules:\n- level: Metadata\n  users: [\"{OPERATOR_USER}\"]\n- level: None\n"
        ),
    )?;
    let p = |p: &Path| p.display().to_string();

    spawn(
        &state,
        "etcd",
        &bins.etcd,
        &[
            format!("--data-dir={}", p(&state.join("etcd"))),
            format!("--listen-client-urls=http://{ETCD_CLIENT}"),
            format!("--advertise-client-urls=http://{ETCD_CLIENT}"),
            format!("--listen-peer-urls=http://{ETCD_PEER}"),
            format!("--initial-advertise-peer-urls=http://{ETCD_PEER}"),
            format!("--initial-cluster=default=http://{ETCD_PEER}"),
            "--unsafe-no-fsync".into(),
            "--log-level=warn".into(),
        ],
    )?;
    wait_for("etcd", Duration::from_secs(30), || {
        Command::new("curl")
            .args(["-sf", &format!("http://{ETCD_CLIENT}/health")])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false)
    })?;

    // With the real node, pods reach the API server through the
    // `kubernetes` Service (kube-proxy) at the node's address; the machine's
    // own clients keep using loopback.
    let (bind, advertise) = if real_node {
        node::network_up(APISERVER_PORT)?;
        ("0.0.0.0", node::NODE_IP)
    } else {
        ("127.0.0.1", "127.0.0.1")
    };
    spawn(
        &state,
        "apiserver",
        &bins.kubernetes.join("kube-apiserver"),
        &[
            format!("--etcd-servers=http://{ETCD_CLIENT}"),
            format!("--cert-dir={}", p(&state.join("certs"))),
            format!("--tls-cert-file={}", p(&pki.apiserver_cert)),
            format!("--tls-private-key-file={}", p(&pki.apiserver_key)),
            format!("--secure-port={APISERVER_PORT}"),
            format!("--bind-address={bind}"),
            format!("--advertise-address={advertise}"),
            format!("--service-cluster-ip-range={}", node::SERVICE_RANGE),
            "--allow-privileged=true".into(),
            "--authorization-mode=Node,RBAC".into(),
            "--enable-admission-plugins=NodeRestriction".into(),
            format!("--token-auth-file={}", p(&tokens)),
            format!("--kubelet-client-certificate={}", p(&pki.kubelet_client_cert)),
            format!("--kubelet-client-key={}", p(&pki.kubelet_client_key)),
            "--kubelet-preferred-address-types=InternalIP".into(),
            "--service-account-issuer=https://kubernetes.default.svc".into(),
            format!("--service-account-key-file={}", p(&sa_pub)),
            format!("--service-account-signing-key-file={}", p(&sa_key)),
            "--enable-priority-and-fairness=false".into(),
            // New nodes would get `node.kubernetes.io/not-ready:NoSchedule`, which
            // only the node-lifecycle controller (off, below) removes: Deployment
            // pods would never schedule on the kwok nodes.
            "--disable-admission-plugins=TaintNodesByCondition".into(),
            format!("--audit-policy-file={}", p(&audit_policy)),
            format!("--audit-log-path={}", p(&audit_log(root))),
            "--audit-log-format=json".into(),
            "--audit-log-mode=blocking".into(),
            "--v=0".into(),
        ],
    )?;
    wait_for("kube-apiserver", Duration::from_secs(90), || {
        curl(root, "GET", "/readyz", None).map(|(c, _)| c == 200).unwrap_or(false)
    })?;

    spawn(
        &state,
        "controller-manager",
        &bins.kubernetes.join("kube-controller-manager"),
        &[
            format!("--kubeconfig={}", p(&kubeconfig)),
            "--leader-elect=false".into(),
            "--secure-port=11257".into(),
            "--bind-address=127.0.0.1".into(),
            format!("--service-account-private-key-file={}", p(&sa_key)),
            // Published to every namespace as kube-root-ca.crt: in-cluster
            // clients verify the API server with it.
            format!("--root-ca-file={}", p(&pki.ca)),
            // No node-lifecycle controller: kwok heartbeats lag under load on 2 cores,
            // and a node flapped to NotReady leaves its pods NotReady for good.
            "--controllers=*,-nodeipam,-service-lb-controller,-cloud-node-lifecycle,-nodelifecycle".into(),
            "--v=0".into(),
        ],
    )?;
    spawn(
        &state,
        "scheduler",
        &bins.kubernetes.join("kube-scheduler"),
        &[
            format!("--kubeconfig={}", p(&kubeconfig)),
            "--leader-elect=false".into(),
            "--secure-port=11259".into(),
            "--bind-address=127.0.0.1".into(),
        ],
    )?;
    // kwok fakes only the nodes it is told to (by their annotation), not
    // the real one.
    spawn(
        &state,
        "kwok",
        &bins.kwok,
        &[
            format!("--kubeconfig={}", p(&kubeconfig)),
            "--manage-all-nodes=false".into(),
            "--manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake".into(),
            "--server-address=127.0.0.1:10247".into(),
        ],
    )?;

    for node in NODES {
        let body = format!(
            r#"{{"apiVersion":"v1","kind":"Node","metadata":{{"name":"{node}","labels":{{"kubernetes.io/hostname":"{node}","kubernetes.io/os":"linux","kubernetes.io/arch":"amd64","type":"kwok"}},"annotations":{{"kwok.x-k8s.io/node":"fake"}}}},"status":{{"allocatable":{{"cpu":"32","memory":"256Gi","pods":"110"}},"capacity":{{"cpu":"32","memory":"256Gi","pods":"110"}}}}}}"#
        );
        let (code, text) = curl(root, "POST", "/api/v1/nodes", Some(&body))?;
        if code != 201 && code != 409 {
            bail!("creating node {node}: HTTP {code}: {text}");
        }
    }
    operator_identity(root, &kubeconfig)?;
    wait_for("kwok nodes Ready", Duration::from_secs(60), || {
        ready_nodes(root).is_ok_and(|ready| NODES.iter().all(|n| ready.iter().any(|r| r == n)))
    })?;

    if real_node {
        // The API server's client identity towards kubelets (logs, exec),
        // and what the cluster DNS reads.
        for (path, body) in [
            ("clusterrolebindings", node::APISERVER_KUBELET_BINDING),
            ("clusterroles", node::DNS_ROLE),
            ("clusterrolebindings", node::DNS_BINDING),
        ] {
            let (code, text) = curl(root, "POST", &format!("/apis/rbac.authorization.k8s.io/v1/{path}"), Some(body))?;
            if code != 201 && code != 409 {
                bail!("the real node's RBAC ({path}): HTTP {code}: {text}");
            }
        }
        node::up(root, &state, &bins, &format!("https://127.0.0.1:{APISERVER_PORT}"))?;
        wait_for(
            &format!("the real node {} Ready (logs in {})", node::NAME, state.display()),
            Duration::from_secs(120),
            || ready_nodes(root).is_ok_and(|ready| ready.iter().any(|n| n == node::NAME)),
        )?;
    }
    eprintln!("test cluster up: KUBECONFIG={}", kubeconfig.display());
    Ok(())
}

/// The e2e operator's identity: the chart installed with no replicas (its
/// ServiceAccount, ClusterRole and lease Role, as a user installs them),
/// and a token of that ServiceAccount from the TokenRequest API.
fn operator_identity(root: &Path, kubeconfig: &Path) -> Result<()> {
    let helm = build_helm()?;
    run(Command::new(helm)
        .args(["install", OPERATOR_RELEASE])
        .arg(root.join("deploy/helm/security-operator"))
        // The e2e tests put agents in namespaces of their own: the chart's
        // policy honours every namespace, so it grants the features' Role
        // rules cluster-wide (the real-node test installs the narrow form).
        .args([
            "--namespace",
            OPERATOR_NAMESPACE,
            "--create-namespace",
            "--set",
            "replicas=0",
            "--set-json",
            r#"policy.agentNamespaces=["*"]"#,
            "--set",
            &format!("webhook.url=https://{WEBHOOK_ADDR}"),
            // Honouring every namespace, its agent-ownership policy would
            // refuse the real-node test's operator (another release) in
            // that test's namespace; the ownership test applies the policy
            // for its own namespace.
            "--set",
            "agentOwnershipPolicy=false",
        ])
        .env("KUBECONFIG", kubeconfig)
        .stdout(Stdio::null()))
    .context("installing the chart's RBAC for the e2e operator")?;
    let request =
        r#"{"apiVersion":"authentication.k8s.io/v1","kind":"TokenRequest","spec":{"expirationSeconds":172800}}"#;
    let (code, text) = curl(
        root,
        "POST",
        &format!("/api/v1/namespaces/{OPERATOR_NAMESPACE}/serviceaccounts/{OPERATOR_RELEASE}/token"),
        Some(request),
    )?;
    if code != 201 {
        bail!("TokenRequest for the e2e operator: HTTP {code}: {text}");
    }
    let response: serde_json::Value = serde_json::from_str(&text)?;
    let token = response["status"]["token"].as_str().context("TokenRequest response without a token")?;
    fs::write(operator_kubeconfig(root), kubeconfig_text(token))?;
    Ok(())
}

/// Names of the nodes whose Ready condition is True.
fn ready_nodes(root: &Path) -> Result<Vec<String>> {
    let (_, text) = curl(root, "GET", "/api/v1/nodes", None)?;
    let list: serde_json::Value = serde_json::from_str(&text)?;
    Ok(list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|n| {
            n["status"]["conditions"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|c| c["type"] == "Ready" && c["status"] == "True")
        })
        .filter_map(|n| n["metadata"]["name"].as_str().map(String::from))
        .collect())
}

/// Stop the process whose pid file `<name>.pid` is in `state` (TERM, then
/// KILL after 4 s).
pub(crate) fn stop_pid(state: &Path, name: &str) {
    let pid_file = state.join(format!("{name}.pid"));
    if let Ok(pid) = fs::read_to_string(&pid_file) {
        let pid = pid.trim();
        let _ = Command::new("kill").arg(pid).stderr(Stdio::null()).status();
        for _ in 0..40 {
            if !Path::new(&format!("/proc/{pid}")).exists() {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = Command::new("kill").args(["-9", pid]).stderr(Stdio::null()).status();
        let _ = fs::remove_file(pid_file);
    }
}

/// Stop every process of the test cluster (the real node first) and
/// remove its state.
pub fn down(root: &Path) -> Result<()> {
    let state = state_dir(root);
    let kubernetes_bin = cache_root().join(format!("kubernetes-{KUBERNETES}/bin"));
    if node::supported() {
        node::down(&state, Some(&kubernetes_bin), APISERVER_PORT)?;
    }
    for name in ["kwok", "scheduler", "controller-manager", "apiserver", "etcd"] {
        stop_pid(&state, name);
    }
    if state.exists() {
        // Keep the logs of the last run for post-mortems.
        for entry in fs::read_dir(&state)? {
            let path = entry?.path();
            if path.extension().is_none_or(|e| e != "log") || path == audit_log(root) {
                if path.is_dir() {
                    fs::remove_dir_all(&path)?;
                } else {
                    fs::remove_file(&path)?;
                }
            }
        }
    }
    Ok(())
}
