package engine

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hourglassmq/hourglass/store"
	"github.com/hourglassmq/hourglass/transport"
)

// ID is a message's durable identity and cancel handle. Its text form
// (ID.String, 13 characters) is what users see; ParseID reads it back.
type ID = store.ID

// ParseID parses the text form of an ID.
func ParseID(s string) (ID, error) {
	id, err := store.ParseID(s)
	if err != nil {
		return 0, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	return id, nil
}

// Header is one message header.
type Header = transport.Header

// Engine is a scheduled-message delivery engine. All methods are safe for
// concurrent use.
//
// Lock order: gate (read by every API call) → destMu → queueMu; recMu is a
// leaf. Shards and dispatchers share no lock on the hot path: a shard's
// state belongs to its goroutine (shard.go), dispatchers talk to it through
// channels, and counters are atomics.
type Engine struct {
	opts  Options
	val   *validator
	clock Clock
	log   *slog.Logger
	ev    Events
	st    store.Store
	// The wheels run on a monotonic timeline that starts at Open: the
	// clock's MonoClock side if it has one, else Now().Sub(origin).
	origin     time.Time
	mono       MonoClock
	monoOrigin time.Duration

	// shards[i] is shard i's runtime while the store has it attached here.
	shards []atomic.Pointer[shard]
	work   chan *batch
	// dctx ends when deliveries must stop (Close, or Shutdown's ctx); quit
	// closes once the engine is done.
	dctx        context.Context
	dstop       context.CancelFunc
	dispatchers sync.WaitGroup
	// detached counts store work still running for a caller that gave up
	// (its ctx ended); Shutdown waits for it before stopping the shards.
	detached sync.WaitGroup
	rr       atomic.Uint64

	gate   sync.RWMutex // held (read) by API calls; Shutdown takes it to close
	closed bool         // guarded by gate
	done   chan struct{}

	destMu          sync.RWMutex // guards dests and destsAfterSweep
	dests           map[string]*dest
	destsAfterSweep int

	queueMu sync.RWMutex // guards queues
	queues  map[string]*queue
	// handlerGoroutines holds the goroutine IDs of queue workers.
	handlerGoroutines sync.Map

	batchPool sync.Pool
	replies   sync.Pool // chan reply, for shard.ask

	// busy counts messages taken off a wheel whose outcome is not yet
	// applied; progress is signalled whenever it drops, and epoch counts
	// the drops (WaitIdle's proof that nothing finished while it looked).
	busy     atomic.Int64
	epoch    atomic.Uint64
	progress chan struct{}

	cnt      counters
	pb       *pushBack
	failed   atomic.Pointer[error]
	openedAt time.Time
	openWall int64
	loadedN  atomic.Int32
	recMu    sync.Mutex // guards recovery and dupEstimate
	recovery RecoveryStats
	dupEst   int64
}

// Open starts an engine on the store Options names (in memory by default)
// and recovers: overdue messages fire first, in due order, while the rest
// of the window is still being loaded.
func Open(ctx context.Context, opts Options) (*Engine, error) {
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	opts = opts.withDefaults()
	e := &Engine{
		opts:     opts,
		clock:    opts.Clock,
		log:      opts.Logger.With("component", "engine"),
		ev:       opts.Events,
		dests:    map[string]*dest{},
		queues:   map[string]*queue{},
		progress: make(chan struct{}, 1),
		done:     make(chan struct{}),
	}
	e.val = e.validator()
	e.pb = &pushBack{limit: max(0, int64(opts.PushBackLag))}
	e.pb.wheels = newGate(e.cnt.fired.Load, nil)
	e.dctx, e.dstop = context.WithCancel(context.Background())
	e.origin = e.clock.Now()
	if mc, ok := e.clock.(MonoClock); ok {
		_, e.monoOrigin = mc.NowMono()
		e.mono = mc
	}
	e.openedAt, e.openWall = e.origin, e.origin.UnixNano()
	for _, q := range opts.Queues {
		if err := e.register(q); err != nil {
			e.dstop()
			return nil, err
		}
	}
	env := store.Env{
		Shards: opts.Shards, Window: opts.Window, MaxPayload: opts.MaxPayload,
		Capacity: opts.MaxPending, Logger: opts.Logger, Now: e.clock.Now,
		Events: store.Events{Failed: e.storeFailed, WriteStall: e.writeStall},
	}
	st, err := opts.opener().OpenStore(ctx, env)
	if err != nil {
		e.dstop()
		return nil, fmt.Errorf("engine: open store: %w", err)
	}
	e.st = st
	e.opts.Shards = st.Shards()
	e.recovery.Store = max(1, e.clock.Now().Sub(e.origin))
	e.recovery.Pending = st.Stats().PendingTotal
	e.shards = make([]atomic.Pointer[shard], e.opts.Shards)
	e.work = make(chan *batch, e.opts.Dispatchers)
	for range e.opts.Dispatchers {
		e.dispatchers.Add(1)
		go e.dispatcher()
	}
	if err := st.Start(ctx, owner{e}); err != nil {
		e.gate.Lock()
		e.closed = true
		e.gate.Unlock()
		err = fmt.Errorf("engine: start store: %w", err)
		return nil, errors.Join(err, e.shutdown(context.Background()))
	}
	e.log.Info("engine: open", "options", e.opts.String())
	return e, nil
}

// owner is the engine's side of the store contract (store.Owner). It is a
// separate type so that Attach, Detach and Feed stay off the Engine's API.
type owner struct{ e *Engine }

// Attach starts shard i's runtime.
func (o owner) Attach(i int) {
	e := o.e
	s := newShard(e, i)
	if !e.shards[i].CompareAndSwap(nil, s) {
		return // already attached
	}
	go s.run()
	if f := e.ev.ShardAttached; f != nil {
		f(i)
	}
}

// Detach stops shard i: no more due messages, in-flight deliveries finish
// and commit (until ctx ends), then the runtime exits.
func (o owner) Detach(ctx context.Context, i int) {
	e := o.e
	s := e.shards[i].Load()
	if s == nil {
		return
	}
	s.ask(cmd{kind: cmdStop})
wait:
	for s.busy.Load() > 0 {
		select {
		case <-e.progress:
		case <-ctx.Done():
			break wait // what is still in flight finishes on its own
		}
	}
	s.exit()
	e.shards[i].Store(nil)
	if f := e.ev.ShardDetached; f != nil {
		f(i)
	}
}

// Claim claims id on its shard for a change the store makes for another
// process; release ends the claim, restoring m if it is still pending.
func (o owner) Claim(ctx context.Context, id store.ID) (func(m *store.Message), error) {
	s, err := o.e.shardOf(id)
	if err != nil || s == nil {
		return nil, fmt.Errorf("engine: claim %s: shard %d is not attached here", id, id.Shard())
	}
	ch := make(chan reply, 1)
	select {
	case s.cmds <- cmd{kind: cmdClaim, id: id, reply: ch}:
	case <-s.done:
		return nil, fmt.Errorf("engine: claim %s: %w", id, ErrClosed)
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	var r reply
	select {
	case r = <-ch:
	case <-s.done:
		return nil, fmt.Errorf("engine: claim %s: %w", id, ErrClosed)
	case <-ctx.Done():
		// The claim may still be granted: release it when it is.
		go func() {
			if r := <-ch; r.err == nil {
				o.e.restoreFromStore(s, id)
			}
		}()
		return nil, ctx.Err()
	}
	if r.err != nil {
		return nil, fmt.Errorf("engine: claim %s: %w: %w", id, store.ErrInFlight, r.err)
	}
	return func(m *store.Message) {
		c := cmd{kind: cmdRelease, id: id}
		if m != nil {
			c.restore, c.m = true, *m
		}
		s.tell(c)
	}, nil
}

// Feed queues a change for shard i's runtime; a shard not attached here
// has nothing to update (it scans the store when it attaches).
func (o owner) Feed(i int, c store.Change) {
	if i < 0 || i >= len(o.e.shards) {
		return
	}
	if s := o.e.shards[i].Load(); s != nil {
		s.feed(c)
	}
}

// nowNs returns wall-clock unix nanoseconds and monotonic nanoseconds since
// Open.
func (e *Engine) nowNs() (wall, mono int64) {
	if e.mono != nil {
		t, m := e.mono.NowMono()
		return t.UnixNano(), int64(m - e.monoOrigin)
	}
	t := e.clock.Now()
	return t.UnixNano(), int64(t.Sub(e.origin))
}

// enter admits an API call: it holds the gate (read) until leave.
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

// Err returns the sticky store failure, or nil. Once it is set the engine
// refuses further work: close it and open it again (a durable store
// recovers everything acknowledged).
func (e *Engine) Err() error {
	if p := e.failed.Load(); p != nil {
		return *p
	}
	return nil
}

// failStore makes a store failure sticky.
func (e *Engine) failStore(err error) {
	werr := fmt.Errorf("%w: %w (close the engine and open it again)", ErrStore, err)
	if e.failed.CompareAndSwap(nil, &werr) {
		e.stopPushBack()
		e.log.Error("engine: store failed; refusing further work", "err", err)
		if f := e.ev.StoreFailed; f != nil {
			f(err)
		}
	}
}

// checkStore makes err sticky if it is the store's failure.
func (e *Engine) checkStore(err error) {
	if errors.Is(err, store.ErrFailed) {
		e.failStore(err)
	}
}

func (e *Engine) storeFailed(err error) { e.failStore(err) }

func (e *Engine) writeStall(begin bool, reason string) {
	if begin {
		e.log.Warn("engine: store writes stalled", "reason", reason)
	}
	if f := e.ev.WriteStall; f != nil {
		f(WriteStallInfo{Begin: begin, Reason: reason})
	}
}

func (e *Engine) busyAdd(n int) { e.busy.Add(int64(n)) }

func (e *Engine) busyDone(n int) {
	if n == 0 {
		return
	}
	e.busy.Add(-int64(n))
	e.epoch.Add(1)
	select {
	case e.progress <- struct{}{}:
	default:
	}
}

// attached returns the runtimes of the shards attached here.
func (e *Engine) attached() []*shard {
	out := make([]*shard, 0, len(e.shards))
	for i := range e.shards {
		if s := e.shards[i].Load(); s != nil {
			out = append(out, s)
		}
	}
	return out
}

// Shutdown stops taking due messages off the wheels, waits for the
// deliveries in flight to finish and their outcomes to be committed, then
// stops the engine and closes the store. If ctx ends first, handlers and
// sends still running are cancelled and abandoned (their messages stay
// pending in a durable store and are delivered again after a restart; a
// memory store loses them), and Shutdown returns ctx's error once the store
// is closed, even if a handler ignores its ctx. Pending messages stay in a
// durable store.
//
// Called from a handler, Shutdown cannot wait for that handler: it starts
// the shutdown and returns nil at once; the engine finishes closing after
// the handler returns, or when ctx ends (Done tells when). A second call
// returns ErrClosed.
func (e *Engine) Shutdown(ctx context.Context) error {
	e.stopPushBack() // callers waiting for push back hold the gate (read)
	e.gate.Lock()
	if e.closed {
		e.gate.Unlock()
		return ErrClosed
	}
	e.closed = true
	e.gate.Unlock()
	if e.inHandler() {
		// It cannot wait here for its own handler; ctx still bounds the
		// wait for the others (Close's ends at once).
		go func() { _ = e.shutdown(ctx) }()
		return nil
	}
	return e.shutdown(ctx)
}

// Close stops at once: deliveries in flight are cancelled and abandoned
// (see Shutdown), and the store is closed.
func (e *Engine) Close() error {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	err := e.Shutdown(ctx)
	if errors.Is(err, context.Canceled) {
		err = nil
	}
	return err
}

// Done returns a channel closed once the engine has shut down completely.
func (e *Engine) Done() <-chan struct{} { return e.done }

func (e *Engine) shutdown(ctx context.Context) error {
	defer close(e.done)
	var ctxErr error
	// Work that callers gave up on still reaches the store and the shards.
	detached := make(chan struct{})
	go func() { e.detached.Wait(); close(detached) }()
	select {
	case <-detached:
	case <-ctx.Done():
		ctxErr = ctx.Err()
	}
	shards := e.attached()
	for _, s := range shards {
		s.ask(cmd{kind: cmdStop})
	}
	for ctxErr == nil && e.busy.Load() > 0 {
		select {
		case <-e.progress:
		case <-ctx.Done():
			ctxErr = ctx.Err()
		}
	}
	e.dstop() // cancels handlers and sends still running
	for _, s := range shards {
		s.exit()
		e.shards[s.n].Store(nil)
		if f := e.ev.ShardDetached; f != nil {
			f(s.n)
		}
	}
	close(e.work)
	if ctxErr == nil {
		e.dispatchers.Wait()
	}
	err := e.st.Close()
	if err != nil && !errors.Is(err, store.ErrClosed) {
		err = fmt.Errorf("engine: close store: %w", err)
	} else {
		err = nil
	}
	e.log.Info("engine: closed")
	return errors.Join(ctxErr, err)
}

// WaitIdle waits until the engine is quiet: every command and store change
// queued for a shard is processed, every window is loaded up to the clock's
// now, every message due by then has been taken off its wheel, and every
// outcome is committed and applied. Under a FakeClock the engine then stays
// quiet until the clock moves, so tests call WaitIdle after Advance instead
// of sleeping. Under load with a real clock it may not return before ctx
// ends.
func (e *Engine) WaitIdle(ctx context.Context) error {
	if err := e.enter(); err != nil {
		return err
	}
	defer e.leave()
	for {
		// Quiet means: no message in flight, every shard quiet when its
		// barrier ran, and nothing finished meanwhile (a delivery that
		// finished could have cascaded to a shard already passed).
		ep := e.epoch.Load()
		if e.busy.Load() == 0 {
			if e.barrier() && e.busy.Load() == 0 && e.epoch.Load() == ep {
				return nil
			}
			if err := ctx.Err(); err != nil {
				return fmt.Errorf("engine: wait idle: %w", err)
			}
			continue // something moved: look again
		}
		select {
		case <-e.progress:
		case <-ctx.Done():
			return fmt.Errorf("engine: wait idle: %w (%d messages in flight)", ctx.Err(), e.busy.Load())
		}
	}
}

// barrier makes every attached shard process what is queued for it and
// everything due now; it reports whether each was quiet already.
func (e *Engine) barrier() bool {
	quiet := true
	for _, s := range e.attached() {
		if !s.ask(cmd{kind: cmdBarrier}).found {
			quiet = false
		}
	}
	return quiet
}

// addOverdue counts messages found overdue at recovery into the duplicate
// estimate, capped by how many could have been in flight at once.
func (e *Engine) addOverdue(n int) {
	capacity := int64(e.opts.Dispatchers*e.opts.MaxBatch + len(e.shards)*e.opts.MaxReady)
	e.recMu.Lock()
	e.dupEst = min(capacity, e.dupEst+int64(n))
	e.recMu.Unlock()
}

func (e *Engine) markFirstFire() {
	e.recMu.Lock()
	if e.recovery.FirstFire == 0 {
		e.recovery.FirstFire = max(1, e.clock.Now().Sub(e.openedAt))
	}
	e.recMu.Unlock()
}

func (e *Engine) markLoaded() {
	if int(e.loadedN.Add(1)) != len(e.shards) {
		return
	}
	e.recMu.Lock()
	e.recovery.FullLoad = max(1, e.clock.Now().Sub(e.openedAt))
	rec := e.recovery
	e.recMu.Unlock()
	if f := e.ev.RecoveryDone; f != nil {
		f(rec)
	}
}
