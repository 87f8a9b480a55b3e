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
	"github.com/hourglassmq/hourglass/store"
)

// PebbleFormat is the Pebble format major version the store is created with
// and pinned to (never "newest"): it has WAL sync chunks, which tell a torn
// tail from corruption, and DeleteSized support.
const PebbleFormat = pebble.FormatWALSyncChunks

// Store is the durable message store. All methods are safe for concurrent
// use. Writes go through one writer goroutine that group-commits callers'
// requests; reads go straight to Pebble snapshots.
type Store struct {
	opts   Options
	db     *pebble.DB
	shards int
	log    *slog.Logger

	// mu guards closed. Every call holds it shared for its whole duration so
	// Close (exclusive) waits for calls in flight before closing Pebble.
	mu     sync.RWMutex
	closed bool

	failed   atomic.Pointer[error]    // sticky failure, wraps ErrFailed
	owner    atomic.Pointer[ownerRef] // set by Start; fed by the committer
	recovery Recovery

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

// Open opens or creates the store in opts.Dir and recovers its state.
// Recovery reads only the per-block summaries and the time-keyspace index, not
// the messages; Recovery() reports what it found.
func Open(ctx context.Context, opts Options) (*Store, error) {
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	opts = opts.withDefaults()
	start := time.Now()
	s := &Store{opts: opts, log: opts.Logger.With("component", "wal", "dir", opts.Dir)}
	if err := opts.FS.MkdirAll(opts.Dir, 0o755); err != nil {
		return nil, fmt.Errorf("wal: open %s: create directory: %w", opts.Dir, err)
	}
	cache := pebble.NewCache(opts.CacheSize)
	defer cache.Unref()
	po := &pebble.Options{
		FS:                 opts.FS,
		Cache:              cache,
		MemTableSize:       opts.MemTableSize,
		FormatMajorVersion: PebbleFormat,
		Logger:             pebbleLogger{s},
	}
	po.Experimental.EnableColumnarBlocks = func() bool { return false }
	po.EnsureDefaults()
	db, err := pebble.Open(opts.Dir, po)
	if err != nil {
		return nil, fmt.Errorf("wal: open %s: %w", opts.Dir, err)
	}
	if fv := db.FormatMajorVersion(); fv != PebbleFormat {
		_ = db.Close()
		return nil, fmt.Errorf("%w: pebble format %d, this build pins %d", ErrUnsupportedVersion, fv, PebbleFormat)
	}
	s.db = db
	lastSeq, err := s.loadMeta()
	if err == nil {
		err = s.recover(ctx, lastSeq)
	}
	if err == nil {
		err = s.Err()
	}
	if err != nil {
		_ = db.Close()
		return nil, err
	}
	s.recovery.Duration = time.Since(start)
	s.w.start()
	s.log.Info("wal: opened", "shards", s.shards, "blocks", s.recovery.Blocks,
		"pending", s.recovery.BlockPending+s.recovery.TimedPending, "dead", s.recovery.DeadLetters,
		"took", s.recovery.Duration)
	return s, nil
}

// loadMeta reads or creates the meta record and returns the last sequence.
func (s *Store) loadMeta() (uint64, error) {
	val, closer, err := s.db.Get(keyMeta)
	if errors.Is(err, pebble.ErrNotFound) {
		if s.opts.Shards == 0 {
			s.opts.Shards = s.opts.defaultShards
		}
		if s.opts.Shards == 0 {
			return 0, invalidf("open %s: new store needs Options.Shards (1..%d)", s.opts.Dir, store.MaxShards)
		}
		// A store with keys but no meta record is not ours (or is damaged).
		it, err := s.db.NewIter(nil)
		if err != nil {
			return 0, fmt.Errorf("wal: open %s: %w", s.opts.Dir, err)
		}
		nonEmpty := it.First()
		if err := errors.Join(it.Error(), it.Close()); err != nil {
			return 0, fmt.Errorf("wal: open %s: read: %w", s.opts.Dir, err)
		}
		if nonEmpty {
			return 0, fmt.Errorf("wal: open %s: %w: store has data but no meta record", s.opts.Dir, ErrCorrupt)
		}
		b := s.db.NewBatch()
		_ = b.Set(keyMeta, encodeMeta(s.opts.Shards), nil)
		// A new store starts its sequence at a random point of the first
		// 1/16 of its range, so two stores (almost surely) assign different
		// IDs and an ID from one names nothing in the other.
		first := 1<<16 + rand.Uint64N(firstSeqSpan)
		_ = b.Set(keySeq, binary.BigEndian.AppendUint64(nil, first), nil)
		if err := b.Commit(pebble.Sync); err != nil {
			return 0, fmt.Errorf("wal: open %s: write meta: %w", s.opts.Dir, err)
		}
		_ = b.Close()
		s.shards = s.opts.Shards
		s.recovery.Created = true
		return first, nil
	}
	if err != nil {
		return 0, fmt.Errorf("wal: open %s: read meta: %w", s.opts.Dir, err)
	}
	version, shards, derr := decodeMeta(val)
	_ = closer.Close()
	if derr != nil {
		return 0, fmt.Errorf("wal: open %s: %w", s.opts.Dir, derr)
	}
	if version != FormatVersion {
		return 0, fmt.Errorf("%w: store %s has format version %d; this build reads version %d", ErrUnsupportedVersion, s.opts.Dir, version, FormatVersion)
	}
	if s.opts.Shards != 0 && s.opts.Shards != shards {
		return 0, invalidf("open %s: Options.Shards = %d but the store was created with %d shards (use 0 or %d)", s.opts.Dir, s.opts.Shards, shards, shards)
	}
	s.shards = shards
	val, closer, err = s.db.Get(keySeq)
	if err != nil {
		return 0, fmt.Errorf("wal: open %s: read sequence: %w", s.opts.Dir, err)
	}
	defer closer.Close()
	if len(val) != 8 {
		return 0, fmt.Errorf("wal: open %s: %w", s.opts.Dir, &CorruptionError{What: "sequence", Reason: "want 8 bytes"})
	}
	return binary.BigEndian.Uint64(val), nil
}

// recover rebuilds the writer's in-memory block table and the counters.
func (s *Store) recover(ctx context.Context, lastSeq uint64) error {
	w := newWriter(s, lastSeq)
	s.w = w
	s.pending = make([]int64, s.shards)
	wrap := func(what string, err error) error {
		return fmt.Errorf("wal: open %s: recover %s: %w", s.opts.Dir, what, err)
	}
	// Block summaries.
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: []byte{tagBlock}, UpperBound: []byte{tagBlock + 1}})
	if err != nil {
		return wrap("blocks", err)
	}
	n := 0
	for ok := it.First(); ok; ok = it.Next() {
		if n++; n%4096 == 0 {
			if err := ctx.Err(); err != nil {
				_ = it.Close()
				return wrap("blocks", err)
			}
		}
		k := it.Key()
		if len(k) != 11 {
			_ = it.Close()
			return wrap("blocks", &CorruptionError{What: "block key", Reason: fmt.Sprintf("length %d", len(k))})
		}
		if k[10] != kindSummary {
			continue
		}
		shard := int(k[1])
		seq := binary.BigEndian.Uint64(k[2:])
		v, err := it.ValueAndErr()
		if err != nil {
			_ = it.Close()
			return wrap("blocks", err)
		}
		sum, err := decodeSummary(v)
		if err == nil && (shard >= s.shards || seq > lastSeq || seq == 0) {
			err = &CorruptionError{What: "block key", Reason: fmt.Sprintf("shard %d seq %d out of range", shard, seq)}
		}
		if err != nil {
			_ = it.Close()
			return wrap("blocks", err)
		}
		if sum.live == 0 {
			continue
		}
		w.addBlock(shard, seq, &sum)
		s.pending[shard] += int64(sum.live)
		s.recovery.Blocks++
		s.recovery.BlockPending += int64(sum.live)
	}
	if err := errors.Join(it.Error(), it.Close()); err != nil {
		return wrap("blocks", err)
	}
	// Time-keyspace index: one key per message, counted per shard.
	counted, err := s.countKeys(ctx, tagIndex, func(k []byte) error {
		if len(k) != 9 {
			return &CorruptionError{What: "index key", Reason: fmt.Sprintf("length %d", len(k))}
		}
		id := store.ID(binary.BigEndian.Uint64(k[1:]))
		if id.Shard() >= s.shards || idSeq(id) > lastSeq {
			return &CorruptionError{What: "index key", Reason: fmt.Sprintf("id %s out of range", id)}
		}
		s.pending[id.Shard()]++
		return nil
	})
	if err != nil {
		return wrap("index", err)
	}
	s.recovery.TimedPending = counted
	s.recovery.DeadLetters, err = s.countKeys(ctx, tagDead, func([]byte) error { return nil })
	if err != nil {
		return wrap("dead letters", err)
	}
	s.dead = s.recovery.DeadLetters
	s.blocks = s.recovery.Blocks
	for shard := 0; shard < s.shards; shard++ {
		s.watermark[shard].Store(w.watermark(shard))
		// Blocks below the watermark were deleted already; the next range
		// deletion starts there.
		w.deletedTo[shard] = w.watermark(shard)
	}
	return nil
}

