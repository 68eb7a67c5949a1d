// The Tetragon stand-in: Tetragon's config directory, gRPC liveness and
// export file, with process_exec events for what kernel.go sees exec in a
// pod and process_kprobe events for the syscalls its TracingPolicies name.
package main

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// tetragon: `tetragon --config-dir=<dir>` (one file per option).
func tetragon(args []string) error {
	dir, ok := flagValue(args, "--config-dir")
	if !ok {
		return errors.New("usage: tetragon --config-dir=<dir>")
	}
	if _, err := os.ReadDir(dir); err != nil {
		return fmt.Errorf("config dir: %w", err)
	}
	option := func(name string) string {
		data, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			return ""
		}
		return strings.TrimSpace(string(data))
	}
	export := option("export-filename")
	if export == "" {
		return fmt.Errorf("config dir %s has no export-filename", dir)
	}
	filter, err := parseExportFilters(option("export-allowlist"), option("export-denylist"))
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(export), 0o755); err != nil {
		return err
	}
	file, err := os.OpenFile(export, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		return fmt.Errorf("export file: %w", err)
	}
	defer file.Close()

	healthAddr := option("health-server-address")
	if healthAddr == "" {
		healthAddr = ":6789"
	}
	listener, err := net.Listen("tcp", healthAddr)
	if err != nil {
		return err
	}
	server := grpc.NewServer()
	status := health.NewServer()
	status.SetServingStatus("liveness", healthpb.HealthCheckResponse_SERVING)
	healthpb.RegisterHealthServer(server, status)
	go server.Serve(listener)
	defer server.Stop()

	procRoot := option("procfs")
	if procRoot == "" {
		procRoot = "/proc"
	}
	watch, err := startKernelWatch(procRoot, kindOpen, kindMount, kindSetns)
	if err != nil {
		return err
	}
	defer watch.Close()
	api, err := inClusterAPI()
	if err != nil {
		return err
	}
	t := &tetragonSensor{
		node: os.Getenv("NODE_NAME"), out: file, filter: filter, api: api,
		containers: newContainerIndex(procRoot), execs: map[uint32]execInfo{},
	}
	t.pods = &podResolver{api: api, node: t.node, byContainer: map[string]*tetragonPod{}}
	go t.watchPolicies()
	logf("Tetragon", "config dir %s, exporting to %s, gRPC liveness on %s, %s", dir, export, healthAddr, filter)
	go func() { <-stopped(); watch.Close() }()
	for {
		e, err := watch.next()
		if err != nil {
			return nil
		}
		t.handle(e)
	}
}

// exportFilters: the export-allowlist event types and the namespaces of
// the export-denylist (one JSON filter per line, as Tetragon reads them).
type exportFilters struct {
	eventSet       map[string]bool // empty: all
	deniedNS       map[string]bool
	denyHealthOnly bool
}

func (f exportFilters) String() string {
	return fmt.Sprintf("export event types %v, namespaces denied %v", keys(f.eventSet), keys(f.deniedNS))
}

func keys(m map[string]bool) []string {
	out := []string{}
	for k := range m {
		out = append(out, k)
	}
	return out
}

func parseExportFilters(allow, deny string) (exportFilters, error) {
	f := exportFilters{eventSet: map[string]bool{}, deniedNS: map[string]bool{}}
	for _, list := range []struct {
		name, text string
		allow      bool
	}{{"export-allowlist", allow, true}, {"export-denylist", deny, false}} {
		for _, line := range strings.Split(list.text, "\n") {
			if strings.TrimSpace(line) == "" {
				continue
			}
			var filter struct {
				EventSet    []string `json:"event_set"`
				Namespace   []string `json:"namespace"`
				HealthCheck bool     `json:"health_check"`
			}
			if err := json.Unmarshal([]byte(line), &filter); err != nil {
				return f, fmt.Errorf("%s: %q: %w", list.name, line, err)
			}
			if list.allow {
				for _, e := range filter.EventSet {
					f.eventSet[e] = true
				}
			} else {
				for _, ns := range filter.Namespace {
					f.deniedNS[ns] = true
				}
			}
		}
	}
	return f, nil
}

