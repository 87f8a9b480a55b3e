package nats_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	gonats "github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/hourglassmq/hourglass/transport"
	hnats "github.com/hourglassmq/hourglass/transport/nats"
)

// nats.go's JetStream context starts a goroutine per connection that
// waits for a reconnect and ends only when the closed connection's status
// channel is drained, a moment after Close returns: it is the library's,
// not a leak of ours (seen once in CI-like runs).
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.IgnoreTopFunction("github.com/nats-io/nats.go/jetstream.(*jetStream).resetPendingAcksOnReconnect"))
}

// env is an embedded nats-server with JetStream and a client.
type env struct {
	srv *server.Server
	nc  *gonats.Conn
	js  jetstream.JetStream
}

func startServer(t testing.TB, mod func(*server.Options)) *env {
	t.Helper()
	opts := &server.Options{Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: t.TempDir(), NoLog: true, NoSigs: true}
	if mod != nil {
		mod(opts)
	}
	srv, err := server.NewServer(opts)
	require.NoError(t, err)
	srv.Start()
	t.Cleanup(func() { srv.Shutdown(); srv.WaitForShutdown() })
	require.True(t, srv.ReadyForConnections(10*time.Second), "server not ready")
	nc, err := gonats.Connect(srv.ClientURL(), gonats.MaxReconnects(0))
	require.NoError(t, err)
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	return &env{srv: srv, nc: nc, js: js}
}

func (e *env) stream(t testing.TB, cfg jetstream.StreamConfig) jetstream.Stream {
	t.Helper()
	st, err := e.js.CreateStream(context.Background(), cfg)
	require.NoError(t, err)
	return st
}

func newSender(t testing.TB, e *env, opts hnats.Options) *hnats.Sender {
	t.Helper()
	opts.URL = e.srv.ClientURL()
	opts.ConnOptions = append(opts.ConnOptions, gonats.MaxReconnects(0))
	s, err := hnats.New(context.Background(), opts)
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, s.Close()) })
	return s
}

var due = time.Date(2026, 11, 25, 22, 0, 0, 9, time.UTC)

func envelope(dest, id string) transport.Envelope {
	return transport.Envelope{
		ID: id, Dest: dest, Attempt: 1, Due: due, Fired: due.Add(time.Millisecond), Key: "",
		Headers: []transport.Header{{Key: "X-A", Value: "1"}, {Key: "x-a", Value: "2"}},
		Payload: []byte("payload-" + id),
	}
}

func withHeader(e transport.Envelope, k, v string) transport.Envelope {
	e.Headers = append(e.Headers, transport.Header{Key: k, Value: v})
	return e
}

func send(ctx context.Context, s transport.Sender, batch ...transport.Envelope) []transport.Outcome {
	out := make([]transport.Outcome, len(batch))
	s.Send(ctx, batch, out)
	return out
}

func requireAll(t *testing.T, want transport.Status, out []transport.Outcome) {
	t.Helper()
	for i, o := range out {
		require.Equal(t, want, o.Status, "%d: %v", i, o)
	}
}

func TestCorePublishWithHeaders(t *testing.T) {
	e := startServer(t, nil)
	sub, err := e.nc.SubscribeSync("orders.created")
	require.NoError(t, err)
	require.NoError(t, e.nc.Flush())
	s := newSender(t, e, hnats.Options{})
	k := envelope("nats://orders.created", "m1")
	k.Key = "idem"
	requireAll(t, transport.StatusDelivered, send(context.Background(), s, k, envelope("nats://orders.created", "m2")))
	m, err := sub.NextMsg(10 * time.Second)
	require.NoError(t, err)
	require.Equal(t, "payload-m1", string(m.Data))
	require.Equal(t, "m1", m.Header.Get(transport.HeaderID))
	require.Equal(t, "1", m.Header.Get(transport.HeaderAttempt))
	require.Equal(t, "2026-11-25T22:00:00.000000009Z", m.Header.Get(transport.HeaderDue))
	require.Equal(t, "2026-11-25T22:00:00.001000009Z", m.Header.Get(transport.HeaderFired))
	require.Equal(t, "idem", m.Header.Get(transport.HeaderKey))
	require.Equal(t, []string{"1"}, m.Header.Values("X-A"), "NATS headers keep case")
	require.Equal(t, []string{"2"}, m.Header.Values("x-a"))
	m, err = sub.NextMsg(10 * time.Second)
	require.NoError(t, err)
	require.Equal(t, "m2", m.Header.Get(transport.HeaderID))
	require.Empty(t, m.Header.Values(transport.HeaderKey))
}

