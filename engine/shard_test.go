package engine

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"
)

// A keyed message and an ordered queue's messages must land on the same
// shard in every process: a durable store keeps what earlier runs placed.
func TestShardPlacementIsStableAcrossOpens(t *testing.T) {
	ctx := context.Background()
	noop := func(context.Context, *Delivery) error { return nil }
	shardOf := func(m Message) int {
		e, err := Open(ctx, Options{Shards: 8, Queues: []Queue{{Name: "q", Handler: noop}, {Name: "ord", Handler: noop, Ordered: true}}})
		require.NoError(t, err)
		defer e.Close()
		sm, err := e.prepare(&m, e.clock.Now().UnixNano())
		require.NoError(t, err)
		return sm.Shard
	}
	for _, m := range []Message{
		{Dest: "local://q", Key: "order-42"},
		{Dest: "local://q", Key: "another key"},
		{Dest: "local://ord"},
	} {
		require.Equal(t, shardOf(m), shardOf(m), "message %+v", m)
	}
	require.Equal(t, uint64(0xcbf29ce484222325), shardHash(""), "FNV-1a offset basis: the hash must never change")
	require.Equal(t, uint64(0xaf63dc4c8601ec8c), shardHash("a"), "equal to hash/fnv's New64a")
	require.Equal(t, uint64(0x7d1deb86a05662d4), shardHash("order-42"))
}
