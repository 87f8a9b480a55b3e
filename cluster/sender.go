package cluster

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/hourglassmq/hourglass/store"
	"github.com/hourglassmq/hourglass/transport"
	"github.com/hourglassmq/hourglass/transport/kafka"
)

// Sender delivers kafka:// destinations exactly once within Kafka: Send
// does not produce; it stages each message's record with the partition's
// owner here and reports it delivered, and the Resolve that commits the
// message's Delivered outcome (the engine calls it right after Send, from
// the same dispatcher) produces the staged record in the same transaction
// as the outcome. A consumer reading read_committed sees the record if and
// only if the message's outcome is committed; if the transaction fails,
// neither is, and the message is delivered again later.
//
// Register it for the "kafka" scheme and set it in Kafka.Sender:
//
//	snd := cluster.NewSender()
//	reg.Register(snd, "kafka")
//	engine.Open(ctx, engine.Options{Store: cluster.Kafka{..., Sender: snd}, Transports: reg})
//
// The topics are on the store's cluster. The record is keyed by the
// envelope's partition key (its routing key, else ID) with the payload as
// value and the Hourglass-* headers, like transport/kafka's.
type Sender struct {
	st     atomic.Pointer[Store]
	mu     sync.Mutex
	topics map[string]bool // known to exist
}

var _ transport.Sender = (*Sender)(nil)

// NewSender returns a Sender to bind to a cluster store (Kafka.Sender).
func NewSender() *Sender { return &Sender{topics: map[string]bool{}} }

// Validate accepts kafka://topic with a valid topic name.
func (s *Sender) Validate(d transport.Destination) error {
	if d.Scheme != "kafka" {
		return &transport.DestinationError{Dest: d.Raw, Err: transport.ErrBadDestination, Reason: "want kafka://topic"}
	}
	if err := kafka.ValidTopic(d.Target); err != nil {
		return &transport.DestinationError{Dest: d.Raw, Err: transport.ErrBadDestination, Reason: err.Error()}
	}
	return nil
}

// Send stages each envelope's record for its outcome's transaction.
func (s *Sender) Send(ctx context.Context, batch []transport.Envelope, out []transport.Outcome) {
	st := s.st.Load()
	for i := range batch {
		e := &batch[i]
		if st == nil {
			out[i] = transport.Retry(fmt.Errorf("cluster: sender is not bound to a store (set Kafka.Sender)"), 0)
			continue
		}
		d, err := transport.ParseDestination(e.Dest)
		if err == nil {
			err = s.Validate(d)
		}
		if err != nil {
			out[i] = transport.Reject(err)
			continue
		}
		if ok, err := s.exists(ctx, st, d.Target); err != nil {
			out[i] = transport.Retry(err, 0)
			continue
		} else if !ok {
			out[i] = transport.Reject(fmt.Errorf("cluster: topic %q does not exist", d.Target))
			continue
		}
		id, err := store.ParseID(e.ID)
		if err != nil || id.Shard() >= st.nP {
			out[i] = transport.Reject(fmt.Errorf("cluster: envelope ID %q names no message of this store", e.ID))
			continue
		}
		own := st.parts[id.Shard()].own.Load()
		if own == nil {
			out[i] = transport.Retry(fmt.Errorf("cluster: partition %d is not owned here", id.Shard()), 0)
			continue
		}
		r := &kgo.Record{Topic: d.Target, Key: []byte(e.PartitionKey()), Value: e.Payload, Partition: -1}
		r.Headers = make([]kgo.RecordHeader, 0, 5+len(e.Headers))
		e.ForEachHeader(func(k, v string) {
			r.Headers = append(r.Headers, kgo.RecordHeader{Key: k, Value: []byte(v)})
		})
		r.Partition = int32(partitionFor(r.Key, st.topicPartitions(ctx, d.Target)))
		own.stage(id, r)
		out[i] = transport.Delivered()
	}
}

// exists reports whether topic exists (cached once seen).
func (s *Sender) exists(ctx context.Context, st *Store, topic string) (bool, error) {
	s.mu.Lock()
	ok := s.topics[topic]
	s.mu.Unlock()
	if ok {
		return true, nil
	}
	n := st.topicPartitions(ctx, topic)
	if n < 0 {
		return false, fmt.Errorf("cluster: read metadata of topic %q", topic)
	}
	if n == 0 {
		return false, nil
	}
	s.mu.Lock()
	s.topics[topic] = true
	s.mu.Unlock()
	return true, nil
}

// Close implements transport.Sender.
func (s *Sender) Close() error { return nil }

// topicPartitions returns topic's partition count, 0 if it does not exist,
// -1 if unknown.
func (s *Store) topicPartitions(ctx context.Context, topic string) int {
	s.tpMu.Lock()
	n, ok := s.tpCount[topic]
	s.tpMu.Unlock()
	if ok {
		return n
	}
	md, err := kadm.NewClient(s.admin).Metadata(ctx, topic)
	if err != nil {
		return -1
	}
	td, ok := md.Topics[topic]
	if !ok || td.Err != nil {
		return 0
	}
	n = len(td.Partitions)
	s.tpMu.Lock()
	s.tpCount[topic] = n
	s.tpMu.Unlock()
	return n
}

// partitionFor hashes key to one of n partitions, as Kafka's default
// partitioner does (murmur2), so a key lands where other producers put it.
func partitionFor(key []byte, n int) int {
	if n <= 0 {
		return 0
	}
	return int(murmur2(key)&0x7fffffff) % n
}

func murmur2(b []byte) uint32 {
	const (
		seed uint32 = 0x9747b28c
		m    uint32 = 0x5bd1e995
		r           = 24
	)
	h := seed ^ uint32(len(b))
	for len(b) >= 4 {
		k := uint32(b[0]) | uint32(b[1])<<8 | uint32(b[2])<<16 | uint32(b[3])<<24
		b = b[4:]
		k *= m
		k ^= k >> r
		k *= m
		h *= m
		h ^= k
	}
	switch len(b) {
	case 3:
		h ^= uint32(b[2]) << 16
		fallthrough
	case 2:
		h ^= uint32(b[1]) << 8
		fallthrough
	case 1:
		h ^= uint32(b[0])
		h *= m
	}
	h ^= h >> 13
	h *= m
	h ^= h >> 15
	return h
}
