package engine

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/hourglassmq/hourglass/wal"
)

func (e *Engine) shardOf(id ID) (*shard, error) {
	if id == 0 || id.Shard() >= len(e.shards) {
		return nil, fmt.Errorf("%w: %s", ErrNotFound, id)
	}
	return e.shards[id.Shard()], nil
}

// ask sends c to s and waits for the reply.
func (e *Engine) ask(s *shard, c cmd) reply {
	ch := replyPool.Get().(chan reply)
	c.reply = ch
	s.cmds <- c
	r := <-ch
	replyPool.Put(ch)
	return r
}

// Cancel removes a pending message. It fails with ErrNotFound when the
// message is not pending and ErrInFlight when it is being delivered. If ctx
// ends while the cancellation is being committed, Cancel returns ctx's error
// but the cancellation may still take effect: Get tells.
func (e *Engine) Cancel(ctx context.Context, id ID) error {
	if err := e.enter(); err != nil {
		return err
	}
	defer e.leave()
	s, err := e.shardOf(id)
	if err != nil {
		return err
	}
	if e.store == nil {
		var nerr error
		if m, ok, _ := e.shadowOf(ctx, s, id, nil); ok {
			if nerr = e.cancelNative(ctx, &m); nerr != nil && !errors.Is(nerr, ErrNativeFired) {
				return fmt.Errorf("engine: cancel %s: %w", id, nerr)
			}
			// The broker no longer holds it: drop the shadow whatever
			// happened to it meanwhile.
			e.ask(s, cmd{kind: cmdCancel, id: id})
			if nerr != nil {
				e.st.nativeFired.Add(1)
				return fmt.Errorf("engine: cancel %s: %w", id, nerr)
			}
			e.st.cancelled.Add(1)
			return nil
		}
		r := e.ask(s, cmd{kind: cmdCancel, id: id})
		if r.err != nil {
			return fmt.Errorf("engine: cancel %s: %w", id, r.err)
		}
		e.st.cancelled.Add(1)
		return nil
	}
	return e.detach(ctx, func(ctx context.Context) error { return e.cancelDurable(ctx, s, id) })
}

// detach runs f, a claim-change-release sequence on the store, to its end
// whatever happens to ctx: a store write already taken may still land, and
// only f knows, once it returns, what to put back into the shard. A caller
// whose ctx ends first hears its error (the change may still be applied);
// Shutdown waits for f.
func (e *Engine) detach(ctx context.Context, f func(context.Context) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if ctx.Done() == nil { // cannot be cancelled: no goroutine needed
		return f(ctx)
	}
	done := make(chan error, 1)
	e.detached.Add(1)
	go func() {
		defer e.detached.Done()
		done <- f(context.WithoutCancel(ctx))
	}()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return fmt.Errorf("%w (the change may still be applied)", ctx.Err())
	}
}

// restoreFromStore ends a claim after a failed store call: the message goes
// back as the store has it. A message that was not in RAM when claimed must
// go back too, or a loader page that passed it during the claim would leave
// it between the window and the disk.
func (e *Engine) restoreFromStore(ctx context.Context, s *shard, id ID) {
	m, err := e.store.Get(ctx, id)
	if err != nil {
		s.cmds <- cmd{kind: cmdRelease, id: id}
		return
	}
	s.cmds <- cmd{kind: cmdRelease, id: id, restore: true, m: m}
}

func (e *Engine) cancelDurable(ctx context.Context, s *shard, id ID) error {
	r := e.ask(s, cmd{kind: cmdClaim, id: id})
	if r.err != nil {
		return fmt.Errorf("engine: cancel %s: %w", id, r.err)
	}
	reason, nerr := wal.Cancelled, error(nil)
	m, ok, err := e.shadowOf(ctx, s, id, &r)
	if err != nil {
		e.restoreFromStore(ctx, s, id)
		return fmt.Errorf("engine: cancel %s: %w", id, err)
	}
	if ok {
		// Native: the broker first. A crash after it leaves the shadow,
		// which is resolved harmlessly at its due time.
		if nerr = e.cancelNative(ctx, &m); nerr != nil {
			if !errors.Is(nerr, ErrNativeFired) {
				e.restoreFromStore(ctx, s, id)
				return fmt.Errorf("engine: cancel %s: %w", id, nerr)
			}
			reason = wal.Delivered
		}
	}
	_, err = e.store.Resolve(ctx, wal.Batch{Done: []wal.Done{{ID: id, Reason: reason}}})
	if err == nil && nerr != nil {
		s.cmds <- cmd{kind: cmdRelease, id: id}
		e.st.nativeFired.Add(1)
		return fmt.Errorf("engine: cancel %s: %w", id, nerr)
	}
	if err != nil {
		e.restoreFromStore(ctx, s, id)
		if errors.Is(err, wal.ErrNotFound) {
			return fmt.Errorf("engine: cancel %s: %w", id, ErrNotFound)
		}
		e.checkStore(err)
		return fmt.Errorf("engine: cancel %s: %w", id, err)
	}
	s.cmds <- cmd{kind: cmdRelease, id: id}
	e.st.cancelled.Add(1)
	return nil
}

