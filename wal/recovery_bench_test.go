package wal

import (
	"context"
	"flag"
	"math"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/hourglassmq/hourglass/store"
	"github.com/stretchr/testify/require"
)

var flagN = flag.Int("wal.n", 0, "message count of the recovery benchmarks (0 = 10M with -wal.long, else 200k)")

// benchN is the message count of the recovery benchmarks: -wal.n, else 10M
// with -wal.long, else 200k (a smoke run).
func benchN() int {
	if *flagN > 0 {
		return *flagN
	}
	if *flagLong {
		return 10_000_000
	}
	return 200_000
}

// populate appends n 100-byte messages over 16 shards, due within the next
// minute, from 8 goroutines in calls of 1000, and returns their IDs in
// append order.
func populate(b *testing.B, s *Store, n int) []store.ID {
	ctx := context.Background()
	ids := make([]store.ID, n)
	payload := make([]byte, 100)
	now := time.Now().UnixNano()
	const per = 1000
	var wg sync.WaitGroup
	work := make(chan int)
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			msgs := make([]store.Message, per)
			for start := range work {
				k := min(per, n-start)
				for j := 0; j < k; j++ {
					i := start + j
					msgs[j] = store.Message{Shard: i % 16, Due: now + int64(i%60_000)*int64(time.Millisecond), Dest: "local://bench", Payload: payload}
				}
				res, err := s.Append(ctx, msgs[:k])
				if err != nil {
					b.Error(err)
					return
				}
				for j, r := range res {
					ids[start+j] = r.ID
				}
			}
		}()
	}
	for start := 0; start < n; start += per {
		work <- start
	}
	close(work)
	wg.Wait()
	return ids
}

// scanAll pages through every pending message of every shard, as the engine
// does on recovery, and returns how many it saw.
func scanAll(b *testing.B, s *Store) int {
	ctx := context.Background()
	total := 0
	for shard := 0; shard < s.Shards(); shard++ {
		var c store.Position
		for {
			page, next, err := s.Scan(ctx, store.ScanQuery{Shard: shard, From: math.MinInt64, To: math.MaxInt64, Limit: 1 << 20, After: c})
			require.NoError(b, err)
			total += len(page)
			c = next.Next
			if next.Done {
				break
			}
		}
	}
	return total
}

// BenchmarkRecoveryScan reopens a store holding benchN() pending messages and
// pages all of them in (Limit MaxScanLimit): open time, time to the first
// page of 1024 messages of shard 0, scan time and rate, and the time from
// Open until the background verification ended. Sub-benchmarks: the packed
// layout and the simple one (Horizon < 0), closed cleanly, and the packed
// one as after a crash (a Pebble checkpoint taken with the store open, after
// its last synced commit).
func BenchmarkRecoveryScan(b *testing.B) {
	for _, l := range []struct {
		name    string
		horizon time.Duration
		crash   bool
	}{{"packed", time.Hour, false}, {"simple", -1, false}, {"packed-crash", time.Hour, true}} {
		b.Run(l.name, func(b *testing.B) { benchRecovery(b, l.horizon, l.crash) })
	}
}

