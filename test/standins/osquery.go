package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"
)

// osqueryd: `osqueryd --flagfile=<file> ...`. Reads the flag file, loads the
// JSON config (--config_path) and every pack it names, and answers each
// pack query on its interval from /proc, as osquery's tables would on a
// hostPID pod: system_info, kernel_info, os_version (of PID 1),
// listening_ports joined with processes, kernel_modules, processes (the
// containers query: container ids from the cgroups of the pods' processes)
// and file (the kernel's BTF); docker_containers has no rows on a
// containerd node. Results go to
// <logger_path>/osqueryd.results.log in osquery's format: differential
// queries log "added"/"removed" rows, snapshot queries one "snapshot" line.
func osqueryd(args []string) error {
	flags := map[string]string{}
	parse := func(list []string) {
		for _, a := range list {
			if k, v, ok := strings.Cut(strings.TrimSpace(a), "="); ok && strings.HasPrefix(k, "--") {
				flags[strings.TrimPrefix(k, "--")] = v
			}
		}
	}
	parse(args)
	if path, ok := flags["flagfile"]; ok {
		text, err := mustReadFile("flag file", path)
		if err != nil {
			return err
		}
		parse(strings.Split(string(text), "\n"))
	}
	configPath := flags["config_path"]
	if configPath == "" {
		configPath = "/etc/osquery/osquery.conf"
	}
	text, err := mustReadFile("config", configPath)
	if err != nil {
		return err
	}
	var config struct {
		Packs map[string]json.RawMessage `json:"packs"`
	}
	if err := json.Unmarshal(text, &config); err != nil {
		return fmt.Errorf("config %s: %w", configPath, err)
	}
	var queries []*packQuery
	for name, raw := range config.Packs {
		var path string
		packText := []byte(raw)
		if json.Unmarshal(raw, &path) == nil {
			if packText, err = mustReadFile("pack "+name, path); err != nil {
				return err
			}
		}
		var pack struct {
			Queries map[string]packQuery `json:"queries"`
		}
		if err := json.Unmarshal(packText, &pack); err != nil {
			return fmt.Errorf("pack %s: %w", name, err)
		}
		for q, body := range pack.Queries {
			body.name = "pack_" + name + "_" + q
			if body.Interval <= 0 {
				body.Interval = 3600
			}
			queries = append(queries, &body)
		}
	}
	sort.Slice(queries, func(a, b int) bool { return queries[a].name < queries[b].name })
	logDir := flags["logger_path"]
	if logDir == "" {
		logDir = "/var/log/osquery"
	}
	results, err := os.OpenFile(filepath.Join(logDir, "osqueryd.results.log"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return fmt.Errorf("logger_path: %w", err)
	}
	defer results.Close()
	// osquery's filesystem logger writes snapshot queries to their own
	// file; with --logger_snapshot_event_type one line per row, like a
	// differential row with action "snapshot" (what the collector reads).
	snapshots, err := os.OpenFile(filepath.Join(logDir, "osqueryd.snapshots.log"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return fmt.Errorf("logger_path: %w", err)
	}
	defer snapshots.Close()
	snapshotRows := flags["logger_snapshot_event_type"] == "true"
	host := flags["specified_identifier"]
	if host == "" {
		host, _ = os.Hostname()
	}
	logf("osquery", "config %s, %d pack queries, results in %s", configPath, len(queries), results.Name())
	counter := 0
	return tick(10*time.Second, func() {
		now := time.Now().UTC()
		for _, q := range queries {
			if q.ran && now.Sub(q.last) < time.Duration(q.Interval)*time.Second {
				continue
			}
			rows := answer(q.Query)
			base := map[string]any{
				"name": q.name, "hostIdentifier": host, "calendarTime": now.Format("Mon Jan 2 15:04:05 2006 UTC"),
				"unixTime": now.Unix(), "epoch": 0, "counter": counter, "numerics": false,
				"decorations": map[string]string{"host_uuid": host, "username": "root"}, "secop_standin": true,
			}
			var lines []map[string]any
			out := results
			if q.Snapshot && snapshotRows {
				out = snapshots
				for _, r := range rows {
					line := clone(base)
					line["columns"], line["action"] = r, "snapshot"
					lines = append(lines, line)
				}
			} else if q.Snapshot {
				out = snapshots
				line := clone(base)
				line["snapshot"], line["action"] = rows, "snapshot"
				lines = append(lines, line)
			} else {
				added, removed := diff(q.previous, rows)
				for _, r := range added {
					line := clone(base)
					line["columns"], line["action"] = r, "added"
					lines = append(lines, line)
				}
				for _, r := range removed {
					line := clone(base)
					line["columns"], line["action"] = r, "removed"
					lines = append(lines, line)
				}
				q.previous = rows
			}
			for _, line := range lines {
				b, _ := json.Marshal(line)
				out.Write(append(b, '\n'))
			}
			q.ran, q.last = true, now
		}
		counter++
	})
}

type packQuery struct {
	Query    string `json:"query"`
	Interval int    `json:"interval"`
	Snapshot bool   `json:"snapshot"`
	name     string
	ran      bool
	last     time.Time
	previous []map[string]string
}

func clone(m map[string]any) map[string]any {
	out := make(map[string]any, len(m)+2)
	for k, v := range m {
		out[k] = v
	}
	return out
}

func key(row map[string]string) string {
	b, _ := json.Marshal(row)
	return string(b)
}

func diff(before, now []map[string]string) (added, removed []map[string]string) {
	seen := map[string]bool{}
	for _, r := range before {
		seen[key(r)] = true
	}
	current := map[string]bool{}
	for _, r := range now {
		current[key(r)] = true
		if !seen[key(r)] {
			added = append(added, r)
		}
	}
	for _, r := range before {
		if !current[key(r)] {
			removed = append(removed, r)
		}
	}
	return
}

var selectFrom = regexp.MustCompile(`(?is)^\s*select\s+(.*?)\s+from\s+([a-z_]+)`)

// answer runs the one-table (or listening_ports ⋈ processes) queries of the
// packs: the table by its FROM, the columns by its SELECT list.
func answer(query string) []map[string]string {
	m := selectFrom.FindStringSubmatch(query)
	if m == nil {
		return nil
	}
	var columns []string
	for _, c := range topLevelSplit(strings.TrimPrefix(strings.TrimSpace(m[1]), "DISTINCT ")) {
		c = strings.TrimSpace(c)
		if i := strings.LastIndex(strings.ToUpper(c), " AS "); i >= 0 {
			c = strings.TrimSpace(c[i+4:])
		} else if _, after, ok := strings.Cut(c, "."); ok {
			c = after
		}
		columns = append(columns, c)
	}
	var rows []map[string]string
	switch strings.ToLower(m[2]) {
	case "system_info":
		rows = []map[string]string{systemInfo()}
	case "kernel_info":
		rows = []map[string]string{{"version": readTrim("/proc/sys/kernel/osrelease"), "arguments": readTrim("/proc/cmdline"), "device": ""}}
	case "os_version":
		rows = []map[string]string{osVersion()}
	case "listening_ports":
		rows = listeningPorts()
	case "kernel_modules":
		rows = kernelModules()
	case "processes":
		rows = podContainers()
	case "file":
		rows = kernelBTF()
	}
	// Only the selected columns, as strings.
	for i, r := range rows {
		picked := map[string]string{}
		for _, c := range columns {
			if c == "*" {
				picked = r
				break
			}
			picked[c] = r[c]
		}
		rows[i] = picked
	}
	return rows
}

func readTrim(path string) string {
	b, _ := os.ReadFile(path)
	return strings.TrimSpace(string(b))
}

func systemInfo() map[string]string {
	row := map[string]string{"hostname": readTrim("/proc/sys/kernel/hostname"), "hardware_vendor": readTrim("/sys/class/dmi/id/sys_vendor")}
	if cpu, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(cpu), "\n") {
			if k, v, ok := strings.Cut(l, ":"); ok && strings.TrimSpace(k) == "model name" {
				row["cpu_brand"] = strings.TrimSpace(v)
				break
			}
		}
	}
	if mem, err := os.ReadFile("/proc/meminfo"); err == nil {
		for _, l := range strings.Split(string(mem), "\n") {
			if f := strings.Fields(l); len(f) >= 2 && f[0] == "MemTotal:" {
				kb, _ := strconv.ParseInt(f[1], 10, 64)
				row["physical_memory"] = strconv.FormatInt(kb*1024, 10)
			}
		}
	}
	return row
}

