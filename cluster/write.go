package cluster

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/hourglassmq/hourglass/store"
)

// The store's writing calls. Each decides where its work is done: by this
// node's partition writer when this node owns the partition, else by the
// owner through a request record; new messages without an idempotency key
// are produced directly by whichever node is called. Each call waits for
// Kafka (produces, the owner's answer, reading its own writes back) at
// most RequestTimeout in all: see callCtx.

// callCtx bounds a writing call's waits: RequestTimeout in all, whatever
// the caller's ctx (the engine runs store calls on contexts that do not
// end, and its Close waits for the calls in flight). Past it the call
// fails, saying whether its change may still be applied.
func (s *Store) callCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, s.cfg.RequestTimeout)
}

// Append implements store.Store. Messages without a key are produced by
// this node: one message with the idempotent producer, several in one
// transaction. Messages with a key are decided by the owner of the key's
// partition (hash of the key), which alone can tell whether the key is
// known: here if it is this node, else through a request. A call whose
// keyed messages belong to partitions of different owners is atomic per
// owner: if it fails part of the way, some of its keyed messages may be
// written (retrying the call with the same keys is safe), and none of its
// unkeyed ones.
func (s *Store) Append(ctx context.Context, msgs []store.Message) ([]store.Appended, error) {
	if err := s.enter(); err != nil {
		return nil, err
	}
	defer s.leave()
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if err := store.ValidateNew("append", msgs, s.nP, s.env.MaxPayload); err != nil {
		return nil, err
	}
	ctx, cancel := s.callCtx(ctx)
	defer cancel()
	return s.appendNew(ctx, msgs)
}

// appendNew writes new messages (validated): Append's work, and a
// Resolve's that has only new messages.
func (s *Store) appendNew(ctx context.Context, msgs []store.Message) ([]store.Appended, error) {
	out := make([]store.Appended, len(msgs))
	first := map[string]int{}
	dup := map[int]int{}
	keyed := map[int][]int{}
	var plain []int
	for i := range msgs {
		k := msgs[i].Key
		if k == "" {
			plain = append(plain, i)
			continue
		}
		if j, ok := first[k]; ok {
			dup[i] = j
			continue
		}
		first[k] = i
		kp := keyPartition(k, s.nP)
		keyed[kp] = append(keyed[kp], i)
	}
	if len(keyed) > 0 {
		var wg sync.WaitGroup
		var mu sync.Mutex
		var errs []error
		for kp, idx := range keyed {
			wg.Add(1)
			go func() {
				defer wg.Done()
				part := make([]store.Message, len(idx))
				for j, i := range idx {
					part[j] = msgs[i]
				}
				app, err := s.appendKeyed(ctx, kp, part)
				mu.Lock()
				defer mu.Unlock()
				if err == nil && len(app) != len(idx) {
					err = fmt.Errorf("cluster: the owner of partition %d answered %d results for %d messages", kp, len(app), len(idx))
				}
				if err != nil {
					errs = append(errs, err)
					return
				}
				for j, i := range idx {
					out[i] = app[j]
				}
			}()
		}
		wg.Wait()
		if len(errs) > 0 {
			return nil, errors.Join(errs...)
		}
	}
	if len(plain) > 0 {
		part := make([]store.Message, len(plain))
		for j, i := range plain {
			part[j] = msgs[i]
		}
		ids, err := s.appendPlain(ctx, part)
		if err != nil {
			return nil, err
		}
		for j, i := range plain {
			out[i] = store.Appended{ID: ids[j]}
		}
	}
	for i, j := range dup {
		out[i] = store.Appended{ID: out[j].ID, Existing: true}
	}
	return out, nil
}

// appendKeyed has the owner of key partition kp write msgs.
func (s *Store) appendKeyed(ctx context.Context, kp int, msgs []store.Message) ([]store.Appended, error) {
	return s.hereOrOwner(ctx, kp, &op{kind: opAppend, msgs: msgs}, &request{kind: reqAppend, msgs: msgs})
}

// hereOrOwner runs o on partition p if this node owns it, else sends r to
// the owner.
func (s *Store) hereOrOwner(ctx context.Context, p int, o *op, r *request) ([]store.Appended, error) {
	res, err := s.submitLocal(ctx, p, o)
	if err == nil {
		return res.app, nil
	}
	if !errIsMoved(err) {
		return nil, err
	}
	a, err := s.remote(ctx, p, r)
	if err != nil {
		return nil, err
	}
	if err := a.err(); err != nil {
		return nil, err
	}
	return a.app, nil
}

