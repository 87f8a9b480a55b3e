package webhook

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hourglassmq/hourglass/transport"
)

// Header names specific to webhooks.
const (
	// HeaderSignature carries "t=<unix seconds>,v1=<hex HMAC-SHA256>", one
	// v1 per configured secret. See the package documentation.
	HeaderSignature = "Hourglass-Signature"
)

// Defaults for the zero Options.
const (
	// DefaultTimeout bounds one request: long enough for a slow receiver,
	// short enough that a hung one does not hold a dispatcher for long.
	DefaultTimeout = 10 * time.Second
	// DefaultMaxConcurrency is the requests in flight per Send: enough to
	// hide round trips, few enough not to flood one receiver.
	DefaultMaxConcurrency = 32
	// DefaultMaxConnsPerHost bounds pooled connections per host, so several
	// dispatchers share a bounded pool.
	DefaultMaxConnsPerHost = 64
	// DefaultMaxRetryAfter caps a receiver's Retry-After, so a bogus value
	// cannot park a message for days.
	DefaultMaxRetryAfter = time.Hour
	// DefaultUserAgent identifies Hourglass to receivers.
	DefaultUserAgent = "hourglass-webhook/1"
	// maxDrain is how much of a response body is read so the connection can
	// be reused; a longer body costs a new connection instead of time.
	maxDrain = 64 << 10
	// maxSnippet is how much of a failed response body goes into the error.
	maxSnippet = 256
)

// Errors of this package; outcomes wrap them.
var (
	// ErrHostNotAllowed: the destination's host is not on the allow-list.
	ErrHostNotAllowed = errors.New("webhook: host not on the allow-list")
	// ErrStatus: the receiver answered with a non-2xx status (see StatusError).
	ErrStatus = errors.New("webhook: unsuccessful status")
	// ErrAddressNotAllowed: a destination's host resolved to a loopback,
	// private, link-local, metadata or other special address that the
	// options do not allow (see AddressError).
	ErrAddressNotAllowed = errors.New("webhook: address not allowed")
)

// Options configure a Sender. The zero value is valid but refuses every
// destination, because AllowedHosts is empty.
type Options struct {
	// AllowedHosts lists the hosts messages may be sent to. An entry is a
	// host name or IP ("hooks.example.com", "10.0.0.7", "[::1]"), optionally
	// with a port ("hooks.example.com:8443", which then must match; without
	// one, any port matches), or a wildcard "*.example.com" matching any
	// subdomain (not the apex). Matching is case-insensitive and on the name
	// as written in the URL. Default: empty, which allows nothing.
	//
	// An IP entry also allows dialing that address (and port, if given)
	// when it is special (see AllowedNets): naming it is an explicit choice.
	AllowedHosts []string

	// AllowedNets lists address ranges in CIDR form ("10.1.0.0/16",
	// "127.0.0.1/32", "fd12::/64") that may be dialed although they are
	// special. Every address a connection is about to reach is checked
	// when it is dialed, after name resolution, so a host name that
	// resolves (or is re-bound) to one of these is refused unless allowed:
	// unspecified (0.0.0.0/8, ::), loopback (127.0.0.0/8, ::1), private
	// (10/8, 172.16/12, 192.168/16, fc00::/7), shared CGNAT (100.64/10),
	// link-local (169.254/16, fe80::/10), multicast, broadcast and
	// reserved (240/4), IETF protocol assignments (192.0.0.0/24),
	// benchmarking (198.18/15), site-local (fec0::/10), and cloud metadata endpoints
	// (169.254.169.254, fd00:ec2::254, 100.100.100.200, 192.0.0.192).
	// IPv4-mapped and NAT64 (64:ff9b::/96) IPv6 addresses are judged by the
	// IPv4 address they carry. Default: empty, so only public addresses and
	// IP entries of AllowedHosts are dialed.
	AllowedNets []string

	// Resolver looks up destination host names. Default net.DefaultResolver.
	Resolver *net.Resolver

	// Secrets sign requests: one v1 signature per secret, so receivers can
	// switch secrets during a rotation. Default: none, and no signature
	// header is sent.
	Secrets [][]byte

	// Timeout bounds one request, from dialing to reading the response
	// headers and the drained body. Default DefaultTimeout.
	Timeout time.Duration

	// MaxConcurrency bounds the requests in flight for one Send call.
	// Default DefaultMaxConcurrency.
	MaxConcurrency int

	// MaxConnsPerHost bounds the pooled (and idle) connections per host.
	// Default DefaultMaxConnsPerHost.
	MaxConnsPerHost int

	// MaxRetryAfter caps the delay a receiver can ask for with Retry-After.
	// Default DefaultMaxRetryAfter.
	MaxRetryAfter time.Duration

	// TLSConfig configures https (custom roots, client certificates).
	// Default: the system roots.
	TLSConfig *tls.Config

	// RoundTripper replaces the pooled transport the Sender builds (for a
	// proxy or instrumentation); TLSConfig, MaxConnsPerHost, AllowedNets
	// and Resolver are then unused, and so is the dial-time address check:
	// the RoundTripper's dialer must do it. Default: nil, build one.
	RoundTripper http.RoundTripper

	// UserAgent is sent with every request. Default DefaultUserAgent.
	UserAgent string

	// Now is the clock for signature timestamps and Retry-After dates.
	// Default time.Now.
	Now func() time.Time
}

