package cluster

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/hourglassmq/hourglass/store"
	"github.com/hourglassmq/hourglass/store/storetest"
)

// TestContract runs the store contract's suite against a one-node cluster:
// the node owns every partition, so every call takes the owner's path;
// Reopen closes the node and opens it again on the same topic and index
// directory (the index replays only the tail).
func TestContract(t *testing.T) {
	c := newKafka(t)
	cfgs := map[*Store]Kafka{}
	storetest.Run(t, storetest.Harness{
		Open: func(t *testing.T, shards int) store.Store {
			k := testConfig(c, shards)
			k.Dir = t.TempDir()
			s := openStore(t, k)
			cfgs[s] = k
			return s
		},
		Reopen: func(t *testing.T, s store.Store) store.Store {
			k := cfgs[s.(*Store)]
			require.NoError(t, s.Close())
			n := openStore(t, k)
			cfgs[n] = k
			return n
		},
	})
}
