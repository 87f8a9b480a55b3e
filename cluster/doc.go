// Package cluster is Hourglass's cluster store: the store contract (package
// store) on a compacted Kafka topic shared by every node of an
// application, through franz-go. Set a Kafka as engine.Options.Store on
// each node; the engine does not know it runs in a cluster.
//
// # Basics
//
//   - Truth: one compacted topic with P partitions (default 64, fixed at
//     creation); a partition is a shard. A message is a record keyed by a
//     random token, replaced by its later states and deleted by its
//     outcome's tombstone, so compaction keeps what is pending. Its ID is
//     its partition and the offset of its first record.
//   - Ownership: a consumer group (cooperative-sticky) assigns
//     partitions. A node fires only the partitions it owns. Taking one
//     over, it opens the partition's transactional producer (which fences
//     the previous owner and aborts its open transaction), writes an owner
//     record and catches up to it, then attaches the shard.
//   - Local index: every node applies every partition into its own Pebble
//     database (Kafka.Dir), with the applied offset in the same batch, and
//     feeds the engine what becomes pending in the partitions it owns.
//     Reads of any call are local.
//   - Any node serves any call: outcomes of a partition owned elsewhere
//     travel as request records in that partition; its owner claims the
//     message, writes the outcome and the answer in one transaction.
//   - Delivery: a Sender for kafka:// produces the delivered record in
//     the transaction of its outcome (exactly once within Kafka).
//
// docs/design.md ("Cluster mode") draws the log format and tells the
// protocol, the failure cases and what each costs.
//
// # Caveats
//
//   - An Append whose keyed messages belong to partitions owned by
//     different nodes is atomic per owner (a retry with the same keys is
//     safe); a Resolve's outcomes must be of one partition, or of
//     partitions all owned by the node called.
//   - Reads on a node lag the writes of other nodes by its applier
//     (milliseconds); a node's own writes are applied before they return.
//   - Every node applies every partition: the cluster's write rate is
//     bounded by one node's index.
//
// Lock order: Store.gate → Store.multi → part.mu → ownership.mu;
// part.waitMu, Store.ansMu, Store.statMu, assignMu and tpMu are leaves.
// part.tmu serialises a partition's ownership changes and is taken
// before any of them.
package cluster
