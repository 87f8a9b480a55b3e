// Package memstore is Hourglass's in-memory store: the store contract
// (package store) held in RAM, for light uses and tests. Nothing survives
// the process.
//
// It keeps the pending messages of a shard in a slab, and names each by its
// slot: an ID's 56 local bits are base + (generation<<24 | slot), where
// base is random per shard and store, and the generation moves on each time
// a slot is reused. So finding a message by ID is an array index (no map),
// a stale ID (its slot reused) names nothing, and an ID from an earlier
// process or another store names nothing here either, but with probability
// below 2^-32 per ID. For Scan, each message is also listed in a time
// bucket of BucketWidth, whose keys sit in a B-tree: a scan visits only the
// buckets of its range.
//
// Each shard has its own lock, so producers appending to one shard and
// dispatchers resolving another do not wait for each other; an Append of
// messages without idempotency keys reserves room on every shard it
// touches, then inserts shard by shard. A shard's changes are fed to its
// owner under its lock, in commit order. Idempotency keys and dead letters
// have locks of their own; the lock order is shards (ascending), then
// keys, then dead letters.
package memstore

import (
	"context"
	"fmt"
	"math/rand/v2"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hourglassmq/hourglass/store"
)

// Options configures a memory store. The zero value works.
type Options struct {
	// Shards is the number of shards. Default: the engine's (store.Env),
	// else GOMAXPROCS.
	Shards int
	// Capacity bounds the pending messages per shard: Append and Resolve
	// fail with store.ErrFull rather than exceed it. Default: the engine's
	// (store.Env.Capacity), else unbounded.
	Capacity int
	// MaxDead bounds the dead letters kept: past it the oldest is dropped
	// (and its idempotency key freed). Default DefaultMaxDead; negative
	// means unbounded.
	MaxDead int
	// DeadRetention drops dead letters older than this (checked whenever
	// dead letters or keys are read or written). Default 0: kept until
	// MaxDead pushes them out or they are purged.
	DeadRetention time.Duration
	// MaxPayload bounds Message.Payload. Default: the engine's
	// (store.Env.MaxPayload), else store.DefaultMaxPayload.
	MaxPayload int
	// Now tells time for dead letters. Default: the engine's, else
	// time.Now.
	Now func() time.Time
}

// DefaultMaxDead is Options.MaxDead's default.
const DefaultMaxDead = 100_000

// MaxCapacity is the most pending messages a shard can hold (Capacity).
const MaxCapacity = 1 << slotBits

const (
	slotBits = 24
	slotMask = 1<<slotBits - 1
)

// BucketWidth is the span of due times one scan bucket covers.
const BucketWidth = int64(1 << 27) // ~134 ms

// Validate explains a bad option.
func (o Options) Validate() error {
	switch {
	case o.Shards < 0 || o.Shards > store.MaxShards:
		return store.Invalidf("memstore: Shards = %d; want 0 (default) or 1..%d", o.Shards, store.MaxShards)
	case o.Capacity < 0 || o.Capacity > MaxCapacity:
		return store.Invalidf("memstore: Capacity = %d; want 0 (default: the engine's MaxPending, else %d) or 1..%d per shard", o.Capacity, MaxCapacity, MaxCapacity)
	case o.DeadRetention < 0:
		return store.Invalidf("memstore: DeadRetention = %v is negative", o.DeadRetention)
	case o.MaxPayload < 0 || o.MaxPayload > store.MaxPayloadLimit:
		return store.Invalidf("memstore: MaxPayload = %d; want 0 (default) or 1..%d", o.MaxPayload, store.MaxPayloadLimit)
	}
	return nil
}

// OpenStore implements store.Opener: options left zero take the engine's.
func (o Options) OpenStore(_ context.Context, env store.Env) (store.Store, error) {
	if o.Shards == 0 {
		o.Shards = env.Shards
	}
	if o.Capacity == 0 {
		o.Capacity = env.Capacity
	}
	if o.MaxPayload == 0 {
		o.MaxPayload = env.MaxPayload
	}
	if o.Now == nil {
		o.Now = env.Now
	}
	return Open(o)
}

