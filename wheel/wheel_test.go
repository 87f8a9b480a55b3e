package wheel_test

import (
	"errors"
	"math"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/hourglassmq/hourglass/wheel"
)

func newWheel(t *testing.T, opts wheel.Options) *wheel.Wheel {
	t.Helper()
	w, err := wheel.New(opts)
	require.NoError(t, err)
	return w
}

func TestOptionsValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		opts wheel.Options
		msg  string
	}{
		{"negative tick", wheel.Options{Tick: -1}, "Tick -1ns is negative"},
		{"slot bits too small", wheel.Options{SlotBits: 1}, "SlotBits 1 is out of range; allowed 2..12"},
		{"slot bits too large", wheel.Options{SlotBits: 13}, "SlotBits 13 is out of range"},
		{"upper slot bits too small", wheel.Options{UpperSlotBits: 1}, "UpperSlotBits 1 is out of range; allowed 2..16"},
		{"upper slot bits too large", wheel.Options{UpperSlotBits: 17}, "UpperSlotBits 17 is out of range"},
		{"negative start", wheel.Options{Start: -5}, "Start -5 is negative"},
		{"negative capacity", wheel.Options{Capacity: -1}, "Capacity -1 is out of range"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := wheel.New(tc.opts)
			require.ErrorIs(t, err, wheel.ErrBadOptions)
			require.ErrorContains(t, err, tc.msg)
		})
	}
	w := newWheel(t, wheel.Options{})
	require.Equal(t, time.Millisecond, w.Tick(), "the zero Options work, with a 1 ms tick")
}

func TestNeverEarlyWithinATick(t *testing.T) {
	w := newWheel(t, wheel.Options{Tick: time.Millisecond})
	w.Insert(int64(10*time.Millisecond+1), 1) // rounds up to 11 ms
	require.Empty(t, w.Advance(int64(10*time.Millisecond), nil))
	require.Empty(t, w.Advance(int64(11*time.Millisecond-1), nil), "10.999 ms is before the due time")
	require.Equal(t, []uint64{1}, w.Advance(int64(11*time.Millisecond), nil))
}

func TestDueOrderWithTiesInInsertOrder(t *testing.T) {
	w := newWheel(t, wheel.Options{Tick: 1, SlotBits: 2})
	// Same due tick reached through different levels and cascades.
	w.Insert(100, 1)
	w.Insert(37, 2)
	w.Insert(100, 3)
	require.Empty(t, w.Advance(36, nil))
	w.Insert(100, 4)
	w.Insert(5, 5) // already due: comes out on the next advance, first
	require.Equal(t, []uint64{5, 2}, w.Advance(99, nil))
	w.Insert(100, 6)
	require.Equal(t, []uint64{1, 3, 4, 6}, w.Advance(1000, nil))
}

func TestAdvanceLimitKeepsTheRestFirstInLine(t *testing.T) {
	w := newWheel(t, wheel.Options{Tick: 1})
	for i := range uint64(5) {
		w.Insert(int64(10+i), i)
	}
	require.Equal(t, []uint64{0, 1}, w.AdvanceLimit(100, 2, nil))
	w.Insert(50, 99)
	w.Insert(1, 98) // due long ago: still before everything due later
	next, ok := w.NextDue()
	require.True(t, ok)
	require.LessOrEqual(t, next, w.Now(), "entries left by a limited advance are due now")
	require.Equal(t, []uint64{98, 2, 3, 4, 99}, w.Advance(100, nil))
}

func TestCancel(t *testing.T) {
	w := newWheel(t, wheel.Options{Tick: 1})
	a := w.Insert(10, 1)
	b := w.Insert(10, 2)
	require.True(t, w.Cancel(a))
	require.False(t, w.Cancel(a), "second cancel of the same handle")
	require.False(t, w.Cancel(0), "the zero handle")
	c := w.Insert(10, 3) // reuses a's slab slot with a new generation
	require.False(t, w.Cancel(a), "a stale handle must not cancel the entry that reused its slot")
	require.Equal(t, []uint64{2, 3}, w.Advance(10, nil))
	require.False(t, w.Cancel(b), "an expired entry's handle")
	require.False(t, w.Cancel(c))
	require.Zero(t, w.Len())
}

func TestFarFutureIsHeldExactly(t *testing.T) {
	w := newWheel(t, wheel.Options{}) // 1 ms ticks
	const century = 100 * 365 * 24 * time.Hour
	w.Insert(int64(century), 1)
	w.Insert(math.MaxInt64, 2)
	next, ok := w.NextDue()
	require.True(t, ok)
	require.Equal(t, int64(century), next, "NextDue is exact, not a slot boundary")
	require.Empty(t, w.Advance(int64(century)-1, nil))
	require.Equal(t, []uint64{1}, w.Advance(int64(century), nil))
	require.Empty(t, w.Advance(math.MaxInt64-int64(time.Millisecond), nil))
	require.Equal(t, []uint64{2}, w.Advance(math.MaxInt64, nil))
}

