package engine

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/hourglassmq/hourglass/store"
	"github.com/hourglassmq/hourglass/transport"
)

// Message is what a caller schedules.
type Message struct {
	// Dest is the destination: "local://queue", "https://host/path",
	// "nats://subject", "kafka://topic", ... Local queues must be
	// registered; other schemes need a transport in Options.Transports.
	Dest string
	// Due is when to deliver. Zero, or a time in the past, means now; the
	// latest is store.MaxTime (2262-01-01).
	Due time.Time
	// Expires is the deliver-by time: a message that cannot go out by then
	// is dropped and counted (Stats.Expired), not delivered. Zero = never;
	// otherwise not before Due.
	Expires time.Time
	// Key is an optional idempotency key: scheduling a key that already
	// names a pending or dead-lettered message schedules nothing and
	// returns that message's ID with an error wrapping ErrDuplicate. It
	// travels to the receiver as the Hourglass-Key header.
	Key string
	// RoutingKey is what a partitioned transport partitions on (the Kafka
	// record key); empty means the message ID. It has nothing to do with
	// idempotency, so many messages may share one (a customer ID).
	RoutingKey string
	// Headers travel with the payload.
	Headers []Header
	// Payload is the message body. Schedule copies it: the caller may
	// reuse the slice once Schedule returns.
	Payload []byte
}

// Engine-owned headers, stored after the caller's and never shown to
// callers or receivers as headers: the routing key, and the native-schedule
// mark (native.go). Callers cannot set Hourglass-* headers
// (transport.ValidateHeaders), so only the engine writes them.
const (
	headerRoutingKey = transport.ReservedHeaderPrefix + "Routing-Key"
	headerNative     = transport.ReservedHeaderPrefix + "Native"
	// maxCallerHeaders leaves room for the engine's own headers.
	maxCallerHeaders = store.MaxHeaders - 2
)

// validator checks messages: the engine's, or a test Delivery's.
type validator struct {
	maxPayload int
	transports *transport.Registry
	// queue reports whether a local queue exists; nil accepts any name
	// (a Delivery built by NewDelivery, outside an engine).
	queue func(name string) bool
	// anyScheme accepts every well-formed non-local destination (a
	// Delivery built by NewDelivery).
	anyScheme bool
}