func (f exportFilters) exports(eventType, namespace string) bool {
	return (len(f.eventSet) == 0 || f.eventSet[eventType]) && !f.deniedNS[namespace]
}

type execInfo struct {
	binary, arguments string
	ktime             uint64 // when it exec'd
}

type tetragonSensor struct {
	node       string
	out        io.Writer
	filter     exportFilters
	api        *apiClient
	containers *containerIndex
	pods       *podResolver
	mu         sync.Mutex
	execs      map[uint32]execInfo // by PID, for the process of a kprobe event
	policies   map[int64]string    // kind (mount, setns) → TracingPolicy name
	fileProbes []fileProbe         // security_file_permission kprobes
}

// fileProbe is a security_file_permission kprobe with a path-prefix and
// access-mask selector (MAY_WRITE 2, MAY_READ 4), as the feature's
// cron-persistence-monitor and sensitive-file-access policies write it.
// The stand-in sees the open that precedes the read or write.
type fileProbe struct {
	policy   string
	prefixes []string
	mask     int
}

func (p fileProbe) matches(path string, flags uint64) bool {
	write := flags&oAccMode != 0
	read := flags&oAccMode != 1 // O_RDONLY or O_RDWR
	if (p.mask == 2 && !write) || (p.mask == 4 && !read) {
		return false
	}
	for _, prefix := range p.prefixes {
		if strings.HasPrefix(path, prefix) {
			return true
		}
	}
	return false
}

// watchPolicies lists the TracingPolicies every 10 s, as Tetragon watches
// them, and keeps the kprobes on the syscalls the stand-in sees.
func (t *tetragonSensor) watchPolicies() {
	for {
		var list struct {
			Items []struct {
				Metadata struct {
					Name string `json:"name"`
				} `json:"metadata"`
				Spec struct {
					Kprobes []struct {
						Call      string `json:"call"`
						Selectors []struct {
							MatchArgs []struct {
								Index    int      `json:"index"`
								Operator string   `json:"operator"`
								Values   []string `json:"values"`
							} `json:"matchArgs"`
						} `json:"selectors"`
					} `json:"kprobes"`
				} `json:"spec"`
			} `json:"items"`
		}
		if err := t.api.get("/apis/cilium.io/v1alpha1/tracingpolicies", &list); err != nil {
			logf("Tetragon", "listing TracingPolicies: %v", err)
		} else {
			policies := map[int64]string{}
			var fileProbes []fileProbe
			for _, p := range list.Items {
				for _, k := range p.Spec.Kprobes {
					switch strings.TrimPrefix(k.Call, "__x64_") {
					case "sys_mount":
						policies[kindMount] = p.Metadata.Name
					case "sys_setns":
						policies[kindSetns] = p.Metadata.Name
					case "security_file_permission":
						for _, sel := range k.Selectors {
							probe := fileProbe{policy: p.Metadata.Name}
							for _, m := range sel.MatchArgs {
								switch {
								case m.Index == 0 && m.Operator == "Prefix":
									probe.prefixes = m.Values
								case m.Index == 1 && m.Operator == "Equal" && len(m.Values) == 1:
									probe.mask, _ = strconv.Atoi(m.Values[0])
								}
							}
							fileProbes = append(fileProbes, probe)
						}
					}
				}
			}
			t.mu.Lock()
			t.policies = policies
			t.fileProbes = fileProbes
			t.mu.Unlock()
		}
		time.Sleep(10 * time.Second)
	}
}

// tetragonArguments joins argv[1:] as Tetragon prints it: an argument with
// a space is quoted.
func tetragonArguments(argv []string) string {
	if len(argv) < 2 {
		return ""
	}
	parts := make([]string, 0, len(argv)-1)
	for _, a := range argv[1:] {
		if strings.ContainsAny(a, " \t") {
			a = `"` + strings.ReplaceAll(a, `"`, `\"`) + `"`
		}
		parts = append(parts, a)
	}
	return strings.Join(parts, " ")
}

