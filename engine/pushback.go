package engine

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hourglassmq/hourglass/store"
)

// Push back: when the engine cannot deliver as fast as messages fall due,
// new schedules are paced to what it delivers instead of growing a backlog
// whose lateness has no bound. Two signals, each measured by the shards
// against Options.PushBackLag:
//
//   - a destination is behind while, on some shard, the oldest message in
//     its ready queue has waited longer than the lag for a dispatcher or an
//     in-flight slot (fire.go): its handlers or its transport cannot keep
//     up. Only schedules to that destination are paced, to 3/4 of the rate
//     its outcomes come back.
//   - the engine is behind while some shard's wheel holds a message due
//     longer ago than the lag: the shard is short of CPU, or every
//     destination it serves is saturated. Every schedule is paced, to 3/4
//     of the rate messages come off the wheels.
//
// Either stays behind until its lag is back under half of PushBackLag.
// Pacing, not a stop until the lag is gone: a message falls due up to its
// delay after it was scheduled, so a full stop would only be felt seconds
// later and then swing back. A destination that delivers nothing (its
// handlers hang) admits nothing until it catches up. Schedule and
// ScheduleBatch wait after validating and before writing anything:
// producers see the push back as ack latency. Calls from a handler never
// wait (its own schedules are part of draining the backlog), nor do
// Delivery.Schedule's cascades.

// pacingShare is the part of the measured delivery rate a behind gate
// admits, so that the backlog shrinks.
const pacingShare = 0.75

// rateWindow is how often a behind gate measures its delivery rate.
const rateWindow = 50 * time.Millisecond

// pushGate paces callers while any of the shards marking it is behind.
type pushGate struct {
	served func() uint64 // messages delivered (or fired) so far
	count  *atomic.Int32 // if set, counts the gates of its kind behind
	shut   atomic.Bool   // behind > 0 && !off, read without the lock

	mu     sync.Mutex
	behind int           // marks held
	free   chan struct{} // closed while behind == 0 or off
	off    bool          // the engine is stopping: nobody waits
	// While behind: tokens (a call passes while positive, and may leave a
	// debt), refilled at rate per second since last, and the rate measured
	// every rateWindow from served.
	tokens, rate float64
	last, since  time.Time
	servedSince  uint64
}

func newGate(served func() uint64, count *atomic.Int32) *pushGate {
	g := &pushGate{served: served, count: count, free: make(chan struct{})}
	close(g.free)
	return g
}

// mark adds (behind) or drops one mark; now starts a rate measurement.
func (g *pushGate) mark(behind bool, now time.Time) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if behind {
		g.behind++
		if g.behind == 1 && !g.off {
			g.free = make(chan struct{})
			g.tokens, g.rate, g.last, g.since, g.servedSince = 0, 0, now, now, g.served()
			g.setShut(true)
		}
		return
	}
	g.behind--
	if g.behind == 0 && !g.off {
		close(g.free)
		g.setShut(false)
	}
}

// setShut publishes whether callers must pass through the gate. Callers
// hold mu.
func (g *pushGate) setShut(shut bool) {
	if g.shut.Load() == shut {
		return
	}
	g.shut.Store(shut)
	if g.count != nil {
		if shut {
			g.count.Add(1)
		} else {
			g.count.Add(-1)
		}
	}
}

// stop opens the gate for good.
func (g *pushGate) stop() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if !g.off && g.behind > 0 {
		close(g.free)
	}
	g.off = true
	g.setShut(false)
}

// isBehind reports whether callers must pass through the gate.
func (g *pushGate) isBehind() bool { return g.shut.Load() }

// pass admits n messages, waiting for the gate's pace while it is behind.
func (g *pushGate) pass(ctx context.Context, clock Clock, n int) error {
	for {
		g.mu.Lock()
		if g.behind == 0 || g.off {
			g.mu.Unlock()
			return nil
		}
		now := clock.Now()
		if d := now.Sub(g.since); d >= rateWindow {
			served := g.served()
			g.rate = pacingShare * float64(served-g.servedSince) / d.Seconds()
			g.since, g.servedSince = now, served
		}
		// Refill, keeping at most a window's worth of burst.
		g.tokens = min(g.tokens+g.rate*now.Sub(g.last).Seconds(), g.rate*rateWindow.Seconds())
		g.last = now
		if g.tokens > 0 {
			g.tokens -= float64(n)
			g.mu.Unlock()
			return nil
		}
		wait := rateWindow
		if g.rate > 0 {
			wait = min(wait, time.Duration(-g.tokens/g.rate*float64(time.Second))+1)
		}
		free := g.free
		g.mu.Unlock()
		t := clock.NewTimer(wait)
		select {
		case <-free:
		case <-t.C():
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		}
		t.Stop()
	}
}

