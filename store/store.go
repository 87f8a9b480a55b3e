package store

import (
	"context"
	"log/slog"
	"time"
)

// Store is where messages live. The engine runs on any implementation; this
// interface is everything it asks of one. Every method is safe for
// concurrent use.
//
// Durability: a call that returns nil has made its whole effect durable to
// the store's standard (synced to disk, acknowledged by a replicated log, or
// simply held in RAM for a memory store), and every call is all-or-nothing.
// A store that fails in a way it cannot answer for becomes failed: Err
// returns a non-nil error wrapping ErrFailed, and every later call fails
// with it until the store is opened again; it never reports a false
// success.
type Store interface {
	// Shards returns the number of shards, fixed for the store's life.
	Shards() int

	// Start hands the store its owner and starts feeding it. Before Start
	// returns, a single-process store attaches every shard (Owner.Attach);
	// a shared one attaches the shards this process owns, now or later.
	// From then on every message that becomes pending in an attached shard
	// is fed to the owner (Owner.Feed) in commit order, whoever wrote it.
	Start(ctx context.Context, o Owner) error

	// Append makes msgs durable and returns one result per message, in
	// order. A message whose Key is already known (pending or dead) is not
	// written: its result has Existing set and the stored ID. Invalid input
	// fails the whole call with ErrInvalid and writes nothing; so does a
	// bounded store that cannot take every message (ErrFull). The new
	// messages are fed to their shards' owner.
	Append(ctx context.Context, msgs []Message) ([]Appended, error)

	// Resolve applies one atomic batch of outcomes and returns the results
	// for b.New, which are fed like Append's. If any Done, Update or Dead
	// names an ID that is not pending, nothing is written and the error is
	// a *NotPendingError listing them.
	Resolve(ctx context.Context, b Batch) ([]Appended, error)

	// Scan returns pending messages of q.Shard with Due in [q.From, q.To),
	// in (Due, ID) order, at most q.Limit, strictly after q.After, all from
	// one consistent view whose sequence the Page reports.
	Scan(ctx context.Context, q ScanQuery) ([]Message, Page, error)

	// Get returns a pending message by ID, or an error wrapping
	// ErrNotFound.
	Get(ctx context.Context, id ID) (Message, error)

	// Lookup returns the ID an idempotency key names (a pending message or
	// a dead letter), or an error wrapping ErrNotFound.
	Lookup(ctx context.Context, key string) (ID, error)

	// GetDead returns a dead letter by ID, or an error wrapping
	// ErrNotFound.
	GetDead(ctx context.Context, id ID) (DeadLetter, error)

	// ListDead pages through dead letters in ID order. The returned ID is
	// the After of the next page; 0 when there are no more.
	ListDead(ctx context.Context, q DeadQuery) ([]DeadLetter, ID, error)

	// ReplayDead moves dead letters back to pending, due at due, with their
	// attempt count reset and the same IDs; they are fed like Append's.
	// All-or-nothing: an ID that is not a dead letter fails the call with a
	// *NotPendingError.
	ReplayDead(ctx context.Context, ids []ID, due int64) error

	// PurgeDead deletes the named dead letters (and frees their
	// idempotency keys), all-or-nothing like ReplayDead, and returns how
	// many it deleted.
	PurgeDead(ctx context.Context, ids []ID) (int, error)

	// PurgeAllDead deletes every dead letter and returns how many.
	PurgeAllDead(ctx context.Context) (int, error)

	// Err returns the sticky failure (wrapping ErrFailed), nil while
	// healthy.
	Err() error

	// Stats returns a snapshot of the store's counters.
	Stats() Stats

	// Close stops feeding, waits for calls in flight and releases the
	// store. A store closed cleanly reopens exactly as it was.
	Close() error
}

// Owner is the engine's side of the contract: a store tells it which shards
// it owns and what becomes pending in them.
type Owner interface {
	// Attach hands shard to the owner, which from then on scans it and
	// fires its messages. Feed calls for the shard may arrive before
	// Attach returns.
	Attach(shard int)

	// Detach takes shard away: the owner stops firing it, finishes or
	// abandons the deliveries in flight, writes their outcomes, and
	// returns (early if ctx ends). The store feeds the shard no more after
	// Detach returns.
	Detach(ctx context.Context, shard int)

	// Claim takes message id of an attached shard out of the owner's
	// hands while the store changes it for another process (a cancel or
	// reschedule that reached the shard's owner through the store): the
	// owner stops firing it and the feed leaves it alone until release,
	// which gives back its new state (nil: no longer pending). It fails
	// with an error wrapping ErrInFlight if the message is being
	// delivered. A second Claim of the same ID waits for the first's
	// release, or for ctx.
	Claim(ctx context.Context, id ID) (release func(m *Message), err error)

	// Feed reports changes to an attached shard, in commit order. It never
	// blocks: the owner queues the change. The owner reads the messages
	// after Feed returns, so the store must not reuse them.
	//
	// Ordering, which the owner relies on to never hold a message twice:
	// the change of a commit is fed before the store answers any call that
	// commits after it (so an outcome for a message cannot overtake the
	// change that added it), and a Scan may see a commit before its change
	// is fed.
	Feed(shard int, c Change)
}

// Opener opens a store for an engine. wal.Options (Pebble) and
// memstore.Options implement it.
type Opener interface {
	OpenStore(ctx context.Context, env Env) (Store, error)
}

// Env is what an engine tells the store it opens.
type Env struct {
	// Shards is the engine's shard count; 0 asks for the store's own (the
	// count a durable store was created with, or its default).
	Shards int
	// Window is how far ahead of now the engine holds messages in RAM; a
	// store may lay out messages due beyond it differently.
	Window time.Duration
	// MaxPayload bounds Message.Payload.
	MaxPayload int
	// Capacity bounds the pending messages per shard a store holds in RAM
	// (memory stores); 0 means no bound beyond the store's own.
	Capacity int
	// Logger receives the store's logs.
	Logger *slog.Logger
	// Now tells wall-clock time.
	Now func() time.Time
	// Events receives what the store reports as it happens; nil fields are
	// skipped.
	Events Events
}

// Events are a store's notifications, called synchronously from the store's
// goroutines: they must return quickly.
type Events struct {
	// Failed is called once when the store becomes failed (see Store.Err).
	Failed func(err error)
	// WriteStall is called when writes stall (begin) and when they resume.
	WriteStall func(begin bool, reason string)
}
