package wal

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"iter"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/hourglassmq/hourglass/store"
)

// The writer is the single goroutine that owns every write. It gathers
// callers' requests into a group (bounded by Options.MaxBatch records and
// Options.MaxBatchDelay of waiting), validates each request against its
// in-memory state, encodes the group into one Pebble batch and hands it to the
// committer goroutines, which commit it with Sync and only then answer the
// callers. While group N syncs the writer builds group N+1. (More than one
// committer is supported, since Pebble publishes and syncs commits in order,
// but measured slower; see committers.)
//
// In-memory state owned by the writer goroutine alone:
//   - blocks: the summary (live bitmap) of every block with a pending slot,
//     current to the last group built (on disk, the summaries plus the
//     resolve log: see clearlog.go);
//   - dirty: the blocks whose summary on disk lacks clears that the resolve
//     log holds, and the log's size since the last checkpoint;
//   - overlays of the last committers+1 groups (cur, and prev, which may
//     still be in the committers) for the keyspaces the writer reads from Pebble
//     (time-keyspace messages, idempotency keys, dead letters), so a request
//     sees the effect of groups that are not yet committed.
//
// A request is validated completely (every ID located, every read done)
// before any of it is applied, so a rejected request leaves no trace.

type reqKind uint8

const (
	reqAppend reqKind = iota
	reqResolve
	reqReplay
	reqPurge
	reqPurgeAll
)

type request struct {
	kind  reqKind
	msgs  []store.Message // reqAppend
	batch *store.Batch    // reqResolve
	ids   []store.ID      // reqReplay, reqPurge
	due   int64           // reqReplay
	n     int             // records, for group sizing
	size  int             // estimated encoded bytes, for presizing the batch
	reply chan result
	// state arbitrates between the writer taking the request and the caller
	// abandoning it (ctx done): reqQueued -> reqTaken or reqAbandoned. Once
	// taken, the caller may return early only after built is closed, so the
	// writer never reads a caller's slice after the caller returned.
	state atomic.Int32
	built chan struct{}
}

const (
	reqQueued int32 = iota
	reqTaken
	reqAbandoned
)

type result struct {
	appended []store.Appended
	msgs     []store.Message
	count    int
	err      error
}

// overlay records what uncommitted groups did to keys the writer reads back
// from Pebble. A nil pointer / zero ID means "deleted".
type overlay struct {
	timed map[store.ID]*store.Message
	dead  map[store.ID]*store.DeadLetter
	keys  map[string]store.ID
}

func newOverlay() *overlay {
	return &overlay{timed: map[store.ID]*store.Message{}, dead: map[store.ID]*store.DeadLetter{}, keys: map[string]store.ID{}}
}

type shardOrder struct {
	seqs []uint64 // ascending sequences of blocks added; front may be dropped
	head int
}

type writer struct {
	s        *Store
	reqs     chan *request
	quit     chan struct{}
	stopOnce sync.Once
	commits  chan *group
	exited   chan struct{}

	lastSeq uint64
	blocks  map[uint64]*summary // key: blockRef(store.ID)
	// The resolve log since the last checkpoint (clearlog.go): the blocks
	// it amends with their summaries' size, its own size, and per shard the
	// sequence of its first record (0: none).
	dirty       map[uint64]*summary
	dirtyBytes  int
	logBytes    int
	logFrom     []uint64
	checkpoints atomic.Uint64 // checkpoints written, for tests
	order       []shardOrder
	// deletedTo[shard]: every block below this sequence is range-deleted.
	deletedTo []uint64
	cur       *overlay
	prev      []*overlay // newest first; len = committers
	carry     *request   // request that did not fit the previous group
}

