package engine

import "math/bits"

// A shard keeps the payloads of its window in its own pointer-free chunks,
// not as slices of the buffers the store fed or scanned. An item then holds
// no pointer at all, so the garbage collector marks a shard's whole window
// as one object per chunk, instead of following one pointer per pending
// message to a random buffer. At 380k pending, that pointer chase made each
// GC mark phase 30-75 ms long, and every mark phase a lateness spike
// (docs/benchmarks.md, "Where the lateness comes from").
//
// Each payload takes one slot of the smallest size class that fits it
// (8-byte steps up to 128 bytes, then four classes per doubling, so rounding
// wastes under 20 % and a 100-byte payload takes 104). A class's slots are
// in chunks of 4 KiB (at least 8 slots); a freed slot goes back to its
// chunk, a chunk whose last slot is freed goes back to the garbage
// collector, and new payloads fill chunks that have room before a new chunk
// is made. So after a burst drains, what stays is at most one chunk per
// surviving message (about the 3 KiB a ScheduleBatch arena kept alive
// before), not the burst's memory. Payloads larger than the biggest class
// keep their own allocation.
//
// Slices into the chunks never leave the shard's goroutine: what leaves it
// (batches, Get, claims) gets a copy, because a freed slot is reused.

const (
	payloadChunk   = 4 << 10 // bytes per chunk, unless 8 slots need more
	chunkMinSlots  = 8
	payloadClasses = 36 // 8, 16, ... 128, then four classes per doubling up to 4 KiB
	maxClassSize   = 4096
	bigClass       = payloadClasses // payloads over maxClassSize, and the rare overflow of a class's index

	refLenBits   = 27 // store.MaxPayloadLimit (64 MiB) fits
	refIndexBits = 31 // maxPendingLimit (2^30) fits; the class takes the top 6 bits
	maxRefIndex  = 1<<refIndexBits - 1
)

// payloadRef locates a payload: its class, its slot (or big index) and
// its length, packed in one word. Zero is the empty payload.
type payloadRef uint64

func makeRef(class int, index uint32, n int) payloadRef {
	return payloadRef(uint64(class)<<(refLenBits+refIndexBits) | uint64(index)<<refLenBits | uint64(n))
}

func (r payloadRef) class() int    { return int(r >> (refLenBits + refIndexBits)) }
func (r payloadRef) index() uint32 { return uint32(r>>refLenBits) & (1<<refIndexBits - 1) }
func (r payloadRef) len() int      { return int(r & (1<<refLenBits - 1)) }

// classOf returns the smallest class whose slots hold n bytes (n >= 1).
func classOf(n int) int {
	if n <= 128 {
		return (n - 1) >> 3
	}
	if n > maxClassSize {
		return bigClass
	}
	e := bits.Len(uint(n - 1)) // 2^(e-1) < n <= 2^e
	return 16 + (e-8)*4 + int((n-1)>>(e-3)) - 4
}

// classSize is the slot size of class c.
func classSize(c int) int {
	if c < 16 {
		return 8 * (c + 1)
	}
	g, r := (c-16)/4, (c-16)%4
	return (5 + r) << (g + 5)
}

// slotsPer is how many slots of class c one chunk holds.
func slotsPer(c int) uint32 {
	return uint32(max(payloadChunk/classSize(c), chunkMinSlots))
}

// payloadChunkOf is one chunk of a class: its bytes and which slots are
// free.
type payloadChunkOf struct {
	buf       []byte
	free      []uint16 // freed slots, reused last in first out
	used      uint16   // slots handed out at least once, from 0 up
	live      uint16
	inPartial bool // listed in the class's partial stack
}

func (ch *payloadChunkOf) hasRoom(per uint32) bool {
	return len(ch.free) > 0 || uint32(ch.used) < per
}

type payloadClass struct {
	chunks   []*payloadChunkOf // nil: given back, its index free for a new chunk
	partial  []uint32          // chunks that may have room (checked when taken)
	released []uint32          // indices of nil chunks
	live     int
}

type payloadStore struct {
	classes [payloadClasses]payloadClass
	big     [][]byte
	freeBig []uint32
	liveBig int
}

