//! One real node next to the kwok nodes: kubelet (built from the same
//! Kubernetes module as the control plane), Debian's containerd, runc and
//! CNI plugins, kube-proxy for Services, and the cluster's own image
//! registry. The facts this rests on (and the settings without which it
//! fails on these machines) are in shared/reference/real-node.md.
//!
//! Networking stays inside the machine: pods live in network namespaces
//! the bridge CNI plugin creates on `secop0` (10.244.0.0/24), and get a
//! route to that subnet and to the Service range only, no default route, so
//! they can reach the node (the API server, Elasticsearch, each other) and
//! nothing else. The node's address is the bridge's (10.244.0.1): the
//! kubelet refuses a loopback node IP.
//!
//! The node is tainted `secop.example.io/real-node=true:NoSchedule`: only
//! the tests that mean to run real pods tolerate it, and the kwok tests keep
//! their workloads on kwok.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::cluster::{run, spawn, stop_pid, wait_for};
use crate::testimages;

pub const NAME: &str = "real-node-0";
pub const BRIDGE: &str = "secop0";
pub const NODE_IP: &str = "10.244.0.1";
const POD_SUBNET: &str = "10.244.0.0/24";
pub const SERVICE_RANGE: &str = "10.96.0.0/16";
pub const TAINT_KEY: &str = "secop.example.io/real-node";
const KUBELET_PORT: u16 = 10250;
const REGISTRY_PORT: u16 = 15000;
/// Unix socket paths are limited to 108 bytes, and a clone may live deep:
/// containerd's sockets and runc's state go here, everything else under
/// the cluster's state dir.
const RUN_DIR: &str = "/run/secop-node";
/// containerd's API socket where nodes have it: the Falco DaemonSet mounts
/// /run/containerd to ask the runtime which pod a process belongs to
/// (its container plugin's `sockets`), and so does its stand-in.
const CONTAINERD_DIR: &str = "/run/containerd";
/// Tokens of the node's own identities (tokens.csv of the API server).
pub const KUBELET_TOKEN: &str = "secop-e2e-kubelet-token";
pub const PROXY_TOKEN: &str = "secop-e2e-kube-proxy-token";
pub const APISERVER_KUBELET_BINDING: &str = r#"{"apiVersion":"rbac.authorization.k8s.io/v1","kind":"ClusterRoleBinding","metadata":{"name":"secop-e2e-apiserver-kubelet-client"},"roleRef":{"apiGroup":"rbac.authorization.k8s.io","kind":"ClusterRole","name":"system:kubelet-api-admin"},"subjects":[{"apiGroup":"rbac.authorization.k8s.io","kind":"User","name":"kube-apiserver-kubelet-client"}]}"#;
pub const DNS_TOKEN: &str = "secop-e2e-coredns-token";
pub const DNS_USER: &str = "secop-e2e-coredns";
/// What CoreDNS's kubernetes plugin reads (the rules of the upstream
/// `system:coredns` ClusterRole).
pub const DNS_ROLE: &str = r#"{"apiVersion":"rbac.authorization.k8s.io/v1","kind":"ClusterRole","metadata":{"name":"secop-e2e-coredns"},"rules":[{"apiGroups":[""],"resources":["endpoints","services","pods","namespaces"],"verbs":["list","watch"]},{"apiGroups":["discovery.k8s.io"],"resources":["endpointslices"],"verbs":["list","watch"]}]}"#;
pub const DNS_BINDING: &str = r#"{"apiVersion":"rbac.authorization.k8s.io/v1","kind":"ClusterRoleBinding","metadata":{"name":"secop-e2e-coredns"},"roleRef":{"apiGroup":"rbac.authorization.k8s.io","kind":"ClusterRole","name":"secop-e2e-coredns"},"subjects":[{"apiGroup":"rbac.authorization.k8s.io","kind":"User","name":"secop-e2e-coredns"}]}"#;

/// Whether this machine can run the real node (root: containerd, network
/// namespaces, iptables).
pub fn supported() -> bool {
    crate::prereq::is_root()
}

