package cluster

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/hourglassmq/hourglass/engine"
)

// TestCallLatency measures what each call costs on an idle three-node
// cluster (kfake in process): the figures docs/design.md quotes. It
// asserts only generous bounds; -v prints the medians.
func TestCallLatency(t *testing.T) {
	if testing.Short() {
		t.Skip("measurement")
	}
	c := newClusterT(t, 4)
	defer c.closeAll()
	a, b := c.start(bg, nil), c.start(bg, nil)
	c.start(bg, nil)
	waitFor(t, 20*time.Second, "the partitions to settle", c.settled(4))
	const n = 50
	measure := func(name string, f func(i int)) {
		var ds []time.Duration
		for i := range n {
			t0 := time.Now()
			f(i)
			ds = append(ds, time.Since(t0))
		}
		slices.Sort(ds)
		t.Logf("| %s | %.2f ms | %.2f ms |", name, float64(ds[n/2])/1e6, float64(ds[n*9/10])/1e6)
		require.Less(t, ds[n/2], 2*time.Second, name)
	}
	msg := func() engine.Message {
		return engine.Message{Dest: "local://q", Due: time.Now().Add(time.Hour), Payload: payload(0, time.Now())}
	}
	var local, remote []engine.ID
	for range n {
		local = append(local, c.scheduleOn(bg, a, a, time.Hour))
		remote = append(remote, c.scheduleOn(bg, a, b, time.Hour))
	}
	t.Log("| call (on node a) | p50 | p90 |")
	measure("Schedule (1 message)", func(int) {
		_, err := a.e.Schedule(bg, msg())
		require.NoError(t, err)
	})
	measure("ScheduleBatch (32 messages)", func(int) {
		ms := make([]engine.Message, 32)
		for i := range ms {
			ms[i] = msg()
		}
		_, err := a.e.ScheduleBatch(bg, ms)
		require.NoError(t, err)
	})
	measure("Schedule with a key (owner elsewhere or here)", func(i int) {
		m := msg()
		m.Key = fmt.Sprintf("k-%d-%d", time.Now().UnixNano(), i)
		_, err := a.e.Schedule(bg, m)
		require.NoError(t, err)
	})
	measure("Get (local index)", func(i int) {
		_, err := a.e.Get(bg, remote[i])
		require.NoError(t, err)
	})
	measure("List 100 (local index)", func(int) {
		_, _, err := a.e.List(bg, engine.ListQuery{Limit: 100})
		require.NoError(t, err)
	})
	measure("Reschedule, owner here", func(i int) {
		require.NoError(t, a.e.Reschedule(bg, local[i], time.Now().Add(2*time.Hour)))
	})
	measure("Reschedule, owner elsewhere (request)", func(i int) {
		require.NoError(t, a.e.Reschedule(bg, remote[i], time.Now().Add(2*time.Hour)))
	})
	measure("Cancel, owner here", func(i int) {
		require.NoError(t, a.e.Cancel(bg, local[i]))
	})
	measure("Cancel, owner elsewhere (request)", func(i int) {
		require.NoError(t, a.e.Cancel(bg, remote[i]))
	})
}
