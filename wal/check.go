package wal

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"log/slog"
	"math/bits"
	"slices"
	"strings"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/hourglassmq/hourglass/store"
)

// Check verifies a closed store offline, like bbolt's check: it reads the
// directory (and the clean-close record, if any) without writing, opens
// Pebble read-only, walks every key, decodes every record and checks the
// store's invariants:
//
//   - the meta record (magic, format version, shard count) and the last
//     sequence;
//   - every clear record of the resolve log decodes, is in range, and
//     clears only live slots of the blocks it names that are still stored,
//     never emptying one;
//   - every block has its summary and its record; the summary's live count
//     equals its bitmap's popcount and is not zero (an emptied block is
//     deleted); the block's slot count equals the summary's; every message
//     decodes, its due lies in the summary's range, and the keyed bitmap
//     marks exactly the messages that have a key;
//   - every time-keyspace message decodes, its due matches its key, and the
//     index names it with the same due and key; every index entry names a
//     message; a message moved out of a block is no longer live there;
//   - every idempotency key names a pending message or a dead letter that
//     carries that key, and every keyed message or dead letter is named by
//     its key; no dead letter is also pending;
//   - shards and sequences of every key and ID are in range;
//   - after a clean close, the files and the counts match the record.
//
// It returns a report listing each problem; the error is nil when there is
// none, and otherwise a *DamageError (errors.Is ErrCorrupt) naming the first.
// A store that another process holds open fails with ErrLocked. fs nil means
// vfs.Default. Memory grows with the number of messages in the time keyspace
// and of idempotency keys (a few dozen bytes each).
func Check(ctx context.Context, dir string, fs vfs.FS) (*CheckReport, error) {
	if fs == nil {
		fs = vfs.Default
	}
	rep := &CheckReport{Dir: dir}
	st, err := readDir(fs, dir)
	if err != nil {
		return rep, err
	}
	if !st.exists {
		return rep, &DamageError{Dir: dir, Reason: "no such directory", kind: ErrInvalid}
	}
	plan, err := st.plan()
	if err == nil && plan != planExisting {
		err = &DamageError{Dir: dir, Reason: "the directory holds no complete store", kind: ErrInvalid}
	}
	if err != nil {
		rep.add(label("directory"), err.Error())
		return rep, rep.err()
	}
	lock, err := pebble.LockDirectory(dir, fs)
	if err != nil {
		return rep, &DamageError{Dir: dir, File: "LOCK", Reason: "another process has this store open; Check reads a closed store",
			Advice: "close the store first", Err: err, kind: ErrLocked}
	}
	defer func() {
		_ = lock.Close()
		if !st.lock {
			_ = fs.Remove(fs.PathJoin(dir, "LOCK"))
		}
	}()
	var rec *cleanRecord
	if st.closed {
		rep.CleanClose = true
		if rec, err = readCleanRecord(fs, dir); err != nil {
			rep.add(label(cleanCloseFile), err.Error())
		} else if _, err := rec.verifyFiles(fs, st, false); err != nil {
			rep.add(label("files"), err.Error())
		}
	}
	s := newStore(Options{Dir: dir, FS: fs, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}.withDefaults())
	cache := pebble.NewCache(8 << 20)
	defer cache.Unref()
	db, err := s.openPebble(ctx, s.pebbleOptions(cache, lock, true), func() {})
	if err != nil {
		rep.add(label("pebble"), explainPebble(fs, dir, err).Error())
		return rep, rep.err()
	}
	defer closePebble(db)
	if err := checkBlobFiles(ctx, fs, dir, db); err != nil {
		rep.add(label("files"), err.Error())
		return rep, rep.err() // Pebble would panic reading the file (blobcheck.go)
	}
	rep.Shards = store.MaxShards
	rep.LastSeq = maxSeq
	if v, closer, err := db.Get(keyMeta); err != nil {
		rep.add(label("meta"), fmt.Sprintf("cannot read the meta record: %v", explainPebble(fs, dir, err)))
	} else {
		version, shards, derr := decodeMeta(v)
		_ = closer.Close()
		switch {
		case derr != nil:
			rep.add(label("meta"), derr.Error())
		case version < oldestFormatVersion || version > FormatVersion:
			rep.add(label("meta"), fmt.Sprintf("format version %d; this build reads versions %d to %d", version, oldestFormatVersion, FormatVersion))
		default:
			rep.Shards = shards
		}
	}
	if seq, err := readSeq(db); err != nil {
		rep.add(label("sequence"), explainPebble(fs, dir, err).Error())
	} else {
		rep.LastSeq = seq
	}
	if err := verifyKeys(ctx, db, rep.Shards, rep.LastSeq, true, rep); err != nil {
		if ctx.Err() != nil {
			return rep, err
		}
		rep.add(label("pebble"), fmt.Sprintf("reading the keys failed: %v", explainPebble(fs, dir, err)))
	}
	if rec != nil {
		if err := rec.verifyCounts(dir, rep.LastSeq, rep.Pending, rep.Dead, rep.Blocks); err != nil {
			rep.add(label(cleanCloseFile), err.Error())
		}
	}
	return rep, rep.err()
}

