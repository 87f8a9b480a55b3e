package engine

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync/atomic"
	"time"

	"github.com/hourglassmq/hourglass/transport"
	"github.com/hourglassmq/hourglass/wal"
)

// dest is one destination string: its sender or local queue, retry policy
// and in-flight limit. Shared by all shards and dispatchers; immutable after
// creation except the atomics.
type dest struct {
	name     string
	scheme   string
	local    string // queue name for local://
	limit    atomic.Int64
	inflight atomic.Int64
	retry    atomic.Pointer[RetryPolicy]
}

func (d *dest) acquire() bool {
	if d.inflight.Add(1) > d.limit.Load() {
		d.inflight.Add(-1)
		return false
	}
	return true
}

func (d *dest) releaseSlot() { d.inflight.Add(-1) }

// queue is a registered local queue.
type queue struct {
	Queue
}

// destFor returns the dest for name, creating it on first use. Safe for
// concurrent use.
func (e *Engine) destFor(name string) *dest {
	e.destMu.RLock()
	d := e.dests[name]
	e.destMu.RUnlock()
	if d != nil {
		return d
	}
	e.destMu.Lock()
	defer e.destMu.Unlock()
	if d = e.dests[name]; d != nil {
		return d
	}
	d = &dest{name: name}
	if i := strings.Index(name, "://"); i > 0 {
		d.scheme = strings.ToLower(name[:i])
		if d.scheme == "local" {
			d.local = name[i+3:]
		}
	}
	e.configureDest(d)
	e.dests[name] = d
	return d
}

// configureDest sets d's policy and limit from the options and queues.
// Callers hold destMu (write).
func (e *Engine) configureDest(d *dest) {
	limit := e.opts.MaxInFlight
	pol := e.opts.Retry
	best := -1
	for _, o := range e.opts.Destinations {
		if strings.HasPrefix(d.name, o.Prefix) && len(o.Prefix) > best {
			best = len(o.Prefix)
			if !o.Retry.isZero() {
				pol = o.Retry.withDefaults()
			}
			if o.MaxInFlight > 0 {
				limit = o.MaxInFlight
			}
		}
	}
	if d.local != "" {
		if q := e.queueFor(d.local); q != nil {
			limit = q.Parallelism
			if q.Ordered {
				limit = 1
			}
			if !q.Retry.isZero() {
				pol = q.Retry.withDefaults()
			}
		}
	}
	d.limit.Store(int64(limit))
	d.retry.Store(&pol)
}

func (e *Engine) queueFor(name string) *queue {
	e.queueMu.RLock()
	defer e.queueMu.RUnlock()
	return e.queues[name]
}

// Register adds a local queue handler for "local://"+q.Name. Prefer
// Options.Queues for queues that recovered messages may target: a message
// due for an unregistered queue is retried by its policy.
func (e *Engine) Register(q Queue) error {
	if err := q.validate(); err != nil {
		return err
	}
	if q.Parallelism == 0 {
		q.Parallelism = defaultParallelism()
	}
	e.queueMu.Lock()
	if _, ok := e.queues[q.Name]; ok {
		e.queueMu.Unlock()
		return invalidf("queue %q is already registered", q.Name)
	}
	e.queues[q.Name] = &queue{Queue: q}
	e.queueMu.Unlock()
	e.destMu.Lock()
	for _, d := range e.dests {
		if d.local == q.Name {
			e.configureDest(d)
		}
	}
	e.destMu.Unlock()
	return nil
}

// resKind is what happened to one message of a batch.
type resKind uint8

const (
	resDelivered resKind = iota
	resRetry
	resDead
	resExpired
	resGone   // the store no longer holds it as pending (cancelled meanwhile)
	resStuck  // the store failed: left pending on disk, dropped from RAM
	resNative // a shadow's due time came: its broker fires it (native scheduling)
)

type result struct {
	kind    resKind
	due     int64
	attempt uint32
	reason  string
}

// batch is up to MaxBatch due messages of one destination from one shard.
type batch struct {
	s     *shard
	d     *dest
	fired int64
	idx   []int32
	msgs  []wal.Message
	res   []result
}

func (e *Engine) newBatch(s *shard, d *dest, n int) *batch {
	b, _ := e.batchPool.Get().(*batch)
	if b == nil {
		b = &batch{}
	}
	b.s, b.d = s, d
	if cap(b.idx) < n {
		b.idx = make([]int32, 0, n)
		b.msgs = make([]wal.Message, 0, n)
	}
	return b
}

