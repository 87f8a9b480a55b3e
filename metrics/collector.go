package metrics

import (
	"errors"
	"strconv"
	"sync"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/hourglassmq/hourglass/engine"
)

// Options configure a Collector. The zero value works; each default is
// named.
type Options struct {
	// MaxDestinations caps the distinct destination labels; destinations
	// first seen after the cap count under "other". Default 100.
	MaxDestinations int
	// DestinationLabel reduces a destination to its label. Its results
	// must be few: they are kept for the Collector's life. Default
	// DestinationLabel.
	DestinationLabel func(dest string) string
	// LatenessBuckets are the upper bounds, in seconds, of the lateness
	// histogram's buckets. Default DefaultLatenessBuckets.
	LatenessBuckets []float64
}

// Defaults of Options.
const DefaultMaxDestinations = 100

// DefaultLatenessBuckets span a tick (1 ms) to an hour of lateness.
var DefaultLatenessBuckets = []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600}

// OtherLabel is the destination label of destinations past the cap.
const OtherLabel = "other"

// Source is what a Collector reads at each scrape: *engine.Engine.
type Source interface {
	Stats() engine.Stats
}

// Collector is a prometheus.Collector for one engine. Its Events feed the
// per-destination counters; the Source given to Watch is read at each
// scrape. Safe for concurrent use.
type Collector struct {
	opts Options
	src  atomic.Pointer[Source]

	mu    sync.RWMutex // guards dests
	dests map[string]*destCounters
	other *destCounters

	scheduled, cancelled, fired, delivered, retried, dead, expired, panics *prometheus.CounterVec

	lateness       prometheus.Histogram
	storeFailed    prometheus.Gauge
	writeStalled   prometheus.Gauge
	writeStalls    prometheus.Counter
	shardsAttached prometheus.Gauge
	recoveryDone   prometheus.Gauge
}

// destCounters are one destination label's counters.
type destCounters struct {
	scheduled, cancelled, fired, delivered, retried, dead, expired, panics prometheus.Counter
}

// New returns a Collector registered on reg. reg is required: the package
// never uses the global registry on its own (pass
// prometheus.DefaultRegisterer for that).
func New(reg prometheus.Registerer, opts Options) (*Collector, error) {
	if reg == nil {
		return nil, errors.New("metrics: nil Registerer: pass a prometheus.NewRegistry() (or prometheus.DefaultRegisterer for the global one)")
	}
	if opts.MaxDestinations < 0 {
		return nil, errors.New("metrics: Options.MaxDestinations is negative")
	}
	if opts.MaxDestinations == 0 {
		opts.MaxDestinations = DefaultMaxDestinations
	}
	if opts.DestinationLabel == nil {
		opts.DestinationLabel = DestinationLabel
	}
	if opts.LatenessBuckets == nil {
		opts.LatenessBuckets = DefaultLatenessBuckets
	}
	counter := func(name, help string) *prometheus.CounterVec {
		return prometheus.NewCounterVec(prometheus.CounterOpts{Name: name, Help: help}, []string{"dest"})
	}
	gauge := func(name, help string) prometheus.Gauge {
		return prometheus.NewGauge(prometheus.GaugeOpts{Name: name, Help: help})
	}
	c := &Collector{
		opts:      opts,
		dests:     map[string]*destCounters{},
		scheduled: counter("hourglass_messages_scheduled_total", "New messages stored by Schedule (idempotent repeats excluded), by destination label."),
		cancelled: counter("hourglass_messages_cancelled_total", "Messages removed by Cancel, by destination label."),
		fired:     counter("hourglass_messages_fired_total", "Messages handed to a transport or handler whose outcome was reported (delivered, retried, dead-lettered, expired or cancelled in flight), by destination label."),
		delivered: counter("hourglass_messages_delivered_total", "Messages accepted by their transport or acked by their handler, by destination label."),
		retried:   counter("hourglass_messages_retried_total", "Failed delivery attempts that will be retried, by destination label."),
		dead:      counter("hourglass_messages_dead_lettered_total", "Messages moved to the dead letters, by destination label."),
		expired:   counter("hourglass_messages_expired_total", "Messages dropped past their deliver-by time, by destination label."),
		panics:    counter("hourglass_handler_panics_total", "Local handler calls that panicked (each also a failed attempt), by destination label."),
		lateness: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "hourglass_fire_lateness_seconds",
			Help:    "Hand-off time minus due time of messages handed to a transport or handler.",
			Buckets: opts.LatenessBuckets,
		}),
		storeFailed:    gauge("hourglass_store_failed", "1 once the store has failed: the engine refuses work until it is reopened."),
		writeStalled:   gauge("hourglass_store_write_stalled", "1 while the store's writes are stalled."),
		writeStalls:    prometheus.NewCounter(prometheus.CounterOpts{Name: "hourglass_store_write_stalls_total", Help: "Store write stalls begun."}),
		shardsAttached: gauge("hourglass_shards_attached", "Shards running on this engine."),
		recoveryDone:   gauge("hourglass_recovery_done", "1 once every attached shard has loaded its window after Open."),
	}
	c.other = c.newDest(OtherLabel)
	if err := reg.Register(c); err != nil {
		return nil, err
	}
	return c, nil
}

