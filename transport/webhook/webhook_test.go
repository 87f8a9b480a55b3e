package webhook_test

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/hourglassmq/hourglass/transport"
	"github.com/hourglassmq/hourglass/transport/webhook"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// received is one request as the receiver saw it.
type received struct {
	method string
	path   string
	header http.Header
	body   []byte
}

// recorder is a receiver that records requests and answers with respond.
type recorder struct {
	mu      sync.Mutex
	reqs    []received
	respond func(w http.ResponseWriter, r *http.Request)
}

func (rc *recorder) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	rc.mu.Lock()
	rc.reqs = append(rc.reqs, received{r.Method, r.URL.Path, r.Header.Clone(), body})
	rc.mu.Unlock()
	if rc.respond != nil {
		rc.respond(w, r)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (rc *recorder) all() []received {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return append([]received(nil), rc.reqs...)
}

func hostOf(t *testing.T, rawURL string) string {
	u, err := url.Parse(rawURL)
	require.NoError(t, err)
	return u.Host
}

func newSender(t *testing.T, opts webhook.Options) *webhook.Sender {
	t.Helper()
	s, err := webhook.New(opts)
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, s.Close()) })
	return s
}

func send(s transport.Sender, batch ...transport.Envelope) []transport.Outcome {
	out := make([]transport.Outcome, len(batch))
	s.Send(context.Background(), batch, out)
	return out
}

var (
	secret = []byte("s3cret")
	due    = time.Date(2026, 11, 25, 22, 0, 0, 5, time.UTC)
	fired  = due.Add(3 * time.Millisecond)
)

func envelope(dest, id string) transport.Envelope {
	return transport.Envelope{
		ID: id, Dest: dest, Attempt: 2, Due: due, Fired: fired, Key: "order-7",
		Headers: []transport.Header{{Key: "X-Tenant", Value: "a"}, {Key: "X-Tenant", Value: "b"}},
		Payload: []byte(`{"n":1}`),
	}
}

func TestDeliversWithHeadersAndSignature(t *testing.T) {
	rc := &recorder{}
	srv := httptest.NewServer(rc)
	defer srv.Close()
	now := time.Unix(1764108000, 0)
	s := newSender(t, webhook.Options{
		AllowedHosts: []string{hostOf(t, srv.URL)},
		Secrets:      [][]byte{secret, []byte("next")},
		Now:          func() time.Time { return now },
	})
	e := envelope(srv.URL+"/hooks/a?token=x", "msg-1")
	plain := envelope(srv.URL+"/hooks/b", "msg-2")
	plain.Key, plain.Headers, plain.Fired = "", []transport.Header{{Key: "Content-Type", Value: "application/json"}}, time.Time{}
	out := send(s, e, plain)
	require.Equal(t, transport.StatusDelivered, out[0].Status, out[0].String())
	require.Equal(t, transport.StatusDelivered, out[1].Status, out[1].String())

	reqs := rc.all()
	require.Len(t, reqs, 2)
	byPath := map[string]received{reqs[0].path: reqs[0], reqs[1].path: reqs[1]}
	r := byPath["/hooks/a"]
	require.Equal(t, http.MethodPost, r.method)
	require.Equal(t, `{"n":1}`, string(r.body))
	require.Equal(t, "msg-1", r.header.Get(transport.HeaderID))
	require.Equal(t, "2", r.header.Get(transport.HeaderAttempt))
	require.Equal(t, "2026-11-25T22:00:00.000000005Z", r.header.Get(transport.HeaderDue))
	require.Equal(t, "2026-11-25T22:00:00.003000005Z", r.header.Get(transport.HeaderFired))
	require.Equal(t, "order-7", r.header.Get(transport.HeaderKey))
	require.Equal(t, []string{"a", "b"}, r.header.Values("X-Tenant"))
	require.Equal(t, "application/octet-stream", r.header.Get("Content-Type"))
	require.Equal(t, webhook.DefaultUserAgent, r.header.Get("User-Agent"))
	sig := r.header.Get(webhook.HeaderSignature)
	require.True(t, strings.HasPrefix(sig, "t=1764108000,v1="), sig)
	require.NoError(t, webhook.Verify(secret, sig, "msg-1", r.body, now, 5*time.Minute))
	require.NoError(t, webhook.Verify([]byte("next"), sig, "msg-1", r.body, now, 5*time.Minute), "rotation: the second secret signs too")

	r = byPath["/hooks/b"]
	require.Equal(t, "application/json", r.header.Get("Content-Type"))
	require.Empty(t, r.header.Values(transport.HeaderKey))
	require.Empty(t, r.header.Values(transport.HeaderFired))
}