func TestJetStreamPublishDeduplicates(t *testing.T) {
	e := startServer(t, nil)
	st := e.stream(t, jetstream.StreamConfig{Name: "EVENTS", Subjects: []string{"events.>"}, Storage: jetstream.MemoryStorage})
	s := newSender(t, e, hnats.Options{})
	a, b := envelope("jetstream://events.a", "m1"), envelope("jetstream://events.a", "m2")
	b.Key = "idem-2"
	requireAll(t, transport.StatusDelivered, send(context.Background(), s, a, b))
	// A retry of the same messages (after a lost ack, say) is stored once.
	a.Attempt, b.Attempt = 2, 2
	requireAll(t, transport.StatusDelivered, send(context.Background(), s, a, b))
	info, err := st.Info(context.Background())
	require.NoError(t, err)
	require.EqualValues(t, 2, info.State.Msgs)

	raw, err := st.GetMsg(context.Background(), 1)
	require.NoError(t, err)
	require.Equal(t, "m1", raw.Header.Get(transport.HeaderID))
	require.Equal(t, "m1", raw.Header.Get(jetstream.MsgIDHeader))
	require.Equal(t, "payload-m1", string(raw.Data))
	raw, err = st.GetMsg(context.Background(), 2)
	require.NoError(t, err)
	require.Equal(t, "m2", raw.Header.Get(jetstream.MsgIDHeader), "Nats-Msg-Id = the message ID, never the idempotency key")
	require.Equal(t, "idem-2", raw.Header.Get(transport.HeaderKey), "the idempotency key travels as a header")
}

func TestFailureOutcomes(t *testing.T) {
	e := startServer(t, func(o *server.Options) { o.MaxPayload = 4096 })
	e.stream(t, jetstream.StreamConfig{Name: "SMALL", Subjects: []string{"small.>"}, Storage: jetstream.MemoryStorage, MaxMsgSize: 64})
	s := newSender(t, e, hnats.Options{})
	big := envelope("nats://big", "big")
	big.Payload = make([]byte, 8192)
	jsBig := envelope("jetstream://small.x", "jsbig")
	jsBig.Payload = make([]byte, 512)
	out := send(context.Background(), s,
		big,                                     // over the server's max_payload
		jsBig,                                   // over the stream's max message size
		envelope("jetstream://nostream.x", "n"), // no stream listens: retried (it may be created)
		envelope("nats://bad..subject", "b"),    // invalid subject
		envelope("kafka://x", "k"),              // not ours
		withHeader(envelope("jetstream://small.x", "r"), "nats-rollup", "all"), // would purge the stream
	)
	require.Equal(t, transport.StatusReject, out[5].Status, out[5].String())
	require.ErrorIs(t, out[5].Err, hnats.ErrReservedHeader)
	require.Equal(t, transport.StatusReject, out[0].Status, out[0].String())
	require.ErrorIs(t, out[0].Err, gonats.ErrMaxPayload)
	require.Equal(t, transport.StatusReject, out[1].Status, out[1].String())
	require.ErrorContains(t, out[1].Err, "message size exceeds maximum")
	require.Equal(t, transport.StatusRetry, out[2].Status, out[2].String())
	require.Equal(t, transport.StatusReject, out[3].Status, out[3].String())
	require.ErrorIs(t, out[3].Err, transport.ErrBadDestination)
	require.Equal(t, transport.StatusReject, out[4].Status, out[4].String())
}

