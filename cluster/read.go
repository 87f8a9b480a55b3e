package cluster

import (
	"context"
	"encoding/binary"
	"fmt"
	"math"
	"slices"
	"time"

	"github.com/cockroachdb/pebble/v2"

	"github.com/hourglassmq/hourglass/store"
)

// Reads are answered from this node's index, for every partition, owned
// here or not: as fresh as what this node applied (its own writes are
// applied before they return; another node's a fetch later).

// Scan implements store.Store: one page from the index, by (due, ID),
// under the partition's read lock so it never sees a record whose change
// is not yet fed.
func (s *Store) Scan(ctx context.Context, q store.ScanQuery) ([]store.Message, store.Page, error) {
	if err := s.enter(); err != nil {
		return nil, store.Page{}, err
	}
	defer s.leave()
	if err := ctx.Err(); err != nil {
		return nil, store.Page{}, err
	}
	if q.Shard < 0 || q.Shard >= s.nP {
		return nil, store.Page{}, store.Invalidf("scan: shard %d outside [0, %d)", q.Shard, s.nP)
	}
	limit := q.Limit
	if limit <= 0 {
		limit = 1024
	}
	limit = min(limit, store.MaxScanLimit)
	page := store.Page{Next: q.After}
	from := max(q.From, q.After.Due, 0)
	to := min(q.To, store.MaxDue+1)
	if from >= to {
		page.Done = true
		return nil, page, nil
	}
	p := s.parts[q.Shard]
	p.mu.RLock()
	defer p.mu.RUnlock()
	lower := ixDueKey(q.Shard, from, 0)
	if q.After.Due >= from {
		lower = ixDueKey(q.Shard, q.After.Due, q.After.ID+1)
		if q.After.ID == math.MaxUint64 {
			lower = ixDueKey(q.Shard, q.After.Due+1, 0)
		}
	}
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: lower, UpperBound: ixDueKey(q.Shard, to, 0)})
	if err != nil {
		return nil, page, fmt.Errorf("cluster: scan partition %d: %w", q.Shard, err)
	}
	defer it.Close()
	var out []store.Message
	for ok := it.First(); ok; ok = it.Next() {
		if len(out) == limit {
			return out, store.Page{Next: store.PositionOf(&out[len(out)-1])}, nil
		}
		k := it.Key()
		if len(k) != 18 {
			return nil, page, fmt.Errorf("cluster: scan partition %d: %w: due key of %d bytes", q.Shard, errFormat, len(k))
		}
		id := store.ID(binary.BigEndian.Uint64(k[10:]))
		v := it.Value()
		if len(v) < tokenLen {
			return nil, page, fmt.Errorf("cluster: scan partition %d: %w: short entry", q.Shard, errFormat)
		}
		mv, err := decodeMsg(v[tokenLen:])
		if err != nil {
			return nil, page, fmt.Errorf("cluster: scan partition %d: %w", q.Shard, err)
		}
		mv.m.ID, mv.m.Shard = id, q.Shard
		out = append(out, mv.m)
	}
	if err := it.Error(); err != nil {
		return nil, page, fmt.Errorf("cluster: scan partition %d: %w", q.Shard, err)
	}
	page.Done = true
	if len(out) > 0 {
		page.Next = store.PositionOf(&out[len(out)-1])
	}
	return out, page, nil
}

// Get implements store.Store.
func (s *Store) Get(ctx context.Context, id store.ID) (store.Message, error) {
	if err := s.enter(); err != nil {
		return store.Message{}, err
	}
	defer s.leave()
	if err := ctx.Err(); err != nil {
		return store.Message{}, err
	}
	m, ok, err := s.pendingOf(id)
	if err != nil {
		return store.Message{}, err
	}
	if !ok {
		return store.Message{}, fmt.Errorf("cluster: get %s: %w", id, store.ErrNotFound)
	}
	return m, nil
}

// pendingOf reads a pending message from the index.
func (s *Store) pendingOf(id store.ID) (store.Message, bool, error) {
	if id == 0 || id.Shard() >= s.nP {
		return store.Message{}, false, nil
	}
	p := s.parts[id.Shard()]
	p.mu.RLock()
	defer p.mu.RUnlock()
	e, v, ok, err := lookupMsg(s.db, id)
	if err != nil {
		return store.Message{}, false, fmt.Errorf("cluster: read %s from the index: %w", id, err)
	}
	if !ok || e.state != statePending {
		return store.Message{}, false, nil
	}
	return v.m, true, nil
}

// Lookup implements store.Store: the key's partition holds it.
func (s *Store) Lookup(ctx context.Context, key string) (store.ID, error) {
	if err := s.enter(); err != nil {
		return 0, err
	}
	defer s.leave()
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	if key == "" {
		return 0, fmt.Errorf("cluster: lookup of the empty key: %w", store.ErrNotFound)
	}
	id, ok, err := s.keyHolder(key)
	if err != nil {
		return 0, err
	}
	if !ok {
		return 0, fmt.Errorf("cluster: lookup %.64q: %w", key, store.ErrNotFound)
	}
	return id, nil
}

