package engine

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hourglassmq/hourglass/transport"
	"github.com/stretchr/testify/require"
)

var bg = context.Background()

func TestFiresAtDueNeverBefore(t *testing.T) {
	forModes(t, func(t *testing.T, mode string) {
		h := newHarness(t, mode, Options{Queues: []Queue{{Name: "q"}}})
		h.schedule("local://q", 10*time.Second, "a")
		h.schedule("local://q", 0, "now")
		h.schedule("local://q", -time.Hour, "past")
		h.settle()
		require.ElementsMatch(t, []string{"now", "past"}, payloads(h.deliveries()))
		h.advance(10*time.Second - time.Nanosecond)
		require.Len(t, h.deliveries(), 2)
		h.advance(time.Nanosecond)
		got := h.deliveries()
		require.Len(t, got, 3)
		r := got[2]
		require.Equal(t, "a", r.payload)
		require.Equal(t, 1, r.attempt)
		require.Equal(t, t0.Add(10*time.Second), r.due.UTC())
		require.False(t, r.fired.Before(r.due), "fired %v before due %v", r.fired, r.due)
		st := h.e.Stats()
		require.EqualValues(t, 3, st.Fired)
		require.EqualValues(t, 3, st.Delivered)
		require.EqualValues(t, 3, st.Lateness.Count)
	})
}

func TestManyDueOrderAcrossShards(t *testing.T) {
	forModes(t, func(t *testing.T, mode string) {
		h := newHarness(t, mode, Options{Shards: 4, Queues: []Queue{{Name: "q"}}})
		var msgs []Message
		for i := range 500 {
			msgs = append(msgs, Message{Dest: "local://q", Due: t0.Add(time.Duration(i%50) * time.Second), Payload: []byte(fmt.Sprint(i))})
		}
		ids, err := h.e.ScheduleBatch(bg, msgs)
		require.NoError(t, err)
		require.Len(t, ids, 500)
		for s := 0; s < 50; s++ {
			h.advance(time.Second)
			for _, r := range h.deliveries() {
				require.False(t, r.at.Before(r.due), "early: %+v", r)
			}
		}
		require.Len(t, h.deliveries(), 500)
	})
}

func TestCancelRescheduleGet(t *testing.T) {
	forModes(t, func(t *testing.T, mode string) {
		h := newHarness(t, mode, Options{Queues: []Queue{{Name: "q"}}})
		a := h.schedule("local://q", time.Minute, "a")
		b := h.schedule("local://q", time.Minute, "b")
		far := h.schedule("local://q", 30*time.Minute, "far")

		info, err := h.e.Get(bg, a)
		require.NoError(t, err)
		require.Equal(t, StatePending, info.State)
		require.Equal(t, "local://q", info.Message.Dest)
		require.Equal(t, t0.Add(time.Minute), info.Message.Due.UTC())

		require.NoError(t, h.e.Cancel(bg, a))
		require.ErrorIs(t, h.e.Cancel(bg, a), ErrNotFound)
		_, err = h.e.Get(bg, a)
		require.ErrorIs(t, err, ErrNotFound)
		require.ErrorIs(t, h.e.Cancel(bg, 12345), ErrNotFound)

		require.NoError(t, h.e.Reschedule(bg, b, t0.Add(2*time.Minute)))
		require.NoError(t, h.e.Reschedule(bg, far, t0.Add(90*time.Second))) // from beyond the window into it
		h.advance(time.Minute)
		require.Empty(t, h.deliveries())
		h.advance(30 * time.Second)
		require.Equal(t, []string{"far"}, payloads(h.deliveries()))
		h.advance(30 * time.Second)
		require.Equal(t, []string{"far", "b"}, payloads(h.deliveries()))
		_, err = h.e.Get(bg, b)
		require.ErrorIs(t, err, ErrNotFound)
		require.ErrorIs(t, h.e.Reschedule(bg, b, t0), ErrNotFound)
		require.EqualValues(t, 1, h.e.Stats().Cancelled)
	})
}

func TestCancelFarFuture(t *testing.T) {
	forModes(t, func(t *testing.T, mode string) {
		h := newHarness(t, mode, Options{Queues: []Queue{{Name: "q"}}})
		id := h.schedule("local://q", 24*time.Hour, "x")
		if mode == "durable" {
			require.EqualValues(t, 0, h.e.Stats().PendingTotal, "far-future message must not be in RAM")
		}
		require.NoError(t, h.e.Cancel(bg, id))
		h.advance(25 * time.Hour)
		require.Empty(t, h.deliveries())
	})
}

