package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/hourglassmq/hourglass/store"
	"github.com/hourglassmq/hourglass/wal"
)

const dlqUsage = `usage: hourglass dlq <list|replay|purge> [flags] [ID...]

Works on a stopped engine's dead letters:

  list     print dead letters as JSON lines, in ID order
  replay   move dead letters back to pending, due now or at -at / -in,
           with their attempt count reset and the same IDs
  purge    delete dead letters (and free their idempotency keys)

Run "hourglass dlq <command> -h" for a command's flags.
`

func runDLQ(ctx context.Context, env *env, args []string) error {
	if len(args) == 0 {
		fmt.Fprint(env.stderr, dlqUsage)
		return usageError{errors.New("name a dlq command: list, replay or purge")}
	}
	switch args[0] {
	case "-h", "-help", "--help", "help":
		fmt.Fprint(env.stdout, dlqUsage)
		return flag.ErrHelp
	case "list":
		return runDLQList(ctx, env, args[1:])
	case "replay", "purge":
		return runDLQChange(ctx, env, args[0], args[1:])
	}
	return usageError{fmt.Errorf("unknown dlq command %q: want list, replay or purge", args[0])}
}

const dlqListUsage = `usage: hourglass dlq list [flags]

Prints dead letters in ID order as JSON lines, filtered by destination prefix,
at most -limit of them.

` + payloadHelp + "\n" + offlineHelp

func runDLQList(ctx context.Context, env *env, args []string) error {
	fs := flag.NewFlagSet("dlq list", flag.ContinueOnError)
	var a storeArgs
	a.bind(fs)
	dest := fs.String("dest", "", "only dead letters whose destination starts with this `prefix`")
	limit := fs.Int("limit", 100, "print at most `n` dead letters (0: all)")
	setUsage(fs, dlqListUsage)
	if err := parseFlags(fs, args, env, &a); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usageError{fmt.Errorf("unexpected arguments %q", fs.Args())}
	}
	if *limit < 0 {
		return usageError{fmt.Errorf("-limit %d is negative", *limit)}
	}
	return withStore(ctx, env, &a, func(s *wal.Store, _ string) error {
		out, n := newJSONLines(env.stdout), 0
		return eachDead(ctx, s, func(d *store.DeadLetter) (bool, error) {
			if !strings.HasPrefix(d.Message.Dest, *dest) {
				return true, nil
			}
			n++
			return !limitReached(*limit, n), out.write(deadOut(d))
		})
	})
}

const dlqReplayUsage = `usage: hourglass dlq replay [flags] ID...
       hourglass dlq replay [flags] -all [-dest PREFIX]

Moves the named dead letters (or all of them, or all whose destination starts
with -dest) back to pending, due now unless -at or -in says otherwise, with
their attempt count reset and the same IDs. The engine delivers them when it
next runs. With IDs it is all or nothing: an ID that is not a dead letter
fails the command and changes nothing. Prints how many were replayed.

` + offlineHelp

const dlqPurgeUsage = `usage: hourglass dlq purge [flags] ID...
       hourglass dlq purge [flags] -all [-dest PREFIX]

Deletes the named dead letters (or all of them, or all whose destination
starts with -dest) and frees their idempotency keys. With IDs it is all or
nothing: an ID that is not a dead letter fails the command and deletes
nothing. Prints how many were purged.

` + offlineHelp

