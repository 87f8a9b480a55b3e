package wal

import (
	"context"
	"encoding/binary"
	"flag"
	"math/rand/v2"
	"sort"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/hourglassmq/hourglass/store"
	"github.com/stretchr/testify/require"
)

var (
	flagPerCall = flag.Int("wal.percall", 16, "messages per Append call in BenchmarkAppendSync")
	flagCallers = flag.Int("wal.callers", 256, "concurrent callers in BenchmarkAppendSync")
)

func benchOptions(b *testing.B, horizon time.Duration) Options {
	return Options{
		Dir:     b.TempDir(),
		FS:      vfs.Default,
		Shards:  16,
		Horizon: horizon,
		Logger:  quietLogger(),
	}
}

// BenchmarkAppendSync measures acknowledged (synced) records per second with
// 256 concurrent callers appending 100-byte payloads, and the ack latency of
// each call. Sub-benchmarks: the packed layout (default) and the simple one
// (Horizon < 0: one time-ordered key plus one index key per message).
func BenchmarkAppendSync(b *testing.B) {
	for _, l := range []struct {
		name    string
		horizon time.Duration
	}{{"packed", time.Hour}, {"simple", -1}} {
		b.Run(l.name, func(b *testing.B) { benchAppend(b, l.horizon) })
	}
}

func benchAppend(b *testing.B, horizon time.Duration) {
	ctx := context.Background()
	s, err := Open(ctx, benchOptions(b, horizon))
	require.NoError(b, err)
	defer s.Close()
	callers, perCall := *flagCallers, *flagPerCall
	payload := make([]byte, 100)
	now := time.Now().UnixNano()
	var next atomic.Int64
	lats := make([][]time.Duration, callers)
	var wg sync.WaitGroup
	b.ResetTimer()
	start := time.Now()
	for c := 0; c < callers; c++ {
		wg.Add(1)
		go func(c int) {
			defer wg.Done()
			msgs := make([]store.Message, perCall)
			for {
				i := next.Add(int64(perCall)) - int64(perCall)
				if i >= int64(b.N) {
					return
				}
				for j := range msgs {
					msgs[j] = store.Message{
						Shard:   int(i+int64(j)) % 16,
						Due:     now + int64(time.Duration((i+int64(j))%60)*time.Second),
						Dest:    "local://bench",
						Payload: payload,
					}
				}
				t0 := time.Now()
				if _, err := s.Append(ctx, msgs); err != nil {
					b.Error(err)
					return
				}
				lats[c] = append(lats[c], time.Since(t0))
			}
		}(c)
	}
	wg.Wait()
	elapsed := time.Since(start)
	b.StopTimer()
	var all []time.Duration
	for _, l := range lats {
		all = append(all, l...)
	}
	sort.Slice(all, func(i, j int) bool { return all[i] < all[j] })
	recs := float64(len(all) * perCall)
	b.ReportMetric(recs/elapsed.Seconds(), "records/s")
	if len(all) > 0 {
		b.ReportMetric(float64(all[len(all)/2])/1e6, "p50-ms")
		b.ReportMetric(float64(all[(len(all)*99)/100])/1e6, "p99-ms")
	}
	st := s.Stats()
	if st.Commits > 0 {
		b.ReportMetric(float64(st.Records)/float64(st.Commits), "records/batch")
	}
	b.ReportMetric(float64(st.Sync.P50)/1e6, "sync-p50-ms")
	b.ReportMetric(float64(st.Sync.P99)/1e6, "sync-p99-ms")
	b.ReportMetric(0, "ns/op")
}

// BenchmarkPebbleRawSync is the same-run baseline: one writer, 1000 records
// per synced batch, one key per record (16-byte key, 100-byte value), on the
// same Pebble options the store uses.
func BenchmarkPebbleRawSync(b *testing.B) {
	cache := pebble.NewCache(DefaultCacheSize)
	defer cache.Unref()
	po := &pebble.Options{
		FS:                 vfs.Default,
		Cache:              cache,
		MemTableSize:       DefaultMemTableSize,
		FormatMajorVersion: PebbleFormat,
		Logger:             pebbleLogger{&Store{log: quietLogger()}},
	}
	db, err := pebble.Open(b.TempDir(), po)
	require.NoError(b, err)
	defer db.Close()
	val := make([]byte, 100)
	key := make([]byte, 16)
	var lats []time.Duration
	b.ResetTimer()
	start := time.Now()
	for i := 0; i < b.N; {
		batch := db.NewBatch()
		for j := 0; j < 1000 && i < b.N; j++ {
			binary.BigEndian.PutUint64(key, uint64(i%60))
			binary.BigEndian.PutUint64(key[8:], uint64(i))
			_ = batch.Set(key, val, nil)
			i++
		}
		t0 := time.Now()
		require.NoError(b, batch.Commit(pebble.Sync))
		lats = append(lats, time.Since(t0))
		_ = batch.Close()
	}
	elapsed := time.Since(start)
	b.StopTimer()
	sort.Slice(lats, func(i, j int) bool { return lats[i] < lats[j] })
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "records/s")
	b.ReportMetric(float64(lats[len(lats)/2])/1e6, "p50-ms")
	b.ReportMetric(float64(lats[(len(lats)*99)/100])/1e6, "p99-ms")
	b.ReportMetric(0, "ns/op")
}

// BenchmarkResolveSync measures acknowledged (synced) resolves per second
// and what each costs the store, in an order unrelated to the order of
// appending, as delivery's due order is. b.N messages are appended first
// (untimed, by populate), so each Resolve call of -wal.percall Done outcomes
// touches about that many blocks, and each group commit hundreds. 64 callers.
// cpu-µs/op is the process's CPU time per resolved message.
// wal-bytes/op is the Pebble write-ahead log's bytes per resolved message.
func BenchmarkResolveSync(b *testing.B) {
	ctx := context.Background()
	s, err := Open(ctx, benchOptions(b, time.Hour))
	require.NoError(b, err)
	defer s.Close()
	ids := populate(b, s, b.N)
	// Delivery resolves by due time, which has nothing to do with the
	// order of appending (the engine's messages are due 100 ms to 5 s
	// ahead, at random): a seeded random order stands in for it.
	order := rand.New(rand.NewPCG(1, 2)).Perm(len(ids))
	perCall, callers := *flagPerCall, 64
	walBefore := s.db.Metrics().WAL.BytesWritten
	cpuBefore := cpuTime()
	var next atomic.Int64
	var wg sync.WaitGroup
	b.ResetTimer()
	start := time.Now()
	for c := 0; c < callers; c++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(int64(perCall))) - perCall
				if i >= len(order) {
					return
				}
				var batch store.Batch
				for _, k := range order[i:min(i+perCall, len(order))] {
					batch.Done = append(batch.Done, store.Done{ID: ids[k]})
				}
				if _, err := s.Resolve(ctx, batch); err != nil {
					b.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	b.StopTimer()
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "resolves/s")
	b.ReportMetric(float64(s.db.Metrics().WAL.BytesWritten-walBefore)/float64(b.N), "wal-bytes/op")
	b.ReportMetric(float64(cpuTime()-cpuBefore)/float64(time.Microsecond)/float64(b.N), "cpu-µs/op")
	b.ReportMetric(0, "ns/op")
}

// cpuTime is the process's user plus system CPU time so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