func TestServerDownRetries(t *testing.T) {
	e := startServer(t, nil)
	e.stream(t, jetstream.StreamConfig{Name: "EVENTS", Subjects: []string{"events.>"}, Storage: jetstream.MemoryStorage})
	s := newSender(t, e, hnats.Options{})
	e.srv.Shutdown()
	e.srv.WaitForShutdown()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	out := send(ctx, s, envelope("nats://a", "a"), envelope("jetstream://events.a", "b"))
	requireAll(t, transport.StatusRetry, out)
}

func TestContextCancelled(t *testing.T) {
	e := startServer(t, nil)
	s := newSender(t, e, hnats.Options{})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	out := send(ctx, s, envelope("nats://a", "a"), envelope("jetstream://events.a", "b"))
	requireAll(t, transport.StatusRetry, out)
	require.ErrorIs(t, out[0].Err, context.Canceled)
	require.ErrorIs(t, out[1].Err, context.Canceled)
}

func TestValidate(t *testing.T) {
	e := startServer(t, nil)
	s := newSender(t, e, hnats.Options{})
	for dest, ok := range map[string]bool{
		"nats://orders.created":  true,
		"jetstream://a.b-c_d.E9": true,
		"nats://orders.*":        false,
		"jetstream://orders.>":   false,
		"nats://orders..created": false,
		"nats://.orders":         false,
		"nats://has space":       false,
		"kafka://orders":         false,
	} {
		d, err := transport.ParseDestination(dest)
		require.NoError(t, err)
		if ok {
			require.NoError(t, s.Validate(d), dest)
		} else {
			require.ErrorIs(t, s.Validate(d), transport.ErrBadDestination, dest)
		}
	}
	_, err := hnats.New(context.Background(), hnats.Options{})
	require.ErrorIs(t, err, hnats.ErrNoConnection)
}

func TestCloseRetries(t *testing.T) {
	e := startServer(t, nil)
	s, err := hnats.New(context.Background(), hnats.Options{Conn: e.nc})
	require.NoError(t, err)
	require.NoError(t, s.Close())
	require.True(t, e.nc.IsConnected(), "a caller's connection stays open")
	o := send(context.Background(), s, envelope("nats://a", "a"))[0]
	require.ErrorIs(t, o.Err, transport.ErrClosed)
	_, err = s.CancelNative(context.Background(), "x", transport.Destination{})
	require.ErrorIs(t, err, transport.ErrClosed)
}

// nativeEnv has a JOBS stream allowing schedules, a native route for
// jobs.>, and a consumer collecting what fires on jobs.>.
type nativeEnv struct {
	*env
	st     jetstream.Stream
	s      *hnats.Sender
	fired  chan firedMsg
	prefix string
}

type firedMsg struct {
	at  time.Time
	msg jetstream.Msg
}

func startNative(t testing.TB) *nativeEnv {
	t.Helper()
	e := startServer(t, nil)
	st := e.stream(t, jetstream.StreamConfig{
		Name: "JOBS", Subjects: []string{"jobs.>", "sched.jobs.>"}, Storage: jetstream.FileStorage,
		AllowMsgSchedules: true,
	})
	s := newSender(t, e, hnats.Options{Native: []hnats.NativeRoute{{Subjects: "jobs.>", Stream: "JOBS", Prefix: "sched.jobs"}}})
	n := &nativeEnv{env: e, st: st, s: s, fired: make(chan firedMsg, 1024), prefix: "sched.jobs"}
	cons, err := st.OrderedConsumer(context.Background(), jetstream.OrderedConsumerConfig{FilterSubjects: []string{"jobs.>"}})
	require.NoError(t, err)
	cc, err := cons.Consume(func(m jetstream.Msg) { n.fired <- firedMsg{time.Now(), m} })
	require.NoError(t, err)
	t.Cleanup(cc.Stop)
	return n
}

