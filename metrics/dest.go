package metrics

import (
	"strings"
	"unicode/utf8"
)

// maxLabelLen bounds a destination label in bytes.
const maxLabelLen = 256

// DestinationLabel reduces a destination to a label of bounded cardinality:
//
//	local://emails                      -> local://emails (the queue)
//	https://user:pw@Hooks.example.com:8443/orders?x=1
//	                                    -> https://hooks.example.com:8443 (scheme and host)
//	nats://orders.eu.created            -> nats://orders (first subject token)
//	jetstream://orders.eu.created       -> jetstream://orders
//	kafka://orders                      -> kafka://orders (the topic)
//	other://a/b                         -> other://a (up to the first '/', '?' or '#')
//
// User info is always dropped, and a label is cut to 256 bytes. A
// destination without "://" is OtherLabel.
func DestinationLabel(dest string) string {
	scheme, rest, ok := strings.Cut(dest, "://")
	if !ok || scheme == "" {
		return OtherLabel
	}
	scheme = strings.ToLower(scheme)
	switch scheme {
	case "local":
		// Queue names hold no '/'; keep the name as it is.
	case "nats", "jetstream":
		rest, _, _ = strings.Cut(rest, ".")
	default:
		if i := strings.IndexAny(rest, "/?#"); i >= 0 {
			rest = rest[:i]
		}
		if i := strings.LastIndexByte(rest, '@'); i >= 0 {
			rest = rest[i+1:]
		}
		if scheme == "http" || scheme == "https" {
			rest = strings.ToLower(rest)
		}
	}
	label := scheme + "://" + rest
	if len(label) > maxLabelLen {
		cut := maxLabelLen
		for cut > 0 && !utf8.RuneStart(label[cut]) {
			cut--
		}
		label = label[:cut]
	}
	return strings.ToValidUTF8(label, "\uFFFD")
}