// pushBack holds the engine's push-back state.
type pushBack struct {
	limit  int64     // lag in ns at which a shard is behind; 0: never
	wheels *pushGate // marked by shards whose wheel lags
	// destsBehind counts destinations' gates behind, so a call finds out
	// without a lookup that none of its destinations is.
	destsBehind atomic.Int32
	off         atomic.Bool

	waits  atomic.Uint64 // calls that waited
	waitNs atomic.Int64  // their total wait
}

// stopPushBack opens every gate for good: the engine is closing or its
// store failed, and waiting callers must go on to hear that.
func (e *Engine) stopPushBack() {
	e.pb.off.Store(true)
	e.pb.wheels.stop()
	e.destMu.RLock()
	for _, d := range e.dests {
		d.pb.stop()
	}
	e.destMu.RUnlock()
}

// admit paces a call scheduling sms while the engine, or the destination
// of one of them, is behind, unless the caller is a handler. It returns
// ctx's error if ctx ends first, and ErrClosed (or the store's failure) if
// the engine stops while the caller waits.
func (e *Engine) admit(ctx context.Context, sms []store.Message) error {
	if e.pb.limit == 0 {
		return nil
	}
	var gates []*pushGate
	if e.pb.wheels.isBehind() {
		gates = append(gates, e.pb.wheels)
	}
	for i := 0; i < len(sms) && e.pb.destsBehind.Load() > 0; i++ {
		if i > 0 && sms[i].Dest == sms[i-1].Dest {
			continue
		}
		e.destMu.RLock()
		d := e.dests[sms[i].Dest]
		e.destMu.RUnlock()
		if d != nil && d.pb.isBehind() {
			gates = append(gates, d.pb)
		}
	}
	if len(gates) == 0 || e.inHandler() {
		return nil
	}
	start := e.clock.Now()
	defer func() {
		e.pb.waits.Add(1)
		e.pb.waitNs.Add(int64(e.clock.Now().Sub(start)))
	}()
	for _, g := range gates {
		if err := g.pass(ctx, e.clock, len(sms)); err != nil {
			return err
		}
	}
	if e.pb.off.Load() {
		if err := e.Err(); err != nil {
			return err
		}
		return ErrClosed
	}
	return nil
}

// noteWheelLag updates whether s's wheel is behind at mono; drained says
// the last advance took every message due. It runs on the shard's
// goroutine, as does everything below.
func (s *shard) noteWheelLag(mono int64, drained bool) {
	limit := s.e.pb.limit
	if limit == 0 {
		return
	}
	var lag int64
	if nd, ok := s.w.NextDue(); ok && !drained {
		lag = mono - nd
	}
	switch {
	case !s.behind && lag > limit:
		s.behind = true
		s.e.pb.wheels.mark(true, s.e.clock.Now())
	case s.behind && lag <= limit/2:
		s.behind = false
		s.e.pb.wheels.mark(false, time.Time{})
	}
}

// noteReadyLag updates whether q is behind at wall (its head has waited
// too long), and returns when q's head would become behind (0: it is, or q
// is empty).
func (s *shard) noteReadyLag(q *readyQ, wall int64) int64 {
	limit := s.e.pb.limit
	if limit == 0 {
		return 0
	}
	var head int64 = wall
	if q.len() > 0 {
		head = s.item(q.idx[q.off]).due
	}
	lag := wall - head
	switch {
	case !q.behind && lag > limit:
		q.behind = true
		q.d.pb.mark(true, s.e.clock.Now())
	case q.behind && lag <= limit/2:
		q.behind = false
		q.d.pb.mark(false, time.Time{})
	}
	if q.behind || q.len() == 0 {
		return 0
	}
	return head + limit + 1
}

// unmarkAll drops every mark s holds (it stops or exits).
func (s *shard) unmarkAll() {
	if s.behind {
		s.behind = false
		s.e.pb.wheels.mark(false, time.Time{})
	}
	for _, q := range s.readyOrder {
		if q.behind {
			q.behind = false
			q.d.pb.mark(false, time.Time{})
		}
	}
}

// lagWait returns when a shard whose wheel waits for room in its ready
// queues must look at its lag again: when it would make the shard behind.
func (s *shard) lagWait(mono int64) (time.Duration, bool) {
	if s.e.pb.limit == 0 || s.behind || s.stopped {
		return 0, false
	}
	nd, ok := s.w.NextDue()
	if !ok {
		return 0, false
	}
	return max(0, time.Duration(nd+s.e.pb.limit+1-mono)), true
}
