package engine

import (
	"context"
	"flag"
	"fmt"
	"maps"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/cockroachdb/pebble/v2/vfs/errorfs"
	"github.com/stretchr/testify/require"

	"github.com/hourglassmq/hourglass/wal"
)

var flagCrashLong = flag.Bool("engine.crash.long", false, "more crash points in TestCrashPointsLoseNothingAcknowledged")

// TestCrashPointsLoseNothingAcknowledged runs a durable engine on a
// filesystem that can crash: at every few writes it takes a crash clone
// (unsynced data dropped, or partly kept) together with a snapshot of what
// the engine had acknowledged by then. The engine schedules (some far
// enough ahead to go to the time-ordered keyspace, the window being short),
// delivers, retries and cascades, and some messages are cancelled. Then, for
// each crash point, a new engine opens the clone and runs until everything
// is due. Unlike the SIGKILL test (TestCrashRecovery), which keeps the page
// cache, this proves the sync: every message acknowledged and not yet
// delivered at the crash is delivered after it, no acknowledged
// cancellation comes back, and nothing fires early.
func TestCrashPointsLoseNothingAcknowledged(t *testing.T) {
	rng := rand.New(rand.NewPCG(uint64(seed(t)), 3))
	every := 7
	if *flagCrashLong {
		every = 1
	}
	mem := vfs.NewCrashableMem()
	type point struct {
		fs        *vfs.MemFS
		acked     map[string]time.Time // payload -> due
		delivered map[string]bool
		cancelled map[string]bool // cancelled, or a Cancel under way
	}
	var (
		mu        sync.Mutex // guards the maps below and points
		acked     = map[string]time.Time{}
		delivered = map[string]bool{}
		cancelled = map[string]bool{}
		points    []point
		writes    atomic.Int64
	)
	cloneRNG := rand.New(rand.NewPCG(rng.Uint64(), 1))
	inj := errorfs.InjectorFunc(func(op errorfs.Op) error {
		if op.Kind.ReadOrWrite() != errorfs.OpIsWrite || writes.Add(1)%int64(every) != 0 {
			return nil
		}
		mu.Lock()
		defer mu.Unlock()
		cfg := vfs.CrashCloneCfg{}
		if cloneRNG.IntN(2) == 0 {
			cfg = vfs.CrashCloneCfg{UnsyncedDataPercent: 1 + cloneRNG.IntN(100), RNG: rand.New(rand.NewPCG(cloneRNG.Uint64(), 1))}
		}
		points = append(points, point{fs: mem.CrashClone(cfg), acked: maps.Clone(acked),
			delivered: maps.Clone(delivered), cancelled: maps.Clone(cancelled)})
		return nil
	})
	clk := NewFakeClock(t0)
	handler := func(ctx context.Context, d *Delivery) error {
		mu.Lock()
		delivered[string(d.Payload)] = true
		mu.Unlock()
		p := string(d.Payload)
		switch {
		case p[len(p)-1] == 'r' && d.Attempt == 1:
			return RetryIn(300*time.Millisecond, nil) // back through the store (Update)
		case p[len(p)-1] == 'c' && d.Attempt == 1:
			return d.ScheduleIn(100*time.Millisecond, Message{Dest: "local://q", Payload: []byte("casc-" + p)})
		}
		return nil
	}
	opts := Options{
		Shards: 2, Window: 200 * time.Millisecond, Tick: time.Millisecond, Clock: clk, Logger: quietLogger(),
		Store:  wal.Options{Dir: "store", FS: errorfs.Wrap(mem, inj)},
		Queues: []Queue{{Name: "q", Handler: handler}},
	}
	e, err := Open(context.Background(), opts)
	require.NoError(t, err)
	ctx := context.Background()
	for round := range 40 {
		batch := make([]Message, 1+rng.IntN(6))
		for i := range batch {
			p := fmt.Sprintf("m%d-%d", round, i)
			switch rng.IntN(4) {
			case 0:
				p += "r"
			case 1:
				p += "c"
			}
			// Up to 3 windows ahead: beyond the window goes to the
			// time-ordered keyspace.
			batch[i] = Message{Dest: "local://q", Payload: []byte(p), Due: clk.Now().Add(time.Duration(rng.IntN(600)) * time.Millisecond)}
		}
		ids, err := e.ScheduleBatch(ctx, batch)
		require.NoError(t, err)
		mu.Lock()
		for _, m := range batch {
			acked[string(m.Payload)] = m.Due
		}
		mu.Unlock()
		if rng.IntN(3) == 0 {
			// Marked before the call: a crash while it commits may keep
			// the cancellation or not.
			k := rng.IntN(len(ids))
			mu.Lock()
			cancelled[string(batch[k].Payload)] = true
			mu.Unlock()
			_ = e.Cancel(ctx, ids[k])
		}
		clk.Advance(time.Duration(rng.IntN(150)) * time.Millisecond)
		require.NoError(t, e.WaitIdle(ctx))
	}
	require.NoError(t, e.Close())
	require.NotEmpty(t, points)
	t.Logf("%d crash points over %d writes", len(points), writes.Load())

	for n, p := range points {
		var after sync.Map
		o := opts
		o.Store = wal.Options{Dir: "store", FS: p.fs}
		o.Queues = []Queue{{Name: "q", Handler: func(ctx context.Context, d *Delivery) error {
			after.Store(string(d.Payload), d)
			if d.Fired.Before(d.Due) {
				t.Errorf("crash point %d: %s fired at %v, before its due time %v", n, d.Payload, d.Fired, d.Due)
			}
			return nil
		}}}
		e2, err := Open(ctx, o)
		require.NoError(t, err, "crash point %d", n)
		clk.Advance(10 * time.Second)
		require.NoError(t, e2.WaitIdle(ctx))
		for payload := range p.acked {
			_, again := after.Load(payload)
			switch {
			case p.cancelled[payload]:
				// Cancelled, or a Cancel was under way: either outcome.
			case !p.delivered[payload]:
				require.True(t, again, "crash point %d: %s was acknowledged, not yet delivered, and is lost", n, payload)
			}
		}
		require.NoError(t, e2.Close())
	}
}