type group struct {
	reqs     []*request
	results  []result
	batch    *pebble.Batch
	records  int
	size     int
	seq      uint64
	builders map[int]*blockBuilder
	far      map[int]int
	clears   []store.ID // block slots cleared by this group; sorted by finish
	dropped  int
	added    int
	pending  []int64
	dead     int64
	done     [store.NumReasons]uint64
	marks    map[int]uint64 // new watermarks per shard
	built    chan struct{}  // closed once the requests are encoded
	blockBuf map[uint64]blockView
	now      int64
	// fed holds, per shard, the messages this group makes pending, for
	// the owner's feed once the group is committed.
	fed map[int][]store.Message
}

// feed records m (with its ID) for the owner's feed.
// sizeFeed sizes the feed's per-shard slices for every message the group's
// requests may make pending, so that each is allocated once.
func (g *group) sizeFeed() {
	var per [store.MaxShards]int32
	for _, r := range g.reqs {
		switch r.kind {
		case reqAppend:
			for i := range r.msgs {
				per[r.msgs[i].Shard]++
			}
		case reqResolve:
			for i := range r.batch.New {
				per[r.batch.New[i].Shard]++
			}
		case reqReplay:
			for _, id := range r.ids {
				per[id.Shard()]++
			}
		}
	}
	for sh, n := range per {
		if n > 0 {
			if g.fed == nil {
				g.fed = map[int][]store.Message{}
			}
			g.fed[sh] = make([]store.Message, 0, n)
		}
	}
}

func (g *group) feed(m *store.Message) {
	if g.fed == nil {
		g.fed = map[int][]store.Message{}
	}
	g.fed[m.Shard] = append(g.fed[m.Shard], *m)
}

func newWriter(s *Store, lastSeq uint64) *writer {
	w := &writer{
		s:         s,
		reqs:      make(chan *request, 1024),
		quit:      make(chan struct{}),
		commits:   make(chan *group),
		exited:    make(chan struct{}),
		lastSeq:   lastSeq,
		blocks:    map[uint64]*summary{},
		dirty:     map[uint64]*summary{},
		logFrom:   make([]uint64, store.MaxShards),
		order:     make([]shardOrder, store.MaxShards),
		deletedTo: make([]uint64, store.MaxShards),
		cur:       newOverlay(),
		prev:      make([]*overlay, committers),
	}
	for i := range w.prev {
		w.prev[i] = newOverlay()
	}
	return w
}

func (w *writer) addBlock(shard int, seq uint64, sum *summary) {
	w.blocks[uint64(blockRef(makeStoreID(shard, seq, 0)))] = sum
	o := &w.order[shard]
	o.seqs = append(o.seqs, seq)
}

// watermark returns the lowest sequence of a block of shard that may still
// hold a pending slot, dropping the front of the order list past dead blocks.
func (w *writer) watermark(shard int) uint64 {
	o := &w.order[shard]
	for o.head < len(o.seqs) {
		if _, ok := w.blocks[blockRef(makeStoreID(shard, o.seqs[o.head], 0))]; ok {
			return o.seqs[o.head]
		}
		o.head++
		if o.head > 1024 && o.head*2 > len(o.seqs) {
			o.seqs = append([]uint64(nil), o.seqs[o.head:]...)
			o.head = 0
		}
	}
	return w.lastSeq + 1
}

func (w *writer) start() {
	go w.run()
	var wg sync.WaitGroup
	for range committers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for g := range w.commits {
				w.commit(g)
			}
		}()
	}
	go func() {
		wg.Wait()
		close(w.exited)
	}()
}

// stop is called by Close (or a failed store's release) with no calls in
// flight; it waits for the committers to answer every group. Calling it
// again waits again.
func (w *writer) stop() {
	w.stopOnce.Do(func() { close(w.quit) })
	<-w.exited
}

// submit hands r to the writer and waits for its answer.
func (s *Store) submit(ctx context.Context, r *request) result {
	if err := ctx.Err(); err != nil {
		return result{err: fmt.Errorf("wal: not submitted: %w", err)}
	}
	r.reply = make(chan result, 1)
	res := s.submitWait(ctx, r)
	// The writer reads records too (idempotency keys, dead letters, the
	// messages it moves): damage it meets fails the store, as a read's does.
	res.err = s.damaged(res.err)
	return res
}

