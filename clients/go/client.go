package virtualdom

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/keepalive"

	pb "github.com/virtualdom/virtualdom/clients/go/gen/virtualdom/v1"
)

const mib = 1024 * 1024

// Client is a connection to one gateway. It is safe for concurrent use; Close it when done.
type Client struct {
	conn  *grpc.ClientConn
	stub  pb.MemoryGatewayClient
	retry RetryPolicy
}

type config struct {
	tls              *tls.Config
	token            TokenSource
	retry            RetryPolicy
	keepalive        time.Duration
	keepaliveTimeout time.Duration
	maxMessageBytes  int
	dialOptions      []grpc.DialOption
}

// Option configures Dial.
type Option func(*config)

// WithTLS connects over TLS (cfg.RootCAs nil = the system's CAs; cfg.Certificates for mTLS).
func WithTLS(cfg *tls.Config) Option { return func(c *config) { c.tls = cfg } }

// WithToken sends a bearer token (JWT) on every call. Over plaintext only to a loopback target.
func WithToken(source TokenSource) Option { return func(c *config) { c.token = source } }

// WithRetry replaces DefaultRetryPolicy.
func WithRetry(p RetryPolicy) Option { return func(c *config) { c.retry = p } }

// WithKeepalive sets the keepalive ping interval and how long to wait for its answer (defaults
// 20 s and 20 s, as the seed's connection pool; 0 disables pings). The gateway refuses pings
// more often than every 5 s.
func WithKeepalive(interval, timeout time.Duration) Option {
	return func(c *config) { c.keepalive, c.keepaliveTimeout = interval, timeout }
}

// WithMaxMessageBytes bounds sent and received messages (default 64 MiB).
func WithMaxMessageBytes(n int) Option { return func(c *config) { c.maxMessageBytes = n } }

// WithDialOptions adds grpc.DialOptions (applied last, so they override this package's).
func WithDialOptions(opts ...grpc.DialOption) Option {
	return func(c *config) { c.dialOptions = append(c.dialOptions, opts...) }
}

// Dial makes a client of the gateway at target ("host:port"). Connecting is lazy: the first
// call connects, and a failed connection is retried by gRPC with backoff.
func Dial(target string, opts ...Option) (*Client, error) {
	cfg := config{
		retry:            DefaultRetryPolicy(),
		keepalive:        20 * time.Second,
		keepaliveTimeout: 20 * time.Second,
		maxMessageBytes:  64 * mib,
	}
	for _, o := range opts {
		o(&cfg)
	}
	dial := []grpc.DialOption{
		grpc.WithDefaultCallOptions(
			grpc.MaxCallRecvMsgSize(cfg.maxMessageBytes), grpc.MaxCallSendMsgSize(cfg.maxMessageBytes),
		),
		// The seed's HTTP/2 windows: 10 MiB per connection, 2 MiB per stream.
		grpc.WithInitialConnWindowSize(10 * mib),
		grpc.WithInitialWindowSize(2 * mib),
	}
	if cfg.tls != nil {
		dial = append(dial, grpc.WithTransportCredentials(credentials.NewTLS(cfg.tls)))
	} else {
		dial = append(dial, grpc.WithTransportCredentials(insecure.NewCredentials()))
	}
	if cfg.token != nil {
		if cfg.tls == nil && !loopback(target) {
			return nil, errors.New("virtualdom: a token needs TLS (WithTLS) unless the target is loopback")
		}
		dial = append(dial, grpc.WithPerRPCCredentials(bearer{source: cfg.token, secure: cfg.tls != nil}))
	}
	if cfg.keepalive > 0 {
		dial = append(dial, grpc.WithKeepaliveParams(keepalive.ClientParameters{
			Time: cfg.keepalive, Timeout: cfg.keepaliveTimeout, PermitWithoutStream: true,
		}))
	}
	dial = append(dial, cfg.dialOptions...)
	conn, err := grpc.NewClient(target, dial...)
	if err != nil {
		return nil, fmt.Errorf("virtualdom: %w", err)
	}
	return &Client{conn: conn, stub: pb.NewMemoryGatewayClient(conn), retry: cfg.retry}, nil
}

// Close closes the connection (calls in flight fail with codes.Canceled).
func (c *Client) Close() error { return c.conn.Close() }

// Stub is the generated gRPC client on the same connection, for what the wrapper does not cover
// (e.g. CollaborativeSession).
func (c *Client) Stub() pb.MemoryGatewayClient { return c.stub }

// unary runs one call, retried with backoff when idempotent and the failure is retryable.
func (c *Client) unary(ctx context.Context, idempotent bool, call func(context.Context) error) error {
	attempts := 1
	if idempotent {
		attempts = max(1, c.retry.MaxAttempts)
	}
	var err error
	for attempt := 0; attempt < attempts; attempt++ {
		if attempt > 0 {
			if serr := sleep(ctx, c.retry.backoff(attempt-1, err)); serr != nil {
				return err
			}
		}
		err = fromRPC(call(ctx))
		if err == nil || !c.retry.retryable(err) || ctx.Err() != nil {
			return err
		}
	}
	return err
}

// Ops makes a diff document {"ops": [...]} (docs/diff-format.md) from its operations.
func Ops(ops ...bson.M) bson.M { return bson.M{"ops": ops} }

// Clock is a vector clock: actor id -> counter.
type Clock map[string]uint64

func (c Clock) pb() *pb.VectorClock {
	if c == nil {
		return nil
	}
	return &pb.VectorClock{Counters: c}
}

func clockOf(v *pb.VectorClock) Clock { return Clock(v.GetCounters()) }

