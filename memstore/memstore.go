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
// One mutex guards everything: every call is short (a batch of map
// operations), and it makes each call trivially atomic and the feed of
// every shard trivially ordered.
package memstore

import (
	"context"
	"fmt"
	"math/rand/v2"
	"runtime"
	"slices"
	"sync"
	"time"

	"github.com/google/btree"

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
	// DeadRetention drops dead letters older than this. Default 0: kept
	// until MaxDead pushes them out or they are purged.
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
	opts Options

	mu     sync.RWMutex // guards everything below
	closed bool
	owner  store.Owner
	shards []*shard
	keys   map[string]store.ID
	dead   map[store.ID]*store.DeadLetter
	// deadOrder holds dead-letter IDs in the order they died (front may be
	// stale: purged or replayed), for MaxDead and DeadRetention.
	deadOrder []store.ID
	deadHead  int
	commits   uint64
	records   uint64
	done      [store.NumReasons]uint64
}

type shard struct {
	n     int
	base  uint64   // random: IDs' local bits are base + (gen<<slotBits | slot)
	pages [][]slot // the slab, in pages of pageSize so growth never copies
	nslot int32
	free  []int32
	live  int
	// extra holds replayed dead letters, which keep IDs that may name a
	// reused slot.
	extra   map[store.ID]*store.Message
	buckets map[int64]*bucket
	order   *btree.BTreeG[int64] // keys of non-empty buckets
}

// slot holds one pending message (live) or nothing.
type slot struct {
	m    store.Message
	gen  uint32
	live bool
}

// bucket holds the IDs of messages due in [key*BucketWidth,
// (key+1)*BucketWidth); some may be stale (resolved or moved away), and a
// message that moved away and back is listed twice: readers check each
// entry against the message and skip repeats.
type bucket struct {
	ids  []store.ID
	live int
}

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
	if o.Now == nil {
		o.Now = time.Now
	}
	s := &Store{opts: o, keys: map[string]store.ID{}, dead: map[store.ID]*store.DeadLetter{}}
	if o.Capacity == 0 {
		o.Capacity = MaxCapacity
		s.opts.Capacity = MaxCapacity
	}
	for i := range o.Shards {
		s.shards = append(s.shards, &shard{
			n:       i,
			base:    rand.Uint64N(store.LocalMask + 1),
			buckets: map[int64]*bucket{},
			order:   btree.NewOrderedG[int64](32),
		})
	}
	return s, nil
}

// Shards returns the shard count.
func (s *Store) Shards() int { return len(s.shards) }

// Start attaches every shard to o.
func (s *Store) Start(_ context.Context, o store.Owner) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return store.ErrClosed
	}
	if s.owner != nil {
		s.mu.Unlock()
		return fmt.Errorf("memstore: Start called twice")
	}
	s.owner = o
	s.mu.Unlock()
	for i := range s.shards {
		o.Attach(i)
	}
	return nil
}

func (s *Store) lock() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return store.ErrClosed
	}
	return nil
}

func (s *Store) rlock() error {
	s.mu.RLock()
	if s.closed {
		s.mu.RUnlock()
		return store.ErrClosed
	}
	return nil
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
	if err := s.lock(); err != nil {
		return nil, err
	}
	defer s.mu.Unlock()
	if err := s.checkCapacity(msgs, nil); err != nil {
		return nil, err
	}
	out, fed := s.addNew(msgs)
	s.commit(len(msgs), fed)
	return out, nil
}

// checkCapacity refuses msgs (less the pending messages of free, which the
// same call removes) if a shard would exceed Capacity. Messages whose key
// is known count as taking nothing.
func (s *Store) checkCapacity(msgs []store.Message, free map[int]int) error {
	var add map[int]int
	seen := map[string]bool{}
	for i := range msgs {
		m := &msgs[i]
		if m.Key != "" {
			if _, ok := s.keys[m.Key]; ok || seen[m.Key] {
				continue
			}
			seen[m.Key] = true
		}
		if add == nil {
			add = map[int]int{}
		}
		add[m.Shard]++
	}
	for sh, n := range add {
		if have := s.shards[sh].live - free[sh]; have+n > s.opts.Capacity {
			return fmt.Errorf("%w: shard %d holds %d pending messages; %d more would pass its capacity %d", store.ErrFull, sh, have, n, s.opts.Capacity)
		}
	}
	return nil
}