func TestTLS(t *testing.T) {
	rc := &recorder{}
	srv := httptest.NewTLSServer(rc)
	defer srv.Close()
	roots := srv.Client().Transport.(*http.Transport).TLSClientConfig.RootCAs

	s := newSender(t, webhook.Options{AllowedHosts: []string{hostOf(t, srv.URL)}, TLSConfig: &tls.Config{RootCAs: roots}})
	out := send(s, envelope(srv.URL+"/tls", "m"))
	require.Equal(t, transport.StatusDelivered, out[0].Status, out[0].String())
	require.Len(t, rc.all(), 1)

	// Without the test CA the handshake fails: a network-class error, retried.
	untrusted := newSender(t, webhook.Options{AllowedHosts: []string{hostOf(t, srv.URL)}})
	out = send(untrusted, envelope(srv.URL+"/tls", "m"))
	require.Equal(t, transport.StatusRetry, out[0].Status)
	require.ErrorContains(t, out[0].Err, "certificate")
}

func TestStatusOutcomes(t *testing.T) {
	now := time.Date(2026, 11, 25, 22, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		name       string
		code       int
		retryAfter string
		want       transport.Status
		after      time.Duration
	}{
		{"200", 200, "", transport.StatusDelivered, 0},
		{"202", 202, "", transport.StatusDelivered, 0},
		{"204", 204, "", transport.StatusDelivered, 0},
		{"301 not followed", 301, "", transport.StatusReject, 0},
		{"400", 400, "", transport.StatusReject, 0},
		{"401", 401, "", transport.StatusReject, 0},
		{"404", 404, "", transport.StatusReject, 0},
		{"410", 410, "", transport.StatusReject, 0},
		{"408", 408, "", transport.StatusRetry, 0},
		{"429 seconds", 429, "7", transport.StatusRetry, 7 * time.Second},
		{"429 no header", 429, "", transport.StatusRetry, 0},
		{"429 garbage", 429, "soon", transport.StatusRetry, 0},
		{"503 http date", 503, now.Add(90 * time.Second).Format(http.TimeFormat), transport.StatusRetry, 90 * time.Second},
		{"503 date in the past", 503, now.Add(-time.Hour).Format(http.TimeFormat), transport.StatusRetry, 0},
		{"503 capped", 503, "86400", transport.StatusRetry, time.Hour},
		{"500", 500, "", transport.StatusRetry, 0},
		{"502", 502, "", transport.StatusRetry, 0},
		{"504", 504, "", transport.StatusRetry, 0},
		{"500 ignores Retry-After", 500, "5", transport.StatusRetry, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if tc.retryAfter != "" {
					w.Header().Set("Retry-After", tc.retryAfter)
				}
				if tc.code == 301 {
					w.Header().Set("Location", "http://elsewhere.example/")
				}
				w.WriteHeader(tc.code)
				_, _ = io.WriteString(w, "why: "+tc.name)
			}))
			defer srv.Close()
			s := newSender(t, webhook.Options{AllowedHosts: []string{hostOf(t, srv.URL)}, Now: func() time.Time { return now }})
			o := send(s, envelope(srv.URL, "m"))[0]
			require.Equal(t, tc.want, o.Status, o.String())
			require.Equal(t, tc.after, o.RetryAfter)
			if tc.want != transport.StatusDelivered {
				var se *webhook.StatusError
				require.ErrorAs(t, o.Err, &se)
				require.ErrorIs(t, o.Err, webhook.ErrStatus)
				require.Equal(t, tc.code, se.Code)
				require.Contains(t, o.Err.Error(), "why: "+tc.name, "the body snippet explains the dead letter")
			} else {
				require.NoError(t, o.Err)
			}
		})
	}
}

