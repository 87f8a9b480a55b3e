package memstore

import (
	"slices"
	"sync"

	"github.com/google/btree"

	"github.com/hourglassmq/hourglass/store"
)

// shard holds one shard's pending messages. Its mutex guards everything in
// it; Store's lock order is shards (ascending) → keys → dead letters.
type shard struct {
	mu   sync.Mutex
	n    int
	base uint64 // random: IDs' local bits are base + (gen<<slotBits | slot)
	// reserved counts messages an Append has promised room for and not
	// yet added (its capacity check and its inserts are separate steps).
	reserved int
	// epoch numbers Resolve calls, for slot.mark; extraMarks does the same
	// for messages in extra.
	epoch      uint32
	extraMarks map[store.ID]uint32
	pages      [][]slot // the slab, in pages of pageSize so growth never copies
	nslot      int32
	free       []int32
	live       int
	// extra holds replayed dead letters, which keep IDs that may name a
	// reused slot.
	extra   map[store.ID]*store.Message
	buckets map[int64]*bucket
	order   *btree.BTreeG[int64] // keys of non-empty buckets
}

// slot holds one pending message, or nothing (m.ID == 0: IDs are never 0).
type slot struct {
	m   store.Message
	gen uint32
	// mark is the shard's epoch of the last Resolve that named this
	// message: a second naming in the same call is a duplicate.
	mark uint32
}

// bucket holds the IDs of messages due in [key*BucketWidth,
// (key+1)*BucketWidth); some may be stale (resolved or moved away), and a
// message that moved away and back is listed twice: readers check each
// entry against the message and skip repeats.
type bucket struct {
	ids  []store.ID
	live int
}

const (
	pageBits = 12
	pageSize = 1 << pageBits
)

func newShard(n int, base uint64) *shard {
	return &shard{n: n, base: base, buckets: map[int64]*bucket{}, order: btree.NewOrderedG[int64](32)}
}

// room reports whether n more messages (beyond those free frees) fit.
func (sh *shard) room(n, free, capacity int) bool { return sh.live+sh.reserved-free+n <= capacity }

func (sh *shard) slot(i int32) *slot { return &sh.pages[i>>pageBits][i&(pageSize-1)] }

// scan returns the shard's pending messages of q's range after q.After, at
// most limit, in (Due, ID) order; full reports that the range holds more.
func (sh *shard) scan(q store.ScanQuery, limit int) (out []store.Message, full bool) {
	from := max(q.From, q.After.Due)
	var cands []*store.Message
	sh.order.AscendGreaterOrEqual(from/BucketWidth, func(k int64) bool {
		if k*BucketWidth >= q.To {
			return false
		}
		cands = cands[:0]
		for _, id := range sh.buckets[k].ids {
			m := sh.get(id)
			if m == nil || m.Due/BucketWidth != k || m.Due < q.From || m.Due >= q.To {
				continue // stale, or outside the range
			}
			if !q.After.Less(store.PositionOf(m)) {
				continue
			}
			cands = append(cands, m)
		}
		slices.SortFunc(cands, func(a, b *store.Message) int {
			if store.PositionOf(a).Less(store.PositionOf(b)) {
				return -1
			}
			return 1
		})
		for j, m := range cands {
			if j > 0 && cands[j-1].ID == m.ID {
				continue // listed twice in the bucket
			}
			if len(out) == limit {
				full = true
				return false
			}
			out = append(out, *m)
		}
		return true
	})
	return out, full
}

// add takes a new message into a free slot, naming it (m.ID is set).
func (sh *shard) add(m *store.Message) {
	var i int32
	if n := len(sh.free); n > 0 {
		i = sh.free[n-1]
		sh.free = sh.free[:n-1]
	} else {
		if int(sh.nslot)>>pageBits == len(sh.pages) {
			sh.pages = append(sh.pages, make([]slot, pageSize))
		}
		i = sh.nslot
		sh.nslot++
	}
	sl := sh.slot(i)
	for {
		m.ID = store.MakeID(sh.n, (sh.base+(uint64(sl.gen)<<slotBits|uint64(i)))&store.LocalMask)
		if m.ID.Local() != 0 {
			break
		}
		sl.gen++ // the one combination that would name ID 0
	}
	sl.m = *m
	sh.live++
	sh.index(m)
}