func TestNextDueSkipsEmptySlotsAndStaleMinimums(t *testing.T) {
	w := newWheel(t, wheel.Options{Tick: 1, SlotBits: 6})
	_, ok := w.NextDue()
	require.False(t, ok)
	early := w.Insert(5000, 1) // level 2
	w.Insert(7000, 2)          // same level-2 slot, later
	next, _ := w.NextDue()
	require.Equal(t, int64(5000), next)
	require.True(t, w.Cancel(early))
	next, _ = w.NextDue()
	require.Equal(t, int64(7000), next, "cancelling the earliest entry of a slot")
}

func TestSteadyStateDoesNotAllocate(t *testing.T) {
	if wheel.InvariantsOn {
		t.Skip("the invariant checker allocates")
	}
	w := newWheel(t, wheel.Options{Tick: 1, Capacity: 1024})
	buf := make([]uint64, 0, 1024)
	now := int64(0)
	round := func() {
		for i := range int64(512) {
			h := w.Insert(now+1+i*37%4096, uint64(i))
			if i%2 == 0 {
				w.Cancel(h)
			}
		}
		now += 4096
		buf = w.Advance(now, buf[:0])
	}
	for range 64 { // let every slot array grow to its peak once
		round()
	}
	require.Zero(t, testing.AllocsPerRun(100, round))
}

func TestErrBadOptionsIsASentinel(t *testing.T) {
	err := wheel.Options{SlotBits: 40}.Validate()
	require.True(t, errors.Is(err, wheel.ErrBadOptions))
}

func TestCancelledRefsDoNotPileUp(t *testing.T) {
	w := newWheel(t, wheel.Options{Tick: 1})
	far := int64(1 << 40)
	keep := []uint64{}
	for i := range uint64(100_000) {
		h := w.Insert(far+int64(i%7), i)
		if i%1000 == 0 {
			keep = append(keep, i) // a few survive, in insert order within each due tick
			continue
		}
		require.True(t, w.Cancel(h))
	}
	require.NoError(t, w.Verify())
	require.Less(t, w.Refs(), 3*w.Len()+64*8, "dead refs are compacted away")

	// The same in the overdue list and in a slot a limited advance is draining.
	for i := range uint64(10_000) {
		h := w.Insert(5, 1_000_000+i)
		if i%100 != 0 {
			w.Cancel(h)
		}
	}
	require.NoError(t, w.Verify())
	got := w.AdvanceLimit(6, 50, nil)
	require.Len(t, got, 50)
	for i, ref := range got {
		require.Equal(t, uint64(1_000_000+100*i), ref, "overdue entries keep their order through compaction")
	}
	require.Len(t, w.Advance(6, nil), 50)

	got = w.Advance(far+7, nil)
	require.Len(t, got, len(keep))
	require.Less(t, w.Refs(), 64*8)
}

func TestAnEntryIsRetiredBeforeItsGenerationWraps(t *testing.T) {
	w := newWheel(t, wheel.Options{Tick: 1})
	old := w.Insert(1<<40, 1) // a live far-future entry keeps its slot walked late
	h := w.Insert(1<<40, 2)
	require.True(t, w.Cancel(h)) // leaves a dead ref in the far slot
	w.AgeFreeEntries()
	h2 := w.Insert(1<<40+1, 3) // reuses the entry in its last generation
	require.True(t, w.Cancel(h2))
	h3 := w.Insert(1<<40+2, 4) // the entry is retired, so this one is new
	require.NotEqual(t, uint32(h2), uint32(h3), "a retired entry is not reused")
	require.False(t, w.Cancel(h2))
	require.NoError(t, w.Verify())
	require.Equal(t, []uint64{1, 4}, w.Advance(1<<41, nil))
	require.False(t, w.Cancel(old))
}

func TestAnOverdueBacklogDoesNotGrowWithoutBound(t *testing.T) {
	w := newWheel(t, wheel.Options{Tick: 1, Start: 1000})
	var buf []uint64
	w.Insert(5, 1<<40)
	w.Insert(5, 1<<40+1)
	for i := range uint64(100_000) {
		w.Insert(5, 2*i)
		w.Insert(5, 2*i+1)
		buf = w.AdvanceLimit(1000, 2, buf[:0]) // always two behind
	}
	require.Equal(t, 2, w.Len())
	require.Less(t, w.Refs(), 1000, "handed-out overdue refs are reclaimed")
}
