package wal

import (
	"errors"
	"fmt"

	"github.com/hourglassmq/hourglass/store"
)

// Sentinel errors. The contract's (package store) are the same values, so
// errors.Is works with either name. Test for them with errors.Is; the
// returned errors wrap them with context.
var (
	// ErrClosed is returned by every call made after Close.
	ErrClosed = store.ErrClosed
	// ErrNotFound means the ID is not pending (or, for dead-letter calls, not a
	// dead letter).
	ErrNotFound = store.ErrNotFound
	// ErrFailed is the sticky failure: a write, sync or Pebble fatal error
	// happened, and every later call is refused until the store is reopened.
	ErrFailed = store.ErrFailed
	// ErrInvalid marks a rejected argument (bad shard, oversized field, ...).
	ErrInvalid = store.ErrInvalid
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

func invalidf(format string, args ...any) error { return store.Invalidf(format, args...) }
