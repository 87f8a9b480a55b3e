package wal

import (
	"context"
	"errors"
	"math"
	"math/rand/v2"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/cockroachdb/pebble/v2/vfs/errorfs"
	"github.com/hourglassmq/hourglass/store"
	"github.com/stretchr/testify/require"
)

// walWriteInjector fails WAL writes or syncs once armed, with probability
// 1/odds per operation.
type walWriteInjector struct {
	armed atomic.Bool
	fired atomic.Bool
	odds  int
	r     *rand.Rand
	kinds []errorfs.OpKind
}

func (w *walWriteInjector) String() string { return "wal-write-injector" }

func (w *walWriteInjector) MaybeError(op errorfs.Op) error {
	if !w.armed.Load() || !strings.HasSuffix(op.Path, ".log") {
		return nil
	}
	for _, k := range w.kinds {
		if op.Kind == k && (w.fired.Load() || w.r.IntN(w.odds) == 0) {
			w.fired.Store(true)
			return errorfs.ErrInjected
		}
	}
	return nil
}

// TestStickyFailure injects WAL write and sync errors at random points. The
// failing call and every later write must return an error wrapping
// ErrFailed, never a false success, and after reopening without faults every
// acknowledged message is there.
func TestStickyFailure(t *testing.T) {
	for _, tc := range []struct {
		name  string
		kinds []errorfs.OpKind
	}{
		{"write", []errorfs.OpKind{errorfs.OpFileWrite, errorfs.OpFileWriteAt}},
		{"sync", []errorfs.OpKind{errorfs.OpFileSync, errorfs.OpFileSyncData, errorfs.OpFileSyncTo}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sd := seed(t)
			r := rand.New(rand.NewPCG(sd, 4))
			mem := vfs.NewCrashableMem()
			inj := &walWriteInjector{odds: 3, r: rand.New(rand.NewPCG(sd, 5)), kinds: tc.kinds}
			opts := testOptions(errorfs.Wrap(mem, inj), 2)
			ctx := context.Background()
			s := openTest(t, opts)
			h := &harness{t: t, r: r, s: s, m: newModel(), shards: 2}
			armAt := 5 + r.IntN(30)
			var failed error
			for i := 0; i < 80; i++ {
				if i == armAt {
					inj.armed.Store(true)
				}
				_, err := h.step(ctx)
				if err != nil {
					require.ErrorIs(t, err, ErrFailed, "step %d", i)
					failed = err
					break
				}
			}
			require.Error(t, failed, "the injected fault never surfaced")
			require.ErrorIs(t, s.Err(), ErrFailed)
			// Pebble reports WAL errors only through its logger's Fatalf.
			require.Contains(t, s.Err().Error(), "pebble fatal")
			t.Logf("failure: %v", s.Err())
			// Sticky: every later write fails, reads of the failure are stable.
			_, err := s.Append(ctx, []store.Message{msgAt(0, 0, "late")})
			require.ErrorIs(t, err, ErrFailed)
			_, err = s.Resolve(ctx, store.Batch{New: []store.Message{msgAt(0, 0, "late")}})
			require.ErrorIs(t, err, ErrFailed)
			_, err = s.PurgeAllDead(ctx)
			require.ErrorIs(t, err, ErrFailed)
			_ = s.Close() // may report the failure; must not hang
			// What survives a crash right now holds every acknowledged op.
			inj.armed.Store(false)
			s2 := openTest(t, testOptions(mem.CrashClone(vfs.CrashCloneCfg{}), 0))
			defer s2.Close()
			// The failed op was never acknowledged and its data never synced,
			// so the store holds exactly the state after the last acknowledged op.
			requireCheck(t, s2)
			got := storeState(t, s2)
			require.True(t, equalState(h.m, got), "after the failure: pending %d (want %d), dead %d (want %d)",
				len(got.pending), len(h.m.pending), len(got.dead), len(h.m.dead))
		})
	}
}

// TestPebbleFatalfIsSticky checks the logger path directly: Pebble calling
// Fatalf (which it does instead of returning WAL errors) fails the store.
func TestPebbleFatalfIsSticky(t *testing.T) {
	ctx := context.Background()
	s := openTest(t, testOptions(vfs.NewMem(), 1))
	defer s.Close()
	require.NoError(t, s.Err())
	pebbleLogger{s}.Fatalf("pebble: fatal commit error: %v", errors.New("disk on fire"))
	require.ErrorIs(t, s.Err(), ErrFailed)
	require.Contains(t, s.Err().Error(), "disk on fire")
	_, err := s.Append(ctx, []store.Message{msgAt(0, 0, "x")})
	require.ErrorIs(t, err, ErrFailed)
	_, err = s.Resolve(ctx, store.Batch{Done: []store.Done{{ID: store.MakeID(0, 1<<16)}}})
	require.ErrorIs(t, err, ErrFailed)
}

