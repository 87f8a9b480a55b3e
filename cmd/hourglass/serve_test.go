package main

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestDispatcher(t *testing.T) {
	for _, tc := range []struct {
		args   []string
		status int
		out    string // in stdout or stderr
	}{
		{nil, 2, "usage: hourglass <command>"},
		{[]string{"-h"}, 0, "serve    run an engine"},
		{[]string{"help"}, 0, "commands:"},
		{[]string{"help", "serve"}, 0, "usage: hourglass serve [flags]"},
		{[]string{"serve", "-h"}, 0, "-webhook-allow"},
		{[]string{"fly"}, 2, `unknown command "fly"`},
		{[]string{"serve", "-bogus"}, 2, "flag provided but not defined: -bogus"},
		{[]string{"serve", "extra"}, 2, `unexpected arguments ["extra"]`},
		{[]string{"serve", "-tls-cert", "c.pem"}, 2, "-tls-cert and -tls-key go together"},
		{[]string{"serve", "-mem", "-dir", "/tmp/x"}, 2, "-mem and -dir exclude each other"},
		{[]string{"serve", "-log-format", "xml"}, 2, `-log-format "xml"`},
		{[]string{"serve", "-config", "/nonexistent/hourglass.toml"}, 1, "config /nonexistent/hourglass.toml"},
	} {
		e, out, errs := testEnv(nil)
		require.Equal(t, tc.status, run(e, tc.args), "%q: %s%s", tc.args, out, errs)
		require.Contains(t, out.String()+errs.String(), tc.out, "%q", tc.args)
	}
}

func TestConfigFileAndFlags(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "hourglass.toml")
	require.NoError(t, os.WriteFile(file, []byte(`
addr = "127.0.0.1:9999"
shards = 4
tick = "2ms"
window = "30s"
read_header_timeout = "1s"
refresh = "3s"
[webhook]
allow = ["hooks.example.com", "*.svc.example.org"]
allow_nets = ["10.1.0.0/16"]
[kafka]
brokers = ["127.0.0.1:9092"]
`), 0o600))

	cfg, err := parseServe([]string{"-config", file, "-shards", "8", "-webhook-allow", "a.example.com,b.example.com"}, io.Discard)
	require.NoError(t, err)
	require.Equal(t, "127.0.0.1:9999", cfg.Addr, "from the file")
	require.Equal(t, 8, cfg.Shards, "the flag wins")
	require.Equal(t, 2*time.Millisecond, cfg.Tick)
	require.Equal(t, 30*time.Second, cfg.Window)
	require.Equal(t, time.Second, cfg.ReadHeaderTimeout)
	require.Equal(t, 3*time.Second, cfg.Refresh)
	require.Equal(t, 30*time.Second, cfg.ReadTimeout, "a default the file leaves alone")
	require.Equal(t, []string{"a.example.com", "b.example.com"}, cfg.Webhook.Allow, "a list flag replaces the file's list")
	require.Equal(t, []string{"10.1.0.0/16"}, cfg.Webhook.AllowNets)
	require.Equal(t, []string{"127.0.0.1:9092"}, cfg.Kafka.Brokers)

	require.NoError(t, os.WriteFile(file, []byte("adress = \"x\"\n[webhook]\nallowed = []\n"), 0o600))
	_, err = parseServe([]string{"-config", file}, io.Discard)
	require.ErrorContains(t, err, "unknown keys adress, webhook.allowed")

	def, err := parseServe(nil, io.Discard)
	require.NoError(t, err)
	require.Equal(t, "127.0.0.1:7070", def.Addr, "loopback by default")
	require.False(t, def.Memory, "durable by default")
}

func TestDataDir(t *testing.T) {
	d, err := dataDir(func(k string) string { return map[string]string{"XDG_DATA_HOME": "/srv/data", "HOME": "/home/u"}[k] })
	require.NoError(t, err)
	require.Equal(t, "/srv/data/hourglass", d)
	d, err = dataDir(func(k string) string { return map[string]string{"HOME": "/home/u"}[k] })
	require.NoError(t, err)
	require.Equal(t, "/home/u/.local/share/hourglass", d)
	_, err = dataDir(func(string) string { return "" })
	require.ErrorContains(t, err, "set -dir and -tokens")
}

