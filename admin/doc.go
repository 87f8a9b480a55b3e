// Package admin is an http.Handler that serves Hourglass's JSON API and a
// web dashboard for one engine: what is pending, late or dead, and the
// actions an operator needs (cancel, reschedule, run now, replay or purge a
// dead letter). `hourglass serve` mounts it at its root; a service that
// embeds the engine mounts it under a prefix, behind its own
// authentication, as asynqmon and River UI are mounted:
//
//	h := admin.New(eng, admin.Options{ReadOnly: !canWrite})
//	defer h.Close()
//	mux.Handle("/hourglass/", http.StripPrefix("/hourglass", requireStaff(h)))
//
// The handler does no authentication of its own. Its middleware-facing
// switch is WithReadOnly: a request whose context carries it may read but
// not write, and the dashboard hides its actions for it.
//
// # API
//
// Paths are relative to the mount point; bodies and answers are JSON (one
// exception: a raw-body schedule). Times are RFC 3339, IDs the engine's
// 13-character form, payloads standard base64.
//
//	GET    api/v1/info                      {"read_only", "mode", "shards", "refresh_seconds", "max_batch", "max_body"}
//	GET    api/v1/health                    200 {"status": "ok"} | 503 {"status": "failing", "error"}
//	GET    api/v1/ready                     200 {"ready": true} | 503 {"ready": false, "reason"}
//	GET    api/v1/stats                     live counters, rates, lateness, recovery, store
//	GET    api/v1/summary                   cached counts: pending by destination, due histograms, dead
//	POST   api/v1/messages                  {"dest", "due" | "in", "expires", "key", "headers": [{"key", "value"}], "payload"} → 201 {"id"}
//	                                        {"messages": [...]} → 201 {"ids": [...]}
//	                                        ?dest=…&in=…&key=…&header=Name:value with a raw body → 201 {"id"}
//	GET    api/v1/messages                  ?state=pending|dead&dest=PREFIX&from=T&to=T&limit=N&cursor=C → {"messages": [...], "next"}
//	                                        ?key=K → {"messages": [0 or 1]}
//	GET    api/v1/messages/{id}             one message, with its payload
//	DELETE api/v1/messages/{id}             cancel → {"id", "cancelled": true}
//	POST   api/v1/messages/{id}/reschedule  {"due"} or {"in"} ({"in": "0s"}: run now) → {"id", "due"}
//	GET    api/v1/dead                      ?dest=&from=&to=&limit=&cursor= → {"messages": [...], "next"}
//	POST   api/v1/dead/replay               {"ids": [...], "due" | "in"} → {"replayed"}
//	POST   api/v1/dead/purge                {"ids": [...]} or {"all": true} → {"purged"}
//
// Errors are 4xx or 5xx with {"error", "code", "field", "allowed", "ids"}:
// what is wrong, a code for programs, the field to blame, what would have
// been accepted, and (for a batch that failed part-way on a store failure)
// the IDs that were committed. Input is checked before anything is stored:
// the handler checks syntax (JSON, times, base64, IDs, sizes), the engine
// checks the rest (destinations, headers, payload size) and refuses a whole
// batch if one message is bad. Writes are refused with 403 in read-only
// mode and for cross-origin browser requests (http.CrossOriginProtection).
//
// # Dashboard
//
// Plain HTML, CSS and JavaScript embedded with go:embed from ui/, with no
// build step: `go build` is all. The overview's counts come from
// Engine.Summary, which reads every pending message, so they are computed
// by a background goroutine every Options.RefreshInterval while someone
// watches, and page views read the cached copy.
package admin
