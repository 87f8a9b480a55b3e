// Package nats delivers Hourglass messages over NATS, and can hand scheduled
// messages to JetStream to hold until they are due (native scheduling).
//
// # Destinations
//
//	nats://subject       core publish; Delivered once a flush round trip
//	                     confirms the server has the message. Core NATS has
//	                     no persistence: with no subscriber it is dropped.
//	jetstream://subject  JetStream publish; Delivered once the stream acks.
//	                     Nats-Msg-Id is the idempotency key (or the ID), so a
//	                     retried publish inside the stream's duplicate window
//	                     is stored once.
//
// Subjects are publish subjects: dot-separated non-empty tokens without
// wildcards or whitespace. Publishes of a batch are pipelined: core messages
// are written and then confirmed by one flush; JetStream messages are
// published asynchronously and their acks awaited together.
//
// # Headers
//
// NATS headers carry Hourglass-Id, Hourglass-Attempt, Hourglass-Due,
// Hourglass-Fired, Hourglass-Key and the caller's headers, case preserved
// and repeats kept. Caller headers starting with "Nats-" are refused
// (Reject, ErrReservedHeader): the server acts on them (Nats-Rollup can
// purge a stream, Nats-Schedule creates a schedule, Nats-Msg-Id changes
// deduplication).
//
// # Native scheduling
//
// For destinations matching a configured NativeRoute, the sender implements
// transport.NativeScheduler with JetStream message schedules (nats-server
// ≥ 2.12): ScheduleNative publishes the message to its own schedule subject
// "<Prefix>.<token(ID)>" in the route's stream with
//
//	Nats-Schedule:        @at <Due, RFC 3339 with nanoseconds, UTC>
//	Nats-Schedule-Target: <destination subject>
//
// and at the due time the server publishes a copy to the target subject in
// the same stream (schedule headers and Nats-Msg-Id stripped, Hourglass-*
// headers kept) and purges the schedule. Why one subject per message: the
// server keeps one pending schedule per subject, so a shared subject would
// make each schedule replace the previous one. The same property makes
// rescheduling atomic: ScheduleNative again with the same ID replaces the
// pending schedule. CancelNative purges the schedule subject and reports
// whether a pending schedule was removed.
//
// Trade-offs, measured (see TestNativeLateness):
//   - Precision: the server's schedule timer never re-arms sooner than
//     250 ms, so a message can fire up to ~250 ms late (more under load),
//     never early. The engine's own wheel fires within milliseconds.
//   - Visibility: fired messages are stored in the stream; JetStream
//     consumers see them, core subscribers on the subject do not.
//   - Placement: the target subject and the schedule prefix must both be in
//     the route's stream, and the stream must set AllowMsgSchedules. New
//     checks the stream when the route is configured.
//   - Firing moves to the broker: once ScheduleNative returns Delivered, the
//     broker fires the message. The engine keeps a shadow of it (payload
//     included) so that Get, List, Cancel and Reschedule reach it, and drops
//     the shadow at its due time without sending it.
//
// So native mode is an explicit per-destination choice (Options.Native),
// never a default.
package nats
