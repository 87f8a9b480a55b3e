package wal

import (
	"context"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/hourglassmq/hourglass/store"
	"github.com/stretchr/testify/require"
)

// TestResolveWritesOneClearRecordPerShard: a resolve touching many blocks
// writes one clear record per shard and rewrites no summary; the summaries
// on disk stay stale, and Scan, Get, Check and a reopen after a crash all
// merge the log. Close checkpoints: a store closed cleanly holds no log.
func TestResolveWritesOneClearRecordPerShard(t *testing.T) {
	ctx := context.Background()
	mem := vfs.NewCrashableMem()
	opts := testOptions(mem, 2)
	opts.checkpointBytes = 1 << 20 // no checkpoint before Close
	s := openTest(t, opts)
	// 20 groups of 10 messages: 20 blocks per shard.
	var ids []store.ID
	for g := 0; g < 20; g++ {
		var msgs []store.Message
		for i := 0; i < 10; i++ {
			msgs = append(msgs, msgAt(i%2, time.Duration(g*10+i)*time.Millisecond, "m"))
		}
		res, err := s.Append(ctx, msgs)
		require.NoError(t, err)
		for _, r := range res {
			ids = append(ids, r.ID)
		}
	}
	summaries := func(fs vfs.FS) map[string]string {
		out := map[string]string{}
		withRaw(t, fs, func(db *pebble.DB) {
			it, err := db.NewIter(&pebble.IterOptions{LowerBound: []byte{tagBlock}, UpperBound: []byte{tagBlock + 1}})
			require.NoError(t, err)
			for ok := it.First(); ok; ok = it.Next() {
				if it.Key()[10] == kindSummary {
					out[string(it.Key())] = string(it.Value())
				}
			}
			require.NoError(t, it.Close())
		})
		return out
	}
	before := summaries(mem.CrashClone(vfs.CrashCloneCfg{}))
	// Resolve the first message of every group: one slot in each of 40
	// blocks, none emptied.
	var b store.Batch
	for g := 0; g < 20; g++ {
		b.Done = append(b.Done, store.Done{ID: ids[g*10]}, store.Done{ID: ids[g*10+1]})
	}
	_, err := s.Resolve(ctx, b)
	require.NoError(t, err)
	crashed := mem.CrashClone(vfs.CrashCloneCfg{})
	keys := rawKeys(t, crashed)
	require.Len(t, keys[tagClear], 2, "one clear record per shard")
	require.Equal(t, before, summaries(crashed), "no summary rewritten")
	for _, d := range b.Done {
		_, err := s.Get(ctx, d.ID)
		require.ErrorIs(t, err, ErrNotFound)
	}
	got := storeState(t, s)
	require.Len(t, got.pending, len(ids)-len(b.Done))
	requireCheck(t, s)

	// After a crash the log is replayed.
	c, err := Open(ctx, testOptions(crashed, 0))
	require.NoError(t, err)
	require.Equal(t, got.pending, storeState(t, c).pending)
	require.Equal(t, int64(len(ids)-len(b.Done)), c.Stats().PendingTotal)
	requireCheck(t, c)
	require.NoError(t, c.Close())
	rep, err := Check(ctx, storeDir, crashed)
	require.NoError(t, err, "%s", rep)
	require.Empty(t, rawKeys(t, crashed)[tagClear], "Close checkpoints the log")

	require.NoError(t, s.Close())
	rep, err = Check(ctx, storeDir, mem)
	require.NoError(t, err, "%s", rep)
	require.Empty(t, rawKeys(t, mem)[tagClear], "Close checkpoints the log")
}

// TestCheckpointBoundsTheLog: with a small bound the writer checkpoints
// (rewrites the dirty summaries and deletes the log) and the log never
// holds more than the bound allows.
func TestCheckpointBoundsTheLog(t *testing.T) {
	ctx := context.Background()
	mem := vfs.NewMem()
	opts := testOptions(mem, 1)
	opts.checkpointBytes = 64
	s := openTest(t, opts)
	var ids []store.ID
	for g := 0; g < 10; g++ {
		var msgs []store.Message
		for i := 0; i < 50; i++ {
			msgs = append(msgs, msgAt(0, time.Duration(i)*time.Millisecond, "m"))
		}
		res, err := s.Append(ctx, msgs)
		require.NoError(t, err)
		for _, r := range res {
			ids = append(ids, r.ID)
		}
	}
	// Resolve in due order, one message per block per call: every call
	// touches all ten blocks.
	for i := 0; i < 49; i++ {
		var b store.Batch
		for g := 0; g < 10; g++ {
			b.Done = append(b.Done, store.Done{ID: ids[g*50+i]})
		}
		_, err := s.Resolve(ctx, b)
		require.NoError(t, err)
		logBytes := 0
		it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: []byte{tagClear}, UpperBound: []byte{tagClear + 1}})
		require.NoError(t, err)
		for ok := it.First(); ok; ok = it.Next() {
			logBytes += len(it.Key()) + len(it.Value())
		}
		require.NoError(t, it.Close())
		// Ten dirty summaries of 50 slots are 10*(16+2*7) bytes.
		require.LessOrEqual(t, logBytes, max(64, 10*(16+2*7)), "call %d", i)
		requireCheck(t, s)
	}
	require.NoError(t, s.Close())
	require.Positive(t, s.w.checkpoints.Load())
	s = openTest(t, testOptions(mem, 0))
	defer s.Close()
	require.Equal(t, int64(10), s.Stats().PendingTotal)
}