func TestTokens(t *testing.T) {
	dir := t.TempDir()
	def := func() (string, error) { return filepath.Join(dir, "data", "tokens"), nil }
	noEnv := func(string) string { return "" }

	// A fresh machine: the default file is created, private, with two tokens.
	ts, src, err := loadTokens("", def, noEnv)
	require.NoError(t, err)
	require.True(t, src.created)
	path, _ := def()
	fi, err := os.Stat(path)
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o600), fi.Mode().Perm())
	require.Len(t, ts.sums, 2)
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	var adminTok string
	for _, l := range strings.Split(string(b), "\n") {
		if tok, ok := strings.CutPrefix(l, "admin "); ok {
			adminTok = tok
		}
	}
	require.Equal(t, roleAdmin, ts.lookup(adminTok))
	require.Zero(t, ts.lookup("admin"))
	_, src, err = loadTokens("", def, noEnv)
	require.NoError(t, err)
	require.False(t, src.created, "kept on the next start")

	write := func(body string, mode os.FileMode) string {
		p := filepath.Join(dir, "t")
		require.NoError(t, os.WriteFile(p, []byte(body), mode))
		require.NoError(t, os.Chmod(p, mode))
		return p
	}
	ts, _, err = loadTokens(write("# ops\nadmin aaaaaaaaaaaaaaaaaaaa\nread  rrrrrrrrrrrrrrrrrrrr\n", 0o600), def, noEnv)
	require.NoError(t, err)
	require.Equal(t, roleAdmin, ts.lookup("aaaaaaaaaaaaaaaaaaaa"))
	require.Equal(t, roleRead, ts.lookup("rrrrrrrrrrrrrrrrrrrr"))

	for _, tc := range []struct {
		body string
		mode os.FileMode
		err  string
	}{
		{"admin aaaaaaaaaaaaaaaaaaaa\n", 0o644, "open to other users (mode 0644): chmod 600"},
		{"root aaaaaaaaaaaaaaaaaaaa\n", 0o600, `t:1: want "admin TOKEN" or "read TOKEN"`},
		{"admin short\n", 0o600, "shorter than 16"},
		{"# nothing\n", 0o600, "holds no token"},
	} {
		_, _, err := loadTokens(write(tc.body, tc.mode), def, noEnv)
		require.ErrorContains(t, err, tc.err)
	}

	env := func(k string) string { return tokenVars()[k] }
	ts, src, err = loadTokens("", def, env)
	require.NoError(t, err)
	require.Equal(t, roleAdmin, ts.lookup(adminToken))
	require.Equal(t, roleRead, ts.lookup(readToken))
	require.Contains(t, src.desc, "$HOURGLASS_ADMIN_TOKEN")
	_, _, err = loadTokens(path, def, env)
	require.ErrorContains(t, err, "exclude each other")
}

