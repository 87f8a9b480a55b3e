package wal

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"strings"
	"testing"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/hourglassmq/hourglass/store"
	"github.com/stretchr/testify/require"
)

// closedStore returns a closed store that holds packed blocks, time-keyspace
// messages, idempotency keys and dead letters, and the model of it.
func closedStore(t *testing.T) (*vfs.MemFS, *model) {
	t.Helper()
	mem := vfs.NewMem()
	s, want := populated(t, mem, seed(t), 150, 50, 100)
	require.NoError(t, s.Close())
	return mem, want
}

// TestCheckReportsCleanStore: Check of a healthy store finds no problem,
// counts what the model holds, and writes nothing (not even a LOCK file).
func TestCheckReportsCleanStore(t *testing.T) {
	ctx := context.Background()
	mem, want := closedStore(t)
	require.NoError(t, mem.Remove(storeDir+"/LOCK"))
	before := dirBytes(t, mem, storeDir)
	rep, err := Check(ctx, storeDir, mem)
	require.NoError(t, err, "%s", rep)
	requireDirUnchanged(t, mem, storeDir, before, "Check must not write")
	require.True(t, rep.CleanClose)
	require.Equal(t, 2, rep.Shards)
	var pending int64
	for _, p := range rep.Pending {
		pending += p
	}
	require.Equal(t, int64(len(want.pending)), pending)
	require.Equal(t, int64(len(want.dead)), rep.Dead)
	require.Positive(t, rep.Blocks)
	require.Positive(t, rep.Timed)
	require.Positive(t, rep.Keys)
	require.Contains(t, rep.String(), "no problems")

	// Without the clean-close record (as after a crash) the keys still check.
	require.NoError(t, mem.Remove(storeDir+"/"+cleanCloseFile))
	rep, err = Check(ctx, storeDir, mem)
	require.NoError(t, err, "%s", rep)
	require.False(t, rep.CleanClose)
}

// TestCheckRefusesAnOpenStore: Check reads a closed store; one that is open
// is reported as locked, not as damaged.
func TestCheckRefusesAnOpenStore(t *testing.T) {
	mem := vfs.NewMem()
	s := openTest(t, testOptions(mem, 1))
	defer s.Close()
	_, err := Check(context.Background(), storeDir, mem)
	require.ErrorIs(t, err, ErrLocked)
	require.NotErrorIs(t, err, ErrCorrupt)
}

// TestCheckFindsFileDamage: after a clean close, a changed file is reported
// against the clean-close record.
func TestCheckFindsFileDamage(t *testing.T) {
	mem, _ := closedStore(t)
	sst := (&dirState{names: mustList(t, mem)}).kinds(fileTable)[0]
	flipByte(t, mem, storeDir+"/"+sst, 10)
	rep, err := Check(context.Background(), storeDir, mem)
	require.ErrorIs(t, err, ErrCorrupt)
	require.Contains(t, rep.String(), sst)
}

// rawKeys returns the store's keys by keyspace tag.
func rawKeys(t *testing.T, fs vfs.FS) map[byte][][]byte {
	t.Helper()
	out := map[byte][][]byte{}
	withRaw(t, fs, func(db *pebble.DB) {
		it, err := db.NewIter(nil)
		require.NoError(t, err)
		for ok := it.First(); ok; ok = it.Next() {
			out[it.Key()[0]] = append(out[it.Key()[0]], bytes.Clone(it.Key()))
		}
		require.NoError(t, it.Close())
	})
	return out
}

// withRaw opens the store's Pebble directly, as another tool (or a bug)
// would, and hands it to f.
func withRaw(t *testing.T, fs vfs.FS, f func(db *pebble.DB)) {
	t.Helper()
	db, err := pebble.Open(storeDir, &pebble.Options{FS: fs, FormatMajorVersion: PebbleFormat, Logger: pebbleLogger{&Store{log: quietLogger()}}})
	require.NoError(t, err)
	f(db)
	require.NoError(t, db.Close())
}

