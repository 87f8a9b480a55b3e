package engine

// The engine-level model test, in the style of
// wheel.TestModel: a byte string decodes into a sequence of operations
// (Schedule, ScheduleBatch, Cancel, Reschedule, ReplayDead, PurgeDead,
// clock advances, wall-clock steps back, reopen), applied to an engine on a
// FakeClock and to a plain reference model. Handlers act by a pure function
// of (seed, message, attempt): succeed, succeed and cascade, fail, RetryIn,
// panic, reject, or cascade then fail. After every operation the engine is
// settled (WaitIdle) and compared with the model:
//
//   - deliveries: exactly the (message, attempt) pairs the model expects,
//     none early (the handler's clock reading is at or after the due time,
//     which is the model's), none twice, none lost;
//   - List, Get, GetByKey, DeadLetters and Stats agree with the model;
//   - with a small MaxPending and a durable store, RAM stays bounded.
//
// Reopen keeps everything with a durable store; with the memory store the
// model forgets everything, and no ID of an earlier life may name a message
// of the new one.
//
// TestModel runs a few seconds by default; -engine.model.long runs minutes;
// -engine.model.seed=N reruns one failing sequence. FuzzEngine runs the same
// decoder over arbitrary bytes (seed corpus in testdata/fuzz/FuzzEngine).

import (
	"cmp"
	"context"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"hash/fnv"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/hourglassmq/hourglass/store"
	"github.com/hourglassmq/hourglass/wal"
)

var (
	flagModelSeed = flag.Uint64("engine.model.seed", 0, "seed for TestModel (0: a fresh one, printed on failure)")
	flagModelLong = flag.Bool("engine.model.long", false, "run TestModel for minutes rather than seconds")
)

// Model parameters: the engine's retry policy and the tables operations
// pick from. Every time is a whole number of milliseconds (the tick), so
// the model can be exact about when a message fires.
var (
	modelDelays      = []time.Duration{time.Second, 3 * time.Second}
	modelMaxAttempts = 4
	dueOffsets       = []time.Duration{-time.Hour, 0, time.Millisecond, 500 * time.Millisecond, 1999 * time.Millisecond,
		2 * time.Second, 2500 * time.Millisecond, 61 * time.Second, 10 * time.Minute, 3 * time.Hour}
	expiresAfter  = []time.Duration{0, 500 * time.Millisecond, 5 * time.Second}
	advanceBy     = []time.Duration{time.Millisecond, 300 * time.Millisecond, time.Second, 2 * time.Second, 5 * time.Second, 61 * time.Second, 10 * time.Minute, 3 * time.Hour}
	stepBackBy    = []time.Duration{time.Millisecond, 700 * time.Millisecond, 3 * time.Second, 30 * time.Second}
	retryInDelays = []time.Duration{0, 500 * time.Millisecond, 2 * time.Second, 2 * time.Minute, 30 * time.Minute}
	cascadeDelays = []time.Duration{-1, time.Millisecond, 700 * time.Millisecond, 3 * time.Second, 90 * time.Second, 10 * time.Minute} // -1: Send
	modelKeys     = []string{"k0", "k1", "k2", "k3"}
	modelDests    = []string{"local://q", "local://o"}
)

// action is what a handler does on one attempt.
type actKind uint8

const (
	actOK actKind = iota
	actCascade
	actFail
	actRetryIn
	actPanic
	actReject
	actCascadeFail
)

type action struct {
	kind     actKind
	retryIn  time.Duration
	children []time.Duration // cascade delays; -1 = Send
}

// behave is the handlers' script: a pure function of the run's seed, the
// message's name and the attempt, so the model knows what the handler did.
func behave(seed uint64, name string, attempt int) action {
	f := fnv.New64a()
	var b [12]byte
	binary.LittleEndian.PutUint64(b[:], seed)
	binary.LittleEndian.PutUint32(b[8:], uint32(attempt))
	f.Write(b[:])
	f.Write([]byte(name))
	h := f.Sum64()
	depth := strings.Count(name, ".")
	k := h % 100
	h >>= 8
	children := func() []time.Duration {
		out := make([]time.Duration, 1+h%3)
		for i := range out {
			out[i] = cascadeDelays[(h>>(4+4*i))%uint64(len(cascadeDelays))]
		}
		return out
	}
	switch {
	case k < 45:
		return action{kind: actOK}
	case k < 57:
		if depth >= 2 {
			return action{kind: actOK}
		}
		return action{kind: actCascade, children: children()}
	case k < 69:
		return action{kind: actFail}
	case k < 79:
		return action{kind: actRetryIn, retryIn: retryInDelays[h%uint64(len(retryInDelays))]}
	case k < 84:
		return action{kind: actPanic}
	case k < 88:
		return action{kind: actReject}
	case k < 94:
		return action{kind: actCascadeFail, children: children()}
	}
	return action{kind: actOK}
}

