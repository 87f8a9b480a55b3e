package engine

// The catalogue of bad input and hostile use: every
// option, every time, ID, header, key, destination, size and limit that
// enters the engine, tried the way a careless or hostile caller would. Each
// refused call must fail with an error wrapping the right sentinel (most
// often ErrInvalid) that names what is wrong and what is allowed, and must
// change nothing: the store's pending count, the scheduled counter, every
// pending message (List) and every dead letter stay as they were. Every case
// runs on both stores.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/hourglassmq/hourglass/memstore"
	"github.com/hourglassmq/hourglass/store"
	"github.com/hourglassmq/hourglass/transport"
	"github.com/hourglassmq/hourglass/wal"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// engineState is what a refused call must leave exactly as it was.
type engineState struct {
	StorePending int64
	Scheduled    uint64
	Pending      []string
	Dead         []string
}

func describeInfo(in Info) string {
	return fmt.Sprintf("%s %s due=%s att=%d dest=%s key=%q rk=%q exp=%s hdr=%v payload=%q",
		in.ID, in.State, in.Message.Due.UTC().Format(time.RFC3339Nano), in.Attempts, in.Message.Dest,
		in.Message.Key, in.Message.RoutingKey, in.Message.Expires.UTC().Format(time.RFC3339Nano),
		in.Message.Headers, in.Message.Payload)
}

// state reads everything a refused call must not change.
func (h *harness) state() engineState {
	h.t.Helper()
	st := h.e.Stats()
	s := engineState{StorePending: st.StorePending, Scheduled: st.Scheduled}
	q := ListQuery{Limit: MaxListLimit}
	for {
		page, next, err := h.e.List(bg, q)
		require.NoError(h.t, err)
		for _, in := range page {
			s.Pending = append(s.Pending, describeInfo(in))
		}
		if next.ID == 0 {
			break
		}
		q.After = next
	}
	var after ID
	for {
		dls, next, err := h.e.DeadLetters(bg, after, store.MaxDeadLimit)
		require.NoError(h.t, err)
		for _, d := range dls {
			s.Dead = append(s.Dead, fmt.Sprintf("%s att=%d reason=%q dest=%s payload=%q", d.ID, d.Attempts, d.Reason, d.Message.Dest, d.Message.Payload))
		}
		if next == 0 || len(dls) == 0 {
			break
		}
		after = next
	}
	return s
}

// requireSameState fails with a short account of what changed.
func requireSameState(t *testing.T, before, after engineState, what string) {
	t.Helper()
	if fmt.Sprint(before) == fmt.Sprint(after) {
		return
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%s:\n  store pending %d -> %d, scheduled %d -> %d, listed %d -> %d, dead %d -> %d",
		what, before.StorePending, after.StorePending, before.Scheduled, after.Scheduled,
		len(before.Pending), len(after.Pending), len(before.Dead), len(after.Dead))
	diff := func(name string, a, z []string) {
		in := map[string]bool{}
		for _, x := range z {
			in[x] = true
		}
		n := 0
		for _, x := range a {
			if !in[x] {
				if n++; n <= 3 {
					fmt.Fprintf(&b, "\n  %s: %s", name, x)
				}
			}
		}
		if n > 3 {
			fmt.Fprintf(&b, "\n  %s: ... %d in all", name, n)
		}
	}
	diff("gone", before.Pending, after.Pending)
	diff("new", after.Pending, before.Pending)
	diff("dead gone", before.Dead, after.Dead)
	diff("dead new", after.Dead, before.Dead)
	t.Fatal(b.String())
}

// hostile opens an engine with a recording queue "q", a rejecting queue
// "reject", and some state to keep: two pending messages in RAM (one with
// an idempotency key), one far beyond the window, and one dead letter.
func hostile(t *testing.T, mode string, opts Options) (*harness, map[string]ID) {
	t.Helper()
	opts.Queues = append(opts.Queues,
		Queue{Name: "q"},
		Queue{Name: "reject", Handler: func(context.Context, *Delivery) error { return Reject(errors.New("refused by test")) }},
	)
	h := newHarness(t, mode, opts)
	ids := map[string]ID{
		"near": h.schedule("local://q", 10*time.Second, "near"),
		"far":  h.schedule("local://q", 2*time.Hour, "far"),
		"dead": h.schedule("local://reject", 0, "dead"),
	}
	id, err := h.e.ScheduleIn(bg, 20*time.Second, Message{Dest: "local://q", Key: "taken", Payload: []byte("keyed")})
	require.NoError(t, err)
	ids["keyed"] = id
	h.settle()
	info, err := h.e.Get(bg, ids["dead"])
	require.NoError(t, err)
	require.Equal(t, StateDead, info.State)
	return h, ids
}

// refusal is one hostile call and what its error must say.
type refusal struct {
	name string
	call func(h *harness, ids map[string]ID) error
	is   error    // the sentinel the error wraps
	says []string // what the error must mention: what is wrong, what is allowed
}

// runRefusals runs each call against h and checks the error and that
// nothing changed.
func runRefusals(t *testing.T, h *harness, ids map[string]ID, cases []refusal) {
	t.Helper()
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			h.settle()
			before := h.state()
			err := c.call(h, ids)
			require.Error(t, err, "a hostile call was accepted")
			require.ErrorIs(t, err, c.is, "error %q", err)
			for _, s := range c.says {
				require.Contains(t, err.Error(), s, "the error must say %q", s)
			}
			h.settle()
			requireSameState(t, before, h.state(), fmt.Sprintf("a refused call changed the engine (error %q)", err))
		})
	}
}

func sched(m Message) func(h *harness, _ map[string]ID) error {
	return func(h *harness, _ map[string]ID) error {
		_, err := h.e.Schedule(bg, m)
		return err
	}
}

// Times around and beyond what Hourglass holds (store.MinTime..MaxTime).
var (
	year1      = time.Date(1, 6, 1, 0, 0, 0, 0, time.UTC) // not the zero Time (which is 0001-01-01)
	y1969      = time.Date(1969, 12, 31, 23, 59, 59, 0, time.UTC)
	epoch      = time.Unix(0, 0).UTC()
	y2261      = time.Date(2261, 6, 1, 0, 0, 0, 0, time.UTC)
	maxHeld    = store.MaxTime                                // 2262-01-01, the latest accepted
	justAfter  = store.MaxTime.Add(time.Nanosecond)           // the first refused
	int64End   = time.Unix(0, math.MaxInt64).UTC()            // 2262-04-11T23:47:16.854775807
	y2262Apr12 = time.Date(2262, 4, 12, 0, 0, 0, 0, time.UTC) // past int64 nanoseconds
	y2300      = time.Date(2300, 1, 1, 0, 0, 0, 0, time.UTC)  // "delivered at once" before the fix
	y2800      = time.Date(2800, 1, 1, 0, 0, 0, 0, time.UTC)  // "stored as 2215" before the fix
	y3000      = time.Date(3000, 1, 1, 0, 0, 0, 0, time.UTC)  //
	unixMaxSec = time.Unix(math.MaxInt64, 0)                  // year 292277026596; Go's Time wraps it below 1970
	unixBigSec = time.Unix(1<<62, 0)                          // year 146138514283
	nsMin      = time.Unix(0, math.MinInt64).UTC()            // 1677
	farFutures = []time.Time{justAfter, int64End, y2262Apr12, y2300, y2800, y3000, unixMaxSec, unixBigSec}
	allowedSay = []string{"2262-01-01"} // every time refusal names the latest time held
)

func timeName(t time.Time) string {
	switch {
	case t.IsZero():
		return "zero"
	case t.Equal(unixMaxSec):
		return "Unix(MaxInt64,0)"
	case t.Equal(unixBigSec):
		return "Unix(1<<62,0)"
	}
	return t.UTC().Format(time.RFC3339Nano)
}

