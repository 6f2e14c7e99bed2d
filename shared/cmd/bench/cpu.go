package main

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// procCPU is the CPU time (user + system) a process has used so far, from /proc/<pid>/stat.
func procCPU(pid int) time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// The command name (field 2) may hold spaces; fields after it start past the last ')'.
	s := string(b)
	if i := strings.LastIndexByte(s, ')'); i >= 0 {
		s = s[i+1:]
	}
	f := strings.Fields(s)
	if len(f) < 13 {
		return 0
	}
	// f[0] is field 3 (state); utime and stime are fields 14 and 15.
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(ut+st) * time.Second / clockTicks
}

// clockTicks is USER_HZ, 100 on every Linux the benchmarks run on.
const clockTicks = 100

// cpuMeter measures the CPU time of a set of processes across a run.
type cpuMeter struct {
	pids   []int
	before []time.Duration
}

func meterCPU(pids ...int) *cpuMeter {
	m := &cpuMeter{pids: pids}
	for _, p := range pids {
		m.before = append(m.before, procCPU(p))
	}
	return m
}

// used returns each process's CPU time since meterCPU.
func (m *cpuMeter) used() []time.Duration {
	out := make([]time.Duration, len(m.pids))
	for i, p := range m.pids {
		out[i] = procCPU(p) - m.before[i]
	}
	return out
}

// usPerKey formats a CPU time per key in microseconds.
func usPerKey(d time.Duration, keys float64) string {
	if keys <= 0 {
		return "-"
	}
	return fmt.Sprintf("%.1f", float64(d.Microseconds())/keys)
}
