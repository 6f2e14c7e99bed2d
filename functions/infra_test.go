package functions_test

import (
	"encoding/json"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/redis-migrate/redis-migrate/functions"
	"github.com/redis-migrate/redis-migrate/shared/queue"
	"github.com/redis-migrate/redis-migrate/shared/state"
	"github.com/redis-migrate/redis-migrate/shared/testenv"
)

func readRepo(t *testing.T, rel string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(testenv.RepoRoot(), rel))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// bicepList returns the string items of `var name = [ ... ]` in a Bicep file.
func bicepList(t *testing.T, bicep, name string) []string {
	t.Helper()
	m := regexp.MustCompile(`(?s)\bvar ` + name + ` = \[(.*?)\]`).FindStringSubmatch(bicep)
	if m == nil {
		t.Fatalf("infra/main.bicep has no var %s = [...]", name)
	}
	var out []string
	for _, s := range regexp.MustCompile(`'([^']*)'`).FindAllStringSubmatch(m[1], -1) {
		out = append(out, s[1])
	}
	return out
}

func bicepVar(t *testing.T, bicep, name string) string {
	t.Helper()
	m := regexp.MustCompile(`\bvar ` + name + ` = '?([^'\n]*)'?`).FindStringSubmatch(bicep)
	if m == nil {
		t.Fatalf("infra/main.bicep has no var %s", name)
	}
	return strings.TrimSpace(m[1])
}

