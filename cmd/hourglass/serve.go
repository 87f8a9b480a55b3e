package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/hourglassmq/hourglass/admin"
	"github.com/hourglassmq/hourglass/engine"
	"github.com/hourglassmq/hourglass/metrics"
	"github.com/hourglassmq/hourglass/transport"
	"github.com/hourglassmq/hourglass/transport/kafka"
	"github.com/hourglassmq/hourglass/transport/nats"
	"github.com/hourglassmq/hourglass/transport/webhook"
)

// runServe is `hourglass serve`: parse, start, serve until ctx ends (a
// signal), then shut down gracefully.
func runServe(ctx context.Context, env *env, args []string) error {
	cfg, err := parseServe(args, env.stderr)
	if err != nil {
		return err
	}
	s, err := startServer(ctx, cfg, env)
	if err != nil {
		return err
	}
	return s.run(ctx)
}

// server is one running `hourglass serve`.
type server struct {
	cfg   Config
	log   *slog.Logger
	eng   *engine.Engine
	reg   *transport.Registry
	admin *admin.Handler
	http  *http.Server
	ln    net.Listener
	// url is the base URL the server answers on ("http://127.0.0.1:7070/").
	url string
}

func newLogger(cfg Config, w io.Writer) *slog.Logger {
	var lvl slog.Level
	_ = lvl.UnmarshalText([]byte(cfg.LogLevel)) // validated
	o := &slog.HandlerOptions{Level: lvl}
	if cfg.LogFormat == "json" {
		return slog.New(slog.NewJSONHandler(w, o))
	}
	return slog.New(slog.NewTextHandler(w, o))
}

// startServer opens everything serve needs, in order (tokens, transports,
// engine, listener), undoing what it opened if a later step fails, and
// prints where the dashboard and the API are.
func startServer(ctx context.Context, cfg Config, env *env) (_ *server, err error) {
	log := newLogger(cfg, env.stderr)
	// inData names a file of the default data directory, which is only
	// needed (and must only be found) when a default is used.
	inData := func(name string) (string, error) {
		d, err := dataDir(env.getenv)
		if err != nil {
			return "", err
		}
		return filepath.Join(d, name), nil
	}
	tokens, tsrc, err := loadTokens(cfg.Tokens, func() (string, error) { return inData("tokens") }, env.getenv)
	if err != nil {
		return nil, err
	}
	var tlsConf *tls.Config
	if cfg.TLSCert != "" {
		cert, err := tls.LoadX509KeyPair(cfg.TLSCert, cfg.TLSKey)
		if err != nil {
			return nil, fmt.Errorf("TLS: %w", err)
		}
		tlsConf = &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{cert}}
	}

	var undo []func()
	defer func() {
		if err != nil {
			for i := len(undo) - 1; i >= 0; i-- {
				undo[i]()
			}
		}
	}()
	reg, transports, err := buildTransports(ctx, cfg, env.getenv)
	if err != nil {
		return nil, err
	}
	undo = append(undo, func() { _ = reg.Close() })

	// Metrics: the engine's collector and the Go runtime's and process's,
	// on a registry of this server's own.
	promReg := prometheus.NewRegistry()
	promReg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	col, err := metrics.New(promReg, metrics.Options{})
	if err != nil {
		return nil, err
	}

	eo := engine.Options{Shards: cfg.Shards, Tick: cfg.Tick, Window: cfg.Window, Transports: reg, Logger: log, Events: col.Events()}
	store := "memory: NOTHING SURVIVES A RESTART"
	if !cfg.Memory {
		eo.Dir = cfg.Dir
		if eo.Dir == "" {
			if eo.Dir, err = inData("store"); err != nil {
				return nil, err
			}
		}
		if err := os.MkdirAll(eo.Dir, 0o700); err != nil {
			return nil, fmt.Errorf("store: %w", err)
		}
		store = "durable, " + eo.Dir
	}
	eng, err := engine.Open(ctx, eo)
	if err != nil {
		return nil, err
	}
	undo = append(undo, func() { _ = eng.Close() })
	col.Watch(eng)

	h := admin.New(eng, admin.Options{
		ReadOnly: cfg.ReadOnly, RefreshInterval: cfg.Refresh, MaxBody: cfg.MaxBody, MaxBatch: cfg.MaxBatch, Logger: log,
	})
	undo = append(undo, h.Close)
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(promReg, promhttp.HandlerOpts{
		ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn), ErrorHandling: promhttp.ContinueOnError,
	}))
	mux.Handle("/", h)

	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		return nil, fmt.Errorf("listen: %w", err)
	}
	scheme := "http"
	if tlsConf != nil {
		ln = tls.NewListener(ln, tlsConf)
		scheme = "https"
	}
	s := &server{
		cfg: cfg, log: log, eng: eng, reg: reg, admin: h, ln: ln,
		url: scheme + "://" + ln.Addr().String() + "/",
		http: &http.Server{
			Handler:           tokens.authenticate(mux),
			ReadHeaderTimeout: cfg.ReadHeaderTimeout,
			ReadTimeout:       cfg.ReadTimeout,
			WriteTimeout:      cfg.WriteTimeout,
			IdleTimeout:       cfg.IdleTimeout,
			MaxHeaderBytes:    64 << 10,
			ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
		},
	}

	w := env.stdout
	fmt.Fprintf(w, "hourglass serve\n")
	fmt.Fprintf(w, "  store:      %s (%d shards)\n", store, len(eng.Stats().Pending))
	fmt.Fprintf(w, "  transports: %s\n", transports)
	if tsrc.created {
		fmt.Fprintf(w, "  tokens:     %s (created now: one admin and one read token)\n", tsrc.desc)
	} else {
		fmt.Fprintf(w, "  tokens:     %s\n", tsrc.desc)
	}
	fmt.Fprintf(w, "  dashboard:  %s\n", s.url)
	fmt.Fprintf(w, "  API:        %sapi/v1/\n", s.url)
	fmt.Fprintf(w, "  metrics:    %smetrics (Prometheus; needs a read or admin token)\n", s.url)
	if tlsConf == nil && !isLoopback(ln.Addr()) {
		log.Warn("serve: listening beyond loopback without TLS: tokens and payloads cross the network in clear text; set -tls-cert and -tls-key", "addr", ln.Addr().String())
	}
	return s, nil
}

