package nats

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"time"

	gonats "github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/hourglassmq/hourglass/transport"
)

// Header names of JetStream message schedules (nats-server
// server/stream.go, JSSchedulePattern and JSScheduleTarget).
const (
	// HeaderSchedule holds the schedule, "@at <RFC 3339 time>" here.
	HeaderSchedule = "Nats-Schedule"
	// HeaderScheduleTarget names the subject the server publishes to when
	// the schedule fires; it must be in the same stream.
	HeaderScheduleTarget = "Nats-Schedule-Target"
)

// Defaults for the zero Options.
const (
	// DefaultFlushTimeout bounds the flush confirming a core batch and the
	// cancel request when the caller's context has no deadline.
	DefaultFlushTimeout = 10 * time.Second
	// DefaultAckTimeout bounds the wait for a JetStream publish ack.
	DefaultAckTimeout = 10 * time.Second
	// DefaultMaxAsyncPending bounds unacknowledged JetStream publishes, so a
	// slow stream pushes back instead of growing memory.
	DefaultMaxAsyncPending = 4000
	// DefaultAPIPrefix is JetStream's API subject prefix without a domain.
	DefaultAPIPrefix = "$JS.API"
)

// ErrNoConnection: Options named neither a connection nor a URL.
var ErrNoConnection = errors.New("nats: Options needs Conn or URL")

// Options configure a Sender.
type Options struct {
	// Conn is a connection to use. The caller keeps ownership: Close does
	// not close it. Either Conn or URL is required.
	Conn *gonats.Conn
	// URL is dialled when Conn is nil, with ConnOptions; the Sender owns
	// and closes that connection.
	URL string
	// ConnOptions are used when dialling URL.
	ConnOptions []gonats.Option

	// FlushTimeout bounds the flush that confirms a core publish batch when
	// the Send context has no deadline. Default DefaultFlushTimeout.
	FlushTimeout time.Duration

	// AckTimeout bounds the wait for one JetStream publish ack, so a lost
	// ack becomes a Retry instead of a Send that never returns (nats.go has
	// no ack timeout by default). Default DefaultAckTimeout.
	AckTimeout time.Duration

	// MaxAsyncPending bounds JetStream publishes awaiting an ack on this
	// connection; publishing beyond it waits. Default DefaultMaxAsyncPending.
	MaxAsyncPending int

	// APIPrefix is the JetStream API prefix (for domains). Default
	// DefaultAPIPrefix.
	APIPrefix string

	// Native lists the destinations handed to JetStream message schedules.
	// A jetstream:// destination whose subject matches a route's Subjects
	// is native; all others are held and fired by the engine.
	Native []NativeRoute
}

// NativeRoute configures native scheduling for a set of destinations.
type NativeRoute struct {
	// Subjects is a subject filter (wildcards allowed, e.g. "jobs.>")
	// matching the jetstream:// destination subjects of this route.
	Subjects string
	// Stream is the stream that holds the targets and the schedule
	// subjects; it must set AllowMsgSchedules.
	Stream string
	// Prefix is the subject prefix of the schedule messages,
	// "<Prefix>.<token>" per message; Stream's subjects must include
	// "<Prefix>.>". Default "hourglass.sched".
	Prefix string
}

// DefaultSchedulePrefix is NativeRoute.Prefix's default.
const DefaultSchedulePrefix = "hourglass.sched"

// Sender publishes envelopes to NATS and JetStream and schedules natively on
// JetStream. It is safe for concurrent use.
type Sender struct {
	opts   Options
	nc     *gonats.Conn
	ownNC  bool
	js     jetstream.JetStream
	routes []NativeRoute
	closed atomic.Bool
}

var _ transport.NativeScheduler = (*Sender)(nil)

