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
// The Falco and Tetragon stand-ins see the node's kernel through two small
// BPF programs (kernel.go): execs, and the openat, mount, setns and connect
// calls of processes in containers. Their detections are simple Go
// versions of the rules the scenarios of test/scenarios need (falco.go,
// tetragon.go), raised only when the rule or TracingPolicy is loaded. Every
// event line carries "secop_standin": true so that nobody mistakes
// stand-in output for the real sensor's. What the stand-ins prove and what
// they do not is in test/standins/README.md.
package main

import (
	"bufio"
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
	case "kernel-events":
		err = kernelEvents(args)
	default:
		err = fmt.Errorf("unknown stand-in %q (falco, tetragon, hubble-export-stdout, osqueryd, trivy-operator, pause, kernel-events)", name)
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

// ---- Tetragon's export-stdout sidecar -------------------------------------

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
