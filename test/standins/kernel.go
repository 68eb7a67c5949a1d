// What the Falco and Tetragon stand-ins see of the kernel.
//
// The real sensors watch syscalls with eBPF. So do the stand-ins, in the
// smallest way that shows the scenarios of test/scenarios really happened on
// the node: two BPF programs on raw tracepoints, written with cilium/ebpf's
// assembler so that no C toolchain is needed to build them, and with kernel
// struct offsets taken from the running kernel's BTF.
//
//   - sched_process_exec: every successful exec (binary, arguments, parent,
//     terminal), as Tetragon's process_exec and Falco's spawned_process see it;
//   - sys_enter for openat, mount, setns and connect: the syscalls the
//     scenarios' rules look at (token read, writes below /etc, mount and
//     setns attempts, a connection to the API server).
//
// Only processes outside the host's mount namespace are reported: the
// subjects are containers. Which container, and which pod, is resolved in
// user space (containers.go) from the mount namespace.
package main

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/btf"
	"github.com/cilium/ebpf/link"
	"github.com/cilium/ebpf/perf"
)

// Event kinds, as written into the record's first word.
const (
	kindExec    = 1
	kindOpen    = 2
	kindMount   = 3
	kindSetns   = 4
	kindConnect = 5
)

// x86-64 syscall numbers of the event kinds the sys_enter program can keep.
var syscallNumbers = map[int64]int32{kindOpen: 257, kindMount: 165, kindSetns: 308, kindConnect: 42}

// The record both programs fill in a per-CPU scratch map value and send
// through the perf buffer. Offsets in bytes.
const (
	offKind   = 0   // u32
	offTgid   = 4   // u32, the process (init pid namespace)
	offPpid   = 8   // u32, its parent
	offUID    = 12  // u32
	offMntNS  = 16  // u32, mount namespace inode
	offTTY    = 20  // u32, non-zero when the process has a controlling terminal
	offInt1   = 24  // u64: open flags, mount flags, setns fd, exec arg_start, connect addrlen
	offInt2   = 32  // u64: setns nstype, exec arg_end
	offComm   = 40  // [16]
	offPComm  = 56  // [16], the parent's comm
	offStr1   = 72  // [256]: exec filename, open path, mount source, connect sockaddr
	offStr2   = 328 // [256]: exec arguments (NUL-separated), mount target
	offStr3   = 584 // [64]: mount fstype
	offTmp    = 648 // u64, pointer chasing
	offKtime  = 656 // u64, bpf_ktime_get_ns: events reach user space per CPU, not in order
	recordLen = 664
)

// x86-64 struct pt_regs: where sys_enter finds the syscall's arguments.
const (
	regsDI  = 112
	regsSI  = 104
	regsDX  = 96
	regsR10 = 56
)

// kernelOffsets are the struct member offsets the programs read, from BTF.
type kernelOffsets struct {
	taskRealParent, taskTgid, taskNsproxy, taskSignal, taskMm, taskComm uint32
	nsproxyMntNS, mntNSInum                                             uint32
	signalTTY                                                           uint32
	mmArgStart, mmArgEnd                                                uint32
	bprmFilename                                                        uint32
}

func loadOffsets() (kernelOffsets, error) {
	spec, err := btf.LoadKernelSpec()
	if err != nil {
		return kernelOffsets{}, fmt.Errorf("kernel BTF (/sys/kernel/btf/vmlinux): %w", err)
	}
	var firstErr error
	at := func(structName string, path ...string) uint32 {
		off, err := memberOffset(spec, structName, path...)
		if err != nil && firstErr == nil {
			firstErr = err
		}
		return off
	}
	o := kernelOffsets{
		taskRealParent: at("task_struct", "real_parent"),
		taskTgid:       at("task_struct", "tgid"),
		taskNsproxy:    at("task_struct", "nsproxy"),
		taskSignal:     at("task_struct", "signal"),
		taskMm:         at("task_struct", "mm"),
		taskComm:       at("task_struct", "comm"),
		nsproxyMntNS:   at("nsproxy", "mnt_ns"),
		mntNSInum:      at("mnt_namespace", "ns", "inum"),
		signalTTY:      at("signal_struct", "tty"),
		mmArgStart:     at("mm_struct", "arg_start"),
		mmArgEnd:       at("mm_struct", "arg_end"),
		bprmFilename:   at("linux_binprm", "filename"),
	}
	return o, firstErr
}