type mState uint8

const (
	mPending mState = iota
	mDead
	mGone // delivered, cancelled or expired
)

type modelMsg struct {
	name    string
	id      ID
	state   mState
	due     int64
	expires int64
	attempt int
	key     string
	dest    string
	life    int // the process life it was scheduled in (memory reopen)
	replays int // ReplayDead restarts its attempts: a new generation
}

// expected is one delivery the model expects.
type expected struct {
	name    string
	attempt int
	due     int64
}

// model is the reference: what is pending, dead and gone, and which
// deliveries the engine owes since the last check.
type model struct {
	now    int64
	msgs   map[string]*modelMsg
	order  []string // names in creation order, for picking
	byID   map[ID]*modelMsg
	keys   map[string]*modelMsg
	expect []expected
	seq    int
	life   int
	seed   uint64
	// touched lists messages whose state changed since the last check
	// (Get checks them all, and a rotating sample of the rest).
	touched []*modelMsg
	sample  int
}

func newModel(now int64, seed uint64) *model {
	return &model{now: now, msgs: map[string]*modelMsg{}, byID: map[ID]*modelMsg{}, keys: map[string]*modelMsg{}, seed: seed}
}

func (m *model) add(name, dest, key string, due, expires int64) *modelMsg {
	x := &modelMsg{name: name, dest: dest, key: key, due: due, expires: expires, life: m.life}
	m.msgs[name] = x
	m.order = append(m.order, name)
	if key != "" {
		m.keys[key] = x
	}
	return x
}

func (m *model) gone(x *modelMsg) {
	m.touched = append(m.touched, x)
	x.state = mGone
	if x.key != "" && m.keys[x.key] == x {
		delete(m.keys, x.key)
	}
}

// failed applies a failed attempt: dead past MaxAttempts, expired if the
// retry would be after Expires, else pending at now+delay.
func (m *model) failed(x *modelMsg, attempt int, delay time.Duration) {
	x.attempt = attempt
	if attempt >= modelMaxAttempts {
		x.state = mDead
		return
	}
	due := m.now + int64(max(delay, 0))
	if x.expires != 0 && due > x.expires {
		m.gone(x)
		return
	}
	x.due = due
}

// fire delivers everything due by now, to a fixpoint (retries and cascades
// due now fire in the same settle).
func (m *model) fire() {
	for {
		var due []*modelMsg
		for _, name := range m.order {
			if x := m.msgs[name]; x.state == mPending && x.due <= m.now {
				due = append(due, x)
			}
		}
		if len(due) == 0 {
			return
		}
		for _, x := range due {
			if x.expires != 0 && m.now > x.expires {
				m.gone(x)
				continue
			}
			attempt := x.attempt + 1
			m.expect = append(m.expect, expected{x.name, attempt, x.due})
			a := behave(m.seed, x.name, attempt)
			switch a.kind {
			case actOK, actCascade:
				x.attempt = attempt
				m.gone(x)
				for i, d := range a.children {
					m.add(fmt.Sprintf("%s.%d", x.name, i), "local://q", "", m.now+int64(max(d, 0)), 0)
				}
			case actFail, actPanic, actCascadeFail:
				m.failed(x, attempt, modelDelays[min(attempt-1, len(modelDelays)-1)])
			case actRetryIn:
				m.failed(x, attempt, a.retryIn)
			case actReject:
				x.attempt = attempt
				x.state = mDead
			}
		}
	}
}

// forget is a memory store's reopen: nothing survives.
func (m *model) forget() {
	for _, x := range m.msgs {
		if x.state != mGone {
			x.state = mGone
		}
	}
	clear(m.keys)
	m.life++
}

type logged struct {
	name    string
	attempt int
	id      ID
	due     time.Time
	at      time.Time
}

// modelRun is one engine against one model.
type modelRun struct {
	mode       string
	clk        *FakeClock
	fs         vfs.FS
	opts       Options
	e          *Engine
	m          *model
	maxPending int

	mu         sync.Mutex // guards log and handlerErr
	log        []logged
	handlerErr error

	delivered map[string]bool // name#attempt/replays, over every life
	oldIDs    []ID            // memory: IDs of earlier lives
	ops       []string
}