func (c *Collector) newDest(label string) *destCounters {
	return &destCounters{
		scheduled: c.scheduled.WithLabelValues(label), cancelled: c.cancelled.WithLabelValues(label),
		fired: c.fired.WithLabelValues(label), delivered: c.delivered.WithLabelValues(label),
		retried: c.retried.WithLabelValues(label), dead: c.dead.WithLabelValues(label),
		expired: c.expired.WithLabelValues(label), panics: c.panics.WithLabelValues(label),
	}
}

// dest returns the counters of dest's label, creating them below the cap.
func (c *Collector) dest(dest string) *destCounters {
	label := c.opts.DestinationLabel(dest)
	c.mu.RLock()
	d := c.dests[label]
	c.mu.RUnlock()
	if d != nil {
		return d
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if d = c.dests[label]; d != nil {
		return d
	}
	if label == OtherLabel || len(c.dests) >= c.opts.MaxDestinations {
		return c.other
	}
	d = c.newDest(label)
	c.dests[label] = d
	return d
}

// Watch makes each scrape read src.Stats() (an *engine.Engine). Call it
// once the engine is open; before, only the event counters are exported.
func (c *Collector) Watch(src Source) { c.src.Store(&src) }

// Events returns the listener that feeds the Collector; give it to
// engine.Options.Events, through Combine when there are others.
func (c *Collector) Events() engine.Events {
	return engine.Events{
		Scheduled: func(s engine.ScheduledInfo) {
			for dest, n := range s.ByDest {
				c.dest(dest).scheduled.Add(float64(n))
			}
		},
		Cancelled: func(x engine.CancelledInfo) { c.dest(x.Dest).cancelled.Inc() },
		Outcomes:  c.outcomes,
		HandlerPanic: func(p engine.PanicInfo) {
			c.dest(p.Dest).panics.Inc()
		},
		StoreFailed: func(error) { c.storeFailed.Set(1) },
		WriteStall: func(w engine.WriteStallInfo) {
			if w.Begin {
				c.writeStalled.Set(1)
				c.writeStalls.Inc()
			} else {
				c.writeStalled.Set(0)
			}
		},
		ShardAttached: func(int) { c.shardsAttached.Inc() },
		ShardDetached: func(int) { c.shardsAttached.Dec() },
		RecoveryDone:  func(engine.RecoveryStats) { c.recoveryDone.Set(1) },
	}
}

func (c *Collector) outcomes(o engine.OutcomeInfo) {
	d := c.dest(o.Dest)
	fired := o.Delivered + o.Retried + o.Dead + o.Expired + o.Gone
	d.fired.Add(float64(fired))
	d.delivered.Add(float64(o.Delivered))
	d.retried.Add(float64(o.Retried))
	d.dead.Add(float64(o.Dead))
	d.expired.Add(float64(o.Expired))
	for _, l := range o.Lateness {
		c.lateness.Observe(l.Seconds())
	}
}

// Descriptions of what Collect reads from Stats.
var (
	descLoaderLag       = desc("hourglass_window_loader_lag_seconds", "How far a shard's loaded window falls short of now+Window (0 when it reaches it), by shard.", "shard")
	descEarlyCaught     = desc("hourglass_messages_early_caught_total", "Messages a wheel released before their wall-clock due time (the clock stepped back) that were held back.")
	descNativeScheduled = desc("hourglass_messages_native_scheduled_total", "Messages handed to a broker's native scheduler at Schedule time.")
	descNativeFired     = desc("hourglass_messages_native_fired_total", "Natively scheduled messages resolved as fired by their broker.")
	descPending         = desc("hourglass_pending_messages", "Messages held in RAM (the loaded window), by shard.", "shard")
	descStorePending    = desc("hourglass_store_pending_messages", "Messages pending in the store, in the window or not, by shard.", "shard")
	descDead            = desc("hourglass_dead_letters", "Dead letters in the store.")
	descInFlight        = desc("hourglass_in_flight_messages", "Messages taken off a wheel whose outcome is not yet applied.")
	descLoaded          = desc("hourglass_window_loaded_messages_total", "Messages the window loader paged in from the store.")
	descEvicted         = desc("hourglass_window_evicted_messages_total", "Messages a full shard (MaxPending) dropped from RAM; they stay in the store and are paged in again.")
	descPushBacks       = desc("hourglass_schedule_push_backs_total", "Schedule and ScheduleBatch calls paced because the engine fell behind (PushBackLag).")
	descPushBackWait    = desc("hourglass_schedule_push_back_wait_seconds_total", "Time the paced Schedule and ScheduleBatch calls waited, in all.")
	descDuplicates      = desc("hourglass_duplicates_estimate", "Upper bound of deliveries that may repeat one from before the last crash.")
	descStoreInfo       = desc("hourglass_store_info", "1, labelled with the store's kind.", "kind")
	descDisk            = desc("hourglass_store_disk_bytes", "The store's disk usage in bytes.")
	descCommits         = desc("hourglass_store_commits_total", "Store commits since it was opened.")
	descRecords         = desc("hourglass_store_records_total", "Messages and outcomes in the store's commits since it was opened.")
	descSyncs           = desc("hourglass_store_syncs_total", "Durable (synced) store commits since it was opened.")
	descSyncP50         = desc("hourglass_store_sync_latency_p50_seconds", "Median store sync latency since the store was opened.")
	descSyncP99         = desc("hourglass_store_sync_latency_p99_seconds", "99th percentile store sync latency since the store was opened.")
	descSyncMax         = desc("hourglass_store_sync_latency_max_seconds", "Slowest store sync since the store was opened.")
	descRecStore        = desc("hourglass_recovery_store_seconds", "How long the store took to open and recover.")
	descRecPending      = desc("hourglass_recovery_pending_messages", "Messages pending in the store at Open.")
	descRecFirstFire    = desc("hourglass_recovery_first_fire_seconds", "Open to the first message taken off a wheel; 0 until then.")
	descRecFullLoad     = desc("hourglass_recovery_full_load_seconds", "Open to every shard's first full window; 0 until then.")
)

func desc(name, help string, labels ...string) *prometheus.Desc {
	return prometheus.NewDesc(name, help, labels, nil)
}

func (c *Collector) own() []prometheus.Collector {
	return []prometheus.Collector{c.scheduled, c.cancelled, c.fired, c.delivered, c.retried, c.dead, c.expired, c.panics,
		c.lateness, c.storeFailed, c.writeStalled, c.writeStalls, c.shardsAttached, c.recoveryDone}
}

// Describe implements prometheus.Collector.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	for _, m := range c.own() {
		m.Describe(ch)
	}
	for _, d := range []*prometheus.Desc{descLoaderLag, descEarlyCaught, descNativeScheduled, descNativeFired,
		descPending, descStorePending, descDead, descInFlight, descLoaded, descEvicted, descPushBacks, descPushBackWait, descDuplicates, descStoreInfo, descDisk,
		descCommits, descRecords, descSyncs, descSyncP50, descSyncP99, descSyncMax,
		descRecStore, descRecPending, descRecFirstFire, descRecFullLoad} {
		ch <- d
	}
}