// memberOffset finds path (member names, descending into named members)
// in a struct, looking through anonymous structs and unions on the way.
func memberOffset(spec *btf.Spec, structName string, path ...string) (uint32, error) {
	var s *btf.Struct
	if err := spec.TypeByName(structName, &s); err != nil {
		return 0, fmt.Errorf("BTF struct %s: %w", structName, err)
	}
	var typ btf.Type = s
	var bits uint32
	for _, name := range path {
		off, member, ok := findMember(typ, name)
		if !ok {
			return 0, fmt.Errorf("BTF: %s has no member %s", structName, strings.Join(path, "."))
		}
		bits += off
		typ = btf.UnderlyingType(member.Type)
	}
	return bits / 8, nil
}

func findMember(typ btf.Type, name string) (uint32, btf.Member, bool) {
	var members []btf.Member
	switch t := typ.(type) {
	case *btf.Struct:
		members = t.Members
	case *btf.Union:
		members = t.Members
	default:
		return 0, btf.Member{}, false
	}
	for _, m := range members {
		if m.Name == name {
			return uint32(m.Offset), m, true
		}
		if m.Name == "" {
			if off, inner, ok := findMember(btf.UnderlyingType(m.Type), name); ok {
				return uint32(m.Offset) + off, inner, true
			}
		}
	}
	return 0, btf.Member{}, false
}

// program builds one BPF program. Registers: R6 the tracepoint context, R7
// the record, R8 the current task, R9 the syscall's pt_regs.
type program struct {
	asm.Instructions
	scratch, events *ebpf.Map
	o               kernelOffsets
}

func (p *program) add(ins ...asm.Instruction) { p.Instructions = append(p.Instructions, ins...) }

// read copies size bytes from src+srcOff into the record at dst with the
// probe helper fn (kernel or user memory, string or bytes).
func (p *program) read(fn asm.BuiltinFunc, dst int32, size int32, src asm.Register, srcOff int32) {
	p.add(
		asm.Mov.Reg(asm.R3, src),
		asm.Add.Imm(asm.R3, srcOff),
		asm.Mov.Reg(asm.R1, asm.R7),
		asm.Add.Imm(asm.R1, dst),
		asm.Mov.Imm(asm.R2, size),
		fn.Call(),
	)
}

// chase loads the pointer at src+off into R3 (through the record's tmp slot).
func (p *program) chase(src asm.Register, off uint32) {
	p.read(asm.FnProbeReadKernel, offTmp, 8, src, int32(off))
	p.add(asm.LoadMem(asm.R3, asm.R7, offTmp, asm.DWord))
}

