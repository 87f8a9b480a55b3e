package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	gonats "github.com/nats-io/nats.go"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/hourglassmq/hourglass/transport"
	"github.com/hourglassmq/hourglass/transport/kafka"
	"github.com/hourglassmq/hourglass/transport/nats"
	"github.com/hourglassmq/hourglass/transport/webhook"
)

// target is where a run's messages go, and the receiver that watches them
// arrive there and checks each one.
type target struct {
	dest  string
	reg   *transport.Registry // nil for the local queue
	stops []func()            // run in reverse order by close
}

func (t *target) close() {
	for i := len(t.stops) - 1; i >= 0; i-- {
		t.stops[i]()
	}
}

const (
	natsSubject = "hourglass.loadgen"
	kafkaTopic  = "hourglass-loadgen"
)

// startTarget sets up cfg.Target: an in-process receiver (httptest, an
// embedded nats-server, a kfake cluster), or, with -target-url, a connection
// to a real NATS or Kafka server that loadgen also consumes from. receive is
// called with each delivered payload.
func startTarget(ctx context.Context, cfg config, receive func(payload []byte)) (*target, error) {
	t := &target{}
	var err error
	switch cfg.Target {
	case "local":
		t.dest = "local://" + queueName
		return t, nil
	case "http":
		err = t.startHTTP(receive)
	case "nats":
		err = t.startNATS(ctx, cfg.TargetURL, receive)
	case "kafka":
		err = t.startKafka(cfg.TargetURL, receive)
	default:
		err = fmt.Errorf("unknown target %q", cfg.Target)
	}
	if err != nil {
		t.close()
		return nil, fmt.Errorf("target %s: %w", cfg.Target, err)
	}
	return t, nil
}

// startHTTP runs an httptest receiver and the webhook sender aimed at it.
func (t *target) startHTTP(receive func([]byte)) error {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		receive(body)
		w.WriteHeader(http.StatusNoContent)
	}))
	t.stops = append(t.stops, srv.Close)
	u, err := url.Parse(srv.URL)
	if err != nil {
		return err
	}
	s, err := webhook.New(webhook.Options{AllowedHosts: []string{u.Host}})
	if err != nil {
		return err
	}
	t.reg = transport.NewRegistry()
	t.stops = append(t.stops, func() { _ = t.reg.Close() })
	if err := t.reg.Register(s, "http"); err != nil {
		return err
	}
	t.dest = srv.URL + "/loadgen"
	return nil
}

// startNATS publishes to core NATS subject natsSubject, on an embedded
// server unless url names a real one, and subscribes to it to check.
func (t *target) startNATS(ctx context.Context, url string, receive func([]byte)) error {
	if url == "" {
		srv, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, NoLog: true, NoSigs: true})
		if err != nil {
			return err
		}
		go srv.Start()
		if !srv.ReadyForConnections(10 * time.Second) {
			srv.Shutdown()
			return errors.New("embedded nats-server did not start")
		}
		t.stops = append(t.stops, func() { srv.Shutdown(); srv.WaitForShutdown() })
		url = srv.ClientURL()
	}
	nc, err := gonats.Connect(url)
	if err != nil {
		return err
	}
	t.stops = append(t.stops, nc.Close)
	sub, err := nc.Subscribe(natsSubject, func(m *gonats.Msg) { receive(m.Data) })
	if err != nil {
		return err
	}
	if err := sub.SetPendingLimits(-1, -1); err != nil { // loadgen must see every message
		return err
	}
	if err := nc.Flush(); err != nil {
		return err
	}
	s, err := nats.New(ctx, nats.Options{URL: url})
	if err != nil {
		return err
	}
	t.reg = transport.NewRegistry()
	t.stops = append(t.stops, func() { _ = t.reg.Close() })
	if err := t.reg.Register(s, "nats"); err != nil {
		return err
	}
	t.dest = "nats://" + natsSubject
	return nil
}

// startKafka produces to kafkaTopic, on an in-process kfake cluster unless
// seeds names a real one, and consumes it to check.
func (t *target) startKafka(seeds string, receive func([]byte)) error {
	addrs := []string{seeds}
	if seeds == "" {
		c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(1, kafkaTopic))
		if err != nil {
			return err
		}
		t.stops = append(t.stops, c.Close)
		addrs = c.ListenAddrs()
	}
	// A fresh in-process topic is read from its start; on a real cluster,
	// from the first record stamped at or after now: unlike "the end", that
	// does not depend on when the consumer first asks.
	start := kgo.NewOffset().AtStart()
	if seeds != "" {
		start = kgo.NewOffset().AfterMilli(time.Now().UnixMilli())
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(addrs...), kgo.ConsumeTopics(kafkaTopic), kgo.ConsumeResetOffset(start))
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ctx.Err() == nil {
			cl.PollFetches(ctx).EachRecord(func(r *kgo.Record) { receive(r.Value) })
		}
	}()
	t.stops = append(t.stops, func() { cancel(); <-done; cl.Close() })
	s, err := kafka.New(kafka.Options{Seeds: addrs})
	if err != nil {
		return err
	}
	t.reg = transport.NewRegistry()
	t.stops = append(t.stops, func() { _ = t.reg.Close() })
	if err := t.reg.Register(s, "kafka"); err != nil {
		return err
	}
	t.dest = "kafka://" + kafkaTopic
	return nil
}
