package engine

// Lifecycle and handler promises, each as a test:
// Shutdown and Close under handlers that ignore their ctx or call back into
// the engine, per-delivery deadlines on the FakeClock, slow messages inside
// a batch, Delivery methods after the handler returned, Cancel/Reschedule
// racing each other and messages waiting in ready queues, cascades a full
// store refuses, the memory bounds (MaxPending with a durable store,
// per-destination state, memory dead letters), and a schedule that races
// the loader paging in a backlog after Open.
//
// Handlers that block wait on channels the test closes in a t.Cleanup, so a
// failing check never leaves a goroutine behind for goleak. Waits on real
// time are safety nets only (failing the test), never the way a test knows
// something happened.

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hourglassmq/hourglass/memstore"
	"github.com/hourglassmq/hourglass/store"
	"github.com/hourglassmq/hourglass/transport"
	"github.com/hourglassmq/hourglass/wal"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// safety bounds every wait on another goroutine: reaching it fails the test.
const safety = 20 * time.Second

// gate is a channel a test closes to let blocked handlers go; the cleanup
// closes it too, so a failing test leaves no handler behind.
func gate(t *testing.T) (wait <-chan struct{}, open func()) {
	ch := make(chan struct{})
	open = sync.OnceFunc(func() { close(ch) })
	t.Cleanup(open)
	return ch, open
}

func recv[T any](t *testing.T, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(safety):
		t.Fatalf("safety timeout waiting for %s", what)
	}
	var zero T
	return zero
}

// TestShutdownReturnsWhenCtxEndsDespiteStuckHandler: Shutdown(ctx) returns
// ctx's error once ctx ends, like http.Server.Shutdown, even while a
// handler ignores its ctx; the engine is then closed (Done), and a durable
// store still holds the abandoned message, attempt not counted.
func TestShutdownReturnsWhenCtxEndsDespiteStuckHandler(t *testing.T) {
	forModes(t, func(t *testing.T, mode string) {
		h := newHarness(t, mode, Options{})
		hold, unblock := gate(t)
		started := make(chan struct{}, 1)
		require.NoError(t, h.e.Register(Queue{Name: "stuck", Handler: func(context.Context, *Delivery) error {
			started <- struct{}{}
			<-hold // ignores its ctx
			return nil
		}}))
		id := h.schedule("local://stuck", 0, "x")
		recv(t, started, "the handler to start")
		ctx, cancel := context.WithCancel(bg)
		res := make(chan error, 1)
		go func() { res <- h.e.Shutdown(ctx) }()
		cancel()
		err := recv(t, res, "Shutdown to return after its ctx ended")
		require.ErrorIs(t, err, context.Canceled)
		recv(t, h.e.Done(), "Done after Shutdown returned")
		_, err = h.e.Schedule(bg, Message{Dest: "local://stuck"})
		require.ErrorIs(t, err, ErrClosed)
		unblock()
		if mode == "durable" {
			h.open()
			info, err := h.e.Get(bg, id)
			require.NoError(t, err, "the abandoned message stays pending in a durable store")
			require.Equal(t, 0, info.Attempts, "an abandoned attempt is not counted")
		} else {
			h.e = nil
		}
	})
}

// TestShutdownFromHandler: Shutdown or Close called from inside a handler
// returns (no deadlock) and the engine finishes closing once the handler
// returns; a graceful Shutdown still commits the calling handler's ack.
func TestShutdownFromHandler(t *testing.T) {
	for _, how := range []string{"Shutdown", "Close"} {
		t.Run(how, func(t *testing.T) {
			forModes(t, func(t *testing.T, mode string) {
				h := newHarness(t, mode, Options{})
				res := make(chan error, 1)
				require.NoError(t, h.e.Register(Queue{Name: "q", Handler: func(context.Context, *Delivery) error {
					if how == "Close" {
						res <- h.e.Close()
					} else {
						res <- h.e.Shutdown(bg)
					}
					return nil
				}}))
				id := h.schedule("local://q", 0, "x")
				require.NoError(t, recv(t, res, how+" called from a handler to return"))
				recv(t, h.e.Done(), "the engine to finish closing after the handler returned")
				if mode == "durable" && how == "Shutdown" {
					h.open()
					_, err := h.e.Get(bg, id)
					require.ErrorIs(t, err, ErrNotFound, "the handler returned nil during a graceful Shutdown: its ack is committed")
				} else {
					h.e = nil
				}
			})
		})
	}
}

// TestCloseFromHandlerStopsAtOnce: Close stops at once wherever it is
// called from. Called from one handler while another handler ignores its
// ctx, the engine must still finish closing (Done) without waiting for the
// stuck one; so must a Shutdown from a handler whose ctx then ends.
func TestCloseFromHandlerStopsAtOnce(t *testing.T) {
	for _, how := range []string{"Close", "Shutdown(ctx) then ctx ends"} {
		t.Run(how, func(t *testing.T) {
			h := newHarness(t, "memory", Options{})
			hold, unblock := gate(t)
			stuck := make(chan struct{}, 1)
			require.NoError(t, h.e.Register(Queue{Name: "stuck", Handler: func(context.Context, *Delivery) error {
				stuck <- struct{}{}
				<-hold
				return nil
			}}))
			ctx, cancel := context.WithCancel(bg)
			defer cancel()
			res := make(chan error, 1)
			require.NoError(t, h.e.Register(Queue{Name: "closer", Handler: func(context.Context, *Delivery) error {
				if how == "Close" {
					res <- h.e.Close()
				} else {
					res <- h.e.Shutdown(ctx)
				}
				return nil
			}}))
			h.schedule("local://stuck", 0, "stuck")
			recv(t, stuck, "the stuck handler to start")
			h.schedule("local://closer", 0, "closer")
			require.NoError(t, recv(t, res, how+" from a handler to return"))
			cancel()
			select {
			case <-h.e.Done():
			case <-time.After(2 * time.Second): // closing takes milliseconds; this only bounds a failing run
				t.Errorf("%s from a handler: the engine is still waiting for a handler that ignores its ctx 2 s later", how)
			}
			unblock()
			recv(t, h.e.Done(), "Done once the stuck handler returned")
			h.e = nil
		})
	}
}

