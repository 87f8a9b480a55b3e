package wal

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"math/rand/v2"
	"os"
	"testing"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/hourglassmq/hourglass/store"
	"github.com/stretchr/testify/require"
)

const goldenDir = "testdata/golden-v1"

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

// TestGoldenFixture opens the version-1 store kept in testdata (written by an
// earlier build with -wal.update) and checks its contents: a build that can
// no longer read the format it shipped fails here.
func TestGoldenFixture(t *testing.T) {
	ctx := context.Background()
	if *flagUpdate {
		require.NoError(t, os.RemoveAll(goldenDir))
		opts := testOptions(vfs.Default, 2)
		opts.Dir = goldenDir
		s := openTest(t, opts)
		h := &harness{t: t, r: rand.New(rand.NewPCG(42, 42)), s: s, m: newModel(), shards: 2}
		for i := 0; i < 60; i++ {
			_, err := h.step(ctx)
			require.NoError(t, err)
			if i == 30 {
				require.NoError(t, s.db.Flush())
			}
		}
		require.NoError(t, s.Close())
		// LOCK is Pebble's lock file: empty, and created by every Open
		// (pebble.LockDirectory), so the fixture does not keep it.
		require.NoError(t, os.Remove(goldenDir+"/LOCK"))
		b, err := json.MarshalIndent(toGolden(h.m), "", " ")
		require.NoError(t, err)
		require.NoError(t, os.WriteFile(goldenDir+".json", b, 0o644))
	}
	b, err := os.ReadFile(goldenDir + ".json")
	require.NoError(t, err)
	var want goldenState
	require.NoError(t, json.Unmarshal(b, &want))
	_, err = os.Stat(goldenDir + "/LOCK")
	require.True(t, os.IsNotExist(err), "the fixture keeps no LOCK file: Pebble creates it")
	// Open a copy so the fixture is never modified.
	mem := vfs.NewMem()
	_, err = vfs.Clone(vfs.Default, mem, goldenDir, "/store")
	require.NoError(t, err)
	s := openTest(t, testOptions(mem, 0))
	defer s.Close()
	require.Equal(t, 2, s.Shards())
	requireCheck(t, s)
	got := toGolden(storeState(t, s))
	require.Equal(t, want, got)
	require.NotEmpty(t, want.Pending)
	require.NotEmpty(t, want.Dead)
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
	require.Contains(t, err.Error(), "format version 2; this build reads version 1")

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