func (t *tetragonSensor) handle(e kernelEvent) {
	t.mu.Lock()
	if e.Kind == kindExec {
		t.execs[e.Pid] = execInfo{binary: e.Str1, arguments: tetragonArguments(e.Args), ktime: e.Ktime}
		if len(t.execs) > 4096 {
			t.execs = map[uint32]execInfo{e.Pid: t.execs[e.Pid]}
		}
	}
	// A process is a pod's once it has exec'd there, and a child forked
	// without an exec (a busybox shell's applet) is its parent's process,
	// as Tetragon's process cache inherits it on clone. The runtime's own
	// work in a new container (runc init's mounts) belongs to no exec in
	// the pod: Tetragon reports it without a pod, and so it is not
	// exported here.
	// Events of different CPUs arrive out of order: an exec counts only
	// for what the process did after it.
	exec, known := t.execs[e.Pid]
	if !known || exec.ktime > e.Ktime {
		exec, known = t.execs[e.Ppid]
		known = known && exec.ktime <= e.Ktime
	}
	policy := t.policies[int64(e.Kind)]
	var probe *fileProbe
	if e.Kind == kindOpen {
		for i := range t.fileProbes {
			if t.fileProbes[i].matches(e.Str1, e.Int1) {
				probe = &t.fileProbes[i]
				policy = probe.policy
				break
			}
		}
	}
	t.mu.Unlock()

	var eventType string
	switch {
	case e.Kind == kindExec:
		eventType = "PROCESS_EXEC"
	case policy != "" && known:
		eventType = "PROCESS_KPROBE"
	default:
		return
	}
	id := t.containers.lookup(e.MntNS)
	if id == "" {
		return
	}
	pod := t.pods.lookup(id)
	namespace := ""
	if pod != nil {
		namespace = pod.Namespace
	}
	if !t.filter.exports(eventType, namespace) {
		return
	}
	now := time.Now().UTC()
	process := map[string]any{
		"pid": e.Pid, "uid": e.UID, "binary": exec.binary, "arguments": exec.arguments,
		"flags": "execve", "start_time": now.Format(time.RFC3339Nano), "docker": id[:31],
	}
	if pod != nil {
		process["pod"] = pod
	}
	var event map[string]any
	if eventType == "PROCESS_EXEC" {
		event = map[string]any{"process_exec": map[string]any{"process": process, "parent": map[string]any{"pid": e.Ppid}}}
	} else {
		var callArgs []map[string]any
		function := "__x64_sys_mount"
		switch {
		case probe != nil:
			function = "security_file_permission"
			callArgs = []map[string]any{{"file_arg": map[string]any{"path": e.Str1}}, {"int_arg": probe.mask}}
		case e.Kind == kindMount:
			callArgs = []map[string]any{{"string_arg": e.Str1}, {"string_arg": e.Str2}, {"string_arg": e.Str3}}
		default:
			function = "__x64_sys_setns"
			callArgs = []map[string]any{{"int_arg": int32(e.Int1)}, {"int_arg": int32(e.Int2)}}
		}
		event = map[string]any{"process_kprobe": map[string]any{
			"process": process, "parent": map[string]any{"pid": e.Ppid}, "function_name": function,
			"args": callArgs, "action": "KPROBE_ACTION_POST", "policy_name": policy, "return_action": "KPROBE_ACTION_POST",
		}}
	}
	event["node_name"] = t.node
	event["time"] = now.Format(time.RFC3339Nano)
	event["secop_standin"] = true
	line, _ := json.Marshal(event)
	t.out.Write(append(line, '\n'))
}

// tetragonPod is the pod object of Tetragon's events.
type tetragonPod struct {
	Namespace string            `json:"namespace"`
	Name      string            `json:"name"`
	Container map[string]any    `json:"container"`
	Labels    map[string]string `json:"pod_labels,omitempty"`
}

