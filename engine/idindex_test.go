package engine

import (
	"math/rand/v2"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/hourglassmq/hourglass/store"
)

// TestIDIndexMatchesAMap drives the slab's ID index with random inserts and
// deletes (IDs dense in their low bits, as stores assign them, and random
// ones) against a Go map, through growth and shrinking.
func TestIDIndexMatchesAMap(t *testing.T) {
	r := rand.New(rand.NewPCG(uint64(seed(t)), 5))
	var s slab
	model := map[store.ID]int32{}
	next := uint64(1 << 16)
	newID := func() store.ID {
		if r.IntN(2) == 0 {
			next++
			return store.MakeID(r.IntN(4), next)
		}
		return store.MakeID(r.IntN(4), r.Uint64N(store.LocalMask)+1)
	}
	for step := range 200000 {
		grow := step < 100000
		if len(model) > 0 && (r.IntN(3) == 0 || !grow) {
			// Delete a random live one.
			for id, i := range model {
				s.removeID(i)
				delete(model, id)
				s.unpack(i)
				break
			}
		} else {
			id := newID()
			if _, dup := model[id]; dup {
				continue
			}
			i := s.alloc()
			s.pack(i, &store.Message{ID: id, Dest: "local://q"})
			s.addID(i)
			model[id] = i
		}
		if step%5000 == 0 || step == 199999 {
			require.Equal(t, len(model), s.ids.n)
			for id, i := range model {
				got, ok := s.find(id)
				require.True(t, ok, "%s", id)
				require.Equal(t, i, got)
			}
			for range 100 {
				id := newID()
				if _, ok := model[id]; !ok {
					_, found := s.find(id)
					require.False(t, found)
				}
			}
		}
	}
	require.LessOrEqual(t, len(s.ids.slots), 4*minIndexSlots, "it shrinks once emptied")
}
