package engine

import (
	"context"
	"errors"
	"fmt"
	"math"
	"sync/atomic"
	"time"

	"github.com/hourglassmq/hourglass/wal"
	"github.com/hourglassmq/hourglass/wheel"
)

// A shard owns a timing wheel and the messages it holds in RAM. Everything in
// this file runs on the shard's own goroutine (run), except where a comment
// says otherwise; the rest of the engine talks to it through cmds and
// results, so the hot path takes no shared lock.

// item states.
const (
	stFree     uint8 = iota // slab slot on the free list
	stPending               // in the wheel
	stInFlight              // handed to the dispatchers (parked or sent)
	stClaimed               // taken out of the wheel by Cancel/Reschedule while the store commits
)

// item is one message held in RAM.
type item struct {
	m     wal.Message
	h     wheel.Handle
	gen   uint32 // memory mode: moves on when the slot is freed (see memID)
	state uint8
}

// In memory mode a shard names its messages by their slab slot, so looking
// an ID up needs no map: the local part of the ID is gen<<slotBits | slot.
// (IDs of replayed dead letters, which keep an old ID, go in byID.)
const (
	memSlotBits = 24
	memSlotMask = 1<<memSlotBits - 1
	// MaxPendingMemory is the most messages a memory-mode shard can hold.
	maxMemSlots = 1 << memSlotBits
)

func (s *shard) memID(i int32) wal.ID {
	return wal.MakeID(s.n, (uint64(s.item(i).gen)+1)<<memSlotBits|uint64(i)) // never 0
}

type cmdKind uint8

const (
	cmdInsert  cmdKind = iota // msgs into RAM (if inside the window)
	cmdCancel                 // memory mode: cancel id
	cmdResched                // memory mode: reschedule id to due
	cmdGet                    // copy of id if in RAM
	cmdClaim                  // durable: take id out of the wheel (or mark it) for a store commit
	cmdRelease                // durable: end a claim: drop id, or restore m
	cmdBarrier                // process everything due now, then reply
	cmdList                   // memory mode: messages in a range
	cmdStop                   // stop taking due messages off the wheel (Shutdown)
	cmdExit                   // leave run (after Shutdown drained)
	cmdForget                 // memory mode: release m's idempotency key
)

type cmd struct {
	kind    cmdKind
	msgs    []wal.Message
	id      wal.ID
	due     int64
	m       wal.Message
	restore bool
	list    *ListQuery
	reply   chan reply
}

type reply struct {
	err   error
	state State
	found bool
	m     wal.Message
	msgs  []wal.Message
	ids   []wal.ID
	old   []bool // cmdInsert: the ID is an existing message's (idempotency key)
}

// parkQ is a FIFO of item indices waiting for a dispatcher (a ready queue).
type parkQ struct {
	d   *dest
	idx []int32
	off int
}

func (q *parkQ) len() int { return len(q.idx) - q.off }

type shard struct {
	e   *Engine
	n   int
	w   *wheel.Wheel
	now func() (wall, mono int64)

	cmds    chan cmd
	results chan *batch
	wake    chan struct{}
	done    chan struct{}

	pages [][]item // the slab, in pages of pageSize so growth never copies
	nitem int32
	free  []int32
	byID  map[wal.ID]int32 // durable: every RAM message; memory: replayed IDs only
	live  int
	keys  map[string]wal.ID // memory mode: idempotency keys of this shard
	// claimed holds IDs a durable Cancel/Reschedule is committing, so the
	// loader and inserts leave them alone meanwhile.
	claimed map[wal.ID]struct{}

	parked      map[*dest]*parkQ
	parkOrder   []*parkQ
	parkedTotal int
	stopped     bool

	// Window loader state (durable mode). A message is in RAM iff its
	// (Due, ID) is at or before the frontier (fDue, fID).
	fDue     int64
	fID      wal.ID
	scanFrom int64
	cursor   wal.Cursor
	loaded   bool // frontier reached now+Window at least once
	// nextDisk is at or below the due time of every pending message that
	// is on disk only (beyond the frontier): the loader scans only when
	// the window reaches it, so a store with nothing far ahead is never
	// scanned. MinInt64 = unknown (at Open).
	nextDisk int64
	// page is the loader's next Scan size: it starts small (so the first
	// overdue messages fire quickly after Open) and doubles while a range
	// keeps going, because every wal Scan walks the live block summaries.
	page int

	nlive atomic.Int64 // len(byID), for Stats and MaxPending (written by run only)
	refs  []uint64
}