func (e *Engine) putBatch(b *batch) {
	clear(b.msgs)
	b.idx, b.msgs, b.res = b.idx[:0], b.msgs[:0], b.res[:0]
	b.s, b.d = nil, nil
	e.batchPool.Put(b)
}

// dispatcher is one goroutine of the fixed pool.
func (e *Engine) dispatcher() {
	defer e.wg.Done()
	var sc scratch
	for b := range e.work {
		e.deliver(b, &sc)
	}
}

type scratch struct {
	envs []transport.Envelope
	outs []transport.Outcome
	wb   wal.Batch
}

// deliver sends one batch, decides each message's outcome, commits the
// outcomes (and cascaded messages) to the store, and reports to the shard.
func (e *Engine) deliver(b *batch, sc *scratch) {
	now := e.clock.Now()
	wall := now.UnixNano()
	n := len(b.msgs)
	if cap(b.res) < n {
		b.res = make([]result, n)
	}
	b.res = b.res[:n]
	pol := b.d.retry.Load()
	live := 0
	for k := range b.msgs {
		m := &b.msgs[k]
		if isShadow(m) {
			b.res[k] = result{kind: resNative}
			continue
		}
		if m.Expires != 0 && wall > m.Expires {
			b.res[k] = result{kind: resExpired}
			continue
		}
		b.res[k] = result{kind: resDelivered}
		live++
	}
	var cascades [][]wal.Message // per message, only for local queues
	if live > 0 {
		if b.d.local != "" {
			cascades = e.runHandlers(b, now, pol)
		} else {
			e.send(b, now, pol, sc)
		}
	}
	// The destination's slot is free once the handlers ran or the sender
	// answered: the commit below is the engine's bookkeeping, bounded by
	// the dispatcher pool, not the destination's parallelism. (An ordered
	// queue's next batch may start while this one commits; a crash in
	// between redelivers this one.)
	d := b.d
	d.releaseSlot()
	e.wakeAll()
	if e.store != nil {
		e.commitDurable(b, cascades, sc)
	} else {
		e.commitMemory(b, cascades, now)
	}
	for k := range b.res {
		switch b.res[k].kind {
		case resDelivered:
			e.st.delivered.Add(1)
		case resRetry:
			e.st.retried.Add(1)
		case resDead:
			e.st.dead.Add(1)
		case resExpired:
			e.st.expired.Add(1)
		case resNative:
			e.st.nativeFired.Add(1)
		}
	}
	b.s.results <- b
}

func (e *Engine) wakeAll() {
	for _, s := range e.shards {
		s.signal()
	}
}

// fail decides the retry (or dead letter, or expiry) of message k after a
// failed attempt. at is an explicit retry time (0 = use the policy); minDelay
// is a lower bound from the far side (Retry-After).
func (e *Engine) fail(b *batch, k int, wall int64, pol *RetryPolicy, cause error, at int64, minDelay time.Duration) {
	m := &b.msgs[k]
	attempt := m.Attempt + 1
	reason := "unknown error"
	if cause != nil {
		reason = cause.Error()
	}
	var pe *PermanentError
	if errors.As(cause, &pe) {
		b.res[k] = result{kind: resDead, attempt: attempt, reason: truncate(reason)}
		return
	}
	if pol.MaxAttempts > 0 && int(attempt) >= pol.MaxAttempts {
		b.res[k] = result{kind: resDead, attempt: attempt,
			reason: truncate(fmt.Sprintf("gave up after %d attempts: %s", attempt, reason))}
		return
	}
	due := at
	if due == 0 {
		d := max(pol.delay(attempt), minDelay)
		if pol.Max > 0 && minDelay > 0 {
			d = min(d, max(pol.Max, minDelay))
		}
		due = wall + int64(d)
	}
	if m.Expires != 0 && due > m.Expires {
		b.res[k] = result{kind: resExpired}
		return
	}
	b.res[k] = result{kind: resRetry, due: due, attempt: attempt}
}

func truncate(s string) string {
	if len(s) > wal.MaxReasonLen {
		return s[:wal.MaxReasonLen]
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
		d *= 2
	}
	d = min(d, p.Max)
	if p.Jitter > 0 {
		d = time.Duration(float64(d) * (1 + p.Jitter*(2*rand.Float64()-1)))
	}
	return max(0, d)
}

