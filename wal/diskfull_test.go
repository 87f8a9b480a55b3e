package wal

import (
	"context"
	"fmt"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/cockroachdb/pebble/v2/vfs/errorfs"
	"github.com/hourglassmq/hourglass/store"
	"github.com/stretchr/testify/require"
)

// fullDisk makes creating or writing an sstable fail with ENOSPC while it is
// full: a disk with room left in the preallocated log but none for a flush.
type fullDisk struct{ full atomic.Bool }

func (d *fullDisk) String() string { return "full-disk" }

func (d *fullDisk) MaybeError(op errorfs.Op) error {
	if !d.full.Load() || !strings.HasSuffix(op.Path, ".sst") {
		return nil
	}
	switch op.Kind {
	case errorfs.OpCreate, errorfs.OpFileWrite, errorfs.OpFileWriteAt:
		return &os.PathError{Op: "write", Path: op.Path, Err: syscall.ENOSPC}
	}
	return nil
}

// safetyNet bounds a test that would hang if the behaviour under test broke;
// the assertions never depend on it firing.
func safetyNet(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// TestOpenOnFullDiskFailsWithENOSPC: recovering after a crash flushes the
// replayed log, and Pebble retries a flush that fails forever. Open must
// return (at once, not when ctx ends) with an error that says the disk is
// full, and once space is freed the store opens with everything it had.
func TestOpenOnFullDiskFailsWithENOSPC(t *testing.T) {
	ctx := safetyNet(t)
	mem := vfs.NewCrashableMem()
	s, want := populated(t, mem, seed(t), 40)
	crashed := mem.CrashClone(vfs.CrashCloneCfg{})
	require.NoError(t, s.Close())

	disk := &fullDisk{}
	fs := errorfs.Wrap(crashed, disk)
	disk.full.Store(true)
	_, err := Open(ctx, testOptions(fs, 0))
	require.Error(t, err)
	require.NoError(t, ctx.Err(), "Open returned only because ctx ended")
	require.ErrorIs(t, err, syscall.ENOSPC)
	require.Contains(t, err.Error(), "disk full")
	t.Logf("refused: %v", err)

	// Space is freed: Open waits for the abandoned Pebble open to finish
	// and let go of the directory, then opens the store.
	disk.full.Store(false)
	s2, err := Open(ctx, testOptions(fs, 0))
	require.NoError(t, err)
	defer s2.Close()
	requireState(t, want, s2)
	requireCheck(t, s2)
}

// blockingDisk holds every sstable creation until released: a flush that
// takes as long as the test wants.
type blockingDisk struct {
	vfs.FS
	once    sync.Once
	entered chan struct{} // closed when the first creation waits
	release chan struct{}
}

func newBlockingDisk(fs vfs.FS) *blockingDisk {
	return &blockingDisk{FS: fs, entered: make(chan struct{}), release: make(chan struct{})}
}

func (d *blockingDisk) Create(name string, c vfs.DiskWriteCategory) (vfs.File, error) {
	if strings.HasSuffix(name, ".sst") {
		d.once.Do(func() { close(d.entered) })
		<-d.release
	}
	return d.FS.Create(name, c)
}

// TestOpenReturnsWhenCtxEnds: Open waits for Pebble's open only as long as
// the caller's ctx lasts; the abandoned open finishes in the background and
// a later Open waits for it.
func TestOpenReturnsWhenCtxEnds(t *testing.T) {
	mem := vfs.NewCrashableMem()
	s, want := populated(t, mem, seed(t), 30)
	crashed := mem.CrashClone(vfs.CrashCloneCfg{})
	require.NoError(t, s.Close())

	disk := newBlockingDisk(crashed)
	ctx, cancel := context.WithCancel(safetyNet(t))
	go func() {
		<-disk.entered // Pebble's open is flushing the replayed log
		cancel()
	}()
	_, err := Open(ctx, testOptions(disk, 0))
	require.ErrorIs(t, err, context.Canceled)

	close(disk.release)
	s2, err := Open(safetyNet(t), testOptions(disk, 0))
	require.NoError(t, err)
	defer s2.Close()
	requireState(t, want, s2)
}

// TestAppendOnFullDiskFailsWithENOSPC: with a small memtable, appends fill
// it and Pebble's flush fails with ENOSPC, which Pebble retries forever
// while writes stall. Append must fail within its ctx (at once) with an
// error wrapping ErrFailed and ENOSPC, Err must say the disk is full, and
// once space is freed the store reopens with every acknowledged append.
func TestAppendOnFullDiskFailsWithENOSPC(t *testing.T) {
	ctx := safetyNet(t)
	disk := &fullDisk{}
	fs := errorfs.Wrap(vfs.NewMem(), disk)
	opts := testOptions(fs, 1)
	opts.MemTableSize = 256 << 10
	s := openTest(t, opts)
	disk.full.Store(true)
	acked := map[store.ID]string{}
	var failure error
	payload := strings.Repeat("x", 4<<10)
	for i := 0; i < 1000 && failure == nil; i++ {
		msgs := make([]store.Message, 16)
		for j := range msgs {
			msgs[j] = msgAt(0, time.Second, fmt.Sprint(i, "-", j))
			msgs[j].Payload = []byte(payload + fmt.Sprint(i, "-", j))
		}
		res, err := s.Append(ctx, msgs)
		if err != nil {
			failure = err
			break
		}
		for j, r := range res {
			acked[r.ID] = string(msgs[j].Payload)
		}
	}
	require.Error(t, failure, "the full disk never surfaced")
	require.NoError(t, ctx.Err(), "Append returned only because ctx ended")
	require.ErrorIs(t, failure, ErrFailed)
	require.ErrorIs(t, failure, syscall.ENOSPC)
	require.ErrorIs(t, s.Err(), syscall.ENOSPC)
	require.Contains(t, s.Err().Error(), "disk full")
	t.Logf("after %d acknowledged messages: %v", len(acked), failure)
	_, err := s.Get(ctx, store.MakeID(0, 1<<16))
	require.ErrorIs(t, err, ErrFailed)

	// Close does not wait for Pebble, which keeps retrying the flush.
	require.ErrorIs(t, s.Close(), ErrFailed)

	disk.full.Store(false)
	s2, err := Open(ctx, testOptions(fs, 0))
	require.NoError(t, err)
	defer s2.Close()
	requireCheck(t, s2)
	for id, p := range acked {
		m, err := s2.Get(ctx, id)
		require.NoError(t, err, "acknowledged %s lost", id)
		require.Equal(t, p, string(m.Payload))
	}
}

// TestWriteStallIsReported: when Pebble stalls writes (its flush cannot keep
// up), the store reports it through store.Events.WriteStall, an Append that
// gives up waiting says writes are stalled, and the end of the stall is
// reported too.
func TestWriteStallIsReported(t *testing.T) {
	disk := newBlockingDisk(vfs.NewMem())
	type stall struct {
		begin  bool
		reason string
	}
	stalls := make(chan stall, 16)
	opts := testOptions(disk, 1)
	opts.MemTableSize = 256 << 10
	opts.events.WriteStall = func(begin bool, reason string) { stalls <- stall{begin, reason} }
	s := openTest(t, opts)

	ctx, cancel := context.WithCancel(safetyNet(t))
	appended := make(chan error, 1)
	go func() {
		payload := []byte(strings.Repeat("y", 8<<10))
		for {
			msgs := make([]store.Message, 16)
			for j := range msgs {
				msgs[j] = msgAt(0, time.Second, "s")
				msgs[j].Payload = payload
			}
			if _, err := s.Append(ctx, msgs); err != nil {
				appended <- err
				return
			}
		}
	}()
	first := <-stalls
	require.True(t, first.begin)
	require.NotEmpty(t, first.reason)
	cancel() // the caller gives up on the stalled Append
	err := <-appended
	require.ErrorIs(t, err, context.Canceled)
	require.Contains(t, err.Error(), "stalls writes")
	require.NoError(t, s.Err(), "a stall alone is not a failure")

	close(disk.release)
	require.Equal(t, stall{false, ""}, <-stalls)
	require.NoError(t, s.Close())
}

// TestCloseDuringStallReturnsWhenTheFlushFails: Close waits for the commit
// in flight, which Pebble has stalled behind a flush; when that flush fails
// (the disk is full) the store fails and Close returns, instead of waiting
// for the stall to end. Once space is freed the store reopens with what was
// acknowledged.
func TestCloseDuringStallReturnsWhenTheFlushFails(t *testing.T) {
	disk := newBlockingDisk(vfs.NewMem())
	full := &fullDisk{}
	fs := errorfs.Wrap(disk, full)
	stalls := make(chan bool, 16)
	opts := testOptions(fs, 1)
	opts.MemTableSize = 256 << 10
	opts.events.WriteStall = func(begin bool, _ string) { stalls <- begin }
	s := openTest(t, opts)

	ctx, cancel := context.WithCancel(safetyNet(t))
	var mu sync.Mutex
	acked := map[store.ID]bool{}
	appended := make(chan error, 1)
	go func() {
		payload := []byte(strings.Repeat("z", 8<<10))
		for {
			msgs := make([]store.Message, 16)
			for j := range msgs {
				msgs[j] = msgAt(0, time.Second, "c")
				msgs[j].Payload = payload
			}
			res, err := s.Append(ctx, msgs)
			if err != nil {
				appended <- err
				return
			}
			mu.Lock()
			for _, r := range res {
				acked[r.ID] = true
			}
			mu.Unlock()
		}
	}()
	require.True(t, <-stalls)
	cancel()
	require.ErrorIs(t, <-appended, context.Canceled)

	closed := make(chan error, 1)
	go func() { closed <- s.Close() }()
	full.full.Store(true)
	close(disk.release) // the held flush now fails with ENOSPC
	err := <-closed
	require.ErrorIs(t, err, ErrFailed)
	require.ErrorIs(t, err, syscall.ENOSPC)

	full.full.Store(false)
	s2, err := Open(safetyNet(t), testOptions(fs, 0))
	require.NoError(t, err)
	defer s2.Close()
	requireCheck(t, s2)
	mu.Lock()
	defer mu.Unlock()
	for id := range acked {
		_, err := s2.Get(context.Background(), id)
		require.NoError(t, err, "acknowledged %s lost", id)
	}
}