// TestRecoveryReadErrors injects read errors while opening a populated store:
// Open must fail with an error that says what it was reading, or succeed with
// the complete state; never a partial silent load.
func TestRecoveryReadErrors(t *testing.T) {
	sd := seed(t)
	ctx := context.Background()
	mem := vfs.NewMem()
	opts := testOptions(mem, 2)
	s := openTest(t, opts)
	h := &harness{t: t, r: rand.New(rand.NewPCG(sd, 6)), s: s, m: newModel(), shards: 2}
	for i := 0; i < 60; i++ {
		_, err := h.step(ctx)
		require.NoError(t, err)
		if i == 30 {
			require.NoError(t, s.db.Flush()) // some state in sstables, some in the WAL
		}
	}
	require.NoError(t, s.Close())
	r := rand.New(rand.NewPCG(sd, 7))
	failures := 0
	for trial := 0; trial < 12; trial++ {
		var reads atomic.Int64
		target := int64(1 + r.IntN(40))
		inj := errorfs.InjectorFunc(func(op errorfs.Op) error {
			if op.Kind != errorfs.OpFileRead && op.Kind != errorfs.OpFileReadAt {
				return nil
			}
			if reads.Add(1) == target {
				return errorfs.ErrInjected
			}
			return nil
		})
		o := testOptions(errorfs.Wrap(mem, inj), 0)
		s, err := Open(ctx, o)
		if err != nil {
			failures++
			require.True(t, errors.Is(err, errorfs.ErrInjected) || errors.Is(err, ErrCorrupt) || errors.Is(err, ErrFailed),
				"unexpected error kind: %v", err)
			// It says which store: "wal: open <dir>: <step>: ..." or, for
			// damage, "wal: store <dir>: <file>: ...".
			require.Regexp(t, `^wal: (open|store) /store: `, err.Error())
			continue
		}
		// The injected read hit something Open did not need: the state must
		// be complete. Close reads every file for its clean-close record, so
		// stop injecting first.
		reads.Store(1 << 40)
		st := s.Stats()
		require.Equal(t, int64(len(h.m.pending)), st.PendingTotal)
		require.Equal(t, int64(len(h.m.dead)), st.Dead)
		require.NoError(t, s.Close())
	}
	t.Logf("%d of 12 opens failed cleanly", failures)
}

// TestFailedStoreRefusesReadsAndReleasesPebble: after Pebble's fatal path
// (a WAL write error, which Pebble reports only through Logger.Fatalf, and
// after which its own commit pipeline cannot be trusted), the store refuses
// every call, reads as well as writes, with the sticky error; the error
// says to reopen; store.Events.Failed is called exactly once; and the store
// lets go of Pebble and the directory by itself, so the directory can be
// opened again without Close.
func TestFailedStoreRefusesReadsAndReleasesPebble(t *testing.T) {
	ctx := context.Background()
	sd := seed(t)
	mem := vfs.NewCrashableMem()
	inj := &walWriteInjector{odds: 1, r: rand.New(rand.NewPCG(sd, 8)), kinds: []errorfs.OpKind{errorfs.OpFileWrite, errorfs.OpFileWriteAt}}
	fs := errorfs.Wrap(mem, inj)
	var failedCalls atomic.Int32
	failedEvent := make(chan error, 4)
	opts := testOptions(fs, 2)
	opts.events.Failed = func(err error) {
		failedCalls.Add(1)
		failedEvent <- err
	}
	s := openTest(t, opts)
	res, err := s.Append(ctx, []store.Message{msgAt(0, time.Second, "kept"), msgAt(1, 2*time.Hour, "far")})
	require.NoError(t, err)
	_, err = s.Resolve(ctx, store.Batch{Dead: []store.Dead{{ID: res[1].ID, Reason: "r"}}})
	require.NoError(t, err)

	inj.armed.Store(true)
	_, err = s.Append(ctx, []store.Message{msgAt(0, 0, "lost")})
	require.ErrorIs(t, err, ErrFailed)
	inj.armed.Store(false)
	require.ErrorIs(t, s.Err(), ErrFailed)
	require.Contains(t, s.Err().Error(), "open it again")
	require.ErrorIs(t, <-failedEvent, ErrFailed)

	// Every call is refused with the failure, reads included.
	_, err = s.Get(ctx, res[0].ID)
	require.ErrorIs(t, err, ErrFailed)
	_, _, err = s.Scan(ctx, store.ScanQuery{Shard: 0, From: 0, To: math.MaxInt64})
	require.ErrorIs(t, err, ErrFailed)
	_, err = s.Lookup(ctx, "k")
	require.ErrorIs(t, err, ErrFailed)
	_, err = s.GetDead(ctx, res[1].ID)
	require.ErrorIs(t, err, ErrFailed)
	_, _, err = s.ListDead(ctx, store.DeadQuery{})
	require.ErrorIs(t, err, ErrFailed)
	err = s.ReplayDead(ctx, []store.ID{res[1].ID}, 0)
	require.ErrorIs(t, err, ErrFailed)
	_, err = s.PurgeDead(ctx, []store.ID{res[1].ID})
	require.ErrorIs(t, err, ErrFailed)
	_, err = s.PurgeAllDead(ctx)
	require.ErrorIs(t, err, ErrFailed)
	_, err = s.Resolve(ctx, store.Batch{Done: []store.Done{{ID: res[0].ID}}})
	require.ErrorIs(t, err, ErrFailed)

	// Another fatal report changes nothing and reports nothing.
	pebbleLogger{s}.Fatalf("pebble: again: %v", errors.New("second"))
	require.NotContains(t, s.Err().Error(), "second")

	// The store released Pebble and the directory by itself: it opens again
	// (Open waits for the release, which is under way), without Close.
	s2 := openTest(t, testOptions(fs, 0))
	requireCheck(t, s2)
	got, err := s2.Get(ctx, res[0].ID)
	require.NoError(t, err)
	require.Equal(t, "payload-kept", string(got.Payload))
	require.NoError(t, s2.Close())
	require.Equal(t, int32(1), failedCalls.Load(), "store.Events.Failed is called once")

	// Close of the failed store reports the failure and does not hang.
	require.ErrorIs(t, s.Close(), ErrFailed)
	require.ErrorIs(t, s.Close(), ErrClosed)
}
