package cluster

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/hourglassmq/hourglass/store"
)

// Store is the cluster store: a store.Store whose truth is a compacted
// Kafka topic shared by every node of an application. See the package doc.
//
// Lock order: gate (read by every call) → multi → part.mu → own.mu →
// waitMu, ansMu and statMu, which are leaves.
type Store struct {
	cfg  Kafka
	env  store.Env
	log  *slog.Logger
	nP   int
	node string

	db    *pebble.DB
	parts []*part

	admin *kgo.Client // metadata, topic creation, fencing
	idem  *kgo.Client // idempotent producer: single appends and requests
	app   *appender   // transactional producer: appends of several messages
	cons  *kgo.Client // the applier's consumer, every partition, read committed
	group *kgo.Client // group membership only: fetching is paused

	owner     store.Owner
	started   chan struct{} // closed once the first assignment is attached
	startOnce sync.Once

	// multi is held (read) by every partition writer for the whole of a
	// batch, and (write) by a call whose outcomes span partitions, so that
	// call sees and changes them alone.
	multi sync.RWMutex

	ansMu   sync.Mutex
	waiting map[string]chan answer // by request ID

	gate    sync.RWMutex // held (read) by calls; Close takes it to close
	closed  bool
	failed  atomic.Pointer[error]
	ctx     context.Context // ends at Close
	cancel  context.CancelFunc
	loops   sync.WaitGroup // the applier and ownership goroutines
	closing atomic.Bool

	assignMu sync.Mutex
	assigned map[int]bool // partitions the group gives this node

	tpMu    sync.Mutex
	tpCount map[string]int // partitions of kafka:// topics

	statMu  sync.Mutex
	commits uint64
	records uint64
	done    [store.NumReasons]uint64
	txnLat  latencies
}

// part is one partition's state on this node.
type part struct {
	n int
	// mu is taken (write) to apply a batch of records and feed it, and
	// (read) by Scan and Get: a Scan never sees a record whose change is
	// not yet fed.
	mu       sync.RWMutex
	meta     meta // guarded by mu
	attached bool // guarded by mu: the engine owns the shard here
	applied  atomic.Int64
	pending  atomic.Int64
	dead     atomic.Int64

	waitMu sync.Mutex
	waitCh chan struct{}   // closed and replaced each time applied moves
	stop   <-chan struct{} // closed when the store closes

	// own is the current ownership term here, nil when another node owns
	// the partition.
	own atomic.Pointer[ownership]
	// tmu serialises ownership changes (take over, hand over, lose).
	tmu sync.Mutex
}

// waitApplied waits until the partition applied the record at offset off.
func (p *part) waitApplied(ctx context.Context, off int64) error {
	for {
		p.waitMu.Lock()
		if p.applied.Load() > off {
			p.waitMu.Unlock()
			return nil
		}
		ch := p.waitCh
		p.waitMu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return fmt.Errorf("cluster: waiting for partition %d to apply offset %d (applied up to %d): %w", p.n, off, p.applied.Load()-1, ctx.Err())
		case <-p.stop:
			return fmt.Errorf("cluster: waiting for partition %d to apply offset %d: %w", p.n, off, store.ErrClosed)
		}
	}
}

func (p *part) advance(next int64) {
	p.waitMu.Lock()
	p.applied.Store(next)
	close(p.waitCh)
	p.waitCh = make(chan struct{})
	p.waitMu.Unlock()
}

