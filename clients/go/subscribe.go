package virtualdom

import (
	"context"
	"errors"
	"io"
	"sync"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"google.golang.org/grpc/codes"

	pb "github.com/virtualdom/virtualdom/clients/go/gen/virtualdom/v1"
)

// Target is what a subscription follows: Document(id) or Prefix(p).
type Target struct {
	node   *string
	prefix *string
}

// Document follows exactly one document.
func Document(nodeID string) Target { return Target{node: &nodeID} }

// Prefix follows every document whose id starts with prefix ("" = every document).
func Prefix(prefix string) Target { return Target{prefix: &prefix} }

type subscribeConfig struct {
	fromVersion  *uint64
	resumeToken  []byte
	sendSnapshot bool
	update       bool
	heartbeat    time.Duration
	progress     bool
}

// SubscribeOption configures Subscribe.
type SubscribeOption func(*subscribeConfig)

// FromVersion (single document) delivers the changes with version > v.
func FromVersion(v uint64) SubscribeOption { return func(s *subscribeConfig) { s.fromVersion = &v } }

// FromResumeToken (prefix) delivers what follows the event that carried token.
func FromResumeToken(token []byte) SubscribeOption {
	return func(s *subscribeConfig) { s.resumeToken = token }
}

// WithSnapshot sends the current snapshot(s) first, then every change after them.
func WithSnapshot() SubscribeOption { return func(s *subscribeConfig) { s.sendSnapshot = true } }

// WithUpdates includes each change's CRDT update.
func WithUpdates() SubscribeOption { return func(s *subscribeConfig) { s.update = true } }

// WithHeartbeat sets the gateway's heartbeat interval (minimum 50 ms; 0 = its default).
func WithHeartbeat(d time.Duration) SubscribeOption {
	return func(s *subscribeConfig) { s.heartbeat = d }
}

// WithProgress makes Recv return Progress events (heartbeats) too.
func WithProgress() SubscribeOption { return func(s *subscribeConfig) { s.progress = true } }

// Change is one change of one document.
type Change struct {
	NodeID  string
	Version uint64
	Clock   Clock
	// Diff is the effective change, a BSON diff against Version-1.
	Diff bson.Raw
	// Update is the CRDT update, with WithUpdates.
	Update    []byte
	Actor     string
	Timestamp time.Time
	Metadata  map[string]string
	// ResumeToken is the change's position in the gateway's log (resume a prefix after it).
	ResumeToken []byte
}

// SnapshotEvent is a document's state at the start of a WithSnapshot subscription.
type SnapshotEvent struct {
	NodeID      string
	Version     uint64
	Clock       Clock
	Raw         bson.Raw
	ResumeToken []byte
}

// Progress says the subscriber has every change up to ResumeToken.
type Progress struct {
	ResumeToken []byte
	Timestamp   time.Time
}

// Event is one item of a subscription: exactly one of its fields is set.
type Event struct {
	Change   *Change
	Snapshot *SnapshotEvent
	Progress *Progress
}

// Subscription is a resumable change stream; see Client.Subscribe. Recv is not safe for
// concurrent use; Close may be called from any goroutine.
type Subscription struct {
	client *Client
	ctx    context.Context
	cancel context.CancelFunc
	target Target
	cfg    subscribeConfig

	mu        sync.Mutex
	stream    pb.MemoryGateway_SubscribeChangesClient
	streamEnd context.CancelFunc

	pending       []Event
	lastVersion   *uint64
	token         []byte
	seen          map[string]uint64
	snapshotsDone bool
	failures      int
	// Reconnects counts the reconnects after a failed stream.
	Reconnects int
}