fn dir(state: &Path) -> PathBuf {
    state.join("node")
}

fn sh(script: &str) -> Command {
    let mut cmd = Command::new("sh");
    cmd.args(["-c", script]);
    cmd
}

/// The API server listens on every address (pods reach it on the bridge,
/// the machine's clients on loopback); these rules keep every other
/// interface out. In the order they end up in INPUT.
fn apiserver_guard(port: u16) -> Vec<Vec<String>> {
    let rule = |interface: Option<&str>, target: &str| {
        let mut r: Vec<String> = ["INPUT", "-p", "tcp", "--dport", &port.to_string()].map(String::from).to_vec();
        if let Some(i) = interface {
            r.extend(["-i".to_string(), i.to_string()]);
        }
        r.extend(
            ["-m", "comment", "--comment", "secop-e2e: API server on loopback and the pod bridge only", "-j", target]
                .map(String::from),
        );
        r
    };
    vec![rule(Some("lo"), "ACCEPT"), rule(Some(BRIDGE), "ACCEPT"), rule(None, "DROP")]
}

/// The bridge with the node's address, before the API server starts (it
/// advertises this address to pods).
pub fn network_up(apiserver_port: u16) -> Result<()> {
    // Inserted last rule first, so they stand in order at the top.
    for rule in apiserver_guard(apiserver_port).iter().rev() {
        run(Command::new("iptables").arg("-I").args(rule))?;
    }
    let exists = Command::new("ip")
        .args(["link", "show", BRIDGE])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()?
        .success();
    if !exists {
        run(Command::new("ip").args(["link", "add", BRIDGE, "type", "bridge"]))?;
    }
    let addresses = Command::new("ip").args(["-4", "addr", "show", BRIDGE]).output()?;
    if !String::from_utf8_lossy(&addresses.stdout).contains(&format!("{NODE_IP}/24")) {
        run(Command::new("ip").args(["addr", "add", &format!("{NODE_IP}/24"), "dev", BRIDGE]))?;
    }
    run(Command::new("ip").args(["link", "set", BRIDGE, "up"]))
}

/// Certificates of the cluster's own CA: the API server's serving cert
/// (valid for loopback, the node address and the `kubernetes` Service, so
/// in-cluster clients verify it) and its client cert towards kubelets.
pub struct Pki {
    pub ca: PathBuf,
    pub apiserver_cert: PathBuf,
    pub apiserver_key: PathBuf,
    pub kubelet_client_cert: PathBuf,
    pub kubelet_client_key: PathBuf,
}

pub fn pki(state: &Path) -> Result<Pki> {
    let pki = state.join("pki");
    fs::create_dir_all(&pki)?;
    let p = |name: &str| pki.join(name);
    let openssl = |args: &[&str]| -> Result<()> {
        let mut cmd = Command::new("openssl");
        cmd.args(args).stderr(Stdio::null()).stdout(Stdio::null());
        run(&mut cmd)
    };
    let s = |p: PathBuf| p.display().to_string();
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "3",
        "-subj",
        "/CN=secop-test-ca",
        "-keyout",
        &s(p("ca.key")),
        "-out",
        &s(p("ca.crt")),
    ])?;
    let sign = |name: &str, subject: &str, extensions: &str| -> Result<()> {
        openssl(&[
            "req",
            "-new",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            subject,
            "-keyout",
            &s(p(&format!("{name}.key"))),
            "-out",
            &s(p(&format!("{name}.csr"))),
        ])?;
        fs::write(p(&format!("{name}.ext")), extensions)?;
        openssl(&[
            "x509",
            "-req",
            "-days",
            "3",
            "-in",
            &s(p(&format!("{name}.csr"))),
            "-CA",
            &s(p("ca.crt")),
            "-CAkey",
            &s(p("ca.key")),
            "-CAcreateserial",
            "-extfile",
            &s(p(&format!("{name}.ext"))),
            "-out",
            &s(p(&format!("{name}.crt"))),
        ])
    };
    sign(
        "apiserver",
        "/CN=kube-apiserver",
        &format!(
            "subjectAltName=IP:127.0.0.1,IP:{NODE_IP},IP:10.96.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local\nextendedKeyUsage=serverAuth\n"
        ),
    )?;
    sign("apiserver-kubelet-client", "/CN=kube-apiserver-kubelet-client", "extendedKeyUsage=clientAuth\n")?;
    Ok(Pki {
        ca: p("ca.crt"),
        apiserver_cert: p("apiserver.crt"),
        apiserver_key: p("apiserver.key"),
        kubelet_client_cert: p("apiserver-kubelet-client.crt"),
        kubelet_client_key: p("apiserver-kubelet-client.key"),
    })
}

