package transport

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Standard header names. Every transport sends them to the far side in its
// native header form (HTTP headers, NATS headers, Kafka record headers) so
// that receivers can deduplicate and see how late and how often a message
// was delivered.
const (
	// HeaderID carries the engine's message ID. Under at-least-once delivery
	// it is the receiver's deduplication key.
	HeaderID = "Hourglass-Id"
	// HeaderAttempt carries the 1-based delivery attempt number.
	HeaderAttempt = "Hourglass-Attempt"
	// HeaderDue carries the due time in RFC 3339 with nanoseconds, UTC.
	HeaderDue = "Hourglass-Due"
	// HeaderFired carries the time the engine fired the message (RFC 3339
	// with nanoseconds, UTC); Fired minus Due is the engine's lateness.
	HeaderFired = "Hourglass-Fired"
	// HeaderKey carries the caller's idempotency key; it is omitted when
	// the envelope has none.
	HeaderKey = "Hourglass-Key"

	// ReservedHeaderPrefix is the prefix of the standard headers. Caller
	// headers may not use it (ValidateHeaders), so a receiver can trust that
	// a Hourglass-* header came from the engine.
	ReservedHeaderPrefix = "Hourglass-"
)

// Header is one caller-supplied header. Headers are an ordered list rather
// than a map so that order and repeated names survive to transports that
// keep them (HTTP, Kafka, NATS all allow repeats).
type Header struct {
	Key   string // the name; see ValidateHeaders for what is allowed
	Value string // the value, without CR, LF or NUL
}

// Envelope is one due message handed to a Sender. The engine owns the
// envelope and its slices; a sender must not retain them after Send returns.
type Envelope struct {
	// ID is the engine's message ID in text form.
	ID string
	// Dest is the destination string, "scheme://target"; see Destination.
	Dest string
	// Attempt is the 1-based delivery attempt.
	Attempt int
	// Due is the time the message was scheduled for. For native scheduling
	// it is the time the broker is asked to release the message.
	Due time.Time
	// Fired is the time the engine handed the message to its dispatchers.
	// It is zero for native scheduling, where the broker fires.
	Fired time.Time
	// Key is the caller's idempotency key, possibly empty. It travels as
	// the HeaderKey header.
	Key string
	// RoutingKey is what a partitioned transport partitions on, possibly
	// empty (see PartitionKey).
	RoutingKey string
	// Headers are the caller's headers, sent after the standard ones.
	Headers []Header
	// Payload is the message body.
	Payload []byte
}

// PartitionKey returns the key a partitioned log (Kafka) should partition
// on: the caller's routing key when there is one, else the message ID. A
// broker that deduplicates (JetStream) should use the ID: it is the same on
// every redelivery of a message and different for every message.
func (e *Envelope) PartitionKey() string {
	if e.RoutingKey != "" {
		return e.RoutingKey
	}
	return e.ID
}

// ForEachHeader calls fn for the standard headers of e, then for e's own
// headers in order, so transports can write native headers without building
// an intermediate list. HeaderDue and HeaderFired are skipped when zero,
// HeaderKey when empty.
func (e *Envelope) ForEachHeader(fn func(key, value string)) {
	fn(HeaderID, e.ID)
	fn(HeaderAttempt, strconv.Itoa(e.Attempt))
	if !e.Due.IsZero() {
		fn(HeaderDue, FormatTime(e.Due))
	}
	if !e.Fired.IsZero() {
		fn(HeaderFired, FormatTime(e.Fired))
	}
	if e.Key != "" {
		fn(HeaderKey, e.Key)
	}
	for _, h := range e.Headers {
		fn(h.Key, h.Value)
	}
}

// FormatTime formats t the way the standard headers carry times: UTC,
// RFC 3339 with nanoseconds.
func FormatTime(t time.Time) string {
	return t.UTC().Format(time.RFC3339Nano)
}