func (r *modelRun) handler(ctx context.Context, d *Delivery) error {
	name := string(d.Payload)
	r.mu.Lock()
	r.log = append(r.log, logged{name, d.Attempt, d.ID, d.Due, r.clk.Now()})
	r.mu.Unlock()
	a := behave(r.m.seed, name, d.Attempt)
	cascade := func() error {
		for i, delay := range a.children {
			c := Message{Dest: "local://q", Payload: []byte(fmt.Sprintf("%s.%d", name, i))}
			var err error
			if delay < 0 {
				err = d.Send(c)
			} else {
				err = d.ScheduleIn(delay, c)
			}
			if err != nil {
				r.mu.Lock()
				r.handlerErr = fmt.Errorf("%s attempt %d: cascade %d: %w", name, d.Attempt, i, err)
				r.mu.Unlock()
				return err
			}
		}
		return nil
	}
	switch a.kind {
	case actCascade:
		return cascade()
	case actFail:
		return errors.New("model: fail")
	case actRetryIn:
		return RetryIn(a.retryIn, errors.New("model: retry in"))
	case actPanic:
		panic("model: panic")
	case actReject:
		return Reject(errors.New("model: reject"))
	case actCascadeFail:
		_ = cascade()
		return errors.New("model: cascaded, then failed")
	}
	return nil
}

func (r *modelRun) open() error {
	e, err := Open(context.Background(), r.opts)
	if err != nil {
		return fmt.Errorf("open: %w", err)
	}
	r.e = e
	return nil
}

func (r *modelRun) close() {
	if r.e != nil {
		_ = r.e.Close()
		r.e = nil
	}
}

func (r *modelRun) settle() error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return r.e.WaitIdle(ctx)
}

// opReader turns bytes into operation parameters; past the end it yields 0.
type modelReader struct{ b []byte }

func (r *modelReader) byte() byte {
	if len(r.b) == 0 {
		return 0
	}
	c := r.b[0]
	r.b = r.b[1:]
	return c
}

func (r *modelReader) pick(n int) int { return int(r.byte()) % n }

func (r *modelReader) u16() int { return int(r.byte()) | int(r.byte())<<8 }

// runModel decodes data into a configuration and operations and runs them
// on a fresh engine in mode ("memory" or "durable"), checking the model
// after each. seed drives the handlers' script.
func runModel(mode string, data []byte, seed uint64, maxSteps int) (err error) {
	rd := &modelReader{b: data}
	geo := rd.byte()
	r := &modelRun{mode: mode, clk: NewFakeClock(t0), delivered: map[string]bool{}}
	r.m = newModel(t0.UnixNano(), seed)
	shards := 1 + int(geo%3)
	r.opts = Options{
		Shards: shards, Window: 2 * time.Second, Clock: r.clk, Logger: quietLogger(),
		Retry: RetryPolicy{Delays: modelDelays, MaxAttempts: modelMaxAttempts, Jitter: -1},
		Queues: []Queue{
			{Name: "q", Handler: r.handler, Parallelism: 4},
			{Name: "o", Handler: r.handler, Ordered: true},
		},
	}
	if mode == "durable" {
		r.fs = vfs.NewMem()
		r.opts.Store = wal.Options{Dir: "store", FS: r.fs}
		if geo/3%4 == 3 {
			r.maxPending = 6 // RAM bounded well below what is pending
			r.opts.MaxPending = r.maxPending
		}
	}
	if err := r.open(); err != nil {
		return err
	}
	defer r.close()
	defer func() {
		if err != nil {
			tail := r.ops
			if len(tail) > 25 {
				tail = tail[len(tail)-25:]
			}
			err = fmt.Errorf("%s (shards %d, max pending %d) after %d operations: %w\nlast operations:\n  %s",
				mode, shards, r.maxPending, len(r.ops), err, strings.Join(tail, "\n  "))
		}
	}()
	for step := 0; len(rd.b) > 0 && step < maxSteps; step++ {
		desc, err := r.step(rd)
		r.ops = append(r.ops, desc)
		if err != nil {
			return err
		}
		if err := r.settle(); err != nil {
			return fmt.Errorf("%s: settle: %w", desc, err)
		}
		r.m.fire()
		if err := r.check(); err != nil {
			return fmt.Errorf("after %s: %w", desc, err)
		}
	}
	return nil
}