func (s *Store) submitWait(ctx context.Context, r *request) result {
	select {
	case s.w.reqs <- r:
	case <-ctx.Done():
		return result{err: fmt.Errorf("wal: not submitted%s: %w", s.stalled(), ctx.Err())}
	case <-s.failedCh:
		return result{err: s.Err()}
	}
	select {
	case res := <-r.reply:
		return res
	case <-ctx.Done():
	case <-s.failedCh:
	}
	// ctx ended or the store failed (and its commit may never return).
	cause := s.Err()
	if cause == nil {
		cause = ctx.Err()
	}
	if r.state.CompareAndSwap(reqQueued, reqAbandoned) {
		return result{err: fmt.Errorf("wal: abandoned before the writer took it; nothing written%s: %w", s.stalled(), cause)}
	}
	select {
	case res := <-r.reply:
		return res
	case <-r.built:
		return result{err: fmt.Errorf("wal: gave up waiting; the write may still become durable%s: %w", s.stalled(), cause)}
	}
}

func (w *writer) run() {
	defer func() {
		close(w.commits)
	}()
	for {
		g := w.gather()
		if g == nil {
			return
		}
		w.build(g)
		// A committer takes g only after finishing its previous group, and
		// Pebble publishes commits in order, so once this send returns every
		// group older than the last committers groups is visible in Pebble.
		w.commits <- g
		copy(w.prev[1:], w.prev)
		w.prev[0], w.cur = w.cur, newOverlay()
	}
}

// gather blocks for the first request, then collects more until MaxBatch
// records or MaxBatchDelay of waiting. It returns nil on quit.
func (w *writer) gather() *group {
	var first *request
	if w.carry != nil {
		first, w.carry = w.carry, nil
	} else {
		select {
		case first = <-w.reqs:
		case <-w.quit:
			w.drain()
			return nil
		}
	}
	g := &group{reqs: []*request{first}, records: first.n, size: first.size}
	limit := w.s.opts.MaxBatch
	var timer <-chan time.Time
	for g.records < limit {
		var r *request
		select {
		case r = <-w.reqs:
		default:
			if w.s.opts.MaxBatchDelay < 0 {
				return g
			}
			if timer == nil {
				timer = time.After(w.s.opts.MaxBatchDelay)
			}
			select {
			case r = <-w.reqs:
			case <-timer:
				return g
			case <-w.quit:
				return g
			}
		}
		if g.records+r.n > limit {
			w.carry = r
			return g
		}
		g.reqs = append(g.reqs, r)
		g.records += r.n
		g.size += r.size
	}
	return g
}

// drain answers requests queued when the store closes. Close holds the lock
// that every caller holds while waiting, so only abandoned requests remain.
func (w *writer) drain() {
	if w.carry != nil {
		w.carry.reply <- result{err: ErrClosed}
	}
	for {
		select {
		case r := <-w.reqs:
			r.reply <- result{err: ErrClosed}
		default:
			return
		}
	}
}

// committers is the number of groups that may be committing at once. Two
// (the next group's WAL write overlapping this one's sync) measured worse
// here: groups split in half and each waited for an extra sync (p99 sync
// 50-90 ms against 13 ms), so the writer builds ahead but commits one at a
// time.
const committers = 1

