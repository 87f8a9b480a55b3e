package wal

import (
	"container/heap"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"

	"github.com/cockroachdb/pebble/v2"
	"github.com/hourglassmq/hourglass/store"
)

// validateNew checks messages for Append and Batch.New against the
// contract's limits and this store's shards and MaxPayload.
func (s *Store) validateNew(what string, msgs []store.Message) error {
	return store.ValidateNew(what, msgs, s.shards, s.opts.MaxPayload)
}

// validateID refuses an ID that cannot name anything in this store (zero,
// or a shard it does not have) the way it refuses one that names nothing
// now: as not pending, so both stores answer alike.
func (s *Store) validateID(what string, id store.ID) error {
	if id == 0 || id.Shard() >= s.shards {
		return fmt.Errorf("wal: %s: id %s names a shard this %d-shard store does not have: %w", what, id, s.shards, &store.NotPendingError{IDs: []store.ID{id}})
	}
	return nil
}

// sizeOf estimates the encoded size of msgs.
func sizeOf(msgs []store.Message) int {
	n := 0
	for i := range msgs {
		m := &msgs[i]
		n += 48 + len(m.Dest) + len(m.Key) + len(m.Payload) + 32 // record, keys, offsets
		for _, h := range m.Headers {
			n += 4 + len(h.Key) + len(h.Value)
		}
	}
	return n
}

// Append makes msgs durable (synced) and only then returns, with one result
// per message in order. Safe for many concurrent callers: the store's writer
// group-commits them. A message whose Key is already known (pending or dead)
// is not written; its result has Existing set and the stored ID. Invalid input
// fails the whole call with an error wrapping ErrInvalid and writes nothing.
// If ctx ends while waiting, the write may still become durable (retry with an
// idempotency key to find out).
func (s *Store) Append(ctx context.Context, msgs []store.Message) ([]store.Appended, error) {
	if err := s.enter(); err != nil {
		return nil, err
	}
	defer s.leave()
	if len(msgs) == 0 {
		return nil, nil
	}
	if len(msgs) > store.MaxCallMessages {
		return nil, invalidf("append: %d messages, more than %d in one call", len(msgs), store.MaxCallMessages)
	}
	if err := s.validateNew("append", msgs); err != nil {
		return nil, err
	}
	if err := s.Err(); err != nil {
		return nil, err
	}
	res := s.submit(ctx, &request{kind: reqAppend, msgs: msgs, n: len(msgs), size: sizeOf(msgs)})
	return res.appended, res.err
}

// Resolve applies one atomic batch of outcomes and returns the results for
// b.New. It is all-or-nothing: if any Done/Update/Dead names an ID that is not
// pending, nothing is written and the error is a *NotPendingError listing
// them (errors.Is(err, ErrNotFound)); the caller drops those and retries. The
// batch is group-committed with Append's and synced before Resolve returns.
// Update keeps the ID; the message moves to the time-ordered keyspace.
func (s *Store) Resolve(ctx context.Context, b store.Batch) ([]store.Appended, error) {
	if err := s.enter(); err != nil {
		return nil, err
	}
	defer s.leave()
	n := b.Ops() + len(b.New)
	if n == 0 {
		return nil, nil
	}
	if n > store.MaxCallMessages {
		return nil, invalidf("resolve: %d outcomes and messages, more than %d in one call", n, store.MaxCallMessages)
	}
	for _, d := range b.Done {
		if err := s.validateID("resolve done", d.ID); err != nil {
			return nil, err
		}
		if d.Reason >= store.NumReasons {
			return nil, invalidf("resolve done %s: unknown reason %d", d.ID, d.Reason)
		}
	}
	for _, u := range b.Update {
		if err := s.validateID("resolve update", u.ID); err != nil {
			return nil, err
		}
		if err := store.ValidateDue("resolve update "+u.ID.String(), u.Due); err != nil {
			return nil, err
		}
	}
	for _, d := range b.Dead {
		if err := s.validateID("resolve dead", d.ID); err != nil {
			return nil, err
		}
		if len(d.Reason) > store.MaxReasonLen {
			return nil, invalidf("resolve dead %s: reason is %d bytes, more than %d", d.ID, len(d.Reason), store.MaxReasonLen)
		}
	}
	if err := s.validateNew("resolve new", b.New); err != nil {
		return nil, err
	}
	if err := s.Err(); err != nil {
		return nil, err
	}
	res := s.submit(ctx, &request{kind: reqResolve, batch: &b, n: n, size: sizeOf(b.New) + 64*b.Ops()})
	return res.appended, res.err
}

