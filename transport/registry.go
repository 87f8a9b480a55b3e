package transport

import (
	"errors"
	"fmt"
	"slices"
	"sync"
)

// Registry maps destination schemes to the senders that serve them. The
// engine resolves every destination through it, at Schedule time to refuse
// bad destinations early and at dispatch time to pick the sender.
//
// Register senders during setup; lookups are safe for concurrent use at any
// time (a read lock guards the map).
type Registry struct {
	mu      sync.RWMutex      // guards senders and closed
	senders map[string]Sender // by lower-case scheme
	closed  bool
}

// NewRegistry returns an empty registry.
func NewRegistry() *Registry {
	return &Registry{senders: make(map[string]Sender)}
}

// Register maps each scheme (case-insensitive, e.g. "http", "https") to s.
// s must be a comparable value (senders are pointers) so Close can close a
// sender serving several schemes once.
// It fails with ErrSchemeTaken if a scheme is already mapped, and maps none
// of them in that case.
func (r *Registry) Register(s Sender, schemes ...string) error {
	if s == nil {
		return errors.New("transport: Register: nil sender")
	}
	if len(schemes) == 0 {
		return errors.New("transport: Register: no schemes")
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return fmt.Errorf("transport: Register: %w", ErrClosed)
	}
	norm := make([]string, len(schemes))
	for i, sc := range schemes {
		d, err := ParseDestination(sc + "://x")
		if err != nil || d.Scheme+"://x" != lowerASCII(sc)+"://x" {
			return fmt.Errorf("transport: Register: invalid scheme %q", sc)
		}
		if _, ok := r.senders[d.Scheme]; ok {
			return fmt.Errorf("%w: %q", ErrSchemeTaken, d.Scheme)
		}
		norm[i] = d.Scheme
	}
	for _, sc := range norm {
		r.senders[sc] = s
	}
	return nil
}

func lowerASCII(s string) string {
	b := []byte(s)
	for i, c := range b {
		if c >= 'A' && c <= 'Z' {
			b[i] = c + 'a' - 'A'
		}
	}
	return string(b)
}

// Schemes returns the registered schemes, sorted.
func (r *Registry) Schemes() []string {
	r.mu.RLock()
	defer r.mu.RUnlock()
	out := make([]string, 0, len(r.senders))
	for sc := range r.senders {
		out = append(out, sc)
	}
	slices.Sort(out)
	return out
}

// Lookup returns the sender for a scheme (lower-case), if any.
func (r *Registry) Lookup(scheme string) (Sender, bool) {
	r.mu.RLock()
	s, ok := r.senders[scheme]
	r.mu.RUnlock()
	return s, ok
}

// Resolve parses dest, finds its sender and lets the sender validate the
// target. Errors are *DestinationError wrapping ErrBadDestination or
// ErrUnknownScheme, and name what is allowed.
func (r *Registry) Resolve(dest string) (Destination, Sender, error) {
	d, err := ParseDestination(dest)
	if err != nil {
		var de *DestinationError
		if errors.As(err, &de) && de.Allowed == nil {
			de.Allowed = schemesAllowed(r.Schemes())
		}
		return Destination{}, nil, err
	}
	s, ok := r.Lookup(d.Scheme)
	if !ok {
		return Destination{}, nil, &DestinationError{
			Dest:    dest,
			Err:     ErrUnknownScheme,
			Reason:  fmt.Sprintf("no transport serves %q", d.Scheme),
			Allowed: schemesAllowed(r.Schemes()),
		}
	}
	if err := s.Validate(d); err != nil {
		return Destination{}, nil, err
	}
	return d, s, nil
}

func schemesAllowed(schemes []string) []string {
	for i, sc := range schemes {
		schemes[i] = sc + "://"
	}
	if len(schemes) == 0 {
		return []string{"no transports are registered"}
	}
	return schemes
}

// Validate reports whether dest would be accepted by Resolve.
func (r *Registry) Validate(dest string) error {
	_, _, err := r.Resolve(dest)
	return err
}

// ValidateMessage reports whether dest's sender can carry a message with
// this idempotency key and these headers: the sender's MessageValidator,
// when it has one. dest must be valid (Validate).
func (r *Registry) ValidateMessage(dest, key string, headers []Header) error {
	d, s, err := r.Resolve(dest)
	if err != nil {
		return err
	}
	if v, ok := s.(MessageValidator); ok {
		return v.ValidateMessage(d, key, headers)
	}
	return nil
}

// Native reports whether dest resolves to a sender that implements
// NativeScheduler and has dest configured for native mode, and returns that
// scheduler.
func (r *Registry) Native(dest string) (NativeScheduler, Destination, bool) {
	d, s, err := r.Resolve(dest)
	if err != nil {
		return nil, Destination{}, false
	}
	ns, ok := s.(NativeScheduler)
	if !ok || !ns.Native(d) {
		return nil, Destination{}, false
	}
	return ns, d, true
}

// Close closes every distinct registered sender once and joins their errors.
// Further Registers fail; lookups keep working so in-flight dispatchers get
// the senders' own ErrClosed outcomes.
func (r *Registry) Close() error {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return nil
	}
	r.closed = true
	seen := make(map[Sender]bool, len(r.senders))
	var order []Sender
	for _, sc := range sortedKeys(r.senders) {
		s := r.senders[sc]
		if !seen[s] {
			seen[s] = true
			order = append(order, s)
		}
	}
	r.mu.Unlock()
	var errs []error
	for _, s := range order {
		if err := s.Close(); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func sortedKeys(m map[string]Sender) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