// osVersion reads the host's os-release through PID 1's root (hostPID).
func osVersion() map[string]string {
	fields := map[string]string{}
	for _, path := range []string{"/proc/1/root/etc/os-release", "/etc/os-release"} {
		b, err := os.ReadFile(path)
		if err != nil {
			continue
		}
		for _, l := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(l, "="); ok {
				fields[k] = strings.Trim(v, `"`)
			}
		}
		break
	}
	version := fields["VERSION_ID"]
	parts := append(strings.SplitN(version, ".", 3), "", "", "")
	return map[string]string{"name": fields["NAME"], "version": fields["VERSION"], "major": parts[0], "minor": parts[1], "patch": parts[2], "platform": fields["ID"]}
}

// listeningPorts: TCP sockets in LISTEN and bound UDP sockets of the host
// network namespace, with the process that owns each (by socket inode).
func listeningPorts() []map[string]string {
	owners := map[string][2]string{}
	procs, _ := os.ReadDir("/proc")
	for _, p := range procs {
		pid := p.Name()
		if _, err := strconv.Atoi(pid); err != nil {
			continue
		}
		fds, _ := os.ReadDir("/proc/" + pid + "/fd")
		for _, fd := range fds {
			target, err := os.Readlink("/proc/" + pid + "/fd/" + fd.Name())
			if inode, ok := strings.CutPrefix(target, "socket:["); err == nil && ok {
				path, _ := os.Readlink("/proc/" + pid + "/exe")
				owners[strings.TrimSuffix(inode, "]")] = [2]string{pid, path}
			}
		}
	}
	var rows []map[string]string
	for _, table := range []struct{ file, protocol, family string }{{"tcp", "6", "4"}, {"tcp6", "6", "6"}, {"udp", "17", "4"}} {
		b, err := os.ReadFile("/proc/net/" + table.file)
		if err != nil {
			continue
		}
		for i, l := range strings.Split(string(b), "\n") {
			f := strings.Fields(l)
			if i == 0 || len(f) < 10 || (table.protocol == "6" && f[3] != "0A") {
				continue
			}
			addr, portHex, _ := strings.Cut(f[1], ":")
			port, _ := strconv.ParseInt(portHex, 16, 32)
			owner, ok := owners[f[9]]
			if !ok || port == 0 {
				continue
			}
			rows = append(rows, map[string]string{
				"pid": owner[0], "port": strconv.FormatInt(port, 10), "protocol": table.protocol, "family": table.family,
				"address": hexAddress(addr), "name": readTrim("/proc/" + owner[0] + "/comm"), "path": owner[1],
			})
		}
	}
	return rows
}

