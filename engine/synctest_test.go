package engine

import (
	"context"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/require"
)

// The package doc says an engine on the real clock works inside a
// testing/synctest bubble: fake time advances when every goroutine is
// blocked, so a message due in an hour is delivered when the test sleeps
// an hour, at once and exactly on time.
func TestRunsInsideSynctestBubble(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var fired atomic.Int64
		var late atomic.Int64
		e, err := Open(context.Background(), Options{Shards: 2, Logger: quietLogger(), Queues: []Queue{{Name: "q",
			Handler: func(ctx context.Context, d *Delivery) error {
				late.Store(int64(time.Since(d.Due)))
				fired.Add(1)
				return nil
			}}}})
		require.NoError(t, err)
		_, err = e.ScheduleIn(context.Background(), time.Hour, Message{Dest: "local://q"})
		require.NoError(t, err)
		time.Sleep(time.Hour - time.Millisecond)
		synctest.Wait()
		require.Zero(t, fired.Load(), "not before due")
		time.Sleep(10 * time.Millisecond)
		synctest.Wait()
		require.EqualValues(t, 1, fired.Load())
		require.Less(t, time.Duration(late.Load()), 10*time.Millisecond)
		require.NoError(t, e.Shutdown(context.Background()))
		synctest.Wait()
	})
}
