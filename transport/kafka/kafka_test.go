package kafka_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"go.uber.org/goleak"

	"github.com/hourglassmq/hourglass/transport"
	"github.com/hourglassmq/hourglass/transport/kafka"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func newCluster(t testing.TB, topics ...string) *kfake.Cluster {
	t.Helper()
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(1, topics...))
	require.NoError(t, err)
	t.Cleanup(c.Close)
	return c
}

func newSender(t testing.TB, c *kfake.Cluster, opts kafka.Options) *kafka.Sender {
	t.Helper()
	opts.Seeds = c.ListenAddrs()
	opts.ClientOptions = append(opts.ClientOptions,
		kgo.RetryBackoffFn(func(int) time.Duration { return 10 * time.Millisecond }),
		kgo.MetadataMinAge(10*time.Millisecond))
	s, err := kafka.New(opts)
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, s.Close()) })
	return s
}

var due = time.Date(2026, 11, 25, 22, 0, 0, 7, time.UTC)

func envelope(dest, id, key string) transport.Envelope {
	return transport.Envelope{
		ID: id, Dest: dest, Attempt: 1, Due: due, Fired: due.Add(time.Millisecond), Key: key,
		Headers: []transport.Header{{Key: "X-A", Value: "1"}, {Key: "X-A", Value: "2"}},
		Payload: []byte("payload-" + id),
	}
}

func send(ctx context.Context, s transport.Sender, batch ...transport.Envelope) []transport.Outcome {
	out := make([]transport.Outcome, len(batch))
	s.Send(ctx, batch, out)
	return out
}

// consume reads n records from topic.
func consume(t *testing.T, c *kfake.Cluster, topic string, n int) []*kgo.Record {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...), kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	require.NoError(t, err)
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var recs []*kgo.Record
	for len(recs) < n {
		fs := cl.PollFetches(ctx)
		require.NoError(t, ctx.Err(), "got %d of %d records", len(recs), n)
		fs.EachRecord(func(r *kgo.Record) { recs = append(recs, r) })
	}
	return recs
}

func TestDeliversRecordsWithHeaders(t *testing.T) {
	c := newCluster(t, "orders")
	var produceReqs atomic.Int32
	c.ControlKey(int16(kmsg.Produce), func(kmsg.Request) (kmsg.Response, error, bool) {
		c.KeepControl()
		produceReqs.Add(1)
		return nil, nil, false // observe only
	})
	s := newSender(t, c, kafka.Options{})
	batch := []transport.Envelope{
		envelope("kafka://orders", "m1", "idem-1"),
		envelope("kafka://orders", "m2", ""),
		envelope("kafka://orders", "m3", ""),
	}
	for i, o := range send(context.Background(), s, batch...) {
		require.Equal(t, transport.StatusDelivered, o.Status, "%d: %v", i, o)
	}
	require.EqualValues(t, 1, produceReqs.Load(), "one batch to one partition is one produce request")

	recs := consume(t, c, "orders", 3)
	require.Len(t, recs, 3)
	r := recs[0]
	require.Equal(t, "m1", string(r.Key), "key = the ID when there is no routing key, never the idempotency key")
	require.Equal(t, "m2", string(recs[1].Key), "key = ID without a routing key")
	require.Equal(t, "payload-m1", string(r.Value))
	var hs []string
	for _, h := range r.Headers {
		hs = append(hs, h.Key+"="+string(h.Value))
	}
	require.Equal(t, []string{
		"Hourglass-Id=m1", "Hourglass-Attempt=1", "Hourglass-Due=2026-11-25T22:00:00.000000007Z",
		"Hourglass-Fired=2026-11-25T22:00:00.001000007Z", "Hourglass-Key=idem-1", "X-A=1", "X-A=2",
	}, hs)
}

// produceErr answers every partition of a produce request with code.
func produceErr(kreq kmsg.Request, code int16) (kmsg.Response, error, bool) {
	req := kreq.(*kmsg.ProduceRequest)
	resp := req.ResponseKind().(*kmsg.ProduceResponse)
	for _, rt := range req.Topics {
		st := kmsg.NewProduceResponseTopic()
		st.Topic, st.TopicID = rt.Topic, rt.TopicID
		for _, rp := range rt.Partitions {
			sp := kmsg.NewProduceResponseTopicPartition()
			sp.Partition = rp.Partition
			sp.ErrorCode = code
			st.Partitions = append(st.Partitions, sp)
		}
		resp.Topics = append(resp.Topics, st)
	}
	return resp, nil, true
}

