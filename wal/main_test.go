package wal

import (
	"flag"
	"testing"

	"go.uber.org/goleak"
)

var (
	flagSeed = flag.Int64("wal.seed", 0, "seed for randomized tests (0 = time-based; printed on failure)")
	flagLong = flag.Bool("wal.long", false, "run the long variants (10M-message benchmarks, more crash points, 16 damages per file in the damage catalogue)")
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		// Pebble's block cache and file cache keep process-wide helpers.
		goleak.IgnoreAnyFunction("github.com/cockroachdb/pebble/v2/internal/cache.(*cleanupManager).mainLoop"),
	)
}
