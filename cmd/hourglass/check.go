package main

import (
	"context"
	"errors"
	"flag"
	"fmt"

	"github.com/hourglassmq/hourglass/wal"
)

const checkUsage = `usage: hourglass check [flags]

Verifies a store's invariants offline, as bbolt check does (wal.Check): every
file against the clean-close record, every key and record, and how the
keyspaces agree. It prints the counts and every problem found, one a line,
and exits 1 when there is any (0 when there is none). It writes nothing: it
opens Pebble read-only.

The store must not be in use: stop the engine first (hourglass serve, or the
service that embeds it). A running engine holds the store's lock, and check
refuses its directory.
`

func runCheck(ctx context.Context, env *env, args []string) error {
	fs := flag.NewFlagSet("check", flag.ContinueOnError)
	var a storeArgs
	fs.StringVar(&a.dir, "dir", "", "the store `directory` (default <data dir>/store, serve's default)")
	setUsage(fs, checkUsage)
	if err := parseFlags(fs, args, env, nil); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usageError{fmt.Errorf("unexpected arguments %q", fs.Args())}
	}
	dir, err := a.storeDir(env)
	if err != nil {
		return err
	}
	rep, err := wal.Check(ctx, dir, nil)
	if errors.Is(err, wal.ErrLocked) {
		return errInUse(dir, err)
	}
	if rep != nil && (err == nil || len(rep.Problems) > 0) {
		fmt.Fprint(env.stdout, rep.String())
	}
	return err
}
