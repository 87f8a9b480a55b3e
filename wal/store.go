package wal

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/hourglassmq/hourglass/store"
)

// PebbleFormat is the Pebble format major version the store is created with
// and pinned to (never "newest"): it has WAL sync chunks, which tell a torn
// tail from corruption, DeleteSized support, and value separation (blob
// files; see valueSeparation).
const PebbleFormat = pebble.FormatValueSeparation

// olderPebbleFormat is the format builds before value separation pinned.
// Open accepts a store in it and, after validating it read-only, has Pebble
// ratchet it to PebbleFormat: a marker-file change, no rewrite of data. An
// older build then refuses the store, naming both formats.
const olderPebbleFormat = pebble.FormatWALSyncChunks

// Store is the durable message store. All methods are safe for concurrent
// use. Writes go through one writer goroutine that group-commits callers'
// requests; reads go straight to Pebble snapshots.
type Store struct {
	opts   Options
	fs     vfs.FS // opts.FS as Pebble sees it (guardFS)
	db     *pebble.DB
	lock   *pebble.Lock // the directory lock, held from Open to Close
	shards int
	log    *slog.Logger

	// mu guards closed. Every call holds it shared for its whole duration so
	// Close (exclusive) waits for calls in flight before closing Pebble.
	mu     sync.RWMutex
	closed bool

	failed   atomic.Pointer[error]    // sticky failure, wraps ErrFailed
	failedCh chan struct{}            // closed when failed is set
	owner    atomic.Pointer[ownerRef] // set by Start; fed by the committer
	recovery Recovery
	// The background verification (verify.go): verified is closed when it
	// ends; verifyCancel, set before Open returns, cancels it (nil: none).
	verified     chan struct{}
	verifyCancel context.CancelFunc

	// metaVersion is the format version the meta record held at Open; an
	// older one is migrated before the writer starts (see migrate).
	metaVersion int

	// Set by Open's goroutine only: Pebble opened the directory read-write
	// (so it may have written), and Open left a Pebble open to finish in
	// the background (which then releases the lock).
	wrote, abandoned bool

	// openMu orders markOpened against fail: a failure before Open returns
	// fails Open; one after it releases the store (see fail).
	openMu sync.Mutex
	opened bool
	// released is closed once a failed or closed store has let go of Pebble
	// and the directory lock; releaseOnce starts that.
	released    chan struct{}
	releaseOnce sync.Once
	releaseErr  error // set before released is closed

	stall    atomic.Pointer[string] // Pebble's write-stall reason while writes are stalled
	retrying atomic.Bool            // the failure came from Pebble's background work, which it retries

	// backoff of a failed store's background Pebble retries (guardFS).
	backoffMu   sync.Mutex
	backoffNext time.Duration
	kick        chan struct{} // closed by a later Open waiting for this store's release

	// watermark[shard] is the lowest block sequence that may hold a pending
	// message; block iterators start there. Written by the committer after a
	// commit, read by Scan.
	watermark [store.MaxShards]atomic.Uint64

	w *writer

	statsMu sync.Mutex // guards the fields below
	pending []int64
	dead    int64
	blocks  int
	batches uint64
	records uint64
	done    [store.NumReasons]uint64
	syncLat histogram
}

// newStore returns a store with its options and channels set up, before
// anything is opened.
func newStore(opts Options) *Store {
	s := &Store{
		opts:     opts,
		log:      opts.Logger.With("component", "wal", "dir", opts.Dir),
		failedCh: make(chan struct{}),
		released: make(chan struct{}),
		verified: make(chan struct{}),
		kick:     make(chan struct{}),
	}
	s.fs = guardFS{FS: opts.FS, s: s}
	return s
}