// Subscribe follows a document's or a prefix's changes. The returned Subscription reconnects
// by itself (with the client's RetryPolicy) and never delivers a version twice or skips one.
func (c *Client) Subscribe(ctx context.Context, target Target, opts ...SubscribeOption) (*Subscription, error) {
	if (target.node == nil) == (target.prefix == nil) {
		return nil, errors.New("virtualdom: subscribe to Document(id) or Prefix(p)")
	}
	var cfg subscribeConfig
	for _, o := range opts {
		o(&cfg)
	}
	if cfg.fromVersion != nil && cfg.resumeToken != nil {
		return nil, errors.New("virtualdom: give at most one of FromVersion and FromResumeToken")
	}
	if cfg.fromVersion != nil && target.node == nil {
		return nil, errors.New("virtualdom: FromVersion is for Document subscriptions; use FromResumeToken")
	}
	sctx, cancel := context.WithCancel(ctx)
	s := &Subscription{
		client: c, ctx: sctx, cancel: cancel, target: target, cfg: cfg,
		lastVersion: cfg.fromVersion, token: cfg.resumeToken, seen: map[string]uint64{},
		snapshotsDone: !cfg.sendSnapshot,
	}
	if err := s.open(); err != nil {
		cancel()
		return nil, err
	}
	return s, nil
}

// LastVersion is the version of the last event delivered (Document subscriptions), or false.
func (s *Subscription) LastVersion() (uint64, bool) {
	if s.lastVersion == nil {
		return 0, false
	}
	return *s.lastVersion, true
}

// ResumeToken is the log position the stream is at: persist it and pass it to FromResumeToken
// to continue later (Prefix subscriptions).
func (s *Subscription) ResumeToken() []byte { return s.token }

// Close ends the subscription; a Recv waiting in another goroutine returns context.Canceled.
func (s *Subscription) Close() { s.cancel() }

func (s *Subscription) request() *pb.SubscribeRequest {
	req := &pb.SubscribeRequest{IncludeUpdate: s.cfg.update, HeartbeatMs: uint32(s.cfg.heartbeat / time.Millisecond)}
	if s.target.node != nil {
		req.Target = &pb.SubscribeRequest_NodeId{NodeId: []byte(*s.target.node)}
	} else {
		req.Target = &pb.SubscribeRequest_Prefix{Prefix: []byte(*s.target.prefix)}
	}
	switch {
	case !s.snapshotsDone:
		// Start (again) as asked: the snapshots already delivered are filtered out.
		req.SendSnapshot = true
		if s.cfg.fromVersion != nil {
			req.Start = &pb.SubscribeRequest_FromVersion{FromVersion: *s.cfg.fromVersion}
		} else if s.cfg.resumeToken != nil {
			req.Start = &pb.SubscribeRequest_ResumeToken{ResumeToken: s.cfg.resumeToken}
		}
	case s.target.node != nil && s.lastVersion != nil:
		req.Start = &pb.SubscribeRequest_FromVersion{FromVersion: *s.lastVersion}
	case s.token != nil:
		req.Start = &pb.SubscribeRequest_ResumeToken{ResumeToken: s.token}
	}
	return req
}

func (s *Subscription) open() error {
	ctx, end := context.WithCancel(s.ctx)
	stream, err := s.client.stub.SubscribeChanges(ctx, s.request())
	if err != nil {
		end()
		return fromRPC(err)
	}
	s.mu.Lock()
	if s.streamEnd != nil {
		s.streamEnd()
	}
	s.stream, s.streamEnd = stream, end
	s.mu.Unlock()
	return nil
}

func (s *Subscription) seenVersion(node string) (uint64, bool) {
	if s.target.node != nil {
		if s.lastVersion == nil {
			return 0, false
		}
		return *s.lastVersion, true
	}
	v, ok := s.seen[node]
	return v, ok
}

func (s *Subscription) mark(node string, version uint64) {
	if s.target.node != nil {
		s.lastVersion = &version
	} else {
		s.seen[node] = version
	}
}

func micros(us int64) time.Time { return time.UnixMicro(us) }

