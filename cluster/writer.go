package cluster

import (
	"context"
	"crypto/rand"
	"errors"

	"github.com/cockroachdb/pebble/v2"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/hourglassmq/hourglass/store"
)

// The writer of a partition owned here: the only writer of the
// partition's outcomes. It takes the queued operations as one batch,
// checks each against the index (a snapshot taken now, which holds every
// earlier batch of this writer: each waited to be applied) and the batch's
// own earlier operations, writes the records of those that hold in one
// transaction, waits until this node applied them, and answers.

type opKind uint8

const (
	opResolve opKind = iota
	opAppend
	opReplay
	opPurge
	opPurgeAll
	opAnswer
)

// op is one operation for a partition's writer.
type op struct {
	kind  opKind
	b     store.Batch     // opResolve
	msgs  []store.Message // opAppend
	ids   []store.ID      // opReplay, opPurge
	due   int64           // opReplay
	feed  bool            // the engine did not claim the IDs: feed it the change
	multi bool            // outcomes of several partitions, all owned here
	reqID []byte          // from a request: the answer goes in the transaction
	ans   *answer         // opAnswer
	// releases end claims taken for a request: given the new state after
	// the commit, or the index's if the op failed.
	releases map[store.ID]func(*store.Message)

	done chan struct{}
	res  opResult

	news     []*newMsg
	newState map[store.ID]*store.Message
	dones    []store.Reason
}

// opResult is what an op did.
type opResult struct {
	app     []store.Appended
	n       int
	err     error
	written map[int]int64 // partition → last offset written
}

// newMsg is a new message planned in a batch.
type newMsg struct {
	rec      *kgo.Record // nil when the key was known
	existing store.ID
	first    *newMsg // the same key earlier in the batch
	id       store.ID
}

func (n *newMsg) appended() store.Appended {
	switch {
	case n.first != nil:
		return store.Appended{ID: n.first.id, Existing: true}
	case n.rec == nil:
		return store.Appended{ID: n.existing, Existing: true}
	}
	return store.Appended{ID: n.id}
}

// finish completes op with r and ends its claims.
func (op *op) finish(s *Store, r opResult) {
	op.res = r
	for id, rel := range op.releases {
		if r.err == nil {
			rel(op.newState[id])
			continue
		}
		if m, ok, err := s.pendingOf(id); err == nil && ok {
			rel(&m)
		} else {
			rel(nil)
		}
	}
	op.releases = nil
	if op.done != nil {
		close(op.done)
	}
}

// enqueue queues op without waiting (a request's op: its answer goes to
// the log). If the term takes no more work, the claims end at once.
func (o *ownership) enqueue(op *op) {
	o.mu.Lock()
	if !o.accepting {
		o.mu.Unlock()
		op.finish(o.s, opResult{err: errMoved})
		return
	}
	o.queue = append(o.queue, op)
	o.mu.Unlock()
	o.signal()
}

// write is the writer's loop: until the term stops taking work and its
// queue is empty.
func (o *ownership) write() {
	for {
		o.mu.Lock()
		q := o.queue
		o.queue = nil
		accepting, lost := o.accepting, o.lost
		o.mu.Unlock()
		if len(q) > 0 {
			if lost || o.s.ctx.Err() != nil {
				for _, op := range q {
					op.finish(o.s, opResult{err: errMoved})
				}
				continue
			}
			o.s.multi.RLock()
			o.runBatch(q)
			o.s.multi.RUnlock()
			continue
		}
		if !accepting {
			return
		}
		select {
		case <-o.wake:
		case <-o.s.ctx.Done():
			o.failAll(errMoved)
			return
		}
	}
}

// overlay is the state a batch sees: the index snapshot, changed by the
// batch's earlier operations.
type overlay struct {
	snap *pebble.Snapshot
	msgs map[store.ID]*ovEntry
	keys map[string]*keyHold
	s    *Store
}

type ovEntry struct {
	state byte // 0: none
	v     msgValue
	token [tokenLen]byte
}

type keyHold struct {
	id store.ID
	nm *newMsg
}

func (ov *overlay) msg(id store.ID) (*ovEntry, error) {
	if e, ok := ov.msgs[id]; ok {
		return e, nil
	}
	e := &ovEntry{}
	if id != 0 && id.Shard() < ov.s.nP {
		me, v, ok, err := lookupMsg(ov.snap, id)
		if err != nil {
			return nil, err
		}
		if ok {
			e.state, e.v, e.token = me.state, v, me.token
		}
	}
	ov.msgs[id] = e
	return e, nil
}