// newName names a new message; the name is its payload. Names are padded
// to sizes that cross the engine's payload size classes (and its own
// allocations past 4 KiB), so the run churns every kind of payload slot.
func (r *modelRun) newName() string {
	r.m.seq++
	name := fmt.Sprint("m", r.m.seq)
	pad := namePads[r.m.seq%len(namePads)]
	return name + strings.Repeat(".", max(0, pad-len(name)))
}

var namePads = []int{0, 0, 0, 100, 129, 1000, 4097}

// message decodes one message to schedule.
func (r *modelRun) message(rd *modelReader) (Message, int64, int64) {
	now := r.m.now
	off := dueOffsets[rd.pick(len(dueOffsets))]
	due := max(now+int64(off), now)
	msg := Message{Dest: modelDests[rd.pick(len(modelDests))], Due: time.Unix(0, now+int64(off)), Payload: []byte(r.newName())}
	if c := rd.byte(); c%4 == 0 {
		msg.Key = modelKeys[int(c/4)%len(modelKeys)]
	}
	var exp int64
	if c := rd.byte(); c%5 == 0 {
		exp = due + int64(expiresAfter[int(c/5)%len(expiresAfter)])
		msg.Expires = time.Unix(0, exp)
	}
	return msg, due, exp
}

// pickMsg picks a known message with an ID, or (rarely) an ID nobody has.
func (r *modelRun) pickMsg(rd *modelReader) (*modelMsg, ID) {
	var known []*modelMsg
	for _, name := range r.m.order {
		if x := r.m.msgs[name]; x.id != 0 {
			known = append(known, x)
		}
	}
	k := rd.u16()
	if len(known) == 0 || k%10 == 0 {
		return nil, store.MakeID(k%max(1, r.opts.Shards), uint64(k)*7919+1)
	}
	x := known[k%len(known)]
	return x, x.id
}