// absorb turns one stream message into events, dropping what was delivered before a resume.
func (s *Subscription) absorb(msg *pb.ChangeEvent) {
	for _, sn := range msg.GetSnapshots() {
		node := string(sn.GetNodeId())
		if v, ok := s.seenVersion(node); ok && sn.GetVersion() <= v {
			continue
		}
		s.mark(node, sn.GetVersion())
		s.pending = append(s.pending, Event{Snapshot: &SnapshotEvent{
			NodeID: node, Version: sn.GetVersion(), Clock: clockOf(sn.GetVectorClock()),
			Raw: bson.Raw(sn.GetSnapshotBson()), ResumeToken: sn.GetResumeToken(),
		}})
		if s.target.node != nil {
			s.snapshotsDone = true
		}
	}
	for _, ch := range msg.GetChanges() {
		node := string(ch.GetNodeId())
		s.token = ch.GetResumeToken()
		s.snapshotsDone = true
		if v, ok := s.seenVersion(node); ok && ch.GetVersion() <= v {
			continue
		}
		s.mark(node, ch.GetVersion())
		s.pending = append(s.pending, Event{Change: &Change{
			NodeID: node, Version: ch.GetVersion(), Clock: clockOf(ch.GetVectorClock()),
			Diff: bson.Raw(ch.GetDiffBson()), Update: ch.GetUpdate(), Actor: ch.GetActor(),
			Timestamp: micros(ch.GetTimestampUs()), Metadata: ch.GetMetadata(),
			ResumeToken: ch.GetResumeToken(),
		}})
	}
	if p := msg.GetProgress(); p != nil {
		s.token = p.GetResumeToken()
		s.snapshotsDone = true
		if s.cfg.progress {
			s.pending = append(s.pending, Event{Progress: &Progress{
				ResumeToken: p.GetResumeToken(), Timestamp: micros(p.GetTimestampUs()),
			}})
		}
	}
}

// resumable: a retryable status, or the CANCELLED a gateway sends streams still open when it
// stops past its grace period (but not our own cancellation).
func (s *Subscription) resumable(err error) bool {
	if s.ctx.Err() != nil {
		return false
	}
	return s.client.retry.retryable(err) || CodeOf(err) == codes.Canceled
}

// Recv returns the next event, reconnecting as needed. It returns io.EOF when the gateway ended
// the stream normally, the context's error after Close or cancellation, and an *Error when the
// stream failed for good (e.g. OUT_OF_RANGE with reason HISTORY_COMPACTED: resync from a
// snapshot).
func (s *Subscription) Recv() (*Event, error) {
	for {
		if len(s.pending) > 0 {
			ev := s.pending[0]
			s.pending = s.pending[1:]
			return &ev, nil
		}
		if err := s.ctx.Err(); err != nil {
			return nil, err
		}
		s.mu.Lock()
		stream := s.stream
		s.mu.Unlock()
		var err error
		if stream == nil {
			// A reconnect whose stream could not even be opened: try again (below on failure).
			err = s.open()
		} else {
			var msg *pb.ChangeEvent
			msg, err = stream.Recv()
			if err == nil {
				s.failures = 0
				s.absorb(msg)
				continue
			}
			if errors.Is(err, io.EOF) {
				return nil, io.EOF
			}
			err = fromRPC(err)
		}
		if err == nil {
			continue
		}
		if ctxErr := s.ctx.Err(); ctxErr != nil {
			return nil, ctxErr
		}
		if !s.resumable(err) {
			return nil, err
		}
		var e *Error
		if asError(err, &e) && e.Code == codes.Unavailable && len(e.Detail.GetResumeToken()) > 0 {
			// The gateway's shutdown status: everything up to the token was sent.
			s.token = e.Detail.GetResumeToken()
			s.snapshotsDone = true
		}
		limit := s.client.retry.StreamMaxAttempts
		if limit >= 0 && s.failures >= limit {
			return nil, err
		}
		if serr := sleep(s.ctx, s.client.retry.backoff(s.failures, err)); serr != nil {
			return nil, serr
		}
		s.failures++
		s.Reconnects++
		s.mu.Lock()
		if s.streamEnd != nil {
			s.streamEnd()
		}
		s.stream, s.streamEnd = nil, nil
		s.mu.Unlock()
	}
}
