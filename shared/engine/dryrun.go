package engine

import (
	"context"
	"fmt"
	"io"
	"sort"
	"strings"
)

// DryRun is what --dry-run prints: the shards to scan, the keys per database, and the
// estimated size. It refuses nothing: problems Check would refuse are listed as warnings.
type DryRun struct {
	Source         string           `json:"source"`
	SourceVersion  string           `json:"source_version"`
	SourceCluster  bool             `json:"source_cluster"`
	Shards         []string         `json:"shards"`
	Target         string           `json:"target"`
	TargetVersion  string           `json:"target_version"`
	TargetCluster  bool             `json:"target_cluster"`
	DBMap          string           `json:"db_map"`
	KeysPerDB      map[string]int64 `json:"keys_per_db"`
	EstimatedKeys  int64            `json:"estimated_keys"`
	EstimatedBytes int64            `json:"estimated_bytes"`
	Warnings       []string         `json:"warnings,omitempty"`
}

// samplesPerDB is how many random keys MEMORY USAGE measures to estimate a database's size.
const samplesPerDB = 64

// Plan builds the dry-run report.
func Plan(ctx context.Context, cfg Config) (*DryRun, error) {
	src := cfg.Source
	r := &DryRun{
		Source: src.Endpoint.String(), SourceVersion: src.Version.String(), SourceCluster: src.Cluster,
		Shards: src.Masters(), Target: cfg.Target.Endpoint.String(), TargetVersion: cfg.Target.Version.String(),
		TargetCluster: cfg.Target.Cluster, DBMap: cfg.Copy.DBMap.String(), KeysPerDB: map[string]int64{},
	}
	if _, err := Check(ctx, &cfg); err != nil {
		r.Warnings = append(r.Warnings, "the copy would be refused: "+err.Error())
	}
	perDB, err := src.KeyspaceDBs(ctx)
	if err != nil {
		return nil, err
	}
	for db, n := range perDB {
		r.KeysPerDB[fmt.Sprintf("db%d", db)] = n
	}
	for _, addr := range src.Masters() {
		for _, db := range cfg.Copy.DBMap.Sources() {
			node := src.Node(addr, db)
			n, err := node.DBSize(ctx).Result()
			if err != nil || n == 0 {
				continue
			}
			r.EstimatedKeys += n
			var sampled, bytes int64
			for i := 0; i < samplesPerDB; i++ {
				k, err := node.RandomKey(ctx).Result()
				if err != nil {
					break
				}
				if u, err := node.MemoryUsage(ctx, k).Result(); err == nil {
					sampled++
					bytes += u
				}
			}
			if sampled > 0 {
				r.EstimatedBytes += bytes * n / sampled
			}
		}
	}
	return r, nil
}

// Print writes the report for people.
func (r *DryRun) Print(w io.Writer) {
	kind := func(c bool) string {
		if c {
			return "cluster"
		}
		return "standalone"
	}
	fmt.Fprintf(w, "source: %s (%s, %s)\n", r.Source, r.SourceVersion, kind(r.SourceCluster))
	fmt.Fprintf(w, "target: %s (%s, %s)\n", r.Target, r.TargetVersion, kind(r.TargetCluster))
	fmt.Fprintf(w, "shards: %s\n", strings.Join(r.Shards, ", "))
	dbs := make([]string, 0, len(r.KeysPerDB))
	for db := range r.KeysPerDB {
		dbs = append(dbs, db)
	}
	sort.Strings(dbs)
	for _, db := range dbs {
		fmt.Fprintf(w, "  %s: %d keys\n", db, r.KeysPerDB[db])
	}
	fmt.Fprintf(w, "db map: %s\n", r.DBMap)
	fmt.Fprintf(w, "to copy: about %d keys, about %s (sampled MEMORY USAGE)\n", r.EstimatedKeys, HumanBytes(r.EstimatedBytes))
	for _, wmsg := range r.Warnings {
		fmt.Fprintf(w, "warning: %s\n", wmsg)
	}
}

// HumanBytes renders a byte count.
func HumanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