// loadMeta reads the meta record and returns the last sequence. When the
// store has no meta record and no other key, found is false; with create it
// then writes the meta record of a new store. A store with keys but no meta
// record is not ours (or lost its meta record) and is refused.
func (s *Store) loadMeta(create bool) (lastSeq uint64, found bool, err error) {
	dir := s.opts.Dir
	val, closer, err := s.db.Get(keyMeta)
	if errors.Is(err, pebble.ErrNotFound) {
		it, err := s.db.NewIter(nil)
		if err != nil {
			return 0, false, openError(s.opts.FS, dir, "read", err)
		}
		nonEmpty := it.First()
		if err := errors.Join(it.Error(), it.Close()); err != nil {
			return 0, false, openError(s.opts.FS, dir, "read", err)
		}
		if nonEmpty {
			return 0, false, &DamageError{Dir: dir, Reason: "the Pebble store has data but no meta record: it is not an Hourglass store, or its meta record was lost",
				Advice: "give Options.Dir the directory of an Hourglass store, or an empty one"}
		}
		if s.opts.Shards == 0 {
			s.opts.Shards = s.opts.defaultShards
		}
		if s.opts.Shards == 0 {
			return 0, false, invalidf("open %s: new store needs Options.Shards (1..%d)", dir, store.MaxShards)
		}
		if !create {
			return 0, false, nil
		}
		b := s.db.NewBatch()
		_ = b.Set(keyMeta, encodeMeta(s.opts.Shards), nil)
		// A new store starts its sequence at a random point of the first
		// 1/16 of its range, so two stores (almost surely) assign different
		// IDs and an ID from one names nothing in the other.
		first := 1<<16 + rand.Uint64N(firstSeqSpan)
		_ = b.Set(keySeq, binary.BigEndian.AppendUint64(nil, first), nil)
		if err := b.Commit(pebble.Sync); err != nil {
			return 0, false, openError(s.opts.FS, dir, "write meta", err)
		}
		_ = b.Close()
		if err := s.Err(); err != nil {
			return 0, false, fmt.Errorf("wal: open %s: write meta: %w", dir, err)
		}
		s.shards = s.opts.Shards
		s.metaVersion = FormatVersion
		s.recovery.Created = true
		return first, true, nil
	}
	if err != nil {
		return 0, false, openError(s.opts.FS, dir, "read meta", err)
	}
	version, shards, derr := decodeMeta(val)
	_ = closer.Close()
	if derr != nil {
		return 0, false, fmt.Errorf("wal: open %s: %w", dir, derr)
	}
	if version < oldestFormatVersion || version > FormatVersion {
		return 0, false, fmt.Errorf("%w: store %s has format version %d; this build reads versions %d to %d", ErrUnsupportedVersion, dir, version, oldestFormatVersion, FormatVersion)
	}
	s.metaVersion = version
	if s.opts.Shards != 0 && s.opts.Shards != shards {
		return 0, false, invalidf("open %s: Options.Shards = %d but the store was created with %d shards (use 0 or %d)", dir, s.opts.Shards, shards, shards)
	}
	s.shards = shards
	seq, err := readSeq(s.db)
	if err != nil {
		return 0, false, openError(s.opts.FS, dir, "read sequence", err)
	}
	return seq, true, nil
}

