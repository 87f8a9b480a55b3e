package wal

import (
	"context"
	"path"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/cockroachdb/pebble/v2/vfs/errorfs"
	"github.com/hourglassmq/hourglass/store"
	"github.com/stretchr/testify/require"
)

// TestRefusedOpenWritesNothing damages a store in ways Pebble's own Open
// answers by writing (a missing marker.manifest.* makes it create a fresh
// database, rewrite the MANIFEST and delete the real .sst files) and checks
// that Open refuses before anything is written: the directory is byte for
// byte what it was, and the error wraps ErrCorrupt and names what is missing.
func TestRefusedOpenWritesNothing(t *testing.T) {
	ctx := context.Background()
	mem := vfs.NewMem()
	// Several flushes, so the data lives in sstables and the logs that held
	// it are gone.
	s, _ := populated(t, mem, seed(t), 80, 20, 40, 60)
	require.NoError(t, s.Close())
	require.NotEmpty(t, (&dirState{names: mustList(t, mem)}).kinds(fileTable))

	remove := func(pattern string) func(t *testing.T, fs vfs.FS) string {
		return func(t *testing.T, fs vfs.FS) string {
			for _, n := range mustList(t, fs) {
				if matched, _ := path.Match(pattern, n); matched {
					require.NoError(t, fs.Remove(storeDir+"/"+n))
					return n
				}
			}
			t.Fatalf("no file matches %s", pattern)
			return ""
		}
	}
	for _, tc := range []struct {
		name   string
		damage func(t *testing.T, fs vfs.FS) string
		want   string
	}{
		{"manifest marker missing", remove("marker.manifest.*"), "marker.manifest"},
		{"format marker missing", remove("marker.format-version.*"), "marker.format-version"},
		{"manifest missing", remove("MANIFEST-*"), "MANIFEST"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fs := copyStore(t, mem, storeDir)
			tc.damage(t, fs)
			before := dirBytes(t, fs, storeDir)
			s, err := Open(ctx, testOptions(fs, 0))
			if s != nil {
				_ = s.Close()
			}
			requireDirUnchanged(t, fs, storeDir, before, "a refused Open must write nothing")
			require.ErrorIs(t, err, ErrCorrupt)
			require.Contains(t, err.Error(), tc.want)
			t.Logf("refused: %v", err)
		})
	}

	t.Run("filesystem root", func(t *testing.T) {
		fs := vfs.NewMem()
		require.NoError(t, fs.MkdirAll(storeDir+"/lost+found", 0o755))
		s, err := Open(ctx, testOptions(fs, 2))
		require.NoError(t, err, "a new filesystem's lost+found is not someone else's data")
		require.NoError(t, s.Close())
	})

	t.Run("foreign files", func(t *testing.T) {
		fs := vfs.NewMem()
		require.NoError(t, fs.MkdirAll(storeDir, 0o755))
		writeFile(t, fs, storeDir+"/notes.txt", []byte("mine"))
		before := dirBytes(t, fs, storeDir)
		s, err := Open(ctx, testOptions(fs, 2))
		if s != nil {
			_ = s.Close()
		}
		requireDirUnchanged(t, fs, storeDir, before, "Open must not create a store among foreign files")
		require.ErrorIs(t, err, ErrInvalid)
		require.Contains(t, err.Error(), "notes.txt")
	})
}

// cloneAtEveryWrite wraps mem in a filesystem that adds a crash clone of
// mem (its synced state) to clones before every write.
func cloneAtEveryWrite(mem *vfs.MemFS) (vfs.FS, *[]*vfs.MemFS) {
	clones := new([]*vfs.MemFS)
	inj := errorfs.InjectorFunc(func(op errorfs.Op) error {
		if op.Kind.ReadOrWrite() == errorfs.OpIsWrite {
			*clones = append(*clones, mem.CrashClone(vfs.CrashCloneCfg{}))
		}
		return nil
	})
	return errorfs.Wrap(mem, inj), clones
}

func mustList(t testing.TB, fs vfs.FS) []string {
	t.Helper()
	names, err := fs.List(storeDir)
	require.NoError(t, err)
	return names
}

// TestCrashDuringCreationOpens: a crash at any write while Open creates a
// store leaves, at worst, Pebble's first files and no data. Such a
// directory is not refused as incomplete: Open finishes creating the store.
func TestCrashDuringCreationOpens(t *testing.T) {
	ctx := context.Background()
	mem := vfs.NewCrashableMem()
	fs, clones := cloneAtEveryWrite(mem)
	s := openTest(t, testOptions(fs, 2))
	require.NoError(t, s.Close())
	require.NotEmpty(t, *clones)
	for i, fs := range *clones {
		s, err := Open(ctx, testOptions(fs, 2))
		require.NoError(t, err, "crash at write %d of %d", i, len(*clones))
		requireCheck(t, s)
		_, err = s.Append(ctx, []store.Message{msgAt(0, 0, "x")})
		require.NoError(t, err)
		require.NoError(t, s.Close())
	}
	t.Logf("%d crash points", len(*clones))
}

// TestWriterDamageFailsTheStore: damage the writer meets while it validates
// a request (here an idempotency-key record that does not decode, though
// Pebble's checksums hold) fails the store at once, as damage a read meets
// does: the call returns ErrCorrupt, Err turns sticky and store.Events.Failed
// is called, so the engine learns of it (Engine.Err, Events.StoreFailed)
// without waiting for the background verification (verify.go), which after
// a clean close reads only the sstables' CRCs.
func TestWriterDamageFailsTheStore(t *testing.T) {
	ctx := context.Background()
	failed := make(chan error, 1)
	opts := testOptions(vfs.NewMem(), 1)
	opts.events.Failed = func(err error) { failed <- err }
	s := openTest(t, opts)
	m := msgAt(0, time.Hour, "a")
	m.Key = "k"
	_, err := s.Append(ctx, []store.Message{m})
	require.NoError(t, err)
	// Another group, so the writer's overlay of recent groups no longer
	// holds the key and it reads the record.
	_, err = s.Append(ctx, []store.Message{msgAt(0, time.Hour, "b")})
	require.NoError(t, err)
	require.NoError(t, s.db.Set(idemKey("k"), []byte{0xff, 1, 2}, pebble.Sync))

	_, err = s.Append(ctx, []store.Message{m})
	require.ErrorIs(t, err, ErrCorrupt)
	require.ErrorIs(t, s.Err(), ErrFailed, "the store goes on after its writer met damage")
	require.ErrorIs(t, s.Err(), ErrCorrupt)
	select {
	case err := <-failed:
		require.ErrorIs(t, err, ErrCorrupt)
	case <-time.After(10 * time.Second):
		t.Fatal("store.Events.Failed was not called")
	}
	_, err = s.Append(ctx, []store.Message{msgAt(0, time.Hour, "c")})
	require.ErrorIs(t, err, ErrFailed)
	require.ErrorIs(t, s.Close(), ErrFailed)
}
