package main

import (
	"cmp"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"slices"
	"text/tabwriter"
	"time"

	"github.com/hourglassmq/hourglass/store"
	"github.com/hourglassmq/hourglass/wal"
)

const inspectUsage = `usage: hourglass inspect [flags]

Prints what a store holds: its format version, shard count, size on disk and
how it was last closed; pending messages and dead letters, per shard and per
destination; and when the pending messages are due, as of now. It reads every
pending message and dead letter once.

` + offlineHelp

// dueBuckets are inspect's due histogram: each holds the messages due up to
// its bound from now that no earlier bucket holds.
var dueBuckets = []struct {
	name string
	upTo time.Duration
}{
	{"overdue", 0},
	{"next minute", time.Minute},
	{"next hour", time.Hour},
	{"next day", 24 * time.Hour},
	{"next 7 days", 7 * 24 * time.Hour},
	{"next 30 days", 30 * 24 * time.Hour},
	{"later", -1},
}

// maxInspectDests bounds the distinct destinations inspect counts; the rest
// are summed in other_destinations.
const maxInspectDests = 10000

type inspectReport struct {
	Dir           string `json:"dir"`
	FormatVersion int    `json:"format_version"`
	PebbleFormat  uint64 `json:"pebble_format"`
	Shards        int    `json:"shards"`
	// CleanClose: Open found a clean-close record and checked the files
	// against it; false: it recovered as after a crash.
	CleanClose bool   `json:"clean_close"`
	DiskBytes  uint64 `json:"disk_bytes"`
	// Pending and Dead are the store's own counts; BlockPending and
	// TimedPending split Pending by layout (packed blocks, time keyspace).
	Pending      int64 `json:"pending"`
	BlockPending int64 `json:"block_pending"`
	TimedPending int64 `json:"timed_pending"`
	Blocks       int   `json:"blocks"`
	Dead         int64 `json:"dead"`
	// Scanned counts what reading every message found; it differs from the
	// counts above only in a damaged store.
	ScannedPending int64            `json:"scanned_pending"`
	ScannedDead    int64            `json:"scanned_dead"`
	PerShard       []shardSize      `json:"per_shard"`
	AsOf           string           `json:"as_of"`
	Due            []dueCount       `json:"due"`
	Destinations   []destinationRow `json:"destinations"`
	// OtherDestinations counts the destinations left out of Destinations
	// by -top, and OtherPending and OtherDead the messages of those and of
	// destinations past the first maxInspectDests seen (Capped), which are
	// not told apart.
	OtherDestinations int   `json:"other_destinations,omitempty"`
	OtherPending      int64 `json:"other_pending,omitempty"`
	OtherDead         int64 `json:"other_dead,omitempty"`
	Capped            bool  `json:"capped,omitempty"`
}

type shardSize struct {
	Shard   int   `json:"shard"`
	Pending int64 `json:"pending"`
	Dead    int64 `json:"dead"`
}

type dueCount struct {
	Bucket string `json:"bucket"`
	Count  int64  `json:"count"`
}

type destinationRow struct {
	Dest    string `json:"dest"`
	Pending int64  `json:"pending"`
	Dead    int64  `json:"dead"`
}

func runInspect(ctx context.Context, env *env, args []string) error {
	fs := flag.NewFlagSet("inspect", flag.ContinueOnError)
	var a storeArgs
	a.bind(fs)
	asJSON := fs.Bool("json", false, "print the report as one JSON object")
	top := fs.Int("top", 20, "list the `n` destinations with the most messages (0: all)")
	setUsage(fs, inspectUsage)
	if err := parseFlags(fs, args, env, &a); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usageError{fmt.Errorf("unexpected arguments %q", fs.Args())}
	}
	if *top < 0 {
		return usageError{fmt.Errorf("-top %d is negative", *top)}
	}
	return withStore(ctx, env, &a, func(s *wal.Store, dir string) error {
		rep, err := inspect(ctx, s, dir, env.clock(), *top)
		if err != nil {
			return err
		}
		if *asJSON {
			enc := json.NewEncoder(env.stdout)
			enc.SetEscapeHTML(false)
			enc.SetIndent("", "  ")
			return enc.Encode(rep)
		}
		rep.print(env.stdout)
		return nil
	})
}

