package engine

import (
	"context"
	"flag"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

var (
	flagBenchN      = flag.Int("engine.bench.n", 1_000_000, "messages per end-to-end benchmark run")
	flagBenchRate   = flag.Int("engine.bench.rate", 0, "schedules per second (0 = as fast as possible)")
	flagBenchSpread = flag.Duration("engine.bench.spread", time.Second, "due times are uniform in [now+offset, now+offset+spread) at schedule time")
)

// e2eResult is one end-to-end run: schedule n messages, each due a little
// after it is scheduled, and wait until every one has fired through a local
// queue handler (or a time.AfterFunc callback, for the baseline).
type e2eResult struct {
	n          int
	scheduleS  float64 // seconds spent scheduling
	totalS     float64 // seconds until the last fire
	late       Latency // handler time - due
	early      int64
	engineLate Latency
}

func (r e2eResult) report(b *testing.B) {
	b.ReportMetric(float64(r.n)/r.scheduleS, "schedules/s")
	b.ReportMetric(float64(r.n)/r.totalS, "fires/s")
	b.ReportMetric(float64(r.late.P50.Microseconds())/1000, "p50-late-ms")
	b.ReportMetric(float64(r.late.P99.Microseconds())/1000, "p99-late-ms")
	b.ReportMetric(float64(r.late.Max.Microseconds())/1000, "max-late-ms")
	b.ReportMetric(float64(r.early), "early")
}

const benchOffset = 50 * time.Millisecond

// pace schedules n messages from `workers` goroutines in batches of batch,
// at rate per second (0 = flat out), calling do for each batch of due times.
func pace(n, workers, batch, rate int, do func(dues []time.Time) error) (time.Duration, error) {
	start := time.Now()
	var next atomic.Int64
	var wg sync.WaitGroup
	var firstErr atomic.Pointer[error]
	per := time.Duration(0)
	if rate > 0 {
		per = time.Second * time.Duration(batch) / time.Duration(rate)
	}
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			dues := make([]time.Time, batch)
			for {
				k := next.Add(1) - 1
				lo := int(k) * batch
				if lo >= n {
					return
				}
				if per > 0 {
					if d := time.Until(start.Add(time.Duration(k) * per)); d > 0 {
						time.Sleep(d)
					}
				}
				m := min(batch, n-lo)
				now := time.Now()
				for i := range m {
					dues[i] = now.Add(benchOffset + time.Duration(rand.Int64N(int64(*flagBenchSpread))))
				}
				if err := do(dues[:m]); err != nil {
					firstErr.CompareAndSwap(nil, &err)
					return
				}
			}
		}()
	}
	wg.Wait()
	if p := firstErr.Load(); p != nil {
		return 0, *p
	}
	return time.Since(start), nil
}

func runEngineE2E(b *testing.B, dir string, n, rate int) e2eResult {
	var fired atomic.Int64
	var early atomic.Int64
	var late histogram
	done := make(chan struct{})
	handler := func(ctx context.Context, d *Delivery) error {
		now := time.Now()
		if now.Before(d.Due) {
			early.Add(1)
		}
		late.record(now.Sub(d.Due))
		if fired.Add(1) == int64(n) {
			close(done)
		}
		return nil
	}
	e, err := Open(context.Background(), Options{Dir: dir, Logger: quietLogger(), MaxBatch: 512, Dispatchers: *flagBenchDispatchers,
		Queues: []Queue{{Name: "bench", Handler: handler}}})
	if err != nil {
		b.Fatal(err)
	}
	defer e.Close()
	payload := []byte("0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef") // 64 B
	start := time.Now()
	batch := 1000
	workers := 4
	if rate > 0 {
		// Paced: small batches from more goroutines, so one fsync wait
		// does not hold the schedule rate back.
		batch = max(1, min(1000, rate/1000))
		workers = 64
	}
	schedDur, err := pace(n, workers, batch, rate, func(dues []time.Time) error {
		msgs := make([]Message, len(dues))
		for i, d := range dues {
			msgs[i] = Message{Dest: "local://bench", Due: d, Payload: payload}
		}
		_, err := e.ScheduleBatch(context.Background(), msgs)
		return err
	})
	if err != nil {
		b.Fatal(err)
	}
	select {
	case <-done:
	case <-time.After(5 * time.Minute):
		b.Fatalf("only %d of %d fired", fired.Load(), n)
	}
	total := time.Since(start)
	st := e.Stats()
	if st.EarlyCaught != 0 {
		b.Logf("early caught at pop: %d", st.EarlyCaught)
	}
	return e2eResult{n: n, scheduleS: schedDur.Seconds(), totalS: total.Seconds(), late: late.summary(),
		early: early.Load(), engineLate: st.Lateness}
}

func runAfterFuncE2E(b *testing.B, n, rate int) e2eResult {
	var fired atomic.Int64
	var early atomic.Int64
	var late histogram
	done := make(chan struct{})
	start := time.Now()
	batch := 1000
	if rate > 0 {
		batch = max(1, min(1000, rate/1000))
	}
	workers := 4
	if rate > 0 {
		workers = 64
	}
	schedDur, err := pace(n, workers, batch, rate, func(dues []time.Time) error {
		for _, due := range dues {
			due := due
			time.AfterFunc(time.Until(due), func() {
				now := time.Now()
				if now.Before(due) {
					early.Add(1)
				}
				late.record(now.Sub(due))
				if fired.Add(1) == int64(n) {
					close(done)
				}
			})
		}
		return nil
	})
	if err != nil {
		b.Fatal(err)
	}
	<-done
	return e2eResult{n: n, scheduleS: schedDur.Seconds(), totalS: time.Since(start).Seconds(), late: late.summary(), early: early.Load()}
}

// BenchmarkE2E runs, in one process, the engine in memory and durable mode
// and the time.AfterFunc baseline on the same workload. Run with
// -benchtime=1x; -engine.bench.n, -engine.bench.rate and
// -engine.bench.spread shape the workload.
func BenchmarkE2E(b *testing.B) {
	n, rate := *flagBenchN, *flagBenchRate
	b.Run("afterfunc", func(b *testing.B) {
		for b.Loop() {
			r := runAfterFuncE2E(b, n, rate)
			r.report(b)
		}
	})
	b.Run("memory", func(b *testing.B) {
		for b.Loop() {
			r := runEngineE2E(b, "", n, rate)
			r.report(b)
			b.Logf("engine lateness at handoff: %+v", r.engineLate)
		}
	})
	b.Run("durable", func(b *testing.B) {
		for b.Loop() {
			dir := b.TempDir()
			r := runEngineE2E(b, dir, n, rate)
			r.report(b)
			b.Logf("engine lateness at handoff: %+v", r.engineLate)
		}
	})
}

var flagBenchDispatchers = flag.Int("engine.bench.dispatchers", 0, "Options.Dispatchers for the engine runs (0 = default)")
