package memstore_test

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/hourglassmq/hourglass/memstore"
	"github.com/hourglassmq/hourglass/store"
	"github.com/hourglassmq/hourglass/store/storetest"
)

func TestContract(t *testing.T) {
	storetest.Run(t, storetest.Harness{Open: func(t *testing.T, shards int) store.Store {
		s, err := memstore.Open(memstore.Options{Shards: shards})
		require.NoError(t, err)
		return s
	}})
}
