package cluster

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/hourglassmq/hourglass/store"
)

// Ownership. The consumer group (cooperative-sticky) assigns partitions;
// this node then owns each in terms: a term starts when it takes a
// partition over and ends when it hands it over (revoked, or Close) or
// loses it (fenced, or the group says so).
//
// Taking over partition p:
//  1. open p's transactional producer, whose transactional ID is the
//     partition's: Kafka bumps its epoch, which fences the previous owner's
//     producer and aborts its open transaction (a zombie can write nothing
//     more to p, nor to anything else through that producer);
//     Its first transaction is an aborted one (warmUp), so the owner
//     record is not lost to franz-go's first-transaction bookkeeping;
//  2. if the previous owner did not hand p over cleanly, fence its append
//     producer too, so a transaction it left open stops holding readers
//     back now rather than at its timeout;
//  3. write an owner record to p in a transaction and wait until this
//     node applied it: everything written to p before is applied (the
//     catch-up to the end seen at assignment);
//  4. attach p (the engine scans it) and start answering p's requests.
//
// Handing over: stop taking requests, Detach (the engine stops firing,
// finishes its deliveries in flight and writes their outcomes through the
// still-open writer), drain the writer, write an owner record marked
// released, close the producer. Losing is the same without the drain's
// writes: the producer is fenced already, or about to be.

// ownership is one term of one partition on this node.
type ownership struct {
	s      *Store
	p      *part
	termAt int64
	seated atomic.Bool // this term's owner record was applied

	ctx    context.Context // the term; ends when it is over
	cancel context.CancelFunc
	prod   *kgo.Client
	ready  chan struct{} // closed once attached
	failed chan struct{} // closed if the take-over failed
	// retried is closed after a failed take-over once it is known
	// whether a new term follows: next, or nil (the partition is not
	// assigned here any more, or the store is closing).
	retried chan struct{}
	next    *ownership
	wg      sync.WaitGroup

	mu        sync.Mutex // guards the writer's queue
	accepting bool
	lost      bool // ops still queued fail with errMoved
	queue     []*op
	wake      chan struct{}
	writerOut chan struct{} // closed when the writer exits

	reqMu   sync.Mutex
	reqQ    [][]byte
	reqWake chan struct{}
	reqCtx  context.Context
	reqStop context.CancelFunc
	reqDone chan struct{}

	stageMu sync.Mutex
	staged  map[store.ID]*kgo.Record
}

// errMoved: this node does not own the partition (any more); the caller
// carries its call to the owner instead.
var errMoved = errors.New("cluster: partition not owned here")

// txnID is partition p's transactional ID: one producer per partition, so a
// new owner fences the old one.
func (s *Store) txnID(p int) string { return fmt.Sprintf("%s/p%d", s.cfg.Topic, p) }

// appendTxnID is this node's transactional ID for appends.
func (s *Store) appendTxnID() string { return s.cfg.Topic + "/append/" + s.node }

func (s *Store) onAssigned(_ context.Context, _ *kgo.Client, m map[string][]int32) {
	if s.closing.Load() {
		return
	}
	s.assignMu.Lock()
	for _, n := range m[s.cfg.Topic] {
		s.assigned[int(n)] = true
	}
	s.assignMu.Unlock()
	var owns []*ownership
	for _, n := range m[s.cfg.Topic] {
		if int(n) < s.nP {
			if o := s.takeOver(s.parts[n]); o != nil {
				owns = append(owns, o)
			}
		}
	}
	go func() {
		// Start returns once these are attached: a take-over that fails is
		// retried (restart), and its next term is waited for.
		for _, o := range owns {
			for o != nil {
				select {
				case <-o.ready:
					o = nil
				case <-o.retried:
					o = o.next
				case <-s.ctx.Done():
					return
				}
			}
		}
		s.startOnce.Do(func() { close(s.started) })
	}()
}

func (s *Store) onRevoked(_ context.Context, _ *kgo.Client, m map[string][]int32) {
	s.forEach(m, func(p *part) { s.handOver(p, true) })
}

func (s *Store) onLost(_ context.Context, _ *kgo.Client, m map[string][]int32) {
	s.forEach(m, func(p *part) { s.handOver(p, false) })
}