// TestCloseStopsAtOnce: Close returns promptly with handlers that ignore
// their ctx; nothing is counted for the abandoned attempts, and a durable
// store delivers them after a restart.
func TestCloseStopsAtOnce(t *testing.T) {
	forModes(t, func(t *testing.T, mode string) {
		h := newHarness(t, mode, Options{})
		hold, unblock := gate(t)
		started := make(chan struct{}, 4)
		require.NoError(t, h.e.Register(Queue{Name: "stuck", Parallelism: 4, Handler: func(context.Context, *Delivery) error {
			started <- struct{}{}
			<-hold
			return nil
		}}))
		var ids []ID
		for i := range 4 {
			ids = append(ids, h.schedule("local://stuck", 0, fmt.Sprint(i)))
		}
		for range 4 {
			recv(t, started, "the handlers to start")
		}
		res := make(chan error, 1)
		go func() { res <- h.e.Close() }()
		require.NoError(t, recv(t, res, "Close to return with four stuck handlers"))
		recv(t, h.e.Done(), "Done after Close")
		require.ErrorIs(t, h.e.Close(), ErrClosed)
		unblock()
		if mode == "durable" {
			h.opts.Queues = []Queue{{Name: "stuck", Handler: h.record(nil)}}
			h.open()
			h.settle()
			require.Len(t, h.deliveries(), 4, "the abandoned messages are delivered after a restart")
			var got []ID
			for _, r := range h.deliveries() {
				require.Equal(t, 1, r.attempt, "an abandoned attempt is not counted")
				got = append(got, r.id)
			}
			require.ElementsMatch(t, ids, got, "under the IDs they were scheduled with")
		} else {
			h.e = nil
		}
	})
}

// TestEveryCallAfterCloseFails: after Close every API call, Register
// included, fails with ErrClosed and does nothing.
func TestEveryCallAfterCloseFails(t *testing.T) {
	forModes(t, func(t *testing.T, mode string) {
		h := newHarness(t, mode, Options{Queues: []Queue{{Name: "q"}}})
		id := h.schedule("local://q", time.Hour, "x")
		require.NoError(t, h.e.Close())
		ok := func(context.Context, *Delivery) error { return nil }
		calls := map[string]func() error{
			"Register":      func() error { return h.e.Register(Queue{Name: "late", Handler: ok}) },
			"Schedule":      func() error { _, err := h.e.Schedule(bg, Message{Dest: "local://q"}); return err },
			"ScheduleIn":    func() error { _, err := h.e.ScheduleIn(bg, time.Second, Message{Dest: "local://q"}); return err },
			"ScheduleAt":    func() error { _, err := h.e.ScheduleAt(bg, t0, Message{Dest: "local://q"}); return err },
			"ScheduleBatch": func() error { _, err := h.e.ScheduleBatch(bg, []Message{{Dest: "local://q"}}); return err },
			"Cancel":        func() error { return h.e.Cancel(bg, id) },
			"Reschedule":    func() error { return h.e.Reschedule(bg, id, t0) },
			"Get":           func() error { _, err := h.e.Get(bg, id); return err },
			"GetByKey":      func() error { _, err := h.e.GetByKey(bg, "k"); return err },
			"List":          func() error { _, _, err := h.e.List(bg, ListQuery{}); return err },
			"Summary":       func() error { _, err := h.e.Summary(bg, 0, 0); return err },
			"DeadLetters":   func() error { _, _, err := h.e.DeadLetters(bg, 0, 0); return err },
			"ReplayDead":    func() error { return h.e.ReplayDead(bg, []ID{id}, time.Time{}) },
			"PurgeDead":     func() error { _, err := h.e.PurgeDead(bg, []ID{id}); return err },
			"PurgeDead all": func() error { _, err := h.e.PurgeDead(bg, nil); return err },
			"WaitIdle":      func() error { return h.e.WaitIdle(bg) },
			"Shutdown":      func() error { return h.e.Shutdown(bg) },
			"Close":         func() error { return h.e.Close() },
		}
		for name, call := range calls {
			assert.ErrorIs(t, call(), ErrClosed, name)
		}
		require.NotPanics(t, func() { _ = h.e.Stats() })
		h.e = nil
	})
}

