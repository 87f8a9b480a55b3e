package engine

import (
	"context"
	"errors"
	"fmt"
	"runtime/debug"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hourglassmq/hourglass/store"
	"github.com/hourglassmq/hourglass/transport"
)

// send delivers a transport batch through its sender.
func (e *Engine) send(b *batch, pol *RetryPolicy, sc *scratch) {
	now := e.clock.Now()
	wall := now.UnixNano()
	var sender transport.Sender
	if e.opts.Transports != nil {
		sender, _ = e.opts.Transports.Lookup(b.d.scheme)
	}
	if sender == nil {
		err := fmt.Errorf("engine: no transport for %q", b.d.name)
		for k := range b.msgs {
			if b.res[k].kind == resDelivered {
				e.fail(b, k, wall, pol, err, 0, 0)
			}
		}
		return
	}
	sc.envs, sc.pos = sc.envs[:0], sc.pos[:0]
	for k := range b.msgs {
		if b.res[k].kind != resDelivered {
			continue
		}
		m := &b.msgs[k]
		caller, rk, _ := engineHeaders(m.Headers)
		sc.envs = append(sc.envs, transport.Envelope{
			ID: m.ID.String(), Dest: m.Dest, Attempt: int(m.Attempt) + 1,
			Due: time.Unix(0, m.Due), Fired: now, Key: m.Key, RoutingKey: rk,
			Headers: toTransportHeaders(caller), Payload: m.Payload,
		})
		sc.pos = append(sc.pos, k)
		b.late[k] = time.Duration(wall - m.Due)
		e.cnt.lateness.record(b.late[k])
	}
	if cap(sc.outs) < len(sc.envs) {
		sc.outs = make([]transport.Outcome, len(sc.envs))
	}
	outs := sc.outs[:len(sc.envs)]
	clear(outs)
	sender.Send(e.dctx, sc.envs, outs)
	wall = e.clock.Now().UnixNano()
	for j, k := range sc.pos {
		o := outs[j]
		switch {
		case e.dctx.Err() != nil && o.Status != transport.StatusDelivered:
			b.res[k] = result{kind: resKeep} // closing: no attempt counted
		case o.Status == transport.StatusDelivered:
		case o.Status == transport.StatusReject:
			err := o.Err
			if err == nil {
				err = errors.New("rejected")
			}
			e.fail(b, k, wall, pol, Reject(err), 0, 0)
		default:
			err := o.Err
			if err == nil {
				err = errors.New("transport asked for a retry")
			}
			e.fail(b, k, wall, pol, err, 0, o.RetryAfter)
		}
	}
	clear(sc.envs)
}

// Handler runs: a local-queue batch's handlers run on the queue's workers,
// at most Parallelism at a time, each message in its own call with its own
// ctx and deadline (Queue.Timeout), so one slow message does not hold up
// the others. The dispatcher waits for them, abandoning a call that
// overruns its deadline: that attempt fails, its worker is replaced, and
// its Delivery is closed (its late cascades are refused).

// Slot states of a handler run.
const (
	slotWaiting int32 = iota
	slotRunning
	slotFinished
	slotAbandoned
)

// handlerRun is one batch's handler calls, shared by the dispatcher and the
// queue's workers.
type handlerRun struct {
	e *Engine
	q *queue
	// msgs are copies of the batch's messages to run (the batch goes back
	// to its pool while an abandoned worker may still hold the run).
	msgs  []store.Message
	next  atomic.Int32
	slots []runSlot
	done  chan int // slot j finished
}

// runSlot is one handler call. Its ctx and Delivery live in it, so a
// batch's calls cost one allocation between them; a handler that keeps its
// Delivery or ctx past its return keeps the batch's slots alive, no more.
type runSlot struct {
	state atomic.Int32
	// Written by the worker before state becomes slotRunning:
	start time.Time
	ctx   handlerCtx
	d     Delivery
	late  time.Duration
	// Written by the worker before state becomes slotFinished:
	err      error
	panicked *PanicInfo
	// Written by the dispatcher after state became slotAbandoned: the
	// call overran its deadline (else the engine closed).
	overran bool
}