func hexAddress(h string) string {
	if len(h) != 8 {
		return h // IPv6: left in /proc's form
	}
	b := make([]string, 4)
	for i := 0; i < 4; i++ {
		v, _ := strconv.ParseUint(h[6-2*i:8-2*i], 16, 8)
		b[i] = strconv.FormatUint(v, 10)
	}
	return strings.Join(b, ".")
}

func kernelModules() []map[string]string {
	b, _ := os.ReadFile("/proc/modules")
	var rows []map[string]string
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) >= 5 {
			rows = append(rows, map[string]string{"name": f[0], "size": f[1], "status": f[4]})
		}
	}
	return rows
}

// topLevelSplit splits a SELECT list at the commas outside parentheses and
// quotes.
func topLevelSplit(list string) []string {
	var out []string
	depth, quoted, start := 0, false, 0
	for i, r := range list {
		switch {
		case r == '\'':
			quoted = !quoted
		case quoted:
		case r == '(':
			depth++
		case r == ')':
			depth--
		case r == ',' && depth == 0:
			out = append(out, list[start:i])
			start = i + 1
		}
	}
	return append(out, list[start:])
}

// podContainers answers the pack's containers query: one row per distinct
// cgroup path of a process that names a container id, as `SELECT DISTINCT
// regex_match(cgroup_path, '[0-9a-f]{64}', 0) AS id, cgroup_path FROM
// processes WHERE ...` does on a hostPID pod.
func podContainers() []map[string]string {
	seen := map[string]bool{}
	var rows []map[string]string
	dirs, _ := os.ReadDir("/proc")
	for _, d := range dirs {
		if _, err := strconv.Atoi(d.Name()); err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + d.Name() + "/cgroup")
		if err != nil {
			continue
		}
		// cgroup v2: one line "0::<path>"; v1: the path of any hierarchy.
		for _, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
			parts := strings.SplitN(l, ":", 3)
			if len(parts) != 3 || seen[parts[2]] {
				continue
			}
			id := containerIDPattern.FindString(parts[2])
			if id == "" {
				continue
			}
			seen[parts[2]] = true
			rows = append(rows, map[string]string{"id": id, "cgroup_path": parts[2]})
			break
		}
	}
	return rows
}

// kernelBTF answers `SELECT path, size FROM file WHERE path =
// '/sys/kernel/btf/vmlinux'`: a row when the kernel exposes its BTF.
func kernelBTF() []map[string]string {
	info, err := os.Stat("/sys/kernel/btf/vmlinux")
	if err != nil {
		return nil
	}
	return []map[string]string{{"path": "/sys/kernel/btf/vmlinux", "size": strconv.FormatInt(info.Size(), 10)}}
}
