package engine

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hourglassmq/hourglass/transport"
	"github.com/hourglassmq/hourglass/wal"
)

// ID is a message's durable identity and cancel handle. Its text form
// (ID.String, 13 characters) is what users see; ParseID reads it back.
type ID = wal.ID

// ParseID parses the text form of an ID.
func ParseID(s string) (ID, error) { return wal.ParseID(s) }

// Header is one message header.
type Header = transport.Header

// Message is what a caller schedules.
type Message struct {
	// Dest is the destination: "local://queue", "https://host/path",
	// "nats://subject", "kafka://topic", ... Local queues must be
	// registered; other schemes need a transport in Options.Transports.
	Dest string
	// Due is when to deliver. Zero (or a time in the past) means now.
	Due time.Time
	// Expires is the deliver-by time: a message that cannot go out by then
	// is dropped and counted (Stats.Expired), not delivered. Zero = never.
	Expires time.Time
	// Key is an optional idempotency key: scheduling a key that is already
	// pending (or dead-lettered) returns the existing message's ID.
	Key string
	// Headers travel with the payload.
	Headers []Header
	// Payload is the message body.
	Payload []byte
}

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

// DeadLetter is a message that exhausted its retries or was rejected.
type DeadLetter struct {
	ID       ID
	Message  Message
	Attempts int
	Reason   string
	DeadAt   time.Time
}

// Engine is a scheduled-message delivery engine. All methods are safe for
// concurrent use.
//
// Lock order: gate (read by every API call) → destMu → queueMu; deadMu and
// recMu are leaves. Shards and dispatchers share no lock on the hot path:
// a shard's state belongs to its goroutine (shard.go), dispatchers talk to
// it through channels, and counters are atomics.
type Engine struct {
	opts   Options
	clock  Clock
	log    *slog.Logger
	store  *wal.Store // nil in memory mode
	origin time.Time
	// mono is the clock's MonoClock side, if it has one.
	mono       MonoClock
	monoOrigin time.Duration

	shards []*shard
	work   chan *batch
	dctx   context.Context
	dstop  context.CancelFunc
	wg     sync.WaitGroup // dispatchers
	// detached counts store work still running for a caller that gave up
	// (its ctx ended); Shutdown waits for it before stopping the shards.
	detached sync.WaitGroup
	rr       atomic.Uint64

	gate   sync.RWMutex // held (read) by API calls; Shutdown takes it to close
	closed bool         // guarded by gate

	destMu sync.RWMutex // guards dests
	dests  map[string]*dest

	queueMu sync.RWMutex // guards queues
	queues  map[string]*queue

	// Memory mode only.
	deadMu sync.Mutex // guards dead
	dead   map[wal.ID]DeadLetter

	batchPool sync.Pool

	busy     atomic.Int64 // messages parked or in flight + insert commands queued
	progress chan struct{}

	st          counters
	failed      atomic.Pointer[error]
	openedAt    time.Time
	openWall    int64
	loadedN     atomic.Int32
	recovery    RecoveryStats
	recMu       sync.Mutex // guards recovery and dupEstimate
	dupEstimate int64
}

func defaultParallelism() int { return runtime.GOMAXPROCS(0) }