// send delivers a transport batch.
func (e *Engine) send(b *batch, now time.Time, pol *RetryPolicy, sc *scratch) {
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
	sc.envs = sc.envs[:0]
	pos := make([]int, 0, len(b.msgs))
	fired := time.Unix(0, b.fired)
	for k := range b.msgs {
		if b.res[k].kind != resDelivered {
			continue
		}
		m := &b.msgs[k]
		sc.envs = append(sc.envs, transport.Envelope{
			ID: m.ID.String(), Dest: m.Dest, Attempt: int(m.Attempt) + 1,
			Due: time.Unix(0, m.Due), Fired: fired, Key: m.Key,
			Headers: toTransportHeaders(m.Headers), Payload: m.Payload,
		})
		pos = append(pos, k)
	}
	if cap(sc.outs) < len(sc.envs) {
		sc.outs = make([]transport.Outcome, len(sc.envs))
	}
	outs := sc.outs[:len(sc.envs)]
	clear(outs)
	sender.Send(e.dctx, sc.envs, outs)
	for j, k := range pos {
		o := outs[j]
		switch o.Status {
		case transport.StatusDelivered:
		case transport.StatusReject:
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

// runHandlers runs a local queue's handler on each live message, one after
// the other, and returns each message's cascaded messages.
func (e *Engine) runHandlers(b *batch, now time.Time, pol *RetryPolicy) [][]wal.Message {
	q := e.queueFor(b.d.local)
	wall := now.UnixNano()
	if q == nil {
		err := fmt.Errorf("%w: %q", ErrUnknownQueue, b.d.local)
		for k := range b.msgs {
			if b.res[k].kind == resDelivered {
				e.fail(b, k, wall, pol, err, 0, 0)
			}
		}
		return nil
	}
	var out [][]wal.Message
	fired := time.Unix(0, b.fired)
	for k := range b.msgs {
		if b.res[k].kind != resDelivered {
			continue
		}
		m := &b.msgs[k]
		d := Delivery{
			ID: m.ID, Dest: m.Dest, Key: m.Key, Payload: m.Payload,
			Headers: toTransportHeaders(m.Headers), Attempt: int(m.Attempt) + 1,
			Due: time.Unix(0, m.Due), Fired: fired, e: e,
		}
		if m.Expires != 0 {
			d.Expires = time.Unix(0, m.Expires)
		}
		err := callHandler(e.dctx, q.Handler, &d)
		if err == nil {
			if len(d.out) > 0 {
				if out == nil {
					out = make([][]wal.Message, len(b.msgs))
				}
				out[k] = d.out
			}
			continue
		}
		wall := e.clock.Now().UnixNano()
		var re *RetryError
		if errors.As(err, &re) {
			at := wall + int64(max(0, re.Delay))
			if !re.At.IsZero() {
				at = max(re.At.UnixNano(), wall)
			}
			e.fail(b, k, wall, pol, err, at, 0)
			continue
		}
		e.fail(b, k, wall, pol, err, 0, 0)
	}
	return out
}

func callHandler(ctx context.Context, h Handler, d *Delivery) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("engine: handler panicked: %v", r)
		}
	}()
	return h(ctx, d)
}

// commitMemory applies outcomes in memory mode.
func (e *Engine) commitMemory(b *batch, cascades [][]wal.Message, now time.Time) {
	var all []wal.Message
	for k := range b.msgs {
		r := &b.res[k]
		if r.kind == resDead {
			m := b.msgs[k]
			m.Attempt = r.attempt
			e.addDead(DeadLetter{ID: m.ID, Message: fromWal(&m), Attempts: int(r.attempt), Reason: r.reason, DeadAt: now})
		}
		if cascades != nil && len(cascades[k]) > 0 && r.kind == resDelivered {
			all = append(all, cascades[k]...)
		}
	}
	if len(all) > 0 {
		// Cascades are already validated; only MaxPending can refuse them.
		if _, _, err := e.insertMemory(context.Background(), all, false); err != nil {
			e.log.Warn("engine: cascaded messages dropped", "count", len(all), "err", err)
		}
	}
}

