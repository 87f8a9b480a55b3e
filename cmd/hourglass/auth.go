package main

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strings"

	"github.com/hourglassmq/hourglass/admin"
)

// Bearer tokens with two roles. An admin token may do everything; a read
// token may read, and the admin handler refuses its writes (admin.WithReadOnly)
// and hides the dashboard's actions. Tokens are compared as SHA-256 digests
// in constant time, every stored token each time, so neither the timing nor
// an early exit tells which prefix matched.

type role uint8

const (
	roleRead role = iota + 1
	roleAdmin
)

// minTokenLen refuses tokens short enough to guess.
const minTokenLen = 16

// Environment variables that hold tokens (comma-separated for a rotation)
// and webhook secrets, as an alternative to files.
const (
	envAdminTokens    = "HOURGLASS_ADMIN_TOKEN"
	envReadTokens     = "HOURGLASS_READ_TOKEN"
	envWebhookSecrets = "HOURGLASS_WEBHOOK_SECRETS"
)

type tokenSet struct {
	sums  [][sha256.Size]byte
	roles []role
}

func (ts *tokenSet) add(tok string, r role) error {
	if len(tok) < minTokenLen {
		return fmt.Errorf("a token is shorter than %d characters", minTokenLen)
	}
	ts.sums = append(ts.sums, sha256.Sum256([]byte(tok)))
	ts.roles = append(ts.roles, r)
	return nil
}

// lookup returns the role of tok, or 0.
func (ts *tokenSet) lookup(tok string) role {
	sum := sha256.Sum256([]byte(tok))
	var found role
	for i := range ts.sums {
		if subtle.ConstantTimeCompare(sum[:], ts.sums[i][:]) == 1 {
			found = ts.roles[i]
		}
	}
	return found
}

// tokenSource says where the tokens came from, for the banner.
type tokenSource struct {
	desc    string
	created bool
}

// loadTokens reads the tokens from the environment, or from the file
// (path, or def() when path is empty), creating the default file with fresh
// tokens if it does not exist. Naming both a file and the environment is an
// error.
func loadTokens(path string, def func() (string, error), getenv func(string) string) (*tokenSet, tokenSource, error) {
	adminEnv, readEnv := getenv(envAdminTokens), getenv(envReadTokens)
	if adminEnv != "" || readEnv != "" {
		if path != "" {
			return nil, tokenSource{}, usageError{fmt.Errorf("-tokens and $%s/$%s exclude each other", envAdminTokens, envReadTokens)}
		}
		ts := &tokenSet{}
		for _, e := range []struct {
			v string
			r role
		}{{adminEnv, roleAdmin}, {readEnv, roleRead}} {
			for _, tok := range strings.Split(e.v, ",") {
				if tok = strings.TrimSpace(tok); tok != "" {
					if err := ts.add(tok, e.r); err != nil {
						return nil, tokenSource{}, fmt.Errorf("tokens from the environment: %w", err)
					}
				}
			}
		}
		return ts, tokenSource{desc: "$" + envAdminTokens + ", $" + envReadTokens}, nil
	}
	src := tokenSource{}
	if path == "" {
		var err error
		if path, err = def(); err != nil {
			return nil, src, err
		}
		created, err := createTokens(path)
		if err != nil {
			return nil, src, err
		}
		src.created = created
	}
	ts, err := readTokens(path)
	if err != nil {
		return nil, src, err
	}
	src.desc = path
	return ts, src, nil
}

// createTokens writes a new tokens file (mode 0600) with one admin and one
// read token, unless the file exists.
func createTokens(path string) (bool, error) {
	if _, err := os.Stat(path); err == nil {
		return false, nil
	} else if !errors.Is(err, fs.ErrNotExist) {
		return false, fmt.Errorf("tokens file: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return false, fmt.Errorf("tokens file: %w", err)
	}
	var b bytes.Buffer
	b.WriteString("# hourglass API tokens: one \"admin TOKEN\" or \"read TOKEN\" a line.\n")
	b.WriteString("# Send them as \"Authorization: Bearer TOKEN\". Keep this file mode 0600.\n")
	for _, r := range []string{"admin", "read"} {
		var raw [32]byte
		if _, err := rand.Read(raw[:]); err != nil {
			return false, fmt.Errorf("tokens file: %w", err)
		}
		fmt.Fprintf(&b, "%s %s\n", r, base64.RawURLEncoding.EncodeToString(raw[:]))
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return false, fmt.Errorf("tokens file: %w", err)
	}
	if _, err := f.Write(b.Bytes()); err != nil {
		f.Close()
		return false, fmt.Errorf("tokens file %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return false, fmt.Errorf("tokens file %s: %w", path, err)
	}
	return true, nil
}

// readTokens parses a tokens file, refusing one others can read.
func readTokens(path string) (*tokenSet, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("tokens file: %w", err)
	}
	if runtime.GOOS != "windows" && fi.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("tokens file %s is open to other users (mode %04o): chmod 600 it", path, fi.Mode().Perm())
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("tokens file: %w", err)
	}
	defer f.Close()
	ts := &tokenSet{}
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		fields := strings.Fields(line)
		r := map[string]role{"admin": roleAdmin, "read": roleRead}[fieldOr(fields, 0)]
		if len(fields) != 2 || r == 0 {
			return nil, fmt.Errorf("tokens file %s:%d: want \"admin TOKEN\" or \"read TOKEN\"", path, n)
		}
		if err := ts.add(fields[1], r); err != nil {
			return nil, fmt.Errorf("tokens file %s:%d: %w", path, n, err)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("tokens file %s: %w", path, err)
	}
	if len(ts.sums) == 0 {
		return nil, fmt.Errorf("tokens file %s holds no token", path)
	}
	return ts, nil
}

func fieldOr(f []string, i int) string {
	if i < len(f) {
		return f[i]
	}
	return ""
}

// isPublic says which paths need no token: the dashboard's static files
// (the same for everyone, holding no data; the page asks for a token before
// it calls the API) and the health and readiness probes. Anything else
// does, including paths the mux would only redirect.
func isPublic(path string) bool {
	switch path {
	case "/", "/index.html", "/app.js", "/style.css", "/api/v1/health", "/api/v1/ready":
		return true
	}
	return false
}

// authenticate checks the bearer token of every non-public request: 401
// without a valid one; a read token's request is marked read-only.
func (ts *tokenSet) authenticate(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if isPublic(r.URL.Path) && (r.Method == http.MethodGet || r.Method == http.MethodHead) {
			next.ServeHTTP(w, r)
			return
		}
		scheme, tok, _ := strings.Cut(r.Header.Get("Authorization"), " ")
		tok = strings.TrimSpace(tok)
		if !strings.EqualFold(scheme, "Bearer") || tok == "" {
			unauthorized(w, "missing bearer token: send \"Authorization: Bearer TOKEN\"")
			return
		}
		switch ts.lookup(tok) {
		case roleAdmin:
		case roleRead:
			r = r.WithContext(admin.WithReadOnly(r.Context()))
		default:
			unauthorized(w, "invalid token")
			return
		}
		next.ServeHTTP(w, r)
	})
}

func unauthorized(w http.ResponseWriter, msg string) {
	w.Header().Set("WWW-Authenticate", `Bearer realm="hourglass"`)
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusUnauthorized)
	_ = json.NewEncoder(w).Encode(map[string]string{"error": msg, "code": "unauthorized"})
}
