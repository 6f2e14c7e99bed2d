// Package resume is the state file of `copy --state FILE`: for every source shard and database,
// the plan steps that finished (every key of them copied and counted), where the scan stands
// after them, and their counts. A rerun with the same file starts each shard after its finished
// steps and adds their counts, so the totals are those of one uninterrupted run.
package resume

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/redis-migrate/redis-migrate/shared/copier"
)

// Version of the file format.
const Version = 1

// Fingerprint identifies a migration: a state file is only used again for the same one.
type Fingerprint struct {
	Source   string `json:"source"` // redacted endpoint
	Target   string `json:"target"`
	Match    string `json:"match,omitempty"`
	Type     string `json:"type,omitempty"`
	DBMap    string `json:"db_map"`
	Existing string `json:"existing"`
}

// Shard is the progress of one source shard and database.
type Shard struct {
	Shard int    `json:"shard"`
	Addr  string `json:"addr"`
	DB    int    `json:"db"`
	// RunID is the source server process whose SCAN cursor Cursor is; a cursor means nothing to
	// another process, so a different run_id starts the shard over (its counts dropped).
	RunID   string        `json:"run_id"`
	Cursor  uint64        `json:"cursor"`
	Step    int           `json:"step"` // plan steps finished
	Done    bool          `json:"done,omitempty"`
	Scanned int64         `json:"keys_scanned"`
	Result  copier.Result `json:"result"`
}

// File is the whole state.
type File struct {
	Version     int         `json:"version"`
	Fingerprint Fingerprint `json:"migration"`
	Shards      []Shard     `json:"shards"`
	// Wrote is set before the first write into the target: from then on the target holds keys
	// of this migration, so a rerun does not refuse it as non-empty.
	Wrote bool `json:"wrote,omitempty"`
}

// Load reads path; a file that does not exist yet is an empty state.
func Load(path string, fp Fingerprint) (*File, error) {
	raw, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return &File{Version: Version, Fingerprint: fp}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("state file: %v", err)
	}
	var f File
	if err := json.Unmarshal(raw, &f); err != nil {
		return nil, fmt.Errorf("state file %s is not a redis-migrate state file (%v); give a new path", path, err)
	}
	if f.Version != Version {
		return nil, fmt.Errorf("state file %s has format version %d, this build reads %d", path, f.Version, Version)
	}
	if f.Fingerprint != fp {
		return nil, fmt.Errorf("state file %s belongs to another migration (%s); give a new path, or the same options as that run",
			path, f.Fingerprint.describeDiff(fp))
	}
	return &f, nil
}

func (a Fingerprint) describeDiff(b Fingerprint) string {
	switch {
	case a.Source != b.Source:
		return "source " + a.Source
	case a.Target != b.Target:
		return "target " + a.Target
	case a.Match != b.Match:
		return fmt.Sprintf("--match %q", a.Match)
	case a.Type != b.Type:
		return fmt.Sprintf("--type %q", a.Type)
	case a.DBMap != b.DBMap:
		return "--db-map/--db-prefix " + a.DBMap
	default:
		return "--existing " + a.Existing
	}
}

// Started reports whether any shard has progress: the target then holds keys of this migration.
func (f *File) Started() bool { return f.Wrote }

// Find returns the shard record for (addr, db), or nil.
func (f *File) Find(addr string, db int) *Shard {
	for i := range f.Shards {
		if f.Shards[i].Addr == addr && f.Shards[i].DB == db {
			return &f.Shards[i]
		}
	}
	return nil
}

// Save writes the file atomically (a temporary file renamed over it), so a crash leaves either
// the old state or the new one.
func (f *File) Save(path string) error {
	raw, err := json.MarshalIndent(f, "", " ")
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("state file: %v", err)
	}
	if _, err := tmp.Write(raw); err != nil {
		tmp.Close()
		os.Remove(tmp.Name())
		return fmt.Errorf("state file: %v", err)
	}
	if err := tmp.Close(); err != nil {
		os.Remove(tmp.Name())
		return fmt.Errorf("state file: %v", err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		os.Remove(tmp.Name())
		return fmt.Errorf("state file: %v", err)
	}
	return nil
}
