package nats_test

import (
	"bytes"
	"context"
	"strconv"
	"testing"
	"time"

	gonats "github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/hourglassmq/hourglass/transport"
	"github.com/hourglassmq/hourglass/transport/internal/benchpair"
	hnats "github.com/hourglassmq/hourglass/transport/nats"
)

// Benchmark shape shared by the Sender and the bare client: batches of
// benchBatch messages of benchPayload bytes with the standard headers, to
// an embedded server (JetStream on a memory stream).
const (
	benchBatch   = 256
	benchPayload = 256
)

func benchEnvelopes(dest string) []transport.Envelope {
	batch := make([]transport.Envelope, benchBatch)
	payload := bytes.Repeat([]byte("x"), benchPayload)
	now := time.Now()
	for i := range batch {
		batch[i] = transport.Envelope{ID: "msg-" + strconv.Itoa(i), Dest: dest, Attempt: 1, Due: now, Fired: now, Payload: payload}
	}
	return batch
}

// bareMsg builds the message the Sender would send, by hand.
func bareMsg(subj string, e *transport.Envelope) *gonats.Msg {
	h := gonats.Header{}
	h.Set(transport.HeaderID, e.ID)
	h.Set(transport.HeaderAttempt, "1")
	h.Set(transport.HeaderDue, transport.FormatTime(e.Due))
	h.Set(transport.HeaderFired, transport.FormatTime(e.Fired))
	return &gonats.Msg{Subject: subj, Header: h, Data: e.Payload}
}

func benchEnv(b *testing.B) *env {
	e := startServer(b, nil)
	e.stream(b, jetstream.StreamConfig{Name: "BENCH", Subjects: []string{"bench.>"}, Storage: jetstream.MemoryStorage, MaxMsgs: 100_000})
	return e
}

func senderRound(b *testing.B, e *env, dest string) func() {
	s := newSender(b, e, hnats.Options{})
	batch := benchEnvelopes(dest)
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

func bareConn(b *testing.B, e *env) *gonats.Conn {
	nc, err := gonats.Connect(e.srv.ClientURL())
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(nc.Close)
	return nc
}

// bareCoreRound publishes the same messages with nats.go directly and
// flushes once per batch.
func bareCoreRound(b *testing.B, e *env) func() {
	nc := bareConn(b, e)
	batch := benchEnvelopes("nats://bench.core")
	return func() {
		for i := range batch {
			if err := nc.PublishMsg(bareMsg("bench.core", &batch[i])); err != nil {
				b.Fatal(err)
			}
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := nc.FlushWithContext(ctx); err != nil {
			b.Fatal(err)
		}
	}
}

// bareJetStreamRound publishes the same messages with
// jetstream.PublishMsgAsync and a message ID, awaiting every ack.
func bareJetStreamRound(b *testing.B, e *env) func() {
	js, err := jetstream.New(bareConn(b, e), jetstream.WithPublishAsyncMaxPending(hnats.DefaultMaxAsyncPending))
	if err != nil {
		b.Fatal(err)
	}
	batch := benchEnvelopes("jetstream://bench.js")
	futs := make([]jetstream.PubAckFuture, len(batch))
	return func() {
		for i := range batch {
			f, err := js.PublishMsgAsync(bareMsg("bench.js", &batch[i]), jetstream.WithMsgID(batch[i].ID))
			if err != nil {
				b.Fatal(err)
			}
			futs[i] = f
		}
		for _, f := range futs {
			select {
			case <-f.Ok():
			case err := <-f.Err():
				b.Fatal(err)
			}
		}
	}
}

// BenchmarkNATSCore compares the Sender on nats:// with bare nats.go
// publishing the same messages, batch by batch alternately
// (benchpair.Run): read sender-msgs/s, bare-msgs/s and their ratio.
func BenchmarkNATSCore(b *testing.B) {
	e := benchEnv(b)
	benchpair.Run(b, benchBatch, senderRound(b, e, "nats://bench.core"), bareCoreRound(b, e))
}

// BenchmarkJetStream: as BenchmarkNATSCore, for jetstream:// (acked,
// deduplicated publishes to a memory stream).
func BenchmarkJetStream(b *testing.B) {
	e := benchEnv(b)
	benchpair.Run(b, benchBatch, senderRound(b, e, "jetstream://bench.js"), bareJetStreamRound(b, e))
}

// BenchmarkNativeSchedule measures ScheduleNative throughput (schedules
// handed to JetStream per second, file storage), due an hour out so none
// fires during the run.
func BenchmarkNativeSchedule(b *testing.B) {
	n := startNative(b)
	batch := benchEnvelopes("jetstream://jobs.run")
	due := time.Now().Add(time.Hour)
	out := make([]transport.Outcome, len(batch))
	count, round := 0, 0
	for b.Loop() {
		for i := range batch {
			batch[i].ID = "r" + strconv.Itoa(round) + "-" + strconv.Itoa(i)
			batch[i].Due = due
		}
		round++
		n.s.ScheduleNative(context.Background(), batch, out)
		for _, o := range out {
			if o.Status != transport.StatusDelivered {
				b.Fatal(o)
			}
		}
		count += len(batch)
	}
	b.ReportMetric(float64(count)/b.Elapsed().Seconds(), "schedules/s")
}
