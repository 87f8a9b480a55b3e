package store

import (
	"errors"
	"fmt"
	"strings"
)

// Sentinel errors of the contract. Implementations wrap them with context;
// test with errors.Is.
var (
	// ErrClosed is returned by every call made after Close.
	ErrClosed = errors.New("store: closed")
	// ErrNotFound means the ID or key is not pending (or, for dead-letter
	// calls, not a dead letter).
	ErrNotFound = errors.New("store: not found")
	// ErrFailed is the sticky failure: every later call is refused until
	// the store is opened again.
	ErrFailed = errors.New("store: failed")
	// ErrInvalid marks a rejected argument; nothing was written.
	ErrInvalid = errors.New("store: invalid argument")
	// ErrFull means a bounded store cannot take the messages; nothing was
	// written.
	ErrFull = errors.New("store: full")
	// ErrInFlight means the message is being delivered by its owner, so a
	// change to it (from Owner.Claim, or from a store that asked the
	// owner) is refused; its delivery's outcome decides its fate.
	ErrInFlight = errors.New("store: message in flight")
)

// Invalidf returns an error wrapping ErrInvalid.
func Invalidf(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrInvalid}, args...)...)
}

// NotPendingError lists the IDs of a call that the store does not hold in
// the required state. The call wrote nothing. It matches ErrNotFound with
// errors.Is.
type NotPendingError struct {
	IDs []ID
}

// Error lists the IDs (at most eight, then a count).
func (e *NotPendingError) Error() string {
	var b strings.Builder
	b.WriteString("store: not found: ")
	for i, id := range e.IDs {
		if i == 8 {
			fmt.Fprintf(&b, " and %d more", len(e.IDs)-i)
			break
		}
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(id.String())
	}
	return b.String()
}

// Is makes errors.Is(err, ErrNotFound) true.
func (e *NotPendingError) Is(target error) bool { return target == ErrNotFound }