// CheckReport is what Check found.
type CheckReport struct {
	Dir string
	// CleanClose is true when the store holds a clean-close record.
	CleanClose bool
	Shards     int
	LastSeq    uint64
	// Pending counts pending messages per shard (packed and timed);
	// Blocks, Timed, Dead and Keys count blocks with a pending slot,
	// time-keyspace messages, dead letters and idempotency keys.
	Pending                   []int64
	Blocks, Timed, Dead, Keys int64
	// Problems lists what is wrong, at most maxProblems of them; Omitted
	// counts the rest.
	Problems []Problem
	Omitted  int
}

// Problem is one violated invariant: where, and what is wrong.
type Problem struct {
	Where string // "block shard 1 seq 70000", "index 0a1b...", "meta", ...
	What  string
}

// String returns "where: what".
func (p Problem) String() string { return p.Where + ": " + p.What }

const maxProblems = 1000

func (r *CheckReport) add(where fmt.Stringer, what string) {
	if len(r.Problems) >= maxProblems {
		r.Omitted++
		return
	}
	r.Problems = append(r.Problems, Problem{Where: where.String(), What: what})
}

// labelf formats a place in a Problem.
func labelf(format string, args ...any) label { return label(fmt.Sprintf(format, args...)) }

// label is a fixed place in a Problem.
type label string

func (l label) String() string { return string(l) }

// place names a key or record of the store for a Problem. The walk makes one
// per key, so it formats itself only when a problem is reported.
type place struct {
	kind  byte // tagBlock, tagTime, tagIndex, tagKey or tagDead
	shard int
	seq   uint64
	slot  int // in a block; -1 for the block itself
	id    store.ID
	key   string
}

func (p place) String() string {
	switch p.kind {
	case tagBlock:
		if p.slot >= 0 {
			return fmt.Sprintf("block shard %d seq %d slot %d", p.shard, p.seq, p.slot)
		}
		return fmt.Sprintf("block shard %d seq %d", p.shard, p.seq)
	case tagTime:
		return fmt.Sprintf("message %s (time keyspace)", p.id)
	case tagIndex:
		return fmt.Sprintf("index %s", p.id)
	case tagKey:
		return fmt.Sprintf("idempotency key %.64q", p.key)
	case tagDead:
		return fmt.Sprintf("dead letter %s", p.id)
	}
	return "key"
}

// err is nil without problems, else a *DamageError naming the first.
func (r *CheckReport) err() error {
	n := len(r.Problems) + r.Omitted
	if n == 0 {
		return nil
	}
	plural := "s"
	if n == 1 {
		plural = ""
	}
	return &DamageError{Dir: r.Dir, Reason: fmt.Sprintf("check found %d problem%s; first: %s", n, plural, r.Problems[0]),
		Advice: "see the report for the full list, and restore the directory from a backup"}
}

