package main

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
)

// report is the run's result. Its JSON keys are a contract: scripts and the
// benchmark docs read them.
type report struct {
	Scheduled    int64     `json:"scheduled"`
	Acknowledged int64     `json:"acknowledged"`
	Delivered    int64     `json:"delivered"`
	Lost         int64     `json:"lost"`
	Early        int64     `json:"early"`
	Duplicates   int64     `json:"duplicates"`
	Expired      int64     `json:"expired"`
	ScheduleRate float64   `json:"schedule_rate"`
	FireRate     float64   `json:"fire_rate"`
	AckLatencyMs quantiles `json:"ack_latency_ms"`
	// PushBacks counts schedule calls the engine held while it caught up
	// (engine.Options.PushBackLag); PushBackWaitMs is their total wait.
	PushBacks           int64     `json:"push_backs"`
	PushBackWaitMs      float64   `json:"push_back_wait_ms"`
	LatenessMs          lateness  `json:"lateness_ms"`
	PeakPending         int64     `json:"peak_pending"`
	RSSPeakBytes        int64     `json:"rss_peak_bytes"`
	HeapBytesPerPending float64   `json:"heap_bytes_per_pending"`
	StoreBytes          int64     `json:"store_bytes"`
	Recovery            *recovery `json:"recovery,omitempty"`
	// Cluster mode (-cluster): fires per node, and with -kill-node the
	// failover time.
	Nodes      []nodeReport `json:"nodes,omitempty"`
	FailoverMs *float64     `json:"failover_ms,omitempty"`
	// SustainableRate and Steps are -find-rate's: the rate found, and
	// every run of the search (the other figures are the confirming run's).
	SustainableRate *float64   `json:"sustainable_rate,omitempty"`
	Steps           []findStep `json:"steps,omitempty"`
	Config          config     `json:"config"`

	unexpected int64 // delivered but never acknowledged; text report only
}

type quantiles struct {
	P50  float64 `json:"p50"`
	P99  float64 `json:"p99"`
	P999 float64 `json:"p999"`
}

type lateness struct {
	P50  float64 `json:"p50"`
	P99  float64 `json:"p99"`
	P999 float64 `json:"p999"`
	Max  float64 `json:"max"`
}

type recovery struct {
	FirstFireMs float64 `json:"first_fire_ms"`
	FullMs      float64 `json:"full_ms"`
	Recovered   int64   `json:"recovered"`
}

func (r *report) print(out io.Writer) {
	verdict := "OK: nothing lost, nothing early"
	if r.Lost != 0 || r.Early != 0 {
		verdict = fmt.Sprintf("FAILED: %d lost, %d early", r.Lost, r.Early)
	}
	fmt.Fprintf(out, `
%s
  scheduled      %d (acknowledged %d)
  delivered      %d (duplicates %d, expired %d, unexpected %d)
  schedule rate  %.0f/s
  fire rate      %.0f/s
  lateness       p50 %.2f ms  p99 %.2f ms  p99.9 %.2f ms  max %.2f ms
`, verdict, r.Scheduled, r.Acknowledged, r.Delivered, r.Duplicates, r.Expired, r.unexpected,
		r.ScheduleRate, r.FireRate,
		r.LatenessMs.P50, r.LatenessMs.P99, r.LatenessMs.P999, r.LatenessMs.Max)
	if r.Config.Crash > 0 {
		// The children schedule and fire; the parent only reads their logs.
		fmt.Fprintln(out, "  (ack latency, pending, heap and store figures are not measured across crashes)")
	} else {
		fmt.Fprintf(out, `  ack latency    p50 %.2f ms  p99 %.2f ms  p99.9 %.2f ms
  push back      %d calls held, %.0f ms in all
  peak pending   %d (heap %.0f B each)
  peak RSS       %.1f MiB
  store          %.1f MiB
`, r.AckLatencyMs.P50, r.AckLatencyMs.P99, r.AckLatencyMs.P999, r.PushBacks, r.PushBackWaitMs,
			r.PeakPending, r.HeapBytesPerPending, float64(r.RSSPeakBytes)/(1<<20), float64(r.StoreBytes)/(1<<20))
	}
	for _, n := range r.Nodes {
		killed := ""
		if n.Killed {
			killed = " (killed)"
		}
		fmt.Fprintf(out, "  node %-2d        %d fires, %d partitions%s\n", n.Node, n.Fires, n.Partitions, killed)
	}
	if r.FailoverMs != nil {
		fmt.Fprintf(out, "  failover       %.0f ms (session timeout %v)\n", *r.FailoverMs, clusterSessionTimeout)
	}
	if r.SustainableRate != nil {
		fmt.Fprintf(out, "  sustainable    %.0f/s (p99 lateness <= %.0f ms; the figures above are of the confirming run)\n", *r.SustainableRate, maxSustainableP99)
	}
	if r.Recovery != nil {
		fmt.Fprintf(out, "  recovery       %d messages, first fire after %.1f ms, fully loaded after %.1f ms\n",
			r.Recovery.Recovered, r.Recovery.FirstFireMs, r.Recovery.FullMs)
	}
}

// rssPeak returns the process's peak resident set (VmHWM), 0 where /proc
// does not tell.
func rssPeak() int64 {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "VmHWM:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 10, 64)
			if err == nil {
				return kb << 10
			}
		}
	}
	return 0
}
