// Package hist is the one latency histogram of Hourglass. The engine's
// Stats.Lateness, the store's sync latency, the load generator's report and
// the comparison benchmarks all record into it, so a p99 in one table means
// the same as a p99 in another: same buckets, same rank, same rounding.
//
// # Buckets
//
// A Histogram counts durations in log-linear buckets: values below 128 ns
// each have a bucket of their own; above that, every power of two of
// nanoseconds [2^k, 2^(k+1)) is cut into 64 equal sub-buckets, so a bucket
// is never wider than 1/64 of the values it holds. Negative values (an
// early delivery measured as lateness) have a mirror set of buckets, so an
// early delivery is never reported as on time. The whole int64 range is
// covered; the table is 2 × 3712 counters (58 KiB).
//
// # Quantiles
//
// Quantile(q) is the nearest-rank quantile: the smallest recorded value v
// such that at least q of all values are ≤ v, with rank ⌈q·n⌉. It is
// reported as the largest value its bucket can hold, capped at the largest
// value recorded. So a reported quantile is never below the exact one and
// at most RelativeError (1/64 ≈ 1.6 %) of its magnitude above it; values
// under 128 ns and the maximum (q = 1) are exact. Rounding up, not down,
// keeps a latency figure on the pessimistic side.
//
// # Concurrency and cost
//
// Record is lock-free and allocation-free: one atomic add on the bucket,
// one atomic load of the maximum (a compare-and-swap only when the maximum
// grows). Any number of goroutines may record while others take snapshots.
// A Snapshot reads each bucket once; it is a consistent histogram of some
// of the values recorded during the call, and every value it counts is ≤
// its Max, because Record raises the maximum before it counts the value.
//
// # Why not HdrHistogram
//
// HdrHistogram's Go port (github.com/HdrHistogram/hdrhistogram-go)
// quantises the same way, but its RecordValue is not safe for concurrent
// use, and every user here records from many goroutines at once, so it
// would need a mutex; it also refuses negative values, which the
// benchmarks' lateness needs. Measured in one run on the project's 2-core
// machine (bench/peers BenchmarkRecord, 20 interleaved runs, benchstat
// medians, on a machine shared with other work, so ±10–30 %): recording
// one latency costs 5.6 ns here, 6.3 ns in HdrHistogram without a lock and
// 9.6 ns behind the mutex it would need; with two goroutines recording at
// once, 6.0 ns here against 10.7 ns. So the project keeps its own package:
// faster where it is used, signed, and no dependency.
package hist

import (
	"math"
	"math/bits"
	"sync/atomic"
	"time"
)

const (
	subBits = 6
	// subBuckets is the number of sub-buckets per power of two.
	subBuckets = 1 << subBits
	// perSign is the number of buckets for each sign: values below
	// 2·subBuckets exactly, then subBuckets per power of two up to 2^63.
	perSign = (64 - subBits) * subBuckets
)

// RelativeError bounds how far above the exact value a reported quantile
// may be, as a fraction of the exact value's magnitude.
const RelativeError = 1.0 / subBuckets

// Histogram counts durations. The zero value is an empty histogram ready to
// use; a Histogram must not be copied after first use.
type Histogram struct {
	// max is the largest value recorded, in the order-preserving encoding
	// of enc; its zero value stands for math.MinInt64, which is the
	// identity of max, so no flag is needed for "nothing recorded".
	max atomic.Uint64
	// counts holds the buckets in value order: counts[perSign-1-i] is
	// bucket i of the negative values' magnitudes, counts[perSign+i] is
	// bucket i of the values ≥ 0.
	counts [2 * perSign]atomic.Uint64
}

// Record counts one value d.
func (h *Histogram) Record(d time.Duration) { h.RecordN(d, 1) }

// RecordN counts n values equal to d, as when a batch shares one latency.
// It does nothing for n = 0.
func (h *Histogram) RecordN(d time.Duration, n uint64) {
	if n == 0 {
		return
	}
	// Raise the maximum before counting, so a snapshot that sees the count
	// also sees a maximum at least this large.
	e := enc(int64(d))
	for m := h.max.Load(); e > m && !h.max.CompareAndSwap(m, e); m = h.max.Load() {
	}
	h.counts[index(int64(d))].Add(n)
}

