// Package benchpair runs a transport's Sender and the bare client it wraps
// against each other in one benchmark, batch by batch, so that the noise of
// a shared machine hits both alike.
//
// Running them as two benchmarks (even sub-benchmarks of one function)
// measures them seconds apart; on a 2-core machine shared with other jobs
// throughput moved by 2× between such runs. Alternating single batches,
// and alternating which of the two goes first, leaves drift and ordering
// effects in both figures equally, so their ratio is meaningful.
package benchpair

import (
	"testing"
	"time"
)

// Run times batch-sized rounds of sender and bare alternately, the order
// flipping every iteration, and reports sender-msgs/s, bare-msgs/s and
// ratio (sender / bare; the target is ≥ 0.8).
func Run(b *testing.B, batch int, sender, bare func()) {
	b.Helper()
	// One untimed round each: connections, metadata, producer IDs.
	sender()
	bare()
	var ts, tb time.Duration
	n := 0
	for b.Loop() {
		if n%2 == 0 {
			ts += timed(sender)
			tb += timed(bare)
		} else {
			tb += timed(bare)
			ts += timed(sender)
		}
		n++
	}
	msgs := float64(n * batch)
	sr, br := msgs/ts.Seconds(), msgs/tb.Seconds()
	b.ReportMetric(sr, "sender-msgs/s")
	b.ReportMetric(br, "bare-msgs/s")
	b.ReportMetric(sr/br, "ratio")
}

func timed(f func()) time.Duration {
	start := time.Now()
	f()
	return time.Since(start)
}