func (n *nativeEnv) schedule(t testing.TB, batch ...transport.Envelope) {
	t.Helper()
	out := make([]transport.Outcome, len(batch))
	n.s.ScheduleNative(context.Background(), batch, out)
	for i, o := range out {
		require.Equal(t, transport.StatusDelivered, o.Status, "%d: %v", i, o)
	}
}

func (n *nativeEnv) next(t testing.TB) firedMsg {
	t.Helper()
	select {
	case f := <-n.fired:
		return f
	case <-time.After(15 * time.Second):
		t.Fatal("no scheduled message fired")
		return firedMsg{}
	}
}

func native(dest, id string, due time.Time) transport.Envelope {
	e := envelope(dest, id)
	e.Due, e.Fired, e.Key = due, time.Time{}, "k-"+id
	return e
}

func TestNativeScheduleFiresWithHeaders(t *testing.T) {
	n := startNative(t)
	d, _ := transport.ParseDestination("jetstream://jobs.run")
	require.True(t, n.s.Native(d))
	other, _ := transport.ParseDestination("jetstream://events.x")
	require.False(t, n.s.Native(other))
	core, _ := transport.ParseDestination("nats://jobs.run")
	require.False(t, n.s.Native(core), "core subscribers never see fired messages, so nats:// is never native")

	at := time.Now().Add(600 * time.Millisecond)
	n.schedule(t, native("jetstream://jobs.run", "n1", at))
	f := n.next(t)
	require.False(t, f.at.Before(at), "fired %v before due %v", f.at, at)
	m := f.msg
	require.Equal(t, "jobs.run", m.Subject())
	require.Equal(t, "payload-n1", string(m.Data()))
	h := m.Headers()
	require.Equal(t, "n1", h.Get(transport.HeaderID))
	require.Equal(t, transport.FormatTime(at), h.Get(transport.HeaderDue))
	require.Equal(t, "k-n1", h.Get(transport.HeaderKey))
	require.Equal(t, []string{"1"}, h.Values("X-A"))
	require.Empty(t, h.Get(hnats.HeaderSchedule), "schedule headers are stripped on fire")
	require.Equal(t, "sched.jobs.n1", h.Get("Nats-Scheduler"))

	// The schedule subject is purged once it fired: cancel finds nothing.
	found, err := n.s.CancelNative(context.Background(), "n1", d)
	require.NoError(t, err)
	require.False(t, found)
}

