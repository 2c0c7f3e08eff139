package bridge_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"

	virtualdom "github.com/virtualdom/virtualdom/clients/go"
	"github.com/virtualdom/virtualdom/clients/go/bridge"
	"github.com/virtualdom/virtualdom/clients/go/internal/gwtest"
)

var (
	buildOnce sync.Once
	binary    string
	buildErr  error
)

// bridgeBinary builds cmd/vdom-bridge once per test run.
func bridgeBinary(t *testing.T) string {
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "vdom-bridge-test")
		if err != nil {
			buildErr = err
			return
		}
		binary = filepath.Join(dir, "vdom-bridge")
		out, err := exec.Command("go", "build", "-o", binary, "../cmd/vdom-bridge").CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build: %v: %s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binary
}

// commitLine is one line the bridge printed.
type commitLine struct {
	kind    string
	version uint64
	node    string
}

type running struct {
	cmd    *exec.Cmd
	lines  chan commitLine
	exited chan struct{}
	stderr bytes.Buffer
}

func startBridge(t *testing.T, addr, prefix, repo string) *running {
	t.Helper()
	r := &running{lines: make(chan commitLine, 10000), exited: make(chan struct{})}
	r.cmd = exec.Command(bridgeBinary(t), "--address", addr, "--prefix", prefix, "--repo", repo)
	r.cmd.Stderr = &r.stderr
	out, err := r.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := r.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			f := strings.SplitN(sc.Text(), " ", 3)
			v, _ := strconv.ParseUint(f[1], 10, 64)
			var node string
			_ = json.Unmarshal([]byte(f[2]), &node)
			r.lines <- commitLine{kind: f[0], version: v, node: node}
		}
		_ = r.cmd.Wait()
		close(r.exited)
	}()
	t.Cleanup(func() { r.kill() })
	return r
}

func (r *running) kill() {
	_ = r.cmd.Process.Signal(syscall.SIGKILL)
	<-r.exited
}

// drain is what an exited bridge printed that was not read yet.
func (r *running) drain() []commitLine {
	<-r.exited
	var out []commitLine
	for {
		select {
		case l := <-r.lines:
			out = append(out, l)
		default:
			return out
		}
	}
}

// next is the next commit line (fails on a hang or an exit).
func (r *running) next(t *testing.T) commitLine {
	t.Helper()
	select {
	case l := <-r.lines:
		return l
	case <-r.exited:
		select {
		case l := <-r.lines:
			return l
		default:
		}
		t.Fatalf("the bridge exited: %s", r.stderr.String())
	case <-time.After(gwtest.Wait):
		t.Fatalf("no commit within %s; bridge stderr: %s", gwtest.Wait, r.stderr.String())
	}
	return commitLine{}
}

// until reads commit lines until every document in want reached its version.
func (r *running) until(t *testing.T, want map[string]uint64, seen map[string]uint64) {
	t.Helper()
	done := func() bool {
		for n, v := range want {
			if seen[n] < v {
				return false
			}
		}
		return true
	}
	for !done() {
		l := r.next(t)
		seen[l.node] = max(seen[l.node], l.version)
	}
}

func git(t *testing.T, repo string, args ...string) string {
	t.Helper()
	out, err := exec.Command("git", append([]string{"-C", repo}, args...)...).Output()
	if err != nil {
		t.Fatalf("git %v: %v", args, err)
	}
	return string(out)
}

type gitCommit struct {
	sha, author, subject string
	node                 string
	version              uint64
}

// history is the repository's commits, oldest first, with their trailers parsed.
func history(t *testing.T, repo string) []gitCommit {
	t.Helper()
	var out []gitCommit
	for _, rec := range strings.Split(git(t, repo, "log", "--reverse", "--format=%H%x1f%an%x1f%s%x1f%B%x1e"), "\x1e") {
		f := strings.Split(strings.TrimLeft(rec, "\n"), "\x1f")
		if len(f) < 4 {
			continue
		}
		c := gitCommit{sha: f[0], author: f[1], subject: f[2]}
		for _, line := range strings.Split(f[3], "\n") {
			if v, ok := strings.CutPrefix(line, "Virtualdom-Node: "); ok {
				c.node = v
			}
			if v, ok := strings.CutPrefix(line, "Virtualdom-Version: "); ok {
				c.version, _ = strconv.ParseUint(v, 10, 64)
			}
		}
		out = append(out, c)
	}
	return out
}

