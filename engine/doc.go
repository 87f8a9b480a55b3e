// Package engine is Hourglass's public API and runtime: schedule a message
// for later, and the engine delivers it at (never before) its due time to a
// transport (webhook, NATS, Kafka, ...) or runs a local handler for it,
// at high volume, durable across restarts and crashes when its store is.
//
// # Basics
//
//	e, err := engine.Open(ctx, engine.Options{
//		Dir:    "/var/lib/hourglass", // empty: IN MEMORY, nothing survives a restart
//		Queues: []engine.Queue{{Name: "emails", Handler: sendEmail, Parallelism: 8}},
//	})
//	id, err := e.ScheduleIn(ctx, 24*time.Hour, engine.Message{Dest: "local://emails", Payload: body})
//	err = e.Cancel(ctx, id)
//	...
//	err = e.Shutdown(ctx) // drains deliveries in flight
//
// Schedule returns only once the store holds the message (a durable store:
// synced to disk). The returned ID is the durable cancel handle; ID.String
// is its 13-character text form.
//
// The engine runs on a store (package store): where messages live. Dir
// selects the durable one (package wal, Pebble); with neither Dir nor
// Options.Store the store is in memory (package memstore): the same API
// and semantics, but NOTHING SURVIVES A RESTART OR A CRASH. The engine has
// no other mode: everything below holds for every store.
//
// # Local queues and cascading
//
// A Handler registered for "local://name" sees the message, its attempt
// number, its due and fire times. Returning nil acks it; an error goes to the
// retry policy (RetryIn/RetryAt pick the time, Reject dead-letters at once,
// a panic counts as an error, and so does running past Queue.Timeout).
// Through the Delivery a handler can send or schedule new messages; they
// are committed in the same atomic store batch as the ack, so a crash
// between handling and ack redelivers the message and none of its cascaded
// messages exists twice. NewDelivery builds a Delivery for unit tests of a
// handler.
//
// # The path of a message
//
//	Schedule ─► validate every message (schedule.go) ─► shard: ordered queue
//	   │        hash / key hash / round robin
//	   ▼
//	store.Append (durable: group commit, fsync) ─► the caller hears "yes"
//	   └─► the store feeds each new message to its shard (Owner.Feed)
//	shard goroutine (shard.go; one per shard, owns its wheel and window):
//	   intake: a fed message due inside the window goes into the wheel
//	   window (window.go): Scan [frontier, now+Window+Window/8) from the
//	         store as time advances; later messages cost no RAM
//	   fire (fire.go): wheel.AdvanceLimit(monotonic now) ─► re-check the
//	         wall clock (never early) ─► ready queue per destination ─►
//	         batches to the dispatchers within each destination's limit
//	dispatchers (dispatch.go, deliver.go): transport Send, or the queue's
//	   handler workers, one call per message with its own deadline
//	   ─► outcome per message (outcome.go): delivered, retry at backoff,
//	   dead letter, expired ─► one store.Resolve per batch, with cascades
//	   ─► the batch back to its shard
//
// Due times are wall-clock (unix nanoseconds, as stored); each wheel runs on
// the monotonic clock (the due time is converted when a message enters
// RAM). When the wheel releases a message the wall clock is checked again,
// so a wall-clock step back delays a message rather than delivering it
// early. Every time and duration that enters the engine goes through one
// checked conversion (times.go): a time after store.MaxTime (2262-01-01) is
// refused with ErrInvalid, a past one means now, and durations add with
// saturation.
//
// # Guarantees
//
//   - Never early: a message is handed to a transport or handler only when
//     the clock reads at or after its due time.
//   - At least once after due: a message whose Schedule returned is
//     delivered (or dead-lettered, or expired) eventually; with a durable
//     store, across crashes. Duplicates come only from deliveries in
//     flight at a crash (Stats.DuplicatesEstimate bounds them): within one
//     process life a message is delivered once per attempt. Receivers
//     deduplicate on the ID (transport.HeaderID).
//   - Each outcome is one atomic store batch together with the messages its
//     handler cascaded.
//   - Bad input gets an error wrapping ErrInvalid that says what is allowed,
//     and changes nothing; store failures surface as errors (Err) and are
//     never answered with success.
//   - Memory is bounded by configuration: a shard holds at most the
//     messages due within Window, and at most MaxPending of them; the
//     rest wait in the store (a memory store refuses more than MaxPending
//     per shard with ErrFull). Ready queues hold at most MaxReady messages
//     per shard ready to send; behind a destination that cannot keep up,
//     due messages wait in RAM (4 bytes each beyond the message itself,
//     within MaxPending).
//
// # Caveats
//
//   - A message being delivered (handed to a transport or running in a
//     handler) can no longer be cancelled or rescheduled: ErrInFlight. One
//     due but still waiting for a dispatcher can.
//   - Ordered queues run one handler at a time in due order on one shard; a
//     retried message takes its new due time's place.
//   - A handler that ignores its ctx and overruns Queue.Timeout is
//     abandoned, not stopped: its attempt fails and may be retried while the
//     old call still runs.
//   - Native scheduling: a message for a destination its transport
//     schedules natively (transport.Registry.Native, e.g. a NATS
//     NativeRoute), due more than Options.NativeMinLead ahead and without
//     Expires, is handed to the broker at Schedule time; the engine keeps a
//     pending shadow (Info.Native) so Cancel and Reschedule reach the
//     broker, and resolves it at its due time without sending it
//     (Stats.NativeFired). The broker's timer is less precise (JetStream:
//     up to ~250 ms late) and its durability is the broker's. Cascaded
//     messages are always held by the engine.
//
// # Testing code that uses the engine
//
// Give the engine a FakeClock: nothing fires until the test moves it, and
// after FakeClock.Advance, Engine.WaitIdle returns once everything due has
// been delivered and its outcome committed — no sleeps. Handlers can be
// unit-tested without an engine through NewDelivery. Code that runs the
// engine on the real clock inside a testing/synctest bubble also works:
// RealClock reads time.Now and time timers, which the bubble fakes; every
// engine goroutine is started inside the bubble by Open, and
// synctest.Wait returns once they are all blocked, for example after
// Shutdown. A durable store's disk I/O is not fake, so use the memory
// store there.
package engine
