package wal

import (
	"context"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/stretchr/testify/require"
)

// TestCleanRecordCounts changes the counts of a clean-close record (and
// nothing else: the files and their checksums still match it). Open counts
// the blocks itself and refuses a record that disagrees, writing nothing;
// the time keyspace's messages and the dead letters it takes from the
// record, and the background verification counts them: a record that
// disagrees there fails the store once it is open.
func TestCleanRecordCounts(t *testing.T) {
	ctx := context.Background()
	mem := vfs.NewMem()
	s, _ := populated(t, mem, 1, 200, 50, 100, 150)
	require.NoError(t, s.Close())
	rec, err := readCleanRecord(mem, storeDir)
	require.NoError(t, err)
	s = openTest(t, testOptions(copyStore(t, mem, storeDir), 0))
	got := s.Recovery()
	s.waitVerify()
	require.NoError(t, s.Err())
	require.NoError(t, s.Close())
	require.True(t, got.CleanClose)
	require.Positive(t, got.Blocks, "the fixture holds no block")
	require.Positive(t, got.TimedPending, "the fixture holds no time-keyspace message")
	require.Positive(t, got.DeadLetters, "the fixture holds no dead letter")

	for _, tc := range []struct {
		name   string
		change func(r *cleanRecord)
		refuse bool
	}{
		{"last sequence", func(r *cleanRecord) { r.lastSeq++ }, true},
		{"blocks", func(r *cleanRecord) { r.blocks++ }, true},
		{"shards", func(r *cleanRecord) { r.pending = append(r.pending, 0) }, true},
		{"fewer pending than the blocks hold", func(r *cleanRecord) { clear(r.pending) }, true},
		{"time keyspace", func(r *cleanRecord) { r.pending[0]++ }, false},
		{"dead letters", func(r *cleanRecord) { r.dead++ }, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fs := copyStore(t, mem, storeDir)
			changed := *rec
			changed.pending = append([]int64(nil), rec.pending...)
			tc.change(&changed)
			writeFile(t, fs, storeDir+"/"+cleanCloseFile, changed.encode())
			before := dirBytes(t, fs, storeDir)
			s, err := Open(ctx, testOptions(fs, 0))
			if tc.refuse {
				require.ErrorIs(t, err, ErrCorrupt)
				require.Contains(t, err.Error(), "different store than the one closed cleanly")
				requireDirUnchanged(t, fs, storeDir, before, "a refused Open must write nothing")
				return
			}
			require.NoError(t, err)
			s.waitVerify()
			require.ErrorIs(t, s.Err(), ErrFailed)
			require.ErrorIs(t, s.Err(), ErrCorrupt)
			require.Contains(t, s.Err().Error(), "but was closed cleanly with")
			requireFailedCleanly(t, s, tc.name)
		})
	}
}