// step decodes and applies one operation to the engine and the model.
func (r *modelRun) step(rd *modelReader) (string, error) {
	m := r.m
	switch op := rd.byte() % 16; {
	case op < 4: // Schedule
		msg, due, exp := r.message(rd)
		name := string(msg.Payload)
		desc := fmt.Sprintf("schedule %s %s due %+v key %q expires %v", name, msg.Dest, time.Duration(due-m.now), msg.Key, exp != 0)
		id, err := r.e.Schedule(bg, msg)
		if holder := m.keys[msg.Key]; msg.Key != "" && holder != nil {
			var de *DuplicateError
			if !errors.As(err, &de) || id != holder.id || len(de.IDs) != 1 || de.IDs[0] != holder.id {
				return desc, fmt.Errorf("key %q is held by %s (%s): want ErrDuplicate with its ID, got %s, %v", msg.Key, holder.name, holder.id, id, err)
			}
			return desc, nil
		}
		if err != nil {
			return desc, fmt.Errorf("Schedule: %w", err)
		}
		if err := r.learn(m.add(name, msg.Dest, msg.Key, due, exp), id); err != nil {
			return desc, err
		}
		return desc, nil

	case op < 5: // ScheduleBatch, maybe with one invalid message
		n := 1 + rd.pick(4)
		msgs := make([]Message, n)
		dues := make([]int64, n)
		exps := make([]int64, n)
		for i := range msgs {
			msgs[i], dues[i], exps[i] = r.message(rd)
		}
		bad := -1
		if c := rd.byte(); c%4 == 0 {
			bad = int(c/4) % n
			switch c / 16 % 4 {
			case 0:
				msgs[bad].Due = time.Date(3000, 1, 1, 0, 0, 0, 0, time.UTC)
			case 1:
				msgs[bad].Headers = []Header{{Key: "Hourglass-Id", Value: "forged"}}
			case 2:
				msgs[bad].Key = "bad\nkey"
			default:
				msgs[bad].Dest = "local://nobody"
			}
		}
		desc := fmt.Sprintf("batch of %d, invalid at %d", n, bad)
		ids, err := r.e.ScheduleBatch(bg, msgs)
		if bad >= 0 {
			if err == nil || len(ids) != 0 || !(errors.Is(err, ErrInvalid) || errors.Is(err, ErrUnknownQueue)) {
				return desc, fmt.Errorf("a batch with an invalid message: got %d IDs, %v", len(ids), err)
			}
			return desc, nil
		}
		if err != nil && !errors.Is(err, ErrDuplicate) {
			return desc, fmt.Errorf("ScheduleBatch: %w", err)
		}
		if len(ids) != n {
			return desc, fmt.Errorf("ScheduleBatch returned %d IDs for %d messages (%v)", len(ids), n, err)
		}
		var gotDup []int
		var de *DuplicateError
		if errors.As(err, &de) {
			gotDup = de.Index
		}
		for i := range msgs {
			name := string(msgs[i].Payload)
			if k := msgs[i].Key; k != "" && m.keys[k] != nil {
				if ids[i] != m.keys[k].id {
					return desc, fmt.Errorf("message %d: key %q held by %s (%s), got ID %s", i, k, m.keys[k].name, m.keys[k].id, ids[i])
				}
				if !slices.Contains(gotDup, i) {
					return desc, fmt.Errorf("message %d: key %q is taken: want it in the DuplicateError (%v)", i, k, err)
				}
				continue
			}
			if slices.Contains(gotDup, i) {
				return desc, fmt.Errorf("message %d reported as a duplicate (%v)", i, err)
			}
			if err := r.learn(m.add(name, msgs[i].Dest, msgs[i].Key, dues[i], exps[i]), ids[i]); err != nil {
				return desc, err
			}
		}
		return desc, nil

	case op < 7: // Cancel
		x, id := r.pickMsg(rd)
		desc := fmt.Sprintf("cancel %s", describe(x, id))
		err := r.e.Cancel(bg, id)
		if x != nil && x.state == mPending {
			if err != nil {
				return desc, fmt.Errorf("Cancel of a pending message: %w", err)
			}
			m.gone(x)
			return desc, nil
		}
		if !errors.Is(err, ErrNotFound) {
			return desc, fmt.Errorf("Cancel of a message that is not pending: want ErrNotFound, got %v", err)
		}
		return desc, nil

	case op < 9: // Reschedule
		x, id := r.pickMsg(rd)
		off := dueOffsets[rd.pick(len(dueOffsets))]
		desc := fmt.Sprintf("reschedule %s by %v", describe(x, id), off)
		err := r.e.Reschedule(bg, id, time.Unix(0, m.now+int64(off)))
		if x != nil && x.state == mPending {
			if err != nil {
				return desc, fmt.Errorf("Reschedule of a pending message: %w", err)
			}
			x.due = max(m.now+int64(off), m.now)
			return desc, nil
		}
		if !errors.Is(err, ErrNotFound) {
			return desc, fmt.Errorf("Reschedule of a message that is not pending: want ErrNotFound, got %v", err)
		}
		return desc, nil

	case op < 12: // advance the clock
		d := advanceBy[rd.pick(len(advanceBy))]
		r.clk.Advance(d)
		m.now += int64(d)
		return fmt.Sprintf("advance %v", d), nil

	case op < 13: // the wall clock steps back
		d := stepBackBy[rd.pick(len(stepBackBy))]
		r.clk.StepWall(-d)
		m.now -= int64(d)
		return fmt.Sprintf("wall clock steps back %v", d), nil

	case op < 14: // reopen
		if rd.byte()%3 != 0 {
			return "no-op", nil
		}
		r.close()
		if r.mode == "memory" {
			for _, x := range m.msgs {
				if x.id != 0 {
					r.oldIDs = append(r.oldIDs, x.id)
				}
			}
			m.forget()
		}
		if err := r.open(); err != nil {
			return "reopen", err
		}
		return "reopen", nil

	case op < 15: // ReplayDead
		x, id := r.pickMsg(rd)
		off := dueOffsets[rd.pick(len(dueOffsets))]
		desc := fmt.Sprintf("replay %s at %v", describe(x, id), off)
		err := r.e.ReplayDead(bg, []ID{id}, time.Unix(0, m.now+int64(off)))
		if x != nil && x.state == mDead {
			if err != nil {
				return desc, fmt.Errorf("ReplayDead of a dead letter: %w", err)
			}
			x.state, x.attempt, x.due = mPending, 0, max(m.now+int64(off), m.now)
			x.replays++
			return desc, nil
		}
		if !errors.Is(err, ErrNotFound) && !errors.Is(err, ErrInvalid) {
			return desc, fmt.Errorf("ReplayDead of a message that is not dead: want ErrNotFound, got %v", err)
		}
		return desc, nil

	default: // PurgeDead
		x, id := r.pickMsg(rd)
		desc := fmt.Sprintf("purge %s", describe(x, id))
		n, err := r.e.PurgeDead(bg, []ID{id})
		if x != nil && x.state == mDead {
			if err != nil || n != 1 {
				return desc, fmt.Errorf("PurgeDead of a dead letter: %d, %v", n, err)
			}
			m.gone(x)
			return desc, nil
		}
		if !errors.Is(err, ErrNotFound) && !errors.Is(err, ErrInvalid) {
			return desc, fmt.Errorf("PurgeDead of a message that is not dead: want ErrNotFound, got %d, %v", n, err)
		}
		return desc, nil
	}
}

