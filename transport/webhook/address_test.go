package webhook

import (
	"errors"
	"net/netip"
	"testing"
)

// TestAddressPolicy checks which dialed addresses the default policy refuses,
// and that AllowedNets and IP entries of AllowedHosts let them through. No
// address is dialed here: check is the function the Control hook calls.
func TestAddressPolicy(t *testing.T) {
	for _, tc := range []struct {
		addr string
		kind string // "" = public, allowed by default
	}{
		{"93.184.215.14:443", ""},
		{"[2606:4700::1111]:443", ""},
		{"8.8.8.8:80", ""},
		{"127.0.0.1:80", "loopback"},
		{"127.9.9.9:80", "loopback"},
		{"[::1]:80", "loopback"},
		{"[::ffff:127.0.0.1]:80", "loopback"},
		{"10.1.2.3:80", "private"},
		{"172.16.0.1:80", "private"},
		{"172.31.255.255:80", "private"},
		{"192.168.1.1:80", "private"},
		{"[fd12:3456::1]:80", "private"},
		{"169.254.169.254:80", "cloud metadata"},
		{"[fd00:ec2::254]:80", "cloud metadata"},
		{"100.100.100.200:80", "cloud metadata"},
		{"192.0.0.192:80", "cloud metadata"},
		{"169.254.1.1:80", "link-local"},
		{"[fe80::1%eth0]:80", "link-local"},
		{"0.0.0.0:80", "unspecified"},
		{"0.1.2.3:80", "unspecified"},
		{"[::]:80", "unspecified"},
		{"224.0.0.1:80", "multicast"},
		{"[ff02::1]:80", "multicast"},
		{"255.255.255.255:80", "reserved or broadcast"},
		{"100.64.0.1:80", "shared (CGNAT)"},
		{"198.18.0.1:80", "benchmarking"},
		{"[fec0::1]:80", "site-local"},
		{"[64:ff9b::7f00:1]:80", "loopback (through NAT64)"},
		{"[64:ff9b::a9fe:a9fe]:80", "cloud metadata (through NAT64)"},
		{"[64:ff9b::808:808]:80", ""},
	} {
		var p addrPolicy
		err := p.check(netip.MustParseAddrPort(tc.addr))
		if tc.kind == "" {
			if err != nil {
				t.Errorf("%s: refused: %v", tc.addr, err)
			}
			continue
		}
		var ae *AddressError
		if !errors.As(err, &ae) || !errors.Is(err, ErrAddressNotAllowed) {
			t.Errorf("%s: want an AddressError, got %v", tc.addr, err)
			continue
		}
		if ae.Kind != tc.kind {
			t.Errorf("%s: kind %q, want %q", tc.addr, ae.Kind, tc.kind)
		}
	}

	var p addrPolicy
	for _, n := range []string{"10.1.0.0/16", "::1/128"} {
		if err := p.addNet(n); err != nil {
			t.Fatal(err)
		}
	}
	p.addLiteral(netip.MustParseAddr("127.0.0.1"), "8080")
	p.addLiteral(netip.MustParseAddr("169.254.169.254"), "")
	for _, tc := range []struct {
		addr string
		ok   bool
	}{
		{"10.1.200.3:80", true},
		{"10.2.0.1:80", false},
		{"[::1]:9", true},
		{"127.0.0.1:8080", true},
		{"[::ffff:127.0.0.1]:8080", true},
		{"127.0.0.1:8081", false}, // the literal names a port
		{"169.254.169.254:80", true},
		{"169.254.169.253:80", false},
	} {
		err := p.check(netip.MustParseAddrPort(tc.addr))
		if (err == nil) != tc.ok {
			t.Errorf("%s: ok=%v, got %v", tc.addr, tc.ok, err)
		}
	}
	if err := p.addNet("10.0.0.0"); err == nil {
		t.Error("a net without a prefix length was accepted")
	}
}
