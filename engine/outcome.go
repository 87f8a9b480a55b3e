package engine

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/hourglassmq/hourglass/store"
)

// fail decides what follows a failed attempt of message k: a retry at the
// policy's backoff (or at, when not 0; never sooner than minDelay, which
// the far side asked for), a dead letter, or an expiry.
func (e *Engine) fail(b *batch, k int, wall int64, pol *RetryPolicy, cause error, at int64, minDelay time.Duration) {
	m := &b.msgs[k]
	attempt := m.Attempt + 1
	reason := "unknown error"
	if cause != nil {
		reason = cause.Error()
	}
	dead := func(reason string) {
		b.res[k] = result{kind: resDead, attempt: attempt, reason: truncate(reason), err: cause}
	}
	var pe *PermanentError
	if errors.As(cause, &pe) {
		dead(reason)
		return
	}
	if pol.MaxAttempts > 0 && int(attempt) >= pol.MaxAttempts {
		dead(fmt.Sprintf("gave up after %d attempts: %s", attempt, reason))
		return
	}
	due := at
	if due == 0 {
		d := max(pol.delay(attempt), minDelay)
		if pol.Max > 0 && minDelay > 0 {
			d = min(d, max(pol.Max, minDelay))
		}
		due = store.SatAdd(wall, int64(d))
	}
	if due > store.MaxDue {
		dead(fmt.Sprintf("the retry would be due after the latest time Hourglass holds (%s): %s", timeRange, reason))
		return
	}
	if m.Expires != 0 && due > m.Expires {
		b.res[k] = result{kind: resExpired}
		return
	}
	b.res[k] = result{kind: resRetry, due: due, attempt: attempt, err: cause}
}

// failAt handles a handler's RetryIn or RetryAt: the time it asks for,
// unless that is after the latest time Hourglass holds.
func (e *Engine) failAt(b *batch, k int, wall int64, pol *RetryPolicy, cause error, re *RetryError) {
	var at int64
	if re.At.IsZero() {
		at = store.SatAdd(wall, int64(max(0, re.Delay)))
	} else {
		var err error
		if at, err = dueOf("RetryAt", re.At, wall); err != nil {
			at = store.MaxDue + 1 // dead-lettered by fail, with the reason
		}
	}
	e.fail(b, k, wall, pol, cause, max(at, wall), 0)
}

func truncate(s string) string {
	if len(s) > store.MaxReasonLen {
		return s[:store.MaxReasonLen]
	}
	return s
}

// delay returns the backoff before retry number attempt (1 = after the
// first failure).
func (p *RetryPolicy) delay(attempt uint32) time.Duration {
	if len(p.Delays) > 0 {
		return p.Delays[min(int(attempt)-1, len(p.Delays)-1)]
	}
	d := p.Base
	for i := uint32(1); i < attempt && d < p.Max; i++ {
		d = satDouble(d)
	}
	d = min(d, p.Max)
	if p.Jitter > 0 {
		d = time.Duration(float64(d) * (1 + p.Jitter*(2*rand.Float64()-1)))
	}
	return max(0, d)
}

// commit writes the batch's outcomes and cascaded messages to the store:
// each message's outcome together with its cascades in one atomic Resolve
// (messages are grouped into as few Resolves as the limits allow).
func (e *Engine) commit(b *batch, sc *scratch) {
	lo, ops := 0, 0
	for k := range b.msgs {
		c := 1
		if len(b.cascades) > 0 && b.res[k].kind == resDelivered {
			c += len(b.cascades[k])
		}
		if ops+c > store.MaxCallMessages && k > lo {
			e.commitRange(b, lo, k, sc)
			lo, ops = k, 0
		}
		ops += c
	}
	e.commitRange(b, lo, len(b.msgs), sc)
}

