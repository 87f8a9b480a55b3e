package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/hourglassmq/hourglass/cluster"
	"github.com/hourglassmq/hourglass/engine"
)

// Cluster mode: -cluster N runs N engine nodes in this process, each with
// its own cluster store (package cluster) on one Kafka: an in-process kfake
// cluster, or a real one with -cluster kafka://host:port (then -nodes
// says how many). Producers schedule through every node; each node fires
// the partitions it owns into the shared local-queue check. -kill-node AT
// crashes the last node AT after the start: its network is cut (it never
// leaves the group) and its engine closed; the report's failover_ms is the
// time from the crash until every partition it owned fired again on
// another node (or was taken over, for a partition with nothing due).

// clusterSessionTimeout is the group session timeout loadgen runs with:
// the measuring point.
const clusterSessionTimeout = 6 * time.Second

// clusterDrainTimeout is the nodes' DrainTimeout: loadgen's handlers end
// at once, so a hand-over needs little, and the killed node's Close (which
// runs into every bound on its dead network) ends sooner.
const clusterDrainTimeout = 2 * time.Second

// killedCloseBound is how long the killed node's engine Close may take on
// its dead network with loadgen's options: the engine first waits for its
// store calls in flight (each bounded by RequestTimeout), then the store's
// Close takes at most 2×DrainTimeout + TxnTimeout + min(DrainTimeout,
// SessionTimeout) (cluster.Store.Close).
const killedCloseBound = cluster.DefaultRequestTimeout + 2*clusterDrainTimeout + cluster.DefaultTxnTimeout + min(clusterDrainTimeout, clusterSessionTimeout)

// nodeReport is one node's line of the report.
type nodeReport struct {
	Node       int   `json:"node"`
	Fires      int64 `json:"fires"`
	Partitions int   `json:"partitions"` // owned at the end (at the crash for a killed node)
	Killed     bool  `json:"killed,omitempty"`
}

// cnode is one engine node of the run.
type cnode struct {
	i     int
	eng   *engine.Engine
	net   *killDialer
	fires atomic.Int64
	dead  atomic.Bool

	mu   sync.Mutex
	owns map[int]bool
}

func (n *cnode) owned() []int {
	n.mu.Lock()
	defer n.mu.Unlock()
	out := make([]int, 0, len(n.owns))
	for s := range n.owns {
		out = append(out, s)
	}
	return out
}

// killDialer is a node's network; kill closes every connection and
// refuses new ones.
type killDialer struct {
	mu     sync.Mutex
	killed bool
	conns  []net.Conn
}

func (d *killDialer) dial(ctx context.Context, network, host string) (net.Conn, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.killed {
		return nil, errors.New("loadgen: node killed")
	}
	c, err := (&net.Dialer{}).DialContext(ctx, network, host)
	if err == nil {
		d.conns = append(d.conns, c)
	}
	return c, err
}

func (d *killDialer) kill() {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.killed = true
	for _, c := range d.conns {
		_ = c.Close()
	}
}

// failover watches the dead node's partitions come back.
type failover struct {
	mu     sync.Mutex
	at     time.Time
	dead   map[int]bool
	fired  map[int]time.Time // first fire on a survivor after the crash
	taken  map[int]time.Time // first attach on a survivor after the crash
	closed time.Time         // the killed node's Close returned
}

func (f *failover) attach(shard int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.dead[shard] {
		if _, ok := f.taken[shard]; !ok {
			f.taken[shard] = time.Now()
		}
	}
}

func (f *failover) fire(shard int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.dead[shard] {
		if _, ok := f.fired[shard]; !ok {
			f.fired[shard] = time.Now()
		}
	}
}

// ms returns the failover time, or -1 while a partition has not come back.
func (f *failover) ms() float64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	var worst time.Duration
	for s := range f.dead {
		t, ok := f.fired[s]
		if !ok {
			if t, ok = f.taken[s]; !ok {
				return -1
			}
		}
		worst = max(worst, t.Sub(f.at))
	}
	return float64(worst) / float64(time.Millisecond)
}