// TestDeliveryDeadlineIsQueueTimeout: each delivery's ctx carries a deadline
// of Fired + Queue.Timeout (DefaultHandlerTimeout when unset), measured on
// the engine's Clock.
func TestDeliveryDeadlineIsQueueTimeout(t *testing.T) {
	forModes(t, func(t *testing.T, mode string) {
		h := newHarness(t, mode, Options{})
		type seen struct {
			deadline time.Time
			ok       bool
			fired    time.Time
		}
		got := make(chan seen, 10)
		hd := func(ctx context.Context, d *Delivery) error {
			dl, ok := ctx.Deadline()
			got <- seen{dl, ok, d.Fired}
			return nil
		}
		require.NoError(t, h.e.Register(Queue{Name: "t30", Timeout: 30 * time.Second, Handler: hd}))
		require.NoError(t, h.e.Register(Queue{Name: "default", Handler: hd}))
		require.NoError(t, h.e.Register(Queue{Name: "forever", Timeout: time.Duration(1<<63 - 1), Handler: hd}))
		for _, c := range []struct {
			q    string
			want time.Duration
		}{{"t30", 30 * time.Second}, {"default", DefaultHandlerTimeout}, {"forever", 1<<63 - 1}} {
			h.schedule("local://"+c.q, time.Second, c.q)
			h.advance(time.Second)
			s := recv(t, got, "the handler")
			require.True(t, s.ok, "%s: the ctx has a deadline", c.q)
			require.Equal(t, h.clk.Now(), s.fired)
			require.True(t, s.deadline.Equal(s.fired.Add(c.want)), "%s: deadline %s, want fired + %v", c.q, s.deadline, c.want)
		}
		require.EqualValues(t, 3, h.e.Stats().Delivered)
	})
}

// TestHandlerOverrunIsAFailedAttempt: a handler that ignores its ctx past
// Queue.Timeout is abandoned: its attempt fails and is retried by the
// policy while the stuck call still runs, its ctx ends with
// DeadlineExceeded, and its Delivery refuses late cascades. A handler that
// returns nil after its deadline failed too.
func TestHandlerOverrunIsAFailedAttempt(t *testing.T) {
	forModes(t, func(t *testing.T, mode string) {
		h := newHarness(t, mode, Options{})
		hold, unblock := gate(t)
		type call struct {
			ctx context.Context
			d   *Delivery
		}
		calls := make(chan call, 10)
		require.NoError(t, h.e.Register(Queue{Name: "q", Timeout: 10 * time.Second, Parallelism: 2,
			Retry: RetryPolicy{Delays: []time.Duration{time.Second}, MaxAttempts: 5},
			Handler: func(ctx context.Context, d *Delivery) error {
				calls <- call{ctx, d}
				if d.Attempt == 1 {
					switch string(d.Payload) {
					case "stuck":
						<-hold
					case "late":
						h.clk.Advance(10 * time.Second) // runs to its deadline, then says yes
					}
				}
				return nil
			}}))
		id := h.schedule("local://q", 0, "stuck")
		first := recv(t, calls, "the first attempt")
		h.advance(10 * time.Second) // its deadline: abandoned
		info, err := h.e.Get(bg, id)
		require.NoError(t, err)
		require.Equal(t, StatePending, info.State, "an overrun is a failed attempt, retried")
		require.Equal(t, 1, info.Attempts)
		require.True(t, info.Message.Due.Equal(h.clk.Now().Add(time.Second)), "retried by the policy: due %s", info.Message.Due.UTC())
		require.Error(t, first.ctx.Err(), "the stuck call's ctx ended")
		assert.ErrorIs(t, first.ctx.Err(), context.DeadlineExceeded, "a ctx whose deadline passed reports DeadlineExceeded")
		require.ErrorIs(t, first.d.Send(Message{Dest: "local://q"}), ErrDeliveryDone, "the abandoned call's Delivery refuses cascades")
		h.advance(time.Second)
		second := recv(t, calls, "the second attempt, while the first is still stuck")
		require.Equal(t, 2, second.d.Attempt)
		st := h.e.Stats()
		require.EqualValues(t, 1, st.Retried)
		require.EqualValues(t, 1, st.Delivered)
		unblock()

		lateID := h.schedule("local://q", 0, "late")
		recv(t, calls, "the late handler")
		h.settle()
		info, err = h.e.Get(bg, lateID)
		require.NoError(t, err, "a handler that said yes after its deadline failed its attempt")
		require.Equal(t, 1, info.Attempts)
		h.advance(time.Second)
		recv(t, calls, "the late message's retry")
		_, err = h.e.Get(bg, lateID)
		require.ErrorIs(t, err, ErrNotFound)
	})
}

// TestSlowMessageDoesNotHoldUpItsBatch: with Parallelism 2, one message of
// a batch that blocks does not stop the other nine from being handled.
func TestSlowMessageDoesNotHoldUpItsBatch(t *testing.T) {
	forModes(t, func(t *testing.T, mode string) {
		h := newHarness(t, mode, Options{Shards: 1})
		hold, unblock := gate(t)
		done := make(chan string, 20)
		require.NoError(t, h.e.Register(Queue{Name: "q", Parallelism: 2, Handler: func(_ context.Context, d *Delivery) error {
			if string(d.Payload) == "slow" {
				<-hold
			}
			done <- string(d.Payload)
			return nil
		}}))
		msgs := []Message{{Dest: "local://q", Due: t0.Add(time.Second), Payload: []byte("slow")}}
		for i := range 9 {
			msgs = append(msgs, Message{Dest: "local://q", Due: t0.Add(time.Second), Payload: []byte(fmt.Sprint(i))})
		}
		_, err := h.e.ScheduleBatch(bg, msgs)
		require.NoError(t, err)
		h.clk.Advance(time.Second)
		for range 9 {
			require.NotEqual(t, "slow", recv(t, done, "the other nine while one blocks"))
		}
		unblock()
		require.Equal(t, "slow", recv(t, done, "the slow one"))
		h.settle()
		require.EqualValues(t, 10, h.e.Stats().Delivered)
	})
}