// TestAPIThroughServe: tokens and roles in front of the admin handler, the
// dashboard's files without a token, and the engine's validation through
// serve's transports, with nothing stored by any refused call.
func TestAPIThroughServe(t *testing.T) {
	cfg := memConfig()
	cfg.Webhook.Allow = []string{"hooks.example.test"}
	cfg.MaxBody = 4096
	s := startTest(t, cfg, tokenVars())
	require.Contains(t, s.stdout.String(), "dashboard:  "+s.url)
	require.Contains(t, s.stdout.String(), "API:        "+s.url+"api/v1/")
	require.True(t, strings.HasPrefix(s.url, "http://127.0.0.1:"), s.url)

	st, out := s.call(t, "", "GET", "api/v1/health", "")
	require.Equal(t, http.StatusOK, st, "health needs no token")
	require.Equal(t, "ok", out["status"])
	// Ready once every shard has loaded its first window, which even an
	// empty memory store does just after Open, not before it returns.
	require.Eventually(t, func() bool {
		st, _ := s.call(t, "", "GET", "api/v1/ready", "")
		return st == http.StatusOK
	}, 20*time.Second, 5*time.Millisecond, "ready needs no token")
	for _, p := range []string{"", "app.js", "style.css"} {
		st, _ = s.call(t, "", "GET", p, "")
		require.Equal(t, http.StatusOK, st, "dashboard file %q needs no token", p)
	}

	msg := `{"dest":"https://hooks.example.test/orders","in":"1h","payload":"eyJvcmRlciI6N30="}`
	for _, tc := range []struct {
		name, token, method, path, body string
		status                          int
	}{
		{"no token", "", "GET", "api/v1/messages", "", 401},
		{"no token, info", "", "GET", "api/v1/info", "", 401},
		{"no token, write", "", "POST", "api/v1/messages", msg, 401},
		{"wrong token", "not-a-token-at-all-123", "GET", "api/v1/messages", "", 401},
		{"wrong token, write", "not-a-token-at-all-123", "POST", "api/v1/messages", msg, 401},
		{"read token on a write", readToken, "POST", "api/v1/messages", msg, 403},
		{"read token on a cancel", readToken, "DELETE", "api/v1/messages/0000000000002", "", 403},
		{"read token on a purge", readToken, "POST", "api/v1/dead/purge", `{"all":true}`, 403},
		{"unknown scheme", adminToken, "POST", "api/v1/messages", `{"dest":"kafka://orders"}`, 400},
		{"host not allowed", adminToken, "POST", "api/v1/messages", `{"dest":"https://evil.example.test/x"}`, 400},
		{"local queue", adminToken, "POST", "api/v1/messages", `{"dest":"local://emails"}`, 400},
		{"bad time", adminToken, "POST", "api/v1/messages", `{"dest":"https://hooks.example.test/x","due":"noon"}`, 400},
		{"malformed JSON", adminToken, "POST", "api/v1/messages", `{"dest":`, 400},
		{"oversize body", adminToken, "POST", "api/v1/messages", `{"dest":"https://hooks.example.test/x","payload":"` + strings.Repeat("A", 5000) + `"}`, 413},
	} {
		st, out := s.call(t, tc.token, tc.method, tc.path, tc.body)
		require.Equal(t, tc.status, st, "%s: %v", tc.name, out)
		require.NotEmpty(t, out["error"], tc.name)
	}
	st, out = s.call(t, "", "GET", "api/v1/messages", "")
	require.Equal(t, http.StatusUnauthorized, st)
	require.Equal(t, "unauthorized", out["code"])
	_, out = s.call(t, adminToken, "POST", "api/v1/messages", `{"dest":"https://evil.example.test/x"}`)
	require.Equal(t, []any{"hooks.example.test"}, out["allowed"])
	_, out = s.call(t, adminToken, "POST", "api/v1/messages", `{"dest":"kafka://orders"}`)
	require.Equal(t, []any{"http://", "https://"}, out["allowed"])

	// Nothing was stored by any of them.
	_, list := s.call(t, readToken, "GET", "api/v1/messages", "")
	require.Empty(t, list["messages"])
	require.Zero(t, s.eng.Stats().Scheduled)

	// The read token reads and sees a read-only dashboard; the admin token writes.
	_, info := s.call(t, readToken, "GET", "api/v1/info", "")
	require.Equal(t, true, info["read_only"])
	_, info = s.call(t, adminToken, "GET", "api/v1/info", "")
	require.Equal(t, false, info["read_only"])
	st, out = s.call(t, adminToken, "POST", "api/v1/messages", msg)
	require.Equal(t, http.StatusCreated, st, "%v", out)
	id := out["id"].(string)
	st, out = s.call(t, readToken, "GET", "api/v1/messages/"+id, "")
	require.Equal(t, http.StatusOK, st)
	require.Equal(t, "https://hooks.example.test/orders", out["dest"])
	st, _ = s.call(t, adminToken, "DELETE", "api/v1/messages/"+id, "")
	require.Equal(t, http.StatusOK, st)
}

