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
// Time is counted in ticks (Options.Tick, 1 ms by default). The wheel keeps a
// cursor, cur, the tick it has processed up to, and three tiers:
//
//   - Level 0 has one slot per tick of cur's block, B = 1<<SlotBits ticks
//     (64 by default). A block is the unit the tiers above hand down.
//   - The ring has one slot per block, 2S of them, where S = 1<<UpperSlotBits
//     (1024 by default) blocks make a superblock. It holds entries due in a
//     later block of cur's superblock or of the next one, so it always
//     reaches at least S blocks ahead (65.5 s with the defaults), in slot
//     block mod 2S.
//   - The far levels hold everything later, hierarchically: far level k has
//     S slots of S^k superblocks. They are placed against fcur, cur one
//     superblock on: an entry's level is the highest digit in which its due
//     tick differs from fcur's, its slot its digit there.
//
// When the cursor enters a block, the block's ring slot is cascaded: its
// entries move to level 0 by their tick. A far slot is cascaded when fcur
// enters it, one superblock before the cursor does, so that the whole next
// superblock is in the ring before the cursor reaches it and before any new
// entry for it can go straight there. With the defaults, level 0, the ring
// and five far levels cover every tick an int64 of nanoseconds can name, so
// nothing is ever "beyond the horizon".
//
// Why a ring and not more hierarchical levels: in a hierarchical wheel the
// slot that cur enters at a level-2 boundary holds every entry due within
// that level-2 slot's span, which for entries due seconds ahead is almost
// all that is pending; cascading it stalls the wheel's owner for as long as
// it takes to touch each one (17-53 ms at 100k inserts/s per wheel, measured
// with 64 slots per level every 4.1 s). Through the ring an entry due within
// S blocks cascades exactly once, one block's worth at a time, however many
// are pending. Only entries due beyond the ring's reach still move in bulk,
// a superblock's worth per far cascade.
//
// A worked example with B = 4 ticks per block and S = 4 blocks per
// superblock (superblocks of 16 ticks, a ring of 8 slots, far slots of 2 bits
// of the superblock number), at cur = 0 (so fcur = 16):
//
//	insert due  2: block 0, cur's                -> level 0, slot 2
//	insert due  6: block 1, in cur's superblock  -> ring, slot 1
//	insert due 29: block 7, in the next one      -> ring, slot 7
//	insert due 70: superblock 4; 70 = 1000110₂ and fcur = 0010000₂ differ
//	               first in bit 6, the digit of far level 3 (4 superblocks
//	               per slot)                     -> far level 3, slot 1
//
// Advance(80) then processes, in order:
//
//	cur =  2 level 0 slot 2 -> returns due 2
//	cur =  4 ring slot 1 (block 1): cascade due 6 -> level 0, slot 2
//	cur =  6 level 0 slot 2 -> returns due 6
//	cur = 28 ring slot 7 (block 7): cascade due 29 -> level 0, slot 1
//	cur = 29 level 0 slot 1 -> returns due 29
//	cur = 48 far level 3 slot 1 (ticks 64-127) comes due as fcur = 64
//	         enters it: due 70 is in superblock 4, the one after cur's
//	         -> ring, slot 17 mod 8 = 1
//	cur = 68 ring slot 1 (block 17): cascade due 70 -> level 0, slot 2
//	cur = 70 level 0 slot 2 -> returns due 70
//	then cur = 80: nothing else is due.
//
// Cascading is exact: an entry is re-placed by its own due tick whenever it
// moves, and is returned only from a level-0 slot, which holds a single tick.
// Kafka's TimingWheel, by contrast, expires a bucket when the bucket's start
// time arrives, so a task can fire before its due time; here nothing comes
// out before its due tick, and due times are rounded up to a tick, so nothing
// comes out before its due time either.
//
// The cursor never ticks through empty slots: an occupancy bitmap per tier
// finds the next occupied slot with a few bit operations, so Advance over an
// hour of idle time costs as little as over one tick, and NextDue tells the
// engine exactly how long it may sleep. Each slot also remembers its
// earliest due tick, so NextDue is exact even when the earliest entry sits in
// a coarse far slot.
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
// counts, the free stack — after every operation while it is small (its
// slab, and its slots counted at 1/64: a default wheel's 7,200 slots count as
// 113), and about once per that many operations when larger, so the cost
// stays O(1) amortised. The model test verifies after every operation.
package wheel