// open opens the index, checks or creates the topic, and starts applying.
func open(ctx context.Context, cfg Kafka, env store.Env) (_ *Store, err error) {
	s := &Store{cfg: cfg, env: env, node: cfg.NodeID, waiting: map[string]chan answer{}, started: make(chan struct{}), tpCount: map[string]int{}, assigned: map[int]bool{}}
	s.log = cfg.Logger.With("component", "cluster", "node", cfg.NodeID)
	if env.MaxPayload == 0 {
		s.env.MaxPayload = store.DefaultMaxPayload
	}
	if s.env.Now == nil {
		s.env.Now = time.Now
	}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	defer func() {
		if err != nil {
			s.shut()
		}
	}()
	s.admin, err = kgo.NewClient(s.clientOpts()...)
	if err != nil {
		return nil, fmt.Errorf("cluster: new client: %w", err)
	}
	if s.nP, err = s.ensureTopic(ctx); err != nil {
		return nil, err
	}
	if env.Shards != 0 && env.Shards != s.nP {
		return nil, store.Invalidf("cluster: topic %q has %d partitions but the engine asks for %d shards; a partition is a shard: set Shards to %d or 0", cfg.Topic, s.nP, env.Shards, s.nP)
	}
	if err := s.openIndex(); err != nil {
		return nil, err
	}
	s.idem, err = kgo.NewClient(append(s.clientOpts(), kgo.RequiredAcks(kgo.AllISRAcks()), kgo.ProducerLinger(0),
		kgo.RecordDeliveryTimeout(max(time.Second, cfg.RequestTimeout)), kgo.AllowIdempotentProduceCancellation(),
		kgo.RecordPartitioner(kgo.ManualPartitioner()))...)
	if err != nil {
		return nil, fmt.Errorf("cluster: new producer: %w", err)
	}
	s.app = newAppender(s)
	offsets := map[int32]kgo.Offset{}
	for _, p := range s.parts {
		offsets[int32(p.n)] = kgo.NewOffset().At(p.applied.Load())
	}
	s.cons, err = kgo.NewClient(append(s.clientOpts(),
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{cfg.Topic: offsets}),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.FetchMaxWait(time.Second))...)
	if err != nil {
		return nil, fmt.Errorf("cluster: new consumer: %w", err)
	}
	s.loops.Add(1)
	go s.applyLoop()
	if cfg.Sender != nil {
		cfg.Sender.st.Store(s)
	}
	s.log.Info("cluster: open", "options", cfg.String(), "partitions", s.nP)
	return s, nil
}

// clientOpts are the options every client starts from.
func (s *Store) clientOpts() []kgo.Opt {
	opts := []kgo.Opt{
		kgo.SeedBrokers(s.cfg.Brokers...),
		kgo.RetryBackoffFn(func(n int) time.Duration { return min(time.Duration(n)*50*time.Millisecond, time.Second) }),
		kgo.MetadataMinAge(250 * time.Millisecond),
	}
	return append(opts, s.cfg.ClientOptions...)
}

// ensureTopic returns the topic's partition count, creating it if missing.
func (s *Store) ensureTopic(ctx context.Context) (int, error) {
	adm := kadm.NewClient(s.admin)
	for attempt := 0; ; attempt++ {
		md, err := adm.Metadata(ctx, s.cfg.Topic)
		if err != nil {
			return 0, fmt.Errorf("cluster: read metadata of topic %q from %v: %w", s.cfg.Topic, s.cfg.Brokers, err)
		}
		td, ok := md.Topics[s.cfg.Topic]
		if ok && td.Err == nil && len(td.Partitions) > 0 {
			n := len(td.Partitions)
			if s.cfg.Partitions != 0 && n != s.cfg.Partitions {
				return 0, store.Invalidf("cluster: topic %q has %d partitions, not the %d configured; partitions are fixed at creation", s.cfg.Topic, n, s.cfg.Partitions)
			}
			if n > store.MaxShards {
				return 0, store.Invalidf("cluster: topic %q has %d partitions, more than %d shards an ID can name", s.cfg.Topic, n, store.MaxShards)
			}
			return n, nil
		}
		if ok && td.Err != nil && !errors.Is(td.Err, kerr.UnknownTopicOrPartition) && !errors.Is(td.Err, kerr.LeaderNotAvailable) {
			return 0, fmt.Errorf("cluster: topic %q: %w", s.cfg.Topic, td.Err)
		}
		if s.cfg.NoCreateTopic {
			return 0, fmt.Errorf("cluster: topic %q does not exist and NoCreateTopic is set: create it compacted with the partitions you want", s.cfg.Topic)
		}
		if attempt > 0 {
			if attempt > 50 {
				return 0, fmt.Errorf("cluster: topic %q was created but its metadata does not show it", s.cfg.Topic)
			}
			select {
			case <-time.After(100 * time.Millisecond):
			case <-ctx.Done():
				return 0, ctx.Err()
			}
			continue
		}
		n := s.cfg.Partitions
		if n == 0 {
			n = DefaultPartitions
		}
		cfgs := map[string]*string{"cleanup.policy": kadm.StringPtr("compact")}
		resp, err := adm.CreateTopic(ctx, int32(n), s.cfg.ReplicationFactor, cfgs, s.cfg.Topic)
		if err != nil && !errors.Is(err, kerr.TopicAlreadyExists) && !errors.Is(resp.Err, kerr.TopicAlreadyExists) {
			return 0, fmt.Errorf("cluster: create topic %q (%d partitions, compacted): %w", s.cfg.Topic, n, err)
		}
		if resp.Err != nil && !errors.Is(resp.Err, kerr.TopicAlreadyExists) {
			return 0, fmt.Errorf("cluster: create topic %q (%d partitions, compacted): %w", s.cfg.Topic, n, resp.Err)
		}
		s.log.Info("cluster: created topic", "topic", s.cfg.Topic, "partitions", n)
	}
}

