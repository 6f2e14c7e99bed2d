package functions

import (
	"context"
	"fmt"
	"net"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis-migrate/redis-migrate/shared/config"
	"github.com/redis-migrate/redis-migrate/shared/redact"
	"github.com/redis-migrate/redis-migrate/shared/redisconn"
	"github.com/redis-migrate/redis-migrate/shared/state"
)

// fieldError is a request problem tied to one field of the request.
type fieldError struct {
	field, msg string
}

func (e *fieldError) Error() string { return e.msg }

func fieldErrf(field, format string, args ...any) *fieldError {
	return &fieldError{field: field, msg: fmt.Sprintf(format, args...)}
}

var settingNameRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]{0,127}$`)

// endpointSettingSuffix names the app settings a request may point an endpoint at, by
// convention; REDIS_ENDPOINT_SETTINGS lists any others. Every other setting and environment
// variable (storage keys, IDENTITY_HEADER, ...) stays unreadable through the API.
const endpointSettingSuffix = "_REDIS"

// settingRefused keeps the app's own settings out even when a list names them.
func settingRefused(name string) bool {
	u := strings.ToUpper(name)
	for _, p := range []string{"AZUREWEBJOBS", "WEBSITE_", "FUNCTIONS_", "APPSETTING_", "SERVICEBUSCONNECTION",
		"APPLICATIONINSIGHTS", "AZURE_CLIENT_SECRET", "IDENTITY_", "MSI_", strings.ToUpper(SettingLocalFunctionKey)} {
		if strings.HasPrefix(u, p) {
			return true
		}
	}
	return false
}

// endpointSetting says whether a request may name setting as a Redis endpoint: its name ends
// in _REDIS, or REDIS_ENDPOINT_SETTINGS lists it. The value is not read before this passes.
func (a *App) endpointSetting(name string) bool {
	if settingRefused(name) {
		return false
	}
	if strings.HasSuffix(name, endpointSettingSuffix) && len(name) > len(endpointSettingSuffix) {
		return true
	}
	for _, n := range strings.Split(a.getenv(SettingEndpointSettings), ",") {
		if strings.TrimSpace(n) == name {
			return true
		}
	}
	return false
}

// resolveEndpoint turns a stored endpoint reference into a parsed endpoint; field prefixes the
// request field names in errors ("source", "target").
func (a *App) resolveEndpoint(ref state.EndpointRef, field string) (*config.Endpoint, error) {
	switch {
	case ref.Setting != "":
		if !settingNameRE.MatchString(ref.Setting) {
			return nil, fieldErrf(field+".setting", "%s.setting: not an app setting name (letters, digits and '_')", field)
		}
		if !a.endpointSetting(ref.Setting) {
			return nil, fieldErrf(field+".setting", "%s.setting: app setting %s is not a Redis endpoint setting: "+
				"name it <NAME>%s (e.g. SOURCE_REDIS) or list it in %s", field, ref.Setting, endpointSettingSuffix, SettingEndpointSettings)
		}
		v := strings.TrimSpace(a.getenv(ref.Setting))
		if v == "" {
			return nil, fieldErrf(field+".setting", "%s.setting: app setting %s is not set", field, ref.Setting)
		}
		ep, err := config.ParseEndpoint(v)
		if err != nil {
			// Never the value, nor any part of it: only the setting's name and its shape.
			shape := config.URLShape(err)
			if shape == "" {
				shape = "not a usable connection URL"
			}
			return nil, fieldErrf(field+".setting", "%s.setting: app setting %s does not hold a Redis URL: %s", field, ref.Setting, shape)
		}
		return ep, nil
	case ref.URL != "":
		if !a.inlineAllowed() {
			return nil, fieldErrf(field+".url", "%s.url: inline URLs are not accepted; put the URL in an app setting and send "+
				`{"setting":"NAME"}, or set %s=true`, field, SettingAllowInlineURLs)
		}
		ep, err := config.ParseEndpoint(ref.URL)
		if err != nil {
			return nil, fieldErrf(field+".url", "%s.url: %s", field, redact.Error(err))
		}
		return ep, nil
	case ref.Host != "":
		host, portStr, err := net.SplitHostPort(ref.Host)
		if err != nil {
			host, portStr = ref.Host, "10000"
		}
		port, perr := strconv.Atoi(portStr)
		if host == "" || strings.ContainsAny(host, "/@?# ") || perr != nil || port <= 0 || port > 65535 {
			return nil, fieldErrf(field+".host", "%s.host: %q is not host:port (e.g. myredis.westeurope.redis.azure.net:10000)", field, ref.Host)
		}
		if ref.ObjectID == "" {
			return nil, fieldErrf(field+".entra.objectId", "%s.entra.objectId: the identity's object id is required (it is the Redis user name)", field)
		}
		ep := &config.Endpoint{Host: host, Port: port, TLS: true, Entra: true, Username: ref.ObjectID,
			ClientID: ref.ClientID, Topology: config.TopologyAuto}
		if ref.Topology != "" {
			ep.Topology = config.Topology(ref.Topology)
		}
		return ep, nil
	}
	return nil, fieldErrf(field, "%s: give one of setting, url, or host with entra", field)
}

func (a *App) inlineAllowed() bool {
	v, _ := strconv.ParseBool(strings.TrimSpace(a.getenv(SettingAllowInlineURLs)))
	return v
}

// openEndpoint resolves and opens one endpoint.
func (a *App) openEndpoint(ctx context.Context, ref state.EndpointRef, role string) (*redisconn.Conn, error) {
	ep, err := a.resolveEndpoint(ref, role)
	if err != nil {
		return nil, err
	}
	c, err := redisconn.Open(ctx, ep, redisconn.Options{Role: role, PoolSize: 16})
	if err != nil {
		return nil, fieldErrf(role, "%s", redact.Error(err))
	}
	return c, nil
}

// connCache keeps one opened source and target per migration for the instance's lifetime (the
// host calls many batches of the same migration), closing those idle for a while.
type connCache struct {
	a       *App
	mu      sync.Mutex
	entries map[string]*connEntry
}

type connEntry struct {
	once sync.Once
	c    any
	err  error
	used time.Time
}

const connIdle = 10 * time.Minute

func newConnCache(a *App) *connCache { return &connCache{a: a, entries: map[string]*connEntry{}} }

func (cc *connCache) get(ctx context.Context, m *state.Migration, role string) (*redisconn.Conn, error) {
	ref := m.Source
	if role == "target" {
		ref = m.Target
	}
	key := m.ID + "/" + role
	cc.mu.Lock()
	now := time.Now()
	for k, e := range cc.entries {
		if now.Sub(e.used) > connIdle && k != key {
			if c, ok := e.c.(*redisconn.Conn); ok && c != nil {
				go c.Close()
			}
			delete(cc.entries, k)
		}
	}
	e, ok := cc.entries[key]
	if !ok {
		e = &connEntry{}
		cc.entries[key] = e
	}
	e.used = now
	cc.mu.Unlock()
	e.once.Do(func() {
		octx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer cancel()
		e.c, e.err = cc.a.openEndpoint(octx, ref, role)
	})
	if e.err != nil {
		// Do not cache a failure: the next delivery tries again.
		cc.mu.Lock()
		if cc.entries[key] == e {
			delete(cc.entries, key)
		}
		cc.mu.Unlock()
		return nil, e.err
	}
	return e.c.(*redisconn.Conn), nil
}

func (cc *connCache) closeAll() {
	cc.mu.Lock()
	defer cc.mu.Unlock()
	for k, e := range cc.entries {
		if c, ok := e.c.(*redisconn.Conn); ok && c != nil {
			c.Close()
		}
		delete(cc.entries, k)
	}
}
