// Command hourglass runs and operates a Hourglass engine.
//
//	hourglass serve [flags]    the engine behind an HTTP JSON API and a web dashboard
//	hourglass inspect [flags]  what a stopped engine's store holds
//	hourglass check [flags]    verify a stopped engine's store; exit 1 on damage
//	hourglass list [flags]     pending messages as JSON lines, filtered
//	hourglass get [flags] ID   messages by ID or idempotency key as JSON lines
//	hourglass dump [flags]     every pending message and dead letter as JSON lines
//	hourglass dlq list|replay|purge [flags]
//	                           a stopped engine's dead letters
//	hourglass <command> -h     a command's flags
//
// Each command is one entry of commands() with its own flag set, so adding
// one is one function and one line.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/hourglassmq/hourglass/internal/procs"
)

// env is what a command may touch of the process, so tests can run
// commands in-process with their own output and environment.
type env struct {
	stdout, stderr io.Writer
	getenv         func(string) string
	// now tells the offline commands the time (due histograms, -in); nil
	// means time.Now.
	now func() time.Time
}

// clock returns the time now.
func (e *env) clock() time.Time {
	if e.now != nil {
		return e.now()
	}
	return time.Now()
}

// command is one subcommand. run parses its own flags from args; it returns
// flag.ErrHelp after printing its usage for -h, a usageError for a
// command-line mistake.
type command struct {
	name, synopsis string
	run            func(ctx context.Context, env *env, args []string) error
}

func commands() []command {
	return []command{
		{"serve", "run an engine behind the HTTP JSON API and the web dashboard", runServe},
		{"inspect", "print what a stopped engine's store holds: counts, due times, shards, size", runInspect},
		{"check", "verify a stopped engine's store offline; exit 1 on damage", runCheck},
		{"list", "print pending messages of a stopped engine's store as JSON lines, filtered", runList},
		{"get", "print messages of a stopped engine's store by ID or key as JSON lines", runGet},
		{"dump", "print every pending message and dead letter of a stopped engine's store", runDump},
		{"dlq", "list, replay or purge a stopped engine's dead letters", runDLQ},
	}
}

func usage(w io.Writer) {
	fmt.Fprintf(w, "usage: hourglass <command> [flags]\n\ncommands:\n")
	for _, c := range commands() {
		fmt.Fprintf(w, "  %-8s %s\n", c.name, c.synopsis)
	}
	fmt.Fprintf(w, "\nRun \"hourglass <command> -h\" for a command's flags.\n")
}

func main() {
	e := &env{stdout: os.Stdout, stderr: os.Stderr, getenv: os.Getenv}
	procs.Set(0, e.getenv) // one processor more than the cores, for Pebble (internal/procs)
	os.Exit(run(e, os.Args[1:]))
}

// run dispatches on the first argument and returns the exit status: 0, 1
// for a failure, 2 for a usage mistake. SIGINT and SIGTERM cancel the
// command's context; a second signal kills the process as usual.
func run(e *env, args []string) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	go func() {
		<-ctx.Done()
		stop() // the next signal is not caught: it stops the process
	}()

	if len(args) == 0 {
		usage(e.stderr)
		return 2
	}
	name, rest := args[0], args[1:]
	switch name {
	case "-h", "-help", "--help", "help":
		if name == "help" && len(rest) > 0 {
			name, rest = rest[0], []string{"-h"}
			break
		}
		usage(e.stdout)
		return 0
	}
	for _, c := range commands() {
		if c.name != name {
			continue
		}
		err := c.run(ctx, e, rest)
		var ue usageError
		switch {
		case err == nil:
			return 0
		case errors.Is(err, flag.ErrHelp):
			return 0
		case errors.As(err, &ue):
			fmt.Fprintf(e.stderr, "hourglass %s: %v\n(run \"hourglass %s -h\" for its flags)\n", name, err, name)
			return 2
		default:
			fmt.Fprintf(e.stderr, "hourglass %s: %v\n", name, err)
			return 1
		}
	}
	fmt.Fprintf(e.stderr, "hourglass: unknown command %q\n\n", name)
	usage(e.stderr)
	return 2
}