// ReplayDead moves dead letters back into the pending set, due at due, with
// Attempt reset to 0 and the same IDs; the owner is fed them like appended
// messages. All-or-nothing like Resolve.
func (s *Store) ReplayDead(ctx context.Context, ids []store.ID, due int64) error {
	if err := s.enter(); err != nil {
		return err
	}
	defer s.leave()
	if err := store.ValidateDue("replay", due); err != nil {
		return err
	}
	if err := s.checkIDs("replay", ids); err != nil || len(ids) == 0 {
		return err
	}
	res := s.submit(ctx, &request{kind: reqReplay, ids: ids, due: due, n: len(ids)})
	return res.err
}

// PurgeDead deletes the named dead letters (and their idempotency keys). It
// is all-or-nothing like Resolve and returns how many it deleted.
func (s *Store) PurgeDead(ctx context.Context, ids []store.ID) (int, error) {
	if err := s.enter(); err != nil {
		return 0, err
	}
	defer s.leave()
	if err := s.checkIDs("purge", ids); err != nil || len(ids) == 0 {
		return 0, err
	}
	res := s.submit(ctx, &request{kind: reqPurge, ids: ids, n: len(ids)})
	return res.count, res.err
}

// PurgeAllDead deletes every dead letter and returns how many. It runs as one
// atomic commit, so its size is bounded by memory for the IDs only.
func (s *Store) PurgeAllDead(ctx context.Context) (int, error) {
	if err := s.enter(); err != nil {
		return 0, err
	}
	defer s.leave()
	if err := s.Err(); err != nil {
		return 0, err
	}
	res := s.submit(ctx, &request{kind: reqPurgeAll, n: 1})
	return res.count, res.err
}

func (s *Store) checkIDs(what string, ids []store.ID) error {
	if len(ids) > store.MaxCallMessages {
		return invalidf("%s: %d ids, more than %d in one call", what, len(ids), store.MaxCallMessages)
	}
	for _, id := range ids {
		if err := s.validateID(what, id); err != nil {
			return err
		}
	}
	return s.Err()
}

// Get returns a pending message by ID. It returns an error wrapping
// ErrNotFound if the ID is not pending (delivered, cancelled, dead-lettered or
// never assigned); GetDead looks up dead letters.
func (s *Store) Get(ctx context.Context, id store.ID) (_ store.Message, err error) {
	if err := s.enter(); err != nil {
		return store.Message{}, err
	}
	defer s.leave()
	defer func() { err = s.damaged(err) }()
	if err := ctx.Err(); err != nil {
		return store.Message{}, err
	}
	if id == 0 || id.Shard() >= s.shards {
		return store.Message{}, fmt.Errorf("wal: get %s: %w", id, ErrNotFound)
	}
	snap := s.db.NewSnapshot()
	defer snap.Close()
	if idSlot(id) < farSlotBase {
		v, closer, err := snap.Get(blockKey(id.Shard(), idSeq(id), kindSummary))
		switch {
		case err == nil:
			sum, derr := decodeSummary(v)
			_ = closer.Close()
			if derr != nil {
				return store.Message{}, fmt.Errorf("wal: get %s: %w", id, derr)
			}
			live := sum.isLive(idSlot(id))
			if live {
				// The summary may predate a clear in the resolve log.
				cleared, err := clearedSince(snap, id)
				if err != nil {
					return store.Message{}, fmt.Errorf("wal: get %s: %w", id, err)
				}
				live = !cleared
			}
			if live {
				v, closer, err := snap.Get(blockKey(id.Shard(), idSeq(id), kindBlock))
				if err != nil {
					return store.Message{}, fmt.Errorf("wal: get %s: read block: %w", id, err)
				}
				defer closer.Close()
				view, err := decodeBlock(v)
				if err != nil {
					return store.Message{}, fmt.Errorf("wal: get %s: %w", id, err)
				}
				return slotMessage(view, id)
			}
		case !errors.Is(err, pebble.ErrNotFound):
			return store.Message{}, fmt.Errorf("wal: get %s: read summary: %w", id, err)
		}
	}
	ie, found, err := readRecord(snap, idKey(tagIndex, id), decodeIndex)
	if err != nil {
		return store.Message{}, fmt.Errorf("wal: get %s: index: %w", id, err)
	}
	if !found {
		return store.Message{}, fmt.Errorf("wal: get %s: %w", id, ErrNotFound)
	}
	return s.getTimed(snap, id, ie.due)
}

