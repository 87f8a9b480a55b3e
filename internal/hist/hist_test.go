package hist

import (
	"flag"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"time"
)

var flagSeed = flag.Uint64("hist.seed", 1, "seed of the randomized histogram tests")

// TestBucketsTileTheRange checks the bucket table: buckets are contiguous
// from 0 to 2^63-1, each magnitude falls in the bucket whose bounds hold
// it, and no bucket above the exact ones is wider than 1/64 of its lowest
// value.
func TestBucketsTileTheRange(t *testing.T) {
	if magLower(0) != 0 || magUpper(perSign-1) != math.MaxInt64 {
		t.Fatalf("range [%d, %d], want [0, 2^63-1]", magLower(0), magUpper(perSign-1))
	}
	for b := range perSign {
		lo, hi := magLower(b), magUpper(b)
		if b > 0 && magUpper(b-1)+1 != lo {
			t.Fatalf("gap or overlap before bucket %d: previous ends at %d, this starts at %d", b, magUpper(b-1), lo)
		}
		if b < 2*subBuckets && lo != hi {
			t.Fatalf("bucket %d = [%d, %d] should be exact", b, lo, hi)
		}
		if float64(hi-lo) > float64(lo)*RelativeError {
			t.Fatalf("bucket %d = [%d, %d] is wider than 1/%d of %d", b, lo, hi, subBuckets, lo)
		}
		for _, m := range []uint64{lo, hi, lo + (hi-lo)/2} {
			if got := magIndex(m); got != b {
				t.Fatalf("magnitude %d: bucket %d, want %d", m, got, b)
			}
		}
	}
	// Positions in counts run in value order across the sign. (Position
	// perSign-1, the mirror of magnitude 0, is never used.)
	for _, v := range []int64{math.MinInt64, -math.MaxInt64, -1 << 40, -129, -128, -1, 0, 1, 127, 128, 1 << 40, math.MaxInt64} {
		i := index(v)
		if up := upperOf(i); up < time.Duration(v) {
			t.Fatalf("value %d at position %d whose upper bound is %d", v, i, up)
		}
		prev := i - 1
		if prev == perSign-1 {
			prev--
		}
		if prev >= 0 && upperOf(prev) >= time.Duration(max(v, -math.MaxInt64)) {
			t.Fatalf("value %d at position %d, but position %d already reaches %d", v, i, prev, upperOf(prev))
		}
	}
}

func TestRank(t *testing.T) {
	for _, tc := range []struct {
		q    float64
		n    uint64
		want uint64
	}{
		{0, 10, 1}, {-1, 10, 1}, {math.NaN(), 10, 1}, {0.5, 1, 1}, {0.5, 10, 5}, {0.5, 11, 6},
		{0.07, 100, 7}, {0.07, 100_000, 7000}, {0.29, 100, 29}, {0.57, 10_000, 5700},
		{0.99, 1000, 990}, {0.999, 100, 100}, {1, 10, 10}, {2, 10, 10},
	} {
		if got := rank(tc.q, tc.n); got != tc.want {
			t.Errorf("rank(%v, %d) = %d, want %d", tc.q, tc.n, got, tc.want)
		}
	}
}

// TestQuantilesAgainstSortedReference records several distributions and
// compares every reported quantile with the exact nearest-rank quantile of
// the sorted values: never below it, at most RelativeError of its
// magnitude above it.
func TestQuantilesAgainstSortedReference(t *testing.T) {
	seed := *flagSeed
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	dists := []struct {
		name string
		gen  func() time.Duration
	}{
		{"exponential 5ms", func() time.Duration { return time.Duration(rng.ExpFloat64() * 5e6) }},
		{"log-uniform 1ns to 1h", func() time.Duration { return time.Duration(math.Exp(rng.Float64() * math.Log(float64(time.Hour)))) }},
		{"tiny", func() time.Duration { return time.Duration(rng.IntN(300)) }},
		{"early and late", func() time.Duration { return time.Duration(rng.NormFloat64() * 2e6) }},
		{"all early", func() time.Duration { return -time.Duration(rng.Int64N(int64(time.Second))) - 1 }},
		{"constant", func() time.Duration { return 1234567 }},
		{"extremes", func() time.Duration {
			return []time.Duration{math.MinInt64, -math.MaxInt64, 0, math.MaxInt64 - 1, math.MaxInt64}[rng.IntN(5)]
		}},
	}
	for _, d := range dists {
		for _, n := range []int{1, 2, 7, 1000, 100_000} {
			var h Histogram
			vals := make([]time.Duration, n)
			for i := range vals {
				vals[i] = d.gen()
				h.Record(vals[i])
			}
			slices.Sort(vals)
			s := h.Snapshot()
			if s.Count() != uint64(n) || s.Max() != vals[n-1] {
				t.Fatalf("%s n=%d seed=%d: count %d max %v, want %d %v", d.name, n, seed, s.Count(), s.Max(), n, vals[n-1])
			}
			for _, q := range []float64{0, 0.001, 0.1, 0.5, 0.9, 0.99, 0.999, 0.9999, 1} {
				exact := vals[rank(q, uint64(n))-1]
				got := s.Quantile(q)
				if exact == math.MinInt64 {
					exact = -math.MaxInt64 // recorded as such: -MinInt64 does not fit
				}
				if got < exact || float64(got-exact) > math.Abs(float64(exact))*RelativeError {
					t.Fatalf("%s n=%d seed=%d: q%v = %d, exact %d (allowed [exact, exact+|exact|/%d])",
						d.name, n, seed, q, got, exact, subBuckets)
				}
				if q == 1 && got != vals[n-1] {
					t.Fatalf("%s n=%d seed=%d: q1 = %v, want the maximum %v", d.name, n, seed, got, vals[n-1])
				}
			}
		}
	}
}

