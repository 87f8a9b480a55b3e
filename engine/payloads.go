package engine

import "math/bits"

// A shard keeps the payloads of its window in its own pointer-free chunks,
// not as slices of the buffers the store fed or scanned. An item then holds
// no pointer at all, so the garbage collector marks a shard's whole window
// as a few hundred chunk objects, instead of following one pointer per
// pending message to a random buffer. At 380k pending, that pointer chase
// made each GC mark phase 30-75 ms long, and every mark phase a lateness
// spike (docs/benchmarks.md, "Where the lateness comes from").
//
// Each payload takes one slot of the smallest size class that fits it
// (8-byte steps up to 128 bytes, then four classes per doubling, so rounding
// wastes under 20 % and a 100-byte payload takes 104); a freed slot goes on
// its class's free list. A class that empties gives its chunks back to the
// garbage collector; one that still holds a payload keeps the chunks of its
// busiest moment (two ways of giving them back sooner cost 3-9 % CPU per
// message: docs/benchmarks.md). Payloads larger than the biggest class keep
// their own allocation.
//
// Slices into the chunks never leave the shard's goroutine: what leaves it
// (batches, Get, claims) gets a copy, because a freed slot is reused.

const (
	payloadChunk   = 64 << 10 // bytes per chunk
	payloadClasses = 36       // 8, 16, ... 128, then four classes per doubling up to 4 KiB
	maxClassSize   = 4096
	bigClass       = payloadClasses // payloads over maxClassSize

	refLenBits   = 27 // store.MaxPayloadLimit (64 MiB) fits
	refIndexBits = 31 // maxPendingLimit (2^30) fits; the class takes the top 6 bits
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

type payloadClass struct {
	chunks [][]byte
	free   []uint32 // freed slots, reused last in first out
	used   uint32   // slots ever handed out since the class last emptied
	live   int
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
		return makeRef(c, i, n)
	}
	pc := &ps.classes[c]
	size := classSize(c)
	var i uint32
	if k := len(pc.free); k > 0 {
		i = pc.free[k-1]
		pc.free = pc.free[:k-1]
	} else {
		i = pc.used
		pc.used++
		if per := uint32(payloadChunk / size); int(i/per) == len(pc.chunks) {
			pc.chunks = append(pc.chunks, make([]byte, payloadChunk))
		}
	}
	pc.live++
	copy(ps.slot(c, size, i), p)
	return makeRef(c, i, n)
}

// slot returns slot i of class c (whose size is size).
func (ps *payloadStore) slot(c, size int, i uint32) []byte {
	per := uint32(payloadChunk / size)
	off := int(i%per) * size
	return ps.classes[c].chunks[i/per][off : off+size : off+size]
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
	return ps.slot(c, classSize(c), r.index())[:r.len()]
}

// free releases r's slot.
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
	pc.free = append(pc.free, r.index())
}
