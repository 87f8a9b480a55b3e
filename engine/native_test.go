package engine

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/hourglassmq/hourglass/transport"
	"github.com/stretchr/testify/require"
)

// fakeNative is a fakeSender that schedules targets starting with "n"
// natively: held maps ID -> envelope of each pending broker schedule.
type fakeNative struct {
	fakeSender
	nmu  sync.Mutex
	held map[string]transport.Envelope
	lost map[string]bool
	nenv []transport.Envelope // every ScheduleNative envelope
}

func (f *fakeNative) Native(d transport.Destination) bool {
	return len(d.Target) > 0 && d.Target[0] == 'n'
}

func (f *fakeNative) ScheduleNative(ctx context.Context, batch []transport.Envelope, out []transport.Outcome) {
	f.nmu.Lock()
	defer f.nmu.Unlock()
	for i, e := range batch {
		e.Payload = append([]byte(nil), e.Payload...)
		f.nenv = append(f.nenv, e)
		switch string(e.Payload) {
		case "refuse":
			out[i] = transport.Retry(errors.New("broker down"), 0)
		case "lose": // the first hand-off is lost (as with a crash before the ack)
			if f.lost[e.ID] {
				f.held[e.ID] = e
			}
			f.lost[e.ID] = true
			out[i] = transport.Delivered()
		default:
			f.held[e.ID] = e
			out[i] = transport.Delivered()
		}
	}
}

func (f *fakeNative) CancelNative(ctx context.Context, id string, d transport.Destination) (bool, error) {
	f.nmu.Lock()
	defer f.nmu.Unlock()
	_, ok := f.held[id]
	delete(f.held, id)
	return ok, nil
}

func (f *fakeNative) heldEnv(id ID) (transport.Envelope, bool) {
	f.nmu.Lock()
	defer f.nmu.Unlock()
	e, ok := f.held[id.String()]
	return e, ok
}

