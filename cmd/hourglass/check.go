package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/hourglassmq/hourglass/wal"
)

const checkUsage = `usage: hourglass check [flags]

Verifies a store's invariants offline, as bbolt check does (wal.Check): every
file against the clean-close record, every key and record, and how the
keyspaces agree. It prints the counts and every problem found, one a line,
and exits 1 when there is any (0 when there is none). It changes nothing in
the store: it opens Pebble read-only.

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
		printCheck(env.stdout, rep)
	}
	return err
}

// printCheck prints what wal.Check found: the counts (when the meta record
// could be read: without it the shard count and sequence are unknown) and
// each problem on one line.
func printCheck(w io.Writer, r *wal.CheckReport) {
	closed := "no (recovered as after a crash)"
	if r.CleanClose {
		closed = "yes"
	}
	meta := !slices.ContainsFunc(r.Problems, func(p wal.Problem) bool { return p.Where == "meta" || p.Where == "sequence" })
	if meta {
		var pending int64
		for _, n := range r.Pending {
			pending += n
		}
		fmt.Fprintf(w, "store %s: %d shards, last sequence %d, closed cleanly: %s\n", r.Dir, r.Shards, r.LastSeq, closed)
		fmt.Fprintf(w, "pending %d %v (%d in packed blocks, %d in the time keyspace), %d dead letters, %d idempotency keys\n",
			pending, r.Pending, r.Blocks, r.Timed, r.Dead, r.Keys)
	} else {
		fmt.Fprintf(w, "store %s: closed cleanly: %s; shards and counts unknown: the meta record cannot be read\n", r.Dir, closed)
	}
	for _, p := range r.Problems {
		fmt.Fprintf(w, "problem: %s\n", strings.Join(strings.Fields(p.String()), " "))
	}
	if r.Omitted > 0 {
		fmt.Fprintf(w, "and %d more problems\n", r.Omitted)
	}
	if len(r.Problems) == 0 {
		fmt.Fprintf(w, "no problems\n")
	}
}
