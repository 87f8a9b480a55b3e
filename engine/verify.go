package engine

import "fmt"

// verify checks a shard's bookkeeping: the live count, the states and the
// wheel's size against the slab, ready queues against ready items, busy
// against ready and in-flight items, the window invariant for what RAM
// holds, and that every RAM message can be found by its ID. O(slab), so it
// runs only with the invariants build tag and only while the slab is small.
func (s *shard) verify() {
	if !invariants || s.nitem > 4096 {
		return
	}
	live, pending, ready, inflight := 0, 0, 0, 0
	for i := int32(0); i < s.nitem; i++ {
		it := s.item(i)
		switch it.state {
		case stFree:
			continue
		case stPending:
			pending++
		case stReady:
			ready++
		case stInFlight:
			inflight++
		default:
			panic(fmt.Sprintf("engine: shard %d slot %d: state %d", s.n, i, it.state))
		}
		live++
		if j, ok := s.find(it.id); !ok || j != i {
			panic(fmt.Sprintf("engine: shard %d: %s in slot %d not found by ID", s.n, it.id, i))
		}
		if _, ok := s.claims[it.id]; ok {
			panic(fmt.Sprintf("engine: shard %d: %s is in RAM and claimed", s.n, it.id))
		}
	}
	if live != s.live || s.ids.n != live {
		panic(fmt.Sprintf("engine: shard %d: live %d, by ID %d, slab holds %d", s.n, s.live, s.ids.n, live))
	}
	if s.w.Len() != pending {
		panic(fmt.Sprintf("engine: shard %d: wheel holds %d, %d items pending", s.n, s.w.Len(), pending))
	}
	queued := 0
	for _, q := range s.readyOrder {
		for _, i := range q.idx[q.off:] {
			if s.item(i).state != stReady {
				panic(fmt.Sprintf("engine: shard %d: ready slot %d not ready", s.n, i))
			}
		}
		queued += q.len()
	}
	if queued != s.readyTotal || queued != ready || len(s.ready) != len(s.readyOrder) {
		panic(fmt.Sprintf("engine: shard %d: ready queues hold %d, counted %d, %d items ready", s.n, queued, s.readyTotal, ready))
	}
	if b := s.busy.Load(); b != int64(ready+inflight) {
		panic(fmt.Sprintf("engine: shard %d: busy %d, %d ready + %d in flight", s.n, b, ready, inflight))
	}
}
