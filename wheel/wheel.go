package wheel

import (
	"errors"
	"fmt"
	"math"
	"math/bits"
	"slices"
	"time"
)

// Handle identifies one inserted entry for Cancel. It packs the entry's slab
// index (plus one, so the zero Handle is never valid) in the low 32 bits and
// the slot's generation in the high 32 bits: once an entry has expired or been
// cancelled its slot's generation moves on, so an old Handle no longer matches
// and cancelling it is a harmless no-op.
type Handle uint64

// Options configures a Wheel. The zero value is valid: 1 ms ticks, 64 slots
// on the lowest level and 1024 on each level above, time starting at 0.
type Options struct {
	// Tick is the resolution: due times are rounded up to a whole tick and
	// Advance rounds its time down to one. Default 1 ms.
	Tick time.Duration
	// SlotBits sets the slots of level 0 to 1<<SlotBits, from 2 to 12.
	// Default 6 (64 slots). Level 0's span (slots × Tick) is a block: how
	// much due time one cascade from the ring covers. The smaller it is,
	// the smaller and more frequent the cascades, for the same total work.
	SlotBits int
	// UpperSlotBits sets the slots of the levels above 0, from 2 to 16.
	// Default 10. A level-0 span of ticks is a block, and 1<<UpperSlotBits
	// blocks a superblock; level 1 is a ring of two superblocks' worth of
	// blocks, so it always holds at least one superblock ahead of now (65.5
	// s with the defaults and 1 ms ticks). Entries due within that horizon
	// cascade once, one block at a time, however many are pending; entries
	// due beyond it wait on the levels above, which are hierarchical over
	// superblocks, each 1<<UpperSlotBits slots.
	UpperSlotBits int
	// Start is the wheel's initial time in nanoseconds on the caller's
	// timeline (the engine uses its monotonic clock). Must not be negative.
	Start int64
	// Capacity pre-sizes the entry slab so the first inserts do not grow it.
	Capacity int
}

const (
	defaultTick          = time.Millisecond
	defaultSlotBits      = 6
	defaultUpperSlotBits = 10
	minSlotBits          = 2
	maxSlotBits          = 12
	maxUpperSlotBits     = 16
)

// ErrBadOptions is wrapped by every Options validation error.
var ErrBadOptions = errors.New("wheel: bad options")

// Validate reports the first bad field, saying what is allowed.
func (o Options) Validate() error {
	switch {
	case o.Tick < 0:
		return fmt.Errorf("%w: Tick %v is negative; use a positive duration or 0 for the default %v", ErrBadOptions, o.Tick, defaultTick)
	case o.SlotBits != 0 && (o.SlotBits < minSlotBits || o.SlotBits > maxSlotBits):
		return fmt.Errorf("%w: SlotBits %d is out of range; allowed %d..%d, or 0 for the default %d", ErrBadOptions, o.SlotBits, minSlotBits, maxSlotBits, defaultSlotBits)
	case o.UpperSlotBits != 0 && (o.UpperSlotBits < minSlotBits || o.UpperSlotBits > maxUpperSlotBits):
		return fmt.Errorf("%w: UpperSlotBits %d is out of range; allowed %d..%d, or 0 for the default %d", ErrBadOptions, o.UpperSlotBits, minSlotBits, maxUpperSlotBits, defaultUpperSlotBits)
	case o.Start < 0:
		return fmt.Errorf("%w: Start %d is negative; times are nanoseconds from an origin at or before the first use", ErrBadOptions, o.Start)
	case o.Capacity < 0 || o.Capacity > maxEntries:
		return fmt.Errorf("%w: Capacity %d is out of range; allowed 0..%d", ErrBadOptions, o.Capacity, maxEntries)
	}
	return nil
}

// maxEntries bounds the slab so indices fit the low half of a slot ref.
const maxEntries = math.MaxInt32 - 1

// Values of entry.slot besides slot indices.
const (
	slotFree    = -1 // free: on the free stack, or retired
	slotOverdue = -2 // on the overdue list
)

