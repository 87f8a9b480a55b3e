package wal

import (
	"context"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/cockroachdb/pebble/v2/vfs/errorfs"
	"github.com/hourglassmq/hourglass/store"
	"github.com/stretchr/testify/require"
)

// crashPoint is a simulated crash: the filesystem as it could be found after
// power loss at one write, and where the workload was at that moment.
type crashPoint struct {
	fs       *vfs.MemFS
	progress int64 // 2*op while op is in flight, 2*op+1 once it was acknowledged
	unsynced int
}

// TestCrash runs a random workload on a crashable filesystem, takes crash
// clones at write operations (some keeping none of the unsynced data, some
// a random part of it), then reopens every clone and checks that it holds
// exactly the state after the last acknowledged operation, or (for the one
// in flight) the state after it (crash points fall in resolve-log records
// and in checkpoints, see clearlog.go): every acknowledged append is there, nothing
// resolved and synced comes back, a batch is all or nothing, and nothing is
// corrupt.
func TestCrash(t *testing.T) {
	sd := seed(t)
	steps, every := 200, 3
	if *flagLong {
		steps, every = 400, 1
	}
	r := rand.New(rand.NewPCG(sd, 2))
	crashRNG := rand.New(rand.NewPCG(sd, 3))
	mem := vfs.NewCrashableMem()
	var progress atomic.Int64
	var mu sync.Mutex
	var points []crashPoint
	var writes atomic.Int64
	inj := errorfs.InjectorFunc(func(op errorfs.Op) error {
		if op.Kind.ReadOrWrite() != errorfs.OpIsWrite {
			return nil
		}
		if n := writes.Add(1); n%int64(every) != 0 {
			return nil
		}
		mu.Lock()
		defer mu.Unlock()
		p := crashPoint{progress: progress.Load()}
		switch crashRNG.IntN(3) {
		case 0:
			p.fs = mem.CrashClone(vfs.CrashCloneCfg{})
		default:
			p.unsynced = 1 + crashRNG.IntN(100)
			p.fs = mem.CrashClone(vfs.CrashCloneCfg{UnsyncedDataPercent: p.unsynced, RNG: rand.New(rand.NewPCG(crashRNG.Uint64(), 0))})
		}
		points = append(points, p)
		return nil
	})
	opts := testOptions(errorfs.Wrap(mem, inj), 2)
	ctx := context.Background()
	h := &harness{t: t, r: r, s: openTest(t, opts), m: newModel(), shards: 2}
	models := []*model{newModel()} // models[i] = state after op i
	progress.Store(1)              // op 0 (open) acknowledged
	for i := 1; i <= steps; i++ {
		progress.Store(int64(2 * i))
		m, err := h.step(ctx)
		require.NoError(t, err)
		models = append(models, m)
		progress.Store(int64(2*i + 1))
	}
	// The workload wrote resolve-log records and checkpoints (testOptions'
	// small bound), so crash points fall in both.
	require.Positive(t, h.s.w.checkpoints.Load())
	require.NoError(t, h.s.Close())
	mu.Lock()
	defer mu.Unlock()
	require.NotEmpty(t, points)
	t.Logf("%d crash points over %d writes", len(points), writes.Load())
	for i, p := range points {
		op, acked := int(p.progress/2), p.progress%2 == 1
		o := testOptions(p.fs, 0)
		s, err := Open(ctx, o)
		if op == 0 && !acked || (op == 0 && err != nil) {
			// Crashed while creating the store: it may be missing.
			if err != nil {
				continue
			}
		}
		require.NoError(t, err, "crash point %d (op %d acked=%v unsynced=%d%%)", i, op, acked, p.unsynced)
		got := storeState(t, s)
		ok := equalState(models[op], got)
		if !ok && !acked && op > 0 {
			ok = equalState(models[op-1], got)
		}
		if !ok {
			want := models[op]
			t.Fatalf("crash point %d (op %d acked=%v unsynced=%d%%): state matches neither before nor after the op: pending %d (want %d), dead %d (want %d)",
				i, op, acked, p.unsynced, len(got.pending), len(want.pending), len(got.dead), len(want.dead))
		}
		requireCheck(t, s)
		// The recovered store keeps working.
		_, err = s.Append(ctx, []store.Message{msgAt(0, 0, "after")})
		require.NoError(t, err)
		require.NoError(t, s.Close())
	}
}
