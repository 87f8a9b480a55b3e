package main

import (
	"errors"
	"flag"
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"time"
)

// config is everything a run is told; it is printed in the report as-is.
type config struct {
	Duration    time.Duration `json:"duration"`
	N           int64         `json:"n"`
	Rate        float64       `json:"rate"`
	Producers   int           `json:"producers"`
	Batch       int           `json:"batch"`
	Delay       string        `json:"delay"`
	Payload     int           `json:"payload"`
	Shards      int           `json:"shards"`
	Dispatchers int           `json:"dispatchers,omitempty"`
	Tick        time.Duration `json:"tick"`
	Window      time.Duration `json:"window"`
	MemTableMiB int           `json:"memtable_mib,omitempty"`
	Procs       int           `json:"procs"`
	Parallelism int           `json:"parallelism"`
	Dir         string        `json:"dir,omitempty"`
	Mem         bool          `json:"mem"`
	Target      string        `json:"target"`
	TargetURL   string        `json:"target_url,omitempty"`
	JSON        string        `json:"-"`
	CPUProfile  string        `json:"-"`
	Trace       string        `json:"-"`
	MemProfile  string        `json:"-"`
	Replay      string        `json:"replay,omitempty"`
	Crash       int           `json:"crash,omitempty"`
	Seed        uint64        `json:"seed"`
	Cluster     string        `json:"cluster,omitempty"`
	Nodes       int           `json:"nodes,omitempty"`
	KillNode    time.Duration `json:"kill_node,omitempty"`
	FindRate    bool          `json:"find_rate,omitempty"`
	Step        time.Duration `json:"step,omitempty"`
	MaxRate     float64       `json:"max_rate,omitempty"`
	Quiet       bool          `json:"-"`

	// child marks a process started by -crash; logs is where it records
	// acknowledged schedules and deliveries for the parent to check.
	child   bool
	logs    string
	produce bool
	seqLo   uint64

	delay delayDist
}

// maxCrashes bounds -crash: every child gets its own range of 2^childBits
// sequence numbers below 2^seqBits.
const maxCrashes = 1<<(seqBits-childBits) - 2

// minPayload holds the sequence number and due time the checks need.
const minPayload = 16

