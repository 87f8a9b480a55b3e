// Package engine is Hourglass's public API and runtime: schedule a message
// for later, and the engine delivers it at (never before) its due time to a
// transport (webhook, NATS, Kafka, ...) or runs a local handler for it —
// durable across restarts and crashes, at high volume.
//
// # Basics
//
//	e, err := engine.Open(ctx, engine.Options{
//		Dir:    "/var/lib/hourglass", // empty: IN-MEMORY MODE, nothing survives a restart
//		Queues: []engine.Queue{{Name: "emails", Handler: sendEmail, Parallelism: 8}},
//	})
//	id, err := e.ScheduleIn(ctx, 24*time.Hour, engine.Message{Dest: "local://emails", Payload: body})
//	err = e.Cancel(ctx, id)
//	...
//	err = e.Shutdown(ctx) // drains deliveries in flight
//
// Schedule returns only once the message is durable (synced to the store;
// in memory mode, once it is in its shard's wheel). The returned ID is the
// durable cancel handle; ID.String is its 13-character text form.
//
// IN-MEMORY MODE (Options.Dir empty) has the same API and semantics, but
// NOTHING SURVIVES A RESTART OR A CRASH: pending messages, retries and dead
// letters live in RAM only.
//
// # Local queues and cascading
//
// A Handler registered for "local://name" sees the message, its attempt
// number, its due and fire times. Returning nil acks it; an error goes to the
// retry policy (RetryIn/RetryAt pick the time, Reject dead-letters at once,
// a panic counts as an error). Through the Delivery a handler can send or
// schedule new messages; they are committed in the same atomic store batch
// as the ack, so a crash between handling and ack redelivers the message and
// none of its cascaded messages exists twice.
//
// # Runtime
//
//	Schedule ─► validate ─► shard (key hash / ordered queue / round robin)
//	   durable: wal.Append (group commit, fsync) ─► ack caller ─► shard cmd
//	   memory:  shard cmd ─► insert ─► ack caller
//	shard goroutine (one per shard, owns its wheel and its RAM messages):
//	   intake cmds (bounded per tick) ─► wheel.Insert if inside the window
//	   tick: wheel.AdvanceLimit(monotonic now) ─► re-check wall clock (never
//	         early) ─► ready queue per destination (bounded, push back)
//	   flush: batches per destination ─► dispatcher pool, within each
//	         destination's in-flight limit
//	   loader (durable): Scan [frontier, now+Window) from the store
//	dispatchers (fixed pool): transport Send / handlers ─► outcome per message
//	   ─► one wal.Resolve per batch: Done / Update (retry) / Dead / New
//	   (cascades) ─► result back to the shard
//
// Due times are wall-clock (unix nanoseconds, as stored); each wheel runs on
// the monotonic clock (the due time is converted when a message enters RAM).
// When the wheel releases a message the wall clock is checked again, so a
// wall-clock step back delays a message rather than delivering it early.
//
// # Guarantees
//
//   - Never early: a message is handed to a transport or handler only when
//     the clock reads at or after its due time.
//   - At least once after due: a message whose Schedule returned is delivered
//     (or dead-lettered, or expired) eventually, across crashes. Duplicates
//     come only from deliveries in flight at a crash (Stats.DuplicatesEstimate
//     bounds them); receivers deduplicate on the ID (transport.HeaderID).
//   - Each outcome is one atomic store batch together with the messages its
//     handler cascaded.
//   - Memory is bounded by configuration: a durable engine holds only
//     [now, now+Window) in RAM (MaxPending per shard at most); far-future
//     messages cost no RAM until their window arrives.
//
// # Caveats
//
//   - A message taken off its wheel (due, waiting for a dispatcher or being
//     delivered) can no longer be cancelled or rescheduled: ErrInFlight.
//   - Ordered queues run one batch at a time in due order on one shard; a
//     retried message takes its new due time's place.
//   - In memory mode, an idempotency key is remembered while its message is
//     pending or dead-lettered.
//   - Native scheduling: a message for a destination its transport
//     schedules natively (transport.Registry.Native, e.g. a NATS
//     NativeRoute), due more than Options.NativeMinLead ahead and without
//     Expires, is handed to the broker at Schedule time; the engine keeps a
//     pending shadow (Info.Native) so Cancel and Reschedule reach the
//     broker, and resolves it at its due time without sending it
//     (Stats.NativeFired). The broker's timer is less precise (JetStream:
//     up to ~250 ms late) and its durability is the broker's. Cascaded
//     messages are always held by the engine.
package engine
