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

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// Patterns that are secrets whatever their value: URL userinfo passwords, connection-string keys
// and SAS signatures.
var patterns = []*regexp.Regexp{
	regexp.MustCompile(`(?i)(rediss?://[^:/@\s"]*:)[^@\s"]+@`),
	regexp.MustCompile(`(?i)((?:SharedAccessKey|AccountKey|SharedAccessSignature|Password|pwd)=)[^;\s"&]+`),
	regexp.MustCompile(`(?i)([?&](?:sig|password|token|access_token)=)[^&\s"]+`),
	regexp.MustCompile(`(?i)(Bearer\s+)[A-Za-z0-9._\-]+`),
}

// String returns s with every registered secret and secret-shaped pattern masked.
func String(s string) string {
	mu.RLock()
	for _, sec := range secrets {
		if strings.Contains(s, sec) {
			s = strings.ReplaceAll(s, sec, mask)
		}
	}
	mu.RUnlock()
	for _, p := range patterns {
		s = p.ReplaceAllString(s, "${1}"+mask+tail(p))
	}
	return s
}

// The URL pattern consumes the '@'; put it back.
func tail(p *regexp.Regexp) string {
	if p == patterns[0] {
		return "@"
	}
	return ""
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
