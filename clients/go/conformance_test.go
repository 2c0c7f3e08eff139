package virtualdom_test

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"go.mongodb.org/mongo-driver/v2/bson"
	"google.golang.org/grpc/codes"

	virtualdom "github.com/virtualdom/virtualdom/clients/go"
	"github.com/virtualdom/virtualdom/clients/go/internal/gwtest"
)

// The conformance vectors (tests/conformance/README.md), as this runner reads them.
type vectorFile struct {
	Format string `json:"format"`
	Cases  []struct {
		Name  string `json:"name"`
		Steps []struct {
			DiffHex         string          `json:"diff_hex"`
			Diff            json.RawMessage `json:"diff"`
			ExpectedVersion *uint64         `json:"expected_version"`
			Read            *struct {
				Version *uint64 `json:"version"`
				Path    string  `json:"path"`
			} `json:"read"`
			Expect *struct {
				Version          uint64          `json:"version"`
				SnapshotHex      string          `json:"snapshot_hex"`
				Snapshot         json.RawMessage `json:"snapshot"`
				EffectiveDiffHex string          `json:"effective_diff_hex"`
				EffectiveDiff    json.RawMessage `json:"effective_diff"`
			} `json:"expect"`
			Error *struct {
				Code   string `json:"code"`
				Reason string `json:"reason"`
			} `json:"error"`
		} `json:"steps"`
	} `json:"cases"`
}

func vectorFiles(t *testing.T) map[string]vectorFile {
	t.Helper()
	paths, err := filepath.Glob(filepath.Join(gwtest.RepoRoot(t), "tests", "conformance", "*.json"))
	if err != nil || len(paths) < 2 {
		t.Fatalf("conformance vectors: %v %v", paths, err)
	}
	out := map[string]vectorFile{}
	for _, p := range paths {
		data, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		var v vectorFile
		if err := json.Unmarshal(data, &v); err != nil {
			t.Fatalf("%s: %v", p, err)
		}
		if v.Format != "virtualdom-conformance/1" {
			t.Fatalf("%s: format %q", p, v.Format)
		}
		out[filepath.Base(p)] = v
	}
	return out
}

