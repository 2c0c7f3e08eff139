// Package gwtest starts a real gateway (`virtualdom serve`, the Python package installed in the
// repository's .venv) for the Go tests, on 127.0.0.1 port 0, and learns its port from its
// "listening on" log line.
package gwtest

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Wait bounds every wait of the tests (a hang fails them instead of blocking CI).
const Wait = 30 * time.Second

var listening = regexp.MustCompile(`listening on (\S+):(\d+) `)

// Gateway is a running `virtualdom serve` process.
type Gateway struct {
	Address string
	DataDir string
	Args    []string
	cmd     *exec.Cmd
	mu      sync.Mutex
	log     strings.Builder
	exited  chan struct{}
}

// Executable is the `virtualdom` command: $VIRTUALDOM_BIN, or .venv/bin/virtualdom in the first
// folder above the working directory that has one.
func Executable(t testing.TB) string {
	if bin := os.Getenv("VIRTUALDOM_BIN"); bin != "" {
		return bin
	}
	return filepath.Join(RepoRoot(t), ".venv", "bin", "virtualdom")
}

// RepoRoot is the repository's top folder (the first one above the working directory with a
// pyproject.toml and a .venv).
func RepoRoot(t testing.TB) string {
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, ".venv", "bin", "virtualdom")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("no .venv/bin/virtualdom above the working directory: run scripts/test.sh " +
				"(or set VIRTUALDOM_BIN)")
		}
		dir = parent
	}
}

// Start runs a gateway with its own data folder (or dataDir if not ""), stopped at the test's
// end. extra are more `virtualdom serve` flags.
func Start(t testing.TB, dataDir string, extra ...string) *Gateway {
	t.Helper()
	if dataDir == "" {
		dataDir = t.TempDir()
	}
	return StartAt(t, "127.0.0.1:0", dataDir, extra...)
}

// StartAt is Start on a given address (a restart on the same port).
func StartAt(t testing.TB, address, dataDir string, extra ...string) *Gateway {
	t.Helper()
	args := append([]string{"serve", "--address", address, "--data-dir", dataDir}, extra...)
	cmd := exec.Command(Executable(t), args...)
	// The HTTP port on an ephemeral port too: its default (127.0.0.1:8080) would be taken by
	// the first of the gateways that the packages' tests run at the same time.
	cmd.Env = append(os.Environ(), "VIRTUALDOM_LOG_FORMAT=text", "VIRTUALDOM_HTTP_ADDRESS=127.0.0.1:0")
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout = io.Discard
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	g := &Gateway{DataDir: dataDir, Args: extra, cmd: cmd, exited: make(chan struct{})}
	found := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			line := sc.Text()
			g.mu.Lock()
			g.log.WriteString(line + "\n")
			g.mu.Unlock()
			if m := listening.FindStringSubmatch(line); m != nil {
				select {
				case found <- m[1] + ":" + m[2]:
				default:
				}
			}
		}
		_ = cmd.Wait()
		close(g.exited)
	}()
	t.Cleanup(g.Stop)
	select {
	case g.Address = <-found:
	case <-g.exited:
		t.Fatalf("the gateway exited before listening:\n%s", g.Log())
	case <-time.After(Wait):
		t.Fatalf("the gateway did not listen within %s:\n%s", Wait, g.Log())
	}
	return g
}

// Log is what the gateway logged so far.
func (g *Gateway) Log() string {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.log.String()
}

// Stop ends the gateway gracefully (SIGTERM) and waits for it; a no-op once it exited.
func (g *Gateway) Stop() {
	select {
	case <-g.exited:
		return
	default:
	}
	_ = g.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-g.exited:
	case <-time.After(Wait):
		_ = g.cmd.Process.Kill()
		<-g.exited
	}
}

// Kill ends the gateway with SIGKILL and waits for it.
func (g *Gateway) Kill() {
	_ = g.cmd.Process.Kill()
	<-g.exited
}

// Restart stops the gateway and starts it again on the same address and data.
func (g *Gateway) Restart(t testing.TB) *Gateway {
	t.Helper()
	g.Stop()
	return StartAt(t, g.Address, g.DataDir, g.Args...)
}

func (g *Gateway) String() string { return fmt.Sprintf("gateway %s (%s)", g.Address, g.DataDir) }