func rawGet(t *testing.T, db *pebble.DB, key []byte) []byte {
	t.Helper()
	v, closer, err := db.Get(key)
	require.NoError(t, err)
	defer closer.Close()
	return bytes.Clone(v)
}

// TestCheckFindsBrokenInvariants breaks one invariant at a time by writing
// Pebble directly, and checks that Check names it. The clean-close record
// is removed first, so the keys are what is checked.
func TestCheckFindsBrokenInvariants(t *testing.T) {
	ctx := context.Background()
	base, _ := closedStore(t)
	require.NoError(t, base.Remove(storeDir+"/"+cleanCloseFile))
	keys := rawKeys(t, base)
	for _, tag := range []byte{tagBlock, tagTime, tagIndex, tagKey, tagDead} {
		require.NotEmpty(t, keys[tag], "the fixture lacks keyspace %#x", tag)
	}
	firstSummary := keys[tagBlock][0]
	require.Equal(t, byte(kindSummary), firstSummary[10])
	firstBlock := keys[tagBlock][1]
	timeKey0 := keys[tagTime][0]
	_, timedID, _ := decodeTimeKey(timeKey0)
	deadKey0 := keys[tagDead][0]
	// A pending packed message: the first live slot of the first block.
	var pendingID store.ID
	withRaw(t, base, func(db *pebble.DB) {
		sum, err := decodeSummary(rawGet(t, db, firstSummary))
		require.NoError(t, err)
		for slot := 0; pendingID == 0; slot++ {
			if sum.isLive(slot) {
				pendingID = makeStoreID(int(firstSummary[1]), binary.BigEndian.Uint64(firstSummary[2:10]), slot)
			}
		}
	})

	for _, tc := range []struct {
		name    string
		corrupt func(t *testing.T, db *pebble.DB)
		want    string
	}{
		{"summary without its block", func(t *testing.T, db *pebble.DB) {
			require.NoError(t, db.Delete(firstBlock, pebble.Sync))
		}, "summary without a block record"},
		{"block without its summary", func(t *testing.T, db *pebble.DB) {
			require.NoError(t, db.Delete(firstSummary, pebble.Sync))
		}, "block record without a summary"},
		{"emptied block kept", func(t *testing.T, db *pebble.DB) {
			sum, err := decodeSummary(rawGet(t, db, firstSummary))
			require.NoError(t, err)
			for i := range sum.bits {
				sum.bits[i] = 0
			}
			sum.live = 0
			require.NoError(t, db.Set(firstSummary, sum.encode(), pebble.Sync))
		}, "no live slot"},
		{"live count disagrees with bitmap", func(t *testing.T, db *pebble.DB) {
			v := rawGet(t, db, firstSummary)
			sum, err := decodeSummary(v)
			require.NoError(t, err)
			sum.live++
			require.NoError(t, db.Set(firstSummary, sum.encode(), pebble.Sync))
		}, "live count disagrees with bitmap"},
		{"index names a missing message", func(t *testing.T, db *pebble.DB) {
			require.NoError(t, db.Delete(timeKey0, pebble.Sync))
		}, "names no message in the time keyspace"},
		{"message without index", func(t *testing.T, db *pebble.DB) {
			require.NoError(t, db.Delete(idKey(tagIndex, timedID), pebble.Sync))
		}, "no index entry names it"},
		{"key names nothing", func(t *testing.T, db *pebble.DB) {
			require.NoError(t, db.Set(idemKey("ghost"), binary.BigEndian.AppendUint64(nil, uint64(timedID)), pebble.Sync))
		}, "neither pending nor a dead letter"},
		{"keyed message missing from the key index", func(t *testing.T, db *pebble.DB) {
			require.NoError(t, db.Delete(keys[tagKey][0], pebble.Sync))
		}, "missing from the key index"},
		{"dead letter also pending", func(t *testing.T, db *pebble.DB) {
			d := rawGet(t, db, deadKey0)
			require.NoError(t, db.Set(idKey(tagDead, timedID), d, pebble.Sync))
		}, "also pending"},
		{"sequence out of range", func(t *testing.T, db *pebble.DB) {
			k := blockKey(0, maxSeq, kindSummary)
			require.NoError(t, db.Set(k, rawGet(t, db, firstSummary), pebble.Sync))
		}, "out of range"},
		{"message decodes badly", func(t *testing.T, db *pebble.DB) {
			require.NoError(t, db.Set(timeKey0, []byte{0xff}, pebble.Sync))
		}, "corrupt message record"},
		{"meta version", func(t *testing.T, db *pebble.DB) {
			meta := encodeMeta(2)
			binary.LittleEndian.PutUint32(meta[4:], FormatVersion+1)
			require.NoError(t, db.Set(keyMeta, meta, pebble.Sync))
		}, "format version 3"},
		{"unknown keyspace", func(t *testing.T, db *pebble.DB) {
			require.NoError(t, db.Set([]byte{0x42, 1}, nil, pebble.Sync))
		}, "unknown keyspace tag"},
		{"packed message also dead", func(t *testing.T, db *pebble.DB) {
			d := rawGet(t, db, deadKey0)
			require.NoError(t, db.Set(idKey(tagDead, pendingID), d, pebble.Sync))
		}, "also pending in its packed block"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fs := copyStore(t, base, storeDir)
			withRaw(t, fs, func(db *pebble.DB) { tc.corrupt(t, db) })
			rep, err := Check(ctx, storeDir, fs)
			require.ErrorIs(t, err, ErrCorrupt)
			require.Contains(t, rep.String(), tc.want, "report:\n%s", rep)
			t.Logf("%v", err)
		})
	}
}