// Open starts an engine. With Options.Dir empty it runs in memory mode:
// nothing survives a restart. With a Dir it opens (or creates) the durable
// store there and recovers: overdue messages fire first, in due order, while
// the rest of the window is still being loaded.
func Open(ctx context.Context, opts Options) (*Engine, error) {
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	opts = opts.withDefaults()
	e := &Engine{
		opts:     opts,
		clock:    opts.Clock,
		log:      opts.Logger.With("component", "engine"),
		dests:    map[string]*dest{},
		queues:   map[string]*queue{},
		dead:     map[wal.ID]DeadLetter{},
		progress: make(chan struct{}, 1),
	}
	for _, q := range opts.Queues {
		if err := e.Register(q); err != nil {
			return nil, err
		}
	}
	e.origin = e.clock.Now()
	if mc, ok := e.clock.(MonoClock); ok {
		e.mono, e.monoOrigin = mc, mc.Mono()
	}
	e.openedAt = e.origin
	e.openWall = e.origin.UnixNano()
	if opts.Dir != "" {
		so := opts.StoreOptions
		so.Dir = opts.Dir
		so.Shards = opts.Shards
		so.Horizon = opts.Window
		so.Logger = opts.Logger
		so.Now = e.clock.Now
		st, err := wal.Open(ctx, so)
		if err != nil && so.Shards == 0 && errors.Is(err, wal.ErrInvalid) && strings.Contains(err.Error(), "new store") {
			// A new store: Shards = 0 means the default, GOMAXPROCS.
			so.Shards = min(runtime.GOMAXPROCS(0), wal.MaxShards)
			st, err = wal.Open(ctx, so)
		}
		if err != nil {
			return nil, fmt.Errorf("engine: open store: %w", err)
		}
		e.store = st
		e.opts.Shards = st.Shards()
		rec := st.Recovery()
		e.recovery.Store = rec.Duration
		e.recovery.Pending = rec.BlockPending + rec.TimedPending
	}
	e.work = make(chan *batch, e.opts.Dispatchers)
	e.dctx, e.dstop = context.WithCancel(context.Background())
	for i := 0; i < e.opts.Shards; i++ {
		s, err := newShard(e, i)
		if err != nil {
			if e.store != nil {
				_ = e.store.Close()
			}
			e.dstop()
			return nil, err
		}
		e.shards = append(e.shards, s)
	}
	for range e.opts.Dispatchers {
		e.wg.Add(1)
		go e.dispatcher()
	}
	for _, s := range e.shards {
		go s.run()
	}
	e.log.Info("engine: open", "options", e.opts.String())
	return e, nil
}

// nowNs returns wall-clock unix nanoseconds and monotonic nanoseconds since
// Open.
func (e *Engine) nowNs() (wall, mono int64) {
	t := e.clock.Now()
	if e.mono != nil {
		return t.UnixNano(), int64(e.mono.Mono() - e.monoOrigin)
	}
	return t.UnixNano(), int64(t.Sub(e.origin))
}

func (e *Engine) enter() error {
	e.gate.RLock()
	if e.closed {
		e.gate.RUnlock()
		return ErrClosed
	}
	if p := e.failed.Load(); p != nil {
		e.gate.RUnlock()
		return *p
	}
	return nil
}

func (e *Engine) leave() { e.gate.RUnlock() }

// Err returns the sticky store failure, or nil.
func (e *Engine) Err() error {
	if p := e.failed.Load(); p != nil {
		return *p
	}
	return nil
}

func (e *Engine) failStore(err error) {
	werr := fmt.Errorf("%w: %w", ErrStore, err)
	if e.failed.CompareAndSwap(nil, &werr) {
		e.log.Error("engine: store failed; refusing further work", "err", err)
	}
}

func (e *Engine) busyAdd(n int) { e.busy.Add(int64(n)) }

func (e *Engine) busyDone(n int) {
	if n == 0 {
		return
	}
	e.busy.Add(-int64(n))
	select {
	case e.progress <- struct{}{}:
	default:
	}
}