// TestCatalogueOptions: every Options field out of range is refused by Open
// with ErrInvalid, naming the field and what it accepts, and Open writes
// nothing (no store directory appears).
func TestCatalogueOptions(t *testing.T) {
	ok := func(context.Context, *Delivery) error { return nil }
	huge := time.Duration(math.MaxInt64)
	cases := []struct {
		name string
		o    Options
		says []string
	}{
		{"Shards negative", Options{Shards: -1}, []string{"Shards = -1", "256"}},
		{"Shards 257", Options{Shards: 257}, []string{"Shards = 257", "256"}},
		{"Shards MaxInt", Options{Shards: math.MaxInt}, []string{"Shards", "256"}},
		{"Tick negative", Options{Tick: -time.Millisecond}, []string{"Tick = -1ms", "1s"}},
		{"Tick MinInt64", Options{Tick: math.MinInt64}, []string{"Tick", "1s"}},
		{"Tick over 1s", Options{Tick: time.Second + 1}, []string{"Tick", "1s"}},
		{"Tick huge", Options{Tick: huge}, []string{"Tick", "1s"}},
		{"Tick 1s with the default Window", Options{Tick: time.Second}, []string{"Window", "100 ticks"}},
		{"Window negative", Options{Window: -time.Minute}, []string{"Window = -1m0s", "positive"}},
		{"Window MinInt64", Options{Window: math.MinInt64}, []string{"Window", "positive"}},
		{"Window 1ns", Options{Window: 1}, []string{"Window", "100 ticks"}},
		{"Window 99 ticks", Options{Tick: time.Millisecond, Window: 99 * time.Millisecond}, []string{"Window", "100 ticks"}},
		{"MaxPending negative", Options{MaxPending: -1}, []string{"MaxPending = -1"}},
		{"MaxPending huge", Options{MaxPending: math.MaxInt}, []string{"MaxPending"}},
		{"MaxPayload negative", Options{MaxPayload: -1}, []string{"MaxPayload = -1", "67108864"}},
		{"MaxPayload over 64 MiB", Options{MaxPayload: 64<<20 + 1}, []string{"MaxPayload", "67108864"}},
		{"MaxPayload MaxInt", Options{MaxPayload: math.MaxInt}, []string{"MaxPayload", "67108864"}},
		{"Dispatchers negative", Options{Dispatchers: -1}, []string{"Dispatchers = -1", "4096"}},
		{"Dispatchers huge", Options{Dispatchers: 1 << 20}, []string{"Dispatchers", "4096"}},
		{"MaxBatch negative", Options{MaxBatch: -1}, []string{"MaxBatch = -1", "4096"}},
		{"MaxBatch 4097", Options{MaxBatch: 4097}, []string{"MaxBatch = 4097", "4096"}},
		{"MaxReady negative", Options{MaxReady: -1}, []string{"MaxReady = -1", "4.."}},
		{"MaxReady 3", Options{MaxReady: 3}, []string{"MaxReady = 3", "4.."}},
		{"MaxReady huge", Options{MaxReady: math.MaxInt}, []string{"MaxReady"}},
		{"MaxInFlight negative", Options{MaxInFlight: -1}, []string{"MaxInFlight = -1"}},
		{"Retry.Jitter NaN", Options{Retry: RetryPolicy{Jitter: math.NaN()}}, []string{"Jitter = NaN", "up to 1"}},
		{"Retry.Jitter +Inf", Options{Retry: RetryPolicy{Jitter: math.Inf(1)}}, []string{"Jitter = +Inf", "up to 1"}},
		{"Retry.Jitter 1.01", Options{Retry: RetryPolicy{Jitter: 1.01}}, []string{"Jitter", "up to 1"}},
		{"Retry.Base negative", Options{Retry: RetryPolicy{Base: -time.Second}}, []string{"Base = -1s"}},
		{"Retry.Base huge", Options{Retry: RetryPolicy{Base: huge}}, []string{"Base", "876000h0m0s"}},
		{"Retry.Max negative", Options{Retry: RetryPolicy{Max: -1}}, []string{"Max = -1ns"}},
		{"Retry.Max huge", Options{Retry: RetryPolicy{Max: huge}}, []string{"Max", "876000h0m0s"}},
		{"Retry.Base above Max", Options{Retry: RetryPolicy{Base: time.Hour, Max: time.Minute}}, []string{"Base 1h0m0s is larger than Max 1m0s"}},
		{"Retry.Delays negative", Options{Retry: RetryPolicy{Delays: []time.Duration{time.Second, -1}}}, []string{"Delays[1] = -1ns"}},
		{"Retry.Delays huge", Options{Retry: RetryPolicy{Delays: []time.Duration{huge}}}, []string{"Delays[0]", "876000h0m0s"}},
		{"Dir and Store both set", Options{Dir: "x", Store: memstore.Options{}}, []string{"both Dir", "Store"}},
		{"Destinations empty Prefix", Options{Destinations: []DestinationOptions{{}}}, []string{"Destinations[0]", "empty Prefix"}},
		{"Destinations negative MaxInFlight", Options{Destinations: []DestinationOptions{{Prefix: "x", MaxInFlight: -1}}}, []string{"Destinations[0]", "MaxInFlight -1"}},
		{"Destinations NaN Jitter", Options{Destinations: []DestinationOptions{{Prefix: "x", Retry: RetryPolicy{Jitter: math.NaN()}}}}, []string{"Destinations[0]", "Jitter"}},
		{"Queue empty Name", Options{Queues: []Queue{{Handler: ok}}}, []string{"Queues[0]", "empty Name"}},
		{"Queue Name with slash", Options{Queues: []Queue{{Name: "a/b", Handler: ok}}}, []string{"Queues[0]", "without '/'"}},
		{"Queue Name with space", Options{Queues: []Queue{{Name: "a b", Handler: ok}}}, []string{"Queues[0]", "spaces"}},
		{"Queue Name with NUL", Options{Queues: []Queue{{Name: "a\x00", Handler: ok}}}, []string{"Queues[0]", "control"}},
		{"Queue Name with LF", Options{Queues: []Queue{{Name: "a\nb", Handler: ok}}}, []string{"Queues[0]", "control"}},
		{"Queue Name with DEL", Options{Queues: []Queue{{Name: "a\x7f", Handler: ok}}}, []string{"Queues[0]", "control"}},
		{"Queue Name 257 bytes", Options{Queues: []Queue{{Name: strings.Repeat("a", 257), Handler: ok}}}, []string{"Queues[0]", "1..256 bytes"}},
		{"Queue nil Handler", Options{Queues: []Queue{{Name: "a"}}}, []string{"Queues[0]", "nil Handler"}},
		{"Queue twice", Options{Queues: []Queue{{Name: "a", Handler: ok}, {Name: "b", Handler: ok}, {Name: "a", Handler: ok}}}, []string{"Queues[2]", `"a" registered twice`}},
		{"Queue Parallelism negative", Options{Queues: []Queue{{Name: "a", Handler: ok, Parallelism: -1}}}, []string{"Parallelism = -1", "65536"}},
		{"Queue Parallelism huge", Options{Queues: []Queue{{Name: "a", Handler: ok, Parallelism: 1 << 20}}}, []string{"Parallelism", "65536"}},
		{"Queue Timeout negative", Options{Queues: []Queue{{Name: "a", Handler: ok, Timeout: -time.Second}}}, []string{"Timeout = -1s", "positive"}},
		{"Queue Retry NaN", Options{Queues: []Queue{{Name: "a", Handler: ok, Retry: RetryPolicy{Jitter: math.NaN()}}}}, []string{"Jitter"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := c.o.Validate()
			require.ErrorIs(t, err, ErrInvalid)
			for _, s := range c.says {
				require.Contains(t, err.Error(), s)
			}
			// Open refuses the same way, before it writes anything: a
			// durable store's directory is not even created.
			for _, mode := range []string{"memory", "durable"} {
				o := c.o
				o.Logger = quietLogger()
				var fs vfs.FS
				if mode == "durable" && o.Dir == "" && o.Store == nil {
					fs = vfs.NewMem()
					o.Store = wal.Options{Dir: "store", FS: fs}
				}
				e, err := Open(bg, o)
				if e != nil {
					_ = e.Close()
				}
				require.ErrorIs(t, err, ErrInvalid, "%s: Open accepted it", mode)
				if fs != nil {
					_, serr := fs.Stat("store")
					require.Error(t, serr, "a refused Open created the store directory")
				}
			}
		})
	}
}

// TestCatalogueOptionsAccepted: the edges that are allowed open and work.
func TestCatalogueOptionsAccepted(t *testing.T) {
	for _, c := range []struct {
		name string
		o    Options
	}{
		{"Shards 256", Options{Shards: 256}},
		{"Tick 1s Window 100s", Options{Tick: time.Second, Window: 100 * time.Second}},
		{"Tick 1ns", Options{Tick: 1}},
		{"MaxPayload 64 MiB", Options{MaxPayload: 64 << 20}},
		{"Jitter -Inf (no jitter)", Options{Retry: RetryPolicy{Jitter: math.Inf(-1)}}},
		{"Jitter 1", Options{Retry: RetryPolicy{Jitter: 1}}},
		{"Retry.Max at the limit", Options{Retry: RetryPolicy{Base: MaxRetryDelay, Max: MaxRetryDelay}}},
		{"MaxAttempts unlimited", Options{Retry: RetryPolicy{MaxAttempts: -1}}},
		{"NativeMinLead MinInt64", Options{NativeMinLead: math.MinInt64}},
		{"MaxReady 4", Options{MaxReady: 4}},
	} {
		t.Run(c.name, func(t *testing.T) {
			require.NoError(t, c.o.Validate())
			o := c.o
			o.Logger = quietLogger()
			o.Clock = NewFakeClock(t0)
			e, err := Open(bg, o)
			require.NoError(t, err)
			require.NoError(t, e.Close())
		})
	}
}

// TestOptionsDefaultedOrWrittenOutAgree: an option left to its default and
// the same default written out are accepted or refused alike: Tick and
// Window are checked the same way whether they are defaulted or written
// out. The same holds for every pair of options that
// are checked against each other: Tick/Window and Retry Base/Max, in
// Options.Retry, a destination's and a queue's policy.
func TestOptionsDefaultedOrWrittenOutAgree(t *testing.T) {
	ok := func(context.Context, *Delivery) error { return nil }
	ticks := []time.Duration{0, DefaultTick, 100 * time.Microsecond, 600 * time.Millisecond, time.Second}
	windows := []time.Duration{0, DefaultWindow, 100 * time.Millisecond, 10 * time.Second, 100 * time.Second}
	for _, tick := range ticks {
		for _, win := range windows {
			short := Options{Tick: tick, Window: win}
			long := short
			if long.Tick == 0 {
				long.Tick = DefaultTick
			}
			if long.Window == 0 {
				long.Window = DefaultWindow
			}
			es, el := short.Validate(), long.Validate()
			require.Equal(t, el == nil, es == nil, "Tick %v Window %v: defaulted says %v, written out says %v", tick, win, es, el)
		}
	}
	bases := []time.Duration{0, DefaultRetryBase, 100 * time.Millisecond, 2 * time.Hour}
	maxes := []time.Duration{0, DefaultRetryMax, 500 * time.Millisecond, 3 * time.Hour}
	for _, base := range bases {
		for _, mx := range maxes {
			short := RetryPolicy{Base: base, Max: mx}
			long := short
			if long.Base == 0 {
				long.Base = DefaultRetryBase
			}
			if long.Max == 0 {
				long.Max = DefaultRetryMax
			}
			for _, where := range []string{"Options.Retry", "Destinations[0].Retry", "Queues[0].Retry"} {
				wrap := func(p RetryPolicy) Options {
					switch where {
					case "Options.Retry":
						return Options{Retry: p}
					case "Destinations[0].Retry":
						return Options{Destinations: []DestinationOptions{{Prefix: "x", Retry: p}}}
					}
					return Options{Queues: []Queue{{Name: "q", Handler: ok, Retry: p}}}
				}
				es, el := wrap(short).Validate(), wrap(long).Validate()
				require.Equal(t, el == nil, es == nil, "%s Base %v Max %v: defaulted says %v, written out (Base %v Max %v) says %v",
					where, base, mx, es, long.Base, long.Max, el)
			}
		}
	}
}

