package cluster

import (
	"context"
	"encoding/binary"
	"errors"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/hourglassmq/hourglass/engine"
)

// Multi-node tests: engines on one in-process Kafka (kfake), each with its
// cluster store, scheduling from every node and checking every delivery
// with the words of the load generator: lost, early, duplicated.

// cutDialer is a node's network: cut closes every connection and refuses
// new ones, so the node vanishes without leaving the group (a crash as the
// brokers see it).
type cutDialer struct {
	mu    sync.Mutex
	cut   bool
	conns []net.Conn
}

func (d *cutDialer) dial(ctx context.Context, network, host string) (net.Conn, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.cut {
		return nil, errors.New("test: network cut")
	}
	c, err := (&net.Dialer{}).DialContext(ctx, network, host)
	if err == nil {
		d.conns = append(d.conns, c)
	}
	return c, err
}

func (d *cutDialer) sever() {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.cut = true
	for _, c := range d.conns {
		_ = c.Close()
	}
}

// book records deliveries: a message's payload is its sequence number and
// due time.
type book struct {
	mu        sync.Mutex
	acked     map[uint64]int64 // seq → due
	delivered map[uint64]int
	byNode    map[int]int
	early     int
	dups      int
	lastFire  map[int]time.Time // shard → last delivery
	seq       atomic.Uint64
	cancelled uint64
	moved     map[uint64]int64 // seq → due set by a Reschedule
}

func newBook() *book {
	return &book{acked: map[uint64]int64{}, delivered: map[uint64]int{}, byNode: map[int]int{}, lastFire: map[int]time.Time{}, moved: map[uint64]int64{}}
}

func payload(seq uint64, due time.Time) []byte {
	b := make([]byte, 16)
	binary.LittleEndian.PutUint64(b, seq)
	binary.LittleEndian.PutUint64(b[8:], uint64(due.UnixNano()))
	return b
}

func (b *book) deliver(node int, d *engine.Delivery) {
	now := time.Now()
	seq := binary.LittleEndian.Uint64(d.Payload)
	due := int64(binary.LittleEndian.Uint64(d.Payload[8:]))
	b.mu.Lock()
	defer b.mu.Unlock()
	if d, ok := b.moved[seq]; ok {
		due = d
	}
	if now.UnixNano() < due {
		b.early++
	}
	b.delivered[seq]++
	if b.delivered[seq] > 1 {
		b.dups++
	}
	b.byNode[node]++
	b.lastFire[d.ID.Shard()] = now
}

// unack forgets seq's acknowledgement: it was cancelled.
func (b *book) unack(seq uint64) {
	b.mu.Lock()
	delete(b.acked, seq)
	b.cancelled = seq
	b.mu.Unlock()
}

// reschedule records seq's new due time, before the Reschedule call.
func (b *book) reschedule(seq uint64, due time.Time) {
	b.mu.Lock()
	b.moved[seq] = due.UnixNano()
	b.mu.Unlock()
}

func (b *book) ack(seq uint64, due time.Time) {
	b.mu.Lock()
	b.acked[seq] = due.UnixNano()
	b.mu.Unlock()
}

// missing returns how many acknowledged messages were not delivered.
func (b *book) missing() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	n := 0
	for seq := range b.acked {
		if b.delivered[seq] == 0 {
			n++
		}
	}
	return n
}

func (b *book) counts() (early, dups int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.early, b.dups
}

// node is one engine of the cluster.
type node struct {
	i    int
	e    *engine.Engine
	net  *cutDialer
	mu   sync.Mutex
	owns map[int]time.Time // shard → attached at
}

func (n *node) owned() []int {
	n.mu.Lock()
	defer n.mu.Unlock()
	var out []int
	for s := range n.owns {
		out = append(out, s)
	}
	return out
}

type clusterT struct {
	t     *testing.T
	kf    *kfake.Cluster
	k     Kafka
	b     *book
	mu    sync.Mutex
	nodes []*node
	// attachedAt records when each shard was last attached, by any node.
	attachedAt map[int]time.Time
}

func newClusterT(t *testing.T, partitions int, opts ...kfake.Opt) *clusterT {
	kf := newKafka(t, opts...)
	return &clusterT{t: t, kf: kf, k: testConfig(kf, partitions), b: newBook(), attachedAt: map[int]time.Time{}}
}