fn registry_dir(state: &Path) -> PathBuf {
    state.join("registry")
}

/// The cluster's registry (Debian's docker-registry), which containerd
/// pulls from; the pause image goes in first.
fn start_registry(root: &Path, state: &Path) -> Result<()> {
    let dir = registry_dir(state);
    fs::create_dir_all(&dir)?;
    let config = secop_test_harness::write_registry_config(&dir, REGISTRY_PORT).map_err(anyhow::Error::msg)?;
    spawn(state, "registry", &crate::datapath::registry_bin()?, &["serve".into(), config.display().to_string()])?;
    wait_for("the cluster registry", Duration::from_secs(30), || {
        Command::new("curl")
            .args(["-sf", &format!("http://127.0.0.1:{REGISTRY_PORT}/v2/")])
            .stdout(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    })?;
    let standin = testimages::build_standin(root)?;
    testimages::push_pause(root, &standin)
}

fn write_containerd_config(node: &Path) -> Result<PathBuf> {
    let config = node.join("containerd.toml");
    let cni_conf = node.join("cni/net.d");
    fs::create_dir_all(&cni_conf)?;
    // Pods get routes to their subnet and to Services only (no default
    // route): nothing a pod sends can leave the machine.
    fs::write(
        cni_conf.join("10-secop.conflist"),
        format!(
            r#"{{"cniVersion":"1.0.0","name":"secop","plugins":[{{"type":"bridge","bridge":"{BRIDGE}","isGateway":true,"ipMasq":false,"hairpinMode":true,"ipam":{{"type":"host-local","ranges":[[{{"subnet":"{POD_SUBNET}","gateway":"{NODE_IP}"}}]],"routes":[{{"dst":"{SERVICE_RANGE}"}}],"dataDir":"{}"}}}},{{"type":"portmap","capabilities":{{"portMappings":true}}}}]}}"#,
            node.join("cni/ipam").display()
        ),
    )?;
    fs::write(
        &config,
        format!(
            r#"version = 2
root = "{root}"
state = "{RUN_DIR}/state"
[grpc]
  address = "{CONTAINERD_DIR}/containerd.sock"
[ttrpc]
  address = "{CONTAINERD_DIR}/containerd.sock.ttrpc"
[debug]
  level = "warn"
[plugins."io.containerd.internal.v1.opt"]
  path = "{root}/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{registry}/{pause}"
  # This machine lacks CAP_SYS_RESOURCE: runc cannot lower oom_score_adj.
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    default_runtime_name = "runc"
    snapshotter = "overlayfs"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        Root = "{RUN_DIR}/runc"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "{cni_conf}"
  [plugins."io.containerd.grpc.v1.cri".registry.mirrors."{registry}"]
    endpoint = ["http://{registry}"]
"#,
            root = node.join("containerd").display(),
            registry = testimages::REGISTRY,
            pause = testimages::PAUSE,
            cni_conf = cni_conf.display(),
        ),
    )?;
    Ok(config)
}

fn kubeconfig_for(state: &Path, name: &str, token: &str, server: &str) -> Result<PathBuf> {
    let path = state.join(format!("kubeconfig-{name}"));
    fs::write(
        &path,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: e2e\n  cluster:\n    server: {server}\n    certificate-authority: {}\nusers:\n- name: {name}\n  user:\n    token: {token}\ncontexts:\n- name: e2e\n  context:\n    cluster: e2e\n    user: {name}\ncurrent-context: e2e\n",
            state.join("pki/ca.crt").display()
        ),
    )?;
    Ok(path)
}

