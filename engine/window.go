package engine

import (
	"context"
	"math"
	"slices"
	"time"

	"github.com/hourglassmq/hourglass/store"
)

// The window: a shard holds in RAM the pending messages due up to its
// frontier, a position in (due, ID) order that the loader moves ahead to
// about now+Window by scanning the store. The invariant: every pending
// message of the shard at or before the frontier is in RAM, claimed, or in
// flight. Messages beyond it may also be in RAM (the feed placed them before
// the frontier was pulled back); the loader skips those it finds.
//
// When the shard holds MaxPending messages, RAM keeps the earliest: a new
// message due before some held ones evicts the latest eighth of those (they
// stay in the store), and one due after all of them is not placed. Either
// way the frontier is pulled back to just before what is not in RAM, and
// the loader resumes from there. The loader fills RAM only to 7/8 of
// MaxPending, so that one eviction's sweep (O(held)) is paid once per
// MaxPending/8 new messages at most, not once per message.

type window struct {
	front    store.Position // everything at or before it is in RAM
	scanFrom int64          // the next scan's From
	cursor   store.Position // the next scan's After (zero: start at scanFrom)
	// nextDisk is at or below the due time of every pending message that
	// is in the store only (beyond the frontier): the loader scans only
	// when the window reaches it. MinInt64 = unknown (at attach).
	nextDisk int64
	loaded   bool // the frontier reached now+Window once
	// page is the loader's next Scan size: small first, so the first
	// overdue messages fire quickly after Open, doubling while a range
	// keeps going.
	page int
}

// Loader page sizes (messages per Scan).
const (
	minPage = 1024
	maxPage = 65536
)

func (w *window) init() {
	w.front = store.Position{Due: math.MinInt64}
	w.scanFrom = math.MinInt64
	w.nextDisk = math.MinInt64
}

// inside reports whether p is at or before the frontier.
func (w *window) inside(p store.Position) bool { return !w.front.Less(p) }

// insert takes m into RAM if it is inside the window and RAM has room;
// otherwise it stays in the store for the loader. now is s.reading().
func (s *shard) insert(m store.Message, now clockReading) {
	p := store.PositionOf(&m)
	if !s.win.inside(p) {
		s.win.nextDisk = min(s.win.nextDisk, m.Due)
		return
	}
	if s.live >= s.e.opts.MaxPending && !s.evictAfter(p) {
		// Full of messages due before m: leave m to the loader.
		s.pullBack(p)
		return
	}
	s.place(&m, now)
}

// pullBack moves the frontier back to just before p (if it is beyond), so
// the loader brings p and what follows once RAM has room.
func (s *shard) pullBack(p store.Position) {
	w := &s.win
	if !w.inside(p) {
		return
	}
	w.front = store.Position{Due: p.Due, ID: p.ID - 1}
	s.frontDue.Store(p.Due)
	w.scanFrom, w.cursor = p.Due, w.front
	w.nextDisk = min(w.nextDisk, p.Due)
}

// evictAfter makes room for a message at p in a full shard by evicting the
// latest eighth of the held messages due after p (waiting in the wheel;
// never one ready or in flight). They stay in the store, and the frontier
// moves back to just before them. It reports false when no held message
// is due after p.
func (s *shard) evictAfter(p store.Position) bool {
	type held struct {
		pos store.Position
		i   int32
	}
	var later []held
	for i := range s.nitem {
		if it := s.item(i); it.state == stPending {
			if q := (store.Position{Due: it.due, ID: it.id}); p.Less(q) {
				later = append(later, held{q, i})
			}
		}
	}
	if len(later) == 0 {
		return false
	}
	slices.SortFunc(later, func(a, b held) int {
		if b.pos.Less(a.pos) {
			return -1 // latest first
		}
		return 1
	})
	later = later[:min(len(later), max(1, s.e.opts.MaxPending/8))]
	for _, h := range later {
		s.w.Cancel(s.item(h.i).h)
		s.freeItem(h.i)
	}
	s.pullBack(later[len(later)-1].pos)
	s.e.cnt.evicted.Add(uint64(len(later)))
	return true
}

// lowWater is how full the loader fills RAM (see the window's doc).
func (s *shard) lowWater() int { return s.e.opts.MaxPending - s.e.opts.MaxPending/8 }

// horizon returns how far the window must reach at wall time wall.
func (s *shard) horizon(wall int64) int64 { return store.SatAdd(wall, int64(s.e.opts.Window)) }

// loadWait reports how long until the loader must run (0: now), and false
// when it cannot run (stopped, or RAM full).
func (s *shard) loadWait(wall int64) (time.Duration, bool) {
	if s.stopped || s.live >= s.lowWater() || s.win.front.Due == math.MaxInt64 {
		return 0, false
	}
	if h := s.horizon(wall); s.win.front.Due > h {
		return time.Duration(s.win.front.Due - h), true
	}
	return 0, true
}

// loadStep pages one chunk of the window in from the store. It reports
// whether it did anything (so the caller may call again).
func (s *shard) loadStep() bool {
	wall, _ := s.now()
	if wait, ok := s.loadWait(wall); !ok || wait > 0 {
		return false
	}
	w := &s.win
	win := int64(s.e.opts.Window)
	to := store.SatAdd(s.horizon(wall), win/8)
	if to <= w.scanFrom {
		return false
	}
	if w.cursor == (store.Position{}) && w.nextDisk >= to {
		// Nothing in the store only below to: move the frontier without
		// a scan.
		s.advanceFrontier(to)
		return true
	}
	if w.page == 0 {
		w.page = minPage
	}
	limit := min(w.page, s.lowWater()-s.live)
	msgs, page, err := s.e.st.Scan(context.Background(), store.ScanQuery{
		Shard: s.n, From: w.scanFrom, To: to, After: w.cursor, Limit: limit,
	})
	if err != nil {
		s.e.failStore(err)
		s.stopped = true
		return false
	}
	overdue := 0
	now := s.reading()
	for k := range msgs {
		m := &msgs[k]
		if !w.loaded && m.Due < s.e.openWall {
			overdue++
		}
		if _, ok := s.find(m.ID); ok {
			continue
		}
		if _, ok := s.claims[m.ID]; ok {
			continue
		}
		s.place(m, now)
	}
	s.e.cnt.loaded.Add(uint64(len(msgs)))
	if overdue > 0 {
		s.e.addOverdue(overdue)
	}
	if page.Done {
		// Find where the next store-only message is (a one-message scan).
		next, _, err := s.e.st.Scan(context.Background(), store.ScanQuery{
			Shard: s.n, From: to, To: math.MaxInt64, Limit: 1,
		})
		if err != nil {
			s.e.failStore(err)
			s.stopped = true
			return false
		}
		w.nextDisk = math.MaxInt64
		if len(next) > 0 {
			w.nextDisk = next[0].Due
		}
		s.advanceFrontier(to)
		w.page = minPage
		return true
	}
	w.page = min(2*w.page, maxPage)
	w.cursor = page.Next
	w.front = page.Next
	s.frontDue.Store(w.front.Due)
	return true
}

// advanceFrontier marks everything due before to as loaded.
func (s *shard) advanceFrontier(to int64) {
	w := &s.win
	w.scanFrom, w.cursor = to, store.Position{}
	w.front = store.Position{Due: to - 1, ID: math.MaxUint64}
	if to == math.MaxInt64 { // nothing is due later: all of it is loaded
		w.front.Due = math.MaxInt64
	}
	s.frontDue.Store(w.front.Due)
	if !w.loaded {
		w.loaded = true
		s.e.markLoaded()
	}
}
