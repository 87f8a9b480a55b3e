package procs

import (
	"runtime"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestSet checks the commands' GOMAXPROCS: one more than the runtime's
// default unless the environment chose, and an explicit count when given.
func TestSet(t *testing.T) {
	prev := runtime.GOMAXPROCS(0)
	t.Cleanup(func() { runtime.GOMAXPROCS(prev) })
	env := func(v string) func(string) string {
		return func(k string) string {
			if k == "GOMAXPROCS" {
				return v
			}
			return ""
		}
	}
	require.Equal(t, prev, Set(0, env("7")), "GOMAXPROCS from the environment stays")
	require.Equal(t, prev+1, Set(0, env("")))
	runtime.GOMAXPROCS(prev)
	require.Equal(t, 5, Set(5, env("")))
	require.Equal(t, 5, Set(5, env("7")), "an explicit count wins over the environment")
}
