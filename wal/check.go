package wal

import (
	"fmt"
	"math/bits"
)

// checkSummary panics if a summary's live count disagrees with its bitmap.
// Called only when invariants is on.
func checkSummary(s *summary) {
	pop := 0
	for _, w := range s.bits {
		pop += bits.OnesCount64(w)
	}
	if pop != s.live || s.live < 0 || s.live > s.n {
		panic(fmt.Sprintf("wal: invariant: summary live=%d but %d bits set (n=%d)", s.live, pop, s.n))
	}
}