func (o *Options) setDefaults() {
	if o.Timeout <= 0 {
		o.Timeout = DefaultTimeout
	}
	if o.MaxConcurrency <= 0 {
		o.MaxConcurrency = DefaultMaxConcurrency
	}
	if o.MaxConnsPerHost <= 0 {
		o.MaxConnsPerHost = DefaultMaxConnsPerHost
	}
	if o.MaxRetryAfter <= 0 {
		o.MaxRetryAfter = DefaultMaxRetryAfter
	}
	if o.UserAgent == "" {
		o.UserAgent = DefaultUserAgent
	}
	if o.Now == nil {
		o.Now = time.Now
	}
}

// hostPattern is one parsed AllowedHosts entry.
type hostPattern struct {
	host     string // lower-case; for wildcards the suffix including the dot
	port     string // "" matches any port
	wildcard bool
}

func parseHostPattern(s string) (hostPattern, error) {
	in := s
	s = strings.ToLower(strings.TrimSpace(s))
	var p hostPattern
	if h, port, err := net.SplitHostPort(s); err == nil {
		if _, err := strconv.ParseUint(port, 10, 16); err != nil {
			return p, fmt.Errorf("webhook: allowed host %q: bad port", in)
		}
		s, p.port = h, port
	}
	s = strings.TrimSuffix(strings.TrimPrefix(s, "["), "]")
	if strings.HasPrefix(s, "*.") {
		p.wildcard = true
		s = s[1:]
	}
	if s == "" || s == "." || strings.ContainsAny(s, "/*@ ?#") {
		return p, fmt.Errorf("webhook: allowed host %q: want host, host:port or *.domain", in)
	}
	p.host = s
	return p, nil
}

func (p hostPattern) match(host, port string) bool {
	if p.port != "" && p.port != port {
		return false
	}
	if p.wildcard {
		return len(host) > len(p.host) && strings.HasSuffix(host, p.host)
	}
	return host == p.host
}

// Sender posts envelopes to webhooks. It is safe for concurrent use.
type Sender struct {
	opts    Options
	allow   []hostPattern
	addrs   addrPolicy
	client  *http.Client
	own     *http.Transport // the transport we built, closed by Close; nil if supplied
	closed  atomic.Bool
	allowed []string // AllowedHosts for error messages
}

var _ transport.Sender = (*Sender)(nil)