func TestNativeCancelAndReschedule(t *testing.T) {
	n := startNative(t)
	d, _ := transport.ParseDestination("jetstream://jobs.run")
	base := time.Now().Add(time.Second)
	n.schedule(t,
		native("jetstream://jobs.run", "cancelled", base),
		native("jetstream://jobs.run", "moved", base.Add(time.Hour)),
		native("jetstream://jobs.run", "weird id/with.dots and spaces", base.Add(time.Hour)),
	)
	found, err := n.s.CancelNative(context.Background(), "cancelled", d)
	require.NoError(t, err)
	require.True(t, found)
	found, err = n.s.CancelNative(context.Background(), "weird id/with.dots and spaces", d)
	require.NoError(t, err)
	require.True(t, found, "IDs that are not subject tokens are encoded, and found again")
	found, err = n.s.CancelNative(context.Background(), "never-scheduled", d)
	require.NoError(t, err)
	require.False(t, found)

	// Reschedule "moved" from an hour away to just after the cancelled one's
	// due time: one ScheduleNative replaces the pending schedule.
	n.schedule(t, native("jetstream://jobs.run", "moved", base.Add(200*time.Millisecond)))
	f := n.next(t)
	require.Equal(t, "moved", f.msg.Headers().Get(transport.HeaderID), "the cancelled message must not fire")
	require.False(t, f.at.Before(base.Add(200*time.Millisecond)))
	select {
	case f := <-n.fired:
		t.Fatalf("unexpected second delivery %q", f.msg.Headers().Get(transport.HeaderID))
	default:
	}
	info, err := n.st.Info(context.Background(), jetstream.WithSubjectFilter("sched.jobs.>"))
	require.NoError(t, err)
	require.Empty(t, info.State.Subjects, "no schedule left behind: fired and cancelled ones are purged")
	info, err = n.st.Info(context.Background(), jetstream.WithSubjectFilter("jobs.>"))
	require.NoError(t, err)
	require.Equal(t, map[string]uint64{"jobs.run": 1}, info.State.Subjects, "exactly one fired message")

	// Not native, or not ours.
	out := make([]transport.Outcome, 1)
	n.s.ScheduleNative(context.Background(), []transport.Envelope{native("jetstream://events.x", "x", base)}, out)
	require.Equal(t, transport.StatusReject, out[0].Status)
	require.ErrorIs(t, out[0].Err, transport.ErrNotNative)
	other, _ := transport.ParseDestination("jetstream://events.x")
	_, err = n.s.CancelNative(context.Background(), "x", other)
	require.ErrorIs(t, err, transport.ErrNotNative)
	sched, _ := transport.ParseDestination("jetstream://sched.jobs.x")
	require.ErrorIs(t, n.s.Validate(sched), transport.ErrBadDestination, "schedule subjects are not destinations")
}

// TestNativeLateness measures how late JetStream fires schedules: the
// server's timer never re-arms sooner than 250 ms. It checks the invariant
// that matters (never early) and logs the figures for the design notes.
func TestNativeLateness(t *testing.T) {
	n := startNative(t)
	const count = 40
	start := time.Now().Add(400 * time.Millisecond)
	batch := make([]transport.Envelope, count)
	dues := make(map[string]time.Time, count)
	for i := range batch {
		id := fmt.Sprintf("l%02d", i)
		at := start.Add(time.Duration(i) * 25 * time.Millisecond) // one due every 25 ms over 1 s
		batch[i] = native("jetstream://jobs.run", id, at)
		dues[id] = at
	}
	n.schedule(t, batch...)
	var late []time.Duration
	for range count {
		f := n.next(t)
		id := f.msg.Headers().Get(transport.HeaderID)
		d := f.at.Sub(dues[id])
		require.GreaterOrEqual(t, d, time.Duration(0), "%s fired %v early", id, -d)
		late = append(late, d)
	}
	slices.Sort(late)
	t.Logf("native schedule lateness, %d due every 25 ms: min %v p50 %v p90 %v max %v",
		count, late[0].Round(time.Millisecond), late[count/2].Round(time.Millisecond),
		late[count*9/10].Round(time.Millisecond), late[count-1].Round(time.Millisecond))

	// One message alone, scheduled well ahead: the timer is armed for its
	// due time exactly, so it fires promptly.
	at := time.Now().Add(500 * time.Millisecond)
	n.schedule(t, native("jetstream://jobs.run", "alone", at))
	f := n.next(t)
	require.False(t, f.at.Before(at))
	t.Logf("native schedule lateness, one message 500 ms ahead: %v", f.at.Sub(at).Round(time.Millisecond))

	// One message due in 20 ms: the 250 ms floor applies.
	at = time.Now().Add(20 * time.Millisecond)
	n.schedule(t, native("jetstream://jobs.run", "soon", at))
	f = n.next(t)
	require.False(t, f.at.Before(at))
	t.Logf("native schedule lateness, one message due in 20 ms: %v", f.at.Sub(at).Round(time.Millisecond))
}

