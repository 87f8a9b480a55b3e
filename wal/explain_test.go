package wal

import (
	"context"
	"fmt"
	"testing"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/stretchr/testify/require"
)

// TestLockedStoreSaysAnotherProcessHasIt: a second Open of a store that is
// open gets ErrLocked and an error that says so, not Pebble's "resource
// temporarily unavailable", on the in-memory filesystem and on the real one
// (where the lock is an flock on LOCK).
func TestLockedStoreSaysAnotherProcessHasIt(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name string
		fs   vfs.FS
		dir  string
	}{
		{"mem", vfs.NewMem(), storeDir},
		{"disk", vfs.Default, t.TempDir()},
	} {
		t.Run(tc.name, func(t *testing.T) {
			opts := testOptions(tc.fs, 1)
			opts.Dir = tc.dir
			s := openTest(t, opts)
			defer s.Close()
			_, err := Open(ctx, opts)
			require.ErrorIs(t, err, ErrLocked)
			require.NotErrorIs(t, err, ErrCorrupt)
			require.Contains(t, err.Error(), "another process")
			require.Contains(t, err.Error(), "has this store open")
			t.Logf("%v", err)
		})
	}
}

// crashedStore returns a crash clone of a populated store, flushed once so
// it holds sstables and blob files besides its log, and its listing.
func crashedStore(t *testing.T) (*vfs.MemFS, *dirState) {
	t.Helper()
	mem := vfs.NewCrashableMem()
	s, _ := populated(t, mem, seed(t), 80, 40)
	crashed := mem.CrashClone(vfs.CrashCloneCfg{})
	require.NoError(t, s.Close())
	st, err := readDir(crashed, storeDir)
	require.NoError(t, err)
	require.NotEmpty(t, st.kinds(fileBlob), "the store holds no blob file")
	return crashed, st
}

// TestPebbleErrorsSayWhatHappened damages a store that crashed (so no
// clean-close record speaks first) in ways Pebble reports in terms of its
// internals, and checks that Open's error names the file, says what is
// wrong with it and what to do, and wraps ErrCorrupt.
func TestPebbleErrorsSayWhatHappened(t *testing.T) {
	ctx := context.Background()
	crashed, st := crashedStore(t)
	sst := listedTable(t, crashed)
	options := st.kinds(fileOptions)[0]
	blob := st.kinds(fileBlob)[0]
	blobSize := len(readAll(t, crashed, storeDir+"/"+blob))
	for _, tc := range []struct {
		name   string
		damage func(t *testing.T, fs vfs.FS)
		want   []string
	}{
		{"sstable deleted", func(t *testing.T, fs vfs.FS) {
			require.NoError(t, fs.Remove(storeDir+"/"+sst))
		}, []string{sst, "the MANIFEST lists this sstable but the directory does not hold it", "restore"}},
		{"sstable truncated", func(t *testing.T, fs vfs.FS) {
			truncateFile(t, fs, storeDir+"/"+sst, 100)
		}, []string{sst, "size differs from the size the MANIFEST records", "restore"}},
		{"sstable corrupt", func(t *testing.T, fs vfs.FS) {
			flipByte(t, fs, storeDir+"/"+sst, 0)
		}, []string{sst, "this sstable is corrupt", "restore"}},
		{"blob file deleted", func(t *testing.T, fs vfs.FS) {
			require.NoError(t, fs.Remove(storeDir+"/"+blob))
		}, []string{blob, "the MANIFEST lists this blob file but the directory does not hold it", "restore"}},
		{"blob file truncated", func(t *testing.T, fs vfs.FS) {
			truncateFile(t, fs, storeDir+"/"+blob, blobSize/2)
		}, []string{blob, fmt.Sprintf("this blob file is %d bytes, and the MANIFEST records %d", blobSize/2, blobSize), "restore"}},
		{"blob file footer corrupt", func(t *testing.T, fs vfs.FS) {
			flipByte(t, fs, storeDir+"/"+blob, blobSize-1)
		}, []string{blob, "this blob file is corrupt", "restore"}},
		{"manifest emptied", func(t *testing.T, fs vfs.FS) {
			truncateFile(t, fs, storeDir+"/"+st.manifest, 0)
		}, []string{st.manifest, "the MANIFEST (the list of the store's files) is damaged", "restore"}},
		{"options damaged", func(t *testing.T, fs vfs.FS) {
			flipByte(t, fs, storeDir+"/"+options, 0)
		}, []string{"OPTIONS", "settings only, no data: delete it"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fs := copyStore(t, crashed, storeDir)
			tc.damage(t, fs)
			_, err := Open(ctx, testOptions(fs, 0))
			require.ErrorIs(t, err, ErrCorrupt)
			for _, w := range tc.want {
				require.Contains(t, err.Error(), w)
			}
			t.Logf("%v", err)
		})
	}
}

// listedTable returns the name of an sstable that the store's MANIFEST
// lists (read by a read-only Pebble open of a copy). The directory can also
// hold sstables the MANIFEST no longer lists (their deletion was not synced
// before the crash): damage to one of those harms nothing, and Open rightly
// succeeds.
func listedTable(t *testing.T, fs vfs.FS) string {
	t.Helper()
	po := &pebble.Options{FS: copyStore(t, fs, storeDir), FormatMajorVersion: PebbleFormat, ReadOnly: true}
	db, err := pebble.Open(storeDir, po)
	require.NoError(t, err)
	defer func() { require.NoError(t, db.Close()) }()
	levels, err := db.SSTables()
	require.NoError(t, err)
	for _, level := range levels {
		for _, info := range level {
			return fmt.Sprintf("%s.sst", info.BackingSSTNum)
		}
	}
	t.Fatal("the MANIFEST lists no sstable")
	return ""
}

// TestDamagedBlobFoundByAReadNamesIt: damage inside a blob file (past its
// footer, which Open checks) is found by the first read of a value in it;
// Pebble's error names only a file number, and the store's error names the
// blob file, says it is corrupt, and fails the store.
func TestDamagedBlobFoundByAReadNamesIt(t *testing.T) {
	ctx := context.Background()
	crashed, st := crashedStore(t)
	blob := st.kinds(fileBlob)[0]
	flipByte(t, crashed, storeDir+"/"+blob, len(readAll(t, crashed, storeDir+"/"+blob))/3)
	s, err := Open(ctx, testOptions(crashed, 0))
	require.NoError(t, err, "only a read of the damaged block finds this")
	defer s.Close()
	_, err = readState(s)
	require.ErrorIs(t, err, ErrCorrupt)
	require.Contains(t, err.Error(), blob+": this blob file is corrupt")
	s.waitVerify()
	require.ErrorIs(t, s.Err(), ErrFailed)
}
