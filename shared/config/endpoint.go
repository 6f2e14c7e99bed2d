// Package config turns what the user typed (connection URLs, db maps, option values) into
// checked settings, with error messages that never repeat a secret.
package config

import (
	"errors"
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

// URLError is a connection URL that could not be used. Error() shows the URL with its
// password masked, for a URL the user typed; Shape says what is wrong without any part of the
// value, for a URL read from an app setting, whose value must never be echoed.
type URLError struct {
	safe   string // the URL with the password masked; "" when it cannot be shown safely
	detail string // the problem, may quote a non-secret part (a port, an option value)
	Shape  string // the problem, value-free
}

func (e *URLError) Error() string {
	if e.safe == "" {
		return "invalid connection URL: " + e.detail
	}
	return "invalid connection URL " + e.safe + ": " + e.detail
}

// encodeHint tells how to write characters that end the password part of a URL early.
const encodeHint = "percent-encode special characters in the user name and password " +
	"(/ as %2F, ? as %3F, # as %23, @ as %40, : as %3A, space as %20, % as %25)"

const urlForm = "want redis[s]://[user:password@]host[:port][/db]"

// ParseEndpoint parses a connection URL. Errors describe the problem without echoing the URL's
// secret parts; the password is registered with the redact package, even when the URL does
// not parse, before anything can print it.
func ParseEndpoint(raw string) (*Endpoint, error) {
	raw = strings.TrimSpace(raw)
	if raw == "" {
		return nil, &URLError{detail: "empty (" + urlForm + ")", Shape: "empty (" + urlForm + ")"}
	}
	RegisterURLSecret(raw)
	if misSplitUserinfo(raw) {
		// A '/', '?' or '#' inside the password ends the authority early: the URL parses, but
		// with part of the password as the path. Never print it.
		msg := "the part before '@' holds '/', '?' or '#'; " + encodeHint
		return nil, &URLError{detail: msg, Shape: msg}
	}
	u, err := url.Parse(raw)
	if err != nil {
		// url.Parse's error repeats the whole input, password included: do not wrap it.
		msg := "not a URL (" + urlForm + "; " + encodeHint + ")"
		if strings.Contains(err.Error(), "invalid port") {
			msg = "bad port (want 1-65535)"
		}
		return nil, &URLError{detail: msg, Shape: msg}
	}
	bad := func(shape, detail string) error {
		if detail == "" {
			detail = shape
		}
		return &URLError{safe: safeURL(u), detail: detail, Shape: shape}
	}
	e := &Endpoint{Topology: TopologyAuto}
	switch strings.ToLower(u.Scheme) {
	case "redis":
	case "rediss":
		e.TLS = true
	default:
		// Not a URL of ours (perhaps a key or token pasted by mistake): show none of it.
		msg := "the scheme is not redis:// or rediss:// (" + urlForm + ")"
		return nil, &URLError{detail: msg, Shape: msg}
	}
	e.Host = u.Hostname()
	if e.Host == "" {
		return nil, bad("no host ("+urlForm+")", "")
	}
	e.Port = 6379
	if ps := u.Port(); ps != "" {
		p, err := strconv.Atoi(ps)
		if err != nil || p <= 0 || p > 65535 {
			return nil, bad("bad port (want 1-65535)", fmt.Sprintf("bad port %q", ps))
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
			return nil, bad("the database (the path) is not a number 0-1000", fmt.Sprintf("database %q is not a number", path))
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
				return nil, bad(name+" is not true/false", fmt.Sprintf("%s=%q is not true/false", name, v))
			}
			e.InsecureSkipVerify = b
		case "topology":
			switch Topology(v) {
			case TopologyAuto, TopologyStandalone, TopologyCluster:
				e.Topology = Topology(v)
			default:
				return nil, bad("topology: want auto, standalone or cluster", fmt.Sprintf("topology=%q (want auto, standalone or cluster)", v))
			}
		case "auth":
			if v != "entra" && v != "password" {
				return nil, bad("auth: want entra or password", fmt.Sprintf("auth=%q (want entra or password)", v))
			}
			e.Entra = v == "entra"
		case "client-id":
			e.ClientID = v
		case "db":
			db, err := strconv.Atoi(v)
			if err != nil || db < 0 {
				return nil, bad("db is not a number", fmt.Sprintf("db=%q is not a number", v))
			}
			e.DB, e.DBSet = db, true
		default:
			return nil, bad("an unknown option (known: tls-server-name, tls-ca-file, tls-insecure-skip-verify, topology, auth, client-id, db)",
				fmt.Sprintf("unknown option %q", name))
		}
	}
	if (e.ServerName != "" || e.CAFile != "" || e.InsecureSkipVerify) && !e.TLS {
		return nil, bad("TLS options need the rediss:// scheme", "")
	}
	if e.Entra && e.Password != "" {
		return nil, bad("auth=entra takes no password (the token is fetched from Entra ID)", "")
	}
	return e, nil
}

// userinfo is what lies between "://" and the last '@' of raw: the user name and password,
// whatever characters they hold ("" when there is no '@').
func userinfo(raw string) (string, bool) {
	i := strings.Index(raw, "://")
	if i < 0 {
		return "", false
	}
	rest := raw[i+3:]
	at := strings.LastIndex(rest, "@")
	if at < 0 {
		return "", false
	}
	return rest[:at], true
}

// RegisterURLSecret registers the password (or a lone user part, the old password-only form)
// in raw and its decoded form, so nothing prints it even when the URL is malformed.
func RegisterURLSecret(raw string) {
	ui, ok := userinfo(raw)
	if !ok {
		return
	}
	secret := ui
	if _, pw, found := strings.Cut(ui, ":"); found {
		secret = pw
	}
	redact.Register(secret)
	if dec, err := url.PathUnescape(secret); err == nil {
		redact.Register(dec)
	}
}

// misSplitUserinfo reports a '/', '?' or '#' before the last '@': url.Parse would end the
// host part there and take the rest of the password for a path, query or fragment.
func misSplitUserinfo(raw string) bool {
	ui, ok := userinfo(raw)
	return ok && strings.ContainsAny(ui, "/?#")
}

// URLShape is err's value-free description when it is a URL error, else "".
func URLShape(err error) string {
	var ue *URLError
	if errors.As(err, &ue) {
		return ue.Shape
	}
	return ""
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
