package engine

import (
	"context"
	"flag"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/hourglassmq/hourglass/wal"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

var flagSeed = flag.Int64("engine.seed", 0, "seed for randomized tests (0 = time-based; printed)")

func TestMain(m *testing.M) {
	if os.Getenv(crashChildEnv) != "" {
		crashChild()
		return
	}
	goleak.VerifyTestMain(m,
		goleak.IgnoreAnyFunction("github.com/cockroachdb/pebble/v2/internal/cache.(*cleanupManager).mainLoop"),
	)
}

var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

type rec struct {
	id      ID
	dest    string
	payload string
	attempt int
	due     time.Time
	fired   time.Time
	at      time.Time // clock reading inside the handler
}

// harness runs one engine on a FakeClock and records every handler call.
type harness struct {
	t    *testing.T
	mode string
	clk  *FakeClock
	fs   vfs.FS
	opts Options
	e    *Engine

	mu  sync.Mutex
	got []rec
}

func forModes(t *testing.T, f func(t *testing.T, mode string)) {
	for _, mode := range []string{"memory", "durable"} {
		t.Run(mode, func(t *testing.T) { f(t, mode) })
	}
}

// newHarness opens an engine. Queues with a nil Handler get the recording
// handler.
func newHarness(t *testing.T, mode string, opts Options) *harness {
	t.Helper()
	h := &harness{t: t, mode: mode, clk: NewFakeClock(t0)}
	if mode == "durable" {
		h.fs = vfs.NewMem()
		opts.Store = wal.Options{Dir: "store", FS: h.fs}
		if opts.Shards == 0 {
			opts.Shards = 2
		}
	}
	opts.Clock = h.clk
	if opts.Logger == nil {
		opts.Logger = quietLogger()
	}
	for i := range opts.Queues {
		if opts.Queues[i].Handler == nil {
			opts.Queues[i].Handler = h.record(nil)
		}
	}
	h.opts = opts
	h.open()
	t.Cleanup(func() {
		if h.e != nil {
			_ = h.e.Close()
		}
	})
	return h
}

func (h *harness) open() {
	h.t.Helper()
	e, err := Open(context.Background(), h.opts)
	require.NoError(h.t, err)
	h.e = e
}

// restart closes the engine and opens a new one on the same store.
func (h *harness) restart() {
	h.t.Helper()
	require.NoError(h.t, h.e.Close())
	h.e = nil
	h.open()
}

// record returns a handler that records the call and then runs next.
func (h *harness) record(next Handler) Handler {
	return func(ctx context.Context, d *Delivery) error {
		h.mu.Lock()
		h.got = append(h.got, rec{id: d.ID, dest: d.Dest, payload: string(d.Payload), attempt: d.Attempt,
			due: d.Due, fired: d.Fired, at: h.clk.Now()})
		h.mu.Unlock()
		if next != nil {
			return next(ctx, d)
		}
		return nil
	}
}

func (h *harness) deliveries() []rec {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]rec(nil), h.got...)
}

func (h *harness) settle() {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	require.NoError(h.t, h.e.WaitIdle(ctx))
}

func (h *harness) advance(d time.Duration) {
	h.t.Helper()
	h.clk.Advance(d)
	h.settle()
}

func (h *harness) schedule(dest string, in time.Duration, payload string) ID {
	h.t.Helper()
	id, err := h.e.ScheduleIn(context.Background(), in, Message{Dest: dest, Payload: []byte(payload)})
	require.NoError(h.t, err)
	return id
}

func payloads(rs []rec) []string {
	out := make([]string, len(rs))
	for i, r := range rs {
		out[i] = r.payload
	}
	return out
}

func seed(t *testing.T) int64 {
	s := *flagSeed
	if s == 0 {
		s = time.Now().UnixNano()
	}
	t.Logf("seed %d (rerun with -engine.seed=%d)", s, s)
	return s
}
