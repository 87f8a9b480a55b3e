package e2e_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	gonats "github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/hourglassmq/hourglass/engine"
	"github.com/hourglassmq/hourglass/transport"
	"github.com/hourglassmq/hourglass/transport/nats"
)

// nativeFixture is an embedded nats-server with an ORDERS stream that allows
// message schedules, a registry whose jetstream://orders.> destinations are
// native, and a consumer recording what the stream receives on orders.>.
type nativeFixture struct {
	reg   *transport.Registry
	st    jetstream.Stream
	fired chan firedMsg
}

type firedMsg struct {
	at  time.Time // wall clock at the consumer
	msg jetstream.Msg
}

func startNative(t *testing.T) *nativeFixture {
	t.Helper()
	srv, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: t.TempDir(), NoLog: true, NoSigs: true})
	require.NoError(t, err)
	go srv.Start()
	require.True(t, srv.ReadyForConnections(10*time.Second))
	t.Cleanup(func() { srv.Shutdown(); srv.WaitForShutdown() })
	nc, err := gonats.Connect(srv.ClientURL())
	require.NoError(t, err)
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	ctx := context.Background()
	st, err := js.CreateStream(ctx, jetstream.StreamConfig{
		Name: "ORDERS", Subjects: []string{"orders.>", "sched.>"}, Storage: jetstream.FileStorage,
		AllowMsgSchedules: true,
	})
	require.NoError(t, err)
	f := &nativeFixture{st: st, fired: make(chan firedMsg, 64)}
	cons, err := st.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{FilterSubjects: []string{"orders.>"}})
	require.NoError(t, err)
	cc, err := cons.Consume(func(m jetstream.Msg) { f.fired <- firedMsg{time.Now(), m} })
	require.NoError(t, err)
	t.Cleanup(cc.Stop)
	s, err := nats.New(ctx, nats.Options{URL: srv.ClientURL(), AckTimeout: time.Second,
		Native: []nats.NativeRoute{{Subjects: "orders.>", Stream: "ORDERS", Prefix: "sched"}}})
	require.NoError(t, err)
	f.reg = transport.NewRegistry()
	require.NoError(t, f.reg.Register(s, "nats", "jetstream"))
	t.Cleanup(func() { _ = f.reg.Close() })
	return f
}

func (f *nativeFixture) next(t *testing.T) firedMsg {
	t.Helper()
	select {
	case m := <-f.fired:
		return m
	case <-time.After(5 * time.Second):
		t.Fatal("nothing fired")
		return firedMsg{}
	}
}

// subjects returns the stream's message count per subject under filter.
func (f *nativeFixture) subjects(t *testing.T, filter string) map[string]uint64 {
	t.Helper()
	info, err := f.st.Info(context.Background(), jetstream.WithSubjectFilter(filter))
	require.NoError(t, err)
	return info.State.Subjects
}

// TestNATSNative runs native scheduling through the engine: the engine's
// clock is a FakeClock starting at the real time (the broker's timer runs
// on real time), so nothing the engine holds fires until the test advances
// it, and whatever arrives before that was fired by the broker.
func TestNATSNative(t *testing.T) {
	for _, mode := range []string{"memory", "durable"} {
		t.Run(mode, func(t *testing.T) {
			t.Parallel()
			testNative(t, mode == "durable")
		})
	}
}