// readRecord reads key from r and decodes its value (decode must not keep
// the bytes: they are released on return). found is false for a missing key.
func readRecord[T any](r pebble.Reader, key []byte, decode func([]byte) (T, error)) (rec T, found bool, err error) {
	v, closer, err := r.Get(key)
	if errors.Is(err, pebble.ErrNotFound) {
		return rec, false, nil
	}
	if err != nil {
		return rec, false, err
	}
	defer closer.Close()
	rec, err = decode(v)
	return rec, err == nil, err
}

// getTimed reads a message from the time-ordered keyspace.
func (s *Store) getTimed(r pebble.Reader, id store.ID, due int64) (store.Message, error) {
	m, found, err := readRecord(r, timeKey(id.Shard(), due, id), decodeMessage)
	if err == nil && !found {
		// The index names a key that must exist: a miss is corruption.
		err = &CorruptionError{What: "index", Reason: "names a missing message"}
	}
	if err != nil {
		return store.Message{}, fmt.Errorf("wal: message %s: %w", id, err)
	}
	m.ID, m.Shard = id, id.Shard()
	return m, nil
}

// GetDead returns a dead letter by ID, or an error wrapping ErrNotFound.
func (s *Store) GetDead(ctx context.Context, id store.ID) (_ store.DeadLetter, err error) {
	if err := s.enter(); err != nil {
		return store.DeadLetter{}, err
	}
	defer s.leave()
	defer func() { err = s.damaged(err) }()
	if err := ctx.Err(); err != nil {
		return store.DeadLetter{}, err
	}
	return s.getDead(s.db, id)
}

func (s *Store) getDead(r pebble.Reader, id store.ID) (store.DeadLetter, error) {
	d, found, err := readRecord(r, idKey(tagDead, id), decodeDead)
	if err == nil && !found {
		err = ErrNotFound
	}
	if err != nil {
		return store.DeadLetter{}, fmt.Errorf("wal: dead letter %s: %w", id, err)
	}
	d.Message.ID, d.Message.Shard = id, id.Shard()
	return d, nil
}

// ListDead pages through dead letters in ID order. The returned ID is the
// cursor for the next page (pass it as After); it is 0 when there are no more.
func (s *Store) ListDead(ctx context.Context, q store.DeadQuery) (_ []store.DeadLetter, _ store.ID, err error) {
	if err := s.enter(); err != nil {
		return nil, 0, err
	}
	defer s.leave()
	defer func() { err = s.damaged(err) }()
	limit := q.Limit
	if limit <= 0 {
		limit = 1024
	}
	limit = min(limit, store.MaxDeadLimit)
	lower := []byte{tagDead}
	switch q.After {
	case 0:
	case ^store.ID(0):
		return nil, 0, nil // nothing sorts after the largest ID
	default:
		lower = idKey(tagDead, q.After+1)
	}
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: lower, UpperBound: []byte{tagDead + 1}})
	if err != nil {
		return nil, 0, fmt.Errorf("wal: list dead letters: %w", err)
	}
	defer it.Close()
	var out []store.DeadLetter
	// One more than the page, to tell whether another page follows.
	for ok := it.First(); ok && len(out) <= limit; ok = it.Next() {
		if err := ctx.Err(); err != nil {
			return nil, 0, err
		}
		k := it.Key()
		if len(k) != 9 {
			return nil, 0, fmt.Errorf("wal: list dead letters: %w", &CorruptionError{What: "dead key", Reason: "length"})
		}
		v, err := it.ValueAndErr()
		if err != nil {
			return nil, 0, fmt.Errorf("wal: list dead letters: %w", err)
		}
		d, err := decodeDead(v)
		if err != nil {
			return nil, 0, fmt.Errorf("wal: list dead letters: %w", err)
		}
		id := store.ID(binary.BigEndian.Uint64(k[1:]))
		d.Message.ID, d.Message.Shard = id, id.Shard()
		out = append(out, d)
	}
	if err := it.Error(); err != nil {
		return nil, 0, fmt.Errorf("wal: list dead letters: %w", err)
	}
	var next store.ID
	if len(out) > limit {
		out = out[:limit]
		next = out[limit-1].Message.ID
	}
	return out, next, nil
}