func TestNativeRouteChecks(t *testing.T) {
	e := startServer(t, nil)
	e.stream(t, jetstream.StreamConfig{Name: "PLAIN", Subjects: []string{"plain.>", "hourglass.sched.>"}, Storage: jetstream.MemoryStorage})
	e.stream(t, jetstream.StreamConfig{Name: "SCHED", Subjects: []string{"sched.>"}, Storage: jetstream.MemoryStorage, AllowMsgSchedules: true})
	for _, tc := range []struct {
		route hnats.NativeRoute
		err   string
	}{
		{hnats.NativeRoute{Subjects: "plain.>", Stream: "PLAIN"}, "does not set AllowMsgSchedules"},
		{hnats.NativeRoute{Subjects: "sched.>", Stream: "SCHED"}, `do not include "hourglass.sched.>"`},
		{hnats.NativeRoute{Subjects: "sched.>", Stream: "SCHED", Prefix: "sched.s"}, "overlaps"},
		{hnats.NativeRoute{Subjects: "x.>", Stream: "MISSING"}, "stream not found"},
		{hnats.NativeRoute{Subjects: "x..y", Stream: "SCHED"}, "not a valid subject filter"},
	} {
		_, err := hnats.New(context.Background(), hnats.Options{Conn: e.nc, Native: []hnats.NativeRoute{tc.route}})
		require.Error(t, err, "%+v", tc.route)
		require.True(t, strings.Contains(err.Error(), tc.err), "%+v: %v", tc.route, err)
	}
}

func TestConcurrentSends(t *testing.T) {
	e := startServer(t, nil)
	st := e.stream(t, jetstream.StreamConfig{Name: "EVENTS", Subjects: []string{"events.>"}, Storage: jetstream.MemoryStorage})
	sub, err := e.nc.SubscribeSync("core.>")
	require.NoError(t, err)
	require.NoError(t, e.nc.Flush())
	s := newSender(t, e, hnats.Options{})
	const dispatchers, each = 4, 25
	var wg sync.WaitGroup
	for d := range dispatchers {
		wg.Go(func() {
			batch := make([]transport.Envelope, 0, 2*each)
			for i := range each {
				batch = append(batch, envelope("jetstream://events.x", fmt.Sprintf("d%d-%d", d, i)),
					envelope("nats://core.x", fmt.Sprintf("d%d-%d", d, i)))
			}
			for _, o := range send(context.Background(), s, batch...) {
				if o.Status != transport.StatusDelivered {
					t.Errorf("dispatcher %d: %v", d, o)
				}
			}
		})
	}
	wg.Wait()
	info, err := st.Info(context.Background())
	require.NoError(t, err)
	require.EqualValues(t, dispatchers*each, info.State.Msgs)
	for range dispatchers * each {
		_, err := sub.NextMsg(10 * time.Second)
		require.NoError(t, err)
	}
}

// TestLostAckRetries: a core subscriber (not a stream) swallows the
// publish, so no ack ever comes. The ack timeout, or the caller's context,
// turns that into a Retry instead of a Send that never returns.
func TestLostAckRetries(t *testing.T) {
	e := startServer(t, nil)
	sub, err := e.nc.SubscribeSync("blackhole.>")
	require.NoError(t, err)
	defer func() { _ = sub.Unsubscribe() }()
	require.NoError(t, e.nc.Flush())

	s := newSender(t, e, hnats.Options{AckTimeout: 200 * time.Millisecond})
	o := send(context.Background(), s, envelope("jetstream://blackhole.x", "a"))[0]
	require.Equal(t, transport.StatusRetry, o.Status, o.String())
	require.ErrorIs(t, o.Err, jetstream.ErrAsyncPublishTimeout)

	slow := newSender(t, e, hnats.Options{AckTimeout: time.Minute})
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	o = send(ctx, slow, envelope("jetstream://blackhole.x", "b"))[0]
	require.Equal(t, transport.StatusRetry, o.Status, o.String())
	require.ErrorIs(t, o.Err, context.DeadlineExceeded)
}
