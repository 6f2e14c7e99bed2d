// Package cli is the redis-migrate command line: copy, import, verify and serve, sharing one
// engine with the Azure Functions handler. handler.go only calls Main.
package cli

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sort"
	"syscall"

	"github.com/redis-migrate/redis-migrate/shared/procs"
	"github.com/redis-migrate/redis-migrate/shared/redact"
	"github.com/redis-migrate/redis-migrate/shared/redisconn"
)

// Exit codes.
const (
	ExitOK       = 0 // everything copied (or verified) as asked
	ExitFailures = 1 // the run finished but some keys failed or differ
	ExitUsage    = 2 // bad flags or input, or the run was refused before it started
	ExitError    = 3 // the run stopped part way (a server became unreachable)
)

// Env is what a command can touch; tests give their own.
type Env struct {
	Stdout, Stderr io.Writer
	// StderrIsTerminal turns the progress bar on.
	StderrIsTerminal bool
	Getenv           func(string) string
	// Cutover, when closed, asks a running sync to cut over (as SIGINT does); tests use it.
	Cutover <-chan struct{}
	// OwnProcess: the process runs this one command (the binary, not a test calling Main), so
	// copy, import, verify and sync may size GOMAXPROCS to the servers (shared/procs).
	OwnProcess bool
}

// fitProcs sizes GOMAXPROCS to the masters of the biggest of conns when the process is the
// command's own.
func fitProcs(env *Env, conns ...*redisconn.Conn) {
	if !env.OwnProcess {
		return
	}
	nodes := 0
	for _, c := range conns {
		nodes = max(nodes, len(c.Masters()))
	}
	procs.Fit(nodes, env.Getenv)
}

// usageError marks errors that exit with ExitUsage.
type usageError struct{ err error }

func (u usageError) Error() string { return u.err.Error() }
func (u usageError) Unwrap() error { return u.err }

func usagef(format string, args ...any) error { return usageError{fmt.Errorf(format, args...)} }

// exitError carries a chosen exit code without a message (already printed).
type exitError struct{ code int }

func (e exitError) Error() string { return fmt.Sprintf("exit %d", e.code) }

type command struct {
	name, summary string
	run           func(ctx context.Context, env *Env, args []string) error
}

func commands() []command {
	return []command{
		{"copy", "copy every key from a source Redis to a target Redis", runCopy},
		{"import", "import an RDB file (local or in Azure Blob storage) into a target Redis", runImportCommand},
		{"verify", "compare a target with its source key by key", runVerifyCommand},
		{"sync", "keep a target in step with a live source, then cut over", runSync},
		// Looked up at call time: the functions package registers it (it imports this one).
		{"serve", "serve the Azure Functions custom handler (or the whole app locally with --local)",
			func(ctx context.Context, env *Env, args []string) error { return runServe(ctx, env, args) }},
	}
}

var runServe = notBuilt("serve")

// Register plugs in a command that lives in a package importing this one (only "serve").
func Register(name string, run func(ctx context.Context, env *Env, args []string) error) {
	if name != "serve" {
		panic("cli.Register: unknown command " + name)
	}
	runServe = run
}

func notBuilt(name string) func(context.Context, *Env, []string) error {
	return func(context.Context, *Env, []string) error {
		return usagef("%s: not available in this build", name)
	}
}

// Main runs the command line and returns the exit code.
func Main(args []string, env *Env) int {
	if env.Getenv == nil {
		env.Getenv = os.Getenv
	}
	env.Stderr = redact.Writer(env.Stderr)
	env.Stdout = redact.Writer(env.Stdout)
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		printUsage(env.Stderr)
		if len(args) == 0 {
			return ExitUsage
		}
		return ExitOK
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	defer startProfile(env.Getenv("REDIS_MIGRATE_CPUPROFILE"))()
	defer writeHeapProfile(env.Getenv("REDIS_MIGRATE_MEMPROFILE"))
	for _, c := range commands() {
		if c.name != args[0] {
			continue
		}
		if c.name != "serve" && c.name != "copy" {
			tuneGC(env.Getenv)
		}
		return exitCode(env, c.name, c.run(ctx, env, args[1:]))
	}
	fmt.Fprintf(env.Stderr, "redis-migrate: unknown command %q\n", args[0])
	printUsage(env.Stderr)
	return ExitUsage
}

func exitCode(env *Env, name string, err error) int {
	var ee exitError
	var ue usageError
	switch {
	case err == nil:
		return ExitOK
	case errors.As(err, &ee):
		return ee.code
	case errors.Is(err, flag.ErrHelp):
		return ExitOK
	case errors.As(err, &ue):
		fmt.Fprintf(env.Stderr, "redis-migrate %s: %s\n", name, redact.Error(err))
		var fe flagError
		if errors.As(err, &fe) {
			fmt.Fprintln(env.Stderr)
			fe.fs.PrintUsage()
		}
		return ExitUsage
	default:
		fmt.Fprintf(env.Stderr, "redis-migrate %s: %s\n", name, redact.Error(err))
		return ExitError
	}
}

func printUsage(w io.Writer) {
	fmt.Fprintln(w, "usage: redis-migrate <command> [options]")
	fmt.Fprintln(w)
	for _, c := range commands() {
		fmt.Fprintf(w, "  %-8s %s\n", c.name, c.summary)
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Run 'redis-migrate <command> -h' for a command's options.")
}

// FlagSet is a command's flags. The flag package's own printing is off: a bad flag is reported
// once, as "redis-migrate CMD: <error>", followed by the usage; -h prints the usage only.
type FlagSet struct {
	*flag.FlagSet
	env          *Env
	name, header string
}

// NewFlagSet makes the flags of command name; usage is the synopsis after
// "usage: redis-migrate NAME ".
func NewFlagSet(env *Env, name, usage string) *FlagSet {
	fs := &FlagSet{FlagSet: flag.NewFlagSet(name, flag.ContinueOnError), env: env, name: name, header: usage}
	fs.SetOutput(io.Discard)
	fs.FlagSet.Usage = func() {} // printed by Parse's caller, after the error
	return fs
}

func newFlagSet(env *Env, name, usage string) *FlagSet { return NewFlagSet(env, name, usage) }

// PrintUsage writes the synopsis and every flag to stderr.
func (fs *FlagSet) PrintUsage() {
	fmt.Fprintf(fs.env.Stderr, "usage: redis-migrate %s %s\n\noptions:\n", fs.name, fs.header)
	fs.SetOutput(fs.env.Stderr)
	fs.PrintDefaults()
	fs.SetOutput(io.Discard)
}

// flagError is a bad flag: exitCode prints it once, then the usage.
type flagError struct {
	err error
	fs  *FlagSet
}

func (f flagError) Error() string { return f.err.Error() }
func (f flagError) Unwrap() error { return f.err }

// ParseArgs parses flags that may come before or after positional arguments. -h prints the
// usage and returns flag.ErrHelp; a bad flag returns an error that exits with ExitUsage and
// prints the message once, then the usage.
func (fs *FlagSet) ParseArgs(args []string) ([]string, error) {
	var positional []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				fs.PrintUsage()
				return nil, err
			}
			return nil, usageError{flagError{err, fs}}
		}
		args = fs.Args()
		if len(args) == 0 {
			return positional, nil
		}
		if args[0] == "--" {
			return append(positional, args[1:]...), nil
		}
		positional = append(positional, args[0])
		args = args[1:]
	}
}

func parseInterspersed(fs *FlagSet, args []string) ([]string, error) { return fs.ParseArgs(args) }

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func sortedKeys[M ~map[K]V, K ~string, V any](m M) []K {
	out := make([]K, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out
}