// prologue: the record, the task, and the fields every event carries.
// Jumps to "exit" for a process in the host's mount namespace.
func (p *program) prologue(hostMntNS uint32) {
	p.add(
		asm.Mov.Reg(asm.R6, asm.R1),
		asm.StoreImm(asm.RFP, -8, 0, asm.Word),
		asm.LoadMapPtr(asm.R1, p.scratch.FD()),
		asm.Mov.Reg(asm.R2, asm.RFP),
		asm.Add.Imm(asm.R2, -8), // key 0 (u32)
		asm.FnMapLookupElem.Call(),
		asm.JEq.Imm(asm.R0, 0, "exit"),
		asm.Mov.Reg(asm.R7, asm.R0),
		asm.FnGetCurrentTask.Call(),
		asm.Mov.Reg(asm.R8, asm.R0),
	)
	// Mount namespace first: most events are the host's and end here.
	p.chase(asm.R8, p.o.taskNsproxy)
	p.add(asm.Mov.Reg(asm.R9, asm.R3))
	p.chase(asm.R9, p.o.nsproxyMntNS)
	p.add(asm.Mov.Reg(asm.R9, asm.R3))
	p.read(asm.FnProbeReadKernel, offMntNS, 4, asm.R9, int32(p.o.mntNSInum))
	p.add(
		asm.LoadMem(asm.R1, asm.R7, offMntNS, asm.Word),
		asm.JEq.Imm32(asm.R1, int32(hostMntNS), "exit"), // 32-bit compare: inodes exceed int32
		asm.JEq.Imm(asm.R1, 0, "exit"),
		asm.FnKtimeGetNs.Call(),
		asm.StoreMem(asm.R7, offKtime, asm.R0, asm.DWord),
		asm.FnGetCurrentPidTgid.Call(),
		asm.RSh.Imm(asm.R0, 32),
		asm.StoreMem(asm.R7, offTgid, asm.R0, asm.Word),
		asm.FnGetCurrentUidGid.Call(),
		asm.StoreMem(asm.R7, offUID, asm.R0, asm.Word),
		asm.Mov.Reg(asm.R1, asm.R7),
		asm.Add.Imm(asm.R1, offComm),
		asm.Mov.Imm(asm.R2, 16),
		asm.FnGetCurrentComm.Call(),
	)
	p.chase(asm.R8, p.o.taskRealParent)
	p.add(asm.Mov.Reg(asm.R9, asm.R3))
	p.read(asm.FnProbeReadKernel, offPpid, 4, asm.R9, int32(p.o.taskTgid))
	p.read(asm.FnProbeReadKernel, offPComm, 16, asm.R9, int32(p.o.taskComm))
	p.chase(asm.R8, p.o.taskSignal)
	p.add(asm.Mov.Reg(asm.R9, asm.R3))
	p.chase(asm.R9, p.o.signalTTY)
	p.add(
		asm.Mov.Imm(asm.R1, 0),
		asm.JEq.Imm(asm.R3, 0, "no_tty"),
		asm.Mov.Imm(asm.R1, 1),
		asm.StoreMem(asm.R7, offTTY, asm.R1, asm.Word).WithSymbol("no_tty"),
	)
	// R1 is 0 or 1 when no_tty stores it, on either path.
}

// epilogue sends the record and returns.
func (p *program) epilogue() {
	p.add(
		asm.Mov.Reg(asm.R1, asm.R6),
		asm.LoadMapPtr(asm.R2, p.events.FD()),
		asm.LoadImm(asm.R3, 0xffffffff, asm.DWord), // BPF_F_CURRENT_CPU
		asm.Mov.Reg(asm.R4, asm.R7),
		asm.Mov.Imm(asm.R5, recordLen),
		asm.FnPerfEventOutput.Call(),
		asm.Mov.Imm(asm.R0, 0).WithSymbol("exit"),
		asm.Return(),
	)
}

// execProgram: raw tracepoint sched_process_exec(task, old_pid, bprm).
func execProgram(p *program, hostMntNS uint32) {
	p.prologue(hostMntNS)
	p.add(asm.StoreImm(asm.R7, offKind, kindExec, asm.Word))
	p.add(asm.LoadMem(asm.R9, asm.R6, 16, asm.DWord)) // bprm
	p.chase(asm.R9, p.o.bprmFilename)
	p.add(asm.Mov.Reg(asm.R9, asm.R3))
	p.read(asm.FnProbeReadKernelStr, offStr1, 256, asm.R9, 0)
	p.chase(asm.R8, p.o.taskMm)
	p.add(asm.Mov.Reg(asm.R9, asm.R3))
	p.read(asm.FnProbeReadKernel, offInt1, 8, asm.R9, int32(p.o.mmArgStart))
	p.read(asm.FnProbeReadKernel, offInt2, 8, asm.R9, int32(p.o.mmArgEnd))
	p.add(asm.LoadMem(asm.R9, asm.R7, offInt1, asm.DWord))
	p.read(asm.FnProbeReadUser, offStr2, 256, asm.R9, 0)
	p.epilogue()
}

