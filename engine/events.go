package engine

import (
	"time"
)

// Events receives what the engine does, in the manner of
// pebble.EventListener: set the fields you care about; nil ones are
// skipped. Callbacks run synchronously on the engine's goroutines (a
// shard's, a dispatcher's or the store's), so they must return quickly and
// must not call back into the engine; hand work to a goroutine of your own.
// The Prometheus collector hangs here.
type Events struct {
	// Scheduled reports each Schedule or ScheduleBatch call that stored
	// messages: how many per destination (idempotent repeats excluded).
	Scheduled func(ScheduledInfo)
	// Cancelled reports a message a Cancel removed.
	Cancelled func(CancelledInfo)
	// Outcomes reports each delivered batch: its destination and how many
	// of its messages were delivered, retried, dead-lettered and expired,
	// with the lateness of each message handed off.
	Outcomes func(OutcomeInfo)
	// Retry reports a failed attempt that will be retried.
	Retry func(RetryInfo)
	// DeadLetter reports a message moved to the dead letters, with the
	// reason.
	DeadLetter func(DeadLetterInfo)
	// HandlerPanic reports a local handler that panicked (the attempt
	// counts as failed), with the stack.
	HandlerPanic func(PanicInfo)
	// Expired reports a message dropped past its deliver-by time (when due,
	// or when its retry would come after it).
	Expired func(ExpiredInfo)
	// StoreFailed reports the store becoming failed; the engine refuses
	// further work until it is reopened (Engine.Err).
	StoreFailed func(err error)
	// WriteStall reports the store's writes stalling (Begin) and resuming.
	WriteStall func(WriteStallInfo)
	// ShardAttached and ShardDetached report a shard starting and stopping
	// on this engine (all of them at Open and Shutdown in a single process).
	ShardAttached, ShardDetached func(shard int)
	// RecoveryDone reports that every attached shard has loaded its window
	// once after Open.
	RecoveryDone func(RecoveryStats)
}

// ScheduledInfo counts the messages one call stored, by destination.
type ScheduledInfo struct {
	ByDest map[string]int
}

// CancelledInfo describes a cancelled message.
type CancelledInfo struct {
	ID   ID
	Dest string
}

// OutcomeInfo describes one batch's outcomes.
type OutcomeInfo struct {
	Dest                              string
	Delivered, Retried, Dead, Expired int
	// Lateness has one entry per message handed to its handler or
	// transport (expired ones, native shadows and calls abandoned at
	// shutdown have none). The slice is valid only during the callback.
	Lateness []time.Duration
	Shard    int
	Native   int // shadows resolved at their due time (native scheduling)
	Gone     int // cancelled while in flight
	Fired    time.Time
}

// RetryInfo describes a failed attempt that will be retried.
type RetryInfo struct {
	ID      ID
	Dest    string
	Attempt int       // the attempt that failed, 1-based
	Next    time.Time // when the next attempt is due
	Err     error
}

// DeadLetterInfo describes a message moved to the dead letters.
type DeadLetterInfo struct {
	ID       ID
	Dest     string
	Attempts int
	Reason   string
}

// ExpiredInfo describes an expired message.
type ExpiredInfo struct {
	ID      ID
	Dest    string
	Expires time.Time
}

// PanicInfo describes a handler panic.
type PanicInfo struct {
	ID    ID
	Dest  string
	Value any
	Stack []byte
}

// WriteStallInfo describes the store's writes stalling or resuming.
type WriteStallInfo struct {
	Begin  bool
	Reason string
}