// ValidateHeaders checks caller headers for what every transport can carry:
// names that are non-empty RFC 9110 tokens, not using ReservedHeaderPrefix,
// and values without control characters (tab excepted). The engine calls it
// at Schedule time; a sender may refuse more (MessageValidator).
func ValidateHeaders(hs []Header) error {
	for i, h := range hs {
		if h.Key == "" {
			return fmt.Errorf("%w: header %d has an empty name", ErrBadHeader, i)
		}
		for j := 0; j < len(h.Key); j++ {
			if !isTokenChar(h.Key[j]) {
				return fmt.Errorf("%w: header name %q: byte %q is not allowed (RFC 9110 token characters only)", ErrBadHeader, h.Key, h.Key[j])
			}
		}
		if len(h.Key) >= len(ReservedHeaderPrefix) && strings.EqualFold(h.Key[:len(ReservedHeaderPrefix)], ReservedHeaderPrefix) {
			return fmt.Errorf("%w: header name %q uses the reserved prefix %q", ErrBadHeader, h.Key, ReservedHeaderPrefix)
		}
		if i := strings.IndexFunc(h.Value, func(r rune) bool { return (r < ' ' && r != '\t') || r == 0x7f }); i >= 0 {
			return fmt.Errorf("%w: value of header %q has a control character at byte %d (only tab is allowed)", ErrBadHeader, h.Key, i)
		}
	}
	return nil
}

func isTokenChar(c byte) bool {
	switch {
	case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		return true
	}
	return strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0
}

// Destination is a parsed destination string "scheme://target".
type Destination struct {
	// Raw is the destination string as given.
	Raw string
	// Scheme is the lower-cased scheme, e.g. "https" or "jetstream".
	Scheme string
	// Target is everything after "://": a subject or topic for brokers, the
	// host and path for webhooks (the whole URL is Raw).
	Target string
}

// String returns the destination as given.
func (d Destination) String() string { return d.Raw }

// ParseDestination splits s into scheme and target. It checks only the
// shape; what a target may be is up to the sender that serves the scheme
// (Sender.Validate), which Registry.Resolve consults.
func ParseDestination(s string) (Destination, error) {
	i := strings.Index(s, "://")
	if i <= 0 {
		return Destination{}, &DestinationError{Dest: s, Err: ErrBadDestination, Reason: `want "scheme://target"`}
	}
	scheme := strings.ToLower(s[:i])
	for j := 0; j < len(scheme); j++ {
		c := scheme[j]
		if !(c >= 'a' && c <= 'z' || j > 0 && (c >= '0' && c <= '9' || c == '+' || c == '-' || c == '.')) {
			return Destination{}, &DestinationError{Dest: s, Err: ErrBadDestination, Reason: fmt.Sprintf("scheme %q is not a valid URL scheme", s[:i])}
		}
	}
	target := s[i+3:]
	if target == "" {
		return Destination{}, &DestinationError{Dest: s, Err: ErrBadDestination, Reason: "empty target after \"://\""}
	}
	return Destination{Raw: s, Scheme: scheme, Target: target}, nil
}

// Sentinel errors of the contract. Transports wrap them (errors.Is works).
var (
	// ErrBadDestination: the destination string is malformed or names a
	// target the serving sender does not allow.
	ErrBadDestination = errors.New("transport: invalid destination")
	// ErrUnknownScheme: no sender is registered for the destination's scheme.
	ErrUnknownScheme = errors.New("transport: unknown destination scheme")
	// ErrBadHeader: a caller header cannot be carried by every transport.
	ErrBadHeader = errors.New("transport: invalid header")
	// ErrClosed: the sender or registry was closed.
	ErrClosed = errors.New("transport: closed")
	// ErrSchemeTaken: Register was asked to map a scheme that is already mapped.
	ErrSchemeTaken = errors.New("transport: scheme already registered")
	// ErrNotNative: a native-scheduling call named a destination that is not
	// configured for native mode.
	ErrNotNative = errors.New("transport: destination not configured for native scheduling")
)

// DestinationError explains why a destination was refused. Err is one of
// ErrBadDestination or ErrUnknownScheme; Allowed, when set, lists what would
// have been accepted (schemes, hosts) so the message can say what to do.
type DestinationError struct {
	Dest    string   // the destination as given
	Err     error    // ErrBadDestination or ErrUnknownScheme, possibly wrapping a transport's own error
	Reason  string   // what is wrong with it
	Allowed []string // what would be accepted, when the sender can say
}

// Error implements error.
func (e *DestinationError) Error() string {
	var b strings.Builder
	b.WriteString(e.Err.Error())
	b.WriteString(" ")
	b.WriteString(strconv.Quote(e.Dest))
	if e.Reason != "" {
		b.WriteString(": ")
		b.WriteString(e.Reason)
	}
	if len(e.Allowed) > 0 {
		b.WriteString(" (allowed: ")
		b.WriteString(strings.Join(e.Allowed, ", "))
		b.WriteString(")")
	}
	return b.String()
}

// Unwrap returns the sentinel.
func (e *DestinationError) Unwrap() error { return e.Err }