// Collect implements prometheus.Collector: the event counters, then what
// the watched engine's Stats says now.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	for _, m := range c.own() {
		m.Collect(ch)
	}
	src := c.src.Load()
	if src == nil {
		return
	}
	st := (*src).Stats()
	counter := func(d *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	counter(descEarlyCaught, st.EarlyCaught)
	for shard, lag := range st.LoaderLag {
		gauge(descLoaderLag, lag.Seconds(), strconv.Itoa(shard))
	}
	counter(descNativeScheduled, st.NativeScheduled)
	counter(descNativeFired, st.NativeFired)
	for shard, n := range st.Pending {
		gauge(descPending, float64(n), strconv.Itoa(shard))
	}
	for shard, n := range st.Store.Pending {
		gauge(descStorePending, float64(n), strconv.Itoa(shard))
	}
	gauge(descDead, float64(st.Store.Dead))
	gauge(descInFlight, float64(st.InFlight))
	counter(descLoaded, st.Loaded)
	counter(descEvicted, st.Evicted)
	counter(descPushBacks, st.PushBacks)
	ch <- prometheus.MustNewConstMetric(descPushBackWait, prometheus.CounterValue, st.PushBackWait.Seconds())
	gauge(descDuplicates, float64(st.DuplicatesEstimate))
	gauge(descStoreInfo, 1, st.Store.Kind)
	gauge(descDisk, float64(st.Store.DiskBytes))
	counter(descCommits, st.Store.Commits)
	counter(descRecords, st.Store.Records)
	counter(descSyncs, st.Store.Sync.Count)
	gauge(descSyncP50, st.Store.Sync.P50.Seconds())
	gauge(descSyncP99, st.Store.Sync.P99.Seconds())
	gauge(descSyncMax, st.Store.Sync.Max.Seconds())
	gauge(descRecStore, st.Recovery.Store.Seconds())
	gauge(descRecPending, float64(st.Recovery.Pending))
	gauge(descRecFirstFire, st.Recovery.FirstFire.Seconds())
	gauge(descRecFullLoad, st.Recovery.FullLoad.Seconds())
}
