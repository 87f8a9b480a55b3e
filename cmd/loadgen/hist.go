package main

import (
	"math/bits"
	"sync/atomic"
	"time"
)

// hist is a lock-free log-linear histogram of durations in microseconds:
// 16 linear sub-buckets per power of two (exact below 32 µs), so a quantile
// overestimates the true value by at most 6.25 %. Handlers on many goroutines record into it at once.
type hist struct {
	counts [64 * subBuckets / 2]atomic.Uint64
	max    atomic.Int64
	n      atomic.Uint64
}

const subBits = 5
const subBuckets = 1 << subBits

func (h *hist) record(d time.Duration) { h.recordN(d, 1) }

func bucketOf(v uint64) int {
	if v < subBuckets {
		return int(v)
	}
	// v = m << e plus a remainder, with the mantissa m in [16, 32): bucket
	// 16e + m continues the linear buckets 0..31 without a gap.
	e := bits.Len64(v) - subBits
	return e*subBuckets/2 + int(v>>e)
}

// upper returns the largest value that falls in bucket i.
func upper(i int) uint64 {
	if i < subBuckets {
		return uint64(i)
	}
	e := i/(subBuckets/2) - 1
	m := uint64(i%(subBuckets/2) + subBuckets/2)
	return (m+1)<<e - 1
}

// quantileMs returns the q-quantile (0..1) in milliseconds, as the upper
// bound of the bucket it falls in (never an underestimate, except for q = 1,
// which is the exact maximum).
func (h *hist) quantileMs(q float64) float64 {
	n := h.n.Load()
	if n == 0 {
		return 0
	}
	if q >= 1 {
		return float64(h.max.Load()) / 1000
	}
	want := uint64(q*float64(n-1)) + 1
	var acc uint64
	for i := range h.counts {
		acc += h.counts[i].Load()
		if acc >= want {
			return float64(min(upper(i), uint64(h.max.Load()))) / 1000
		}
	}
	return float64(h.max.Load()) / 1000
}

// recordN records d for n events at once (a batch that shared one latency).
func (h *hist) recordN(d time.Duration, n int64) {
	if n <= 0 {
		return
	}
	us := max(int64(d/time.Microsecond), 0)
	h.counts[bucketOf(uint64(us))].Add(uint64(n))
	h.n.Add(uint64(n))
	for {
		m := h.max.Load()
		if us <= m || h.max.CompareAndSwap(m, us) {
			return
		}
	}
}
