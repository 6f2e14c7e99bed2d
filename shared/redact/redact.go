// Package redact keeps secrets out of everything the tool prints. Every password, key and token
// the process learns is registered here, and all output (logs, errors, status, JSON summaries)
// passes through String before it leaves the process: a secret that slips into a message from a
// library is still replaced.
package redact

import (
	"io"
	"net/url"
	"regexp"
	"sort"
	"strings"
	"sync"
)

const mask = "***"

var (
	mu      sync.RWMutex
	secrets []string
)

// Register remembers a secret (and its URL-encoded forms) so String removes it from output.
// Very short values are ignored: masking "a" would garble every message.
func Register(secret string) {
	if len(secret) < 4 {
		return
	}
	mu.Lock()
	defer mu.Unlock()
	for _, s := range []string{secret, url.QueryEscape(secret), url.PathEscape(secret), url.UserPassword("x", secret).String()[2:]} {
		if s == "" || contains(secrets, s) {
			continue
		}
		secrets = append(secrets, s)
	}
	// Longest first, so a secret that contains another is masked whole.
	sort.Slice(secrets, func(i, j int) bool { return len(secrets[i]) > len(secrets[j]) })
}

// connStringSecretKeys are the connection-string keys whose values are secrets. Names of keys,
// accounts and endpoints (SharedAccessKeyName=root, AccountName=...) are not: registering them
// would mask ordinary words everywhere.
var connStringSecretKeys = map[string]bool{
	"sharedaccesskey": true, "sharedaccesssignature": true, "accountkey": true, "accesskey": true,
	"primarykey": true, "secondarykey": true, "password": true, "pwd": true, "sig": true, "token": true,
}

// RegisterConnectionString registers the secret values of a "k=v;k=v" connection string
// (Service Bus, Storage, ADO-style); key names and other parts are left alone.
func RegisterConnectionString(cs string) {
	for _, part := range strings.Split(cs, ";") {
		k, v, ok := strings.Cut(part, "=")
		if !ok || !connStringSecretKeys[strings.ToLower(strings.TrimSpace(k))] {
			continue
		}
		v = strings.TrimSpace(v)
		Register(v)
		if strings.HasPrefix(v, "?") {
			Register(v[1:])
		}
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// Patterns that are secrets whatever their value: URL userinfo passwords, connection-string keys
// and SAS signatures. Group 1 is kept, group 2 is the value, group 3 (if any) is kept.
var patterns = []*regexp.Regexp{
	regexp.MustCompile(`(?i)(rediss?://[^:/@\s"]*:)([^@\s"]+)(@)`),
	regexp.MustCompile(`(?i)((?:SharedAccessKey|AccountKey|SharedAccessSignature|Password|pwd)=)([^;\s"&]+)`),
	regexp.MustCompile(`(?i)([?&](?:sig|password|token|access_token)=)([^&\s"]+)`),
	regexp.MustCompile(`(?i)(Bearer\s+)([A-Za-z0-9._\-]+)`),
}

// String returns s with every registered secret and secret-shaped pattern masked. Placeholders
// in help text and messages (redis://[user:password@]host, rediss://:<key>@<name>,
// SharedAccessKey=<key>) are not secrets and stay as written.
func String(s string) string {
	mu.RLock()
	for _, sec := range secrets {
		if strings.Contains(s, sec) {
			s = strings.ReplaceAll(s, sec, mask)
		}
	}
	mu.RUnlock()
	for _, p := range patterns {
		if !p.MatchString(s) {
			continue
		}
		s = p.ReplaceAllStringFunc(s, func(m string) string {
			g := p.FindStringSubmatch(m)
			if Placeholder(g[2]) {
				return m
			}
			out := g[1] + mask
			if len(g) > 3 {
				out += g[3]
			}
			return out
		})
	}
	return s
}

// placeholderWords are the words help text uses in place of a secret.
var placeholderWords = map[string]bool{
	"password": true, "pass": true, "passwd": true, "pwd": true, "secret": true, "key": true,
	"access-key": true, "accesskey": true, "access_key": true, "token": true, "sas": true, mask: true,
}

// Placeholder reports whether v, in the place of a secret, is a placeholder rather than a value:
// <anything> or a word such as "password", optionally inside [ ] as in usage syntax.
func Placeholder(v string) bool {
	v = strings.Trim(v, "[]")
	if len(v) >= 2 && v[0] == '<' && v[len(v)-1] == '>' && !strings.ContainsAny(v[1:len(v)-1], "<>") {
		return true
	}
	return placeholderWords[strings.ToLower(v)]
}

// Error returns err's message, redacted ("" for nil).
func Error(err error) string {
	if err == nil {
		return ""
	}
	return String(err.Error())
}

// Writer wraps w so everything written through it is redacted. Each Write is redacted on its own,
// so callers should write whole lines (log and fmt.Fprintln do).
func Writer(w io.Writer) io.Writer { return writer{w} }

type writer struct{ w io.Writer }

func (r writer) Write(p []byte) (int, error) {
	if _, err := io.WriteString(r.w, String(string(p))); err != nil {
		return 0, err
	}
	return len(p), nil
}