func (s *Store) countKeys(ctx context.Context, tag byte, f func(k []byte) error) (int64, error) {
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: []byte{tag}, UpperBound: []byte{tag + 1}})
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

// Err returns the sticky failure (wrapping ErrFailed), nil while healthy.
func (s *Store) Err() error {
	if p := s.failed.Load(); p != nil {
		return *p
	}
	return nil
}

// fail records the first failure; later ones are logged only.
func (s *Store) fail(cause error) {
	err := fmt.Errorf("%w: %w", ErrFailed, cause)
	if s.failed.CompareAndSwap(nil, &err) {
		s.log.Error("wal: store failed; refusing writes until reopened", "err", cause)
	}
}

// Close stops the writer after the calls in flight finish, then closes
// Pebble. Later calls return ErrClosed.
func (s *Store) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return ErrClosed
	}
	s.closed = true
	s.w.stop()
	if err := s.db.Close(); err != nil {
		return fmt.Errorf("wal: close %s: %w", s.opts.Dir, err)
	}
	return nil
}

// enter takes the shared close lock; it fails once the store is closed.
func (s *Store) enter() error {
	s.mu.RLock()
	if s.closed {
		s.mu.RUnlock()
		return ErrClosed
	}
	return nil
}

func (s *Store) leave() { s.mu.RUnlock() }

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

// pebbleLogger routes Pebble's log lines to slog and turns Fatalf, which
// Pebble calls on WAL write/sync errors instead of returning them from
// Commit, into the sticky failure rather than exiting the process.
type pebbleLogger struct{ s *Store }

func (l pebbleLogger) Infof(format string, args ...any) {
	l.s.log.Debug("pebble: " + fmt.Sprintf(format, args...))
}

func (l pebbleLogger) Errorf(format string, args ...any) {
	l.s.log.Warn("pebble: " + fmt.Sprintf(format, args...))
}

func (l pebbleLogger) Fatalf(format string, args ...any) {
	l.s.fail(fmt.Errorf("pebble fatal: %s", fmt.Sprintf(format, args...)))
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
func (s *Store) Lookup(ctx context.Context, key string) (store.ID, error) {
	if err := s.enter(); err != nil {
		return 0, err
	}
	defer s.leave()
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
