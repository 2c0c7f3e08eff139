// Package virtualdom is the Go client of the virtualdom MemoryGateway: durable, collaborative
// BSON documents over gRPC.
//
//	c, err := virtualdom.Dial("127.0.0.1:50051")
//	if err != nil { ... }
//	defer c.Close()
//	w, err := c.Write(ctx, "notes/go", virtualdom.Ops(bson.M{"op": "set", "path": "title", "value": "Hi"}))
//	snap, err := c.Read(ctx, "notes/go")
//	var doc bson.M
//	err = snap.Decode(&doc)
//
// Every call takes a context (cancellation and deadlines end the call, and any retry wait).
// Reads, and writes that carry a request id (the client makes one unless told otherwise), are
// retried with exponential backoff on UNAVAILABLE, DEADLINE_EXCEEDED and RESOURCE_EXHAUSTED
// (after the gateway's retry-after hint). A Subscription's Recv resumes after a reconnect from
// the last version or resume token it delivered, dropping replays, so each document's versions
// arrive once, in order, without gaps.
//
// Payloads are BSON end to end (go.mongodb.org/mongo-driver/v2/bson): diffs are BSON documents
// as docs/diff-format.md specifies, snapshots are bson.Raw.
//
// The generated protobuf and gRPC code is the package
// github.com/virtualdom/virtualdom/clients/go/gen/virtualdom/v1 (made by scripts/gen_proto.py).
package virtualdom