// clusterNodes parses -cluster: a node count (in-process Kafka) or a URL.
func clusterNodes(cfg config) (n int, brokers string, err error) {
	if rest, ok := strings.CutPrefix(cfg.Cluster, "kafka://"); ok {
		if rest == "" {
			return 0, "", fmt.Errorf("-cluster %q: want kafka://host:port", cfg.Cluster)
		}
		return cfg.Nodes, rest, nil
	}
	n, err = strconv.Atoi(cfg.Cluster)
	if err != nil || n < 1 || n > 64 {
		return 0, "", fmt.Errorf("-cluster %q: want a node count 1..64 (in-process Kafka) or kafka://host:port", cfg.Cluster)
	}
	return n, "", nil
}

// runCluster is -cluster: N nodes, one Kafka, the usual checks.
func runCluster(ctx context.Context, cfg config, out io.Writer) (*report, error) {
	nNodes, brokers, err := clusterNodes(cfg)
	if err != nil {
		return nil, err
	}
	var seeds []string
	where := "Kafka at " + brokers
	if brokers == "" {
		kf, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.GroupMinSessionTimeout(time.Second))
		if err != nil {
			return nil, fmt.Errorf("in-process kafka: %w", err)
		}
		defer kf.Close()
		seeds = kf.ListenAddrs()
		where = "in-process Kafka (kfake)"
	} else {
		seeds = []string{brokers}
	}
	s := newSession(cfg)
	fo := &failover{dead: map[int]bool{}, fired: map[int]time.Time{}, taken: map[int]time.Time{}}
	topic := fmt.Sprintf("hourglass-loadgen-%x", cfg.Seed)
	group := topic + ".owners"
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError}))
	nodes := make([]*cnode, nNodes)
	var alive []*cnode
	var aliveMu sync.RWMutex
	closeAll := func() {
		for _, n := range nodes {
			if n != nil && n.eng != nil && !n.dead.Load() {
				shut, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				if err := n.eng.Shutdown(shut); err != nil {
					fmt.Fprintln(os.Stderr, "loadgen: shutdown:", err)
				}
				cancel()
			}
		}
	}
	for i := range nodes {
		n := &cnode{i: i, net: &killDialer{}, owns: map[int]bool{}}
		nodes[i] = n
		k := cluster.Kafka{
			Brokers:        seeds,
			Topic:          topic,
			Group:          group,
			SessionTimeout: clusterSessionTimeout,
			DrainTimeout:   clusterDrainTimeout,
			Partitions:     cfg.Shards,
			Dir:            "", // each node's index in memory: rebuilt from the topic at start
			NodeID:         fmt.Sprintf("loadgen-%d", i),
			ClientOptions:  []kgo.Opt{kgo.Dialer(n.net.dial)},
			Logger:         logger,
		}
		eng, err := engine.Open(ctx, engine.Options{
			Store:       k,
			Dispatchers: cfg.Dispatchers,
			Tick:        cfg.Tick,
			Window:      cfg.Window,
			Logger:      logger,
			Queues: []engine.Queue{{Name: queueName, Parallelism: cfg.Parallelism, Handler: func(_ context.Context, d *engine.Delivery) error {
				if n.dead.Load() {
					return errors.New("loadgen: node killed")
				}
				n.fires.Add(1)
				fo.fire(d.ID.Shard())
				return s.check(d.Payload)
			}}},
			Events: engine.Events{
				ShardAttached: func(shard int) {
					n.mu.Lock()
					n.owns[shard] = true
					n.mu.Unlock()
					if !n.dead.Load() {
						fo.attach(shard)
					}
				},
				ShardDetached: func(shard int) {
					if n.dead.Load() {
						return // keep what it held at the crash
					}
					n.mu.Lock()
					delete(n.owns, shard)
					n.mu.Unlock()
				},
			},
		})
		if err != nil {
			closeAll()
			return nil, fmt.Errorf("open node %d: %w", i, err)
		}
		n.eng = eng
		alive = append(alive, n)
	}
	// Start once the group has settled: a node that joined last may have
	// no partition yet (the group moves some to it in a later rebalance),
	// and the node -kill-node crashes must hold some. Every node owning
	// one is not enough: cooperative-sticky moves a partition in two
	// rebalances, and the second may still be running. A node crashed in
	// the middle of a rebalance stalls the failover well past the session
	// timeout on kfake (its coordinator expires the members parked in
	// JoinGroup along with the dead one and never answers their join, so
	// they are out of the group for RebalanceTimeout plus kgo's 10 s
	// request overhead, about 40 s), longer than the run waits for the
	// messages they own.
	if cfg.Shards == 0 || cfg.Shards >= nNodes {
		settleCluster(ctx, nodes, seeds, topic, group)
	}
	s.eng = nodes[0].eng // the node that is never killed: for the store figures
	s.start = time.Now()
	if !cfg.Quiet {
		fmt.Fprintf(out, "hourglass loadgen: cluster of %d nodes on %s, topic %s, %d producers × batch %d, delay %s, payload %d B, seed %d\n",
			nNodes, where, topic, cfg.Producers, cfg.Batch, cfg.Delay, cfg.Payload, cfg.Seed)
	}
	pick := func(p int) *cnode {
		aliveMu.RLock()
		defer aliveMu.RUnlock()
		return alive[p%len(alive)]
	}
	until := s.start.Add(cfg.Duration)
	prodErr := make(chan error, 1)
	go func() { prodErr <- produceCluster(ctx, s, until, pick) }()
	var killWait func()
	var killTimer <-chan time.Time
	if cfg.KillNode > 0 && nNodes > 1 {
		t := time.NewTimer(cfg.KillNode)
		defer t.Stop()
		killTimer = t.C
	}
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
producing:
	for {
		select {
		case err = <-prodErr:
			break producing
		case <-killTimer:
			victim := nodes[nNodes-1]
			fo.mu.Lock()
			for _, sh := range victim.owned() {
				fo.dead[sh] = true
			}
			fo.at = time.Now()
			fo.mu.Unlock()
			victim.dead.Store(true)
			victim.net.kill()
			aliveMu.Lock()
			alive = alive[:len(alive)-1]
			aliveMu.Unlock()
			done := make(chan struct{})
			go func() {
				defer close(done)
				_ = victim.eng.Close()
				fo.mu.Lock()
				fo.closed = time.Now()
				fo.mu.Unlock()
			}()
			killWait = func() { <-done }
			if !cfg.Quiet {
				fmt.Fprintf(out, "%5.1fs killed node %d (it owned %d partitions)\n", time.Since(s.start).Seconds(), victim.i, len(fo.dead))
			}
		case <-tick.C:
			s.progress(out, "schedule", max(0, time.Until(until))+cfg.delay.maxDelay)
		}
	}
	schedSecs := time.Since(s.start).Seconds()
	if err == nil {
		s.drain(ctx, out, 30*time.Second)
		// drain stops when as many messages were delivered as were
		// acknowledged; in a cluster a Schedule that failed on the killed
		// node may still have been written, and its deliveries
		// (unexpected) would stop it early: wait for the acknowledged ones.
		deadline := time.Unix(0, s.maxDue.Load()).Add(30 * time.Second)
		for missing(s.tr) > 0 && time.Now().Before(deadline) && ctx.Err() == nil {
			time.Sleep(100 * time.Millisecond)
		}
	}
	if ctx.Err() != nil {
		closeAll()
		return nil, fmt.Errorf("interrupted after %.1fs, before every message was due: no verdict", time.Since(s.start).Seconds())
	}
	var stats engine.Stats
	if len(alive) > 0 {
		stats = alive[0].eng.Stats()
	}
	owned := make([]int, len(nodes)) // before closeAll hands them over
	for i, n := range nodes {
		owned[i] = len(n.owned())
	}
	closeAll()
	if killWait != nil {
		// The killed node's Close is bounded by the store even on its dead
		// network (cluster.Store.Close); one that overruns its bound fails
		// the run rather than hanging it.
		done := make(chan struct{})
		go func() { killWait(); close(done) }()
		select {
		case <-done:
		case <-time.After(time.Until(fo.at.Add(killedCloseBound + 10*time.Second))):
			return nil, fmt.Errorf("the killed node's Close did not end within %v of the crash (its bound)", killedCloseBound)
		}
		if !cfg.Quiet {
			fmt.Fprintf(out, "the killed node's Close took %.1fs (bound %v)\n", fo.closed.Sub(fo.at).Seconds(), killedCloseBound)
		}
	}
	lost, _ := s.tr.settle()
	rep := &report{
		Scheduled:    s.sched.Load(),
		Acknowledged: s.tr.acked.Load(),
		Delivered:    s.tr.delivered.Load(),
		Lost:         lost,
		Early:        s.tr.early.Load(),
		Duplicates:   s.tr.duplicates.Load(),
		Expired:      int64(stats.Expired),
		PeakPending:  s.peakPending,
		RSSPeakBytes: rssPeak(),
		unexpected:   s.tr.unexpected.Load(),
	}
	s.rates(rep, schedSecs)
	for i, n := range nodes {
		rep.Nodes = append(rep.Nodes, nodeReport{Node: n.i, Fires: n.fires.Load(), Partitions: owned[i], Killed: n.dead.Load()})
	}
	if !fo.at.IsZero() {
		ms := fo.ms()
		rep.FailoverMs = &ms
	}
	return rep, err
}

