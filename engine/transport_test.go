package engine

import (
	"context"
	"errors"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hourglassmq/hourglass/transport"
	"github.com/stretchr/testify/require"
)

// fakeSender records envelopes and answers by payload.
type fakeSender struct {
	mu   sync.Mutex
	envs []transport.Envelope
}

func (f *fakeSender) Send(ctx context.Context, batch []transport.Envelope, out []transport.Outcome) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for i, e := range batch {
		e.Payload = append([]byte(nil), e.Payload...)
		f.envs = append(f.envs, e)
		switch string(e.Payload) {
		case "retry":
			if e.Attempt == 1 {
				out[i] = transport.Retry(errors.New("503"), 3*time.Second)
				continue
			}
			out[i] = transport.Delivered()
		case "reject":
			out[i] = transport.Reject(errors.New("410 gone"))
		case "forgot":
			// leaves the zero Outcome: a retry, never a loss
			if e.Attempt > 1 {
				out[i] = transport.Delivered()
			}
		default:
			out[i] = transport.Delivered()
		}
	}
}

func (f *fakeSender) Validate(d transport.Destination) error {
	if strings.HasPrefix(d.Target, "bad") {
		return &transport.DestinationError{Dest: d.Raw, Err: transport.ErrBadDestination, Reason: "bad target"}
	}
	return nil
}

func (f *fakeSender) Close() error { return nil }

func (f *fakeSender) sent() []transport.Envelope {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]transport.Envelope(nil), f.envs...)
}

func TestTransportOutcomes(t *testing.T) {
	forModes(t, func(t *testing.T, mode string) {
		fs := &fakeSender{}
		reg := transport.NewRegistry()
		require.NoError(t, reg.Register(fs, "fake"))
		h := newHarness(t, mode, Options{Transports: reg, Retry: RetryPolicy{Jitter: -1}})
		_, err := h.e.Schedule(bg, Message{Dest: "fake://bad-target"})
		require.ErrorIs(t, err, ErrInvalid)
		_, err = h.e.Schedule(bg, Message{Dest: "nope://x"})
		require.ErrorIs(t, err, transport.ErrUnknownScheme)
		ids := map[string]ID{}
		for _, p := range []string{"ok", "retry", "reject", "forgot"} {
			id, err := h.e.Schedule(bg, Message{Dest: "fake://t", Payload: []byte(p), Key: "k-" + p,
				Headers: []Header{{Key: "X-Trace", Value: p}}})
			require.NoError(t, err)
			ids[p] = id
		}
		h.settle()
		sent := fs.sent()
		require.Len(t, sent, 4)
		for _, e := range sent {
			require.Equal(t, 1, e.Attempt)
			require.Equal(t, ids[string(e.Payload)].String(), e.ID)
			require.Equal(t, "k-"+string(e.Payload), e.Key)
			require.Equal(t, []transport.Header{{Key: "X-Trace", Value: string(e.Payload)}}, e.Headers)
			require.False(t, e.Fired.Before(e.Due))
		}
		h.advance(time.Second) // "forgot" retries after the 1 s default backoff
		require.Len(t, fs.sent(), 5)
		h.advance(time.Second) // Retry-After 3 s beats the 1 s backoff
		require.Len(t, fs.sent(), 5)
		h.advance(time.Second)
		require.Len(t, fs.sent(), 6)
		st := h.e.Stats()
		require.EqualValues(t, 3, st.Delivered)
		require.EqualValues(t, 1, st.DeadLettered)
		info, err := h.e.Get(bg, ids["reject"])
		require.NoError(t, err)
		require.Equal(t, StateDead, info.State)
		require.Contains(t, info.Reason, "410")
	})
}

// TestNoBrokerSDKs keeps broker SDKs (franz-go included) and the cluster
// store out of the dependencies of the engine, the wal and the wheel.
func TestNoBrokerSDKs(t *testing.T) {
	for _, pkg := range []string{"engine", "wal", "wheel"} {
		out, err := exec.Command("go", "list", "-deps", "github.com/hourglassmq/hourglass/"+pkg).CombinedOutput()
		require.NoError(t, err, string(out))
		for _, dep := range strings.Fields(string(out)) {
			for _, banned := range []string{"github.com/nats-io/", "github.com/twmb/", "github.com/segmentio/kafka-go",
				"github.com/confluentinc/", "github.com/IBM/sarama", "github.com/Shopify/sarama",
				"github.com/hourglassmq/hourglass/transport/", "github.com/hourglassmq/hourglass/cluster"} {
				require.False(t, strings.HasPrefix(dep, banned), "%s depends on %s", pkg, dep)
			}
		}
	}
}
