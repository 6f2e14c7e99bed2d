package config

import (
	"fmt"
	"sort"
	"strconv"
	"strings"
)

// DBMap says where each source database goes and which key prefix its keys get there.
type DBMap struct {
	Target map[int]int    // source db -> target db
	Prefix map[int]string // source db -> prefix added to every key name
}

// DefaultDBMap maps db 0 to db 0, the only database Azure Managed Redis serves.
func DefaultDBMap() DBMap { return DBMap{Target: map[int]int{0: 0}, Prefix: map[int]string{}} }

// ParseDBMap parses "0:0,3:0" (source:target pairs). An empty string gives the default map.
func ParseDBMap(s string) (DBMap, error) {
	m := DBMap{Target: map[int]int{}, Prefix: map[int]string{}}
	if strings.TrimSpace(s) == "" {
		return DefaultDBMap(), nil
	}
	for _, part := range strings.Split(s, ",") {
		a, b, ok := strings.Cut(strings.TrimSpace(part), ":")
		src, err1 := strconv.Atoi(a)
		dst, err2 := strconv.Atoi(b)
		if !ok || err1 != nil || err2 != nil || src < 0 || dst < 0 {
			return m, fmt.Errorf("db map entry %q: want SOURCE_DB:TARGET_DB, e.g. 0:0,3:0", part)
		}
		if _, dup := m.Target[src]; dup {
			return m, fmt.Errorf("db map maps source db %d twice", src)
		}
		m.Target[src] = dst
	}
	return m, nil
}

// ParseDBPrefixes adds "3:legacy:,4:old:" (source db, then the prefix up to the next comma) to m.
func (m *DBMap) ParseDBPrefixes(s string) error {
	if strings.TrimSpace(s) == "" {
		return nil
	}
	for _, part := range strings.Split(s, ",") {
		a, prefix, ok := strings.Cut(part, ":")
		src, err := strconv.Atoi(strings.TrimSpace(a))
		if !ok || err != nil || src < 0 || prefix == "" {
			return fmt.Errorf("db prefix entry %q: want SOURCE_DB:PREFIX, e.g. 3:legacy:", part)
		}
		if _, mapped := m.Target[src]; !mapped {
			return fmt.Errorf("db prefix for source db %d, which the db map does not map (add %d:0 to --db-map)", src, src)
		}
		m.Prefix[src] = prefix
	}
	return nil
}

// Check refuses a map that would merge two source databases into one target database with the
// same key prefix (keys could collide and silently overwrite each other), unless allowMerge.
func (m DBMap) Check(allowMerge bool) error {
	if allowMerge {
		return nil
	}
	seen := map[string]int{}
	for _, src := range m.Sources() {
		k := strconv.Itoa(m.Target[src]) + "\x00" + m.Prefix[src]
		if other, dup := seen[k]; dup {
			return fmt.Errorf("db map sends source dbs %d and %d to target db %d with the same key prefix %q: keys could collide; "+
				"give one a prefix (--db-prefix %d:db%d:) or allow it with --allow-db-merge", other, src, m.Target[src], m.Prefix[src], src, src)
		}
		seen[k] = src
	}
	return nil
}

// Sources lists the mapped source dbs in order.
func (m DBMap) Sources() []int {
	out := make([]int, 0, len(m.Target))
	for k := range m.Target {
		out = append(out, k)
	}
	sort.Ints(out)
	return out
}

// String renders the map as the flag syntax.
func (m DBMap) String() string {
	var parts []string
	for _, s := range m.Sources() {
		parts = append(parts, fmt.Sprintf("%d:%d", s, m.Target[s]))
	}
	return strings.Join(parts, ",")
}