// keyHolder reads the ID that holds key, from the key's partition.
func (s *Store) keyHolder(key string) (store.ID, bool, error) {
	b, ok, err := get(s.db, ixKeyKey(keyPartition(key, s.nP), key))
	if err != nil || !ok {
		return 0, false, err
	}
	if len(b) != 8 {
		return 0, false, fmt.Errorf("cluster: %w: key entry of %d bytes", errFormat, len(b))
	}
	return store.ID(binary.BigEndian.Uint64(b)), true, nil
}

// GetDead implements store.Store.
func (s *Store) GetDead(ctx context.Context, id store.ID) (store.DeadLetter, error) {
	if err := s.enter(); err != nil {
		return store.DeadLetter{}, err
	}
	defer s.leave()
	if err := ctx.Err(); err != nil {
		return store.DeadLetter{}, err
	}
	if id != 0 && id.Shard() < s.nP {
		b, ok, err := get(s.db, ixDeadKey(id))
		if err != nil {
			return store.DeadLetter{}, fmt.Errorf("cluster: read dead letter %s: %w", id, err)
		}
		if ok {
			return deadLetterOf(id, b)
		}
	}
	return store.DeadLetter{}, fmt.Errorf("cluster: dead letter %s: %w", id, store.ErrNotFound)
}

func deadLetterOf(id store.ID, b []byte) (store.DeadLetter, error) {
	if len(b) < tokenLen {
		return store.DeadLetter{}, fmt.Errorf("cluster: dead letter %s: %w: short entry", id, errFormat)
	}
	v, err := decodeMsg(b[tokenLen:])
	if err != nil {
		return store.DeadLetter{}, fmt.Errorf("cluster: dead letter %s: %w", id, err)
	}
	v.m.ID, v.m.Shard = id, id.Shard()
	return store.DeadLetter{Message: v.m, Reason: v.reason, DeadAt: v.deadAt}, nil
}

// ListDead implements store.Store: dead letters of every partition, in ID
// order (the partition is an ID's top byte, so index order is ID order).
func (s *Store) ListDead(ctx context.Context, q store.DeadQuery) ([]store.DeadLetter, store.ID, error) {
	if err := s.enter(); err != nil {
		return nil, 0, err
	}
	defer s.leave()
	if err := ctx.Err(); err != nil {
		return nil, 0, err
	}
	limit := q.Limit
	if limit <= 0 {
		limit = 1024
	}
	limit = min(limit, store.MaxDeadLimit)
	lower := []byte{ixDead, 0}
	if q.After != 0 {
		if q.After.Shard() >= s.nP || q.After == math.MaxUint64 {
			return nil, 0, nil
		}
		lower = ixDeadKey(q.After + 1)
	}
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: lower, UpperBound: []byte{ixDead + 1}})
	if err != nil {
		return nil, 0, fmt.Errorf("cluster: list dead letters: %w", err)
	}
	defer it.Close()
	var out []store.DeadLetter
	for ok := it.First(); ok; ok = it.Next() {
		if len(out) == limit {
			return out, out[len(out)-1].Message.ID, nil
		}
		k := it.Key()
		if len(k) != 10 {
			return nil, 0, fmt.Errorf("cluster: list dead letters: %w: key of %d bytes", errFormat, len(k))
		}
		d, err := deadLetterOf(store.ID(binary.BigEndian.Uint64(k[2:])), it.Value())
		if err != nil {
			return nil, 0, err
		}
		out = append(out, d)
	}
	return out, 0, it.Error()
}

// Stats implements store.Store. Pending and Dead count every partition as
// this node applied it; Commits, Records, DoneByReason and Sync count this
// node's transactions.
func (s *Store) Stats() store.Stats {
	st := store.Stats{Kind: "kafka", Pending: make([]int64, s.nP), DoneByReason: map[string]uint64{}}
	for i, p := range s.parts {
		st.Pending[i] = p.pending.Load()
		st.PendingTotal += st.Pending[i]
		st.Dead += p.dead.Load()
	}
	if err := s.enter(); err == nil {
		if s.db != nil {
			m := s.db.Metrics()
			st.DiskBytes = m.DiskSpaceUsage()
		}
		s.leave()
	}
	s.statMu.Lock()
	defer s.statMu.Unlock()
	st.Commits, st.Records = s.commits, s.records
	for r := range store.NumReasons {
		st.DoneByReason[r.String()] = s.done[r]
	}
	st.Sync = s.txnLat.summary()
	return st
}

// latencies keeps the last 4096 transaction latencies.
type latencies struct {
	n    uint64
	ring [4096]time.Duration
}

func (l *latencies) record(d time.Duration) {
	l.ring[l.n%uint64(len(l.ring))] = d
	l.n++
}

func (l *latencies) summary() store.Latency {
	n := min(l.n, uint64(len(l.ring)))
	if n == 0 {
		return store.Latency{}
	}
	v := slices.Clone(l.ring[:n])
	slices.Sort(v)
	return store.Latency{Count: l.n, P50: v[n/2], P99: v[n*99/100], Max: v[n-1]}
}

// keyPartition is the partition whose owner decides an idempotency key:
// 64-bit FNV-1a of the key, modulo the partition count, the same hash the
// engine places keyed messages with, so a keyed message usually lives in
// its key's partition.
func keyPartition(key string, n int) int {
	h := uint64(14695981039346656037)
	for i := 0; i < len(key); i++ {
		h ^= uint64(key[i])
		h *= 1099511628211
	}
	return int(h % uint64(n))
}