// forEach runs f for the partitions of m, all at once, unless closing.
func (s *Store) forEach(m map[string][]int32, f func(p *part)) {
	s.assignMu.Lock()
	for _, n := range m[s.cfg.Topic] {
		delete(s.assigned, int(n))
	}
	s.assignMu.Unlock()
	if s.closing.Load() {
		return
	}
	var wg sync.WaitGroup
	for _, n := range m[s.cfg.Topic] {
		if int(n) < s.nP {
			wg.Add(1)
			go func() {
				defer wg.Done()
				f(s.parts[n])
			}()
		}
	}
	wg.Wait()
}

// takeOver starts a term for p, unless one is running.
func (s *Store) takeOver(p *part) *ownership {
	p.tmu.Lock()
	defer p.tmu.Unlock()
	if o := p.own.Load(); o != nil || s.closing.Load() {
		return o
	}
	o := &ownership{
		s: s, p: p, ready: make(chan struct{}), failed: make(chan struct{}), retried: make(chan struct{}), accepting: true,
		wake: make(chan struct{}, 1), writerOut: make(chan struct{}),
		reqWake: make(chan struct{}, 1), reqDone: make(chan struct{}), staged: map[store.ID]*kgo.Record{},
	}
	o.ctx, o.cancel = context.WithCancel(s.ctx)
	o.reqCtx, o.reqStop = context.WithCancel(o.ctx)
	p.own.Store(o)
	o.wg.Add(1)
	s.loops.Add(1)
	go func() {
		defer s.loops.Done()
		defer o.wg.Done()
		o.run()
	}()
	return o
}

// run takes the partition over, then runs its writer until the term ends.
func (o *ownership) run() {
	defer close(o.writerOut)
	s, p := o.s, o.p
	if err := o.seat(); err != nil {
		if o.ctx.Err() == nil {
			s.log.Warn("cluster: take over partition failed; retrying", "partition", p.n, "err", err)
			go s.restart(p, o, time.Second)
		} else {
			close(o.retried)
		}
		close(o.failed)
		o.failAll(errMoved)
		close(o.reqDone)
		return
	}
	p.mu.Lock()
	p.attached = true
	s.owner.Attach(p.n)
	reqs, err := s.unanswered(p.n)
	if err != nil {
		s.fail(fmt.Errorf("read the requests of partition %d: %w", p.n, err))
	}
	o.queueRequests(reqs)
	p.mu.Unlock()
	close(o.ready)
	o.wg.Add(1)
	go func() {
		defer o.wg.Done()
		defer close(o.reqDone)
		o.serveRequests()
	}()
	o.write()
}

// seat fences the previous owner and catches up (steps 1–3 above).
func (o *ownership) seat() error {
	s, p := o.s, o.p
	ctx := o.ctx
	prod, err := kgo.NewClient(append(s.clientOpts(),
		kgo.TransactionalID(s.txnID(p.n)),
		kgo.TransactionTimeout(s.cfg.TxnTimeout),
		kgo.RequiredAcks(kgo.AllISRAcks()),
		kgo.ProducerLinger(0),
		kgo.RecordPartitioner(kgo.ManualPartitioner()))...)
	if err != nil {
		return fmt.Errorf("new producer: %w", err)
	}
	o.prod = prod
	if _, _, err := prod.ProducerID(ctx); err != nil {
		return fmt.Errorf("fence the previous owner (init producer %s): %w", s.txnID(p.n), err)
	}
	wctx, cancel := context.WithTimeout(ctx, s.cfg.TxnTimeout)
	err = warmUp(wctx, prod, s.cfg.Topic, int32(p.n))
	cancel()
	if err != nil {
		return fmt.Errorf("start the producer %s: %w", s.txnID(p.n), err)
	}
	p.mu.RLock()
	prev := p.meta.owner
	p.mu.RUnlock()
	if prev.node != "" && prev.node != s.node && !prev.released && prev.appendTxn != "" {
		if err := s.fenceTxn(ctx, prev.appendTxn); err != nil {
			s.log.Warn("cluster: fence the previous owner's appends", "partition", p.n, "txn", prev.appendTxn, "err", err)
		}
	}
	o.termAt = max(s.env.Now().UnixNano(), prev.at+1)
	rec := &kgo.Record{Topic: s.cfg.Topic, Partition: int32(p.n), Key: []byte{keyOwner},
		Value: encodeOwner(&ownerValue{node: s.node, appendTxn: s.appendTxnID(), at: o.termAt})}
	if err := o.txn(ctx, []*kgo.Record{rec}, nil); err != nil {
		return fmt.Errorf("write the owner record: %w", err)
	}
	// Bounded: a reader held back longer than any transaction may stay
	// open is stuck; the take-over starts again.
	wctx, cancel = context.WithTimeout(ctx, 2*s.cfg.TxnTimeout+s.cfg.SessionTimeout)
	defer cancel()
	return p.waitApplied(wctx, rec.Offset)
}