func TestNetworkErrorsRetry(t *testing.T) {
	// A receiver that is down: nothing listens on the port any more.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	down := "http://" + ln.Addr().String() + "/x"
	require.NoError(t, ln.Close())

	// A receiver that drops the connection mid-request.
	hang := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, _, err := w.(http.Hijacker).Hijack()
		if err == nil {
			_ = c.Close()
		}
	}))
	defer hang.Close()

	s := newSender(t, webhook.Options{AllowedHosts: []string{"127.0.0.1"}})
	out := send(s, envelope(down, "a"), envelope(hang.URL, "b"))
	for i, o := range out {
		require.Equal(t, transport.StatusRetry, o.Status, "%d: %v", i, o)
		require.Zero(t, o.RetryAfter)
	}
	require.ErrorContains(t, out[0].Err, "connection refused")
	require.ErrorContains(t, out[0].Err, "message a")
}

func TestSlowReceiverTimesOut(t *testing.T) {
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body) // lets the server notice the client leaving
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	defer srv.Close()
	defer close(release)
	s := newSender(t, webhook.Options{AllowedHosts: []string{hostOf(t, srv.URL)}, Timeout: 150 * time.Millisecond})
	start := time.Now()
	o := send(s, envelope(srv.URL, "slow"))[0]
	require.Equal(t, transport.StatusRetry, o.Status, o.String())
	require.ErrorContains(t, o.Err, "Client.Timeout")
	require.Less(t, time.Since(start), 5*time.Second)
}

func TestContextCancelRetries(t *testing.T) {
	arrived := make(chan struct{}, 8)
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		arrived <- struct{}{}
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	defer srv.Close()
	defer close(release)
	s := newSender(t, webhook.Options{AllowedHosts: []string{hostOf(t, srv.URL)}})
	ctx, cancel := context.WithCancel(context.Background())
	out := make([]transport.Outcome, 3)
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.Send(ctx, []transport.Envelope{envelope(srv.URL, "a"), envelope(srv.URL, "b"), envelope(srv.URL, "c")}, out)
	}()
	waitN(t, arrived, 3)
	cancel()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Send did not return after cancel")
	}
	for _, o := range out {
		require.Equal(t, transport.StatusRetry, o.Status)
		require.ErrorIs(t, o.Err, context.Canceled)
	}
	// An already-cancelled context sends nothing.
	out2 := make([]transport.Outcome, 1)
	s.Send(ctx, []transport.Envelope{envelope(srv.URL, "d")}, out2)
	require.ErrorIs(t, out2[0].Err, context.Canceled)
}

func waitN(t *testing.T, ch <-chan struct{}, n int) {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for range n {
		select {
		case <-ch:
		case <-deadline:
			t.Fatalf("timed out waiting for %d signals", n)
		}
	}
}

func TestConcurrencyBounded(t *testing.T) {
	const limit, total = 4, 20
	var inflight, peak atomic.Int32
	arrived := make(chan struct{}, total)
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := inflight.Add(1)
		for {
			p := peak.Load()
			if n <= p || peak.CompareAndSwap(p, n) {
				break
			}
		}
		arrived <- struct{}{}
		<-release
		inflight.Add(-1)
	}))
	defer srv.Close()
	s := newSender(t, webhook.Options{AllowedHosts: []string{hostOf(t, srv.URL)}, MaxConcurrency: limit})
	batch := make([]transport.Envelope, total)
	for i := range batch {
		batch[i] = envelope(srv.URL, "m")
	}
	out := make([]transport.Outcome, total)
	done := make(chan struct{})
	go func() { defer close(done); s.Send(context.Background(), batch, out) }()
	waitN(t, arrived, limit) // the first wave fills the limit ...
	require.EqualValues(t, limit, inflight.Load())
	close(release) // ... and nothing more starts until it drains.
	<-done
	require.EqualValues(t, limit, peak.Load())
	for _, o := range out {
		require.Equal(t, transport.StatusDelivered, o.Status)
	}
}