// New connects (or adopts Options.Conn) and checks every native route's
// stream: it must exist, allow message schedules and hold the schedule
// prefix.
func New(ctx context.Context, opts Options) (*Sender, error) {
	if opts.FlushTimeout <= 0 {
		opts.FlushTimeout = DefaultFlushTimeout
	}
	if opts.AckTimeout <= 0 {
		opts.AckTimeout = DefaultAckTimeout
	}
	if opts.MaxAsyncPending <= 0 {
		opts.MaxAsyncPending = DefaultMaxAsyncPending
	}
	if opts.APIPrefix == "" {
		opts.APIPrefix = DefaultAPIPrefix
	}
	s := &Sender{opts: opts, nc: opts.Conn}
	if s.nc == nil {
		if opts.URL == "" {
			return nil, ErrNoConnection
		}
		nc, err := gonats.Connect(opts.URL, opts.ConnOptions...)
		if err != nil {
			return nil, fmt.Errorf("nats: connect %s: %w", opts.URL, err)
		}
		s.nc, s.ownNC = nc, true
	}
	js, err := jetstream.NewWithAPIPrefix(s.nc, opts.APIPrefix, jetstream.WithPublishAsyncMaxPending(opts.MaxAsyncPending),
		jetstream.WithPublishAsyncTimeout(opts.AckTimeout))
	if err != nil {
		s.closeConn()
		return nil, fmt.Errorf("nats: jetstream: %w", err)
	}
	s.js = js
	for _, r := range opts.Native {
		if r.Prefix == "" {
			r.Prefix = DefaultSchedulePrefix
		}
		if err := s.checkRoute(ctx, r); err != nil {
			s.closeConn()
			return nil, err
		}
		s.routes = append(s.routes, r)
	}
	return s, nil
}

func (s *Sender) checkRoute(ctx context.Context, r NativeRoute) error {
	if !validFilter(r.Subjects) {
		return fmt.Errorf("nats: native route: %q is not a valid subject filter", r.Subjects)
	}
	if err := validSubject(r.Prefix); err != nil {
		return fmt.Errorf("nats: native route: prefix: %w", err)
	}
	if subjectMatches(r.Subjects, r.Prefix+".x") {
		return fmt.Errorf("nats: native route: schedule prefix %q overlaps the route subjects %q", r.Prefix, r.Subjects)
	}
	st, err := s.js.Stream(ctx, r.Stream)
	if err != nil {
		return fmt.Errorf("nats: native route %q: stream %q: %w", r.Subjects, r.Stream, err)
	}
	cfg := st.CachedInfo().Config
	if !cfg.AllowMsgSchedules {
		return fmt.Errorf("nats: native route %q: stream %q does not set AllowMsgSchedules (nats-server ≥ 2.12)", r.Subjects, r.Stream)
	}
	covered := false
	for _, f := range cfg.Subjects {
		if subjectMatches(f, r.Prefix+".x") {
			covered = true
		}
	}
	if !covered {
		return fmt.Errorf("nats: native route %q: stream %q subjects %v do not include %q", r.Subjects, r.Stream, cfg.Subjects, r.Prefix+".>")
	}
	return nil
}

// validSubject checks a publish subject: non-empty dot-separated tokens, no
// wildcards, no whitespace.
func validSubject(subj string) error {
	if subj == "" {
		return errors.New("empty subject")
	}
	for tok := range strings.SplitSeq(subj, ".") {
		if tok == "" {
			return fmt.Errorf("subject %q has an empty token", subj)
		}
		if tok == "*" || tok == ">" {
			return fmt.Errorf("subject %q has a wildcard; destinations must be publish subjects", subj)
		}
		if strings.ContainsAny(tok, " \t\r\n\x00") {
			return fmt.Errorf("subject %q contains whitespace", subj)
		}
	}
	return nil
}

func validFilter(f string) bool {
	if f == "" {
		return false
	}
	toks := strings.Split(f, ".")
	for i, t := range toks {
		if t == "" || strings.ContainsAny(t, " \t\r\n\x00") || t == ">" && i != len(toks)-1 {
			return false
		}
	}
	return true
}