func isLoopback(a net.Addr) bool {
	ta, ok := a.(*net.TCPAddr)
	return ok && ta.IP.IsLoopback()
}

// buildTransports registers the configured senders and describes them.
func buildTransports(ctx context.Context, cfg Config, getenv func(string) string) (*transport.Registry, string, error) {
	reg := transport.NewRegistry()
	var desc []string
	fail := func(err error) (*transport.Registry, string, error) {
		_ = reg.Close()
		return nil, "", err
	}
	if w := cfg.Webhook; len(w.Allow) > 0 {
		secrets, err := webhookSecrets(w.Secrets, getenv)
		if err != nil {
			return fail(err)
		}
		s, err := webhook.New(webhook.Options{AllowedHosts: w.Allow, AllowedNets: w.AllowNets, Secrets: secrets, Timeout: w.Timeout})
		if err != nil {
			return fail(err)
		}
		if err := reg.Register(s, "http", "https"); err != nil {
			_ = s.Close()
			return fail(err)
		}
		d := "http, https to " + strings.Join(w.Allow, " ")
		if len(secrets) > 0 {
			d += fmt.Sprintf(", signed with %d secrets", len(secrets))
		}
		desc = append(desc, d)
	} else if len(w.AllowNets) > 0 || w.Secrets != "" {
		return fail(usageError{errors.New("webhook settings without -webhook-allow: no webhook destination would be allowed")})
	}
	if cfg.NATS.URL != "" {
		s, err := nats.New(ctx, nats.Options{URL: cfg.NATS.URL})
		if err != nil {
			return fail(err)
		}
		if err := reg.Register(s, "nats", "jetstream"); err != nil {
			_ = s.Close()
			return fail(err)
		}
		desc = append(desc, "nats, jetstream at "+redactURL(cfg.NATS.URL))
	}
	if k := cfg.Kafka; len(k.Brokers) > 0 {
		s, err := kafka.New(kafka.Options{Seeds: k.Brokers, Topics: k.Topics})
		if err != nil {
			return fail(err)
		}
		if err := reg.Register(s, "kafka"); err != nil {
			_ = s.Close()
			return fail(err)
		}
		desc = append(desc, "kafka at "+strings.Join(k.Brokers, ","))
	} else if len(k.Topics) > 0 {
		return fail(usageError{errors.New("-kafka-topics without -kafka brokers")})
	}
	if len(desc) == 0 {
		return reg, "none: every schedule is refused; set -webhook-allow, -nats or -kafka", nil
	}
	return reg, strings.Join(desc, "; "), nil
}

