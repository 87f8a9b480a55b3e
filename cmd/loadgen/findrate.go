package main

import (
	"context"
	"fmt"
	"io"
	"math"
	"os"
	"runtime"
	"time"
)

// -find-rate searches for the sustainable rate: the highest paced -rate at
// which the engine keeps up (the producers reach the rate and every message
// is delivered) with p99 lateness at most maxSustainableP99. It doubles the
// rate from -rate (default 25,000/s) while a step passes (or, if the first
// fails, halves it until one passes, down to 1,000/s), then bisects
// between the last rate that passed and the first that failed, each step a
// -step run on a fresh store; then it confirms the best rate with a run of
// -duration (30 s by default), stepping down by 15 % if that run fails.
//
// A short step judges a rate more harshly than the confirming run: one stall
// of 100 ms (a memtable flush on a busy core, the VM's scheduler) makes 1 %
// of a 10 s step's messages late, and a third of that in 30 s. So a short
// step that reached its rate, lost nothing and missed the lateness bound by
// less than retryMargin times is run once more, and the rate fails only if
// it fails again; both runs are reported. One such retry per search keeps
// the whole search within 5 minutes. The confirming run is never repeated:
// the rate reported is one that held over -duration.

// A rate that passed its short step but fails the confirming run (a longer
// run meets the store's compactions) is tried again lower, up to
// confirmTries times in all, each confirmStepDown of the one before: four
// confirming runs of 30 s keep the whole search within 5 minutes.
const (
	confirmTries    = 4
	confirmStepDown = 0.85
)

// retryMargin bounds the p99 lateness, as a multiple of maxSustainableP99,
// of a failed short step that is run once more (see above).
const retryMargin = 3.0

// minFindRate is the lowest rate the search tries.
const minFindRate = 1000 // per second

// maxSustainableP99 is the lateness bound of a sustainable rate.
const maxSustainableP99 = 10.0 // ms

// findStep is one run of the search, in the report.
type findStep struct {
	Rate         float64 `json:"rate"`
	Seconds      float64 `json:"seconds"`
	ScheduleRate float64 `json:"schedule_rate"`
	FireRate     float64 `json:"fire_rate"`
	P99Ms        float64 `json:"p99_ms"`
	Lost         int64   `json:"lost"`
	Early        int64   `json:"early"`
	Pass         bool    `json:"pass"`
}

// sustains reports whether a run at rate kept up within the bound.
func sustains(rate float64, rep *report) bool { return keptUp(rate, rep, maxSustainableP99) }

// marginal reports whether a run at rate kept up within retryMargin times
// the bound: if it failed, it missed only the lateness bound, and by little.
func marginal(rate float64, rep *report) bool {
	return keptUp(rate, rep, retryMargin*maxSustainableP99)
}

// keptUp reports whether a run at rate lost nothing, delivered nothing
// early, reached the rate and kept its p99 lateness within p99 ms.
func keptUp(rate float64, rep *report, p99 float64) bool {
	return rep.Lost == 0 && rep.Early == 0 && rep.ScheduleRate >= 0.97*rate && rep.LatenessMs.P99 <= p99
}