func (w *writer) commit(g *group) {
	s := w.s
	err := s.Err()
	if err == nil && !g.batch.Empty() {
		start := time.Now()
		cerr := g.batch.Commit(pebble.Sync)
		lat := time.Since(start)
		if cerr != nil {
			s.fail(fmt.Errorf("commit: %w", cerr))
		}
		err = s.Err() // Pebble's Fatalf may have fired inside Commit
		if err == nil {
			s.statsMu.Lock()
			s.syncLat.record(lat)
			s.statsMu.Unlock()
		}
	}
	_ = g.batch.Close()
	if err == nil {
		records := 0
		for i, r := range g.reqs {
			if g.results[i].err == nil {
				records += r.n
			}
		}
		s.statsMu.Lock()
		s.batches++
		s.records += uint64(records)
		for i, d := range g.pending {
			s.pending[i] += d
		}
		s.dead += g.dead
		s.blocks += g.added - g.dropped
		for i, d := range g.done {
			s.done[i] += d
		}
		s.statsMu.Unlock()
		for shard, m := range g.marks {
			s.watermark[shard].Store(m)
		}
		// Feed the owner before answering, in commit order (one committer).
		if ref := s.owner.Load(); ref != nil {
			for shard, msgs := range g.fed {
				ref.o.Feed(shard, store.Change{Added: msgs})
			}
		}
	}
	for i, r := range g.reqs {
		res := g.results[i]
		if err != nil && res.err == nil {
			res = result{err: fmt.Errorf("wal: commit: %w", err)}
		}
		r.reply <- res
	}
}

// build validates and applies every request of g to the writer's state and
// encodes the group into g.batch.
func (w *writer) build(g *group) {
	s := w.s
	g.batch = s.db.NewBatchWithSize(g.size + 64*len(g.reqs) + 1024)
	g.built = make(chan struct{})
	g.results = make([]result, len(g.reqs))
	g.pending = make([]int64, s.shards)
	g.now = s.opts.Now().UnixNano()
	g.sizeFeed()
	if err := s.Err(); err != nil {
		for i := range g.results {
			g.results[i].err = err
		}
		close(g.built)
		return
	}
	for i, r := range g.reqs {
		var res result
		r.built = g.built
		if !r.state.CompareAndSwap(reqQueued, reqTaken) {
			g.results[i].err = ErrClosed // abandoned; nobody reads this
			continue
		}
		switch r.kind {
		case reqAppend:
			res.appended, res.err = w.appendReq(g, r.msgs)
		case reqResolve:
			res.appended, res.err = w.resolveReq(g, r.batch)
		case reqReplay:
			res.msgs, res.err = w.replayReq(g, r.ids, r.due)
		case reqPurge:
			res.count, res.err = w.purgeReq(g, r.ids)
		case reqPurgeAll:
			res.count, res.err = w.purgeAllReq(g)
		}
		g.results[i] = res
	}
	w.finish(g)
	close(g.built)
}

// finish writes the new blocks, the resolve log (or a checkpoint), the
// deletion of emptied blocks and the sequence.
func (w *writer) finish(g *group) {
	b := g.batch
	slices.Sort(g.clears) // by block, then slot
	if len(g.clears) > 0 && g.seq == 0 {
		// The resolve log is keyed by the group's sequence.
		w.lastSeq++
		g.seq = w.lastSeq
	}
	for shard, bb := range g.builders {
		// Encode the block straight into the batch: one copy of each message.
		key := blockKey(shard, g.seq, kindBlock)
		total := bb.encodedLen()
		op := b.SetDeferred(len(key), total)
		copy(op.Key, key)
		if enc := bb.appendTo(op.Value[:0:total]); len(enc) != total || &enc[0] != &op.Value[0] {
			panic(fmt.Sprintf("wal: block encoded to %d bytes, sized %d", len(enc), total))
		}
		_ = op.Finish()
		sum := &summary{n: len(bb.msgs), minDue: bb.minDue, maxDue: bb.maxDue, live: len(bb.msgs), keyed: bb.keyed}
		sum.bits = make([]uint64, (sum.n+63)/64)
		for i := 0; i < sum.n; i++ {
			sum.bits[i/64] |= 1 << (i % 64)
		}
		if len(sum.keyed) > 0 {
			sum.keyed = append(sum.keyed, make([]uint64, len(sum.bits)-len(sum.keyed))...)
		}
		_ = b.Set(blockKey(shard, g.seq, kindSummary), sum.encode(), nil)
		bb.msgs = nil // the callers' messages are not kept past the build
		w.addBlock(shard, g.seq, sum)
		g.added++
	}
	var dropped []store.ID
	for ref := range clearedBlocks(g.clears) {
		sum := w.blocks[ref]
		if invariants {
			checkSummary(sum)
		}
		if sum.live == 0 {
			delete(w.blocks, ref)
			w.dropDirty(ref)
			dropped = append(dropped, store.ID(ref<<slotBits))
			g.dropped++
		}
	}
	w.logClears(g)
	if g.seq != 0 {
		_ = b.Set(keySeq, binary.BigEndian.AppendUint64(nil, g.seq), nil)
	}
	if len(g.clears) > 0 || g.added > 0 {
		g.marks = map[int]uint64{}
		for ref := range clearedBlocks(g.clears) {
			shard := store.ID(ref << slotBits).Shard()
			g.marks[shard] = w.watermark(shard)
		}
		for shard := range g.builders {
			g.marks[shard] = w.watermark(shard)
		}
	}
	// Every block below a shard's watermark is gone: one range deletion from
	// the previous watermark covers them all (and lets Pebble drop whole
	// sstables with delete-only compactions). A block emptied above the
	// watermark, out of order, gets two point deletes instead.
	for shard, mark := range g.marks {
		if from := w.deletedTo[shard]; mark > from {
			_ = b.DeleteRange(blockKey(shard, from, 0), blockKey(shard, mark, 0), nil)
			w.deletedTo[shard] = mark
		}
	}
	for _, id := range dropped {
		if idSeq(id) >= g.marks[id.Shard()] {
			_ = b.Delete(blockKey(id.Shard(), idSeq(id), kindSummary), nil)
			_ = b.Delete(blockKey(id.Shard(), idSeq(id), kindBlock), nil)
		}
	}
}

