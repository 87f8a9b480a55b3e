package webhook_test

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hourglassmq/hourglass/transport"
	"github.com/hourglassmq/hourglass/transport/internal/benchpair"
	"github.com/hourglassmq/hourglass/transport/webhook"
)

// Benchmark shape shared by the Sender and the bare client: batches of
// benchBatch messages of benchPayload bytes, benchConc requests in flight,
// to an in-process receiver that reads the body and answers 204.
const (
	benchBatch   = 256
	benchPayload = 256
	benchConc    = 32
)

func benchServer(b *testing.B) *httptest.Server {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.WriteHeader(http.StatusNoContent)
	}))
	b.Cleanup(srv.Close)
	return srv
}

func benchEnvelopes(dest string) []transport.Envelope {
	batch := make([]transport.Envelope, benchBatch)
	payload := bytes.Repeat([]byte("x"), benchPayload)
	now := time.Now()
	for i := range batch {
		batch[i] = transport.Envelope{
			ID: "msg-" + strconv.Itoa(i), Dest: dest, Attempt: 1, Due: now, Fired: now,
			Headers: []transport.Header{{Key: "Content-Type", Value: "application/json"}},
			Payload: payload,
		}
	}
	return batch
}

// senderRound returns one Sender batch, signed when signed.
func senderRound(b *testing.B, signed bool) func() {
	srv := benchServer(b)
	opts := webhook.Options{AllowedHosts: []string{srv.Listener.Addr().String()}, MaxConcurrency: benchConc}
	if signed {
		opts.Secrets = [][]byte{[]byte("bench-secret")}
	}
	s, err := webhook.New(opts)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = s.Close() })
	batch := benchEnvelopes(srv.URL + "/hook")
	out := make([]transport.Outcome, len(batch))
	return func() {
		s.Send(context.Background(), batch, out)
		for _, o := range out {
			if o.Status != transport.StatusDelivered {
				b.Fatal(o)
			}
		}
	}
}

// bareRound returns one batch of the same messages with the same headers
// posted through a plain net/http client tuned like the Sender's (same
// pool, same concurrency).
func bareRound(b *testing.B) func() {
	srv := benchServer(b)
	tr := &http.Transport{
		DialContext:         (&net.Dialer{Timeout: 10 * time.Second}).DialContext,
		MaxIdleConns:        4 * webhook.DefaultMaxConnsPerHost,
		MaxIdleConnsPerHost: webhook.DefaultMaxConnsPerHost,
		MaxConnsPerHost:     webhook.DefaultMaxConnsPerHost,
	}
	b.Cleanup(tr.CloseIdleConnections)
	client := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	batch := benchEnvelopes(srv.URL + "/hook")
	post := func(e *transport.Envelope) {
		req, err := http.NewRequest(http.MethodPost, e.Dest, bytes.NewReader(e.Payload))
		if err != nil {
			panic(err)
		}
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set(transport.HeaderID, e.ID)
		req.Header.Set(transport.HeaderAttempt, "1")
		req.Header.Set(transport.HeaderDue, transport.FormatTime(e.Due))
		req.Header.Set(transport.HeaderFired, transport.FormatTime(e.Fired))
		resp, err := client.Do(req)
		if err != nil {
			panic(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusNoContent {
			panic(resp.Status)
		}
	}
	return func() {
		var next atomic.Int64
		var wg sync.WaitGroup
		for range benchConc {
			wg.Go(func() {
				for i := int(next.Add(1) - 1); i < len(batch); i = int(next.Add(1) - 1) {
					post(&batch[i])
				}
			})
		}
		wg.Wait()
	}
}

// BenchmarkHTTP compares the webhook Sender (unsigned, and signed with
// HMAC-SHA256) with a bare net/http client posting the same messages, batch
// by batch alternately (benchpair.Run): read sender-msgs/s, bare-msgs/s and
// their ratio.
func BenchmarkHTTP(b *testing.B) {
	b.Run("unsigned", func(b *testing.B) { benchpair.Run(b, benchBatch, senderRound(b, false), bareRound(b)) })
	b.Run("signed", func(b *testing.B) { benchpair.Run(b, benchBatch, senderRound(b, true), bareRound(b)) })
}
