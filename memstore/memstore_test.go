package memstore_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/hourglassmq/hourglass/memstore"
	"github.com/hourglassmq/hourglass/store"
	"github.com/hourglassmq/hourglass/store/storetest"
)

func TestContract(t *testing.T) {
	storetest.Run(t, storetest.Harness{Open: func(t *testing.T, shards int) store.Store {
		s, err := memstore.Open(memstore.Options{Shards: shards})
		require.NoError(t, err)
		return s
	}})
}

var ctx = context.Background()

func msg(shard int, payload string) store.Message {
	return store.Message{Shard: shard, Dest: "local://q", Payload: []byte(payload)}
}

// Dead letters are bounded by count (the oldest go first, freeing their
// keys) and by age.
func TestDeadLetterRetention(t *testing.T) {
	now := time.Unix(1000, 0)
	s, err := memstore.Open(memstore.Options{Shards: 1, MaxDead: 3, DeadRetention: time.Hour, Now: func() time.Time { return now }})
	require.NoError(t, err)
	defer s.Close()
	kill := func(payload, key string) store.ID {
		m := msg(0, payload)
		m.Key = key
		app, err := s.Append(ctx, []store.Message{m})
		require.NoError(t, err)
		_, err = s.Resolve(ctx, store.Batch{Dead: []store.Dead{{ID: app[0].ID, Reason: "r"}}})
		require.NoError(t, err)
		return app[0].ID
	}
	first := kill("a", "ka")
	kill("b", "")
	kill("c", "")
	require.EqualValues(t, 3, s.Stats().Dead)
	kill("d", "")
	require.EqualValues(t, 3, s.Stats().Dead, "MaxDead keeps the newest three")
	_, err = s.GetDead(ctx, first)
	require.ErrorIs(t, err, store.ErrNotFound, "the oldest went first")
	_, err = s.Lookup(ctx, "ka")
	require.ErrorIs(t, err, store.ErrNotFound, "and freed its key")
	now = now.Add(2 * time.Hour)
	kill("e", "")
	require.EqualValues(t, 1, s.Stats().Dead, "DeadRetention drops the ones older than an hour")
}

// A bounded store refuses what would pass its capacity, all or nothing,
// including a Resolve whose cascades would not fit.
func TestCapacityIsAllOrNothing(t *testing.T) {
	s, err := memstore.Open(memstore.Options{Shards: 2, Capacity: 2})
	require.NoError(t, err)
	defer s.Close()
	app, err := s.Append(ctx, []store.Message{msg(0, "a"), msg(0, "b")})
	require.NoError(t, err)
	_, err = s.Append(ctx, []store.Message{msg(1, "x"), msg(0, "c")})
	require.ErrorIs(t, err, store.ErrFull)
	require.EqualValues(t, 2, s.Stats().PendingTotal, "nothing of the refused call was written")
	_, err = s.Resolve(ctx, store.Batch{Update: []store.Update{{ID: app[0].ID, Due: 5}}, New: []store.Message{msg(0, "c")}})
	require.ErrorIs(t, err, store.ErrFull)
	m, err := s.Get(ctx, app[0].ID)
	require.NoError(t, err)
	require.Zero(t, m.Due, "the refused resolve changed nothing")
	_, err = s.Resolve(ctx, store.Batch{Done: []store.Done{{ID: app[0].ID}}, New: []store.Message{msg(0, "c")}})
	require.NoError(t, err, "a cascade fits where its own message leaves")
	_, err = memstore.Open(memstore.Options{Capacity: memstore.MaxCapacity + 1})
	require.ErrorIs(t, err, store.ErrInvalid)
}

// IDs of one store name nothing in another (nor in a later process's), and
// a slot's reuse makes its old ID stale.
func TestIDsAreNotShared(t *testing.T) {
	a, err := memstore.Open(memstore.Options{Shards: 1})
	require.NoError(t, err)
	defer a.Close()
	b, err := memstore.Open(memstore.Options{Shards: 1})
	require.NoError(t, err)
	defer b.Close()
	appA, err := a.Append(ctx, []store.Message{msg(0, "a")})
	require.NoError(t, err)
	appB, err := b.Append(ctx, []store.Message{msg(0, "b")})
	require.NoError(t, err)
	require.NotEqual(t, appA[0].ID, appB[0].ID, "each store starts its IDs at a random base")
	_, err = b.Get(ctx, appA[0].ID)
	require.ErrorIs(t, err, store.ErrNotFound)
	_, err = b.Resolve(ctx, store.Batch{Done: []store.Done{{ID: appA[0].ID, Reason: store.Cancelled}}})
	require.ErrorIs(t, err, store.ErrNotFound, "an ID from another store cancels nothing")
	// Reuse of a slot: the old ID is stale.
	_, err = a.Resolve(ctx, store.Batch{Done: []store.Done{{ID: appA[0].ID}}})
	require.NoError(t, err)
	again, err := a.Append(ctx, []store.Message{msg(0, "again")})
	require.NoError(t, err)
	require.NotEqual(t, appA[0].ID, again[0].ID)
	_, err = a.Get(ctx, appA[0].ID)
	require.ErrorIs(t, err, store.ErrNotFound)
}