// addNew assigns IDs and stores msgs (validated, within capacity); it
// returns the results and the messages to feed, by shard.
func (s *Store) addNew(msgs []store.Message) ([]store.Appended, map[int][]store.Message) {
	out := make([]store.Appended, len(msgs))
	var fed map[int][]store.Message
	for i := range msgs {
		m := msgs[i]
		if m.Key != "" {
			if id, ok := s.keys[m.Key]; ok {
				out[i] = store.Appended{ID: id, Existing: true}
				continue
			}
		}
		sh := s.shards[m.Shard]
		sh.add(&m)
		if m.Key != "" {
			s.keys[m.Key] = m.ID
		}
		out[i] = store.Appended{ID: m.ID}
		if fed == nil {
			fed = map[int][]store.Message{}
		}
		fed[m.Shard] = append(fed[m.Shard], m)
	}
	return out, fed
}

// commit counts a commit and feeds its new messages to the owner.
func (s *Store) commit(records int, fed map[int][]store.Message) {
	s.commits++
	s.records += uint64(records)
	if s.owner == nil {
		return
	}
	for sh, msgs := range fed {
		s.owner.Feed(sh, store.Change{Added: msgs})
	}
}

// add takes a new message into a free slot, naming it (m.ID is set).
func (sh *shard) add(m *store.Message) {
	var i int32
	if n := len(sh.free); n > 0 {
		i = sh.free[n-1]
		sh.free = sh.free[:n-1]
	} else {
		if int(sh.nslot)>>pageBits == len(sh.pages) {
			sh.pages = append(sh.pages, make([]slot, pageSize))
		}
		i = sh.nslot
		sh.nslot++
	}
	sl := sh.slot(i)
	for {
		m.ID = store.MakeID(sh.n, (sh.base+(uint64(sl.gen)<<slotBits|uint64(i)))&store.LocalMask)
		if m.ID.Local() != 0 {
			break
		}
		sl.gen++ // the one combination that would name ID 0
	}
	sl.m, sl.live = *m, true
	sh.live++
	sh.index(m)
}

// lookup returns the slot index of a pending message, or -1.
func (sh *shard) lookup(id store.ID) int32 {
	x := (id.Local() - sh.base) & store.LocalMask
	i, gen := int64(x&slotMask), uint32(x>>slotBits)
	if i >= int64(sh.nslot) {
		return -1
	}
	if sl := sh.slot(int32(i)); !sl.live || sl.gen != gen {
		return -1
	}
	return int32(i)
}

const (
	pageBits = 12
	pageSize = 1 << pageBits
)

func (sh *shard) slot(i int32) *slot { return &sh.pages[i>>pageBits][i&(pageSize-1)] }

// index lists m in its due bucket.
func (sh *shard) index(m *store.Message) {
	k := m.Due / BucketWidth
	b := sh.buckets[k]
	if b == nil {
		b = &bucket{}
		sh.buckets[k] = b
		sh.order.ReplaceOrInsert(k)
	}
	b.ids = append(b.ids, m.ID)
	b.live++
}

// unindex takes m out of its due bucket's count (its entry goes stale).
func (sh *shard) unindex(m *store.Message) {
	k := m.Due / BucketWidth
	b := sh.buckets[k]
	b.live--
	switch {
	case b.live == 0:
		delete(sh.buckets, k)
		sh.order.Delete(k)
	case len(b.ids) > 64 && b.live < len(b.ids)/4:
		// Mostly stale: keep the live ones only, once each.
		keep := b.ids[:0]
		seen := make(map[store.ID]bool, b.live)
		for _, x := range b.ids {
			if p := sh.get(x); p != nil && p.Due/BucketWidth == k && !seen[x] {
				seen[x] = true
				keep = append(keep, x)
			}
		}
		clear(b.ids[len(keep):])
		b.ids = keep
	}
}