// handlerCtx is a handler's ctx. Its deadline is the call's (on the
// engine's Clock): the dispatcher cancels it then, and it ends too when the
// engine closes (its parent, Engine.dctx, ends). It lives in its runSlot:
// the channel and the link to the parent are made only if the handler asks
// for Done.
type handlerCtx struct {
	parent   context.Context
	deadline time.Time
	mu       sync.Mutex // guards the fields below
	done     chan struct{}
	err      error
	unlink   func() bool
}

func (c *handlerCtx) Deadline() (time.Time, bool) { return c.deadline, true }

func (c *handlerCtx) Value(key any) any { return c.parent.Value(key) }

func (c *handlerCtx) Done() <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.done == nil {
		c.done = make(chan struct{})
		if c.err != nil {
			close(c.done)
		} else {
			c.unlink = context.AfterFunc(c.parent, func() { c.cancel(c.parent.Err()) })
		}
	}
	return c.done
}

func (c *handlerCtx) Err() error {
	if err := c.parent.Err(); err != nil {
		c.cancel(err) // so that Done is closed whenever Err says so
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

// cancel ends the ctx with err (the first call wins).
func (c *handlerCtx) cancel(err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err != nil {
		return
	}
	c.err = err
	if c.done != nil {
		close(c.done)
	}
	if c.unlink != nil {
		c.unlink()
	}
}

// work runs slots of r until none is left. It reports whether the worker
// was abandoned mid-handler (and must exit).
func (r *handlerRun) work() bool {
	e := r.e
	// One clock reading ends a handler's run and starts the next one's.
	start := e.clock.Now()
	for {
		j := int(r.next.Add(1)) - 1
		if j >= len(r.msgs) {
			return false
		}
		sl := &r.slots[j]
		m := &r.msgs[j]
		deadline := start.Add(r.q.Timeout)
		sl.start = start
		sl.ctx = handlerCtx{parent: e.dctx, deadline: deadline}
		ctx := &sl.ctx
		sl.d.init(e, m, start)
		sl.late = start.Sub(time.Unix(0, m.Due))
		if !sl.state.CompareAndSwap(slotWaiting, slotRunning) {
			continue // the engine is closing: not attempted
		}
		e.cnt.lateness.record(sl.late)
		pan, err := callHandler(ctx, r.q.Handler, &sl.d)
		sl.d.finish()
		ctx.cancel(context.Canceled)
		start = e.clock.Now()
		if err == nil && !start.Before(deadline) {
			err = overrun(r.q.Timeout)
		}
		sl.err, sl.panicked = err, pan
		if !sl.state.CompareAndSwap(slotRunning, slotFinished) {
			return true
		}
		r.done <- j
	}
}

func overrun(t time.Duration) error {
	return fmt.Errorf("engine: handler ran past its Timeout %v: %w", t, context.DeadlineExceeded)
}

// callHandler runs h, turning a panic into an error (and its report).
func callHandler(ctx context.Context, h Handler, d *Delivery) (pan *PanicInfo, err error) {
	defer func() {
		if v := recover(); v != nil {
			err = fmt.Errorf("engine: handler panicked: %v", v)
			pan = &PanicInfo{ID: d.ID, Dest: d.Dest, Value: v, Stack: debug.Stack()}
		}
	}()
	return nil, h(ctx, d)
}

// runHandlers runs a local queue's handler on each live message of b and
// records each outcome and cascade.
func (e *Engine) runHandlers(b *batch, pol *RetryPolicy) {
	q := e.queueFor(b.d.local)
	if q == nil {
		wall := e.clock.Now().UnixNano()
		err := fmt.Errorf("%w: %q", ErrUnknownQueue, b.d.local)
		for k := range b.msgs {
			if b.res[k].kind == resDelivered {
				e.fail(b, k, wall, pol, err, 0, 0)
			}
		}
		return
	}
	live := make([]int, 0, len(b.msgs)) // indexes into b.msgs
	for k := range b.msgs {
		if b.res[k].kind == resDelivered {
			live = append(live, k)
		}
	}
	r := &handlerRun{e: e, q: q, msgs: b.msgs}
	if len(live) < len(b.msgs) {
		r.msgs = make([]store.Message, len(live))
		for j, k := range live {
			r.msgs[j] = b.msgs[k]
		}
	}
	r.slots = make([]runSlot, len(live))
	r.done = make(chan int, len(live))
	submit := func() bool {
		select {
		case q.jobs <- r:
			return true
		case <-e.dctx.Done():
			return false
		}
	}
	// The deadline timer starts before any handler can: a handler's
	// deadline counts from its own start, never before this, so the timer
	// fires at or before the first deadline, whatever the clock does
	// between the two.
	timer := e.clock.NewTimer(q.Timeout)
	defer timer.Stop()
	for range min(len(live), q.Parallelism) {
		if !submit() {
			break
		}
	}
	if r.wait(timer, submit) && len(live) == len(b.msgs) {
		// A worker may still read r.msgs, which is b's: b must not go
		// back to its pool.
		b.noPool = true
	}
	wall := e.clock.Now().UnixNano()
	for j, k := range live {
		sl := &r.slots[j]
		var err error
		switch sl.state.Load() {
		case slotFinished:
			err = sl.err
			if p := sl.panicked; p != nil {
				e.log.Warn("engine: handler panicked", "id", p.ID, "dest", p.Dest,
					"panic", fmt.Sprint(p.Value), "stack", string(p.Stack))
				if f := e.ev.HandlerPanic; f != nil {
					f(*p)
				}
			}
		case slotAbandoned:
			if !sl.overran {
				b.res[k] = result{kind: resKeep}
				continue
			}
			err = overrun(q.Timeout)
		}
		b.late[k] = sl.late
		if err == nil {
			if out := sl.d.cascaded(); len(out) > 0 {
				if len(b.cascades) == 0 {
					b.cascades = slices.Grow(b.cascades[:0], len(b.msgs))[:len(b.msgs)]
				}
				b.cascades[k] = out
			}
			continue
		}
		var re *RetryError
		if errors.As(err, &re) {
			e.failAt(b, k, wall, pol, err, re)
			continue
		}
		e.fail(b, k, wall, pol, err, 0, 0)
	}
}

// wait waits until every slot of r finished or was abandoned, woken by
// timer (armed before the first handler started): at its
// deadline (the attempt fails; a replacement worker starts, and submit
// hands the rest of the batch to it) or because the engine is closing
// (no outcome). It reports whether any slot was abandoned.
func (r *handlerRun) wait(timer Timer, submit func() bool) (abandoned bool) {
	e, q := r.e, r.q
	for remaining := len(r.slots); remaining > 0; {
		select {
		case <-r.done:
			remaining--
		case <-timer.C():
			// Abandon the calls past their deadline, then wake at the
			// earliest deadline still running (at least once per Timeout,
			// to see calls that start later).
			now := e.clock.Now()
			next := now.Add(q.Timeout)
			for j := range r.slots {
				sl := &r.slots[j]
				if sl.state.Load() != slotRunning {
					continue
				}
				dl := sl.start.Add(q.Timeout)
				if now.Before(dl) || !sl.state.CompareAndSwap(slotRunning, slotAbandoned) {
					next = minTime(next, dl)
					continue
				}
				sl.ctx.cancel(context.DeadlineExceeded)
				sl.d.finish()
				sl.overran = true
				abandoned = true
				remaining--
				q.spawn() // the stuck worker exits when its handler returns
				if int(r.next.Load()) < len(r.slots) {
					submit() // the stuck worker takes no more of this batch
				}
			}
			timer.Reset(next.Sub(now))
		case <-e.dctx.Done():
			// Closing: what has not finished gets no outcome.
			for j := range r.slots {
				sl := &r.slots[j]
				if !sl.state.CompareAndSwap(slotWaiting, slotAbandoned) && sl.state.CompareAndSwap(slotRunning, slotAbandoned) {
					sl.d.finish()
				}
			}
			return true
		}
	}
	return abandoned
}

func minTime(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}