// podResolver finds a container's pod among the node's pods, from the API
// server as Tetragon's pod informer does.
type podResolver struct {
	api         *apiClient
	node        string
	mu          sync.Mutex
	byContainer map[string]*tetragonPod
	listed      time.Time
}

func (r *podResolver) lookup(id string) *tetragonPod {
	r.mu.Lock()
	defer r.mu.Unlock()
	// A container whose first process this is may not be in the pod's
	// status yet: the kubelet reports it once the runtime has started it.
	// Ask again (at most every 250 ms) until it is, for up to a second.
	for attempt := 0; ; attempt++ {
		if p, ok := r.byContainer[id]; ok || attempt == 4 {
			return p
		}
		if wait := 250*time.Millisecond - time.Since(r.listed); wait > 0 {
			time.Sleep(wait)
		}
		r.list()
	}
}

type containerStatus struct {
	Name        string `json:"name"`
	ContainerID string `json:"containerID"`
	Image       string `json:"image"`
	ImageID     string `json:"imageID"`
}

// list reads the node's pods into byContainer.
func (r *podResolver) list() {
	r.listed = time.Now()
	var pods struct {
		Items []struct {
			Metadata struct {
				Namespace string            `json:"namespace"`
				Name      string            `json:"name"`
				Labels    map[string]string `json:"labels"`
			} `json:"metadata"`
			Status struct {
				ContainerStatuses     []containerStatus `json:"containerStatuses"`
				InitContainerStatuses []containerStatus `json:"initContainerStatuses"`
			} `json:"status"`
		} `json:"items"`
	}
	if err := r.api.get("/api/v1/pods?fieldSelector="+url.QueryEscape("spec.nodeName="+r.node), &pods); err != nil {
		logf("Tetragon", "listing the node's pods: %v", err)
		return
	}
	for _, p := range pods.Items {
		// Init containers too, as Tetragon's pod watcher finds them.
		for _, c := range append(p.Status.ContainerStatuses, p.Status.InitContainerStatuses...) {
			_, cid, _ := strings.Cut(c.ContainerID, "://")
			r.byContainer[cid] = &tetragonPod{
				Namespace: p.Metadata.Namespace, Name: p.Metadata.Name, Labels: p.Metadata.Labels,
				Container: map[string]any{"id": c.ContainerID, "name": c.Name, "image": map[string]string{"id": c.ImageID, "name": c.Image}},
			}
		}
	}
}

// apiClient reads from the API server with the pod's service account.
type apiClient struct {
	base      string
	client    *http.Client
	mu        sync.Mutex
	token     string
	tokenRead time.Time
}

const serviceAccountDir = "/var/run/secrets/kubernetes.io/serviceaccount"

func inClusterAPI() (*apiClient, error) {
	host, port := os.Getenv("KUBERNETES_SERVICE_HOST"), os.Getenv("KUBERNETES_SERVICE_PORT")
	if host == "" {
		return nil, errors.New("not in a pod: KUBERNETES_SERVICE_HOST is not set")
	}
	ca, err := os.ReadFile(serviceAccountDir + "/ca.crt")
	if err != nil {
		return nil, fmt.Errorf("service account: %w", err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(ca)
	return &apiClient{
		base:   "https://" + net.JoinHostPort(host, port),
		client: &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}},
	}, nil
}

func (a *apiClient) get(path string, into any) error {
	// The projected token is re-read once a minute, as client-go does.
	a.mu.Lock()
	if time.Since(a.tokenRead) > time.Minute {
		token, err := os.ReadFile(serviceAccountDir + "/token")
		if err != nil {
			a.mu.Unlock()
			return err
		}
		a.token, a.tokenRead = strings.TrimSpace(string(token)), time.Now()
	}
	token := a.token
	a.mu.Unlock()
	req, _ := http.NewRequest(http.MethodGet, a.base+path, nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := a.client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return fmt.Errorf("GET %s: %s: %s", path, resp.Status, body)
	}
	return json.NewDecoder(resp.Body).Decode(into)
}
