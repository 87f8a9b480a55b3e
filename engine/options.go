package engine

import (
	"context"
	"fmt"
	"log/slog"
	"math"
	"runtime"
	"strings"
	"time"

	"github.com/hourglassmq/hourglass/memstore"
	"github.com/hourglassmq/hourglass/store"
	"github.com/hourglassmq/hourglass/transport"
	"github.com/hourglassmq/hourglass/wal"
)

// Options configures Open. The zero value works: an engine whose store is in
// memory (nothing survives a restart), with GOMAXPROCS shards, 1 ms ticks
// and only local queues. Every default is named in the field's comment.
type Options struct {
	// Dir is the directory of a durable store (Pebble, package wal):
	// shorthand for Store: wal.Options{Dir: Dir}. With neither Dir nor
	// Store set the engine keeps its messages IN MEMORY: the same API and
	// semantics, but NOTHING SURVIVES A RESTART OR CRASH.
	Dir string
	// Store opens where messages live: wal.Options (durable, one process),
	// memstore.Options (in memory), or another implementation of the store
	// contract. Its zero fields take the engine's values (shards, window,
	// payload bound, logger, clock). Set Dir or Store, not both.
	Store store.Opener

	// Shards is the number of shards, each owned by one goroutine with its
	// own timing wheel. Default: the store's (a durable store keeps the
	// count it was created with), else GOMAXPROCS; at most 256.
	Shards int
	// Tick is the wheel resolution: due times are rounded up to a tick.
	// Default 1 ms, at most 1 s.
	Tick time.Duration
	// Window is how far ahead of now the engine holds messages in RAM;
	// later ones stay in the store and are paged in as time advances.
	// Default 1 minute; at least 100 ticks.
	Window time.Duration
	// MaxPending bounds the messages a shard holds in RAM. A durable store
	// keeps the rest on disk (the window loader pages in no more, and new
	// messages beyond it wait on disk); a memory store refuses them
	// (Schedule fails with ErrFull). Default 4M per shard.
	MaxPending int
	// MaxPayload bounds Message.Payload. Default 1 MiB, at most 64 MiB.
	MaxPayload int

	// Dispatchers is the fixed pool of goroutines that send due batches to
	// transports, wait for local handlers, and commit outcomes. Default
	// max(32, 16×GOMAXPROCS): each waits for its outcome's commit (a
	// durable store's fsync).
	Dispatchers int
	// MaxBatch bounds the messages handed to one transport Send or one
	// local queue batch. Default 256, at most 4096.
	MaxBatch int
	// MaxReady bounds the due messages each shard takes off its wheel
	// ahead of the dispatchers (its ready queues); one destination counts
	// for at most 3/4 of it, so a slow destination cannot stall the
	// others. Default 8192.
	MaxReady int
	// MaxInFlight bounds the batches in flight per transport destination.
	// Default Dispatchers/2. Local queues use their Parallelism instead.
	MaxInFlight int
	// NativeMinLead: a message for a destination its transport schedules
	// natively (transport.Registry.Native, e.g. a NATS NativeRoute) is handed
	// to the broker at Schedule time when it is due more than NativeMinLead
	// from now and has no Expires; nearer messages are held by the engine,
	// whose wheel is more precise than the broker's timer. Default 1 s;
	// negative disables native scheduling.
	NativeMinLead time.Duration
	// PushBackLag is how long a due message may wait, on a wheel or in a
	// destination's ready queue, before Schedule and ScheduleBatch are paced
	// to the rate the engine delivers (pushback.go): producers that outrun
	// the firing side see ack latency instead of a backlog whose lateness
	// grows without bound. A lagging destination paces only its own
	// producers; a lagging wheel paces all. Calls from a handler are never
	// paced. Default 100 ms; negative disables push back.
	PushBackLag time.Duration

	// Clock is the source of time. Default RealClock{}; tests use FakeClock.
	Clock Clock
	// Logger receives engine logs. Default slog.Default().
	Logger *slog.Logger
	// Events receives the engine's notifications (retries, dead letters,
	// panics, store failures, ...); nil fields are skipped.
	Events Events
	// Retry is the default retry policy; see RetryPolicy for its defaults.
	Retry RetryPolicy
	// Destinations overrides retry policy and in-flight limit per
	// destination prefix (the longest matching prefix wins).
	Destinations []DestinationOptions
	// Transports serves non-local destinations (http, nats, kafka, ...).
	// Default none: only local:// destinations are accepted.
	Transports *transport.Registry
	// Queues registers local queue handlers at Open, before recovery starts
	// firing (so recovered messages find their handler).
	Queues []Queue
}