// entry is one pending timer. It holds no pointers, so a slab of millions of
// them is a single object the garbage collector never scans.
type entry struct {
	due  uint64 // due tick
	ref  uint64 // the caller's reference
	gen  uint32 // bumped when the entry is freed, so stale refs and Handles miss
	slot int32  // slot index (the level's first slot + digit), slotOverdue or slotFree
}

// A slotRef is what a slot holds for an entry: its slab index in the low 32
// bits and its generation in the high 32, the same packing as a Handle less
// the +1. A cancel frees the entry at once and leaves its ref behind; the ref
// no longer matches the entry's generation, and whoever walks the slot next
// skips it. Walking arrays of refs rather than linked entries lets the CPU
// fetch many entries at once, which is most of the cost of expiry.
type slotRef uint64

// Wheel is a hierarchical timing wheel. It is not safe for concurrent use:
// the engine gives each shard its own Wheel, owned by one goroutine.
type Wheel struct {
	tick  int64   // nanoseconds per tick
	lvl   []level // level 0, the ring (lvl[1]: two superblocks of blocks), the far levels
	bits0 uint    // slot bits of level 0: ticks per block
	bitsU uint    // slot bits of the levels above the ring: blocks per superblock

	// cur is the tick processing has reached. Where a live entry sits
	// depends on its due tick d against cur (see levelFor): level 0 holds
	// d in cur's block, after cur (or at cur: entries left in cur's slot by
	// an AdvanceLimit that hit its limit; curHead counts the refs of that
	// slot already handed out); the ring holds d in a later block of cur's
	// superblock or the next; the far levels hold the rest, each slot
	// sharing the higher digits of fcur (cur one superblock on) with a
	// larger digit at its level.
	cur     uint64
	curHead int
	// now is the largest tick Advance was asked for; cur ≤ now, and cur < now
	// only after a limited Advance stopped early.
	now uint64

	entries []entry
	free    []int32 // indices of free entries, reused last-freed first
	retired int     // entries whose generation ran out; never reused
	n       int     // live entries

	buckets [][]slotRef // per slot, in insert order (cascades keep it)
	live    []int32     // live entries per slot
	occ     []uint64    // occupancy bitmaps: bit set iff live > 0
	slotMin []uint64    // earliest due tick per slot, exact unless stale
	stale   []bool      // slotMin may be too low: its entry was cancelled

	// overdue holds entries inserted at or before cur, returned first by
	// the next Advance; overdue[:overdueHead] were handed out already.
	overdue       []slotRef
	overdueHead   int
	overdueLive   int
	overdueSorted bool   // overdue[overdueHead:] is in due order
	overdueMax    uint64 // latest due tick appended since overdue was empty

	//lint:ignore U1000 used by the invariants build, empty in others
	chk invariantState
}

// level is the geometry of one level: where its digit sits in a tick number
// and where its slots and occupancy words sit in the wheel's flat arrays.
// Level 0's digit is the tick within a block; level 1 (the ring) indexes
// blocks modulo its slot count; level k ≥ 2 holds digit k-2 of the superblock.
type level struct {
	shift   uint   // bits below this level's digit
	bits    uint   // bits of its digit
	mask    uint64 // 1<<bits - 1
	slots   int    // 1 << bits
	base    int    // index of its first slot
	occBase int    // index of its first occupancy word
	words   int    // occupancy words
}