func (ov *overlay) key(k string) (*keyHold, error) {
	if h, ok := ov.keys[k]; ok {
		return h, nil
	}
	id, ok, err := keyEntry(ov.snap, keyPartition(k, ov.s.nP), k)
	if err != nil {
		return nil, err
	}
	var h *keyHold
	if ok {
		h = &keyHold{id: id}
	}
	ov.keys[k] = h
	return h, nil
}

func newToken() [tokenLen]byte {
	var t [tokenLen]byte
	_, _ = rand.Read(t[:])
	return t
}

func msgKey(t [tokenLen]byte) []byte { return append([]byte{keyMessage}, t[:]...) }

func (s *Store) record(p int, key, value []byte, t *tomb) *kgo.Record {
	r := &kgo.Record{Topic: s.cfg.Topic, Partition: int32(p), Key: key, Value: value}
	if t != nil {
		r.Headers = []kgo.RecordHeader{{Key: headerTomb, Value: encodeTomb(t)}}
	}
	return r
}

// newRecord is the record of a new message (appended or cascaded).
func (s *Store) newRecord(m *store.Message) *kgo.Record {
	v := msgValue{kind: kindPending, flags: flagFeed, m: *m}
	v.m.ID = 0
	return s.record(m.Shard, msgKey(newToken()), encodeMsg(&v), nil)
}

// runBatch writes one batch of ops.
func (o *ownership) runBatch(q []*op) {
	s := o.s
	ov := &overlay{snap: s.db.NewSnapshot(), msgs: map[store.ID]*ovEntry{}, keys: map[string]*keyHold{}, s: s}
	defer ov.snap.Close()
	var recs []*kgo.Record
	answers := false
	for _, op := range q {
		if err := o.plan(op, ov, &recs); err != nil {
			// The index cannot be read: nothing of this batch is written.
			s.fail(err)
			for _, op := range q {
				op.finish(s, opResult{err: err})
			}
			return
		}
		answers = answers || op.reqID != nil
	}
	if len(recs) == 0 && !answers {
		for _, op := range q {
			fillApp(op)
			op.finish(s, op.res)
		}
		return
	}
	var more []*kgo.Record
	err := o.txn(o.ctx, recs, func() []*kgo.Record {
		for _, op := range q {
			if op.res.err != nil {
				continue
			}
			for _, nm := range op.news {
				if nm.rec != nil {
					nm.id = store.MakeID(int(nm.rec.Partition), uint64(nm.rec.Offset)+1)
				}
			}
		}
		for _, op := range q {
			if op.res.err == nil {
				fillApp(op)
				// A key held for a message of another partition is
				// recorded in the key's partition.
				for _, nm := range op.news {
					if nm.rec == nil || nm.first != nil {
						continue
					}
					if k := keyOf(nm.rec); k != "" {
						if kp := keyPartition(k, s.nP); kp != int(nm.rec.Partition) {
							more = append(more, s.record(kp, append([]byte{keyIdem}, k...), encodeIdem(nm.id), nil))
						}
					}
				}
			}
		}
		written := writtenOf(recs)
		for _, op := range q {
			if op.reqID == nil {
				continue
			}
			a := answerOf(op.res, written)
			if op.ans != nil {
				a = *op.ans
			}
			more = append(more, s.record(o.p.n, append([]byte{keyRequest}, op.reqID...), nil,
				&tomb{kind: tombAnswer, answer: encodeAnswer(&a)}))
		}
		return more
	})
	if err != nil {
		s.log.Warn("cluster: transaction failed; the partition is taken over again", "partition", o.p.n, "err", err)
		if fenced(err) {
			go s.lose(o.p, o)
		} else if o.ctx.Err() == nil {
			go s.restart(o.p, o, 0)
		}
		o.mu.Lock()
		o.accepting = false
		o.mu.Unlock()
		for _, op := range q {
			op.finish(s, opResult{err: errMoved})
		}
		o.failAll(errMoved)
		return
	}
	written := writtenOf(append(recs, more...))
	// Committed. Wait until this node applied it (so the engine was fed and
	// reads see it), unless the term ends first: then nobody here needs
	// the feed, and the commit stands.
	wctx, cancel := context.WithTimeout(o.ctx, s.cfg.RequestTimeout)
	for p, off := range written {
		if err := s.parts[p].waitApplied(wctx, off); err != nil {
			break
		}
	}
	cancel()
	s.statMu.Lock()
	for _, op := range q {
		if op.res.err == nil {
			for _, r := range op.dones {
				s.done[r]++
			}
		}
	}
	s.statMu.Unlock()
	for _, op := range q {
		r := op.res
		if r.err == nil {
			r.written = written
		}
		op.finish(s, r)
	}
}