func TestBrokerErrors(t *testing.T) {
	for _, tc := range []struct {
		err  *kerr.Error
		want transport.Status
	}{
		{kerr.MessageTooLarge, transport.StatusReject},
		{kerr.InvalidRecord, transport.StatusReject},
		{kerr.TopicAuthorizationFailed, transport.StatusReject},
		{kerr.PolicyViolation, transport.StatusReject},
		{kerr.NotEnoughReplicas, transport.StatusRetry},            // retriable: the client retries until the delivery timeout
		{kerr.NotLeaderForPartition, transport.StatusRetry},        // retriable, and the client refreshes metadata
		{kerr.UnknownServerError, transport.StatusRetry},           // unknown: retried by the engine, never lost
		{kerr.InvalidProducerIDMapping, transport.StatusDelivered}, // the idempotent producer recovers on its own
	} {
		t.Run(tc.err.Message, func(t *testing.T) {
			c := newCluster(t, "t")
			s := newSender(t, c, kafka.Options{DeliveryTimeout: time.Second})
			// Warm up so the injected error hits the produce, not metadata.
			require.Equal(t, transport.StatusDelivered, send(context.Background(), s, envelope("kafka://t", "warm", ""))[0].Status)
			var hits atomic.Int32
			c.ControlKey(int16(kmsg.Produce), func(kreq kmsg.Request) (kmsg.Response, error, bool) {
				if tc.want == transport.StatusDelivered && hits.Load() > 0 {
					return nil, nil, false
				}
				c.KeepControl()
				hits.Add(1)
				return produceErr(kreq, tc.err.Code)
			})
			o := send(context.Background(), s, envelope("kafka://t", "m", ""))[0]
			require.Equal(t, tc.want, o.Status, o.String())
			require.Positive(t, hits.Load())
			if tc.want != transport.StatusDelivered {
				require.ErrorContains(t, o.Err, `kafka: produce to "t"`)
			}
			if tc.want == transport.StatusReject {
				require.ErrorIs(t, o.Err, tc.err)
			}
		})
	}
}

func TestFaultThenRecovery(t *testing.T) {
	c := newCluster(t, "t")
	s := newSender(t, c, kafka.Options{DeliveryTimeout: time.Second})
	require.Equal(t, transport.StatusDelivered, send(context.Background(), s, envelope("kafka://t", "warm", ""))[0].Status)
	h := c.Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.Produce}, Topic: "t", Err: kerr.NotEnoughReplicas, Count: -1})
	out := send(context.Background(), s, envelope("kafka://t", "a", ""), envelope("kafka://t", "b", ""))
	for _, o := range out {
		require.Equal(t, transport.StatusRetry, o.Status, o.String())
	}
	require.Positive(t, h.Hits())
	h.Remove()
	// The engine's retry of the same messages succeeds, and nothing was
	// written while the broker refused.
	out = send(context.Background(), s, envelope("kafka://t", "a", ""), envelope("kafka://t", "b", ""))
	for _, o := range out {
		require.Equal(t, transport.StatusDelivered, o.Status, o.String())
	}
	recs := consume(t, c, "t", 3)
	require.Equal(t, []string{"warm", "a", "b"}, []string{string(recs[0].Key), string(recs[1].Key), string(recs[2].Key)})
}

func TestBrokerDownRetries(t *testing.T) {
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(1, "t"))
	require.NoError(t, err)
	s := newSender(t, c, kafka.Options{DeliveryTimeout: time.Second})
	c.Close()
	start := time.Now()
	o := send(context.Background(), s, envelope("kafka://t", "a", ""))[0]
	require.Equal(t, transport.StatusRetry, o.Status, o.String())
	require.Less(t, time.Since(start), 10*time.Second)
}

func TestUnknownTopicRetries(t *testing.T) {
	c := newCluster(t, "t")
	s := newSender(t, c, kafka.Options{DeliveryTimeout: time.Second})
	o := send(context.Background(), s, envelope("kafka://missing", "a", ""))[0]
	require.Equal(t, transport.StatusRetry, o.Status, o.String())
}

func TestContextCancelRetries(t *testing.T) {
	c := newCluster(t, "t")
	s := newSender(t, c, kafka.Options{DeliveryTimeout: time.Minute})
	require.Equal(t, transport.StatusDelivered, send(context.Background(), s, envelope("kafka://t", "warm", ""))[0].Status)
	// The broker keeps refusing with a retriable error, so the client keeps
	// retrying the record; cancelling ctx must end that promptly.
	h := c.Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.Produce}, Topic: "t", Err: kerr.NotEnoughReplicas, Count: -1})
	defer h.Remove()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan []transport.Outcome)
	go func() { done <- send(ctx, s, envelope("kafka://t", "held", "")) }()
	wctx, wcancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer wcancel()
	require.NoError(t, h.Wait(wctx, 2), "the broker never saw the produce")
	cancel()
	select {
	case out := <-done:
		require.Equal(t, transport.StatusRetry, out[0].Status, out[0].String())
		require.ErrorIs(t, out[0].Err, context.Canceled)
	case <-time.After(20 * time.Second):
		t.Fatal("Send did not return after cancel")
	}
}

