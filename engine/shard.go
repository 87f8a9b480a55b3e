package engine

import (
	"math"
	"math/bits"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hourglassmq/hourglass/store"
	"github.com/hourglassmq/hourglass/wheel"
)

// A shard owns a timing wheel and the messages of one store shard that it
// holds in RAM (its window). Everything in this file and in window.go and
// fire.go runs on the shard's own goroutine (run), except where a comment
// says otherwise; the rest of the engine talks to it through its inbox (the
// store's feed), cmds (API calls) and results (dispatchers), so the hot
// path takes no shared lock.
//
// Ordering rule: the inbox is drained completely before any command or
// result is handled. The store feeds a commit's new messages before it
// answers any later call, so a result or a command about a message can
// never overtake the change that added it (see store.Owner.Feed): a
// message is held at most once, and never again once resolved.

type cmdKind uint8

const (
	cmdClaim   cmdKind = iota // take id out of the wheel for a Cancel/Reschedule
	cmdRelease                // end a claim: drop id, or restore m
	cmdGet                    // copy of id if in RAM
	cmdBarrier                // process everything queued and due now, then reply
	cmdStop                   // stop taking due messages off the wheel
	cmdExit                   // leave run
)

type cmd struct {
	kind    cmdKind
	id      store.ID
	m       store.Message
	restore bool
	reply   chan reply
}

type reply struct {
	err   error
	state State
	found bool
	m     store.Message
}

type shard struct {
	e   *Engine
	n   int
	w   *wheel.Wheel
	now func() (wall, mono int64)

	cmds    chan cmd
	results chan *batch
	wake    chan struct{}
	done    chan struct{} // closed when run returns

	inboxMu sync.Mutex     // guards inbox; taken by the store's goroutines
	inbox   []store.Change // the store's feed, in commit order
	inboxN  atomic.Int64   // len(inbox), read without the lock
	spare   []store.Change

	slab  // the messages in RAM (item.go), and their index by ID
	live  int
	nlive atomic.Int64 // live, for Stats (written by run only)
	// frontDue is win.front.Due, for Stats (written by run only).
	frontDue atomic.Int64
	claims   map[store.ID][]cmd
	busy     atomic.Int64 // messages taken off the wheel, outcome not applied

	ready      map[string]*readyQ // by destination
	readyOrder []*readyQ
	readyTotal int
	stopped    bool
	behind     bool  // its wheel lags: producers wait (pushback.go)
	readyWake  int64 // wall time a ready queue's head would lag; MaxInt64: none
	refs       []uint64

	win window
}

// upperSlotBits sizes the wheel's superblock (1<<bits blocks of 64 ticks)
// so that its ring holds everything the window loads (Window + Window/8
// ahead) whatever the time: each message then cascades once, with one
// block's worth of due time (64 ms at 1 ms ticks) per cascade. Before the
// ring, the wheel was hierarchical with 64 slots per level, and every
// message due in one 4.1 s level-2 slot cascaded in one step when its time
// came: at 200k/s over 2 shards a 17-53 ms stall of each every 4.1 s
// (BenchmarkSteadyStep at 100k/s per wheel), and at every
// 262 s boundary a cascade of everything pending. At least 2^10 (the
// wheel's default), at most 2^14 (17 min at 1 ms ticks: longer windows put
// their far end on the far levels), which keeps a shard's slot arrays
// under 4 MB.
func upperSlotBits(window, tick time.Duration) int {
	blocks := uint64((window+window/8)/tick+64+63) / 64
	return min(max(bits.Len64(blocks-1), 10), 14)
}

func newShard(e *Engine, n int) *shard {
	w, err := wheel.New(wheel.Options{Tick: e.opts.Tick, Start: 0, UpperSlotBits: upperSlotBits(e.opts.Window, e.opts.Tick)})
	if err != nil {
		panic("engine: wheel options were validated: " + err.Error())
	}
	s := &shard{
		e: e, n: n, w: w,
		cmds:    make(chan cmd, 1024),
		results: make(chan *batch, 1024),
		wake:    make(chan struct{}, 1),
		done:    make(chan struct{}),
		claims:  make(map[store.ID][]cmd),
		ready:   make(map[string]*readyQ),
		now:     e.nowNs,
	}
	s.win.init()
	s.readyWake = math.MaxInt64
	s.frontDue.Store(s.win.front.Due)
	return s
}

func (s *shard) signal() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// feed queues a change from the store (any goroutine; never blocks).
func (s *shard) feed(c store.Change) {
	s.inboxMu.Lock()
	s.inbox = append(s.inbox, c)
	s.inboxN.Store(int64(len(s.inbox)))
	s.inboxMu.Unlock()
	s.signal()
}

