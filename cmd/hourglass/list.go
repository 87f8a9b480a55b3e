package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"strings"

	"github.com/hourglassmq/hourglass/store"
	"github.com/hourglassmq/hourglass/wal"
)

const listUsage = `usage: hourglass list [flags]

Prints pending messages in due order, as JSON lines, filtered by destination
prefix and due range, at most -limit of them. Dead letters: hourglass dlq list.

` + payloadHelp + "\n" + offlineHelp

func runList(ctx context.Context, env *env, args []string) error {
	fs := flag.NewFlagSet("list", flag.ContinueOnError)
	var a storeArgs
	a.bind(fs)
	dest := fs.String("dest", "", "only messages whose destination starts with this `prefix`")
	var tr timeRange
	tr.bind(fs, "messages")
	limit := fs.Int("limit", 100, "print at most `n` messages (0: all)")
	setUsage(fs, listUsage)
	if err := parseFlags(fs, args, env, &a); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usageError{fmt.Errorf("unexpected arguments %q", fs.Args())}
	}
	if *limit < 0 {
		return usageError{fmt.Errorf("-limit %d is negative", *limit)}
	}
	from, to, err := tr.bounds(env.clock())
	if err != nil {
		return err
	}
	return withStore(ctx, env, &a, func(s *wal.Store, _ string) error {
		out, n := newJSONLines(env.stdout), 0
		return eachPending(ctx, s, from, to, func(m *store.Message) (bool, error) {
			if !strings.HasPrefix(m.Dest, *dest) {
				return true, nil
			}
			n++
			return !limitReached(*limit, n), out.write(messageOut(m, "pending"))
		})
	})
}

const getUsage = `usage: hourglass get [flags] ID...
       hourglass get [flags] -key KEY

Prints the messages with these IDs, pending or dead, as JSON lines; or the
message an idempotency key names. An ID that names no message is reported on
standard error, and the exit status is then 1.

` + payloadHelp + "\n" + offlineHelp

func runGet(ctx context.Context, env *env, args []string) error {
	fs := flag.NewFlagSet("get", flag.ContinueOnError)
	var a storeArgs
	a.bind(fs)
	key := fs.String("key", "", "print the message this idempotency `key` names")
	setUsage(fs, getUsage)
	if err := parseFlags(fs, args, env, &a); err != nil {
		return err
	}
	if (fs.NArg() == 0) == (*key == "") {
		return usageError{errors.New("give message IDs, or -key, not both")}
	}
	ids := make([]store.ID, fs.NArg())
	for i, s := range fs.Args() {
		id, err := store.ParseID(s)
		if err != nil {
			return usageError{err}
		}
		ids[i] = id
	}
	return withStore(ctx, env, &a, func(s *wal.Store, _ string) error {
		if *key != "" {
			id, err := s.Lookup(ctx, *key)
			if errors.Is(err, store.ErrNotFound) {
				return fmt.Errorf("no message has the key %q", *key)
			}
			if err != nil {
				return err
			}
			ids = []store.ID{id}
		}
		out := newJSONLines(env.stdout)
		var missing []string
		for _, id := range ids {
			if m, err := s.Get(ctx, id); err == nil {
				if err := out.write(messageOut(&m, "pending")); err != nil {
					return err
				}
				continue
			} else if !errors.Is(err, store.ErrNotFound) {
				return err
			}
			d, err := s.GetDead(ctx, id)
			switch {
			case err == nil:
				if err := out.write(deadOut(&d)); err != nil {
					return err
				}
			case errors.Is(err, store.ErrNotFound):
				missing = append(missing, id.String())
			default:
				return err
			}
		}
		if len(missing) > 0 {
			return fmt.Errorf("not found (neither pending nor dead; delivered, cancelled, purged or never stored): %s", strings.Join(missing, ", "))
		}
		return nil
	})
}

const dumpUsage = `usage: hourglass dump [flags]

Prints every pending message, in due order, then every dead letter, in ID
order, as JSON lines.

` + payloadHelp + "\n" + offlineHelp

func runDump(ctx context.Context, env *env, args []string) error {
	fs := flag.NewFlagSet("dump", flag.ContinueOnError)
	var a storeArgs
	a.bind(fs)
	setUsage(fs, dumpUsage)
	if err := parseFlags(fs, args, env, &a); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usageError{fmt.Errorf("unexpected arguments %q", fs.Args())}
	}
	return withStore(ctx, env, &a, func(s *wal.Store, _ string) error {
		out := newJSONLines(env.stdout)
		err := eachPending(ctx, s, 0, store.MaxDue+1, func(m *store.Message) (bool, error) {
			return true, out.write(messageOut(m, "pending"))
		})
		if err != nil {
			return err
		}
		return eachDead(ctx, s, func(d *store.DeadLetter) (bool, error) {
			return true, out.write(deadOut(d))
		})
	})
}