func testNative(t *testing.T, durable bool) {
	f := startNative(t)
	ctx := context.Background()
	dir := ""
	if durable {
		dir = t.TempDir()
	}
	start := time.Now()
	clock := engine.NewFakeClock(start)
	openE := func() *engine.Engine {
		e, err := engine.Open(ctx, engine.Options{Dir: dir, Shards: 2, Clock: clock, Transports: f.reg, Retry: retryThreeTimes})
		require.NoError(t, err)
		return e
	}
	e := openE()
	defer func() { _ = e.Close() }()

	dueA := start.Add(1500 * time.Millisecond) // fires; Cancel afterwards finds it fired
	dueC := start.Add(1500 * time.Millisecond) // cancelled
	dueR := start.Add(1500 * time.Millisecond) // rescheduled to newR
	newR := start.Add(2500 * time.Millisecond)
	idA, err := e.ScheduleAt(ctx, dueA, engine.Message{Dest: "jetstream://orders.a", Key: "order-a", Payload: []byte("a"),
		Headers: []engine.Header{{Key: "X-Tenant", Value: "acme"}}})
	require.NoError(t, err)
	ids, err := e.ScheduleBatch(ctx, []engine.Message{
		{Dest: "jetstream://orders.c", Due: dueC, Payload: []byte("c")},
		{Dest: "jetstream://orders.r", Due: dueR, Payload: []byte("r")},
		// Within NativeMinLead (1 s): held by the engine.
		{Dest: "jetstream://orders.near", Due: start.Add(500 * time.Millisecond), Payload: []byte("near")},
	})
	require.NoError(t, err)
	idC, idR, idNear := ids[0], ids[1], ids[2]
	require.EqualValues(t, 3, e.Stats().NativeScheduled)

	info, err := e.Get(ctx, idA)
	require.NoError(t, err)
	require.True(t, info.Native)
	require.Equal(t, engine.StatePending, info.State)
	require.Equal(t, []engine.Header{{Key: "X-Tenant", Value: "acme"}}, info.Message.Headers, "the engine's mark is not shown")
	require.Equal(t, "a", string(info.Message.Payload))
	info, err = e.Get(ctx, idNear)
	require.NoError(t, err)
	require.False(t, info.Native)
	list, _, err := e.List(ctx, engine.ListQuery{Limit: 10})
	require.NoError(t, err)
	require.Len(t, list, 4)

	// Idempotency: the key returns the existing (native) message.
	again, err := e.ScheduleAt(ctx, dueA, engine.Message{Dest: "jetstream://orders.a", Key: "order-a", Payload: []byte("a")})
	require.ErrorIs(t, err, engine.ErrDuplicate)
	require.Equal(t, idA, again)

	require.NoError(t, e.Cancel(ctx, idC))
	require.NotContains(t, f.subjects(t, "sched.>"), "sched."+idC.String(), "the broker's schedule is purged")
	require.NoError(t, e.Reschedule(ctx, idR, newR))
	require.NoError(t, e.Cancel(ctx, idNear))

	if durable {
		// The shadows survive a restart.
		require.NoError(t, e.Close())
		e = openE()
		info, err := e.Get(ctx, idR)
		require.NoError(t, err)
		require.True(t, info.Native)
		require.True(t, info.Message.Due.Equal(newR))
	}

	// A fires, then R at its new time; C never does.
	want := []struct {
		id  engine.ID
		due time.Time
		sub string
	}{{idA, dueA, "orders.a"}, {idR, newR, "orders.r"}}
	for _, w := range want {
		m := f.next(t)
		require.Equal(t, w.id.String(), m.msg.Headers().Get(transport.HeaderID))
		require.Equal(t, w.sub, m.msg.Subject())
		require.False(t, m.at.Before(w.due), "%s arrived at %v, before its due time %v", w.sub, m.at, w.due)
		require.Equal(t, transport.FormatTime(w.due), m.msg.Headers().Get(transport.HeaderDue))
		require.Equal(t, "1", m.msg.Headers().Get(transport.HeaderAttempt))
		if w.id == idA {
			require.Equal(t, "a", string(m.msg.Data()))
			require.Equal(t, "acme", m.msg.Headers().Get("X-Tenant"))
			require.Equal(t, "order-a", m.msg.Headers().Get(transport.HeaderKey))
			require.Empty(t, m.msg.Headers().Get("Hourglass-Native"))
			// The engine's clock has not reached A: the shadow is pending,
			// and cancelling it finds that the broker fired it.
			err := e.Cancel(ctx, idA)
			require.ErrorIs(t, err, engine.ErrNativeFired)
			require.ErrorIs(t, err, engine.ErrNotFound)
			_, err = e.Get(ctx, idA)
			require.ErrorIs(t, err, engine.ErrNotFound)
		}
	}

	// The engine's clock reaches R's due time: the shadow is resolved as
	// fired by the broker, and the engine sends nothing itself.
	clock.Advance(newR.Sub(start) + 10*time.Millisecond)
	require.Eventually(t, func() bool {
		_, err := e.Get(ctx, idR)
		return errors.Is(err, engine.ErrNotFound) && e.Stats().NativeFired == 2 // R, and A found fired by Cancel
	}, 5*time.Second, 5*time.Millisecond)
	st := e.Stats()
	require.Zero(t, st.Delivered, "the engine sent nothing itself")
	require.Zero(t, st.PendingTotal)
	require.Equal(t, map[string]uint64{"orders.a": 1, "orders.r": 1}, f.subjects(t, "orders.>"), "one copy of each, none of C")
	require.Empty(t, f.subjects(t, "sched.>"), "no schedule left behind")
	select {
	case m := <-f.fired:
		t.Fatalf("unexpected message on %s (id %s)", m.msg.Subject(), m.msg.Headers().Get(transport.HeaderID))
	default:
	}
	require.NoError(t, e.Close())
}

// TestNATSNativeFallback: a native destination whose broker refuses the
// schedule is held by the engine instead, and Schedule still succeeds. (A
// header the NATS sender can never carry is refused at Schedule.)
func TestNATSNativeFallback(t *testing.T) {
	f := startNative(t)
	ctx := context.Background()
	for _, dir := range []string{"", t.TempDir()} {
		start := time.Now()
		clock := engine.NewFakeClock(start)
		e, err := engine.Open(ctx, engine.Options{Dir: dir, Shards: 2, Clock: clock, Transports: f.reg, Retry: retryThreeTimes})
		require.NoError(t, err)
		// A header the NATS sender can never carry: refused at Schedule,
		// nothing stored.
		_, err = e.ScheduleAt(ctx, start.Add(time.Hour), engine.Message{Dest: "jetstream://orders.fb", Key: "fb", Payload: []byte("x"),
			Headers: []engine.Header{{Key: "Nats-Rollup", Value: "all"}}})
		require.ErrorIs(t, err, engine.ErrInvalid)
		require.ErrorIs(t, err, transport.ErrBadHeader)
		require.Zero(t, e.Stats().StorePending)
		// A message the broker refuses to schedule (over its max payload
		// once headers are added): held by the engine instead.
		id, err := e.ScheduleAt(ctx, start.Add(time.Hour), engine.Message{Dest: "jetstream://orders.fb", Key: "fb", Payload: make([]byte, engine.DefaultMaxPayload)})
		require.NoError(t, err)
		info, err := e.Get(ctx, id)
		require.NoError(t, err)
		require.False(t, info.Native)
		require.Equal(t, "fb", info.Message.Key)
		st := e.Stats()
		require.Zero(t, st.NativeScheduled)
		require.EqualValues(t, 1, st.StorePending, "exactly one pending message")
		again, err := e.ScheduleAt(ctx, start.Add(time.Hour), engine.Message{Dest: "jetstream://orders.fb", Key: "fb"})
		require.ErrorIs(t, err, engine.ErrDuplicate)
		require.Equal(t, id, again, "the key names the held message")
		require.NoError(t, e.Cancel(ctx, id))
		require.NoError(t, e.Close())
	}
}
