package wal

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"

	"github.com/cockroachdb/pebble/v2/record"
	"github.com/cockroachdb/pebble/v2/vfs"
	pebblewal "github.com/cockroachdb/pebble/v2/wal"
	"github.com/hourglassmq/hourglass/store"
	"github.com/stretchr/testify/require"
)

// damage is one way to damage one file.
type damage struct {
	name  string
	at    int // the offset flipped, or the length truncated to
	apply func(t testing.TB, fs vfs.FS, path string)
}

// damagesFor lists the damages the catalogue applies to a file of size
// bytes: a flipped byte at several offsets, truncation to several lengths,
// deletion.
func damagesFor(size int, long bool) []damage {
	var offs, lens []int
	if long {
		for i := 0; i < 16; i++ {
			offs = append(offs, size*i/16)
			lens = append(lens, size*i/16)
		}
	} else {
		offs = []int{0, size / 3, size / 2, size - 9, size - 1}
		lens = []int{0, size / 2, size - 1}
	}
	var ds []damage
	seen := map[string]bool{}
	add := func(d damage) {
		if !seen[d.name] {
			seen[d.name] = true
			ds = append(ds, d)
		}
	}
	for _, off := range offs {
		if off >= 0 && off < size {
			add(damage{fmt.Sprintf("flip@%d", off), off, func(t testing.TB, fs vfs.FS, p string) { flipByte(t, fs, p, off) }})
		}
	}
	for _, n := range lens {
		if n >= 0 && n < size {
			add(damage{fmt.Sprintf("truncate@%d", n), n, func(t testing.TB, fs vfs.FS, p string) { truncateFile(t, fs, p, n) }})
		}
	}
	add(damage{"delete", 0, func(t testing.TB, fs vfs.FS, p string) { require.NoError(t, fs.Remove(p)) }})
	return ds
}

// TestEveryDamageIsRefusedOrOpensExactly is the catalogue of damage: it
// damages every file of a store directory, one file and one damage at a
// time (a flipped byte at several offsets, truncation to several lengths,
// deletion; the files hold every kind of record, the resolve log's
// clear records included), in a store closed cleanly and, separately, in
// one that crashed (a crash clone with the unsynced data dropped, taken at
// rest, so every acknowledged operation is on disk). Each time Open must
// either refuse with an error wrapping ErrCorrupt, leaving the directory
// byte for byte as it was, or open with exactly the acknowledged state:
// every pending message with its exact content, nothing resolved back, the
// dead letters intact, every invariant Check knows holding; and the store
// keeps working. Since Open verifies part of the store in the background
// (verify.go), a third outcome is allowed: the store opens, and a read or
// the background verification fails it (ErrFailed, wrapping ErrCorrupt)
// before any read answered wrongly; it then refuses every call.
//
// One exception, after a crash only: damage to the newest write-ahead log
// that no later synced record vouches for (the log truncated or deleted, or
// its last record damaged) cannot be told from a torn tail, by Pebble or
// anyone, so the store may open with the state of an earlier acknowledged
// operation, exactly; never a mix. Damage to any earlier record of that log
// must be refused. -wal.long damages 16 offsets and lengths per file
// instead of five and three.
func TestEveryDamageIsRefusedOrOpensExactly(t *testing.T) {
	damageCatalogue(t, seed(t), false, true)
}

// TestDamageCatalogueRegressions runs the damage catalogue with seeds that
// once found a gap: 1796108265704645683 flips byte 173 of the crashed
// store's MANIFEST, in its fourth of six edits, which Pebble took for a torn
// tail, dropping two flushes whose logs were deleted (see checkManifest).
func TestDamageCatalogueRegressions(t *testing.T) {
	for _, sd := range []uint64{1796108265704645683} {
		t.Run(fmt.Sprint(sd), func(t *testing.T) { damageCatalogue(t, sd, true) })
	}
}

// damageCatalogue is TestEveryDamageIsRefusedOrOpensExactly with seed sd,
// after a clean close and/or after a crash.
func damageCatalogue(t *testing.T, sd uint64, crashes ...bool) {
	for _, crash := range crashes {
		name := "after a clean close"
		if crash {
			name = "after a crash"
		}
		t.Run(name, func(t *testing.T) {
			mem := vfs.NewCrashableMem()
			// Flushes put some of the state in sstables, some in the log.
			// The resolve log's bound lets it grow over several groups
			// between checkpoints, so the crashed store keeps some.
			opts := testOptions(mem, 2)
			opts.checkpointBytes = 64 << 10
			s, models := populatedWith(t, opts, sd, 120, 30, 60, 90)
			var base vfs.FS = mem
			if crash {
				base = mem.CrashClone(vfs.CrashCloneCfg{})
			}
			require.NoError(t, s.Close())
			base = copyStore(t, base, storeDir)
			if crash {
				// Close checkpoints the resolve log; a crashed store keeps
				// clear records, which the catalogue damages too.
				require.NotEmpty(t, rawKeys(t, copyStore(t, base, storeDir))[tagClear], "the fixture holds no resolve log")
			}
			// testOptions separates blocks into blob files: the flushed
			// state has values in sstables and in blob files both.
			require.NotEmpty(t, (&dirState{names: mustList(t, base)}).kinds(fileBlob), "the fixture holds no blob file")
			want := models[len(models)-1]
			newest := liveLog(t, base, storeDir)
			lastRecord := 0
			if crash {
				lastRecord = lastRecordAt(t, base, storeDir)
			}
			outcomes := map[string]int{}
			for _, file := range mustList(t, base) {
				path := storeDir + "/" + file
				// Sstables and blob files get the long list always: only a
				// read of their blocks finds their damage, and Pebble's
				// compactions at Open read them (see gate.go).
				long := *flagLong || strings.HasSuffix(file, ".sst") || strings.HasSuffix(file, ".blob")
				for _, d := range damagesFor(len(readAll(t, base, path)), long) {
					fs := copyStore(t, base, storeDir)
					d.apply(t, fs, path)
					what := fmt.Sprintf("%s %s", file, d.name)
					// Only the newest log after a crash may lose its tail,
					// and only where no later record vouches for it.
					earlierOK := crash && file == newest &&
						(!strings.HasPrefix(d.name, "flip") || d.at >= lastRecord)
					outcome := openDamaged(t, fs, what, want, models, earlierOK)
					outcomes[outcome]++
				}
			}
			t.Logf("outcomes: %v", outcomes)
			require.Positive(t, outcomes["refused"])
		})
	}
}

