package engine

import "fmt"

// verify checks a shard's bookkeeping: the live count, the states and the
// wheel's size against the slab, ready queues against in-flight items, and
// that every RAM message can be found by its ID. O(slab), so it runs only
// with the invariants build tag and only while the slab is small.
func (s *shard) verify() {
	if !invariants || s.nitem > 4096 {
		return
	}
	live, pending, inflight := 0, 0, 0
	for i := int32(0); i < s.nitem; i++ {
		it := s.item(i)
		switch it.state {
		case stFree:
			continue
		case stPending:
			pending++
		case stInFlight:
			inflight++
		default:
			panic(fmt.Sprintf("engine: shard %d slot %d: state %d", s.n, i, it.state))
		}
		live++
		if j, ok := s.lookup(it.m.ID); !ok || j != i {
			panic(fmt.Sprintf("engine: shard %d: %s in slot %d not found by ID", s.n, it.m.ID, i))
		}
	}
	if live != s.live {
		panic(fmt.Sprintf("engine: shard %d: live %d, slab holds %d", s.n, s.live, live))
	}
	if s.w.Len() != pending {
		panic(fmt.Sprintf("engine: shard %d: wheel holds %d, %d items pending", s.n, s.w.Len(), pending))
	}
	parked := 0
	for _, q := range s.parkOrder {
		for _, i := range q.idx[q.off:] {
			if s.item(i).state != stInFlight {
				panic(fmt.Sprintf("engine: shard %d: ready slot %d not in flight", s.n, i))
			}
		}
		parked += q.len()
	}
	if parked != s.parkedTotal || parked > inflight {
		panic(fmt.Sprintf("engine: shard %d: ready %d, counted %d, in flight %d", s.n, parked, s.parkedTotal, inflight))
	}
}