// String lists the counts and every problem, one per line.
func (r *CheckReport) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "store %s: %d shards, last sequence %d, clean close %v\n", r.Dir, r.Shards, r.LastSeq, r.CleanClose)
	fmt.Fprintf(&b, "pending %v (%d blocks, %d timed), %d dead letters, %d idempotency keys\n", r.Pending, r.Blocks, r.Timed, r.Dead, r.Keys)
	for _, p := range r.Problems {
		fmt.Fprintf(&b, "problem: %s\n", p)
	}
	if r.Omitted > 0 {
		fmt.Fprintf(&b, "and %d more problems\n", r.Omitted)
	}
	if len(r.Problems) == 0 {
		b.WriteString("no problems\n")
	}
	return b.String()
}

// check runs the full key walk of Check on the open store (a snapshot of it)
// and compares the counts with the store's own counters. Tests use it as an
// oracle after every reopen.
func (s *Store) check(ctx context.Context) (*CheckReport, error) {
	if err := s.enter(); err != nil {
		return nil, err
	}
	defer s.leave()
	snap := s.db.NewSnapshot()
	defer snap.Close()
	rep := &CheckReport{Dir: s.opts.Dir, Shards: s.shards}
	seq, err := readSeq(snap)
	if err != nil {
		return nil, err
	}
	rep.LastSeq = seq
	if err := verifyKeys(ctx, snap, s.shards, seq, true, rep); err != nil {
		return nil, err
	}
	s.statsMu.Lock()
	pending, dead, blocks := append([]int64(nil), s.pending...), s.dead, int64(s.blocks)
	s.statsMu.Unlock()
	if !slices.Equal(pending, rep.Pending) || dead != rep.Dead || blocks != rep.Blocks {
		rep.add(label("counters"), fmt.Sprintf("the store counts pending %v, %d dead, %d blocks; its keys hold pending %v, %d dead, %d blocks",
			pending, dead, blocks, rep.Pending, rep.Dead, rep.Blocks))
	}
	return rep, rep.err()
}

// timedAt is what the walk remembers of a time-keyspace message.
type timedAt struct {
	due     int64
	key     string
	indexed bool
}

