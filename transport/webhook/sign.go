package webhook

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Errors returned by Verify.
var (
	// ErrNoSignature: the signature header is missing or has no t or v1.
	ErrNoSignature = errors.New("webhook: missing or malformed signature header")
	// ErrBadSignature: no v1 matches the body under the secret.
	ErrBadSignature = errors.New("webhook: signature mismatch")
	// ErrStaleSignature: the signature's timestamp is outside the tolerance.
	ErrStaleSignature = errors.New("webhook: signature timestamp outside tolerance")
	// ErrEmptySecret: an empty secret signs nothing an attacker could not
	// sign too, so it is refused on both sides.
	ErrEmptySecret = errors.New("webhook: empty signing secret")
)

// Signature returns the hex HMAC-SHA256 of "<t>.<id>.<body>" under secret:
// the v1 value of the Hourglass-Signature header.
func Signature(secret []byte, t int64, id string, body []byte) string {
	var buf [sha256.Size]byte
	return hex.EncodeToString(sign(buf[:0], secret, t, id, body))
}

func sign(dst, secret []byte, t int64, id string, body []byte) []byte {
	m := hmac.New(sha256.New, secret)
	var num [20]byte
	m.Write(strconv.AppendInt(num[:0], t, 10))
	m.Write([]byte{'.'})
	m.Write([]byte(id))
	m.Write([]byte{'.'})
	m.Write(body)
	return m.Sum(dst)
}

// signatureHeader formats "t=<t>,v1=<sig>[,v1=<sig>…]", one v1 per secret.
func signatureHeader(secrets [][]byte, t int64, id string, body []byte) string {
	var b strings.Builder
	b.Grow(16 + len(secrets)*(4+2*sha256.Size))
	b.WriteString("t=")
	b.WriteString(strconv.FormatInt(t, 10))
	var buf [sha256.Size]byte
	var hx [2 * sha256.Size]byte
	for _, sec := range secrets {
		b.WriteString(",v1=")
		hex.Encode(hx[:], sign(buf[:0], sec, t, id, body))
		b.Write(hx[:])
	}
	return b.String()
}

// Verify checks a Hourglass-Signature header value against the message ID
// (the Hourglass-Id header) and the raw body, for receivers. It accepts the
// header if any v1 entry matches under secret and its timestamp is within
// tolerance of now (a tolerance ≤ 0 skips the time check; 5 minutes is a
// sensible value). The comparison is constant-time.
func Verify(secret []byte, header, id string, body []byte, now time.Time, tolerance time.Duration) error {
	if len(secret) == 0 {
		return ErrEmptySecret
	}
	var (
		t     int64
		haveT bool
		sigs  []string
	)
	for _, part := range strings.Split(header, ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(part), "=")
		if !ok {
			continue
		}
		switch k {
		case "t":
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil {
				return fmt.Errorf("%w: bad timestamp %q", ErrNoSignature, v)
			}
			t, haveT = n, true
		case "v1":
			sigs = append(sigs, v)
		}
	}
	if !haveT || len(sigs) == 0 {
		return ErrNoSignature
	}
	var buf [sha256.Size]byte
	want := sign(buf[:0], secret, t, id, body)
	matched := false
	for _, s := range sigs {
		got, err := hex.DecodeString(s)
		if err == nil && hmac.Equal(got, want) {
			matched = true
		}
	}
	if !matched {
		return ErrBadSignature
	}
	if tolerance > 0 {
		if d := now.Sub(time.Unix(t, 0)); d > tolerance || d < -tolerance {
			return fmt.Errorf("%w: signed %v ago, tolerance %v", ErrStaleSignature, d.Round(time.Second), tolerance)
		}
	}
	return nil
}