func TestNativeScheduling(t *testing.T) {
	forModes(t, func(t *testing.T, mode string) {
		fn := &fakeNative{held: map[string]transport.Envelope{}, lost: map[string]bool{}}
		reg := transport.NewRegistry()
		require.NoError(t, reg.Register(fn, "fake"))
		h := newHarness(t, mode, Options{Transports: reg, Retry: RetryPolicy{Jitter: -1}})
		e := h.e

		// Handed over: due more than NativeMinLead (1 s) ahead.
		id, err := e.ScheduleIn(bg, time.Hour, Message{Dest: "fake://n1", Payload: []byte("p"), Key: "k1",
			Headers: []Header{{Key: "X-A", Value: "1"}}})
		require.NoError(t, err)
		env, ok := fn.heldEnv(id)
		require.True(t, ok)
		require.Equal(t, 1, env.Attempt)
		require.True(t, env.Fired.IsZero())
		require.True(t, env.Due.Equal(t0.Add(time.Hour)))
		require.Equal(t, []transport.Header{{Key: "X-A", Value: "1"}}, env.Headers)
		require.Equal(t, "k1", env.Key)
		info, err := e.Get(bg, id)
		require.NoError(t, err)
		require.True(t, info.Native)
		require.Equal(t, []Header{{Key: "X-A", Value: "1"}}, info.Message.Headers)

		// Held by the engine: too near, has Expires, not a native target.
		near := h.schedule("fake://n2", time.Second, "near")
		exp, err := e.ScheduleIn(bg, time.Hour, Message{Dest: "fake://n3", Expires: t0.Add(3 * time.Hour)})
		require.NoError(t, err)
		plain := h.schedule("fake://x", time.Hour, "plain")
		for _, i := range []ID{near, exp, plain} {
			info, err := e.Get(bg, i)
			require.NoError(t, err)
			require.False(t, info.Native)
			_, ok := fn.heldEnv(i)
			require.False(t, ok)
		}

		// Refused by the broker: held by the engine under a new ID.
		fb := h.schedule("fake://n4", time.Hour, "refuse")
		info, err = e.Get(bg, fb)
		require.NoError(t, err)
		require.False(t, info.Native)
		require.Equal(t, "refuse", string(info.Message.Payload))
		require.NotEqual(t, fb.String(), fn.nenv[len(fn.nenv)-1].ID, "the refused shadow's ID is not the caller's")
		require.EqualValues(t, 1, e.Stats().NativeScheduled)

		// Reschedule: the broker's schedule moves with the same ID.
		require.NoError(t, e.Reschedule(bg, id, t0.Add(2*time.Hour)))
		env, _ = fn.heldEnv(id)
		require.True(t, env.Due.Equal(t0.Add(2*time.Hour)))
		// Cancel: found at the broker.
		c := h.schedule("fake://n5", time.Hour, "c")
		require.NoError(t, e.Cancel(bg, c))
		_, ok = fn.heldEnv(c)
		require.False(t, ok)
		_, err = e.Get(bg, c)
		require.ErrorIs(t, err, ErrNotFound)
		// Cancel after the broker fired (its schedule is gone).
		gone := h.schedule("fake://n6", time.Hour, "g")
		fn.nmu.Lock()
		delete(fn.held, gone.String())
		fn.nmu.Unlock()
		err = e.Cancel(bg, gone)
		require.ErrorIs(t, err, ErrNativeFired)
		require.ErrorIs(t, err, ErrNotFound)

		if mode == "durable" {
			// A shadow whose hand-off never reached the broker: retrying
			// with its key hands it over again.
			lost, err := e.ScheduleIn(bg, time.Hour, Message{Dest: "fake://n7", Key: "k7", Payload: []byte("lose")})
			require.NoError(t, err)
			_, ok := fn.heldEnv(lost)
			require.False(t, ok)
			h.restart()
			e = h.e
			again, err := e.ScheduleIn(bg, time.Hour, Message{Dest: "fake://n7", Key: "k7", Payload: []byte("lose")})
			require.ErrorIs(t, err, ErrDuplicate)
			require.Equal(t, lost, again)
			require.Len(t, fn.nenv, 7)
			require.Equal(t, lost.String(), fn.nenv[6].ID, "handed over again")
			require.NoError(t, e.Cancel(bg, lost))
		}

		// Due times pass: the engine sends what it holds, never a shadow.
		h.advance(2*time.Hour + time.Second)
		sent := map[string]bool{}
		for _, s := range fn.sent() {
			sent[s.ID] = true
		}
		require.Equal(t, map[string]bool{near.String(): true, exp.String(): true, plain.String(): true, fb.String(): true}, sent)
		st := e.Stats()
		if mode == "memory" {
			require.EqualValues(t, 2, st.NativeFired) // id at its due time, gone at Cancel
		} else {
			require.EqualValues(t, 1, st.NativeFired) // id (gone's Cancel was before the restart)
		}
		_, err = e.Get(bg, id)
		require.ErrorIs(t, err, ErrNotFound)
		require.Zero(t, st.PendingTotal)
	})
}

// TestNativeMinLeadNegativeDisables: a negative NativeMinLead holds
// everything in the engine.
func TestNativeMinLeadNegativeDisables(t *testing.T) {
	fn := &fakeNative{held: map[string]transport.Envelope{}, lost: map[string]bool{}}
	reg := transport.NewRegistry()
	require.NoError(t, reg.Register(fn, "fake"))
	h := newHarness(t, "memory", Options{Transports: reg, NativeMinLead: -1})
	id := h.schedule("fake://n1", time.Hour, "p")
	info, err := h.e.Get(bg, id)
	require.NoError(t, err)
	require.False(t, info.Native)
	h.advance(time.Hour)
	require.Len(t, fn.sent(), 1)
	require.Empty(t, fn.nenv)
}