// appendPlain produces unkeyed messages and waits until this node applied
// them (so the partitions owned here fed them).
func (s *Store) appendPlain(ctx context.Context, msgs []store.Message) ([]store.ID, error) {
	recs := make([]*kgo.Record, len(msgs))
	for i := range msgs {
		recs[i] = s.newRecord(&msgs[i])
	}
	if len(recs) == 1 {
		if err := s.produceIdem(ctx, recs[0]); err != nil {
			return nil, fmt.Errorf("cluster: append to partition %d: %w", recs[0].Partition, err)
		}
	} else if err := s.app.write(ctx, recs); err != nil {
		return nil, err
	}
	ids := make([]store.ID, len(recs))
	for i, r := range recs {
		ids[i] = store.MakeID(int(r.Partition), uint64(r.Offset)+1)
	}
	// ctx is bounded (callCtx): a node cut off from the brokers cannot read
	// its own writes back, and must not hold its callers (and its Close).
	for p, off := range writtenOf(recs) {
		if err := s.parts[p].waitApplied(ctx, off); err != nil {
			return nil, fmt.Errorf("cluster: append acknowledged by Kafka but not read back here: %w (they may have landed: their transaction was committed, unless the client library aborted it; check by idempotency key before scheduling again)", err)
		}
	}
	return ids, nil
}

// Resolve implements store.Store. Outcomes of a partition owned here are
// written by its writer; of one owned elsewhere, by its owner through a
// request (which claims the IDs from that node's engine first, and answers
// with ErrInFlight if one is being delivered). Outcomes that span
// partitions must all be of partitions owned here.
func (s *Store) Resolve(ctx context.Context, b store.Batch) ([]store.Appended, error) {
	if err := s.enter(); err != nil {
		return nil, err
	}
	defer s.leave()
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if err := s.validateBatch(&b); err != nil {
		return nil, err
	}
	parts := map[int]bool{}
	var bad []store.ID
	each := func(id store.ID) {
		if id == 0 || id.Shard() >= s.nP {
			bad = append(bad, id)
			return
		}
		parts[id.Shard()] = true
	}
	for _, d := range b.Done {
		each(d.ID)
	}
	for _, u := range b.Update {
		each(u.ID)
	}
	for _, d := range b.Dead {
		each(d.ID)
	}
	if len(bad) > 0 {
		return nil, &store.NotPendingError{IDs: bad}
	}
	ctx, cancel := s.callCtx(ctx)
	defer cancel()
	switch len(parts) {
	case 0:
		if len(b.New) == 0 {
			return nil, nil
		}
		return s.appendNew(ctx, b.New)
	case 1:
		var p int
		for p = range parts {
		}
		return s.resolveOne(ctx, p, b)
	}
	ps := make([]int, 0, len(parts))
	for p := range parts {
		ps = append(ps, p)
	}
	slices.Sort(ps)
	res, err := s.multiOp(ctx, ps, &op{kind: opResolve, b: b})
	return res.app, err
}

// resolveOne resolves outcomes of partition p.
func (s *Store) resolveOne(ctx context.Context, p int, b store.Batch) ([]store.Appended, error) {
	pt := s.parts[p]
	pt.mu.RLock()
	attached := pt.attached
	pt.mu.RUnlock()
	// Attached here: the engine claimed the IDs (or is delivering them);
	// otherwise it did not, and hears of the change through the feed.
	return s.hereOrOwner(ctx, p, &op{kind: opResolve, b: b, feed: !attached}, &request{kind: reqResolve, b: b})
}

// multiOp runs an op over several partitions, all owned here, alone: every
// writer waits meanwhile. It is written in the transaction of the first
// partition's producer.
func (s *Store) multiOp(ctx context.Context, ps []int, x *op) (opResult, error) {
	for _, p := range ps {
		if o := s.parts[p].own.Load(); o == nil || !isReady(o) {
			return opResult{}, store.Invalidf("cluster: the call spans partitions %v, and this node does not own partition %d: only calls within one partition, or over partitions all owned by the node called, are atomic", ps, p)
		}
	}
	s.multi.Lock()
	defer s.multi.Unlock()
	o := s.parts[ps[0]].own.Load()
	if o == nil {
		return opResult{}, errMoved
	}
	x.multi = true
	x.done = make(chan struct{})
	o.runBatch([]*op{x})
	return x.res, x.res.err
}

func isReady(o *ownership) bool {
	select {
	case <-o.ready:
		return true
	default:
		return false
	}
}

// validateBatch applies the contract's checks to a Resolve batch.
func (s *Store) validateBatch(b *store.Batch) error {
	if n := b.Ops() + len(b.New); n > store.MaxCallMessages {
		return store.Invalidf("resolve: %d outcomes and messages, more than %d in one call", n, store.MaxCallMessages)
	}
	if err := store.ValidateNew("resolve", b.New, s.nP, s.env.MaxPayload); err != nil {
		return err
	}
	seen := make(map[store.ID]bool, b.Ops())
	dup := func(id store.ID) error {
		if seen[id] {
			return store.Invalidf("resolve: id %s appears more than once in the batch", id)
		}
		seen[id] = true
		return nil
	}
	for _, d := range b.Done {
		if d.Reason >= store.NumReasons {
			return store.Invalidf("resolve: done %s: unknown reason %d", d.ID, d.Reason)
		}
		if err := dup(d.ID); err != nil {
			return err
		}
	}
	for _, u := range b.Update {
		if err := store.ValidateDue("resolve: update "+u.ID.String(), u.Due); err != nil {
			return err
		}
		if err := dup(u.ID); err != nil {
			return err
		}
	}
	for _, d := range b.Dead {
		if len(d.Reason) > store.MaxReasonLen {
			return store.Invalidf("resolve: dead %s: reason is %d bytes, more than %d", d.ID, len(d.Reason), store.MaxReasonLen)
		}
		if err := dup(d.ID); err != nil {
			return err
		}
	}
	return nil
}

