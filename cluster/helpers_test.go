package cluster

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kfake"
	"go.uber.org/goleak"

	"github.com/hourglassmq/hourglass/store"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var bg = context.Background()

// newKafka starts an in-process Kafka (kfake) for one test.
func newKafka(t testing.TB, opts ...kfake.Opt) *kfake.Cluster {
	t.Helper()
	opts = append([]kfake.Opt{kfake.NumBrokers(1), kfake.GroupMinSessionTimeout(100 * time.Millisecond)}, opts...)
	c, err := kfake.NewCluster(opts...)
	require.NoError(t, err)
	t.Cleanup(c.Close)
	return c
}

var topicSeq atomic.Int64

// testLogger logs warnings and errors when -v is on.
func testLogger() *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// testConfig is a configuration for a test: short timeouts, a fresh topic.
func testConfig(c *kfake.Cluster, partitions int) Kafka {
	return Kafka{
		Brokers:           c.ListenAddrs(),
		Topic:             fmt.Sprintf("hg-test-%d", topicSeq.Add(1)),
		Partitions:        partitions,
		SessionTimeout:    time.Second,
		HeartbeatInterval: 100 * time.Millisecond,
		RebalanceTimeout:  5 * time.Second,
		TxnTimeout:        2 * time.Second,
		RequestTimeout:    10 * time.Second,
		DrainTimeout:      2 * time.Second,
		Logger:            testLogger(),
	}
}

func openStore(t testing.TB, k Kafka) *Store {
	t.Helper()
	ctx, cancel := context.WithTimeout(bg, 20*time.Second)
	defer cancel()
	st, err := k.OpenStore(ctx, store.Env{Logger: k.Logger})
	require.NoError(t, err)
	return st.(*Store)
}
