package engine

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/hourglassmq/hourglass/memstore"
	"github.com/hourglassmq/hourglass/store"
)

// capturingOpener opens a memory store and keeps the owner the engine
// starts it with, so a test can play the part of a store shared by several
// processes (one that calls Claim, and feeds removals).
type capturingOpener struct {
	owner *store.Owner
}

func (c *capturingOpener) OpenStore(ctx context.Context, env store.Env) (store.Store, error) {
	s, err := memstore.Options{}.OpenStore(ctx, env)
	if err != nil {
		return nil, err
	}
	return &capturingStore{Store: s, c: c}, nil
}

type capturingStore struct {
	store.Store
	c *capturingOpener
}

func (s *capturingStore) Start(ctx context.Context, o store.Owner) error {
	*s.c.owner = o
	return s.Store.Start(ctx, o)
}

// The owner side of the contract that a store shared by several processes
// needs: Claim takes a message out of the engine's hands while the store
// changes it (and refuses one in flight), and a fed removal drops it.
func TestOwnerClaimAndFedRemoval(t *testing.T) {
	var o store.Owner
	h := newHarness(t, "memory", Options{Shards: 1, Store: &capturingOpener{owner: &o}})
	started, release := make(chan struct{}), make(chan struct{})
	require.NoError(t, h.e.Register(Queue{Name: "q", Handler: h.record(func(ctx context.Context, d *Delivery) error {
		if string(d.Payload) == "in flight" {
			close(started)
			<-release
		}
		return nil
	})}))
	claimed := h.schedule("local://q", time.Minute, "claimed")
	removed := h.schedule("local://q", time.Minute, "removed")
	inflight := h.schedule("local://q", time.Second, "in flight")
	h.settle()

	done, err := o.Claim(bg, claimed)
	require.NoError(t, err)
	m, err := h.e.st.Get(bg, claimed)
	require.NoError(t, err)
	o.Feed(0, store.Change{Removed: []store.ID{removed}})

	h.clk.Advance(time.Second)
	<-started // "in flight" is being delivered
	_, err = o.Claim(bg, inflight)
	require.ErrorIs(t, err, store.ErrInFlight)
	close(release)
	h.settle()

	// Another process moved "claimed" an hour later: the store applies it,
	// then releases the claim with the new state.
	m.Due = h.clk.Now().Add(time.Hour).UnixNano()
	_, err = h.e.st.Resolve(bg, store.Batch{Update: []store.Update{{ID: claimed, Due: m.Due}}})
	require.NoError(t, err)
	done(&m)
	h.advance(time.Minute)
	require.Equal(t, []string{"in flight"}, payloads(h.deliveries()), "the claimed and the removed message did not fire")
	h.advance(time.Hour)
	require.Equal(t, []string{"in flight", "claimed"}, payloads(h.deliveries()), "released with its new due time")
}
