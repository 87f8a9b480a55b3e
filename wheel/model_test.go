package wheel_test

import (
	"cmp"
	"encoding/binary"
	"flag"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/hourglassmq/hourglass/wheel"
)

var (
	seedFlag = flag.Uint64("wheel.seed", 0, "seed for TestModel (0: a fresh one, printed on failure)")
	runsFlag = flag.Int("wheel.runs", 300, "random operation sequences TestModel runs")
)

// model is the reference: a plain list of pending entries. Its answers
// define what the wheel must do.
type model struct {
	tick    int64
	now     int64 // largest tick Advance was asked for, in ticks
	seq     uint64
	pending map[wheel.Handle]modelEntry
}

type modelEntry struct {
	due uint64 // due tick
	ref uint64
	seq uint64
	h   wheel.Handle
}

func (m *model) dueTick(due int64) uint64 {
	if due <= 0 {
		return 0
	}
	t := uint64(due / m.tick)
	if due%m.tick != 0 && t < uint64(math.MaxInt64/m.tick) {
		t++
	}
	return t
}

// due returns, in wheel order, the pending entries due at the model's now.
func (m *model) due() []modelEntry {
	var out []modelEntry
	for _, e := range m.pending {
		if e.due <= uint64(m.now) {
			out = append(out, e)
		}
	}
	slices.SortFunc(out, func(a, b modelEntry) int {
		return cmp.Or(cmp.Compare(a.due, b.due), cmp.Compare(a.seq, b.seq))
	})
	return out
}

// opReader turns bytes into operation parameters; past the end it yields 0.
type opReader struct{ b []byte }

func (r *opReader) byte() byte {
	if len(r.b) == 0 {
		return 0
	}
	c := r.b[0]
	r.b = r.b[1:]
	return c
}

func (r *opReader) uint64(n int) uint64 {
	var buf [8]byte
	for i := range n {
		buf[i] = r.byte()
	}
	return binary.LittleEndian.Uint64(buf[:])
}

var (
	ticks     = []time.Duration{1, 3, time.Millisecond}
	slotBits  = []int{2, 3, 6, 8}
	upperBits = []int{2, 3, 6, 10}
)

