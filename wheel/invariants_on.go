//go:build invariants

package wheel

// invariantsOn reports whether this build checks invariants.
const invariantsOn = true

// checkAfterOp runs the full invariant check, which is O(entries + slots),
// after enough operations to amortise it to O(1) each: every operation while
// the wheel is small, about once per size operations when it is large. Slots
// count at 1/64: most are empty, and an empty one costs a couple of loads.
func (w *Wheel) checkAfterOp() {
	w.chk.sinceCheck++
	size := len(w.entries) + len(w.buckets)/64
	if size <= 64 || w.chk.sinceCheck >= size {
		w.chk.sinceCheck = 0
		if err := w.verify(); err != nil {
			panic(err)
		}
	}
}

// invariantState counts operations since the last full check.
type invariantState struct{ sinceCheck int }