func describe(x *modelMsg, id ID) string {
	if x == nil {
		return fmt.Sprintf("unknown ID %s", id)
	}
	return fmt.Sprintf("%s (%s, %s)", x.name, id, [...]string{"pending", "dead", "gone"}[x.state])
}

// learn records x's ID; an ID already naming another message (or one of
// an earlier life) is an error.
func (r *modelRun) learn(x *modelMsg, id ID) error {
	if id == 0 {
		return fmt.Errorf("%s: zero ID", x.name)
	}
	if x.id != 0 {
		if x.id != id {
			return fmt.Errorf("%s: ID %s, earlier %s", x.name, id, x.id)
		}
		return nil
	}
	if y := r.m.byID[id]; y != nil {
		return fmt.Errorf("%s got ID %s, which already names %s (life %d)", x.name, id, y.name, y.life)
	}
	x.id = id
	r.m.byID[id] = x
	return nil
}

// check compares the engine with the model.
func (r *modelRun) check() error {
	m := r.m
	r.mu.Lock()
	got, herr := r.log, r.handlerErr
	r.log, r.handlerErr = nil, nil
	r.mu.Unlock()
	if herr != nil {
		return herr
	}
	want := m.expect
	m.expect = nil

	// Deliveries: exactly what the model expects, never early or twice.
	wantBy := map[string]expected{}
	for _, w := range want {
		wantBy[fmt.Sprint(w.name, "#", w.attempt)] = w
	}
	var errs []string
	for _, g := range got {
		k := fmt.Sprint(g.name, "#", g.attempt)
		gen := k
		if x := m.msgs[g.name]; x != nil {
			gen = fmt.Sprint(g.name, "#", g.attempt, "/", x.replays)
		}
		if g.at.Before(g.due) {
			errs = append(errs, fmt.Sprintf("EARLY: %s attempt %d due %s ran at %s", g.name, g.attempt, g.due.UTC(), g.at.UTC()))
		}
		if r.delivered[gen] {
			errs = append(errs, fmt.Sprintf("DUPLICATE: %s attempt %d delivered again", g.name, g.attempt))
			continue
		}
		r.delivered[gen] = true
		w, ok := wantBy[k]
		if !ok {
			errs = append(errs, fmt.Sprintf("UNEXPECTED: %s attempt %d (due %s) delivered", g.name, g.attempt, g.due.UTC()))
			continue
		}
		delete(wantBy, k)
		if g.due.UnixNano() != w.due {
			errs = append(errs, fmt.Sprintf("%s attempt %d: due %s, model %s", g.name, g.attempt, g.due.UTC(), time.Unix(0, w.due).UTC()))
		}
		if x := m.msgs[g.name]; x != nil {
			if err := r.learn(x, g.id); err != nil {
				errs = append(errs, err.Error())
			}
		}
	}
	for _, w := range wantBy {
		errs = append(errs, fmt.Sprintf("LOST: %s attempt %d due %s (now %s) was not delivered", w.name, w.attempt,
			time.Unix(0, w.due).UTC().Format(time.RFC3339Nano), time.Unix(0, m.now).UTC().Format(time.RFC3339Nano)))
	}
	if len(errs) > 0 {
		slices.Sort(errs)
		st := r.e.Stats()
		errs = append(errs, fmt.Sprintf("(engine: RAM per shard %v, store pending %d, max pending %d)", st.Pending, st.StorePending, r.maxPending))
		return errors.New(strings.Join(errs, "\n"))
	}

	// List: exactly the pending messages, in (due, ID) order.
	var listed []Info
	q := ListQuery{Limit: MaxListLimit}
	for {
		page, next, err := r.e.List(bg, q)
		if err != nil {
			return fmt.Errorf("List: %w", err)
		}
		listed = append(listed, page...)
		if next.ID == 0 {
			break
		}
		q.After = next
	}
	pending := 0
	for _, x := range m.msgs {
		if x.state == mPending {
			pending++
		}
	}
	seen := map[string]bool{}
	for i, in := range listed {
		name := string(in.Message.Payload)
		x := m.msgs[name]
		switch {
		case x == nil || x.state != mPending:
			return fmt.Errorf("List shows %s (%s, due %s, attempts %d), which the model says is %s", name, in.ID,
				in.Message.Due.UTC(), in.Attempts, describe(x, in.ID))
		case seen[name]:
			var all []string
			for _, o := range listed {
				if string(o.Message.Payload) == name {
					all = append(all, fmt.Sprintf("%s due %s attempts %d", o.ID, o.Message.Due.UTC().Format(time.RFC3339Nano), o.Attempts))
				}
			}
			return fmt.Errorf("List shows %s twice: %s (model: %s due %s)", name, strings.Join(all, "; "), x.id, time.Unix(0, x.due).UTC().Format(time.RFC3339Nano))
		case in.State != StatePending:
			return fmt.Errorf("List shows %s in state %s", name, in.State)
		}
		seen[name] = true
		if err := r.learn(x, in.ID); err != nil {
			return err
		}
		if err := sameMsg(x, in); err != nil {
			return fmt.Errorf("List: %w", err)
		}
		if i > 0 {
			a, b := listed[i-1], in
			if c := cmp.Or(a.Message.Due.Compare(b.Message.Due), cmp.Compare(a.ID, b.ID)); c >= 0 {
				return fmt.Errorf("List out of (due, ID) order at %d: %s then %s", i, a.ID, b.ID)
			}
		}
	}
	if len(listed) != pending {
		var missing []string
		for _, name := range m.order {
			if x := m.msgs[name]; x.state == mPending && !seen[name] {
				missing = append(missing, fmt.Sprintf("%s (%s due %s, attempt %d)", name, x.id, time.Unix(0, x.due).UTC(), x.attempt))
			}
		}
		return fmt.Errorf("List shows %d pending, the model %d; missing: %s", len(listed), pending, strings.Join(missing, ", "))
	}

	// Dead letters.
	dls, _, err := r.e.DeadLetters(bg, 0, store.MaxDeadLimit)
	if err != nil {
		return fmt.Errorf("DeadLetters: %w", err)
	}
	dead := 0
	for _, x := range m.msgs {
		if x.state == mDead {
			dead++
		}
	}
	for _, d := range dls {
		name := string(d.Message.Payload)
		x := m.msgs[name]
		if x == nil || x.state != mDead {
			return fmt.Errorf("DeadLetters shows %s (%s, attempts %d, %q), which the model says is %s", name, d.ID, d.Attempts, d.Reason, describe(x, d.ID))
		}
		if err := r.learn(x, d.ID); err != nil {
			return err
		}
		if d.Attempts != x.attempt {
			return fmt.Errorf("dead letter %s: %d attempts, model %d", name, d.Attempts, x.attempt)
		}
	}
	if len(dls) != dead {
		return fmt.Errorf("DeadLetters shows %d, the model %d", len(dls), dead)
	}

	// Get by ID: every message that changed state in this step, and a
	// rotating sample of the others.
	toGet := m.touched
	m.touched = nil
	if n := len(m.order); n > 0 {
		for range min(n, 12) {
			m.sample = (m.sample + 1) % n
			toGet = append(toGet, m.msgs[m.order[m.sample]])
		}
	}
	for _, x := range toGet {
		name := x.name
		if x.id == 0 {
			continue
		}
		in, err := r.e.Get(bg, x.id)
		switch x.state {
		case mPending:
			if err != nil {
				return fmt.Errorf("Get %s (%s): %w; the model says pending", name, x.id, err)
			}
			if in.State != StatePending {
				return fmt.Errorf("Get %s: state %s, model pending", name, in.State)
			}
			if err := sameMsg(x, in); err != nil {
				return fmt.Errorf("Get: %w", err)
			}
		case mDead:
			if err != nil || in.State != StateDead || in.Attempts != x.attempt {
				return fmt.Errorf("Get %s (%s): %v, %v, attempts %d; the model says dead after %d attempts", name, x.id, err, in.State, in.Attempts, x.attempt)
			}
		case mGone:
			if !errors.Is(err, ErrNotFound) {
				return fmt.Errorf("Get %s (%s): want ErrNotFound (the model says it is gone), got %v %+v", name, x.id, err, in.State)
			}
		}
	}

	// Idempotency keys.
	for _, k := range modelKeys {
		in, err := r.e.GetByKey(bg, k)
		if holder := m.keys[k]; holder != nil {
			if err != nil || in.ID != holder.id {
				return fmt.Errorf("GetByKey %q: %s, %v; the model says %s (%s)", k, in.ID, err, holder.name, holder.id)
			}
		} else if !errors.Is(err, ErrNotFound) {
			return fmt.Errorf("GetByKey %q: want ErrNotFound, got %s (%s), %v", k, in.ID, in.Message.Payload, err)
		}
	}

	// IDs of earlier lives name nothing.
	for i, id := range r.oldIDs {
		if i%7 != 0 {
			continue
		}
		if _, err := r.e.Get(bg, id); !errors.Is(err, ErrNotFound) {
			return fmt.Errorf("Get of %s, an ID of an earlier life, found something: %v", id, err)
		}
	}

	st := r.e.Stats()
	if st.StorePending != int64(pending) {
		return fmt.Errorf("Stats.StorePending %d, the model %d", st.StorePending, pending)
	}
	if st.InFlight != 0 {
		return fmt.Errorf("Stats.InFlight %d after settling", st.InFlight)
	}
	if r.maxPending > 0 && st.PendingTotal > int64(r.opts.Shards*r.maxPending) {
		return fmt.Errorf("RAM holds %d messages, more than %d shards × MaxPending %d", st.PendingTotal, r.opts.Shards, r.maxPending)
	}
	return nil
}

