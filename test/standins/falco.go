// The Falco stand-in: Falco's configuration, rules files, probe and JSON
// alerts, with detections from what kernel.go sees.
package main

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"gopkg.in/yaml.v3"
	cri "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// falcoConfig is the part of falco.yaml the stand-in reads.
type falcoConfig struct {
	RulesFiles []string `yaml:"rules_files"`
	RulesFile  []string `yaml:"rules_file"`
	Rules      []struct {
		Disable struct {
			Rule string `yaml:"rule"`
			Tag  string `yaml:"tag"`
		} `yaml:"disable"`
	} `yaml:"rules"`
	Webserver struct {
		ListenPort int `yaml:"listen_port"`
	} `yaml:"webserver"`
	Plugins []struct {
		Name       string `yaml:"name"`
		InitConfig struct {
			Engines map[string]struct {
				Enabled bool     `yaml:"enabled"`
				Sockets []string `yaml:"sockets"`
			} `yaml:"engines"`
		} `yaml:"init_config"`
	} `yaml:"plugins"`
}

// One entry of a rules file; lists and macros are read and ignored.
type falcoRuleEntry struct {
	Rule      string   `yaml:"rule"`
	Condition string   `yaml:"condition"`
	Priority  string   `yaml:"priority"`
	Tags      []string `yaml:"tags"`
	Enabled   *bool    `yaml:"enabled"`
}

// The stable rules of falco_rules.yaml (falcosecurity/rules, shipped in the
// falco 0.41 image) that the stand-in detects, for when the stock file is
// not in the stand-in's image. Priority and tags as that file has them.
var stockFalcoRules = map[string]falcoRuleEntry{
	"Terminal shell in container":              {Priority: "NOTICE", Tags: []string{"maturity_stable", "container", "shell", "mitre_execution", "T1059"}},
	"Contact K8S API Server From Container":    {Priority: "NOTICE", Tags: []string{"maturity_stable", "container", "network", "k8s", "mitre_discovery", "T1565"}},
	"Read sensitive file untrusted":            {Priority: "WARNING", Tags: []string{"maturity_stable", "host", "container", "filesystem", "mitre_credential_access", "T1555"}},
	"Drop and execute new binary in container": {Priority: "CRITICAL", Tags: []string{"maturity_stable", "container", "process", "mitre_persistence", "TA0003", "PCI_DSS_11.5.1"}},
}

// falco: `falco -c /etc/falco/falco.yaml`. Loads the config and every rules
// file it names (files, or directories of *.yaml), serves /healthz on the
// webserver port, and prints an alert in Falco's JSON output for each
// detection below whose rule is loaded and not disabled.
func falco(args []string) error {
	path, ok := flagValue(args, "-c")
	if !ok {
		return errors.New("usage: falco -c <falco.yaml>")
	}
	text, err := mustReadFile("config", path)
	if err != nil {
		return err
	}
	var config falcoConfig
	if err := yaml.Unmarshal(text, &config); err != nil {
		return fmt.Errorf("config %s: %w", path, err)
	}
	rules, err := loadFalcoRules(append(config.RulesFiles, config.RulesFile...))
	if err != nil {
		return err
	}
	for _, d := range config.Rules {
		delete(rules, d.Disable.Rule)
	}
	port := config.Webserver.ListenPort
	if port == 0 {
		port = 8765
	}
	if err := serveHTTP(fmt.Sprintf(":%d", port), "/healthz"); err != nil {
		return err
	}
	var sockets []string
	for _, p := range config.Plugins {
		for _, engine := range p.InitConfig.Engines {
			if engine.Enabled {
				sockets = append(sockets, engine.Sockets...)
			}
		}
	}
	hostRoot := os.Getenv("HOST_ROOT")
	watch, err := startKernelWatch(hostRoot+"/proc", kindOpen, kindSetns, kindConnect)
	if err != nil {
		return err
	}
	defer watch.Close()
	names := make([]string, 0, len(rules))
	for name := range rules {
		names = append(names, name)
	}
	logf("Falco", "config %s, %d rules loaded (detected by the stand-in: %v), runtime sockets %v, /healthz on :%d", path, len(rules), detectable(names), sockets, port)
	s := &falcoSensor{
		hostname:   os.Getenv("FALCO_HOSTNAME"),
		rules:      rules,
		containers: newContainerIndex(hostRoot + "/proc"),
		runtime:    &criResolver{sockets: sockets, cache: map[string]*criContainer{}},
		apiHost:    os.Getenv("KUBERNETES_SERVICE_HOST"),
		apiPort:    os.Getenv("KUBERNETES_SERVICE_PORT"),
	}
	go func() { <-stopped(); watch.Close() }()
	for {
		e, err := watch.next()
		if err != nil {
			return nil // closed on SIGTERM
		}
		s.handle(e)
	}
}

