package wal

import (
	"errors"
	"fmt"
	"strings"
)

// Sentinel errors. Test for them with errors.Is; the returned errors wrap them
// with context.
var (
	// ErrClosed is returned by every call made after Close.
	ErrClosed = errors.New("wal: closed")
	// ErrNotFound means the ID is not pending (or, for dead-letter calls, not a
	// dead letter).
	ErrNotFound = errors.New("wal: not found")
	// ErrFailed is the sticky failure: a write, sync or Pebble fatal error
	// happened, and every later write is refused until the store is reopened.
	ErrFailed = errors.New("wal: store failed")
	// ErrInvalid marks a rejected argument (bad shard, oversized field, ...).
	ErrInvalid = errors.New("wal: invalid argument")
	// ErrCorrupt marks bytes on disk that do not decode. See CorruptionError.
	ErrCorrupt = errors.New("wal: corrupt record")
	// ErrUnsupportedVersion is returned by Open for a store written in a format
	// version this build does not read.
	ErrUnsupportedVersion = errors.New("wal: unsupported format version")
)

// CorruptionError describes a record that failed to decode. It matches
// ErrCorrupt with errors.Is.
type CorruptionError struct {
	What   string // record kind: "block", "message", "summary", ...
	Offset int    // byte offset inside the record where decoding failed
	Reason string
}

// Error says which record failed to decode, where, and why.
func (e *CorruptionError) Error() string {
	return fmt.Sprintf("wal: corrupt %s record at offset %d: %s", e.What, e.Offset, e.Reason)
}

// Is makes errors.Is(err, ErrCorrupt) true.
func (e *CorruptionError) Is(target error) bool { return target == ErrCorrupt }

// NotPendingError lists the IDs of a Resolve (or dead-letter call) that the
// store does not hold in the required state. Resolve is all-or-nothing: when
// it returns this error nothing of the batch was written. It matches
// ErrNotFound with errors.Is.
type NotPendingError struct {
	IDs []ID
}

// Error lists the IDs (at most eight, then a count).
func (e *NotPendingError) Error() string {
	var b strings.Builder
	b.WriteString("wal: not found: ")
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

func invalidf(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrInvalid}, args...)...)
}