func sameMsg(x *modelMsg, in Info) error {
	switch {
	case in.ID != x.id:
		return fmt.Errorf("%s: ID %s, model %s", x.name, in.ID, x.id)
	case in.Message.Due.UnixNano() != x.due:
		return fmt.Errorf("%s (%s): due %s, model %s", x.name, x.id, in.Message.Due.UTC(), time.Unix(0, x.due).UTC())
	case in.Attempts != x.attempt:
		return fmt.Errorf("%s (%s): %d attempts, model %d", x.name, x.id, in.Attempts, x.attempt)
	case in.Message.Dest != x.dest || in.Message.Key != x.key:
		return fmt.Errorf("%s (%s): dest %q key %q, model %q %q", x.name, x.id, in.Message.Dest, in.Message.Key, x.dest, x.key)
	case (x.expires == 0) != in.Message.Expires.IsZero() || (x.expires != 0 && in.Message.Expires.UnixNano() != x.expires):
		return fmt.Errorf("%s (%s): expires %s, model %d", x.name, x.id, in.Message.Expires.UTC(), x.expires)
	}
	return nil
}

// TestModel runs random operation sequences on both stores against the
// model. Reproduce a failure with -engine.model.seed=N.
func TestModel(t *testing.T) {
	seed := *flagModelSeed
	budget := 4 * time.Second
	if *flagModelLong {
		budget = 3 * time.Minute
	}
	fixed := seed != 0
	if !fixed {
		seed = rand.Uint64()
	}
	for _, mode := range []string{"memory", "durable"} {
		t.Run(mode, func(t *testing.T) {
			start := time.Now()
			for run := uint64(0); ; run++ {
				s := seed + run
				rng := rand.New(rand.NewPCG(s, 0))
				data := make([]byte, 300+rng.IntN(1200))
				for i := range data {
					data[i] = byte(rng.Uint32())
				}
				if err := runModel(mode, data, s, 150); err != nil {
					t.Fatalf("seed %d (rerun with -run 'TestModel/%s' -engine.model.seed=%d):\n%v", s, mode, s, err)
				}
				if fixed || time.Since(start) > budget/2 {
					t.Logf("%d runs from seed %d", run+1, seed)
					return
				}
			}
		})
	}
}

// FuzzEngine runs arbitrary operation streams against the model; the first
// byte picks the store.
func FuzzEngine(f *testing.F) {
	f.Add([]byte{0, 0, 0, 0, 9, 0, 9, 1})
	f.Add([]byte{1, 4, 0, 1, 0, 0, 0, 9, 2, 5, 3, 0, 0, 1, 9, 5, 12, 0, 9, 3, 13, 0, 9, 6})
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) < 2 {
			return
		}
		if len(data) > 4<<10 {
			t.Skip("long inputs add time, not coverage")
		}
		mode := "memory"
		if data[0]%2 == 1 {
			mode = "durable"
		}
		if err := runModel(mode, data[1:], uint64(data[0]), 200); err != nil {
			t.Fatal(err)
		}
	})
}