func benchRecovery(b *testing.B, horizon time.Duration, crash bool) {
	n := benchN()
	opts := benchOptions(b, horizon)
	s, err := Open(context.Background(), opts)
	require.NoError(b, err)
	t0 := time.Now()
	populate(b, s, n)
	populateRate := float64(n) / time.Since(t0).Seconds()
	st := s.Stats()
	if crash {
		// Every Append returned, so all is synced: a Pebble checkpoint
		// (its files and logs as they are, no memtable flushed, no
		// clean-close record) is what a crash now would leave.
		dir := filepath.Join(b.TempDir(), "crash")
		require.NoError(b, s.db.Checkpoint(dir))
		require.NoError(b, s.Close())
		opts.Dir = dir
	} else {
		require.NoError(b, s.Close())
	}
	opts.Shards = 0
	b.ResetTimer()
	for b.Loop() {
		b.StopTimer()
		if crash {
			// Each iteration reopens the crash image, not what the last
			// Close left.
			dir := b.TempDir()
			_, err := vfs.Clone(vfs.Default, vfs.Default, opts.Dir, dir)
			require.NoError(b, err)
			o := opts
			o.Dir = dir
			opts = o
		}
		b.StartTimer()
		t0 := time.Now()
		s, err := Open(context.Background(), opts)
		require.NoError(b, err)
		open := time.Since(t0)
		_, _, err = s.Scan(context.Background(), store.ScanQuery{Shard: 0, From: math.MinInt64, To: math.MaxInt64, Limit: 1024})
		require.NoError(b, err)
		first := time.Since(t0)
		t1 := time.Now()
		got := scanAll(b, s)
		scan := time.Since(t1)
		require.Equal(b, n, got)
		s.waitVerify()
		verified := time.Since(t0)
		require.NoError(b, s.Err())
		require.NoError(b, s.Close())
		b.ReportMetric(open.Seconds(), "open-s")
		b.ReportMetric(first.Seconds(), "first-page-s")
		b.ReportMetric(scan.Seconds(), "scan-s")
		b.ReportMetric(verified.Seconds(), "verified-s")
		b.ReportMetric(float64(n)/scan.Seconds(), "msgs/s")
	}
	b.ReportMetric(populateRate, "populate-records/s")
	b.ReportMetric(float64(st.DiskBytes)/(1<<20), "disk-MiB")
}

// BenchmarkScanAfterResolve compares paging in the last 10% of benchN()
// messages after the first 90% were appended and resolved (Done, in append
// order, as delivery does) against a fresh store holding only that 10%. Both
// stores are closed and reopened before the scans, so both read from disk as
// after a restart. The ratio must stay within 1.5.
func BenchmarkScanAfterResolve(b *testing.B) {
	n := benchN()
	keep := n / 10
	ctx := context.Background()
	copts := benchOptions(b, time.Hour)
	churned, err := Open(ctx, copts)
	require.NoError(b, err)
	ids := populate(b, churned, n)
	for start := 0; start < n-keep; start += store.MaxCallMessages {
		var batch store.Batch
		for _, id := range ids[start:min(start+store.MaxCallMessages, n-keep)] {
			batch.Done = append(batch.Done, store.Done{ID: id})
		}
		_, err := churned.Resolve(ctx, batch)
		require.NoError(b, err)
	}
	ids = nil
	// Both stores flush their memtables before closing, so after reopening
	// both read the pending messages from sstables: the comparison isolates
	// what the 9M resolved messages left behind (tombstones, dead data).
	require.NoError(b, churned.db.Flush())
	require.NoError(b, churned.Close())
	fopts := benchOptions(b, time.Hour)
	fresh, err := Open(ctx, fopts)
	require.NoError(b, err)
	populate(b, fresh, keep)
	require.NoError(b, fresh.db.Flush())
	require.NoError(b, fresh.Close())
	copts.Shards, fopts.Shards = 0, 0
	churned, err = Open(ctx, copts)
	require.NoError(b, err)
	defer churned.Close()
	fresh, err = Open(ctx, fopts)
	require.NoError(b, err)
	defer fresh.Close()
	if testing.Verbose() {
		b.Logf("churned LSM before the scans:\n%s", churned.db.Metrics())
	}
	b.ResetTimer()
	first := true
	var firstRatio float64
	for b.Loop() {
		t0 := time.Now()
		require.Equal(b, keep, scanAll(b, churned))
		tc := time.Since(t0)
		t1 := time.Now()
		require.Equal(b, keep, scanAll(b, fresh))
		tf := time.Since(t1)
		if first {
			// The first pass reads cold, right after reopening.
			firstRatio = tc.Seconds() / tf.Seconds()
			first = false
		}
		b.ReportMetric(tc.Seconds(), "churned-s")
		b.ReportMetric(tf.Seconds(), "fresh-s")
		b.ReportMetric(tc.Seconds()/tf.Seconds(), "ratio")
	}
	b.ReportMetric(firstRatio, "first-ratio")
	b.ReportMetric(float64(churned.Stats().DiskBytes)/(1<<20), "churned-disk-MiB")
	b.ReportMetric(float64(fresh.Stats().DiskBytes)/(1<<20), "fresh-disk-MiB")
}
