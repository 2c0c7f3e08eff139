package virtualdom_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/virtualdom/virtualdom/clients/go/internal/gwtest"
)

// The README's Go quick start, built as its own module (using this one through a replace
// directive) and run against a real gateway; its output is what its comments say.
func TestReadmeGoQuickStart(t *testing.T) {
	root := gwtest.RepoRoot(t)
	readme, err := os.ReadFile(filepath.Join(root, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile("(?s)```go go-quickstart\n(.*?)```").FindSubmatch(readme)
	if m == nil {
		t.Fatal("no ```go go-quickstart block in README.md")
	}
	dir := t.TempDir()
	here, err := filepath.Abs(".")
	if err != nil {
		t.Fatal(err)
	}
	gomod := "module quickstart\n\ngo 1.26\n\nrequire github.com/virtualdom/virtualdom/clients/go v0.0.0\n\n" +
		"replace github.com/virtualdom/virtualdom/clients/go => " + here + "\n"
	sum, err := os.ReadFile("go.sum")
	if err != nil {
		t.Fatal(err)
	}
	for name, data := range map[string][]byte{"go.mod": []byte(gomod), "go.sum": sum, "main.go": m[1]} {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	gw := gwtest.Start(t, "")
	cmd := exec.Command("go", "run", "-mod=mod", ".")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "VIRTUALDOM_ADDR="+gw.Address)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("go run: %v\n%s", err, out)
	}
	if got, want := strings.TrimSpace(string(out)), "1 2 Hi there\n1 gopher\n2 anonymous"; got != want {
		t.Fatalf("output %q, want %q", got, want)
	}
}
