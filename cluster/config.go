package cluster

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/hourglassmq/hourglass/store"
)

// Defaults of Kafka's zero fields.
const (
	// DefaultTopic is the truth topic's name.
	DefaultTopic = "hourglass"
	// DefaultPartitions is the partition count of a topic the store creates
	// (when neither Partitions nor the engine's Shards says): the cluster's
	// unit of ownership, so also the most nodes that can fire at once.
	DefaultPartitions = 64
	// DefaultSessionTimeout is how long the group waits for a silent node
	// before its partitions move: a crash costs about this much delay.
	DefaultSessionTimeout = 6 * time.Second
	// DefaultRebalanceTimeout bounds a rebalance, including the time a
	// node takes to hand its partitions over.
	DefaultRebalanceTimeout = 30 * time.Second
	// DefaultTxnTimeout bounds a transaction of a node that died in the
	// middle of it: readers cannot pass its records until the broker
	// aborts it (or the partition's next owner fences it).
	DefaultTxnTimeout = 5 * time.Second
	// DefaultRequestTimeout bounds a writing call's waits for Kafka,
	// including one carried to another node.
	DefaultRequestTimeout = 30 * time.Second
	// DefaultDrainTimeout bounds how long a node finishes the deliveries in
	// flight of a partition it hands over.
	DefaultDrainTimeout = 10 * time.Second
	// DefaultDeleteRetention is Kafka's default delete.retention.ms: an
	// index that has not applied a partition for longer rebuilds it.
	DefaultDeleteRetention = 24 * time.Hour
)

// Kafka configures the cluster store: set it as engine.Options.Store. The
// zero value of every field but Brokers works; each default is named.
//
// Every node of one application uses the same Topic and Group; each has its
// own Dir (or none).
type Kafka struct {
	// Brokers are the seed brokers, "host:port". Required.
	Brokers []string
	// Topic is the compacted topic that holds the truth. Default
	// DefaultTopic. Created if missing (compacted, Partitions partitions,
	// the broker's replication factor) unless NoCreateTopic.
	Topic string
	// Group is the consumer group that decides which node owns which
	// partition. Default Topic + ".owners".
	Group string
	// Partitions is the partition count, which is the engine's shard
	// count: fixed when the topic is created. Default: the engine's
	// Shards if set, else an existing topic's count, else
	// DefaultPartitions. At most store.MaxShards.
	Partitions int
	// ReplicationFactor of a topic the store creates. Default -1: the
	// broker's default.
	ReplicationFactor int16
	// NoCreateTopic makes a missing topic an error instead.
	NoCreateTopic bool

	// SessionTimeout is the group session timeout. Default
	// DefaultSessionTimeout. HeartbeatInterval defaults to a sixth of it
	// (at most 1 s), so the others notice a rebalance soon after.
	SessionTimeout    time.Duration
	HeartbeatInterval time.Duration
	// RebalanceTimeout: default DefaultRebalanceTimeout.
	RebalanceTimeout time.Duration
	// TxnTimeout is the transaction timeout of every producer. Keep it
	// below SessionTimeout. Default DefaultTxnTimeout.
	TxnTimeout time.Duration
	// RequestTimeout bounds each writing call (Append, Resolve and the
	// dead-letter calls, so Schedule, Cancel, Reschedule...) in all: its
	// produces, the answer of another node that must carry it out (a
	// Cancel of a message of a partition owned elsewhere), and reading its
	// own writes back. Past it the call fails and says whether its change
	// may still be applied. A node cut off from the brokers is held no
	// longer; as the engine's Close waits for its calls in flight, it is
	// part of that Close's bound (see Store.Close). Default
	// DefaultRequestTimeout.
	RequestTimeout time.Duration
	// DrainTimeout bounds the hand-over of a partition: in-flight
	// deliveries not done by then are abandoned (the next owner delivers
	// them again). Default DefaultDrainTimeout.
	DrainTimeout time.Duration
	// DeleteRetention must not be longer than the topic's
	// delete.retention.ms: a local index that has not applied a partition
	// for longer may have missed tombstones and is rebuilt. Default
	// DefaultDeleteRetention.
	DeleteRetention time.Duration

	// Dir holds this node's Pebble index. Empty: the index is in memory and
	// rebuilt from the topic at every start.
	Dir string
	// NodeID names this node in the log (owner records, transactional
	// IDs). Default: random per process. A stable one per replica lets a
	// restarted node fence its previous life at once.
	NodeID string
	// Sender, when set, is bound to this store: kafka:// deliveries
	// through it are produced in the same transaction as their outcome.
	Sender *Sender
	// ClientOptions are appended to every franz-go client's options (TLS,
	// SASL, a Dialer, logging).
	ClientOptions []kgo.Opt
	// Logger: default the engine's.
	Logger *slog.Logger
}

