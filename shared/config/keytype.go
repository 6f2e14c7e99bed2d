package config

import (
	"fmt"
	"strings"
)

// KeyTypes are the key types a copy or verification can be limited to (SCAN TYPE).
var KeyTypes = []string{"string", "list", "set", "zset", "hash", "stream"}

// CheckKeyType refuses a type filter the server would not match ("" means every type): SCAN
// TYPE with an unknown or mis-cased name answers no keys at all, which would look like a
// finished, empty run.
func CheckKeyType(t string) error {
	if t == "" {
		return nil
	}
	for _, k := range KeyTypes {
		if t == k {
			return nil
		}
	}
	hint := ""
	for _, k := range KeyTypes {
		if strings.EqualFold(t, k) {
			hint = fmt.Sprintf("; type names are lower-case: %q", k)
		}
	}
	return fmt.Errorf("unknown type %q: want one of %s%s", t, strings.Join(KeyTypes, ", "), hint)
}