func (w *writer) builder(g *group, shard int) *blockBuilder {
	if g.builders == nil {
		g.builders = map[int]*blockBuilder{}
	}
	bb := g.builders[shard]
	if bb == nil {
		bb = &blockBuilder{}
		g.builders[shard] = bb
	}
	return bb
}

// clearSlot clears a located block slot in the writer's summary and
// records it for the group's resolve log.
func (g *group) clearSlot(loc *location) {
	loc.sum.clear(idSlot(loc.id))
	g.clears = append(g.clears, loc.id)
}

// clearedBlocks yields each block of sorted IDs with its run of IDs.
func clearedBlocks(ids []store.ID) iter.Seq2[uint64, []store.ID] {
	return func(yield func(uint64, []store.ID) bool) {
		for len(ids) > 0 {
			ref, n := blockRef(ids[0]), 1
			for n < len(ids) && blockRef(ids[n]) == ref {
				n++
			}
			if !yield(ref, ids[:n]) {
				return
			}
			ids = ids[n:]
		}
	}
}

// keyLookup is the result of looking up an idempotency key before applying.
type keyLookup struct {
	id store.ID // 0 = unknown
}

// lookupKey finds key in the overlays, then in Pebble.
func (w *writer) lookupKey(key string) (store.ID, error) {
	if id, ok := w.cur.keys[key]; ok {
		return id, nil
	}
	for _, o := range w.prev {
		if id, ok := o.keys[key]; ok {
			return id, nil
		}
	}
	id, _, err := readRecord(w.s.db, idemKey(key), decodeKeyIndex)
	if err != nil {
		return 0, fmt.Errorf("wal: read idempotency key: %w", err)
	}
	return id, nil
}

func (w *writer) lookupKeys(msgs []store.Message) ([]keyLookup, error) {
	var out []keyLookup
	for i := range msgs {
		if msgs[i].Key == "" {
			continue
		}
		if out == nil {
			out = make([]keyLookup, len(msgs))
		}
		id, err := w.lookupKey(msgs[i].Key)
		if err != nil {
			return nil, err
		}
		out[i].id = id
	}
	return out, nil
}

func (w *writer) appendReq(g *group, msgs []store.Message) ([]store.Appended, error) {
	looks, err := w.lookupKeys(msgs)
	if err != nil {
		return nil, err
	}
	return w.addNew(g, msgs, looks), nil
}

