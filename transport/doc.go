// Package transport defines the contract between the Hourglass engine and the
// systems that due messages are delivered to, and a registry that maps
// destination URL schemes to the senders that serve them.
//
// # Why a separate contract
//
// The engine must never import a broker SDK: a user who only needs webhooks
// should not link NATS and Kafka clients, and the engine's tests should not
// depend on any of them. So this package holds only the types both sides agree
// on (Envelope, Outcome, Sender, NativeScheduler, Registry) and each transport
// lives in its own subpackage (transport/webhook, transport/nats,
// transport/kafka). A test in this package fails if the contract ever starts to
// depend on one of them.
//
// # The flow
//
//	engine dispatcher                          Sender
//	─────────────────                          ──────
//	batch []Envelope  (same scheme, due ≤ now)
//	out   []Outcome   (reused, len ≥ batch) ──► Send(ctx, batch, out)
//	                                            one Outcome per envelope:
//	                                              Delivered → ack
//	                                              Retry     → re-key at now+backoff
//	                                                          (or now+RetryAfter)
//	                                              Reject    → dead letter
//
// Send never returns an error of its own: everything that can go wrong goes
// wrong for particular messages, so it is reported per message. The outcome
// slice is owned by the caller, so a dispatcher that reuses its slices sends
// batches without allocating on the contract's side. The zero Outcome is a
// Retry, so an outcome a sender forgot to fill can never lose a message.
//
// # Destinations
//
// A destination is a URL-like string "scheme://target". The registry
// validates it when a message is scheduled (Registry.Validate), so a message
// aimed at an unknown scheme, a host outside the webhook allow-list or an
// invalid subject is refused at Schedule time with an error that says what
// is allowed, instead of failing hours later at delivery.
//
//	http://host/path, https://host/path   webhook POST (transport/webhook)
//	nats://subject                        NATS core publish, confirmed by a flush
//	jetstream://subject                   JetStream publish, acknowledged
//	kafka://topic                         Kafka produce, acks from all ISRs
//
// # Headers
//
// Every transport carries the standard headers (HeaderID, HeaderAttempt,
// HeaderDue, HeaderFired, HeaderKey) and the caller's headers to the far side
// in its native header form, so receivers can deduplicate on Hourglass-Id (or
// Hourglass-Key) under at-least-once delivery.
//
// # Native scheduling
//
// A sender that can hold a message until its due time itself (NATS JetStream
// message schedules) implements NativeScheduler. Native mode is an explicit
// per-destination choice (NativeScheduler.Native) because it trades timing
// precision for handing durability to the broker; see that interface.
package transport
