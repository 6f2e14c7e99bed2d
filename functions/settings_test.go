package functions_test

import (
	"encoding/json"
	"fmt"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/redis-migrate/redis-migrate/functions"
	"github.com/redis-migrate/redis-migrate/shared/state"
	"github.com/redis-migrate/redis-migrate/shared/testenv"
)

// Every environment variable of the test process (on Azure, app settings and the platform's
// own secrets such as IDENTITY_HEADER are environment variables too), plus planted secrets,
// named as an endpoint setting by every route that resolves one: no response and no log line
// holds any of their values.
func TestNoSettingValueReadableThroughTheAPI(t *testing.T) {
	dst := testenv.StartRedis(t)
	planted := map[string]string{
		"IDENTITY_HEADER":         "identity-header-secret-6c1f0a9e",
		"MSI_SECRET":              "msi-secret-value-1b2c3d4e",
		"SOME_API_TOKEN":          "eyJhbGciOiJSUzI1NiJ9.token-body-7f3e",
		"TOKEN_REDIS":             "eyJhbGciOiJSUzI1NiJ9.looks-like-a-token-9a8b", // allowed by name, not a URL
		"SPACEPW_REDIS":           "redis://:pass word secret 42@127.0.0.1:1",     // a URL that does not parse
		"SLASHPW_REDIS":           "rediss://:abc/def+ghi=secretkey@127.0.0.1:1",  // '/' in an access key
		"LISTED_CACHE":            "Endpoint=sb://x/;SharedAccessKey=listed-secret-5d6e",
		"REDIS_ENDPOINT_SETTINGS": "LISTED_CACHE",
		"TARGET_REDIS":            dst.URL(),
	}
	settings := map[string]string{}
	for _, kv := range os.Environ() {
		if k, v, ok := strings.Cut(kv, "="); ok {
			settings[k] = v
		}
	}
	for k, v := range planted {
		settings[k] = v
	}
	// An import whose record the blob event wrote from IMPORT_TARGET_SETTING, naming a setting
	// that is not set: a failed import that never started, so POST /api/imports may resume it
	// with another target, which is resolved then (the fourth route below).
	settings["IMPORT_TARGET_SETTING"] = "UNSET_REDIS"
	az := testenv.StartAzurite(t)
	a := startApp(t, appOptions{settings: settings, azurite: az})
	uploadRDB(t, az, "resumable.rdb", []byte("REDIS0011"), map[string]string{functions.MetadataMigration: "resumable"})
	if st := a.waitImport("resumable", time.Minute); st.State != state.StateFailed || !strings.Contains(st.Error, "UNSET_REDIS") {
		t.Fatalf("import record from the event: state %s, error %q", st.State, st.Error)
	}
	for _, k := range []string{"AzureWebJobsStorage", "LOCAL_FUNCTION_KEY"} { // set by startApp
		settings[k] = a.h.Setting(k)
	}

	nameRE := regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]{0,127}$`)
	var names []string
	for k := range settings {
		if nameRE.MatchString(k) && k != "TARGET_REDIS" && k != "IMPORT_TARGET_SETTING" {
			names = append(names, k)
		}
	}
	bodies := func(name string) []string {
		src := fmt.Sprintf(`{"setting":%q}`, name)
		return []string{
			`{"source":` + src + `,"target":{"setting":"TARGET_REDIS"}}`,
			`{"source":{"setting":"TARGET_REDIS"},"target":` + src + `}`,
			`{"blob":"rdb-imports/x.rdb","target":` + src + `}`,
			`{"id":"resumable","target":` + src + `}`,
		}
	}
	type probe struct{ name, out string }
	var probes []probe
	for _, name := range names {
		for i, body := range bodies(name) {
			route := "/api/migrations"
			if i >= 2 {
				route = "/api/imports"
			}
			before := len(a.log.String())
			code, _, resp := a.do("POST", route, testKey, body)
			if code < 400 {
				t.Errorf("%s %s: %d %s", route, name, code, resp)
			}
			var e struct{ Error string }
			_ = json.Unmarshal(resp, &e)
			// Every refusal names the setting (so it came from resolving it, on every route).
			if !strings.Contains(e.Error, name) {
				t.Errorf("%s %s: the error does not name the setting: %s", route, name, resp)
			}
			probes = append(probes, probe{name, string(resp) + a.log.String()[before:]})
		}
	}
	leaks := 0
	for k, v := range settings {
		v = strings.TrimSpace(v)
		if len(v) < 8 || k == "TARGET_REDIS" || k == "IMPORT_TARGET_SETTING" || settings[v] != "" {
			// too short to tell a leak from a coincidence ("true", "/root"), or a setting name
			// (IMPORT_TARGET_SETTING names one that is unset: errors name it on purpose, and the
			// shared log can carry that line into another probe's slice)
			continue
		}
		for _, pr := range probes {
			if strings.Contains(pr.out, v) {
				leaks++
				t.Errorf("value of %s appears in the output for setting %s", k, pr.name)
			}
		}
	}
	for _, secret := range []string{"pass word secret", "def+ghi=secretkey", "secretkey", "looks-like-a-token", "listed-secret"} {
		for _, pr := range probes {
			if strings.Contains(pr.out, secret) {
				t.Errorf("%q appears in the output for setting %s", secret, pr.name)
			}
		}
	}
	if len(probes) < 4*len(planted) {
		t.Fatalf("only %d probes", len(probes))
	}
	t.Logf("%d settings tried on 4 routes, %d leaks", len(names), leaks)
}