// New returns a Sender configured by opts; it fails on a malformed
// AllowedHosts entry or an empty secret.
func New(opts Options) (*Sender, error) {
	opts.setDefaults()
	for i, sec := range opts.Secrets {
		if len(sec) == 0 {
			return nil, fmt.Errorf("%w: Options.Secrets[%d]", ErrEmptySecret, i)
		}
	}
	s := &Sender{opts: opts}
	for _, h := range opts.AllowedHosts {
		p, err := parseHostPattern(h)
		if err != nil {
			return nil, err
		}
		s.allow = append(s.allow, p)
		s.allowed = append(s.allowed, h)
		if a, err := netip.ParseAddr(p.host); err == nil && !p.wildcard {
			s.addrs.addLiteral(a, p.port)
		}
	}
	for _, n := range opts.AllowedNets {
		if err := s.addrs.addNet(n); err != nil {
			return nil, err
		}
	}
	if len(s.allowed) == 0 {
		s.allowed = []string{"none: Options.AllowedHosts is empty"}
	}
	rt := opts.RoundTripper
	if rt == nil {
		s.own = &http.Transport{
			Proxy: http.ProxyFromEnvironment,
			DialContext: (&net.Dialer{
				Timeout:   opts.Timeout,
				KeepAlive: 30 * time.Second,
				Resolver:  opts.Resolver,
				// The address check runs here, on the address actually
				// dialed: a check on the name, or on an earlier lookup, is
				// open to DNS rebinding.
				Control: s.addrs.control,
			}).DialContext,
			TLSClientConfig:       opts.TLSConfig,
			TLSHandshakeTimeout:   opts.Timeout,
			ForceAttemptHTTP2:     true,
			MaxIdleConns:          4 * opts.MaxConnsPerHost,
			MaxIdleConnsPerHost:   opts.MaxConnsPerHost,
			MaxConnsPerHost:       opts.MaxConnsPerHost,
			IdleConnTimeout:       90 * time.Second,
			ExpectContinueTimeout: time.Second,
		}
		rt = s.own
	}
	s.client = &http.Client{
		Transport: rt,
		Timeout:   opts.Timeout,
		// Never follow redirects: the target could be off the allow-list.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	return s, nil
}

// Validate accepts http and https URLs whose host is on the allow-list.
func (s *Sender) Validate(d transport.Destination) error {
	_, err := s.checkURL(d.Raw)
	return err
}

func (s *Sender) checkURL(raw string) (*url.URL, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return nil, &transport.DestinationError{Dest: raw, Err: transport.ErrBadDestination, Reason: err.Error()}
	}
	if err := s.checkParsed(raw, u); err != nil {
		return nil, err
	}
	return u, nil
}

func (s *Sender) checkParsed(raw string, u *url.URL) error {
	scheme := strings.ToLower(u.Scheme)
	if scheme != "http" && scheme != "https" {
		return &transport.DestinationError{Dest: raw, Err: transport.ErrBadDestination, Reason: "webhooks need an http:// or https:// URL"}
	}
	host := strings.ToLower(u.Hostname())
	if host == "" {
		return &transport.DestinationError{Dest: raw, Err: transport.ErrBadDestination, Reason: "URL has no host"}
	}
	port := u.Port()
	if port == "" {
		port = map[string]string{"http": "80", "https": "443"}[scheme]
	}
	for _, p := range s.allow {
		if p.match(host, port) {
			return nil
		}
	}
	return &transport.DestinationError{
		Dest:    raw,
		Err:     fmt.Errorf("%w: %w", transport.ErrBadDestination, ErrHostNotAllowed),
		Reason:  fmt.Sprintf("host %q is not on the webhook allow-list", u.Host),
		Allowed: s.allowed,
	}
}

// Send posts each envelope, at most MaxConcurrency at a time, and writes
// one outcome per envelope.
func (s *Sender) Send(ctx context.Context, batch []transport.Envelope, out []transport.Outcome) {
	out = out[:len(batch)]
	workers := min(len(batch), s.opts.MaxConcurrency)
	if workers <= 1 {
		for i := range batch {
			out[i] = s.deliver(ctx, &batch[i])
		}
		return
	}
	var next atomic.Int64
	work := func() {
		for {
			i := int(next.Add(1) - 1)
			if i >= len(batch) {
				return
			}
			out[i] = s.deliver(ctx, &batch[i])
		}
	}
	var wg sync.WaitGroup
	for range workers - 1 {
		wg.Go(work)
	}
	work()
	wg.Wait()
}

