// Package e2e holds end-to-end tests of the engine driving each transport
// against the real server, in-process: schedule, fire, arrive with the right
// headers and never early; and a failing receiver, through retries, to a dead
// letter, with nothing lost. It has no code of its own: the tests live here
// so that neither the engine nor the contract package imports a broker SDK.
package e2e
