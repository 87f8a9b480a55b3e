package engine_test

import (
	"context"
	"fmt"
	"slices"
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

// Unit-test a handler without an engine: NewDelivery builds what the engine
// would pass it, and Cascaded shows what the handler scheduled (committed
// with its ack when the engine runs it).
func ExampleNewDelivery() {
	remind := func(ctx context.Context, d *engine.Delivery) error {
		return d.ScheduleIn(24*time.Hour, engine.Message{Dest: "local://emails", Payload: append([]byte("reminder: "), d.Payload...)})
	}
	d := engine.NewDelivery(1, engine.Message{Dest: "local://emails", Payload: []byte("welcome mail")}, 1)
	if err := remind(context.Background(), d); err != nil {
		panic(err)
	}
	for _, m := range d.Cascaded() {
		fmt.Printf("%s to %s, %v after the delivery\n", m.Payload, m.Dest, m.Due.Sub(d.Fired).Round(time.Hour))
	}
	// Output:
	// reminder: welcome mail to local://emails, 24h0m0s after the delivery
}

// Wait for the engine to be idle under a fake clock instead of sleeping:
// after WaitIdle, everything due by the clock's time has been delivered and
// its outcome committed.
func ExampleEngine_WaitIdle() {
	ctx := context.Background()
	clock := engine.NewFakeClock(time.Date(2026, 11, 25, 14, 0, 0, 0, time.UTC))
	var delivered []string
	e, err := engine.Open(ctx, engine.Options{Clock: clock, Queues: []engine.Queue{{Name: "q", Parallelism: 1,
		Handler: func(ctx context.Context, d *engine.Delivery) error {
			delivered = append(delivered, string(d.Payload))
			return nil
		}}}})
	if err != nil {
		panic(err)
	}
	defer e.Shutdown(ctx)
	for i, in := range []time.Duration{time.Second, time.Minute, time.Hour} {
		if _, err := e.ScheduleIn(ctx, in, engine.Message{Dest: "local://q", Payload: []byte(fmt.Sprint(i))}); err != nil {
			panic(err)
		}
	}
	clock.Advance(time.Minute)
	if err := e.WaitIdle(ctx); err != nil {
		panic(err)
	}
	slices.Sort(delivered) // shards deliver in parallel
	fmt.Println(delivered)
	// Output:
	// [0 1]
}