func (e *Engine) checkStore(err error) {
	if errors.Is(err, wal.ErrFailed) {
		e.failStore(err)
	}
}

// Reschedule moves a pending message to a new due time, keeping its ID and
// attempt count. Errors as for Cancel.
func (e *Engine) Reschedule(ctx context.Context, id ID, due time.Time) error {
	if err := e.enter(); err != nil {
		return err
	}
	defer e.leave()
	s, err := e.shardOf(id)
	if err != nil {
		return err
	}
	dueNs := max(0, due.UnixNano())
	if e.store == nil {
		if m, ok, _ := e.shadowOf(ctx, s, id, nil); ok {
			// Native: the broker replaces the schedule atomically.
			dueNs = e.clampDue(dueNs)
			if err := e.scheduleNative(ctx, &m, id, dueNs); err != nil {
				return fmt.Errorf("engine: reschedule %s: %w", id, err)
			}
		}
		r := e.ask(s, cmd{kind: cmdResched, id: id, due: dueNs})
		if r.err != nil {
			return fmt.Errorf("engine: reschedule %s: %w", id, r.err)
		}
		return nil
	}
	return e.detach(ctx, func(ctx context.Context) error { return e.rescheduleDurable(ctx, s, id, dueNs) })
}

func (e *Engine) rescheduleDurable(ctx context.Context, s *shard, id ID, dueNs int64) error {
	r := e.ask(s, cmd{kind: cmdClaim, id: id})
	if r.err != nil {
		return fmt.Errorf("engine: reschedule %s: %w", id, r.err)
	}
	m := r.m
	if !r.found {
		var err error
		m, err = e.store.Get(ctx, id)
		if err != nil {
			e.restoreFromStore(ctx, s, id)
			if errors.Is(err, wal.ErrNotFound) {
				return fmt.Errorf("engine: reschedule %s: %w", id, ErrNotFound)
			}
			return fmt.Errorf("engine: reschedule %s: %w", id, err)
		}
	}
	if isShadow(&m) {
		// Native: the broker replaces the schedule atomically, then the
		// shadow follows. A crash in between leaves the shadow at the old
		// due time, resolved harmlessly then; the broker fires at the new.
		dueNs = e.clampDue(dueNs)
		if err := e.scheduleNative(ctx, &m, id, dueNs); err != nil {
			e.restoreFromStore(ctx, s, id)
			return fmt.Errorf("engine: reschedule %s: %w", id, err)
		}
	}
	_, err := e.store.Resolve(ctx, wal.Batch{Update: []wal.Update{{ID: id, Due: dueNs, Attempt: m.Attempt}}})
	if err != nil {
		e.restoreFromStore(ctx, s, id)
		if errors.Is(err, wal.ErrNotFound) {
			return fmt.Errorf("engine: reschedule %s: %w", id, ErrNotFound)
		}
		e.checkStore(err)
		return fmt.Errorf("engine: reschedule %s: %w", id, err)
	}
	m.Due = dueNs
	s.cmds <- cmd{kind: cmdRelease, id: id, restore: true, m: m}
	return nil
}

// Get returns a message's state, due time and attempts. Delivered, cancelled
// and expired messages are gone: ErrNotFound.
func (e *Engine) Get(ctx context.Context, id ID) (Info, error) {
	if err := e.enter(); err != nil {
		return Info{}, err
	}
	defer e.leave()
	s, err := e.shardOf(id)
	if err != nil {
		return Info{}, err
	}
	if r := e.ask(s, cmd{kind: cmdGet, id: id}); r.found {
		return infoOf(&r.m, r.state), nil
	}
	if e.store == nil {
		e.deadMu.Lock()
		d, ok := e.dead[id]
		e.deadMu.Unlock()
		if ok {
			return Info{ID: id, State: StateDead, Message: d.Message, Attempts: d.Attempts, Reason: d.Reason}, nil
		}
		return Info{}, fmt.Errorf("engine: get %s: %w", id, ErrNotFound)
	}
	m, err := e.store.Get(ctx, id)
	if err == nil {
		return infoOf(&m, StatePending), nil
	}
	if !errors.Is(err, wal.ErrNotFound) {
		return Info{}, fmt.Errorf("engine: get %s: %w", id, err)
	}
	d, err := e.store.GetDead(ctx, id)
	if err == nil {
		return Info{ID: id, State: StateDead, Message: fromWal(&d.Message), Attempts: int(d.Message.Attempt), Reason: d.Reason}, nil
	}
	if errors.Is(err, wal.ErrNotFound) {
		return Info{}, fmt.Errorf("engine: get %s: %w", id, ErrNotFound)
	}
	return Info{}, fmt.Errorf("engine: get %s: %w", id, err)
}