// TestHugeWindowStillDelivers: a Window near the end of int64 (where
// now+Window once overflowed and nothing was ever delivered) is either
// refused or works: messages near and far fire at their due time.
func TestHugeWindowStillDelivers(t *testing.T) {
	for _, win := range []time.Duration{math.MaxInt64, MaxRetryDelay * 2} {
		forModes(t, func(t *testing.T, mode string) {
			o := Options{Window: win, Queues: []Queue{{Name: "q"}}}
			if err := (Options{Window: win}).Validate(); err != nil {
				require.ErrorIs(t, err, ErrInvalid)
				require.Contains(t, err.Error(), "Window")
				return
			}
			h := newHarness(t, mode, o)
			h.schedule("local://q", time.Second, "1s")
			h.schedule("local://q", 48*time.Hour, "2d")
			_, err := h.e.Schedule(bg, Message{Dest: "local://q", Due: y2261, Payload: []byte("2261")})
			require.NoError(t, err)
			h.advance(time.Second)
			require.Equal(t, []string{"1s"}, payloads(h.deliveries()))
			h.advance(48 * time.Hour)
			require.Equal(t, []string{"1s", "2d"}, payloads(h.deliveries()))
			h.clk.Advance(y2261.Sub(h.clk.Now()) - time.Second)
			h.settle()
			require.Len(t, h.deliveries(), 2, "2261 is not due yet")
			h.advance(time.Second)
			require.Equal(t, []string{"1s", "2d", "2261"}, payloads(h.deliveries()))
			for _, r := range h.deliveries() {
				require.False(t, r.at.Before(r.due), "early: %+v", r)
			}
		})
	}
}

// TestCatalogueTimes: every time that enters the engine. Past and zero times
// mean now; times after store.MaxTime are refused with ErrInvalid naming the
// range, never wrapped around or taken as "now".
func TestCatalogueTimes(t *testing.T) {
	forModes(t, func(t *testing.T, mode string) {
		h, ids := hostile(t, mode, Options{})
		var cases []refusal
		for _, tm := range farFutures {
			cases = append(cases,
				refusal{"Due " + timeName(tm), sched(Message{Dest: "local://q", Due: tm}), ErrInvalid, allowedSay},
				refusal{"ScheduleAt " + timeName(tm), func(h *harness, _ map[string]ID) error {
					_, err := h.e.ScheduleAt(bg, tm, Message{Dest: "local://q"})
					return err
				}, ErrInvalid, allowedSay},
				refusal{"Expires " + timeName(tm), sched(Message{Dest: "local://q", Expires: tm}), ErrInvalid, allowedSay},
				refusal{"Reschedule to " + timeName(tm), func(h *harness, ids map[string]ID) error {
					return h.e.Reschedule(bg, ids["near"], tm)
				}, ErrInvalid, allowedSay},
				refusal{"ReplayDead to " + timeName(tm), func(h *harness, ids map[string]ID) error {
					return h.e.ReplayDead(bg, []ID{ids["dead"]}, tm)
				}, ErrInvalid, allowedSay},
				refusal{"ScheduleBatch with message 1 due " + timeName(tm), func(h *harness, _ map[string]ID) error {
					_, err := h.e.ScheduleBatch(bg, []Message{{Dest: "local://q", Payload: []byte("fine")}, {Dest: "local://q", Due: tm}})
					return err
				}, ErrInvalid, append([]string{"message 1"}, allowedSay...)},
			)
		}
		for _, tm := range []time.Time{year1, y1969, epoch, nsMin} {
			cases = append(cases, refusal{"Expires " + timeName(tm), sched(Message{Dest: "local://q", Expires: tm}), ErrInvalid, []string{"Expires"}})
		}
		cases = append(cases,
			refusal{"ScheduleIn MaxInt64", func(h *harness, _ map[string]ID) error {
				_, err := h.e.ScheduleIn(bg, math.MaxInt64, Message{Dest: "local://q"})
				return err
			}, ErrInvalid, allowedSay},
			refusal{"ScheduleIn one past the latest", func(h *harness, _ map[string]ID) error {
				_, err := h.e.ScheduleIn(bg, store.MaxTime.Sub(h.clk.Now())+1, Message{Dest: "local://q"})
				return err
			}, ErrInvalid, allowedSay},
			refusal{"Expires in the past", sched(Message{Dest: "local://q", Expires: t0.Add(-time.Hour)}), ErrInvalid, []string{"Expires", "before"}},
			refusal{"Expires before Due", sched(Message{Dest: "local://q", Due: t0.Add(time.Hour), Expires: t0.Add(30 * time.Minute)}), ErrInvalid, []string{"Expires", "before", "due"}},
			refusal{"Expires 1ns before Due", sched(Message{Dest: "local://q", Due: t0.Add(time.Hour), Expires: t0.Add(time.Hour - 1)}), ErrInvalid, []string{"Expires"}},
			refusal{"Expires before a far Due", sched(Message{Dest: "local://q", Due: y2261, Expires: y2261.Add(-1)}), ErrInvalid, []string{"Expires"}},
		)
		runRefusals(t, h, ids, cases)
	})
}

// TestCatalogueTimesAccepted: zero and past times mean now; the latest time
// held is taken exactly; Expires equal to Due is allowed.
func TestCatalogueTimesAccepted(t *testing.T) {
	forModes(t, func(t *testing.T, mode string) {
		h, ids := hostile(t, mode, Options{})
		for _, tm := range []time.Time{{}, year1, y1969, epoch, nsMin, t0.Add(-time.Nanosecond)} {
			_, err := h.e.Schedule(bg, Message{Dest: "local://q", Due: tm, Payload: []byte("past " + timeName(tm))})
			require.NoError(t, err, timeName(tm))
		}
		for _, d := range []time.Duration{0, -time.Hour, math.MinInt64} {
			_, err := h.e.ScheduleIn(bg, d, Message{Dest: "local://q", Payload: []byte(fmt.Sprint("in ", d))})
			require.NoError(t, err)
		}
		h.settle()
		got := h.deliveries()
		require.Len(t, got, 9, "every past or zero due time means now")
		for _, r := range got {
			require.Equal(t, t0, r.due.UTC(), "%s: due must read now", r.payload)
		}
		for _, c := range []struct {
			due, exp time.Time
		}{{y2261, time.Time{}}, {maxHeld, time.Time{}}, {maxHeld, maxHeld}, {y2261, y2261}, {y2261, maxHeld}} {
			id, err := h.e.Schedule(bg, Message{Dest: "local://q", Due: c.due, Expires: c.exp})
			require.NoError(t, err, "due %s expires %s", timeName(c.due), timeName(c.exp))
			info, err := h.e.Get(bg, id)
			require.NoError(t, err)
			require.True(t, c.due.Equal(info.Message.Due), "due %s stored as %s", timeName(c.due), info.Message.Due.UTC())
			require.True(t, c.exp.Equal(info.Message.Expires), "expires %s stored as %s", timeName(c.exp), info.Message.Expires.UTC())
		}
		_, err := h.e.ScheduleIn(bg, store.MaxTime.Sub(h.clk.Now()), Message{Dest: "local://q"})
		require.NoError(t, err, "exactly the latest time held")
		// Reschedule and replay into the past: now.
		require.NoError(t, h.e.Reschedule(bg, ids["far"], year1))
		require.NoError(t, h.e.ReplayDead(bg, []ID{ids["dead"]}, time.Time{}))
		h.settle()
		require.Contains(t, payloads(h.deliveries()), "far")
	})
}

// TestCatalogueListBounds: List bounds anywhere on the time line select
// what they would, never wrap: a bound after the latest time held selects
// nothing after it; a cursor outside every due time is harmless.
func TestCatalogueListBounds(t *testing.T) {
	forModes(t, func(t *testing.T, mode string) {
		h, _ := hostile(t, mode, Options{})
		count := func(q ListQuery) int {
			t.Helper()
			page, _, err := h.e.List(bg, q)
			require.NoError(t, err, "%+v", q)
			return len(page)
		}
		all := count(ListQuery{})
		require.Equal(t, 3, all)
		for _, c := range []struct {
			name string
			q    ListQuery
			want int
		}{
			{"From year 1", ListQuery{From: year1}, all},
			{"From 1677", ListQuery{From: nsMin}, all},
			{"To 3000", ListQuery{To: y3000}, all},
			{"From year 1 To 3000", ListQuery{From: year1, To: y3000}, all},
			{"From 3000", ListQuery{From: y3000}, 0},
			{"From 2800", ListQuery{From: y2800}, 0},
			{"From Unix(MaxInt64,0)", ListQuery{From: unixMaxSec}, 0},
			{"To Unix(MaxInt64,0)", ListQuery{To: unixMaxSec}, all},
			{"From Unix(1<<62,0)", ListQuery{From: unixBigSec}, 0},
			{"To year 1", ListQuery{To: year1}, 0},
			{"To 1969", ListQuery{To: y1969}, 0},
			{"From after To", ListQuery{From: t0.Add(time.Hour), To: t0}, 0},
			{"From equals To", ListQuery{From: t0.Add(10 * time.Second), To: t0.Add(10 * time.Second)}, 0},
			{"After a negative due", ListQuery{After: Cursor{Due: -1, ID: 5}}, all},
			{"After MinInt64", ListQuery{After: Cursor{Due: math.MinInt64}}, all},
			{"After the end of time", ListQuery{After: Cursor{Due: math.MaxInt64, ID: math.MaxUint64}}, 0},
			{"Limit 1", ListQuery{Limit: 1}, 1},
			{"Limit MaxListLimit", ListQuery{Limit: MaxListLimit}, all},
		} {
			require.Equal(t, c.want, count(c.q), c.name)
		}
	})
}

