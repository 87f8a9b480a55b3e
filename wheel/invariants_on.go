//go:build invariants

package wheel

// invariantsOn reports whether this build checks invariants.
const invariantsOn = true

// checkAfterOp runs the full invariant check, which is O(slab size), after
// enough operations to amortise it to O(1) each: every operation while the
// slab is small, about once per slab-size operations when it is large.
func (w *Wheel) checkAfterOp() {
	w.chk.sinceCheck++
	if len(w.entries) <= 64 || w.chk.sinceCheck >= len(w.entries) {
		w.chk.sinceCheck = 0
		if err := w.verify(); err != nil {
			panic(err)
		}
	}
}

// invariantState counts operations since the last full check.
type invariantState struct{ sinceCheck int }
