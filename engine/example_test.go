package engine_test

import (
	"context"
	"fmt"
	"time"

	"github.com/hourglassmq/hourglass/engine"
)

// Schedule a local handler to run in 30 seconds, as the README shows. A fake
// clock stands in for the thirty seconds; a real service leaves Clock unset
// and sets Dir to keep its messages across restarts.
func Example() {
	ctx := context.Background()
	clock := engine.NewFakeClock(time.Date(2026, 11, 25, 14, 0, 0, 0, time.UTC))
	delivered := make(chan string, 1)
	e, err := engine.Open(ctx, engine.Options{
		Clock: clock, // Dir: "/var/lib/myservice/hourglass" for a durable engine
		Queues: []engine.Queue{{
			Name: "emails",
			Handler: func(ctx context.Context, d *engine.Delivery) error {
				delivered <- fmt.Sprintf("%s, attempt %d, due %s", d.Payload, d.Attempt, d.Due.Format(time.TimeOnly))
				return nil // an error would be retried with backoff, then dead-lettered
			},
		}},
	})
	if err != nil {
		panic(err)
	}
	defer e.Shutdown(ctx)

	id, err := e.ScheduleIn(ctx, 30*time.Second, engine.Message{Dest: "local://emails", Payload: []byte("welcome mail")})
	if err != nil {
		panic(err)
	}
	info, _ := e.Get(ctx, id)
	fmt.Println("state:", info.State)

	clock.Advance(30 * time.Second)
	fmt.Println(<-delivered)
	// Output:
	// state: pending
	// welcome mail, attempt 1, due 14:00:30
}