// TestCatalogueIDsHeadersKeysDests: IDs that name nothing here, headers and
// keys a transport cannot carry, destinations nothing serves, sizes past
// the limits, absurd page sizes, and dead-letter calls with unknown IDs.
func TestCatalogueIDsHeadersKeysDests(t *testing.T) {
	forModes(t, func(t *testing.T, mode string) {
		h, ids := hostile(t, mode, Options{})
		q := func(hs ...Header) func(h *harness, _ map[string]ID) error {
			return sched(Message{Dest: "local://q", Headers: hs})
		}
		var cases []refusal
		// IDs that name no message of this engine.
		for _, id := range []ID{0, 1, ID(math.MaxUint64), store.MakeID(255, 7), store.MakeID(0, 0xdeadbeef), store.MakeID(1, store.LocalMask)} {
			cases = append(cases,
				refusal{fmt.Sprintf("Cancel %#x", uint64(id)), func(h *harness, _ map[string]ID) error { return h.e.Cancel(bg, id) }, ErrNotFound, []string{id.String()}},
				refusal{fmt.Sprintf("Reschedule %#x", uint64(id)), func(h *harness, _ map[string]ID) error { return h.e.Reschedule(bg, id, t0.Add(time.Hour)) }, ErrNotFound, []string{id.String()}},
				refusal{fmt.Sprintf("Get %#x", uint64(id)), func(h *harness, _ map[string]ID) error { _, err := h.e.Get(bg, id); return err }, ErrNotFound, nil},
				refusal{fmt.Sprintf("ReplayDead %#x", uint64(id)), func(h *harness, _ map[string]ID) error { return h.e.ReplayDead(bg, []ID{id}, time.Time{}) }, ErrNotFound, nil},
				refusal{fmt.Sprintf("PurgeDead %#x", uint64(id)), func(h *harness, _ map[string]ID) error { _, err := h.e.PurgeDead(bg, []ID{id}); return err }, ErrNotFound, nil},
			)
		}
		for _, c := range []struct{ s, says string }{
			{"", "13"}, {"x", "13"}, {"00000000000001", "13"}, {"0000000000001\n", "13"},
			{"0000000000000", "zero ID"}, {"zzzzzzzzzzzzz", "0-9, a-v"}, {"VVVVVVVVVVVVV", "0-9, a-v"}, {"0000000000001", "canonical"},
		} {
			cases = append(cases, refusal{"ParseID " + fmt.Sprintf("%q", c.s), func(*harness, map[string]ID) error { _, err := ParseID(c.s); return err }, ErrInvalid, []string{c.says}})
		}
		cases = append(cases,
			// Dead-letter calls are all-or-nothing.
			refusal{"ReplayDead a dead letter and an unknown ID", func(h *harness, ids map[string]ID) error {
				return h.e.ReplayDead(bg, []ID{ids["dead"], store.MakeID(0, 12345)}, time.Time{})
			}, ErrNotFound, []string{store.MakeID(0, 12345).String()}},
			refusal{"PurgeDead a dead letter and an unknown ID", func(h *harness, ids map[string]ID) error {
				_, err := h.e.PurgeDead(bg, []ID{ids["dead"], store.MakeID(0, 12345)})
				return err
			}, ErrNotFound, []string{store.MakeID(0, 12345).String()}},
			refusal{"PurgeDead a pending message", func(h *harness, ids map[string]ID) error {
				_, err := h.e.PurgeDead(bg, []ID{ids["dead"], ids["near"]})
				return err
			}, ErrNotFound, nil},
			refusal{"ReplayDead a pending message", func(h *harness, ids map[string]ID) error {
				return h.e.ReplayDead(bg, []ID{ids["near"]}, time.Time{})
			}, ErrNotFound, nil},
			refusal{"ReplayDead too many IDs", func(h *harness, ids map[string]ID) error {
				return h.e.ReplayDead(bg, make([]ID, store.MaxCallMessages+1), time.Time{})
			}, ErrInvalid, []string{"16385", "16384"}},
			refusal{"PurgeDead too many IDs", func(h *harness, ids map[string]ID) error {
				_, err := h.e.PurgeDead(bg, make([]ID, store.MaxCallMessages+1))
				return err
			}, ErrInvalid, []string{"16385", "16384"}},
			// Cancel and Reschedule of a dead letter: it is not pending.
			refusal{"Cancel a dead letter", func(h *harness, ids map[string]ID) error { return h.e.Cancel(bg, ids["dead"]) }, ErrNotFound, nil},
			refusal{"Reschedule a dead letter", func(h *harness, ids map[string]ID) error { return h.e.Reschedule(bg, ids["dead"], t0) }, ErrNotFound, nil},

			// Header values a transport cannot carry.
			refusal{"header value with a control byte", q(Header{Key: "X-A", Value: "a\x01b"}), ErrInvalid, []string{`"X-A"`, "control character", "tab"}},
			refusal{"header value with CR", q(Header{Key: "X-A", Value: "a\rb"}), ErrInvalid, []string{"control character"}},
			refusal{"header value with LF", q(Header{Key: "X-A", Value: "a\nb"}), ErrInvalid, []string{"control character"}},
			refusal{"header value with CRLF injection", q(Header{Key: "X-A", Value: "v\r\nHourglass-Id: forged"}), ErrInvalid, []string{"control character"}},
			refusal{"header value with NUL", q(Header{Key: "X-A", Value: "a\x00"}), ErrInvalid, []string{"control character"}},
			refusal{"header value with DEL", q(Header{Key: "X-A", Value: "a\x7f"}), ErrInvalid, []string{"control character"}},
			refusal{"header value with ESC", q(Header{Key: "X-A", Value: "\x1b[31m"}), ErrInvalid, []string{"control character"}},
			// Header names.
			refusal{"reserved Hourglass-Id", q(Header{Key: "Hourglass-Id", Value: "forged"}), ErrInvalid, []string{"reserved", "Hourglass-"}},
			refusal{"reserved hourglass-key, lower case", q(Header{Key: "hourglass-key", Value: "forged"}), ErrInvalid, []string{"reserved"}},
			refusal{"reserved HOURGLASS-ATTEMPT", q(Header{Key: "HOURGLASS-ATTEMPT", Value: "9"}), ErrInvalid, []string{"reserved"}},
			refusal{"reserved Hourglass-Routing-Key (engine-internal)", q(Header{Key: "Hourglass-Routing-Key", Value: "x"}), ErrInvalid, []string{"reserved"}},
			refusal{"reserved Hourglass-Native (engine-internal)", q(Header{Key: "Hourglass-Native", Value: "1"}), ErrInvalid, []string{"reserved"}},
			refusal{"header name with a space", q(Header{Key: "X Y", Value: "v"}), ErrInvalid, []string{"token"}},
			refusal{"header name with a colon", q(Header{Key: "X:Y", Value: "v"}), ErrInvalid, []string{"token"}},
			refusal{"header name with CRLF", q(Header{Key: "X\r\nY", Value: "v"}), ErrInvalid, []string{"token"}},
			refusal{"header name non-ASCII", q(Header{Key: "X-é", Value: "v"}), ErrInvalid, []string{"token"}},
			refusal{"header name empty", q(Header{Key: "", Value: "v"}), ErrInvalid, []string{"empty name"}},
			refusal{"63 headers", q(make63Headers()...), ErrInvalid, []string{"63 headers", "62"}},
			refusal{"header value 4097 bytes", q(Header{Key: "X-Big", Value: strings.Repeat("v", store.MaxHeaderLen+1)}), ErrInvalid, []string{"longer than 4096"}},
			refusal{"header name 4097 bytes", q(Header{Key: strings.Repeat("N", store.MaxHeaderLen+1), Value: "v"}), ErrInvalid, []string{"longer than 4096"}},

			// Keys travel as Hourglass-Key (and routing keys as the
			// partition key): no control characters, at most 1 KiB.
			refusal{"Key with CRLF", sched(Message{Dest: "local://q", Key: "k\r\nHourglass-Id: forged"}), ErrInvalid, []string{"Key", "control character"}},
			refusal{"Key with LF", sched(Message{Dest: "local://q", Key: "k\n"}), ErrInvalid, []string{"Key", "control character"}},
			refusal{"Key with NUL", sched(Message{Dest: "local://q", Key: "k\x00"}), ErrInvalid, []string{"Key", "control character"}},
			refusal{"Key with DEL", sched(Message{Dest: "local://q", Key: "k\x7f"}), ErrInvalid, []string{"Key", "control character"}},
			refusal{"Key 1025 bytes", sched(Message{Dest: "local://q", Key: strings.Repeat("k", store.MaxKeyLen+1)}), ErrInvalid, []string{"Key is 1025 bytes", "1024"}},
			refusal{"RoutingKey with CRLF", sched(Message{Dest: "local://q", RoutingKey: "r\r\n"}), ErrInvalid, []string{"RoutingKey", "control character"}},
			refusal{"RoutingKey 1025 bytes", sched(Message{Dest: "local://q", RoutingKey: strings.Repeat("r", store.MaxKeyLen+1)}), ErrInvalid, []string{"RoutingKey", "1024"}},

			// Destinations.
			refusal{"no Dest", sched(Message{Payload: []byte("x")}), ErrInvalid, []string{"no Dest", "local://"}},
			refusal{"Dest without scheme", sched(Message{Dest: "orders"}), ErrInvalid, []string{`"orders"`}},
			refusal{"Dest 1025 bytes", sched(Message{Dest: "local://" + strings.Repeat("q", store.MaxDestLen)}), ErrInvalid, []string{"1024"}},
			refusal{"local:// without a queue", sched(Message{Dest: "local://"}), ErrUnknownQueue, []string{`"local://"`, "Register"}},
			refusal{"local queue not registered", sched(Message{Dest: "local://nobody"}), ErrUnknownQueue, []string{`"local://nobody"`, "Register"}},
			refusal{"local queue with a path", sched(Message{Dest: "local://q/x"}), ErrUnknownQueue, nil},
			refusal{"NATS not configured", sched(Message{Dest: "nats://orders"}), ErrInvalid, []string{`"nats://orders"`, "no transports", "local://"}},
			refusal{"Kafka not configured", sched(Message{Dest: "kafka://orders"}), ErrInvalid, []string{`"kafka://orders"`, "no transports"}},
			refusal{"webhook not configured", sched(Message{Dest: "https://example.com/hook"}), ErrInvalid, []string{`"https://example.com/hook"`, "no transports"}},

			// Sizes.
			refusal{"payload 1 MiB + 1", sched(Message{Dest: "local://q", Payload: make([]byte, DefaultMaxPayload+1)}), ErrInvalid, []string{"1048577", "MaxPayload 1048576"}},

			// Page sizes.
			refusal{"List Limit -1", func(h *harness, _ map[string]ID) error { _, _, err := h.e.List(bg, ListQuery{Limit: -1}); return err }, ErrInvalid, []string{"Limit = -1", "10000"}},
			refusal{"List Limit MaxListLimit+1", func(h *harness, _ map[string]ID) error {
				_, _, err := h.e.List(bg, ListQuery{Limit: MaxListLimit + 1})
				return err
			}, ErrInvalid, []string{"10001", "10000"}},
			refusal{"List Limit MaxInt", func(h *harness, _ map[string]ID) error {
				_, _, err := h.e.List(bg, ListQuery{Limit: math.MaxInt})
				return err
			}, ErrInvalid, []string{"10000"}},
			refusal{"List Limit MinInt", func(h *harness, _ map[string]ID) error {
				_, _, err := h.e.List(bg, ListQuery{Limit: math.MinInt})
				return err
			}, ErrInvalid, []string{"10000"}},
			refusal{"Summary negative bucket", func(h *harness, _ map[string]ID) error { _, err := h.e.Summary(bg, -1, 10); return err }, ErrInvalid, []string{"bucket", "positive"}},
			refusal{"Summary MinInt64 bucket", func(h *harness, _ map[string]ID) error { _, err := h.e.Summary(bg, math.MinInt64, 10); return err }, ErrInvalid, []string{"bucket"}},
			refusal{"Summary -1 buckets", func(h *harness, _ map[string]ID) error { _, err := h.e.Summary(bg, time.Minute, -1); return err }, ErrInvalid, []string{"-1 buckets", "100000"}},
			refusal{"Summary too many buckets", func(h *harness, _ map[string]ID) error {
				_, err := h.e.Summary(bg, time.Minute, MaxSummaryBuckets+1)
				return err
			}, ErrInvalid, []string{"100001", "100000"}},
			refusal{"Summary MaxInt buckets", func(h *harness, _ map[string]ID) error {
				_, err := h.e.Summary(bg, time.Minute, math.MaxInt)
				return err
			}, ErrInvalid, []string{"100000"}},
			refusal{"DeadLetters limit -1", func(h *harness, _ map[string]ID) error { _, _, err := h.e.DeadLetters(bg, 0, -1); return err }, ErrInvalid, []string{"limit = -1", "65536"}},
			refusal{"DeadLetters limit MaxDeadLimit+1", func(h *harness, _ map[string]ID) error {
				_, _, err := h.e.DeadLetters(bg, 0, store.MaxDeadLimit+1)
				return err
			}, ErrInvalid, []string{"65537", "65536"}},
			refusal{"DeadLetters limit MaxInt", func(h *harness, _ map[string]ID) error { _, _, err := h.e.DeadLetters(bg, 0, math.MaxInt); return err }, ErrInvalid, []string{"65536"}},
		)
		runRefusals(t, h, ids, cases)
	})
}