// verifyKeys walks every key of r in order and adds each violated invariant
// to rep, with the counts. full also cross-checks the keyspaces (index and
// time keyspace, idempotency keys, dead letters against pending messages),
// which costs memory per timed message and per key; without it the walk
// decodes every record, checks ranges and pairs and compares the index
// count with the time-keyspace count per shard, in constant memory. The error
// is Pebble's (a read failed), not a problem of the store's.
func verifyKeys(ctx context.Context, r pebble.Reader, shards int, lastSeq uint64, full bool, rep *CheckReport) error {
	rep.Pending = make([]int64, shards)
	indexed := make([]int64, shards)
	timedCount := make([]int64, shards)
	var (
		sums     = map[uint64]*summary{} // full: blocks with their summaries
		timed    = map[store.ID]*timedAt{}
		wantKeys = map[string]store.ID{} // full: key -> the ID whose message carries it
		haveKeys = map[string]store.ID{} // full: the idempotency-key index
		lastSum  *summary                // the summary just read, awaiting its block
		lastRef  uint64
	)
	expectKey := func(key string, id store.ID, where fmt.Stringer) {
		if prev, dup := wantKeys[key]; dup && prev != id {
			rep.add(where, fmt.Sprintf("key %.64q is carried by %s too", key, prev))
		}
		wantKeys[key] = id
	}
	checkID := func(where fmt.Stringer, id store.ID) bool {
		switch {
		case id.Shard() >= shards:
			rep.add(where, fmt.Sprintf("shard %d, but the store has %d", id.Shard(), shards))
		case idSeq(id) == 0 || idSeq(id) > lastSeq:
			rep.add(where, fmt.Sprintf("sequence %d outside [1, %d]", idSeq(id), lastSeq))
		default:
			return true
		}
		return false
	}
	orphanSummary := func() {
		if lastSum != nil {
			id := store.ID(lastRef << slotBits)
			rep.add(labelf("block shard %d seq %d", id.Shard(), idSeq(id)), "summary without a block record")
			lastSum = nil
		}
	}
	clears, err := readLog(ctx, r, shards, lastSeq, rep)
	if err != nil {
		return err
	}
	it, err := r.NewIter(nil)
	if err != nil {
		return err
	}
	defer it.Close()
	n := 0
	for ok := it.First(); ok; ok = it.Next() {
		if n++; n%1024 == 0 {
			if err := ctx.Err(); err != nil {
				return err
			}
		}
		k := it.Key()
		v, err := it.ValueAndErr()
		if err != nil {
			return err
		}
		if len(k) == 0 || k[0] != tagBlock || len(k) != 11 || k[10] != kindBlock {
			orphanSummary()
		}
		if len(k) == 0 {
			rep.add(label("key"), "empty key")
			continue
		}
		switch k[0] {
		case tagMeta:
			if !bytes.Equal(k, keyMeta) && !bytes.Equal(k, keySeq) {
				rep.add(labelf("meta key %q", k), "unknown meta key")
			}
		case tagBlock:
			if len(k) != 11 || k[10] > kindBlock {
				rep.add(labelf("block key %x", k), "malformed key")
				continue
			}
			shard, seq := int(k[1]), binary.BigEndian.Uint64(k[2:10])
			where := place{kind: tagBlock, shard: shard, seq: seq, slot: -1}
			if shard >= shards || seq == 0 || seq > lastSeq {
				rep.add(where, fmt.Sprintf("out of range (shards %d, last sequence %d)", shards, lastSeq))
				continue
			}
			ref := blockRef(makeStoreID(shard, seq, 0))
			if k[10] == kindSummary {
				sum, err := decodeSummary(v)
				if err != nil {
					rep.add(where, err.Error())
					continue
				}
				if sum.live == 0 {
					rep.add(where, "summary with no live slot: an emptied block must be deleted")
				}
				for _, c := range clears[ref] {
					if err := applyClears(&sum, c.slots); err != nil {
						rep.add(where, fmt.Sprintf("resolve log of group %d: %v", c.seq, err))
						break
					}
				}
				lastSum, lastRef = &sum, ref
				continue
			}
			if lastSum != nil && lastRef != ref {
				orphanSummary()
			}
			sum := lastSum
			lastSum = nil
			if sum == nil {
				rep.add(where, "block record without a summary")
				continue
			}
			checkBlock(rep, where, shard, seq, sum, v, full, expectKey)
			rep.Blocks++
			rep.Pending[shard] += int64(sum.live)
			if full {
				sums[ref] = sum
			}
		case tagTime:
			due, id, ok := decodeTimeKey(k)
			if !ok {
				rep.add(labelf("time key %x", k), "malformed key")
				continue
			}
			where := place{kind: tagTime, id: id}
			if int(k[1]) != id.Shard() {
				rep.add(where, fmt.Sprintf("filed under shard %d", k[1]))
				continue
			}
			if !checkID(where, id) {
				continue
			}
			mdue, hasKey, key, err := checkMessage(v, full)
			if err != nil {
				rep.add(where, err.Error())
				continue
			}
			if mdue != due {
				rep.add(where, fmt.Sprintf("due %d, but its key says %d", mdue, due))
			}
			rep.Timed++
			rep.Pending[id.Shard()]++
			timedCount[id.Shard()]++
			if full {
				if sum := sums[blockRef(id)]; idSlot(id) < farSlotBase && sum != nil && sum.isLive(idSlot(id)) {
					rep.add(where, "also live in its packed block")
				}
				timed[id] = &timedAt{due: mdue, key: key}
				if hasKey {
					expectKey(key, id, where)
				}
			}
		case tagIndex:
			if len(k) != 9 {
				rep.add(labelf("index key %x", k), "malformed key")
				continue
			}
			id := store.ID(binary.BigEndian.Uint64(k[1:]))
			where := place{kind: tagIndex, id: id}
			if !checkID(where, id) {
				continue
			}
			ie, err := decodeIndex(v)
			if err != nil {
				rep.add(where, err.Error())
				continue
			}
			indexed[id.Shard()]++
			if full {
				t := timed[id]
				switch {
				case t == nil:
					rep.add(where, "names no message in the time keyspace")
				case t.due != ie.due || t.key != ie.key:
					rep.add(where, fmt.Sprintf("says due %d key %.64q, the message has due %d key %.64q", ie.due, ie.key, t.due, t.key))
				default:
					t.indexed = true
				}
			}
		case tagKey:
			rep.Keys++
			key := string(k[1:])
			where := place{kind: tagKey, key: key}
			id, err := decodeKeyIndex(v)
			if err != nil {
				rep.add(where, err.Error())
				continue
			}
			if key == "" {
				rep.add(where, "empty key stored")
			}
			if !checkID(where, id) {
				continue
			}
			if full {
				haveKeys[key] = id
			}
		case tagDead:
			if len(k) != 9 {
				rep.add(labelf("dead key %x", k), "malformed key")
				continue
			}
			id := store.ID(binary.BigEndian.Uint64(k[1:]))
			where := place{kind: tagDead, id: id}
			if !checkID(where, id) {
				continue
			}
			d, err := decodeDead(v)
			if err != nil {
				rep.add(where, err.Error())
				continue
			}
			rep.Dead++
			if full {
				if sum := sums[blockRef(id)]; idSlot(id) < farSlotBase && sum != nil && sum.isLive(idSlot(id)) {
					rep.add(where, "also pending in its packed block")
				}
				if timed[id] != nil {
					rep.add(where, "also pending in the time keyspace")
				}
				if d.Message.Key != "" {
					expectKey(d.Message.Key, id, where)
				}
			}
		case tagClear:
			// Checked by readLog, and merged into the summaries above.
		default:
			rep.add(labelf("key %x", k[:min(len(k), 16)]), fmt.Sprintf("unknown keyspace tag %#x", k[0]))
		}
	}
	orphanSummary()
	if err := it.Error(); err != nil {
		return err
	}
	for shard := range indexed {
		if indexed[shard] != timedCount[shard] {
			rep.add(labelf("shard %d", shard), fmt.Sprintf("%d index entries for %d time-keyspace messages", indexed[shard], timedCount[shard]))
		}
	}
	if !full {
		return nil
	}
	for id, t := range timed {
		if !t.indexed {
			rep.add(labelf("message %s (time keyspace)", id), "no index entry names it (or names it wrongly)")
		}
	}
	for key, id := range wantKeys {
		switch have, ok := haveKeys[key]; {
		case !ok:
			rep.add(labelf("idempotency key %.64q", key), fmt.Sprintf("carried by %s but missing from the key index", id))
		case have != id:
			rep.add(labelf("idempotency key %.64q", key), fmt.Sprintf("carried by %s but the key index names %s", id, have))
		}
	}
	for key, id := range haveKeys {
		if _, ok := wantKeys[key]; !ok {
			rep.add(labelf("idempotency key %.64q", key), fmt.Sprintf("names %s, which is neither pending nor a dead letter with this key", id))
		}
	}
	return nil
}

