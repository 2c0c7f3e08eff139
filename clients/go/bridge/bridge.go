// Package bridge mirrors every document under a prefix of a virtualdom gateway into a local git
// repository: one canonical Extended JSON file per document, one commit per change, authored by
// the change's actor at the change's time, with the version in the message.
//
// Exactly once across restarts: each commit also writes the bridge's state file
// (.vdom-bridge.json: the resume token and each document's committed version) in the same
// commit, so HEAD always says precisely how far the mirror got. A restarted bridge resets the
// work tree to HEAD and resumes the change stream from HEAD's token; changes at or below a
// document's committed version are skipped, so none is committed twice and none is missed.
//
// Compaction: when the gateway no longer has the history the bridge needs (the stream fails with
// HISTORY_COMPACTED, or a change's version can no longer be read), the bridge re-reads the
// snapshots and commits each document that moved as one "resync" commit.
package bridge

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/url"
	"sort"
	"strings"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"google.golang.org/grpc/codes"

	virtualdom "github.com/virtualdom/virtualdom/clients/go"
)

// StateFile is the bridge's state in the repository (its name starts with a dot, which no
// document's file does: see FileOf).
const StateFile = ".vdom-bridge.json"

// state is what HEAD's StateFile holds.
type state struct {
	Prefix string `json:"prefix"`
	// ResumeToken (hex) of the last change committed; "" before the first.
	ResumeToken string `json:"resume_token"`
	// SnapshotsDone: the initial (or resync) snapshots were all committed.
	SnapshotsDone bool `json:"snapshots_done"`
	// Versions: each document's committed version.
	Versions map[string]uint64 `json:"versions"`
}

// Bridge mirrors one prefix into one repository.
type Bridge struct {
	Client *virtualdom.Client
	Prefix string
	// Dir is the repository's folder (created and `git init`ed if missing).
	Dir string
	// Git is the git executable ("git" if empty).
	Git string
	// OnCommit, if set, is called after each commit (the command prints a line per commit).
	OnCommit func(node string, version uint64, kind string)

	repo  repo
	state state
}

// FileOf is the repository path of a document's file: its id's "/"-separated segments, each
// escaped (url.PathEscape; an empty segment is "%", a leading "." is "%2E" so that no segment is
// "", "." or "..", or starts like ".git" or the state file), plus ".json".
func FileOf(nodeID string) string {
	segs := strings.Split(nodeID, "/")
	for i, s := range segs {
		switch {
		case s == "":
			segs[i] = "%"
		case strings.HasPrefix(s, "."):
			segs[i] = "%2E" + url.PathEscape(s[1:])
		default:
			segs[i] = url.PathEscape(s)
		}
	}
	return strings.Join(segs, "/") + ".json"
}

// ExtJSON is a document's file content: canonical Extended JSON (every BSON type kept exactly),
// indented, with a final newline.
func ExtJSON(raw bson.Raw) ([]byte, error) {
	out, err := bson.MarshalExtJSONIndent(raw, true, false, "", "  ")
	if err != nil {
		return nil, err
	}
	return append(out, '\n'), nil
}

func (b *Bridge) load(ctx context.Context) error {
	git := b.Git
	if git == "" {
		git = "git"
	}
	b.repo = repo{dir: b.Dir, git: git}
	if err := b.repo.open(ctx); err != nil {
		return err
	}
	b.state = state{Prefix: b.Prefix, Versions: map[string]uint64{}}
	data, err := b.repo.show(ctx, StateFile)
	if err != nil || data == nil {
		return err
	}
	if err := json.Unmarshal(data, &b.state); err != nil {
		return fmt.Errorf("bridge: %s at HEAD: %w", StateFile, err)
	}
	if b.state.Prefix != b.Prefix {
		return fmt.Errorf("bridge: the repository mirrors prefix %q, not %q", b.state.Prefix, b.Prefix)
	}
	if b.state.Versions == nil {
		b.state.Versions = map[string]uint64{}
	}
	return nil
}

// commit writes a document's file and the state, as one commit.
func (b *Bridge) commit(ctx context.Context, node string, version uint64, raw bson.Raw, c commit, kind string) error {
	content, err := ExtJSON(raw)
	if err != nil {
		return fmt.Errorf("bridge: %s v%d as Extended JSON: %w", node, version, err)
	}
	b.state.Versions[node] = version
	st, err := json.MarshalIndent(b.state, "", "  ")
	if err != nil {
		return err
	}
	files := map[string][]byte{FileOf(node): content, StateFile: append(st, '\n')}
	if err := b.repo.write(ctx, files, c); err != nil {
		return err
	}
	if b.OnCommit != nil {
		b.OnCommit(node, version, kind)
	}
	return nil
}

func trailers(node string, version uint64, actor string) string {
	return fmt.Sprintf("\n\nVirtualdom-Node: %s\nVirtualdom-Version: %d\nVirtualdom-Actor: %s\n",
		oneLine(node), version, oneLine(actor))
}

func oneLine(s string) string {
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return ' '
		}
		return r
	}, s)
}

// summary names a diff's operations, e.g. "set title, splice body".
func summary(diff bson.Raw) string {
	ops, err := diff.LookupErr("ops")
	if err != nil {
		return "change"
	}
	arr, ok := ops.ArrayOK()
	if !ok {
		return "change"
	}
	values, _ := arr.Values()
	var parts []string
	for _, v := range values {
		doc, ok := v.DocumentOK()
		if !ok {
			continue
		}
		op, _ := doc.Lookup("op").StringValueOK()
		part := op
		if p, ok := doc.Lookup("path").StringValueOK(); ok {
			part += " " + p
		}
		parts = append(parts, part)
		if len(parts) == 5 {
			parts = append(parts, "...")
			break
		}
	}
	if len(parts) == 0 {
		return "change"
	}
	return strings.Join(parts, ", ")
}