// addNew assigns IDs and encodes new messages. It cannot fail.
func (w *writer) addNew(g *group, msgs []store.Message, looks []keyLookup) []store.Appended {
	out := make([]store.Appended, len(msgs))
	horizon := w.s.opts.Horizon
	for i := range msgs {
		m := &msgs[i]
		if m.Key != "" {
			id, ok := w.cur.keys[m.Key]
			if !ok {
				id = looks[i].id
			}
			if id != 0 {
				out[i] = store.Appended{ID: id, Existing: true}
				continue
			}
		}
		if g.seq == 0 {
			w.lastSeq++
			g.seq = w.lastSeq
		}
		var id store.ID
		if horizon >= 0 && m.Due-g.now <= int64(horizon) {
			slot := w.builder(g, m.Shard).add(m)
			id = makeStoreID(m.Shard, g.seq, slot)
		} else {
			if g.far == nil {
				g.far = map[int]int{}
			}
			slot := farSlotBase + g.far[m.Shard]
			g.far[m.Shard]++
			id = makeStoreID(m.Shard, g.seq, slot)
			w.putTimed(g, id, m)
		}
		if m.Key != "" {
			_ = g.batch.Set(idemKey(m.Key), binary.BigEndian.AppendUint64(nil, uint64(id)), nil)
			w.cur.keys[m.Key] = id
		}
		g.pending[m.Shard]++
		out[i] = store.Appended{ID: id}
		fm := *m
		fm.ID = id
		g.feed(&fm)
	}
	return out
}

// putTimed writes m under id into the time-ordered keyspace and its index.
func (w *writer) putTimed(g *group, id store.ID, m *store.Message) {
	cp := *m
	cp.ID = id
	cp.Shard = id.Shard()
	_ = g.batch.Set(timeKey(id.Shard(), m.Due, id), appendMessage(nil, m), nil)
	_ = g.batch.Set(idKey(tagIndex, id), indexEntry{due: m.Due, key: m.Key}.encode(), nil)
	w.cur.timed[id] = &cp
}

// location says where a pending message is.
type location struct {
	id    store.ID
	sum   *summary       // non-nil: slot in a block
	due   int64          // time keyspace: its due
	key   string         // idempotency key, when known
	msg   *store.Message // loaded message, when needed
	keyed bool
}

// locate finds a pending message (found false: it is not pending). With
// load it also reads the message.
func (w *writer) locate(g *group, id store.ID, load bool) (loc location, found bool, err error) {
	if id.Shard() >= w.s.shards || idSeq(id) == 0 {
		return location{}, false, nil
	}
	if slot := idSlot(id); slot < farSlotBase {
		if sum := w.blocks[blockRef(id)]; sum != nil && sum.isLive(slot) {
			loc = location{id: id, sum: sum, keyed: sum.isKeyed(slot)}
			if load || loc.keyed {
				m, err := w.readBlockSlot(g, id)
				if err != nil {
					return location{}, false, err
				}
				loc.msg, loc.key, loc.due = &m, m.Key, m.Due
			}
			return loc, true, nil
		}
	}
	for _, o := range w.overlays() {
		if m, ok := o.timed[id]; ok {
			if m == nil {
				return location{}, false, nil
			}
			return location{id: id, due: m.Due, key: m.Key, keyed: m.Key != "", msg: m}, true, nil
		}
	}
	v, closer, err := w.s.db.Get(idKey(tagIndex, id))
	if errors.Is(err, pebble.ErrNotFound) {
		return location{}, false, nil
	}
	if err != nil {
		return location{}, false, fmt.Errorf("wal: read index of %s: %w", id, err)
	}
	ie, err := decodeIndex(v)
	_ = closer.Close()
	if err != nil {
		return location{}, false, fmt.Errorf("wal: index of %s: %w", id, err)
	}
	loc = location{id: id, due: ie.due, key: ie.key, keyed: ie.key != ""}
	if load {
		m, err := w.s.getTimed(w.s.db, id, ie.due)
		if err != nil {
			return location{}, false, err
		}
		loc.msg = &m
	}
	return loc, true, nil
}