// syscallProgram: raw tracepoint sys_enter(regs, id), for the syscalls of
// the kinds asked for; every other syscall returns at once.
func syscallProgram(p *program, hostMntNS uint32, kinds []int64) {
	type syscall struct {
		nr   int32
		kind int64
	}
	var syscalls []syscall
	for _, k := range kinds {
		syscalls = append(syscalls, syscall{syscallNumbers[k], k})
	}
	p.add(asm.LoadMem(asm.R2, asm.R1, 8, asm.DWord))
	for _, s := range syscalls {
		p.add(asm.JEq.Imm(asm.R2, s.nr, fmt.Sprintf("sys_%d", s.nr)))
	}
	p.add(asm.Mov.Imm(asm.R0, 0), asm.Return())
	for i, s := range syscalls {
		start := len(p.Instructions)
		body := &program{scratch: p.scratch, events: p.events, o: p.o}
		body.prologue(hostMntNS)
		body.add(asm.StoreImm(asm.R7, offKind, s.kind, asm.Word))
		body.add(asm.LoadMem(asm.R9, asm.R6, 0, asm.DWord)) // regs
		arg := func(reg int32, dst int32) { body.read(asm.FnProbeReadKernel, dst, 8, asm.R9, reg) }
		switch s.kind {
		case kindOpen:
			arg(regsDX, offInt1)
			arg(regsSI, offTmp)
			body.add(asm.LoadMem(asm.R9, asm.R7, offTmp, asm.DWord))
			body.read(asm.FnProbeReadUserStr, offStr1, 256, asm.R9, 0)
		case kindMount:
			arg(regsR10, offInt1)
			for _, a := range []struct{ reg, dst, size int32 }{{regsDI, offStr1, 256}, {regsSI, offStr2, 256}, {regsDX, offStr3, 64}} {
				body.add(asm.LoadMem(asm.R9, asm.R6, 0, asm.DWord))
				arg(a.reg, offTmp)
				body.add(asm.LoadMem(asm.R9, asm.R7, offTmp, asm.DWord))
				body.read(asm.FnProbeReadUserStr, a.dst, a.size, asm.R9, 0)
			}
		case kindSetns:
			arg(regsDI, offInt1)
			arg(regsSI, offInt2)
		case kindConnect:
			arg(regsDX, offInt1)
			arg(regsSI, offTmp)
			body.add(asm.LoadMem(asm.R9, asm.R7, offTmp, asm.DWord))
			body.read(asm.FnProbeReadUser, offStr1, 16, asm.R9, 0)
		}
		body.epilogue()
		// Labels are per block: "exit" and "no_tty" would clash.
		for j := range body.Instructions {
			ins := &body.Instructions[j]
			if sym := ins.Symbol(); sym != "" {
				*ins = ins.WithSymbol(fmt.Sprintf("%s_%d", sym, i))
			}
			if ref := ins.Reference(); ref != "" {
				*ins = ins.WithReference(fmt.Sprintf("%s_%d", ref, i))
			}
		}
		body.Instructions[0] = body.Instructions[0].WithSymbol(fmt.Sprintf("sys_%d", s.nr))
		p.Instructions = append(p.Instructions[:start], body.Instructions...)
	}
}

// kernelEvent is one record, decoded.
type kernelEvent struct {
	Kind        uint32
	Pid, Ppid   uint32
	UID         uint32
	MntNS       uint32
	TTY         bool
	Int1, Int2  uint64
	Comm, PComm string
	Str1, Str2  string
	Str3        string
	Ktime       uint64 // nanoseconds since boot, for ordering
	Raw1        []byte
	Args        []string // exec: argv
}

