package engine

import (
	"context"
	"fmt"
	"log/slog"
	"runtime"
	"strings"
	"time"

	"github.com/hourglassmq/hourglass/transport"
	"github.com/hourglassmq/hourglass/wal"
)

// Options configures Open. The zero value works: an in-memory engine (nothing
// survives a restart) with GOMAXPROCS shards, 1 ms ticks and only local queues.
// Every default is named in the field's comment.
type Options struct {
	// Dir is the durable store's directory. Empty selects IN-MEMORY MODE:
	// the same API and semantics, but NOTHING SURVIVES A RESTART OR CRASH.
	Dir string
	// StoreOptions tunes the durable store (FS, batch sizes, cache). Dir,
	// Shards, Horizon, Logger and Now are set by the engine. Ignored in
	// memory mode.
	StoreOptions wal.Options

	// Shards is the number of shards, each owned by one goroutine with its
	// own timing wheel. Default GOMAXPROCS, at most 256. A durable store
	// keeps the shard count it was created with; 0 takes it.
	Shards int
	// Tick is the wheel resolution: due times are rounded up to a tick.
	// Default 1 ms.
	Tick time.Duration
	// Window is how far ahead of now a durable engine holds messages in RAM;
	// later messages stay on disk and are paged in as time advances.
	// Default 1 minute. Ignored in memory mode (everything is in RAM).
	Window time.Duration
	// MaxPending bounds the messages held in RAM per shard: in memory mode
	// Schedule fails with ErrFull beyond it; in durable mode the window
	// loader stops paging in. Default 4M per shard.
	MaxPending int
	// MaxPayload bounds Message.Payload. Default 1 MiB.
	MaxPayload int

	// Dispatchers is the fixed pool of goroutines that deliver due messages,
	// run handlers and commit outcomes. Default max(8, 4×GOMAXPROCS) in
	// memory mode; max(32, 16×GOMAXPROCS) in durable mode, where each
	// dispatcher also waits for its outcome batch's fsync.
	Dispatchers int
	// MaxBatch bounds the messages handed to one transport Send or one
	// handler run. Default 256.
	MaxBatch int
	// MaxReady bounds the due messages each shard holds waiting for a
	// dispatcher (its ready queues). When they are full the shard stops
	// taking due messages off its wheel (push back); one destination may use
	// at most 3/4 of it, so a slow destination cannot stall the others.
	// Default 8192.
	MaxReady int
	// MaxInFlight bounds the batches in flight per destination (transports).
	// Default Dispatchers/2. Local queues use their Parallelism instead.
	MaxInFlight int
	// NativeMinLead: a message for a destination its transport schedules
	// natively (transport.Registry.Native, e.g. a NATS NativeRoute) is handed
	// to the broker at Schedule time when it is due more than NativeMinLead
	// from now and has no Expires; nearer messages are held by the engine,
	// whose wheel is more precise than the broker's timer. Default 1 s;
	// negative disables native scheduling.
	NativeMinLead time.Duration

	// Clock is the source of time. Default RealClock{}; tests use FakeClock.
	Clock Clock
	// Logger receives engine logs. Default slog.Default().
	Logger *slog.Logger
	// Retry is the default retry policy; see RetryPolicy for its defaults.
	Retry RetryPolicy
	// Destinations overrides retry policy and in-flight limit per
	// destination prefix (the longest matching prefix wins).
	Destinations []DestinationOptions
	// Transports serves non-local destinations (http, nats, kafka, ...).
	// Default none: only local:// destinations are accepted.
	Transports *transport.Registry
	// Queues registers local queue handlers at Open, before recovery starts
	// dispatching (so recovered messages find their handler).
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
	// Parallelism is how many handler batches of this queue run at once.
	// Default GOMAXPROCS. Ignored when Ordered.
	Parallelism int
	// Ordered runs one handler at a time, in due order: every message of an
	// ordered queue lives on one shard (chosen by hashing the queue name)
	// and one batch is in flight at a time. A retried message takes its new
	// due time's place; it does not block the queue.
	Ordered bool
	// Retry is the queue's retry policy; zero uses Options.Retry.
	Retry RetryPolicy
}

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
	DefaultMaxPayload  = 1 << 20
	DefaultMaxBatch    = 256
	DefaultMaxReady    = 8192
	DefaultMaxAttempts = 8
	DefaultRetryBase   = time.Second
	DefaultRetryMax    = time.Hour
	DefaultJitter      = 0.2
	// DefaultNativeMinLead is Options.NativeMinLead's default.
	DefaultNativeMinLead = time.Second
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

// Validate explains a bad retry policy.
func (p RetryPolicy) Validate() error {
	switch {
	case p.Base < 0:
		return invalidf("retry: Base %v is negative", p.Base)
	case p.Max < 0:
		return invalidf("retry: Max %v is negative", p.Max)
	case p.Max != 0 && p.Base > p.Max:
		return invalidf("retry: Base %v is larger than Max %v", p.Base, p.Max)
	case p.Jitter > 1:
		return invalidf("retry: Jitter %v is more than 1 (it is a fraction of the delay)", p.Jitter)
	}
	for i, d := range p.Delays {
		if d < 0 {
			return invalidf("retry: Delays[%d] = %v is negative", i, d)
		}
	}
	return nil
}

