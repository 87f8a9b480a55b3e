package engine

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/hourglassmq/hourglass/wal"
	"github.com/stretchr/testify/require"
)

// With one shard, scheduling a key that is already pending must return the
// existing ID and deliver once, not insert a second copy.
func TestExistingKeyOnOneShardDeliversOnce(t *testing.T) {
	h := newHarness(t, "durable", Options{Shards: 1, Queues: []Queue{{Name: "q"}}})
	m := Message{Dest: "local://q", Key: "k", Payload: []byte("once")}
	id1, err := h.e.ScheduleIn(context.Background(), time.Second, m)
	require.NoError(t, err)
	id2, err := h.e.ScheduleIn(context.Background(), time.Second, m)
	require.ErrorIs(t, err, ErrDuplicate)
	require.Equal(t, id1, id2)
	h.advance(time.Second)
	require.Equal(t, []string{"once"}, payloads(h.deliveries()))
}

// slowSyncFS delays every sync by delay: a slow disk, so that a caller's
// ctx can end while its group commit is under way.
type slowSyncFS struct {
	vfs.FS
	delay *atomic.Int64
}

type slowSyncFile struct {
	vfs.File
	delay *atomic.Int64
}

func (f slowSyncFile) wait()       { time.Sleep(time.Duration(f.delay.Load())) }
func (f slowSyncFile) Sync() error { f.wait(); return f.File.Sync() }
func (f slowSyncFile) SyncData() error {
	f.wait()
	return f.File.SyncData()
}
func (f slowSyncFile) SyncTo(n int64) (bool, error) { f.wait(); return f.File.SyncTo(n) }

func (fs slowSyncFS) Create(name string, c vfs.DiskWriteCategory) (vfs.File, error) {
	f, err := fs.FS.Create(name, c)
	return slowSyncFile{f, fs.delay}, err
}

func (fs slowSyncFS) ReuseForWrite(old, name string, c vfs.DiskWriteCategory) (vfs.File, error) {
	f, err := fs.FS.ReuseForWrite(old, name, c)
	return slowSyncFile{f, fs.delay}, err
}

// A Schedule whose ctx ends during the group commit is told so, but the
// write lands; it must still reach its shard, so the retry with the same key
// (acknowledged, Existing) is delivered, once.
func TestScheduleGivenUpDuringCommitIsStillDelivered(t *testing.T) {
	var delay atomic.Int64
	h := newHarness(t, "durable", Options{Queues: []Queue{{Name: "q"}}})
	require.NoError(t, h.e.Close())
	h.opts.Store = wal.Options{Dir: "store", FS: slowSyncFS{h.fs, &delay}}
	h.open()

	delay.Store(int64(200 * time.Millisecond))
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	m := Message{Dest: "local://q", Key: "k", Payload: []byte("given up"), Due: h.clk.Now().Add(time.Second)}
	_, err := h.e.Schedule(ctx, m)
	cancel()
	require.ErrorIs(t, err, context.DeadlineExceeded)
	delay.Store(0)
	id, err := h.e.Schedule(context.Background(), m)
	require.ErrorIs(t, err, ErrDuplicate, "the given-up write landed: its key is known")
	h.e.detached.Wait() // the given-up write has reached its shard
	h.advance(time.Second)
	got := h.deliveries()
	require.Len(t, got, 1)
	require.Equal(t, id, got[0].id)
}

// A Reschedule of a message beyond the window whose ctx ends during the
// commit must leave the message where the store says it is: here the write
// lands, so it fires at its new due time.
func TestRescheduleGivenUpDuringCommitIsNotStranded(t *testing.T) {
	var delay atomic.Int64
	h := newHarness(t, "durable", Options{Queues: []Queue{{Name: "q"}}})
	require.NoError(t, h.e.Close())
	h.opts.Store = wal.Options{Dir: "store", FS: slowSyncFS{h.fs, &delay}}
	h.open()
	id := h.schedule("local://q", 2*time.Minute, "far") // beyond the 1 min window: on disk only
	h.settle()

	delay.Store(int64(200 * time.Millisecond))
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	err := h.e.Reschedule(ctx, id, h.clk.Now().Add(10*time.Second))
	cancel()
	require.ErrorIs(t, err, context.DeadlineExceeded)
	h.e.detached.Wait()
	delay.Store(0)
	h.advance(10 * time.Second)
	got := h.deliveries()
	require.Len(t, got, 1, "the rescheduled message fires at its new due time")
	require.Equal(t, id, got[0].id)
}