func parseFlags(args []string) (config, error) {
	var c config
	fs := flag.NewFlagSet("loadgen", flag.ContinueOnError)
	fs.DurationVar(&c.Duration, "duration", 15*time.Second, "how long producers schedule; the run then waits for the last messages to fire")
	fs.Int64Var(&c.N, "n", 0, "total messages to schedule (0: as many as -duration allows)")
	fs.Float64Var(&c.Rate, "rate", 0, "schedules per second over all producers (0: as fast as it goes)")
	fs.IntVar(&c.Producers, "producers", 64, "concurrent producer goroutines")
	fs.IntVar(&c.Batch, "batch", 32, "messages per ScheduleBatch call (1: one Schedule per message)")
	fs.StringVar(&c.Delay, "delay", "uniform:100ms-5s", "due-time distribution: fixed:D, uniform:D1-D2 or exp:MEAN")
	fs.IntVar(&c.Payload, "payload", 100, fmt.Sprintf("payload bytes per message (at least %d)", minPayload))
	fs.IntVar(&c.Shards, "shards", 0, "engine shards (0: the engine's default, GOMAXPROCS)")
	fs.IntVar(&c.Dispatchers, "dispatchers", 0, "engine dispatcher goroutines (0: the engine's default, max(32, 16×GOMAXPROCS))")
	fs.DurationVar(&c.Tick, "tick", 0, "wheel tick (0: the engine's default, 1ms)")
	fs.DurationVar(&c.Window, "window", 0, "how far ahead the durable engine holds messages in RAM (0: the engine's default)")
	fs.IntVar(&c.Procs, "procs", 0, "GOMAXPROCS for the run (0: one more than the runtime's default, unless the GOMAXPROCS environment variable is set; docs/tuning.md says why)")
	fs.IntVar(&c.MemTableMiB, "memtable", 0, "the durable store's Pebble memtable in MiB (0: the store's default, 64): larger means fewer flushes and longer recovery after a crash (docs/tuning.md)")
	fs.IntVar(&c.Parallelism, "parallelism", 0, "handler parallelism of the local queue (0: the engine's default)")
	fs.StringVar(&c.Dir, "dir", "", "store directory to use and keep (default: a temporary one, removed at the end)")
	fs.BoolVar(&c.Mem, "mem", false, "in-memory mode: no store, nothing survives a restart")
	fs.StringVar(&c.Target, "target", "local", "where messages go: local (an in-process handler), http (webhooks to an in-process receiver), nats or kafka (an in-process server), or a real server as nats://host:port or kafka://host:port")
	fs.StringVar(&c.TargetURL, "target-url", "", "a real server for -target nats (nats://host:port) or kafka (host:port); loadgen also consumes from it to check deliveries")
	fs.StringVar(&c.JSON, "json", "", "also write the report as JSON to this file")
	fs.StringVar(&c.CPUProfile, "cpuprofile", "", "write a CPU profile of the run to this file (go tool pprof)")
	fs.StringVar(&c.MemProfile, "memprofile", "", "write an allocation profile of the run to this file (go tool pprof -sample_index=alloc_space)")
	fs.StringVar(&c.Trace, "trace", "", "write an execution trace of the run to this file (go tool trace): where goroutines wait, GC and scheduler latency")
	fs.StringVar(&c.Replay, "replay", "", "open this existing store, fire what is pending and report the recovery")
	fs.IntVar(&c.Crash, "crash", 0, "run the engine in a child process, SIGKILL it this many times, restart it on the same store, and check every acknowledged message was delivered")
	fs.Uint64Var(&c.Seed, "seed", 0, "random seed (0: a fresh one, printed in the report)")
	fs.BoolVar(&c.Quiet, "quiet", false, "no progress lines")
	fs.StringVar(&c.Cluster, "cluster", "", "cluster mode: N engine nodes on an in-process Kafka (kfake), or kafka://host:port for a real one (-nodes of them); -shards sets the partitions")
	fs.IntVar(&c.Nodes, "nodes", 3, "nodes with -cluster kafka://host:port")
	fs.DurationVar(&c.KillNode, "kill-node", 0, "with -cluster: crash the last node this long after the start (network cut, no leave) and report failover_ms")
	fs.BoolVar(&c.FindRate, "find-rate", false, "search for the highest -rate the engine sustains with p99 lateness <= 10 ms (from -rate, default 25000/s, doubling (halving if the first fails), then bisecting with runs of -step, the first that misses the bound by under 3x run once more, then confirming over -duration); reports sustainable_rate")
	fs.DurationVar(&c.Step, "step", 10*time.Second, "how long each -find-rate search step schedules")
	fs.Float64Var(&c.MaxRate, "max-rate", 10_000_000, "the highest rate -find-rate tries")
	fs.BoolVar(&c.child, "child", false, "internal: run as the child of -crash")
	fs.StringVar(&c.logs, "logs", "", "internal: the child's log directory")
	fs.BoolVar(&c.produce, "produce", true, "internal: whether the child schedules new messages")
	fs.Uint64Var(&c.seqLo, "seqlo", 0, "internal: the child's first sequence number")
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	if fs.NArg() > 0 {
		return c, fmt.Errorf("unexpected argument %q; every setting is a flag (see -h)", fs.Arg(0))
	}
	if c.FindRate {
		// The sustainable rate is defined over 30 s: the confirming run's
		// default.
		set := false
		fs.Visit(func(f *flag.Flag) { set = set || f.Name == "duration" })
		if !set {
			c.Duration = 30 * time.Second
		}
	}
	return c, c.validate()
}

