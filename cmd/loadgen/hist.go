package main

import "github.com/hourglassmq/hourglass/internal/hist"

// The report's latencies come from internal/hist, the histogram the engine
// and the benchmarks use too, so a loadgen p99 compares with theirs: a
// quantile is never below the exact one and at most 1/64 of it above; the
// maximum is exact.

// quantilesMs reports h's p50, p99 and p99.9 in milliseconds.
func quantilesMs(h *hist.Histogram) quantiles {
	s := h.Summary()
	return quantiles{P50: ms(s.P50), P99: ms(s.P99), P999: ms(s.P999)}
}

// latenessMs reports h's p50, p99, p99.9 and maximum in milliseconds.
func latenessMs(h *hist.Histogram) lateness {
	s := h.Summary()
	return lateness{P50: ms(s.P50), P99: ms(s.P99), P999: ms(s.P999), Max: ms(s.Max)}
}