// onSnapshot: a document's state at the start of the stream. A document the mirror is behind on
// is caught up change by change from its history (from version 0 for a new one), so the git
// log holds every change; when that history was compacted, the snapshot is committed instead.
func (b *Bridge) onSnapshot(ctx context.Context, s *virtualdom.SnapshotEvent) error {
	committed := b.state.Versions[s.NodeID]
	if s.Version <= committed {
		return nil
	}
	err := b.catchUp(ctx, s.NodeID, committed, s.Version)
	if virtualdom.ReasonOf(err) != "HISTORY_COMPACTED" {
		return err
	}
	kind, title := "snapshot", "snapshot at version"
	if committed > 0 {
		kind, title = "resync", "resync at version"
	}
	msg := fmt.Sprintf("%s: %s %d (history compacted)", oneLine(s.NodeID), title, s.Version) +
		trailers(s.NodeID, s.Version, "")
	return b.commit(ctx, s.NodeID, s.Version, s.Raw, commit{author: "virtualdom", when: time.Now(), message: msg}, kind)
}

// catchUp commits a document's changes from version from+1 to (at least) to.
func (b *Bridge) catchUp(ctx context.Context, node string, from, to uint64) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	sub, err := b.Client.Subscribe(ctx, virtualdom.Document(node), virtualdom.FromVersion(from))
	if err != nil {
		return err
	}
	defer sub.Close()
	for b.state.Versions[node] < to {
		ev, err := sub.Recv()
		if err != nil {
			return err
		}
		if ev.Change != nil {
			if err := b.commitChange(ctx, ev.Change); err != nil {
				return err
			}
		}
	}
	return nil
}

// commitChange commits one change (read back at its version) unless it is committed already.
func (b *Bridge) commitChange(ctx context.Context, ch *virtualdom.Change) error {
	if ch.Version <= b.state.Versions[ch.NodeID] {
		return nil // committed before a restart, or covered by a resync
	}
	snap, err := b.Client.Read(ctx, ch.NodeID, virtualdom.AtVersion(ch.Version))
	kind := "change"
	if virtualdom.CodeOf(err) == codes.OutOfRange {
		// That version was compacted away: re-read the latest snapshot instead.
		snap, err = b.Client.Read(ctx, ch.NodeID)
		kind = "resync"
	}
	if err != nil {
		return fmt.Errorf("bridge: reading %s v%d: %w", ch.NodeID, ch.Version, err)
	}
	actor := ch.Actor
	if actor == "" {
		actor = "anonymous"
	}
	var msg string
	if kind == "resync" {
		msg = fmt.Sprintf("%s: resync at version %d (history compacted)", oneLine(ch.NodeID), snap.Version)
	} else {
		msg = fmt.Sprintf("%s: version %d: %s", oneLine(ch.NodeID), ch.Version, summary(ch.Diff))
	}
	msg += trailers(ch.NodeID, snap.Version, actor)
	return b.commit(ctx, ch.NodeID, snap.Version, snap.Raw,
		commit{author: oneLine(actor), when: ch.Timestamp, message: msg}, kind)
}

// Run mirrors until ctx ends (then it returns ctx's error) or the stream fails for good.
func (b *Bridge) Run(ctx context.Context) error {
	if err := b.load(ctx); err != nil {
		return err
	}
	for {
		opts := []virtualdom.SubscribeOption{virtualdom.WithProgress()}
		if !b.state.SnapshotsDone {
			// The first run (or an interrupted resync): every document's snapshot first.
			opts = append(opts, virtualdom.WithSnapshot())
		} else {
			token, err := hex.DecodeString(b.state.ResumeToken)
			if err != nil {
				return fmt.Errorf("bridge: resume token in %s: %w", StateFile, err)
			}
			opts = append(opts, virtualdom.FromResumeToken(token))
		}
		sub, err := b.Client.Subscribe(ctx, virtualdom.Prefix(b.Prefix), opts...)
		if err != nil {
			return err
		}
		err = b.follow(ctx, sub)
		sub.Close()
		if virtualdom.ReasonOf(err) == "HISTORY_COMPACTED" {
			// The log behind our token is gone: resync every document from its snapshot.
			b.state.SnapshotsDone = false
			continue
		}
		return err
	}
}

func (b *Bridge) follow(ctx context.Context, sub *virtualdom.Subscription) error {
	for {
		ev, err := sub.Recv()
		if errors.Is(err, io.EOF) {
			return fmt.Errorf("bridge: the gateway ended the change stream")
		}
		if err != nil {
			return err
		}
		switch {
		case ev.Snapshot != nil:
			if err := b.onSnapshot(ctx, ev.Snapshot); err != nil {
				return err
			}
		case ev.Change != nil:
			// The stream's position moves with every change (committed atomically with it).
			b.state.ResumeToken = hex.EncodeToString(ev.Change.ResumeToken)
			b.state.SnapshotsDone = true
			if err := b.commitChange(ctx, ev.Change); err != nil {
				return err
			}
		case ev.Progress != nil && !b.state.SnapshotsDone:
			// Every snapshot has arrived: from here on, resume from the token.
			b.state.SnapshotsDone = true
			b.state.ResumeToken = hex.EncodeToString(ev.Progress.ResumeToken)
		}
	}
}

// Documents lists the documents the state says are mirrored, sorted.
func (b *Bridge) Documents() []string {
	out := make([]string, 0, len(b.state.Versions))
	for n := range b.state.Versions {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}
