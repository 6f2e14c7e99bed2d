package procs

import (
	"runtime"
	"testing"
)

func TestFitFollowsNodesWithinCPUs(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(0))
	none := func(string) string { return "" }
	for _, c := range []struct{ nodes, want int }{
		{0, 1}, {1, 1}, {runtime.NumCPU(), runtime.NumCPU()}, {runtime.NumCPU() + 5, runtime.NumCPU()},
	} {
		if got := Fit(c.nodes, none); got != c.want || runtime.GOMAXPROCS(0) != c.want {
			t.Errorf("Fit(%d) = %d, GOMAXPROCS %d; want %d", c.nodes, got, runtime.GOMAXPROCS(0), c.want)
		}
	}
}

func TestFitLeavesAnExplicitGOMAXPROCS(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(0))
	runtime.GOMAXPROCS(runtime.NumCPU())
	set := func(k string) string {
		if k == "GOMAXPROCS" {
			return "7"
		}
		return ""
	}
	if got := Fit(1, set); got != runtime.NumCPU() {
		t.Errorf("Fit with GOMAXPROCS set = %d, want it left at %d", got, runtime.NumCPU())
	}
}