// get returns a pending message, or nil.
func (sh *shard) get(id store.ID) *store.Message {
	if i := sh.lookup(id); i >= 0 {
		return &sh.slot(i).m
	}
	if len(sh.extra) > 0 {
		return sh.extra[id]
	}
	return nil
}

// take removes a pending message and returns it.
func (sh *shard) take(id store.ID) store.Message {
	i := sh.lookup(id)
	if i < 0 {
		m := sh.extra[id]
		delete(sh.extra, id)
		sh.unindex(m)
		sh.live--
		return *m
	}
	sl := sh.slot(i)
	m := sl.m
	sh.unindex(&m)
	sl.m, sl.live = store.Message{}, false
	sl.gen++ // its IDs name nothing from now on
	sh.live--
	sh.free = append(sh.free, i)
	return m
}

// move changes a pending message's due time and attempt in place.
func (sh *shard) move(id store.ID, due int64, attempt uint32) {
	m := sh.get(id)
	if due/BucketWidth == m.Due/BucketWidth {
		m.Due, m.Attempt = due, attempt // its bucket entry still holds
		return
	}
	sh.unindex(m)
	m.Due, m.Attempt = due, attempt
	sh.index(m)
}

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
	if err := s.lock(); err != nil {
		return nil, err
	}
	defer s.mu.Unlock()
	// Check everything before changing anything.
	seen := make(map[store.ID]bool, b.Ops())
	var missing []store.ID
	free := map[int]int{}
	check := func(id store.ID, frees bool) error {
		if seen[id] {
			return store.Invalidf("resolve: id %s appears more than once in the batch", id)
		}
		seen[id] = true
		if s.pendingOf(id) == nil {
			missing = append(missing, id)
		} else if frees {
			free[id.Shard()]++
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
		return nil, &store.NotPendingError{IDs: missing}
	}
	if err := s.checkCapacity(b.New, free); err != nil {
		return nil, err
	}
	for _, d := range b.Done {
		m := s.shards[d.ID.Shard()].take(d.ID)
		s.forgetKey(m.Key, d.ID)
		s.done[d.Reason]++
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
	out, fed := s.addNew(b.New)
	s.commit(b.Ops()+len(b.New), fed)
	return out, nil
}

func (s *Store) forgetKey(key string, id store.ID) {
	if key != "" && s.keys[key] == id {
		delete(s.keys, key)
	}
}

// addDead keeps d and drops what MaxDead and DeadRetention push out.
func (s *Store) addDead(d *store.DeadLetter) {
	s.dead[d.Message.ID] = d
	s.deadOrder = append(s.deadOrder, d.Message.ID)
	s.trimDead(d.DeadAt)
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
	if err := s.rlock(); err != nil {
		return nil, store.Page{}, err
	}
	defer s.mu.RUnlock()
	page := store.Page{Next: q.After}
	from := max(q.From, q.After.Due)
	if from >= q.To {
		page.Done = true
		return nil, page, nil
	}
	sh := s.shards[q.Shard]
	var out []store.Message
	var cands []*store.Message
	full := false
	sh.order.AscendGreaterOrEqual(from/BucketWidth, func(k int64) bool {
		if k*BucketWidth >= q.To || (k > 0 && k*BucketWidth < 0) {
			return false
		}
		cands = cands[:0]
		for _, id := range sh.buckets[k].ids {
			m := sh.get(id)
			if m == nil || m.Due/BucketWidth != k || m.Due < q.From || m.Due >= q.To {
				continue // stale, or outside the range
			}
			if !q.After.Less(store.PositionOf(m)) {
				continue
			}
			cands = append(cands, m)
		}
		slices.SortFunc(cands, func(a, b *store.Message) int {
			if store.PositionOf(a).Less(store.PositionOf(b)) {
				return -1
			}
			return 1
		})
		for j, m := range cands {
			if j > 0 && cands[j-1].ID == m.ID {
				continue // listed twice in the bucket
			}
			if len(out) == limit {
				full = true
				return false
			}
			out = append(out, *m)
		}
		return true
	})
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
	if err := s.rlock(); err != nil {
		return store.Message{}, err
	}
	defer s.mu.RUnlock()
	if m := s.pendingOf(id); m != nil {
		return *m, nil
	}
	return store.Message{}, fmt.Errorf("memstore: get %s: %w", id, store.ErrNotFound)
}

// Lookup implements store.Store.
func (s *Store) Lookup(ctx context.Context, key string) (store.ID, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	if err := s.rlock(); err != nil {
		return 0, err
	}
	defer s.mu.RUnlock()
	if id, ok := s.keys[key]; ok && key != "" {
		return id, nil
	}
	return 0, fmt.Errorf("memstore: key %.64q: %w", key, store.ErrNotFound)
}

// GetDead implements store.Store.
func (s *Store) GetDead(ctx context.Context, id store.ID) (store.DeadLetter, error) {
	if err := ctx.Err(); err != nil {
		return store.DeadLetter{}, err
	}
	if err := s.rlock(); err != nil {
		return store.DeadLetter{}, err
	}
	defer s.mu.RUnlock()
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
	if err := s.rlock(); err != nil {
		return nil, 0, err
	}
	defer s.mu.RUnlock()
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
// twice.
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
	if err := s.lock(); err != nil {
		return err
	}
	defer s.mu.Unlock()
	if err := s.deadOf("replay", ids); err != nil {
		return err
	}
	add := map[int]int{}
	for _, id := range ids {
		add[id.Shard()]++
	}
	for sh, n := range add {
		if c := s.opts.Capacity; s.shards[sh].live+n > c {
			return fmt.Errorf("%w: shard %d cannot take %d replayed messages (capacity %d)", store.ErrFull, sh, n, c)
		}
	}
	fed := map[int][]store.Message{}
	for _, id := range ids {
		m := s.dead[id].Message
		delete(s.dead, id)
		m.Due, m.Attempt = due, 0
		sh := s.shards[id.Shard()]
		if sh.extra == nil {
			sh.extra = map[store.ID]*store.Message{}
		}
		p := new(store.Message)
		*p = m
		sh.extra[id] = p
		sh.live++
		sh.index(p)
		fed[id.Shard()] = append(fed[id.Shard()], m)
	}
	s.commit(len(ids), fed)
	return nil
}

// PurgeDead implements store.Store.
func (s *Store) PurgeDead(ctx context.Context, ids []store.ID) (int, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	if err := s.lock(); err != nil {
		return 0, err
	}
	defer s.mu.Unlock()
	if err := s.deadOf("purge", ids); err != nil {
		return 0, err
	}
	for _, id := range ids {
		s.forgetKey(s.dead[id].Message.Key, id)
		delete(s.dead, id)
	}
	s.commit(len(ids), nil)
	return len(ids), nil
}

// PurgeAllDead implements store.Store.
func (s *Store) PurgeAllDead(ctx context.Context) (int, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	if err := s.lock(); err != nil {
		return 0, err
	}
	defer s.mu.Unlock()
	n := len(s.dead)
	for id, d := range s.dead {
		s.forgetKey(d.Message.Key, id)
	}
	clear(s.dead)
	s.deadOrder, s.deadHead = nil, 0
	s.commit(n, nil)
	return n, nil
}

// Err implements store.Store: a memory store never fails.
func (s *Store) Err() error { return nil }

// Stats implements store.Store.
func (s *Store) Stats() store.Stats {
	s.mu.RLock()
	defer s.mu.RUnlock()
	st := store.Stats{Kind: "memory", Pending: make([]int64, len(s.shards)), Dead: int64(len(s.dead)),
		Commits: s.commits, Records: s.records, DoneByReason: map[string]uint64{}}
	for i, sh := range s.shards {
		st.Pending[i] = int64(sh.live)
		st.PendingTotal += st.Pending[i]
	}
	for r := store.Reason(0); r < store.NumReasons; r++ {
		st.DoneByReason[r.String()] = s.done[r]
	}
	return st
}

// Close drops everything; later calls fail with store.ErrClosed.
func (s *Store) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return store.ErrClosed
	}
	s.closed = true
	s.owner = nil
	for _, sh := range s.shards {
		sh.pages, sh.free, sh.buckets, sh.order = nil, nil, nil, nil
	}
	s.keys, s.dead, s.deadOrder = nil, nil, nil
	return nil
}
