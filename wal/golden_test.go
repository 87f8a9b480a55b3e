package wal

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"testing"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/hourglassmq/hourglass/store"
	"github.com/stretchr/testify/require"
)

// goldenDir is the golden store of format version v under testdata.
func goldenDir(v int) string { return fmt.Sprintf("testdata/golden-v%d", v) }

// goldenState is the JSON form of a store's contents kept beside the fixture.
type goldenState struct {
	Pending map[string]store.Message    `json:"pending"`
	Dead    map[string]store.DeadLetter `json:"dead"`
}

func toGolden(m *model) goldenState {
	m = normalize(m)
	g := goldenState{Pending: map[string]store.Message{}, Dead: map[string]store.DeadLetter{}}
	for id, msg := range m.pending {
		g.Pending[id.String()] = msg
	}
	for id, d := range m.dead {
		g.Dead[id.String()] = d
	}
	return g
}

// writeGolden writes the golden store of FormatVersion (with -wal.update):
// a random workload, as it would be found after a crash (so it keeps
// clear records of the resolve log, which Close would checkpoint away).
func writeGolden(t *testing.T) {
	ctx := context.Background()
	dir := goldenDir(FormatVersion)
	mem := vfs.NewCrashableMem()
	s := openTest(t, testOptions(mem, 2))
	h := &harness{t: t, r: rand.New(rand.NewPCG(42, 42)), s: s, m: newModel(), shards: 2}
	for i := 0; i < 60; i++ {
		_, err := h.step(ctx)
		require.NoError(t, err)
		if i == 30 {
			require.NoError(t, s.db.Flush())
		}
	}
	crashed := mem.CrashClone(vfs.CrashCloneCfg{})
	require.NoError(t, s.Close())
	require.NotEmpty(t, rawKeys(t, copyStore(t, crashed, storeDir))[tagClear], "the fixture holds no resolve log")
	require.NoError(t, os.RemoveAll(dir))
	_, err := vfs.Clone(crashed, vfs.Default, storeDir, dir)
	require.NoError(t, err)
	// LOCK is Pebble's lock file: empty, and created by every Open
	// (pebble.LockDirectory), so the fixture does not keep it.
	require.NoError(t, os.Remove(dir+"/LOCK"))
	b, err := json.MarshalIndent(toGolden(h.m), "", " ")
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(dir+".json", b, 0o644))
}

// TestGoldenFixture opens the golden store of every format version this
// build reads, kept in testdata (the current one written with -wal.update),
// and checks its contents: a build that can no longer read a format it
// shipped fails here. Version 1 was written before the clean-close record
// and version 2 as after a crash, so both open as after a crash. A
// version-1 store is migrated: it keeps working, and reopens as version 2.
func TestGoldenFixture(t *testing.T) {
	ctx := context.Background()
	if *flagUpdate {
		writeGolden(t)
	}
	for v := oldestFormatVersion; v <= FormatVersion; v++ {
		t.Run(fmt.Sprintf("v%d", v), func(t *testing.T) {
			dir := goldenDir(v)
			b, err := os.ReadFile(dir + ".json")
			require.NoError(t, err)
			var want goldenState
			require.NoError(t, json.Unmarshal(b, &want))
			_, err = os.Stat(dir + "/LOCK")
			require.True(t, os.IsNotExist(err), "the fixture keeps no LOCK file: Pebble creates it")
			// Open a copy so the fixture is never modified.
			mem := vfs.NewMem()
			_, err = vfs.Clone(vfs.Default, mem, dir, storeDir)
			require.NoError(t, err)
			s := openTest(t, testOptions(mem, 0))
			require.Equal(t, 2, s.Shards())
			requireCheck(t, s)
			got := storeState(t, s)
			require.Equal(t, want, toGolden(got))
			require.NotEmpty(t, want.Pending)
			require.NotEmpty(t, want.Dead)

			// It keeps working: resolve half of what is pending, reopen.
			var batch store.Batch
			for id := range got.pending {
				if len(batch.Done) < len(got.pending)/2 {
					batch.Done = append(batch.Done, store.Done{ID: id})
					delete(got.pending, id)
				}
			}
			_, err = s.Resolve(ctx, batch)
			require.NoError(t, err)
			require.NoError(t, s.Close())
			s = openTest(t, testOptions(mem, 0))
			defer s.Close()
			require.Equal(t, FormatVersion, s.metaVersion)
			requireCheck(t, s)
			require.Equal(t, toGolden(got).Pending, toGolden(storeState(t, s)).Pending)
		})
	}
}

// TestUnknownFormatVersion: a store written by a future format is refused
// with an error that names both versions.
func TestUnknownFormatVersion(t *testing.T) {
	ctx := context.Background()
	mem := vfs.NewMem()
	s := openTest(t, testOptions(mem, 2))
	meta := encodeMeta(2)
	binary.LittleEndian.PutUint32(meta[4:], FormatVersion+1)
	require.NoError(t, s.db.Set(keyMeta, meta, pebble.Sync))
	require.NoError(t, s.Close())
	_, err := Open(ctx, testOptions(mem, 0))
	require.ErrorIs(t, err, ErrUnsupportedVersion)
	require.Contains(t, err.Error(), "format version 3; this build reads versions 1 to 2")

	// Not a store of ours at all.
	mem = vfs.NewMem()
	po := &pebble.Options{FS: mem, FormatMajorVersion: PebbleFormat, Logger: pebbleLogger{&Store{log: quietLogger()}}}
	db, err := pebble.Open("/store", po)
	require.NoError(t, err)
	require.NoError(t, db.Set([]byte("foreign"), []byte("x"), pebble.Sync))
	require.NoError(t, db.Close())
	_, err = Open(ctx, testOptions(mem, 2))
	require.ErrorIs(t, err, ErrCorrupt)
	require.Contains(t, err.Error(), "no meta record")
}