// New returns an empty wheel at opts.Start.
func New(opts Options) (*Wheel, error) {
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	if opts.Tick == 0 {
		opts.Tick = defaultTick
	}
	if opts.SlotBits == 0 {
		opts.SlotBits = defaultSlotBits
	}
	if opts.UpperSlotBits == 0 {
		opts.UpperSlotBits = defaultUpperSlotBits
	}
	w := &Wheel{
		tick:          int64(opts.Tick),
		bits0:         uint(opts.SlotBits),
		bitsU:         uint(opts.UpperSlotBits),
		entries:       make([]entry, 0, opts.Capacity),
		overdueSorted: true,
	}
	// Level 0, the ring, then far levels until their digits cover all 64
	// bits of a tick number.
	var nslots, nwords int
	add := func(shift, b uint) {
		lv := level{shift: shift, bits: b, mask: 1<<b - 1, slots: 1 << b, base: nslots, occBase: nwords, words: max(1, (1<<b)/64)}
		w.lvl = append(w.lvl, lv)
		nslots += lv.slots
		nwords += lv.words
	}
	add(0, w.bits0)
	add(w.bits0, w.bitsU+1)
	for shift := w.bits0 + w.bitsU; shift < 64; shift += w.bitsU {
		add(shift, min(w.bitsU, 64-shift)) // the top level needs only the bits that are left
	}
	w.cur = uint64(opts.Start / w.tick)
	w.now = w.cur
	w.buckets = make([][]slotRef, nslots)
	w.live = make([]int32, nslots)
	w.occ = make([]uint64, nwords)
	w.slotMin = make([]uint64, nslots)
	w.stale = make([]bool, nslots)
	return w, nil
}

// Len returns the number of pending entries.
func (w *Wheel) Len() int { return w.n }

// Tick returns the wheel's resolution.
func (w *Wheel) Tick() time.Duration { return time.Duration(w.tick) }

// Now returns the latest time Advance was asked for, rounded down to a tick.
func (w *Wheel) Now() int64 { return int64(w.now) * w.tick }

// Insert adds an entry due at time due (nanoseconds on the wheel's timeline)
// carrying ref, and returns its Handle. The due time is rounded up to a whole
// tick, so the entry never comes out before due (times within the last tick
// below math.MaxInt64 are held at that tick, the last one Advance can reach).
// An entry due at or before the current tick comes out on the next Advance.
// O(1); no allocation once the slab and slots have grown to their peak.
func (w *Wheel) Insert(due int64, ref uint64) Handle {
	d := w.dueTick(due)
	i := w.alloc()
	e := &w.entries[i]
	e.due, e.ref = d, ref
	if d <= w.cur {
		// Already due; cur's own slot has been, or is being, handed out.
		e.slot = slotOverdue
		if d < w.overdueMax {
			w.overdueSorted = false
		}
		w.overdueMax = max(w.overdueMax, d)
		w.overdue = append(w.overdue, w.refOf(i))
		w.overdueLive++
	} else {
		w.place(i)
	}
	w.n++
	w.checkAfterOp()
	return Handle(uint64(e.gen)<<32 | uint64(i+1))
}

// Cancel removes the entry h refers to and reports whether it was pending.
// A handle of an entry that already expired or was cancelled, even if its
// slab slot has been reused since, is ignored. O(1): the entry is freed at
// once and its ref in the slot is skipped when the slot is next walked.
func (w *Wheel) Cancel(h Handle) bool {
	i := int32(uint32(h)) - 1
	if i < 0 || int(i) >= len(w.entries) {
		return false
	}
	e := &w.entries[i]
	if e.gen != uint32(h>>32) || e.slot == slotFree {
		return false
	}
	slot := e.slot
	switch s := slot; {
	case s == slotOverdue:
		w.overdueLive--
		if w.overdueLive == 0 {
			w.resetOverdue()
		}
	case w.live[s] == 1:
		w.emptySlot(int(s))
	default:
		w.live[s]--
		if e.due == w.slotMin[s] {
			w.stale[s] = true
		}
	}
	w.release(i)
	w.compactIfMostlyDead(slot)
	w.checkAfterOp()
	return true
}

// NextDue returns the earliest due time among pending entries, as the start
// of its tick, and false when the wheel is empty. If entries are already due
// (inserted at or before the current tick, or left by AdvanceLimit) it returns
// a time at or before Now, meaning "advance now". The engine sleeps until this
// time; it is found through the occupancy bitmaps, never by ticking empty slots.
func (w *Wheel) NextDue() (int64, bool) {
	if w.n == 0 {
		return 0, false
	}
	if w.overdueLive > 0 || w.live[w.slotIndex(0, w.cur)] > 0 {
		return w.tickTime(w.cur), true
	}
	// Level 0's entries come before the ring's, and the ring's before the
	// far levels': each holds later blocks than the one before.
	for l := range w.lvl {
		s, ok := w.nextOccupied(l, w.digit(l, w.levelCur(l)))
		if !ok {
			continue
		}
		idx := w.lvl[l].base + s
		if w.stale[idx] {
			// Entries in one higher-level slot span many ticks; a cancel
			// of the earliest left slotMin low.
			w.refreshSlotMin(idx)
		}
		return w.tickTime(w.slotMin[idx]), true
	}
	panic("wheel: entries pending but no slot occupied")
}

