package wal

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"slices"

	"github.com/cockroachdb/pebble/v2"
	"github.com/hourglassmq/hourglass/store"
)

// The resolve log.
//
// Delivery resolves messages in due order, and a group commit's messages are
// spread over hundreds of blocks, so rewriting each touched block's summary
// (format version 1) cost one Pebble key at a random position of the
// memtable's skiplist and a whole summary's bytes per resolved message: the
// store's biggest cost under load. Instead, a group commit that clears slots
// writes one clear record per shard, keyed (tagClear, shard, seq) so each
// lands at the end of its shard's log: a few bytes per cleared slot. The
// writer keeps every live bitmap in RAM, and the summaries on disk go stale
// until a checkpoint, which rewrites every summary with a slot cleared since
// the last one (the dirty ones) and range-deletes the log they cover, in the
// same batch as the group whose log would have crossed the bound. A block
// that empties is deleted as before; its stale log entries name a block that
// no longer exists and are skipped.
//
// The bound is max(Options' checkpoint minimum, the dirty summaries' bytes),
// so a checkpoint costs at most what the log it replaces cost (O(1) bytes
// per resolved message, amortized), and the log a reader merges is never
// longer than the larger of the minimum and the summaries it amends. Close
// checkpoints too, so a store closed cleanly holds no log.
//
// Readers merge: Open replays the log into the summaries it loads; Scan and
// Get read the shard's log from their snapshot and apply it to the summaries
// they read; Check applies it before judging a block. A clear of a slot that
// is not live in the summary it amends, or a log that empties a block that is
// still stored, is damage: every writer of this format clears a slot once and
// deletes a block in the batch that empties it.
//
// Clear record, the value of tagClear|shard|seq:
//
//	u8 version | uvarint nblocks | nblocks × block | u32le crc32c
//	block: uvarint seq delta | uvarint nslots | nslots × uvarint slot delta
//
// Blocks ascend by sequence, the first delta from 0 and each later one at
// least 1; slots ascend within a block likewise (the first is absolute, then
// deltas of at least 1). Every block sequence is below the record's own (a
// block's slots are resolved only after the commit that wrote it). The CRC
// (Castagnoli) covers every byte before it.

// clearKey is the resolve-log key of shard's clear record of group seq.
func clearKey(shard int, seq uint64) []byte {
	k := make([]byte, 10)
	k[0] = tagClear
	k[1] = byte(shard)
	binary.BigEndian.PutUint64(k[2:], seq)
	return k
}

// clearUpper bounds shard's resolve log from above.
func clearUpper(shard int) []byte {
	if shard+1 < store.MaxShards {
		return clearKey(shard+1, 0)
	}
	return []byte{tagClear + 1}
}

// decodeClearKey returns the shard and group sequence of a clear key.
func decodeClearKey(k []byte) (shard int, seq uint64, ok bool) {
	if len(k) != 10 || k[0] != tagClear {
		return 0, 0, false
	}
	return int(k[1]), binary.BigEndian.Uint64(k[2:]), true
}

// clearSet is one block's slots cleared by one group commit.
type clearSet struct {
	seq   uint64   // the block's sequence
	slots []uint16 // ascending
}

// appendClearRecord encodes sets, which ascend by seq, each with ascending
// slots.
func appendClearRecord(dst []byte, sets []clearSet) []byte {
	start := len(dst)
	dst = append(dst, FormatVersion)
	dst = binary.AppendUvarint(dst, uint64(len(sets)))
	prevSeq := uint64(0)
	for _, cs := range sets {
		dst = binary.AppendUvarint(dst, cs.seq-prevSeq)
		prevSeq = cs.seq
		dst = binary.AppendUvarint(dst, uint64(len(cs.slots)))
		prev := uint16(0)
		for i, s := range cs.slots {
			if i == 0 {
				dst = binary.AppendUvarint(dst, uint64(s))
			} else {
				dst = binary.AppendUvarint(dst, uint64(s-prev))
			}
			prev = s
		}
	}
	return binary.LittleEndian.AppendUint32(dst, crc32.Checksum(dst[start:], castagnoli))
}