// recover rebuilds the writer's in-memory block table and the counters, and
// returns the number of time-keyspace messages per shard. After a clean
// close (rec not nil) it takes that count and the dead letters' from the
// clean-close record instead of counting their keys (one each: ten million
// keys take a second), and the background verification counts them
// (verify.go).
func (s *Store) recover(ctx context.Context, lastSeq uint64, rec *cleanRecord) (timed []int64, err error) {
	w := newWriter(s, lastSeq)
	s.w = w
	s.pending = make([]int64, s.shards)
	wrap := func(what string, err error) error {
		return openError(s.opts.FS, s.opts.Dir, "recover "+what, err)
	}
	// Block summaries.
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: []byte{tagBlock}, UpperBound: []byte{tagBlock + 1}})
	if err != nil {
		return nil, wrap("blocks", err)
	}
	n := 0
	// Each summary sorts just before its block; the walk seeks past the
	// block, so recovery reads no message.
	for ok := it.First(); ok; {
		if n++; n%4096 == 0 {
			if err := ctx.Err(); err != nil {
				_ = it.Close()
				return nil, wrap("blocks", err)
			}
		}
		k := it.Key()
		if len(k) != 11 {
			_ = it.Close()
			return nil, wrap("blocks", &CorruptionError{What: "block key", Reason: fmt.Sprintf("length %d", len(k))})
		}
		shard := int(k[1])
		seq := binary.BigEndian.Uint64(k[2:])
		if k[10] != kindSummary {
			ok = it.Next()
			continue
		}
		v, err := it.ValueAndErr()
		if err != nil {
			_ = it.Close()
			return nil, wrap("blocks", err)
		}
		sum, err := decodeSummary(v)
		if err == nil && (shard >= s.shards || seq > lastSeq || seq == 0) {
			err = &CorruptionError{What: "block key", Reason: fmt.Sprintf("shard %d seq %d out of range", shard, seq)}
		}
		if err != nil {
			_ = it.Close()
			return nil, wrap("blocks", err)
		}
		if sum.live > 0 {
			w.addBlock(shard, seq, &sum)
		}
		ok = it.SeekGE(blockKey(shard, seq+1, kindSummary))
	}
	if err := errors.Join(it.Error(), it.Close()); err != nil {
		return nil, wrap("blocks", err)
	}
	// The resolve log amends the summaries; then the blocks are counted.
	if err := w.replayClears(s.db, s.shards, lastSeq); err != nil {
		return nil, wrap("resolve log", err)
	}
	for ref, sum := range w.blocks {
		s.pending[store.ID(ref<<slotBits).Shard()] += int64(sum.live)
		s.recovery.Blocks++
		s.recovery.BlockPending += int64(sum.live)
	}
	s.blocks = s.recovery.Blocks
	if rec != nil {
		if timed, err = rec.timedCounts(s.opts.Dir, lastSeq, s.pending, int64(s.blocks)); err != nil {
			return nil, err
		}
		s.recovery.DeadLetters = rec.dead
	} else {
		// Time-keyspace index: one key per message, counted per shard.
		if timed, err = countIndex(ctx, s.db, s.shards, lastSeq); err != nil {
			return nil, wrap("index", err)
		}
		if s.recovery.DeadLetters, err = countKeys(ctx, s.db, tagDead, nil); err != nil {
			return nil, wrap("dead letters", err)
		}
	}
	for shard, k := range timed {
		s.pending[shard] += k
		s.recovery.TimedPending += k
	}
	s.dead = s.recovery.DeadLetters
	for shard := 0; shard < s.shards; shard++ {
		s.watermark[shard].Store(w.watermark(shard))
		// Blocks below the watermark were deleted already; the next range
		// deletion starts there.
		w.deletedTo[shard] = w.watermark(shard)
	}
	return timed, nil
}

// countIndex counts the time-keyspace index of r per shard: one key per
// message whose ID must name a shard and a sequence of the store.
func countIndex(ctx context.Context, r pebble.Reader, shards int, lastSeq uint64) ([]int64, error) {
	timed := make([]int64, shards)
	_, err := countKeys(ctx, r, tagIndex, func(k []byte) error {
		if len(k) != 9 {
			return &CorruptionError{What: "index key", Reason: fmt.Sprintf("length %d", len(k))}
		}
		id := store.ID(binary.BigEndian.Uint64(k[1:]))
		if id.Shard() >= shards || idSeq(id) > lastSeq {
			return &CorruptionError{What: "index key", Reason: fmt.Sprintf("id %s out of range", id)}
		}
		timed[id.Shard()]++
		return nil
	})
	return timed, err
}