// TestStoreCheckCountsMatchCounters: the oracle the other tests use checks
// the store's in-memory counters against its keys too.
func TestStoreCheckCountsMatchCounters(t *testing.T) {
	mem := vfs.NewMem()
	s, _ := populated(t, mem, seed(t), 40)
	defer s.Close()
	requireCheck(t, s)
	s.statsMu.Lock()
	s.dead++
	s.statsMu.Unlock()
	rep, err := s.check(context.Background())
	require.ErrorIs(t, err, ErrCorrupt)
	require.True(t, strings.Contains(rep.String(), "counters"), "%s", rep)
	s.statsMu.Lock()
	s.dead--
	s.statsMu.Unlock()
}

// TestCheckReportsDamagedBlobFiles: Check of a store whose blob file is
// missing, cut short or has a damaged footer reports it, naming the file,
// with or without the clean-close record; it never lets Pebble read such a
// file (Pebble v2.1.7 panics on one: blobcheck.go).
func TestCheckReportsDamagedBlobFiles(t *testing.T) {
	ctx := context.Background()
	mem, _ := closedStore(t)
	blobs := (&dirState{names: mustList(t, mem)}).kinds(fileBlob)
	require.NotEmpty(t, blobs, "the store holds no blob file")
	name := blobs[0]
	size := len(readAll(t, mem, storeDir+"/"+name))
	for _, d := range []damage{
		{name: "delete", apply: func(t testing.TB, fs vfs.FS, p string) { require.NoError(t, fs.Remove(p)) }},
		{name: "truncate", apply: func(t testing.TB, fs vfs.FS, p string) { truncateFile(t, fs, p, size-1) }},
		{name: "flip footer", apply: func(t testing.TB, fs vfs.FS, p string) { flipByte(t, fs, p, size-1) }},
	} {
		for _, clean := range []bool{true, false} {
			t.Run(fmt.Sprintf("%s clean=%v", d.name, clean), func(t *testing.T) {
				fs := copyStore(t, mem, storeDir)
				if !clean {
					require.NoError(t, fs.Remove(storeDir+"/"+cleanCloseFile))
				}
				d.apply(t, fs, storeDir+"/"+name)
				rep, err := Check(ctx, storeDir, fs)
				require.ErrorIs(t, err, ErrCorrupt, "%s", rep)
				require.Contains(t, rep.String(), name)
			})
		}
	}
}