// DestinationOptions overrides settings for destinations starting with Prefix.
type DestinationOptions struct {
	Prefix string
	// Retry replaces the default retry policy when set (non-zero).
	Retry RetryPolicy
	// MaxInFlight replaces Options.MaxInFlight when positive.
	MaxInFlight int
}

// Queue registers a handler for the local destination "local://"+Name.
type Queue struct {
	// Name is the queue name; messages go to "local://"+Name.
	Name string
	// Handler runs once per delivery attempt.
	Handler Handler
	// Parallelism is how many handlers of this queue run at once. Default
	// GOMAXPROCS. Ignored when Ordered (always 1).
	Parallelism int
	// Ordered runs one handler at a time, in due order: every message of an
	// ordered queue lives on one shard (chosen by hashing the queue name)
	// and one batch is in flight at a time. A retried message takes its new
	// due time's place; it does not block the queue.
	Ordered bool
	// Retry is the queue's retry policy; zero uses Options.Retry.
	Retry RetryPolicy
	// Timeout bounds one handler call: its ctx ends then, and a handler
	// still running counts as a failed attempt (retried by the policy).
	// Default DefaultHandlerTimeout.
	Timeout time.Duration
}

// Handler handles one delivery of a message to a local queue. Returning nil
// acks the message (and commits whatever it cascaded through d); an error
// goes to the retry policy (RetryIn/RetryAt choose the time, Reject
// dead-letters at once); a panic counts as an error. ctx ends at the
// queue's Timeout or when the engine closes.
type Handler func(ctx context.Context, d *Delivery) error

// RetryPolicy decides when a failed delivery is tried again. The zero value
// selects the defaults: 8 attempts, exponential backoff from 1 s doubling up
// to 1 h with 20 % jitter.
type RetryPolicy struct {
	// MaxAttempts is the total number of delivery attempts before the
	// message is dead-lettered. Default 8; negative means unlimited.
	MaxAttempts int
	// Delays, when set, lists the delay before each retry (Delays[0] after
	// the first failure, ...); the last one repeats. It replaces the
	// exponential backoff.
	Delays []time.Duration
	// Base is the first exponential backoff delay. Default 1 s.
	Base time.Duration
	// Max caps the backoff. Default 1 h.
	Max time.Duration
	// Jitter spreads each backoff delay uniformly over ±Jitter of it, 0..1.
	// Default 0.2; negative disables jitter.
	Jitter float64
}

// Defaults.
const (
	DefaultTick        = time.Millisecond
	DefaultWindow      = time.Minute
	DefaultMaxPending  = 4 << 20
	DefaultMaxPayload  = store.DefaultMaxPayload
	DefaultMaxBatch    = 256
	DefaultMaxReady    = 8192
	DefaultMaxAttempts = 8
	DefaultRetryBase   = time.Second
	DefaultRetryMax    = time.Hour
	DefaultJitter      = 0.2
	// DefaultNativeMinLead is Options.NativeMinLead's default.
	DefaultNativeMinLead = time.Second
	// DefaultPushBackLag is Options.PushBackLag's default.
	DefaultPushBackLag = 100 * time.Millisecond
	// DefaultHandlerTimeout is Queue.Timeout's default.
	DefaultHandlerTimeout = time.Minute
	// MaxRetryDelay bounds every delay a RetryPolicy names.
	MaxRetryDelay = 100 * 365 * 24 * time.Hour
	// maxPendingLimit keeps slab indices inside int32.
	maxPendingLimit = 1 << 30
)

func (p RetryPolicy) isZero() bool {
	return p.MaxAttempts == 0 && p.Delays == nil && p.Base == 0 && p.Max == 0 && p.Jitter == 0
}

func (p RetryPolicy) withDefaults() RetryPolicy {
	if p.MaxAttempts == 0 {
		p.MaxAttempts = DefaultMaxAttempts
	}
	if p.Base == 0 {
		p.Base = DefaultRetryBase
	}
	if p.Max == 0 {
		p.Max = DefaultRetryMax
	}
	if p.Jitter == 0 {
		p.Jitter = DefaultJitter
	}
	return p
}