// Snapshot returns the histogram's current contents.
func (h *Histogram) Snapshot() Snapshot {
	var s Snapshot
	for i := range h.counts {
		if c := h.counts[i].Load(); c != 0 {
			s.buckets = append(s.buckets, bucket{upper: upperOf(i), count: c})
			s.count += c
		}
	}
	if s.count > 0 {
		s.max = time.Duration(dec(h.max.Load()))
	}
	return s
}

// Summary returns the figures every user of the package reports.
func (h *Histogram) Summary() Summary { return h.Snapshot().Summary() }

// Snapshot is a histogram's contents at one moment, detached from it.
type Snapshot struct {
	buckets []bucket // non-empty buckets in value order
	count   uint64
	max     time.Duration
}

type bucket struct {
	upper time.Duration // the largest value the bucket holds
	count uint64
}

// Count returns the number of values.
func (s Snapshot) Count() uint64 { return s.count }

// Max returns the largest value, exactly; 0 for an empty snapshot.
func (s Snapshot) Max() time.Duration { return s.max }

// Quantile returns the nearest-rank q-quantile (q in [0, 1], clamped), as
// described in the package doc: never below the exact value, at most
// RelativeError of its magnitude above it. It returns 0 for an empty
// snapshot.
func (s Snapshot) Quantile(q float64) time.Duration {
	if s.count == 0 {
		return 0
	}
	want := rank(q, s.count)
	var acc uint64
	for _, b := range s.buckets {
		acc += b.count
		if acc >= want {
			return min(b.upper, s.max)
		}
	}
	return s.max
}

// Summary holds the quantiles the project reports.
type Summary struct {
	Count                    uint64
	P50, P90, P99, P999, Max time.Duration
}

// Summary returns the snapshot's count, p50, p90, p99, p99.9 and maximum.
func (s Snapshot) Summary() Summary {
	return Summary{
		Count: s.count,
		P50:   s.Quantile(0.50), P90: s.Quantile(0.90), P99: s.Quantile(0.99), P999: s.Quantile(0.999),
		Max: s.max,
	}
}

// rank returns the 1-based nearest rank ⌈q·n⌉ for n > 0, clamped to
// [1, n]. A product within a relative 1e-9 of an integer counts as that
// integer, so 0.07·100 is rank 7 although 0.07·100 in float64 is
// 7.000000000000001.
func rank(q float64, n uint64) uint64 {
	x := q * float64(n)
	r := math.Round(x)
	if math.Abs(x-r) > 1e-9*max(1, x) {
		r = math.Ceil(x)
	}
	if r < 1 || math.IsNaN(r) {
		return 1
	}
	if r >= float64(n) {
		return n
	}
	return uint64(r)
}

// index returns v's position in Histogram.counts.
func index(v int64) int {
	if v >= 0 {
		return perSign + magIndex(uint64(v))
	}
	v = max(v, -math.MaxInt64) // -MinInt64 does not fit
	return perSign - 1 - magIndex(uint64(-v))
}

// upperOf returns the largest value counted at position i of
// Histogram.counts.
func upperOf(i int) time.Duration {
	if i >= perSign {
		return time.Duration(magUpper(i - perSign))
	}
	return -time.Duration(magLower(perSign - 1 - i))
}

// magIndex returns the bucket of a magnitude m < 2^63. Below 2·subBuckets
// the bucket is m itself. Above, m = mant·2^shift + rest with mant in
// [subBuckets, 2·subBuckets): bucket shift·subBuckets + mant, which
// continues the exact buckets without a gap (shift 1 starts at
// 2·subBuckets) and ends at perSign-1 for m = 2^63-1.
func magIndex(m uint64) int {
	shift := max(0, bits.Len64(m)-(subBits+1))
	return shift*subBuckets + int(m>>shift)
}

// magLower returns the smallest magnitude in bucket b.
func magLower(b int) uint64 {
	if b < 2*subBuckets {
		return uint64(b)
	}
	shift := b/subBuckets - 1
	return uint64(b-shift*subBuckets) << shift
}

// magUpper returns the largest magnitude in bucket b.
func magUpper(b int) uint64 {
	if b < 2*subBuckets {
		return uint64(b)
	}
	shift := b/subBuckets - 1
	return (uint64(b-shift*subBuckets)+1)<<shift - 1
}

// enc maps int64 to uint64 preserving order, math.MinInt64 to 0.
func enc(v int64) uint64 { return uint64(v) ^ 1<<63 }

// dec inverts enc.
func dec(u uint64) int64 { return int64(u ^ 1<<63) }
