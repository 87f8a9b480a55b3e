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

// TestIDIndexTellsApartIDsOfOneHash indexes IDs whose hash tags are equal,
// so find must compare the IDs themselves and removal must keep the others.
func TestIDIndexTellsApartIDsOfOneHash(t *testing.T) {
	// inv·0x9E3779B97F4A7C15 ≡ 1 (mod 2^64), by Newton's iteration: IDs
	// inv apart have products 1 apart, so the same top 32 bits.
	const c = 0x9E3779B97F4A7C15
	inv := uint64(c)
	for range 6 {
		inv *= 2 - c*inv
	}
	require.Equal(t, uint64(1), inv*c)
	var s slab
	base := store.MakeID(1, 1<<20)
	var ids []store.ID
	for k := range 8 {
		id := store.ID(uint64(base) + uint64(k)*inv)
		if idHash(id) != idHash(base) {
			continue // a carry into the top half; rare
		}
		ids = append(ids, id)
		i := s.alloc()
		s.pack(i, &store.Message{ID: id, Dest: "local://q"})
		s.addID(i)
	}
	require.GreaterOrEqual(t, len(ids), 4, "enough IDs of one hash")
	for k, id := range ids {
		i, ok := s.find(id)
		require.True(t, ok)
		require.Equal(t, id, s.item(i).id, "ID %d", k)
	}
	i, _ := s.find(ids[0])
	s.removeID(i)
	_, ok := s.find(ids[0])
	require.False(t, ok)
	for _, id := range ids[1:] {
		i, ok := s.find(id)
		require.True(t, ok)
		require.Equal(t, id, s.item(i).id)
	}
}