// Validate explains a bad retry policy. Fields left zero are checked with
// their defaults, so a value is refused alike whether written out or not.
func (p RetryPolicy) Validate() error {
	switch {
	case p.Base < 0 || p.Base > MaxRetryDelay:
		return invalidf("retry: Base = %v; want 0 (default %v) up to %v", p.Base, DefaultRetryBase, MaxRetryDelay)
	case p.Max < 0 || p.Max > MaxRetryDelay:
		return invalidf("retry: Max = %v; want 0 (default %v) up to %v", p.Max, DefaultRetryMax, MaxRetryDelay)
	case p.withDefaults().Base > p.withDefaults().Max:
		d := p.withDefaults()
		return invalidf("retry: Base %v is larger than Max %v (with defaults applied: Base %v, Max %v)", p.Base, p.Max, d.Base, d.Max)
	case math.IsNaN(p.Jitter) || p.Jitter > 1:
		return invalidf("retry: Jitter = %v; want a fraction of the delay up to 1 (0 = default %v, negative = none)", p.Jitter, DefaultJitter)
	}
	for i, d := range p.Delays {
		if d < 0 || d > MaxRetryDelay {
			return invalidf("retry: Delays[%d] = %v; want 0 up to %v", i, d, MaxRetryDelay)
		}
	}
	return nil
}

// Validate explains every bad option, with defaults applied first so that a
// value is accepted or refused the same way whether it is written out or
// left to its default. Open calls it.
func (o Options) Validate() error {
	switch {
	case o.Dir != "" && o.Store != nil:
		return invalidf("options: both Dir (%q) and Store are set; set one (Dir is shorthand for Store: wal.Options{Dir: ...})", o.Dir)
	case o.Shards < 0 || o.Shards > store.MaxShards:
		return invalidf("options: Shards = %d; want 0 (default) or 1..%d", o.Shards, store.MaxShards)
	case o.Tick < 0 || o.Tick > time.Second:
		return invalidf("options: Tick = %v; want 0 (default %v) or up to 1s (a message may be up to a tick late)", o.Tick, DefaultTick)
	case o.Window < 0:
		return invalidf("options: Window = %v is negative; want 0 (default %v) or positive", o.Window, DefaultWindow)
	case o.MaxPending < 0 || o.MaxPending > maxPendingLimit:
		return invalidf("options: MaxPending = %d; want 0 (default %d) or 1..%d", o.MaxPending, DefaultMaxPending, maxPendingLimit)
	case o.MaxPayload < 0 || o.MaxPayload > store.MaxPayloadLimit:
		return invalidf("options: MaxPayload = %d; want 0 (default %d) or 1..%d", o.MaxPayload, DefaultMaxPayload, store.MaxPayloadLimit)
	case o.Dispatchers < 0 || o.Dispatchers > 4096:
		return invalidf("options: Dispatchers = %d; want 0 (default) or 1..4096", o.Dispatchers)
	case o.MaxBatch < 0 || o.MaxBatch > store.MaxCallMessages/4:
		return invalidf("options: MaxBatch = %d; want 0 (default %d) or 1..%d", o.MaxBatch, DefaultMaxBatch, store.MaxCallMessages/4)
	case o.MaxReady < 0 || (o.MaxReady > 0 && o.MaxReady < 4) || o.MaxReady > maxPendingLimit:
		return invalidf("options: MaxReady = %d; want 0 (default %d) or 4..%d", o.MaxReady, DefaultMaxReady, maxPendingLimit)
	case o.MaxInFlight < 0:
		return invalidf("options: MaxInFlight = %d is negative", o.MaxInFlight)
	}
	d := o.withDefaults()
	if d.Window < 100*d.Tick {
		return invalidf("options: Window = %v is shorter than 100 ticks of %v; the loader would run constantly", d.Window, d.Tick)
	}
	if err := o.Retry.Validate(); err != nil {
		return fmt.Errorf("options: %w", err)
	}
	for i, dst := range o.Destinations {
		if dst.Prefix == "" {
			return invalidf("options: Destinations[%d] has an empty Prefix", i)
		}
		if dst.MaxInFlight < 0 {
			return invalidf("options: Destinations[%d] (%q): MaxInFlight %d is negative", i, dst.Prefix, dst.MaxInFlight)
		}
		if err := dst.Retry.Validate(); err != nil {
			return fmt.Errorf("options: Destinations[%d] (%q): %w", i, dst.Prefix, err)
		}
	}
	seen := map[string]bool{}
	for i, q := range o.Queues {
		if err := q.validate(); err != nil {
			return fmt.Errorf("options: Queues[%d]: %w", i, err)
		}
		if seen[q.Name] {
			return invalidf("options: Queues[%d]: queue %q registered twice", i, q.Name)
		}
		seen[q.Name] = true
	}
	return nil
}