// prepare validates m and converts it to the store's form (without a
// shard). now is wall-clock unix nanoseconds.
func (v *validator) prepare(m *Message, now int64) (store.Message, error) {
	dest := canonicalDest(m.Dest)
	if err := v.checkDest(dest); err != nil {
		return store.Message{}, err
	}
	if len(m.Payload) > v.maxPayload {
		return store.Message{}, invalidf("payload is %d bytes, more than MaxPayload %d", len(m.Payload), v.maxPayload)
	}
	if err := checkKey("Key", m.Key); err != nil {
		return store.Message{}, err
	}
	if err := checkKey("RoutingKey", m.RoutingKey); err != nil {
		return store.Message{}, err
	}
	if len(m.Headers) > maxCallerHeaders {
		return store.Message{}, invalidf("%d headers, more than %d", len(m.Headers), maxCallerHeaders)
	}
	for i, h := range m.Headers {
		if len(h.Key) > store.MaxHeaderLen || len(h.Value) > store.MaxHeaderLen {
			return store.Message{}, invalidf("header %d (%.32q) is longer than %d bytes", i, h.Key, store.MaxHeaderLen)
		}
	}
	if err := transport.ValidateHeaders(m.Headers); err != nil {
		return store.Message{}, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	if v.transports != nil && localQueue(dest) == "" {
		if err := v.transports.ValidateMessage(dest, m.Key, m.Headers); err != nil {
			return store.Message{}, fmt.Errorf("%w: %w", ErrInvalid, err)
		}
	}
	due, err := dueOf("Due", m.Due, now)
	if err != nil {
		return store.Message{}, err
	}
	exp, err := expiresOf(m.Expires, due)
	if err != nil {
		return store.Message{}, err
	}
	return store.Message{Due: due, Expires: exp, Dest: dest, Key: m.Key, Headers: storeHeaders(m), Payload: m.Payload}, nil
}

// checkDest refuses a destination before any per-destination state exists
// for it, so an invalid one leaves nothing behind.
func (v *validator) checkDest(dest string) error {
	switch {
	case dest == "":
		return invalidf("message has no Dest; want local://queue or a transport's scheme://target")
	case len(dest) > store.MaxDestLen:
		return invalidf("Dest is %d bytes, more than %d", len(dest), store.MaxDestLen)
	}
	if i := strings.Index(dest, "://"); i > 0 && strings.EqualFold(dest[:i], "local") {
		if q := dest[i+3:]; q == "" || (v.queue != nil && !v.queue(q)) {
			return fmt.Errorf("%w: %q (register it in Options.Queues or with Register)", ErrUnknownQueue, dest)
		}
		return nil
	}
	if v.anyScheme {
		if _, err := transport.ParseDestination(dest); err != nil {
			return fmt.Errorf("%w: %w", ErrInvalid, err)
		}
		return nil
	}
	if v.transports == nil {
		return invalidf("destination %q: no transports configured (only local:// queues)", dest)
	}
	if err := v.transports.Validate(dest); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	return nil
}

// checkKey refuses keys that cannot travel as a header value.
func checkKey(what, k string) error {
	if len(k) > store.MaxKeyLen {
		return invalidf("%s is %d bytes, more than %d", what, len(k), store.MaxKeyLen)
	}
	if i := strings.IndexFunc(k, func(r rune) bool { return r < ' ' || r == 0x7f }); i >= 0 {
		return invalidf("%s %.64q has a control character at byte %d; it travels as a header value", what, k, i)
	}
	return nil
}

// storeHeaders copies the caller's headers and appends the engine's.
func storeHeaders(m *Message) []store.Header {
	n := len(m.Headers)
	if m.RoutingKey != "" {
		n++
	}
	if n == 0 {
		return nil
	}
	out := make([]store.Header, 0, n)
	for _, h := range m.Headers {
		out = append(out, store.Header{Key: h.Key, Value: h.Value})
	}
	if m.RoutingKey != "" {
		out = append(out, store.Header{Key: headerRoutingKey, Value: m.RoutingKey})
	}
	return out
}

// shardHash is 64-bit FNV-1a. It must not change between runs or versions:
// a durable store's keyed messages and ordered queues stay on the shard this
// picked when they were scheduled, and new ones must land beside them.
func shardHash(s string) uint64 {
	h := uint64(14695981039346656037)
	for i := 0; i < len(s); i++ {
		h ^= uint64(s[i])
		h *= 1099511628211
	}
	return h
}

// pickShard: an ordered queue's messages all live on one shard (hash of the
// destination); a keyed message on the key's shard; others round-robin.
func (e *Engine) pickShard(m *store.Message) int {
	n := uint64(len(e.shards))
	if q := localQueue(m.Dest); q != "" {
		if qu := e.queueFor(q); qu != nil && qu.Ordered {
			return int(shardHash(m.Dest) % n)
		}
	}
	if m.Key != "" {
		return int(shardHash(m.Key) % n)
	}
	return int(e.rr.Add(1) % n)
}

// validator returns the engine's message checks.
func (e *Engine) validator() *validator {
	return &validator{
		maxPayload: e.opts.MaxPayload,
		transports: e.opts.Transports,
		queue:      func(name string) bool { return e.queueFor(name) != nil },
	}
}

// prepare validates m and places it on a shard.
func (e *Engine) prepare(m *Message, now int64) (store.Message, error) {
	sm, err := e.val.prepare(m, now)
	if err != nil {
		return store.Message{}, err
	}
	sm.Shard = e.pickShard(&sm)
	return sm, nil
}

// Schedule schedules m and returns its ID once the store holds it durably
// (a memory store: once it is in RAM). If m.Key already names a pending or
// dead-lettered message, nothing is scheduled: Schedule returns that
// message's ID and an error wrapping ErrDuplicate.
func (e *Engine) Schedule(ctx context.Context, m Message) (ID, error) {
	ids, err := e.ScheduleBatch(ctx, []Message{m})
	if len(ids) == 1 {
		return ids[0], err
	}
	return 0, err
}

// ScheduleIn schedules m due d from now (d <= 0: now). A due time past
// store.MaxTime is refused with ErrInvalid.
func (e *Engine) ScheduleIn(ctx context.Context, d time.Duration, m Message) (ID, error) {
	due, err := after("ScheduleIn", e.clock.Now().UnixNano(), d)
	if err != nil {
		return 0, err
	}
	m.Due = time.Unix(0, due)
	return e.Schedule(ctx, m)
}

// ScheduleAt schedules m due at t.
func (e *Engine) ScheduleAt(ctx context.Context, t time.Time, m Message) (ID, error) {
	m.Due = t
	return e.Schedule(ctx, m)
}

// ScheduleBatch schedules many messages and returns their IDs in order.
// Every message is validated before anything is written: one invalid
// message fails the call with ErrInvalid (naming it) and schedules nothing.
// Each group of up to store.MaxCallMessages messages is one atomic store
// call; if the store fails part-way, the call returns, with its error, the
// IDs of the leading messages already scheduled (the rest are not). If ctx
// ends while the store works, the messages may still be scheduled: retry
// with their idempotency keys to find out.
//
// Messages whose Key already names a pending or dead-lettered message are
// not scheduled again: their places hold the existing IDs, and the error is
// a *DuplicateError (errors.Is ErrDuplicate) listing them; every other
// message is scheduled.
func (e *Engine) ScheduleBatch(ctx context.Context, msgs []Message) ([]ID, error) {
	if err := e.enter(); err != nil {
		return nil, err
	}
	defer e.leave()
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if len(msgs) == 0 {
		return nil, nil
	}
	now := e.clock.Now().UnixNano()
	sms := make([]store.Message, len(msgs))
	payload := 0
	for i := range msgs {
		sm, err := e.prepare(&msgs[i], now)
		if err != nil {
			if len(msgs) > 1 {
				err = fmt.Errorf("message %d: %w", i, err)
			}
			return nil, err
		}
		sms[i] = sm
		payload += len(sm.Payload)
	}
	if err := e.admit(ctx, sms); err != nil {
		return nil, err
	}
	// One copy of every payload, so the caller may reuse its buffers.
	arena := make([]byte, 0, payload)
	for i := range sms {
		if p := sms[i].Payload; p != nil {
			arena = append(arena, p...)
			sms[i].Payload = arena[len(arena)-len(p) : len(arena) : len(arena)]
		}
	}
	nat := e.markNative(sms, now)
	ids, existing, err := e.appendAll(ctx, sms)
	if nat != nil {
		// Even after an error: shadows recorded by then must reach their
		// broker, or they would be resolved at their due time with nothing
		// sent.
		if herr := e.handOff(ctx, sms, nat, ids, existing); err == nil {
			err = herr
		}
	}
	e.cnt.scheduled.Add(uint64(len(ids) - countTrue(existing)))
	if f := e.ev.Scheduled; f != nil && len(ids) > countTrue(existing) {
		info := ScheduledInfo{ByDest: map[string]int{}}
		for i := range ids {
			if !existing[i] {
				info.ByDest[sms[i].Dest]++
			}
		}
		f(info)
	}
	if err == nil && countTrue(existing) > 0 {
		dup := &DuplicateError{}
		for i, ex := range existing {
			if ex {
				dup.Index = append(dup.Index, i)
				dup.IDs = append(dup.IDs, ids[i])
			}
		}
		err = dup
	}
	return ids, err
}

func countTrue(bs []bool) int {
	n := 0
	for _, b := range bs {
		if b {
			n++
		}
	}
	return n
}

// appendAll appends sms in store-sized chunks. It returns the IDs of the
// chunks committed and which of them already existed (idempotency keys).
func (e *Engine) appendAll(ctx context.Context, sms []store.Message) ([]ID, []bool, error) {
	ids := make([]ID, 0, len(sms))
	existing := make([]bool, 0, len(sms))
	for len(sms) > 0 {
		n := min(len(sms), store.MaxCallMessages)
		app, err := e.appendChunk(ctx, sms[:n])
		if err != nil {
			if len(ids) > 0 {
				return ids, existing, fmt.Errorf("engine: schedule: the first %d messages were scheduled (the IDs returned), the other %d were not: %w",
					len(ids), len(sms), e.storeErr(err))
			}
			return ids, existing, fmt.Errorf("engine: schedule: %w", e.storeErr(err))
		}
		for _, a := range app {
			ids = append(ids, a.ID)
			existing = append(existing, a.Existing)
		}
		sms = sms[n:]
	}
	return ids, existing, nil
}

// storeErr maps a store error onto the engine's sentinels (and makes a
// store failure sticky).
func (e *Engine) storeErr(err error) error {
	e.checkStore(err)
	switch {
	case errors.Is(err, store.ErrFull):
		return fmt.Errorf("%w: %w", ErrFull, err)
	case errors.Is(err, store.ErrInvalid):
		return fmt.Errorf("%w: %w", ErrInvalid, err)
	case errors.Is(err, store.ErrNotFound):
		return fmt.Errorf("%w: %w", ErrNotFound, err)
	case errors.Is(err, store.ErrClosed):
		return fmt.Errorf("%w: %w", ErrClosed, err)
	case errors.Is(err, store.ErrInFlight):
		return fmt.Errorf("%w: %w", ErrInFlight, err)
	}
	return err
}

// appendChunk makes one chunk durable. The store call runs to its end even
// if ctx ends first (a write the store has taken may still land, and its
// shard is fed either way); the caller whose ctx ended hears its error.
func (e *Engine) appendChunk(ctx context.Context, chunk []store.Message) ([]store.Appended, error) {
	var app []store.Appended
	err := e.detach(ctx, "the messages may still be scheduled: retry with their idempotency keys", func(ctx context.Context) error {
		var err error
		app, err = e.st.Append(ctx, chunk)
		return err
	})
	if err != nil {
		return nil, err // app may still be written by the detached call
	}
	return app, nil
}

// detach runs f, store work that must not be abandoned half-way, to its end
// whatever happens to ctx. A caller whose ctx ends first hears ctx's error
// (with maybe, saying what may still happen); Shutdown waits for f.
func (e *Engine) detach(ctx context.Context, maybe string, f func(context.Context) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if ctx.Done() == nil { // cannot be cancelled: no goroutine needed
		return f(ctx)
	}
	done := make(chan error, 1)
	e.detached.Add(1)
	go func() {
		defer e.detached.Done()
		done <- f(context.WithoutCancel(ctx))
	}()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return fmt.Errorf("%w (%s)", ctx.Err(), maybe)
	}
}