// decodeClearRecord decodes the clear record of group seq (0: not known, for
// the fuzzer). Every count is bounded by the bytes left.
func decodeClearRecord(buf []byte, seq uint64) ([]clearSet, error) {
	r := reader{what: "clear", b: buf}
	if len(buf) < 1+1+4 {
		r.fail("shorter than its header and checksum")
		return nil, r.err
	}
	body := buf[:len(buf)-4]
	if crc32.Checksum(body, castagnoli) != binary.LittleEndian.Uint32(buf[len(buf)-4:]) {
		r.off = len(body)
		r.fail("checksum mismatch")
		return nil, r.err
	}
	r.b = body
	if v := r.byte1(); r.err == nil && v != FormatVersion {
		// Version 1 has no resolve log; a later version is refused by Open.
		r.fail("unknown clear-record version")
	}
	n := r.count(len(body)) // each block takes at least two bytes
	if r.err != nil {
		return nil, r.err
	}
	sets := make([]clearSet, 0, n)
	prevSeq := uint64(0)
	for i := 0; i < n && r.err == nil; i++ {
		d := r.uvarint()
		if r.err == nil && (i > 0 && d == 0 || d > maxSeq-prevSeq) {
			r.fail("block sequences do not ascend")
		}
		blockSeq := prevSeq + d
		if r.err == nil && (blockSeq == 0 || seq != 0 && blockSeq >= seq) {
			r.fail(fmt.Sprintf("block sequence %d not below the record's %d", blockSeq, seq))
		}
		prevSeq = blockSeq
		k := r.count(min(maxSlots, len(body)-r.off))
		if r.err == nil && k == 0 {
			r.fail("block with no slot")
		}
		if r.err != nil {
			break
		}
		slots := make([]uint16, k)
		slot := uint64(0)
		for j := range slots {
			d := r.uvarint()
			if r.err == nil && j > 0 && d == 0 {
				r.fail("slots do not ascend")
			}
			slot += d
			if r.err == nil && slot >= maxSlots {
				r.fail("slot past a block's end")
			}
			if r.err != nil {
				break
			}
			slots[j] = uint16(slot)
		}
		sets = append(sets, clearSet{seq: blockSeq, slots: slots})
	}
	if err := r.done(); err != nil {
		return nil, err
	}
	return sets, nil
}

// applyClears clears slots in sum, which a reader decoded from disk. A slot
// that is not live there is damage (see above).
func applyClears(sum *summary, slots []uint16) error {
	for _, slot := range slots {
		if !sum.isLive(int(slot)) {
			return &CorruptionError{What: "clear", Reason: fmt.Sprintf("clears slot %d, which is not live in its block's summary", slot)}
		}
		sum.clear(int(slot))
	}
	if sum.live == 0 {
		return &CorruptionError{What: "clear", Reason: "the resolve log empties a block that is still stored"}
	}
	return nil
}

// shardClears reads shard's resolve log from r: the slots cleared since the
// last checkpoint, per block sequence, for blocks at or above lowest.
func shardClears(r pebble.Reader, shard int, lowest uint64) (map[uint64][]uint16, error) {
	it, err := r.NewIter(&pebble.IterOptions{LowerBound: clearKey(shard, 0), UpperBound: clearUpper(shard)})
	if err != nil {
		return nil, err
	}
	var out map[uint64][]uint16
	for ok := it.First(); ok; ok = it.Next() {
		_, seq, ok := decodeClearKey(it.Key())
		if !ok {
			_ = it.Close()
			return nil, &CorruptionError{What: "clear key", Reason: "length"}
		}
		v, err := it.ValueAndErr()
		if err != nil {
			_ = it.Close()
			return nil, err
		}
		sets, err := decodeClearRecord(v, seq)
		if err != nil {
			_ = it.Close()
			return nil, fmt.Errorf("resolve log of shard %d, group %d: %w", shard, seq, err)
		}
		for _, cs := range sets {
			if cs.seq < lowest {
				continue
			}
			if out == nil {
				out = map[uint64][]uint16{}
			}
			out[cs.seq] = append(out[cs.seq], cs.slots...)
		}
	}
	return out, errors.Join(it.Error(), it.Close())
}