func (w *writer) readBlockSlot(g *group, id store.ID) (store.Message, error) {
	ref := blockRef(id)
	view, ok := g.blockBuf[ref]
	if !ok {
		v, closer, err := w.s.db.Get(blockKey(id.Shard(), idSeq(id), kindBlock))
		if err != nil {
			return store.Message{}, fmt.Errorf("wal: read block of %s: %w", id, err)
		}
		buf := append([]byte(nil), v...)
		_ = closer.Close()
		view, err = decodeBlock(buf)
		if err != nil {
			return store.Message{}, fmt.Errorf("wal: block of %s: %w", id, err)
		}
		if g.blockBuf == nil {
			g.blockBuf = map[uint64]blockView{}
		}
		g.blockBuf[ref] = view
	}
	return slotMessage(view, id)
}

// slotMessage decodes id's slot of a block.
func slotMessage(view blockView, id store.ID) (store.Message, error) {
	if idSlot(id) >= view.n {
		return store.Message{}, fmt.Errorf("wal: block of %s: %w", id, &CorruptionError{What: "block", Reason: "slot past the end"})
	}
	m, err := decodeMessage(view.entry(idSlot(id)))
	if err != nil {
		return store.Message{}, fmt.Errorf("wal: message %s: %w", id, err)
	}
	m.ID, m.Shard = id, id.Shard()
	return m, nil
}

// remove takes a located message out of where it is. Its key stays.
func (w *writer) remove(g *group, loc *location) {
	if loc.sum != nil {
		g.clearSlot(loc)
		return
	}
	_ = g.batch.Delete(timeKey(loc.id.Shard(), loc.due, loc.id), nil)
	_ = g.batch.Delete(idKey(tagIndex, loc.id), nil)
	w.cur.timed[loc.id] = nil
}

// overlays returns cur and prev, newest first.
func (w *writer) overlays() []*overlay {
	return append([]*overlay{w.cur}, w.prev...)
}

func (w *writer) dropKey(g *group, key string) {
	if key == "" {
		return
	}
	_ = g.batch.Delete(idemKey(key), nil)
	w.cur.keys[key] = 0
}

func (w *writer) resolveReq(g *group, b *store.Batch) ([]store.Appended, error) {
	locs := make([]location, 0, b.Ops())
	var missing []store.ID
	seen := make(map[store.ID]struct{}, b.Ops())
	check := func(id store.ID, load bool) error {
		if _, dup := seen[id]; dup {
			return invalidf("resolve: id %s appears more than once in the batch", id)
		}
		seen[id] = struct{}{}
		loc, found, err := w.locate(g, id, load)
		if err != nil {
			return err
		}
		if !found {
			missing = append(missing, id)
		}
		locs = append(locs, loc)
		return nil
	}
	for _, d := range b.Done {
		if err := check(d.ID, false); err != nil {
			return nil, err
		}
	}
	for _, u := range b.Update {
		if err := check(u.ID, true); err != nil {
			return nil, err
		}
	}
	for _, d := range b.Dead {
		if err := check(d.ID, true); err != nil {
			return nil, err
		}
	}
	if len(missing) > 0 {
		return nil, &store.NotPendingError{IDs: missing}
	}
	looks, err := w.lookupKeys(b.New)
	if err != nil {
		return nil, err
	}
	// Everything is validated; apply.
	i := 0
	for _, d := range b.Done {
		loc := &locs[i]
		i++
		w.remove(g, loc)
		w.dropKey(g, loc.key)
		g.pending[d.ID.Shard()]--
		g.done[d.Reason]++
	}
	for _, u := range b.Update {
		loc := &locs[i]
		i++
		w.remove(g, loc)
		m := *loc.msg
		m.Due, m.Attempt = u.Due, u.Attempt
		w.putTimed(g, u.ID, &m)
	}
	for _, d := range b.Dead {
		loc := &locs[i]
		i++
		w.remove(g, loc)
		dl := &store.DeadLetter{Message: *loc.msg, Reason: d.Reason, DeadAt: g.now}
		dl.Message.Attempt = d.Attempt
		dl.Message.ID, dl.Message.Shard = d.ID, d.ID.Shard()
		_ = g.batch.Set(idKey(tagDead, d.ID), encodeDead(dl), nil)
		w.cur.dead[d.ID] = dl
		g.pending[d.ID.Shard()]--
		g.dead++
	}
	return w.addNew(g, b.New, looks), nil
}

