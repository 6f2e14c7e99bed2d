package functions_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis-migrate/redis-migrate/functions"
	"github.com/redis-migrate/redis-migrate/shared/cli"
	"github.com/redis-migrate/redis-migrate/shared/state"
	"github.com/redis-migrate/redis-migrate/shared/testenv"
)

// readmeBlock returns the command lines (comments and a trailing & cut) of the first ```sh block
// after heading, and the block's raw text.
func readmeBlock(t *testing.T, readme, heading string) ([][]string, string) {
	t.Helper()
	i := strings.Index(readme, "\n"+heading+"\n")
	if i < 0 {
		t.Fatalf("README.md has no %q", heading)
	}
	m := regexp.MustCompile("(?s)```sh\n(.*?)```").FindStringSubmatch(readme[i:])
	if m == nil {
		t.Fatalf("no sh block after %q", heading)
	}
	var cmds [][]string
	for _, line := range strings.Split(m[1], "\n") {
		line, _, _ = strings.Cut(line, "#")
		line = strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(line), "&"))
		if line != "" {
			cmds = append(cmds, strings.Fields(line))
		}
	}
	return cmds, m[1]
}

// The commands of README "Run it locally", run as written from a checkout: the binary make
// builds, the Azurite make deps installs started with the README's flags (the Azure SDK's API
// version is refused without --skipApiVersionCheck), the example settings copied and filled in,
// and `./redis-migrate serve --local` with the README's flags; then the README's first HTTP API
// request migrates. Only the ports differ (free ones; Azurite's default 10000 and 7071 may be
// taken), so the storage setting names Azurite's port instead of UseDevelopmentStorage=true.
func TestReadmeRunItLocally(t *testing.T) {
	readme := readRepo(t, "README.md")
	cmds, _ := readmeBlock(t, readme, "### Run it locally")
	if len(cmds) != 4 {
		t.Fatalf("Run it locally: want 4 commands (make, azurite, cp, serve), got %q", cmds)
	}
	mk, azc, cp, serve := cmds[0], cmds[1], cmds[2], cmds[3]
	makefile := readRepo(t, "Makefile")
	if strings.Join(mk, " ") != "make deps build" || !strings.Contains(makefile, "\ndeps:") ||
		!strings.Contains(makefile, "$(GO) build -o redis-migrate .") {
		t.Fatalf("%q: the Makefile must have deps and build (-o redis-migrate)", mk)
	}
	if serve[0] != "./redis-migrate" || serve[1] != "serve" {
		t.Fatalf("%q: not the binary make build writes", serve)
	}
	// Azurite, where install-deps puts it, with the README's flags.
	if azc[0] != ".tools/azurite/node_modules/.bin/azurite-blob" ||
		!strings.Contains(readRepo(t, ".ci/install-deps.sh"), `"$tools/azurite/node_modules/.bin/azurite-blob"`) {
		t.Fatalf("%q: not the azurite-blob .ci/install-deps.sh installs", azc[0])
	}
	bin := filepath.Join(testenv.RepoRoot(), azc[0])
	if _, err := os.Stat(bin); err != nil {
		t.Skipf("%s not installed (make deps): %v", azc[0], err)
	}
	port, err := testenv.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	az := exec.Command(bin, append(azc[1:], "--blobHost", "127.0.0.1", "--blobPort", strconv.Itoa(port))...)
	az.Dir = dir
	azLog := &syncBuffer{}
	az.Stdout, az.Stderr = azLog, azLog
	if err := az.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = az.Process.Kill(); _ = az.Wait() })
	for start := time.Now(); ; time.Sleep(100 * time.Millisecond) {
		if c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port)); err == nil {
			c.Close()
			break
		}
		if time.Since(start) > 30*time.Second {
			t.Fatalf("azurite with the README's flags did not listen:\n%s", azLog.String())
		}
	}
	storage := fmt.Sprintf("DefaultEndpointsProtocol=http;AccountName=%s;AccountKey=%s;BlobEndpoint=http://127.0.0.1:%d/%s;",
		testenv.DevStoreAccount, testenv.DevStoreKey, port, testenv.DevStoreAccount)

	// cp local.settings.example.json local.settings.json, then the three settings the README names.
	if strings.Join(cp, " ") != "cp local.settings.example.json local.settings.json" {
		t.Fatalf("%q", cp)
	}
	var ls struct {
		IsEncrypted bool
		Values      map[string]string
	}
	if err := json.Unmarshal([]byte(readRepo(t, cp[1])), &ls); err != nil {
		t.Fatal(err)
	}
	if ls.Values[functions.SettingStorage] != "UseDevelopmentStorage=true" {
		t.Fatalf("%s in the example is %q", functions.SettingStorage, ls.Values[functions.SettingStorage])
	}
	src, dst := testenv.StartRedis(t), testenv.StartRedis(t)
	if err := testenv.FillBulk(context.Background(), src.Client(t, 0), "readme:", 1200, 3); err != nil {
		t.Fatal(err)
	}
	const key = "readme-local-function-key-0123456789"
	ls.Values["SOURCE_REDIS"], ls.Values["TARGET_REDIS"], ls.Values[functions.SettingLocalFunctionKey] = src.URL(), dst.URL(), key
	ls.Values[functions.SettingStorage] = storage
	b, _ := json.MarshalIndent(ls, "", "  ")
	settingsFile := filepath.Join(dir, cp[2])
	if err := os.WriteFile(settingsFile, b, 0o600); err != nil {
		t.Fatal(err)
	}
	// serve --local reads host.json beside the settings when it is not in the working directory.
	if err := os.WriteFile(filepath.Join(dir, "host.json"), []byte(readRepo(t, "host.json")), 0o644); err != nil {
		t.Fatal(err)
	}

	// ./redis-migrate serve --local --port 7071 --settings local.settings.json
	args := append([]string(nil), serve[2:]...)
	var sawPort, sawSettings bool
	apiPort, err := testenv.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(args); i++ {
		switch args[i] {
		case "--port":
			args[i+1], sawPort = strconv.Itoa(apiPort), true
		case "--settings":
			args[i+1], sawSettings = settingsFile, true
		}
	}
	if !sawPort || !sawSettings || args[0] != "--local" {
		t.Fatalf("serve arguments %q: want --local, --port and --settings", serve[2:])
	}
	log := &syncBuffer{}
	run := serveUntilCleanup(t, "serve --local", func(ctx context.Context) error {
		return functions.RunServe(ctx, &cli.Env{Stdout: io.Discard, Stderr: log, Getenv: os.Getenv}, args)
	})
	base := fmt.Sprintf("http://127.0.0.1:%d", apiPort)

	// The README's first request (HTTP API), with the key in the header as shown.
	api, _ := readmeBlock(t, readme, "### HTTP API")
	body := regexp.MustCompile(`(?s)-d '(.*?)'`).FindStringSubmatch(readme[strings.Index(readme, "\n### HTTP API\n"):])
	if len(api) == 0 || api[0][0] != "curl" || body == nil {
		t.Fatalf("HTTP API: no curl with a -d body")
	}
	var resp *http.Response
	for start := time.Now(); ; time.Sleep(100 * time.Millisecond) {
		req, _ := http.NewRequest("POST", base+"/api/migrations", strings.NewReader(body[1]))
		req.Header.Set("x-functions-key", key)
		req.Header.Set("Content-Type", "application/json")
		if resp, err = http.DefaultClient.Do(req); err == nil {
			break
		}
		if exited, err := run.exited(); exited {
			t.Fatalf("serve --local exited: %v\n%s", err, log.String())
		}
		if time.Since(start) > 30*time.Second {
			t.Fatalf("serve --local did not answer: %v\n%s", err, log.String())
		}
	}
	rb, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("README request answered %d %s\n%s", resp.StatusCode, rb, log.String())
	}
	loc := resp.Header.Get("Location")
	for start := time.Now(); ; time.Sleep(200 * time.Millisecond) {
		req, _ := http.NewRequest("GET", loc, nil)
		req.Header.Set("x-functions-key", key)
		r, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var st state.Status
		err = json.NewDecoder(r.Body).Decode(&st)
		r.Body.Close()
		if err == nil && st.Final() && !st.Stale {
			if st.State != state.StateCompleted || st.Keys.Copied != 1200 {
				t.Fatalf("state %s keys %+v", st.State, st.Keys)
			}
			break
		}
		if time.Since(start) > 2*time.Minute {
			t.Fatalf("migration not final: %+v %v\n%s", st, err, log.String())
		}
	}
	if n, _ := dst.Client(t, 0).DBSize(context.Background()).Result(); n != 1200 {
		t.Fatalf("target holds %d keys", n)
	}
}
