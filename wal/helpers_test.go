package wal

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/hourglassmq/hourglass/store"
	"github.com/stretchr/testify/require"
)

// testNow is the fixed clock tests inject.
var testNow = time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)

func quietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func testOptions(fs vfs.FS, shards int) Options {
	return Options{
		Dir:           "/store",
		FS:            fs,
		Shards:        shards,
		MaxBatchDelay: -1,
		Horizon:       time.Minute,
		Now:           func() time.Time { return testNow },
		Logger:        quietLogger(),
		CacheSize:     8 << 20,
		MemTableSize:  4 << 20,
		// A small resolve-log bound: the random workloads write clear
		// records and checkpoints both (clearlog.go).
		checkpointBytes: 96,
		// A small separation threshold: the test stores' blocks go to
		// blob files once flushed, as a busy store's do, while their
		// summaries stay in the sstables (valueSeparation).
		blobMinSize: 64,
	}
}

func openTest(t testing.TB, opts Options) *Store {
	t.Helper()
	s, err := Open(context.Background(), opts)
	require.NoError(t, err)
	return s
}

// seed returns the seed for a randomized test and arranges to print it if
// the test fails.
func seed(t testing.TB) uint64 {
	t.Helper()
	sd := *flagSeed
	if sd == 0 {
		sd = time.Now().UnixNano()
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("seed: rerun with -wal.seed=%d", sd)
		}
	})
	return uint64(sd)
}

// msgAt builds a test message due d after testNow.
func msgAt(shard int, d time.Duration, tag string) store.Message {
	return store.Message{
		Shard:   shard,
		Due:     testNow.Add(d).UnixNano(),
		Dest:    "local://test",
		Headers: []store.Header{{Key: "tag", Value: tag}},
		Payload: []byte("payload-" + tag),
	}
}

func randMsg(r *rand.Rand, shards int, i int) store.Message {
	// Mostly near-term (packed), some far-future (time keyspace).
	d := time.Duration(r.IntN(int(50 * time.Second)))
	if r.IntN(4) == 0 {
		d = time.Hour + time.Duration(r.IntN(int(time.Hour)))
	}
	m := msgAt(r.IntN(shards), d, fmt.Sprint(i))
	if r.IntN(5) == 0 {
		m.Key = fmt.Sprintf("k%d", r.IntN(1000))
	}
	return m
}

// sameMessage compares what the store must preserve.
func sameMessage(t testing.TB, want, got store.Message) {
	t.Helper()
	want.ID, got.ID = 0, 0
	if len(want.Headers) == 0 {
		want.Headers = nil
	}
	if len(want.Payload) == 0 {
		want.Payload = nil
	}
	require.Equal(t, want, got)
}
