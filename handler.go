// Command redis-migrate (built as "handler" for the Azure Functions host) moves Redis datasets
// into Azure Managed Redis. The same binary is the CLI (copy, import, verify) and the Functions
// custom handler (serve).
package main

import (
	"os"

	"golang.org/x/term"

	_ "github.com/redis-migrate/redis-migrate/functions" // registers `serve`
	"github.com/redis-migrate/redis-migrate/shared/cli"
)

func main() {
	os.Exit(cli.Main(os.Args[1:], &cli.Env{
		Stdout:           os.Stdout,
		Stderr:           os.Stderr,
		StderrIsTerminal: term.IsTerminal(int(os.Stderr.Fd())),
		OwnProcess:       true,
	}))
}
