package wal

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/record"
	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/hourglassmq/hourglass/store"
	"github.com/stretchr/testify/require"
)

// TestManifestLosingSyncedEditsIsRefused: Pebble reads a MANIFEST up to its
// first unreadable record, anywhere in the file, and replays the logs from
// the oldest unflushed one that the edits before it name. Damage to a synced
// edit therefore drops the sstables it and every later edit added, whose
// logs were deleted, while the newer logs replay on top: a state never
// acknowledged (the damage catalogue found it with -wal.seed=
// 1796108265704645683, MANIFEST flip@173). Open must refuse a damaged
// record that a readable one follows (see checkManifest), leaving the
// directory as it was, and must not take a torn last record for damage.
func TestManifestLosingSyncedEditsIsRefused(t *testing.T) {
	ctx := context.Background()
	mem := vfs.NewCrashableMem()
	s := openTest(t, testOptions(mem, 2))
	// Each flush is one MANIFEST edit, and deletes the log it flushed.
	for i := 0; i < 5; i++ {
		_, err := s.Append(ctx, []store.Message{msgAt(i%2, 0, fmt.Sprintf("m%d", i)), msgAt(i%2, 2*time.Minute, fmt.Sprintf("far%d", i))})
		require.NoError(t, err)
		require.NoError(t, s.db.Flush())
	}
	_, err := s.Append(ctx, []store.Message{msgAt(0, 0, "in the live log")})
	require.NoError(t, err)
	base := copyStore(t, mem.CrashClone(vfs.CrashCloneCfg{}), storeDir)
	require.NoError(t, s.Close())
	st, err := readDir(base, storeDir)
	require.NoError(t, err)
	manifest := storeDir + "/" + st.manifest
	recs := manifestRecords(t, base, manifest)
	require.GreaterOrEqual(t, len(recs), 5, "the fixture's MANIFEST holds too few edits")

	refused := func(t *testing.T, fs vfs.FS, what string) {
		t.Helper()
		before := dirBytes(t, fs, storeDir)
		s, err := Open(ctx, testOptions(fs, 0))
		if err == nil {
			got := s.Recovery()
			require.NoError(t, s.Close())
			t.Fatalf("%s: opened (%d pending, %d dead), losing synced MANIFEST edits", what, got.BlockPending+got.TimedPending, got.DeadLetters)
		}
		require.ErrorIs(t, err, ErrCorrupt, "%s", what)
		de, ok := err.(*DamageError)
		require.True(t, ok, "%s: %v", what, err)
		require.Equal(t, st.manifest, de.File, "%s", what)
		requireDirUnchanged(t, fs, storeDir, before, "%s: a refused Open wrote to the directory", what)
	}

	t.Run("a record before the last damaged", func(t *testing.T) {
		for i, r := range recs[:len(recs)-1] {
			fs := copyStore(t, base, storeDir)
			flipByte(t, fs, manifest, int(r.start+r.end)/2)
			refused(t, fs, fmt.Sprintf("record %d of %d flipped", i+1, len(recs)))
		}
	})

	t.Run("cut short", func(t *testing.T) {
		// Cut after each edit but the last: the store opens with every
		// message, or Open refuses (a gap in Pebble's sequence numbers, or
		// Pebble missing an sstable a later edit deleted), never with some
		// lost.
		refusals := 0
		for k := 1; k < len(recs); k++ {
			fs := copyStore(t, base, storeDir)
			truncateFile(t, fs, manifest, int(recs[k-1].end))
			before := dirBytes(t, fs, storeDir)
			c, err := Open(ctx, testOptions(fs, 0))
			if err != nil {
				require.ErrorIs(t, err, ErrCorrupt)
				requireDirUnchanged(t, fs, storeDir, before)
				refusals++
				continue
			}
			got := c.Recovery()
			require.NoError(t, c.Close())
			require.Equal(t, int64(11), got.BlockPending+got.TimedPending, "cut after record %d of %d: opened with messages lost", k, len(recs))
		}
		require.Positive(t, refusals)
	})

	t.Run("a torn last record is no damage", func(t *testing.T) {
		last := recs[len(recs)-1]
		for _, n := range []int64{last.start + 1, (last.start + last.end) / 2, last.end - 1} {
			fs := copyStore(t, base, storeDir)
			truncateFile(t, fs, manifest, int(n))
			require.NoError(t, checkManifest(fs, storeDir, st.manifest), "cut at %d", n)
		}
		fs := copyStore(t, base, storeDir)
		flipByte(t, fs, manifest, int(last.end-1))
		require.NoError(t, checkManifest(fs, storeDir, st.manifest), "last byte flipped")
	})
}

// manifestRecord is where one MANIFEST record lies.
type manifestRecord struct{ start, end int64 }

func manifestRecords(t *testing.T, fs vfs.FS, path string) []manifestRecord {
	t.Helper()
	rr := record.NewReader(bytes.NewReader(readAll(t, fs, path)), 0)
	var out []manifestRecord
	for {
		start := rr.Offset()
		r, err := rr.Next()
		if err == io.EOF {
			return out
		}
		require.NoError(t, err)
		_, err = io.Copy(io.Discard, r)
		require.NoError(t, err)
		out = append(out, manifestRecord{start: start, end: rr.Offset()})
	}
}
