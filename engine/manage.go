package engine

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/hourglassmq/hourglass/store"
)

// State is where a message is.
type State uint8

const (
	// StatePending: waiting for its due time (or a retry).
	StatePending State = iota + 1
	// StateInFlight: being delivered now.
	StateInFlight
	// StateDead: in the dead letters.
	StateDead
)

func (s State) String() string {
	switch s {
	case StatePending:
		return "pending"
	case StateInFlight:
		return "in-flight"
	case StateDead:
		return "dead"
	}
	return "unknown"
}

// Info describes one message (Get, List).
type Info struct {
	ID      ID
	State   State
	Message Message
	// Attempts is the number of delivery attempts made so far.
	Attempts int
	// Reason is why a dead letter died.
	Reason string
	// Native: the message was handed to its broker's native scheduler,
	// which fires it (Options.NativeMinLead); the engine keeps it pending
	// until its due time so Cancel and Reschedule reach the broker.
	Native bool
}

func infoOf(m *store.Message, st State) Info {
	return Info{ID: m.ID, State: st, Message: fromStore(m), Attempts: int(m.Attempt), Native: isShadow(m)}
}

// fromStore converts a stored message back to what the caller scheduled.
// The payload is a copy: the caller may write into it, and the store's (or
// the shard's) copy is what will be delivered.
func fromStore(m *store.Message) Message {
	caller, rk, _ := engineHeaders(m.Headers)
	out := Message{Dest: m.Dest, Key: m.Key, RoutingKey: rk, Payload: bytes.Clone(m.Payload), Due: time.Unix(0, m.Due),
		Headers: toTransportHeaders(caller)}
	if m.Expires != 0 {
		out.Expires = time.Unix(0, m.Expires)
	}
	return out
}

// shardOf returns id's shard runtime if attached here (nil otherwise: a
// shard another process owns), or ErrNotFound for an ID that names no
// shard of this store.
func (e *Engine) shardOf(id ID) (*shard, error) {
	if id == 0 || id.Shard() >= len(e.shards) {
		return nil, fmt.Errorf("%w: %s names no message of this %d-shard store", ErrNotFound, id, len(e.shards))
	}
	return e.shards[id.Shard()].Load(), nil
}

// withClaim runs f, a change of message id in the store, with id claimed
// on its shard: out of the wheel, and left alone by the loader and the feed
// (another claim of id waits for this one). f gets the message if RAM held
// it, and returns the message to put back (nil: none). If f fails, the
// message goes back as the store has it.
func (e *Engine) withClaim(ctx context.Context, id ID, f func(m store.Message, inRAM bool) (*store.Message, error)) error {
	s, err := e.shardOf(id)
	if err != nil {
		return err
	}
	if s == nil { // owned elsewhere: the store carries the change there
		_, err := f(store.Message{}, false)
		return err
	}
	r := s.ask(cmd{kind: cmdClaim, id: id})
	if r.err != nil {
		return r.err
	}
	restore, err := f(r.m, r.found)
	if err != nil {
		e.restoreFromStore(s, id)
		return err
	}
	c := cmd{kind: cmdRelease, id: id}
	if restore != nil {
		c.restore, c.m = true, *restore
	}
	s.tell(c)
	return nil
}

// restoreFromStore ends a claim after a failed store call: the message goes
// back as the store has it. One that was not in RAM when claimed goes back
// too, or a loader page that passed it during the claim would leave it
// between the window and the store.
func (e *Engine) restoreFromStore(s *shard, id ID) {
	m, err := e.st.Get(context.Background(), id)
	if err != nil {
		e.checkStore(err)
		s.tell(cmd{kind: cmdRelease, id: id})
		return
	}
	s.tell(cmd{kind: cmdRelease, id: id, restore: true, m: m})
}

// Cancel removes a pending message, or a due one still waiting for a
// dispatcher. It fails with ErrNotFound when the message is not pending
// and ErrInFlight when it is being delivered. If ctx ends while the
// cancellation is being committed, Cancel returns ctx's error but the
// cancellation may still take effect: Get tells.
func (e *Engine) Cancel(ctx context.Context, id ID) error {
	if err := e.enter(); err != nil {
		return err
	}
	defer e.leave()
	if _, err := e.shardOf(id); err != nil {
		return fmt.Errorf("engine: cancel: %w", err)
	}
	return e.detach(ctx, "the cancellation may still take effect: Get tells", func(ctx context.Context) error {
		return e.cancel(ctx, id)
	})
}