func unhex(t *testing.T, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// extJSONBytes is what the Go driver makes of a vector's canonical Extended JSON.
func extJSONBytes(t *testing.T, value json.RawMessage) []byte {
	t.Helper()
	var doc bson.D
	if err := bson.UnmarshalExtJSON(value, true, &doc); err != nil {
		t.Fatalf("Extended JSON %s: %v", value, err)
	}
	out, err := bson.Marshal(doc)
	if err != nil {
		t.Fatal(err)
	}
	// The Go driver reads {"$numberDouble": "NaN"} as math.NaN(), whose bits are
	// 0x7FF8000000000001, not the canonical quiet NaN 0x7FF8000000000000 the engine stores
	// (docs/diff-format.md): the only place the Go driver's Extended JSON differs.
	if bytes.Contains(value, []byte(`"NaN"`)) {
		goNaN := []byte{0x01, 0, 0, 0, 0, 0, 0xf8, 0x7f}
		out = bytes.ReplaceAll(out, goNaN, []byte{0, 0, 0, 0, 0, 0, 0xf8, 0x7f})
	}
	return out
}

func codeName(c codes.Code) string {
	// grpc-go's String() is "InvalidArgument"; the vectors use the proto names.
	names := map[codes.Code]string{
		codes.InvalidArgument: "INVALID_ARGUMENT", codes.FailedPrecondition: "FAILED_PRECONDITION",
		codes.OutOfRange: "OUT_OF_RANGE", codes.NotFound: "NOT_FOUND", codes.OK: "OK",
		codes.ResourceExhausted: "RESOURCE_EXHAUSTED", codes.PermissionDenied: "PERMISSION_DENIED",
	}
	if n, ok := names[c]; ok {
		return n
	}
	return c.String()
}

func TestConformanceVectorsAgainstTheGateway(t *testing.T) {
	gw := gwtest.Start(t, "")
	c := dial(t, gw.Address)
	ctx := ctxFor(t)
	checked := 0
	for file, vf := range vectorFiles(t) {
		for _, cs := range vf.Cases {
			node := fmt.Sprintf("conformance/go/%s/%s", file, cs.Name)
			var last []byte // the snapshot before each step (nothing yet)
			var lastVersion uint64
			for i, st := range cs.Steps {
				where := fmt.Sprintf("%s %s step %d", file, cs.Name, i)
				if st.Read != nil {
					var opts []virtualdom.ReadOption
					if st.Read.Version != nil {
						opts = append(opts, virtualdom.AtVersion(*st.Read.Version))
					}
					if st.Read.Path != "" {
						opts = append(opts, virtualdom.AtPath(st.Read.Path))
					}
					snap, err := c.Read(ctx, node, opts...)
					if err != nil {
						t.Fatalf("%s: %v", where, err)
					}
					if want := unhex(t, st.Expect.SnapshotHex); !bytes.Equal(snap.Raw, want) {
						t.Fatalf("%s: read %x, want %x", where, []byte(snap.Raw), want)
					}
					checked++
					continue
				}
				diff := unhex(t, st.DiffHex)
				if len(st.Diff) > 0 && string(st.Diff) != "null" && !bytes.Equal(extJSONBytes(t, st.Diff), diff) {
					t.Fatalf("%s: the diff's Extended JSON is not its hex in Go", where)
				}
				opts := []virtualdom.WriteOption{}
				if st.ExpectedVersion != nil {
					opts = append(opts, virtualdom.WithExpectedVersion(*st.ExpectedVersion))
				}
				w, err := c.Write(ctx, node, diff, opts...)
				if st.Error != nil {
					var e *virtualdom.Error
					if !asErr(err, &e) || codeName(e.Code) != st.Error.Code || e.Reason != st.Error.Reason {
						t.Fatalf("%s: got %v, want %s %s", where, err, st.Error.Code, st.Error.Reason)
					}
					// Nothing was applied.
					if last != nil {
						snap, err := c.Read(ctx, node)
						if err != nil || !bytes.Equal(snap.Raw, last) || snap.Version != lastVersion {
							t.Fatalf("%s: a rejected diff changed the document: %v %v", where, snap, err)
						}
					}
					checked++
					continue
				}
				if err != nil {
					t.Fatalf("%s: %v", where, err)
				}
				ex := st.Expect
				if w.Version != ex.Version {
					t.Fatalf("%s: version %d, want %d", where, w.Version, ex.Version)
				}
				if want := unhex(t, ex.EffectiveDiffHex); !bytes.Equal(w.EffectiveDiff, want) {
					t.Fatalf("%s: effective diff %s, want %s", where, w.EffectiveDiff, ex.EffectiveDiff)
				}
				snap, err := c.Read(ctx, node)
				if err != nil {
					t.Fatalf("%s: %v", where, err)
				}
				want := unhex(t, ex.SnapshotHex)
				if !bytes.Equal(snap.Raw, want) {
					t.Fatalf("%s: snapshot %s, want %s", where, snap.Raw, ex.Snapshot)
				}
				if !bytes.Equal(extJSONBytes(t, ex.Snapshot), want) {
					t.Fatalf("%s: the Go driver reads the snapshot's Extended JSON differently", where)
				}
				if ex.EffectiveDiffHex != "" && !bytes.Equal(extJSONBytes(t, ex.EffectiveDiff), unhex(t, ex.EffectiveDiffHex)) {
					t.Fatalf("%s: the Go driver reads the effective diff's Extended JSON differently", where)
				}
				last, lastVersion = want, snap.Version
				checked++
			}
		}
	}
	if checked < 40 {
		t.Fatalf("only %d steps checked", checked)
	}
}

func asErr(err error, target **virtualdom.Error) bool {
	if err == nil {
		return false
	}
	e, ok := err.(*virtualdom.Error)
	*target = e
	return ok
}
