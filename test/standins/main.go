// Sensor stand-ins for the real-node tests.
//
// The sensors' own images (Falco, Tetragon, osquery, the Trivy Operator)
// cannot be pulled on the test machines. Each stand-in is this one static
// program, installed in its image under the real tool's path and chosen by
// the name it is started as. It behaves like the real tool at the boundary
// the operator depends on, and nowhere else:
//
//   - it accepts the real tool's arguments and refuses to start when a file
//     they name (config, flag file, rules, packs) is missing or malformed,
//     as the tool would: a pod spec that mounts them wrongly fails here;
//   - it answers the real tool's probes (Falco's /healthz, Tetragon's gRPC
//     liveness service, the Trivy Operator's /healthz/ and /readyz/);
//   - it writes events in the real tool's format where the real tool writes
//     them: Falco alerts as JSON lines on stdout, Tetragon events into its
//     export file (tailed to stdout by the export-stdout stand-in), osquery
//     results into osqueryd.results.log under --logger_path.
//
// It does not observe the kernel: no eBPF, no syscalls seen, no packages
// scanned. Every event line carries "secop_standin": true so that nobody
// mistakes stand-in output for a detection. What the stand-ins prove and
// what they do not is in test/standins/README.md.
package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

func main() {
	name := filepath.Base(os.Args[0])
	args := os.Args[1:]
	// `standin <tool> args...` as well as a link named after the tool.
	if name == "standin" && len(args) > 0 {
		name, args = args[0], args[1:]
	}
	var err error
	switch name {
	case "falco":
		err = falco(args)
	case "tetragon":
		err = tetragon(args)
	case "hubble-export-stdout":
		err = exportStdout(args)
	case "osqueryd":
		err = osqueryd(args)
	case "trivy-operator":
		err = trivyOperator(args)
	case "pause":
		err = pause()
	default:
		err = fmt.Errorf("unknown stand-in %q (falco, tetragon, hubble-export-stdout, osqueryd, trivy-operator, pause)", name)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "secop stand-in %s: %v\n", name, err)
		os.Exit(1)
	}
}

func logf(tool, format string, a ...any) {
	fmt.Fprintf(os.Stderr, "%s secop stand-in for %s: %s\n", time.Now().UTC().Format(time.RFC3339), tool, fmt.Sprintf(format, a...))
}

// stopped is closed on SIGTERM or SIGINT: as PID 1 in its container a
// process that installs no handler ignores SIGTERM, and the kubelet would
// wait out the grace period before killing it.
func stopped() <-chan os.Signal {
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, syscall.SIGTERM, syscall.SIGINT)
	return ch
}

func pause() error {
	<-stopped()
	return nil
}

// serveHTTP answers `paths` with 200 on addr, in the background.
func serveHTTP(addr string, paths ...string) error {
	listener, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	mux := http.NewServeMux()
	for _, p := range paths {
		mux.HandleFunc(p, func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			io.WriteString(w, `{"status":"ok"}`)
		})
	}
	go http.Serve(listener, mux)
	return nil
}

func flagValue(args []string, name string) (string, bool) {
	for i, a := range args {
		if v, ok := strings.CutPrefix(a, name+"="); ok {
			return v, true
		}
		if a == name && i+1 < len(args) {
			return args[i+1], true
		}
	}
	return "", false
}

func mustReadFile(what, path string) ([]byte, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	return data, nil
}

// ---- Falco ---------------------------------------------------------------

// falco: `falco -c /etc/falco/falco.yaml`. Loads the config and every rules
// file it names (files, or directories of *.yaml), serves /healthz on the
// webserver port, and prints one alert per minute in Falco's JSON output
// format (the "heartbeat" rule is the stand-in's own).
func falco(args []string) error {
	config, ok := flagValue(args, "-c")
	if !ok {
		return errors.New("usage: falco -c <falco.yaml>")
	}
	text, err := mustReadFile("config", config)
	if err != nil {
		return err
	}
	port := "8765"
	var rules []string
	inRules := false
	for _, line := range strings.Split(string(text), "\n") {
		trimmed := strings.TrimSpace(line)
		if v, ok := strings.CutPrefix(trimmed, "listen_port:"); ok {
			port = strings.TrimSpace(v)
		}
		switch {
		case strings.HasPrefix(line, "rules_files:") || strings.HasPrefix(line, "rules_file:"):
			inRules = true
		case inRules && strings.HasPrefix(trimmed, "- "):
			rules = append(rules, strings.Trim(strings.TrimSpace(trimmed[2:]), `"'`))
		case inRules && trimmed != "" && !strings.HasPrefix(line, " "):
			inRules = false
		}
	}
	loaded := 0
	for _, path := range rules {
		info, err := os.Stat(path)
		if errors.Is(err, os.ErrNotExist) && strings.HasPrefix(path, "/etc/falco/falco_rules") {
			// The image's stock rules: the real image ships them.
			continue
		}
		if err != nil {
			return fmt.Errorf("rules file %s: %w", path, err)
		}
		files := []string{path}
		if info.IsDir() {
			files, _ = filepath.Glob(filepath.Join(path, "*.yaml"))
		}
		for _, f := range files {
			if _, err := mustReadFile("rules file", f); err != nil {
				return err
			}
			loaded++
		}
	}
	if err := serveHTTP(":"+port, "/healthz"); err != nil {
		return err
	}
	hostname := os.Getenv("FALCO_HOSTNAME")
	logf("Falco", "config %s, %d local rules files, /healthz on :%s", config, loaded, port)
	emit := func() {
		now := time.Now().UTC()
		line, _ := json.Marshal(map[string]any{
			"hostname": hostname,
			"output":   fmt.Sprintf("%s: Notice secop stand-in heartbeat (node=%s)", now.Format(time.RFC3339Nano), hostname),
			"output_fields": map[string]any{
				"evt.time": now.UnixNano(), "k8s.ns.name": nil, "k8s.pod.name": nil, "proc.name": "falco",
			},
			"priority":      "Notice",
			"rule":          "secop stand-in heartbeat",
			"source":        "syscall",
			"tags":          []string{"secop_standin"},
			"time":          now.Format(time.RFC3339Nano),
			"secop_standin": true,
		})
		fmt.Println(string(line))
	}
	return tick(time.Minute, emit)
}