// Store is an in-memory store.Store.
type Store struct {
	opts   Options
	shards []*shard
	owner  atomic.Pointer[ownerRef]

	// closeMu is held (read) by every call; Close takes it to close.
	closeMu sync.RWMutex
	closed  bool

	keyMu sync.Mutex // guards keys
	keys  map[string]store.ID

	deadMu sync.Mutex // guards dead, deadOrder, deadHead
	dead   map[store.ID]*store.DeadLetter
	// deadOrder holds dead-letter IDs in the order they died (front may be
	// stale: purged or replayed), for MaxDead and DeadRetention.
	deadOrder []store.ID
	deadHead  int

	commits, records atomic.Uint64
	done             [store.NumReasons]atomic.Uint64
}

type ownerRef struct{ o store.Owner }

// Open returns an empty store.
func Open(o Options) (*Store, error) {
	if err := o.Validate(); err != nil {
		return nil, err
	}
	if o.Shards == 0 {
		o.Shards = min(runtime.GOMAXPROCS(0), store.MaxShards)
	}
	if o.MaxDead == 0 {
		o.MaxDead = DefaultMaxDead
	}
	if o.MaxPayload == 0 {
		o.MaxPayload = store.DefaultMaxPayload
	}
	if o.Capacity == 0 {
		o.Capacity = MaxCapacity
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	s := &Store{opts: o, keys: map[string]store.ID{}, dead: map[store.ID]*store.DeadLetter{}}
	for i := range o.Shards {
		s.shards = append(s.shards, newShard(i, rand.Uint64N(store.LocalMask+1)))
	}
	return s, nil
}

// Shards returns the shard count.
func (s *Store) Shards() int { return len(s.shards) }

// Start attaches every shard to o.
func (s *Store) Start(_ context.Context, o store.Owner) error {
	if err := s.enter(); err != nil {
		return err
	}
	defer s.leave()
	if !s.owner.CompareAndSwap(nil, &ownerRef{o}) {
		return fmt.Errorf("memstore: Start called twice")
	}
	for i := range s.shards {
		o.Attach(i)
	}
	return nil
}

func (s *Store) enter() error {
	s.closeMu.RLock()
	if s.closed {
		s.closeMu.RUnlock()
		return store.ErrClosed
	}
	return nil
}

func (s *Store) leave() { s.closeMu.RUnlock() }

// feed hands a shard's new messages to the owner (under the shard's lock).
func (s *Store) feed(sh int, msgs []store.Message) {
	if ref := s.owner.Load(); ref != nil && len(msgs) > 0 {
		ref.o.Feed(sh, store.Change{Added: msgs})
	}
}

// lockShards locks the shards flagged in touched, in ascending order, and
// returns the unlock.
func (s *Store) lockShards(touched []bool) func() {
	for i, t := range touched {
		if t {
			s.shards[i].mu.Lock()
		}
	}
	return func() {
		for i, t := range touched {
			if t {
				s.shards[i].mu.Unlock()
			}
		}
	}
}

// byShard groups the indexes of msgs by shard.
func (s *Store) byShard(msgs []store.Message) [][]int {
	per := make([][]int, len(s.shards))
	for i := range msgs {
		per[msgs[i].Shard] = append(per[msgs[i].Shard], i)
	}
	return per
}

// Append implements store.Store.
func (s *Store) Append(ctx context.Context, msgs []store.Message) ([]store.Appended, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if err := store.ValidateNew("append", msgs, len(s.shards), s.opts.MaxPayload); err != nil {
		return nil, err
	}
	if len(msgs) == 0 {
		return nil, nil
	}
	if err := s.enter(); err != nil {
		return nil, err
	}
	defer s.leave()
	per := s.byShard(msgs)
	out := make([]store.Appended, len(msgs))
	if slices.ContainsFunc(msgs, func(m store.Message) bool { return m.Key != "" }) {
		// Keys are looked up and taken atomically with the inserts.
		touched := make([]bool, len(s.shards))
		for sh, idx := range per {
			touched[sh] = len(idx) > 0
		}
		unlock := s.lockShards(touched)
		defer unlock()
		s.keyMu.Lock()
		defer s.keyMu.Unlock()
		s.deadMu.Lock()
		s.expireDead()
		s.deadMu.Unlock()
		if err := s.checkRoom(msgs, per, nil); err != nil {
			return nil, err
		}
		s.feedAll(s.addKeyed(msgs, out))
		s.counted(len(msgs))
		return out, nil
	}
	// No keys: reserve room on every shard touched (all or nothing), then
	// insert shard by shard, each under its own lock only.
	for sh, idx := range per {
		if len(idx) == 0 {
			continue
		}
		x := s.shards[sh]
		x.mu.Lock()
		if !x.room(len(idx), 0, s.opts.Capacity) {
			have := x.live + x.reserved
			x.mu.Unlock()
			s.unreserve(per[:sh])
			return nil, fmt.Errorf("%w: shard %d holds %d pending messages; %d more would pass its capacity %d", store.ErrFull, sh, have, len(idx), s.opts.Capacity)
		}
		x.reserved += len(idx)
		x.mu.Unlock()
	}
	for sh, idx := range per {
		if len(idx) == 0 {
			continue
		}
		x := s.shards[sh]
		x.mu.Lock()
		x.reserved -= len(idx)
		s.feed(sh, s.addNew(sh, msgs, idx, out))
		x.mu.Unlock()
	}
	s.counted(len(msgs))
	return out, nil
}

// unreserve gives back the room reserved for per's messages.
func (s *Store) unreserve(per [][]int) {
	for sh, idx := range per {
		if len(idx) > 0 {
			x := s.shards[sh]
			x.mu.Lock()
			x.reserved -= len(idx)
			x.mu.Unlock()
		}
	}
}

// checkRoom refuses msgs (grouped by per, less the messages free removes
// per shard) if a shard would pass its capacity. Messages whose key is
// known count as taking nothing. Callers hold the shards' locks, and keyMu
// if any message has a key.
func (s *Store) checkRoom(msgs []store.Message, per [][]int, free []int) error {
	seen := map[string]bool{}
	for sh, idx := range per {
		n := 0
		for _, i := range idx {
			if k := msgs[i].Key; k != "" {
				if _, ok := s.keys[k]; ok || seen[k] {
					continue
				}
				seen[k] = true
			}
			n++
		}
		f := 0
		if free != nil {
			f = free[sh]
		}
		if x := s.shards[sh]; n > 0 && !x.room(n, f, s.opts.Capacity) {
			return fmt.Errorf("%w: shard %d holds %d pending messages; %d more would pass its capacity %d", store.ErrFull, sh, x.live-f, n, s.opts.Capacity)
		}
	}
	return nil
}

// addNew assigns IDs to the messages idx of msgs, all of shard sh and
// none with a key, stores them and returns them for the feed; out gets
// their results. The caller holds the shard's lock.
func (s *Store) addNew(sh int, msgs []store.Message, idx []int, out []store.Appended) []store.Message {
	x := s.shards[sh]
	fed := make([]store.Message, 0, len(idx))
	for _, i := range idx {
		m := msgs[i]
		x.add(&m)
		out[i] = store.Appended{ID: m.ID}
		fed = append(fed, m)
	}
	return fed
}

// addKeyed stores msgs in their order, so that of two messages with one
// key the first is stored and the second answered with its ID; a key
// already known answers with the stored ID. It returns the new messages
// by shard, for the feed; out gets every message's result. The caller
// holds the locks of every shard msgs name, and keyMu.
func (s *Store) addKeyed(msgs []store.Message, out []store.Appended) [][]store.Message {
	fed := make([][]store.Message, len(s.shards))
	for i := range msgs {
		m := msgs[i]
		if m.Key != "" {
			if id, ok := s.keys[m.Key]; ok {
				out[i] = store.Appended{ID: id, Existing: true}
				continue
			}
		}
		s.shards[m.Shard].add(&m)
		if m.Key != "" {
			s.keys[m.Key] = m.ID
		}
		out[i] = store.Appended{ID: m.ID}
		fed[m.Shard] = append(fed[m.Shard], m)
	}
	return fed
}

// feedAll feeds each shard its new messages. The caller holds their locks.
func (s *Store) feedAll(fed [][]store.Message) {
	for sh, msgs := range fed {
		s.feed(sh, msgs)
	}
}

func (s *Store) counted(records int) {
	s.commits.Add(1)
	s.records.Add(uint64(records))
}

// pendingOf returns a pending message of a locked shard, or nil.
func (s *Store) pendingOf(id store.ID) *store.Message {
	if id == 0 || id.Shard() >= len(s.shards) {
		return nil
	}
	return s.shards[id.Shard()].get(id)
}

// Resolve implements store.Store.
func (s *Store) Resolve(ctx context.Context, b store.Batch) ([]store.Appended, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if n := b.Ops() + len(b.New); n > store.MaxCallMessages {
		return nil, store.Invalidf("resolve: %d outcomes and messages, more than %d in one call", n, store.MaxCallMessages)
	}
	if err := store.ValidateNew("resolve", b.New, len(s.shards), s.opts.MaxPayload); err != nil {
		return nil, err
	}
	for _, d := range b.Done {
		if d.Reason >= store.NumReasons {
			return nil, store.Invalidf("resolve: done %s: unknown reason %d", d.ID, d.Reason)
		}
	}
	for _, u := range b.Update {
		if err := store.ValidateDue("resolve: update "+u.ID.String(), u.Due); err != nil {
			return nil, err
		}
	}
	for _, d := range b.Dead {
		if len(d.Reason) > store.MaxReasonLen {
			return nil, store.Invalidf("resolve: dead %s: reason is %d bytes, more than %d", d.ID, len(d.Reason), store.MaxReasonLen)
		}
	}
	if err := s.enter(); err != nil {
		return nil, err
	}
	defer s.leave()
	// Lock every shard the batch touches, then keys, then dead letters.
	touched := make([]bool, len(s.shards))
	mark := func(id store.ID) {
		if sh := id.Shard(); sh < len(touched) {
			touched[sh] = true
		}
	}
	for _, d := range b.Done {
		mark(d.ID)
	}
	for _, u := range b.Update {
		mark(u.ID)
	}
	for _, d := range b.Dead {
		mark(d.ID)
	}
	per := s.byShard(b.New)
	for sh, idx := range per {
		touched[sh] = touched[sh] || len(idx) > 0
	}
	unlock := s.lockShards(touched)
	defer unlock()
	// Check everything before changing anything.
	for sh, t := range touched {
		if t {
			s.shards[sh].nextEpoch()
		}
	}
	var missing []store.ID
	free := make([]int, len(s.shards))
	keyed := slices.ContainsFunc(b.New, func(m store.Message) bool { return m.Key != "" })
	check := func(id store.ID, frees bool) error {
		m := s.pendingOf(id)
		if m == nil {
			missing = append(missing, id)
			return nil
		}
		if s.shards[id.Shard()].named(id) {
			return store.Invalidf("resolve: id %s appears more than once in the batch", id)
		}
		if frees {
			free[id.Shard()]++
			keyed = keyed || m.Key != ""
		}
		return nil
	}
	for _, d := range b.Done {
		if err := check(d.ID, true); err != nil {
			return nil, err
		}
	}
	for _, u := range b.Update {
		if err := check(u.ID, false); err != nil {
			return nil, err
		}
	}
	for _, d := range b.Dead {
		if err := check(d.ID, true); err != nil {
			return nil, err
		}
	}
	if len(missing) > 0 {
		slices.Sort(missing)
		return nil, &store.NotPendingError{IDs: slices.Compact(missing)}
	}
	// Keys are locked only when the batch adds or frees one, or kills a
	// message (MaxDead may push out a keyed dead letter): dispatchers
	// resolving unkeyed messages on different shards do not meet.
	if keyed || len(b.Dead) > 0 {
		s.keyMu.Lock()
		defer s.keyMu.Unlock()
		s.deadMu.Lock()
		defer s.deadMu.Unlock()
		s.expireDead()
	}
	if err := s.checkRoom(b.New, per, free); err != nil {
		return nil, err
	}
	for _, d := range b.Done {
		m := s.shards[d.ID.Shard()].take(d.ID)
		s.forgetKey(m.Key, d.ID)
		s.done[d.Reason].Add(1)
	}
	for _, u := range b.Update {
		s.shards[u.ID.Shard()].move(u.ID, u.Due, u.Attempt)
	}
	now := s.opts.Now().UnixNano()
	for _, d := range b.Dead {
		m := s.shards[d.ID.Shard()].take(d.ID)
		m.Attempt = d.Attempt
		s.addDead(&store.DeadLetter{Message: m, Reason: d.Reason, DeadAt: now})
	}
	out := make([]store.Appended, len(b.New))
	s.feedAll(s.addKeyed(b.New, out))
	s.counted(b.Ops() + len(b.New))
	return out, nil
}

// forgetKey frees key if it names id. Callers hold keyMu.
func (s *Store) forgetKey(key string, id store.ID) {
	if key != "" && s.keys[key] == id {
		delete(s.keys, key)
	}
}

// addDead keeps d and drops what MaxDead and DeadRetention push out.
// Callers hold keyMu and deadMu.
func (s *Store) addDead(d *store.DeadLetter) {
	s.dead[d.Message.ID] = d
	s.deadOrder = append(s.deadOrder, d.Message.ID)
	s.trimDead(d.DeadAt)
}

// lockDead takes keyMu then deadMu (the order every caller keeps), drops
// the dead letters whose retention ended, and returns the unlock.
func (s *Store) lockDead() (unlock func()) {
	s.keyMu.Lock()
	s.deadMu.Lock()
	s.expireDead()
	return func() {
		s.deadMu.Unlock()
		s.keyMu.Unlock()
	}
}

// expireDead drops dead letters older than DeadRetention, so that one is
// gone (and its key free) once its time is up, not only when another
// dies. Callers hold keyMu and deadMu.
func (s *Store) expireDead() {
	if s.opts.DeadRetention > 0 {
		s.trimDead(s.opts.Now().UnixNano())
	}
}

func (s *Store) trimDead(now int64) {
	for s.deadHead < len(s.deadOrder) {
		id := s.deadOrder[s.deadHead]
		d := s.dead[id]
		if d != nil {
			over := s.opts.MaxDead >= 0 && len(s.dead) > s.opts.MaxDead
			old := s.opts.DeadRetention > 0 && now-d.DeadAt > int64(s.opts.DeadRetention)
			if !over && !old {
				break
			}
			delete(s.dead, id)
			s.forgetKey(d.Message.Key, id)
		}
		s.deadHead++
	}
	if s.deadHead > 1024 && s.deadHead > len(s.deadOrder)/2 {
		s.deadOrder = append(s.deadOrder[:0:0], s.deadOrder[s.deadHead:]...)
		s.deadHead = 0
	}
}

// Scan implements store.Store.
func (s *Store) Scan(ctx context.Context, q store.ScanQuery) ([]store.Message, store.Page, error) {
	if err := ctx.Err(); err != nil {
		return nil, store.Page{}, err
	}
	if q.Shard < 0 || q.Shard >= len(s.shards) {
		return nil, store.Page{}, store.Invalidf("scan: shard %d outside [0, %d)", q.Shard, len(s.shards))
	}
	limit := q.Limit
	if limit <= 0 {
		limit = 1024
	}
	limit = min(limit, store.MaxScanLimit)
	if err := s.enter(); err != nil {
		return nil, store.Page{}, err
	}
	defer s.leave()
	page := store.Page{Next: q.After}
	if max(q.From, q.After.Due) >= q.To {
		page.Done = true
		return nil, page, nil
	}
	x := s.shards[q.Shard]
	x.mu.Lock()
	out, full := x.scan(q, limit)
	x.mu.Unlock()
	page.Done = !full
	if len(out) > 0 {
		page.Next = store.PositionOf(&out[len(out)-1])
	}
	return out, page, nil
}

// Get implements store.Store.
func (s *Store) Get(ctx context.Context, id store.ID) (store.Message, error) {
	if err := ctx.Err(); err != nil {
		return store.Message{}, err
	}
	if err := s.enter(); err != nil {
		return store.Message{}, err
	}
	defer s.leave()
	if id != 0 && id.Shard() < len(s.shards) {
		x := s.shards[id.Shard()]
		x.mu.Lock()
		m := x.get(id)
		var out store.Message
		if m != nil {
			out = *m
		}
		x.mu.Unlock()
		if m != nil {
			return out, nil
		}
	}
	return store.Message{}, fmt.Errorf("memstore: get %s: %w", id, store.ErrNotFound)
}

// Lookup implements store.Store.
func (s *Store) Lookup(ctx context.Context, key string) (store.ID, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	if err := s.enter(); err != nil {
		return 0, err
	}
	defer s.leave()
	s.keyMu.Lock()
	s.deadMu.Lock()
	s.expireDead()
	s.deadMu.Unlock()
	id, ok := s.keys[key]
	s.keyMu.Unlock()
	if ok && key != "" {
		return id, nil
	}
	return 0, fmt.Errorf("memstore: key %.64q: %w", key, store.ErrNotFound)
}

// GetDead implements store.Store.
func (s *Store) GetDead(ctx context.Context, id store.ID) (store.DeadLetter, error) {
	if err := ctx.Err(); err != nil {
		return store.DeadLetter{}, err
	}
	if err := s.enter(); err != nil {
		return store.DeadLetter{}, err
	}
	defer s.leave()
	defer s.lockDead()()
	if d := s.dead[id]; d != nil {
		return *d, nil
	}
	return store.DeadLetter{}, fmt.Errorf("memstore: dead letter %s: %w", id, store.ErrNotFound)
}

// ListDead implements store.Store.
func (s *Store) ListDead(ctx context.Context, q store.DeadQuery) ([]store.DeadLetter, store.ID, error) {
	if err := ctx.Err(); err != nil {
		return nil, 0, err
	}
	limit := q.Limit
	if limit <= 0 {
		limit = 1024
	}
	limit = min(limit, store.MaxDeadLimit)
	if err := s.enter(); err != nil {
		return nil, 0, err
	}
	defer s.leave()
	defer s.lockDead()()
	ids := make([]store.ID, 0, len(s.dead))
	for id := range s.dead {
		if id > q.After {
			ids = append(ids, id)
		}
	}
	slices.Sort(ids)
	var next store.ID
	if len(ids) > limit {
		ids = ids[:limit]
		next = ids[limit-1]
	}
	out := make([]store.DeadLetter, len(ids))
	for i, id := range ids {
		out[i] = *s.dead[id]
	}
	return out, next, nil
}

// deadOf checks ids for ReplayDead and PurgeDead: all dead letters, none
// twice. Callers hold deadMu.
func (s *Store) deadOf(what string, ids []store.ID) error {
	if len(ids) > store.MaxCallMessages {
		return store.Invalidf("%s: %d ids, more than %d in one call", what, len(ids), store.MaxCallMessages)
	}
	seen := make(map[store.ID]bool, len(ids))
	var missing []store.ID
	for _, id := range ids {
		if seen[id] {
			return store.Invalidf("%s: id %s appears more than once", what, id)
		}
		seen[id] = true
		if s.dead[id] == nil {
			missing = append(missing, id)
		}
	}
	if len(missing) > 0 {
		return &store.NotPendingError{IDs: missing}
	}
	return nil
}

// ReplayDead implements store.Store.
func (s *Store) ReplayDead(ctx context.Context, ids []store.ID, due int64) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := store.ValidateDue("replay", due); err != nil {
		return err
	}
	if err := s.enter(); err != nil {
		return err
	}
	defer s.leave()
	touched := make([]bool, len(s.shards))
	add := make([]int, len(s.shards))
	for _, id := range ids {
		if sh := id.Shard(); sh < len(touched) {
			touched[sh] = true
			add[sh]++
		}
	}
	unlock := s.lockShards(touched)
	defer unlock()
	defer s.lockDead()()
	if err := s.deadOf("replay", ids); err != nil {
		return err
	}
	for sh, n := range add {
		if n > 0 && !s.shards[sh].room(n, 0, s.opts.Capacity) {
			return fmt.Errorf("%w: shard %d cannot take %d replayed messages (capacity %d)", store.ErrFull, sh, n, s.opts.Capacity)
		}
	}
	fed := make([][]store.Message, len(s.shards))
	for _, id := range ids {
		m := s.dead[id].Message
		delete(s.dead, id)
		m.Due, m.Attempt = due, 0
		s.shards[id.Shard()].addReplayed(&m)
		fed[id.Shard()] = append(fed[id.Shard()], m)
	}
	for sh, msgs := range fed {
		s.feed(sh, msgs)
	}
	s.counted(len(ids))
	return nil
}