// subjectMatches reports whether the literal subject matches filter.
func subjectMatches(filter, subj string) bool {
	ft, st := strings.Split(filter, "."), strings.Split(subj, ".")
	for i, f := range ft {
		if f == ">" {
			return len(st) > i
		}
		if i >= len(st) || f != "*" && f != st[i] {
			return false
		}
	}
	return len(ft) == len(st)
}

// Validate accepts nats://subject and jetstream://subject with a valid
// publish subject that is not inside a schedule prefix.
func (s *Sender) Validate(d transport.Destination) error {
	if d.Scheme != "nats" && d.Scheme != "jetstream" {
		return &transport.DestinationError{Dest: d.Raw, Err: transport.ErrBadDestination, Reason: "want nats://subject or jetstream://subject"}
	}
	if err := validSubject(d.Target); err != nil {
		return &transport.DestinationError{Dest: d.Raw, Err: transport.ErrBadDestination, Reason: err.Error()}
	}
	for _, r := range s.routes {
		if subjectMatches(r.Prefix+".>", d.Target) {
			return &transport.DestinationError{Dest: d.Raw, Err: transport.ErrBadDestination, Reason: fmt.Sprintf("subjects under %q hold native schedules", r.Prefix+".>")}
		}
	}
	return nil
}

// Native reports whether d is a jetstream:// destination matched by a
// native route.
func (s *Sender) Native(d transport.Destination) bool {
	_, ok := s.route(d)
	return ok
}

func (s *Sender) route(d transport.Destination) (NativeRoute, bool) {
	if d.Scheme != "jetstream" {
		return NativeRoute{}, false
	}
	for _, r := range s.routes {
		if subjectMatches(r.Subjects, d.Target) {
			return r, true
		}
	}
	return NativeRoute{}, false
}

// msgFor builds the NATS message of e on subj.
func msgFor(e *transport.Envelope, subj string) *gonats.Msg {
	h := make(gonats.Header, 7+len(e.Headers))
	e.ForEachHeader(func(k, v string) { h[k] = append(h[k], v) })
	return &gonats.Msg{Subject: subj, Header: h, Data: e.Payload}
}

// pending is one JetStream publish awaiting its ack.
type pending struct {
	i   int
	paf jetstream.PubAckFuture
}

// Send publishes the batch: nats:// envelopes are written and confirmed by
// one flush, jetstream:// envelopes are published asynchronously and their
// acks awaited together.
func (s *Sender) Send(ctx context.Context, batch []transport.Envelope, out []transport.Outcome) {
	s.publish(ctx, batch, out[:len(batch)], false)
}

// ScheduleNative publishes each envelope as a JetStream message schedule
// due at its Due time; see the package documentation.
func (s *Sender) ScheduleNative(ctx context.Context, batch []transport.Envelope, out []transport.Outcome) {
	s.publish(ctx, batch, out[:len(batch)], true)
}