// start starts a node; the cluster's Kafka is shared, the index is its own.
func (c *clusterT) start(ctx context.Context, mod func(k *Kafka)) *node {
	c.t.Helper()
	c.mu.Lock()
	n := &node{i: len(c.nodes), net: &cutDialer{}, owns: map[int]time.Time{}}
	c.nodes = append(c.nodes, n)
	c.mu.Unlock()
	k := c.k
	k.ClientOptions = []kgo.Opt{kgo.Dialer(n.net.dial)}
	if mod != nil {
		mod(&k)
	}
	e, err := engine.Open(ctx, engine.Options{
		Store:  k,
		Logger: k.Logger,
		Window: 2 * time.Second,
		Queues: []engine.Queue{{Name: "q", Handler: func(_ context.Context, d *engine.Delivery) error {
			c.b.deliver(n.i, d)
			return nil
		}}},
		Events: engine.Events{
			ShardAttached: func(s int) {
				now := time.Now()
				n.mu.Lock()
				n.owns[s] = now
				n.mu.Unlock()
				c.mu.Lock()
				c.attachedAt[s] = now
				c.mu.Unlock()
			},
			ShardDetached: func(s int) {
				n.mu.Lock()
				delete(n.owns, s)
				n.mu.Unlock()
			},
		},
	})
	require.NoError(c.t, err)
	n.e = e
	return n
}

// schedule schedules k messages through node n, due in [lo, hi).
func (c *clusterT) schedule(ctx context.Context, n *node, k int, lo, hi time.Duration) []engine.ID {
	c.t.Helper()
	msgs := make([]engine.Message, k)
	seqs := make([]uint64, k)
	now := time.Now()
	for i := range msgs {
		seq := c.b.seq.Add(1)
		due := now.Add(lo + time.Duration(int64(seq)*7919%int64(max(1, hi-lo))))
		msgs[i] = engine.Message{Dest: "local://q", Due: due, Payload: payload(seq, due)}
		seqs[i] = seq
	}
	ids, err := n.e.ScheduleBatch(ctx, msgs)
	require.NoError(c.t, err)
	for i, seq := range seqs {
		c.b.ack(seq, msgs[i].Due)
	}
	return ids
}

