package wal

import (
	"context"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/stretchr/testify/require"

	"github.com/hourglassmq/hourglass/store"
	"github.com/hourglassmq/hourglass/store/storetest"
)

// TestContract holds the Pebble store to the store contract, reopening it
// in the middle of the model run: what it held must come back exactly.
func TestContract(t *testing.T) {
	storetest.Run(t, storetest.Harness{
		Open: func(t *testing.T, shards int) store.Store {
			s, err := Open(context.Background(), Options{Dir: "store", FS: vfs.NewMem(), Shards: shards})
			require.NoError(t, err)
			return s
		},
		Reopen: func(t *testing.T, old store.Store) store.Store {
			s := old.(*Store)
			require.NoError(t, s.Close())
			s2, err := Open(context.Background(), Options{Dir: s.opts.Dir, FS: s.opts.FS})
			require.NoError(t, err)
			return s2
		},
	})
}
