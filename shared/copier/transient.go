package copier

import (
	"errors"
	"strings"

	"github.com/redis/go-redis/v9"

	"github.com/redis-migrate/redis-migrate/shared/redact"
	"github.com/redis-migrate/redis-migrate/shared/resp"
)

// ServerError is a batch-level failure: a server could not be reached, or answered that it
// cannot serve right now (LOADING, BUSY, TRYAGAIN, MASTERDOWN, CLUSTERDOWN; OOM from the source).
// No key of the batch is counted; the caller waits and retries the whole batch.
type ServerError struct {
	Side string // "source", "target", or "" when either could be
	Err  error
}

func (e *ServerError) Error() string {
	verb := "reading from source"
	switch e.Side {
	case "target":
		verb = "writing to target"
	case "":
		verb = "server"
	}
	return verb + ": " + redact.Error(e.Err)
}

func (e *ServerError) Unwrap() error { return e.Err }

func sourceErr(err error) error { return &ServerError{Side: "source", Err: err} }
func targetErr(err error) error { return &ServerError{Side: "target", Err: err} }

// SideOf tells which server a batch error came from ("" when unknown).
func SideOf(err error) string {
	var se *ServerError
	if errors.As(err, &se) {
		return se.Side
	}
	return ""
}

// IsBusyReply reports whether err is a server's answer that it cannot serve now but will:
// LOADING (loading its dataset), BUSY (a script or function runs), TRYAGAIN (a multi-key
// command during resharding), MASTERDOWN (a replica lost its master), CLUSTERDOWN. Such answers
// are waited out, never reported as a key's failure. BUSYKEY is not among them.
func IsBusyReply(err error) bool {
	if err == nil || !isReplyError(err) {
		return false
	}
	if _, ok := err.(*resp.Error); !ok {
		var re redis.Error
		if errors.As(err, &re) {
			err = re
		}
	}
	code, _, _ := strings.Cut(err.Error(), " ")
	switch code {
	case "LOADING", "BUSY", "TRYAGAIN", "MASTERDOWN", "CLUSTERDOWN":
		return true
	}
	return false
}

// isSourceBusy also treats OOM from the source as passing: reads are not refused for memory,
// but a source under memory pressure (or a proxy in front of it) may say so.
func isSourceBusy(err error) bool {
	return IsBusyReply(err) || (err != nil && isReplyError(err) && strings.HasPrefix(err.Error(), "OOM "))
}

// IsReplyError reports whether err (or an error it wraps) is a server's error reply about one
// command, as opposed to a network or protocol failure.
func IsReplyError(err error) bool { return err != nil && err != redis.Nil && isReplyError(err) }
