// Package config turns what the user typed (connection URLs, db maps, option values) into
// checked settings, with error messages that never repeat a secret.
package config

import (
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"

	"github.com/redis-migrate/redis-migrate/shared/redact"
)

// Topology says how to treat an endpoint: detect it, or force one kind.
type Topology string

const (
	TopologyAuto       Topology = "auto"
	TopologyStandalone Topology = "standalone"
	TopologyCluster    Topology = "cluster"
)

// Endpoint is one Redis endpoint, parsed from a redis:// or rediss:// URL.
//
//	redis[s]://[user[:password]@]host[:port][/db][?option=value...]
//
// Options: tls-server-name, tls-ca-file, tls-insecure-skip-verify=true, topology=auto|standalone|cluster,
// auth=entra (Entra ID token for Azure Managed Redis; the user part is the identity's object id,
// client-id= selects a user-assigned managed identity).
type Endpoint struct {
	Host     string
	Port     int
	Username string
	Password string
	DB       int
	DBSet    bool

	TLS                bool
	ServerName         string
	CAFile             string
	InsecureSkipVerify bool

	Topology Topology
	Entra    bool
	ClientID string // user-assigned managed identity, with Entra
}

// Addr is host:port.
func (e *Endpoint) Addr() string { return net.JoinHostPort(e.Host, strconv.Itoa(e.Port)) }

// String is the endpoint's URL with the password masked; safe to print.
func (e *Endpoint) String() string {
	scheme := "redis"
	if e.TLS {
		scheme = "rediss"
	}
	u := url.URL{Scheme: scheme, Host: e.Addr()}
	switch {
	case e.Username != "" && e.Password != "":
		u.User = url.UserPassword(e.Username, "***")
	case e.Username != "":
		u.User = url.User(e.Username)
	case e.Password != "":
		u.User = url.UserPassword("", "***")
	}
	if e.DBSet {
		u.Path = "/" + strconv.Itoa(e.DB)
	}
	s := u.String()
	return strings.Replace(s, "%2A%2A%2A", "***", 1)
}

// ParseEndpoint parses a connection URL. Errors describe the problem without echoing the URL's
// secret parts; the password is registered with the redact package.
func ParseEndpoint(raw string) (*Endpoint, error) {
	raw = strings.TrimSpace(raw)
	if raw == "" {
		return nil, fmt.Errorf("empty connection URL (want redis://host:port or rediss://host:port)")
	}
	u, err := url.Parse(raw)
	if err != nil {
		// url.Parse's error repeats the whole input, password included: do not wrap it.
		return nil, fmt.Errorf("invalid connection URL %q: not a URL (want redis://[user:password@]host:port[/db])", redact.String(raw))
	}
	if p, ok := u.User.Password(); ok {
		redact.Register(p)
	}
	e := &Endpoint{Topology: TopologyAuto}
	switch strings.ToLower(u.Scheme) {
	case "redis":
	case "rediss":
		e.TLS = true
	default:
		return nil, fmt.Errorf("invalid connection URL %s: scheme %q is not redis:// or rediss://", safeURL(u), u.Scheme)
	}
	e.Host = u.Hostname()
	if e.Host == "" {
		return nil, fmt.Errorf("invalid connection URL %s: no host", safeURL(u))
	}
	e.Port = 6379
	if ps := u.Port(); ps != "" {
		p, err := strconv.Atoi(ps)
		if err != nil || p <= 0 || p > 65535 {
			return nil, fmt.Errorf("invalid connection URL %s: bad port %q", safeURL(u), ps)
		}
		e.Port = p
	}
	if u.User != nil {
		e.Username = u.User.Username()
		e.Password, _ = u.User.Password()
		// redis://:password@host and redis://password@host (old style) both mean "password only".
		if e.Password == "" && e.Username != "" && !strings.Contains(u.User.String(), ":") && u.Query().Get("auth") != "entra" {
			e.Password, e.Username = e.Username, ""
			redact.Register(e.Password)
		}
	}
	if path := strings.Trim(u.Path, "/"); path != "" {
		db, err := strconv.Atoi(path)
		if err != nil || db < 0 || db > 1000 {
			return nil, fmt.Errorf("invalid connection URL %s: database %q is not a number", safeURL(u), path)
		}
		e.DB, e.DBSet = db, true
	}
	q := u.Query()
	for name, vals := range q {
		v := vals[len(vals)-1]
		switch name {
		case "tls-server-name", "servername", "sni":
			e.ServerName = v
		case "tls-ca-file", "cacert":
			e.CAFile = v
		case "tls-insecure-skip-verify", "insecure-skip-verify":
			b, err := strconv.ParseBool(v)
			if err != nil {
				return nil, fmt.Errorf("invalid connection URL %s: %s=%q is not true/false", safeURL(u), name, v)
			}
			e.InsecureSkipVerify = b
		case "topology":
			switch Topology(v) {
			case TopologyAuto, TopologyStandalone, TopologyCluster:
				e.Topology = Topology(v)
			default:
				return nil, fmt.Errorf("invalid connection URL %s: topology=%q (want auto, standalone or cluster)", safeURL(u), v)
			}
		case "auth":
			if v != "entra" && v != "password" {
				return nil, fmt.Errorf("invalid connection URL %s: auth=%q (want entra or password)", safeURL(u), v)
			}
			e.Entra = v == "entra"
		case "client-id":
			e.ClientID = v
		case "db":
			db, err := strconv.Atoi(v)
			if err != nil || db < 0 {
				return nil, fmt.Errorf("invalid connection URL %s: db=%q is not a number", safeURL(u), v)
			}
			e.DB, e.DBSet = db, true
		default:
			return nil, fmt.Errorf("invalid connection URL %s: unknown option %q", safeURL(u), name)
		}
	}
	if (e.ServerName != "" || e.CAFile != "" || e.InsecureSkipVerify) && !e.TLS {
		return nil, fmt.Errorf("invalid connection URL %s: TLS options need the rediss:// scheme", safeURL(u))
	}
	if e.Entra && e.Password != "" {
		return nil, fmt.Errorf("invalid connection URL %s: auth=entra takes no password (the token is fetched from Entra ID)", safeURL(u))
	}
	return e, nil
}

func safeURL(u *url.URL) string {
	c := *u
	c.RawQuery = ""
	if c.User != nil {
		if _, ok := c.User.Password(); ok {
			c.User = url.UserPassword(c.User.Username(), "xxx")
		}
	}
	return strings.Replace(c.String(), ":xxx@", ":***@", 1)
}
