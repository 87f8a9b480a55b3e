package cluster

import (
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/hourglassmq/hourglass/store"
	"github.com/hourglassmq/hourglass/store/storetest"
)

// TestCutOffCallsAndCloseEnd: the broker stops answering the node's produce
// requests (kfake reads them and never replies, as on a network that drops
// packets). franz-go does not fail a record of an idempotent or
// transactional producer that went out without an answer, whatever its
// context; still, every call ends within RequestTimeout, Close within its
// documented bound, and nothing is left running (goleak).
func TestCutOffCallsAndCloseEnd(t *testing.T) {
	kf := newKafka(t)
	k := testConfig(kf, 2)
	k.RequestTimeout = 2 * time.Second
	s := openStore(t, k)
	require.NoError(t, s.Start(bg, storetest.NewOwner()))
	msg := func(shard int) store.Message {
		return store.Message{Shard: shard, Due: time.Now().Add(time.Hour).UnixNano(), Dest: "local://q", Payload: []byte("x")}
	}
	app, err := s.Append(bg, []store.Message{msg(0)})
	require.NoError(t, err)

	kf.ControlKey(int16(kmsg.Produce), func(kmsg.Request) (kmsg.Response, error, bool) {
		kf.KeepControl()
		return nil, nil, true // read, never answered
	})
	calls := map[string]func() error{
		"Append of one (idempotent producer)": func() error {
			_, err := s.Append(bg, []store.Message{msg(1)})
			return err
		},
		"Append of two (append transaction)": func() error {
			_, err := s.Append(bg, []store.Message{msg(0), msg(1)})
			return err
		},
		"Resolve (the partition's writer)": func() error {
			_, err := s.Resolve(bg, store.Batch{Done: []store.Done{{ID: app[0].ID, Reason: store.Cancelled}}})
			return err
		},
	}
	var wg sync.WaitGroup
	for name, call := range calls {
		wg.Add(1)
		go func() {
			defer wg.Done()
			t0 := time.Now()
			err := call()
			took := time.Since(t0)
			t.Logf("%s: %v after %v", name, err, took)
			if err == nil {
				t.Errorf("%s: succeeded without an answer from the broker", name)
			}
			if took > k.RequestTimeout+3*time.Second {
				t.Errorf("%s took %v, more than RequestTimeout %v", name, took, k.RequestTimeout)
			}
		}()
	}
	wg.Wait()

	t0 := time.Now()
	require.NoError(t, s.Close())
	took := time.Since(t0)
	bound := 2*k.DrainTimeout + k.TxnTimeout + min(k.DrainTimeout, k.SessionTimeout)
	t.Logf("Close took %v (bound %v)", took, bound)
	require.Less(t, took, bound+3*time.Second, "Close within its bound")
	_, err = s.Append(bg, []store.Message{msg(0)})
	require.True(t, errors.Is(err, store.ErrClosed), "closed: %v", err)
}

// TestAppendAfterItsProducerWasFenced: a partition's new owner fences the
// append producer of the node its index says owned the partition last
// without handing it over; with a stale index (a node that has just
// started) that node may be alive. Its appends go on: a fenced transaction
// wrote nothing and runs again in a new one.
func TestAppendAfterItsProducerWasFenced(t *testing.T) {
	kf := newKafka(t)
	k := testConfig(kf, 2)
	s := openStore(t, k)
	defer s.Close()
	require.NoError(t, s.Start(bg, storetest.NewOwner()))
	two := func() []store.Message {
		due := time.Now().Add(time.Hour).UnixNano()
		return []store.Message{{Shard: 0, Due: due, Dest: "local://q"}, {Shard: 1, Due: due, Dest: "local://q"}}
	}
	_, err := s.Append(bg, two())
	require.NoError(t, err)
	require.NoError(t, s.fenceTxn(bg, s.appendTxnID()), "fence it, as a new owner does")
	app, err := s.Append(bg, two())
	require.NoError(t, err, "the append after the fence")
	for _, a := range app {
		_, err := s.Get(bg, a.ID)
		require.NoError(t, err)
	}
}
