package webhook

import (
	"fmt"
	"net/netip"
	"strconv"
	"syscall"
)

// The allow-list (Options.AllowedHosts) is checked on the host name in the
// URL, at Schedule time and again at Send. That alone is open to DNS
// rebinding: a name on the list can resolve to a public address when it is
// checked and to 127.0.0.1 or 169.254.169.254 when it is dialed. So the
// dialer's Control hook checks every address a connection is about to reach,
// after resolution and before the connect system call: nothing is sent to a
// special address unless the operator allowed it (addrPolicy).

// AddressError is the error of a dial refused because the address is
// special. It wraps ErrAddressNotAllowed.
type AddressError struct {
	Addr netip.AddrPort // the address that was about to be dialed
	Kind string         // what makes it special: "loopback", "private", ...
}

// Error implements error.
func (e *AddressError) Error() string {
	return fmt.Sprintf("webhook: address not allowed: %s is a %s address (allow it with Options.AllowedNets, or name the IP in Options.AllowedHosts)",
		e.Addr, e.Kind)
}

// Unwrap returns ErrAddressNotAllowed.
func (e *AddressError) Unwrap() error { return ErrAddressNotAllowed }

// specialNet is a range refused unless allowed explicitly.
type specialNet struct {
	prefix netip.Prefix
	kind   string
}

// metadata are cloud instance-metadata endpoints: named on their own so the
// error says what the address is, although each lies in a range below too.
var metadata = []netip.Addr{
	netip.MustParseAddr("169.254.169.254"), // AWS, GCP, Azure, OpenStack, DigitalOcean, Oracle
	netip.MustParseAddr("fd00:ec2::254"),   // AWS over IPv6
	netip.MustParseAddr("100.100.100.200"), // Alibaba Cloud
	netip.MustParseAddr("192.0.0.192"),     // Oracle Cloud (legacy)
}

// specialNets are the ranges netip's predicates do not cover.
var specialNets = []specialNet{
	{netip.MustParsePrefix("0.0.0.0/8"), "unspecified"}, // "this network": Linux dials it as local
	{netip.MustParsePrefix("100.64.0.0/10"), "shared (CGNAT)"},
	{netip.MustParsePrefix("192.0.0.0/24"), "IETF protocol assignment"},
	{netip.MustParsePrefix("198.18.0.0/15"), "benchmarking"},
	{netip.MustParsePrefix("240.0.0.0/4"), "reserved or broadcast"},
	{netip.MustParsePrefix("fec0::/10"), "site-local"},
}

// nat64 is the well-known NAT64 prefix: its addresses reach the IPv4
// address in their last 32 bits.
var nat64 = netip.MustParsePrefix("64:ff9b::/96")

// specialKind says why a is refused by default, or "" if it is an ordinary
// public address. a must be unmapped and without zone.
func specialKind(a netip.Addr) string {
	for _, m := range metadata {
		if a == m {
			return "cloud metadata"
		}
	}
	switch {
	case a.IsUnspecified():
		return "unspecified"
	case a.IsLoopback():
		return "loopback"
	case a.IsPrivate():
		return "private"
	case a.IsLinkLocalUnicast():
		return "link-local"
	case a.IsMulticast():
		return "multicast"
	}
	for _, s := range specialNets {
		if s.prefix.Contains(a) {
			return s.kind
		}
	}
	if nat64.Contains(a) {
		b := a.As16()
		v4 := netip.AddrFrom4([4]byte{b[12], b[13], b[14], b[15]})
		if k := specialKind(v4); k != "" {
			return k + " (through NAT64)"
		}
	}
	return ""
}

// addrPolicy decides which dialed addresses are allowed. It is built in New
// and read-only afterwards, so the dialers of concurrent sends share it.
type addrPolicy struct {
	nets     []netip.Prefix
	literals []literal
}

// literal is an IP entry of AllowedHosts.
type literal struct {
	addr netip.Addr
	port uint16 // 0: any port
}

func (p *addrPolicy) addLiteral(a netip.Addr, port string) {
	l := literal{addr: a.Unmap().WithZone("")}
	if port != "" {
		n, _ := strconv.ParseUint(port, 10, 16) // parseHostPattern checked it
		l.port = uint16(n)
	}
	p.literals = append(p.literals, l)
}

func (p *addrPolicy) addNet(s string) error {
	pfx, err := netip.ParsePrefix(s)
	if err != nil {
		return fmt.Errorf("webhook: allowed net %q: want CIDR such as 10.0.0.0/8 or fd00::/8: %w", s, err)
	}
	p.nets = append(p.nets, pfx.Masked())
	return nil
}

// check returns nil if ap may be dialed, else an *AddressError.
func (p *addrPolicy) check(ap netip.AddrPort) error {
	a := ap.Addr().Unmap().WithZone("")
	kind := specialKind(a)
	if kind == "" {
		return nil
	}
	for _, n := range p.nets {
		if n.Contains(a) {
			return nil
		}
	}
	for _, l := range p.literals {
		if l.addr == a && (l.port == 0 || l.port == ap.Port()) {
			return nil
		}
	}
	return &AddressError{Addr: netip.AddrPortFrom(a, ap.Port()), Kind: kind}
}

// control is the net.Dialer Control hook: it runs once per address the
// dialer tries, after the socket is created and before it connects.
func (p *addrPolicy) control(network, address string, _ syscall.RawConn) error {
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		return fmt.Errorf("webhook: dial %s %s: %w", network, address, err)
	}
	return p.check(ap)
}