// Advance moves the wheel to time now and appends to dst the references of
// every entry due at or before it, in due order with ties in insert order,
// and returns the extended slice. Time never goes back: a now earlier than a
// previous one only returns entries that are already due.
func (w *Wheel) Advance(now int64, dst []uint64) []uint64 {
	return w.AdvanceLimit(now, math.MaxInt, dst)
}

// AdvanceLimit is Advance returning at most limit entries. Due entries beyond
// the limit stay in the wheel, first in line for the next call; the engine
// uses this to stop popping while its ready queue is full.
func (w *Wheel) AdvanceLimit(now int64, limit int, dst []uint64) []uint64 {
	if now < 0 {
		now = 0
	}
	if t := uint64(now / w.tick); t > w.now {
		w.now = t
	}
	end := len(dst) + min(limit, math.MaxInt-len(dst))
	dst = w.drainDue(dst, end)
	for len(dst) < end {
		l, s, at, ok := w.nextEvent()
		if !ok {
			w.cur = w.now
			break
		}
		w.cur = at
		if l > 0 {
			w.cascade(w.lvl[l].base + s)
		}
		if l >= 2 {
			// A far slot comes due at a block's first tick, which may be
			// the ring slot's event too: that one is next.
			if idx := w.slotIndex(1, w.cur); w.live[idx] > 0 {
				w.cascade(idx)
			}
		}
		dst = w.drainCur(dst, end)
	}
	w.checkAfterOp()
	return dst
}

// drainDue hands out what is due at or before cur: overdue entries due before
// cur (by due time, stable), then cur's own level-0 slot (its entries are
// older than any overdue entry due at cur, inserted after cur was reached),
// then the overdue entries due at cur.
func (w *Wheel) drainDue(dst []uint64, end int) []uint64 {
	if w.overdueLive == 0 {
		return w.drainCur(dst, end)
	}
	if !w.overdueSorted {
		slices.SortStableFunc(w.overdue[w.overdueHead:], func(a, b slotRef) int {
			return cmpDue(w.entries[uint32(a)].due, w.entries[uint32(b)].due)
		})
		w.overdueSorted = true
	}
	dst = w.drainOverdue(dst, end, w.cur)
	dst = w.drainCur(dst, end)
	return w.drainOverdue(dst, end, w.cur+1)
}

// drainOverdue hands out overdue entries due before tick until, up to end.
// Refs of cancelled entries are skipped wherever they sorted to.
func (w *Wheel) drainOverdue(dst []uint64, end int, until uint64) []uint64 {
	for w.overdueHead < len(w.overdue) && len(dst) < end {
		r := w.overdue[w.overdueHead]
		i := uint32(r)
		if !w.isLive(r) {
			w.overdueHead++
			continue
		}
		if w.entries[i].due >= until {
			break
		}
		dst = append(dst, w.entries[i].ref)
		w.release(int32(i))
		w.overdueHead++
		w.overdueLive--
	}
	if w.overdueLive == 0 {
		w.resetOverdue()
	} else if w.overdueHead > 64 && w.overdueHead > len(w.overdue)/2 {
		// A backlog drained by limited advances while more keeps arriving
		// never empties: move the rest down instead of growing forever.
		n := copy(w.overdue, w.overdue[w.overdueHead:])
		clear(w.overdue[n:])
		w.overdue, w.overdueHead = w.overdue[:n], 0
	}
	return dst
}

