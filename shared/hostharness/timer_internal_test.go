package hostharness

import (
	"strings"
	"testing"
	"time"
)

func TestCronNext(t *testing.T) {
	at := func(s string) time.Time {
		v, err := time.Parse(time.RFC3339, s)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	for _, tc := range []struct{ expr, after, want string }{
		{"*/30 * * * * *", "2025-01-01T00:00:00Z", "2025-01-01T00:00:30Z"},
		{"*/30 * * * * *", "2025-01-01T00:00:29.9Z", "2025-01-01T00:00:30Z"},
		{"*/30 * * * * *", "2025-01-01T00:00:30Z", "2025-01-01T00:01:00Z"},
		{"0 */5 * * * *", "2025-01-01T00:03:10Z", "2025-01-01T00:05:00Z"},
		{"0 30 9 * * 1-5", "2025-01-04T10:00:00Z", "2025-01-06T09:30:00Z"}, // Saturday -> Monday
		{"0 0 0 1 JAN *", "2025-03-01T00:00:00Z", "2026-01-01T00:00:00Z"},
		{"5,10 0 12 * * SUN", "2025-01-05T12:00:05Z", "2025-01-05T12:00:10Z"},
		{"0 0 0 * * 7", "2025-01-01T00:00:00Z", "2025-01-05T00:00:00Z"}, // 7 is Sunday
		{"10-20/5 * * * * *", "2025-01-01T00:00:16Z", "2025-01-01T00:00:20Z"},
	} {
		c, err := parseCron(tc.expr)
		if err != nil {
			t.Fatalf("%s: %v", tc.expr, err)
		}
		got, ok := c.next(at(tc.after))
		if !ok || !got.Equal(at(tc.want)) {
			t.Errorf("%s after %s: %v, want %s", tc.expr, tc.after, got, tc.want)
		}
	}
	for _, bad := range []string{"* * * * *", "00:00:30", "*/0 * * * * *", "61 * * * * *", "* * * * FOO *", "5-1 * * * * *"} {
		if _, err := parseCron(bad); err == nil {
			t.Errorf("%q parsed", bad)
		}
	}
	if c, _ := parseCron("0 0 0 31 2 *"); c != nil {
		if _, ok := c.next(time.Now()); ok {
			t.Error("31 February occurs")
		}
	}
	if _, err := resolvePercentStrict("%NOPE%", map[string]string{}); err == nil || !strings.Contains(err.Error(), "does not resolve") {
		t.Errorf("unresolved setting: %v", err)
	}
}