// lookupDead finds a dead letter in the overlays, then in Pebble.
func (w *writer) lookupDead(id store.ID) (*store.DeadLetter, error) {
	for _, o := range w.overlays() {
		if d, ok := o.dead[id]; ok {
			return d, nil
		}
	}
	d, err := w.s.getDead(w.s.db, id)
	if errors.Is(err, ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return &d, nil
}

func (w *writer) lookupDeads(ids []store.ID) ([]*store.DeadLetter, error) {
	out := make([]*store.DeadLetter, len(ids))
	var missing []store.ID
	seen := make(map[store.ID]struct{}, len(ids))
	for i, id := range ids {
		if _, dup := seen[id]; dup {
			return nil, invalidf("dead letters: id %s appears more than once", id)
		}
		seen[id] = struct{}{}
		d, err := w.lookupDead(id)
		if err != nil {
			return nil, err
		}
		if d == nil {
			missing = append(missing, id)
		}
		out[i] = d
	}
	if len(missing) > 0 {
		return nil, &store.NotPendingError{IDs: missing}
	}
	return out, nil
}

func (w *writer) replayReq(g *group, ids []store.ID, due int64) ([]store.Message, error) {
	deads, err := w.lookupDeads(ids)
	if err != nil {
		return nil, err
	}
	out := make([]store.Message, len(ids))
	for i, d := range deads {
		id := ids[i]
		_ = g.batch.Delete(idKey(tagDead, id), nil)
		w.cur.dead[id] = nil
		m := d.Message
		m.ID, m.Shard, m.Due, m.Attempt = id, id.Shard(), due, 0
		w.putTimed(g, id, &m)
		g.pending[id.Shard()]++
		g.dead--
		out[i] = m
		g.feed(&m)
	}
	return out, nil
}

func (w *writer) purgeReq(g *group, ids []store.ID) (int, error) {
	deads, err := w.lookupDeads(ids)
	if err != nil {
		return 0, err
	}
	for i, d := range deads {
		_ = g.batch.Delete(idKey(tagDead, ids[i]), nil)
		w.cur.dead[ids[i]] = nil
		w.dropKey(g, d.Message.Key)
		g.dead--
	}
	return len(ids), nil
}

func (w *writer) purgeAllReq(g *group) (int, error) {
	// Dead letters in Pebble (groups in prev may still be in flight, so the
	// overlays override it).
	var ids []store.ID
	it, err := w.s.db.NewIter(&pebble.IterOptions{LowerBound: []byte{tagDead}, UpperBound: []byte{tagDead + 1}})
	if err != nil {
		return 0, fmt.Errorf("wal: purge dead letters: %w", err)
	}
	for ok := it.First(); ok; ok = it.Next() {
		if len(it.Key()) == 9 {
			ids = append(ids, store.ID(binary.BigEndian.Uint64(it.Key()[1:])))
		}
	}
	if err := errors.Join(it.Error(), it.Close()); err != nil {
		return 0, fmt.Errorf("wal: purge dead letters: %w", err)
	}
	for _, o := range w.overlays() {
		for id := range o.dead {
			ids = append(ids, id)
		}
	}
	slices.Sort(ids)
	ids = slices.Compact(ids)
	live := ids[:0]
	for _, id := range ids {
		d, err := w.lookupDead(id)
		if err != nil {
			return 0, err
		}
		if d != nil {
			live = append(live, id)
		}
	}
	return w.purgeReq(g, live)
}