// clearedSince reports whether shard's resolve log in r clears id's slot
// (for Get: only the records after id's block can).
func clearedSince(r pebble.Reader, id store.ID) (bool, error) {
	shard, bseq, slot := id.Shard(), idSeq(id), uint16(idSlot(id))
	it, err := r.NewIter(&pebble.IterOptions{LowerBound: clearKey(shard, bseq+1), UpperBound: clearUpper(shard)})
	if err != nil {
		return false, err
	}
	for ok := it.First(); ok; ok = it.Next() {
		_, seq, _ := decodeClearKey(it.Key())
		v, err := it.ValueAndErr()
		if err != nil {
			_ = it.Close()
			return false, err
		}
		sets, err := decodeClearRecord(v, seq)
		if err != nil {
			_ = it.Close()
			return false, fmt.Errorf("resolve log of shard %d, group %d: %w", shard, seq, err)
		}
		i, found := slices.BinarySearchFunc(sets, bseq, func(cs clearSet, s uint64) int { return cmpU64(cs.seq, s) })
		if found {
			if _, hit := slices.BinarySearch(sets[i].slots, slot); hit {
				return true, it.Close()
			}
		}
	}
	return false, errors.Join(it.Error(), it.Close())
}

func cmpU64(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// summarySize is a summary's encoded size, near enough for the checkpoint
// bound.
func summarySize(s *summary) int { return 16 + 2*((s.n+7)/8) }

// defaultCheckpointBytes is the resolve log's minimum bound (see above): a
// checkpoint is written once the log since the last one would pass the
// larger of this and the dirty summaries' size. Tests lower it
// (Options.checkpointBytes) to checkpoint often.
const defaultCheckpointBytes = 1 << 20

// logClears writes g's cleared slots: one clear record per shard, or a
// checkpoint when the log would pass its bound. Blocks that g emptied are
// deleted by finish and are left out. It runs in finish, after the blocks
// g emptied are dropped from w.blocks.
func (w *writer) logClears(g *group) {
	if len(g.clears) == 0 {
		return
	}
	perShard := map[int][]clearSet{}
	slots := make([]uint16, 0, len(g.clears)) // every set's slots, in one array
	for ref, ids := range clearedBlocks(g.clears) {
		sum := w.blocks[ref]
		if sum == nil {
			continue // emptied by g: deleted in this batch
		}
		if _, ok := w.dirty[ref]; !ok {
			w.dirty[ref] = sum
			w.dirtyBytes += summarySize(sum)
		}
		start := len(slots)
		for _, id := range ids {
			slots = append(slots, uint16(idSlot(id))) // ascending: ids are sorted
		}
		shard := ids[0].Shard()
		perShard[shard] = append(perShard[shard], clearSet{seq: idSeq(ids[0]), slots: slots[start:len(slots):len(slots)]})
	}
	if len(perShard) == 0 {
		return
	}
	recs := make(map[int][]byte, len(perShard))
	size := 0
	for shard, sets := range perShard {
		slices.SortFunc(sets, func(a, b clearSet) int { return cmpU64(a.seq, b.seq) })
		recs[shard] = appendClearRecord(nil, sets)
		size += len(recs[shard]) + 10
	}
	if w.logBytes+size > max(w.s.opts.checkpointBytes, w.dirtyBytes) {
		w.checkpoint(g.batch, g.seq)
		return
	}
	for shard, rec := range recs {
		_ = g.batch.Set(clearKey(shard, g.seq), rec, nil)
		if w.logFrom[shard] == 0 {
			w.logFrom[shard] = g.seq
		}
	}
	w.logBytes += size
}

// checkpoint adds to b the current summary of every dirty block and the
// deletion of the resolve log up to group seq (which b commits; its own
// clears are in the summaries, so it writes no clear record).
func (w *writer) checkpoint(b *pebble.Batch, seq uint64) {
	for ref, sum := range w.dirty {
		id := store.ID(ref << slotBits)
		_ = b.Set(blockKey(id.Shard(), idSeq(id), kindSummary), sum.encode(), nil)
		if invariants {
			checkSummary(sum)
		}
	}
	for shard, from := range w.logFrom {
		if from != 0 {
			_ = b.DeleteRange(clearKey(shard, from), clearKey(shard, seq+1), nil)
			w.logFrom[shard] = 0
		}
	}
	clear(w.dirty)
	w.dirtyBytes, w.logBytes = 0, 0
	w.checkpoints.Add(1)
}

// dropDirty forgets a block that is deleted (emptied).
func (w *writer) dropDirty(ref uint64) {
	if sum, ok := w.dirty[ref]; ok {
		w.dirtyBytes -= summarySize(sum)
		delete(w.dirty, ref)
	}
}

// checkpointNow writes a checkpoint of its own, synced, when the log holds
// anything; Close calls it with the writer stopped, so a store closed
// cleanly holds no log.
func (w *writer) checkpointNow() error {
	if w.logBytes == 0 && len(w.dirty) == 0 {
		return nil
	}
	b := w.s.db.NewBatch()
	defer b.Close()
	w.checkpoint(b, w.lastSeq)
	return b.Commit(pebble.Sync)
}

// replayClears applies the resolve log (every shard's) to the summaries
// recovery loaded into w.blocks, and marks the blocks it touches dirty.
func (w *writer) replayClears(r pebble.Reader, shards int, lastSeq uint64) error {
	it, err := r.NewIter(&pebble.IterOptions{LowerBound: []byte{tagClear}, UpperBound: []byte{tagClear + 1}})
	if err != nil {
		return err
	}
	defer it.Close()
	for ok := it.First(); ok; ok = it.Next() {
		shard, seq, ok := decodeClearKey(it.Key())
		if !ok || shard >= shards || seq == 0 || seq > lastSeq {
			return &CorruptionError{What: "clear key", Reason: fmt.Sprintf("malformed or out of range: %x", it.Key())}
		}
		v, err := it.ValueAndErr()
		if err != nil {
			return err
		}
		sets, err := decodeClearRecord(v, seq)
		if err != nil {
			return fmt.Errorf("resolve log of shard %d, group %d: %w", shard, seq, err)
		}
		for _, cs := range sets {
			ref := blockRef(makeStoreID(shard, cs.seq, 0))
			sum := w.blocks[ref]
			if sum == nil {
				continue // deleted since (emptied)
			}
			for _, slot := range cs.slots {
				if !sum.isLive(int(slot)) {
					return fmt.Errorf("resolve log of shard %d, group %d, block %d: %w", shard, seq, cs.seq,
						&CorruptionError{What: "clear", Reason: fmt.Sprintf("clears slot %d, which is not live", slot)})
				}
				sum.clear(int(slot))
			}
			if _, ok := w.dirty[ref]; !ok {
				w.dirty[ref] = sum
				w.dirtyBytes += summarySize(sum)
			}
		}
		if w.logFrom[shard] == 0 {
			w.logFrom[shard] = seq
		}
		w.logBytes += len(v) + 10
	}
	if err := it.Error(); err != nil {
		return err
	}
	for ref, sum := range w.dirty {
		if sum.live == 0 {
			id := store.ID(ref << slotBits)
			return fmt.Errorf("block shard %d seq %d: %w", id.Shard(), idSeq(id),
				&CorruptionError{What: "clear", Reason: "the resolve log empties a block that is still stored"})
		}
	}
	return nil
}