func TestEmptyAndRecordN(t *testing.T) {
	var h Histogram
	h.RecordN(time.Hour, 0)
	if s := h.Summary(); s != (Summary{}) {
		t.Fatalf("empty histogram summary %+v", s)
	}
	var one, many Histogram
	for _, d := range []time.Duration{3 * time.Millisecond, time.Millisecond, -time.Microsecond} {
		many.RecordN(d, 5)
		for range 5 {
			one.Record(d)
		}
	}
	if a, b := one.Summary(), many.Summary(); a != b || a.Count != 15 || a.Max != 3*time.Millisecond {
		t.Fatalf("RecordN(d, 5) gives %+v, five Records give %+v", b, a)
	}
}

// TestConcurrentRecordAndSnapshot records from several goroutines while
// another takes snapshots: snapshots only grow, never report a quantile
// above their maximum, and the end result equals the same values recorded
// on one goroutine.
func TestConcurrentRecordAndSnapshot(t *testing.T) {
	const writers, each = 4, 20_000
	gen := func(w, i int) time.Duration { return time.Duration((w*each+i)*7919%1_000_003) - 1000 }
	var h, seq Histogram
	for w := range writers {
		for i := range each {
			seq.Record(gen(w, i))
		}
	}
	var wg sync.WaitGroup
	done := make(chan struct{})
	var readErr error
	wg.Go(func() {
		var last uint64
		for {
			s := h.Snapshot()
			if s.Count() < last {
				readErr = fmt.Errorf("count went back from %d to %d", last, s.Count())
				return
			}
			last = s.Count()
			for _, q := range []float64{0.5, 0.99, 1} {
				if got := s.Quantile(q); got > s.Max() {
					readErr = fmt.Errorf("q%v = %v above the maximum %v of %d values", q, got, s.Max(), s.Count())
					return
				}
			}
			select {
			case <-done:
				return
			default:
			}
		}
	})
	var writersWG sync.WaitGroup
	for w := range writers {
		writersWG.Go(func() {
			for i := range each {
				h.Record(gen(w, i))
			}
		})
	}
	writersWG.Wait()
	close(done)
	wg.Wait()
	if readErr != nil {
		t.Fatal(readErr)
	}
	if got, want := h.Summary(), seq.Summary(); got != want {
		t.Fatalf("concurrent %+v, sequential %+v", got, want)
	}
}

func TestRecordDoesNotAllocate(t *testing.T) {
	var h Histogram
	d := time.Duration(1)
	if n := testing.AllocsPerRun(1000, func() {
		h.Record(d)
		h.RecordN(-d, 3)
		d = d*3 + 1
	}); n != 0 {
		t.Fatalf("Record allocates %v times per call", n)
	}
}

func BenchmarkRecord(b *testing.B) {
	var h Histogram
	vals := benchValues()
	i := 0
	for b.Loop() {
		h.Record(vals[i&(len(vals)-1)])
		i++
	}
}

func BenchmarkRecordParallel(b *testing.B) {
	var h Histogram
	vals := benchValues()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			h.Record(vals[i&(len(vals)-1)])
			i++
		}
	})
}

func BenchmarkSummary(b *testing.B) {
	var h Histogram
	for _, v := range benchValues() {
		h.Record(v)
	}
	for b.Loop() {
		_ = h.Summary()
	}
}

// benchValues returns 4096 latencies spread like a delivery's lateness:
// exponential with a 2 ms mean.
func benchValues() []time.Duration {
	rng := rand.New(rand.NewPCG(1, 2))
	vals := make([]time.Duration, 4096)
	for i := range vals {
		vals[i] = time.Duration(rng.ExpFloat64() * 2e6)
	}
	return vals
}

func ExampleHistogram() {
	var h Histogram
	for i := range 1000 {
		h.Record(time.Duration(i+1) * time.Millisecond)
	}
	s := h.Summary()
	fmt.Println(s.Count, s.P50, s.P99, s.Max)
	// The exact p50 and p99 are 500ms and 990ms: reported above, within 1/64.
	// Output: 1000 503.316479ms 998.244351ms 1s
}
