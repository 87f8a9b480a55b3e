package wal

import (
	"time"

	"github.com/hourglassmq/hourglass/internal/hist"
	"github.com/hourglassmq/hourglass/store"
)

// histogram holds the store's sync latencies in internal/hist, the one
// histogram every Hourglass table is measured with, so Stats.Sync compares
// with the engine's and the load generator's figures. It is safe for
// concurrent use on its own; Store still records and reads it under
// statsMu, with the counters it is reported beside.
type histogram struct {
	h hist.Histogram
}

func (h *histogram) record(d time.Duration) { h.h.Record(max(d, 0)) }

// summary reports nearest-rank quantiles, never below the exact value and
// at most 1/64 of it above (hist.RelativeError); Max is exact.
func (h *histogram) summary() store.Latency {
	s := h.h.Summary()
	return store.Latency{Count: s.Count, P50: s.P50, P99: s.P99, Max: s.Max}
}
