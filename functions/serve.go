package functions

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"

	"github.com/redis-migrate/redis-migrate/shared/cli"
	"github.com/redis-migrate/redis-migrate/shared/config"
	"github.com/redis-migrate/redis-migrate/shared/hostharness"
	"github.com/redis-migrate/redis-migrate/shared/queue"
	"github.com/redis-migrate/redis-migrate/shared/redact"
	"github.com/redis-migrate/redis-migrate/shared/state"
)

func init() { cli.Register("serve", runServe) }

// BlobEvents is the Event Grid subscription the app relies on (infra/main.bicep creates it):
// Microsoft.Storage.BlobCreated of the imports container, delivered into the imports queue in
// the given schema (blobevent.SchemaEventGrid or SchemaCloudEvents; "" = Event Grid schema).
// `serve --local` and the tests model it with the host harness.
func BlobEvents(schema string) []hostharness.BlobEventSubscription {
	return []hostharness.BlobEventSubscription{{Connection: SettingStorage, Container: ImportContainer, Queue: queue.Imports, Schema: schema}}
}

// OpenStore opens the state store the way the host reads AzureWebJobsStorage: a connection
// string (UseDevelopmentStorage=true included), or identity-based access through
// AzureWebJobsStorage__blobServiceUri / __accountName (+ __clientId / __credential).
func OpenStore(ctx context.Context, getenv func(string) string) (*state.Store, error) {
	container := getenv(SettingStateContainer)
	if cs := getenv(SettingStorage); cs != "" {
		return state.Open(ctx, cs, container)
	}
	uri, cred, err := storageIdentity(getenv, SettingStorage)
	if err != nil {
		return nil, err
	}
	return state.OpenWithCredential(ctx, uri, cred, container)
}

// storageIdentity is the blob service URL and Entra credential of an identity-based storage
// connection (the settings <name>__blobServiceUri or __accountName, + __clientId / __credential).
func storageIdentity(getenv func(string) string, name string) (string, azcore.TokenCredential, error) {
	uri := getenv(name + "__blobServiceUri")
	if uri == "" {
		if acct := getenv(name + "__accountName"); acct != "" {
			uri = "https://" + acct + ".blob.core.windows.net"
		}
	}
	if uri == "" {
		return "", nil, fmt.Errorf("no storage: set %s (a connection string, or UseDevelopmentStorage=true with Azurite), "+
			"or %s__blobServiceUri for a managed identity", name, name)
	}
	var cred azcore.TokenCredential
	var err error
	clientID := getenv(name + "__clientId")
	if clientID != "" || strings.EqualFold(getenv(name+"__credential"), "managedidentity") {
		o := &azidentity.ManagedIdentityCredentialOptions{}
		if clientID != "" {
			o.ID = azidentity.ClientID(clientID)
		}
		cred, err = azidentity.NewManagedIdentityCredential(o)
	} else {
		cred, err = azidentity.NewDefaultAzureCredential(nil)
	}
	if err != nil {
		return "", nil, fmt.Errorf("storage credential: %s", redact.Error(err))
	}
	return uri, cred, nil
}

// LocalHandler is the hostharness.HandlerFactory of this app: the real App over the state
// store the settings name (opened on first use, as `serve` does), sending to the harness's
// in-memory queue.
func LocalHandler(getenv func(string) string, sender queue.Sender, log io.Writer) (http.Handler, func(), error) {
	app := New(Config{Getenv: getenv, Sender: sender, Log: log,
		OpenStore: func(ctx context.Context) (*state.Store, error) { return OpenStore(ctx, getenv) }})
	return app.Handler(), app.Close, nil
}

// LoadSettings reads app settings from a local.settings.json file ("Values") and the process
// environment; like Core Tools, a variable already set in the environment wins. A missing file
// is an error only when required.
func LoadSettings(file string, required bool) (map[string]string, error) {
	out := map[string]string{}
	if file != "" {
		b, err := os.ReadFile(file)
		switch {
		case err == nil:
			var ls struct {
				IsEncrypted bool              `json:"IsEncrypted"`
				Values      map[string]string `json:"Values"`
			}
			if err := json.Unmarshal(b, &ls); err != nil {
				return nil, fmt.Errorf("%s: not a local.settings.json file: %v", file, err)
			}
			if ls.IsEncrypted {
				return nil, fmt.Errorf("%s: encrypted settings are not supported; decrypt with `func settings decrypt`", file)
			}
			for k, v := range ls.Values {
				out[k] = v
			}
		case errors.Is(err, os.ErrNotExist) && !required:
		default:
			return nil, fmt.Errorf("reading settings: %v", err)
		}
	}
	for _, kv := range os.Environ() {
		if k, v, ok := strings.Cut(kv, "="); ok {
			out[k] = v
		}
	}
	registerSettingSecrets(out)
	return out, nil
}