func (w *Wheel) resetOverdue() {
	o := w.overdue
	if cap(o) > 4096 && len(o) < cap(o)/4 {
		o = nil
	}
	w.overdue, w.overdueHead, w.overdueSorted, w.overdueMax = o[:0], 0, true, 0
}

// drainCur hands out the entries of cur's level-0 slot, oldest first, up to end.
func (w *Wheel) drainCur(dst []uint64, end int) []uint64 {
	idx := w.slotIndex(0, w.cur)
	b := w.buckets[idx]
	for w.curHead < len(b) && len(dst) < end {
		r := b[w.curHead]
		w.curHead++
		if !w.isLive(r) {
			continue
		}
		i := int32(uint32(r))
		dst = append(dst, w.entries[i].ref)
		w.release(i)
		w.live[idx]--
	}
	if w.live[idx] == 0 {
		w.emptySlot(idx)
	}
	return dst
}

// nextEvent finds the next slot that needs processing at or before w.now,
// and the tick cur moves to for it: the next occupied level-0 slot in cur's
// block (at its tick); else the earlier of the next occupied ring slot (at
// its block's first tick) and the next far slot, which is emptied one
// superblock before its start, so that by the time cur enters a superblock
// all of the next one is in the ring. At a tie the far slot comes first: it
// must be emptied before cur enters the superblock, or an Insert after a
// limited Advance could put an entry in the ring ahead of older ones still
// on the far levels.
func (w *Wheel) nextEvent() (level, slot int, at uint64, ok bool) {
	if s, found := w.nextOccupied(0, w.digit(0, w.cur)); found {
		if at = w.slotStart(0, s, w.cur); at <= w.now {
			return 0, s, at, true
		}
		return 0, 0, 0, false
	}
	level = -1
	if s, found := w.nextOccupied(1, w.digit(1, w.cur)); found {
		level, slot, at = 1, s, w.ringStart(s)
	}
	fcur := w.fcur()
	for l := 2; l < len(w.lvl); l++ {
		s, found := w.nextOccupied(l, w.digit(l, fcur))
		if !found {
			continue
		}
		if fat := w.slotStart(l, s, fcur) - w.sbTicks(); level < 0 || fat <= at {
			level, slot, at = l, s, fat
		}
		break
	}
	if level < 0 || at > w.now {
		return 0, 0, 0, false
	}
	return level, slot, at, true
}

// cascade re-places every live entry of a higher-level slot that cur has just
// entered. Entries move to lower levels (or to cur's level-0 slot if due
// exactly at cur) in slot order, which keeps ties in insert order.
func (w *Wheel) cascade(idx int) {
	for _, r := range w.buckets[idx] {
		if w.isLive(r) {
			w.place(int32(uint32(r)))
		}
	}
	w.emptySlot(idx)
}

// place appends entry i, due at or after cur, to its slot (levelFor). An
// entry due exactly at cur (only from a cascade) lands in cur's level-0 slot,
// which the caller drains next.
func (w *Wheel) place(i int32) {
	e := &w.entries[i]
	l := w.levelFor(e.due)
	idx := w.slotIndex(l, e.due)
	if w.live[idx] == 0 {
		w.slotMin[idx] = e.due
		w.stale[idx] = false
		w.setOcc(idx, true)
	} else if e.due < w.slotMin[idx] {
		w.slotMin[idx] = e.due
	}
	w.live[idx]++
	e.slot = int32(idx)
	w.buckets[idx] = append(w.buckets[idx], w.refOf(i))
}

// emptySlot resets a slot with no live entries. It keeps the slot's array for
// reuse unless it is large and was mostly idle, so a burst does not pin
// memory for good.
func (w *Wheel) emptySlot(idx int) {
	b := w.buckets[idx]
	if cap(b) > 4096 && len(b) < cap(b)/4 {
		b = nil
	}
	w.buckets[idx] = b[:0]
	w.live[idx] = 0
	w.setOcc(idx, false)
	if idx == w.slotIndex(0, w.cur) {
		w.curHead = 0
	}
}