func TestIdempotencyKey(t *testing.T) {
	forModes(t, func(t *testing.T, mode string) {
		h := newHarness(t, mode, Options{Shards: 3, Queues: []Queue{{Name: "q"}}})
		m := Message{Dest: "local://q", Key: "k1", Due: t0.Add(time.Second), Payload: []byte("x")}
		id1, err := h.e.Schedule(bg, m)
		require.NoError(t, err)
		id2, err := h.e.Schedule(bg, m)
		require.ErrorIs(t, err, ErrDuplicate, "a key already pending is said out loud")
		var dup *DuplicateError
		require.ErrorAs(t, err, &dup)
		require.Equal(t, []int{0}, dup.Index)
		require.Equal(t, id1, id2, "and its ID is returned")
		h.advance(time.Second)
		require.Len(t, h.deliveries(), 1)
	})
}

func TestRetryPolicyAndDeadLetters(t *testing.T) {
	forModes(t, func(t *testing.T, mode string) {
		var calls atomic.Int32
		h := newHarness(t, mode, Options{})
		require.NoError(t, h.e.Register(Queue{Name: "q", Handler: h.record(func(ctx context.Context, d *Delivery) error {
			calls.Add(1)
			return errors.New("boom")
		}), Retry: RetryPolicy{MaxAttempts: 3, Delays: []time.Duration{time.Second, 5 * time.Second}}}))
		id := h.schedule("local://q", 0, "x")
		h.settle()
		require.EqualValues(t, 1, calls.Load())
		info, err := h.e.Get(bg, id)
		require.NoError(t, err)
		require.Equal(t, 1, info.Attempts)
		require.Equal(t, t0.Add(time.Second), info.Message.Due.UTC())
		h.advance(time.Second - time.Millisecond)
		require.EqualValues(t, 1, calls.Load())
		h.advance(time.Millisecond)
		require.EqualValues(t, 2, calls.Load())
		h.advance(5 * time.Second)
		require.EqualValues(t, 3, calls.Load())
		got := h.deliveries()
		require.Equal(t, []int{1, 2, 3}, []int{got[0].attempt, got[1].attempt, got[2].attempt})
		info, err = h.e.Get(bg, id)
		require.NoError(t, err)
		require.Equal(t, StateDead, info.State)
		require.Contains(t, info.Reason, "boom")
		st := h.e.Stats()
		require.EqualValues(t, 2, st.Retried)
		require.EqualValues(t, 1, st.DeadLettered)

		dls, next, err := h.e.DeadLetters(bg, 0, 10)
		require.NoError(t, err)
		require.Zero(t, next)
		require.Len(t, dls, 1)
		require.Equal(t, id, dls[0].ID)
		require.Equal(t, 3, dls[0].Attempts)

		// Replay: back to pending, attempts reset.
		require.NoError(t, h.e.ReplayDead(bg, []ID{id}, t0.Add(time.Hour)))
		info, err = h.e.Get(bg, id)
		require.NoError(t, err)
		require.Equal(t, StatePending, info.State)
		require.Equal(t, 0, info.Attempts)
		h.advance(time.Hour)
		require.EqualValues(t, 4, calls.Load())
		require.Equal(t, 1, h.deliveries()[3].attempt)
		h.advance(time.Second)
		h.advance(5 * time.Second)
		n, err := h.e.PurgeDead(bg, nil)
		require.NoError(t, err)
		require.Equal(t, 1, n)
		_, err = h.e.Get(bg, id)
		require.ErrorIs(t, err, ErrNotFound)
		require.ErrorIs(t, h.e.ReplayDead(bg, []ID{id}, time.Time{}), ErrNotFound)
	})
}

func TestBackoffJitterBounds(t *testing.T) {
	p := RetryPolicy{Base: time.Second, Max: 10 * time.Second, Jitter: 0.2}.withDefaults()
	for attempt, want := range map[uint32]time.Duration{1: time.Second, 2: 2 * time.Second, 3: 4 * time.Second, 4: 8 * time.Second, 5: 10 * time.Second, 40: 10 * time.Second} {
		for range 100 {
			d := p.delay(attempt)
			require.GreaterOrEqual(t, d, want*8/10, "attempt %d", attempt)
			require.LessOrEqual(t, d, want*12/10, "attempt %d", attempt)
		}
	}
	noJ := RetryPolicy{Jitter: -1}.withDefaults()
	require.Equal(t, time.Second, noJ.delay(1))
	require.Equal(t, DefaultRetryMax, noJ.delay(100))
}