// openIndex opens the Pebble index and reads every partition's meta. A
// partition whose index is older than DeleteRetention is dropped, to be
// rebuilt from the log (tombstones it never saw may be gone).
func (s *Store) openIndex() error {
	opts := &pebble.Options{Logger: pebbleLogger{s}}
	dir := s.cfg.Dir
	if dir == "" {
		opts.FS = vfs.NewMem()
		dir = "index"
	}
	opts.EnsureDefaults()
	db, err := pebble.Open(dir, opts)
	if err != nil {
		return fmt.Errorf("cluster: open index in %q: %w", s.cfg.Dir, err)
	}
	s.db = db
	now := s.env.Now().UnixNano()
	s.parts = make([]*part, s.nP)
	for i := range s.parts {
		p := &part{n: i, waitCh: make(chan struct{}), stop: s.ctx.Done()}
		s.parts[i] = p
		b, ok, err := get(db, ixMetaKey(i))
		if err != nil {
			return fmt.Errorf("cluster: read index of partition %d: %w", i, err)
		}
		if !ok {
			continue
		}
		m, err := decodeMeta(b)
		if err != nil {
			return fmt.Errorf("cluster: index in %q, partition %d: %w (remove the directory to rebuild it from the topic)", s.cfg.Dir, i, err)
		}
		if now-m.lastApply > int64(s.cfg.DeleteRetention) {
			s.log.Warn("cluster: index of partition is older than DeleteRetention; rebuilding it from the topic", "partition", i)
			if err := s.dropPartition(i); err != nil {
				return err
			}
			continue
		}
		p.meta = m
		p.applied.Store(m.next)
		p.pending.Store(m.pending)
		p.dead.Store(m.dead)
	}
	return nil
}

// dropPartition deletes everything the index holds for partition i.
func (s *Store) dropPartition(i int) error {
	b := s.db.NewBatch()
	for _, k := range []byte{ixMeta, ixMsg, ixDue, ixDead, ixKey, ixRequest} {
		pre := ixPrefix(k, i)
		if err := b.DeleteRange(pre, prefixEnd(pre), nil); err != nil {
			return err
		}
	}
	if err := b.Commit(pebble.NoSync); err != nil {
		return fmt.Errorf("cluster: drop index of partition %d: %w", i, err)
	}
	return nil
}

// pebbleLogger routes Pebble's logs to slog, and its Fatalf to the
// sticky failure instead of exiting the process.
type pebbleLogger struct{ s *Store }

func (l pebbleLogger) Infof(format string, args ...any) {
	l.s.log.Debug("pebble: " + fmt.Sprintf(format, args...))
}
func (l pebbleLogger) Errorf(format string, args ...any) {
	l.s.log.Warn("pebble: " + fmt.Sprintf(format, args...))
}
func (l pebbleLogger) Fatalf(format string, args ...any) {
	l.s.fail(fmt.Errorf("pebble: "+format, args...))
}

// fail makes err sticky.
func (s *Store) fail(err error) {
	werr := fmt.Errorf("%w: %w (close the store and open it again)", store.ErrFailed, err)
	if s.failed.CompareAndSwap(nil, &werr) {
		s.log.Error("cluster: store failed", "err", err)
		if f := s.env.Events.Failed; f != nil {
			f(werr)
		}
	}
}

