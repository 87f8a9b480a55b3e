//go:build invariants

package wheel

// invariantsOn reports whether this build checks invariants.
const invariantsOn = true

// checkAfterOp runs the full invariant check after enough operations to
// amortise it to O(1) per operation: every operation with a small wheel, and
// about once per Len() operations with a large one.
func (w *Wheel) checkAfterOp() {
	w.chk.sinceCheck++
	if w.n <= 64 || w.chk.sinceCheck >= w.n {
		w.chk.sinceCheck = 0
		if err := w.verify(); err != nil {
			panic(err)
		}
	}
}

// invariantState counts operations since the last full check.
type invariantState struct{ sinceCheck int }
