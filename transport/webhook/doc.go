// Package webhook delivers Hourglass messages as HTTP POST requests
// (destinations "http://…" and "https://…").
//
// # Request
//
// Each message is one POST of its payload to the destination URL with the
// standard headers (Hourglass-Id, Hourglass-Attempt, Hourglass-Due,
// Hourglass-Fired, Hourglass-Key) and the caller's headers. Content-Type is
// application/octet-stream unless the caller's headers set one. When a
// secret is configured the request also carries a signature:
//
//	Hourglass-Signature: t=1764104400,v1=5257a869e7ecebeda32affa62cdca3fa51cad7e77a0e56ff536d0ce8e108d8bd
//
// v1 is the lower-case hex HMAC-SHA256, keyed with the secret, of
//
//	<t> "." <Hourglass-Id> "." <body>
//
// where t is the Unix time in seconds when the request was signed. Binding
// the ID stops a replayed body from slipping past a receiver's deduplication
// under a new ID; binding t lets the receiver refuse replays older than a
// tolerance.
//
// # Verifying a signature (receiver side)
//
//  1. Read the raw body before parsing it.
//  2. Call Verify(secret, r.Header.Get("Hourglass-Signature"),
//     r.Header.Get("Hourglass-Id"), body, time.Now(), 5*time.Minute),
//     or by hand: split the header on ",", take t and every v1, compute the
//     HMAC above and compare with hmac.Equal (constant time) against each v1;
//     then check |now − t| ≤ tolerance.
//  3. Deduplicate on Hourglass-Id (delivery is at least once).
//
// Several v1 entries may appear while a secret is being rotated
// (Options.Secrets); a match with any of them is valid.
//
// # Outcomes
//
//	2xx                                  delivered
//	429, 503 with Retry-After            retry after the delay asked for (seconds or HTTP date, capped)
//	429, 503 without it, 408, other 5xx  retry with the engine's backoff
//	network errors, timeouts             retry
//	3xx                                  reject (redirects are not followed: they could leave the allow-list)
//	other 4xx, other status codes        reject (dead letter)
//
// # Allow-list
//
// A scheduled message must not be aimable at arbitrary hosts (the engine
// would become an SSRF relay), so only hosts named in Options.AllowedHosts
// are accepted; with none configured, every destination is refused with an
// error that says so. Validate applies the list at Schedule time and Send
// again at delivery. The list matches host names as written in the URL.
//
// # Addresses
//
// A name on the allow-list can still resolve to an address the operator never
// meant to expose (a receiver's DNS re-bound to 127.0.0.1 between the check and
// the dial, or to the cloud metadata endpoint 169.254.169.254). So the Sender's
// dialer checks the address it is about to connect to, in its Control hook,
// after resolution: loopback, private, link-local, unspecified, multicast,
// reserved and cloud metadata addresses are refused unless Options.AllowedNets
// covers them or Options.AllowedHosts names the IP itself. A refused dial is a
// Reject outcome wrapping ErrAddressNotAllowed (an *AddressError): no byte is
// sent to the address. Behind an HTTP proxy (HTTPS_PROXY and friends) the
// address dialed is the proxy's, so the proxy must enforce its own egress
// rules, and a proxy on a private address must be allowed in AllowedNets.
package webhook