// Scan returns pending messages of q.Shard with Due in [q.From, q.To), in
// (Due, ID) order, at most q.Limit, after q.After, and the page for the next
// call. Memory is bounded by Limit: the time-ordered keyspace is read in
// order, and packed blocks (near-term messages) are filtered through their
// summaries and a bounded heap. All reads come from one Pebble snapshot.
func (s *Store) Scan(ctx context.Context, q store.ScanQuery) (_ []store.Message, _ store.Page, err error) {
	if err := s.enter(); err != nil {
		return nil, store.Page{}, err
	}
	defer s.leave()
	defer func() { err = s.damaged(err) }()
	if q.Shard < 0 || q.Shard >= s.shards {
		return nil, store.Page{}, invalidf("scan: shard %d outside [0, %d)", q.Shard, s.shards)
	}
	limit := q.Limit
	if limit <= 0 {
		limit = 1024
	}
	limit = min(limit, store.MaxScanLimit)
	// The watermark is read before the snapshot is taken: an older watermark
	// only makes the block scan start lower, while a newer one could skip a
	// block whose last live message the snapshot still holds there.
	lowest := s.watermark[q.Shard].Load()
	snap := s.db.NewSnapshot()
	defer snap.Close()
	fail := func(err error) ([]store.Message, store.Page, error) {
		return nil, store.Page{}, fmt.Errorf("wal: scan shard %d [%d, %d): %w", q.Shard, q.From, q.To, err)
	}
	page := store.Page{Next: q.After}
	if max(q.From, q.After.Due) >= q.To {
		page.Done = true
		return nil, page, nil
	}
	timed, err := s.scanTimed(ctx, snap, q, limit)
	if err != nil {
		return fail(err)
	}
	packed, err := s.scanBlocks(ctx, snap, q, lowest, limit)
	if err != nil {
		return fail(err)
	}
	out := mergeByDue(timed, packed, limit)
	page.Done = len(out) < limit
	if len(out) > 0 {
		page.Next = store.PositionOf(&out[len(out)-1])
	}
	return out, page, nil
}

func (s *Store) scanTimed(ctx context.Context, snap *pebble.Snapshot, q store.ScanQuery, limit int) ([]store.Message, error) {
	lower := max(q.From, q.After.Due)
	if lower >= q.To {
		return nil, nil
	}
	it, err := snap.NewIter(&pebble.IterOptions{
		LowerBound: timeKey(q.Shard, lower, 0),
		UpperBound: timeKey(q.Shard, q.To, 0),
	})
	if err != nil {
		return nil, err
	}
	defer it.Close()
	s.statsMu.Lock()
	hint := int(min(int64(limit), s.pending[q.Shard]+1, scanPrealloc))
	s.statsMu.Unlock()
	// Room for one more than the page, to tell whether another follows
	// (without it a full page is copied to grow by one).
	out := make([]store.Message, 0, hint+1)
	intern := map[string]string{}
	n := 0
	// One more than the page, to tell whether another page follows.
	for ok := it.First(); ok && len(out) <= limit; ok = it.Next() {
		if n++; n%1024 == 0 {
			if err := ctx.Err(); err != nil {
				return nil, err
			}
		}
		due, id, ok := decodeTimeKey(it.Key())
		if !ok {
			return nil, &CorruptionError{What: "time key", Reason: "length"}
		}
		if !q.After.Less(store.Position{Due: due, ID: id}) {
			continue
		}
		v, err := it.ValueAndErr()
		if err != nil {
			return nil, err
		}
		m, err := decodeMessageInterned(v, intern)
		if err != nil {
			return nil, fmt.Errorf("message %s: %w", id, err)
		}
		if m.Due != due {
			return nil, fmt.Errorf("message %s: %w", id, &CorruptionError{What: "message", Reason: "due differs from its key"})
		}
		m.ID, m.Shard = id, id.Shard()
		out = append(out, m)
	}
	return out, it.Error()
}