func TestValidate(t *testing.T) {
	c := newCluster(t, "t")
	s := newSender(t, c, kafka.Options{})
	for dest, ok := range map[string]bool{
		"kafka://orders":       true,
		"kafka://a.b_c-D9":     true,
		"kafka://bad topic":    false,
		"kafka://a/b":          false,
		"kafka://..":           false,
		"kafka://" + long(250): false,
		"nats://orders":        false,
	} {
		d, err := transport.ParseDestination(dest)
		require.NoError(t, err)
		err = s.Validate(d)
		if ok {
			require.NoError(t, err, dest)
		} else {
			require.ErrorIs(t, err, transport.ErrBadDestination, dest)
		}
	}
	allow := newSender(t, c, kafka.Options{Topics: []string{"t", "u"}})
	d, _ := transport.ParseDestination("kafka://v")
	require.EqualError(t, allow.Validate(d), `transport: invalid destination "kafka://v": topic is not on the allow-list (allowed: kafka://t, kafka://u)`)
	o := send(context.Background(), allow, envelope("kafka://v", "x", ""))[0]
	require.Equal(t, transport.StatusReject, o.Status)

	_, err := kafka.New(kafka.Options{})
	require.ErrorContains(t, err, "Seeds is empty")
	_, err = kafka.New(kafka.Options{Seeds: []string{"x:1"}, Topics: []string{"bad topic"}})
	require.Error(t, err)
}

func long(n int) string { return fmt.Sprintf("%0*d", n, 0) }

func TestCloseRetries(t *testing.T) {
	c := newCluster(t, "t")
	s, err := kafka.New(kafka.Options{Seeds: c.ListenAddrs()})
	require.NoError(t, err)
	require.NoError(t, s.Close())
	require.NoError(t, s.Close())
	o := send(context.Background(), s, envelope("kafka://t", "a", ""))[0]
	require.Equal(t, transport.StatusRetry, o.Status)
	require.ErrorIs(t, o.Err, transport.ErrClosed)
}

func TestConcurrentSends(t *testing.T) {
	c := newCluster(t, "t")
	s := newSender(t, c, kafka.Options{})
	const dispatchers, each = 4, 25
	var wg sync.WaitGroup
	for d := range dispatchers {
		wg.Go(func() {
			batch := make([]transport.Envelope, each)
			for i := range batch {
				batch[i] = envelope("kafka://t", fmt.Sprintf("d%d-%d", d, i), "")
			}
			for _, o := range send(context.Background(), s, batch...) {
				if o.Status != transport.StatusDelivered {
					t.Errorf("dispatcher %d: %v", d, o)
				}
			}
		})
	}
	wg.Wait()
	seen := map[string]bool{}
	for _, r := range consume(t, c, "t", dispatchers*each) {
		seen[string(r.Key)] = true
	}
	require.Len(t, seen, dispatchers*each, "every message once")
}

// TestMixedBatchOutcomes checks that every outcome lands on its own
// envelope when one batch spans topics that succeed and fail.
func TestMixedBatchOutcomes(t *testing.T) {
	c := newCluster(t, "t", "u")
	s := newSender(t, c, kafka.Options{})
	require.Equal(t, transport.StatusDelivered, send(context.Background(), s, envelope("kafka://u", "warm", ""))[0].Status)
	h := c.Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.Produce}, Topic: "u", Err: kerr.MessageTooLarge, Count: -1})
	defer h.Remove()
	var batch []transport.Envelope
	for i := range 20 {
		topic := []string{"t", "u"}[i%2]
		batch = append(batch, envelope("kafka://"+topic, fmt.Sprintf("%s-%d", topic, i), ""))
	}
	batch = append(batch, envelope("kafka://bad topic", "bad", ""))
	out := send(context.Background(), s, batch...)
	for i, o := range out[:20] {
		if i%2 == 0 {
			require.Equal(t, transport.StatusDelivered, o.Status, "%d: %v", i, o)
		} else {
			require.Equal(t, transport.StatusReject, o.Status, "%d: %v", i, o)
			require.ErrorIs(t, o.Err, kerr.MessageTooLarge)
		}
	}
	require.Equal(t, transport.StatusReject, out[20].Status)
	require.ErrorIs(t, out[20].Err, transport.ErrBadDestination)
}