func loadFalcoRules(paths []string) (map[string]falcoRuleEntry, error) {
	rules := map[string]falcoRuleEntry{}
	for _, path := range paths {
		info, err := os.Stat(path)
		if errors.Is(err, os.ErrNotExist) && strings.HasPrefix(path, "/etc/falco/falco_rules") {
			// The image's stock rules: the real image ships them.
			for name, rule := range stockFalcoRules {
				rules[name] = rule
			}
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("rules file %s: %w", path, err)
		}
		files := []string{path}
		if info.IsDir() {
			files, _ = filepath.Glob(filepath.Join(path, "*.yaml"))
		}
		for _, f := range files {
			data, err := mustReadFile("rules file", f)
			if err != nil {
				return nil, err
			}
			var entries []falcoRuleEntry
			if err := yaml.Unmarshal(data, &entries); err != nil {
				return nil, fmt.Errorf("rules file %s: %w", f, err)
			}
			for _, e := range entries {
				switch {
				case e.Rule == "":
				case e.Enabled != nil && !*e.Enabled:
					delete(rules, e.Rule)
				case e.Condition != "":
					rules[e.Rule] = e
				}
			}
		}
	}
	return rules, nil
}

func detectable(names []string) []string {
	var out []string
	for _, n := range names {
		if _, ok := falcoDetections[n]; ok {
			out = append(out, n)
		}
	}
	return out
}

// A detection: the stand-in's version of a rule's condition, over one
// kernel event in a container. It returns the rule's output text (without
// time and priority) and its output fields, or ok=false.
type falcoDetection func(s *falcoSensor, e kernelEvent) (output string, fields map[string]any, ok bool)

var shells = map[string]bool{"ash": true, "bash": true, "csh": true, "ksh": true, "sh": true, "tcsh": true, "zsh": true, "dash": true}

// Falco's container_entrypoint macro: the parent of a process started by
// the runtime (kubectl exec), not by another process in the container.
var entrypointParents = map[string]bool{"runc:[0:PARENT]": true, "runc:[1:CHILD]": true, "runc": true, "docker-runc": true, "exe": true, "docker-runc-cur": true, "containerd-shim": true, "systemd": true, "crio": true}

// The operator's list secop_file_reader_binaries (features-wasm/falco): the
// token rule fires for these, not for a pod's own API client.
var fileReaders = map[string]bool{"cat": true, "head": true, "tail": true, "more": true, "less": true, "base64": true, "xxd": true, "od": true, "hexdump": true,
	"strings": true, "grep": true, "egrep": true, "fgrep": true, "cp": true, "dd": true, "tac": true, "nl": true, "sed": true, "awk": true, "gawk": true, "busybox": true,
	"ash": true, "bash": true, "csh": true, "ksh": true, "sh": true, "tcsh": true, "zsh": true, "dash": true}

var sensitiveFiles = map[string]bool{"/etc/shadow": true, "/etc/sudoers": true, "/etc/pam.conf": true, "/etc/security/pwquality.conf": true}

const (
	oAccMode = 0x3
	oCreat   = 0x40
	oTrunc   = 0x200
)

