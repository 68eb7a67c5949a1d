// Which container, and which pod, a kernel event came from.
package main

import (
	"os"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
)

// A container's ID is the last 64-hex component of its cgroup path, under
// the cgroupfs driver ("/kubepods/.../<id>") as under systemd
// ("cri-containerd-<id>.scope").
var containerIDPattern = regexp.MustCompile(`[0-9a-f]{64}`)

// containerID finds the container in the text of /proc/<pid>/cgroup; "" for
// a process that belongs to none.
func containerID(cgroup string) string {
	for _, line := range strings.Split(cgroup, "\n") {
		if ids := containerIDPattern.FindAllString(line, -1); len(ids) > 0 {
			return ids[len(ids)-1]
		}
	}
	return ""
}

// containerIndex maps mount namespaces to container IDs by reading the
// host's /proc: every process of a container shares its mount namespace,
// so a short-lived process that is gone by the time its event is read is
// found through the container's long-lived ones.
//
// Namespace inodes are reused as soon as a namespace is freed, so an entry
// keeps the process it was learnt from and holds only while that process
// is still in that namespace: a new container must never inherit a dead
// one's pod.
type containerIndex struct {
	procRoot string
	mu       sync.Mutex
	byMntNS  map[uint32]containerEntry
	scanned  time.Time
}

type containerEntry struct {
	id  string
	pid string // a process of the namespace, to check the entry against
}

func newContainerIndex(procRoot string) *containerIndex {
	return &containerIndex{procRoot: procRoot, byMntNS: map[uint32]containerEntry{}}
}

// current: the entry's process still lives in the namespace.
func (c *containerIndex) current(mntNS uint32, e containerEntry) bool {
	target, err := os.Readlink(c.procRoot + "/" + e.pid + "/ns/mnt")
	if err != nil {
		return false
	}
	ns, err := parseNamespaceLink(target)
	return err == nil && ns == mntNS
}

// lookup returns the container of a mount namespace, or "" when no
// container has it. A new container's first process may be the first
// event of its namespace, so a miss rescans /proc (at most every 50 ms:
// processes in a namespace of no container, e.g. `unshare`, miss always).
func (c *containerIndex) lookup(mntNS uint32) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.byMntNS[mntNS]; ok {
		if c.current(mntNS, e) {
			return e.id
		}
		delete(c.byMntNS, mntNS)
	}
	if time.Since(c.scanned) < 50*time.Millisecond {
		return ""
	}
	c.scanned = time.Now()
	entries, err := os.ReadDir(c.procRoot)
	if err != nil {
		return ""
	}
	// The oldest process of a namespace (lowest pid, the container's init
	// as a rule) is the one to learn from: an entry learnt from a
	// short-lived process (a `cat`) would be gone by the next event, and a
	// miss within 50 ms of a scan drops that event.
	pids := make([]int, 0, len(entries))
	for _, entry := range entries {
		if pid, err := strconv.Atoi(entry.Name()); err == nil {
			pids = append(pids, pid)
		}
	}
	sort.Ints(pids)
	learnt := map[uint32]bool{}
	for _, n := range pids {
		pid := strconv.Itoa(n)
		target, err := os.Readlink(c.procRoot + "/" + pid + "/ns/mnt")
		if err != nil {
			continue
		}
		ns, err := parseNamespaceLink(target)
		if err != nil || learnt[ns] {
			continue
		}
		if e, known := c.byMntNS[ns]; known && c.current(ns, e) {
			learnt[ns] = true
			continue
		}
		if cgroup, err := os.ReadFile(c.procRoot + "/" + pid + "/cgroup"); err == nil {
			if id := containerID(string(cgroup)); id != "" {
				c.byMntNS[ns] = containerEntry{id: id, pid: pid}
				learnt[ns] = true
			}
		}
	}
	return c.byMntNS[mntNS].id
}
