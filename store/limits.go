package store

import (
	"fmt"
	"math"
	"time"
)

// Limits on messages, the same for every store, checked before anything is
// written. They keep every record small enough to decode with bounded
// memory.
const (
	MaxDestLen      = 1 << 10 // bytes of Message.Dest
	MaxKeyLen       = 1 << 10 // bytes of Message.Key
	MaxHeaders      = 64      // entries in Message.Headers
	MaxHeaderLen    = 4 << 10 // bytes of one header name or value
	MaxReasonLen    = 1 << 10 // bytes of a dead-letter reason
	MaxCallMessages = 16384   // messages (or outcomes) in one call
	MaxPayloadLimit = 64 << 20
	// DefaultMaxPayload is the payload bound when none is configured.
	DefaultMaxPayload = 1 << 20
)

// MaxDue is the latest due or expiry time a store holds:
// 2262-01-01T00:00:00Z, a little before int64 nanoseconds run out
// (2262-04-11), so that rounding a time up to a tick or shifting it onto a
// monotonic timeline never overflows.
var MaxDue = time.Date(2262, 1, 1, 0, 0, 0, 0, time.UTC).UnixNano()

// MaxTime is MaxDue as a time.Time.
var MaxTime = time.Unix(0, MaxDue).UTC()

// MinTime is the earliest time a store holds, the Unix epoch.
var MinTime = time.Unix(0, 0).UTC()

// ValidateNew checks new messages (Append, Batch.New) against the limits
// and a store of shards shards, naming what is wrong and what is allowed.
func ValidateNew(what string, msgs []Message, shards, maxPayload int) error {
	if len(msgs) > MaxCallMessages {
		return Invalidf("%s: %d messages, more than %d in one call", what, len(msgs), MaxCallMessages)
	}
	for i := range msgs {
		if err := validateMessage(&msgs[i], shards, maxPayload); err != nil {
			return Invalidf("%s: message %d: %s", what, i, err)
		}
	}
	return nil
}

type reasonError string

func (r reasonError) Error() string { return string(r) }

func reasonf(format string, args ...any) error {
	return reasonError(fmt.Sprintf(format, args...))
}

func validateMessage(m *Message, shards, maxPayload int) error {
	switch {
	case m.ID != 0:
		return reasonf("ID is set (%s); the store assigns IDs", m.ID)
	case m.Shard < 0 || m.Shard >= shards:
		return reasonf("shard %d outside [0, %d)", m.Shard, shards)
	case m.Due < 0 || m.Due > MaxDue:
		return reasonf("due %d is outside [0, %d] (%s to %s)", m.Due, MaxDue, MinTime.Format(time.RFC3339), MaxTime.Format(time.RFC3339))
	case m.Expires < 0 || m.Expires > MaxDue:
		return reasonf("expires %d is outside [0, %d] (0 = never)", m.Expires, MaxDue)
	case len(m.Dest) == 0:
		return reasonf("empty Dest")
	case len(m.Dest) > MaxDestLen:
		return reasonf("Dest is %d bytes, more than %d", len(m.Dest), MaxDestLen)
	case len(m.Key) > MaxKeyLen:
		return reasonf("Key is %d bytes, more than %d", len(m.Key), MaxKeyLen)
	case len(m.Headers) > MaxHeaders:
		return reasonf("%d headers, more than %d", len(m.Headers), MaxHeaders)
	case len(m.Payload) > maxPayload:
		return reasonf("payload is %d bytes, more than the store's MaxPayload %d", len(m.Payload), maxPayload)
	}
	for i, h := range m.Headers {
		if len(h.Key) > MaxHeaderLen || len(h.Value) > MaxHeaderLen {
			return reasonf("header %d (%.32q) is longer than %d bytes", i, h.Key, MaxHeaderLen)
		}
	}
	return nil
}

// ValidateDue checks a due time given to Update or ReplayDead.
func ValidateDue(what string, due int64) error {
	if due < 0 || due > MaxDue {
		return Invalidf("%s: due %d is outside [0, %d]", what, due, MaxDue)
	}
	return nil
}

// SatAdd returns a+b, saturated to the int64 range instead of wrapping.
func SatAdd(a, b int64) int64 {
	s := a + b
	switch {
	case b > 0 && s < a:
		return math.MaxInt64
	case b < 0 && s > a:
		return math.MinInt64
	}
	return s
}