// TestDamagedLogIsRefused: a clear record that does not decode, clears a
// slot that is not live, or empties a stored block is damage: Open refuses
// the store and Check names it.
func TestDamagedLogIsRefused(t *testing.T) {
	ctx := context.Background()
	base := vfs.NewMem()
	s := openTest(t, testOptions(base, 1))
	res, err := s.Append(ctx, []store.Message{msgAt(0, 0, "a"), msgAt(0, 0, "b"), msgAt(0, 0, "c")})
	require.NoError(t, err)
	_, err = s.Resolve(ctx, store.Batch{Done: []store.Done{{ID: res[0].ID}}})
	require.NoError(t, err)
	require.NoError(t, s.Close())
	require.NoError(t, base.Remove(storeDir+"/"+cleanCloseFile))
	bseq := idSeq(res[0].ID)
	var last uint64
	withRaw(t, base, func(db *pebble.DB) {
		var err error
		last, err = readSeq(db)
		require.NoError(t, err)
	})
	rec := func(slots ...uint16) []byte { return appendClearRecord(nil, []clearSet{{seq: bseq, slots: slots}}) }
	for _, tc := range []struct {
		name string
		val  []byte
		want string
	}{
		{"already clear", rec(0), "not live"},
		{"empties the block", rec(1, 2), "empties a block"},
		{"bad checksum", append(rec(1)[:4], 0, 0, 0, 0), "checksum mismatch"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fs := copyStore(t, base, storeDir)
			withRaw(t, fs, func(db *pebble.DB) {
				require.NoError(t, db.Set(clearKey(0, last), tc.val, pebble.Sync))
			})
			rep, err := Check(ctx, storeDir, fs)
			require.ErrorIs(t, err, ErrCorrupt)
			require.Contains(t, rep.String(), tc.want)
			_, err = Open(ctx, testOptions(fs, 0))
			require.ErrorIs(t, err, ErrCorrupt)
			require.Contains(t, err.Error(), tc.want)
		})
	}
}

func TestClearRecordRoundTrip(t *testing.T) {
	sets := []clearSet{{seq: 7, slots: []uint16{0, 5, 32767}}, {seq: 1 << 39, slots: []uint16{3}}}
	got, err := decodeClearRecord(appendClearRecord(nil, sets), maxSeq)
	require.NoError(t, err)
	require.Equal(t, sets, got)
	_, err = decodeClearRecord(appendClearRecord(nil, sets), 1<<39)
	require.ErrorIs(t, err, ErrCorrupt, "a block at or after its record's group")
	for name, b := range map[string][]byte{
		"empty":       nil,
		"no slot":     reClearCRC([]byte{FormatVersion, 1, 7, 0, 0, 0, 0, 0}),
		"slot repeat": reClearCRC([]byte{FormatVersion, 1, 7, 2, 3, 0, 0, 0, 0, 0}),
		"seq repeat":  reClearCRC([]byte{FormatVersion, 2, 7, 1, 3, 0, 1, 3, 0, 0, 0, 0}),
		"version 1":   reClearCRC([]byte{1, 1, 7, 1, 3, 0, 0, 0, 0}),
		"slot range":  reClearCRC([]byte{FormatVersion, 1, 7, 1, 0x80, 0x80, 0x02, 0, 0, 0, 0}),
		"trailing":    reClearCRC([]byte{FormatVersion, 1, 7, 1, 3, 9, 0, 0, 0, 0}),
	} {
		_, err := decodeClearRecord(b, 0)
		require.ErrorIs(t, err, ErrCorrupt, name)
	}
}

// reClearCRC rewrites the trailing checksum of a clear record.
func reClearCRC(b []byte) []byte {
	body := b[:len(b)-4]
	return append(append([]byte(nil), body...), le32(crc32c(body))...)
}

func le32(v uint32) []byte { return []byte{byte(v), byte(v >> 8), byte(v >> 16), byte(v >> 24)} }

func FuzzDecodeClear(f *testing.F) {
	f.Add(appendClearRecord(nil, []clearSet{{seq: 7, slots: []uint16{0, 5}}, {seq: 9, slots: []uint16{1}}}), uint64(10))
	f.Fuzz(func(t *testing.T, b []byte, seq uint64) {
		sets, err := decodeClearRecord(b, seq)
		if err == nil {
			again, err := decodeClearRecord(appendClearRecord(nil, sets), seq)
			if err != nil || len(again) != len(sets) {
				t.Fatalf("clear record round trip: %v", err)
			}
		}
		// Also reach the structural checks behind the checksum.
		if len(b) >= 6 {
			_, _ = decodeClearRecord(reClearCRC(b), seq)
		}
	})
}