// registerSettingSecrets registers every secret-looking setting value with redact, so even a
// library's error that echoes one is masked.
func registerSettingSecrets(s map[string]string) {
	for k, v := range s {
		if strings.Contains(v, "://") {
			config.RegisterURLSecret(v)
		}
		if strings.Contains(v, ";") && strings.Contains(v, "=") {
			// Values of secret keys only: SharedAccessKeyName=root must not mask "root".
			redact.RegisterConnectionString(v)
		}
		lk := strings.ToLower(k)
		secretName := strings.Contains(lk, "key") || strings.Contains(lk, "secret") || strings.Contains(lk, "password") || strings.Contains(lk, "token")
		// Short or boolean values would mask ordinary words everywhere.
		if secretName && len(v) >= 8 && !strings.EqualFold(v, "true") && !strings.EqualFold(v, "false") {
			redact.Register(v)
		}
	}
}

func runServe(ctx context.Context, env *cli.Env, args []string) error {
	fs := cli.NewFlagSet(env, "serve", "                     the Azure Functions custom handler (port from FUNCTIONS_CUSTOMHANDLER_PORT)\n"+
		"       redis-migrate serve --local [--port P] [--settings FILE]   the whole app on http://127.0.0.1:P/api/")
	local := fs.Bool("local", false, "serve the whole function app locally (host harness) instead of being the custom handler")
	port := fs.Int("port", 7071, "with --local: the port of http://127.0.0.1:PORT/api/...")
	settingsFile := fs.String("settings", "", "with --local: app settings in local.settings.json format (default local.settings.json)")
	hostJSON := fs.String("host-json", "", "with --local: host.json to honour (default ./host.json if present, else built-in defaults)")
	if _, err := fs.ParseArgs(args); err != nil {
		return err // -h: usage printed; a bad flag: printed once by the caller, then the usage
	}
	if *local {
		return serveLocal(ctx, env, *port, *settingsFile, *hostJSON)
	}
	return serveHandler(ctx, env)
}

// serveHandler is the custom handler proper, started by the Functions host.
func serveHandler(ctx context.Context, env *cli.Env) error {
	getenv := env.Getenv
	settings := map[string]string{}
	for _, kv := range os.Environ() {
		if k, v, ok := strings.Cut(kv, "="); ok {
			settings[k] = v
		}
	}
	registerSettingSecrets(settings)
	port := getenv(SettingHandlerPort)
	if port == "" {
		return fmt.Errorf("%s is not set: `serve` is started by the Azure Functions host (use `serve --local` to run the app yourself)", SettingHandlerPort)
	}
	// Listen first: the host waits about 30 s for the first GET / (its custom handler start-up
	// timeout). Storage (with its container create) and Service Bus are opened by the first
	// invocation that needs them, and a broken one fails those invocations, named in the error.
	ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", port))
	if err != nil {
		// Some hosts reach the handler on another interface; fall back to all.
		if ln, err = net.Listen("tcp", ":"+port); err != nil {
			return err
		}
	}
	app := New(Config{Getenv: getenv, Log: env.Stderr,
		OpenStore: func(ctx context.Context) (*state.Store, error) { return OpenStore(ctx, getenv) },
		OpenSender: func() (queue.Sender, error) {
			s, err := queue.NewServiceBusFromSettings(getenv, SettingServiceBus, nil)
			if err != nil {
				return nil, err
			}
			return s, nil
		}})
	defer app.Close()
	srv := &http.Server{Handler: app.Handler(), ReadHeaderTimeout: 30 * time.Second}
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	fmt.Fprintf(env.Stderr, "redis-migrate custom handler listening on %s\n", ln.Addr())
	if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// serveLocal runs the host harness around the handler until interrupted.
func serveLocal(ctx context.Context, env *cli.Env, port int, settingsFile, hostJSONFile string) error {
	required := settingsFile != ""
	if settingsFile == "" {
		settingsFile = "local.settings.json"
	}
	settings, err := LoadSettings(settingsFile, required)
	if err != nil {
		return err
	}
	var hostJSON []byte
	if hostJSONFile != "" {
		if hostJSON, err = os.ReadFile(hostJSONFile); err != nil {
			return err
		}
	} else if b, err := os.ReadFile("host.json"); err == nil {
		hostJSON = b
	} else if b, err := os.ReadFile(filepath.Join(filepath.Dir(settingsFile), "host.json")); err == nil {
		hostJSON = b
	}
	h, err := hostharness.Start(ctx, hostharness.Options{Functions: Definitions(), HostJSON: hostJSON, Settings: settings,
		Port: port, NewHandler: LocalHandler, Log: env.Stderr, BlobEvents: BlobEvents("")})
	if err != nil {
		return err
	}
	defer h.Close()
	fmt.Fprintf(env.Stderr, "redis-migrate function app (local host harness) at %s/api/\n", h.URL)
	if settings[SettingLocalFunctionKey] == "" {
		// A generated key for this run only; set LOCAL_FUNCTION_KEY to choose one.
		fmt.Fprintf(env.Stderr, "function key for this run: %s (send it as x-functions-key)\n", h.FunctionKey)
	} else {
		fmt.Fprintf(env.Stderr, "function key: the value of %s (send it as x-functions-key)\n", SettingLocalFunctionKey)
	}
	<-ctx.Done()
	fmt.Fprintln(env.Stderr, "stopping")
	return nil
}