// groupClears is one group's clears of one block, as Check collects them.
type groupClears struct {
	seq   uint64 // the group's
	slots []uint16
}

// readLog reads and checks the resolve log (clear records) of r, and returns
// each block's clears in log order, for the walk to merge into the
// summaries. A clear of a block that no longer exists is not a problem: the
// block emptied and was deleted after the clear was logged.
func readLog(ctx context.Context, r pebble.Reader, shards int, lastSeq uint64, rep *CheckReport) (map[uint64][]groupClears, error) {
	it, err := r.NewIter(&pebble.IterOptions{LowerBound: []byte{tagClear}, UpperBound: []byte{tagClear + 1}})
	if err != nil {
		return nil, err
	}
	defer it.Close()
	out := map[uint64][]groupClears{}
	n := 0
	for ok := it.First(); ok; ok = it.Next() {
		if n++; n%1024 == 0 {
			if err := ctx.Err(); err != nil {
				return nil, err
			}
		}
		shard, seq, ok := decodeClearKey(it.Key())
		if !ok {
			rep.add(labelf("clear key %x", it.Key()), "malformed key")
			continue
		}
		where := labelf("resolve log shard %d group %d", shard, seq)
		if shard >= shards || seq == 0 || seq > lastSeq {
			rep.add(where, fmt.Sprintf("out of range (shards %d, last sequence %d)", shards, lastSeq))
			continue
		}
		v, err := it.ValueAndErr()
		if err != nil {
			return nil, err
		}
		sets, err := decodeClearRecord(v, seq)
		if err != nil {
			rep.add(where, err.Error())
			continue
		}
		for _, cs := range sets {
			ref := blockRef(makeStoreID(shard, cs.seq, 0))
			out[ref] = append(out[ref], groupClears{seq: seq, slots: cs.slots})
		}
	}
	return out, it.Error()
}