// fenceTxn bumps the epoch of transactional ID id, aborting its open
// transaction.
func (s *Store) fenceTxn(ctx context.Context, id string) error {
	cl, err := kgo.NewClient(append(s.clientOpts(), kgo.TransactionalID(id), kgo.TransactionTimeout(s.cfg.TxnTimeout))...)
	if err != nil {
		return err
	}
	defer cl.Close()
	_, _, err = cl.ProducerID(ctx)
	return err
}

// txn produces recs, then the records more returns (given the first
// records with their offsets), in one transaction.
func (o *ownership) txn(ctx context.Context, recs []*kgo.Record, more func() []*kgo.Record) error {
	cl := o.prod
	// Past TxnTimeout the broker aborts the transaction anyway.
	ctx, cancelTxn := context.WithTimeout(ctx, o.s.cfg.TxnTimeout)
	defer cancelTxn()
	start := time.Now()
	if err := cl.BeginTransaction(); err != nil {
		return err
	}
	n := len(recs)
	err := produce(ctx, cl, recs...)
	if err == nil && more != nil {
		if rest := more(); len(rest) > 0 {
			n += len(rest)
			err = produce(ctx, cl, rest...)
		}
	}
	if err == nil {
		err = cl.EndTransaction(ctx, kgo.TryCommit)
		if err == nil {
			o.s.statMu.Lock()
			o.s.commits++
			o.s.records += uint64(n)
			o.s.txnLat.record(time.Since(start))
			o.s.statMu.Unlock()
			return nil
		}
	}
	// Abort, so readers need not wait for the broker's timeout, unless the
	// records' fate is unknown or ctx (within TxnTimeout of the start)
	// ended: then the broker aborts it about now anyway. Every caller ends
	// the term after a failed transaction and closes the producer; the
	// next InitProducerID of the partition's transactional ID aborts
	// whatever is still open.
	if !errors.Is(err, errUnsure) && ctx.Err() == nil {
		if aerr := cl.AbortBufferedRecords(ctx); aerr == nil {
			_ = cl.EndTransaction(ctx, kgo.TryAbort)
		}
	}
	return err
}

// fenced reports whether err says another producer took the partition's
// transactional ID.
func fenced(err error) bool {
	return errors.Is(err, kerr.ProducerFenced) || errors.Is(err, kerr.InvalidProducerEpoch) ||
		errors.Is(err, kerr.TransactionalIDAuthorizationFailed)
}

// handOver ends p's term here: gracefully (revoked, closing: finish and
// write what is in flight) or not (lost).
func (s *Store) handOver(p *part, graceful bool) {
	p.tmu.Lock()
	defer p.tmu.Unlock()
	o := p.own.Load()
	if o == nil {
		return
	}
	o.end(graceful)
}

// lose ends term o of p if it is still current (fenced, or another owner
// seen in the log).
func (s *Store) lose(p *part, o *ownership) {
	p.tmu.Lock()
	defer p.tmu.Unlock()
	if p.own.Load() == o {
		o.end(false)
	}
}