// put stores a copy of p and returns its reference.
func (ps *payloadStore) put(p []byte) payloadRef {
	n := len(p)
	if n == 0 {
		return 0
	}
	c := classOf(n)
	if c == bigClass {
		return ps.putBig(p)
	}
	pc := &ps.classes[c]
	per := slotsPer(c)
	k, ch := pc.withRoom(per)
	if ch == nil {
		if k = pc.newChunkIndex(); uint64(k+1)*uint64(per) > maxRefIndex+1 {
			// A class fragmented past its index space (billions of slots'
			// worth of chunks): this payload gets its own allocation.
			pc.released = append(pc.released, k)
			return ps.putBig(p)
		}
		ch = &payloadChunkOf{buf: make([]byte, int(per)*classSize(c))}
		pc.chunks[k] = ch
		ch.inPartial = true
		pc.partial = append(pc.partial, k)
	}
	var slot uint16
	if f := len(ch.free); f > 0 {
		slot = ch.free[f-1]
		ch.free = ch.free[:f-1]
	} else {
		slot = ch.used
		ch.used++
	}
	ch.live++
	pc.live++
	i := k*per + uint32(slot)
	copy(ps.slot(c, i), p)
	return makeRef(c, i, n)
}

// withRoom returns a chunk of pc with a free slot, or nil, dropping stale
// entries (given-back or full chunks) from the partial stack as it goes.
func (pc *payloadClass) withRoom(per uint32) (uint32, *payloadChunkOf) {
	for len(pc.partial) > 0 {
		k := pc.partial[len(pc.partial)-1]
		if ch := pc.chunks[k]; ch != nil && ch.hasRoom(per) {
			return k, ch
		} else if ch != nil {
			ch.inPartial = false
		}
		pc.partial = pc.partial[:len(pc.partial)-1]
	}
	return 0, nil
}

// newChunkIndex returns the index for a new chunk: a given-back one, or the
// next.
func (pc *payloadClass) newChunkIndex() uint32 {
	if r := len(pc.released); r > 0 {
		k := pc.released[r-1]
		pc.released = pc.released[:r-1]
		return k
	}
	pc.chunks = append(pc.chunks, nil)
	return uint32(len(pc.chunks) - 1)
}

func (ps *payloadStore) putBig(p []byte) payloadRef {
	b := append([]byte(nil), p...)
	var i uint32
	if k := len(ps.freeBig); k > 0 {
		i = ps.freeBig[k-1]
		ps.freeBig = ps.freeBig[:k-1]
		ps.big[i] = b
	} else {
		i = uint32(len(ps.big))
		ps.big = append(ps.big, b)
	}
	ps.liveBig++
	return makeRef(bigClass, i, len(p))
}

// slot returns slot i of class c.
func (ps *payloadStore) slot(c int, i uint32) []byte {
	per, size := slotsPer(c), classSize(c)
	off := int(i%per) * size
	return ps.classes[c].chunks[i/per].buf[off : off+size : off+size]
}

// get returns the bytes r refers to, valid until r is freed: callers that
// hand them out of the shard copy them.
func (ps *payloadStore) get(r payloadRef) []byte {
	if r == 0 {
		return nil
	}
	c := r.class()
	if c == bigClass {
		return ps.big[r.index()]
	}
	return ps.slot(c, r.index())[:r.len()]
}

// free releases r's slot, and its chunk once the chunk holds nothing.
func (ps *payloadStore) free(r payloadRef) {
	if r == 0 {
		return
	}
	c := r.class()
	if c == bigClass {
		i := r.index()
		ps.big[i] = nil
		if ps.liveBig--; ps.liveBig == 0 {
			ps.big, ps.freeBig = nil, nil
		} else {
			ps.freeBig = append(ps.freeBig, i)
		}
		return
	}
	pc := &ps.classes[c]
	if pc.live--; pc.live == 0 {
		*pc = payloadClass{}
		return
	}
	per := slotsPer(c)
	k := r.index() / per
	ch := pc.chunks[k]
	if ch.live--; ch.live == 0 {
		pc.chunks[k] = nil
		pc.released = append(pc.released, k)
		return
	}
	ch.free = append(ch.free, uint16(r.index()%per))
	if !ch.inPartial {
		ch.inPartial = true
		pc.partial = append(pc.partial, k)
	}
}
