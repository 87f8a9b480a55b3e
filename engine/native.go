package engine

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/hourglassmq/hourglass/transport"
	"github.com/hourglassmq/hourglass/wal"
)

// Native scheduling: a message for a destination its transport schedules
// natively (transport.Registry.Native), due more than Options.NativeMinLead
// ahead, is handed to the broker at Schedule time. The engine keeps a
// "shadow" of it: the message as scheduled (payload included) with the
// reserved header headerNative appended last. A shadow is pending like any
// message (Get, List, Cancel, Reschedule find it), but when its due time
// comes the engine does not send it: the broker fires it, and the engine
// resolves the shadow as delivered (Stats.NativeFired). See docs/design.md,
// "Native scheduling in the engine".

// headerNative marks a shadow. Callers cannot set Hourglass-* headers
// (transport.ValidateHeaders), so only the engine writes it; it is always the
// last header and never leaves the engine.
const headerNative = transport.ReservedHeaderPrefix + "Native"

// ErrNativeFired is returned by Cancel and Reschedule when the broker holding
// a natively scheduled message reports it already fired it. It wraps
// ErrNotFound: the message is no longer pending.
var ErrNativeFired = fmt.Errorf("%w: already fired by the broker (native scheduling)", ErrNotFound)

func isShadow(m *wal.Message) bool {
	n := len(m.Headers)
	return n > 0 && m.Headers[n-1].Key == headerNative
}

// callerHeaders returns hs without the shadow mark.
func callerHeaders(hs []wal.Header) []wal.Header {
	if n := len(hs); n > 0 && hs[n-1].Key == headerNative {
		return hs[:n-1]
	}
	return hs
}

// nativeConfigured reports whether any registered sender can schedule
// natively (so a message may be a shadow).
func (e *Engine) nativeConfigured() bool {
	r := e.opts.Transports
	if r == nil || e.opts.NativeMinLead < 0 {
		return false
	}
	for _, sc := range r.Schemes() {
		if s, ok := r.Lookup(sc); ok {
			if _, ok := s.(transport.NativeScheduler); ok {
				return true
			}
		}
	}
	return false
}

// markNative marks the messages to hand to a broker (they become shadows)
// and returns their indices (nil if none).
func (e *Engine) markNative(wms []wal.Message, now int64) []int {
	if e.opts.Transports == nil || e.opts.NativeMinLead < 0 {
		return nil
	}
	var nat []int
	for i := range wms {
		m := &wms[i]
		if m.Expires != 0 || m.Due-now <= int64(e.opts.NativeMinLead) || len(m.Headers) >= wal.MaxHeaders {
			continue
		}
		if e.destFor(m.Dest).local != "" {
			continue
		}
		if _, _, ok := e.opts.Transports.Native(m.Dest); !ok {
			continue
		}
		hs := make([]wal.Header, len(m.Headers), len(m.Headers)+1)
		copy(hs, m.Headers)
		m.Headers = append(hs, wal.Header{Key: headerNative, Value: "1"})
		nat = append(nat, i)
	}
	return nat
}

// envelopeOf is the envelope handing m (a shadow) to the broker, due at due.
func envelopeOf(m *wal.Message, id ID, due int64) transport.Envelope {
	return transport.Envelope{
		ID: id.String(), Dest: m.Dest, Attempt: 1, Due: time.Unix(0, due), Key: m.Key,
		Headers: toTransportHeaders(callerHeaders(m.Headers)), Payload: m.Payload,
	}
}

// scheduleNative hands one shadow to its broker.
func (e *Engine) scheduleNative(ctx context.Context, m *wal.Message, id ID, due int64) error {
	ns, _, ok := e.opts.Transports.Native(m.Dest)
	if !ok {
		return fmt.Errorf("destination %q is no longer configured for native scheduling", m.Dest)
	}
	env := []transport.Envelope{envelopeOf(m, id, due)}
	out := make([]transport.Outcome, 1)
	ns.ScheduleNative(ctx, env, out)
	if out[0].Status != transport.StatusDelivered {
		return fmt.Errorf("native schedule: %w", outcomeErr(out[0]))
	}
	return nil
}

func outcomeErr(o transport.Outcome) error {
	if o.Err != nil {
		return o.Err
	}
	return fmt.Errorf("transport status %v", o.Status)
}

