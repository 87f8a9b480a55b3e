package wheel_test

import (
	"fmt"

	"github.com/hourglassmq/hourglass/wheel"
)

// The worked example of the package documentation: four slots per level.
func Example() {
	w, err := wheel.New(wheel.Options{Tick: 1, SlotBits: 2})
	if err != nil {
		panic(err)
	}
	for _, due := range []int64{37, 2, 6} {
		w.Insert(due, uint64(due)) // the reference is the due time, for show
	}
	next, _ := w.NextDue()
	fmt.Println("next due:", next)
	fmt.Println("due by 10:", w.Advance(10, nil))
	h := w.Insert(39, 39)
	w.Cancel(h)
	fmt.Println("due by 40:", w.Advance(40, nil), "pending:", w.Len())
	// Output:
	// next due: 2
	// due by 10: [2 6]
	// due by 40: [37] pending: 0
}