func make63Headers() []Header {
	hs := make([]Header, maxCallerHeaders+1)
	for i := range hs {
		hs[i] = Header{Key: fmt.Sprintf("X-%d", i), Value: "v"}
	}
	return hs
}

// TestCatalogueHeaderEdgesAccepted: the limits themselves are allowed, in
// both stores alike, and travel unchanged.
func TestCatalogueHeaderEdgesAccepted(t *testing.T) {
	forModes(t, func(t *testing.T, mode string) {
		h, _ := hostile(t, mode, Options{})
		hs := make63Headers()[:maxCallerHeaders]
		hs[0] = Header{Key: "X-Tab", Value: "a\tb"}
		hs[1] = Header{Key: strings.Repeat("N", store.MaxHeaderLen), Value: strings.Repeat("v", store.MaxHeaderLen)}
		hs[2] = Header{Key: "X-Utf8", Value: "héllo ✓"}
		hs[3] = Header{Key: "X-Dup", Value: "1"}
		hs[4] = Header{Key: "X-Dup", Value: "2"}
		hs[5] = Header{Key: "!#$%&'*+-.^_`|~", Value: ""}
		m := Message{Dest: "local://q", Headers: hs, Key: strings.Repeat("k", store.MaxKeyLen),
			RoutingKey: strings.Repeat("r", store.MaxKeyLen), Payload: make([]byte, DefaultMaxPayload)}
		var got *Delivery
		require.NoError(t, h.e.Register(Queue{Name: "edge", Handler: func(_ context.Context, d *Delivery) error { got = d; return nil }}))
		m.Dest = "local://edge"
		_, err := h.e.ScheduleIn(bg, time.Second, m)
		require.NoError(t, err)
		h.advance(time.Second)
		require.NotNil(t, got)
		require.Equal(t, hs, got.Headers)
		require.Equal(t, m.Key, got.Key)
		require.Equal(t, m.RoutingKey, got.RoutingKey)
		require.Len(t, got.Payload, DefaultMaxPayload)
	})
}

// TestCatalogueUnconfiguredTransport: with a transport registry that serves
// only "fake", other schemes are refused naming what is served, and a
// sender's own message checks (transport.MessageValidator) run at Schedule.
func TestCatalogueUnconfiguredTransport(t *testing.T) {
	forModes(t, func(t *testing.T, mode string) {
		reg := transport.NewRegistry()
		require.NoError(t, reg.Register(&strictSender{}, "fake"))
		h, ids := hostile(t, mode, Options{Transports: reg})
		runRefusals(t, h, ids, []refusal{
			{"nats", sched(Message{Dest: "nats://orders"}), transport.ErrUnknownScheme, []string{`"nats://orders"`, "fake://"}},
			{"kafka", sched(Message{Dest: "kafka://orders"}), ErrInvalid, []string{"kafka", "fake://"}},
			{"https", sched(Message{Dest: "https://example.com/hook"}), ErrInvalid, []string{"https", "fake://"}},
			{"bad scheme", sched(Message{Dest: "1x://y"}), ErrInvalid, []string{"scheme"}},
			{"empty target", sched(Message{Dest: "fake://"}), ErrInvalid, []string{"empty target"}},
			{"sender refuses a header", sched(Message{Dest: "fake://t", Headers: []Header{{Key: "Nats-Msg-Id", Value: "x"}}}), ErrInvalid, []string{"Nats-Msg-Id"}},
			{"sender refuses a key", sched(Message{Dest: "fake://t", Key: "has space"}), ErrInvalid, []string{"has space"}},
		})
	})
}

// strictSender is a fakeSender that, like the NATS sender, refuses Nats-*
// headers and keys with spaces (transport.MessageValidator).
type strictSender struct{ fakeSender }

func (s *strictSender) ValidateMessage(d transport.Destination, key string, hs []transport.Header) error {
	for _, h := range hs {
		if strings.HasPrefix(strings.ToLower(h.Key), "nats-") {
			return fmt.Errorf("%w: header %q is reserved by NATS", transport.ErrBadHeader, h.Key)
		}
	}
	if strings.Contains(key, " ") {
		return fmt.Errorf("%w: key %q has a space", transport.ErrBadHeader, key)
	}
	return nil
}

// TestCatalogueMaxPayloadSameInBothStores: the payload bound is the same in
// both stores, at the default and above 1 MiB (which must reach the durable
// store), and a payload at the bound travels intact, also through a restart.
func TestCatalogueMaxPayloadSameInBothStores(t *testing.T) {
	for _, limit := range []int{0, 2 << 20} {
		forModes(t, func(t *testing.T, mode string) {
			h, ids := hostile(t, mode, Options{MaxPayload: limit})
			want := limit
			if want == 0 {
				want = DefaultMaxPayload
			}
			big := bytes.Repeat([]byte("0123456789abcdefghijklmnopqrstu"), want/31+1)[:want]
			id, err := h.e.ScheduleIn(bg, time.Second, Message{Dest: "local://q", Payload: big})
			require.NoError(t, err, "a payload of exactly MaxPayload %d", want)
			stored := big[:want*3/4]
			_, err = h.e.Schedule(bg, Message{Dest: "local://q", Payload: stored, Due: t0.Add(3 * time.Hour)})
			require.NoError(t, err, "a big payload far beyond the window (in the store only)")
			h.advance(time.Second)
			found := false
			for _, r := range h.deliveries() {
				if r.id == id {
					found = true
					require.True(t, r.payload == string(big), "the delivered payload differs from the one scheduled (%d bytes)", len(r.payload))
				}
			}
			require.True(t, found)
			runRefusals(t, h, ids, []refusal{
				{"one byte over", sched(Message{Dest: "local://q", Payload: make([]byte, want+1)}), ErrInvalid, []string{fmt.Sprint(want + 1), fmt.Sprint(want)}},
			})
			if mode == "durable" {
				h.restart()
				page, _, err := h.e.List(bg, ListQuery{From: t0.Add(3 * time.Hour)})
				require.NoError(t, err)
				require.Len(t, page, 1)
				require.True(t, bytes.Equal(stored, page[0].Message.Payload), "the stored payload came back different")
			}
		})
	}
}

// TestCatalogueStoreMaxPayloadBelowEngines: a durable store configured with
// a smaller MaxPayload than the engine is either refused at Open or its
// bound is the one Schedule enforces, with ErrInvalid naming it.
func TestCatalogueStoreMaxPayloadBelowEngines(t *testing.T) {
	fs := vfs.NewMem()
	e, err := Open(bg, Options{MaxPayload: 2 << 20, Store: wal.Options{Dir: "s", FS: fs, MaxPayload: 1 << 20, Shards: 1},
		Logger: quietLogger(), Clock: NewFakeClock(t0), Queues: []Queue{{Name: "q", Handler: func(context.Context, *Delivery) error { return nil }}}})
	if err != nil {
		require.ErrorIs(t, err, ErrInvalid)
		return
	}
	defer e.Close()
	_, err = e.Schedule(bg, Message{Dest: "local://q", Payload: make([]byte, 1<<20+1)})
	require.ErrorIs(t, err, ErrInvalid)
	require.Contains(t, err.Error(), "1048576")
	require.Zero(t, e.Stats().StorePending)
}