// countKeys counts the keys of r that start with tag, calling f (if not
// nil) on each.
func countKeys(ctx context.Context, r pebble.Reader, tag byte, f func(k []byte) error) (int64, error) {
	it, err := r.NewIter(&pebble.IterOptions{LowerBound: []byte{tag}, UpperBound: []byte{tag + 1}})
	if err != nil {
		return 0, err
	}
	var n int64
	for ok := it.First(); ok; ok = it.Next() {
		if n++; n%4096 == 0 {
			if err := ctx.Err(); err != nil {
				_ = it.Close()
				return 0, err
			}
		}
		if f == nil {
			continue
		}
		if err := f(it.Key()); err != nil {
			_ = it.Close()
			return 0, err
		}
	}
	return n, errors.Join(it.Error(), it.Close())
}

// Recovery reports what Open found and how long it took.
func (s *Store) Recovery() Recovery { return s.recovery }

// Shards returns the store's shard count.
func (s *Store) Shards() int { return s.shards }

// Stats returns a snapshot of the counters.
func (s *Store) Stats() store.Stats {
	var disk uint64
	if s.enter() == nil {
		disk = s.db.Metrics().DiskSpaceUsage()
		s.leave()
	}
	s.statsMu.Lock()
	defer s.statsMu.Unlock()
	st := store.Stats{
		Kind:         "pebble",
		Pending:      append([]int64(nil), s.pending...),
		Dead:         s.dead,
		DiskBytes:    disk,
		Commits:      s.batches,
		Records:      s.records,
		DoneByReason: make(map[string]uint64, store.NumReasons),
		Sync:         s.syncLat.summary(),
	}
	for _, p := range st.Pending {
		st.PendingTotal += p
	}
	for r := store.Reason(0); r < store.NumReasons; r++ {
		st.DoneByReason[r.String()] = s.done[r]
	}
	return st
}

// blockCount returns the number of packed blocks with a pending slot.
func (s *Store) blockCount() int {
	s.statsMu.Lock()
	defer s.statsMu.Unlock()
	return s.blocks
}

// firstSeqSpan bounds a new store's random first sequence (1/16 of the
// 40-bit sequence space).
const firstSeqSpan = 1 << (seqBits - 4)

type ownerRef struct{ o store.Owner }

// Start attaches every shard to o and from then on feeds it the messages
// each commit makes pending (store.Store).
func (s *Store) Start(_ context.Context, o store.Owner) error {
	if err := s.enter(); err != nil {
		return err
	}
	defer s.leave()
	if !s.owner.CompareAndSwap(nil, &ownerRef{o}) {
		return fmt.Errorf("wal: Start called twice")
	}
	for i := 0; i < s.shards; i++ {
		o.Attach(i)
	}
	return nil
}

// OpenStore implements store.Opener: fields left zero take the engine's
// values (a new store takes the engine's shard count, or GOMAXPROCS).
func (o Options) OpenStore(ctx context.Context, env store.Env) (store.Store, error) {
	if o.Shards == 0 {
		o.Shards = env.Shards
	}
	o.defaultShards = min(runtime.GOMAXPROCS(0), store.MaxShards)
	if o.Horizon == 0 && env.Window > 0 {
		o.Horizon = env.Window
	}
	if o.MaxPayload == 0 {
		o.MaxPayload = env.MaxPayload
	}
	if o.Logger == nil {
		o.Logger = env.Logger
	}
	if o.Now == nil {
		o.Now = env.Now
	}
	o.events = env.Events
	return Open(ctx, o)
}

// Lookup returns the ID an idempotency key names (store.Store).
func (s *Store) Lookup(ctx context.Context, key string) (_ store.ID, err error) {
	if err := s.enter(); err != nil {
		return 0, err
	}
	defer s.leave()
	defer func() { err = s.damaged(err) }()
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	if err := s.Err(); err != nil {
		return 0, err
	}
	id, found, err := readRecord(s.db, idemKey(key), decodeKeyIndex)
	switch {
	case err != nil:
		return 0, fmt.Errorf("wal: key %.64q: %w", key, err)
	case !found || key == "":
		return 0, fmt.Errorf("wal: key %.64q: %w", key, store.ErrNotFound)
	}
	return id, nil
}
