package transport_test

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/hourglassmq/hourglass/transport"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// fakeSender accepts targets that do not contain "bad" and delivers all.
type fakeSender struct {
	closed int
}

func (f *fakeSender) Send(_ context.Context, batch []transport.Envelope, out []transport.Outcome) {
	for i := range batch {
		out[i] = transport.Delivered()
	}
}

func (f *fakeSender) Validate(d transport.Destination) error {
	if strings.Contains(d.Target, "bad") {
		return &transport.DestinationError{Dest: d.Raw, Err: transport.ErrBadDestination, Reason: "bad target", Allowed: []string{"good"}}
	}
	return nil
}

func (f *fakeSender) Close() error { f.closed++; return nil }

type fakeNative struct{ fakeSender }

func (f *fakeNative) Native(d transport.Destination) bool {
	return strings.HasPrefix(d.Target, "sched.")
}
func (f *fakeNative) ScheduleNative(ctx context.Context, b []transport.Envelope, out []transport.Outcome) {
	f.Send(ctx, b, out)
}
func (f *fakeNative) CancelNative(context.Context, string, transport.Destination) (bool, error) {
	return false, nil
}

func TestParseDestination(t *testing.T) {
	for _, tc := range []struct {
		in             string
		scheme, target string
		err            string
	}{
		{in: "https://example.com/hook", scheme: "https", target: "example.com/hook"},
		{in: "NATS://orders.created", scheme: "nats", target: "orders.created"},
		{in: "jetstream://a.b", scheme: "jetstream", target: "a.b"},
		{in: "kafka://topic-1", scheme: "kafka", target: "topic-1"},
		{in: "orders.created", err: `want "scheme://target"`},
		{in: "://x", err: `want "scheme://target"`},
		{in: "kafka://", err: "empty target"},
		{in: "1x://y", err: "not a valid URL scheme"},
		{in: "a b://y", err: "not a valid URL scheme"},
	} {
		t.Run(tc.in, func(t *testing.T) {
			d, err := transport.ParseDestination(tc.in)
			if tc.err != "" {
				require.ErrorIs(t, err, transport.ErrBadDestination)
				require.ErrorContains(t, err, tc.err)
				return
			}
			require.NoError(t, err)
			require.Equal(t, tc.scheme, d.Scheme)
			require.Equal(t, tc.target, d.Target)
			require.Equal(t, tc.in, d.String())
		})
	}
}

func TestValidateHeaders(t *testing.T) {
	require.NoError(t, transport.ValidateHeaders(nil))
	require.NoError(t, transport.ValidateHeaders([]transport.Header{{Key: "Content-Type", Value: "application/json"}, {Key: "X-Trace", Value: ""}, {Key: "X-Tab", Value: "a\tb"}}))
	for _, tc := range []struct {
		h   transport.Header
		err string
	}{
		{transport.Header{Key: "", Value: "v"}, "empty name"},
		{transport.Header{Key: "Bad Name", Value: "v"}, "not allowed"},
		{transport.Header{Key: "Bad:Name", Value: "v"}, "not allowed"},
		{transport.Header{Key: "hourglass-id", Value: "v"}, "reserved prefix"},
		{transport.Header{Key: "X-Ok", Value: "a\r\nInjected: 1"}, "control character at byte 1"},
		{transport.Header{Key: "X-Ok", Value: "bell\a"}, "control character at byte 4"},
		{transport.Header{Key: "X-Ok", Value: "nul\x00"}, "control character at byte 3"},
		{transport.Header{Key: "X-Ok", Value: "del\x7f"}, "control character at byte 3"},
	} {
		err := transport.ValidateHeaders([]transport.Header{tc.h})
		require.ErrorIs(t, err, transport.ErrBadHeader, "%+v", tc.h)
		require.ErrorContains(t, err, tc.err)
	}
}

func TestForEachHeader(t *testing.T) {
	due := time.Date(2026, 11, 25, 21, 0, 0, 123456789, time.FixedZone("x", 3600))
	e := transport.Envelope{ID: "m1", Attempt: 3, Due: due, Key: "k", Headers: []transport.Header{{Key: "A", Value: "1"}, {Key: "A", Value: "2"}}}
	var got []string
	e.ForEachHeader(func(k, v string) { got = append(got, k+"="+v) })
	require.Equal(t, []string{
		"Hourglass-Id=m1", "Hourglass-Attempt=3", "Hourglass-Due=2026-11-25T20:00:00.123456789Z",
		"Hourglass-Key=k", "A=1", "A=2",
	}, got)
	require.Equal(t, "m1", e.PartitionKey(), "the idempotency key is not the partition key")
	e.RoutingKey = "customer-7"
	require.Equal(t, "customer-7", e.PartitionKey())
}

