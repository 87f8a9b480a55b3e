package engine

import (
	"context"
	"encoding/binary"
	"flag"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

var (
	flagRecoveryDir = flag.String("engine.bench.dir", "", "BenchmarkRecovery keeps its populated store here and reopens a copy of it on later runs (empty: populate a new store every run)")
	flagRecoveryAll = flag.Bool("engine.bench.fireall", true, "BenchmarkRecovery waits until every overdue message fired (false: until every window is loaded)")
)

// BenchmarkRecovery measures how fast a durable engine gets going after a
// restart: n/2 messages overdue at Open and n/2 far beyond the window.
// Reports store open time, time to first fire, time until every shard
// loaded its window, and time until every overdue message fired.
//
// With -engine.bench.dir the populated store (closed cleanly) is kept in
// that directory, with the time its near half was due; a later run with
// the same directory and n copies it and reopens the copy on a clock set
// back so that it reads what a fresh run's clock would, 200 ms after that
// due time.
func BenchmarkRecovery(b *testing.B) {
	n := *flagBenchN
	for b.Loop() {
		var fired atomic.Int64
		var first atomic.Int64
		var start time.Time
		handler := func(ctx context.Context, d *Delivery) error {
			if fired.Add(1) == 1 {
				first.Store(int64(time.Since(start)))
			}
			return nil
		}
		dir, nearDue := recoveryStore(b, n)
		clock := Clock(RealClock{})
		if *flagRecoveryDir != "" {
			clock = shiftedClock{time.Since(nearDue.Add(200 * time.Millisecond))}
		} else {
			time.Sleep(time.Until(nearDue.Add(200 * time.Millisecond)))
		}

		opts := Options{Dir: dir, Logger: quietLogger(), Clock: clock, Queues: []Queue{{Name: "bench", Handler: handler}}}
		start = time.Now()
		e, err := Open(context.Background(), opts)
		if err != nil {
			b.Fatal(err)
		}
		for *flagRecoveryAll && fired.Load() < int64(n/2) {
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
		if *flagRecoveryAll {
			b.ReportMetric(float64(all.Milliseconds()), "all-overdue-fired-ms")
		}
		b.ReportMetric(float64(st.Recovery.Pending), "pending-at-open")
	}
}

// shiftedClock is the real clock set back by d.
type shiftedClock struct{ d time.Duration }

func (c shiftedClock) Now() time.Time                 { return time.Now().Add(-c.d) }
func (c shiftedClock) NewTimer(d time.Duration) Timer { return RealClock{}.NewTimer(d) }

// recoveryStore returns the directory of a store holding n pending
// messages, closed cleanly, and the time its near half is due: a new one,
// or a copy of the one kept in -engine.bench.dir (populated there first if
// it holds none for n).
func recoveryStore(b *testing.B, n int) (string, time.Time) {
	keep := *flagRecoveryDir
	if keep == "" {
		dir := b.TempDir()
		return dir, populateRecovery(b, dir, n)
	}
	src := filepath.Join(keep, "store")
	dueFile := filepath.Join(keep, "near-due")
	raw, err := os.ReadFile(dueFile)
	if err != nil || len(raw) != 16 || binary.BigEndian.Uint64(raw[8:]) != uint64(n) {
		if err := os.RemoveAll(keep); err != nil {
			b.Fatal(err)
		}
		nearDue := populateRecovery(b, src, n)
		raw = binary.BigEndian.AppendUint64(binary.BigEndian.AppendUint64(nil, uint64(nearDue.UnixNano())), uint64(n))
		if err := os.WriteFile(dueFile, raw, 0o644); err != nil {
			b.Fatal(err)
		}
	}
	dir := filepath.Join(b.TempDir(), "store")
	if err := os.CopyFS(dir, os.DirFS(src)); err != nil {
		b.Fatal(err)
	}
	return dir, time.Unix(0, int64(binary.BigEndian.Uint64(raw[:8])))
}

// populateRecovery schedules n/2 messages 10–70 min ahead and n/2 due at
// about the returned time, in dir, and closes the engine.
func populateRecovery(b *testing.B, dir string, n int) time.Time {
	var fired atomic.Int64
	counting := func(context.Context, *Delivery) error {
		fired.Add(1)
		return nil
	}
	opts := Options{Dir: dir, Logger: quietLogger(), Queues: []Queue{{Name: "bench", Handler: counting}}}
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
	return nearDue
}
