package engine

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestWindowPagesFarFutureIn(t *testing.T) {
	h := newHarness(t, "durable", Options{Shards: 2, Window: time.Minute, Queues: []Queue{{Name: "q"}}})
	var msgs []Message
	for i := range 1000 {
		msgs = append(msgs, Message{Dest: "local://q", Due: t0.Add(time.Duration(i+1) * 600 * time.Millisecond), Payload: []byte(fmt.Sprint(i))})
	}
	_, err := h.e.ScheduleBatch(bg, msgs)
	require.NoError(t, err)
	h.settle()
	st := h.e.Stats()
	require.EqualValues(t, 1000, st.StorePending)
	// Only [now, now + Window + Window/8) is in RAM: 67.5 s of 600 s.
	require.LessOrEqual(t, st.PendingTotal, int64(115))
	require.GreaterOrEqual(t, st.PendingTotal, int64(100))
	for step := 0; step < 61; step++ {
		h.advance(10 * time.Second)
		st := h.e.Stats()
		require.LessOrEqual(t, st.PendingTotal, int64(135), "step %d", step)
		for _, r := range h.deliveries() {
			require.False(t, r.at.Before(r.due))
		}
	}
	require.Len(t, h.deliveries(), 1000)
	st = h.e.Stats()
	require.EqualValues(t, 0, st.StorePending)
	require.GreaterOrEqual(t, st.Loaded, uint64(880)) // the first window came in through Schedule
}

func TestRecoveryOverdueFirstInOrder(t *testing.T) {
	h := newHarness(t, "durable", Options{Shards: 1, Queues: []Queue{{Name: "q", Parallelism: 1}}})
	var msgs []Message
	for i := 99; i >= 0; i-- {
		msgs = append(msgs, Message{Dest: "local://q", Due: t0.Add(time.Duration(i+1) * time.Second), Payload: []byte(fmt.Sprintf("%03d", i))})
	}
	// And some far in the future.
	for i := range 10 {
		msgs = append(msgs, Message{Dest: "local://q", Due: t0.Add(time.Hour + time.Duration(i)*time.Second), Payload: []byte(fmt.Sprintf("f%d", i))})
	}
	_, err := h.e.ScheduleBatch(bg, msgs)
	require.NoError(t, err)
	h.settle()
	require.NoError(t, h.e.Close())
	h.e = nil
	h.clk.Advance(10 * time.Minute) // down for ten minutes
	h.open()
	h.settle()
	got := payloads(h.deliveries())
	require.Len(t, got, 100)
	for i := range got {
		require.Equal(t, fmt.Sprintf("%03d", i), got[i])
	}
	st := h.e.Stats()
	require.EqualValues(t, 110, st.Recovery.Pending)
	require.NotZero(t, st.Recovery.FullLoad)
	require.NotZero(t, st.Recovery.FirstFire)
	require.EqualValues(t, 100, st.DuplicatesEstimate)
	h.advance(time.Hour)
	require.Len(t, h.deliveries(), 110)
}

func TestRecoveryKeepsAttemptsAndDeadLetters(t *testing.T) {
	h := newHarness(t, "durable", Options{Shards: 2, Retry: RetryPolicy{MaxAttempts: 3, Delays: []time.Duration{time.Minute}}})
	fail := func(ctx context.Context, d *Delivery) error { return errors.New("down") }
	h.opts.Queues = []Queue{{Name: "q", Handler: h.record(fail)}}
	h.restart()
	id := h.schedule("local://q", 0, "x")
	h.settle()
	h.restart()
	info, err := h.e.Get(bg, id)
	require.NoError(t, err)
	require.Equal(t, 1, info.Attempts)
	h.advance(time.Minute)
	h.restart()
	h.advance(time.Minute)
	got := h.deliveries()
	require.Len(t, got, 3)
	require.Equal(t, []int{1, 2, 3}, []int{got[0].attempt, got[1].attempt, got[2].attempt})
	h.restart()
	dls, _, err := h.e.DeadLetters(bg, 0, 0)
	require.NoError(t, err)
	require.Len(t, dls, 1)
	require.Equal(t, id, dls[0].ID)
	require.Contains(t, dls[0].Reason, "down")
}