func TestOutcomeZeroIsRetry(t *testing.T) {
	var o transport.Outcome
	require.Equal(t, transport.StatusRetry, o.Status)
	require.Equal(t, "delivered", transport.Delivered().String())
	require.Equal(t, time.Duration(0), transport.Retry(errors.New("x"), -time.Second).RetryAfter)
	require.Contains(t, transport.Retry(errors.New("busy"), time.Second).String(), "retry after 1s: busy")
	require.Contains(t, transport.Reject(errors.New("gone")).String(), "reject: gone")
}

func TestRegistry(t *testing.T) {
	r := transport.NewRegistry()
	web, bus := &fakeSender{}, &fakeNative{}
	require.NoError(t, r.Register(web, "http", "HTTPS"))
	require.NoError(t, r.Register(bus, "nats", "jetstream"))
	require.ErrorIs(t, r.Register(&fakeSender{}, "kafka", "http"), transport.ErrSchemeTaken)
	_, ok := r.Lookup("kafka")
	require.False(t, ok, "a failed Register must map none of its schemes")
	require.Error(t, r.Register(&fakeSender{}, "bad scheme"))
	require.Equal(t, []string{"http", "https", "jetstream", "nats"}, r.Schemes())

	d, s, err := r.Resolve("HTTPS://example.com/x")
	require.NoError(t, err)
	require.Same(t, web, s)
	require.Equal(t, "https", d.Scheme)

	err = r.Validate("kafka://t")
	require.ErrorIs(t, err, transport.ErrUnknownScheme)
	require.EqualError(t, err, `transport: unknown destination scheme "kafka://t": no transport serves "kafka" (allowed: http://, https://, jetstream://, nats://)`)

	err = r.Validate("no-scheme")
	require.ErrorIs(t, err, transport.ErrBadDestination)
	require.ErrorContains(t, err, "allowed: http://")

	err = r.Validate("http://bad.example")
	require.ErrorIs(t, err, transport.ErrBadDestination)
	require.ErrorContains(t, err, "(allowed: good)")

	ns, nd, ok := r.Native("jetstream://sched.x")
	require.True(t, ok)
	require.Same(t, bus, ns)
	require.Equal(t, "sched.x", nd.Target)
	_, _, ok = r.Native("jetstream://plain")
	require.False(t, ok)
	_, _, ok = r.Native("http://example.com")
	require.False(t, ok)

	require.NoError(t, r.Close())
	require.Equal(t, 1, web.closed, "a sender serving two schemes is closed once")
	require.Equal(t, 1, bus.closed)
	require.NoError(t, r.Close())
	require.Equal(t, 1, web.closed)
	require.ErrorIs(t, r.Register(&fakeSender{}, "kafka"), transport.ErrClosed)
}

func TestEmptyRegistry(t *testing.T) {
	err := transport.NewRegistry().Validate("http://x")
	require.ErrorContains(t, err, "no transports are registered")
}

// TestNoBrokerSDKs keeps the contract free of broker SDKs, so importing the
// engine never links one.
func TestNoBrokerSDKs(t *testing.T) {
	if testing.Short() {
		t.Skip("runs go list")
	}
	out, err := exec.Command("go", "list", "-deps", "github.com/hourglassmq/hourglass/transport").CombinedOutput()
	require.NoError(t, err, "%s", out)
	for _, dep := range strings.Fields(string(out)) {
		for _, banned := range []string{"github.com/nats-io/", "github.com/twmb/", "github.com/hourglassmq/hourglass/transport/"} {
			require.False(t, strings.HasPrefix(dep, banned), "transport imports %s", dep)
		}
		if strings.Contains(dep, ".") && !strings.HasPrefix(dep, "github.com/hourglassmq/hourglass") && strings.Contains(strings.SplitN(dep, "/", 2)[0], ".") {
			t.Errorf("transport depends on non-standard package %s", dep)
		}
	}
}

func ExampleRegistry_Validate() {
	r := transport.NewRegistry()
	_ = r.Register(&fakeSender{}, "http", "https")
	fmt.Println(r.Validate("ftp://example.com/file"))
	// Output: transport: unknown destination scheme "ftp://example.com/file": no transport serves "ftp" (allowed: http://, https://)
}
