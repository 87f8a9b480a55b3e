package store

import "time"

// Header is one message header. Stores keep headers as opaque name/value
// pairs, in order.
type Header struct{ Key, Value string }

// Message is a scheduled message as a store keeps it.
type Message struct {
	// ID is zero on Append (the store assigns it) and set on everything the
	// store returns.
	ID ID
	// Shard is chosen by the engine for new messages (0..Shards-1); it must
	// match ID.Shard() when ID != 0.
	Shard int
	// Due is when to deliver, wall-clock unix nanoseconds, in [0, MaxDue].
	Due int64
	// Expires is the deliver-by time, unix nanoseconds; 0 = none.
	Expires int64
	// Attempt counts deliveries tried so far.
	Attempt uint32
	// Dest is the destination, e.g. "local://emails".
	Dest string
	// Key is the optional idempotency key (see Store.Append).
	Key string
	// Headers travel with the payload.
	Headers []Header
	// Payload is the message body.
	Payload []byte
}

// Appended is the outcome of one new message.
type Appended struct {
	// ID is the message's identity: the new one, or when Existing the one
	// already stored under the same idempotency key.
	ID ID
	// Existing is true when the idempotency key was already known (pending
	// or dead): nothing was written for this message.
	Existing bool
}

// Reason says why a message left the pending set through Batch.Done. It
// feeds statistics only.
type Reason uint8

// Done reasons.
const (
	Delivered Reason = iota
	Cancelled
	Expired
	NumReasons
)

// String returns the reason's name.
func (r Reason) String() string {
	switch r {
	case Delivered:
		return "delivered"
	case Cancelled:
		return "cancelled"
	case Expired:
		return "expired"
	}
	return "unknown"
}

// Done removes a pending message (delivered, cancelled or expired) and
// forgets its idempotency key.
type Done struct {
	ID     ID
	Reason Reason
}

// Update keeps a pending message under the same ID with a new due time and
// attempt count: retries and reschedules.
type Update struct {
	ID      ID
	Due     int64
	Attempt uint32
}

// Dead moves a pending message to the dead letters; its idempotency key
// stays taken until the dead letter is purged.
type Dead struct {
	ID      ID
	Reason  string
	Attempt uint32
}

// Batch is one atomic set of outcomes for Store.Resolve. An ID may appear at
// most once across Done, Update and Dead.
type Batch struct {
	Done   []Done
	Update []Update
	Dead   []Dead
	// New messages (cascaded by a handler) are written like Append, in the
	// same atomic commit.
	New []Message
}

// Ops returns the number of outcomes (Done, Update and Dead) in b.
func (b *Batch) Ops() int { return len(b.Done) + len(b.Update) + len(b.Dead) }

// DeadLetter is a message moved out of the pending set by Batch.Dead.
// Message.Attempt holds the attempt count given there.
type DeadLetter struct {
	Message Message
	Reason  string
	// DeadAt is when it was dead-lettered, unix nanoseconds.
	DeadAt int64
}

// Position is a place in (Due, ID) order. The zero Position precedes every
// message: dues are never negative and no ID is zero.
type Position struct {
	Due int64
	ID  ID
}

// Less reports whether p comes strictly before q in (Due, ID) order.
func (p Position) Less(q Position) bool {
	return p.Due < q.Due || (p.Due == q.Due && p.ID < q.ID)
}

// PositionOf returns m's place in (Due, ID) order.
func PositionOf(m *Message) Position { return Position{Due: m.Due, ID: m.ID} }

// MaxScanLimit is the largest ScanQuery.Limit.
const MaxScanLimit = 1 << 20

// ScanQuery selects pending messages of one shard.
type ScanQuery struct {
	Shard int
	// From and To bound Due: From <= Due < To.
	From, To int64
	// After resumes a previous Scan: only messages strictly after it in
	// (Due, ID) order are returned. The zero Position starts at From.
	After Position
	// Limit caps the messages returned. 0 means 1024; at most MaxScanLimit.
	Limit int
}

// Page describes what a Scan returned.
type Page struct {
	// Next is the position of the last message returned (After for the
	// next page); it is the query's After when nothing was returned.
	Next Position
	// Done reports that the range holds no more messages after Next.
	Done bool
}

// Change is what a store feeds the owner of a shard (Owner.Feed), in
// commit order.
type Change struct {
	// Added are messages that became pending: appended, cascaded by a
	// Resolve, replayed from the dead letters, or moved by another process.
	Added []Message
	// Removed are messages another process resolved (a store shared by
	// several processes); single-process stores never set it.
	Removed []ID
}

// DeadQuery pages through dead letters in ID order.
type DeadQuery struct {
	// After resumes after this ID; 0 starts at the beginning.
	After ID
	// Limit caps the result. 0 means 1024; at most MaxDeadLimit.
	Limit int
}

// MaxDeadLimit is the largest DeadQuery.Limit.
const MaxDeadLimit = 1 << 16

// Latency summarises a latency distribution.
type Latency struct {
	Count         uint64
	P50, P99, Max time.Duration
}

// Stats is a snapshot of a store's counters. Counts reflect committed
// writes.
type Stats struct {
	// Kind names the implementation ("memory", "pebble", ...).
	Kind string
	// Pending is the number of pending messages per shard.
	Pending []int64
	// PendingTotal is the sum of Pending.
	PendingTotal int64
	// Dead is the number of dead letters.
	Dead int64
	// DiskBytes is the store's disk usage (0 for a memory store).
	DiskBytes uint64
	// Commits and Records count commits and the records (messages and
	// outcomes) in them since the store was opened.
	Commits, Records uint64
	// DoneByReason counts Done outcomes by Reason.String since open.
	DoneByReason map[string]uint64
	// Sync is the latency of each durable commit (zero for memory).
	Sync Latency
}
