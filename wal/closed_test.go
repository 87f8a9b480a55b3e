package wal

import (
	"context"
	"fmt"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/hourglassmq/hourglass/store"
	"github.com/stretchr/testify/require"
)

// TestCleanCloseRefusesDamagedLog: after a clean Close, flipping a byte in,
// truncating or deleting the newest write-ahead log must not pass unnoticed.
// Open either refuses with an error wrapping ErrCorrupt (leaving the
// directory as it found it) or holds exactly what was acknowledged; it never
// opens with messages missing, resolved ones back or dead letters gone.
func TestCleanCloseRefusesDamagedLog(t *testing.T) {
	ctx := context.Background()
	mem := vfs.NewMem()
	// No flush: everything acknowledged lives in the WAL when Close runs.
	s, want := populated(t, mem, seed(t), 60)
	require.NoError(t, s.Close())
	log := liveLog(t, mem, storeDir)
	size := len(readAll(t, mem, storeDir+"/"+log))
	damages := map[string]func(fs vfs.FS){
		"delete": func(fs vfs.FS) { require.NoError(t, fs.Remove(storeDir+"/"+log)) },
	}
	for _, off := range []int{0, size / 3, size / 2, size - 1} {
		damages[fmt.Sprintf("flip@%d", off)] = func(fs vfs.FS) { flipByte(t, fs, storeDir+"/"+log, off) }
	}
	for _, n := range []int{0, size / 2, size - 1} {
		damages[fmt.Sprintf("truncate@%d", n)] = func(fs vfs.FS) { truncateFile(t, fs, storeDir+"/"+log, n) }
	}
	for name, damage := range damages {
		t.Run(name, func(t *testing.T) {
			fs := copyStore(t, mem, storeDir)
			damage(fs)
			before := dirBytes(t, fs, storeDir)
			s, err := Open(ctx, testOptions(fs, 0))
			if err != nil {
				require.ErrorIs(t, err, ErrCorrupt)
				require.Contains(t, err.Error(), log, "the error names the damaged file")
				requireDirUnchanged(t, fs, storeDir, before, "a refused Open must write nothing")
				t.Logf("refused: %v", err)
				return
			}
			defer s.Close()
			requireState(t, want, s)
			_, err = s.Append(ctx, []store.Message{msgAt(0, 0, "after")})
			require.NoError(t, err)
		})
	}
}