func set(path string, value any) bson.M { return bson.M{"op": "set", "path": path, "value": value} }

func TestBridgeKilledMidStreamResumesExactly(t *testing.T) {
	gw := gwtest.Start(t, "")
	c, err := virtualdom.Dial(gw.Address)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = c.Close() }()
	ctx, cancel := context.WithTimeout(context.Background(), 3*gwtest.Wait)
	defer cancel()
	write := func(node, actor string, ops ...bson.M) {
		t.Helper()
		if _, err := c.Write(ctx, node, virtualdom.Ops(ops...), virtualdom.WithActor(actor)); err != nil {
			t.Fatal(err)
		}
	}
	// History from before the bridge started is mirrored too.
	write("m/pre", "dora", set("title", "before"))
	write("m/pre", "dora", set("n", int64(1)), set("when", bson.DateTime(1_700_000_000_000)))
	write("elsewhere/x", "eve", set("not", "mirrored"))
	repo := filepath.Join(t.TempDir(), "mirror")
	br := startBridge(t, gw.Address, "m/", repo)
	nodes := map[string]string{"m/a": "alice", "m/b": "bob", "m/c/deep": "carol"}
	want := map[string]uint64{"m/pre": 2}
	for i := 0; i < 10; i++ {
		for node, actor := range nodes {
			write(node, actor, set("i", int32(i)), set("by", actor))
			want[node]++
		}
	}
	// Kill it mid-stream: after some commits, with more changes not yet mirrored.
	seen := map[string]uint64{} // the highest committed version of each document, both runs
	for i := 0; i < 8; i++ {
		l := br.next(t)
		seen[l.node] = max(seen[l.node], l.version)
	}
	br.kill()
	for _, l := range br.drain() {
		seen[l.node] = max(seen[l.node], l.version)
	}
	if n := len(history(t, repo)); n < 8 || n >= 32 {
		t.Fatalf("%d commits when killed: not mid-stream", n)
	}
	for i := 10; i < 15; i++ {
		for node, actor := range nodes {
			write(node, actor, set("i", int32(i)), bson.M{"op": "splice", "path": "by", "index": 0, "insert": "~"})
			want[node]++
		}
	}
	br = startBridge(t, gw.Address, "m/", repo)
	br.until(t, want, seen)
	// One more live change after the restart.
	write("m/a", "alice", set("last", true))
	want["m/a"]++
	br.until(t, map[string]uint64{"m/a": want["m/a"]}, map[string]uint64{})

	// The git log is the documents' histories: each version once, in order, by its actor, and
	// each commit's file is the snapshot at that version.
	commits := history(t, repo)
	versions := map[string][]uint64{}
	for _, cm := range commits {
		versions[cm.node] = append(versions[cm.node], cm.version)
	}
	for node, last := range want {
		if got := versions[node]; len(got) != int(last) || got[0] != 1 || got[len(got)-1] != last {
			t.Fatalf("%s: committed versions %v, want 1..%d", node, got, last)
		}
		for i, v := range versions[node] {
			if v != uint64(i+1) {
				t.Fatalf("%s: committed versions %v", node, versions[node])
			}
		}
	}
	if len(commits) != int(want["m/a"]+want["m/b"]+want["m/c/deep"]+want["m/pre"]) {
		t.Fatalf("%d commits, want one per change: %v", len(commits), versions)
	}
	actors := map[string]map[uint64]string{}
	for node := range want {
		sub, err := c.Subscribe(ctx, virtualdom.Document(node), virtualdom.FromVersion(0))
		if err != nil {
			t.Fatal(err)
		}
		actors[node] = map[uint64]string{}
		for uint64(len(actors[node])) < want[node] {
			ev, err := sub.Recv()
			if err != nil {
				t.Fatal(err)
			}
			if ev.Change != nil {
				actors[node][ev.Change.Version] = ev.Change.Actor
			}
		}
		sub.Close()
	}
	for _, cm := range commits {
		if cm.author != actors[cm.node][cm.version] {
			t.Fatalf("%s v%d: author %q, actor %q", cm.node, cm.version, cm.author, actors[cm.node][cm.version])
		}
		if !strings.Contains(cm.subject, fmt.Sprintf("version %d", cm.version)) {
			t.Fatalf("subject %q lacks the version", cm.subject)
		}
		snap, err := c.Read(ctx, cm.node, virtualdom.AtVersion(cm.version))
		if err != nil {
			t.Fatal(err)
		}
		expected, err := bridge.ExtJSON(snap.Raw)
		if err != nil {
			t.Fatal(err)
		}
		if got := git(t, repo, "show", cm.sha+":"+bridge.FileOf(cm.node)); got != string(expected) {
			t.Fatalf("%s v%d: file\n%s\nwant\n%s", cm.node, cm.version, got, expected)
		}
	}
	if _, err := os.Stat(filepath.Join(repo, "elsewhere")); !os.IsNotExist(err) {
		t.Fatalf("a document outside the prefix was mirrored: %v", err)
	}
	var st struct {
		ResumeToken string            `json:"resume_token"`
		Versions    map[string]uint64 `json:"versions"`
	}
	if err := json.Unmarshal([]byte(git(t, repo, "show", "HEAD:"+bridge.StateFile)), &st); err != nil ||
		st.ResumeToken == "" || st.Versions["m/a"] != want["m/a"] {
		t.Fatalf("state at HEAD: %+v %v", st, err)
	}
	if status := git(t, repo, "status", "--porcelain"); status != "" {
		t.Fatalf("uncommitted files: %s", status)
	}
}

