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
