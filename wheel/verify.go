package wheel

import (
	"errors"
	"fmt"
)

// verify checks every structural invariant of the wheel and returns the first
// violation. It is O(entries + slots): tests call it after each operation, and
// builds with the invariants tag call it from checkAfterOp.
func (w *Wheel) verify() error {
	if w.cur > w.now {
		return fmt.Errorf("wheel: cur %d is after now %d", w.cur, w.now)
	}
	seen := make([]bool, len(w.entries))
	total := 0
	// walk checks the refs of one slot (or the overdue list) from index
	// from on, and returns how many are live.
	walk := func(refs []slotRef, from int, id int32, check func(e *entry) error) (int, error) {
		live := 0
		for _, r := range refs[from:] {
			i := uint32(r)
			if int(i) >= len(w.entries) {
				return 0, fmt.Errorf("wheel: slot %d holds index %d beyond the slab", id, i)
			}
			if !w.isLive(r) {
				continue
			}
			e := &w.entries[i]
			if e.slot != id {
				return 0, fmt.Errorf("wheel: entry %d is in slot %d but says %d", i, id, e.slot)
			}
			if seen[i] {
				return 0, fmt.Errorf("wheel: entry %d is held twice", i)
			}
			seen[i] = true
			if err := check(e); err != nil {
				return 0, fmt.Errorf("wheel: entry %d (due %d, ref %d) in slot %d, cur %d: %w", i, e.due, e.ref, id, w.cur, err)
			}
			live++
		}
		return live, nil
	}
	live, err := walk(w.overdue, w.overdueHead, slotOverdue, func(e *entry) error {
		if e.due > w.cur {
			return errors.New("overdue entry is not due")
		}
		return nil
	})
	if err != nil {
		return err
	}
	if live != w.overdueLive {
		return fmt.Errorf("wheel: %d live overdue entries, count says %d", live, w.overdueLive)
	}
	total += live
	for idx := range w.buckets {
		l, s := w.levelOf(idx)
		if len(w.buckets[idx]) == 0 {
			// Most slots are empty (thousands on the ring and far
			// levels): check them without the walk.
			if w.live[idx] != 0 || w.occ[w.lvl[l].occBase+s/64]&(1<<(uint(s)%64)) != 0 {
				return fmt.Errorf("wheel: empty slot %d/%d has live count %d or its occupancy bit", l, s, w.live[idx])
			}
			continue
		}
		from := 0
		if l == 0 && s == w.digit(0, w.cur) {
			from = w.curHead
		}
		least := ^uint64(0)
		live, err := walk(w.buckets[idx], from, int32(idx), func(e *entry) error {
			least = min(least, e.due)
			if l == 0 && s == w.digit(0, w.cur) {
				if e.due != w.cur {
					return errors.New("entry in the current slot is not due at cur")
				}
				return nil
			}
			if w.digit(l, e.due) != s {
				return fmt.Errorf("due tick's level-%d digit is not the slot's", l)
			}
			if got := w.levelFor(e.due); got != l {
				return fmt.Errorf("entry belongs on level %d", got)
			}
			if l == 1 {
				return nil // the ring: levelFor said its block is ahead of cur's and near enough
			}
			c := w.levelCur(l)
			if s <= w.digit(l, c) {
				return errors.New("slot is not after its cursor's digit")
			}
			if top := w.lvl[l].shift + w.lvl[l].bits; top < 64 && e.due>>top != c>>top {
				return errors.New("higher digits differ from its cursor's")
			}
			return nil
		})
		if err != nil {
			return err
		}
		if int32(live) != w.live[idx] {
			return fmt.Errorf("wheel: slot %d/%d has %d live entries, count says %d", l, s, live, w.live[idx])
		}
		occupied := w.occ[w.lvl[l].occBase+s/64]&(1<<(uint(s)%64)) != 0
		if occupied != (live > 0) {
			return fmt.Errorf("wheel: slot %d/%d occupancy bit %v with %d live entries", l, s, occupied, live)
		}
		if live > 0 && (w.slotMin[idx] > least || (!w.stale[idx] && w.slotMin[idx] != least)) {
			return fmt.Errorf("wheel: slot %d/%d min %d (stale %v), entries' min %d", l, s, w.slotMin[idx], w.stale[idx], least)
		}
		total += live
	}
	if total != w.n {
		return fmt.Errorf("wheel: %d live entries in slots, Len %d", total, w.n)
	}
	free := len(w.free)
	for _, i := range w.free {
		if seen[i] {
			return fmt.Errorf("wheel: entry %d is both live and free, or free twice", i)
		}
		seen[i] = true
		if w.entries[i].slot != slotFree {
			return fmt.Errorf("wheel: entry %d on the free stack says slot %d", i, w.entries[i].slot)
		}
	}
	if free+w.retired+w.n != len(w.entries) {
		return fmt.Errorf("wheel: %d free + %d retired + %d live != %d slab entries", free, w.retired, w.n, len(w.entries))
	}
	return nil
}
