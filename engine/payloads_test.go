package engine

import (
	"bytes"
	"math/rand/v2"
	"testing"

	"github.com/hourglassmq/hourglass/store"
	"github.com/stretchr/testify/require"
)

func TestPayloadClassIsTheSmallestThatFits(t *testing.T) {
	for n := 1; n <= maxClassSize+1; n++ {
		c := classOf(n)
		if n > maxClassSize {
			require.Equal(t, bigClass, c)
			continue
		}
		require.Less(t, c, payloadClasses)
		require.GreaterOrEqual(t, classSize(c), n, "class %d of %d bytes", c, n)
		if c > 0 {
			require.Less(t, classSize(c-1), n, "class %d is not the smallest for %d bytes", c, n)
		}
		require.LessOrEqual(t, classSize(c)-n, max(7, n/4), "%d bytes waste too much in class %d", n, c)
	}
	require.Equal(t, maxClassSize, classSize(payloadClasses-1))
	require.Equal(t, 104, classSize(classOf(100)))
}

func TestPayloadRefPacksItsFields(t *testing.T) {
	for _, c := range []struct {
		class int
		index uint32
		n     int
	}{{0, 0, 1}, {bigClass, maxPendingLimit - 1, store.MaxPayloadLimit}, {17, 12345, 160}} {
		r := makeRef(c.class, c.index, c.n)
		require.Equal(t, c.class, r.class())
		require.Equal(t, c.index, r.index())
		require.Equal(t, c.n, r.len())
	}
}

// TestPayloadStoreMatchesAModel puts and frees payloads of every class
// boundary in a random order and checks, after every step, that each live
// reference still reads its own bytes: no two live slots overlap, and a
// reused slot holds only its new payload.
func TestPayloadStoreMatchesAModel(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	sizes := []int{0, 1, 7, 8, 9, 100, 128, 129, 160, 161, 1000, 4095, 4096, 4097, 70000}
	var ps payloadStore
	type live struct {
		ref  payloadRef
		want []byte
	}
	var held []live
	check := func() {
		for _, l := range held {
			got := ps.get(l.ref)
			require.True(t, bytes.Equal(l.want, got), "payload of %d bytes changed", len(l.want))
			if len(l.want) == 0 {
				require.Nil(t, got)
			}
		}
	}
	for step := range 20000 {
		if len(held) > 0 && rng.IntN(100) < 45 {
			k := rng.IntN(len(held))
			ps.free(held[k].ref)
			held[k] = held[len(held)-1]
			held = held[:len(held)-1]
		} else {
			n := sizes[rng.IntN(len(sizes))]
			if rng.IntN(2) == 0 {
				n = rng.IntN(5000)
			}
			p := make([]byte, n)
			for i := range p {
				p[i] = byte(rng.Uint32())
			}
			want := append([]byte(nil), p...)
			held = append(held, live{ps.put(p), want})
			for i := range p {
				p[i] ^= 0xff // the caller reuses its buffer: the store kept a copy
			}
		}
		if step%97 == 0 {
			check()
		}
	}
	check()
	for _, l := range held {
		ps.free(l.ref)
	}
	for c := range ps.classes {
		require.Empty(t, ps.classes[c].chunks, "class %d keeps chunks with nothing live", c)
	}
	require.Empty(t, ps.big)
}

// bytes returns the chunk memory the store holds and the payload bytes in
// it (tests: what a drained burst leaves behind).
func (ps *payloadStore) bytes() (held, live int) {
	for c := range ps.classes {
		pc := &ps.classes[c]
		for _, ch := range pc.chunks {
			if ch != nil {
				held += len(ch.buf)
				live += int(ch.live) * classSize(c)
			}
		}
	}
	return held, live
}

// TestPayloadBurstGivesItsMemoryBack: after a burst of 100k payloads drains
// down to a few random survivors, the chunks still held are at most one
// per survivor; once the last goes, nothing is held.
func TestPayloadBurstGivesItsMemoryBack(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	var ps payloadStore
	refs := make([]payloadRef, 100_000)
	p := make([]byte, 100)
	for i := range refs {
		refs[i] = ps.put(p)
	}
	held, live := ps.bytes()
	require.Equal(t, 100_000*104, live)
	require.Less(t, held, live+payloadChunk)
	rng.Shuffle(len(refs), func(i, j int) { refs[i], refs[j] = refs[j], refs[i] })
	const survivors = 50
	for _, r := range refs[survivors:] {
		ps.free(r)
	}
	held, live = ps.bytes()
	require.Equal(t, survivors*104, live)
	require.LessOrEqual(t, held, survivors*payloadChunk, "a drained burst keeps more than one chunk per survivor")
	// New payloads fill the survivors' chunks before new ones are made.
	more := make([]payloadRef, 100)
	for i := range more {
		more[i] = ps.put(p)
	}
	held2, _ := ps.bytes()
	require.Equal(t, held, held2, "new payloads took new chunks while held ones had room")
	for _, r := range append(refs[:survivors], more...) {
		ps.free(r)
	}
	held, live = ps.bytes()
	require.Zero(t, held)
	require.Zero(t, live)
}

// TestPayloadClassPastItsIndexSpace: a class whose chunk indices would
// overflow a reference's 31-bit index gives the payload its own allocation,
// which reads back and frees like any other.
func TestPayloadClassPastItsIndexSpace(t *testing.T) {
	var ps payloadStore
	c := classOf(8)
	// Every index a reference can name is taken (by chunks given back).
	ps.classes[c].chunks = make([]*payloadChunkOf, (maxRefIndex+1)/int(slotsPer(c)))
	ps.classes[c].live = 1 // a class with nothing live starts afresh
	r := ps.put([]byte("overflow"))
	require.Equal(t, bigClass, r.class())
	require.Equal(t, []byte("overflow"), ps.get(r))
	r2 := ps.put([]byte("again..."))
	require.Equal(t, bigClass, r2.class())
	require.Len(t, ps.classes[c].chunks, (maxRefIndex+1)/int(slotsPer(c))+1, "each overflow must not grow the class")
	ps.free(r)
	ps.free(r2)
	require.Nil(t, ps.big)
}
