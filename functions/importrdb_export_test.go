package functions

import (
	"time"

	"github.com/redis-migrate/redis-migrate/shared/state"
)

// SetImportCheckpointHook installs a hook run after every import checkpoint written; returning
// true interrupts that invocation (as a functionTimeout would). The returned func removes it.
func SetImportCheckpointHook(f func(id string, ck state.ImportCheckpoint) bool) func() {
	importCheckpointHook = f
	return func() { importCheckpointHook = nil }
}

// DefaultImportID is the id of the import of a blob version that came without a record.
var DefaultImportID = defaultImportID

// ServeHandler is `serve` as the Functions host starts it (until ctx ends).
var ServeHandler = serveHandler

// SetDependencyTimeout bounds the opening of storage in tests; it returns the undo.
func SetDependencyTimeout(d time.Duration) func() {
	old := dependencyTimeout
	dependencyTimeout = d
	return func() { dependencyTimeout = old }
}

// RunServe is the `serve` command with its flags (`serve --local ...` included).
var RunServe = runServe
