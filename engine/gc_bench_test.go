package engine

import (
	"context"
	"flag"
	"math"
	"runtime"
	"runtime/metrics"
	"sync/atomic"
	"testing"
	"time"
)

var flagGCHeld = flag.Int("engine.bench.gc.held", 10_000_000, "BenchmarkGCPauses: messages held in RAM while the workload runs")

// BenchmarkGCPauses measures the engine's stop-the-world GC pauses while it
// holds many messages in RAM (-engine.bench.gc.held, default 10M, each with a
// 100-byte payload, due in an hour on a durable store) and runs a steady
// workload through them: 200k messages due 0-1 s ahead, scheduled and fired
// through a local queue, with a GC cycle started every 100 ms (the live heap
// is too large for the workload to reach the next goal on its own). It
// reports the longest pause and the 99th
// percentile of pauses during the workload, from runtime/metrics
// (/sched/pauses/total/gc:seconds), the GC cycles it took, and the live heap
// per held message. Run with -benchtime=1x.
func BenchmarkGCPauses(b *testing.B) {
	held := *flagGCHeld
	const payload = 100
	for b.Loop() {
		ctx := context.Background()
		const work = 200_000
		var fired atomic.Int64
		done := make(chan struct{})
		e, err := Open(ctx, Options{Dir: b.TempDir(), Window: 2 * time.Hour, Logger: quietLogger(),
			MaxPending: held, // hold every one in RAM, however many shards
			Queues: []Queue{{Name: "q", Handler: func(context.Context, *Delivery) error {
				if fired.Add(1) == work {
					close(done)
				}
				return nil
			}}}})
		if err != nil {
			b.Fatal(err)
		}
		msgs := make([]Message, 1024)
		body := make([]byte, payload)
		for i := 0; i < held; i += len(msgs) {
			n := min(len(msgs), held-i)
			for k := range n {
				msgs[k] = Message{Dest: "local://q", Due: time.Now().Add(time.Hour), Payload: body}
			}
			if _, err := e.ScheduleBatch(ctx, msgs[:n]); err != nil {
				b.Fatal(err)
			}
		}
		if err := e.WaitIdle(ctx); err != nil {
			b.Fatal(err)
		}
		if got := e.Stats().PendingTotal; got != int64(held) {
			b.Fatalf("%d in RAM, want %d", got, held)
		}
		heap := liveHeap()

		before := gcPauses()
		var gcBefore runtime.MemStats
		runtime.ReadMemStats(&gcBefore)
		// With this much live heap the workload alone would not reach the
		// next GC goal (twice the live heap), so start a cycle every 100 ms
		// while it runs: its stop-the-world phases are the ones measured.
		stopGC := make(chan struct{})
		gcDone := make(chan struct{})
		go func() {
			defer close(gcDone)
			t := time.NewTicker(100 * time.Millisecond)
			defer t.Stop()
			for {
				select {
				case <-stopGC:
					return
				case <-t.C:
					runtime.GC()
				}
			}
		}()
		_, err = pace(work, 8, 64, 100_000, func(dues []time.Time) error {
			batch := make([]Message, len(dues))
			for k, d := range dues {
				batch[k] = Message{Dest: "local://q", Due: d, Payload: body}
			}
			_, err := e.ScheduleBatch(ctx, batch)
			return err
		})
		if err != nil {
			b.Fatal(err)
		}
		<-done
		close(stopGC)
		<-gcDone
		var gcAfter runtime.MemStats
		runtime.ReadMemStats(&gcAfter)
		max, p99 := pauseDelta(before, gcPauses())
		b.ReportMetric(float64(max.Microseconds())/1000, "max-pause-ms")
		b.ReportMetric(float64(p99.Microseconds())/1000, "p99-pause-ms")
		b.ReportMetric(float64(gcAfter.NumGC-gcBefore.NumGC), "gc-cycles")
		b.ReportMetric(float64(heap)/float64(held), "heap-B/held")
		_ = e.Close()
	}
}

const gcPauseMetric = "/sched/pauses/total/gc:seconds"

// gcPauses reads the runtime's histogram of stop-the-world GC pauses.
func gcPauses() *metrics.Float64Histogram {
	s := []metrics.Sample{{Name: gcPauseMetric}}
	metrics.Read(s)
	return s[0].Value.Float64Histogram()
}

// pauseDelta returns the longest pause and the 99th percentile among the
// pauses counted between two readings (bucket upper bounds: the histogram
// is exponential, so these are upper estimates).
func pauseDelta(before, after *metrics.Float64Histogram) (maxPause, p99 time.Duration) {
	var total uint64
	counts := make([]uint64, len(after.Counts))
	for i := range counts {
		counts[i] = after.Counts[i] - before.Counts[i]
		total += counts[i]
	}
	if total == 0 {
		return 0, 0
	}
	upper := func(i int) time.Duration {
		ub := after.Buckets[i+1]
		if math.IsInf(ub, 1) {
			ub = after.Buckets[i]
		}
		return time.Duration(ub * float64(time.Second))
	}
	var seen uint64
	for i, c := range counts {
		if c == 0 {
			continue
		}
		seen += c
		if p99 == 0 && seen*100 >= total*99 {
			p99 = upper(i)
		}
		maxPause = upper(i)
	}
	return maxPause, p99
}
