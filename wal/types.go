package wal

import "time"

// Header is one message header.
type Header struct{ Key, Value string }

// Message is a scheduled message as the store keeps it.
type Message struct {
	// ID is zero on Append (the store assigns it) and set on everything the
	// store returns.
	ID ID
	// Shard is chosen by the engine for new messages (0..Shards-1); it must
	// match ID.Shard() when ID != 0.
	Shard int
	// Due is when to deliver, wall-clock unix nanoseconds.
	Due int64
	// Expires is the deliver-by time, unix nanoseconds; 0 = none.
	Expires int64
	// Attempt counts deliveries tried so far.
	Attempt uint32
	// Dest is the destination URL, e.g. "local://emails".
	Dest string
	// Key is the optional idempotency key.
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
	// Existing is true when the idempotency key was already known: nothing
	// was written for this message.
	Existing bool
}

// Reason says why a message left the pending set through Batch.Done. It only
// feeds statistics.
type Reason uint8

// Done reasons.
const (
	Delivered Reason = iota
	Cancelled
	Expired
	numReasons
)

// String returns the reason's name, as used in Stats.DoneByReason.
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

// Done removes a pending message (delivered, cancelled or expired).
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

// Dead moves a pending message to the dead-letter keyspace.
type Dead struct {
	ID      ID
	Reason  string
	Attempt uint32
}

// Batch is one atomic set of outcomes for Resolve. An ID may appear at most
// once across Done, Update and Dead.
type Batch struct {
	Done   []Done
	Update []Update
	Dead   []Dead
	// New messages (e.g. cascaded by a handler) are written like Append, in
	// the same atomic commit.
	New []Message
}

func (b *Batch) ops() int { return len(b.Done) + len(b.Update) + len(b.Dead) }

// DeadLetter is a message that was moved out of the pending set by
// Batch.Dead. Message.Attempt holds the attempt count given there.
type DeadLetter struct {
	Message Message
	Reason  string
	// DeadAt is when it was dead-lettered, unix nanoseconds (Options.Now).
	DeadAt int64
}

// MaxScanLimit is the largest ScanQuery.Limit.
const MaxScanLimit = 1 << 20

// ScanQuery selects pending messages of one shard.
type ScanQuery struct {
	Shard int
	// From and To bound Due: From <= Due < To.
	From, To int64
	// Limit caps the messages returned (and the memory Scan uses). 0 means
	// 1024; at most MaxScanLimit. Each page re-reads the shard's packed
	// blocks whose due range overlaps the query, so on recovery use a Limit
	// at least the shard's packed count (Recovery().BlockPending / shards)
	// when memory allows: one pass instead of one per page.
	Limit int
	// After resumes a previous Scan: only messages strictly after it in
	// (Due, ID) order are returned. The zero Cursor starts at From.
	After Cursor
}

// Cursor marks a position in (Due, ID) order for paging through Scan.
type Cursor struct {
	due int64
	id  ID
	set bool
	end bool
}

// End reports whether the Scan that returned the cursor found no more
// messages in its range (the page had fewer than Limit).
func (c Cursor) End() bool { return c.end }

// after reports whether (due, id) comes strictly after the cursor.
func (c Cursor) after(due int64, id ID) bool {
	if !c.set {
		return true
	}
	return due > c.due || (due == c.due && id > c.id)
}

// DeadQuery pages through dead letters in ID order.
type DeadQuery struct {
	// After resumes after this ID; 0 starts at the beginning.
	After ID
	// Limit caps the result. 0 means 1024; at most 65536.
	Limit int
}

// Recovery reports what Open found.
type Recovery struct {
	Duration time.Duration
	// Blocks is the number of packed blocks that still hold pending messages.
	Blocks int
	// BlockPending and TimedPending count pending messages packed in blocks
	// and in the time-ordered keyspace.
	BlockPending, TimedPending int64
	Dead                       int64
	// Created is true when Open created a new store.
	Created bool
}

// LatencySummary summarises a latency histogram. Quantiles are bucket upper
// bounds (within 1/8 of the true value).
type LatencySummary struct {
	Count         uint64
	P50, P99, Max time.Duration
}

// Stats is a snapshot of the store's counters. Counts reflect synced commits.
type Stats struct {
	// Pending is the number of pending messages per shard.
	Pending []int64
	// PendingTotal is the sum of Pending.
	PendingTotal int64
	// Dead is the number of dead letters.
	Dead int64
	// Blocks is the number of packed blocks with at least one pending slot.
	Blocks int
	// DiskBytes is Pebble's total disk usage.
	DiskBytes uint64
	// Batches and Records count group commits and the records (messages
	// and outcomes) in them since Open.
	Batches, Records uint64
	// DoneByReason counts Done outcomes by Reason since Open.
	DoneByReason map[string]uint64
	// Sync is the latency of each group commit's synced Pebble commit.
	Sync LatencySummary
}
