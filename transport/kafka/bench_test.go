package kafka_test

import (
	"bytes"
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/hourglassmq/hourglass/transport"
	"github.com/hourglassmq/hourglass/transport/internal/benchpair"
	"github.com/hourglassmq/hourglass/transport/kafka"
)

// Benchmark shape shared by the Sender and the bare client: batches of
// benchBatch records of benchPayload bytes with the standard headers to a
// one-broker kfake cluster, acks=all, idempotent, no linger.
const (
	benchBatch   = 256
	benchPayload = 256
)

func benchEnvelopes() []transport.Envelope {
	batch := make([]transport.Envelope, benchBatch)
	payload := bytes.Repeat([]byte("x"), benchPayload)
	now := time.Now()
	for i := range batch {
		batch[i] = transport.Envelope{ID: "msg-" + strconv.Itoa(i), Dest: "kafka://bench", Attempt: 1, Due: now, Fired: now, Payload: payload}
	}
	return batch
}

// senderRound returns one Sender batch. Not newSender: its fast test
// retry/metadata settings are not what the bare client runs with.
func senderRound(b *testing.B, c *kfake.Cluster) func() {
	s, err := kafka.New(kafka.Options{Seeds: c.ListenAddrs()})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = s.Close() })
	batch := benchEnvelopes()
	out := make([]transport.Outcome, len(batch))
	return func() {
		s.Send(context.Background(), batch, out)
		for _, o := range out {
			if o.Status != transport.StatusDelivered {
				b.Fatal(o)
			}
		}
	}
}

// bareRound returns one batch of the same records (key, headers, value)
// produced with a franz-go client configured like the Sender's.
func bareRound(b *testing.B, c *kfake.Cluster) func() {
	cl, err := kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...), kgo.RequiredAcks(kgo.AllISRAcks()),
		kgo.ProducerLinger(0), kgo.RecordDeliveryTimeout(kafka.DefaultDeliveryTimeout))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(cl.Close)
	batch := benchEnvelopes()
	return func() {
		recs := make([]*kgo.Record, len(batch))
		for i := range batch {
			e := &batch[i]
			recs[i] = &kgo.Record{Topic: "bench", Key: []byte(e.ID), Value: e.Payload, Headers: []kgo.RecordHeader{
				{Key: transport.HeaderID, Value: []byte(e.ID)},
				{Key: transport.HeaderAttempt, Value: []byte("1")},
				{Key: transport.HeaderDue, Value: []byte(transport.FormatTime(e.Due))},
				{Key: transport.HeaderFired, Value: []byte(transport.FormatTime(e.Fired))},
			}}
		}
		if err := cl.ProduceSync(context.Background(), recs...).FirstErr(); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkKafka compares the Sender with the bare franz-go client
// producing the same records, batch by batch alternately (benchpair.Run):
// read sender-msgs/s, bare-msgs/s and their ratio.
func BenchmarkKafka(b *testing.B) {
	c := newCluster(b, "bench") // one cluster: both write into the same log
	benchpair.Run(b, benchBatch, senderRound(b, c), bareRound(b, c))
}