func TestHandlerControlsRetry(t *testing.T) {
	forModes(t, func(t *testing.T, mode string) {
		h := newHarness(t, mode, Options{Retry: RetryPolicy{MaxAttempts: 5, Jitter: -1}})
		var n atomic.Int32
		require.NoError(t, h.e.Register(Queue{Name: "q", Handler: h.record(func(ctx context.Context, d *Delivery) error {
			switch string(d.Payload) {
			case "in":
				if n.Add(1) == 1 {
					return RetryIn(5*time.Second, errors.New("later"))
				}
			case "at":
				if d.Attempt == 1 {
					return RetryAt(t0.Add(time.Minute), nil)
				}
			case "reject":
				return Reject(errors.New("never"))
			case "panic":
				if d.Attempt == 1 {
					panic("oops")
				}
			}
			return nil
		})}))
		for _, p := range []string{"in", "at", "reject", "panic"} {
			h.schedule("local://q", 0, p)
		}
		h.settle()
		require.Len(t, h.deliveries(), 4)
		require.EqualValues(t, 1, h.e.Stats().DeadLettered)
		h.advance(time.Second) // default backoff 1 s for the panic
		require.Equal(t, "panic", h.deliveries()[4].payload)
		h.advance(4 * time.Second)
		require.Len(t, h.deliveries(), 6, "%+v %+v", h.deliveries(), h.e.Stats())
		require.Equal(t, "in", h.deliveries()[5].payload)
		require.Len(t, h.deliveries(), 6)
		h.advance(55 * time.Second)
		require.Equal(t, "at", h.deliveries()[6].payload)
		st := h.e.Stats()
		require.EqualValues(t, 3, st.Delivered)
		require.EqualValues(t, 1, st.DeadLettered)
		require.EqualValues(t, 3, st.Retried)
	})
}

func TestCascadeAtomicWithAck(t *testing.T) {
	forModes(t, func(t *testing.T, mode string) {
		h := newHarness(t, mode, Options{Shards: 3, Retry: RetryPolicy{Delays: []time.Duration{time.Second}, MaxAttempts: 3}})
		var fails atomic.Int32
		fails.Store(1)
		require.NoError(t, h.e.Register(Queue{Name: "out"}.withHandler(h.record(nil))))
		require.NoError(t, h.e.Register(Queue{Name: "in", Handler: h.record(func(ctx context.Context, d *Delivery) error {
			require.NoError(t, d.Send(Message{Dest: "local://out", Payload: []byte("reply-now")}))
			require.NoError(t, d.ScheduleIn(10*time.Second, Message{Dest: "local://out", Payload: []byte("reply-later")}))
			if fails.Add(-1) >= 0 {
				return errors.New("first attempt fails: cascades must vanish")
			}
			return nil
		})}))
		h.schedule("local://in", 0, "req")
		h.settle()
		require.Equal(t, []string{"req"}, payloads(h.deliveries()))
		h.advance(time.Second)
		require.Equal(t, []string{"req", "req", "reply-now"}, payloads(h.deliveries()))
		h.advance(10 * time.Second)
		require.Equal(t, []string{"req", "req", "reply-now", "reply-later"}, payloads(h.deliveries()))
		require.Error(t, (&Delivery{e: h.e}).Send(Message{Dest: "local://nope"}))
	})
}

func (q Queue) withHandler(hd Handler) Queue { q.Handler = hd; return q }

func TestExpiry(t *testing.T) {
	forModes(t, func(t *testing.T, mode string) {
		h := newHarness(t, mode, Options{Retry: RetryPolicy{Delays: []time.Duration{time.Minute}}})
		require.NoError(t, h.e.Register(Queue{Name: "q", Handler: h.record(func(ctx context.Context, d *Delivery) error {
			if string(d.Payload) == "fails" {
				return errors.New("down")
			}
			return nil
		})}))
		// Fired after its deliver-by (the clock jumps past both): dropped.
		_, err := h.e.Schedule(bg, Message{Dest: "local://q", Due: t0.Add(10 * time.Second), Expires: t0.Add(10*time.Second + time.Millisecond), Payload: []byte("late")})
		require.NoError(t, err)
		// Fails, and its retry would be after the deliver-by: expired.
		_, err = h.e.Schedule(bg, Message{Dest: "local://q", Expires: t0.Add(30 * time.Second), Payload: []byte("fails")})
		require.NoError(t, err)
		h.settle()
		h.advance(11 * time.Second)
		h.advance(time.Minute)
		require.Equal(t, []string{"fails"}, payloads(h.deliveries()))
		st := h.e.Stats()
		require.EqualValues(t, 2, st.Expired)
		require.EqualValues(t, 0, st.Delivered)
	})
}