// settleCluster waits, at most 30 s, until the group is Stable with every
// node a member, every partition of the topic is attached on exactly one
// node and every node holds one, all of it for a second on end (a node
// rejoins at once after the first round of a cooperative rebalance).
func settleCluster(ctx context.Context, nodes []*cnode, seeds []string, topic, group string) {
	cl, err := kgo.NewClient(kgo.SeedBrokers(seeds...))
	if err != nil {
		return
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	var since time.Time
	for deadline := time.Now().Add(30 * time.Second); ctx.Err() == nil && time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if !settled(ctx, adm, nodes, topic, group) {
			since = time.Time{}
			continue
		}
		if since.IsZero() {
			since = time.Now()
		}
		if time.Since(since) >= time.Second {
			return
		}
	}
}

// settled reports whether the group and the nodes' partitions are settled
// now (see settleCluster).
func settled(ctx context.Context, adm *kadm.Client, nodes []*cnode, topic, group string) bool {
	held := map[int]bool{}
	for _, n := range nodes {
		owned := n.owned()
		if len(owned) == 0 {
			return false
		}
		for _, p := range owned {
			if held[p] {
				return false
			}
			held[p] = true
		}
	}
	td, err := adm.ListTopics(ctx, topic)
	if err != nil || td[topic].Err != nil || len(td[topic].Partitions) != len(held) {
		return false
	}
	gs, err := adm.DescribeGroups(ctx, group)
	if err != nil {
		return false
	}
	g, ok := gs[group]
	return ok && g.Err == nil && g.State == "Stable" && len(g.Members) == len(nodes)
}

// produceCluster runs the producers, each scheduling through the node
// pick gives it (a killed node's producers move to a live one).
func produceCluster(ctx context.Context, s *session, until time.Time, pick func(p int) *cnode) error {
	return s.runProducers(ctx, until, "local://"+queueName, func(ctx context.Context, p int, msgs []engine.Message) (bool, error) {
		n := pick(p)
		// A call on a node killed under it ends by itself: the store
		// bounds every writing call by RequestTimeout, and the node's
		// Close ends the calls still running.
		_, err := n.eng.ScheduleBatch(ctx, msgs)
		switch {
		case err == nil:
			return true, nil
		case n.dead.Load() && ctx.Err() == nil:
			return false, nil // the node was killed under the call: not acknowledged
		}
		return false, fmt.Errorf("through node %d: %w", n.i, err)
	})
}

// missing counts acknowledged messages not yet delivered (read only).
func missing(t *tracker) int64 {
	p := t.chunks.Load()
	if p == nil {
		return 0
	}
	var n int64
	for _, c := range *p {
		if c == nil {
			continue
		}
		for i := range c {
			if v := c[i].Load(); v&ackedBit != 0 && v&^ackedBit == 0 {
				n++
			}
		}
	}
	return n
}
