package wal

import (
	"bytes"
	"context"
	"io"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/stretchr/testify/require"
)

// Helpers for the damage and fault tests: byte-exact snapshots of a store
// directory, and the ways a file gets damaged.

const storeDir = "/store"

// dirBytes returns the name and content of every file in dir.
func dirBytes(t testing.TB, fs vfs.FS, dir string) map[string][]byte {
	t.Helper()
	names, err := fs.List(dir)
	require.NoError(t, err)
	out := make(map[string][]byte, len(names))
	for _, n := range names {
		out[n] = readAll(t, fs, fs.PathJoin(dir, n))
	}
	return out
}

func readAll(t testing.TB, fs vfs.FS, path string) []byte {
	t.Helper()
	f, err := fs.Open(path)
	require.NoError(t, err)
	defer f.Close()
	b, err := io.ReadAll(f)
	require.NoError(t, err)
	return b
}

// dirChanges lists how after differs from before: "+name" added, "-name"
// removed, "~name" changed.
func dirChanges(before, after map[string][]byte) []string {
	var out []string
	for n, b := range before {
		a, ok := after[n]
		switch {
		case !ok:
			out = append(out, "-"+n)
		case !bytes.Equal(a, b):
			out = append(out, "~"+n)
		}
	}
	for n := range after {
		if _, ok := before[n]; !ok {
			out = append(out, "+"+n)
		}
	}
	slices.Sort(out)
	return out
}

// requireDirUnchanged fails unless dir holds exactly the files of before.
func requireDirUnchanged(t testing.TB, fs vfs.FS, dir string, before map[string][]byte, msgAndArgs ...any) {
	t.Helper()
	require.Empty(t, dirChanges(before, dirBytes(t, fs, dir)), msgAndArgs...)
}

// copyStore returns a fresh in-memory filesystem holding a copy of dir.
func copyStore(t testing.TB, from vfs.FS, dir string) *vfs.MemFS {
	t.Helper()
	to := vfs.NewMem()
	_, err := vfs.Clone(from, to, dir, dir)
	require.NoError(t, err)
	return to
}

// writeFile replaces path's content with b.
func writeFile(t testing.TB, fs vfs.FS, path string, b []byte) {
	t.Helper()
	f, err := fs.Create(path, vfs.WriteCategoryUnspecified)
	require.NoError(t, err)
	_, err = f.Write(b)
	require.NoError(t, err)
	require.NoError(t, f.Sync())
	require.NoError(t, f.Close())
}

// flipByte inverts every bit of the byte at off.
func flipByte(t testing.TB, fs vfs.FS, path string, off int) {
	t.Helper()
	b := readAll(t, fs, path)
	b[off] ^= 0xff
	writeFile(t, fs, path, b)
}

// truncateFile cuts path to n bytes.
func truncateFile(t testing.TB, fs vfs.FS, path string, n int) {
	t.Helper()
	writeFile(t, fs, path, readAll(t, fs, path)[:n])
}

// liveLog returns the name of the newest write-ahead log in dir.
func liveLog(t testing.TB, fs vfs.FS, dir string) string {
	t.Helper()
	names, err := fs.List(dir)
	require.NoError(t, err)
	var logs []string
	for _, n := range names {
		if k, _ := classify(n); k == fileLog {
			logs = append(logs, n)
		}
	}
	require.NotEmpty(t, logs)
	slices.Sort(logs)
	return logs[len(logs)-1]
}

// populated runs steps random operations on a new store in fs, flushing
// Pebble's memtable at each step listed in flushAt, and returns the open
// store and the model of what it holds.
func populated(t testing.TB, fs vfs.FS, sd uint64, steps int, flushAt ...int) (*Store, *model) {
	t.Helper()
	s, models := populatedHistory(t, fs, sd, steps, flushAt...)
	return s, models[len(models)-1]
}

// populatedHistory is populated returning the model after every step:
// models[i] is the state after i operations.
func populatedHistory(t testing.TB, fs vfs.FS, sd uint64, steps int, flushAt ...int) (*Store, []*model) {
	t.Helper()
	return populatedWith(t, testOptions(fs, 2), sd, steps, flushAt...)
}

// populatedWith is populatedHistory on a new 2-shard store opened with opts.
func populatedWith(t testing.TB, opts Options, sd uint64, steps int, flushAt ...int) (*Store, []*model) {
	t.Helper()
	ctx := context.Background()
	s := openTest(t, opts)
	h := &harness{t: t, r: rand.New(rand.NewPCG(sd, 11)), s: s, m: newModel(), shards: 2}
	models := []*model{h.m}
	for i := 0; i < steps; i++ {
		m, err := h.step(ctx)
		require.NoError(t, err)
		models = append(models, m)
		if slices.Contains(flushAt, i) {
			require.NoError(t, s.db.Flush())
		}
	}
	return s, models
}