// restart ends term o of p and, after wait, takes p over again if the
// group still gives it to this node: after a failed transaction, whose
// outcome may be unknown, the engine rescans p from the index.
func (s *Store) restart(p *part, o *ownership, wait time.Duration) {
	defer close(o.retried)
	s.lose(p, o)
	select {
	case <-time.After(wait):
	case <-s.ctx.Done():
		return
	}
	if s.closing.Load() || s.group == nil {
		return
	}
	s.assignMu.Lock()
	mine := s.assigned[p.n]
	s.assignMu.Unlock()
	if mine {
		o.next = s.takeOver(p)
	}
}

// end ends the term; p.tmu is held.
func (o *ownership) end(graceful bool) {
	s, p := o.s, o.p
	// The hand-over is bounded: past it, what is still being written is
	// abandoned (the next owner redoes it).
	bound := time.AfterFunc(2*s.cfg.DrainTimeout+s.cfg.TxnTimeout, o.cancel)
	defer bound.Stop()
	o.reqStop()
	attached := false
	select {
	case <-o.ready:
		attached = true
	case <-o.failed:
	default:
		o.cancel() // still taking over: stop it
		select {
		case <-o.ready:
			attached = true
		case <-o.failed:
		}
	}
	<-o.reqDone
	if attached {
		d := s.cfg.DrainTimeout
		if !graceful {
			d = min(d, time.Second)
		}
		ctx, cancel := context.WithTimeout(context.Background(), d)
		s.owner.Detach(ctx, p.n)
		cancel()
		p.mu.Lock()
		p.attached = false
		p.mu.Unlock()
	}
	o.mu.Lock()
	o.accepting = false
	o.lost = !graceful
	o.mu.Unlock()
	o.signal()
	<-o.writerOut
	if graceful && o.seated.Load() && o.prod != nil {
		rec := &kgo.Record{Topic: s.cfg.Topic, Partition: int32(p.n), Key: []byte{keyOwner},
			Value: encodeOwner(&ownerValue{node: s.node, appendTxn: s.appendTxnID(), at: o.termAt, released: true})}
		ctx, cancel := context.WithTimeout(o.ctx, s.cfg.DrainTimeout)
		if err := o.txn(ctx, []*kgo.Record{rec}, nil); err != nil {
			s.log.Warn("cluster: write the hand-over record", "partition", p.n, "err", err)
		}
		cancel()
	}
	o.cancel()
	if o.prod != nil {
		o.prod.Close()
	}
	o.wg.Wait()
	p.own.CompareAndSwap(o, nil)
}

// queueRequests hands request IDs to the request server (p.mu held).
func (o *ownership) queueRequests(ids [][]byte) {
	if len(ids) == 0 {
		return
	}
	o.reqMu.Lock()
	o.reqQ = append(o.reqQ, ids...)
	o.reqMu.Unlock()
	select {
	case o.reqWake <- struct{}{}:
	default:
	}
}

func (o *ownership) signal() {
	select {
	case o.wake <- struct{}{}:
	default:
	}
}

// submit queues op for the writer and waits for its result; errMoved if
// the term no longer takes work.
func (o *ownership) submit(ctx context.Context, op *op) (opResult, error) {
	op.done = make(chan struct{})
	o.mu.Lock()
	if !o.accepting {
		o.mu.Unlock()
		return opResult{}, errMoved
	}
	o.queue = append(o.queue, op)
	o.mu.Unlock()
	o.signal()
	select {
	case <-op.done:
		return op.res, op.res.err
	case <-ctx.Done():
		return opResult{}, ctx.Err()
	}
}

// failAll fails every queued op with err.
func (o *ownership) failAll(err error) {
	o.mu.Lock()
	q := o.queue
	o.queue = nil
	o.accepting = false
	o.mu.Unlock()
	for _, op := range q {
		op.finish(o.s, opResult{err: err})
	}
}

// stage keeps the record a kafka:// delivery of id produces, for the
// transaction that commits its outcome.
func (o *ownership) stage(id store.ID, r *kgo.Record) {
	o.stageMu.Lock()
	o.staged[id] = r
	o.stageMu.Unlock()
}

func (o *ownership) takeStaged(id store.ID) *kgo.Record {
	o.stageMu.Lock()
	defer o.stageMu.Unlock()
	r := o.staged[id]
	delete(o.staged, id)
	return r
}
