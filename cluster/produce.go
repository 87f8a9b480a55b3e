package cluster

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/twmb/franz-go/pkg/kgo"
)

// Producing with a bound. franz-go never fails a record of an idempotent or
// transactional producer once a request carrying it was written and no
// response came back: it cannot tell whether the broker has it, and failing
// it could reuse a sequence number. Neither the record's context nor
// RecordDeliveryTimeout ends that wait (kgo.Produce's doc, "A record is not
// safe to fail..."); only a response or Client.Close does. On a network
// that is cut, no response ever comes, so kgo.ProduceSync would block
// forever: a node cut off from the brokers could neither finish a call nor
// close. Every produce here goes through produce, which waits for the
// records' results or for ctx, whichever comes first.

// errUnsure: ctx ended while records were in flight. Whether the broker has
// them is unknown, and the client still holds them: a transactional client
// cannot end its transaction, so the caller closes it (which fails what it
// still buffers); the broker aborts the open transaction at TxnTimeout, or
// the next InitProducerID of the same transactional ID aborts it at once.
var errUnsure = errors.New("cluster: no answer from Kafka in time; the records may still be written")

// produce produces recs through cl and waits for all their results or for
// ctx. It returns the first record's error, or errUnsure (wrapping ctx's
// error) if ctx ended first; then the records must not be read, as the
// client may still set their fields.
func produce(ctx context.Context, cl *kgo.Client, recs ...*kgo.Record) error {
	if len(recs) == 0 {
		return nil
	}
	w := &produceWait{left: len(recs), done: make(chan struct{})}
	for _, r := range recs {
		cl.Produce(ctx, r, w.promise)
	}
	select {
	case <-w.done:
		return w.err // written before done was closed
	case <-ctx.Done():
		return fmt.Errorf("%w: %w", errUnsure, ctx.Err())
	}
}

// produceWait collects the results of one produce call. Its promise may run
// after produce returned (errUnsure), until the client is closed.
type produceWait struct {
	mu   sync.Mutex
	left int
	err  error
	done chan struct{}
}

func (w *produceWait) promise(_ *kgo.Record, err error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if err != nil && w.err == nil {
		w.err = err
	}
	if w.left--; w.left == 0 {
		close(w.done)
	}
}

// produceIdem produces r with the idempotent producer, waiting until ctx
// ends (a call's, bounded by callCtx) or the store closes. That producer
// may fail a record it sent without an answer
// (AllowIdempotentProduceCancellation), so what ctx gives up does not stay
// buffered: nothing here resends such a record, and the caller is told it
// may be written.
func (s *Store) produceIdem(ctx context.Context, r *kgo.Record) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(s.ctx, cancel)
	defer stop()
	return produce(ctx, s.idem, r)
}

// warmUp readies a new transactional client: two aborted transactions
// before its first real one. franz-go (v1.22.3) can lose track of what a
// client's first transaction registered (its first records go to a topic
// it has not produced to, whose metadata it loads meanwhile):
// EndTransaction(TryCommit) then finds no partition marked added although
// every record was acknowledged, logs "no produce succeeded in this
// transaction but produces were attempted", aborts the transaction and
// returns nil, so the records are aborted while the caller is told they
// are committed. The client's sequence numbers are then off too: its next
// transaction fails (OUT_OF_ORDER_SEQUENCE_NUMBER). So the first
// transaction here absorbs the fault, the second shows whether the client
// is sound; the caller drops a client whose warm-up failed. The record is
// an owner tombstone, which the applier ignores; aborted, no reader sees
// it, and compaction drops it.
func warmUp(ctx context.Context, cl *kgo.Client, topic string, p int32) error {
	for range 2 {
		if err := cl.BeginTransaction(); err != nil {
			return err
		}
		err := produce(ctx, cl, &kgo.Record{Topic: topic, Partition: p, Key: []byte{keyOwner}})
		if errors.Is(err, errUnsure) {
			return err
		}
		if aerr := cl.EndTransaction(ctx, kgo.TryAbort); err == nil {
			err = aerr
		}
		if err != nil {
			return err
		}
	}
	return nil
}
