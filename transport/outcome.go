package transport

import (
	"context"
	"fmt"
	"time"
)

// Status is what happened to one envelope.
type Status uint8

const (
	// StatusRetry: not delivered this time; the engine re-keys the message
	// at now plus its backoff (or plus Outcome.RetryAfter when the far side
	// asked for a delay) and counts the attempt. It is the zero value so an
	// outcome a sender failed to fill is retried, never lost.
	StatusRetry Status = iota
	// StatusDelivered: the far side accepted the message; the engine acks it.
	StatusDelivered
	// StatusReject: the far side refused the message permanently (a 4xx, a
	// record too large, ...); the engine moves it to the dead letters
	// without further attempts.
	StatusReject
)

// String returns "retry", "delivered" or "reject".
func (s Status) String() string {
	switch s {
	case StatusRetry:
		return "retry"
	case StatusDelivered:
		return "delivered"
	case StatusReject:
		return "reject"
	}
	return fmt.Sprintf("Status(%d)", uint8(s))
}

// Outcome is the result for one envelope. Senders build them with
// Delivered, Retry and Reject.
type Outcome struct {
	// Status is what happened.
	Status Status
	// RetryAfter, for StatusRetry only, is the delay the far side asked for
	// (HTTP Retry-After). Zero means "use the engine's backoff". The engine
	// should use the larger of the two and cap it by its own policy.
	RetryAfter time.Duration
	// Err explains a Retry or Reject; it is nil for Delivered.
	Err error
}

// Delivered returns the outcome of an accepted message.
func Delivered() Outcome { return Outcome{Status: StatusDelivered} }

// Retry returns the outcome of a transient failure; after is the delay the
// far side asked for, or zero.
func Retry(err error, after time.Duration) Outcome {
	if after < 0 {
		after = 0
	}
	return Outcome{Status: StatusRetry, RetryAfter: after, Err: err}
}

// Reject returns the outcome of a permanent failure.
func Reject(err error) Outcome { return Outcome{Status: StatusReject, Err: err} }

// String formats the outcome for logs.
func (o Outcome) String() string {
	switch {
	case o.Status == StatusDelivered:
		return "delivered"
	case o.Status == StatusRetry && o.RetryAfter > 0:
		return fmt.Sprintf("retry after %v: %v", o.RetryAfter, o.Err)
	default:
		return fmt.Sprintf("%v: %v", o.Status, o.Err)
	}
}

// Sender delivers batches of due envelopes to one kind of destination.
//
// Implementations must be safe for concurrent use by several dispatcher
// goroutines.
type Sender interface {
	// Send delivers batch and writes one outcome per envelope into
	// out[:len(batch)]; len(out) must be at least len(batch). It returns
	// when every envelope has an outcome. If ctx ends first, the envelopes
	// not yet confirmed get a Retry carrying ctx's error: a message whose
	// fate is unknown is retried (at-least-once), never dropped. All
	// envelopes in a batch have a scheme this sender was registered for.
	Send(ctx context.Context, batch []Envelope, out []Outcome)

	// Validate reports whether dest is a destination this sender will
	// deliver to (a subject it can publish on, a host on the allow-list).
	// The error wraps ErrBadDestination and says what is allowed.
	Validate(dest Destination) error

	// Close releases the sender's connections. Sends after Close return
	// Retry outcomes wrapping ErrClosed.
	Close() error
}

// MessageValidator is implemented by a sender that cannot carry every
// message the engine accepts (a header name its protocol reserves, a key it
// cannot encode). The engine calls it at Schedule time, so such a message
// is refused then with ErrBadHeader, not dead-lettered when due.
type MessageValidator interface {
	ValidateMessage(dest Destination, key string, headers []Header) error
}

// NativeScheduler is implemented by a sender that can hold a message until
// its due time itself (NATS JetStream message schedules). The engine hands
// such messages over at Schedule time instead of keeping them in its wheel
// and store; from then on durability and firing belong to the broker.
//
// Native mode is an explicit per-destination choice, because it trades
// precision for durability: the broker's timer may have a floor (JetStream's
// is 250 ms) and fires into a stream, not to core subscribers. Native says
// whether a destination is configured for it.
//
// The engine's flow:
//
//	Schedule:   Native(dest)? → ScheduleNative → Delivered means the broker
//	            now fires the message (the engine keeps a shadow of it, payload
//	            included, so that Get, List, Cancel and Reschedule work, and
//	            drops the shadow at its due time); Retry/Reject as for Send.
//	Cancel:     CancelNative(id, dest); found=false means it already fired
//	            (or never existed).
//	Reschedule: ScheduleNative again with the same ID and the new Due; a
//	            sender replaces the pending schedule atomically. (Cancel
//	            followed by ScheduleNative also works, with a gap between.)
type NativeScheduler interface {
	Sender

	// Native reports whether dest is configured for native scheduling.
	Native(dest Destination) bool

	// ScheduleNative hands each envelope to the broker to be released at
	// its Due time, writing one outcome per envelope into out like Send.
	// Envelopes whose destination is not native get a Reject wrapping
	// ErrNotNative.
	ScheduleNative(ctx context.Context, batch []Envelope, out []Outcome)

	// CancelNative removes the pending schedule of message id at dest.
	// found reports whether a pending schedule was removed; false means it
	// had already fired or never existed. A cancel racing the broker's
	// timer within its firing window can lose: the message may still fire.
	CancelNative(ctx context.Context, id string, dest Destination) (found bool, err error)
}
