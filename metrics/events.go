package metrics

import "github.com/hourglassmq/hourglass/engine"

// Combine returns an engine.Events that calls every non-nil callback of
// each of evs, in the order given, so a Collector's listener and the
// application's own both hear every event. A field that no listener sets
// stays nil.
func Combine(evs ...engine.Events) engine.Events {
	return engine.Events{
		Scheduled:     combine(evs, func(e engine.Events) func(engine.ScheduledInfo) { return e.Scheduled }),
		Cancelled:     combine(evs, func(e engine.Events) func(engine.CancelledInfo) { return e.Cancelled }),
		Outcomes:      combine(evs, func(e engine.Events) func(engine.OutcomeInfo) { return e.Outcomes }),
		Retry:         combine(evs, func(e engine.Events) func(engine.RetryInfo) { return e.Retry }),
		DeadLetter:    combine(evs, func(e engine.Events) func(engine.DeadLetterInfo) { return e.DeadLetter }),
		HandlerPanic:  combine(evs, func(e engine.Events) func(engine.PanicInfo) { return e.HandlerPanic }),
		Expired:       combine(evs, func(e engine.Events) func(engine.ExpiredInfo) { return e.Expired }),
		StoreFailed:   combine(evs, func(e engine.Events) func(error) { return e.StoreFailed }),
		WriteStall:    combine(evs, func(e engine.Events) func(engine.WriteStallInfo) { return e.WriteStall }),
		ShardAttached: combine(evs, func(e engine.Events) func(int) { return e.ShardAttached }),
		ShardDetached: combine(evs, func(e engine.Events) func(int) { return e.ShardDetached }),
		RecoveryDone:  combine(evs, func(e engine.Events) func(engine.RecoveryStats) { return e.RecoveryDone }),
	}
}

// combine collects field of each of evs into one callback: nil for none,
// the one itself for one.
func combine[T any](evs []engine.Events, field func(engine.Events) func(T)) func(T) {
	var fs []func(T)
	for _, e := range evs {
		if f := field(e); f != nil {
			fs = append(fs, f)
		}
	}
	switch len(fs) {
	case 0:
		return nil
	case 1:
		return fs[0]
	}
	return func(v T) {
		for _, f := range fs {
			f(v)
		}
	}
}
