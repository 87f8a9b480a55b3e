package e2e_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	gonats "github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"go.uber.org/goleak"

	"github.com/hourglassmq/hourglass/engine"
	"github.com/hourglassmq/hourglass/transport"
	"github.com/hourglassmq/hourglass/transport/kafka"
	"github.com/hourglassmq/hourglass/transport/nats"
	"github.com/hourglassmq/hourglass/transport/webhook"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// arrival is one message as the far side received it.
type arrival struct {
	headers map[string]string
	payload []byte
}

// waitArrival fails the test if nothing arrives within the bound; the bound
// only turns a hang into a failure, nothing waits on it to pass.
func waitArrival(t *testing.T, ch <-chan arrival) arrival {
	t.Helper()
	select {
	case a := <-ch:
		return a
	case <-time.After(20 * time.Second):
		t.Fatal("nothing arrived")
		return arrival{}
	}
}

var start = time.Date(2026, 11, 25, 14, 0, 0, 0, time.UTC)

// retryThreeTimes retries at once, so the test needs no clock steps between
// attempts, and dead-letters after the third.
var retryThreeTimes = engine.RetryPolicy{MaxAttempts: 3, Delays: []time.Duration{0}, Jitter: -1}

func open(t *testing.T, dir string, reg *transport.Registry, clock *engine.FakeClock) *engine.Engine {
	t.Helper()
	e, err := engine.Open(context.Background(), engine.Options{
		Dir: dir, Shards: 2, Clock: clock, Transports: reg, Retry: retryThreeTimes,
	})
	require.NoError(t, err)
	return e
}

// deliverOnTime schedules one message 10 s ahead through a durable engine
// and checks what reaches the far side.
func deliverOnTime(t *testing.T, reg *transport.Registry, dest string, got <-chan arrival) {
	t.Helper()
	ctx := context.Background()
	clock := engine.NewFakeClock(start)
	e := open(t, t.TempDir(), reg, clock)
	defer e.Close()
	due := start.Add(10 * time.Second)
	id, err := e.ScheduleAt(ctx, due, engine.Message{
		Dest: dest, Key: "order-42", Payload: []byte("expire order 42"),
		Headers: []engine.Header{{Key: "X-Tenant", Value: "acme"}},
	})
	require.NoError(t, err)
	clock.Advance(10 * time.Second)
	a := waitArrival(t, got)

	require.Equal(t, "expire order 42", string(a.payload))
	require.Equal(t, id.String(), a.headers[transport.HeaderID])
	require.Equal(t, "1", a.headers[transport.HeaderAttempt])
	require.Equal(t, "order-42", a.headers[transport.HeaderKey])
	require.Equal(t, "acme", a.headers["X-Tenant"])
	gotDue, err := time.Parse(time.RFC3339Nano, a.headers[transport.HeaderDue])
	require.NoError(t, err)
	require.True(t, gotDue.Equal(due), "due %v, header %v", due, gotDue)
	fired, err := time.Parse(time.RFC3339Nano, a.headers[transport.HeaderFired])
	require.NoError(t, err)
	require.False(t, fired.Before(due), "fired at %v, before its due time %v", fired, due)
}

// deadAfterRetries schedules one message to a failing destination, waits for
// its last attempt to arrive (attempts reports each one), drains the engine
// and reopens the store: the message must be a dead letter after exactly
// retryThreeTimes.MaxAttempts attempts, neither lost nor still pending.
func deadAfterRetries(t *testing.T, reg *transport.Registry, dest string, attempts <-chan arrival) {
	t.Helper()
	ctx := context.Background()
	dir := t.TempDir()
	clock := engine.NewFakeClock(start)
	e := open(t, dir, reg, clock)
	id, err := e.ScheduleIn(ctx, time.Second, engine.Message{Dest: dest, Payload: []byte("doomed")})
	require.NoError(t, err)
	clock.Advance(time.Second)
	for want := 1; want <= retryThreeTimes.MaxAttempts; want++ {
		a := waitArrival(t, attempts)
		require.Equal(t, id.String(), a.headers[transport.HeaderID])
		require.Equal(t, strconv.Itoa(want), a.headers[transport.HeaderAttempt])
	}
	require.NoError(t, e.Shutdown(ctx)) // waits for the last outcome's commit

	e = open(t, dir, reg, clock)
	defer e.Close()
	dead, _, err := e.DeadLetters(ctx, 0, 10)
	require.NoError(t, err)
	require.Len(t, dead, 1)
	require.Equal(t, id, dead[0].ID)
	require.Equal(t, retryThreeTimes.MaxAttempts, dead[0].Attempts)
	info, err := e.Get(ctx, id)
	require.NoError(t, err)
	require.Equal(t, engine.StateDead, info.State, "a dead letter is no longer pending")
}

