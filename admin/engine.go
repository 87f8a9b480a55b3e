package admin

import (
	"context"
	"time"

	"github.com/hourglassmq/hourglass/engine"
)

// Engine is everything the handler needs from an engine: the public calls of
// *engine.Engine, which implements it. Keeping it this small is what lets
// the handler be tested with a real engine and adapted to a reshaped one in
// a few lines, and lets an embedding service wrap the engine (to log or
// authorize each call) before handing it over.
type Engine interface {
	// ScheduleBatch schedules msgs all or nothing (invalid input fails the
	// whole call before anything is stored) and returns their IDs in order.
	ScheduleBatch(ctx context.Context, msgs []engine.Message) ([]engine.ID, error)
	// Get returns a pending, in-flight or dead message.
	Get(ctx context.Context, id engine.ID) (engine.Info, error)
	// GetByKey returns the message an idempotency key names.
	GetByKey(ctx context.Context, key string) (engine.Info, error)
	// Cancel removes a pending message.
	Cancel(ctx context.Context, id engine.ID) error
	// Reschedule moves a pending message to a new due time.
	Reschedule(ctx context.Context, id engine.ID, due time.Time) error
	// List pages through pending messages in due order.
	List(ctx context.Context, q engine.ListQuery) ([]engine.Info, engine.Cursor, error)
	// Summary counts pending messages by destination and due bucket. It
	// reads every pending message, so the handler calls it only from its
	// background refresher, never per request.
	Summary(ctx context.Context, bucket time.Duration, n int) (engine.Summary, error)
	// DeadLetters pages through dead letters in ID order.
	DeadLetters(ctx context.Context, after engine.ID, limit int) ([]engine.DeadLetter, engine.ID, error)
	// ReplayDead moves dead letters back to pending, all or nothing.
	ReplayDead(ctx context.Context, ids []engine.ID, due time.Time) error
	// PurgeDead deletes dead letters (nil: all of them).
	PurgeDead(ctx context.Context, ids []engine.ID) (int, error)
	// Stats is a cheap snapshot of counters (atomics, no store scan).
	Stats() engine.Stats
	// Err is the engine's sticky store failure, or nil: the health check.
	Err() error
}

var _ Engine = (*engine.Engine)(nil)