// TestCatalogueBatchAllOrNothing: one invalid message deep in a batch that
// spans two store calls commits nothing, and the error names it.
func TestCatalogueBatchAllOrNothing(t *testing.T) {
	forModes(t, func(t *testing.T, mode string) {
		h, ids := hostile(t, mode, Options{})
		const n, bad = 16400, 16385
		batch := func(poison func(*Message)) func(h *harness, _ map[string]ID) error {
			return func(h *harness, _ map[string]ID) error {
				msgs := make([]Message, n)
				for i := range msgs {
					msgs[i] = Message{Dest: "local://q", Due: t0.Add(time.Hour), Payload: []byte("b")}
				}
				poison(&msgs[bad])
				got, err := h.e.ScheduleBatch(bg, msgs)
				if err != nil && len(got) != 0 {
					return fmt.Errorf("%w (and %d IDs returned for a refused batch)", err, len(got))
				}
				return err
			}
		}
		runRefusals(t, h, ids, []refusal{
			{"header over 4 KiB at 16385", batch(func(m *Message) {
				m.Headers = []Header{{Key: "X-Big", Value: strings.Repeat("v", 5000)}}
			}), ErrInvalid, []string{"message 16385", "4096"}},
			{"control byte in a header at 16385", batch(func(m *Message) { m.Headers = []Header{{Key: "X", Value: "\r\n"}} }), ErrInvalid, []string{"message 16385"}},
			{"Due 3000 at 16385", batch(func(m *Message) { m.Due = y3000 }), ErrInvalid, []string{"message 16385", "2262"}},
			{"unknown queue at 16385", batch(func(m *Message) { m.Dest = "local://nobody" }), ErrUnknownQueue, []string{"message 16385"}},
			{"payload too big at 16385", batch(func(m *Message) { m.Payload = make([]byte, DefaultMaxPayload+1) }), ErrInvalid, []string{"message 16385"}},
			{"Expires before Due at 16385", batch(func(m *Message) { m.Expires = t0 }), ErrInvalid, []string{"message 16385"}},
		})
	})
}

// TestCatalogueBatchFullIsAllOrNothing: a memory store refusing a batch
// that spans two store calls for lack of room (ErrFull, whose doc says
// "Nothing was scheduled") must not have committed the first call.
func TestCatalogueBatchFullIsAllOrNothing(t *testing.T) {
	h, ids := hostile(t, "memory", Options{Shards: 1, MaxPending: 1000})
	runRefusals(t, h, ids, []refusal{
		{"a batch of 1000 into room for 997", func(h *harness, _ map[string]ID) error {
			msgs := make([]Message, 1000)
			for i := range msgs {
				msgs[i] = Message{Dest: "local://q", Due: t0.Add(time.Hour)}
			}
			got, err := h.e.ScheduleBatch(bg, msgs)
			if err != nil && len(got) != 0 {
				return fmt.Errorf("%w (and %d messages were scheduled)", err, len(got))
			}
			return err
		}, ErrFull, []string{"capacity"}},
	})
}

// A batch larger than one store call is scheduled in groups of
// store.MaxCallMessages; when a later group does not fit, the call says
// how many went in and returns exactly their IDs.
func TestBatchLargerThanOneStoreCallSaysWhatWasScheduled(t *testing.T) {
	h := newHarness(t, "memory", Options{Shards: 1, MaxPending: store.MaxCallMessages + 5, Queues: []Queue{{Name: "q"}}})
	msgs := make([]Message, store.MaxCallMessages+16)
	for i := range msgs {
		msgs[i] = Message{Dest: "local://q", Due: t0.Add(time.Hour)}
	}
	got, err := h.e.ScheduleBatch(bg, msgs)
	require.ErrorIs(t, err, ErrFull)
	require.Contains(t, err.Error(), fmt.Sprintf("the first %d messages were scheduled", store.MaxCallMessages))
	require.Len(t, got, store.MaxCallMessages)
	for _, id := range got {
		info, err := h.e.Get(bg, id)
		require.NoError(t, err)
		require.Equal(t, StatePending, info.State)
	}
	require.EqualValues(t, store.MaxCallMessages, h.e.Stats().StorePending)
}

// TestCatalogueDeadLetterCursor: a DeadLetters cursor at the end of the ID
// space returns nothing (it must not wrap around to the beginning), and a
// last page says there is no next one.
func TestCatalogueDeadLetterCursor(t *testing.T) {
	forModes(t, func(t *testing.T, mode string) {
		h, _ := hostile(t, mode, Options{})
		dls, next, err := h.e.DeadLetters(bg, ID(math.MaxUint64), 10)
		require.NoError(t, err)
		require.Empty(t, dls, "a cursor past every ID must not start over")
		require.Zero(t, next)
		dls, next, err = h.e.DeadLetters(bg, 0, 1)
		require.NoError(t, err)
		require.Len(t, dls, 1)
		require.Zero(t, next, "one dead letter, one page: no next page")
	})
}

// TestCatalogueDeadLetterCallsAgree: PurgeDead and ReplayDead with one ID
// named twice, the zero ID, or an ID of a shard the store does not have,
// get the same answer from both stores, and a refused call changes nothing.
func TestCatalogueDeadLetterCallsAgree(t *testing.T) {
	answers := map[string][]string{}
	forModes(t, func(t *testing.T, mode string) {
		h, ids := hostile(t, mode, Options{})
		before := h.state()
		err := h.e.ReplayDead(bg, []ID{ids["dead"], ids["dead"]}, time.Time{})
		answers[mode] = append(answers[mode], fmt.Sprintf("replay twice: ErrInvalid=%v ErrNotFound=%v nil=%v", errors.Is(err, ErrInvalid), errors.Is(err, ErrNotFound), err == nil))
		if err != nil {
			requireSameState(t, before, h.state(), "a refused replay changed something")
		}
		h.settle()
		before = h.state()
		n, err := h.e.PurgeDead(bg, []ID{ids["dead"], ids["dead"]})
		answers[mode] = append(answers[mode], fmt.Sprintf("purge twice: ErrInvalid=%v ErrNotFound=%v nil=%v", errors.Is(err, ErrInvalid), errors.Is(err, ErrNotFound), err == nil))
		if err == nil {
			require.LessOrEqual(t, n, 1, "purging one dead letter named twice deletes one")
		} else {
			requireSameState(t, before, h.state(), "a refused purge changed something")
		}
		for _, id := range []ID{0, store.MakeID(200, 1)} {
			err := h.e.ReplayDead(bg, []ID{id}, time.Time{})
			answers[mode] = append(answers[mode], fmt.Sprintf("replay %#x: ErrInvalid=%v ErrNotFound=%v", uint64(id), errors.Is(err, ErrInvalid), errors.Is(err, ErrNotFound)))
			_, err = h.e.PurgeDead(bg, []ID{id})
			answers[mode] = append(answers[mode], fmt.Sprintf("purge %#x: ErrInvalid=%v ErrNotFound=%v", uint64(id), errors.Is(err, ErrInvalid), errors.Is(err, ErrNotFound)))
		}
	})
	require.Equal(t, answers["memory"], answers["durable"], "the two stores answer the same calls differently")
}

// TestCataloguePayloadBuffersAreCopied: a caller that reuses its buffers
// after Schedule returns (payload bytes, header slice), a handler that
// reuses its buffer after cascading, and a caller that scribbles on the
// payload Get or List returned, change nothing that is delivered.
func TestCataloguePayloadBuffersAreCopied(t *testing.T) {
	forModes(t, func(t *testing.T, mode string) {
		h := newHarness(t, mode, Options{Queues: []Queue{{Name: "q"}}})
		buf := []byte("original")
		hs := []Header{{Key: "X-A", Value: "original"}}
		_, err := h.e.ScheduleIn(bg, time.Second, Message{Dest: "local://q", Payload: buf, Headers: hs})
		require.NoError(t, err)
		copy(buf, "MUTATED!")
		hs[0].Value = "MUTATED!"
		// One buffer shared by a whole batch, rewritten after the call.
		shared := []byte("batch-00")
		_, err = h.e.ScheduleBatch(bg, []Message{{Dest: "local://q", Due: t0.Add(time.Second), Payload: shared}, {Dest: "local://q", Due: t0.Add(time.Second), Payload: shared[:5]}})
		require.NoError(t, err)
		copy(shared, "XXXXXXXX")
		// A handler cascading from a scratch buffer it reuses at once.
		var gotHeaders []Header
		require.NoError(t, h.e.Register(Queue{Name: "cascader", Handler: func(_ context.Context, d *Delivery) error {
			scratch := []byte("cascaded")
			if err := d.Send(Message{Dest: "local://q", Payload: scratch}); err != nil {
				return err
			}
			copy(scratch, "SCRIBBLE")
			return nil
		}}))
		require.NoError(t, h.e.Register(Queue{Name: "hdr", Handler: func(_ context.Context, d *Delivery) error {
			gotHeaders = append(gotHeaders, d.Headers...)
			return nil
		}}))
		hb := []Header{{Key: "X-B", Value: "kept"}}
		_, err = h.e.ScheduleIn(bg, time.Second, Message{Dest: "local://hdr", Headers: hb})
		require.NoError(t, err)
		hb[0] = Header{Key: "X-B", Value: "lost"}
		_, err = h.e.ScheduleIn(bg, time.Second, Message{Dest: "local://cascader"})
		require.NoError(t, err)
		h.advance(time.Second)
		require.ElementsMatch(t, []string{"original", "batch-00", "batch", "cascaded"}, payloads(h.deliveries()))
		require.Equal(t, []Header{{Key: "X-B", Value: "kept"}}, gotHeaders)
	})
}

// TestCatalogueHandlerMayKeepItsPayload: a handler that keeps the
// Payload slice after it returns still reads its own bytes after the
// shard has reused the message's payload slot for later messages of the
// same size.
func TestCatalogueHandlerMayKeepItsPayload(t *testing.T) {
	forModes(t, func(t *testing.T, mode string) {
		var mu sync.Mutex
		var kept [][]byte
		h := newHarness(t, mode, Options{Shards: 1, Queues: []Queue{{Name: "keep", Handler: func(_ context.Context, d *Delivery) error {
			mu.Lock()
			defer mu.Unlock()
			kept = append(kept, d.Payload)
			return nil
		}}}})
		// One message of the same size stays pending in the window, so its
		// size class keeps its chunks and the later rounds reuse freed slots.
		_, err := h.e.ScheduleIn(bg, 10*time.Second, Message{Dest: "local://keep", Payload: []byte("anchor-of-class-x")})
		require.NoError(t, err)
		var want []string
		for round := range 3 {
			for i := range 4 {
				p := fmt.Sprintf("round-%d-message-%d", round, i)
				want = append(want, p)
				_, err := h.e.ScheduleIn(bg, time.Second, Message{Dest: "local://keep", Payload: []byte(p)})
				require.NoError(t, err)
			}
			h.advance(time.Second)
		}
		var got []string
		for _, p := range kept {
			got = append(got, string(p))
		}
		require.ElementsMatch(t, want, got)
	})
}

