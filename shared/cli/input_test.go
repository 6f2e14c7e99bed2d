package cli

import (
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"

	"github.com/redis-migrate/redis-migrate/shared/testenv"
)

// A bad flag is reported once, as one line naming the command, then the usage; exit 2.
func TestBadFlagPrintsErrorOnceThenUsage(t *testing.T) {
	for _, cmd := range []string{"copy", "import", "verify"} {
		code, _, errs := run(t, cmd, "--bogus")
		if code != ExitUsage {
			t.Errorf("%s --bogus: exit %d, want %d", cmd, code, ExitUsage)
		}
		if n := strings.Count(errs, "flag provided but not defined"); n != 1 {
			t.Errorf("%s --bogus: the error appears %d times:\n%s", cmd, n, errs)
		}
		first, rest, _ := strings.Cut(errs, "\n")
		if first != "redis-migrate "+cmd+": flag provided but not defined: -bogus" || !strings.Contains(rest, "usage: redis-migrate "+cmd) {
			t.Errorf("%s --bogus: want the error line, then the usage:\n%s", cmd, errs)
		}
		if code, _, errs := run(t, cmd, "-h"); code != ExitOK || strings.Count(errs, "usage: redis-migrate "+cmd) != 1 {
			t.Errorf("%s -h: exit %d\n%s", cmd, code, errs)
		}
	}
}

// The help text's own placeholders are shown as written, not masked as if they were secrets.
func TestHelpShowsPlaceholders(t *testing.T) {
	_, _, errs := run(t, "copy", "-h")
	for _, want := range []string{"redis://[user:password@]host:port[/db]", "rediss://:<key>@<name>.<region>.redis.azure.net:10000"} {
		if !strings.Contains(errs, want) {
			t.Errorf("copy -h lacks %q:\n%s", want, errs)
		}
	}
	if strings.Contains(errs, "***") {
		t.Errorf("copy -h masks something:\n%s", errs)
	}
}

// --type takes the names SCAN TYPE matches; anything else would "complete" with 0 keys. Sample
// sizes below 1 are refused too.
func TestTypeFilterRefusesUnknownTypes(t *testing.T) {
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"copy", "--type", "rubbish"}, `--type: unknown type "rubbish": want one of string, list, set, zset, hash, stream`},
		{[]string{"copy", "--type", "String"}, `lower-case: "string"`},
		{[]string{"verify", "--type", "rubbish"}, `--type: unknown type "rubbish"`},
		// A sample of 0 or fewer keys ran a full verification under a sample's summary.
		{[]string{"copy", "--verify-sample", "-5"}, `--verify-sample -5: want at least 1`},
		{[]string{"copy", "--verify-sample", "0"}, `--verify-sample 0: want at least 1`},
		{[]string{"verify", "--sample", "-1"}, `--sample -1: want a positive count`},
	} {
		args := append(c.args, "--source", "redis://127.0.0.1:1", "--target", "redis://127.0.0.1:2")
		code, _, errs := run(t, args...)
		if code != ExitUsage || !strings.Contains(errs, c.want) || strings.Count(strings.TrimSpace(errs), "\n") != 0 {
			t.Errorf("%v: exit %d, stderr %q; want one line with %q", c.args, code, errs, c.want)
		}
	}
}

// TestHelperProcessMain is the command line in a child process (see runProcess).
func TestHelperProcessMain(t *testing.T) {
	if os.Getenv("REDIS_MIGRATE_HELPER_ARGS") == "" {
		t.Skip("run by runProcess")
	}
	args := strings.Split(os.Getenv("REDIS_MIGRATE_HELPER_ARGS"), "\x1f")
	os.Exit(Main(args, &Env{Stdout: os.Stdout, Stderr: os.Stderr}))
}

// runProcess runs the command line in a child process, so output that bypasses Env (a library
// writing to os.Stderr itself) is seen too.
func runProcess(t *testing.T, args ...string) (int, string) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperProcessMain$")
	cmd.Env = append(os.Environ(), "REDIS_MIGRATE_HELPER_ARGS="+strings.Join(args, "\x1f"))
	var errb strings.Builder
	cmd.Stderr = &errb
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	t.Logf("redis-migrate %s -> %d\n%s", strings.Join(args, " "), code, errb.String())
	return code, errb.String()
}

// An unreachable server gives one line of ours, and none of go-redis's pool log lines.
func TestUnreachableServerOneLine(t *testing.T) {
	port, err := testenv.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	dead := "redis://127.0.0.1:" + strconv.Itoa(port)
	live := testenv.StartRedis(t)
	for _, args := range [][]string{
		{"copy", "--source", dead, "--target", live.URL()},
		{"copy", "--source", live.URL(), "--target", "redis://:s3cret-pw@127.0.0.1:" + strconv.Itoa(port)},
		{"verify", "--source", dead, "--target", live.URL()},
	} {
		code, errs := runProcess(t, args...)
		lines := strings.Split(strings.TrimSpace(errs), "\n")
		if code != ExitUsage || len(lines) != 1 || !strings.HasPrefix(lines[0], "redis-migrate "+args[0]+": ") ||
			!strings.Contains(lines[0], "cannot connect") || strings.Contains(errs, "pool.go") || strings.Contains(errs, "s3cret-pw") {
			t.Errorf("%v: exit %d, want %d and one line of ours:\n%s", args, code, ExitUsage, errs)
		}
	}
}

// sync refuses options it cannot honour before it connects to anything: one line naming the
// option, exit 2.
func TestSyncRefusesBadOptions(t *testing.T) {
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--type", "rubbish"}, `--type: unknown type "rubbish"`},
		{[]string{"--until-lag", "10ms"}, "--until-lag 10ms: want at least 100ms"},
		{[]string{"--until-lag", "-1s"}, "--until-lag -1s: want at least 100ms"},
		{[]string{"--pause-writes", "1ms"}, "--pause-writes 1ms: want at least 1s"},
		{[]string{"--max-pending", "5"}, "--max-pending 5: want at least 1000"},
		{[]string{"--verify-sample", "-5"}, "--verify-sample -5: want at least 1"},
		{[]string{"--ttl-tolerance", "-1s"}, "--ttl-tolerance -1s: want 0 or more"},
		{[]string{"--metrics-addr", "nonsense:xx"}, "--metrics-addr nonsense:xx:"},
	} {
		args := append([]string{"sync", "--state", t.TempDir() + "/s.json", "--source", "redis://127.0.0.1:1", "--target", "redis://127.0.0.1:2"}, c.args...)
		code, _, errs := run(t, args...)
		if code != ExitUsage || !strings.Contains(errs, c.want) || strings.Count(strings.TrimSpace(errs), "\n") != 0 {
			t.Errorf("%v: exit %d, stderr %q; want one line with %q", c.args, code, errs, c.want)
		}
	}
}
