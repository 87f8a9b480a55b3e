package engine

import (
	"context"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// BenchmarkRecovery measures how fast a durable engine gets going after a
// restart: n/2 messages overdue at Open and n/2 far beyond the window.
// Reports store open time, time to first fire, time until every shard
// loaded its window, and time until every overdue message fired.
func BenchmarkRecovery(b *testing.B) {
	n := *flagBenchN
	for b.Loop() {
		dir := b.TempDir()
		var fired atomic.Int64
		var first atomic.Int64
		var start time.Time
		handler := func(ctx context.Context, d *Delivery) error {
			if fired.Add(1) == 1 {
				first.Store(int64(time.Since(start)))
			}
			return nil
		}
		opts := Options{Dir: dir, Logger: quietLogger(), Queues: []Queue{{Name: "bench", Handler: handler}}}
		e, err := Open(context.Background(), opts)
		if err != nil {
			b.Fatal(err)
		}
		payload := make([]byte, 64)
		sched := func(k int, due func() time.Time) {
			var wg sync.WaitGroup
			for g := range 4 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					msgs := make([]Message, 0, 1000)
					for i := g; i < k; i += 4 {
						msgs = append(msgs, Message{Dest: "local://bench", Due: due(), Payload: payload})
						if len(msgs) == cap(msgs) || i+4 >= k {
							if _, err := e.ScheduleBatch(context.Background(), msgs); err != nil {
								b.Error(err)
								return
							}
							msgs = msgs[:0]
						}
					}
				}()
			}
			wg.Wait()
		}
		now := time.Now()
		sched(n/2, func() time.Time { return now.Add(10*time.Minute + time.Duration(rand.Int64N(int64(time.Hour)))) })
		// Leave ~20 µs a message (50k/s) to schedule the near half before it is due.
		nearDue := time.Now().Add(time.Second + time.Duration(n/2)*20*time.Microsecond)
		sched(n/2, func() time.Time { return nearDue.Add(time.Duration(rand.Int64N(int64(100 * time.Millisecond)))) })
		if err := e.Close(); err != nil {
			b.Fatal(err)
		}
		if fired.Load() != 0 {
			b.Fatalf("%d fired before the restart; scheduling too slow for this n", fired.Load())
		}
		time.Sleep(time.Until(nearDue.Add(200 * time.Millisecond)))

		start = time.Now()
		e, err = Open(context.Background(), opts)
		if err != nil {
			b.Fatal(err)
		}
		for fired.Load() < int64(n/2) {
			time.Sleep(time.Millisecond)
		}
		all := time.Since(start)
		var st Stats
		for st = e.Stats(); st.Recovery.FullLoad == 0; st = e.Stats() {
			time.Sleep(time.Millisecond)
		}
		_ = e.Close()
		b.ReportMetric(float64(st.Recovery.Store.Milliseconds()), "store-open-ms")
		b.ReportMetric(float64(time.Duration(first.Load()).Milliseconds()), "first-fire-ms")
		b.ReportMetric(float64(st.Recovery.FullLoad.Milliseconds()), "window-loaded-ms")
		b.ReportMetric(float64(all.Milliseconds()), "all-overdue-fired-ms")
		b.ReportMetric(float64(st.Recovery.Pending), "pending-at-open")
	}
}