// Validate explains every bad option. Open calls it.
func (o Options) Validate() error {
	switch {
	case o.Shards < 0 || o.Shards > wal.MaxShards:
		return invalidf("options: Shards = %d; want 0 (default GOMAXPROCS) or 1..%d", o.Shards, wal.MaxShards)
	case o.Tick < 0:
		return invalidf("options: Tick = %v is negative; want 0 (default %v) or a positive duration", o.Tick, DefaultTick)
	case o.Tick > time.Second:
		return invalidf("options: Tick = %v; more than 1s would make every message up to that late", o.Tick)
	case o.Window < 0:
		return invalidf("options: Window = %v is negative; want 0 (default %v) or positive", o.Window, DefaultWindow)
	case o.Window != 0 && o.Window < 100*o.effTick():
		return invalidf("options: Window = %v is shorter than 100 ticks (%v); the loader would run constantly", o.Window, 100*o.effTick())
	case o.MaxPending < 0:
		return invalidf("options: MaxPending = %d is negative", o.MaxPending)
	case o.Dir == "" && o.MaxPending > maxMemSlots:
		return invalidf("options: MaxPending = %d; a memory-mode shard holds at most %d", o.MaxPending, maxMemSlots)
	case o.MaxPayload < 0 || o.MaxPayload > 64<<20:
		return invalidf("options: MaxPayload = %d; want 0 (default %d) or 1..%d", o.MaxPayload, DefaultMaxPayload, 64<<20)
	case o.Dispatchers < 0 || o.Dispatchers > 4096:
		return invalidf("options: Dispatchers = %d; want 0 (default) or 1..4096", o.Dispatchers)
	case o.MaxBatch < 0 || o.MaxBatch > wal.MaxCallMessages/4:
		return invalidf("options: MaxBatch = %d; want 0 (default %d) or 1..%d", o.MaxBatch, DefaultMaxBatch, wal.MaxCallMessages/4)
	case o.MaxReady < 0:
		return invalidf("options: MaxReady = %d is negative", o.MaxReady)
	case o.MaxReady > 0 && o.MaxReady < 4:
		return invalidf("options: MaxReady = %d; want 0 (default %d) or at least 4", o.MaxReady, DefaultMaxReady)
	case o.MaxInFlight < 0:
		return invalidf("options: MaxInFlight = %d is negative", o.MaxInFlight)
	}
	if err := o.Retry.Validate(); err != nil {
		return fmt.Errorf("options: %w", err)
	}
	for i, d := range o.Destinations {
		if d.Prefix == "" {
			return invalidf("options: Destinations[%d] has an empty Prefix", i)
		}
		if err := d.Retry.Validate(); err != nil {
			return fmt.Errorf("options: Destinations[%d] (%q): %w", i, d.Prefix, err)
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
	case strings.ContainsAny(q.Name, "/ \t\r\n"):
		return invalidf("queue %q: Name may not contain '/' or spaces", q.Name)
	case q.Handler == nil:
		return invalidf("queue %q: nil Handler", q.Name)
	case q.Parallelism < 0:
		return invalidf("queue %q: Parallelism %d is negative", q.Name, q.Parallelism)
	}
	return q.Retry.Validate()
}

func (o Options) effTick() time.Duration {
	if o.Tick == 0 {
		return DefaultTick
	}
	return o.Tick
}

func (o Options) withDefaults() Options {
	procs := runtime.GOMAXPROCS(0)
	if o.Shards == 0 && o.Dir == "" {
		o.Shards = min(procs, wal.MaxShards)
	}
	o.Tick = o.effTick()
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
		o.Dispatchers = max(8, 4*procs)
		if o.Dir != "" {
			o.Dispatchers = max(32, 16*procs)
		}
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
	if o.Clock == nil {
		o.Clock = RealClock{}
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	o.Retry = o.Retry.withDefaults()
	return o
}

// String prints the options with defaults applied, for logs.
func (o Options) String() string {
	d := o.withDefaults()
	mode := "memory"
	if d.Dir != "" {
		mode = "durable dir=" + d.Dir
	}
	return fmt.Sprintf("%s shards=%d tick=%v window=%v max_pending=%d dispatchers=%d max_batch=%d max_ready=%d max_in_flight=%d native_min_lead=%v retry=%+v",
		mode, d.Shards, d.Tick, d.Window, d.MaxPending, d.Dispatchers, d.MaxBatch, d.MaxReady, d.MaxInFlight, d.NativeMinLead, d.Retry)
}

// Handler handles one delivery of a message to a local queue. Returning nil
// acks the message (and commits whatever it cascaded through d); an error
// goes to the retry policy (RetryIn/RetryAt choose the time, Reject
// dead-letters at once); a panic counts as an error. ctx ends when the
// engine is closed.
type Handler func(ctx context.Context, d *Delivery) error