/// Start the node: registry (+ pause image), containerd, kubelet and
/// kube-proxy; wait until the Node is Ready. The control plane is up.
pub fn up(root: &Path, state: &Path, bins: &crate::cluster::Binaries, apiserver: &str) -> Result<()> {
    let kubernetes_bin = bins.kubernetes.as_path();
    let node = dir(state);
    fs::create_dir_all(&node)?;
    fs::create_dir_all(RUN_DIR)?;
    start_registry(root, state)?;

    // Cluster DNS on the node's address: Service and pod names of
    // cluster.local, nothing else (no forwarding).
    let corefile = node.join("Corefile");
    let dns_kubeconfig = kubeconfig_for(state, "coredns", DNS_TOKEN, apiserver)?;
    fs::write(
        &corefile,
        format!(
            "cluster.local:53 in-addr.arpa:53 ip6.arpa:53 {{\n    bind {NODE_IP}\n    errors\n    kubernetes cluster.local in-addr.arpa ip6.arpa {{\n        kubeconfig {} e2e\n        pods insecure\n        fallthrough in-addr.arpa ip6.arpa\n    }}\n}}\n",
            dns_kubeconfig.display()
        ),
    )?;
    spawn(state, "coredns", &bins.coredns, &["-conf".into(), corefile.display().to_string()])?;

    // The BPF file system, shared, as systemd-based nodes have it: Tetragon
    // mounts /sys/fs/bpf with Bidirectional propagation, which a kubelet
    // refuses on a mount that is not shared.
    let bpf_mounted =
        fs::read_to_string("/proc/self/mountinfo")?.lines().any(|l| l.split_whitespace().nth(4) == Some("/sys/fs/bpf"));
    if !bpf_mounted {
        run(Command::new("mount").args(["-t", "bpf", "bpf", "/sys/fs/bpf"]))?;
        run(Command::new("mount").args(["--make-shared", "/sys/fs/bpf"]))?;
        fs::write(node_dir_marker(state), "")?;
    }

    let containerd_config = write_containerd_config(&node)?;
    spawn(state, "containerd", Path::new("containerd"), &["--config".into(), containerd_config.display().to_string()])?;
    wait_for("containerd", Duration::from_secs(30), || Path::new(CONTAINERD_DIR).join("containerd.sock").exists())?;

    let kubelet_dir = node.join("kubelet");
    fs::create_dir_all(&kubelet_dir)?;
    let kubelet_config = node.join("kubelet.yaml");
    // cgroup v1 with cgroupfs and no QoS hierarchy, no eviction or local
    // storage accounting: what this VM supports (shared/reference/real-node.md).
    fs::write(
        &kubelet_config,
        format!(
            r#"apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: {NODE_IP}
port: {KUBELET_PORT}
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
containerRuntimeEndpoint: unix://{CONTAINERD_DIR}/containerd.sock
cgroupDriver: cgroupfs
cgroupsPerQOS: false
enforceNodeAllocatable: []
failSwapOn: false
failCgroupV1: false
localStorageCapacityIsolation: false
evictionHard: {{}}
serializeImagePulls: false
# Cluster names from the node's CoreDNS; no host resolver behind it, so
# pods resolve cluster.local and nothing else.
clusterDNS: [{NODE_IP}]
clusterDomain: cluster.local
resolvConf: ""
podLogsDir: /var/log/pods
authentication:
  anonymous: {{ enabled: false }}
  webhook: {{ enabled: true }}
  x509: {{ clientCAFile: {ca} }}
authorization:
  mode: Webhook
registerWithTaints:
  - {{ key: {TAINT_KEY}, value: "true", effect: NoSchedule }}
"#,
            ca = state.join("pki/ca.crt").display(),
        ),
    )?;
    let kubelet_kubeconfig = kubeconfig_for(state, "kubelet", KUBELET_TOKEN, apiserver)?;
    let p = |p: &Path| p.display().to_string();
    spawn(
        state,
        "kubelet",
        &kubernetes_bin.join("kubelet"),
        &[
            format!("--config={}", p(&kubelet_config)),
            format!("--kubeconfig={}", p(&kubelet_kubeconfig)),
            format!("--root-dir={}", p(&kubelet_dir)),
            format!("--cert-dir={}", p(&node.join("kubelet-pki"))),
            format!("--hostname-override={NAME}"),
            format!("--node-ip={NODE_IP}"),
            "--node-labels=secop.example.io/node=real".into(),
            "--v=1".into(),
        ],
    )?;

    let proxy_kubeconfig = kubeconfig_for(state, "kube-proxy", PROXY_TOKEN, apiserver)?;
    spawn(
        state,
        "kube-proxy",
        &kubernetes_bin.join("kube-proxy"),
        &[
            format!("--kubeconfig={}", p(&proxy_kubeconfig)),
            format!("--hostname-override={NAME}"),
            "--proxy-mode=iptables".into(),
            format!("--cluster-cidr={POD_SUBNET}"),
            "--healthz-bind-address=127.0.0.1:10256".into(),
            "--metrics-bind-address=127.0.0.1:10249".into(),
            // Leave the machine's conntrack limits alone.
            "--conntrack-max-per-core=0".into(),
            "--v=1".into(),
        ],
    )?;
    Ok(())
}

