package wal

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path"
	"strings"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/stretchr/testify/require"
)

// formatMarker returns the name of the store's format-version marker and
// the format it names.
func formatMarker(t testing.TB, fs vfs.FS) (string, uint64) {
	t.Helper()
	st, err := readDir(fs, storeDir)
	require.NoError(t, err)
	for _, n := range mustList(t, fs) {
		if strings.HasPrefix(n, "marker.format-version.") {
			var v uint64
			_, err := fmt.Sscanf(st.format, "%d", &v)
			require.NoError(t, err)
			return n, v
		}
	}
	t.Fatal("no format-version marker")
	return "", 0
}

// TestOlderPebbleFormatIsUpgraded: a store written before value separation
// (at olderPebbleFormat) opens with its exact contents and is at
// PebbleFormat from then on, whether it was left as after a crash (the
// golden-v1 fixture) or closed cleanly (golden-v2-closed-f20: the golden-v2
// store opened and closed by the build before value separation, 253fd63).
// A crash at any write of that Open, the ratchet included (Pebble moves its
// format marker one version at a time, so a crash part-way leaves a marker
// between the two), leaves a store that opens with the same contents and
// finishes the upgrade.
func TestOlderPebbleFormatIsUpgraded(t *testing.T) {
	for _, tc := range []struct {
		dir, want string
		clean     bool
	}{
		{goldenDir(1), goldenDir(1) + ".json", false},
		{"testdata/golden-v2-closed-f20", goldenDir(2) + ".json", true},
	} {
		t.Run(path.Base(tc.dir), func(t *testing.T) { upgradeOlderFormat(t, tc.dir, tc.want, tc.clean) })
	}
}

func upgradeOlderFormat(t *testing.T, dir, wantFile string, clean bool) {
	ctx := context.Background()
	b, err := os.ReadFile(wantFile)
	require.NoError(t, err)
	var want goldenState
	require.NoError(t, json.Unmarshal(b, &want))

	mem := vfs.NewCrashableMem()
	_, err = vfs.Clone(vfs.Default, mem, dir, storeDir, vfs.CloneSync)
	require.NoError(t, err)
	root, err := mem.OpenDir(path.Dir(storeDir)) // the crash clones keep the directory
	require.NoError(t, err)
	require.NoError(t, root.Sync())
	require.NoError(t, root.Close())
	_, v := formatMarker(t, mem)
	require.Equal(t, uint64(olderPebbleFormat), v, "the fixture was written before value separation")

	fs, clones := cloneAtEveryWrite(mem)
	s := openTest(t, testOptions(fs, 0))
	require.Equal(t, clean, s.recovery.CleanClose, "opened through the clean-close record")
	require.Equal(t, PebbleFormat, s.db.FormatMajorVersion())
	require.Equal(t, want, toGolden(storeState(t, s)))
	requireCheck(t, s)
	require.NoError(t, s.Close())
	_, v = formatMarker(t, mem)
	require.Equal(t, uint64(PebbleFormat), v)
	s = openTest(t, testOptions(mem, 0)) // and after its own clean close
	require.Equal(t, want, toGolden(storeState(t, s)))
	require.NoError(t, s.Close())

	between := 0
	for i, fs := range *clones {
		if _, v := formatMarker(t, fs); v > uint64(olderPebbleFormat) && v < uint64(PebbleFormat) {
			between++
		}
		s, err := Open(ctx, testOptions(fs, 0))
		require.NoError(t, err, "crash at write %d of %d", i, len(*clones))
		require.Equal(t, PebbleFormat, s.db.FormatMajorVersion(), "crash at write %d", i)
		require.Equal(t, want, toGolden(storeState(t, s)), "crash at write %d", i)
		require.NoError(t, s.Close())
	}
	require.Positive(t, between, "no crash point fell between two steps of the ratchet")
	t.Logf("%d crash points, %d with the marker between the formats", len(*clones), between)
}

// TestPebbleFormatOutsideTheRangeIsRefused: a store whose format marker is
// older than olderPebbleFormat or newer than PebbleFormat is refused with
// ErrUnsupportedVersion, naming the formats, and nothing is written.
func TestPebbleFormatOutsideTheRangeIsRefused(t *testing.T) {
	ctx := context.Background()
	mem := vfs.NewMem()
	s := openTest(t, testOptions(mem, 2))
	require.NoError(t, s.Close())
	for _, v := range []uint64{uint64(olderPebbleFormat) - 1, uint64(PebbleFormat) + 1} {
		t.Run(fmt.Sprint(v), func(t *testing.T) {
			fs := copyStore(t, mem, storeDir)
			name, _ := formatMarker(t, fs)
			renamed := strings.TrimSuffix(name, path.Ext(name)) + fmt.Sprintf(".%03d", v)
			require.NoError(t, fs.Rename(storeDir+"/"+name, storeDir+"/"+renamed))
			before := dirBytes(t, fs, storeDir)
			s, err := Open(ctx, testOptions(fs, 0))
			if s != nil {
				_ = s.Close()
			}
			require.ErrorIs(t, err, ErrUnsupportedVersion)
			require.Contains(t, err.Error(), fmt.Sprintf("opens %d to %d", olderPebbleFormat, PebbleFormat))
			requireDirUnchanged(t, fs, storeDir, before, "a refused Open must write nothing")
		})
	}
}
