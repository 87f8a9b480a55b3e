package engine

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/require"
)

// saturated is an engine (inside a synctest bubble) whose one shard lags:
// both of its destinations, local://a and local://b, hold their handlers
// until release is closed, so their ready queues fill MaxReady and the
// wheel keeps the rest of their due messages, a second behind the clock.
// local://h's one message is in its handler, which waits for releaseH and
// then schedules a message itself, sending the error on fromHandler.
type saturated struct {
	e                 *Engine
	release, releaseH chan struct{}
	fromHandler       chan error
}

func newSaturated(t *testing.T, lag time.Duration) *saturated {
	t.Helper()
	sat := &saturated{release: make(chan struct{}), releaseH: make(chan struct{}), fromHandler: make(chan error, 1)}
	hold := func(ctx context.Context, d *Delivery) error {
		select {
		case <-sat.release:
		case <-ctx.Done():
		}
		return nil
	}
	e, err := Open(context.Background(), Options{Shards: 1, MaxReady: 4, PushBackLag: lag, Logger: quietLogger(), Queues: []Queue{
		{Name: "a", Parallelism: 1, Handler: hold},
		{Name: "b", Parallelism: 1, Handler: hold},
		{Name: "h", Parallelism: 1, Handler: func(ctx context.Context, d *Delivery) error {
			<-sat.releaseH
			_, err := sat.e.Schedule(ctx, Message{Dest: "local://b"})
			sat.fromHandler <- err
			return nil
		}},
	}})
	require.NoError(t, err)
	sat.e = e
	t.Cleanup(func() {
		select {
		case <-sat.release:
		default:
			close(sat.release)
		}
		select {
		case <-sat.releaseH:
		default:
			close(sat.releaseH)
		}
		_ = e.Close()
	})
	ctx := context.Background()
	_, err = e.ScheduleIn(ctx, time.Millisecond, Message{Dest: "local://h"})
	require.NoError(t, err)
	for _, q := range []string{"a", "b"} {
		for range 20 {
			_, err := e.ScheduleIn(ctx, 10*time.Millisecond, Message{Dest: "local://" + q})
			require.NoError(t, err)
		}
	}
	time.Sleep(time.Second)
	synctest.Wait()
	return sat
}

// scheduleAsync schedules one message to local://a on its own goroutine.
func (sat *saturated) scheduleAsync(ctx context.Context) <-chan error {
	done := make(chan error, 1)
	go func() {
		_, err := sat.e.Schedule(ctx, Message{Dest: "local://a"})
		done <- err
	}()
	return done
}

// requireReturned returns the error a call sent on done, failing the test
// with why if it has not returned.
func requireReturned(t *testing.T, done <-chan error, why string) error {
	t.Helper()
	select {
	case err := <-done:
		return err
	default:
		t.Fatal(why)
		return nil
	}
}

func requireWaiting(t *testing.T, done <-chan error) {
	t.Helper()
	select {
	case err := <-done:
		t.Fatalf("Schedule returned (%v) while the engine was behind; want it to wait", err)
	default:
	}
}

// A producer that outruns the firing side waits in Schedule, writing
// nothing, until the engine has caught up; then its message is scheduled.
func TestPushBackHoldsSchedulesUntilTheEngineCatchesUp(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		sat := newSaturated(t, 100*time.Millisecond)
		before := sat.e.Stats().Scheduled
		done := sat.scheduleAsync(context.Background())
		synctest.Wait()
		requireWaiting(t, done)
		require.Equal(t, before, sat.e.Stats().Scheduled, "a waiting Schedule writes nothing")

		close(sat.release)
		synctest.Wait()
		require.NoError(t, requireReturned(t, done, "Schedule still waits after the engine caught up"))
		st := sat.e.Stats()
		require.Equal(t, before+1, st.Scheduled)
		require.EqualValues(t, 1, st.PushBacks)
	})
}

// A handler's own Schedule never waits for push back: the backlog it is
// part of draining could otherwise never drain.
func TestPushBackNeverHoldsAHandler(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		sat := newSaturated(t, 100*time.Millisecond)
		requireWaiting(t, sat.scheduleAsync(context.Background())) // behind now
		close(sat.releaseH)
		synctest.Wait()
		require.NoError(t, requireReturned(t, sat.fromHandler, "a handler's Schedule waits for push back"))
	})
}

// A waiting producer whose ctx ends hears ctx's error, and nothing of its
// call is scheduled.
func TestPushBackWaitEndsWithTheContext(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		sat := newSaturated(t, 100*time.Millisecond)
		before := sat.e.Stats().Scheduled
		ctx, cancel := context.WithCancel(context.Background())
		done := sat.scheduleAsync(ctx)
		synctest.Wait()
		requireWaiting(t, done)
		cancel()
		require.ErrorIs(t, <-done, context.Canceled)
		close(sat.release)
		synctest.Wait()
		require.Equal(t, before, sat.e.Stats().Scheduled)
	})
}