// prepare validates m and converts it to the store's form with its shard.
func (e *Engine) prepare(m *Message, now time.Time) (wal.Message, error) {
	if m.Dest == "" {
		return wal.Message{}, invalidf("message has no Dest")
	}
	if err := e.validateDest(m.Dest); err != nil {
		return wal.Message{}, err
	}
	if len(m.Payload) > e.opts.MaxPayload {
		return wal.Message{}, invalidf("payload is %d bytes, more than MaxPayload %d", len(m.Payload), e.opts.MaxPayload)
	}
	if len(m.Key) > wal.MaxKeyLen || len(m.Dest) > wal.MaxDestLen || len(m.Headers) > wal.MaxHeaders {
		return wal.Message{}, invalidf("key, destination or headers too large (limits %d B, %d B, %d headers)", wal.MaxKeyLen, wal.MaxDestLen, wal.MaxHeaders)
	}
	if err := transport.ValidateHeaders(m.Headers); err != nil {
		return wal.Message{}, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	wall := now.UnixNano()
	due := wall
	if !m.Due.IsZero() {
		due = m.Due.UnixNano()
		if due < 0 {
			due = 0
		}
	}
	var exp int64
	if !m.Expires.IsZero() {
		exp = m.Expires.UnixNano()
		if exp <= 0 {
			return wal.Message{}, invalidf("Expires %v is before 1970", m.Expires)
		}
	}
	wm := wal.Message{
		Due: due, Expires: exp, Dest: m.Dest, Key: m.Key,
		Headers: toWalHeaders(m.Headers), Payload: m.Payload,
	}
	wm.Shard = e.pickShard(m)
	return wm, nil
}

// validateDest checks dest before any per-destination state is created for
// it, so invalid destinations leave nothing behind.
func (e *Engine) validateDest(dest string) error {
	if i := strings.Index(dest, "://"); i > 0 && strings.EqualFold(dest[:i], "local") {
		if e.queueFor(dest[i+3:]) == nil {
			return fmt.Errorf("%w: %q", ErrUnknownQueue, dest)
		}
		return nil
	}
	if e.opts.Transports == nil {
		return fmt.Errorf("%w: destination %q: no transports configured (only local:// queues)", ErrInvalid, dest)
	}
	if err := e.opts.Transports.Validate(dest); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	return nil
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
func (e *Engine) pickShard(m *Message) int {
	n := uint64(len(e.shards))
	if n == 0 {
		n = uint64(e.opts.Shards)
	}
	if d := e.destFor(m.Dest); d.local != "" {
		if q := e.queueFor(d.local); q != nil && q.Ordered {
			return int(shardHash(m.Dest) % n)
		}
	}
	if m.Key != "" {
		return int(shardHash(m.Key) % n)
	}
	return int(e.rr.Add(1) % n)
}

// Schedule schedules m and returns its ID once it is durable (memory mode:
// once it is in its shard's wheel). If m.Key is already known, the existing
// message's ID is returned and nothing new is scheduled.
func (e *Engine) Schedule(ctx context.Context, m Message) (ID, error) {
	ids, err := e.ScheduleBatch(ctx, []Message{m})
	if err != nil {
		return 0, err
	}
	return ids[0], nil
}

// ScheduleIn schedules m due d from now.
func (e *Engine) ScheduleIn(ctx context.Context, d time.Duration, m Message) (ID, error) {
	m.Due = e.clock.Now().Add(d)
	return e.Schedule(ctx, m)
}

// ScheduleAt schedules m due at t.
func (e *Engine) ScheduleAt(ctx context.Context, t time.Time, m Message) (ID, error) {
	m.Due = t
	return e.Schedule(ctx, m)
}

// ScheduleBatch schedules many messages with one commit (durable mode: one
// group commit per 16384 messages) and returns their IDs in order. Invalid
// input fails the whole call before anything is scheduled. A durable call
// that fails part-way returns, with its error, the IDs of the leading
// messages already committed: those are scheduled, the rest are not (or, if
// ctx ended, may still be: retry them with their idempotency keys).
func (e *Engine) ScheduleBatch(ctx context.Context, msgs []Message) ([]ID, error) {
	if err := e.enter(); err != nil {
		return nil, err
	}
	defer e.leave()
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	now := e.clock.Now()
	wms := make([]wal.Message, len(msgs))
	for i := range msgs {
		wm, err := e.prepare(&msgs[i], now)
		if err != nil {
			if len(msgs) > 1 {
				err = fmt.Errorf("message %d: %w", i, err)
			}
			return nil, err
		}
		wms[i] = wm
	}
	nat := e.markNative(wms, now.UnixNano())
	var ids []ID
	var old []bool
	var err error
	if e.store == nil {
		ids, old, err = e.insertMemory(ctx, wms, true)
	} else {
		ids, err = e.appendDurable(ctx, wms)
		if nat != nil {
			old = make([]bool, len(ids))
			for i := range ids {
				old[i] = wms[i].ID == 0 // appendDurable zeroes the IDs of existing messages
			}
		}
	}
	if nat != nil {
		// Even after an error: shadows recorded by then (a memory shard's
		// ErrFull, a later chunk's store failure) must reach their broker,
		// or they would be resolved at their due time with nothing sent.
		if herr := e.handOff(ctx, wms, nat, ids, old); err == nil {
			err = herr
		}
	}
	if err == nil {
		e.st.scheduled.Add(uint64(len(msgs)))
	} else if e.store != nil {
		e.st.scheduled.Add(uint64(len(ids))) // the committed prefix
	}
	return ids, err
}

func (e *Engine) appendDurable(ctx context.Context, wms []wal.Message) ([]ID, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("engine: schedule: %w", err)
	}
	ids := make([]ID, 0, len(wms))
	for len(wms) > 0 {
		n := min(len(wms), wal.MaxCallMessages)
		chunk := wms[:n]
		wms = wms[n:]
		app, err := e.appendChunk(ctx, chunk)
		if err != nil {
			if errors.Is(err, wal.ErrFailed) {
				e.failStore(err)
			}
			// ids holds the earlier chunks' IDs (they are durable).
			return ids, fmt.Errorf("engine: schedule: %w", err)
		}
		for i := range app {
			ids = append(ids, app[i].ID)
		}
	}
	return ids, nil
}

// appendChunk makes one chunk durable and hands its new messages to their
// shards. The store write and the hand-off run to the end even if ctx ends
// first: a write the store had already taken may still land, and a message
// that lands must reach its shard, or nothing would load it before a restart
// (the shard's window has moved on). The caller whose ctx ended hears its
// error; a retry with the same idempotency key finds the message.
func (e *Engine) appendChunk(ctx context.Context, chunk []wal.Message) ([]wal.Appended, error) {
	type result struct {
		app []wal.Appended
		err error
	}
	run := func() result {
		app, err := e.store.Append(context.WithoutCancel(ctx), chunk)
		if err == nil {
			for i := range chunk {
				if app[i].Existing {
					chunk[i].ID = 0 // already known: its shard has it, or will load it
				} else {
					chunk[i].ID = app[i].ID
				}
			}
			e.postInserts(chunk)
		}
		return result{app, err}
	}
	if ctx.Done() == nil { // cannot be cancelled: no goroutine needed
		r := run()
		return r.app, r.err
	}
	done := make(chan result, 1)
	e.detached.Add(1)
	go func() {
		defer e.detached.Done()
		done <- run()
	}()
	select {
	case r := <-done:
		return r.app, r.err
	case <-ctx.Done():
		return nil, fmt.Errorf("%w (the messages may still be scheduled: retry with their idempotency keys)", ctx.Err())
	}
}

// postInserts hands newly durable messages (ID != 0) to their shards, which
// take them into RAM if they fall inside the loaded window.
func (e *Engine) postInserts(wms []wal.Message) {
	if len(e.shards) == 1 && !slices.ContainsFunc(wms, func(m wal.Message) bool { return m.ID == 0 }) {
		e.postShard(0, wms, nil)
		return
	}
	per := make([][]wal.Message, len(e.shards))
	for _, m := range wms {
		if m.ID != 0 {
			per[m.Shard] = append(per[m.Shard], m)
		}
	}
	for i, p := range per {
		if len(p) > 0 {
			e.postShard(i, p, nil)
		}
	}
}

func (e *Engine) postShard(i int, wms []wal.Message, reply chan reply) {
	e.busyAdd(1)
	e.shards[i].cmds <- cmd{kind: cmdInsert, msgs: wms, reply: reply}
}

var replyPool = sync.Pool{New: func() any { return make(chan reply, 1) }}

// insertMemory inserts into the shards' wheels, which assign the IDs
// (honouring idempotency keys); with wait it returns only once every shard
// has inserted. An ordered queue's keyed messages live on the queue's shard,
// so in memory mode their keys are remembered per shard.
func (e *Engine) insertMemory(ctx context.Context, wms []wal.Message, wait bool) ([]ID, []bool, error) {
	n := len(e.shards)
	per := make([][]wal.Message, n)
	var pos [][]int
	if wait {
		pos = make([][]int, n)
	}
	for i := range wms {
		sh := wms[i].Shard
		if per[sh] == nil {
			per[sh] = make([]wal.Message, 0, len(wms)/n+8)
			if wait {
				pos[sh] = make([]int, 0, len(wms)/n+8)
			}
		}
		if e.shards[sh].nlive.Load() >= int64(e.opts.MaxPending) {
			return nil, nil, fmt.Errorf("%w: shard %d holds MaxPending = %d messages", ErrFull, sh, e.opts.MaxPending)
		}
		per[sh] = append(per[sh], wms[i])
		if wait {
			pos[sh] = append(pos[sh], i)
		}
	}
	var chs []chan reply
	var shardsOf []int
	for i, p := range per {
		if len(p) == 0 {
			continue
		}
		var ch chan reply
		if wait {
			ch = replyPool.Get().(chan reply)
			chs = append(chs, ch)
			shardsOf = append(shardsOf, i)
		}
		e.postShard(i, p, ch)
	}
	if !wait {
		return nil, nil, nil
	}
	ids := make([]ID, len(wms))
	old := make([]bool, len(wms))
	var err error
	for k, ch := range chs {
		r := <-ch
		replyPool.Put(ch)
		if r.err != nil && err == nil {
			err = r.err
		}
		for j, id := range r.ids {
			ids[pos[shardsOf[k]][j]] = id
			old[pos[shardsOf[k]][j]] = r.old[j]
		}
	}
	return ids, old, err
}