// runDLQChange is dlq replay and dlq purge: the same selection, a different
// store call.
func runDLQChange(ctx context.Context, env *env, verb string, args []string) error {
	fs := flag.NewFlagSet("dlq "+verb, flag.ContinueOnError)
	var a storeArgs
	a.bind(fs)
	all := fs.Bool("all", false, "every dead letter (with -dest: every one whose destination has the prefix)")
	dest := fs.String("dest", "", "with -all: only dead letters whose destination starts with this `prefix`")
	var at, in *string
	if verb == "replay" {
		at = fs.String("at", "", "due at this RFC 3339 `time` (default now)")
		in = fs.String("in", "", "due this `duration` from now (default 0: now)")
		setUsage(fs, dlqReplayUsage)
	} else {
		setUsage(fs, dlqPurgeUsage)
	}
	if err := parseFlags(fs, args, env, &a); err != nil {
		return err
	}
	switch {
	case *all == (fs.NArg() > 0):
		return usageError{errors.New("give dead-letter IDs, or -all, not both")}
	case *dest != "" && !*all:
		return usageError{errors.New("-dest goes with -all")}
	}
	ids := make([]store.ID, fs.NArg())
	for i, s := range fs.Args() {
		id, err := store.ParseID(s)
		if err != nil {
			return usageError{err}
		}
		ids[i] = id
	}
	now := env.clock()
	due := now.UnixNano()
	if verb == "replay" {
		switch {
		case *at != "" && *in != "":
			return usageError{errors.New("-at and -in exclude each other")}
		case *at != "":
			t, err := time.Parse(time.RFC3339Nano, *at)
			if err != nil || t.Before(store.MinTime) || t.After(store.MaxTime) {
				return usageError{fmt.Errorf("-at %q: want an RFC 3339 time (2026-11-25T14:05:00Z) from %s to %s",
					*at, store.MinTime.Format(time.RFC3339), store.MaxTime.Format(time.RFC3339))}
			}
			due = t.UnixNano()
		case *in != "":
			d, err := time.ParseDuration(*in)
			if err != nil || d < 0 {
				return usageError{fmt.Errorf("-in %q: want a duration from now, 0 or more (30m, 2h)", *in)}
			}
			due = store.SatAdd(due, int64(d))
		}
		due = min(max(due, 0), store.MaxDue)
	}
	return withStore(ctx, env, &a, func(s *wal.Store, _ string) error {
		var n int
		var err error
		switch {
		case verb == "purge" && *all && *dest == "":
			n, err = s.PurgeAllDead(ctx)
		case *all:
			n, err = changeMatching(ctx, s, *dest, func(ids []store.ID) (int, error) { return change(ctx, s, verb, ids, due) })
		default:
			n, err = change(ctx, s, verb, ids, due)
		}
		if err != nil {
			return err
		}
		report(env.stdout, verb, n, due)
		return nil
	})
}

// change replays or purges ids in one call (all or nothing).
func change(ctx context.Context, s store.Store, verb string, ids []store.ID, due int64) (int, error) {
	if verb == "purge" {
		return s.PurgeDead(ctx, ids)
	}
	if err := s.ReplayDead(ctx, ids, due); err != nil {
		return 0, err
	}
	return len(ids), nil
}

// changeMatching applies f to every dead letter whose destination starts
// with prefix, in calls of at most store.MaxCallMessages IDs. Each call is
// atomic; the whole is not: an interrupted run leaves the calls before it
// done.
func changeMatching(ctx context.Context, s store.Store, prefix string, f func([]store.ID) (int, error)) (int, error) {
	// Collect first, then change: changing while paging would move the
	// dead-letter keyspace under the cursor.
	var ids []store.ID
	err := eachDead(ctx, s, func(d *store.DeadLetter) (bool, error) {
		if strings.HasPrefix(d.Message.Dest, prefix) {
			ids = append(ids, d.Message.ID)
		}
		return true, nil
	})
	if err != nil {
		return 0, err
	}
	total := 0
	for len(ids) > 0 {
		chunk := ids[:min(len(ids), store.MaxCallMessages)]
		ids = ids[len(chunk):]
		n, err := f(chunk)
		total += n
		if err != nil {
			return total, err
		}
	}
	return total, nil
}

func report(w io.Writer, verb string, n int, due int64) {
	switch verb {
	case "replay":
		fmt.Fprintf(w, "replayed %s, due %s\n", plural(int64(n), "dead letter"), timeText(due))
	default:
		fmt.Fprintf(w, "purged %s\n", plural(int64(n), "dead letter"))
	}
}
