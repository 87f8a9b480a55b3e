package cluster

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/hourglassmq/hourglass/store"
)

// appender writes appends of several messages, which may span partitions,
// in transactions of this node's append producer, so each call is all or
// nothing. Calls that arrive while a transaction is in flight share the
// next one (group commit). Its transactional ID is the node's: the next
// owner of a partition this node held fences it if this node vanished
// without handing over, so a transaction it left open stops holding
// readers back.
type appender struct {
	s       *Store
	mu      sync.Mutex
	cl      *kgo.Client
	queue   []*appendCall
	running bool
	closed  bool
	idle    sync.Cond
}

type appendCall struct {
	ctx     context.Context
	recs    []*kgo.Record
	err     error
	done    chan struct{}
	retried bool
}

// errAppendFenced: another client took this node's append transactional
// ID, which aborted the transaction: nothing of it is written. A partition's
// new owner does so when its index says this node last owned the partition
// and did not hand it over; a node that has just started may read an owner
// record older than the hand-over it has not applied yet, so a live node
// can be fenced. Its calls then run once more in a new transaction.
var errAppendFenced = errors.New("cluster: append producer fenced; nothing written")

func newAppender(s *Store) *appender {
	a := &appender{s: s}
	a.idle.L = &a.mu
	return a
}

// write makes recs durable in one transaction (maybe shared).
func (a *appender) write(ctx context.Context, recs []*kgo.Record) error {
	c := &appendCall{ctx: ctx, recs: recs, done: make(chan struct{})}
	a.mu.Lock()
	if a.closed {
		a.mu.Unlock()
		return fmt.Errorf("cluster: append: closed")
	}
	a.queue = append(a.queue, c)
	if !a.running {
		a.running = true
		a.s.loops.Add(1)
		go a.run()
	}
	a.mu.Unlock()
	select {
	case <-c.done:
		return c.err
	case <-a.s.ctx.Done():
		return fmt.Errorf("cluster: append: %w (the messages may still be written)", store.ErrClosed)
	case <-ctx.Done():
		return fmt.Errorf("cluster: append: %w (the messages may still be written)", ctx.Err())
	}
}

func (a *appender) run() {
	defer a.s.loops.Done()
	for {
		a.mu.Lock()
		q := a.queue
		a.queue = nil
		if len(q) == 0 {
			a.running = false
			a.idle.Broadcast()
			a.mu.Unlock()
			return
		}
		a.mu.Unlock()
		var recs []*kgo.Record
		var live []*appendCall
		for _, c := range q {
			if c.ctx.Err() != nil {
				c.err = c.ctx.Err()
				close(c.done)
				continue
			}
			live = append(live, c)
			recs = append(recs, c.recs...)
		}
		if len(live) == 0 {
			continue
		}
		err := a.txn(recs)
		var again []*appendCall
		for _, c := range live {
			if errors.Is(err, errAppendFenced) && !c.retried && c.ctx.Err() == nil {
				c.retried = true
				for _, r := range c.recs {
					r.Context = nil // else kgo keeps the first attempt's, ended now
				}
				again = append(again, c)
				continue
			}
			c.err = err
			close(c.done)
		}
		if len(again) > 0 {
			a.mu.Lock()
			a.queue = append(again, a.queue...)
			a.mu.Unlock()
		}
	}
}

func (a *appender) txn(recs []*kgo.Record) error {
	s := a.s
	// A new client runs warmUp first; one whose warm-up failed is dropped.
	for attempt := 0; a.cl == nil; attempt++ {
		cl, err := kgo.NewClient(append(s.clientOpts(),
			kgo.TransactionalID(s.appendTxnID()),
			kgo.TransactionTimeout(s.cfg.TxnTimeout),
			kgo.RequiredAcks(kgo.AllISRAcks()),
			kgo.ProducerLinger(0),
			kgo.RecordPartitioner(kgo.ManualPartitioner()))...)
		if err != nil {
			return fmt.Errorf("cluster: append producer: %w", err)
		}
		ctx, cancel := context.WithTimeout(s.ctx, s.cfg.TxnTimeout)
		err = warmUp(ctx, cl, s.cfg.Topic, recs[0].Partition)
		cancel()
		if err != nil {
			cl.Close()
			if attempt < 2 && s.ctx.Err() == nil {
				continue
			}
			return fmt.Errorf("cluster: append (nothing written): start the append producer: %w", err)
		}
		a.cl = cl
	}
	ctx, cancel := context.WithTimeout(s.ctx, s.cfg.TxnTimeout)
	defer cancel()
	cl := a.cl
	if err := cl.BeginTransaction(); err != nil {
		a.reset()
		return fmt.Errorf("cluster: append: begin transaction: %w", err)
	}
	err := produce(ctx, cl, recs...)
	if err == nil {
		if err = cl.EndTransaction(ctx, kgo.TryCommit); err == nil {
			return nil
		}
	}
	if fenced(err) || errors.Is(err, kerr.InvalidTxnState) {
		// Fenced, or the transaction was aborted under it: not written.
		a.reset()
		return fmt.Errorf("%w: %w", errAppendFenced, err)
	}
	if !errors.Is(err, errUnsure) && ctx.Err() == nil {
		if aerr := cl.AbortBufferedRecords(ctx); aerr == nil {
			if cl.EndTransaction(ctx, kgo.TryAbort) == nil {
				return fmt.Errorf("cluster: append (nothing written): %w", err)
			}
		}
	}
	// The client's state is unknown (it may hold records it can neither
	// send nor fail): a new one fences what this one left open.
	a.reset()
	return fmt.Errorf("cluster: append (the messages may still be written): %w", err)
}

// reset drops a client whose state is unknown; the next call makes a new
// one (and so fences whatever the old one left open).
func (a *appender) reset() {
	if a.cl != nil {
		a.cl.Close()
		a.cl = nil
	}
}

func (a *appender) close() {
	a.mu.Lock()
	a.closed = true
	for a.running {
		a.idle.Wait()
	}
	a.mu.Unlock()
	a.reset()
}