// handOff hands the shadows wms[nat] (already recorded: ids; old marks IDs
// of existing messages returned for an idempotency key) to their brokers.
// A new shadow the broker does not accept is dropped and the message is held
// by the engine instead, under a new ID written into ids.
func (e *Engine) handOff(ctx context.Context, wms []wal.Message, nat []int, ids []ID, old []bool) error {
	type group struct {
		ns   transport.NativeScheduler
		idx  []int
		envs []transport.Envelope
	}
	var groups []*group
	var fallback []int
	for _, i := range nat {
		if i >= len(ids) || ids[i] == 0 {
			continue // not recorded
		}
		m := &wms[i]
		if old[i] {
			// An existing message answered the idempotency key. In durable
			// mode it may be a shadow whose hand-off a crash interrupted
			// (recorded, never acknowledged to anyone): hand it over again
			// (a broker replaces a schedule with the same ID).
			if e.store == nil {
				continue
			}
			sm, err := e.store.Get(ctx, ids[i])
			if err != nil || !isShadow(&sm) {
				continue
			}
			if err := e.scheduleNative(ctx, &sm, ids[i], sm.Due); err != nil {
				return fmt.Errorf("engine: schedule %s: %w", ids[i], err)
			}
			continue
		}
		ns, _, ok := e.opts.Transports.Native(m.Dest)
		if !ok {
			fallback = append(fallback, i)
			continue
		}
		var g *group
		for _, x := range groups {
			if x.ns == ns {
				g = x
			}
		}
		if g == nil {
			g = &group{ns: ns}
			groups = append(groups, g)
		}
		g.idx = append(g.idx, i)
		g.envs = append(g.envs, envelopeOf(m, ids[i], m.Due))
	}
	for _, g := range groups {
		out := make([]transport.Outcome, len(g.envs))
		g.ns.ScheduleNative(ctx, g.envs, out)
		for k, i := range g.idx {
			if out[k].Status == transport.StatusDelivered {
				e.st.nativeScheduled.Add(1)
				continue
			}
			e.log.Warn("engine: native schedule refused; the engine holds the message",
				"dest", wms[i].Dest, "err", outcomeErr(out[k]))
			fallback = append(fallback, i)
		}
	}
	if len(fallback) == 0 {
		return nil
	}
	return e.fallBack(context.WithoutCancel(ctx), wms, fallback, ids)
}

// fallBack drops the shadows wms[idx] and schedules their messages to be
// held by the engine. The shadow goes first, so its idempotency key is free
// again; a crash in between loses a message whose Schedule never returned.
func (e *Engine) fallBack(ctx context.Context, wms []wal.Message, idx []int, ids []ID) error {
	normal := make([]wal.Message, len(idx))
	for k, i := range idx {
		m := wms[i]
		m.ID = 0
		m.Headers = callerHeaders(m.Headers)
		if len(m.Headers) == 0 {
			m.Headers = nil
		}
		normal[k] = m
		id := ids[i]
		s, err := e.shardOf(id)
		if err != nil {
			return err
		}
		if e.store == nil {
			e.ask(s, cmd{kind: cmdCancel, id: id}) // not found: it fired meanwhile; nothing was sent
			continue
		}
		r := e.ask(s, cmd{kind: cmdClaim, id: id})
		_, err = e.store.Resolve(ctx, wal.Batch{Done: []wal.Done{{ID: id, Reason: wal.Cancelled}}})
		if r.err == nil {
			s.cmds <- cmd{kind: cmdRelease, id: id}
		}
		if err != nil && !errors.Is(err, wal.ErrNotFound) {
			e.checkStore(err)
			return fmt.Errorf("engine: schedule: %w", err)
		}
	}
	var nids []ID
	var err error
	if e.store == nil {
		nids, _, err = e.insertMemory(ctx, normal, true)
	} else {
		nids, err = e.appendDurable(ctx, normal)
	}
	if err != nil {
		return err
	}
	for k, i := range idx {
		ids[i] = nids[k]
	}
	return nil
}

// cancelNative cancels shadow m at its broker. It returns ErrNativeFired
// when the broker no longer held it.
func (e *Engine) cancelNative(ctx context.Context, m *wal.Message) error {
	ns, d, ok := e.opts.Transports.Native(m.Dest)
	if !ok {
		return fmt.Errorf("destination %q is no longer configured for native scheduling", m.Dest)
	}
	found, err := ns.CancelNative(ctx, m.ID.String(), d)
	if err != nil {
		return err
	}
	if !found {
		return ErrNativeFired
	}
	return nil
}

// shadowOf returns id's shadow if id names one (memory mode: in RAM;
// durable: r is the claim's reply, else the store is read).
func (e *Engine) shadowOf(ctx context.Context, s *shard, id ID, r *reply) (wal.Message, bool, error) {
	if !e.nativeConfigured() {
		return wal.Message{}, false, nil
	}
	if r != nil && r.found {
		return r.m, isShadow(&r.m), nil
	}
	if e.store == nil {
		g := e.ask(s, cmd{kind: cmdGet, id: id})
		return g.m, g.found && g.state == StatePending && isShadow(&g.m), nil
	}
	m, err := e.store.Get(ctx, id)
	if err != nil && !errors.Is(err, wal.ErrNotFound) {
		return m, false, err
	}
	return m, err == nil && isShadow(&m), nil
}

// clampDue keeps a native due time from being in the past for the broker.
func (e *Engine) clampDue(due int64) int64 {
	return max(due, e.clock.Now().UnixNano())
}