// TestWebhookThroughServe: a receiver on loopback is reached when the
// allow-list names its IP and port, and refused (dead-lettered, nothing
// sent) when only a host name that resolves to loopback is allowed.
func TestWebhookThroughServe(t *testing.T) {
	got := make(chan string, 4)
	receiver := func() (*httptest.Server, *url.URL) {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			got <- r.URL.Path
			w.WriteHeader(http.StatusNoContent)
		}))
		u, err := url.Parse(srv.URL)
		require.NoError(t, err)
		return srv, u
	}
	byIP, ipURL := receiver()
	defer byIP.Close()
	byName, nameURL := receiver()
	defer byName.Close()

	cfg := memConfig()
	cfg.Webhook.Allow = []string{ipURL.Host, "localhost:" + nameURL.Port()}
	s := startTest(t, cfg, tokenVars())

	st, out := s.call(t, adminToken, "POST", "api/v1/messages", `{"dest":"`+byIP.URL+`/by-ip"}`)
	require.Equal(t, http.StatusCreated, st, "%v", out)
	select {
	case p := <-got:
		require.Equal(t, "/by-ip", p)
	case <-time.After(10 * time.Second):
		t.Fatal("the webhook did not arrive")
	}

	st, out = s.call(t, adminToken, "POST", "api/v1/messages", `{"dest":"http://localhost:`+nameURL.Port()+`/by-name"}`)
	require.Equal(t, http.StatusCreated, st, "the name is on the allow-list: %v", out)
	var dead []any
	require.Eventually(t, func() bool {
		_, page := s.call(t, adminToken, "GET", "api/v1/dead", "")
		dead = page["messages"].([]any)
		return len(dead) == 1
	}, 10*time.Second, 5*time.Millisecond)
	require.Contains(t, dead[0].(map[string]any)["reason"], "loopback address")
	require.Empty(t, got, "nothing reached the receiver by name")
}

// selfSigned writes a certificate for 127.0.0.1 and its key.
func selfSigned(t *testing.T) (certFile, keyFile string, pool *x509.CertPool) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "hourglass test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, IsCA: true, BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	require.NoError(t, err)
	kder, err := x509.MarshalECPrivateKey(key)
	require.NoError(t, err)
	dir := t.TempDir()
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	require.NoError(t, os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600))
	require.NoError(t, os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600))
	cert, err := x509.ParseCertificate(der)
	require.NoError(t, err)
	pool = x509.NewCertPool()
	pool.AddCert(cert)
	return certFile, keyFile, pool
}

func TestTLS(t *testing.T) {
	cert, key, pool := selfSigned(t)
	cfg := memConfig()
	cfg.TLSCert, cfg.TLSKey = cert, key
	s := startTest(t, cfg, tokenVars())
	require.True(t, strings.HasPrefix(s.url, "https://127.0.0.1:"), s.url)

	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr}).Get(s.url + "api/v1/health")
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.GreaterOrEqual(t, resp.TLS.Version, uint16(tls.VersionTLS12))

	plain := &http.Transport{}
	defer plain.CloseIdleConnections()
	resp, err = (&http.Client{Transport: plain}).Get("http://" + strings.TrimPrefix(s.url, "https://") + "api/v1/health")
	if err == nil {
		resp.Body.Close()
		require.NotEqual(t, http.StatusOK, resp.StatusCode, "plain HTTP is not served")
	}
}

// TestSlowAndIdleClientsAreCut: a client that never finishes its headers,
// and a keep-alive connection left idle, are closed by the server after
// their timeouts. The 10 s deadline only bounds a failing test.
func TestSlowAndIdleClientsAreCut(t *testing.T) {
	cfg := memConfig()
	cfg.ReadHeaderTimeout = 200 * time.Millisecond
	cfg.IdleTimeout = 200 * time.Millisecond
	s := startTest(t, cfg, tokenVars())
	addr := strings.TrimSuffix(strings.TrimPrefix(s.url, "http://"), "/")

	slow, err := net.Dial("tcp", addr)
	require.NoError(t, err)
	defer slow.Close()
	_, err = io.WriteString(slow, "GET /api/v1/health HTTP/1.1\r\nHost: x\r\n") // and never the blank line
	require.NoError(t, err)
	require.NoError(t, slow.SetReadDeadline(time.Now().Add(10*time.Second)))
	start := time.Now()
	_, err = io.ReadAll(slow)
	require.NoError(t, err, "the server closed the connection (EOF), not our deadline")
	require.Less(t, time.Since(start), 5*time.Second)

	idle, err := net.Dial("tcp", addr)
	require.NoError(t, err)
	defer idle.Close()
	_, err = io.WriteString(idle, "GET /api/v1/health HTTP/1.1\r\nHost: x\r\n\r\n")
	require.NoError(t, err)
	require.NoError(t, idle.SetReadDeadline(time.Now().Add(10*time.Second)))
	br := bufio.NewReader(idle)
	resp, err := http.ReadResponse(br, nil)
	require.NoError(t, err)
	_, err = io.Copy(io.Discard, resp.Body)
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	_, err = br.ReadByte()
	require.ErrorIs(t, err, io.EOF, "the idle keep-alive connection was closed")
}

