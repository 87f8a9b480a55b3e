package memstore

import (
	"context"
	"errors"
	"math"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/hourglassmq/hourglass/store"
)

// Resolve finds an ID named twice in one batch by a per-call mark on the
// slot; when the call counter wraps, old marks must not read as "named in
// this call".
func TestDuplicateCheckSurvivesEpochWrap(t *testing.T) {
	ctx := context.Background()
	s, err := Open(Options{Shards: 1})
	require.NoError(t, err)
	out, err := s.Append(ctx, []store.Message{{Dest: "local://q"}, {Dest: "local://q"}, {Dest: "local://q"}})
	require.NoError(t, err)
	a, b, c := out[0].ID, out[1].ID, out[2].ID

	s.shards[0].epoch = math.MaxUint32 - 1
	// Epoch MaxUint32: a is marked with it.
	_, err = s.Resolve(ctx, store.Batch{Update: []store.Update{{ID: a, Due: 5}}})
	require.NoError(t, err)
	// The counter wraps; a's old mark must not collide with a reused value.
	for range 3 {
		_, err = s.Resolve(ctx, store.Batch{Update: []store.Update{{ID: a, Due: 6}, {ID: b, Due: 6}}})
		require.NoError(t, err)
	}
	_, err = s.Resolve(ctx, store.Batch{Update: []store.Update{{ID: c, Due: 7}}, Done: []store.Done{{ID: c}}})
	require.True(t, errors.Is(err, store.ErrInvalid), "c named twice: %v", err)
	m, err := s.Get(ctx, c)
	require.NoError(t, err, "a refused batch changes nothing")
	require.Zero(t, m.Due)
}