// webhookSecrets reads signing secrets from a file (one a line) or the
// environment (comma-separated), never from a flag.
func webhookSecrets(path string, getenv func(string) string) ([][]byte, error) {
	env := getenv(envWebhookSecrets)
	var lines []string
	switch {
	case path != "" && env != "":
		return nil, usageError{fmt.Errorf("-webhook-secrets and $%s exclude each other", envWebhookSecrets)}
	case path != "":
		b, err := os.ReadFile(path)
		if err != nil {
			return nil, fmt.Errorf("webhook secrets: %w", err)
		}
		lines = strings.Split(string(b), "\n")
	case env != "":
		lines = strings.Split(env, ",")
	}
	var out [][]byte
	for _, l := range lines {
		if l = strings.TrimSpace(l); l != "" && !strings.HasPrefix(l, "#") {
			out = append(out, []byte(l))
		}
	}
	if path != "" && len(out) == 0 {
		return nil, fmt.Errorf("webhook secrets file %s holds no secret", path)
	}
	return out, nil
}

// run serves until ctx ends, then shuts down: stop accepting, drain the
// requests in flight, stop the dashboard's refresher, drain the engine's
// deliveries and close its store, close the transports. Each drain shares
// one -shutdown-timeout.
func (s *server) run(ctx context.Context) error {
	errc := make(chan error, 1)
	go func() { errc <- s.http.Serve(s.ln) }()
	var serveErr error
	select {
	case serveErr = <-errc:
	case <-ctx.Done():
		s.log.Info("serve: shutting down: no new connections, draining requests and deliveries", "timeout", s.cfg.ShutdownTimeout)
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.cfg.ShutdownTimeout)
	defer cancel()
	httpErr := s.http.Shutdown(sctx)
	if httpErr != nil {
		httpErr = errors.Join(fmt.Errorf("serve: drain requests: %w", httpErr), s.http.Close())
	}
	if serveErr == nil {
		if err := <-errc; !errors.Is(err, http.ErrServerClosed) {
			serveErr = err
		}
	} else {
		serveErr = fmt.Errorf("serve: %w", serveErr)
	}
	s.admin.Close()
	var engErr error
	if err := s.eng.Shutdown(sctx); err != nil {
		engErr = fmt.Errorf("serve: close engine: %w", err)
	}
	var regErr error
	if err := s.reg.Close(); err != nil {
		regErr = fmt.Errorf("serve: close transports: %w", err)
	}
	err := errors.Join(serveErr, httpErr, engErr, regErr)
	if err == nil {
		s.log.Info("serve: stopped cleanly")
	}
	return err
}

// redactURL hides the password of a URL's user info (nats://user:pass@host)
// so that a banner or log line does not show it. Servers may be given as a
// comma-separated list; each is redacted.
func redactURL(raw string) string {
	parts := strings.Split(raw, ",")
	for i, p := range parts {
		if u, err := url.Parse(strings.TrimSpace(p)); err == nil && u.User != nil {
			parts[i] = u.Redacted()
		}
	}
	return strings.Join(parts, ",")
}
