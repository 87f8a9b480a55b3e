package wal

import (
	"context"
	"errors"
	"math/rand/v2"
	"strings"
	"sync/atomic"
	"testing"

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