var falcoDetections = map[string]falcoDetection{
	"Terminal shell in container": func(s *falcoSensor, e kernelEvent) (string, map[string]any, bool) {
		if e.Kind != kindExec || !shells[e.Comm] || !e.TTY || !entrypointParents[e.PComm] {
			return "", nil, false
		}
		return fmt.Sprintf("A shell was spawned in a container with an attached terminal | evt_type=execve user_uid=%d process=%s proc_exepath=%s parent=%s command=%s terminal=1",
				e.UID, e.Comm, e.Str1, e.PComm, strings.Join(e.Args, " ")),
			map[string]any{"evt.type": "execve", "proc.exepath": e.Str1, "proc.pname": e.PComm, "proc.tty": 1, "user.uid": e.UID}, true
	},
	"Read service account token in container": func(s *falcoSensor, e kernelEvent) (string, map[string]any, bool) {
		path := e.Str1
		token := (strings.HasPrefix(path, "/var/run/secrets/kubernetes.io/serviceaccount/") || strings.HasPrefix(path, "/run/secrets/kubernetes.io/serviceaccount/")) && strings.HasSuffix(path, "/token")
		if e.Kind != kindOpen || e.Int1&oAccMode != 0 || !token || !fileReaders[e.Comm] {
			return "", nil, false
		}
		return fmt.Sprintf("Service account token read in container (file=%s process=%s)", path, e.Comm), map[string]any{"fd.name": path}, true
	},
	"Read sensitive file untrusted": func(s *falcoSensor, e kernelEvent) (string, map[string]any, bool) {
		if e.Kind != kindOpen || e.Int1&oAccMode != 0 || !sensitiveFiles[e.Str1] {
			return "", nil, false
		}
		return fmt.Sprintf("Sensitive file opened for reading by non-trusted program | file=%s process=%s", e.Str1, e.Comm), map[string]any{"fd.name": e.Str1}, true
	},
	"Write below etc": func(s *falcoSensor, e kernelEvent) (string, map[string]any, bool) {
		if e.Kind != kindOpen || e.Int1&(oAccMode|oCreat|oTrunc) == 0 || !strings.HasPrefix(e.Str1, "/etc/") {
			return "", nil, false
		}
		return fmt.Sprintf("File below /etc opened for writing | file=%s process=%s", e.Str1, e.Comm), map[string]any{"fd.name": e.Str1}, true
	},
	"Schedule Cron Jobs": func(s *falcoSensor, e kernelEvent) (string, map[string]any, bool) {
		write := e.Kind == kindOpen && e.Int1&oAccMode != 0 && strings.HasPrefix(e.Str1, "/etc/cron")
		if !write && !(e.Kind == kindExec && e.Comm == "crontab") {
			return "", nil, false
		}
		return fmt.Sprintf("Cron jobs were scheduled to run | file=%s process=%s parent=%s command=%s", e.Str1, e.Comm, e.PComm, strings.Join(e.Args, " ")),
			map[string]any{"fd.name": e.Str1, "proc.pname": e.PComm}, true
	},
	"Change thread namespace": func(s *falcoSensor, e kernelEvent) (string, map[string]any, bool) {
		if e.Kind != kindSetns || strings.HasPrefix(e.Comm, "runc") {
			return "", nil, false
		}
		return fmt.Sprintf("Namespace change (setns) by unexpected program | process=%s parent=%s", e.Comm, e.PComm), map[string]any{"evt.type": "setns", "proc.pname": e.PComm}, true
	},
	"Contact K8S API Server From Container": func(s *falcoSensor, e kernelEvent) (string, map[string]any, bool) {
		ip, port, ok := sockaddrIPv4(e.Raw1)
		if e.Kind != kindConnect || !ok || ip.String() != s.apiHost || strconv.Itoa(port) != s.apiPort {
			return "", nil, false
		}
		return fmt.Sprintf("Unexpected connection to K8s API Server from container | connection=%s:%d process=%s", ip, port, e.Comm),
			map[string]any{"evt.type": "connect", "fd.sip": ip.String(), "fd.sport": port}, true
	},
}