func (q Queue) validate() error {
	switch {
	case q.Name == "":
		return invalidf("queue: empty Name")
	case len(q.Name) > 256 || strings.ContainsFunc(q.Name, func(r rune) bool { return r == '/' || r <= ' ' || r == 0x7f }):
		return invalidf("queue %.64q: Name must be 1..256 bytes without '/', spaces or control characters", q.Name)
	case q.Handler == nil:
		return invalidf("queue %q: nil Handler", q.Name)
	case q.Parallelism < 0 || q.Parallelism > 1<<16:
		return invalidf("queue %q: Parallelism = %d; want 0 (default GOMAXPROCS) or 1..%d", q.Name, q.Parallelism, 1<<16)
	case q.Timeout < 0:
		return invalidf("queue %q: Timeout = %v is negative; want 0 (default %v) or positive", q.Name, q.Timeout, DefaultHandlerTimeout)
	}
	return q.Retry.Validate()
}

func (q Queue) withDefaults() Queue {
	if q.Parallelism == 0 {
		q.Parallelism = runtime.GOMAXPROCS(0)
	}
	if q.Ordered {
		q.Parallelism = 1
	}
	if q.Timeout == 0 {
		q.Timeout = DefaultHandlerTimeout
	}
	return q
}

// withDefaults fills every zero field but Shards (which the store may
// decide) and Store.
func (o Options) withDefaults() Options {
	procs := runtime.GOMAXPROCS(0)
	if o.Tick == 0 {
		o.Tick = DefaultTick
	}
	if o.Window == 0 {
		o.Window = DefaultWindow
	}
	if o.MaxPending == 0 {
		o.MaxPending = DefaultMaxPending
	}
	if o.MaxPayload == 0 {
		o.MaxPayload = DefaultMaxPayload
	}
	if o.Dispatchers == 0 {
		o.Dispatchers = max(32, 16*procs)
	}
	if o.MaxBatch == 0 {
		o.MaxBatch = DefaultMaxBatch
	}
	if o.MaxReady == 0 {
		o.MaxReady = DefaultMaxReady
	}
	if o.MaxInFlight == 0 {
		o.MaxInFlight = max(1, o.Dispatchers/2)
	}
	if o.NativeMinLead == 0 {
		o.NativeMinLead = DefaultNativeMinLead
	}
	if o.PushBackLag == 0 {
		o.PushBackLag = DefaultPushBackLag
	}
	if o.Clock == nil {
		o.Clock = RealClock{}
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	o.Retry = o.Retry.withDefaults()
	return o
}

// opener returns what opens the store: Store, else a durable store in Dir,
// else a memory store.
func (o Options) opener() store.Opener {
	switch {
	case o.Store != nil:
		return o.Store
	case o.Dir != "":
		return wal.Options{Dir: o.Dir}
	}
	return memstore.Options{}
}

// String prints the options with defaults applied, for logs.
func (o Options) String() string {
	d := o.withDefaults()
	where := "memory"
	switch {
	case d.Dir != "":
		where = "dir=" + d.Dir
	case d.Store != nil:
		where = fmt.Sprintf("store=%T", d.Store)
	}
	return fmt.Sprintf("%s shards=%d tick=%v window=%v max_pending=%d dispatchers=%d max_batch=%d max_ready=%d max_in_flight=%d native_min_lead=%v push_back_lag=%v retry=%+v",
		where, d.Shards, d.Tick, d.Window, d.MaxPending, d.Dispatchers, d.MaxBatch, d.MaxReady, d.MaxInFlight, d.NativeMinLead, d.PushBackLag, d.Retry)
}