// TestShutdownClosesTheStore: a durable serve stops accepting, closes its
// engine (the store opens again at once: Pebble's lock is released) and
// keeps what it acknowledged.
func TestShutdownClosesTheStore(t *testing.T) {
	cfg := defaultConfig()
	cfg.Dir = t.TempDir()
	cfg.Webhook.Allow = []string{"hooks.example.test"}
	s := startTest(t, cfg, tokenVars())
	require.Contains(t, s.stdout.String(), "durable, "+cfg.Dir)
	require.Eventually(t, func() bool {
		st, _ := s.call(t, "", "GET", "api/v1/ready", "")
		return st == http.StatusOK
	}, 20*time.Second, 5*time.Millisecond, "ready once every shard has loaded its window")
	_, info := s.call(t, readToken, "GET", "api/v1/info", "")
	require.Equal(t, "pebble", info["mode"])
	st, out := s.call(t, adminToken, "POST", "api/v1/messages", `{"dest":"https://hooks.example.test/x","in":"1h","key":"k-1"}`)
	require.Equal(t, http.StatusCreated, st, "%v", out)
	kept := out["id"].(string)

	require.NoError(t, s.stop())
	_, err := net.Dial("tcp", strings.TrimSuffix(strings.TrimPrefix(s.url, "http://"), "/"))
	require.Error(t, err, "no longer accepting")

	s2 := startTest(t, cfg, tokenVars())
	st, out = s2.call(t, adminToken, "GET", "api/v1/messages/"+kept, "")
	require.Equal(t, http.StatusOK, st, "acknowledged before the shutdown, there after it: %v", out)
	require.Equal(t, "pending", out["state"])
	require.Equal(t, "k-1", out["key"])
}

// TestSIGTERM runs serve as a real process (this test binary, see TestMain)
// and stops it with SIGTERM: it must drain, close the engine and exit 0.
func TestSIGTERM(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0])
	cmd.Env = append(os.Environ(),
		childArgs+"="+strings.Join([]string{"serve", "-addr", "127.0.0.1:0", "-dir", t.TempDir(), "-webhook-allow", "hooks.example.test"}, "\x1f"),
		envAdminTokens+"="+adminToken, envReadTokens+"="+readToken)
	stdout, err := cmd.StdoutPipe()
	require.NoError(t, err)
	stderr := &lockedBuffer{}
	cmd.Stderr = stderr
	require.NoError(t, cmd.Start())

	var base string
	sc := bufio.NewScanner(stdout)
	for sc.Scan() {
		if u, ok := strings.CutPrefix(strings.TrimSpace(sc.Text()), "dashboard:"); ok {
			base = strings.TrimSpace(u)
			break
		}
	}
	require.NotEmpty(t, base, "serve printed its URL; stderr: %s", stderr)
	go func() { _, _ = io.Copy(io.Discard, stdout) }()

	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	req, err := http.NewRequest("POST", base+"api/v1/messages", strings.NewReader(`{"dest":"https://hooks.example.test/x","in":"1h"}`))
	require.NoError(t, err)
	req.Header.Set("Authorization", "Bearer "+adminToken)
	resp, err := (&http.Client{Transport: tr}).Do(req)
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusCreated, resp.StatusCode)

	require.NoError(t, cmd.Process.Signal(syscall.SIGTERM))
	err = cmd.Wait()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		t.Fatalf("serve exited %d after SIGTERM; stderr:\n%s", ee.ExitCode(), stderr)
	}
	require.NoError(t, err)
	require.Contains(t, stderr.String(), "shutting down")
	require.Contains(t, stderr.String(), "engine: closed")
	require.Contains(t, stderr.String(), "serve: stopped cleanly")
}