func newShard(e *Engine, n int) (*shard, error) {
	w, err := wheel.New(wheel.Options{Tick: e.opts.Tick, Start: 0})
	if err != nil {
		return nil, err
	}
	s := &shard{
		e: e, n: n, w: w,
		cmds:    make(chan cmd, 1024),
		results: make(chan *batch, 1024),
		wake:    make(chan struct{}, 1),
		done:    make(chan struct{}),
		byID:    make(map[wal.ID]int32),
		keys:    make(map[string]wal.ID),
		claimed: make(map[wal.ID]struct{}),
		parked:  make(map[*dest]*parkQ),
		now:     e.nowNs,
	}
	if e.store == nil {
		s.fDue, s.fID = math.MaxInt64, math.MaxUint64
		s.loaded = true
	} else {
		s.fDue, s.fID = math.MinInt64, 0
		s.scanFrom = math.MinInt64
		s.nextDisk = math.MinInt64
	}
	return s, nil
}

func (s *shard) inRAM(due int64, id wal.ID) bool {
	return due < s.fDue || (due == s.fDue && id <= s.fID)
}

func (s *shard) signal() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// drainBudget bounds the commands (counted in messages) a shard takes in
// between two ticks, so intake under load cannot delay firing by more than
// about this many inserts (~0.2 ms).
const drainBudget = 2048