// PurgeDead implements store.Store.
func (s *Store) PurgeDead(ctx context.Context, ids []store.ID) (int, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	if err := s.enter(); err != nil {
		return 0, err
	}
	defer s.leave()
	defer s.lockDead()()
	if err := s.deadOf("purge", ids); err != nil {
		return 0, err
	}
	for _, id := range ids {
		s.forgetKey(s.dead[id].Message.Key, id)
		delete(s.dead, id)
	}
	s.counted(len(ids))
	return len(ids), nil
}

// PurgeAllDead implements store.Store.
func (s *Store) PurgeAllDead(ctx context.Context) (int, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	if err := s.enter(); err != nil {
		return 0, err
	}
	defer s.leave()
	s.keyMu.Lock()
	defer s.keyMu.Unlock()
	s.deadMu.Lock()
	defer s.deadMu.Unlock()
	n := len(s.dead)
	for id, d := range s.dead {
		s.forgetKey(d.Message.Key, id)
	}
	clear(s.dead)
	s.deadOrder, s.deadHead = nil, 0
	s.counted(n)
	return n, nil
}

// Err implements store.Store: a memory store never fails.
func (s *Store) Err() error { return nil }

// Stats implements store.Store.
func (s *Store) Stats() store.Stats {
	st := store.Stats{Kind: "memory", Pending: make([]int64, len(s.shards)),
		Commits: s.commits.Load(), Records: s.records.Load(), DoneByReason: map[string]uint64{}}
	for i, x := range s.shards {
		x.mu.Lock()
		st.Pending[i] = int64(x.live)
		x.mu.Unlock()
		st.PendingTotal += st.Pending[i]
	}
	s.keyMu.Lock()
	s.deadMu.Lock()
	s.expireDead()
	st.Dead = int64(len(s.dead))
	s.deadMu.Unlock()
	s.keyMu.Unlock()
	for r := store.Reason(0); r < store.NumReasons; r++ {
		st.DoneByReason[r.String()] = s.done[r].Load()
	}
	return st
}

// Close drops everything; later calls fail with store.ErrClosed.
func (s *Store) Close() error {
	s.closeMu.Lock()
	defer s.closeMu.Unlock()
	if s.closed {
		return store.ErrClosed
	}
	s.closed = true
	s.owner.Store(nil)
	for _, x := range s.shards {
		x.mu.Lock()
		x.pages, x.free, x.extra, x.buckets, x.order = nil, nil, nil, nil, nil
		x.mu.Unlock()
	}
	s.keyMu.Lock()
	s.keys = nil
	s.keyMu.Unlock()
	s.deadMu.Lock()
	s.dead, s.deadOrder = nil, nil
	s.deadMu.Unlock()
	return nil
}