func TestAllowList(t *testing.T) {
	s := newSender(t, webhook.Options{AllowedHosts: []string{"hooks.example.com", "api.example.com:8443", "*.svc.example.org", "[::1]", "10.0.0.7:80"}})
	for _, tc := range []struct {
		dest string
		ok   bool
	}{
		{"https://hooks.example.com/a", true},
		{"http://HOOKS.example.com:9000/a", true},
		{"https://api.example.com:8443/x", true},
		{"https://api.example.com/x", false}, // port 443 ≠ 8443
		{"https://a.svc.example.org/x", true},
		{"https://a.b.svc.example.org/x", true},
		{"https://svc.example.org/x", false}, // the wildcard does not cover the apex
		{"https://evilsvc.example.org/x", false},
		{"http://[::1]:8080/x", true},
		{"http://10.0.0.7/x", true},
		{"https://10.0.0.7/x", false},
		{"http://169.254.169.254/latest/meta-data", false},
		{"https://hooks.example.com.evil.io/a", false},
		{"ftp://hooks.example.com/a", false},
		{"https:///nohost", false},
		{"https://hooks.example.com/%zz", false},
	} {
		d, err := transport.ParseDestination(tc.dest)
		if err == nil {
			err = s.Validate(d)
		}
		if tc.ok {
			require.NoError(t, err, tc.dest)
			continue
		}
		require.ErrorIs(t, err, transport.ErrBadDestination, tc.dest)
	}

	d, _ := transport.ParseDestination("https://other.example.com/x")
	err := s.Validate(d)
	require.ErrorIs(t, err, webhook.ErrHostNotAllowed)
	require.EqualError(t, err, `transport: invalid destination: webhook: host not on the allow-list "https://other.example.com/x": host "other.example.com" is not on the webhook allow-list (allowed: hooks.example.com, api.example.com:8443, *.svc.example.org, [::1], 10.0.0.7:80)`)

	// Default: nothing is allowed, and the error says why.
	none := newSender(t, webhook.Options{})
	err = none.Validate(d)
	require.ErrorIs(t, err, webhook.ErrHostNotAllowed)
	require.ErrorContains(t, err, "Options.AllowedHosts is empty")

	for _, bad := range []string{"", "a/b", "*", "host:99999", "user@host"} {
		_, err := webhook.New(webhook.Options{AllowedHosts: []string{bad}})
		require.Error(t, err, "%q", bad)
	}
}

func TestSendRejectsDisallowedHost(t *testing.T) {
	rc := &recorder{}
	srv := httptest.NewServer(rc)
	defer srv.Close()
	s := newSender(t, webhook.Options{AllowedHosts: []string{"hooks.example.com"}})
	out := send(s, envelope(srv.URL, "m"), envelope("::bad", "n"))
	require.Equal(t, transport.StatusReject, out[0].Status)
	require.ErrorIs(t, out[0].Err, webhook.ErrHostNotAllowed)
	require.Equal(t, transport.StatusReject, out[1].Status)
	require.ErrorIs(t, out[1].Err, transport.ErrBadDestination)
	require.Empty(t, rc.all(), "nothing was sent")
}

func TestRegistryIntegration(t *testing.T) {
	s := newSender(t, webhook.Options{AllowedHosts: []string{"hooks.example.com"}})
	r := transport.NewRegistry()
	require.NoError(t, r.Register(s, "http", "https"))
	require.NoError(t, r.Validate("https://hooks.example.com/x"))
	require.ErrorIs(t, r.Validate("https://evil.example.com/x"), webhook.ErrHostNotAllowed)
	require.ErrorIs(t, r.Validate("nats://x"), transport.ErrUnknownScheme)
}

func TestCloseRetries(t *testing.T) {
	s, err := webhook.New(webhook.Options{AllowedHosts: []string{"hooks.example.com"}})
	require.NoError(t, err)
	require.NoError(t, s.Close())
	o := send(s, envelope("https://hooks.example.com/", "m"))[0]
	require.Equal(t, transport.StatusRetry, o.Status)
	require.ErrorIs(t, o.Err, transport.ErrClosed)
}

