package engine

import (
	"sync/atomic"
	"time"

	"github.com/hourglassmq/hourglass/internal/hist"
	"github.com/hourglassmq/hourglass/store"
)

type counters struct {
	scheduled, fired, delivered, retried, dead, cancelled, expired atomic.Uint64
	earlyCaught, loaded, evicted                                   atomic.Uint64
	nativeScheduled, nativeFired                                   atomic.Uint64
	lateness                                                       histogram
}

// histogram holds the engine's lateness figures in internal/hist, the one
// histogram every Hourglass table is measured with, so Stats.Lateness
// compares with the load generator's and the benchmarks' figures. Safe for
// concurrent use; record does not allocate.
type histogram struct {
	h hist.Histogram
}

// record counts one lateness. A negative one (the wall clock stepped back
// between pop and hand-off) counts as 0: EarlyCaught is where early shows.
func (h *histogram) record(d time.Duration) { h.h.Record(max(d, 0)) }

// Latency summarises a histogram. Quantiles are nearest-rank and never
// below the exact value, at most 1/64 of it above (hist.RelativeError);
// Max is exact.
type Latency struct {
	Count              uint64
	P50, P90, P99, Max time.Duration
}

func (h *histogram) summary() Latency {
	s := h.h.Summary()
	return Latency{Count: s.Count, P50: s.P50, P90: s.P90, P99: s.P99, Max: s.Max}
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
	// Evicted counts messages a full shard (MaxPending) dropped from RAM
	// to make room for ones due sooner; they stay in the store and are
	// paged in again.
	Evicted uint64
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
	// PushBacks counts Schedule and ScheduleBatch calls that waited for
	// the engine to catch up (Options.PushBackLag), and PushBackWait is
	// their total wait.
	PushBacks    uint64
	PushBackWait time.Duration
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
		Evicted:         e.cnt.evicted.Load(),
		NativeScheduled: e.cnt.nativeScheduled.Load(),
		NativeFired:     e.cnt.nativeFired.Load(),
		Lateness:        e.cnt.lateness.summary(),
		PushBacks:       e.pb.waits.Load(),
		PushBackWait:    time.Duration(e.pb.waitNs.Load()),
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