func TestBridgeResyncsFromTheSnapshotAfterCompaction(t *testing.T) {
	gw := gwtest.Start(t, "", "--feed-capacity", "4", "--snapshot-every", "5", "--retain-versions", "1")
	c, err := virtualdom.Dial(gw.Address)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = c.Close() }()
	ctx, cancel := context.WithTimeout(context.Background(), 3*gwtest.Wait)
	defer cancel()
	write := func(n int) {
		t.Helper()
		if _, err := c.Write(ctx, "k/doc", virtualdom.Ops(set("n", int32(n))), virtualdom.WithActor("kim")); err != nil {
			t.Fatal(err)
		}
	}
	repo := filepath.Join(t.TempDir(), "mirror")
	br := startBridge(t, gw.Address, "k/", repo)
	for n := 1; n <= 3; n++ {
		write(n)
	}
	br.until(t, map[string]uint64{"k/doc": 3}, map[string]uint64{})
	br.kill()
	// While the bridge is away the history it would resume from is compacted (and the gateway
	// restarts, so its in-memory window is gone too).
	for n := 4; n <= 40; n++ {
		write(n)
	}
	gw.Restart(t)
	br = startBridge(t, gw.Address, "k/", repo)
	l := br.next(t)
	if l.kind != "resync" || l.version != 40 || l.node != "k/doc" {
		t.Fatalf("first commit after compaction: %+v", l)
	}
	write(41)
	if l := br.next(t); l.kind != "change" || l.version != 41 {
		t.Fatalf("live change after the resync: %+v", l)
	}
	snap, err := c.Read(ctx, "k/doc")
	if err != nil {
		t.Fatal(err)
	}
	expected, _ := bridge.ExtJSON(snap.Raw)
	if got := git(t, repo, "show", "HEAD:"+bridge.FileOf("k/doc")); got != string(expected) {
		t.Fatalf("HEAD file %s, want %s", got, expected)
	}
	commits := history(t, repo)
	var subjects []string
	for _, cm := range commits {
		subjects = append(subjects, cm.subject)
	}
	if len(commits) != 5 || !strings.Contains(commits[3].subject, "resync at version 40") {
		t.Fatalf("commits: %q", subjects)
	}
}

func TestFileOfEscapesEverySegment(t *testing.T) {
	cases := map[string]string{
		"notes/a":       "notes/a.json",
		"a//b":          "a/%/b.json",
		"../etc/passwd": "%2E./etc/passwd.json",
		".git/config":   "%2Egit/config.json",
		"sp ace/ü?":     "sp%20ace/%C3%BC%3F.json",
	}
	for in, want := range cases {
		if got := bridge.FileOf(in); got != want {
			t.Errorf("FileOf(%q) = %q, want %q", in, got, want)
		}
	}
}