func TestHTTP(t *testing.T) {
	got := make(chan arrival, 16)
	status := http.StatusNoContent
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		h := map[string]string{}
		for k := range r.Header {
			h[k] = r.Header.Get(k)
		}
		w.WriteHeader(status)
		got <- arrival{h, body}
	}))
	defer srv.Close()
	u, err := url.Parse(srv.URL)
	require.NoError(t, err)
	s, err := webhook.New(webhook.Options{AllowedHosts: []string{u.Host}})
	require.NoError(t, err)
	reg := transport.NewRegistry()
	require.NoError(t, reg.Register(s, "http"))
	defer reg.Close()

	t.Run("delivered on time with headers", func(t *testing.T) {
		deliverOnTime(t, reg, srv.URL+"/hooks/orders", got)
	})
	t.Run("503 retried, then dead-lettered", func(t *testing.T) {
		status = http.StatusServiceUnavailable
		deadAfterRetries(t, reg, srv.URL+"/hooks/orders", got)
	})
}

func TestNATS(t *testing.T) {
	srv, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: t.TempDir(), NoLog: true, NoSigs: true})
	require.NoError(t, err)
	go srv.Start()
	require.True(t, srv.ReadyForConnections(10*time.Second))
	defer func() { srv.Shutdown(); srv.WaitForShutdown() }()
	nc, err := gonats.Connect(srv.ClientURL())
	require.NoError(t, err)
	defer nc.Close()
	got := make(chan arrival, 16)
	_, err = nc.Subscribe("orders.>", func(m *gonats.Msg) {
		h := map[string]string{}
		for k := range m.Header {
			h[k] = m.Header.Get(k)
		}
		got <- arrival{h, m.Data}
	})
	require.NoError(t, err)
	require.NoError(t, nc.Flush())
	s, err := nats.New(context.Background(), nats.Options{URL: srv.ClientURL(), AckTimeout: time.Second})
	require.NoError(t, err)
	reg := transport.NewRegistry()
	require.NoError(t, reg.Register(s, "nats", "jetstream"))
	defer reg.Close()

	t.Run("delivered on time with headers", func(t *testing.T) {
		deliverOnTime(t, reg, "nats://orders.expire", got)
	})
	t.Run("a publish no stream acknowledges: retried, then dead-lettered", func(t *testing.T) {
		// The publish reaches the subject (the subscriber sees each attempt)
		// but no stream stores it, so no acknowledgement comes back within
		// the sender's AckTimeout.
		deadAfterRetries(t, reg, "jetstream://orders.unstored", got)
	})
}

func TestKafka(t *testing.T) {
	const topic = "orders"
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(1, topic))
	require.NoError(t, err)
	defer c.Close()
	s, err := kafka.New(kafka.Options{Seeds: c.ListenAddrs(), DeliveryTimeout: 2 * time.Second})
	require.NoError(t, err)
	reg := transport.NewRegistry()
	require.NoError(t, reg.Register(s, "kafka"))
	defer reg.Close()

	got := make(chan arrival, 16)
	cl, err := kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...), kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ctx.Err() == nil {
			cl.PollFetches(ctx).EachRecord(func(r *kgo.Record) {
				h := map[string]string{}
				for _, rh := range r.Headers {
					h[rh.Key] = string(rh.Value)
				}
				got <- arrival{h, r.Value}
			})
		}
	}()
	defer func() { cancel(); <-done; cl.Close() }()

	t.Run("delivered on time with headers", func(t *testing.T) {
		deliverOnTime(t, reg, "kafka://"+topic, got)
	})
	t.Run("a broker that refuses the record: dead letter at once", func(t *testing.T) {
		// MESSAGE_TOO_LARGE is permanent: no retry can help, so the
		// message goes straight to the dead letters with its one attempt.
		h := c.Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.Produce}, Topic: topic, Err: kerr.MessageTooLarge, Count: -1})
		defer h.Remove()
		ctx := context.Background()
		dir := t.TempDir()
		clock := engine.NewFakeClock(start)
		e := open(t, dir, reg, clock)
		id, err := e.ScheduleIn(ctx, time.Second, engine.Message{Dest: "kafka://" + topic, Payload: []byte("too big")})
		require.NoError(t, err)
		clock.Advance(time.Second)
		require.NoError(t, h.Wait(ctx, 1))  // the produce request met the fault
		require.NoError(t, e.Shutdown(ctx)) // waits for that attempt's outcome to be committed
		e = open(t, dir, reg, clock)
		defer e.Close()
		dead, _, err := e.DeadLetters(ctx, 0, 10)
		require.NoError(t, err)
		require.Len(t, dead, 1)
		require.Equal(t, id, dead[0].ID)
		require.Equal(t, 1, dead[0].Attempts)
		require.Contains(t, dead[0].Reason, "MESSAGE_TOO_LARGE")
	})
}