// deadCall groups dead-letter IDs by partition; IDs of no partition are
// reported not found.
func (s *Store) deadCall(ids []store.ID) (map[int][]store.ID, error) {
	by := map[int][]store.ID{}
	var bad []store.ID
	for _, id := range ids {
		if id == 0 || id.Shard() >= s.nP {
			bad = append(bad, id)
			continue
		}
		by[id.Shard()] = append(by[id.Shard()], id)
	}
	if len(bad) > 0 {
		return nil, &store.NotPendingError{IDs: bad}
	}
	return by, nil
}

// deadOp runs a dead-letter op: on one partition at its owner; over
// partitions all owned here, as one; otherwise checked against this
// node's index first, then per partition (atomic per partition).
func (s *Store) deadOp(ctx context.Context, ids []store.ID, mk func(ids []store.ID) (*op, *request)) (int, error) {
	by, err := s.deadCall(ids)
	if err != nil {
		return 0, err
	}
	ps := make([]int, 0, len(by))
	for p := range by {
		ps = append(ps, p)
	}
	slices.Sort(ps)
	if len(ps) > 1 {
		local := true
		for _, p := range ps {
			if o := s.parts[p].own.Load(); o == nil || !isReady(o) {
				local = false
			}
		}
		if local {
			x, _ := mk(ids)
			res, err := s.multiOp(ctx, ps, x)
			return res.n, err
		}
		var missing []store.ID
		for _, id := range ids {
			if _, err := s.GetDeadLocked(id); err != nil {
				missing = append(missing, id)
			}
		}
		if len(missing) > 0 {
			return 0, &store.NotPendingError{IDs: missing}
		}
	}
	total := 0
	for _, p := range ps {
		x, rq := mk(by[p])
		res, err := s.submitLocal(ctx, p, x)
		if errIsMoved(err) {
			var a answer
			if a, err = s.remote(ctx, p, rq); err == nil {
				err = a.err()
				res.n = int(a.n)
			}
		}
		if err != nil {
			return total, err
		}
		total += res.n
	}
	return total, nil
}

// GetDeadLocked reads a dead letter (the gate is held by the caller).
func (s *Store) GetDeadLocked(id store.ID) (store.DeadLetter, error) {
	b, ok, err := get(s.db, ixDeadKey(id))
	if err != nil {
		return store.DeadLetter{}, err
	}
	if !ok {
		return store.DeadLetter{}, store.ErrNotFound
	}
	return deadLetterOf(id, b)
}

// ReplayDead implements store.Store.
func (s *Store) ReplayDead(ctx context.Context, ids []store.ID, due int64) error {
	if err := s.enter(); err != nil {
		return err
	}
	defer s.leave()
	if err := store.ValidateDue("replay", due); err != nil {
		return err
	}
	if len(ids) > store.MaxCallMessages {
		return store.Invalidf("replay: %d ids, more than %d in one call", len(ids), store.MaxCallMessages)
	}
	ctx, cancel := s.callCtx(ctx)
	defer cancel()
	_, err := s.deadOp(ctx, ids, func(ids []store.ID) (*op, *request) {
		return &op{kind: opReplay, ids: ids, due: due}, &request{kind: reqReplay, ids: ids, due: due}
	})
	return err
}

// PurgeDead implements store.Store.
func (s *Store) PurgeDead(ctx context.Context, ids []store.ID) (int, error) {
	if err := s.enter(); err != nil {
		return 0, err
	}
	defer s.leave()
	if len(ids) > store.MaxCallMessages {
		return 0, store.Invalidf("purge: %d ids, more than %d in one call", len(ids), store.MaxCallMessages)
	}
	ctx, cancel := s.callCtx(ctx)
	defer cancel()
	n, err := s.deadOp(ctx, ids, func(ids []store.ID) (*op, *request) {
		return &op{kind: opPurge, ids: ids}, &request{kind: reqPurge, ids: ids}
	})
	if err != nil {
		return 0, err
	}
	return n, nil
}

// PurgeAllDead implements store.Store: every partition that holds dead
// letters (as this node applied it) purges them at its owner.
func (s *Store) PurgeAllDead(ctx context.Context) (int, error) {
	if err := s.enter(); err != nil {
		return 0, err
	}
	defer s.leave()
	ctx, cancel := s.callCtx(ctx)
	defer cancel()
	total := 0
	for p := range s.parts {
		if s.parts[p].dead.Load() == 0 {
			continue
		}
		res, err := s.submitLocal(ctx, p, &op{kind: opPurgeAll})
		if errIsMoved(err) {
			var a answer
			if a, err = s.remote(ctx, p, &request{kind: reqPurgeAll}); err == nil {
				err = a.err()
				res.n = int(a.n)
			}
		}
		if err != nil {
			return total, err
		}
		total += res.n
	}
	return total, nil
}