func (e *Engine) commitRange(b *batch, lo, hi int, sc *scratch) {
	for {
		sb := &sc.sb
		sb.Done, sb.Update, sb.Dead, sb.New = sb.Done[:0], sb.Update[:0], sb.Dead[:0], sb.New[:0]
		for k := lo; k < hi; k++ {
			m, r := &b.msgs[k], &b.res[k]
			switch r.kind {
			case resDelivered, resNative:
				sb.Done = append(sb.Done, store.Done{ID: m.ID, Reason: store.Delivered})
				if len(b.cascades) > 0 {
					sb.New = append(sb.New, b.cascades[k]...)
				}
			case resExpired:
				sb.Done = append(sb.Done, store.Done{ID: m.ID, Reason: store.Expired})
			case resRetry:
				sb.Update = append(sb.Update, store.Update{ID: m.ID, Due: r.due, Attempt: r.attempt})
			case resDead:
				sb.Dead = append(sb.Dead, store.Dead{ID: m.ID, Reason: r.reason, Attempt: r.attempt})
			}
		}
		if sb.Ops() == 0 {
			return
		}
		_, err := e.st.Resolve(context.Background(), *sb)
		clear(sb.New)
		if err == nil {
			return
		}
		var npe *store.NotPendingError
		switch {
		case errors.As(err, &npe):
			// Cancelled (or resolved elsewhere) while in flight: drop those
			// and commit the rest.
			gone := make(map[ID]bool, len(npe.IDs))
			for _, id := range npe.IDs {
				gone[id] = true
			}
			for k := lo; k < hi; k++ {
				if gone[b.msgs[k].ID] {
					b.res[k] = result{kind: resGone}
				}
			}
			continue
		case errors.Is(err, store.ErrFull) && e.failCascades(b, lo, hi, err):
			continue // the deliveries that cascaded are retried instead
		}
		// The store failed or closed: no outcome is written, and the
		// messages stay pending in it (a durable store delivers them again
		// after a restart).
		e.checkStore(err)
		if !errors.Is(err, store.ErrClosed) {
			e.log.Error("engine: commit outcomes", "dest", b.d.name, "messages", hi-lo, "err", err)
		}
		for k := lo; k < hi; k++ {
			if b.res[k].kind != resGone {
				b.res[k] = result{kind: resKeep}
			}
		}
		return
	}
}

// failCascades turns the deliveries in [lo, hi) that cascaded messages
// into failed attempts, because the store cannot take their cascades. It
// reports whether there was any.
func (e *Engine) failCascades(b *batch, lo, hi int, cause error) bool {
	if len(b.cascades) == 0 {
		return false
	}
	wall := e.clock.Now().UnixNano()
	pol := b.d.retry.Load()
	any := false
	for k := lo; k < hi; k++ {
		if b.res[k].kind == resDelivered && len(b.cascades[k]) > 0 {
			b.cascades[k] = nil
			e.fail(b, k, wall, pol, fmt.Errorf("engine: the store cannot take the cascaded messages: %w", cause), 0, 0)
			any = true
		}
	}
	return any
}

// report counts the outcomes, tells the listeners, and hands the batch
// back to its shard (unless the shard is gone: the engine closed).
func (e *Engine) report(b *batch) {
	info := OutcomeInfo{Dest: b.d.name, Shard: b.s.n, Fired: time.Unix(0, b.fired)}
	for k := range b.res {
		r := &b.res[k]
		m := &b.msgs[k]
		switch r.kind {
		case resDelivered:
			info.Delivered++
		case resRetry:
			info.Retried++
			if f := e.ev.Retry; f != nil {
				f(RetryInfo{ID: m.ID, Dest: m.Dest, Attempt: int(r.attempt), Next: time.Unix(0, r.due), Err: r.err})
			}
		case resDead:
			info.Dead++
			e.log.Warn("engine: dead-lettered", "id", m.ID, "dest", m.Dest, "attempts", r.attempt, "reason", r.reason)
			if f := e.ev.DeadLetter; f != nil {
				f(DeadLetterInfo{ID: m.ID, Dest: m.Dest, Attempts: int(r.attempt), Reason: r.reason})
			}
		case resExpired:
			info.Expired++
			if f := e.ev.Expired; f != nil {
				f(ExpiredInfo{ID: m.ID, Dest: m.Dest, Expires: time.Unix(0, m.Expires)})
			}
		case resNative:
			info.Native++
		case resGone:
			info.Gone++
		}
	}
	e.cnt.delivered.Add(uint64(info.Delivered))
	e.cnt.retried.Add(uint64(info.Retried))
	e.cnt.dead.Add(uint64(info.Dead))
	e.cnt.expired.Add(uint64(info.Expired))
	e.cnt.nativeFired.Add(uint64(info.Native))
	if f := e.ev.Outcomes; f != nil {
		for _, l := range b.late {
			if l != notHanded {
				info.Lateness = append(info.Lateness, l)
			}
		}
		f(info)
	}
	select {
	case b.s.results <- b:
	case <-b.s.done:
	}
}