func (e *Engine) cancel(ctx context.Context, id ID) error {
	var nerr error
	var dest string
	err := e.withClaim(ctx, id, func(m store.Message, inRAM bool) (*store.Message, error) {
		reason := store.Cancelled
		if !inRAM && (e.nativeConfigured() || e.ev.Cancelled != nil) {
			sm, err := e.st.Get(ctx, id)
			if err != nil {
				return nil, err
			}
			m, inRAM = sm, true
		}
		dest = m.Dest
		if inRAM && e.nativeConfigured() && isShadow(&m) {
			// The broker first. A crash after it leaves the shadow, which
			// is resolved harmlessly at its due time.
			if nerr = e.cancelNative(ctx, &m); nerr != nil {
				if !errors.Is(nerr, ErrNativeFired) {
					return nil, nerr
				}
				reason = store.Delivered
			}
		}
		_, err := e.st.Resolve(ctx, store.Batch{Done: []store.Done{{ID: id, Reason: reason}}})
		return nil, err
	})
	if err != nil {
		return fmt.Errorf("engine: cancel %s: %w", id, e.storeErr(err))
	}
	if nerr != nil {
		e.cnt.nativeFired.Add(1)
		return fmt.Errorf("engine: cancel %s: %w", id, nerr)
	}
	e.cnt.cancelled.Add(1)
	if f := e.ev.Cancelled; f != nil {
		f(CancelledInfo{ID: id, Dest: dest})
	}
	return nil
}

// Reschedule moves a pending message to a new due time (a past time means
// now), keeping its ID and attempt count. Errors as for Cancel; a time past
// store.MaxTime is refused with ErrInvalid.
func (e *Engine) Reschedule(ctx context.Context, id ID, due time.Time) error {
	if err := e.enter(); err != nil {
		return err
	}
	defer e.leave()
	now := e.clock.Now().UnixNano()
	dueNs, err := dueOf("Reschedule", due, now)
	if err != nil {
		return err
	}
	if _, err := e.shardOf(id); err != nil {
		return fmt.Errorf("engine: reschedule: %w", err)
	}
	return e.detach(ctx, "the reschedule may still take effect: Get tells", func(ctx context.Context) error {
		err := e.withClaim(ctx, id, func(m store.Message, inRAM bool) (*store.Message, error) {
			if !inRAM {
				sm, err := e.st.Get(ctx, id)
				if err != nil {
					return nil, err
				}
				m = sm
			}
			if isShadow(&m) {
				// The broker replaces the schedule atomically, then the
				// shadow follows. A crash in between leaves the shadow at
				// the old due time, resolved harmlessly then; the broker
				// fires at the new one.
				if err := e.scheduleNative(ctx, &m, dueNs); err != nil {
					return nil, err
				}
			}
			if _, err := e.st.Resolve(ctx, store.Batch{Update: []store.Update{{ID: id, Due: dueNs, Attempt: m.Attempt}}}); err != nil {
				return nil, err
			}
			m.Due = dueNs
			return &m, nil
		})
		if err != nil {
			return fmt.Errorf("engine: reschedule %s: %w", id, e.storeErr(err))
		}
		return nil
	})
}

// Get returns a message's state, due time and attempts. Delivered,
// cancelled and expired messages are gone: ErrNotFound.
func (e *Engine) Get(ctx context.Context, id ID) (Info, error) {
	if err := e.enter(); err != nil {
		return Info{}, err
	}
	defer e.leave()
	s, err := e.shardOf(id)
	if err != nil {
		return Info{}, fmt.Errorf("engine: get: %w", err)
	}
	if s != nil {
		if r := s.ask(cmd{kind: cmdGet, id: id}); r.found {
			return infoOf(&r.m, r.state), nil
		}
	}
	m, err := e.st.Get(ctx, id)
	if err == nil {
		return infoOf(&m, StatePending), nil
	}
	if !errors.Is(err, store.ErrNotFound) {
		return Info{}, fmt.Errorf("engine: get %s: %w", id, e.storeErr(err))
	}
	d, err := e.st.GetDead(ctx, id)
	if err != nil {
		return Info{}, fmt.Errorf("engine: get %s: %w", id, e.storeErr(err))
	}
	in := infoOf(&d.Message, StateDead)
	in.Reason = d.Reason
	return in, nil
}

// GetByKey returns the message an idempotency key names: pending, in
// flight or dead-lettered. Once a message is delivered, cancelled or
// expired its key is free again: ErrNotFound.
func (e *Engine) GetByKey(ctx context.Context, key string) (Info, error) {
	if err := e.enter(); err != nil {
		return Info{}, err
	}
	id, err := e.st.Lookup(ctx, key)
	e.leave()
	if err != nil {
		return Info{}, fmt.Errorf("engine: get by key: %w", e.storeErr(err))
	}
	return e.Get(ctx, id)
}
