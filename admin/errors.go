package admin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/hourglassmq/hourglass/engine"
	"github.com/hourglassmq/hourglass/transport"
)

// errorOut is the body of every 4xx and 5xx answer of the API.
type errorOut struct {
	// Error says what is wrong, in words.
	Error string `json:"error"`
	// Code classifies it for programs: invalid_json, invalid, too_large,
	// unsupported_media_type, unauthorized, forbidden, not_found, in_flight,
	// full, unavailable, not_implemented, internal.
	Code string `json:"code"`
	// Field names the offending input ("messages[2].due", "cursor"), when
	// one is to blame.
	Field string `json:"field,omitempty"`
	// Allowed says what would have been accepted, when that is known.
	Allowed []string `json:"allowed,omitempty"`
	// IDs, on a schedule that failed part-way (a store failure between
	// commits), are the messages the engine reports as committed despite
	// the error: they are scheduled, the others are not.
	IDs []string `json:"ids,omitempty"`
}

// apiError is an error with its HTTP status and body.
type apiError struct {
	status int
	body   errorOut
}

func (e *apiError) Error() string { return e.body.Error }

// invalid is a 400 for a bad field.
func invalid(field, what string, allowed ...string) error {
	msg := what
	if field != "" {
		msg = field + ": " + what
	}
	return &apiError{http.StatusBadRequest, errorOut{Error: msg, Code: "invalid", Field: field, Allowed: allowed}}
}

func newAPIError(status int, code, msg string, allowed ...string) error {
	return &apiError{status, errorOut{Error: msg, Code: code, Allowed: allowed}}
}

// fromEngine maps an engine error to its status: the engine's validation
// (ErrInvalid, ErrUnknownQueue) is the caller's fault, a 400 whose message
// is the engine's own, with the allowed values a transport named.
func fromEngine(err error) *apiError {
	var ae *apiError
	if errors.As(err, &ae) {
		return ae
	}
	out := errorOut{Error: err.Error()}
	status := http.StatusInternalServerError
	switch {
	case errors.Is(err, engine.ErrInvalid), errors.Is(err, engine.ErrUnknownQueue):
		status, out.Code = http.StatusBadRequest, "invalid"
		var de *transport.DestinationError
		if errors.As(err, &de) {
			out.Allowed = de.Allowed
		}
		if errors.Is(err, engine.ErrUnknownQueue) {
			out.Allowed = []string{"a registered local queue; local:// destinations need handlers inside the process that runs the engine"}
		}
	case errors.Is(err, engine.ErrNotFound):
		status, out.Code = http.StatusNotFound, "not_found"
	case errors.Is(err, engine.ErrInFlight):
		status, out.Code = http.StatusConflict, "in_flight"
	case errors.Is(err, engine.ErrFull):
		status, out.Code = http.StatusServiceUnavailable, "full"
	case errors.Is(err, engine.ErrClosed), errors.Is(err, engine.ErrStore),
		errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		status, out.Code = http.StatusServiceUnavailable, "unavailable"
	default:
		out.Code = "internal"
	}
	return &apiError{status, out}
}

// fromDecode maps a JSON body that could not be read or decoded.
func fromDecode(err error, fields []string) error {
	var mbe *http.MaxBytesError
	var se *json.SyntaxError
	var te *json.UnmarshalTypeError
	switch {
	case errors.As(err, &mbe):
		return newAPIError(http.StatusRequestEntityTooLarge, "too_large",
			fmt.Sprintf("request body is larger than %d bytes", mbe.Limit), fmt.Sprintf("a body of at most %d bytes", mbe.Limit))
	case errors.As(err, &se):
		return &apiError{http.StatusBadRequest, errorOut{Code: "invalid_json",
			Error: fmt.Sprintf("malformed JSON at byte %d: %v", se.Offset, se)}}
	case errors.As(err, &te):
		return &apiError{http.StatusBadRequest, errorOut{Code: "invalid_json", Field: te.Field,
			Error: fmt.Sprintf("%s: JSON %s where %s is expected", te.Field, te.Value, te.Type)}}
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		f := strings.Trim(strings.TrimPrefix(err.Error(), "json: unknown field "), `"`)
		return &apiError{http.StatusBadRequest, errorOut{Code: "invalid_json", Field: f,
			Error: fmt.Sprintf("unknown field %q", f), Allowed: fields}}
	case errors.Is(err, errEmptyBody):
		return &apiError{http.StatusBadRequest, errorOut{Code: "invalid_json", Error: "empty body: a JSON object is expected"}}
	}
	return &apiError{http.StatusBadRequest, errorOut{Code: "invalid_json", Error: "malformed JSON: " + err.Error()}}
}

var errEmptyBody = errors.New("admin: empty body")