// The Bicep cannot be compiled here, so it is cross-checked textually against the app: every
// queue and container the functions use exists, every setting the app reads is set or
// documented as optional, and the names agree with host.json, the function.json files,
// azure.yaml and the Makefile.
func TestInfraMatchesTheApp(t *testing.T) {
	bicep := readRepo(t, "infra/main.bicep")
	readme := readRepo(t, "README.md")

	// Queues: every trigger's queue (a dead-letter queue is its queue's), and every queue the
	// app sends to.
	queues := map[string]bool{}
	for _, q := range bicepList(t, bicep, "queueNames") {
		queues[q] = true
	}
	if !strings.Contains(bicep, "[for q in queueNames:") {
		t.Error("the queues are not created from queueNames")
	}
	connections := map[string]bool{}
	timerSchedules := map[string]string{}
	err := fs.WalkDir(functions.Definitions(), ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(p, "function.json") {
			return err
		}
		if !strings.Contains(readme, "\n| `"+path.Dir(p)+"` |") {
			t.Errorf("%s: function %s has no row in a README function table", p, path.Dir(p))
		}
		raw, _ := fs.ReadFile(functions.Definitions(), p)
		var fj struct{ Bindings []map[string]any }
		if err := json.Unmarshal(raw, &fj); err != nil {
			t.Fatalf("%s: %v", p, err)
		}
		for _, b := range fj.Bindings {
			typ, _ := b["type"].(string)
			if c, ok := b["connection"].(string); ok {
				connections[c] = true
			}
			if typ == "blobTrigger" {
				t.Errorf("%s: a blob trigger (the app takes blob events through Service Bus)", p)
			}
			if typ == "timerTrigger" {
				timerSchedules[p], _ = b["schedule"].(string)
			}
			if typ != "serviceBusTrigger" {
				continue
			}
			q, _ := b["queueName"].(string)
			q = strings.TrimSuffix(q, "/$DeadLetterQueue")
			if !queues[q] {
				t.Errorf("%s: queue %q is not in infra/main.bicep queueNames", p, q)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, q := range []string{queue.Plan, queue.Copy, queue.Imports, queue.Sync} {
		if !queues[q] {
			t.Errorf("queue %q (shared/queue) is not in infra/main.bicep", q)
		}
	}
	for _, want := range []string{"requiresDuplicateDetection: true", "duplicateDetectionHistoryTimeWindow: 'PT1H'",
		"maxDeliveryCount: maxDeliveryCount", "lockDuration: 'PT1M'"} {
		if !strings.Contains(bicep, want) {
			t.Errorf("the queues lack %s", want)
		}
	}
	if bicepVar(t, bicep, "maxDeliveryCount") != "10" || !strings.Contains(bicep, "SERVICEBUS_MAX_DELIVERY_COUNT: string(maxDeliveryCount)") {
		t.Error("SERVICEBUS_MAX_DELIVERY_COUNT must be the queues' maxDeliveryCount")
	}

	// Timers: the host does not index a timer whose %SETTING% schedule has no value, so the
	// Bicep and the example settings give it one.
	if len(timerSchedules) == 0 {
		t.Error("no timer function (SyncWatchdog)")
	}
	example := readRepo(t, "local.settings.example.json")
	for p, sched := range timerSchedules {
		name := strings.Trim(sched, "%")
		if !strings.HasPrefix(sched, "%") || !strings.HasSuffix(sched, "%") || name == "" {
			t.Errorf("%s: schedule %q is not an app setting (%%NAME%%)", p, sched)
			continue
		}
		if !regexp.MustCompile(`(?m)^\s+` + regexp.QuoteMeta(name) + `: '[^']+'`).MatchString(bicep) {
			t.Errorf("%s: infra/main.bicep does not set %s", p, name)
		}
		if !strings.Contains(example, `"`+name+`": "`) {
			t.Errorf("%s: local.settings.example.json lacks %s", p, name)
		}
	}
	// The az CLI path of the README creates the same queues and sets the timer schedules too.
	azPath := readme[strings.Index(readme, "\n### Step by step with the az CLI\n"):]
	if m := regexp.MustCompile(`for q in ([a-z ]+); do`).FindStringSubmatch(azPath); m == nil ||
		m[1] != strings.Join(bicepList(t, bicep, "queueNames"), " ") {
		t.Errorf("README az CLI path creates queues %v, infra/main.bicep %v", m, bicepList(t, bicep, "queueNames"))
	}
	for _, sched := range timerSchedules {
		if name := strings.Trim(sched, "%"); !strings.Contains(azPath, `"`+name+`=`) {
			t.Errorf("README az CLI path does not set %s", name)
		}
	}
	if !strings.Contains(bicep, "SYNC_WATCHDOG_SCHEDULE: '"+functions.DefaultSyncWatchdogSchedule+"'") {
		t.Errorf("infra/main.bicep's SYNC_WATCHDOG_SCHEDULE is not the default %s", functions.DefaultSyncWatchdogSchedule)
	}

	// Containers.
	if got := bicepVar(t, bicep, "stateContainer"); got != state.DefaultContainer {
		t.Errorf("state container %q, the app's default is %q", got, state.DefaultContainer)
	}
	if got := bicepVar(t, bicep, "importContainer"); got != functions.ImportContainer {
		t.Errorf("import container %q, the app imports from %q", got, functions.ImportContainer)
	}
	// The Event Grid subscription: BlobCreated of the imports container into the imports queue
	// (as functions.BlobEvents models it for the harness).
	sub := functions.BlobEvents("")[0]
	if sub.Queue != queue.Imports || sub.Container != functions.ImportContainer {
		t.Fatalf("BlobEvents %+v", sub)
	}
	for _, want := range []string{"topicType: 'Microsoft.Storage.StorageAccounts'", "includedEventTypes: [ 'Microsoft.Storage.BlobCreated' ]",
		"subjectBeginsWith: '/blobServices/default/containers/${importContainer}/'", "endpointType: 'ServiceBusQueue'",
		"resourceId: queues[2].id", "scope: queues[2] // imports"} {
		if !strings.Contains(bicep, want) {
			t.Errorf("Event Grid subscription lacks %s", want)
		}
	}
	if bicepList(t, bicep, "queueNames")[2] != queue.Imports {
		t.Error("queues[2] is not the imports queue")
	}

	// Settings: every Setting* constant of the app is set by the Bicep (NAME: or NAME__...:) or
	// listed in a README settings table as optional.
	settings := map[string]bool{}
	files, _ := filepath.Glob(filepath.Join(testenv.RepoRoot(), "functions", "*.go"))
	re := regexp.MustCompile(`\bSetting[A-Za-z]+\s*=\s*"([A-Za-z_][A-Za-z0-9_]*)"`)
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		b, _ := os.ReadFile(f)
		for _, m := range re.FindAllStringSubmatch(string(b), -1) {
			settings[m[1]] = true
		}
	}
	for c := range connections {
		settings[c] = true
	}
	if len(settings) < 15 {
		t.Fatalf("found only %d settings in functions/*.go", len(settings))
	}
	for s := range settings {
		set := regexp.MustCompile(`(?m)^\s+` + regexp.QuoteMeta(s) + `(__[A-Za-z]+)?:`).MatchString(bicep)
		documented := regexp.MustCompile("(?m)^\\|[^\n]*`" + regexp.QuoteMeta(s) + "`").MatchString(readme)
		if !set && !documented {
			t.Errorf("setting %s is read by the app but neither set in infra/main.bicep nor documented in README.md", s)
		}
	}
	for _, c := range []string{functions.SettingStorage, functions.SettingServiceBus} {
		if !regexp.MustCompile(`(?m)^\s+` + c + `__`).MatchString(bicep) {
			t.Errorf("connection %s has no identity-based settings (%s__...) in infra/main.bicep", c, c)
		}
	}

	// host.json and the package: the handler the host starts is the one make package builds.
	var hj struct {
		CustomHandler struct {
			Description struct {
				DefaultExecutablePath string   `json:"defaultExecutablePath"`
				Arguments             []string `json:"arguments"`
			} `json:"description"`
		} `json:"customHandler"`
		FunctionTimeout string `json:"functionTimeout"`
	}
	if err := json.Unmarshal([]byte(readRepo(t, "host.json")), &hj); err != nil {
		t.Fatal(err)
	}
	exe := hj.CustomHandler.Description.DefaultExecutablePath
	if !strings.Contains(readRepo(t, "Makefile"), "-o dist/"+exe+" ") || len(hj.CustomHandler.Description.Arguments) == 0 ||
		hj.CustomHandler.Description.Arguments[0] != "serve" {
		t.Errorf("host.json starts %q %v; make package must build dist/%s and the argument must be serve", exe, hj.CustomHandler.Description.Arguments, exe)
	}
	if hj.FunctionTimeout != "00:30:00" || !strings.Contains(bicep, "IMPORT_INVOCATION_SECONDS: '1500'") {
		t.Errorf("functionTimeout %s: IMPORT_INVOCATION_SECONDS must stay below it", hj.FunctionTimeout)
	}
	// azure.yaml deploys service "app" to the site tagged with it.
	ay := readRepo(t, "azure.yaml")
	if !strings.Contains(ay, "\n  app:\n") || !strings.Contains(ay, "host: function") || !strings.Contains(bicep, "'azd-service-name': 'app'") {
		t.Error("azure.yaml's service app must match the function app's azd-service-name tag")
	}
	if !strings.Contains(ay, "path: infra") || !strings.Contains(ay, "module: main") {
		t.Error("azure.yaml does not point at infra/main.bicep")
	}
	// Both plans.
	for _, want := range []string{"'FlexConsumption'", "'ElasticPremium'", "name: 'FC1', tier: 'FlexConsumption'", "name: 'EP1', tier: 'ElasticPremium'",
		"runtime: { name: 'custom', version: '1.0' }", "FUNCTIONS_WORKER_RUNTIME: 'custom'"} {
		if !strings.Contains(bicep, want) {
			t.Errorf("infra/main.bicep lacks %s", want)
		}
	}
	// Least roles: data roles only, Blob Data Owner per container, AMR access policy.
	for _, want := range []string{"roleStorageBlobDataOwner", "roleServiceBusDataSender", "roleServiceBusDataReceiver", "scope: containers[i]",
		"accessPolicyAssignments", "accessPolicyName: 'default'"} {
		if !strings.Contains(bicep, want) {
			t.Errorf("infra/main.bicep lacks %s", want)
		}
	}
	for _, bad := range []string{"Contributor'", "Owner'", "listKeys("} {
		if strings.Contains(bicep, bad) {
			t.Errorf("infra/main.bicep grants or reads more than it needs: %s", bad)
		}
	}
}