func (s *Sender) publish(ctx context.Context, batch []transport.Envelope, out []transport.Outcome, native bool) {
	if s.closed.Load() {
		for i := range out {
			out[i] = transport.Retry(fmt.Errorf("nats: %w", transport.ErrClosed), 0)
		}
		return
	}
	var (
		acks    []pending
		flushed []int
		dests   destCache
	)
	for i := range batch {
		e := &batch[i]
		d, err := dests.resolve(e.Dest, s.Validate)
		if err != nil {
			out[i] = transport.Reject(err)
			continue
		}
		if err := checkHeaders(e.Headers); err != nil {
			out[i] = transport.Reject(fmt.Errorf("nats: message %s: %w", e.ID, err))
			continue
		}
		if err := ctx.Err(); err != nil {
			out[i] = transport.Retry(fmt.Errorf("nats: message %s not sent: %w", e.ID, err), 0)
			continue
		}
		switch {
		case native:
			r, ok := s.route(d)
			if !ok {
				out[i] = transport.Reject(fmt.Errorf("nats: %w: %s", transport.ErrNotNative, d.Raw))
				continue
			}
			m := msgFor(e, scheduleSubject(r.Prefix, e.ID))
			m.Header[HeaderSchedule] = []string{"@at " + transport.FormatTime(e.Due)}
			m.Header[HeaderScheduleTarget] = []string{d.Target}
			paf, err := s.js.PublishMsgAsync(m, jetstream.WithExpectStream(r.Stream))
			if err != nil {
				out[i] = classify(d.Raw, err)
				continue
			}
			acks = append(acks, pending{i, paf})
		case d.Scheme == "jetstream":
			paf, err := s.js.PublishMsgAsync(msgFor(e, d.Target), jetstream.WithMsgID(e.ID))
			if err != nil {
				out[i] = classify(d.Raw, err)
				continue
			}
			acks = append(acks, pending{i, paf})
		default: // nats
			if err := s.nc.PublishMsg(msgFor(e, d.Target)); err != nil {
				out[i] = classify(d.Raw, err)
				continue
			}
			flushed = append(flushed, i)
		}
	}
	if len(flushed) > 0 {
		fctx, cancel := ctx, context.CancelFunc(func() {})
		if _, ok := ctx.Deadline(); !ok {
			fctx, cancel = context.WithTimeout(ctx, s.opts.FlushTimeout)
		}
		err := s.nc.FlushWithContext(fctx)
		cancel()
		for _, i := range flushed {
			if err != nil {
				out[i] = transport.Retry(fmt.Errorf("nats: flush after publishing %s: %w", batch[i].Dest, err), 0)
			} else {
				out[i] = transport.Delivered()
			}
		}
	}
	for _, p := range acks {
		select {
		case <-p.paf.Ok():
			out[p.i] = transport.Delivered()
		case err := <-p.paf.Err():
			out[p.i] = classify(batch[p.i].Dest, err)
		case <-ctx.Done():
			out[p.i] = transport.Retry(fmt.Errorf("nats: waiting for the ack of %s: %w", batch[p.i].ID, ctx.Err()), 0)
		}
	}
}

// ErrReservedHeader: a caller header uses the Nats- prefix, which the
// server interprets (Nats-Rollup could purge a stream, Nats-Schedule
// create a schedule), so it is refused.
var ErrReservedHeader = errors.New("nats: caller header uses the reserved Nats- prefix")

// ValidateMessage refuses, at Schedule time, caller headers that use the
// reserved Nats- prefix (transport.MessageValidator).
func (s *Sender) ValidateMessage(_ transport.Destination, _ string, headers []transport.Header) error {
	if err := checkHeaders(headers); err != nil {
		return fmt.Errorf("%w: %w", transport.ErrBadHeader, err)
	}
	return nil
}

func checkHeaders(hs []transport.Header) error {
	for _, h := range hs {
		if len(h.Key) >= 5 && strings.EqualFold(h.Key[:5], "Nats-") {
			return fmt.Errorf("%w: %q", ErrReservedHeader, h.Key)
		}
	}
	return nil
}

// destCache remembers the last destination of a batch: batches are usually
// for one destination, so each is parsed and validated once.
type destCache struct {
	raw string
	d   transport.Destination
	err error
	ok  bool
}

func (c *destCache) resolve(raw string, validate func(transport.Destination) error) (transport.Destination, error) {
	if !c.ok || raw != c.raw {
		c.raw, c.ok = raw, true
		c.d, c.err = transport.ParseDestination(raw)
		if c.err == nil {
			c.err = validate(c.d)
		}
	}
	return c.d, c.err
}