// ask sends c to the shard and waits for its reply (any goroutine). A shard
// that has exited answers nothing: the reply is empty.
func (s *shard) ask(c cmd) reply {
	ch, _ := s.e.replies.Get().(chan reply)
	if ch == nil {
		ch = make(chan reply, 1)
	}
	c.reply = ch
	select {
	case s.cmds <- c:
	case <-s.done:
		s.e.replies.Put(ch)
		return reply{}
	}
	select {
	case r := <-ch:
		s.e.replies.Put(ch)
		return r
	case <-s.done:
		return reply{} // the channel may still get a late reply: not reused
	}
}

// tell sends c without waiting (any goroutine).
func (s *shard) tell(c cmd) {
	select {
	case s.cmds <- c:
	case <-s.done:
	}
}

// exit makes run return and waits for it (any goroutine).
func (s *shard) exit() {
	s.tell(cmd{kind: cmdExit})
	<-s.done
}

// drainBudget bounds the commands and results (counted in messages) a shard
// takes between two ticks, so intake under load cannot delay firing by more
// than about this many messages (~0.2 ms).
const drainBudget = 2048

func (s *shard) run() {
	defer close(s.done)
	defer s.unmarkAll()
	timer := s.e.clock.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		s.intake()
		s.step()
		wait := s.nextWake()
		if wait > 0 {
			timer.Reset(wait)
			select {
			case c := <-s.cmds:
				if s.handle(c) {
					return
				}
			case b := <-s.results:
				s.intake()
				s.applyResult(b)
			case <-s.wake:
			case <-timer.C():
			}
		}
		// Take what queued up, bounded so ticks keep coming.
		for work := 0; work < drainBudget; work++ {
			select {
			case c := <-s.cmds:
				if s.handle(c) {
					return
				}
				continue
			case b := <-s.results:
				work += len(b.idx)
				s.intake()
				s.applyResult(b)
				continue
			default:
			}
			break
		}
	}
}

// step takes due messages off the wheel, hands ready batches to the
// dispatchers, and pages in one chunk of the window.
func (s *shard) step() {
	s.popDue()
	s.flush()
	if s.loadStep() {
		s.popDue()
		s.flush()
	}
	s.verify()
}

// nextWake returns how long the shard may sleep: 0 means work is waiting.
func (s *shard) nextWake() time.Duration {
	if s.inboxN.Load() > 0 {
		return 0
	}
	wall, mono := s.now()
	wait := time.Duration(1<<63 - 1)
	if !s.stopped && s.readyBudget() > 0 {
		if nd, ok := s.w.NextDue(); ok {
			wait = max(0, time.Duration(nd-mono))
		}
	} else if lw, ok := s.lagWait(mono); ok {
		wait = lw
	}
	if s.readyWake != math.MaxInt64 {
		wait = min(wait, max(0, time.Duration(s.readyWake-wall)))
	}
	if lw, ok := s.loadWait(wall); ok {
		wait = min(wait, lw)
	}
	return min(wait, time.Hour)
}

// handle runs one command; it reports whether the shard must exit.
func (s *shard) handle(c cmd) bool {
	s.intake()
	switch c.kind {
	case cmdClaim:
		s.claim(c)
	case cmdRelease:
		s.release(c)
	case cmdGet:
		r := reply{}
		if i, ok := s.find(c.id); ok {
			it := s.item(i)
			r.found, r.state = true, StatePending
			r.m, _ = s.message(i, nil)
			if it.state == stInFlight {
				r.state = StateInFlight
			}
		}
		c.reply <- r
	case cmdBarrier:
		wasQuiet := s.quiet()
		for s.loadStep() {
			s.popDue()
			s.flush()
		}
		s.popDue()
		s.flush()
		s.verify()
		c.reply <- reply{found: wasQuiet && s.quiet()}
	case cmdStop:
		s.stop()
		c.reply <- reply{}
	case cmdExit:
		return true
	}
	return false
}

// quiet reports whether nothing is queued for the shard and nothing due
// now is left on its wheel.
func (s *shard) quiet() bool {
	if s.inboxN.Load() > 0 || len(s.cmds) > 0 || len(s.results) > 0 {
		return false
	}
	wall, mono := s.now()
	if wait, ok := s.loadWait(wall); ok && wait == 0 {
		return false
	}
	if nd, ok := s.w.NextDue(); ok && nd <= mono && !s.stopped && s.readyBudget() > 0 {
		return false
	}
	return true
}