// openDamaged opens a damaged copy of a store and checks the outcome (see
// TestEveryDamageIsRefusedOrOpensExactly): "refused", "exact" or, when
// earlierOK, "earlier".
func openDamaged(t *testing.T, fs vfs.FS, what string, want *model, history []*model, earlierOK bool) string {
	t.Helper()
	ctx := context.Background()
	before := dirBytes(t, fs, storeDir)
	s, err := Open(ctx, testOptions(fs, 0))
	if err != nil {
		require.ErrorIs(t, err, ErrCorrupt, "%s: refused with an unclear error", what)
		requireDirUnchanged(t, fs, storeDir, before, "%s: a refused Open wrote to the directory", what)
		return "refused"
	}
	// Open verifies the rest in the background (verify.go). Until it is
	// done every read must be right or fail clearly, never wrong.
	got, err := readState(s)
	if err != nil {
		require.ErrorIs(t, err, ErrCorrupt, "%s: a read failed with an unclear error", what)
		s.waitVerify()
		require.ErrorIs(t, s.Err(), ErrFailed, "%s: a read found damage, but the store goes on", what)
		requireFailedCleanly(t, s, what)
		return "failed"
	}
	outcome := "exact"
	if !equalState(want, got) {
		earlier := -1
		for k := len(history) - 1; k >= 0 && earlier < 0; k-- {
			if equalState(history[k], got) {
				earlier = k
			}
		}
		switch {
		case earlier >= 0 && earlierOK:
			outcome = "earlier"
		case earlier >= 0:
			t.Fatalf("%s: opened with the state after operation %d of %d: acknowledged operations lost, and the damage was detectable",
				what, earlier, len(history)-1)
		default:
			t.Fatalf("%s: opened with a state that is no acknowledged state: %d pending (want %d), %d dead (want %d)",
				what, len(got.pending), len(want.pending), len(got.dead), len(want.dead))
		}
	}
	s.waitVerify()
	if err := s.Err(); err != nil {
		require.ErrorIs(t, err, ErrCorrupt, "%s: the background verification failed the store with an unclear error", what)
		requireFailedCleanly(t, s, what)
		return outcome + ", then failed"
	}
	requireCheck(t, s)
	_, err = s.Append(ctx, []store.Message{msgAt(0, 0, "after")})
	require.NoError(t, err, "%s: the store does not keep working", what)
	require.NoError(t, s.Close())
	return outcome
}

// requireFailedCleanly checks a store that found damage after Open: every
// call is refused with the failure, and Close says it was not clean.
func requireFailedCleanly(t *testing.T, s *Store, what string) {
	t.Helper()
	_, err := s.Append(context.Background(), []store.Message{msgAt(0, 0, "after")})
	require.ErrorIs(t, err, ErrFailed, "%s", what)
	_, _, err = s.Scan(context.Background(), store.ScanQuery{Shard: 0, To: 1})
	require.ErrorIs(t, err, ErrFailed, "%s", what)
	require.ErrorIs(t, s.Close(), ErrFailed, "%s", what)
}

// lastRecordAt returns the offset at which the last record of the newest
// write-ahead log in dir starts: what no later record vouches for.
func lastRecordAt(t testing.TB, fs vfs.FS, dir string) int {
	t.Helper()
	logs, err := pebblewal.Scan(pebblewal.Dir{FS: fs, Dirname: dir})
	require.NoError(t, err)
	require.NotEmpty(t, logs)
	rr := logs[len(logs)-1].OpenForRead()
	defer rr.Close()
	last := -1
	for {
		_, off, err := rr.NextRecord()
		if err != nil {
			require.True(t, errors.Is(err, io.EOF) || errors.Is(err, record.ErrUnexpectedEOF), "%v", err)
			break
		}
		last = int(off.Physical)
	}
	require.GreaterOrEqual(t, last, 0, "the newest log holds no record")
	return last
}