func TestOrderedQueue(t *testing.T) {
	forModes(t, func(t *testing.T, mode string) {
		var cur, peak atomic.Int32
		h := newHarness(t, mode, Options{Shards: 4})
		require.NoError(t, h.e.Register(Queue{Name: "ord", Ordered: true, Handler: h.record(func(ctx context.Context, d *Delivery) error {
			if c := cur.Add(1); c > peak.Load() {
				peak.Store(c)
			}
			defer cur.Add(-1)
			return nil
		})}))
		var msgs []Message
		for i := 199; i >= 0; i-- {
			msgs = append(msgs, Message{Dest: "local://ord", Due: t0.Add(time.Duration(i) * time.Millisecond), Payload: []byte(fmt.Sprintf("%03d", i))})
		}
		_, err := h.e.ScheduleBatch(bg, msgs)
		require.NoError(t, err)
		h.advance(time.Second)
		got := payloads(h.deliveries())
		require.Len(t, got, 200)
		for i := range got {
			require.Equal(t, fmt.Sprintf("%03d", i), got[i])
		}
		require.EqualValues(t, 1, peak.Load())
	})
}

func TestParallelismAndSlowDestination(t *testing.T) {
	h := newHarness(t, "memory", Options{Dispatchers: 8, MaxBatch: 1})
	release := make(chan struct{})
	var cur, peak atomic.Int32
	started := make(chan struct{}, 100)
	require.NoError(t, h.e.Register(Queue{Name: "slow", Parallelism: 2, Handler: func(ctx context.Context, d *Delivery) error {
		if c := cur.Add(1); c > peak.Load() {
			peak.Store(c)
		}
		started <- struct{}{}
		<-release
		cur.Add(-1)
		return nil
	}}))
	fastDone := make(chan struct{}, 20)
	require.NoError(t, h.e.Register(Queue{Name: "fast"}.withHandler(h.record(func(context.Context, *Delivery) error {
		fastDone <- struct{}{}
		return nil
	}))))
	for range 10 {
		h.schedule("local://slow", 0, "s")
	}
	<-started
	<-started
	for i := range 20 {
		h.schedule("local://fast", 0, fmt.Sprint(i))
	}
	// The fast queue drains although the slow one holds its two slots.
	deadline := time.After(10 * time.Second)
	for range 20 {
		select {
		case <-deadline:
			t.Fatalf("fast queue stalled behind slow: %d delivered", len(h.deliveries()))
		case <-fastDone:
		}
	}
	close(release)
	h.settle()
	require.EqualValues(t, 2, peak.Load())
	require.EqualValues(t, 30, h.e.Stats().Delivered)
}

// With a ready bound and batches far smaller than the backlog, every due
// message still goes out, and nothing is left in flight.
func TestTinyReadyBoundAndBatchDeliverEverything(t *testing.T) {
	h := newHarness(t, "memory", Options{Shards: 1, MaxReady: 16, MaxBatch: 4, Dispatchers: 2, Queues: []Queue{{Name: "q"}}})
	var msgs []Message
	for i := range 1000 {
		msgs = append(msgs, Message{Dest: "local://q", Payload: []byte(fmt.Sprint(i))})
	}
	_, err := h.e.ScheduleBatch(bg, msgs)
	require.NoError(t, err)
	h.settle()
	require.Len(t, h.deliveries(), 1000)
	require.EqualValues(t, 0, h.e.Stats().InFlight)
}

func TestWallClockStepBackNeverEarly(t *testing.T) {
	h := newHarness(t, "memory", Options{Queues: []Queue{{Name: "q"}}})
	h.schedule("local://q", 10*time.Second, "x")
	h.settle()                       // in the wheel, 10 s ahead
	h.clk.StepWall(-5 * time.Second) // NTP steps the wall clock back
	h.advance(10 * time.Second)      // monotonic 10 s: the wheel releases it
	require.Empty(t, h.deliveries(), "wall clock says 5 s early")
	require.EqualValues(t, 1, h.e.Stats().EarlyCaught)
	h.advance(5 * time.Second)
	got := h.deliveries()
	require.Len(t, got, 1)
	require.False(t, got[0].at.Before(got[0].due))
}