// checkBlock checks a block record against its summary.
func checkBlock(rep *CheckReport, where place, shard int, seq uint64, sum *summary, v []byte, full bool, expectKey func(string, store.ID, fmt.Stringer)) {
	view, err := decodeBlock(v)
	if err != nil {
		rep.add(where, err.Error())
		return
	}
	if view.n != sum.n {
		rep.add(where, fmt.Sprintf("%d slots, but the summary says %d", view.n, sum.n))
		return
	}
	for slot := 0; slot < view.n; slot++ {
		due, hasKey, key, err := checkMessage(view.entry(slot), full)
		swhere := where
		swhere.slot = slot
		if err != nil {
			rep.add(swhere, err.Error())
			continue
		}
		if due < sum.minDue || due > sum.maxDue {
			rep.add(swhere, fmt.Sprintf("due %d outside the summary's [%d, %d]", due, sum.minDue, sum.maxDue))
		}
		if hasKey != sum.isKeyed(slot) {
			rep.add(swhere, fmt.Sprintf("has a key: %v, keyed bit: %v", hasKey, sum.isKeyed(slot)))
		}
		if full && hasKey && sum.isLive(slot) {
			expectKey(key, makeStoreID(shard, seq, slot), swhere)
		}
	}
}

// checkMessage validates a message record. With wantKey it also returns the
// key (one allocation); otherwise it allocates nothing.
func checkMessage(buf []byte, wantKey bool) (due int64, hasKey bool, key string, err error) {
	r := reader{what: "message", b: buf}
	due = r.varint()
	r.varint()
	if att := r.uvarint(); r.err == nil && att > 1<<32-1 {
		r.fail("attempt overflows uint32")
	}
	r.bytes(store.MaxDestLen)
	k := r.bytes(store.MaxKeyLen)
	nh := r.count(store.MaxHeaders)
	for i := 0; i < nh && r.err == nil; i++ {
		r.bytes(store.MaxHeaderLen)
		r.bytes(store.MaxHeaderLen)
	}
	r.bytes(1<<31 - 1)
	if err := r.done(); err != nil {
		return 0, false, "", err
	}
	if wantKey && len(k) > 0 {
		key = string(k)
	}
	return due, len(k) > 0, key, nil
}

// checkSummary panics if a summary's live count disagrees with its bitmap.
// Called only when invariants is on.
func checkSummary(s *summary) {
	pop := 0
	for _, w := range s.bits {
		pop += bits.OnesCount64(w)
	}
	if pop != s.live || s.live < 0 || s.live > s.n {
		panic(fmt.Sprintf("wal: invariant: summary live=%d but %d bits set (n=%d)", s.live, pop, s.n))
	}
}
