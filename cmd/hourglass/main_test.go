package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

// childArgs, when set (NUL-separated), makes the test binary run hourglass
// with those arguments instead of the tests: TestSIGTERM signals a real
// process that way without building the command separately.
const childArgs = "HOURGLASS_TEST_CHILD_ARGS"

func TestMain(m *testing.M) {
	if a := os.Getenv(childArgs); a != "" {
		os.Exit(run(&env{stdout: os.Stdout, stderr: os.Stderr, getenv: os.Getenv}, strings.Split(a, "\x1f")))
	}
	goleak.VerifyTestMain(m)
}

// lockedBuffer is a bytes.Buffer safe for the logger's goroutines.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func testEnv(vars map[string]string) (*env, *lockedBuffer, *lockedBuffer) {
	out, errs := &lockedBuffer{}, &lockedBuffer{}
	return &env{stdout: out, stderr: errs, getenv: func(k string) string { return vars[k] }}, out, errs
}

// Tokens used by the in-process servers.
const (
	adminToken = "admin-token-0123456789"
	readToken  = "read-token-0123456789"
)

func tokenVars() map[string]string {
	return map[string]string{envAdminTokens: adminToken, envReadTokens: readToken}
}

// running is a server started in-process and serving until stop.
type running struct {
	*server
	stdout *lockedBuffer
	client *http.Client
	stop   func() error
}

// startTest starts serve with cfg on a free loopback port; the test's
// cleanup stops it and requires a clean shutdown.
func startTest(t *testing.T, cfg Config, vars map[string]string) *running {
	t.Helper()
	if cfg.Addr == DefaultAddr {
		cfg.Addr = "127.0.0.1:0"
	}
	e, out, _ := testEnv(vars)
	s, err := startServer(context.Background(), cfg, e)
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.run(ctx) }()
	var once sync.Once
	var runErr error
	tr := &http.Transport{}
	r := &running{server: s, stdout: out, client: &http.Client{Transport: tr}, stop: func() error {
		once.Do(func() {
			cancel()
			runErr = <-done
			tr.CloseIdleConnections()
		})
		return runErr
	}}
	t.Cleanup(func() { require.NoError(t, r.stop()) })
	return r
}

// memConfig is serve's defaults in memory mode.
func memConfig() Config {
	c := defaultConfig()
	c.Memory = true
	return c
}

// call makes an API request with a token ("" for none) and decodes the
// JSON answer.
func (r *running) call(t *testing.T, token, method, path, body string) (int, map[string]any) {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, r.url+path, rd)
	require.NoError(t, err)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := r.client.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	var out map[string]any
	raw, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	if strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") {
		require.NoError(t, json.Unmarshal(raw, &out), "%s", raw)
	}
	return resp.StatusCode, out
}