func cstring(b []byte) string {
	if i := bytes.IndexByte(b, 0); i >= 0 {
		b = b[:i]
	}
	return string(b)
}

func decodeRecord(raw []byte) (kernelEvent, error) {
	if len(raw) < recordLen {
		return kernelEvent{}, fmt.Errorf("short record: %d bytes", len(raw))
	}
	le := binary.LittleEndian
	e := kernelEvent{
		Kind: le.Uint32(raw[offKind:]), Pid: le.Uint32(raw[offTgid:]), Ppid: le.Uint32(raw[offPpid:]),
		UID: le.Uint32(raw[offUID:]), MntNS: le.Uint32(raw[offMntNS:]), TTY: le.Uint32(raw[offTTY:]) != 0,
		Int1: le.Uint64(raw[offInt1:]), Int2: le.Uint64(raw[offInt2:]),
		Comm: cstring(raw[offComm : offComm+16]), PComm: cstring(raw[offPComm : offPComm+16]),
		Str1: cstring(raw[offStr1 : offStr1+256]), Str2: cstring(raw[offStr2 : offStr2+256]), Str3: cstring(raw[offStr3 : offStr3+64]),
		Raw1:  append([]byte(nil), raw[offStr1:offStr1+16]...),
		Ktime: le.Uint64(raw[offKtime:]),
	}
	if e.Kind == kindExec {
		// argv: NUL-separated from arg_start to arg_end, as read (up to 256 bytes).
		n := int(e.Int2 - e.Int1)
		if n < 0 || n > 256 {
			n = 256
		}
		for _, a := range bytes.Split(bytes.TrimRight(raw[offStr2:offStr2+n], "\x00"), []byte{0}) {
			e.Args = append(e.Args, string(a))
		}
	}
	return e, nil
}

// kernelWatch is the loaded programs and the reader of their events.
type kernelWatch struct {
	reader *perf.Reader
	links  []link.Link
	objs   []interface{ Close() error }
	events chan kernelEvent
}

// hostMountNamespace is the mount namespace of the process that started
// this one: the container runtime's shim in a pod, the shell outside one.
// It is found through the host's /proc (procRoot), where "self" resolves to
// this process's PID on the host. PID 1 is not used: on a node that is
// itself a sandbox it may be unreadable or in another namespace.
func hostMountNamespace(procRoot string) (uint32, error) {
	self, err := os.Readlink(procRoot + "/self")
	if err != nil {
		return 0, fmt.Errorf("host mount namespace: %w", err)
	}
	status, err := os.ReadFile(procRoot + "/" + self + "/status")
	if err != nil {
		return 0, fmt.Errorf("host mount namespace: %w", err)
	}
	for _, line := range strings.Split(string(status), "\n") {
		if ppid, ok := strings.CutPrefix(line, "PPid:"); ok {
			target, err := os.Readlink(procRoot + "/" + strings.TrimSpace(ppid) + "/ns/mnt")
			if err != nil {
				return 0, fmt.Errorf("host mount namespace: %w", err)
			}
			return parseNamespaceLink(target)
		}
	}
	return 0, fmt.Errorf("host mount namespace: no PPid in %s/%s/status", procRoot, self)
}

// parseNamespaceLink: "mnt:[4026531841]" → 4026531841.
func parseNamespaceLink(target string) (uint32, error) {
	open, close := strings.IndexByte(target, '['), strings.IndexByte(target, ']')
	if open < 0 || close < open {
		return 0, fmt.Errorf("not a namespace link: %q", target)
	}
	n, err := strconv.ParseUint(target[open+1:close], 10, 32)
	return uint32(n), err
}

