package wheel_test

import (
	"container/heap"
	"fmt"
	"math/rand/v2"
	"runtime"
	"slices"
	"testing"
	"time"

	"github.com/hourglassmq/hourglass/wheel"
)

// The benchmark grid: pending entries × the spread of their due times. Names
// are shared by the wheel and its baselines so benchstat can line them up.
var (
	benchPending = []struct {
		name string
		n    int
	}{{"1M", 1_000_000}, {"10M", 10_000_000}}
	benchSpread = []struct {
		name string
		d    time.Duration
	}{{"1s", time.Second}, {"1h", time.Hour}, {"1d", 24 * time.Hour}}
)

// chunk is how many timed operations run between untimed refills or
// cleanups that keep the pending count steady.
const chunk = 4096

// offsets returns a fixed table of due offsets uniform over spread, so the
// timed loops spend nothing on random numbers.
func offsets(spread time.Duration) []int64 {
	rng := rand.New(rand.NewPCG(1, 2))
	out := make([]int64, 1<<16)
	for i := range out {
		out[i] = 1 + rng.Int64N(int64(spread))
	}
	return out
}

func forEachSize(b *testing.B, minSpread time.Duration, fn func(b *testing.B, n int, spread time.Duration)) {
	for _, p := range benchPending {
		for _, s := range benchSpread {
			if s.d < minSpread {
				continue
			}
			b.Run(fmt.Sprintf("pending=%s/spread=%s", p.name, s.name), func(b *testing.B) {
				fn(b, p.n, s.d)
			})
		}
	}
}

