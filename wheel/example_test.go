package wheel_test

import (
	"fmt"

	"github.com/hourglassmq/hourglass/wheel"
)

// The worked example of the package documentation: blocks of 4 ticks,
// superblocks of 4 blocks.
func Example() {
	w, err := wheel.New(wheel.Options{Tick: 1, SlotBits: 2, UpperSlotBits: 2})
	if err != nil {
		panic(err)
	}
	for _, due := range []int64{2, 6, 29, 70} {
		w.Insert(due, uint64(due)) // the reference is the due time, for show
	}
	next, _ := w.NextDue()
	fmt.Println("next due:", next)
	fmt.Println("due by 10:", w.Advance(10, nil))
	h := w.Insert(75, 75)
	w.Cancel(h)
	fmt.Println("due by 80:", w.Advance(80, nil), "pending:", w.Len())
	// Output:
	// next due: 2
	// due by 10: [2 6]
	// due by 80: [29 70] pending: 0
}
