package engine

import (
	"math"
	"time"

	"github.com/hourglassmq/hourglass/store"
)

// Every time and duration that enters the engine goes through this file.
// Inside, times are wall-clock unix nanoseconds in [0, store.MaxDue]; a
// time.Time outside store.MinTime..store.MaxTime has no such number
// (UnixNano is undefined past 2262), so it is compared as a time.Time
// first. Durations are added with saturation, never wrapping.

// timeRange names the times the engine holds, for error messages.
var timeRange = store.MinTime.Format(time.RFC3339) + " to " + store.MaxTime.Format(time.RFC3339)

// rangeOf places t against the held range: -1 before store.MinTime, +1
// after store.MaxTime, 0 inside. It compares Unix seconds, not Before and
// After: time.Unix(math.MaxInt64, 0) wraps inside time.Time, so it is
// "before 1970" to Before, while its Unix() is still MaxInt64.
func rangeOf(t time.Time) int {
	sec, maxSec := t.Unix(), store.MaxTime.Unix()
	switch {
	case sec < 0:
		return -1
	case sec > maxSec || sec == maxSec && t.Nanosecond() > store.MaxTime.Nanosecond():
		return +1
	}
	return 0
}

// dueOf converts a due time: zero, or any time before now, means now; a time
// after store.MaxTime is refused.
func dueOf(what string, t time.Time, now int64) (int64, error) {
	if t.IsZero() || rangeOf(t) < 0 {
		return now, nil
	}
	if rangeOf(t) > 0 {
		return 0, invalidf("%s %s is after the latest time Hourglass holds (%s)", what, t.UTC().Format(time.RFC3339), timeRange)
	}
	return max(t.UnixNano(), now), nil
}

// expiresOf converts an expiry: zero means none (0); otherwise it must lie
// in the held range and not before due.
func expiresOf(t time.Time, due int64) (int64, error) {
	if t.IsZero() {
		return 0, nil
	}
	if rangeOf(t) != 0 {
		return 0, invalidf("Expires %s is outside the times Hourglass holds (%s)", t.UTC().Format(time.RFC3339), timeRange)
	}
	exp := t.UnixNano()
	if exp < due {
		return 0, invalidf("Expires %s is before the message's due time %s (a past due time means now)",
			t.UTC().Format(time.RFC3339Nano), time.Unix(0, due).UTC().Format(time.RFC3339Nano))
	}
	return exp, nil
}

// boundOf converts a query bound, clamping it into the held range: nothing
// is due outside it, so a clamped bound selects the same messages.
// Zero means unbounded, returned as def.
func boundOf(t time.Time, def int64) int64 {
	switch {
	case t.IsZero():
		return def
	case rangeOf(t) < 0:
		return 0
	case rangeOf(t) > 0:
		return math.MaxInt64
	}
	return t.UnixNano()
}

// after returns now+d saturated, as a due time: d <= 0 means now, and a
// sum past store.MaxDue is refused.
func after(what string, now int64, d time.Duration) (int64, error) {
	due := store.SatAdd(now, int64(max(d, 0)))
	if due > store.MaxDue {
		return 0, invalidf("%s: %v from now is after the latest time Hourglass holds (%s)", what, d, timeRange)
	}
	return due, nil
}

// satDouble returns 2d, saturated.
func satDouble(d time.Duration) time.Duration {
	if d > math.MaxInt64/2 {
		return math.MaxInt64
	}
	return 2 * d
}