func TestVerify(t *testing.T) {
	now := time.Unix(1764108000, 0)
	body := []byte("payload")
	sig := "t=1764108000,v1=" + webhook.Signature(secret, now.Unix(), "id-1", body)
	require.NoError(t, webhook.Verify(secret, sig, "id-1", body, now, time.Minute))
	require.NoError(t, webhook.Verify(secret, sig, "id-1", body, now.Add(time.Hour), 0), "tolerance 0 skips the time check")

	for _, tc := range []struct {
		name   string
		secret []byte
		header string
		id     string
		body   string
		now    time.Time
		want   error
	}{
		{"tampered body", secret, sig, "id-1", "payloaD", now, webhook.ErrBadSignature},
		{"other id", secret, sig, "id-2", "payload", now, webhook.ErrBadSignature},
		{"other secret", []byte("x"), sig, "id-1", "payload", now, webhook.ErrBadSignature},
		{"stale", secret, sig, "id-1", "payload", now.Add(2 * time.Minute), webhook.ErrStaleSignature},
		{"from the future", secret, sig, "id-1", "payload", now.Add(-2 * time.Minute), webhook.ErrStaleSignature},
		{"missing", secret, "", "id-1", "payload", now, webhook.ErrNoSignature},
		{"no v1", secret, "t=1764108000", "id-1", "payload", now, webhook.ErrNoSignature},
		{"bad t", secret, "t=x,v1=00", "id-1", "payload", now, webhook.ErrNoSignature},
		{"not hex", secret, "t=1764108000,v1=zz", "id-1", "payload", now, webhook.ErrBadSignature},
	} {
		err := webhook.Verify(tc.secret, tc.header, tc.id, []byte(tc.body), tc.now, time.Minute)
		require.True(t, errors.Is(err, tc.want), "%s: got %v", tc.name, err)
	}
	require.ErrorIs(t, webhook.Verify(nil, sig, "id-1", body, now, time.Minute), webhook.ErrEmptySecret)
	_, err := webhook.New(webhook.Options{Secrets: [][]byte{secret, {}}})
	require.ErrorIs(t, err, webhook.ErrEmptySecret)
	// Rotation: any matching v1 is enough.
	two := sig + ",v1=" + webhook.Signature([]byte("new"), now.Unix(), "id-1", body)
	require.NoError(t, webhook.Verify([]byte("new"), two, "id-1", body, now, time.Minute))
	require.NoError(t, webhook.Verify(secret, two, "id-1", body, now, time.Minute))
}

func ExampleVerify() {
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
		if err != nil {
			http.Error(w, "read error", http.StatusBadRequest)
			return
		}
		id := r.Header.Get(transport.HeaderID)
		if err := webhook.Verify(secret, r.Header.Get(webhook.HeaderSignature), id, body, time.Now(), 5*time.Minute); err != nil {
			http.Error(w, err.Error(), http.StatusUnauthorized) // 401: rejected, not retried
			return
		}
		// Deduplicate on id, then process body.
		w.WriteHeader(http.StatusNoContent)
	})
	http.Handle("/hooks/hourglass", handler)
}

func TestConcurrentSends(t *testing.T) {
	var got atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		got.Add(1)
		w.WriteHeader(http.StatusOK)
	}))
	defer srv.Close()
	s := newSender(t, webhook.Options{AllowedHosts: []string{hostOf(t, srv.URL)}, MaxConcurrency: 4})
	const dispatchers, each = 4, 25
	var wg sync.WaitGroup
	for d := range dispatchers {
		wg.Go(func() {
			batch := make([]transport.Envelope, each)
			for i := range batch {
				batch[i] = envelope(srv.URL, fmt.Sprintf("d%d-%d", d, i))
			}
			for _, o := range send(s, batch...) {
				if o.Status != transport.StatusDelivered {
					t.Errorf("dispatcher %d: %v", d, o)
				}
			}
		})
	}
	wg.Wait()
	require.EqualValues(t, dispatchers*each, got.Load())
}