// compactIfMostlyDead drops the dead refs of a slot (or of the overdue list)
// once they outnumber its live entries twice over, so a workload that
// cancels most of what it schedules far ahead does not grow slot arrays
// without bound. Filtering keeps the order of the live refs. Each compaction
// costs O(live + dead) after at least 2×live + 64 cancels: O(1) amortised.
func (w *Wheel) compactIfMostlyDead(slot int32) {
	var refs []slotRef
	var head, live int
	if slot == slotOverdue {
		refs, head, live = w.overdue, w.overdueHead, w.overdueLive
	} else if slot >= 0 {
		refs, live = w.buckets[slot], int(w.live[slot])
		if int(slot) == w.slotIndex(0, w.cur) {
			head = w.curHead
		}
	}
	if len(refs)-head-live <= 2*live+64 {
		return
	}
	kept := refs[:0]
	for _, r := range refs[head:] {
		if w.isLive(r) {
			kept = append(kept, r)
		}
	}
	clear(refs[len(kept):])
	if slot == slotOverdue {
		w.overdue, w.overdueHead = kept, 0
	} else {
		w.buckets[slot] = kept
		if int(slot) == w.slotIndex(0, w.cur) {
			w.curHead = 0
		}
	}
}

func (w *Wheel) refOf(i int32) slotRef {
	return slotRef(uint64(w.entries[i].gen)<<32 | uint64(uint32(i)))
}

func (w *Wheel) isLive(r slotRef) bool {
	return w.entries[uint32(r)].gen == uint32(r>>32)
}

// alloc takes a free entry, the most recently freed first: its cache line
// is likely still warm from the expiry or cancel that freed it. The free
// indices sit in their own stack rather than a list threaded through the
// entries, so finding the next one never waits on a cache miss.
func (w *Wheel) alloc() int32 {
	if k := len(w.free); k > 0 {
		i := w.free[k-1]
		w.free = w.free[:k-1]
		return i
	}
	if len(w.entries) >= maxEntries {
		panic("wheel: more than 2^31-2 pending entries")
	}
	w.entries = append(w.entries, entry{gen: 1})
	return int32(len(w.entries) - 1)
}

// release frees entry i. Its generation moves on, so refs and Handles of
// this incarnation stop matching. An entry whose 32-bit generation would
// wrap is retired instead of reused: a dead ref can wait in a far slot for
// a long time, and a wrapped generation would bring it back to life. That
// costs 24 bytes per 2^32 reuses of one entry.
func (w *Wheel) release(i int32) {
	e := &w.entries[i]
	e.gen++
	e.slot, e.ref = slotFree, 0
	if e.gen == math.MaxUint32 {
		w.retired++
	} else {
		w.free = append(w.free, i)
	}
	w.n--
}

// refreshSlotMin recomputes a slot's earliest due tick by walking the slot.
// slotMin only goes stale low (a cancel removed the earliest), so this runs
// at most once per cancel of a slot minimum; a workload that keeps
// cancelling the earliest entry of one huge coarse slot pays a walk of that
// slot per NextDue.
func (w *Wheel) refreshSlotMin(idx int) {
	m := uint64(math.MaxUint64)
	for _, r := range w.buckets[idx] {
		if w.isLive(r) {
			m = min(m, w.entries[uint32(r)].due)
		}
	}
	w.slotMin[idx] = m
	w.stale[idx] = false
}