// withDefaults fills the zero fields (Partitions stays 0 when nothing says:
// open decides from the topic).
func (k Kafka) withDefaults(env store.Env) Kafka {
	if k.Topic == "" {
		k.Topic = DefaultTopic
	}
	if k.Group == "" {
		k.Group = k.Topic + ".owners"
	}
	if k.Partitions == 0 {
		k.Partitions = env.Shards
	}
	if k.ReplicationFactor == 0 {
		k.ReplicationFactor = -1
	}
	if k.SessionTimeout == 0 {
		k.SessionTimeout = DefaultSessionTimeout
	}
	if k.HeartbeatInterval == 0 {
		k.HeartbeatInterval = min(time.Second, k.SessionTimeout/6)
	}
	if k.RebalanceTimeout == 0 {
		k.RebalanceTimeout = DefaultRebalanceTimeout
	}
	if k.TxnTimeout == 0 {
		k.TxnTimeout = DefaultTxnTimeout
	}
	if k.RequestTimeout == 0 {
		k.RequestTimeout = DefaultRequestTimeout
	}
	if k.DrainTimeout == 0 {
		k.DrainTimeout = DefaultDrainTimeout
	}
	if k.DeleteRetention == 0 {
		k.DeleteRetention = DefaultDeleteRetention
	}
	if k.NodeID == "" {
		var b [8]byte
		_, _ = rand.Read(b[:])
		k.NodeID = hex.EncodeToString(b[:])
	}
	if k.Logger == nil {
		k.Logger = env.Logger
	}
	if k.Logger == nil {
		k.Logger = slog.Default()
	}
	return k
}

// Validate explains a bad option.
func (k Kafka) Validate() error {
	switch {
	case len(k.Brokers) == 0:
		return store.Invalidf("cluster: Brokers is empty; name at least one seed broker, host:port")
	case k.Partitions < 0 || k.Partitions > store.MaxShards:
		return store.Invalidf("cluster: Partitions = %d; want 0 (default) or 1..%d", k.Partitions, store.MaxShards)
	case k.SessionTimeout < 0 || k.HeartbeatInterval < 0 || k.RebalanceTimeout < 0 || k.TxnTimeout < 0 ||
		k.RequestTimeout < 0 || k.DrainTimeout < 0 || k.DeleteRetention < 0:
		return store.Invalidf("cluster: a timeout is negative; want 0 (default) or positive")
	case k.TxnTimeout != 0 && k.TxnTimeout < time.Second:
		return store.Invalidf("cluster: TxnTimeout = %v; Kafka allows at least 1s", k.TxnTimeout)
	case strings.ContainsAny(k.NodeID, " \t\n/"):
		return store.Invalidf("cluster: NodeID %q: no spaces or slashes", k.NodeID)
	}
	return nil
}

// String prints the options with defaults applied, for logs.
func (k Kafka) String() string {
	return fmt.Sprintf("kafka brokers=%v topic=%s group=%s partitions=%d session=%v txn=%v request=%v drain=%v dir=%q node=%s",
		k.Brokers, k.Topic, k.Group, k.Partitions, k.SessionTimeout, k.TxnTimeout, k.RequestTimeout, k.DrainTimeout, k.Dir, k.NodeID)
}

// OpenStore implements store.Opener: it opens the local index, creates or
// checks the topic and starts applying it. The node joins the group (and
// owns partitions) at Start.
func (k Kafka) OpenStore(ctx context.Context, env store.Env) (store.Store, error) {
	if err := k.Validate(); err != nil {
		return nil, err
	}
	return open(ctx, k.withDefaults(env), env)
}
