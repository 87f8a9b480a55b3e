package engine

import (
	"sync"
	"time"

	"github.com/hourglassmq/hourglass/store"
)

// Delivery is what a handler sees: the message, its attempt, due and fire
// times, and methods to cascade new messages. Cascaded messages are
// committed atomically with the ack of this delivery (in the same store
// batch); if the handler fails they are discarded. Its methods are safe for
// concurrent use while the handler runs, and fail with ErrDeliveryDone
// once it has returned.
type Delivery struct {
	ID         ID
	Dest       string
	Key        string
	RoutingKey string
	Headers    []Header
	// Payload is the message body; the handler must not modify it.
	Payload []byte
	// Attempt is 1 for the first delivery.
	Attempt int
	// Due is when the message was scheduled for; Fired when the engine
	// called this handler (Fired - Due is the message's lateness).
	Due, Fired time.Time
	// Expires is the deliver-by time; zero if none.
	Expires time.Time

	e   *Engine    // nil for a Delivery built by NewDelivery
	val *validator // checks cascades
	mu  sync.Mutex // guards out and done
	out []store.Message
	// done is set once the handler returned or was abandoned.
	done bool
}

// init makes d the delivery of m, fired at fired, by e.
func (d *Delivery) init(e *Engine, m *store.Message, fired time.Time) {
	caller, rk, _ := engineHeaders(m.Headers)
	*d = Delivery{
		ID: m.ID, Dest: m.Dest, Key: m.Key, RoutingKey: rk, Payload: m.Payload,
		Headers: toTransportHeaders(caller), Attempt: int(m.Attempt) + 1,
		Due: time.Unix(0, m.Due), Fired: fired, e: e, val: e.val,
	}
	if m.Expires != 0 {
		d.Expires = time.Unix(0, m.Expires)
	}
}

// NewDelivery builds a Delivery outside an engine, so a handler can be
// unit-tested: call it with the Delivery, then check its result and
// Cascaded. It carries m (Due zero means now) as attempt attempt (1 for the
// first), with ID id. Cascades are validated as an engine would, except
// that any local queue name and any well-formed scheme://target is
// accepted.
func NewDelivery(id ID, m Message, attempt int) *Delivery {
	now := time.Now()
	d := &Delivery{
		ID: id, Dest: m.Dest, Key: m.Key, RoutingKey: m.RoutingKey, Headers: m.Headers, Payload: m.Payload,
		Attempt: max(1, attempt), Due: m.Due, Fired: now, Expires: m.Expires,
		val: &validator{maxPayload: DefaultMaxPayload, anyScheme: true},
	}
	if d.Due.IsZero() {
		d.Due = now
	}
	return d
}

// Send cascades m to be delivered now (m.Due is ignored).
func (d *Delivery) Send(m Message) error {
	m.Due = time.Time{}
	return d.Schedule(m)
}

// Schedule cascades m at m.Due (zero or past = now).
func (d *Delivery) Schedule(m Message) error {
	now := d.now()
	var sm store.Message
	var err error
	if d.e != nil {
		sm, err = d.e.prepare(&m, now)
	} else {
		sm, err = d.val.prepare(&m, now)
	}
	if err != nil {
		return err
	}
	// The payload is copied: the handler may reuse its buffer.
	sm.Payload = append([]byte(nil), sm.Payload...)
	d.mu.Lock()
	defer d.mu.Unlock()
	switch {
	case d.done:
		return ErrDeliveryDone
	case len(d.out) >= store.MaxCallMessages/2:
		return invalidf("delivery %s: more than %d cascaded messages", d.ID, store.MaxCallMessages/2)
	}
	d.out = append(d.out, sm)
	return nil
}

// ScheduleIn cascades m due dur from now.
func (d *Delivery) ScheduleIn(dur time.Duration, m Message) error {
	due, err := after("ScheduleIn", d.now(), dur)
	if err != nil {
		return err
	}
	m.Due = time.Unix(0, due)
	return d.Schedule(m)
}

// Cascaded returns the messages the handler cascaded so far, as it gave
// them (Due resolved to a time; for tests of handlers).
func (d *Delivery) Cascaded() []Message {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := make([]Message, len(d.out))
	for i := range d.out {
		out[i] = fromStore(&d.out[i])
	}
	return out
}

func (d *Delivery) now() int64 {
	if d.e != nil {
		return d.e.clock.Now().UnixNano()
	}
	return time.Now().UnixNano()
}

// finish closes the delivery: later cascades fail.
func (d *Delivery) finish() {
	d.mu.Lock()
	d.done = true
	d.mu.Unlock()
}

// cascaded returns what the handler cascaded (after finish).
func (d *Delivery) cascaded() []store.Message {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.out
}