// classify maps a publish error to an outcome: malformed or oversized
// messages and schedules the stream cannot take are rejected; everything
// else (no stream yet, timeouts, disconnects) is retried.
func classify(dest string, err error) transport.Outcome {
	werr := fmt.Errorf("nats: publish to %s: %w", dest, err)
	if errors.Is(err, gonats.ErrMaxPayload) || errors.Is(err, gonats.ErrBadSubject) || errors.Is(err, gonats.ErrHeadersNotSupported) {
		return transport.Reject(werr)
	}
	var api *jetstream.APIError
	if errors.As(err, &api) {
		switch api.ErrorCode {
		case jetstream.JSErrCodeStreamMessageExceedsMaximum,
			jetstream.JSErrCodeMessageSchedulesDisabled,
			jetstream.JSErrCodeSchedulePatternInvalid,
			jetstream.JSErrCodeScheduleTargetInvalid,
			jetstream.JSErrCodeScheduleTTLInvalid,
			jetstream.JSErrCodeScheduleRollupInvalid,
			jetstream.JSErrCodeScheduleSourceInvalid:
			return transport.Reject(werr)
		}
	}
	return transport.Retry(werr, 0)
}

// scheduleSubject is "<prefix>.<token>", where token is id when id is a
// safe subject token ([A-Za-z0-9_-], not starting with '_'), else "_" and
// the unpadded base64url of id. The mapping is injective, so every message
// has its own schedule subject and cancel finds it again.
func scheduleSubject(prefix, id string) string {
	safe := id != "" && id[0] != '_'
	for i := 0; safe && i < len(id); i++ {
		c := id[i]
		safe = c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_'
	}
	if safe {
		return prefix + "." + id
	}
	return prefix + "._" + base64.RawURLEncoding.EncodeToString([]byte(id))
}

// purgeResponse is the JetStream API's answer to a stream purge.
type purgeResponse struct {
	Success bool                `json:"success"`
	Purged  uint64              `json:"purged"`
	Error   *jetstream.APIError `json:"error,omitempty"`
}

// CancelNative purges the schedule subject of id. found is true when a
// pending schedule was removed. A cancel that reaches the server after the
// schedule's timer fired finds nothing (found=false): the message was
// delivered. One racing the firing itself (inside the server's
// fire-and-store step) can remove the schedule after the copy was taken;
// the message is then delivered although found=true.
func (s *Sender) CancelNative(ctx context.Context, id string, d transport.Destination) (bool, error) {
	if s.closed.Load() {
		return false, fmt.Errorf("nats: cancel %s: %w", id, transport.ErrClosed)
	}
	r, ok := s.route(d)
	if !ok {
		return false, fmt.Errorf("nats: cancel %s: %w: %s", id, transport.ErrNotNative, d.Raw)
	}
	subj := scheduleSubject(r.Prefix, id)
	req, err := json.Marshal(struct {
		Filter string `json:"filter"`
	}{subj})
	if err != nil {
		return false, fmt.Errorf("nats: cancel %s: %w", id, err)
	}
	rctx, cancel := ctx, context.CancelFunc(func() {})
	if _, ok := ctx.Deadline(); !ok {
		rctx, cancel = context.WithTimeout(ctx, s.opts.FlushTimeout)
	}
	defer cancel()
	msg, err := s.nc.RequestWithContext(rctx, s.opts.APIPrefix+".STREAM.PURGE."+r.Stream, req)
	if err != nil {
		return false, fmt.Errorf("nats: cancel %s: purge %s: %w", id, subj, err)
	}
	var resp purgeResponse
	if err := json.Unmarshal(msg.Data, &resp); err != nil {
		return false, fmt.Errorf("nats: cancel %s: purge response: %w", id, err)
	}
	if resp.Error != nil {
		return false, fmt.Errorf("nats: cancel %s: purge %s: %w", id, subj, resp.Error)
	}
	return resp.Purged > 0, nil
}

// Close stops new sends (they get Retry outcomes wrapping
// transport.ErrClosed) and closes the connection if the Sender dialled it.
func (s *Sender) Close() error {
	if s.closed.Swap(true) {
		return nil
	}
	s.closeConn()
	return nil
}

func (s *Sender) closeConn() {
	if s.ownNC {
		s.nc.Close()
	}
}