// tick runs emit now and every `every` until SIGTERM.
func tick(every time.Duration, emit func()) error {
	stop := stopped()
	emit()
	ticker := time.NewTicker(every)
	defer ticker.Stop()
	for {
		select {
		case <-stop:
			return nil
		case <-ticker.C:
			emit()
		}
	}
}

// ---- Tetragon ------------------------------------------------------------

// tetragon: `tetragon --config-dir=<dir>` (one file per option). Serves the
// gRPC health service "liveness" on its health-server-address, as the
// real agent does for its probe, and appends events in Tetragon's export format to the file named
// by the `export-filename` option.
func tetragon(args []string) error {
	dir, ok := flagValue(args, "--config-dir")
	if !ok {
		return errors.New("usage: tetragon --config-dir=<dir>")
	}
	option := func(name string) string {
		data, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			return ""
		}
		return strings.TrimSpace(string(data))
	}
	if _, err := os.ReadDir(dir); err != nil {
		return fmt.Errorf("config dir: %w", err)
	}
	export := option("export-filename")
	if export == "" {
		return fmt.Errorf("config dir %s has no export-filename", dir)
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

	node := os.Getenv("NODE_NAME")
	logf("Tetragon", "config dir %s, exporting to %s, gRPC liveness on %s", dir, export, healthAddr)
	return tick(time.Minute, func() {
		line, _ := json.Marshal(map[string]any{
			"process_exec": map[string]any{
				"process": map[string]any{
					"binary": "/usr/bin/tetragon", "arguments": "secop stand-in heartbeat", "pid": os.Getpid(), "uid": os.Getuid(),
				},
			},
			"node_name":     node,
			"time":          time.Now().UTC().Format(time.RFC3339Nano),
			"secop_standin": true,
		})
		file.Write(append(line, '\n'))
	})
}

// exportStdout: `hubble-export-stdout <file>...` follows the files (from
// their end of the moment they appear, across truncation) onto stdout.
func exportStdout(args []string) error {
	if len(args) == 0 {
		return errors.New("usage: hubble-export-stdout <file>")
	}
	logf("Tetragon export-stdout", "following %s", strings.Join(args, ", "))
	for _, path := range args {
		go follow(path, os.Stdout)
	}
	<-stopped()
	return nil
}

func follow(path string, out io.Writer) {
	var offset int64
	for {
		file, err := os.Open(path)
		if err != nil {
			time.Sleep(time.Second)
			continue
		}
		if info, err := file.Stat(); err == nil && info.Size() < offset {
			offset = 0 // rotated or truncated
		}
		file.Seek(offset, io.SeekStart)
		reader := bufio.NewReader(file)
		for {
			line, _ := reader.ReadBytes('\n')
			if len(line) > 0 && line[len(line)-1] == '\n' {
				out.Write(line)
				offset += int64(len(line))
				continue
			}
			break
		}
		file.Close()
		time.Sleep(500 * time.Millisecond)
	}
}

// ---- Trivy Operator ------------------------------------------------------

// trivy-operator: answers its probes (/healthz/, /readyz/ on :9090) and
// /metrics on :8080. It scans nothing and writes no reports.
func trivyOperator(args []string) error {
	if err := serveHTTP(":9090", "/healthz/", "/readyz/"); err != nil {
		return err
	}
	if err := serveHTTP(":8080", "/metrics"); err != nil {
		return err
	}
	logf("Trivy Operator", "namespace %s, probes on :9090, metrics on :8080", os.Getenv("OPERATOR_NAMESPACE"))
	<-stopped()
	return nil
}