func runFindRate(ctx context.Context, cfg config, out io.Writer) (*report, error) {
	var steps []findStep
	var lost, early int64
	step := func(rate float64, d time.Duration) (*report, bool, error) {
		c := cfg
		c.Rate, c.Duration, c.Quiet, c.FindRate = rate, d, true, false
		rep, err := runLoad(ctx, c, io.Discard)
		if err != nil {
			return nil, false, err
		}
		ok := sustains(rate, rep)
		lost += rep.Lost
		early += rep.Early
		steps = append(steps, findStep{Rate: rate, Seconds: d.Seconds(), ScheduleRate: rep.ScheduleRate, FireRate: rep.FireRate,
			P99Ms: rep.LatenessMs.P99, Lost: rep.Lost, Early: rep.Early, Pass: ok})
		verdict := "keeps up"
		if !ok {
			verdict = "falls behind"
		}
		fmt.Fprintf(out, "  rate %9.0f/s for %-4v schedule %9.0f/s  p99 lateness %8.2f ms  lost %d early %d: %s\n",
			rate, d, rep.ScheduleRate, rep.LatenessMs.P99, rep.Lost, rep.Early, verdict)
		return rep, ok, nil
	}
	fmt.Fprintf(out, "hourglass loadgen -find-rate: the highest rate with p99 lateness <= %.0f ms (%d producers × batch %d, delay %s, payload %d B, GOMAXPROCS %d)\n",
		maxSustainableP99, cfg.Producers, cfg.Batch, cfg.Delay, cfg.Payload, runtime.GOMAXPROCS(0))
	final, sustainable, err := search(cfg, step)
	if err != nil {
		return nil, err
	}
	final.SustainableRate = &sustainable
	final.Steps = steps
	final.Lost, final.Early = lost, early // every step counts toward the verdict
	fmt.Fprintf(out, "sustainable rate: %.0f/s\n", sustainable)
	if sustainable == 0 {
		fmt.Fprintln(os.Stderr, "loadgen: no rate kept p99 lateness within bound")
	}
	return final, nil
}

// stepFunc runs the load at rate for d and says whether it sustained it.
type stepFunc func(rate float64, d time.Duration) (*report, bool, error)

// search runs the search described above with step, from cfg.Rate (or
// 25,000/s) up to cfg.MaxRate with short steps of cfg.Step and confirming
// runs of cfg.Duration. It returns the run that decided and the rate found
// (0 if none held).
func search(cfg config, step stepFunc) (*report, float64, error) {
	// probe runs a short step, and a second one after the search's first
	// marginal failure.
	retried := false
	probe := func(rate float64) (bool, error) {
		rep, ok, err := step(rate, cfg.Step)
		if err != nil || ok || retried || !marginal(rate, rep) {
			return ok, err
		}
		retried = true
		_, ok, err = step(rate, cfg.Step)
		return ok, err
	}
	lo, hi := 0.0, math.Inf(1)
	rate := cfg.Rate
	if rate == 0 {
		rate = 25000
	}
	for rate <= cfg.MaxRate {
		ok, err := probe(rate)
		if err != nil {
			return nil, 0, err
		}
		if !ok {
			hi = rate
			break
		}
		lo = rate
		rate *= 2
	}
	// The first rate failed: halve it until a rate keeps up (a loaded
	// machine may not hold even the start), down to minFindRate.
	for r := rate / 2; lo == 0 && r >= minFindRate; r /= 2 {
		ok, err := probe(math.Round(r))
		if err != nil {
			return nil, 0, err
		}
		if ok {
			lo = math.Round(r)
		} else {
			hi = math.Round(r)
		}
	}
	for range 3 {
		if lo == 0 || math.IsInf(hi, 1) || hi-lo <= lo/16 {
			break
		}
		mid := math.Round((lo + hi) / 2)
		ok, err := probe(mid)
		if err != nil {
			return nil, 0, err
		}
		if ok {
			lo = mid
		} else {
			hi = mid
		}
	}
	// Confirm over the full duration, stepping down if it falls behind.
	var final *report
	sustainable := 0.0
	for try := 0; try < confirmTries && lo > 0; try++ {
		rep, ok, err := step(lo, cfg.Duration)
		if err != nil {
			return nil, 0, err
		}
		final = rep
		if ok {
			sustainable = lo
			break
		}
		lo = math.Round(lo * confirmStepDown)
	}
	if final == nil {
		// Not even the first rate kept up: report its run.
		final, _, _ = step(rate, cfg.Duration)
		if final == nil {
			return nil, 0, fmt.Errorf("no step ran")
		}
	}
	return final, sustainable, nil
}