// TestDeliveryMethodsAfterReturnFail: once its handler returned, a
// Delivery's methods fail with ErrDeliveryDone and nothing is scheduled,
// whether the handler succeeded or failed, and from a goroutine it left.
func TestDeliveryMethodsAfterReturnFail(t *testing.T) {
	forModes(t, func(t *testing.T, mode string) {
		h := newHarness(t, mode, Options{Queues: []Queue{{Name: "sink"}}})
		kept := make(chan *Delivery, 4)
		later, goNow := gate(t)
		leftover := make(chan error, 1)
		require.NoError(t, h.e.Register(Queue{Name: "q", Retry: RetryPolicy{MaxAttempts: 1}, Handler: func(_ context.Context, d *Delivery) error {
			kept <- d
			if string(d.Payload) == "spawn" {
				go func() {
					<-later
					leftover <- d.Send(Message{Dest: "local://sink", Payload: []byte("from a goroutine")})
				}()
			}
			if string(d.Payload) == "fails" {
				return errors.New("no")
			}
			return nil
		}}))
		for _, p := range []string{"ok", "fails", "spawn"} {
			h.schedule("local://q", 0, p)
		}
		h.settle()
		before := h.e.Stats().StorePending
		for range 3 {
			d := recv(t, kept, "a delivery")
			require.ErrorIs(t, d.Send(Message{Dest: "local://sink"}), ErrDeliveryDone)
			require.ErrorIs(t, d.Schedule(Message{Dest: "local://sink", Due: t0.Add(time.Hour)}), ErrDeliveryDone)
			require.ErrorIs(t, d.ScheduleIn(time.Minute, Message{Dest: "local://sink"}), ErrDeliveryDone)
		}
		goNow()
		require.ErrorIs(t, recv(t, leftover, "the goroutine's Send"), ErrDeliveryDone)
		h.advance(time.Hour)
		require.Empty(t, h.deliveries(), "nothing a finished delivery sent may be delivered")
		require.Equal(t, before, h.e.Stats().StorePending)
	})
}

// TestConcurrentCancelRescheduleSerialize: Cancel and Reschedule racing on
// one message that is not being delivered never answer ErrInFlight: they
// take turns. Exactly one Cancel wins; the others, and Reschedules after
// it, find the message gone.
func TestConcurrentCancelRescheduleSerialize(t *testing.T) {
	for _, in := range []time.Duration{30 * time.Minute, 30 * time.Second} {
		forModes(t, func(t *testing.T, mode string) {
			h := newHarness(t, mode, Options{Queues: []Queue{{Name: "q"}}})
			id := h.schedule("local://q", in, "x")
			var wg sync.WaitGroup
			var inFlight, other atomic.Int64
			for g := range 8 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := range 15 {
						err := h.e.Reschedule(bg, id, t0.Add(in+time.Duration(g*100+i)*time.Millisecond))
						switch {
						case errors.Is(err, ErrInFlight):
							inFlight.Add(1)
						case err != nil:
							other.Add(1)
							t.Errorf("Reschedule: %v", err)
						}
						if _, err := h.e.Get(bg, id); err != nil {
							t.Errorf("Get: %v", err)
						}
					}
				}()
			}
			wg.Wait()
			require.Zero(t, inFlight.Load(), "ErrInFlight for a message due in %v that nobody delivers", in)
			var wins atomic.Int64
			for g := range 8 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					var err error
					if g%2 == 0 {
						err = h.e.Cancel(bg, id)
						if err == nil {
							wins.Add(1)
						}
					} else {
						err = h.e.Reschedule(bg, id, t0.Add(in))
					}
					if err != nil && !errors.Is(err, ErrNotFound) {
						t.Errorf("racing Cancel/Reschedule: %v (want nil or ErrNotFound)", err)
					}
				}()
			}
			wg.Wait()
			require.EqualValues(t, 1, wins.Load(), "exactly one Cancel wins")
			h.advance(in + time.Minute)
			require.Empty(t, h.deliveries(), "the cancelled message was delivered")
		})
	}
}

// TestCancelWhileWaitingInReadyQueue: a message that is due but waits in a
// ready queue behind a saturated destination is still pending: Get says so,
// Cancel removes it, Reschedule moves it.
func TestCancelWhileWaitingInReadyQueue(t *testing.T) {
	forModes(t, func(t *testing.T, mode string) {
		h := newHarness(t, mode, Options{Shards: 1, MaxBatch: 1})
		hold, unblock := gate(t)
		started := make(chan string, 10)
		var mu sync.Mutex
		var got []string
		require.NoError(t, h.e.Register(Queue{Name: "one", Parallelism: 1, Handler: func(_ context.Context, d *Delivery) error {
			mu.Lock()
			got = append(got, string(d.Payload))
			mu.Unlock()
			if string(d.Payload) == "first" {
				started <- "first"
				<-hold
			}
			return nil
		}}))
		h.schedule("local://one", 0, "first")
		recv(t, started, "the first message to block its queue")
		waiting := h.schedule("local://one", 0, "waiting")
		moved := h.schedule("local://one", 0, "moved")
		h.e.barrier() // both are due: taken off the wheel into the ready queue
		require.EqualValues(t, 3, h.e.Stats().Fired, "both waiting messages were taken off the wheel")
		for _, id := range []ID{waiting, moved} {
			info, err := h.e.Get(bg, id)
			require.NoError(t, err)
			require.Equal(t, StatePending, info.State, "waiting for a dispatcher is not in flight")
		}
		require.NoError(t, h.e.Cancel(bg, waiting))
		require.NoError(t, h.e.Reschedule(bg, moved, t0.Add(time.Hour)))
		unblock()
		h.settle()
		mu.Lock()
		require.Equal(t, []string{"first"}, got)
		mu.Unlock()
		h.advance(time.Hour)
		mu.Lock()
		require.Equal(t, []string{"first", "moved"}, got)
		mu.Unlock()
		require.EqualValues(t, 1, h.e.Stats().Cancelled)
	})
}