// inspect reads every pending message and dead letter of s once.
func inspect(ctx context.Context, s *wal.Store, dir string, now time.Time, top int) (*inspectReport, error) {
	st, rec := s.Stats(), s.Recovery()
	rep := &inspectReport{
		Dir: dir, FormatVersion: wal.FormatVersion, PebbleFormat: uint64(wal.PebbleFormat),
		Shards: s.Shards(), CleanClose: rec.CleanClose, DiskBytes: st.DiskBytes,
		Pending: st.PendingTotal, BlockPending: rec.BlockPending, TimedPending: rec.TimedPending, Blocks: rec.Blocks,
		Dead: st.Dead, AsOf: now.UTC().Format(time.RFC3339Nano),
		PerShard: make([]shardSize, s.Shards()), Due: make([]dueCount, len(dueBuckets)),
	}
	for i := range rep.PerShard {
		rep.PerShard[i].Shard = i
	}
	for i, b := range dueBuckets {
		rep.Due[i].Bucket = b.name
	}
	dests := map[string]*destinationRow{}
	count := func(dest string) *destinationRow {
		d := dests[dest]
		if d == nil {
			if len(dests) >= maxInspectDests {
				return nil
			}
			d = &destinationRow{Dest: dest}
			dests[dest] = d
		}
		return d
	}
	nowNs := now.UnixNano()
	err := eachPending(ctx, s, 0, store.MaxDue+1, func(m *store.Message) (bool, error) {
		rep.ScannedPending++
		rep.PerShard[m.Shard].Pending++
		rep.Due[dueBucket(m.Due, nowNs)].Count++
		if d := count(m.Dest); d != nil {
			d.Pending++
		} else {
			rep.OtherPending++
			rep.Capped = true
		}
		return true, nil
	})
	if err != nil {
		return nil, err
	}
	err = eachDead(ctx, s, func(dl *store.DeadLetter) (bool, error) {
		rep.ScannedDead++
		rep.PerShard[dl.Message.Shard].Dead++
		if d := count(dl.Message.Dest); d != nil {
			d.Dead++
		} else {
			rep.OtherDead++
			rep.Capped = true
		}
		return true, nil
	})
	if err != nil {
		return nil, err
	}
	rows := make([]destinationRow, 0, len(dests))
	for _, d := range dests {
		rows = append(rows, *d)
	}
	slices.SortFunc(rows, func(a, b destinationRow) int {
		return cmp.Or(cmp.Compare(b.Pending+b.Dead, a.Pending+a.Dead), cmp.Compare(a.Dest, b.Dest))
	})
	if top > 0 && len(rows) > top {
		for _, r := range rows[top:] {
			rep.OtherPending += r.Pending
			rep.OtherDead += r.Dead
		}
		rep.OtherDestinations = len(rows) - top
		rows = rows[:top]
	}
	rep.Destinations = rows
	return rep, nil
}

// dueBucket returns the index in dueBuckets of a message due at due.
func dueBucket(due, now int64) int {
	for i, b := range dueBuckets {
		if b.upTo < 0 || due <= store.SatAdd(now, int64(b.upTo)) {
			return i
		}
	}
	return len(dueBuckets) - 1
}

func (r *inspectReport) print(w io.Writer) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	closed := "recovered as after a crash (no clean-close record; every key was read)"
	if r.CleanClose {
		closed = "clean (files and counts checked against the clean-close record)"
	}
	fmt.Fprintf(tw, "store\t%s\n", r.Dir)
	fmt.Fprintf(tw, "format\thourglass wal format %d, pebble format %d\n", r.FormatVersion, r.PebbleFormat)
	fmt.Fprintf(tw, "shards\t%d\n", r.Shards)
	fmt.Fprintf(tw, "last close\t%s\n", closed)
	fmt.Fprintf(tw, "disk\t%s\n", bytesText(r.DiskBytes))
	fmt.Fprintf(tw, "pending\t%d (%d packed in %d blocks, %d in the time keyspace)\n", r.Pending, r.BlockPending, r.Blocks, r.TimedPending)
	fmt.Fprintf(tw, "dead letters\t%d\n", r.Dead)
	if r.ScannedPending != r.Pending || r.ScannedDead != r.Dead {
		fmt.Fprintf(tw, "WARNING\treading every message found %d pending and %d dead: run hourglass check\n", r.ScannedPending, r.ScannedDead)
	}
	tw.Flush()
	fmt.Fprintf(w, "\nper shard\n")
	fmt.Fprintf(tw, "  shard\tpending\tdead\n")
	for _, s := range r.PerShard {
		fmt.Fprintf(tw, "  %d\t%d\t%d\n", s.Shard, s.Pending, s.Dead)
	}
	tw.Flush()
	fmt.Fprintf(w, "\ndue, as of %s\n", r.AsOf)
	for _, d := range r.Due {
		fmt.Fprintf(tw, "  %s\t%d\n", d.Bucket, d.Count)
	}
	tw.Flush()
	fmt.Fprintf(w, "\ndestinations\n")
	fmt.Fprintf(tw, "  dest\tpending\tdead\n")
	for _, d := range r.Destinations {
		fmt.Fprintf(tw, "  %s\t%d\t%d\n", d.Dest, d.Pending, d.Dead)
	}
	switch {
	case r.Capped:
		fmt.Fprintf(tw, "  (more than %d destinations: the rest)\t%d\t%d\n", maxInspectDests, r.OtherPending, r.OtherDead)
	case r.OtherDestinations > 0:
		fmt.Fprintf(tw, "  (%s more)\t%d\t%d\n", plural(int64(r.OtherDestinations), "destination"), r.OtherPending, r.OtherDead)
	}
	tw.Flush()
}

// bytesText prints a size in bytes and in binary units.
func bytesText(n uint64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d bytes", n)
	}
	v, u := float64(n), 0
	for v >= unit && u < 4 {
		v /= unit
		u++
	}
	return fmt.Sprintf("%.1f %ciB (%d bytes)", v, "KMGT"[u-1], n)
}
