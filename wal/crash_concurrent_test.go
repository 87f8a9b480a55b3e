package wal

import (
	"context"
	"fmt"
	"maps"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/cockroachdb/pebble/v2/vfs/errorfs"
	"github.com/hourglassmq/hourglass/store"
	"github.com/stretchr/testify/require"
)

// TestCrashConcurrent crashes a store while several callers append and
// resolve at once, so group commits hold many requests. At each crash point
// it snapshots, atomically with the clone, which appends and resolves were
// acknowledged. After reopening a clone: every acknowledged message whose
// resolve was not in flight is present and intact, every acknowledged resolve
// stays resolved, and nothing appears that nobody submitted or appears twice.
func TestCrashConcurrent(t *testing.T) {
	sd := seed(t)
	workers, iters, every := 4, 25, 5
	if *flagLong {
		iters, every = 100, 1
	}
	mem := vfs.NewCrashableMem()
	type point struct {
		fs        *vfs.MemFS
		acked     map[store.ID]store.Message
		resolving map[store.ID]bool
		resolved  map[store.ID]bool
	}
	var (
		mu        sync.Mutex // guards the maps below and points
		acked     = map[store.ID]store.Message{}
		resolving = map[store.ID]bool{}
		resolved  = map[store.ID]bool{}
		submitted = map[string]store.Message{} // by payload
		points    []point
		writes    atomic.Int64
	)
	crashRNG := rand.New(rand.NewPCG(sd, 9))
	inj := errorfs.InjectorFunc(func(op errorfs.Op) error {
		if op.Kind.ReadOrWrite() != errorfs.OpIsWrite || writes.Add(1)%int64(every) != 0 {
			return nil
		}
		mu.Lock()
		defer mu.Unlock()
		cfg := vfs.CrashCloneCfg{}
		if crashRNG.IntN(2) == 0 {
			cfg = vfs.CrashCloneCfg{UnsyncedDataPercent: 1 + crashRNG.IntN(100), RNG: rand.New(rand.NewPCG(crashRNG.Uint64(), 1))}
		}
		points = append(points, point{fs: mem.CrashClone(cfg), acked: maps.Clone(acked), resolving: maps.Clone(resolving), resolved: maps.Clone(resolved)})
		return nil
	})
	opts := testOptions(errorfs.Wrap(mem, inj), 3)
	opts.MaxBatchDelay = 200 * time.Microsecond
	s := openTest(t, opts)
	ctx := context.Background()
	var wg sync.WaitGroup
	errc := make(chan error, workers)
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			r := rand.New(rand.NewPCG(sd, uint64(100+w)))
			var mine []store.ID
			for i := 0; i < iters; i++ {
				msgs := make([]store.Message, 1+r.IntN(8))
				mu.Lock()
				for j := range msgs {
					msgs[j] = randMsg(r, 3, 0)
					msgs[j].Key = ""
					msgs[j].Payload = []byte(fmt.Sprintf("w%d-%d-%d", w, i, j))
					submitted[string(msgs[j].Payload)] = msgs[j]
				}
				mu.Unlock()
				res, err := s.Append(ctx, msgs)
				if err != nil {
					errc <- err
					return
				}
				mu.Lock()
				for j, a := range res {
					m := msgs[j]
					m.ID = a.ID
					acked[a.ID] = m
					mine = append(mine, a.ID)
				}
				mu.Unlock()
				if len(mine) > 4 && r.IntN(2) == 0 {
					done := mine[:2]
					mine = mine[2:]
					mu.Lock()
					for _, id := range done {
						resolving[id] = true
					}
					mu.Unlock()
					if _, err := s.Resolve(ctx, store.Batch{Done: []store.Done{{ID: done[0]}, {ID: done[1]}}}); err != nil {
						errc <- err
						return
					}
					mu.Lock()
					for _, id := range done {
						delete(resolving, id)
						delete(acked, id)
						resolved[id] = true
					}
					mu.Unlock()
				}
			}
		}(w)
	}
	wg.Wait()
	close(errc)
	for err := range errc {
		require.NoError(t, err)
	}
	require.NoError(t, s.Close())
	mu.Lock()
	defer mu.Unlock()
	t.Logf("%d crash points over %d writes", len(points), writes.Load())
	for i, p := range points {
		s, err := Open(ctx, testOptions(p.fs, 0))
		if err != nil && len(p.acked) == 0 && len(p.resolved) == 0 {
			continue // crashed while the store was being created
		}
		require.NoError(t, err, "crash point %d", i)
		requireCheck(t, s)
		got := storeState(t, s)
		for id, want := range p.acked {
			g, ok := got.pending[id]
			if p.resolving[id] && !ok {
				continue // its store.Done was in flight: either outcome is fine
			}
			require.True(t, ok, "crash point %d: acknowledged %s lost", i, id)
			sameMessage(t, want, g)
		}
		for id := range p.resolved {
			_, ok := got.pending[id]
			require.False(t, ok, "crash point %d: resolved %s came back", i, id)
		}
		seen := map[string]bool{}
		for id, g := range got.pending {
			require.False(t, seen[string(g.Payload)], "crash point %d: %q stored twice", i, g.Payload)
			seen[string(g.Payload)] = true
			want, ok := submitted[string(g.Payload)]
			require.True(t, ok, "crash point %d: unexpected message %s", i, id)
			require.Equal(t, want.Due, g.Due)
		}
		require.NoError(t, s.Close())
	}
}