// TestCascadeRefusedByFullStoreIsRetried: a memory store with no room for
// a handler's cascades refuses the ack with them; the delivery is retried
// (never acked with its cascades dropped), and other messages of the batch
// are acked as usual.
func TestCascadeRefusedByFullStoreIsRetried(t *testing.T) {
	var retries []RetryInfo
	var mu sync.Mutex
	h := newHarness(t, "memory", Options{Shards: 1, MaxPending: 3,
		Events: Events{Retry: func(r RetryInfo) { mu.Lock(); retries = append(retries, r); mu.Unlock() }}})
	require.NoError(t, h.e.Register(Queue{Name: "sink", Handler: h.record(nil)}))
	require.NoError(t, h.e.Register(Queue{Name: "fan", Retry: RetryPolicy{Delays: []time.Duration{time.Second}, MaxAttempts: 5},
		Handler: h.record(func(_ context.Context, d *Delivery) error {
			if string(d.Payload) != "parent" {
				return nil
			}
			n := 4 // no room: 3 pending allowed
			if d.Attempt > 1 {
				n = 1
			}
			for i := range n {
				if err := d.Send(Message{Dest: "local://sink", Payload: []byte(fmt.Sprintf("child %d.%d", d.Attempt, i))}); err != nil {
					return err
				}
			}
			return nil
		})}))
	_, err := h.e.ScheduleBatch(bg, []Message{{Dest: "local://fan", Payload: []byte("parent")}, {Dest: "local://fan", Payload: []byte("plain")}})
	require.NoError(t, err)
	h.settle()
	require.ElementsMatch(t, []string{"parent", "plain"}, payloads(h.deliveries()), "no child of the refused cascade exists")
	page, _, err := h.e.List(bg, ListQuery{})
	require.NoError(t, err)
	require.Len(t, page, 1, "the parent is pending again")
	require.Equal(t, "parent", string(page[0].Message.Payload))
	require.Equal(t, 1, page[0].Attempts)
	mu.Lock()
	require.Len(t, retries, 1)
	require.True(t, errors.Is(retries[0].Err, ErrFull) || errors.Is(retries[0].Err, store.ErrFull), "the retry says the store is full: %v", retries[0].Err)
	mu.Unlock()
	h.advance(time.Second)
	require.ElementsMatch(t, []string{"parent", "plain", "parent", "child 2.0"}, payloads(h.deliveries()))
	require.Zero(t, h.e.Stats().StorePending)
}

// TestMaxPendingBoundsRAMWithDurableStore: with a durable store, a shard
// holds at most MaxPending messages in RAM while the store holds many more,
// whatever order they are scheduled in, and every message is still
// delivered once, never early.
func TestMaxPendingBoundsRAMWithDurableStore(t *testing.T) {
	const shards, maxPending, n = 2, 50, 1000
	h := newHarness(t, "durable", Options{Shards: shards, MaxPending: maxPending, Queues: []Queue{{Name: "q"}}})
	bound := int64(shards * maxPending)
	check := func(when string) {
		t.Helper()
		st := h.e.Stats()
		require.LessOrEqual(t, st.PendingTotal, bound, "%s: %d messages in RAM, bound %d (store holds %d)", when, st.PendingTotal, bound, st.StorePending)
		for i, p := range st.Pending {
			require.LessOrEqual(t, p, int64(maxPending), "%s: shard %d", when, i)
		}
	}
	// Latest first, so RAM fills with what is due last.
	for b := 9; b >= 0; b-- {
		var msgs []Message
		for i := range n / 10 {
			k := b*(n/10) + i
			msgs = append(msgs, Message{Dest: "local://q", Due: t0.Add(time.Second + time.Duration(k)*50*time.Millisecond), Payload: []byte(fmt.Sprint(k))})
		}
		_, err := h.e.ScheduleBatch(bg, msgs)
		require.NoError(t, err)
		h.settle()
		check(fmt.Sprintf("after batch %d", 9-b))
	}
	require.EqualValues(t, n, h.e.Stats().StorePending)
	for step := 0; step < 70; step++ {
		h.advance(time.Second)
		check(fmt.Sprint("step ", step))
	}
	got := h.deliveries()
	seen := map[string]bool{}
	for _, r := range got {
		require.False(t, seen[r.payload], "%s delivered twice", r.payload)
		seen[r.payload] = true
		require.False(t, r.at.Before(r.due), "early: %+v", r)
	}
	require.Len(t, seen, n)
}

