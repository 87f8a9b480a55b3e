package engine

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/hourglassmq/hourglass/store"
	"github.com/hourglassmq/hourglass/transport"
)

// Native scheduling: a message for a destination its transport schedules
// natively (transport.Registry.Native), due more than Options.NativeMinLead
// ahead, is handed to the broker at Schedule time. The engine keeps a
// "shadow" of it: the message as scheduled (payload included) with the
// reserved header headerNative appended last. A shadow is pending like any
// message (Get, List, Cancel, Reschedule find it), but when its due time
// comes the engine does not send it: the broker fires it, and the engine
// resolves the shadow as delivered (Stats.NativeFired). See docs/design.md,
// "Native scheduling".

// ErrNativeFired is returned by Cancel and Reschedule when the broker holding
// a natively scheduled message reports it already fired it. It wraps
// ErrNotFound: the message is no longer pending.
var ErrNativeFired = fmt.Errorf("%w: already fired by the broker (native scheduling)", ErrNotFound)

// engineHeaders splits stored headers into the caller's and the engine's
// own (always last: the routing key, then the native mark).
func engineHeaders(hs []store.Header) (caller []store.Header, routingKey string, native bool) {
	n := len(hs)
	if n > 0 && hs[n-1].Key == headerNative {
		native = true
		n--
	}
	if n > 0 && hs[n-1].Key == headerRoutingKey {
		routingKey = hs[n-1].Value
		n--
	}
	return hs[:n], routingKey, native
}

func isShadow(m *store.Message) bool {
	_, _, native := engineHeaders(m.Headers)
	return native
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
func (e *Engine) markNative(sms []store.Message, now int64) []int {
	if e.opts.Transports == nil || e.opts.NativeMinLead < 0 {
		return nil
	}
	var nat []int
	for i := range sms {
		m := &sms[i]
		if m.Expires != 0 || m.Due-now <= int64(e.opts.NativeMinLead) || localQueue(m.Dest) != "" {
			continue
		}
		if _, _, ok := e.opts.Transports.Native(m.Dest); !ok {
			continue
		}
		m.Headers = append(m.Headers, store.Header{Key: headerNative, Value: "1"})
		nat = append(nat, i)
	}
	return nat
}

// envelopeOf is the envelope handing m (a shadow) to the broker, due at due.
func envelopeOf(m *store.Message, due int64) transport.Envelope {
	caller, rk, _ := engineHeaders(m.Headers)
	return transport.Envelope{
		ID: m.ID.String(), Dest: m.Dest, Attempt: 1, Due: time.Unix(0, due), Key: m.Key, RoutingKey: rk,
		Headers: toTransportHeaders(caller), Payload: m.Payload,
	}
}

// scheduleNative hands one shadow to its broker, due at due.
func (e *Engine) scheduleNative(ctx context.Context, m *store.Message, due int64) error {
	ns, _, ok := e.opts.Transports.Native(m.Dest)
	if !ok {
		return fmt.Errorf("destination %q is no longer configured for native scheduling", m.Dest)
	}
	env := []transport.Envelope{envelopeOf(m, due)}
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

// handOff hands the shadows sms[nat] (recorded under ids; existing marks IDs
// of messages that were already there for an idempotency key) to their
// brokers. A new shadow the broker does not accept is dropped and its
// message is held by the engine instead, under a new ID written into ids.
func (e *Engine) handOff(ctx context.Context, sms []store.Message, nat []int, ids []ID, existing []bool) error {
	type group struct {
		ns   transport.NativeScheduler
		idx  []int
		envs []transport.Envelope
	}
	var groups []*group
	var fallback []int
	for _, i := range nat {
		if i >= len(ids) {
			continue // not recorded
		}
		if existing[i] {
			// An existing message answered the idempotency key. It may be a
			// shadow whose hand-off a crash interrupted (recorded, never
			// acknowledged to anyone): hand it over again (a broker replaces
			// a schedule with the same ID).
			sm, err := e.st.Get(ctx, ids[i])
			if err != nil || !isShadow(&sm) {
				continue
			}
			if err := e.scheduleNative(ctx, &sm, sm.Due); err != nil {
				return fmt.Errorf("engine: schedule %s: %w", ids[i], err)
			}
			continue
		}
		m := sms[i]
		m.ID = ids[i]
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
		g.envs = append(g.envs, envelopeOf(&m, m.Due))
	}
	for _, g := range groups {
		out := make([]transport.Outcome, len(g.envs))
		g.ns.ScheduleNative(ctx, g.envs, out)
		for k, i := range g.idx {
			if out[k].Status == transport.StatusDelivered {
				e.cnt.nativeScheduled.Add(1)
				continue
			}
			e.log.Warn("engine: native schedule refused; the engine holds the message",
				"dest", sms[i].Dest, "err", outcomeErr(out[k]))
			fallback = append(fallback, i)
		}
	}
	if len(fallback) == 0 {
		return nil
	}
	return e.fallBack(context.WithoutCancel(ctx), sms, fallback, ids)
}

// fallBack drops the shadows sms[idx] and schedules their messages to be
// held by the engine. The shadow goes first, so its idempotency key is free
// again; a crash in between loses a message whose Schedule never returned.
func (e *Engine) fallBack(ctx context.Context, sms []store.Message, idx []int, ids []ID) error {
	normal := make([]store.Message, len(idx))
	for k, i := range idx {
		m := sms[i]
		m.Headers = m.Headers[:len(m.Headers)-1] // the native mark
		if len(m.Headers) == 0 {
			m.Headers = nil
		}
		normal[k] = m
		err := e.withClaim(ctx, ids[i], func(store.Message, bool) (*store.Message, error) {
			_, err := e.st.Resolve(ctx, store.Batch{Done: []store.Done{{ID: ids[i], Reason: store.Cancelled}}})
			if err != nil && !errors.Is(err, store.ErrNotFound) { // not found: it fired meanwhile; nothing was sent
				return nil, err
			}
			return nil, nil
		})
		if err != nil {
			return fmt.Errorf("engine: schedule: %w", e.storeErr(err))
		}
	}
	nids, _, err := e.appendAll(ctx, normal)
	for k, id := range nids {
		ids[idx[k]] = id
	}
	return err
}

// cancelNative cancels shadow m at its broker. It returns ErrNativeFired
// when the broker no longer held it.
func (e *Engine) cancelNative(ctx context.Context, m *store.Message) error {
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