// lookup returns the slot index of a pending message, or -1.
func (sh *shard) lookup(id store.ID) int32 {
	x := (id.Local() - sh.base) & store.LocalMask
	i, gen := int64(x&slotMask), uint32(x>>slotBits)
	if i >= int64(sh.nslot) {
		return -1
	}
	if sl := sh.slot(int32(i)); sl.m.ID == 0 || sl.gen != gen {
		return -1
	}
	return int32(i)
}

// index lists m in its due bucket.
func (sh *shard) index(m *store.Message) {
	k := m.Due / BucketWidth
	b := sh.buckets[k]
	if b == nil {
		b = &bucket{}
		sh.buckets[k] = b
		sh.order.ReplaceOrInsert(k)
	}
	b.ids = append(b.ids, m.ID)
	b.live++
}

// unindex takes m out of its due bucket's count (its entry goes stale).
func (sh *shard) unindex(m *store.Message) {
	k := m.Due / BucketWidth
	b := sh.buckets[k]
	b.live--
	switch {
	case b.live == 0:
		delete(sh.buckets, k)
		sh.order.Delete(k)
	case len(b.ids) > 64 && b.live < len(b.ids)/4:
		// Mostly stale: keep the live ones only, once each.
		keep := b.ids[:0]
		seen := make(map[store.ID]bool, b.live)
		for _, x := range b.ids {
			if p := sh.get(x); p != nil && p.Due/BucketWidth == k && !seen[x] {
				seen[x] = true
				keep = append(keep, x)
			}
		}
		clear(b.ids[len(keep):])
		b.ids = keep
	}
}

// get returns a pending message, or nil.
func (sh *shard) get(id store.ID) *store.Message {
	if i := sh.lookup(id); i >= 0 {
		return &sh.slot(i).m
	}
	if len(sh.extra) > 0 {
		return sh.extra[id]
	}
	return nil
}

// take removes a pending message and returns it.
func (sh *shard) take(id store.ID) store.Message {
	i := sh.lookup(id)
	if i < 0 {
		m := sh.extra[id]
		delete(sh.extra, id)
		delete(sh.extraMarks, id)
		sh.unindex(m)
		sh.live--
		return *m
	}
	sl := sh.slot(i)
	m := sl.m
	sh.unindex(&m)
	sl.m = store.Message{}
	sl.gen++ // its IDs name nothing from now on
	sh.live--
	sh.free = append(sh.free, i)
	return m
}

// move changes a pending message's due time and attempt in place.
func (sh *shard) move(id store.ID, due int64, attempt uint32) {
	m := sh.get(id)
	if due/BucketWidth == m.Due/BucketWidth {
		m.Due, m.Attempt = due, attempt // its bucket entry still holds
		return
	}
	sh.unindex(m)
	m.Due, m.Attempt = due, attempt
	sh.index(m)
}

// addReplayed takes back a replayed dead letter under its old ID (which
// may name a reused slot, so it lives in extra).
func (sh *shard) addReplayed(m *store.Message) {
	if sh.extra == nil {
		sh.extra = map[store.ID]*store.Message{}
	}
	p := new(store.Message)
	*p = *m
	sh.extra[m.ID] = p
	sh.live++
	sh.index(p)
}

// nextEpoch starts a Resolve call's duplicate check.
func (sh *shard) nextEpoch() {
	sh.epoch++
	if sh.epoch == 0 { // wrapped: old marks could match again
		for _, p := range sh.pages {
			for i := range p {
				p[i].mark = 0
			}
		}
		clear(sh.extraMarks)
		sh.epoch = 1
	}
}

// named records that the current Resolve names a pending message, and
// reports whether it named it already. Resolve bumps epoch first.
func (sh *shard) named(id store.ID) (dup bool) {
	if i := sh.lookup(id); i >= 0 {
		sl := sh.slot(i)
		dup = sl.mark == sh.epoch
		sl.mark = sh.epoch
		return dup
	}
	if sh.extraMarks == nil {
		sh.extraMarks = map[store.ID]uint32{}
	}
	dup = sh.extraMarks[id] == sh.epoch
	sh.extraMarks[id] = sh.epoch
	return dup
}