// commitDurable writes the batch's outcomes and cascaded messages to the
// store: each message's outcome together with its cascades in one atomic
// Resolve (messages are grouped into as few Resolves as the limits allow).
func (e *Engine) commitDurable(b *batch, cascades [][]wal.Message, sc *scratch) {
	flush := func(lo, hi int) {
		for {
			wb := &sc.wb
			wb.Done, wb.Update, wb.Dead, wb.New = wb.Done[:0], wb.Update[:0], wb.Dead[:0], nil
			for k := lo; k < hi; k++ {
				m, r := &b.msgs[k], &b.res[k]
				switch r.kind {
				case resDelivered:
					wb.Done = append(wb.Done, wal.Done{ID: m.ID, Reason: wal.Delivered})
					if cascades != nil {
						wb.New = append(wb.New, cascades[k]...)
					}
				case resExpired:
					wb.Done = append(wb.Done, wal.Done{ID: m.ID, Reason: wal.Expired})
				case resNative:
					wb.Done = append(wb.Done, wal.Done{ID: m.ID, Reason: wal.Delivered})
				case resRetry:
					wb.Update = append(wb.Update, wal.Update{ID: m.ID, Due: r.due, Attempt: r.attempt})
				case resDead:
					wb.Dead = append(wb.Dead, wal.Dead{ID: m.ID, Reason: r.reason, Attempt: r.attempt})
				}
			}
			if len(wb.Done)+len(wb.Update)+len(wb.Dead) == 0 {
				return
			}
			app, err := e.store.Resolve(context.Background(), *wb)
			if err == nil {
				if len(wb.New) > 0 {
					nm := wb.New
					for i := range nm {
						nm[i].ID = app[i].ID
						if app[i].Existing {
							nm[i].ID = 0
						}
					}
					e.postInserts(nm)
				}
				return
			}
			var npe *wal.NotPendingError
			if errors.As(err, &npe) {
				gone := make(map[wal.ID]bool, len(npe.IDs))
				for _, id := range npe.IDs {
					gone[id] = true
				}
				for k := lo; k < hi; k++ {
					if gone[b.msgs[k].ID] {
						b.res[k] = result{kind: resGone}
					}
				}
				continue
			}
			e.failStore(err)
			for k := lo; k < hi; k++ {
				b.res[k] = result{kind: resStuck}
			}
			return
		}
	}
	lo, ops := 0, 0
	for k := range b.msgs {
		c := 1
		if cascades != nil && b.res[k].kind == resDelivered {
			c += len(cascades[k])
		}
		if ops+c > wal.MaxCallMessages && k > lo {
			flush(lo, k)
			lo, ops = k, 0
		}
		ops += c
	}
	flush(lo, len(b.msgs))
}

func toTransportHeaders(hs []wal.Header) []transport.Header {
	if len(hs) == 0 {
		return nil
	}
	out := make([]transport.Header, len(hs))
	for i, h := range hs {
		out[i] = transport.Header{Key: h.Key, Value: h.Value}
	}
	return out
}

func toWalHeaders(hs []Header) []wal.Header {
	if len(hs) == 0 {
		return nil
	}
	out := make([]wal.Header, len(hs))
	for i, h := range hs {
		out[i] = wal.Header{Key: h.Key, Value: h.Value}
	}
	return out
}

// Delivery is what a handler sees: the message, its attempt, due and fire
// times, and methods to cascade new messages. Cascaded messages are committed
// atomically with the ack of this delivery (in durable mode, in the same
// store batch); if the handler fails they are discarded.
type Delivery struct {
	ID      ID
	Dest    string
	Key     string
	Headers []Header
	Payload []byte
	// Attempt is 1 for the first delivery.
	Attempt int
	// Due is when the message was scheduled for; Fired when the engine
	// took it off its wheel (Fired - Due is the engine's lateness).
	Due, Fired time.Time
	// Expires is the deliver-by time; zero if none.
	Expires time.Time

	e   *Engine
	out []wal.Message
}

// Send cascades m to be delivered now (m.Due is ignored).
func (d *Delivery) Send(m Message) error {
	m.Due = time.Time{}
	return d.Schedule(m)
}

// Schedule cascades m at m.Due (zero = now).
func (d *Delivery) Schedule(m Message) error {
	wm, err := d.e.prepare(&m, d.e.clock.Now())
	if err != nil {
		return err
	}
	if len(d.out) >= wal.MaxCallMessages/2 {
		return invalidf("delivery %s: more than %d cascaded messages", d.ID, wal.MaxCallMessages/2)
	}
	d.out = append(d.out, wm)
	return nil
}

// ScheduleIn cascades m due dur from now.
func (d *Delivery) ScheduleIn(dur time.Duration, m Message) error {
	m.Due = d.e.clock.Now().Add(dur)
	return d.Schedule(m)
}