// TestMaxPendingKeepsTheEarliestInRAM: when RAM is full of messages due
// later, a message due sooner is still delivered at its due time: a bound
// on RAM must not turn into an unbounded delay for what is due first.
func TestMaxPendingKeepsTheEarliestInRAM(t *testing.T) {
	h := newHarness(t, "durable", Options{Shards: 1, MaxPending: 10, Queues: []Queue{{Name: "q"}}})
	for i := range 10 {
		h.schedule("local://q", 50*time.Second+time.Duration(i)*time.Millisecond, fmt.Sprint("late ", i))
	}
	h.settle()
	h.schedule("local://q", time.Second, "soon")
	h.advance(time.Second)
	require.Equal(t, []string{"soon"}, payloads(h.deliveries()), "the message due in 1 s waits behind ten due in 50 s")
	require.EqualValues(t, 1, h.e.Stats().Evicted, "the latest eighth (one of ten) made room")
	h.advance(50 * time.Second)
	require.Len(t, h.deliveries(), 11, "the evicted message is paged in again and delivered")
}

// TestPerDestinationStateIsBounded: per-destination state does not grow
// with the number of distinct destination strings. Scheduling 100k
// distinct destinations creates none (a message's destination gets state
// only when it fires), cancelling them leaves none, and rounds of distinct
// destinations delivered keep the registry within twice one round's (its
// sweep drops idle entries as the registry doubles).
func TestPerDestinationStateIsBounded(t *testing.T) {
	reg := transport.NewRegistry()
	require.NoError(t, reg.Register(&fakeSender{}, "fake"))
	h := newHarness(t, "memory", Options{Transports: reg})
	heap := func() uint64 {
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		return ms.HeapAlloc
	}
	dests := func() int {
		h.e.destMu.RLock()
		defer h.e.destMu.RUnlock()
		return len(h.e.dests)
	}
	base := heap()
	const n, cancelled = 100_000, 5_000
	var ids []ID
	for lo := 0; lo < n; lo += store.MaxCallMessages {
		var msgs []Message
		for i := lo; i < min(n, lo+store.MaxCallMessages); i++ {
			msgs = append(msgs, Message{Dest: fmt.Sprintf("fake://host-%d.example/hook", i), Due: t0.Add(time.Hour)})
		}
		got, err := h.e.ScheduleBatch(bg, msgs)
		require.NoError(t, err)
		ids = append(ids, got...)
	}
	require.Zero(t, dests(), "scheduling created per-destination state")
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < cancelled; i += 4 {
				if err := h.e.Cancel(bg, ids[i]); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	require.Zero(t, dests(), "cancelled destinations left state behind")
	t.Logf("live heap: %d KiB before, %d KiB with 100k distinct destinations pending (%d cancelled)", base>>10, heap()>>10, cancelled)

	const round, rounds = 2500, 4
	for r := range rounds {
		var msgs []Message
		for i := range round {
			msgs = append(msgs, Message{Dest: fmt.Sprintf("fake://round-%d-%d.example/hook", r, i)})
		}
		_, err := h.e.ScheduleBatch(bg, msgs)
		require.NoError(t, err)
		h.settle()
		require.LessOrEqual(t, dests(), 2*round+1024, "round %d: delivered destinations pile up", r)
		t.Logf("round %d: %d destination entries kept after %d distinct destinations delivered", r, dests(), (r+1)*round)
	}
	require.EqualValues(t, rounds*round, h.e.Stats().Delivered)
}

// TestMemoryDeadLetterRetention: a memory store keeps at most MaxDead dead
// letters (the newest), frees the keys of those it drops, and drops dead
// letters older than DeadRetention even when no new one arrives.
func TestMemoryDeadLetterRetention(t *testing.T) {
	reject := func(context.Context, *Delivery) error { return Reject(errors.New("no")) }
	t.Run("MaxDead", func(t *testing.T) {
		h := newHarness(t, "memory", Options{Store: memstore.Options{MaxDead: 3}, Queues: []Queue{{Name: "r", Handler: reject}}})
		for i := range 5 {
			_, err := h.e.Schedule(bg, Message{Dest: "local://r", Key: fmt.Sprint("k", i), Payload: []byte(fmt.Sprint(i))})
			require.NoError(t, err)
			h.settle()
		}
		dls, _, err := h.e.DeadLetters(bg, 0, 10)
		require.NoError(t, err)
		var kept []string
		for _, d := range dls {
			kept = append(kept, string(d.Message.Payload))
		}
		require.ElementsMatch(t, []string{"2", "3", "4"}, kept)
		require.EqualValues(t, 3, h.e.Stats().Store.Dead)
		_, err = h.e.Schedule(bg, Message{Dest: "local://r", Key: "k0"})
		require.NoError(t, err, "the key of a dropped dead letter is free")
		_, err = h.e.Schedule(bg, Message{Dest: "local://r", Key: "k4"})
		require.ErrorIs(t, err, ErrDuplicate, "a kept dead letter keeps its key")
	})
	t.Run("DeadRetention", func(t *testing.T) {
		h := newHarness(t, "memory", Options{Store: memstore.Options{DeadRetention: time.Hour}, Queues: []Queue{{Name: "r", Handler: reject}}})
		_, err := h.e.Schedule(bg, Message{Dest: "local://r", Key: "old"})
		require.NoError(t, err)
		h.settle()
		require.EqualValues(t, 1, h.e.Stats().Store.Dead)
		h.advance(2 * time.Hour)
		dls, _, err := h.e.DeadLetters(bg, 0, 10)
		require.NoError(t, err)
		assert.Empty(t, dls, "a dead letter two hours old outlived a one-hour retention")
		_, err = h.e.Schedule(bg, Message{Dest: "local://r", Key: "old"})
		assert.NoError(t, err, "the expired dead letter's key is free")
	})
}

// gatedOpener opens a durable store whose Scan waits at a gate the test
// controls: the shard's loader is held mid-recovery while the test
// schedules, cancels and reschedules.
type gatedOpener struct {
	inner   wal.Options
	entered chan struct{} // a Scan reached the gate
	pass    chan struct{} // let one Scan through
	open    chan struct{} // closed: every Scan passes
}

func newGatedOpener(inner wal.Options) *gatedOpener {
	return &gatedOpener{inner: inner, entered: make(chan struct{}), pass: make(chan struct{}), open: make(chan struct{})}
}

func (o *gatedOpener) OpenStore(ctx context.Context, env store.Env) (store.Store, error) {
	st, err := o.inner.OpenStore(ctx, env)
	if err != nil {
		return nil, err
	}
	return &gatedStore{Store: st, o: o}, nil
}

type gatedStore struct {
	store.Store
	o *gatedOpener
}

func (s *gatedStore) Scan(ctx context.Context, q store.ScanQuery) ([]store.Message, store.Page, error) {
	safetyNet := time.After(safety) // never hold a shard forever
	select {
	case s.o.entered <- struct{}{}:
		select {
		case <-s.o.pass:
		case <-s.o.open:
		case <-safetyNet:
		}
	case <-s.o.open:
	case <-safetyNet:
	}
	return s.Store.Scan(ctx, q)
}

// TestScheduleDuringRecoveryIsDeliveredOnce: right after Open, while the
// shard pages a large overdue backlog in from the store (slowly: RAM holds
// only MaxPending, and every scan waits at a gate), messages are scheduled,
// cancelled and rescheduled between its scans. Every message is delivered
// exactly once (the cancelled one never), and a handler's RetryIn past the
// window is not called again early.
func TestScheduleDuringRecoveryIsDeliveredOnce(t *testing.T) {
	const backlog = 3000
	var mu sync.Mutex
	calls := map[string][]int{}
	handler := func(_ context.Context, d *Delivery) error {
		p := string(d.Payload)
		mu.Lock()
		calls[p] = append(calls[p], d.Attempt)
		mu.Unlock()
		if p == "retry-later" && d.Attempt == 1 {
			return RetryIn(2*time.Minute, errors.New("later"))
		}
		return nil
	}
	h := newHarness(t, "durable", Options{Shards: 1, MaxPending: 300, Queues: []Queue{{Name: "q", Handler: handler}}})
	var msgs []Message
	for i := range backlog {
		msgs = append(msgs, Message{Dest: "local://q", Due: t0.Add(time.Duration(i) * time.Millisecond), Payload: []byte(fmt.Sprint("b", i))})
	}
	_, err := h.e.ScheduleBatch(bg, msgs)
	require.NoError(t, err)
	far := h.schedule("local://q", 2*time.Hour, "far")
	require.NoError(t, h.e.Close())
	h.e = nil
	h.clk.Advance(time.Minute) // the backlog is overdue
	g := newGatedOpener(wal.Options{Dir: "store", FS: h.fs})
	h.opts.Store = g
	letAllPass := sync.OnceFunc(func() { close(g.open) })
	t.Cleanup(letAllPass)
	h.open()

	// step runs op while the loader is held inside a scan, letting later
	// scans through one by one until op returns (Cancel and Reschedule
	// wait for the shard, which may scan again first).
	step := func(name string, op func()) {
		recv(t, g.entered, "the loader's next scan before "+name)
		done := make(chan struct{})
		go func() { defer close(done); op() }()
		g.pass <- struct{}{}
		for {
			select {
			case <-done:
				return
			case <-g.entered:
				g.pass <- struct{}{}
			case <-time.After(safety):
				t.Fatalf("safety timeout in %s", name)
			}
		}
	}
	var cancelled ID
	step("new-now", func() { h.schedule("local://q", 0, "new-now") })
	step("retry-later", func() { h.schedule("local://q", 0, "retry-later") })
	step("new-soon", func() { h.schedule("local://q", 5*time.Second, "new-soon") })
	step("cancel-me", func() { cancelled = h.schedule("local://q", 0, "cancel-me") })
	step("cancel", func() {
		if err := h.e.Cancel(bg, cancelled); err != nil && !errors.Is(err, ErrInFlight) && !errors.Is(err, ErrNotFound) {
			t.Errorf("Cancel: %v", err)
		}
	})
	step("reschedule far", func() { assert.NoError(t, h.e.Reschedule(bg, far, h.clk.Now())) })
	step("new-late", func() { h.schedule("local://q", 0, "new-late") })
	letAllPass()
	h.settle()
	mu.Lock()
	for p, as := range calls {
		if p == "cancel-me" && len(as) == 1 {
			continue // it may have fired before the Cancel reached it (ErrInFlight or ErrNotFound)
		}
		require.Equal(t, []int{1}, as, "%s: delivered once, attempt 1 (a RetryIn past the window is not called again early)", p)
	}
	for i := range backlog {
		require.Len(t, calls[fmt.Sprint("b", i)], 1, "backlog message %d", i)
	}
	for _, p := range []string{"new-now", "retry-later", "far", "new-late"} {
		require.Len(t, calls[p], 1, p)
	}
	require.NotContains(t, calls, "new-soon")
	mu.Unlock()
	h.advance(5 * time.Second)
	h.advance(2 * time.Minute)
	mu.Lock()
	defer mu.Unlock()
	require.Equal(t, []int{1}, calls["new-soon"])
	require.Equal(t, []int{1, 2}, calls["retry-later"])
}

// TestWaitIdleSeesCascadesAndRetries: WaitIdle returns only once what it
// promises is done: a message a handler cascaded for now, and a retry a
// handler asked for now, are delivered before it returns. Found by
// TestModel: WaitIdle checks each shard in turn and then the in-flight
// count, so a cascade fed to a shard it already passed (or a retry put
// back on such a shard's wheel), followed by the in-flight count reaching
// zero before the pass ends, goes unseen. The race is narrow: this test
// repeats the round many times (under -race a miss shows within a few
// hundred rounds; a correct engine never misses).
func TestWaitIdleSeesCascadesAndRetries(t *testing.T) {
	h := newHarness(t, "memory", Options{Shards: 3})
	var children, retried atomic.Int64
	require.NoError(t, h.e.Register(Queue{Name: "child", Handler: func(context.Context, *Delivery) error { children.Add(1); return nil }}))
	require.NoError(t, h.e.Register(Queue{Name: "parent", Handler: func(_ context.Context, d *Delivery) error {
		return d.Send(Message{Dest: "local://child"})
	}}))
	require.NoError(t, h.e.Register(Queue{Name: "again", Handler: func(_ context.Context, d *Delivery) error {
		if d.Attempt == 1 {
			return RetryIn(0, nil)
		}
		retried.Add(1)
		return nil
	}}))
	start := time.Now()
	rounds := 0
	for ; rounds < 1500 && time.Since(start) < 3*time.Second; rounds++ {
		h.schedule("local://parent", 0, "p")
		h.schedule("local://again", 0, "a")
		h.settle()
		if c, r := children.Load(), retried.Load(); c != int64(rounds+1) || r != int64(rounds+1) {
			st := h.e.Stats()
			t.Fatalf("round %d: WaitIdle returned with %d of %d cascaded children and %d of %d retries due now delivered (store pending %d, RAM %v, in flight %d)",
				rounds, c, rounds+1, r, rounds+1, st.StorePending, st.Pending, st.InFlight)
		}
	}
	t.Logf("%d rounds", rounds)
}

// tornClock is a FakeClock that, once armed, advances between two reads a
// shard makes through Now and Mono: what a shard would see if it read the wall and
// the monotonic time in two calls while a test moves the clock (for
// example on a stale wake-up right after WaitIdle returned). A shard that
// reads both at once, through MonoClock.NowMono, cannot be torn. The stack
// check only makes the tear land on a shard's read deterministically.
type tornClock struct {
	*FakeClock
	step  atomic.Int64 // armed: advance by this much
	reads atomic.Int32 // a shard's reads since armed: the tear lands on the second
}

func (c *tornClock) Now() time.Time {
	c.tear()
	return c.FakeClock.Now()
}

func (c *tornClock) Mono() time.Duration {
	c.tear()
	return c.FakeClock.Mono()
}

func (c *tornClock) tear() {
	if c.step.Load() != 0 && calledFrom("engine.(*shard).") && c.reads.Add(1) == 2 {
		c.FakeClock.Advance(time.Duration(c.step.Swap(0)))
	}
}

func calledFrom(fn string) bool {
	pcs := make([]uintptr, 32)
	frames := runtime.CallersFrames(pcs[:runtime.Callers(2, pcs)])
	for {
		f, more := frames.Next()
		if strings.Contains(f.Function, fn) {
			return true
		}
		if !more {
			return false
		}
	}
}

// TestClockAdvanceBetweenReadsIsNotLate: a FakeClock advanced while a
// shard converts a due time for its wheel must not make the message late.
// A shard that read the wall time and then the monotonic time in two calls
// placed the message by the new monotonic time plus the distance from the
// old wall time: one whole Advance late. Found by TestModel (messages due
// hours ago still pending after WaitIdle, with Stats.EarlyCaught counting
// the torn reads).
func TestClockAdvanceBetweenReadsIsNotLate(t *testing.T) {
	h := newHarness(t, "memory", Options{Shards: 1, Queues: []Queue{{Name: "q"}}})
	// Reopen on a torn clock.
	clk := &tornClock{FakeClock: NewFakeClock(t0)}
	h.opts.Clock = clk
	require.NoError(t, h.e.Close())
	h.clk = clk.FakeClock
	h.open()
	h.settle()                       // the shard is idle: the next torn read is the one that places the new message
	clk.step.Store(int64(time.Hour)) // the next torn read sees the clock an hour on
	h.schedule("local://q", 10*time.Second, "x")
	h.settle()
	if h.clk.Now().Equal(t0) {
		// No separate read to tear: the shard read both times at once.
		h.advance(10 * time.Second)
	}
	require.Equal(t, []string{"x"}, payloads(h.deliveries()), "a message due 10 s after t0 must fire by now (%v)", h.clk.Now())
}
