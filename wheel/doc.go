// Package wheel is a hierarchical timing wheel: the in-memory index of
// pending messages in Hourglass.
//
// It is a pure data structure. Time is passed in (Insert's due time,
// Advance's now, both nanoseconds on the caller's timeline); the wheel never
// reads a clock, starts no goroutine, takes no lock and does no I/O. Each
// engine shard owns one wheel and drives it from one goroutine.
//
// # Levels
//
// Time is counted in ticks (Options.Tick, 1 ms by default). A tick number is
// read as digits in base S, where S = 1<<SlotBits slots per level (64 by
// default). Level 0 has one slot per tick, level 1 one slot per S ticks,
// level 2 one per S² ticks, and so on; with 64 slots, 11 levels cover every
// tick an int64 of nanoseconds can name, so nothing is ever "beyond the
// horizon".
//
// The wheel keeps a cursor, cur, the tick it has processed up to. An entry due
// at tick d is placed by comparing d with cur: its level is the highest digit
// in which they differ, and its slot is d's digit at that level. So every
// entry at level L shares cur's digits above L and has a larger digit at L.
//
// A worked example with S = 4 (digits in base 4) and cur = 0:
//
//	insert due  2 = (0 0 2)₄  differs from cur in digit 0 -> level 0, slot 2
//	insert due  6 = (0 1 2)₄  differs in digit 1           -> level 1, slot 1
//	insert due 37 = (2 1 1)₄  differs in digit 2           -> level 2, slot 2
//
// Advance(40) processes, in order, every occupied slot whose start is at or
// before 40, always taking the lowest non-empty level first (a level's slots
// all lie inside the current slot of the level above, so they come earlier):
//
//	cur = 2  level 0 slot 2 -> returns due 2
//	cur = 4  level 1 slot 1 starts at (0 1 0)₄ = 4: cascade due 6
//	         re-placed against cur = 4: differs in digit 0 -> level 0, slot 2
//	cur = 6  level 0 slot 2 -> returns due 6
//	cur = 32 level 2 slot 2 starts at (2 0 0)₄ = 32: cascade due 37
//	         re-placed against cur = 32: differs in digit 1 -> level 1, slot 1
//	cur = 36 level 1 slot 1 starts at (2 1 0)₄ = 36: cascade due 37
//	         -> level 0, slot 1
//	cur = 37 level 0 slot 1 -> returns due 37
//	then cur = 40: nothing else is due.
//
// Cascading is exact: an entry is re-placed by its own due tick whenever the
// cursor enters its slot, and is returned only from a level-0 slot, which
// holds a single tick. Kafka's TimingWheel, by contrast, expires a bucket when
// the bucket's start time arrives, so a task can fire before its due time;
// here nothing comes out before its due tick, and due times are rounded up to
// a tick, so nothing comes out before its due time either.
//
// The cursor never ticks through empty slots: one occupancy bitmap per level
// finds the next occupied slot with a couple of bit operations, so Advance
// over an hour of idle time costs as little as over one tick, and NextDue
// tells the engine exactly how long it may sleep. Each slot also remembers its
// earliest due tick, so NextDue is exact even when the earliest entry sits in
// a coarse higher-level slot.
//
// # Ordering
//
// Advance returns entries in due order, ties in insert order. Slots are
// arrays appended to in insert order, and cascades re-place entries in array
// order, so entries that share a tick stay in the order they were inserted,
// whichever levels they passed through. An entry inserted already due (at or before cur) waits on an
// overdue list that the next Advance returns first, sorted by due time.
//
// # Memory
//
// Entries live in one slab ([]entry, 24 bytes each); a slot is an array of
// 8-byte refs (slab index and generation), and free entries wait on a stack
// of indices. None of these hold pointers, so ten million pending entries
// cost the garbage collector nothing to scan, and insert, cancel and expiry
// allocate nothing once the arrays have grown to their peak. A Handle packs
// the slab index with a generation that moves on when the entry is freed, so
// cancelling a stale Handle is harmless. Cancel is lazy: it frees the entry at
// once and leaves a dead ref that the next walk of the slot skips; a slot
// whose dead refs outnumber its live ones twice over is compacted.
//
// # Checks
//
// Built with the invariants tag (as the tests are), the wheel verifies its
// whole structure — slot membership, occupancy bitmaps, slot minimums, live
// counts, the free stack — after every operation while its slab is small, and
// about once per slab-size operations when large, so the cost stays O(1)
// amortised.
package wheel