// TestCatalogueReturnedPayloadsAreCopies: a caller that writes into the
// payload slice Get, List or DeadLetters returned must not change the
// message that is later delivered or replayed.
func TestCatalogueReturnedPayloadsAreCopies(t *testing.T) {
	forModes(t, func(t *testing.T, mode string) {
		h, ids := hostile(t, mode, Options{})
		// Each API scribbles its own letter, so a failure names the culprit.
		scribble := func(p []byte, mark byte) {
			for i := range p {
				p[i] = mark
			}
		}
		info, err := h.e.Get(bg, ids["near"])
		require.NoError(t, err)
		scribble(info.Message.Payload, 'G')
		page, _, err := h.e.List(bg, ListQuery{})
		require.NoError(t, err)
		for _, in := range page {
			scribble(in.Message.Payload, 'L')
		}
		dls, _, err := h.e.DeadLetters(bg, 0, 10)
		require.NoError(t, err)
		for _, d := range dls {
			scribble(d.Message.Payload, 'D')
		}
		info, err = h.e.GetByKey(bg, "taken")
		require.NoError(t, err)
		scribble(info.Message.Payload, 'K')
		info, err = h.e.Get(bg, ids["far"])
		require.NoError(t, err)
		scribble(info.Message.Payload, 'F')
		require.NoError(t, h.e.ReplayDead(bg, []ID{ids["dead"]}, t0.Add(time.Minute)))
		require.NoError(t, h.e.Reschedule(bg, ids["far"], t0.Add(time.Minute)))
		h.advance(time.Minute)
		var delivered []string
		for _, r := range h.deliveries() {
			delivered = append(delivered, r.payload)
		}
		require.ElementsMatch(t, []string{"near", "keyed", "far"}, delivered, "G: Get, L: List, D: DeadLetters, K: GetByKey, F: Get beyond the window")
		info, err = h.e.Get(bg, ids["dead"])
		require.NoError(t, err)
		require.Equal(t, "dead", string(info.Message.Payload), "the replayed dead letter was rejected again with its own payload")
	})
}

// TestCatalogueIdempotencyAcrossQueueKinds: one idempotency key names one
// message, whether it was scheduled for an ordered queue (placed by the
// queue's hash) or a plain one (placed by the key's hash), in either order;
// ErrDuplicate carries the existing ID, for pending and dead messages, and
// a key is free again once its message is delivered.
func TestCatalogueIdempotencyAcrossQueueKinds(t *testing.T) {
	forModes(t, func(t *testing.T, mode string) {
		const shards = 4
		h := newHarness(t, mode, Options{Shards: shards, Queues: []Queue{{Name: "ord", Ordered: true}, {Name: "plain"},
			{Name: "reject", Handler: func(context.Context, *Delivery) error { return Reject(errors.New("no")) }}}})
		ordShard := shardHash("local://ord") % shards
		var keys []string
		for i := 0; len(keys) < 2; i++ {
			if k := fmt.Sprint("key-", i); shardHash(k)%shards != ordShard {
				keys = append(keys, k)
			}
		}
		dup := func(err error, want ID) {
			t.Helper()
			require.ErrorIs(t, err, ErrDuplicate)
			var de *DuplicateError
			require.ErrorAs(t, err, &de)
			require.Equal(t, []ID{want}, de.IDs)
			require.Contains(t, err.Error(), want.String())
		}
		for i, order := range [][2]string{{"local://ord", "local://plain"}, {"local://plain", "local://ord"}} {
			first, err := h.e.ScheduleIn(bg, time.Minute, Message{Dest: order[0], Key: keys[i], Payload: []byte("first")})
			require.NoError(t, err)
			again, err := h.e.ScheduleIn(bg, time.Minute, Message{Dest: order[1], Key: keys[i], Payload: []byte("second")})
			dup(err, first)
			require.Equal(t, first, again)
			info, err := h.e.GetByKey(bg, keys[i])
			require.NoError(t, err)
			require.Equal(t, first, info.ID)
		}
		require.EqualValues(t, 2, h.e.Stats().StorePending, "two keys, two messages")
		// Dead letters keep their key.
		dead, err := h.e.Schedule(bg, Message{Dest: "local://reject", Key: "dead-key"})
		require.NoError(t, err)
		h.settle()
		again, err := h.e.Schedule(bg, Message{Dest: "local://plain", Key: "dead-key"})
		dup(err, dead)
		require.Equal(t, dead, again)
		// In one batch, the second use of a key names the first.
		ids, err := h.e.ScheduleBatch(bg, []Message{{Dest: "local://plain", Key: "twice", Due: t0.Add(time.Hour)}, {Dest: "local://ord", Key: "twice", Due: t0.Add(time.Hour)}})
		require.ErrorIs(t, err, ErrDuplicate)
		require.Len(t, ids, 2)
		require.Equal(t, ids[0], ids[1])
		h.advance(time.Hour)
		require.Len(t, h.deliveries(), 3, "the two keyed messages and the batch's one")
		// Delivered: the key is free again.
		fresh, err := h.e.Schedule(bg, Message{Dest: "local://plain", Key: keys[0]})
		require.NoError(t, err)
		require.NotEqual(t, ids[0], fresh)
	})
}

// TestCatalogueOrderedQueueDestSpelling: "LOCAL://ord" is the same ordered
// queue as "local://ord" (Schedule accepts both), so it keeps the ordered
// promise: one batch in flight at a time, in due order.
func TestCatalogueOrderedQueueDestSpelling(t *testing.T) {
	forModes(t, func(t *testing.T, mode string) {
		h := newHarness(t, mode, Options{Shards: 4})
		started := make(chan string, 10)
		release := make(chan struct{})
		unblock := sync.OnceFunc(func() { close(release) })
		t.Cleanup(unblock) // also when a check fails: the handler must not outlive the test
		var mu sync.Mutex
		var order []string
		require.NoError(t, h.e.Register(Queue{Name: "ord", Ordered: true, Handler: func(_ context.Context, d *Delivery) error {
			mu.Lock()
			order = append(order, string(d.Payload))
			mu.Unlock()
			if string(d.Payload) == "a" {
				started <- "a"
				<-release
			}
			return nil
		}}))
		for i, m := range []struct{ dest, p string }{{"local://ord", "a"}, {"local://ord", "b"}, {"LOCAL://ord", "c"}, {"Local://ord", "d"}} {
			_, err := h.e.Schedule(bg, Message{Dest: m.dest, Due: t0.Add(time.Duration(i*5+1) * time.Millisecond), Payload: []byte(m.p)})
			require.NoError(t, err)
		}
		h.clk.Advance(time.Millisecond) // "a" alone is due: its batch runs and blocks
		<-started
		h.clk.Advance(time.Second) // the rest are due, behind "a"
		h.e.barrier()              // every shard has taken its due messages and handed out what it may
		page, _, err := h.e.List(bg, ListQuery{})
		require.NoError(t, err)
		require.Len(t, page, 4)
		for _, in := range page {
			if string(in.Message.Payload) == "a" {
				continue // the one running
			}
			info, err := h.e.Get(bg, in.ID)
			require.NoError(t, err)
			require.NotEqual(t, StateInFlight, info.State, "%q went out while the ordered queue's first message still runs", in.Message.Payload)
		}
		unblock()
		h.settle()
		mu.Lock()
		defer mu.Unlock()
		require.Equal(t, []string{"a", "b", "c", "d"}, order)
	})
}

// TestCatalogueIDsFromElsewhere: an ID from another engine, or from an
// earlier life of a memory engine, names nothing here: Get, Cancel and
// Reschedule with it fail with ErrNotFound and leave this engine's own
// messages alone; the first IDs of successive memory engines all differ.
func TestCatalogueIDsFromElsewhere(t *testing.T) {
	forModes(t, func(t *testing.T, mode string) {
		a := newHarness(t, mode, Options{Shards: 2, Queues: []Queue{{Name: "q"}}})
		b := newHarness(t, mode, Options{Shards: 2, Queues: []Queue{{Name: "q"}}})
		var fromA, fromB []ID
		for i := range 4 {
			fromA = append(fromA, a.schedule("local://q", time.Hour, fmt.Sprint("a", i)))
			fromB = append(fromB, b.schedule("local://q", time.Hour, fmt.Sprint("b", i)))
		}
		before := b.state()
		for _, id := range fromA {
			require.NotContains(t, fromB, id, "two stores handed out the same ID")
			_, err := b.e.Get(bg, id)
			require.ErrorIs(t, err, ErrNotFound)
			require.ErrorIs(t, b.e.Cancel(bg, id), ErrNotFound, "an ID of another store cancelled a stranger")
			require.ErrorIs(t, b.e.Reschedule(bg, id, t0), ErrNotFound)
		}
		requireSameState(t, before, b.state(), "calls with another store's IDs")

		// Restarts: the first ID of each life differs from every earlier one.
		firsts := map[ID]int{}
		var lastLife []ID
		for life := range 5 {
			id := a.schedule("local://q", time.Hour, fmt.Sprint("life", life))
			if l, ok := firsts[id]; ok {
				t.Fatalf("life %d's first ID %s repeats life %d's", life, id, l)
			}
			firsts[id] = life
			for _, old := range lastLife {
				if mode == "memory" {
					require.ErrorIs(t, a.e.Cancel(bg, old), ErrNotFound, "an ID from an earlier life cancelled a stranger")
				}
			}
			lastLife = append(lastLife, id)
			a.restart()
		}
		if mode == "memory" {
			require.Zero(t, a.e.Stats().StorePending)
		} else {
			require.EqualValues(t, 9, a.e.Stats().StorePending)
		}
	})
}

