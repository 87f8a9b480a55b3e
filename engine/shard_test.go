package engine

import (
	"context"
	"math"
	"testing"
	"time"

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

// TestWheelRingCoversTheWindow checks that a shard's wheel reaches, through
// its ring, everything the window loader puts in it (Window + Window/8), so
// no message in the window waits on a far level and moves in bulk.
func TestWheelRingCoversTheWindow(t *testing.T) {
	for _, tc := range []struct {
		window, tick time.Duration
		want         int
	}{
		{time.Minute, time.Millisecond, 11},
		{100 * time.Millisecond, time.Millisecond, 10}, // never below the wheel's default
		{10 * time.Second, 100 * time.Microsecond, 11},
		{24 * time.Hour, time.Millisecond, 14}, // capped: the far end of the window is on far levels
		{math.MaxInt64, time.Millisecond, 14},  // Window + Window/8 overflows: still capped, no panic
	} {
		bits := upperSlotBits(tc.window, tc.tick)
		require.Equal(t, tc.want, bits, "window %v tick %v", tc.window, tc.tick)
		// The ring reaches at least one superblock ahead, less the block
		// the cursor is in.
		reach := time.Duration(64<<bits-64) * tc.tick
		if bits < 14 {
			require.GreaterOrEqual(t, reach, tc.window+tc.window/8, "window %v tick %v", tc.window, tc.tick)
		}
	}
}