// enter admits a call; leave ends it.
func (s *Store) enter() error {
	s.gate.RLock()
	if s.closed || s.closing.Load() {
		s.gate.RUnlock()
		return store.ErrClosed
	}
	if p := s.failed.Load(); p != nil {
		s.gate.RUnlock()
		return *p
	}
	return nil
}

func (s *Store) leave() { s.gate.RUnlock() }

// Shards implements store.Store.
func (s *Store) Shards() int { return s.nP }

// Err implements store.Store.
func (s *Store) Err() error {
	if p := s.failed.Load(); p != nil {
		return *p
	}
	return nil
}

// Start implements store.Store: the node joins the group and takes over
// the partitions it is assigned; Start returns once the first assignment
// is attached (or ctx ends).
func (s *Store) Start(ctx context.Context, o store.Owner) error {
	if err := s.enter(); err != nil {
		return err
	}
	defer s.leave()
	if s.owner != nil {
		return errors.New("cluster: Start called twice")
	}
	s.owner = o
	var err error
	s.group, err = kgo.NewClient(append(s.clientOpts(),
		kgo.ConsumerGroup(s.cfg.Group),
		kgo.ConsumeTopics(s.cfg.Topic),
		kgo.Balancers(kgo.CooperativeStickyBalancer()),
		kgo.SessionTimeout(s.cfg.SessionTimeout),
		kgo.HeartbeatInterval(s.cfg.HeartbeatInterval),
		kgo.RebalanceTimeout(s.cfg.RebalanceTimeout),
		kgo.DisableAutoCommit(),
		kgo.OnPartitionsAssigned(s.onAssigned),
		kgo.OnPartitionsRevoked(s.onRevoked),
		kgo.OnPartitionsLost(s.onLost),
	)...)
	if err != nil {
		return fmt.Errorf("cluster: join group %q: %w", s.cfg.Group, err)
	}
	// The group decides ownership only; the applier reads the records.
	s.group.PauseFetchTopics(s.cfg.Topic)
	select {
	case <-s.started:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("cluster: waiting for the group %q to assign partitions: %w", s.cfg.Group, ctx.Err())
	}
}

// Close implements store.Store: the node hands its partitions over (their
// deliveries in flight finish, within DrainTimeout), leaves the group and
// closes its clients and index.
//
// Close is bounded even when the brokers cannot be reached: the hand-overs
// (all partitions at once) take at most 2×DrainTimeout + TxnTimeout, leaving
// the group at most min(DrainTimeout, SessionTimeout) (past the session
// timeout the group has dropped this node anyway), and the calls still in
// flight end when the hand-overs are done. The engine calls Close only
// after its own calls in flight returned, each within RequestTimeout: so
// an engine's Close on a node cut off from the brokers takes at most
// RequestTimeout + 2×DrainTimeout + TxnTimeout + min(DrainTimeout,
// SessionTimeout).
func (s *Store) Close() error {
	if s.closing.Swap(true) {
		return store.ErrClosed
	}
	// Hand over what is owned, all partitions at once (each bounded), then
	// end every wait, so the calls still running return.
	var wg sync.WaitGroup
	for _, p := range s.parts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.handOver(p, true)
		}()
	}
	wg.Wait()
	s.cancel()
	s.gate.Lock()
	s.closed = true
	s.gate.Unlock()
	if s.group != nil {
		ctx, cancel := context.WithTimeout(context.Background(), min(s.cfg.DrainTimeout, s.cfg.SessionTimeout))
		if err := s.group.LeaveGroupContext(ctx); err != nil {
			s.log.Warn("cluster: leave group", "err", err)
		}
		cancel()
	}
	s.shut()
	return nil
}

// shut stops every goroutine and closes every client and the index.
func (s *Store) shut() {
	s.closing.Store(true)
	if s.cfg.Sender != nil {
		s.cfg.Sender.st.CompareAndSwap(s, nil)
	}
	s.cancel()
	if s.group != nil {
		s.group.Close()
	}
	if s.cons != nil {
		s.cons.Close() // ends the applier's poll
	}
	s.loops.Wait()
	if s.app != nil {
		s.app.close()
	}
	for _, c := range []*kgo.Client{s.idem, s.admin} {
		if c != nil {
			c.Close()
		}
	}
	if s.db != nil {
		if err := s.db.Close(); err != nil {
			s.log.Warn("cluster: close index", "err", err)
		}
		s.db = nil
	}
}