// TestCatalogueRetryTimes: retry times a handler or transport asks for past
// the latest time Hourglass holds dead-letter the message with a reason
// saying so; they never wrap into the past (an early retry). Past ones mean
// now.
func TestCatalogueRetryTimes(t *testing.T) {
	forModes(t, func(t *testing.T, mode string) {
		var mu sync.Mutex
		calls := map[string][]int{}
		var deadReasons sync.Map
		reg := transport.NewRegistry()
		require.NoError(t, reg.Register(retryAfterSender{}, "ra"))
		h := newHarness(t, mode, Options{Transports: reg, Retry: RetryPolicy{MaxAttempts: 5, Jitter: -1},
			Events: Events{DeadLetter: func(d DeadLetterInfo) { deadReasons.Store(d.ID, d.Reason) }}})
		require.NoError(t, h.e.Register(Queue{Name: "r", Handler: func(_ context.Context, d *Delivery) error {
			p := string(d.Payload)
			mu.Lock()
			calls[p] = append(calls[p], d.Attempt)
			mu.Unlock()
			if d.Attempt > 1 {
				return nil
			}
			switch p {
			case "at 3000":
				return RetryAt(y3000, errors.New("much later"))
			case "at 2262-04-12":
				return RetryAt(y2262Apr12, nil)
			case "at Unix(MaxInt64,0)":
				return RetryAt(unixMaxSec, nil)
			case "at Unix(1<<62,0)":
				return RetryAt(unixBigSec, nil)
			case "in MaxInt64":
				return RetryIn(math.MaxInt64, errors.New("forever"))
			case "in 250 years":
				return RetryIn(250*365*24*time.Hour, nil)
			case "in -1h":
				return RetryIn(-time.Hour, nil)
			case "in MinInt64":
				return RetryIn(math.MinInt64, nil)
			case "at year 1":
				return RetryAt(year1, nil)
			case "at zero":
				return RetryAt(time.Time{}, nil)
			}
			return nil
		}}))
		ids := map[string]ID{}
		for _, p := range []string{"at 3000", "at 2262-04-12", "at Unix(MaxInt64,0)", "at Unix(1<<62,0)", "in MaxInt64", "in 250 years",
			"in -1h", "in MinInt64", "at year 1", "at zero"} {
			ids[p] = h.schedule("local://r", 0, p)
		}
		raID, err := h.e.Schedule(bg, Message{Dest: "ra://x", Payload: []byte("retry-after MaxInt64")})
		require.NoError(t, err)
		h.settle()
		// assert, not require: every case reports.
		for _, p := range []string{"at 3000", "at 2262-04-12", "at Unix(MaxInt64,0)", "at Unix(1<<62,0)", "in MaxInt64", "in 250 years"} {
			assert.Equal(t, []int{1}, calls[p], "%s: called once, never again at once", p)
			info, err := h.e.Get(bg, ids[p])
			if !assert.NoError(t, err, "%s: not a dead letter", p) {
				continue
			}
			assert.Equal(t, StateDead, info.State, "%s: a retry past the latest time held is a dead letter", p)
			assert.Contains(t, info.Reason, "2262-01-01", "%s: the reason names the latest time held", p)
			r, _ := deadReasons.Load(ids[p])
			assert.Contains(t, r, "2262-01-01", "%s: the DeadLetter event names the latest time held", p)
		}
		for _, p := range []string{"in -1h", "in MinInt64", "at year 1", "at zero"} {
			assert.Equal(t, []int{1, 2}, calls[p], "%s: a past retry time means now", p)
		}
		info, err := h.e.Get(bg, raID)
		require.NoError(t, err)
		require.Equal(t, StateDead, info.State, "a transport's Retry-After past the latest time held dead-letters")
		require.Contains(t, info.Reason, "2262-01-01")
	})
}

// retryAfterSender asks for a retry after MaxInt64.
type retryAfterSender struct{}

func (retryAfterSender) Send(_ context.Context, batch []transport.Envelope, out []transport.Outcome) {
	for i := range batch {
		out[i] = transport.Retry(errors.New("come back much later"), math.MaxInt64)
	}
}
func (retryAfterSender) Validate(transport.Destination) error { return nil }
func (retryAfterSender) Close() error                         { return nil }

// TestCatalogueBackoffNearTheEnd: exponential backoff at the largest
// allowed delays, and a clock near the latest time held, dead-letter with
// the reason once the next retry would pass it; nothing overflows.
func TestCatalogueBackoffNearTheEnd(t *testing.T) {
	forModes(t, func(t *testing.T, mode string) {
		fail := func(context.Context, *Delivery) error { return errors.New("down") }
		h := newHarness(t, mode, Options{Queues: []Queue{{Name: "slow", Handler: fail,
			Retry: RetryPolicy{Base: MaxRetryDelay, Max: MaxRetryDelay, MaxAttempts: -1, Jitter: -1}}}})
		id := h.schedule("local://slow", 0, "x")
		h.settle()
		for attempt := 1; attempt <= 2; attempt++ {
			info, err := h.e.Get(bg, id)
			require.NoError(t, err)
			require.Equal(t, StatePending, info.State)
			require.Equal(t, attempt, info.Attempts)
			require.True(t, info.Message.Due.Equal(h.clk.Now().Add(MaxRetryDelay)), "attempt %d: next due %s", attempt, info.Message.Due.UTC())
			h.advance(MaxRetryDelay)
		}
		info, err := h.e.Get(bg, id)
		require.NoError(t, err)
		require.Equal(t, StateDead, info.State, "2226 + 100 years is past 2262: dead, not wrapped")
		require.Equal(t, 3, info.Attempts)
		require.Contains(t, info.Reason, "2262-01-01")

		// Doubling from 1ns for hundreds of attempts stays at Max.
		p := RetryPolicy{Base: 1, Max: MaxRetryDelay, Jitter: 1}
		for _, a := range []uint32{1, 62, 63, 64, 100, 1000, math.MaxUint32} {
			d := p.delay(a)
			require.GreaterOrEqual(t, d, time.Duration(0), "attempt %d", a)
			require.LessOrEqual(t, d, 2*MaxRetryDelay, "attempt %d", a)
		}
	})
}

// TestCatalogueClockNearTheEnd: with the clock a day before the latest time
// held, a retry two days out dead-letters with the reason, and scheduling
// past the end is refused.
func TestCatalogueClockNearTheEnd(t *testing.T) {
	forModes(t, func(t *testing.T, mode string) {
		h := newHarness(t, mode, Options{})
		h.clk.Advance(store.MaxTime.Add(-24 * time.Hour).Sub(h.clk.Now()))
		require.NoError(t, h.e.Register(Queue{Name: "q", Handler: func(context.Context, *Delivery) error { return errors.New("down") },
			Retry: RetryPolicy{Delays: []time.Duration{48 * time.Hour}}}))
		_, err := h.e.ScheduleIn(bg, 48*time.Hour, Message{Dest: "local://q"})
		require.ErrorIs(t, err, ErrInvalid)
		require.Contains(t, err.Error(), "2262-01-01")
		id := h.schedule("local://q", time.Hour, "x")
		h.advance(time.Hour)
		info, err := h.e.Get(bg, id)
		require.NoError(t, err)
		require.Equal(t, StateDead, info.State)
		require.Contains(t, info.Reason, "2262-01-01")
	})
}

// TestCatalogueRescheduleWithinABucketListsOnce: moving a pending message
// to a new due time close to its old one (the same ~134 ms scan bucket of
// the memory store, next to another message of its shard), by Reschedule
// or by a retry, must not make List or Summary show it twice. Found by
// TestModel.
func TestCatalogueRescheduleWithinABucketListsOnce(t *testing.T) {
	forModes(t, func(t *testing.T, mode string) {
		// One worker: the two come due together at the end, and the
		// order they are handled in is only due order for one handler at
		// a time (with more, 3 runs in 200 saw them swapped).
		h := newHarness(t, mode, Options{Shards: 1, Queues: []Queue{{Name: "q", Parallelism: 1}}})
		// The start of a memory-store bucket an hour ahead.
		base := (t0.Add(time.Hour).UnixNano()/memstore.BucketWidth + 1) * memstore.BucketWidth
		at := func(ms int) time.Time { return time.Unix(0, base+int64(ms)*int64(time.Millisecond)) }
		_, err := h.e.Schedule(bg, Message{Dest: "local://q", Due: at(0), Payload: []byte("neighbour")})
		require.NoError(t, err)
		id, err := h.e.Schedule(bg, Message{Dest: "local://q", Due: at(1), Payload: []byte("moved")})
		require.NoError(t, err)
		require.NoError(t, h.e.Reschedule(bg, id, at(2)))
		page, _, err := h.e.List(bg, ListQuery{})
		require.NoError(t, err)
		var got []string
		for _, in := range page {
			got = append(got, fmt.Sprintf("%s@%dms", in.Message.Payload, (in.Message.Due.UnixNano()-base)/int64(time.Millisecond)))
		}
		require.Equal(t, []string{"neighbour@0ms", "moved@2ms"}, got)
		sum, err := h.e.Summary(bg, time.Hour, 3)
		require.NoError(t, err)
		require.EqualValues(t, 2, sum.Total)
		// A retry due in the same bucket (RetryIn(0) from a message due
		// now) must not duplicate it either.
		var calls atomic.Int32
		require.NoError(t, h.e.Register(Queue{Name: "again", Handler: func(_ context.Context, d *Delivery) error {
			if calls.Add(1) == 1 {
				return RetryIn(time.Hour, nil)
			}
			return nil
		}}))
		_, err = h.e.Schedule(bg, Message{Dest: "local://again", Due: at(3), Payload: []byte("retried")})
		require.NoError(t, err)
		h.advance(time.Unix(0, base).Sub(h.clk.Now()) + 3*time.Millisecond) // "retried" fires and asks for now+1h
		page, _, err = h.e.List(bg, ListQuery{})
		require.NoError(t, err)
		require.Len(t, page, 1, "only the retried message is pending")
		h.advance(2 * time.Hour)
		require.Equal(t, []string{"neighbour", "moved"}, payloads(h.deliveries()))
	})
}