// startKernelWatch loads the exec program and, for the syscall kinds
// given (kindOpen, kindMount, kindSetns, kindConnect), the sys_enter one.
// Events are read off the perf buffer at once into a queue, so that a
// slow consumer (a pod lookup on the API server) does not make the kernel
// drop events.
func startKernelWatch(procRoot string, kinds ...int64) (*kernelWatch, error) {
	hostNS, err := hostMountNamespace(procRoot)
	if err != nil {
		return nil, err
	}
	offsets, err := loadOffsets()
	if err != nil {
		return nil, err
	}
	w := &kernelWatch{}
	scratch, err := ebpf.NewMap(&ebpf.MapSpec{Name: "secop_scratch", Type: ebpf.PerCPUArray, KeySize: 4, ValueSize: recordLen, MaxEntries: 1})
	if err != nil {
		return nil, fmt.Errorf("BPF map: %w", err)
	}
	w.objs = append(w.objs, scratch)
	events, err := ebpf.NewMap(&ebpf.MapSpec{Name: "secop_events", Type: ebpf.PerfEventArray})
	if err != nil {
		w.Close()
		return nil, fmt.Errorf("BPF perf map: %w", err)
	}
	w.objs = append(w.objs, events)
	programs := []struct {
		name  string
		build func(*program, uint32)
	}{{"sched_process_exec", execProgram}}
	if len(kinds) > 0 {
		programs = append(programs, struct {
			name  string
			build func(*program, uint32)
		}{"sys_enter", func(p *program, ns uint32) { syscallProgram(p, ns, kinds) }})
	}
	for _, tp := range programs {
		p := &program{scratch: scratch, events: events, o: offsets}
		tp.build(p, hostNS)
		prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{Name: "secop_" + tp.name, Type: ebpf.RawTracepoint, License: "GPL", Instructions: p.Instructions})
		if err != nil {
			w.Close()
			var verr *ebpf.VerifierError
			if errors.As(err, &verr) {
				return nil, fmt.Errorf("BPF program for %s: %+v", tp.name, verr)
			}
			return nil, fmt.Errorf("BPF program for %s: %w", tp.name, err)
		}
		w.objs = append(w.objs, prog)
		l, err := link.AttachRawTracepoint(link.RawTracepointOptions{Name: tp.name, Program: prog})
		if err != nil {
			w.Close()
			return nil, fmt.Errorf("attaching to raw tracepoint %s: %w", tp.name, err)
		}
		w.links = append(w.links, l)
	}
	w.reader, err = perf.NewReader(events, 256*os.Getpagesize())
	if err != nil {
		w.Close()
		return nil, fmt.Errorf("perf reader: %w", err)
	}
	w.events = make(chan kernelEvent, 1<<16)
	go w.read()
	return w, nil
}

func (w *kernelWatch) read() {
	defer close(w.events)
	for {
		rec, err := w.reader.Read()
		if err != nil {
			return
		}
		if rec.LostSamples > 0 {
			fmt.Fprintf(os.Stderr, "secop stand-in: %d kernel events lost (perf buffer full)\n", rec.LostSamples)
			continue
		}
		if e, err := decodeRecord(rec.RawSample); err == nil {
			w.events <- e
		}
	}
}

// next blocks for the next event; an error once the watch is closed.
func (w *kernelWatch) next() (kernelEvent, error) {
	e, ok := <-w.events
	if !ok {
		return kernelEvent{}, errors.New("kernel watch closed")
	}
	return e, nil
}

func (w *kernelWatch) Close() {
	if w.reader != nil {
		w.reader.Close()
	}
	for _, l := range w.links {
		l.Close()
	}
	for _, o := range w.objs {
		o.Close()
	}
}

// kernelEvents: `standin kernel-events [<proc root>]` prints what the
// programs see, one JSON line per event, for debugging the stand-ins.
func kernelEvents(args []string) error {
	procRoot := "/proc"
	if len(args) > 0 {
		procRoot = args[0]
	}
	w, err := startKernelWatch(procRoot, kindOpen, kindMount, kindSetns, kindConnect)
	if err != nil {
		return err
	}
	defer w.Close()
	go func() { <-stopped(); w.Close() }()
	for {
		e, err := w.next()
		if err != nil {
			return nil
		}
		line, _ := json.Marshal(e)
		fmt.Println(string(line))
	}
}
