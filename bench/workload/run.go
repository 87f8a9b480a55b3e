package workload

import (
	"context"
	"errors"
	"fmt"
	"math"
	"runtime"
	"time"
)

// Config is one run's workload.
type Config struct {
	N         int           // messages
	Producers int           // goroutines scheduling
	Batch     int           // messages per schedule call (systems without batches loop)
	Window    time.Duration // dues are uniform over [start+Lead, start+Lead+Window)
	Lead      time.Duration // delay between the start of scheduling and the first due time
	Timeout   time.Duration // how long after the last due time to wait for stragglers
	Seed      uint64
}

// System is one scheduler under test, driven through its public API.
type System interface {
	// Name is the row label.
	Name() string
	// Open starts the system's consumers, which report each delivery to rec.
	Open(ctx context.Context, rec *Recorder) error
	// Schedule schedules sequence numbers [lo, lo+len(dues)), seq lo+i due
	// at dues[i], with payloads made by Encode.
	Schedule(ctx context.Context, lo int, dues []time.Time) error
	// Usage returns the bytes the system holds for pending messages (Redis
	// used_memory, table size, Go heap): the run reports the difference
	// before and after scheduling, per message.
	Usage(ctx context.Context) (int64, error)
	// Close stops the system.
	Close(ctx context.Context) error
}

// Report is one row of a comparison table.
type Report struct {
	System string
	Result
	SchedulesPerS float64 // N / time to schedule all
	FiresPerS     float64 // fired / (last delivery - first due); ≈ N/Window when keeping up
	BytesPerMsg   float64 // usage delta / N; NaN when unknown
	TimedOut      bool    // the wait for deliveries ended before all fired
	Err           error   // the first error, if the run stopped early
}

// Run runs cfg against sys and returns its row. The error is also in
// Report.Err; Run returns the partial report either way.
func Run(ctx context.Context, sys System, cfg Config) Report {
	rep := Report{System: sys.Name(), BytesPerMsg: math.NaN()}
	rec := NewRecorder(cfg.N)
	if err := sys.Open(ctx, rec); err != nil {
		rep.Err = fmt.Errorf("%s: open: %w", sys.Name(), err)
		rep.Result = rec.Result()
		return rep
	}
	defer func() {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer cancel()
		if err := sys.Close(cctx); err != nil && rep.Err == nil {
			rep.Err = fmt.Errorf("%s: close: %w", sys.Name(), err)
		}
	}()
	u0, uerr := sys.Usage(ctx)
	start := time.Now()
	first := start.Add(cfg.Lead)
	dues := Dues(cfg.N, first, cfg.Window, cfg.Seed)
	err := Produce(cfg.N, cfg.Producers, max(1, cfg.Batch), func(lo, hi int) error {
		rec.Submit(lo, hi, time.Now())
		return sys.Schedule(ctx, lo, dues[lo:hi])
	})
	sched := time.Since(start)
	rep.SchedulesPerS = float64(cfg.N) / sched.Seconds()
	if err != nil {
		rep.Err = fmt.Errorf("%s: schedule: %w", sys.Name(), err)
		rep.SchedulesPerS = math.NaN()
	}
	if u1, err := sys.Usage(ctx); err == nil && uerr == nil && cfg.N > 0 {
		rep.BytesPerMsg = float64(u1-u0) / float64(cfg.N)
	}
	deadline := time.NewTimer(time.Until(first.Add(cfg.Window + cfg.Timeout)))
	defer deadline.Stop()
	select {
	case <-rec.Done():
	case <-deadline.C:
		rep.TimedOut = true
	case <-ctx.Done():
		rep.TimedOut = true
		if rep.Err == nil {
			rep.Err = ctx.Err()
		}
	}
	rep.Result = rec.Result()
	if !rep.Last.IsZero() {
		if span := rep.Last.Sub(first); span > 0 {
			rep.FiresPerS = float64(rep.Fired) / span.Seconds()
		}
	}
	return rep
}

// GoHeap returns the live Go heap after full collections: the Usage of
// in-process systems. It collects twice so sync.Pool contents left by an
// earlier system (kept one cycle in the pools' victim caches) are gone.
func GoHeap() int64 {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return int64(ms.HeapAlloc)
}

// ErrNotDelivered reports a run that ended with messages lost or early.
var ErrNotDelivered = errors.New("workload: not every message delivered on time")

// Check returns ErrNotDelivered (wrapped with the counts) unless every
// message fired exactly once and none early.
func (r Report) Check() error {
	if r.Lost != 0 || r.Early != 0 || r.Duplicates != 0 || r.Foreign != 0 {
		return fmt.Errorf("%w: %s lost %d early %d duplicated %d foreign %d",
			ErrNotDelivered, r.System, r.Lost, r.Early, r.Duplicates, r.Foreign)
	}
	return nil
}