// heapInUse returns the live heap after a full collection.
func heapInUse() uint64 {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

// memory is what a structure of n pending entries costs: live heap bytes per
// entry and the median time of a forced GC with everything live.
type memory struct{ perEntry, gcMs float64 }

func measureMemory(before uint64, n int) memory {
	after := heapInUse()
	var gcs []time.Duration
	for range 5 {
		t0 := time.Now()
		runtime.GC()
		gcs = append(gcs, time.Since(t0))
	}
	slices.Sort(gcs)
	return memory{float64(after-before) / float64(n), float64(gcs[len(gcs)/2].Microseconds()) / 1000}
}

// report adds the figures to the benchmark's line; call it after the timed
// loop, since ResetTimer drops reported metrics.
func (m memory) report(b *testing.B) {
	b.ReportMetric(m.perEntry, "B/pending")
	b.ReportMetric(m.gcMs, "gc-ms")
}

func filledWheel(b *testing.B, n int, offs []int64) (*wheel.Wheel, []wheel.Handle) {
	b.Helper()
	w, err := wheel.New(wheel.Options{Capacity: n + chunk})
	if err != nil {
		b.Fatal(err)
	}
	hs := make([]wheel.Handle, n)
	for i := range n {
		hs[i] = w.Insert(offs[i&(len(offs)-1)]+int64(i&7), uint64(i))
	}
	return w, hs
}

// BenchmarkInsert measures one insert into a wheel holding n pending entries.
func BenchmarkInsert(b *testing.B) {
	forEachSize(b, 0, func(b *testing.B, n int, spread time.Duration) {
		offs := offsets(spread)
		before := heapInUse()
		w, _ := filledWheel(b, n, offs)
		mem := measureMemory(before, n)
		ring := make([]wheel.Handle, 0, chunk)
		i := 0
		b.ResetTimer()
		for b.Loop() {
			ring = append(ring, w.Insert(offs[i&(len(offs)-1)], uint64(i)))
			i++
			if len(ring) == chunk {
				b.StopTimer()
				for _, h := range ring {
					w.Cancel(h)
				}
				ring = ring[:0]
				b.StartTimer()
			}
		}
		mem.report(b)
		runtime.KeepAlive(w)
	})
}

// BenchmarkCancel measures cancelling one of n pending entries, in random
// order. The handles are shuffled up front and read in sequence, so the
// timed work is the wheel's own: one random slab access per cancel.
func BenchmarkCancel(b *testing.B) {
	forEachSize(b, 0, func(b *testing.B, n int, spread time.Duration) {
		offs := offsets(spread)
		w, hs := filledWheel(b, n, offs)
		rng := rand.New(rand.NewPCG(3, 4))
		rng.Shuffle(n, func(i, j int) { hs[i], hs[j] = hs[j], hs[i] })
		k, done := 0, 0
		b.ResetTimer()
		for b.Loop() {
			w.Cancel(hs[k])
			k++
			if done++; done == chunk || k == n {
				b.StopTimer()
				for j := k - done; j < k; j++ {
					hs[j] = w.Insert(offs[j&(len(offs)-1)], uint64(j))
				}
				k, done = k%n, 0
				b.StartTimer()
			}
		}
	})
}

// BenchmarkAdvance measures expiry: it fills a wheel with n entries due over
// spread, then advances from one due time to the next (as the engine does,
// sleeping until NextDue) until all have come out, cascades included. One
// op is one expired entry.
func BenchmarkAdvance(b *testing.B) {
	forEachSize(b, 0, func(b *testing.B, n int, spread time.Duration) {
		offs := offsets(spread)
		var elapsed time.Duration
		expired := 0
		buf := make([]uint64, 0, 1<<16)
		for expired < b.N {
			b.StopTimer()
			w, _ := filledWheel(b, n, offs)
			b.StartTimer()
			t0 := time.Now()
			for {
				next, ok := w.NextDue()
				if !ok {
					break
				}
				buf = w.Advance(next, buf[:0])
				expired += len(buf)
			}
			elapsed += time.Since(t0)
		}
		b.ReportMetric(float64(expired)/elapsed.Seconds(), "entries/s")
		b.ReportMetric(float64(elapsed.Nanoseconds())/float64(expired), "ns/entry")
	})
}

// BenchmarkRuntimeTimerInsert is the same-run baseline for BenchmarkInsert:
// time.AfterFunc with n timers pending, Stop to keep the count steady. Spreads
// under an hour are left out: those timers would fire during the run.
func BenchmarkRuntimeTimerInsert(b *testing.B) {
	forEachSize(b, time.Hour, func(b *testing.B, n int, spread time.Duration) {
		offs := offsets(spread)
		noop := func() {}
		before := heapInUse()
		timers := make([]*time.Timer, n)
		for i := range n {
			timers[i] = time.AfterFunc(time.Duration(offs[i&(len(offs)-1)]), noop)
		}
		mem := measureMemory(before, n)
		ring := make([]*time.Timer, 0, chunk)
		i := 0
		b.ResetTimer()
		for b.Loop() {
			ring = append(ring, time.AfterFunc(time.Duration(offs[i&(len(offs)-1)]), noop))
			i++
			if len(ring) == chunk {
				b.StopTimer()
				for _, t := range ring {
					t.Stop()
				}
				ring = ring[:0]
				b.StartTimer()
			}
		}
		b.StopTimer()
		mem.report(b)
		for _, t := range timers {
			t.Stop()
		}
	})
}

// heapEntry and timerHeap are the textbook alternative: a binary min-heap of
// values (no pointers), as container/heap builds it.
type heapEntry struct{ due, ref uint64 }

type timerHeap []heapEntry

func (h timerHeap) Len() int           { return len(h) }
func (h timerHeap) Less(i, j int) bool { return h[i].due < h[j].due }
func (h timerHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *timerHeap) Push(x any)        { *h = append(*h, x.(heapEntry)) }
func (h *timerHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}

// BenchmarkHeapInsert is the same-run baseline of a container/heap of n
// pending entries: one push per op, pops outside the timer keep n steady.
func BenchmarkHeapInsert(b *testing.B) {
	forEachSize(b, 0, func(b *testing.B, n int, spread time.Duration) {
		offs := offsets(spread)
		before := heapInUse()
		h := make(timerHeap, 0, n+chunk)
		for i := range n {
			h = append(h, heapEntry{uint64(offs[i&(len(offs)-1)]), uint64(i)})
		}
		heap.Init(&h)
		mem := measureMemory(before, n)
		pushed := 0
		i := 0
		b.ResetTimer()
		for b.Loop() {
			heap.Push(&h, heapEntry{uint64(offs[i&(len(offs)-1)]), uint64(i)})
			i++
			if pushed++; pushed == chunk {
				b.StopTimer()
				for range chunk {
					heap.Pop(&h)
				}
				pushed = 0
				b.StartTimer()
			}
		}
		mem.report(b)
	})
}

// BenchmarkRandomTouchFloor is the hardware floor under BenchmarkCancel: read
// and write one 24-byte record at a random index of an n-record slab, the
// memory traffic a cancel cannot avoid. Cancel's ratio to it is its overhead.
func BenchmarkRandomTouchFloor(b *testing.B) {
	forEachSize(b, 0, func(b *testing.B, n int, _ time.Duration) {
		slab := make([]struct {
			due, ref uint64
			gen      uint32
			slot     int32
		}, n)
		for i := range slab { // fault every page in before timing
			slab[i].slot = 1
		}
		order := rand.New(rand.NewPCG(3, 4)).Perm(n)
		k := 0
		for b.Loop() {
			e := &slab[order[k]]
			if k++; k == n {
				k = 0
			}
			if e.slot >= 0 {
				e.gen++
			}
		}
	})
}

// BenchmarkSteadyStep is the engine's use of a shard's wheel at a steady
// rate: each 1 ms tick inserts rate/1000 entries due 100 ms to 5 s later
// (the load generator's delays) and advances one tick. A b.N op is one such
// tick, measured once 6 s of them have filled the wheel. What matters here
// is not the mean but the longest step: the shard stalls for it, and every
// message due meanwhile fires that much late. It reports the step time's
// p99.9 and maximum in µs.
func BenchmarkSteadyStep(b *testing.B) {
	for _, rate := range []int{100_000, 200_000} {
		b.Run(fmt.Sprintf("rate=%dk", rate/1000), func(b *testing.B) {
			w, err := wheel.New(wheel.Options{})
			if err != nil {
				b.Fatal(err)
			}
			rng := rand.New(rand.NewPCG(1, 2))
			perTick := rate / 1000
			var dst []uint64
			tick := int64(0)
			step := func() {
				now := tick * int64(time.Millisecond)
				for range perTick {
					w.Insert(now+int64(100*time.Millisecond)+rng.Int64N(int64(4900*time.Millisecond)), 1)
				}
				dst = w.Advance(now, dst[:0])
				tick++
			}
			for range 6000 {
				step()
			}
			steps := make([]time.Duration, 0, b.N)
			runtime.GC() // the warm-up's growth garbage is not the steady state's
			b.ResetTimer()
			for range b.N {
				t0 := time.Now()
				step()
				steps = append(steps, time.Since(t0))
			}
			b.StopTimer()
			slices.Sort(steps)
			b.ReportMetric(float64(steps[len(steps)*999/1000].Microseconds()), "p99.9-µs")
			b.ReportMetric(float64(steps[len(steps)-1].Microseconds()), "max-µs")
		})
	}
}