func (s *Sender) deliver(ctx context.Context, e *transport.Envelope) transport.Outcome {
	if s.closed.Load() {
		return transport.Retry(fmt.Errorf("webhook: %w", transport.ErrClosed), 0)
	}
	if err := ctx.Err(); err != nil {
		return transport.Retry(fmt.Errorf("webhook: message %s not sent: %w", e.ID, err), 0)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, e.Dest, bytes.NewReader(e.Payload))
	if err != nil {
		return transport.Reject(&transport.DestinationError{Dest: e.Dest, Err: transport.ErrBadDestination, Reason: err.Error()})
	}
	if err := s.checkParsed(e.Dest, req.URL); err != nil {
		return transport.Reject(err)
	}
	h := req.Header
	e.ForEachHeader(func(k, v string) { h.Add(k, v) })
	if h.Get("Content-Type") == "" {
		h.Set("Content-Type", "application/octet-stream")
	}
	h.Set("User-Agent", s.opts.UserAgent)
	if len(s.opts.Secrets) > 0 {
		h.Set(HeaderSignature, signatureHeader(s.opts.Secrets, s.opts.Now().Unix(), e.ID, e.Payload))
	}

	resp, err := s.client.Do(req)
	if err != nil {
		if errors.Is(err, ErrAddressNotAllowed) {
			// Policy, not a network accident: retrying cannot help.
			return transport.Reject(fmt.Errorf("webhook: POST %s (message %s): %w", redact(req.URL), e.ID, err))
		}
		if cerr := ctx.Err(); cerr != nil {
			err = cerr
		}
		return transport.Retry(fmt.Errorf("webhook: POST %s (message %s): %w", redact(req.URL), e.ID, err), 0)
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 200 && resp.StatusCode < 300 {
		_, _ = io.CopyN(io.Discard, resp.Body, maxDrain)
		return transport.Delivered()
	}
	snippet := make([]byte, maxSnippet)
	n, _ := io.ReadFull(resp.Body, snippet)
	_, _ = io.CopyN(io.Discard, resp.Body, maxDrain)
	serr := &StatusError{URL: redact(req.URL), Code: resp.StatusCode, Body: string(snippet[:n])}
	return s.classify(resp, serr)
}

// classify maps a non-2xx response to an outcome.
func (s *Sender) classify(resp *http.Response, serr *StatusError) transport.Outcome {
	switch code := resp.StatusCode; {
	case code == http.StatusTooManyRequests || code == http.StatusServiceUnavailable:
		after, ok := parseRetryAfter(resp.Header.Get("Retry-After"), s.opts.Now())
		if ok {
			serr.RetryAfter = min(after, s.opts.MaxRetryAfter)
		}
		return transport.Retry(serr, serr.RetryAfter)
	case code == http.StatusRequestTimeout || code >= 500 && code < 600:
		return transport.Retry(serr, 0)
	default:
		return transport.Reject(serr)
	}
}

// parseRetryAfter reads a Retry-After value: delay-seconds or an HTTP date.
func parseRetryAfter(v string, now time.Time) (time.Duration, bool) {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0, false
	}
	if secs, err := strconv.ParseUint(v, 10, 63); err == nil {
		if secs > uint64(1<<62/time.Second) {
			return 1 << 62, true
		}
		return time.Duration(secs) * time.Second, true
	}
	t, err := http.ParseTime(v)
	if err != nil {
		return 0, false
	}
	return max(t.Sub(now), 0), true
}

// redact drops user info and the query (which often hold tokens) from URLs
// that go into errors and dead letters.
func redact(u *url.URL) string {
	c := *u
	c.User = nil
	c.RawQuery = ""
	c.Fragment = ""
	return c.String()
}

// StatusError is the error of a non-2xx response.
type StatusError struct {
	URL        string        // the URL without user info and query
	Code       int           // the HTTP status code
	Body       string        // up to 256 bytes of the response body
	RetryAfter time.Duration // the Retry-After the receiver asked for, capped
}

// Error implements error.
func (e *StatusError) Error() string {
	msg := fmt.Sprintf("webhook: POST %s: %d %s", e.URL, e.Code, http.StatusText(e.Code))
	if e.RetryAfter > 0 {
		msg += fmt.Sprintf(" (retry after %v)", e.RetryAfter)
	}
	if b := strings.TrimSpace(e.Body); b != "" {
		msg += ": " + strconv.Quote(b)
	}
	return msg
}

// Unwrap returns ErrStatus.
func (e *StatusError) Unwrap() error { return ErrStatus }

// Close stops new deliveries (they get Retry outcomes wrapping
// transport.ErrClosed) and closes idle pooled connections. Requests in
// flight finish.
func (s *Sender) Close() error {
	s.closed.Store(true)
	if s.own != nil {
		s.own.CloseIdleConnections()
	}
	return nil
}