// runOps decodes a byte string into a geometry and a sequence of inserts,
// cancels and advances, applies them to a wheel and to the model, and fails
// at the first disagreement or broken invariant.
func runOps(data []byte) error {
	r := &opReader{b: data}
	g := r.byte()
	tick := ticks[int(g)%len(ticks)]
	bitsN := slotBits[int(g/3)%len(slotBits)]
	upperN := upperBits[int(g/12)%len(upperBits)]
	start := int64(r.uint64(2)) * int64(tick)
	w, err := wheel.New(wheel.Options{Tick: tick, SlotBits: bitsN, UpperSlotBits: upperN, Start: start})
	if err != nil {
		return err
	}
	m := &model{tick: int64(tick), now: start / int64(tick), pending: map[wheel.Handle]modelEntry{}}
	slots := int64(1) << bitsN
	// span(l) is the ticks one slot of level l covers.
	span := func(l int64) int64 {
		if l == 0 {
			return 1
		}
		return slots << ((l - 1) * int64(upperN))
	}
	var handles []wheel.Handle
	var got []uint64
	for step := 0; len(r.b) > 0; step++ {
		op := r.byte()
		nowNs := m.now * m.tick
		var desc string
		switch op % 8 {
		case 0, 1, 2: // insert
			var due int64
			switch k := r.byte(); k % 8 {
			case 0: // in the past, possibly far
				due = nowNs - int64(r.uint64(3))
			case 1: // this very tick
				due = nowNs + int64(r.byte())%m.tick
			case 2: // within one level-0 rotation
				due = nowNs + int64(r.uint64(2))%(slots*m.tick)
			case 3: // a few levels up
				due = nowNs + int64(r.uint64(3))%(span(3)*m.tick)
			case 4: // far future
				due = nowNs + int64(r.uint64(6)>>4)
			case 5: // the maximum time
				due = math.MaxInt64 - int64(r.byte())
			case 6: // exactly on a slot boundary of some level
				sp := span(int64(r.byte()) % 4)
				due = (nowNs/m.tick/sp + 1 + int64(r.byte())%3) * sp * m.tick
			default: // same due as an existing entry: a tie
				due = nowNs + 1
				if len(handles) > 0 {
					if e, ok := m.pending[handles[int(r.byte())%len(handles)]]; ok {
						due = int64(e.due) * m.tick
					}
				}
			}
			if due < 0 {
				due = 0
			}
			ref := uint64(step)<<8 | 1
			h := w.Insert(due, ref)
			if _, dup := m.pending[h]; dup || h == 0 {
				return fmt.Errorf("step %d: Insert returned handle %x already in use", step, h)
			}
			m.seq++
			m.pending[h] = modelEntry{due: m.dueTick(due), ref: ref, seq: m.seq, h: h}
			handles = append(handles, h)
			desc = fmt.Sprintf("insert(due=%d ref=%d)", due, ref)
		case 3: // cancel, possibly a stale handle
			var h wheel.Handle
			if len(handles) > 0 && r.byte()%8 != 0 {
				h = handles[int(r.uint64(2))%len(handles)]
			} else {
				h = wheel.Handle(r.uint64(8))
			}
			_, want := m.pending[h]
			if got := w.Cancel(h); got != want {
				return fmt.Errorf("step %d: Cancel(%x) = %v, model says %v", step, h, got, want)
			}
			delete(m.pending, h)
			desc = fmt.Sprintf("cancel(%x)", h)
		case 4, 5, 7: // advance by a step, a jump, or to the next due time
			var to int64
			switch op % 8 {
			case 4:
				to = nowNs + int64(r.uint64(2))%(4*slots*m.tick)
			case 5:
				to = nowNs + int64(r.uint64(5))
				if r.byte()%16 == 0 {
					to = math.MaxInt64
				}
			default:
				to, _ = w.NextDue()
			}
			if to < 0 { // overflow of a jump: stay put
				to = nowNs
			}
			limit := math.MaxInt
			if l := r.byte(); l%4 == 0 {
				limit = int(l/4) % 8
			}
			if t := to / m.tick; t > m.now {
				m.now = t
			}
			want := m.due()
			if len(want) > limit {
				want = want[:limit]
			}
			got = w.AdvanceLimit(to, limit, got[:0])
			if len(got) != len(want) {
				return fmt.Errorf("step %d: AdvanceLimit(%d, %d) returned %d entries, model %d: got %v want %v", step, to, limit, len(got), len(want), got, want)
			}
			for i := range want {
				if got[i] != want[i].ref {
					return fmt.Errorf("step %d: AdvanceLimit(%d, %d)[%d] = ref %d, model ref %d (due tick %d): got %v want %v", step, to, limit, i, got[i], want[i].ref, want[i].due, got, want)
				}
			}
			for _, x := range want {
				delete(m.pending, x.h)
			}
			desc = fmt.Sprintf("advance(%d, limit %d)", to, limit)
		case 6: // next due
			got, ok := w.NextDue()
			if ok != (len(m.pending) > 0) {
				return fmt.Errorf("step %d: NextDue ok=%v with %d pending", step, ok, len(m.pending))
			}
			if ok {
				least := uint64(math.MaxUint64)
				for _, e := range m.pending {
					least = min(least, e.due)
				}
				exact := int64(math.MaxInt64)
				if least <= uint64(math.MaxInt64/m.tick) {
					exact = int64(least) * m.tick
				}
				switch {
				case least > uint64(m.now) && got != exact:
					return fmt.Errorf("step %d: NextDue = %d, want exactly %d", step, got, exact)
				case least <= uint64(m.now) && got > m.now*m.tick:
					return fmt.Errorf("step %d: NextDue = %d with entries already due at %d", step, got, m.now*m.tick)
				}
			}
			desc = "nextdue"
		}
		if w.Len() != len(m.pending) {
			return fmt.Errorf("step %d after %s: Len = %d, model %d", step, desc, w.Len(), len(m.pending))
		}
		if err := w.Verify(); err != nil {
			return fmt.Errorf("step %d after %s: %w", step, desc, err)
		}
	}
	return nil
}

// TestModel runs random operation sequences over every geometry against the
// model. Reproduce a failure with -wheel.seed=N.
func TestModel(t *testing.T) {
	seed := *seedFlag
	runs := *runsFlag
	if seed == 0 {
		seed = rand.Uint64()
	} else {
		runs = 1
	}
	for run := range runs {
		s := seed + uint64(run)
		rng := rand.New(rand.NewPCG(s, 0))
		data := make([]byte, 200+rng.IntN(3000))
		for i := range data {
			data[i] = byte(rng.Uint32())
		}
		if err := runOps(data); err != nil {
			t.Fatalf("seed %d (rerun with -wheel.seed=%d): %v", s, s, err)
		}
	}
}

// FuzzWheel checks arbitrary operation sequences against the model.
func FuzzWheel(f *testing.F) {
	f.Add([]byte{0, 0, 0, 0, 1, 4, 4, 1})
	f.Add([]byte{7, 1, 0, 0, 5, 2, 9, 0, 3, 1, 1, 4, 200, 0, 0})
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) > 8<<10 {
			t.Skip("long inputs add nothing but quadratic model time")
		}
		if err := runOps(data); err != nil {
			t.Fatal(err)
		}
	})
}