// stop makes the shard take no more due messages: the ready ones go back
// to the wheel (they are still pending in the store).
func (s *shard) stop() {
	s.stopped = true
	s.unmarkAll()
	n := 0
	now := s.reading()
	for _, q := range s.readyOrder {
		for _, i := range q.idx[q.off:] {
			it := s.item(i)
			it.state = stPending
			it.h = s.w.Insert(now.monoOf(it.due), uint64(i))
			n++
		}
		delete(s.ready, q.d.name)
		s.e.release(q.d)
	}
	s.readyOrder, s.readyTotal = nil, 0
	s.done1(n)
}

// taken counts n messages taken off the wheel (busy until their outcome).
func (s *shard) taken(n int) {
	s.busy.Add(int64(n))
	s.e.busyAdd(n)
}

// done1 counts n messages whose outcome is applied (or that went back).
func (s *shard) done1(n int) {
	s.busy.Add(-int64(n))
	s.e.busyDone(n)
}

// intake applies the store's feed: every queued change, in order.
func (s *shard) intake() {
	if s.inboxN.Load() == 0 {
		return
	}
	s.inboxMu.Lock()
	changes := s.inbox
	s.inbox = s.spare[:0]
	s.inboxN.Store(0)
	s.inboxMu.Unlock()
	now := s.reading()
	for k := range changes {
		c := &changes[k]
		for _, id := range c.Removed {
			s.drop(id)
		}
		for j := range c.Added {
			s.admit(&c.Added[j], now)
		}
	}
	clear(changes)
	s.spare = changes[:0]
}

// admit takes a message the store fed: into RAM if it falls inside the
// loaded window, else left for the loader.
func (s *shard) admit(m *store.Message, now clockReading) {
	if _, ok := s.find(m.ID); ok {
		return // a scan placed it already (it ran after the commit, before the feed)
	}
	if len(s.claims) > 0 {
		if _, ok := s.claims[m.ID]; ok {
			return // a Cancel or Reschedule owns it; its release restores it
		}
	}
	s.insert(*m, now)
}

// drop forgets a message another process resolved (a shared store's
// feed). One in flight keeps going: its outcome finds it gone.
func (s *shard) drop(id store.ID) {
	i, ok := s.find(id)
	if !ok {
		return
	}
	switch it := s.item(i); it.state {
	case stPending:
		s.w.Cancel(it.h)
		s.freeItem(i)
	case stReady:
		s.unready(i)
		s.freeItem(i)
	}
}

// clockReading is one reading of the clock: wall-clock and monotonic
// nanoseconds (see Engine.nowNs). Work on many messages reads it once.
type clockReading struct{ wall, mono int64 }

func (s *shard) reading() clockReading {
	wall, mono := s.now()
	return clockReading{wall, mono}
}

// monoOf converts a wall-clock due time into the wheel's monotonic
// timeline (due times are at most store.MaxDue, so the sum cannot wrap).
func (c clockReading) monoOf(due int64) int64 {
	d := due - c.wall
	if d <= 0 {
		// Overdue: keep the order among overdue messages (the wheel returns
		// them sorted), down to the start of the engine's timeline.
		return max(0, c.mono+d)
	}
	return store.SatAdd(c.mono, d)
}

// claim takes c.id out of the wheel for a Cancel or Reschedule: found tells
// whether it was in RAM (then m is its content). While claimed, the loader
// and the feed leave it alone. A second claim of the same ID waits for the
// first to be released, then runs.
func (s *shard) claim(c cmd) {
	id := c.id
	if waiters, ok := s.claims[id]; ok {
		s.claims[id] = append(waiters, c)
		return
	}
	i, ok := s.find(id)
	if !ok { // on disk only (or not pending): the loader must skip it
		s.claims[id] = nil
		c.reply <- reply{}
		return
	}
	it := s.item(i)
	switch it.state {
	case stPending:
		s.w.Cancel(it.h)
	case stReady:
		s.unready(i)
	default:
		c.reply <- reply{err: ErrInFlight}
		return
	}
	m, _ := s.message(i, nil)
	s.freeItem(i)
	s.claims[id] = nil
	c.reply <- reply{found: true, m: m}
}

// release ends a claim: with restore, m (its new or old content) goes back
// into RAM if inside the window. A waiting claim then runs.
func (s *shard) release(c cmd) {
	waiters := s.claims[c.id]
	delete(s.claims, c.id)
	if c.restore {
		s.insert(c.m, s.reading())
	}
	if len(waiters) > 0 {
		next := waiters[0]
		s.claim(next)
		if rest := waiters[1:]; len(rest) > 0 {
			s.claims[c.id] = append(s.claims[c.id], rest...)
		}
	}
}
