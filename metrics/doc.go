// Package metrics exports a Hourglass engine's counters to Prometheus. It
// lives apart from package engine so that the engine has no direct import
// of the Prometheus client, and its API does not depend on one.
//
// # Basics
//
// A Collector takes its figures from two places: the engine's event
// listener (engine.Events), for what happens per destination as it
// happens, and Engine.Stats, read at each scrape, for gauges and totals.
// The events must be given to engine.Open, and Stats exists only after it,
// so setting up takes three steps:
//
//	reg := prometheus.NewRegistry()
//	col, err := metrics.New(reg, metrics.Options{})  // registers col on reg
//	opts.Events = metrics.Combine(col.Events(), myEvents) // both are called
//	eng, err := engine.Open(ctx, opts)
//	col.Watch(eng)                                   // Stats, read at each scrape
//	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
//
// The package never touches the global registry; pass
// prometheus.DefaultRegisterer to New to use it.
//
// # Metrics
//
// Counted from the events, per destination label (see below):
//
//	hourglass_messages_scheduled_total{dest}      new messages stored by Schedule (idempotent repeats excluded)
//	hourglass_messages_cancelled_total{dest}      messages removed by Cancel
//	hourglass_messages_fired_total{dest}          messages handed to a transport or handler whose outcome was reported:
//	                                              delivered + retried + dead-lettered + expired + cancelled in flight
//	hourglass_messages_delivered_total{dest}      accepted by the transport, or acked by the handler
//	hourglass_messages_retried_total{dest}        failed attempts that will be retried
//	hourglass_messages_dead_lettered_total{dest}  moved to the dead letters
//	hourglass_messages_expired_total{dest}        past their deliver-by time when due or when a retry would be
//	hourglass_handler_panics_total{dest}          local handlers that panicked (each also counts as a failed attempt)
//	hourglass_fire_lateness_seconds               histogram: hand-off time minus due time, per message handed off
//	hourglass_store_failed                        1 once the store has failed (the engine refuses work until reopened)
//	hourglass_store_write_stalled                 1 while the store's writes are stalled
//	hourglass_store_write_stalls_total            stalls begun
//	hourglass_shards_attached                     shards running on this engine
//	hourglass_recovery_done                       1 once every attached shard has loaded its window after Open
//
// Read from Stats at each scrape (0 or absent before Watch):
//
//	hourglass_messages_early_caught_total         released by a wheel before their wall-clock due time and held back
//	hourglass_messages_native_scheduled_total     handed to a broker's native scheduler at Schedule time
//	hourglass_messages_native_fired_total         of those, resolved as fired by the broker
//	hourglass_pending_messages{shard}             messages held in RAM (the loaded window)
//	hourglass_store_pending_messages{shard}       messages pending in the store, in the window or not
//	hourglass_dead_letters                        dead letters in the store
//	hourglass_in_flight_messages                  taken off a wheel, outcome not yet applied
//	hourglass_window_loaded_messages_total        messages the window loader paged in from the store
//	hourglass_window_evicted_messages_total       messages a full shard (MaxPending) dropped from RAM, kept in the store
//	hourglass_schedule_push_backs_total           Schedule calls paced because the engine fell behind (PushBackLag)
//	hourglass_schedule_push_back_wait_seconds_total  their total wait
//	hourglass_window_loader_lag_seconds{shard}    how far the loaded window falls short of now+Window (0: it reaches it)
//	hourglass_duplicates_estimate                 upper bound of deliveries that may repeat one from before the last crash
//	hourglass_store_info{kind}                    1, labelled with the store's kind ("pebble", "memory", ...)
//	hourglass_store_disk_bytes                    the store's disk usage
//	hourglass_store_commits_total                 store commits since it was opened
//	hourglass_store_records_total                 messages and outcomes in them
//	hourglass_store_syncs_total                   durable commits (synced), since the store was opened
//	hourglass_store_sync_latency_p50_seconds      median sync latency since the store was opened
//	hourglass_store_sync_latency_p99_seconds      99th percentile, same
//	hourglass_store_sync_latency_max_seconds      slowest, same
//	hourglass_recovery_store_seconds              how long the store took to open and recover
//	hourglass_recovery_pending_messages           messages pending at Open
//	hourglass_recovery_first_fire_seconds         Open to the first message taken off a wheel (0 until then)
//	hourglass_recovery_full_load_seconds          Open to every shard's first full window (0 until then)
//
// # Destination labels
//
// A destination is reduced to a label of bounded cardinality, never the
// full destination (DestinationLabel): scheme and host for webhooks
// ("https://hooks.example.com", user info dropped), scheme and the first
// subject token for NATS ("nats://orders" for "nats://orders.eu.created"),
// the topic for Kafka, the queue name for local queues ("local://emails").
// The first Options.MaxDestinations distinct labels seen are kept; every
// later one counts under "other". Options.DestinationLabel replaces the
// reduction.
//
// # Caveats
//
//   - Sync latency comes as three quantiles since the store was opened,
//     not as a histogram: Stats gives no bucket counts.
//   - The lateness histogram counts messages handed to a handler or
//     transport; expired messages and native shadows were not, so its count
//     can be below hourglass_messages_fired_total.
//   - A retried message fires again: fired counts attempts, not messages.
package metrics