func TestShutdownDrainsInFlight(t *testing.T) {
	forModes(t, func(t *testing.T, mode string) {
		h := newHarness(t, mode, Options{})
		started, release := h.blockingQueue("q")
		h.schedule("local://q", 0, "x")
		<-started
		done := make(chan error, 1)
		go func() { done <- h.e.Shutdown(bg) }()
		select {
		case err := <-done:
			t.Fatalf("Shutdown returned %v with a handler in flight", err)
		case <-time.After(20 * time.Millisecond):
		}
		close(release)
		require.NoError(t, <-done)
		require.EqualValues(t, 1, h.e.Stats().Delivered)
		_, err := h.e.Schedule(bg, Message{Dest: "local://q"})
		require.ErrorIs(t, err, ErrClosed)
		require.ErrorIs(t, h.e.Shutdown(bg), ErrClosed)
		h.e = nil
	})
}

func TestShutdownTimeoutCancelsHandlers(t *testing.T) {
	h := newHarness(t, "memory", Options{})
	started := make(chan struct{}, 1)
	require.NoError(t, h.e.Register(Queue{Name: "q", Handler: func(ctx context.Context, d *Delivery) error {
		started <- struct{}{}
		<-ctx.Done()
		return ctx.Err()
	}}))
	h.schedule("local://q", 0, "x")
	<-started
	ctx, cancel := context.WithCancel(bg)
	cancel()
	require.ErrorIs(t, h.e.Shutdown(ctx), context.Canceled)
	h.e = nil
}

func TestValidateErrors(t *testing.T) {
	for _, c := range []struct {
		o    Options
		want string
	}{
		{Options{Shards: -1}, "Shards"},
		{Options{Shards: 300}, "Shards"},
		{Options{Tick: -1}, "Tick"},
		{Options{Tick: 2 * time.Second}, "Tick"},
		{Options{Window: time.Millisecond}, "Window"},
		{Options{MaxPayload: -1}, "MaxPayload"},
		{Options{Dispatchers: -1}, "Dispatchers"},
		{Options{MaxBatch: 1 << 20}, "MaxBatch"},
		{Options{MaxReady: 2}, "MaxReady"},
		{Options{MaxInFlight: -1}, "MaxInFlight"},
		{Options{Retry: RetryPolicy{Jitter: 2}}, "Jitter"},
		{Options{Retry: RetryPolicy{Base: time.Hour, Max: time.Second}}, "Base"},
		{Options{Destinations: []DestinationOptions{{}}}, "Prefix"},
		{Options{Queues: []Queue{{Name: "a/b", Handler: func(context.Context, *Delivery) error { return nil }}}}, "Name"},
		{Options{Queues: []Queue{{Name: "a"}}}, "Handler"},
	} {
		err := c.o.Validate()
		require.ErrorIs(t, err, ErrInvalid, "%+v", c.o)
		require.Contains(t, err.Error(), c.want)
	}
	require.NoError(t, Options{}.Validate())
	require.Contains(t, Options{}.String(), "memory")
}

func TestScheduleValidation(t *testing.T) {
	h := newHarness(t, "memory", Options{MaxPayload: 10, Queues: []Queue{{Name: "q"}}})
	for _, m := range []Message{
		{},
		{Dest: "local://missing"},
		{Dest: "https://example.com/x"},
		{Dest: "local://q", Payload: make([]byte, 11)},
		{Dest: "local://q", Headers: []Header{{Key: "Hourglass-Id", Value: "x"}}},
	} {
		_, err := h.e.Schedule(bg, m)
		require.Error(t, err, "%+v", m)
	}
	_, err := h.e.ScheduleBatch(bg, []Message{{Dest: "local://q"}, {Dest: "bad"}})
	require.Error(t, err)
	require.EqualValues(t, 0, h.e.Stats().Scheduled)
}

func TestMaxPending(t *testing.T) {
	h := newHarness(t, "memory", Options{Shards: 1, MaxPending: 3, Queues: []Queue{{Name: "q"}}})
	for range 3 {
		h.schedule("local://q", time.Hour, "x")
	}
	_, err := h.e.ScheduleIn(bg, time.Hour, Message{Dest: "local://q"})
	require.ErrorIs(t, err, ErrFull)
}

