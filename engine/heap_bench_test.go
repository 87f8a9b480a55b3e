package engine

import (
	"context"
	"runtime"
	"testing"
	"time"
)

// BenchmarkHeapPerPending measures the heap a message costs while it waits
// in the window: n messages of a 100-byte payload are scheduled on a
// durable store, due within the window, and the live heap after a GC is
// compared with the engine's before. The payload's own bytes are reported
// apart (payload-B/pending); B/pending excludes them.
func BenchmarkHeapPerPending(b *testing.B) {
	const n = 1_000_000
	const payload = 100
	for b.Loop() {
		ctx := context.Background()
		e, err := Open(ctx, Options{Dir: b.TempDir(), Window: 2 * time.Hour, Logger: quietLogger(),
			Queues: []Queue{{Name: "q", Handler: func(context.Context, *Delivery) error { return nil }}}})
		if err != nil {
			b.Fatal(err)
		}
		base := liveHeap()
		msgs := make([]Message, 1000)
		for i := 0; i < n; i += len(msgs) {
			for k := range msgs {
				msgs[k] = Message{Dest: "local://q", Due: time.Now().Add(time.Hour + time.Duration(i+k)*time.Microsecond), Payload: make([]byte, payload)}
			}
			if _, err := e.ScheduleBatch(ctx, msgs); err != nil {
				b.Fatal(err)
			}
		}
		if err := e.WaitIdle(ctx); err != nil {
			b.Fatal(err)
		}
		if got := e.Stats().PendingTotal; got != n {
			b.Fatalf("%d in RAM, want %d", got, n)
		}
		clear(msgs)
		heap := liveHeap() - base
		b.ReportMetric(float64(heap)/n-payload, "B/pending")
		b.ReportMetric(payload, "payload-B/pending")
		_ = e.Close()
	}
}

// liveHeap returns the live heap after a full GC.
func liveHeap() uint64 {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}