/// Stop the node and remove every trace of it: pods' processes, mounts,
/// network namespaces, the bridge, kube-proxy's iptables rules and the
/// state directories. Safe to call when nothing runs.
pub fn down(state: &Path, kubernetes_bin: Option<&Path>, apiserver_port: u16) -> Result<()> {
    stop_pid(state, "kubelet");
    stop_pid(state, "kube-proxy");
    stop_pid(state, "coredns");
    // The pods' containers, then the shims of our containerd.
    let runc_root = Path::new(RUN_DIR).join("runc/k8s.io");
    if runc_root.exists() {
        let list = Command::new("runc").arg("--root").arg(&runc_root).args(["list", "-q"]).output();
        for id in list
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
            .lines()
            .filter(|l| !l.is_empty())
        {
            let _ = Command::new("runc")
                .arg("--root")
                .arg(&runc_root)
                .args(["delete", "--force", id])
                .stderr(Stdio::null())
                .status();
        }
    }
    let _ = Command::new("pkill")
        .args(["-9", "-f", &format!("containerd-shim-runc-v2 .*-address {CONTAINERD_DIR}/containerd.sock")])
        .status();
    stop_pid(state, "containerd");
    stop_pid(state, "registry");
    if let Some(bin) = kubernetes_bin.map(|b| b.join("kube-proxy")).filter(|b| b.exists()) {
        let _ = Command::new(bin)
            .args(["--cleanup", "--proxy-mode=iptables"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
    remove_kube_iptables();
    for rule in apiserver_guard(apiserver_port) {
        while Command::new("iptables").arg("-D").args(&rule).stderr(Stdio::null()).status().is_ok_and(|s| s.success()) {
        }
    }
    // Pod network namespaces (named cni-<uuid> by containerd), the bridge.
    let netns = Command::new("ip")
        .args(["netns", "list"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    for ns in netns.lines().filter_map(|l| l.split_whitespace().next()).filter(|n| n.starts_with("cni-")) {
        let _ = Command::new("ip").args(["netns", "delete", ns]).status();
    }
    let _ = Command::new("ip").args(["link", "delete", BRIDGE]).stderr(Stdio::null()).status();
    if node_dir_marker(state).exists() {
        let _ = Command::new("umount").arg("/sys/fs/bpf").status();
    }
    // Everything mounted under our directories, deepest first; then remove
    // them without crossing into any file system still mounted there.
    let node = dir(state);
    for base in [node.as_path(), Path::new(RUN_DIR), Path::new(CONTAINERD_DIR)] {
        unmount_below(base)?;
        if base.exists() {
            run(Command::new("rm").args(["-rf", "--one-file-system"]).arg(base))
                .with_context(|| format!("removing {}", base.display()))?;
        }
    }
    // The kubelet's pod logs (it writes them to /var/log/pods, where the
    // node collector reads them).
    let _ = run(&mut sh("rm -rf --one-file-system /var/log/pods/* /var/log/containers/*"));
    // Host paths the features' DaemonSets create on the node
    // (DirectoryOrCreate): osquery's results, the node collector's offsets
    // and queue, Tetragon's export file.
    for path in ["/var/log/security", "/var/lib/otelcol", "/var/run/cilium/tetragon"] {
        let _ = Command::new("rm").args(["-rf", "--one-file-system", path]).status();
    }
    let _ = fs::remove_dir_all(registry_dir(state));
    Ok(())
}

/// The kubelet's own chains (KUBE-FIREWALL, KUBE-KUBELET-CANARY), and any
/// KUBE-* chain kube-proxy's cleanup left: the jumps to them from the
/// built-in chains first, then the chains.
fn remove_kube_iptables() {
    for tool in ["iptables", "ip6tables"] {
        for table in ["filter", "nat", "mangle"] {
            let rules = Command::new(tool).args(["-t", table, "-S"]).stderr(Stdio::null()).output();
            let rules = rules.map(|o| String::from_utf8_lossy(&o.stdout).into_owned()).unwrap_or_default();
            for rule in
                rules.lines().filter(|r| r.starts_with("-A ") && !r.starts_with("-A KUBE-") && r.contains(" -j KUBE-"))
            {
                // `-S` prints rules as arguments; quoted comments keep their quotes.
                let args: Vec<String> = shell_words(&rule[3..]);
                let _ = Command::new(tool).args(["-t", table, "-D"]).args(&args).status();
            }
            let chains: Vec<&str> =
                rules.lines().filter_map(|r| r.strip_prefix("-N ")).filter(|c| c.starts_with("KUBE-")).collect();
            for chain in &chains {
                let _ = Command::new(tool).args(["-t", table, "-F", chain]).status();
            }
            for chain in &chains {
                let _ = Command::new(tool).args(["-t", table, "-X", chain]).status();
            }
        }
    }
}

/// Split an `iptables -S` rule into arguments (double quotes group words).
fn shell_words(line: &str) -> Vec<String> {
    let (mut words, mut current, mut quoted) = (vec![], String::new(), false);
    for c in line.chars() {
        match c {
            '"' => quoted = !quoted,
            ' ' if !quoted => {
                if !current.is_empty() {
                    words.push(std::mem::take(&mut current));
                }
            }
            _ => current.push(c),
        }
    }
    if !current.is_empty() {
        words.push(current);
    }
    words
}

/// Present when `up` mounted the BPF file system (so `down` unmounts it).
fn node_dir_marker(state: &Path) -> PathBuf {
    dir(state).join("bpffs-mounted-by-us")
}

fn unmount_below(base: &Path) -> Result<()> {
    let base = base.display().to_string();
    let mounts = fs::read_to_string("/proc/self/mounts")?;
    let mut points: Vec<&str> =
        mounts.lines().filter_map(|l| l.split_whitespace().nth(1)).filter(|m| m.starts_with(&base)).collect();
    points.sort_by_key(|m| std::cmp::Reverse(m.len()));
    points.dedup();
    for point in points {
        // Octal escapes (\040 for a space) are unlikely in our paths.
        let _ = Command::new("umount").args(["-l", point]).stderr(Stdio::null()).status();
    }
    let left = fs::read_to_string("/proc/self/mounts")?;
    if let Some(point) = left.lines().filter_map(|l| l.split_whitespace().nth(1)).find(|m| m.starts_with(&base)) {
        bail!("{point} is still mounted after unmounting everything under {base}; not removing it");
    }
    Ok(())
}
