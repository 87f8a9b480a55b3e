package wal

import (
	"math/bits"
	"time"

	"github.com/hourglassmq/hourglass/store"
)

// histogram is a log-linear latency histogram: for each power of two of
// nanoseconds, 8 linear sub-buckets, so quantiles are within 1/8. Not safe for
// concurrent use; Store guards it with statsMu.
type histogram struct {
	counts [64 * 8]uint64
	n      uint64
	max    time.Duration
}

func bucketOf(ns uint64) int {
	if ns < 8 {
		return int(ns)
	}
	e := bits.Len64(ns) - 1 // ns in [2^e, 2^(e+1))
	sub := (ns >> (e - 3)) & 7
	return e*8 + int(sub)
}

// upperBound returns the largest value that falls in bucket b.
func upperBound(b int) uint64 {
	if b < 8 {
		return uint64(b)
	}
	e := b / 8
	sub := uint64(b % 8)
	return (8+sub+1)<<(e-3) - 1
}

func (h *histogram) record(d time.Duration) {
	if d < 0 {
		d = 0
	}
	h.counts[bucketOf(uint64(d))]++
	h.n++
	if d > h.max {
		h.max = d
	}
}

func (h *histogram) quantile(q float64) time.Duration {
	if h.n == 0 {
		return 0
	}
	rank := uint64(q*float64(h.n-1)) + 1
	var seen uint64
	for b, c := range h.counts {
		seen += c
		if seen >= rank {
			v := time.Duration(upperBound(b))
			if v > h.max {
				v = h.max
			}
			return v
		}
	}
	return h.max
}

func (h *histogram) summary() store.Latency {
	return store.Latency{Count: h.n, P50: h.quantile(0.50), P99: h.quantile(0.99), Max: h.max}
}
