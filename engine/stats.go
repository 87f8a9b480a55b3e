package engine

import (
	"math/bits"
	"sync/atomic"
	"time"

	"github.com/hourglassmq/hourglass/store"
)

type counters struct {
	scheduled, fired, delivered, retried, dead, cancelled, expired atomic.Uint64
	earlyCaught, loaded                                            atomic.Uint64
	nativeScheduled, nativeFired                                   atomic.Uint64
	lateness                                                       histogram
}

// histogram is a concurrent log-linear histogram of durations: 8 linear
// sub-buckets per power of two of nanoseconds, so quantiles are within 1/8.
type histogram struct {
	counts [64 * 8]atomic.Uint64
	max    atomic.Int64
}

func bucketOf(ns uint64) int {
	if ns < 8 {
		return int(ns)
	}
	e := bits.Len64(ns) - 1
	return e*8 + int((ns>>(e-3))&7)
}

func upperBound(b int) uint64 {
	if b < 8 {
		return uint64(b)
	}
	e, sub := b/8, uint64(b%8)
	return (8+sub+1)<<(e-3) - 1
}

func (h *histogram) record(d time.Duration) {
	d = max(d, 0)
	h.counts[bucketOf(uint64(d))].Add(1)
	for {
		m := h.max.Load()
		if int64(d) <= m || h.max.CompareAndSwap(m, int64(d)) {
			return
		}
	}
}

// Latency summarises a histogram. Quantiles are bucket upper bounds.
type Latency struct {
	Count              uint64
	P50, P90, P99, Max time.Duration
}

func (h *histogram) summary() Latency {
	var c [64 * 8]uint64
	var n uint64
	for i := range h.counts {
		c[i] = h.counts[i].Load()
		n += c[i]
	}
	q := func(f float64) time.Duration {
		if n == 0 {
			return 0
		}
		want := uint64(f*float64(n-1)) + 1
		var acc uint64
		for i, v := range c {
			acc += v
			if acc >= want {
				return time.Duration(upperBound(i))
			}
		}
		return 0
	}
	return Latency{Count: n, P50: q(0.5), P90: q(0.9), P99: q(0.99), Max: time.Duration(h.max.Load())}
}

// RecoveryStats reports what Open found and how fast it got going.
type RecoveryStats struct {
	// Store is how long the store took to open and recover its index.
	Store time.Duration
	// Pending is the number of pending messages the store held at Open.
	Pending int64
	// FirstFire is the time from Open to the first message taken off a
	// wheel (0 until then).
	FirstFire time.Duration
	// FullLoad is the time from Open until every shard had loaded its
	// window once (0 until then).
	FullLoad time.Duration
}

// Stats is a snapshot of the engine's counters since Open.
type Stats struct {
	// Pending is the number of messages held in RAM per shard (the loaded
	// window; 0 for a shard not attached here).
	Pending      []int64
	PendingTotal int64
	// StorePending is the store's pending count, window or not.
	StorePending int64
	// InFlight counts messages taken off a wheel whose outcome is not yet
	// applied (ready queues plus deliveries).
	InFlight                                                               int64
	Scheduled, Fired, Delivered, Retried, DeadLettered, Cancelled, Expired uint64
	// EarlyCaught counts messages the wheel released before their
	// wall-clock due time (the wall clock stepped back) that the re-check
	// held back. Messages delivered early: always 0 by construction.
	EarlyCaught uint64
	// Loaded counts messages paged in from the store.
	Loaded uint64
	// LoaderLag is, per attached shard, how far its window's loaded range
	// falls short of now+Window (0 when it reaches it): while it is above
	// zero, messages due in the gap may be in the store only.
	LoaderLag []time.Duration
	// NativeScheduled counts messages handed to a broker's native scheduler
	// at Schedule time (Options.NativeMinLead); NativeFired counts those
	// the engine resolved as fired by the broker (their due time came, or a
	// Cancel found the broker had fired them). Neither counts in Delivered.
	NativeScheduled, NativeFired uint64
	// DuplicatesEstimate is an upper bound of deliveries that may repeat
	// one from before the last crash: messages that were overdue at Open
	// (they may have been in flight), capped by the in-flight capacity.
	DuplicatesEstimate int64
	// Lateness is hand-off time minus due time: when the handler was
	// called, or the batch given to its transport.
	Lateness Latency
	Recovery RecoveryStats
	// Store holds the store's own figures.
	Store store.Stats
}

// Stats returns a snapshot of the counters.
func (e *Engine) Stats() Stats {
	st := Stats{
		Pending:         make([]int64, len(e.shards)),
		InFlight:        max(0, e.busy.Load()),
		Scheduled:       e.cnt.scheduled.Load(),
		Fired:           e.cnt.fired.Load(),
		Delivered:       e.cnt.delivered.Load(),
		Retried:         e.cnt.retried.Load(),
		DeadLettered:    e.cnt.dead.Load(),
		Cancelled:       e.cnt.cancelled.Load(),
		Expired:         e.cnt.expired.Load(),
		EarlyCaught:     e.cnt.earlyCaught.Load(),
		Loaded:          e.cnt.loaded.Load(),
		NativeScheduled: e.cnt.nativeScheduled.Load(),
		NativeFired:     e.cnt.nativeFired.Load(),
		Lateness:        e.cnt.lateness.summary(),
	}
	st.LoaderLag = make([]time.Duration, len(e.shards))
	horizon := store.SatAdd(e.clock.Now().UnixNano(), int64(e.opts.Window))
	for i := range e.shards {
		if s := e.shards[i].Load(); s != nil {
			st.Pending[i] = s.nlive.Load()
			st.PendingTotal += st.Pending[i]
			// Before its first page the window starts at Open.
			if fd := max(s.frontDue.Load(), e.openWall); fd < horizon {
				st.LoaderLag[i] = time.Duration(horizon - fd)
			}
		}
	}
	e.recMu.Lock()
	st.Recovery = e.recovery
	st.DuplicatesEstimate = e.dupEst
	e.recMu.Unlock()
	st.Store = e.st.Stats()
	st.StorePending = st.Store.PendingTotal
	return st
}