func TestListAndSummary(t *testing.T) {
	forModes(t, func(t *testing.T, mode string) {
		h := newHarness(t, mode, Options{Shards: 3, Queues: []Queue{{Name: "a"}, {Name: "b"}}})
		for i := range 30 {
			q := "a"
			if i%3 == 0 {
				q = "b"
			}
			h.schedule("local://"+q, time.Duration(i+1)*time.Minute, fmt.Sprint(i))
		}
		var all []Info
		q := ListQuery{Limit: 7}
		for {
			page, next, err := h.e.List(bg, q)
			require.NoError(t, err)
			all = append(all, page...)
			if next.ID == 0 {
				break
			}
			q.After = next
		}
		require.Len(t, all, 30)
		for i := 1; i < len(all); i++ {
			require.True(t, all[i-1].Message.Due.Before(all[i].Message.Due))
		}
		page, _, err := h.e.List(bg, ListQuery{Dest: "local://b", From: t0.Add(5 * time.Minute), To: t0.Add(20 * time.Minute)})
		require.NoError(t, err)
		require.Len(t, page, 5) // i = 6, 9, 12, 15, 18 → due 7..19 min
		sum, err := h.e.Summary(bg, 10*time.Minute, 3)
		require.NoError(t, err)
		require.EqualValues(t, 30, sum.Total)
		require.EqualValues(t, 10, sum.ByDest["local://b"])
		require.Equal(t, []int64{9, 10, 11}, sum.Buckets)
	})
}

func TestConcurrentScheduleCancel(t *testing.T) {
	forModes(t, func(t *testing.T, mode string) {
		h := newHarness(t, mode, Options{Shards: 4, Queues: []Queue{{Name: "q"}}})
		var wg sync.WaitGroup
		var cancelled atomic.Int64
		for g := range 4 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := range 100 {
					id, err := h.e.ScheduleIn(bg, time.Duration(i%10+1)*time.Second, Message{Dest: "local://q", Payload: []byte(fmt.Sprint(g, i))})
					if err != nil {
						t.Error(err)
						return
					}
					if i%4 == 0 {
						if h.e.Cancel(bg, id) == nil {
							cancelled.Add(1)
						}
					}
				}
			}()
		}
		wg.Wait()
		h.advance(11 * time.Second)
		require.EqualValues(t, 400-cancelled.Load(), len(h.deliveries()))
		require.EqualValues(t, 100, cancelled.Load())
	})
}

func TestInFlightCannotBeCancelled(t *testing.T) {
	forModes(t, func(t *testing.T, mode string) {
		h := newHarness(t, mode, Options{})
		started, release := h.blockingQueue("q")
		id := h.schedule("local://q", 0, "x")
		<-started
		info, err := h.e.Get(bg, id)
		require.NoError(t, err)
		require.Equal(t, StateInFlight, info.State)
		require.ErrorIs(t, h.e.Cancel(bg, id), ErrInFlight)
		require.ErrorIs(t, h.e.Reschedule(bg, id, t0.Add(time.Hour)), ErrInFlight)
		close(release)
		h.settle()
		_, err = h.e.Get(bg, id)
		require.ErrorIs(t, err, ErrNotFound)
		require.EqualValues(t, 1, h.e.Stats().Delivered)
	})
}

func TestDestinationPolicyOverride(t *testing.T) {
	fs := &fakeSender{}
	reg := transport.NewRegistry()
	require.NoError(t, reg.Register(fs, "fake"))
	h := newHarness(t, "memory", Options{Transports: reg, Retry: RetryPolicy{MaxAttempts: 5},
		Destinations: []DestinationOptions{{Prefix: "fake://once", Retry: RetryPolicy{MaxAttempts: 1}, MaxInFlight: 1}}})
	_, err := h.e.Schedule(bg, Message{Dest: "fake://once/x", Payload: []byte("forgot")})
	require.NoError(t, err)
	_, err = h.e.Schedule(bg, Message{Dest: "fake://other", Payload: []byte("forgot")})
	require.NoError(t, err)
	h.settle()
	st := h.e.Stats()
	require.EqualValues(t, 1, st.DeadLettered, "fake://once gives up after one attempt")
	require.EqualValues(t, 1, st.Retried)
}

// blockingQueue registers queue name with a handler that signals started,
// then holds its delivery until release is closed.
func (h *harness) blockingQueue(name string) (started <-chan struct{}, release chan struct{}) {
	h.t.Helper()
	st := make(chan struct{}, 1)
	release = make(chan struct{})
	require.NoError(h.t, h.e.Register(Queue{Name: name, Handler: func(ctx context.Context, d *Delivery) error {
		st <- struct{}{}
		<-release
		return nil
	}}))
	return st, release
}
