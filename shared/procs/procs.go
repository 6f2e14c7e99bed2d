// Package procs sizes the Go scheduler to the Redis servers a command works against.
//
// Every Redis node runs its commands on one thread, and the tool spends less than half of a
// node's CPU per key (2.2-2.5 us against 4-5 us of the source's or the target's), so one
// processor per node keeps up with the nodes. More processors only add work: idle threads
// woken and put to sleep again for every reply, which on a shared or paravirtual host is a
// fifth of the tool's CPU. Measured on the 2-core bench host against one source and one target
// (README, Benchmarks): one processor lowered the tool's CPU per key by 5-13% and let the import
// with its verification run 9-10% faster; the copy's rate did not change.
package procs

import "runtime"

// Fit sets GOMAXPROCS to the number of nodes (at least 1, at most the machine's CPUs) and
// returns the value in force. GOMAXPROCS in the environment wins: Fit then changes nothing.
func Fit(nodes int, getenv func(string) string) int {
	if getenv("GOMAXPROCS") != "" {
		return runtime.GOMAXPROCS(0)
	}
	n := min(max(nodes, 1), runtime.NumCPU())
	runtime.GOMAXPROCS(n)
	return n
}