func (s *shard) run() {
	defer close(s.done)
	timer := s.e.clock.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		s.step()
		wait := s.nextWake()
		if wait == 0 {
			select {
			case c := <-s.cmds:
				if s.handle(c) {
					return
				}
			case b := <-s.results:
				s.applyResult(b)
			default:
			}
			continue
		}
		timer.Reset(wait)
		select {
		case c := <-s.cmds:
			if s.handle(c) {
				return
			}
		case b := <-s.results:
			s.applyResult(b)
		case <-s.wake:
		case <-timer.C():
		}
		// Drain what queued up, bounded (in messages) so ticks keep coming.
		for work := 0; work < drainBudget; work++ {
			select {
			case c := <-s.cmds:
				work += len(c.msgs)
				if s.handle(c) {
					return
				}
				continue
			case b := <-s.results:
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
	if s.e.store != nil && s.loadStep() {
		s.popDue()
		s.flush()
	}
	s.verify()
}

// nextWake returns how long the shard may sleep: 0 means work is waiting.
func (s *shard) nextWake() time.Duration {
	wall, mono := s.now()
	wait := time.Duration(math.MaxInt64)
	if !s.stopped && s.readyBudgetLeft() {
		if nd, ok := s.w.NextDue(); ok {
			wait = max(0, time.Duration(nd-mono))
		}
	}
	if s.e.store != nil && !s.stopped && s.live < s.e.opts.MaxPending {
		win := int64(s.e.opts.Window)
		if s.fDue <= wall+win { // the frontier must move now
			return 0
		}
		wait = min(wait, time.Duration(s.fDue-win-wall))
	}
	return min(wait, time.Hour)
}

// handle runs one command; it reports whether the shard must exit.
func (s *shard) handle(c cmd) bool {
	switch c.kind {
	case cmdInsert:
		var err error
		var ids []wal.ID
		var old []bool
		if c.reply != nil {
			ids = make([]wal.ID, len(c.msgs))
			old = make([]bool, len(c.msgs))
		}
		for i := range c.msgs {
			known := c.msgs[i].ID == 0 && c.msgs[i].Key != "" && s.keys[c.msgs[i].Key] != 0
			id, e := s.insert(c.msgs[i])
			if e != nil && err == nil {
				err = e
			}
			if ids != nil {
				ids[i], old[i] = id, known
			}
		}
		s.e.busyDone(1)
		if c.reply != nil {
			c.reply <- reply{err: err, ids: ids, old: old}
		}
	case cmdForget:
		s.forgetKey(&c.m)
	case cmdCancel:
		c.reply <- s.cancelMem(c.id)
	case cmdResched:
		c.reply <- s.reschedMem(c.id, c.due)
	case cmdGet:
		r := reply{}
		if i, ok := s.lookup(c.id); ok {
			it := s.item(i)
			r.found, r.m = true, it.m
			r.state = StatePending
			if it.state == stInFlight {
				r.state = StateInFlight
			}
		}
		c.reply <- r
	case cmdClaim:
		c.reply <- s.claim(c.id)
	case cmdRelease:
		s.release(c)
	case cmdBarrier:
		if s.e.store != nil {
			for s.loadStep() {
				s.popDue()
				s.flush()
			}
		}
		s.popDue()
		s.flush()
		s.verify()
		c.reply <- reply{}
	case cmdList:
		c.reply <- reply{msgs: s.listMem(c.list)}
	case cmdStop:
		s.stopped = true
		// Parked messages go back to their pending state: in durable mode
		// they are still in the store; in memory mode they are lost with
		// the process anyway.
		n := 0
		for _, q := range s.parkOrder {
			for _, i := range q.idx[q.off:] {
				it := s.item(i)
				it.state = stPending
				it.h = s.w.Insert(s.monoOf(it.m.Due), uint64(i))
				n++
			}
			delete(s.parked, q.d)
		}
		s.parkOrder, s.parkedTotal = nil, 0
		s.e.busyDone(n)
		c.reply <- reply{}
	case cmdExit:
		return true
	}
	return false
}

const pageBits = 12
const pageSize = 1 << pageBits

func (s *shard) item(i int32) *item { return &s.pages[i>>pageBits][i&(pageSize-1)] }

func (s *shard) alloc() int32 {
	if n := len(s.free); n > 0 {
		i := s.free[n-1]
		s.free = s.free[:n-1]
		return i
	}
	if int(s.nitem)>>pageBits == len(s.pages) {
		s.pages = append(s.pages, make([]item, pageSize))
	}
	s.nitem++
	return s.nitem - 1
}

func (s *shard) freeItem(i int32) {
	it := s.item(i)
	if s.e.store != nil || s.memSlotOf(it.m.ID) != i {
		delete(s.byID, it.m.ID)
	}
	s.live--
	s.nlive.Store(int64(s.live))
	*it = item{gen: (it.gen + 1) % (1<<32 - 1)} // gen+1 must fit 32 bits in memID
	s.free = append(s.free, i)
}

// memSlotOf returns the slot a memory-mode ID names (-1 if none).
func (s *shard) memSlotOf(id wal.ID) int32 {
	if s.e.store != nil || id.Shard() != s.n {
		return -1
	}
	return int32(uint64(id) & memSlotMask)
}

// lookup finds the RAM slot of id.
func (s *shard) lookup(id wal.ID) (int32, bool) {
	if i := s.memSlotOf(id); i >= 0 && i < s.nitem {
		if it := s.item(i); it.state != stFree && it.m.ID == id {
			return i, true
		}
	}
	if len(s.byID) == 0 {
		return 0, false
	}
	i, ok := s.byID[id]
	return i, ok
}

// place puts message m (with its ID set) into slot i and the wheel.
func (s *shard) place(i int32, m wal.Message) {
	it := s.item(i)
	*it = item{m: m, state: stPending, gen: it.gen}
	it.h = s.w.Insert(s.monoOf(m.Due), uint64(i))
	if s.e.store != nil || s.memSlotOf(m.ID) != i {
		s.byID[m.ID] = i
	}
	s.live++
	s.nlive.Store(int64(s.live))
}

// monoOf converts a wall-clock due time into the wheel's monotonic timeline.
func (s *shard) monoOf(due int64) int64 {
	wall, mono := s.now()
	d := due - wall
	if d <= 0 {
		// Overdue: keep the order among overdue messages (the wheel returns
		// them sorted), down to the start of the engine's timeline.
		return max(0, mono+d)
	}
	if mono > math.MaxInt64-d {
		return math.MaxInt64 - int64(time.Hour)
	}
	return mono + d
}

// insert puts m into RAM if it belongs to the loaded window. In memory mode
// a new message (ID 0) gets its ID here; the ID (or, for a known
// idempotency key, the existing one) is returned.
func (s *shard) insert(m wal.Message) (wal.ID, error) {
	if m.ID == 0 {
		if m.Key != "" {
			if id, ok := s.keys[m.Key]; ok {
				return id, nil
			}
		}
		if s.live >= s.e.opts.MaxPending {
			return 0, fmt.Errorf("%w: shard %d holds MaxPending = %d messages", ErrFull, s.n, s.e.opts.MaxPending)
		}
		i := s.alloc()
		m.ID = s.memID(i)
		if m.Key != "" {
			s.keys[m.Key] = m.ID
		}
		s.place(i, m)
		return m.ID, nil
	}
	if _, ok := s.lookup(m.ID); ok {
		return m.ID, nil
	}
	if _, ok := s.claimed[m.ID]; ok {
		return m.ID, nil
	}
	if !s.inRAM(m.Due, m.ID) {
		s.nextDisk = min(s.nextDisk, m.Due)
		return m.ID, nil
	}
	s.place(s.alloc(), m)
	return m.ID, nil
}

// forgetKey releases m's idempotency key (memory mode) once m is gone.
func (s *shard) forgetKey(m *wal.Message) {
	if m.Key != "" && s.keys[m.Key] == m.ID {
		delete(s.keys, m.Key)
	}
}

// unwheel takes the pending message id out of its wheel: ErrNotFound when
// it is not in RAM, ErrInFlight when it is already due.
func (s *shard) unwheel(id wal.ID) (int32, *item, error) {
	i, ok := s.lookup(id)
	if !ok {
		return 0, nil, ErrNotFound
	}
	it := s.item(i)
	if it.state != stPending {
		return 0, nil, ErrInFlight
	}
	s.w.Cancel(it.h)
	return i, it, nil
}

func (s *shard) cancelMem(id wal.ID) reply {
	i, it, err := s.unwheel(id)
	if err != nil {
		return reply{err: err}
	}
	m := it.m
	s.freeItem(i)
	s.forgetKey(&m)
	return reply{found: true, m: m}
}

func (s *shard) reschedMem(id wal.ID, due int64) reply {
	i, it, err := s.unwheel(id)
	if err != nil {
		return reply{err: err}
	}
	it.m.Due = due
	it.h = s.w.Insert(s.monoOf(due), uint64(i))
	return reply{found: true, m: it.m}
}

// claim takes id out of the wheel for a durable Cancel/Reschedule. found
// reports whether it was in RAM (then m is its content).
func (s *shard) claim(id wal.ID) reply {
	if _, ok := s.claimed[id]; ok {
		return reply{err: ErrInFlight}
	}
	i, it, err := s.unwheel(id)
	switch {
	case errors.Is(err, ErrNotFound): // on disk only: the loader must skip it
		s.claimed[id] = struct{}{}
		return reply{}
	case err != nil:
		return reply{err: err}
	}
	m := it.m
	s.freeItem(i)
	s.claimed[id] = struct{}{}
	return reply{found: true, m: m}
}

// release ends a claim: with restore, m (its new or old content) goes back
// into RAM if inside the window.
func (s *shard) release(c cmd) {
	delete(s.claimed, c.id)
	if c.restore {
		_, _ = s.insert(c.m)
	}
}

// popDue takes due messages off the wheel into the ready queues.
//
// Push back: the shard takes at most MaxReady - (ready messages) off the
// wheel per step, where a destination counts for at most 3/4 of MaxReady.
// So a destination that cannot keep up holds a long ready queue of its own
// (these messages are in RAM anyway; a queue entry costs 4 bytes) while the
// others keep flowing, and when every destination is saturated the wheel
// simply keeps its due messages.
func (s *shard) popDue() {
	if s.stopped {
		return
	}
	perDest := s.e.opts.MaxReady * 3 / 4
	ready := 0
	for _, q := range s.parkOrder {
		ready += min(q.len(), perDest)
	}
	budget := s.e.opts.MaxReady - ready
	if budget <= 0 {
		return
	}
	wall, mono := s.now()
	s.refs = s.w.AdvanceLimit(mono, budget, s.refs[:0])
	if len(s.refs) == 0 {
		return
	}
	fired := 0
	for _, ref := range s.refs {
		i := int32(ref)
		it := s.item(i)
		if it.m.Due > wall {
			// The wheel runs on the monotonic clock; the wall clock says it
			// is early (it stepped back). Never deliver early: wait more.
			s.e.st.earlyCaught.Add(1)
			it.h = s.w.Insert(mono+(it.m.Due-wall), ref)
			continue
		}
		d := s.e.destFor(it.m.Dest)
		q := s.parked[d]
		if q == nil {
			q = &parkQ{d: d}
			s.parked[d] = q
			s.parkOrder = append(s.parkOrder, q)
		}
		it.state = stInFlight
		q.idx = append(q.idx, i)
		s.parkedTotal++
		fired++
	}
	if fired > 0 {
		s.e.busyAdd(fired)
		s.e.st.fired.Add(uint64(fired))
		s.e.markFirstFire()
	}
}

// readyBudgetLeft reports whether popDue could take more off the wheel.
func (s *shard) readyBudgetLeft() bool {
	perDest := s.e.opts.MaxReady * 3 / 4
	ready := 0
	for _, q := range s.parkOrder {
		ready += min(q.len(), perDest)
	}
	return ready < s.e.opts.MaxReady
}

// flush hands ready batches to the dispatchers, as far as the per-destination
// in-flight limits and the work queue allow.
func (s *shard) flush() {
	if s.parkedTotal == 0 {
		return
	}
	wall, _ := s.now()
	keep := s.parkOrder[:0]
	full := false
	for _, q := range s.parkOrder {
		for !full && q.len() > 0 {
			if !q.d.acquire() {
				break
			}
			n := min(q.len(), s.e.opts.MaxBatch)
			b := s.e.newBatch(s, q.d, n)
			b.fired = wall
			for _, i := range q.idx[q.off : q.off+n] {
				b.idx = append(b.idx, i)
				b.msgs = append(b.msgs, s.item(i).m)
			}
			lat := &s.e.st.lateness
			select {
			case s.e.work <- b:
				for k := range b.msgs {
					lat.record(time.Duration(wall - b.msgs[k].Due))
				}
				q.off += n
				s.parkedTotal -= n
			default:
				q.d.releaseSlot()
				s.e.putBatch(b)
				full = true
			}
		}
		if q.len() == 0 {
			delete(s.parked, q.d)
			continue
		}
		if q.off > 1024 && q.off > len(q.idx)/2 {
			q.idx = append(q.idx[:0], q.idx[q.off:]...)
			q.off = 0
		}
		keep = append(keep, q)
	}
	clear(s.parkOrder[len(keep):])
	s.parkOrder = keep
	// Rotate so no destination is always served first.
	if len(s.parkOrder) > 1 {
		s.parkOrder = append(s.parkOrder[1:], s.parkOrder[0])
	}
}

// applyResult applies a dispatcher's outcomes for one batch.
func (s *shard) applyResult(b *batch) {
	for k, i := range b.idx {
		it := s.item(i)
		if it.state != stInFlight || it.m.ID != b.msgs[k].ID {
			panic("engine: result for an item that is not in flight")
		}
		r := &b.res[k]
		switch r.kind {
		case resRetry:
			it.m.Due = r.due
			it.m.Attempt = r.attempt
			it.state = stPending
			if s.inRAM(r.due, it.m.ID) {
				it.h = s.w.Insert(s.monoOf(r.due), uint64(i))
			} else {
				s.nextDisk = min(s.nextDisk, r.due)
				s.freeItem(i)
			}
		case resDead:
			s.freeItem(i)
		default:
			m := it.m
			s.freeItem(i)
			if r.kind != resStuck {
				s.forgetKey(&m)
			}
		}
	}
	n := len(b.idx)
	s.e.putBatch(b)
	s.e.busyDone(n)
}

// loadStep pages one chunk of the window in from the store. It reports
// whether it did anything (so the caller may call again).
func (s *shard) loadStep() bool {
	if s.stopped || s.e.store == nil || s.live >= s.e.opts.MaxPending {
		return false
	}
	wall, _ := s.now()
	win := int64(s.e.opts.Window)
	if s.fDue > wall+win {
		return false
	}
	to := wall + win + win/8
	if to <= s.scanFrom {
		return false
	}
	if s.cursor == (wal.Cursor{}) && s.nextDisk >= to {
		// Nothing on disk only below to: move the frontier without a scan.
		s.advanceFrontier(to)
		return true
	}
	if s.page == 0 {
		s.page = minPage
	}
	msgs, cur, err := s.e.store.Scan(context.Background(), wal.ScanQuery{
		Shard: s.n, From: s.scanFrom, To: to, After: s.cursor, Limit: s.page,
	})
	if err != nil {
		s.e.failStore(err)
		s.stopped = true
		return false
	}
	overdue := 0
	for _, m := range msgs {
		if !s.loaded && m.Due < s.e.openWall {
			overdue++
		}
		if _, ok := s.byID[m.ID]; ok {
			continue
		}
		if _, ok := s.claimed[m.ID]; ok {
			continue
		}
		s.place(s.alloc(), m)
	}
	s.e.st.loaded.Add(uint64(len(msgs)))
	if overdue > 0 {
		s.e.addOverdue(overdue)
	}
	if cur.End() {
		// Find where the next disk-only message is (a one-message scan).
		next, _, err := s.e.store.Scan(context.Background(), wal.ScanQuery{
			Shard: s.n, From: to, To: math.MaxInt64, Limit: 1,
		})
		if err != nil {
			s.e.failStore(err)
			s.stopped = true
			return false
		}
		s.nextDisk = math.MaxInt64
		if len(next) > 0 {
			s.nextDisk = next[0].Due
		}
		s.advanceFrontier(to)
		s.page = minPage
	} else {
		s.page = min(2*s.page, maxPage)
		last := msgs[len(msgs)-1]
		s.cursor = cur
		s.fDue, s.fID = last.Due, last.ID
	}
	return true
}

// Loader page sizes (messages per Scan).
const (
	minPage = 1024
	maxPage = 65536
)

// advanceFrontier marks everything due before to as loaded.
func (s *shard) advanceFrontier(to int64) {
	s.scanFrom, s.cursor = to, wal.Cursor{}
	s.fDue, s.fID = to, 0
	if !s.loaded {
		s.loaded = true
		s.e.markLoaded()
	}
}

// listMem returns RAM messages matching q (memory mode List).
func (s *shard) listMem(q *ListQuery) []wal.Message {
	var out []wal.Message
	for i := int32(0); i < s.nitem; i++ {
		it := s.item(i)
		if it.state != stFree && q.match(&it.m) {
			out = append(out, it.m)
		}
	}
	return out
}