func (c *config) validate() error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if c.Duration <= 0 {
		bad("-duration %v: must be positive", c.Duration)
	}
	if c.N < 0 {
		bad("-n %d: must be 0 (unbounded) or positive", c.N)
	}
	if c.Rate < 0 || math.IsNaN(c.Rate) || math.IsInf(c.Rate, 0) {
		bad("-rate %v: must be 0 (as fast as it goes) or a positive number", c.Rate)
	}
	if c.Producers < 1 || c.Producers > 100_000 {
		bad("-producers %d: allowed 1..100000", c.Producers)
	}
	if c.Batch < 1 || c.Batch > 10_000 {
		bad("-batch %d: allowed 1..10000", c.Batch)
	}
	if c.Payload < minPayload || c.Payload > 1<<20 {
		bad("-payload %d: allowed %d..%d bytes", c.Payload, minPayload, 1<<20)
	}
	if c.Shards < 0 || c.Shards > 256 {
		bad("-shards %d: allowed 0 (default) or 1..256", c.Shards)
	}
	if c.Dispatchers < 0 || c.Dispatchers > 4096 {
		bad("-dispatchers %d: allowed 0 (default) or 1..4096", c.Dispatchers)
	}
	if c.Tick < 0 || c.Window < 0 || c.Parallelism < 0 {
		bad("-tick, -window and -parallelism must not be negative")
	}
	if c.Procs < 0 || c.Procs > 1024 {
		bad("-procs %d: allowed 0 (default) or 1..1024", c.Procs)
	}
	if c.MemTableMiB < 0 || c.MemTableMiB > 4096 {
		bad("-memtable %d: allowed 0 (the store's default) or 1..4096 MiB", c.MemTableMiB)
	}
	if c.MemTableMiB > 0 && (c.Mem || c.Cluster != "") {
		bad("-memtable sizes the durable store's memtable; it does not go with -mem or -cluster")
	}
	// A URL names a real server: -target nats://host:4222 is short for
	// -target nats -target-url nats://host:4222, kafka://host:9092 likewise.
	if scheme, rest, ok := strings.Cut(c.Target, "://"); ok && c.TargetURL == "" {
		switch scheme {
		case "nats":
			c.Target, c.TargetURL = "nats", c.Target
		case "kafka":
			c.Target, c.TargetURL = "kafka", rest
		default:
			bad("-target %q: a real server can be named for nats:// or kafka://; http targets use an in-process receiver so that every delivery can be checked", c.Target)
		}
	}
	switch c.Target {
	case "local", "http", "nats", "kafka":
	default:
		bad("-target %q: allowed local, http, nats, kafka", c.Target)
	}
	if c.TargetURL != "" && c.Target != "nats" && c.Target != "kafka" {
		bad("-target-url goes with -target nats or kafka (http and local use in-process receivers)")
	}
	if c.Crash > 0 && c.Target != "local" {
		bad("-crash checks deliveries logged by the child's local queue; use -target local")
	}
	if c.Mem && (c.Dir != "" || c.Replay != "" || c.Crash > 0) {
		bad("-mem has no store, so it cannot go with -dir, -replay or -crash")
	}
	if c.FindRate && (c.Replay != "" || c.Crash > 0 || c.Dir != "") {
		bad("-find-rate runs a fresh temporary store at each rate; it does not go with -dir, -replay or -crash")
	}
	if c.MaxRate <= 0 || math.IsNaN(c.MaxRate) {
		bad("-max-rate %v: must be positive", c.MaxRate)
	}
	if c.Step <= 0 {
		bad("-step %v: must be positive", c.Step)
	}
	if c.Replay != "" && c.Crash > 0 {
		bad("-replay and -crash are separate modes; choose one")
	}
	if c.Cluster != "" {
		if c.Target != "local" || c.Mem || c.Dir != "" || c.Replay != "" || c.Crash > 0 || c.FindRate {
			bad("-cluster runs nodes on cluster stores with the local queue: it goes with none of -target, -mem, -dir, -replay, -crash, -find-rate")
		}
		if c.Nodes < 1 || c.Nodes > 64 {
			bad("-nodes %d: allowed 1..64", c.Nodes)
		}
		if _, _, err := clusterNodes(*c); err != nil {
			errs = append(errs, err)
		}
	} else if c.KillNode != 0 {
		bad("-kill-node goes with -cluster")
	}
	if c.KillNode < 0 {
		bad("-kill-node %v: must not be negative", c.KillNode)
	}
	if c.Crash < 0 || c.Crash > maxCrashes {
		bad("-crash %d: allowed 0..%d", c.Crash, maxCrashes)
	}
	d, err := parseDelay(c.Delay)
	if err != nil {
		errs = append(errs, err)
	}
	c.delay = d
	if c.Seed == 0 {
		c.Seed = rand.Uint64() | 1
	}
	return errors.Join(errs...)
}

// delayDist draws how far in the future a message is due.
type delayDist struct {
	kind     string // fixed, uniform or exp
	a, b     time.Duration
	maxDelay time.Duration // the longest delay the run should wait for
}

func parseDelay(s string) (delayDist, error) {
	usage := fmt.Errorf("-delay %q: use fixed:D, uniform:D1-D2 or exp:MEAN with Go durations, e.g. fixed:5s, uniform:1s-10s, exp:2s", s)
	kind, arg, ok := strings.Cut(s, ":")
	if !ok {
		return delayDist{}, usage
	}
	switch kind {
	case "fixed", "exp":
		d, err := time.ParseDuration(arg)
		if err != nil || d < 0 || (kind == "exp" && d == 0) {
			return delayDist{}, usage
		}
		dd := delayDist{kind: kind, a: d, maxDelay: d}
		if kind == "exp" {
			dd.maxDelay = 10 * d // e^-10: about one message in 22,000 is later
		}
		return dd, nil
	case "uniform":
		lo, hi, ok := strings.Cut(arg, "-")
		a, err1 := time.ParseDuration(lo)
		b, err2 := time.ParseDuration(hi)
		if !ok || err1 != nil || err2 != nil || a < 0 || b < a {
			return delayDist{}, usage
		}
		return delayDist{kind: kind, a: a, b: b, maxDelay: b}, nil
	}
	return delayDist{}, usage
}

func (d delayDist) sample(rng *rand.Rand) time.Duration {
	switch d.kind {
	case "uniform":
		if d.b == d.a {
			return d.a
		}
		return d.a + time.Duration(rng.Int64N(int64(d.b-d.a)+1))
	case "exp":
		return time.Duration(rng.ExpFloat64() * float64(d.a))
	}
	return d.a
}
