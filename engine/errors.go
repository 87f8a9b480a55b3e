package engine

import (
	"errors"
	"fmt"
	"strings"
	"time"
)

// Sentinel errors. Returned errors wrap them with context; test with errors.Is.
var (
	// ErrClosed is returned by every call made after Shutdown or Close began.
	ErrClosed = errors.New("engine: closed")
	// ErrNotFound means the ID names no pending message (it was delivered,
	// cancelled, expired, dead-lettered, or never existed).
	ErrNotFound = errors.New("engine: not found")
	// ErrInFlight means the message is being delivered right now, so it can
	// no longer be cancelled or rescheduled; its outcome decides its fate.
	ErrInFlight = errors.New("engine: message in flight")
	// ErrInvalid marks a rejected argument: a bad destination, header,
	// size, time or option. Nothing was changed.
	ErrInvalid = errors.New("engine: invalid argument")
	// ErrFull means a configured bound (Options.MaxPending of a memory
	// store) is reached. Nothing of the refused store call was scheduled:
	// a ScheduleBatch of more than store.MaxCallMessages messages returns,
	// with the error, the IDs of the groups scheduled before it.
	ErrFull = errors.New("engine: full")
	// ErrUnknownQueue means a local:// destination names no registered queue.
	ErrUnknownQueue = errors.New("engine: unknown local queue")
	// ErrStore wraps a failure of the store; see Engine.Err.
	ErrStore = errors.New("engine: store failed")
	// ErrDuplicate means a message's idempotency key (Message.Key) already
	// names a pending or dead-lettered message: it was not scheduled
	// again, and the existing message's ID was returned instead. The error
	// is a *DuplicateError.
	ErrDuplicate = errors.New("engine: idempotency key already scheduled")
	// ErrDeliveryDone is returned by a Delivery's methods once its handler
	// has returned (or timed out): what it would cascade can no longer be
	// committed with the delivery.
	ErrDeliveryDone = errors.New("engine: delivery already finished")
)

func invalidf(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrInvalid}, args...)...)
}

// DuplicateError reports the messages of a Schedule or ScheduleBatch call
// whose idempotency key was already known. The call returned the existing
// messages' IDs in their places, and scheduled every other message.
type DuplicateError struct {
	// Index lists the positions, in the call's messages, of the duplicates.
	Index []int
	// IDs are the existing messages' IDs, one per Index.
	IDs []ID
}

// Error names the duplicates (at most eight, then a count).
func (e *DuplicateError) Error() string {
	var b strings.Builder
	b.WriteString(ErrDuplicate.Error())
	b.WriteString(": ")
	for i := range e.Index {
		if i == 8 {
			fmt.Fprintf(&b, " and %d more", len(e.Index)-i)
			break
		}
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "message %d is %s", e.Index[i], e.IDs[i])
	}
	return b.String()
}

// Is makes errors.Is(err, ErrDuplicate) true.
func (e *DuplicateError) Is(target error) bool { return target == ErrDuplicate }

// RetryError is returned by a handler to ask for a retry at a particular
// time instead of the policy's backoff. Build it with RetryIn or RetryAt. It
// still counts as an attempt; MaxAttempts still applies.
type RetryError struct {
	// Delay, when At is zero, is how long after the failure to retry.
	Delay time.Duration
	// At, when not zero, is the time to retry (a time in the past means
	// now).
	At time.Time
	// Err is the cause, for logs and dead-letter reasons. May be nil.
	Err error
}

func (e *RetryError) Error() string {
	if !e.At.IsZero() {
		return fmt.Sprintf("engine: retry at %s: %v", e.At.UTC().Format(time.RFC3339Nano), e.Err)
	}
	return fmt.Sprintf("engine: retry in %v: %v", e.Delay, e.Err)
}

// Unwrap returns the cause.
func (e *RetryError) Unwrap() error { return e.Err }

// RetryIn returns an error asking the engine to retry the message d after
// now ("retry later in 5 s"). cause may be nil. A time past store.MaxTime
// cannot be held: the message is dead-lettered with the reason.
func RetryIn(d time.Duration, cause error) error { return &RetryError{Delay: d, Err: cause} }

// RetryAt returns an error asking the engine to retry the message at t.
func RetryAt(t time.Time, cause error) error { return &RetryError{At: t, Err: cause} }

// PermanentError is returned by a handler (via Reject) to send the message
// straight to the dead letters without further attempts.
type PermanentError struct{ Err error }

func (e *PermanentError) Error() string { return fmt.Sprintf("engine: rejected: %v", e.Err) }

// Unwrap returns the cause.
func (e *PermanentError) Unwrap() error { return e.Err }

// Reject wraps err so the handler's message is dead-lettered at once.
func Reject(err error) error { return &PermanentError{Err: err} }