// cand is a block message kept as a Scan candidate: its order key and the
// index of its decoded message. Small, so the heap moves little.
type cand struct {
	due int64
	id  store.ID
	idx int
}

func candLess(a, b cand) bool { return a.due < b.due || (a.due == b.due && a.id < b.id) }

// candHeap is a max-heap on (due, id): the worst kept candidate on top.
type candHeap []cand

func (h candHeap) Len() int           { return len(h) }
func (h candHeap) Less(i, j int) bool { return candLess(h[j], h[i]) }
func (h candHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *candHeap) Push(x any)        { *h = append(*h, x.(cand)) }
func (h *candHeap) Pop() any {
	old := *h
	c := old[len(old)-1]
	*h = old[:len(old)-1]
	return c
}

func (s *Store) scanBlocks(ctx context.Context, snap *pebble.Snapshot, q store.ScanQuery, lowest uint64, limit int) ([]store.Message, error) {
	upper := []byte{tagBlock + 1}
	if q.Shard+1 < store.MaxShards {
		upper = blockKey(q.Shard+1, 0, 0)
	}
	it, err := snap.NewIter(&pebble.IterOptions{
		LowerBound: blockKey(q.Shard, lowest, 0),
		UpperBound: upper,
	})
	if err != nil {
		return nil, err
	}
	defer it.Close()
	// The summaries on disk lack the clears of the resolve log since its last
	// checkpoint: merge them in as each summary is read.
	clears, err := shardClears(snap, q.Shard, lowest)
	if err != nil {
		return nil, err
	}
	// Until limit candidates are kept they are simply appended; then the
	// slice becomes a max-heap and a newcomer must beat the top, taking over
	// its decoded-message slot. Decoded messages sit in fixed chunks (never
	// copied as they grow); memory stays within Limit messages.
	s.statsMu.Lock()
	hint := int(min(int64(limit), s.pending[q.Shard]+1, scanPrealloc))
	s.statsMu.Unlock()
	h := make(candHeap, 0, hint)
	var msgs msgChunks
	intern := map[string]string{}
	full := false
	lowerDue := max(q.From, q.After.Due)
	n := 0
	for ok := it.First(); ok; {
		if n++; n%256 == 0 {
			if err := ctx.Err(); err != nil {
				return nil, err
			}
		}
		k := it.Key()
		if len(k) != 11 || k[10] != kindSummary {
			return nil, &CorruptionError{What: "block key", Reason: "expected a summary key"}
		}
		seq := binary.BigEndian.Uint64(k[2:])
		v, err := it.ValueAndErr()
		if err != nil {
			return nil, err
		}
		sum, err := decodeSummary(v)
		if err == nil && len(clears[seq]) > 0 {
			err = applyClears(&sum, clears[seq])
		}
		if err != nil {
			return nil, fmt.Errorf("block %d: %w", seq, err)
		}
		skip := sum.live == 0 || sum.maxDue < lowerDue || sum.minDue >= q.To
		if !skip && full && sum.minDue > h[0].due {
			skip = true // nothing here can beat the kept candidates
		}
		if skip {
			ok = it.SeekGE(blockKey(q.Shard, seq+1, 0))
			continue
		}
		if !it.Next() || !slices.Equal(it.Key(), blockKey(q.Shard, seq, kindBlock)) {
			if err := it.Error(); err != nil {
				return nil, err
			}
			return nil, &CorruptionError{What: "block", Reason: fmt.Sprintf("block %d has a summary but no data", seq)}
		}
		bv, err := it.ValueAndErr()
		if err != nil {
			return nil, err
		}
		view, err := decodeBlock(bv)
		if err == nil && view.n != sum.n {
			err = &CorruptionError{What: "block", Reason: "slot count differs from its summary"}
		}
		if err != nil {
			return nil, fmt.Errorf("block %d: %w", seq, err)
		}
		for slot := 0; slot < view.n; slot++ {
			if !sum.isLive(slot) {
				continue
			}
			e := view.entry(slot)
			due, ok := messageDue(e)
			if !ok {
				return nil, fmt.Errorf("block %d: %w", seq, &CorruptionError{What: "message", Reason: "bad due"})
			}
			c := cand{due: due, id: makeStoreID(q.Shard, seq, slot)}
			if due < q.From || due >= q.To || !q.After.Less(store.Position{Due: due, ID: c.id}) {
				continue
			}
			if full && !candLess(c, h[0]) {
				continue
			}
			m, err := decodeMessageInterned(e, intern)
			if err != nil {
				return nil, fmt.Errorf("message %s: %w", c.id, err)
			}
			m.ID, m.Shard = c.id, q.Shard
			switch {
			case full:
				c.idx = h[0].idx
				*msgs.at(c.idx) = m
				h[0] = c
				heap.Fix(&h, 0)
			default:
				c.idx = msgs.add(m)
				h = append(h, c)
				if len(h) == limit {
					heap.Init(&h)
					full = true
				}
			}
		}
		ok = it.Next()
	}
	if err := it.Error(); err != nil {
		return nil, err
	}
	slices.SortFunc(h, func(a, b cand) int { return cmpDueIDRaw(a.due, a.id, b.due, b.id) })
	out := make([]store.Message, len(h))
	for i, c := range h {
		out[i] = *msgs.at(c.idx)
	}
	return out, nil
}