func cmpDue(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// nextOccupied returns the first occupied slot of level l after slot d; on
// the ring, the first one after d going round (slot d, cur's block, never
// holds an entry).
func (w *Wheel) nextOccupied(l, d int) (int, bool) {
	if l == 1 {
		if s, ok := w.nextOccupiedFrom(1, d+1); ok {
			return s, true
		}
		return w.nextOccupiedFrom(1, 0)
	}
	return w.nextOccupiedFrom(l, d+1)
}

// nextOccupiedFrom returns the first occupied slot of level l at or after
// slot from.
func (w *Wheel) nextOccupiedFrom(l, from int) (int, bool) {
	lv := &w.lvl[l]
	for wi := from / 64; wi < lv.words; wi++ {
		word := w.occ[lv.occBase+wi]
		if wi == from/64 {
			word &^= 1<<(uint(from)%64) - 1
		}
		if word != 0 {
			s := wi*64 + bits.TrailingZeros64(word)
			if s < lv.slots {
				return s, true
			}
			return 0, false
		}
	}
	return 0, false
}

// levelFor returns the level of an entry due at tick d ≥ cur: 0 in cur's
// block, 1 (the ring) in a later block of cur's superblock or the next, and
// otherwise the far level of the highest digit in which d differs from
// fcur.
func (w *Wheel) levelFor(d uint64) int {
	switch {
	case d>>w.bits0 == w.cur>>w.bits0:
		return 0
	case w.superblock(d) <= w.superblock(w.cur)+1:
		return 1
	}
	return 1 + (bits.Len64(d^w.fcur())-1-int(w.bits0))/int(w.bitsU)
}

func (w *Wheel) superblock(t uint64) uint64 { return t >> (w.bits0 + w.bitsU) }

// sbTicks is the ticks in one superblock.
func (w *Wheel) sbTicks() uint64 { return 1 << (w.bits0 + w.bitsU) }

// fcur is the cursor the far levels are placed against: cur one superblock
// on, so that a far slot comes due, and moves to the ring, one superblock
// before its entries can.
func (w *Wheel) fcur() uint64 { return w.cur + w.sbTicks() }

// levelCur is the cursor level l's slots are placed against.
func (w *Wheel) levelCur(l int) uint64 {
	if l >= 2 {
		return w.fcur()
	}
	return w.cur
}

// ringStart is the first tick of the block ring slot s holds: the first
// block after cur's whose index is s.
func (w *Wheel) ringStart(s int) uint64 {
	cb := w.cur >> w.bits0
	ahead := (uint64(s) - cb) & w.lvl[1].mask
	return (cb + ahead) << w.bits0
}

func (w *Wheel) setOcc(idx int, on bool) {
	l, s := w.levelOf(idx)
	wi := w.lvl[l].occBase + s/64
	if on {
		w.occ[wi] |= 1 << (uint(s) % 64)
	} else {
		w.occ[wi] &^= 1 << (uint(s) % 64)
	}
}

// levelOf splits a slot index into its level and digit.
func (w *Wheel) levelOf(idx int) (l, s int) {
	ring := &w.lvl[1]
	if idx < ring.base {
		return 0, idx
	}
	if u := idx - ring.base; u < ring.slots {
		return 1, u
	}
	u := idx - w.lvl[2].base
	return 2 + u>>w.bitsU, u & (1<<w.bitsU - 1)
}

// digit returns the level-l digit of tick t.
func (w *Wheel) digit(l int, t uint64) int {
	lv := &w.lvl[l]
	return int(t >> lv.shift & lv.mask)
}

func (w *Wheel) slotIndex(l int, t uint64) int {
	return w.lvl[l].base + w.digit(l, t)
}

// slotStart is the first tick of level l's slot s within the higher digits
// of cursor c (not for the ring: see ringStart).
func (w *Wheel) slotStart(l, s int, c uint64) uint64 {
	lv := &w.lvl[l]
	high := uint64(0)
	if top := lv.shift + lv.bits; top < 64 {
		high = c >> top << top
	}
	return high | uint64(s)<<lv.shift
}

// dueTick rounds a due time up to its tick, so an entry is never early. The
// one exception is the last partial tick below the int64 maximum, which no
// Advance can reach: due times there are held at the last whole tick.
func (w *Wheel) dueTick(due int64) uint64 {
	if due <= 0 {
		return 0
	}
	t := uint64(due / w.tick)
	if due%w.tick != 0 && t < uint64(math.MaxInt64/w.tick) {
		t++
	}
	return t
}

// tickTime converts a tick to nanoseconds, saturating at the int64 maximum.
func (w *Wheel) tickTime(t uint64) int64 {
	if t > uint64(math.MaxInt64/w.tick) {
		return math.MaxInt64
	}
	return int64(t) * w.tick
}
