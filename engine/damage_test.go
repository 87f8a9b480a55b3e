package engine

import (
	"context"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hourglassmq/hourglass/wal"
	"github.com/stretchr/testify/require"
)

// TestDamageFoundAfterOpenFailsTheEngine: after a clean close the store
// checks the sstables' CRCs in the background, once Open has returned
// (wal/verify.go). Damage found there, or by a read before it, must reach
// the engine's user: Engine.Err wraps wal.ErrCorrupt, Events.StoreFailed is
// called, and work is refused. The damaged byte sits in the middle of the
// biggest data file (the blob file holding the messages, each over the
// store's 1 KiB separation threshold), among far-future messages that
// neither the store's Open nor the first window reads.
func TestDamageFoundAfterOpenFailsTheEngine(t *testing.T) {
	dir := t.TempDir()
	opts := Options{Dir: dir, Shards: 1, Logger: quietLogger(), Queues: []Queue{{Name: "q", Handler: func(context.Context, *Delivery) error { return nil }}}}
	e, err := Open(bg, opts)
	require.NoError(t, err)
	r := rand.New(rand.NewPCG(1, 2))
	var msgs []Message
	for i := range 2000 {
		payload := make([]byte, 1000) // incompressible, so the sstable is mostly messages
		for k := range payload {
			payload[k] = byte(r.Uint32())
		}
		msgs = append(msgs, Message{Dest: "local://q", Due: time.Now().Add(24*time.Hour + time.Duration(i)*time.Second), Payload: payload})
	}
	for len(msgs) > 0 {
		n := min(len(msgs), 500)
		_, err = e.ScheduleBatch(bg, msgs[:n])
		require.NoError(t, err)
		msgs = msgs[n:]
	}
	require.NoError(t, e.Close()) // clean: flushes the memtable into an sstable

	var biggest string
	var size int64
	require.NoError(t, filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(p, ".sst") && !strings.HasSuffix(p, ".blob") {
			return err
		}
		info, err := d.Info()
		if err == nil && info.Size() > size {
			biggest, size = p, info.Size()
		}
		return err
	}))
	t.Log("damaging", filepath.Base(biggest))
	require.Greater(t, size, int64(1<<20), "the messages are not in a data file")
	b, err := os.ReadFile(biggest)
	require.NoError(t, err)
	b[len(b)/2] ^= 0x40
	require.NoError(t, os.WriteFile(biggest, b, 0o644))

	failed := make(chan error, 1)
	opts.Events.StoreFailed = func(err error) {
		select {
		case failed <- err:
		default:
		}
	}
	e, err = Open(bg, opts)
	require.NoError(t, err, "only the file's CRC, checked after Open, or a read of that block finds this")
	defer func() { _ = e.Close() }()
	select {
	case err := <-failed:
		require.ErrorIs(t, err, wal.ErrCorrupt)
	case <-time.After(30 * time.Second):
		t.Fatal("the damage was not reported through Events.StoreFailed")
	}
	require.ErrorIs(t, e.Err(), ErrStore)
	require.ErrorIs(t, e.Err(), wal.ErrCorrupt)
	_, err = e.Schedule(bg, Message{Dest: "local://q", Due: time.Now().Add(time.Hour)})
	require.ErrorIs(t, err, ErrStore, "work is refused once the store failed")
}
