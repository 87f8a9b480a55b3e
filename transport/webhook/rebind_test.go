package webhook_test

import (
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"
	"golang.org/x/net/dns/dnsmessage"

	"github.com/hourglassmq/hourglass/transport"
	"github.com/hourglassmq/hourglass/transport/webhook"
)

// fakeDNS is a DNS server inside the test: a net.Resolver whose Dial returns
// one end of a net.Pipe, served by a goroutine that answers in DNS's TCP
// framing. Its n-th A query, whatever the name, is answered with
// answers[n] (the last one repeats), so a name can be re-bound between
// lookups as an attacker's server would. AAAA queries get no records.
type fakeDNS struct {
	answers []netip.Addr
	mu      sync.Mutex // guards n
	n       int
	wg      sync.WaitGroup
}

func newFakeDNS(t *testing.T, answers ...string) *fakeDNS {
	d := &fakeDNS{}
	for _, a := range answers {
		d.answers = append(d.answers, netip.MustParseAddr(a))
	}
	t.Cleanup(d.wg.Wait)
	return d
}

func (d *fakeDNS) resolver() *net.Resolver {
	return &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, network, address string) (net.Conn, error) {
		client, server := net.Pipe()
		d.wg.Add(1)
		go func() {
			defer d.wg.Done()
			defer server.Close()
			d.serve(server)
		}()
		return client, nil
	}}
}

func (d *fakeDNS) next() netip.Addr {
	d.mu.Lock()
	defer d.mu.Unlock()
	a := d.answers[min(d.n, len(d.answers)-1)]
	d.n++
	return a
}

// serve answers length-prefixed queries on c until the resolver hangs up.
func (d *fakeDNS) serve(c net.Conn) {
	for {
		var n [2]byte
		if _, err := io.ReadFull(c, n[:]); err != nil {
			return
		}
		msg := make([]byte, binary.BigEndian.Uint16(n[:]))
		if _, err := io.ReadFull(c, msg); err != nil {
			return
		}
		out, err := d.answer(msg)
		if err != nil {
			return
		}
		binary.BigEndian.PutUint16(n[:], uint16(len(out)))
		if _, err := c.Write(append(n[:], out...)); err != nil {
			return
		}
	}
}

func (d *fakeDNS) answer(query []byte) ([]byte, error) {
	var p dnsmessage.Parser
	h, err := p.Start(query)
	if err != nil {
		return nil, err
	}
	q, err := p.Question()
	if err != nil {
		return nil, err
	}
	b := dnsmessage.NewBuilder(nil, dnsmessage.Header{ID: h.ID, Response: true, Authoritative: true,
		RecursionDesired: h.RecursionDesired, RecursionAvailable: true})
	if err := b.StartQuestions(); err != nil {
		return nil, err
	}
	if err := b.Question(q); err != nil {
		return nil, err
	}
	if err := b.StartAnswers(); err != nil {
		return nil, err
	}
	if q.Type == dnsmessage.TypeA {
		rh := dnsmessage.ResourceHeader{Name: q.Name, Type: dnsmessage.TypeA, Class: dnsmessage.ClassINET}
		if err := b.AResource(rh, dnsmessage.AResource{A: d.next().As4()}); err != nil {
			return nil, err
		}
	}
	return b.Finish()
}

// TestDNSRebinding: a host name on the allow-list whose DNS answer changes
// from one lookup to the next. The address is checked at each dial, so the
// answers that point at the metadata endpoint or a private network are
// refused before a connection is made, while the allowed one goes through.
func TestDNSRebinding(t *testing.T) {
	rc := &recorder{respond: func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Connection", "close") // every send dials anew, and so resolves anew
		w.WriteHeader(http.StatusNoContent)
	}}
	srv := httptest.NewServer(rc)
	defer srv.Close()
	u, err := url.Parse(srv.URL)
	require.NoError(t, err)
	dest := "http://hooks.rebind.test:" + u.Port() + "/hook"

	dns := newFakeDNS(t, "127.0.0.1", "169.254.169.254", "10.20.30.40", "127.0.0.1")
	s := newSender(t, webhook.Options{
		AllowedHosts: []string{"hooks.rebind.test"},
		AllowedNets:  []string{"127.0.0.1/32"}, // the receiver, allowed on purpose
		Resolver:     dns.resolver(),
	})
	d, err := transport.ParseDestination(dest)
	require.NoError(t, err)
	require.NoError(t, s.Validate(d), "the name is on the allow-list")

	out := send(s, envelope(dest, "m1"))
	require.Equal(t, transport.StatusDelivered, out[0].Status, out[0].String())
	require.Len(t, rc.all(), 1)

	for _, want := range []struct{ addr, kind string }{
		{"169.254.169.254", "cloud metadata"},
		{"10.20.30.40", "private"},
	} {
		out = send(s, envelope(dest, "m2"))
		require.Equal(t, transport.StatusReject, out[0].Status, "%s: %s", want.addr, out[0].String())
		require.ErrorIs(t, out[0].Err, webhook.ErrAddressNotAllowed)
		var ae *webhook.AddressError
		require.True(t, errors.As(out[0].Err, &ae), out[0].Err)
		require.Equal(t, want.addr, ae.Addr.Addr().String())
		require.Equal(t, want.kind, ae.Kind)
		require.Len(t, rc.all(), 1, "nothing reached the receiver")
	}

	out = send(s, envelope(dest, "m3"))
	require.Equal(t, transport.StatusDelivered, out[0].Status, "re-bound to the allowed address: %s", out[0].String())
	require.Len(t, rc.all(), 2)
}

// TestLoopbackNeedsExplicitAllow: a name that resolves to loopback is
// refused by default, with an error that says how to allow it; naming the
// IP in the allow-list (as the other tests here do with httptest's
// 127.0.0.1) is such an explicit allowance.
func TestLoopbackNeedsExplicitAllow(t *testing.T) {
	rc := &recorder{}
	srv := httptest.NewServer(rc)
	defer srv.Close()
	u, err := url.Parse(srv.URL)
	require.NoError(t, err)

	s := newSender(t, webhook.Options{
		AllowedHosts: []string{"localhost.rebind.test"},
		Resolver:     newFakeDNS(t, "127.0.0.1").resolver(),
	})
	out := send(s, envelope("http://localhost.rebind.test:"+u.Port()+"/x", "m"))
	require.Equal(t, transport.StatusReject, out[0].Status, out[0].String())
	require.ErrorIs(t, out[0].Err, webhook.ErrAddressNotAllowed)
	require.ErrorContains(t, out[0].Err, "127.0.0.1:"+u.Port()+" is a loopback address (allow it with Options.AllowedNets")
	require.Empty(t, rc.all())

	lit := newSender(t, webhook.Options{AllowedHosts: []string{u.Host}})
	out = send(lit, envelope(srv.URL+"/x", "m"))
	require.Equal(t, transport.StatusDelivered, out[0].Status, out[0].String())

	_, err = webhook.New(webhook.Options{AllowedNets: []string{"not-a-net"}})
	require.ErrorContains(t, err, `allowed net "not-a-net"`)
}
