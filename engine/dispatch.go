package engine

import (
	"time"

	"github.com/hourglassmq/hourglass/store"
	"github.com/hourglassmq/hourglass/transport"
)

// The dispatchers are a fixed pool of goroutines. Each takes a batch (up to
// MaxBatch due messages of one destination from one shard), delivers it
// (deliver.go), commits the outcomes (outcome.go) and hands the batch back
// to its shard.

// resKind is what happened to one message of a batch.
type resKind uint8

const (
	resDelivered resKind = iota
	resRetry
	resDead
	resExpired
	resGone   // the store no longer holds it as pending (cancelled meanwhile)
	resKeep   // no outcome: left pending in the store, dropped from RAM
	resNative // a shadow's due time came: its broker fires it
)

type result struct {
	kind    resKind
	due     int64
	attempt uint32
	reason  string
	err     error // the failure behind a retry or dead letter (events)
}

// notHanded marks a message of a batch that was not handed off.
const notHanded = time.Duration(-1 << 63)

// batch is up to MaxBatch due messages of one destination from one shard.
type batch struct {
	s     *shard
	d     *dest // one reference held until the shard applies the result
	fired int64 // wall time the shard handed it off
	idx   []int32
	msgs  []store.Message
	res   []result
	// cascades[k] are the messages message k's handler cascaded (local
	// queues only; nil otherwise).
	cascades [][]store.Message
	// late[k] is message k's lateness at hand-off to its handler or
	// transport; notHanded when it was not handed off.
	late []time.Duration
	// noPool: an abandoned handler worker may still read msgs, so the
	// batch is left to the garbage collector.
	noPool bool
}

func (e *Engine) newBatch(s *shard, d *dest, n int) *batch {
	b, _ := e.batchPool.Get().(*batch)
	if b == nil {
		b = &batch{}
	}
	b.s, b.d = s, d
	d.refs.Add(1)
	if cap(b.idx) < n {
		b.idx = make([]int32, 0, n)
		b.msgs = make([]store.Message, 0, n)
	}
	return b
}

// putBatch returns b to the pool (its reference to d is the caller's).
func (e *Engine) putBatch(b *batch) {
	if b.noPool {
		return
	}
	clear(b.msgs)
	clear(b.cascades)
	b.idx, b.msgs, b.res, b.cascades, b.late = b.idx[:0], b.msgs[:0], b.res[:0], b.cascades[:0], b.late[:0]
	b.s, b.d = nil, nil
	e.batchPool.Put(b)
}

// dispatcher is one goroutine of the fixed pool.
func (e *Engine) dispatcher() {
	defer e.dispatchers.Done()
	var sc scratch
	for b := range e.work {
		e.deliver(b, &sc)
	}
}

// scratch is a dispatcher's reusable memory.
type scratch struct {
	envs []transport.Envelope
	pos  []int
	outs []transport.Outcome
	sb   store.Batch
}

// deliver sends one batch, decides each message's outcome, commits the
// outcomes (and cascaded messages) to the store, and reports to the shard.
func (e *Engine) deliver(b *batch, sc *scratch) {
	n := len(b.msgs)
	if cap(b.res) < n {
		b.res = make([]result, n)
		b.late = make([]time.Duration, n)
	}
	b.res, b.late = b.res[:n], b.late[:n]
	for k := range b.late {
		b.late[k] = notHanded
	}
	wall := e.clock.Now().UnixNano()
	live := 0
	for k := range b.msgs {
		m := &b.msgs[k]
		switch {
		case isShadow(m):
			b.res[k] = result{kind: resNative}
		case m.Expires != 0 && wall > m.Expires:
			b.res[k] = result{kind: resExpired}
		default:
			b.res[k] = result{kind: resDelivered}
			live++
		}
	}
	pol := b.d.retry.Load()
	if live > 0 {
		if b.d.local != "" {
			e.runHandlers(b, pol)
		} else {
			e.send(b, pol, sc)
		}
	}
	// The destination's slot is free once the handlers ran or the sender
	// answered: the commit below is the engine's bookkeeping, bounded by
	// the dispatcher pool, not the destination's parallelism. (An ordered
	// queue's next batch may start while this one commits; a crash in
	// between redelivers this one.)
	b.d.releaseSlot()
	e.wakeAll()
	e.commit(b, sc)
	e.report(b)
}

func (e *Engine) wakeAll() {
	for _, s := range e.attached() {
		s.signal()
	}
}

func toTransportHeaders(hs []store.Header) []transport.Header {
	if len(hs) == 0 {
		return nil
	}
	out := make([]transport.Header, len(hs))
	for i, h := range hs {
		out[i] = transport.Header{Key: h.Key, Value: h.Value}
	}
	return out
}
