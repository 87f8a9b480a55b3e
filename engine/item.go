package engine

import (
	"github.com/hourglassmq/hourglass/store"
	"github.com/hourglassmq/hourglass/wheel"
)

// A shard holds each message of its window as a compact item: what every
// message has inline (48 bytes, no pointer), the rest kept apart. The
// destination is an index into the shard's table of destination strings
// (one string per distinct destination, reference counted), the rare fields
// (key, headers, expiry) sit in the shard's extras, and the payload is a
// copy in the shard's payload chunks (payloads.go). With the wheel's entry
// (32 bytes) and the by-ID map (about 20-28), a message costs the shard
// about 100 bytes besides its payload's slot.

// item states.
const (
	stFree     uint8 = iota // slab slot on the free list
	stPending               // in the wheel
	stReady                 // in a ready queue, waiting for a dispatcher
	stInFlight              // in a batch at a dispatcher
)

// item is one message held in RAM.
type item struct {
	id      store.ID
	due     int64
	h       wheel.Handle
	payload payloadRef // in the shard's payloads
	dest    uint32     // index into the shard's destination table
	extra   int32      // 1-based index into the shard's extras; 0 = none
	attempt uint32
	state   uint8
}

// extra holds the fields few messages have.
type extra struct {
	key     string
	headers []store.Header
	expires int64
}

// slab is a shard's storage for items, extras and destination names.
type slab struct {
	pages [][]item // in pages of pageSize, so growth never copies
	nitem int32
	free  []int32

	extras     []extra
	freeExtras []int32

	destIdx   map[string]uint32
	destNames []string
	destRefs  []int32
	freeDests []uint32

	ids idIndex // ID -> slot (idindex.go)

	pl payloadStore // the items' payloads (payloads.go)
}

const pageBits = 12
const pageSize = 1 << pageBits

func (s *slab) item(i int32) *item { return &s.pages[i>>pageBits][i&(pageSize-1)] }

func (s *slab) alloc() int32 {
	if n := len(s.free); n > 0 {
		i := s.free[n-1]
		s.free = s.free[:n-1]
		return i
	}
	if int(s.nitem)>>pageBits == len(s.pages) {
		s.pages = append(s.pages, make([]item, pageSize))
	}
	s.nitem++
	return s.nitem - 1
}

// destOf returns the table index of dest, taking a reference.
func (s *slab) destOf(dest string) uint32 {
	if s.destIdx == nil {
		s.destIdx = map[string]uint32{}
	}
	if d, ok := s.destIdx[dest]; ok {
		s.destRefs[d]++
		return d
	}
	var d uint32
	if n := len(s.freeDests); n > 0 {
		d = s.freeDests[n-1]
		s.freeDests = s.freeDests[:n-1]
		s.destNames[d], s.destRefs[d] = dest, 1
	} else {
		d = uint32(len(s.destNames))
		s.destNames = append(s.destNames, dest)
		s.destRefs = append(s.destRefs, 1)
	}
	s.destIdx[dest] = d
	return d
}

// dropDest releases a reference to destination d.
func (s *slab) dropDest(d uint32) {
	if s.destRefs[d]--; s.destRefs[d] == 0 {
		delete(s.destIdx, s.destNames[d])
		s.destNames[d] = ""
		s.freeDests = append(s.freeDests, d)
	}
}

// pack stores m's fields in item i (its state and wheel handle untouched).
func (s *slab) pack(i int32, m *store.Message) {
	it := s.item(i)
	it.id, it.due, it.attempt = m.ID, m.Due, m.Attempt
	it.payload = s.pl.put(m.Payload)
	it.dest = s.destOf(m.Dest)
	it.extra = 0
	if m.Key != "" || len(m.Headers) > 0 || m.Expires != 0 {
		x := extra{key: m.Key, headers: m.Headers, expires: m.Expires}
		if n := len(s.freeExtras); n > 0 {
			it.extra = s.freeExtras[n-1] + 1
			s.freeExtras = s.freeExtras[:n-1]
			s.extras[it.extra-1] = x
		} else {
			s.extras = append(s.extras, x)
			it.extra = int32(len(s.extras))
		}
	}
}

// unpack releases what item i holds (its destination reference, its
// extra) and clears it.
func (s *slab) unpack(i int32) {
	it := s.item(i)
	s.dropDest(it.dest)
	s.pl.free(it.payload)
	if it.extra != 0 {
		s.extras[it.extra-1] = extra{}
		s.freeExtras = append(s.freeExtras, it.extra-1)
	}
	*it = item{}
	s.free = append(s.free, i)
}

// message rebuilds item i as a store.Message that may leave the shard: its
// payload is a copy (appended to arena, whose grown slice is returned), the
// strings and headers are the item's own, never written.
func (s *slab) message(i int32, arena []byte) (store.Message, []byte) {
	it := s.item(i)
	m := store.Message{ID: it.id, Shard: it.id.Shard(), Due: it.due, Attempt: it.attempt, Dest: s.destNames[it.dest]}
	if p := s.pl.get(it.payload); len(p) > 0 {
		arena = append(arena, p...)
		m.Payload = arena[len(arena)-len(p) : len(arena) : len(arena)]
	}
	if it.extra != 0 {
		x := &s.extras[it.extra-1]
		m.Key, m.Headers, m.Expires = x.key, x.headers, x.expires
	}
	return m, arena
}

// destName returns item i's destination.
func (s *slab) destName(i int32) string { return s.destNames[s.item(i).dest] }

func (s *shard) freeItem(i int32) {
	s.removeID(i)
	s.live--
	s.nlive.Store(int64(s.live))
	s.unpack(i)
}

// place puts message m into a new slot and the wheel; now is s.reading().
func (s *shard) place(m *store.Message, now clockReading) {
	i := s.alloc()
	s.pack(i, m)
	it := s.item(i)
	it.state = stPending
	it.h = s.w.Insert(now.monoOf(m.Due), uint64(i))
	s.addID(i)
	s.live++
	s.nlive.Store(int64(s.live))
}
