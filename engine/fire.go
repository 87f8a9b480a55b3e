package engine

import (
	"math"

	"github.com/hourglassmq/hourglass/store"
)

// Firing: popDue takes due messages off the wheel into per-destination ready
// queues, and flush hands them to the dispatchers in batches, within each
// destination's in-flight limit.
//
// Push back: a shard holds at most MaxReady messages ready to send, where
// one destination counts for at most 3/4 of MaxReady. A destination that
// cannot keep up keeps a backlog of its own behind that (a queue entry
// costs 4 bytes; its messages are in RAM anyway, within MaxPending) while
// the others keep flowing, and when every destination is saturated the
// wheel simply keeps its due messages.

// readyQ is a FIFO of item indices waiting for a dispatcher.
type readyQ struct {
	d      *dest // one reference held while the queue exists
	idx    []int32
	off    int
	behind bool // its head waits too long: d's producers wait (pushback.go)
}

func (q *readyQ) len() int { return len(q.idx) - q.off }

// readyBudget returns how many more messages popDue may take.
func (s *shard) readyBudget() int {
	perDest := s.e.opts.MaxReady * 3 / 4
	ready := 0
	for _, q := range s.readyOrder {
		ready += min(q.len(), perDest)
	}
	return s.e.opts.MaxReady - ready
}

// popDue takes due messages off the wheel into the ready queues.
func (s *shard) popDue() {
	if s.stopped {
		return
	}
	budget := s.readyBudget()
	wall, mono := s.now()
	if budget <= 0 {
		s.noteWheelLag(mono, false)
		return
	}
	s.refs = s.w.AdvanceLimit(mono, budget, s.refs[:0])
	s.noteWheelLag(mono, len(s.refs) < budget)
	if len(s.refs) == 0 {
		return
	}
	fired := 0
	for _, ref := range s.refs {
		i := int32(ref)
		it := s.item(i)
		if it.due > wall {
			// The wheel runs on the monotonic clock; the wall clock says it
			// is early (it stepped back). Never deliver early: wait more.
			s.e.cnt.earlyCaught.Add(1)
			it.h = s.w.Insert(store.SatAdd(mono, it.due-wall), ref)
			continue
		}
		q := s.readyFor(s.destName(i))
		it.state = stReady
		q.idx = append(q.idx, i)
		s.readyTotal++
		fired++
	}
	if fired > 0 {
		s.taken(fired)
		s.e.cnt.fired.Add(uint64(fired))
		s.e.markFirstFire()
	}
}

// readyFor returns dest's ready queue, creating it.
func (s *shard) readyFor(name string) *readyQ {
	q := s.ready[name]
	if q == nil {
		q = &readyQ{d: s.e.hold(name)}
		s.ready[name] = q
		s.readyOrder = append(s.readyOrder, q)
	}
	return q
}

// unready takes item i out of its ready queue (Cancel of a message waiting
// for a dispatcher). It stays taken until the caller frees or restores it.
func (s *shard) unready(i int32) {
	if q := s.ready[s.destName(i)]; q != nil {
		for k := q.off; k < len(q.idx); k++ {
			if q.idx[k] == i {
				copy(q.idx[k:], q.idx[k+1:])
				q.idx = q.idx[:len(q.idx)-1]
				s.readyTotal--
				s.done1(1)
				return
			}
		}
	}
	panic("engine: ready item not in its ready queue")
}

// flush hands ready batches to the dispatchers, as far as the destinations'
// in-flight limits and the work queue allow.
func (s *shard) flush() {
	s.readyWake = math.MaxInt64
	if len(s.readyOrder) == 0 {
		return
	}
	wall, _ := s.now()
	keep := s.readyOrder[:0]
	full := false
	for _, q := range s.readyOrder {
		for !full && q.len() > 0 {
			if !q.d.acquire() {
				break
			}
			n := min(q.len(), s.e.opts.MaxBatch)
			b := s.e.newBatch(s, q.d, n)
			b.fired = wall
			// The batch's payloads are copies in one fresh arena: a
			// handler may keep its Payload, and the shard reuses the slots.
			size := 0
			for _, i := range q.idx[q.off : q.off+n] {
				size += s.item(i).payload.len()
			}
			arena := make([]byte, 0, size)
			for _, i := range q.idx[q.off : q.off+n] {
				b.idx = append(b.idx, i)
				var m store.Message
				m, arena = s.message(i, arena)
				b.msgs = append(b.msgs, m)
			}
			select {
			case s.e.work <- b:
				for _, i := range b.idx {
					s.item(i).state = stInFlight
				}
				q.off += n
				s.readyTotal -= n
			default:
				q.d.releaseSlot()
				s.e.putBatch(b)
				full = true
			}
		}
		if at := s.noteReadyLag(q, wall); at > 0 {
			s.readyWake = min(s.readyWake, at)
		}
		if q.len() == 0 {
			delete(s.ready, q.d.name)
			s.e.release(q.d)
			continue
		}
		if q.off > 1024 && q.off > len(q.idx)/2 {
			q.idx = append(q.idx[:0], q.idx[q.off:]...)
			q.off = 0
		}
		keep = append(keep, q)
	}
	clear(s.readyOrder[len(keep):])
	s.readyOrder = keep
	// Rotate so no destination is always served first.
	if len(s.readyOrder) > 1 {
		s.readyOrder = append(s.readyOrder[1:], s.readyOrder[0])
	}
}

// applyResult applies a dispatcher's outcomes for one batch.
func (s *shard) applyResult(b *batch) {
	now := s.reading()
	for k, i := range b.idx {
		it := s.item(i)
		if it.state != stInFlight || it.id != b.msgs[k].ID {
			panic("engine: result for an item that is not in flight")
		}
		r := &b.res[k]
		switch r.kind {
		case resRetry:
			it.due, it.attempt = r.due, r.attempt
			it.state = stPending
			if s.win.inside(store.Position{Due: it.due, ID: it.id}) {
				it.h = s.w.Insert(now.monoOf(r.due), uint64(i))
			} else {
				s.win.nextDisk = min(s.win.nextDisk, r.due)
				s.freeItem(i)
			}
		default:
			s.freeItem(i)
		}
	}
	n := len(b.idx)
	b.d.outcomes.Add(uint64(n))
	s.e.release(b.d)
	s.e.putBatch(b)
	s.done1(n)
}
