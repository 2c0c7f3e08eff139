package bridge

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// repo is a local git repository driven through the git command (the one tool every machine
// with git has; the bridge needs only init, add, commit and show).
type repo struct {
	dir string
	git string
}

func (r repo) run(ctx context.Context, env []string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, r.git, args...)
	cmd.Dir = r.dir
	cmd.Env = append(os.Environ(), env...)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("git %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(errOut.String()))
	}
	return out.String(), nil
}

// open makes the repository if it does not exist and puts its work tree back to HEAD: a bridge
// killed between writing files and committing them left changes no commit records (they are
// redone from the state HEAD holds). The bridge owns the repository: nothing else writes there.
func (r repo) open(ctx context.Context) error {
	if err := os.MkdirAll(r.dir, 0o755); err != nil {
		return err
	}
	if _, err := os.Stat(filepath.Join(r.dir, ".git")); os.IsNotExist(err) {
		if _, err := r.run(ctx, nil, "init", "-q", "-b", "main"); err != nil {
			return err
		}
	}
	// A kill during `git commit` can leave its lock behind; no other writer exists.
	_ = os.Remove(filepath.Join(r.dir, ".git", "index.lock"))
	if !r.hasHead(ctx) {
		return nil
	}
	if _, err := r.run(ctx, nil, "reset", "-q", "--hard", "HEAD"); err != nil {
		return err
	}
	_, err := r.run(ctx, nil, "clean", "-q", "-f", "-d")
	return err
}

func (r repo) hasHead(ctx context.Context) bool {
	_, err := r.run(ctx, nil, "rev-parse", "-q", "--verify", "HEAD")
	return err == nil
}

// show is a file's content at HEAD (nil, nil when there is no HEAD or no such file).
func (r repo) show(ctx context.Context, path string) ([]byte, error) {
	if !r.hasHead(ctx) {
		return nil, nil
	}
	out, err := r.run(ctx, nil, "show", "HEAD:"+path)
	if err != nil {
		if _, lsErr := r.run(ctx, nil, "cat-file", "-e", "HEAD:"+path); lsErr != nil {
			return nil, nil
		}
		return nil, err
	}
	return []byte(out), nil
}

// commit is one commit's author and message.
type commit struct {
	author  string
	when    time.Time
	message string
}

// write writes files (path -> content, relative to the repository) and commits them together.
func (r repo) write(ctx context.Context, files map[string][]byte, c commit) error {
	paths := make([]string, 0, len(files))
	for path, data := range files {
		full := filepath.Join(r.dir, filepath.FromSlash(path))
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(full, data, 0o644); err != nil {
			return err
		}
		paths = append(paths, path)
	}
	if _, err := r.run(ctx, nil, append([]string{"add", "--"}, paths...)...); err != nil {
		return err
	}
	date := fmt.Sprintf("@%d +0000", c.when.Unix())
	env := []string{
		"GIT_AUTHOR_NAME=" + c.author, "GIT_AUTHOR_EMAIL=" + email(c.author), "GIT_AUTHOR_DATE=" + date,
		"GIT_COMMITTER_NAME=vdom-bridge", "GIT_COMMITTER_EMAIL=vdom-bridge@virtualdom.invalid",
		"GIT_COMMITTER_DATE=" + date,
	}
	// --allow-empty: a change can leave the file as it was (e.g. setting a value it had), and
	// every change still gets its commit.
	_, err := r.run(ctx, env, "commit", "-q", "--allow-empty", "--no-verify", "-m", c.message)
	return err
}

// email is a stable address for an actor id (git needs one; actors are not email addresses).
func email(actor string) string {
	var b strings.Builder
	for _, r := range actor {
		if r < 0x80 && (r == '.' || r == '-' || r == '_' || r >= '0' && r <= '9' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z') {
			b.WriteRune(r)
		} else {
			b.WriteByte('_')
		}
	}
	if b.Len() == 0 {
		b.WriteString("anonymous")
	}
	return b.String() + "@virtualdom.invalid"
}