// fillApp sets an op's results for its new messages (their IDs known).
func fillApp(op *op) {
	if op.res.err != nil || op.res.app != nil {
		return
	}
	for _, nm := range op.news {
		op.res.app = append(op.res.app, nm.appended())
	}
}

func keyOf(r *kgo.Record) string {
	v, err := decodeMsg(r.Value)
	if err != nil {
		return ""
	}
	return v.m.Key
}

func writtenOf(recs []*kgo.Record) map[int]int64 {
	w := map[int]int64{}
	for _, r := range recs {
		if r.Topic != "" && r.Offset >= w[int(r.Partition)] {
			w[int(r.Partition)] = r.Offset
		}
	}
	return w
}

// plan checks op against the overlay and adds its records to recs; an op
// that does not hold gets its error and writes nothing. The returned error
// is the index's.
func (o *ownership) plan(op *op, ov *overlay, recs *[]*kgo.Record) error {
	s := o.s
	var out []*kgo.Record
	op.newState = map[store.ID]*store.Message{}
	var missing []store.ID
	want := func(id store.ID, state byte) (*ovEntry, error) {
		sh := id.Shard()
		if id == 0 || sh >= s.nP || (sh != o.p.n && !(op.multi && s.parts[sh].own.Load() != nil)) {
			missing = append(missing, id)
			return nil, nil
		}
		e, err := ov.msg(id)
		if err != nil {
			return nil, err
		}
		if e.state != state {
			missing = append(missing, id)
			return nil, nil
		}
		return e, nil
	}
	type change struct {
		id store.ID
		e  *ovEntry
		to ovEntry
	}
	var changes []change
	// gone writes a message's tombstone, and frees its key.
	gone := func(id store.ID, e *ovEntry, reason store.Reason) error {
		flags := byte(0)
		if op.feed {
			flags = flagFeed
		}
		out = append(out, s.record(id.Shard(), msgKey(e.token), nil, &tomb{kind: tombDone, id: id, reason: reason, flags: flags}))
		if k := e.v.m.Key; k != "" {
			h, err := ov.key(k)
			if err != nil {
				return err
			}
			if h != nil && h.nm == nil && h.id == id {
				if kp := keyPartition(k, s.nP); kp != id.Shard() {
					out = append(out, s.record(kp, append([]byte{keyIdem}, k...), nil, &tomb{kind: tombIdem, id: id}))
				}
				ov.keys[k] = nil
			}
		}
		changes = append(changes, change{id: id, e: e})
		op.newState[id] = nil
		return nil
	}
	put := func(id store.ID, e *ovEntry, v msgValue) {
		if op.feed || op.kind == opReplay { // replayed dead letters are fed like new ones
			v.flags = flagFeed
		} else {
			v.flags = 0
		}
		v.m.ID, v.m.Shard = id, id.Shard()
		out = append(out, s.record(id.Shard(), msgKey(e.token), encodeMsg(&v), nil))
		changes = append(changes, change{id: id, e: e, to: ovEntry{state: map[byte]byte{kindPending: statePending, kindDead: stateDead}[v.kind], v: v, token: e.token}})
		if v.kind == kindPending {
			m := v.m
			op.newState[id] = &m
		} else {
			op.newState[id] = nil
		}
	}
	now := s.env.Now().UnixNano()
	switch op.kind {
	case opResolve:
		for _, d := range op.b.Done {
			if e, err := want(d.ID, statePending); err != nil {
				return err
			} else if e != nil {
				if err := gone(d.ID, e, d.Reason); err != nil {
					return err
				}
				op.dones = append(op.dones, d.Reason)
				if d.Reason == store.Delivered {
					if own := s.parts[d.ID.Shard()].own.Load(); own != nil {
						if r := own.peekStaged(d.ID); r != nil {
							out = append(out, r)
						}
					}
				}
			}
		}
		for _, u := range op.b.Update {
			if e, err := want(u.ID, statePending); err != nil {
				return err
			} else if e != nil {
				v := e.v
				v.kind, v.m.Due, v.m.Attempt = kindPending, u.Due, u.Attempt
				put(u.ID, e, v)
			}
		}
		for _, d := range op.b.Dead {
			if e, err := want(d.ID, statePending); err != nil {
				return err
			} else if e != nil {
				v := e.v
				v.kind, v.m.Attempt, v.reason, v.deadAt = kindDead, d.Attempt, d.Reason, now
				put(d.ID, e, v)
			}
		}
	case opReplay:
		for _, id := range op.ids {
			if e, err := want(id, stateDead); err != nil {
				return err
			} else if e != nil {
				v := e.v
				v.kind, v.m.Due, v.m.Attempt, v.reason, v.deadAt = kindPending, op.due, 0, "", 0
				put(id, e, v)
			}
		}
		if len(missing) == 0 {
			op.res.n = len(op.ids)
		}
	case opPurge, opPurgeAll:
		ids := op.ids
		if op.kind == opPurgeAll {
			var err error
			if ids, err = s.deadIDsOf(ov.snap, o.p.n); err != nil {
				return err
			}
		}
		for _, id := range ids {
			if e, err := want(id, stateDead); err != nil {
				return err
			} else if e != nil {
				if err := gone(id, e, store.Cancelled); err != nil {
					return err
				}
			}
		}
		if len(missing) == 0 {
			op.res.n = len(ids)
		}
	case opAnswer:
		return nil
	}
	if len(missing) > 0 {
		op.res = opResult{err: &store.NotPendingError{IDs: missing}}
		for _, id := range missing {
			if id != 0 && id.Shard() < s.nP {
				if own := s.parts[id.Shard()].own.Load(); own != nil {
					own.takeStaged(id) // its delivery is not committed: forget it
				}
			}
		}
		return nil // the overlay is changed only below
	}
	// New messages: appended (keyed, decided here) or cascaded.
	msgs := op.msgs
	if op.kind == opResolve {
		msgs = op.b.New
	}
	for i := range msgs {
		m := &msgs[i]
		nm := &newMsg{}
		if m.Key != "" {
			h, err := ov.key(m.Key)
			if err != nil {
				return err
			}
			if h != nil {
				if h.nm != nil {
					nm.first = h.nm
				} else {
					nm.existing = h.id
				}
				op.news = append(op.news, nm)
				continue
			}
			ov.keys[m.Key] = &keyHold{nm: nm}
		}
		nm.rec = s.newRecord(m)
		out = append(out, nm.rec)
		op.news = append(op.news, nm)
	}
	for _, c := range changes {
		*c.e = c.to
	}
	// The staged deliveries go with this op: take them.
	for _, d := range op.b.Done {
		if d.Reason == store.Delivered {
			if own := s.parts[d.ID.Shard()].own.Load(); own != nil {
				own.takeStaged(d.ID)
			}
		}
	}
	*recs = append(*recs, out...)
	return nil
}