func cmpDueIDRaw(ad int64, aid store.ID, bd int64, bid store.ID) int {
	switch {
	case ad < bd:
		return -1
	case ad > bd:
		return 1
	case aid < bid:
		return -1
	case aid > bid:
		return 1
	}
	return 0
}

// msgChunks holds decoded messages in fixed chunks so growing never copies
// them.
type msgChunks struct {
	chunks [][]store.Message
	n      int
}

const msgChunk = 4096

func (c *msgChunks) add(m store.Message) int {
	if c.n%msgChunk == 0 {
		c.chunks = append(c.chunks, make([]store.Message, 0, msgChunk))
	}
	last := &c.chunks[len(c.chunks)-1]
	*last = append(*last, m)
	c.n++
	return c.n - 1
}

func (c *msgChunks) at(i int) *store.Message { return &c.chunks[i/msgChunk][i%msgChunk] }

// scanPrealloc caps what Scan allocates up front (from the shard's pending
// count) so a narrow window on a big shard stays cheap; past it the result
// slices grow.
const scanPrealloc = 1 << 16

func cmpDueID(a, b store.Message) int { return cmpDueIDRaw(a.Due, a.ID, b.Due, b.ID) }

// mergeByDue merges two (Due, ID)-sorted lists, keeping the first limit.
func mergeByDue(a, b []store.Message, limit int) []store.Message {
	if len(b) == 0 {
		return a[:min(len(a), limit)]
	}
	if len(a) == 0 {
		return b[:min(len(b), limit)]
	}
	out := make([]store.Message, 0, min(len(a)+len(b), limit))
	for len(out) < limit && (len(a) > 0 || len(b) > 0) {
		if len(b) == 0 || (len(a) > 0 && cmpDueID(a[0], b[0]) < 0) {
			out = append(out, a[0])
			a = a[1:]
		} else {
			out = append(out, b[0])
			b = b[1:]
		}
	}
	return out
}