func infoOf(m *wal.Message, st State) Info {
	return Info{ID: m.ID, State: st, Message: fromWal(m), Attempts: int(m.Attempt), Native: isShadow(m)}
}

func fromWal(m *wal.Message) Message {
	out := Message{Dest: m.Dest, Key: m.Key, Payload: m.Payload, Due: time.Unix(0, m.Due),
		Headers: toTransportHeaders(callerHeaders(m.Headers))}
	if m.Expires != 0 {
		out.Expires = time.Unix(0, m.Expires)
	}
	return out
}

// forgetKey releases m's idempotency key (memory mode) once m is gone.
func (e *Engine) forgetKey(m wal.Message) {
	if e.store != nil || m.Key == "" || m.ID.Shard() >= len(e.shards) {
		return
	}
	e.shards[m.ID.Shard()].cmds <- cmd{kind: cmdForget, m: m}
}

func (e *Engine) addDead(d DeadLetter) {
	e.deadMu.Lock()
	e.dead[d.ID] = d
	e.deadMu.Unlock()
}

func (e *Engine) markFirstFire() {
	e.recMu.Lock()
	if e.recovery.FirstFire == 0 {
		e.recovery.FirstFire = max(1, e.clock.Now().Sub(e.openedAt))
	}
	e.recMu.Unlock()
}

func (e *Engine) markLoaded() {
	if int(e.loadedN.Add(1)) == len(e.shards) {
		e.recMu.Lock()
		e.recovery.FullLoad = max(1, e.clock.Now().Sub(e.openedAt))
		e.recMu.Unlock()
	}
}

// Shutdown stops taking due messages off the wheels, waits for the
// deliveries in flight to finish (and their outcomes to be committed), then
// stops the engine and closes the store. If ctx ends first, handlers and
// sends in flight are cancelled (their messages are retried after a
// restart, or lost in memory mode) and Shutdown returns ctx's error after
// stopping. Pending messages stay in the store (memory mode: they are lost).
func (e *Engine) Shutdown(ctx context.Context) error {
	e.gate.Lock()
	if e.closed {
		e.gate.Unlock()
		return ErrClosed
	}
	e.closed = true
	e.gate.Unlock()
	e.detached.Wait() // work callers gave up on still reaches its shards
	for _, s := range e.shards {
		e.ask(s, cmd{kind: cmdStop})
	}
	var ctxErr error
	for e.busy.Load() > 0 {
		select {
		case <-e.progress:
		case <-ctx.Done():
			if ctxErr == nil {
				ctxErr = ctx.Err()
				e.dstop()
			}
			<-e.progress
		}
	}
	close(e.work)
	e.wg.Wait()
	for _, s := range e.shards {
		s.cmds <- cmd{kind: cmdExit}
		<-s.done
	}
	e.dstop()
	var err error
	if e.store != nil {
		err = e.store.Close()
	}
	e.log.Info("engine: closed")
	return errors.Join(ctxErr, err)
}

// Close stops at once: deliveries in flight are cancelled (see Shutdown).
func (e *Engine) Close() error {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	err := e.Shutdown(ctx)
	if errors.Is(err, context.Canceled) {
		err = nil
	}
	return err
}

// settle waits until every message due by the clock's current time has been
// taken off its wheel and its outcome applied, and every queued command
// processed: the engine is quiet until the clock moves. For tests with a
// FakeClock.
func (e *Engine) settle(ctx context.Context) error {
	for {
		for _, s := range e.shards {
			e.ask(s, cmd{kind: cmdBarrier})
		}
		if e.busy.Load() == 0 {
			quiet := true
			for _, s := range e.shards {
				e.ask(s, cmd{kind: cmdBarrier})
			}
			if e.busy.Load() != 0 {
				quiet = false
			}
			if quiet {
				return nil
			}
		}
		select {
		case <-e.progress:
		case <-ctx.Done():
			return fmt.Errorf("settle: %w (busy %d)", ctx.Err(), e.busy.Load())
		}
	}
}

// addOverdue counts messages found overdue at recovery into the duplicate
// estimate, capped by how many could have been in flight at once.
func (e *Engine) addOverdue(n int) {
	capacity := int64(e.opts.Dispatchers*e.opts.MaxBatch + len(e.shards)*e.opts.MaxReady)
	e.recMu.Lock()
	e.dupEstimate = min(capacity, e.dupEstimate+int64(n))
	e.recMu.Unlock()
}