// sockaddrIPv4 decodes a struct sockaddr_in.
func sockaddrIPv4(raw []byte) (net.IP, int, bool) {
	if len(raw) < 8 || binary.LittleEndian.Uint16(raw) != 2 { // AF_INET
		return nil, 0, false
	}
	return net.IPv4(raw[4], raw[5], raw[6], raw[7]), int(binary.BigEndian.Uint16(raw[2:])), true
}

type falcoSensor struct {
	hostname         string
	rules            map[string]falcoRuleEntry
	containers       *containerIndex
	runtime          *criResolver
	apiHost, apiPort string
}

// Falco prints priorities capitalised: "Notice", "Warning".
func priorityLabel(p string) string {
	p = strings.ToLower(p)
	if p == "info" || p == "informational" {
		return "Informational"
	}
	if p == "" {
		return "Notice"
	}
	return strings.ToUpper(p[:1]) + p[1:]
}

func (s *falcoSensor) handle(e kernelEvent) {
	var container *criContainer
	// The stand-in's few detections, each only if its rule is loaded: the
	// loaded rules may be hundreds, and this runs for every event.
	for name, detect := range falcoDetections {
		rule, ok := s.rules[name]
		if !ok {
			continue
		}
		output, fields, ok := detect(s, e)
		if !ok {
			continue
		}
		if container == nil {
			// `container` in every rule: a process of a pod's container.
			id := s.containers.lookup(e.MntNS)
			if id == "" {
				return
			}
			if container = s.runtime.lookup(id); container == nil {
				return
			}
		}
		now := time.Now().UTC()
		priority := priorityLabel(rule.Priority)
		fields["evt.time"] = now.UnixNano()
		fields["proc.name"] = e.Comm
		fields["proc.cmdline"] = strings.Join(e.Args, " ")
		fields["k8s.ns.name"] = container.namespace
		fields["k8s.pod.name"] = container.pod
		fields["container.id"] = container.id[:12]
		fields["container.image.repository"] = container.repository
		line, _ := json.Marshal(map[string]any{
			"hostname":      s.hostname,
			"output":        fmt.Sprintf("%s: %s %s | k8s.ns.name=%s k8s.pod.name=%s container.id=%s", now.Format("15:04:05.000000000"), priority, output, container.namespace, container.pod, container.id[:12]),
			"output_fields": fields,
			"priority":      priority,
			"rule":          name,
			"source":        "syscall",
			"tags":          rule.Tags,
			"time":          now.Format(time.RFC3339Nano),
			"secop_standin": true,
		})
		fmt.Println(string(line))
	}
}

// criContainer is what Falco's container plugin learns from the runtime.
type criContainer struct {
	id, name, namespace, pod, repository string
}

// criResolver asks the container runtime (CRI over the sockets in the
// container plugin's config) which pod a container belongs to.
type criResolver struct {
	sockets []string
	mu      sync.Mutex
	cache   map[string]*criContainer
}

func (r *criResolver) lookup(id string) *criContainer {
	r.mu.Lock()
	defer r.mu.Unlock()
	if c, ok := r.cache[id]; ok {
		return c
	}
	for _, socket := range r.sockets {
		if _, err := os.Stat(socket); err != nil {
			continue
		}
		conn, err := grpc.NewClient("unix://"+socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		status, err := cri.NewRuntimeServiceClient(conn).ContainerStatus(ctx, &cri.ContainerStatusRequest{ContainerId: id})
		cancel()
		conn.Close()
		if err != nil || status.Status == nil {
			continue
		}
		labels := status.Status.Labels
		image := status.Status.GetImage().GetImage()
		if i := strings.LastIndex(image, ":"); i > strings.LastIndex(image, "/") {
			image = image[:i]
		}
		c := &criContainer{id: id, name: labels["io.kubernetes.container.name"], namespace: labels["io.kubernetes.pod.namespace"], pod: labels["io.kubernetes.pod.name"], repository: image}
		r.cache[id] = c
		return c
	}
	logf("Falco", "container %s: not found through %v", id, r.sockets)
	return nil
}
