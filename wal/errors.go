package wal

import (
	"errors"
	"fmt"
	"strings"

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
	// ErrCorrupt marks a damaged store: a record that does not decode (see
	// CorruptionError), or files that do not make the complete, consistent
	// store that was written (see DamageError).
	ErrCorrupt = errors.New("wal: corrupt record")
	// ErrLocked is returned by Open when another process (or another open
	// Store in this process) holds the store's directory.
	ErrLocked = errors.New("wal: store is open elsewhere")
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

// DamageError is Open's (and Check's) refusal of a damaged or foreign store
// directory: which file is wrong, how, and what to do about it. Open returns
// it before anything in the directory is written. It matches ErrCorrupt with
// errors.Is, or ErrInvalid for a directory that holds no store at all, or
// ErrUnsupportedVersion for a store of another format.
type DamageError struct {
	Dir    string // the store directory
	File   string // the damaged file (a name in Dir, or a pattern); "" when no single file
	Reason string // what is wrong
	Advice string // what to do
	Err    error  // the underlying error (Pebble's, or a decoding error), if any
	kind   error  // the sentinel it matches; nil means ErrCorrupt
}

// Error says what is damaged, then what to do, then the underlying error.
func (e *DamageError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "wal: store %s: ", e.Dir)
	if e.File != "" {
		fmt.Fprintf(&b, "%s: ", e.File)
	}
	b.WriteString(e.Reason)
	if e.Advice != "" {
		fmt.Fprintf(&b, "; %s", e.Advice)
	}
	if e.Err != nil {
		fmt.Fprintf(&b, ": %v", e.Err)
	}
	return b.String()
}

// Is makes errors.Is match the sentinel of the refusal's kind.
func (e *DamageError) Is(target error) bool {
	if e.kind == nil {
		return target == ErrCorrupt
	}
	return target == e.kind
}

// Unwrap returns the underlying error.
func (e *DamageError) Unwrap() error { return e.Err }