// waitAll waits until every acknowledged message was delivered.
func (c *clusterT) waitAll(d time.Duration) {
	c.t.Helper()
	deadline := time.Now().Add(d)
	for c.b.missing() > 0 {
		if time.Now().After(deadline) {
			c.t.Fatalf("%d acknowledged messages not delivered after %v", c.b.missing(), d)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// waitFor polls cond until it holds or d passes.
func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func (c *clusterT) closeAll() {
	for _, n := range c.nodes {
		if n.e != nil {
			ctx, cancel := context.WithTimeout(bg, 20*time.Second)
			_ = n.e.Shutdown(ctx)
			cancel()
		}
	}
}

// ownedBy waits until every partition is attached by exactly one node.
func (c *clusterT) settled(partitions int) func() bool {
	return func() bool {
		seen := map[int]int{}
		for _, n := range c.nodes {
			if n.e == nil {
				continue
			}
			for _, s := range n.owned() {
				seen[s]++
			}
		}
		if len(seen) != partitions {
			return false
		}
		for _, n := range c.nodes {
			if n.e != nil && len(n.owned()) == 0 {
				return false // every node gets some (partitions ≥ nodes here)
			}
		}
		for _, k := range seen {
			if k != 1 {
				return false
			}
		}
		return true
	}
}

// TestThreeNodesScheduleFromEveryNode: three engines share one topic;
// messages scheduled through every node all fire once, none early.
func TestThreeNodesScheduleFromEveryNode(t *testing.T) {
	c := newClusterT(t, 6)
	defer c.closeAll()
	for range 3 {
		c.start(bg, nil)
	}
	waitFor(t, 20*time.Second, "the partitions to settle over three nodes", c.settled(6))
	for round := range 3 {
		for _, n := range c.nodes {
			c.schedule(bg, n, 50, 100*time.Millisecond, time.Second)
			if round == 0 {
				c.schedule(bg, n, 1, 0, 0) // Schedule of one: the idempotent path
			}
		}
	}
	c.waitAll(30 * time.Second)
	early, dups := c.b.counts()
	require.Zero(t, early, "early")
	require.Zero(t, dups, "duplicates without any failure")
	for _, n := range c.nodes {
		require.NotEmpty(t, n.owned(), "node %d owns partitions", n.i)
		require.Positive(t, c.b.byNode[n.i], "node %d fired", n.i)
	}
}

// crash cuts node n's network and closes its engine: to the brokers it
// vanished without leaving the group. Close runs in the background (its
// clients give up on the dead network); the returned func waits for it.
func (c *clusterT) crash(n *node) (at time.Time, wait func()) {
	n.net.sever()
	at = time.Now()
	done := make(chan struct{})
	e := n.e
	n.e = nil
	go func() {
		defer close(done)
		_ = e.Close()
		c.t.Logf("the crashed node closed in %v", time.Since(at))
	}()
	return at, func() { <-done }
}

// idOwnedBy returns the ID of a message scheduled through from, due in
// due, on a partition that node owner owns.
func (c *clusterT) scheduleOn(ctx context.Context, from, owner *node, due time.Duration) engine.ID {
	c.t.Helper()
	owned := map[int]bool{}
	for _, s := range owner.owned() {
		owned[s] = true
	}
	require.NotEmpty(c.t, owned)
	for range 200 {
		id := c.schedule(ctx, from, 1, due, due)[0]
		c.b.unack(c.b.seq.Load()) // the test decides what it expects of these
		if owned[id.Shard()] {
			return id
		}
	}
	c.t.Fatal("no message landed on the owner's partitions")
	return 0
}

// TestCrashFailover: a node crashes (network cut, no leave) while messages
// are pending on its partitions. Every acknowledged message still fires,
// none early; one cancelled before the crash stays cancelled; the dead
// node's partitions are taken over within the session timeout plus a
// generous bound.
func TestCrashFailover(t *testing.T) {
	c := newClusterT(t, 6)
	defer c.closeAll()
	for range 3 {
		c.start(bg, nil)
	}
	waitFor(t, 20*time.Second, "the partitions to settle", c.settled(6))
	victim := c.nodes[2]
	// A message on the victim's partition, cancelled from another node.
	cancelled := c.scheduleOn(bg, c.nodes[0], victim, 1500*time.Millisecond)
	require.NoError(t, c.nodes[0].e.Cancel(bg, cancelled))
	for _, n := range c.nodes {
		c.schedule(bg, n, 100, 200*time.Millisecond, 3*time.Second)
	}
	dead := victim.owned()
	at, wait := c.crash(victim)
	defer wait()
	// Schedule through the survivors while the dead partitions wait.
	for _, n := range c.nodes[:2] {
		c.schedule(bg, n, 100, 0, 2*time.Second)
	}
	waitFor(t, 30*time.Second, "the survivors to take the dead node's partitions", func() bool {
		for _, s := range dead {
			owned := false
			for _, n := range c.nodes[:2] {
				if slices.Contains(n.owned(), s) {
					owned = true
				}
			}
			if !owned {
				return false
			}
		}
		return true
	})
	var failover time.Duration
	c.mu.Lock()
	for _, s := range dead {
		failover = max(failover, c.attachedAt[s].Sub(at))
	}
	c.mu.Unlock()
	t.Logf("failover of %d partitions: %v (session timeout %v)", len(dead), failover, c.k.SessionTimeout)
	require.Less(t, failover, c.k.SessionTimeout+5*time.Second, "failover within the session timeout plus a generous bound")
	c.waitAll(30 * time.Second)
	early, dups := c.b.counts()
	require.Zero(t, early, "early")
	t.Logf("duplicates after the crash: %d", dups)
	_, err := c.nodes[0].e.Get(bg, cancelled)
	require.ErrorIs(t, err, engine.ErrNotFound, "the cancelled message stays cancelled")
	c.b.mu.Lock()
	_, fired := c.b.delivered[c.b.cancelled]
	c.b.mu.Unlock()
	require.False(t, fired, "the cancelled message never fired")
}