// TestOperationsDocConfig: the sample config in docs/operations.md is one
// serve accepts, with the values it says.
func TestOperationsDocConfig(t *testing.T) {
	doc, err := os.ReadFile(filepath.Join("..", "..", "docs", "operations.md"))
	require.NoError(t, err)
	_, rest, ok := strings.Cut(string(doc), "```toml\n")
	require.True(t, ok, "a toml block")
	sample, _, ok := strings.Cut(rest, "```")
	require.True(t, ok)
	file := filepath.Join(t.TempDir(), "hourglass.toml")
	require.NoError(t, os.WriteFile(file, []byte(sample), 0o600))
	cfg, err := parseServe([]string{"-config", file}, io.Discard)
	require.NoError(t, err)
	require.Equal(t, "10.0.4.17:7070", cfg.Addr)
	require.Equal(t, "/var/lib/hourglass/store", cfg.Dir)
	require.Equal(t, 60*time.Second, cfg.ShutdownTimeout)
	require.Equal(t, "json", cfg.LogFormat)
	require.Equal(t, []string{"hooks.example.com", "*.svc.example.org"}, cfg.Webhook.Allow)
	require.Equal(t, []string{"10.20.0.0/16"}, cfg.Webhook.AllowNets)
	require.Equal(t, "nats://10.0.4.30:4222", cfg.NATS.URL)
	require.Equal(t, []string{"orders", "reminders"}, cfg.Kafka.Topics)
}

// TestMetricsThroughServe: /metrics needs a read or admin token, serves the
// engine's collector and the Go runtime's, and counts what serve's engine
// does (a webhook delivered to a receiver on loopback).
func TestMetricsThroughServe(t *testing.T) {
	got := make(chan string, 4)
	recv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got <- r.URL.Path
		w.WriteHeader(http.StatusNoContent)
	}))
	defer recv.Close()
	u, err := url.Parse(recv.URL)
	require.NoError(t, err)
	cfg := memConfig()
	cfg.Webhook.Allow = []string{u.Host}
	s := startTest(t, cfg, tokenVars())
	require.Contains(t, s.stdout.String(), "metrics:    "+s.url+"metrics (Prometheus; needs a read or admin token)")

	scrape := func(token string) (int, string) {
		req, err := http.NewRequest("GET", s.url+"metrics", nil)
		require.NoError(t, err)
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := s.client.Do(req)
		require.NoError(t, err)
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		require.NoError(t, err)
		return resp.StatusCode, string(b)
	}
	st, body := scrape("")
	require.Equal(t, http.StatusUnauthorized, st, body)
	st, _ = scrape("not-a-token-at-all-123")
	require.Equal(t, http.StatusUnauthorized, st)
	st, body = scrape(readToken)
	require.Equal(t, http.StatusOK, st)
	for _, want := range []string{
		`hourglass_messages_scheduled_total{dest="other"} 0` + "\n",
		`hourglass_store_info{kind="memory"} 1` + "\n",
		"hourglass_shards_attached ",
		"go_goroutines ",
	} {
		require.Contains(t, body, want)
	}

	st, out := s.call(t, adminToken, "POST", "api/v1/messages", `{"dest":"`+recv.URL+`/hook"}`)
	require.Equal(t, http.StatusCreated, st, "%v", out)
	select {
	case p := <-got:
		require.Equal(t, "/hook", p)
	case <-time.After(10 * time.Second):
		t.Fatal("the webhook did not arrive")
	}
	label := `{dest="http://` + u.Host + `"}`
	require.Eventually(t, func() bool {
		_, body = scrape(adminToken)
		return strings.Contains(body, "hourglass_messages_delivered_total"+label+" 1\n")
	}, 10*time.Second, 5*time.Millisecond, "the outcome is counted once committed")
	require.Contains(t, body, "hourglass_messages_scheduled_total"+label+" 1\n")
	require.Contains(t, body, "hourglass_messages_fired_total"+label+" 1\n")
	require.Contains(t, body, "hourglass_fire_lateness_seconds_count 1\n")
}

// TestRedactURL: the banner never shows a NATS password.
func TestRedactURL(t *testing.T) {
	require.Equal(t, "nats://10.0.4.30:4222", redactURL("nats://10.0.4.30:4222"))
	require.Equal(t, "nats://svc:xxxxx@10.0.4.30:4222", redactURL("nats://svc:s3cret@10.0.4.30:4222"))
	require.Equal(t, "nats://a:xxxxx@h1:4222,nats://h2:4222", redactURL("nats://a:b@h1:4222,nats://h2:4222"))
}
