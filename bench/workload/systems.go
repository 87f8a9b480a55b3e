package workload

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/hourglassmq/hourglass/engine"
)

// Hourglass is the engine as a System, through its public API only: one
// local queue, ScheduleBatch from every producer.
type Hourglass struct {
	// Dir is the durable store's directory; empty runs in memory.
	Dir string
	// Label overrides the row name.
	Label string

	e *engine.Engine
}

const hourglassQueue = "bench"

// Name implements System.
func (h *Hourglass) Name() string {
	switch {
	case h.Label != "":
		return h.Label
	case h.Dir == "":
		return "hourglass memory"
	default:
		return "hourglass durable"
	}
}

// Open implements System.
func (h *Hourglass) Open(ctx context.Context, rec *Recorder) error {
	handler := func(_ context.Context, d *engine.Delivery) error {
		_ = rec.Deliver(d.Payload, time.Now()) // foreign payloads are counted, not retried
		return nil
	}
	e, err := engine.Open(ctx, engine.Options{
		Dir:    h.Dir,
		Logger: slog.New(slog.DiscardHandler),
		Queues: []engine.Queue{{Name: hourglassQueue, Handler: handler}},
	})
	if err != nil {
		return fmt.Errorf("engine open %q: %w", h.Dir, err)
	}
	h.e = e
	return nil
}

// Schedule implements System.
func (h *Hourglass) Schedule(ctx context.Context, lo int, dues []time.Time) error {
	buf := make([]byte, len(dues)*PayloadSize) // the engine keeps payloads: no reuse
	msgs := make([]engine.Message, len(dues))
	for i, due := range dues {
		p := buf[i*PayloadSize : (i+1)*PayloadSize : (i+1)*PayloadSize]
		Encode(p, uint64(lo+i), due)
		msgs[i] = engine.Message{Dest: "local://" + hourglassQueue, Due: due, Payload: p}
	}
	if _, err := h.e.ScheduleBatch(ctx, msgs); err != nil {
		return fmt.Errorf("schedule batch at %d: %w", lo, err)
	}
	return nil
}

// Usage implements System: the Go heap (durable mode also holds its
// loaded window and the store's caches there).
func (h *Hourglass) Usage(context.Context) (int64, error) { return GoHeap(), nil }

// Close implements System.
func (h *Hourglass) Close(ctx context.Context) error {
	if h.e == nil {
		return nil
	}
	if err := h.e.Shutdown(ctx); err != nil {
		return fmt.Errorf("engine shutdown: %w", err)
	}
	return nil
}

// AfterFunc is the baseline: one time.AfterFunc per message, whose callback
// decodes the payload and records the delivery, as a handler would.
type AfterFunc struct {
	rec *Recorder
}

// Name implements System.
func (*AfterFunc) Name() string { return "time.AfterFunc" }

// Open implements System.
func (a *AfterFunc) Open(_ context.Context, rec *Recorder) error {
	a.rec = rec
	return nil
}

// Schedule implements System.
func (a *AfterFunc) Schedule(_ context.Context, lo int, dues []time.Time) error {
	buf := make([]byte, len(dues)*PayloadSize)
	for i, due := range dues {
		p := buf[i*PayloadSize : (i+1)*PayloadSize : (i+1)*PayloadSize]
		Encode(p, uint64(lo+i), due)
		time.AfterFunc(time.Until(due), func() { _ = a.rec.Deliver(p, time.Now()) })
	}
	return nil
}

// Usage implements System.
func (*AfterFunc) Usage(context.Context) (int64, error) { return GoHeap(), nil }

// Close implements System: the timers have fired or are abandoned.
func (*AfterFunc) Close(context.Context) error { return nil }