// deadIDsOf lists partition p's dead letters in a snapshot.
func (s *Store) deadIDsOf(r pebble.Reader, p int) ([]store.ID, error) {
	pre := ixPrefix(ixDead, p)
	it, err := r.NewIter(&pebble.IterOptions{LowerBound: pre, UpperBound: prefixEnd(pre)})
	if err != nil {
		return nil, err
	}
	defer it.Close()
	var out []store.ID
	for ok := it.First(); ok; ok = it.Next() {
		k := it.Key()
		out = append(out, store.ID(uint64(k[2])<<56|uint64(k[3])<<48|uint64(k[4])<<40|uint64(k[5])<<32|
			uint64(k[6])<<24|uint64(k[7])<<16|uint64(k[8])<<8|uint64(k[9])))
	}
	return out, it.Error()
}

func (o *ownership) peekStaged(id store.ID) *kgo.Record {
	o.stageMu.Lock()
	defer o.stageMu.Unlock()
	return o.staged[id]
}

// submitLocal runs op on partition p's writer here, if this node owns p.
func (s *Store) submitLocal(ctx context.Context, p int, op *op) (opResult, error) {
	o := s.parts[p].own.Load()
	if o == nil {
		return opResult{}, errMoved
	}
	return o.submit(ctx, op)
}

// errIsMoved reports whether a call must go to the owner instead.
func errIsMoved(err error) bool { return errors.Is(err, errMoved) }