// WriteResult is the answer to a write.
type WriteResult struct {
	Version uint64
	Clock   Clock
	// EffectiveDiff is the change as applied (a BSON diff against the previous version); empty
	// when the write changed nothing.
	EffectiveDiff bson.Raw
	// Update is the CRDT update (Yjs v1) the write produced.
	Update []byte
	// Replayed: the gateway returned the result of an earlier write with the same request id.
	Replayed bool
	// RequestID is the request id that was sent ("" for none).
	RequestID string
}

type writeConfig struct {
	req       *pb.WriteDiffRequest
	noRequest bool
}

// WriteOption configures Write.
type WriteOption func(*writeConfig)

// WithActor records who makes the change.
func WithActor(actor string) WriteOption { return func(w *writeConfig) { w.req.Actor = actor } }

// WithRequestID sets the idempotency key (default: a random one, so retries are safe).
func WithRequestID(id string) WriteOption { return func(w *writeConfig) { w.req.RequestId = id } }

// WithoutRequestID sends no request id: the write is then never retried.
func WithoutRequestID() WriteOption { return func(w *writeConfig) { w.noRequest = true } }

// WithExpectedVersion applies the write only if the document is at version v (otherwise
// FAILED_PRECONDITION with reason VERSION_MISMATCH and the current version in the detail).
func WithExpectedVersion(v uint64) WriteOption {
	return func(w *writeConfig) { w.req.ExpectedVersion = &v }
}

// WithClock sets the causal context: the clock of the state the diff was made against.
func WithClock(c Clock) WriteOption { return func(w *writeConfig) { w.req.VectorClock = c.pb() } }

// WithMetadata attaches metadata delivered to subscribers with the change.
func WithMetadata(md map[string]string) WriteOption {
	return func(w *writeConfig) { w.req.Metadata = md }
}

// encodeDiff: raw BSON bytes as they are, anything else through bson.Marshal.
func encodeDiff(diff any) ([]byte, error) {
	switch d := diff.(type) {
	case []byte:
		return d, nil
	case bson.Raw:
		return d, nil
	}
	b, err := bson.Marshal(diff)
	if err != nil {
		return nil, fmt.Errorf("virtualdom: encoding the diff: %w", err)
	}
	return b, nil
}

// Write applies a diff to the document nodeID, durably (it creates the document when new).
// diff is a BSON document ([]byte / bson.Raw as they are, or anything bson.Marshal takes, e.g.
// Ops(...)).
func (c *Client) Write(ctx context.Context, nodeID string, diff any, opts ...WriteOption) (*WriteResult, error) {
	raw, err := encodeDiff(diff)
	if err != nil {
		return nil, err
	}
	w := writeConfig{req: &pb.WriteDiffRequest{NodeId: []byte(nodeID), DiffBson: raw}}
	for _, o := range opts {
		o(&w)
	}
	if w.noRequest {
		w.req.RequestId = ""
	} else if w.req.RequestId == "" && c.retry.MaxAttempts > 1 {
		w.req.RequestId = newRequestID()
	}
	var resp *pb.WriteDiffResponse
	err = c.unary(ctx, w.req.RequestId != "", func(ctx context.Context) error {
		var e error
		resp, e = c.stub.WriteDiff(ctx, w.req)
		return e
	})
	if err != nil {
		return nil, err
	}
	return &WriteResult{
		Version:       resp.GetNewVersion(),
		Clock:         clockOf(resp.GetVectorClock()),
		EffectiveDiff: bson.Raw(resp.GetEffectiveDiffBson()),
		Update:        resp.GetUpdate(),
		Replayed:      resp.GetReplayed(),
		RequestID:     w.req.RequestId,
	}, nil
}

func newRequestID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// Snapshot is a document's state at a version.
type Snapshot struct {
	Version uint64
	Clock   Clock
	// Raw is the BSON snapshot (for a sub-path read: {"value": <value at path>}).
	Raw bson.Raw
	// State is the CRDT state (Yjs v1 update), when asked for with WithState.
	State []byte
}

// Decode unmarshals the snapshot into v (e.g. *bson.M or a struct).
func (s *Snapshot) Decode(v any) error { return bson.Unmarshal(s.Raw, v) }

// ReadOption configures Read.
type ReadOption func(*pb.ReadSnapshotRequest)

// AtVersion reads a retained past version (a compacted one is OUT_OF_RANGE, HISTORY_COMPACTED).
func AtVersion(v uint64) ReadOption { return func(r *pb.ReadSnapshotRequest) { r.Version = &v } }

// AtPath reads a sub-path (dotted, as in diffs); the snapshot is {"value": <value>}.
func AtPath(path string) ReadOption { return func(r *pb.ReadSnapshotRequest) { r.Path = path } }

// WithState also returns the CRDT state (latest version only).
func WithState() ReadOption { return func(r *pb.ReadSnapshotRequest) { r.IncludeState = true } }

// Read reads the document nodeID (NOT_FOUND if it does not exist). Retried when retryable.
func (c *Client) Read(ctx context.Context, nodeID string, opts ...ReadOption) (*Snapshot, error) {
	req := &pb.ReadSnapshotRequest{NodeId: []byte(nodeID)}
	for _, o := range opts {
		o(req)
	}
	var resp *pb.ReadSnapshotResponse
	err := c.unary(ctx, true, func(ctx context.Context) error {
		var e error
		resp, e = c.stub.ReadSnapshot(ctx, req)
		return e
	})
	if err != nil {
		return nil, err
	}
	return &Snapshot{
		Version: resp.GetVersion(),
		Clock:   clockOf(resp.GetVectorClock()),
		Raw:     bson.Raw(resp.GetSnapshotBson()),
		State:   resp.GetState(),
	}, nil
}