// Close does not wait for producers held by push back: they hear ErrClosed.
func TestPushBackWaitEndsWithClose(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		sat := newSaturated(t, 100*time.Millisecond)
		done := sat.scheduleAsync(context.Background())
		synctest.Wait()
		requireWaiting(t, done)
		require.NoError(t, sat.e.Close())
		require.ErrorIs(t, <-done, ErrClosed)
	})
}

// A negative PushBackLag turns push back off: the same lagging engine
// takes the message at once.
func TestPushBackOff(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		sat := newSaturated(t, -1)
		done := sat.scheduleAsync(context.Background())
		synctest.Wait()
		require.NoError(t, requireReturned(t, done, "Schedule waited with push back off"))
		require.Zero(t, sat.e.Stats().PushBacks)
	})
}

// Push back is per destination when only that destination lags: producers
// of a hung queue wait, producers of another queue on the same shard don't.
func TestPushBackHoldsOnlyTheLaggingDestination(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		release := make(chan struct{})
		e, err := Open(context.Background(), Options{Shards: 1, MaxBatch: 1, Logger: quietLogger(), Queues: []Queue{
			{Name: "slow", Parallelism: 1, Handler: func(ctx context.Context, d *Delivery) error {
				select {
				case <-release:
				case <-ctx.Done():
				}
				return nil
			}},
			{Name: "fast", Handler: func(context.Context, *Delivery) error { return nil }},
		}})
		require.NoError(t, err)
		defer func() { _ = e.Close() }()
		defer close(release)
		ctx := context.Background()
		for range 10 {
			_, err := e.ScheduleIn(ctx, time.Millisecond, Message{Dest: "local://slow"})
			require.NoError(t, err)
		}
		time.Sleep(time.Second)
		synctest.Wait()

		_, err = e.Schedule(ctx, Message{Dest: "local://fast"})
		require.NoError(t, err, "another destination is not held")
		slow := make(chan error, 1)
		go func() {
			_, err := e.Schedule(ctx, Message{Dest: "local://slow"})
			slow <- err
		}()
		synctest.Wait()
		requireWaiting(t, slow)
	})
}

// The property push back exists for: producers that offer four times what
// a destination's handler delivers see their schedules paced, and the
// lateness of what is delivered stays bounded; without push back it grows
// with the run. Batches of 16 keep the wait inside a batch short. In a synctest bubble the handler's 1 ms per message and the
// producers' 1 ms between calls are exact.
func TestPushBackBoundsLatenessWhenProducersOutrunTheHandler(t *testing.T) {
	run := func(t *testing.T, lag time.Duration) (maxLate time.Duration, scheduled int64) {
		synctest.Test(t, func(t *testing.T) {
			var late atomic.Int64
			e, err := Open(context.Background(), Options{Shards: 1, MaxBatch: 16, PushBackLag: lag, Logger: quietLogger(), Queues: []Queue{
				{Name: "q", Parallelism: 1, Handler: func(ctx context.Context, d *Delivery) error {
					time.Sleep(time.Millisecond)
					if l := int64(time.Since(d.Due)); l > late.Load() {
						late.Store(l)
					}
					return nil
				}},
			}})
			require.NoError(t, err)
			var n atomic.Int64
			var g sync.WaitGroup
			end := time.Now().Add(2 * time.Second)
			for range 4 {
				g.Go(func() {
					for time.Now().Before(end) {
						if _, err := e.ScheduleIn(context.Background(), 10*time.Millisecond, Message{Dest: "local://q"}); err == nil {
							n.Add(1)
						}
						time.Sleep(time.Millisecond)
					}
				})
			}
			g.Wait()
			require.NoError(t, e.WaitIdle(context.Background()))
			require.NoError(t, e.Shutdown(context.Background()))
			maxLate, scheduled = time.Duration(late.Load()), n.Load()
		})
		return maxLate, scheduled
	}
	lateOn, nOn := run(t, 100*time.Millisecond)
	lateOff, nOff := run(t, -1)
	t.Logf("push back on: %d scheduled in 2 s, max lateness %v; off: %d scheduled, max lateness %v", nOn, lateOn, nOff, lateOff)
	// The bound: a lag of 100 ms is seen when four times that much work is
	// queued (the producers offer 4×), so ~400 ms, and pacing drains it.
	require.Less(t, lateOn, time.Second, "lateness with push back")
	require.Less(t, nOn, int64(3000), "schedules paced near the handler's 1,000/s")
	require.Greater(t, lateOff, 2*time.Second, "without push back the backlog grows (the test can tell them apart)")
}
