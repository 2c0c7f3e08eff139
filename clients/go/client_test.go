package virtualdom_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"google.golang.org/grpc/codes"

	virtualdom "github.com/virtualdom/virtualdom/clients/go"
	"github.com/virtualdom/virtualdom/clients/go/internal/gwtest"
)

func ctxFor(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), gwtest.Wait)
	t.Cleanup(cancel)
	return ctx
}

func dial(t *testing.T, addr string, opts ...virtualdom.Option) *virtualdom.Client {
	t.Helper()
	c, err := virtualdom.Dial(addr, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func set(path string, value any) bson.M { return bson.M{"op": "set", "path": path, "value": value} }

func recvChange(t *testing.T, sub *virtualdom.Subscription) *virtualdom.Change {
	t.Helper()
	for {
		ev, err := sub.Recv()
		if err != nil {
			t.Fatalf("recv: %v", err)
		}
		if ev.Change != nil {
			return ev.Change
		}
	}
}

func TestWriteReadSubscribe(t *testing.T) {
	gw := gwtest.Start(t, "")
	c := dial(t, gw.Address)
	ctx := ctxFor(t)
	sub, err := c.Subscribe(ctx, virtualdom.Document("notes/go"), virtualdom.FromVersion(0))
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	w, err := c.Write(ctx, "notes/go", virtualdom.Ops(set("title", "Hi")), virtualdom.WithActor("gopher"))
	if err != nil {
		t.Fatal(err)
	}
	if w.Version != 1 || w.RequestID == "" || w.Replayed || len(w.EffectiveDiff) == 0 {
		t.Fatalf("write result %+v", w)
	}
	splice := bson.M{"op": "splice", "path": "title", "index": 2, "insert": " there"}
	if _, err := c.Write(ctx, "notes/go", virtualdom.Ops(splice)); err != nil {
		t.Fatal(err)
	}
	snap, err := c.Read(ctx, "notes/go")
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Title string `bson:"title"`
	}
	if err := snap.Decode(&doc); err != nil || doc.Title != "Hi there" || snap.Version != 2 {
		t.Fatalf("snapshot %v %d %v", doc, snap.Version, err)
	}
	if len(snap.Clock) == 0 {
		t.Fatalf("no clock in %+v", snap)
	}
	old, err := c.Read(ctx, "notes/go", virtualdom.AtVersion(1), virtualdom.AtPath("title"))
	if err != nil || old.Raw.Lookup("value").StringValue() != "Hi" {
		t.Fatalf("old version: %v %v", old, err)
	}
	for want := uint64(1); want <= 2; want++ {
		ch := recvChange(t, sub)
		if ch.Version != want || ch.NodeID != "notes/go" {
			t.Fatalf("change %d: %+v", want, ch)
		}
		if want == 1 && ch.Actor != "gopher" {
			t.Fatalf("actor %q", ch.Actor)
		}
	}
	if v, ok := sub.LastVersion(); !ok || v != 2 {
		t.Fatalf("last version %d %v", v, ok)
	}
}

func TestErrorsCarryCodeAndReason(t *testing.T) {
	gw := gwtest.Start(t, "")
	c := dial(t, gw.Address)
	ctx := ctxFor(t)
	if _, err := c.Write(ctx, "e/doc", virtualdom.Ops(set("n", 1))); err != nil {
		t.Fatal(err)
	}
	_, err := c.Write(ctx, "e/doc", virtualdom.Ops(set("n", 2)), virtualdom.WithExpectedVersion(7))
	var e *virtualdom.Error
	if !errors.As(err, &e) || e.Code != codes.FailedPrecondition || e.Reason != "VERSION_MISMATCH" ||
		e.Detail.GetVersion() != 1 {
		t.Fatalf("expected-version error: %v", err)
	}
	if _, err := c.Write(ctx, "e/doc", []byte("not bson")); virtualdom.CodeOf(err) != codes.InvalidArgument {
		t.Fatalf("bad diff: %v", err)
	}
	if _, err := c.Read(ctx, "e/none"); virtualdom.CodeOf(err) != codes.NotFound {
		t.Fatalf("missing document: %v", err)
	}
	snap, err := c.Read(ctx, "e/doc")
	if err != nil || snap.Version != 1 || snap.Raw.Lookup("n").Int32() != 1 {
		t.Fatalf("a rejected write changed the document: %v %v", snap, err)
	}
	// Cancellation reaches the call.
	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := c.Read(cancelled, "e/doc"); virtualdom.CodeOf(err) != codes.Canceled {
		t.Fatalf("cancelled read: %v", err)
	}
}

func TestWriteRetriesWithItsRequestIDAcrossARestart(t *testing.T) {
	gw := gwtest.Start(t, "")
	policy := virtualdom.DefaultRetryPolicy()
	policy.MaxAttempts, policy.MaxBackoff = 200, 100*time.Millisecond
	c := dial(t, gw.Address, virtualdom.WithRetry(policy))
	ctx := ctxFor(t)
	first, err := c.Write(ctx, "r/doc", virtualdom.Ops(set("n", 1)), virtualdom.WithRequestID("req-1"))
	if err != nil {
		t.Fatal(err)
	}
	again, err := c.Write(ctx, "r/doc", virtualdom.Ops(set("n", 1)), virtualdom.WithRequestID("req-1"))
	if err != nil || !again.Replayed || again.Version != first.Version {
		t.Fatalf("same request id: %+v %v (first %+v)", again, err, first)
	}
	gw.Stop()
	done := make(chan error, 1)
	var result *virtualdom.WriteResult
	go func() {
		var err error
		result, err = c.Write(ctx, "r/doc", virtualdom.Ops(set("n", 2)))
		done <- err
	}()
	// The write fails (UNAVAILABLE) and waits to retry while the gateway is down; it lands once
	// it is back, exactly once.
	gw.Restart(t)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	snap, err := c.Read(ctx, "r/doc")
	if err != nil || result.Version != 2 || snap.Version != 2 {
		t.Fatalf("after the restart: %+v %+v %v", result, snap, err)
	}
	// Without a request id a write is not retried.
	noRetry := dial(t, "127.0.0.1:1", virtualdom.WithRetry(policy))
	short, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	if _, err := noRetry.Write(short, "r/doc", virtualdom.Ops(set("n", 3)), virtualdom.WithoutRequestID()); virtualdom.CodeOf(err) != codes.Unavailable {
		t.Fatalf("a write without request id: %v", err)
	}
}

func TestPrefixSubscriptionResumesAfterARestart(t *testing.T) {
	gw := gwtest.Start(t, "")
	policy := virtualdom.DefaultRetryPolicy()
	policy.MaxBackoff = 100 * time.Millisecond
	c := dial(t, gw.Address, virtualdom.WithRetry(policy))
	ctx := ctxFor(t)
	sub, err := c.Subscribe(ctx, virtualdom.Prefix("p/"), virtualdom.FromResumeToken(nil), virtualdom.WithSnapshot())
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	write := func(node string, n int) {
		if _, err := c.Write(ctx, node, virtualdom.Ops(set("n", n))); err != nil {
			t.Fatal(err)
		}
	}
	write("p/a", 1)
	write("p/b", 1)
	got := map[string][]uint64{}
	for len(got["p/a"])+len(got["p/b"]) < 2 {
		ch := recvChange(t, sub)
		got[ch.NodeID] = append(got[ch.NodeID], ch.Version)
	}
	gw.Restart(t)
	for n := 2; n <= 4; n++ {
		write("p/a", n)
	}
	write("p/b", 2)
	for len(got["p/a"])+len(got["p/b"]) < 6 {
		ch := recvChange(t, sub)
		got[ch.NodeID] = append(got[ch.NodeID], ch.Version)
	}
	if want := []uint64{1, 2, 3, 4}; !equal(got["p/a"], want) {
		t.Fatalf("p/a versions %v, want %v", got["p/a"], want)
	}
	if want := []uint64{1, 2}; !equal(got["p/b"], want) {
		t.Fatalf("p/b versions %v, want %v", got["p/b"], want)
	}
	if sub.Reconnects < 1 || len(sub.ResumeToken()) == 0 {
		t.Fatalf("reconnects %d, token %x", sub.Reconnects, sub.ResumeToken())
	}
	// Close ends a waiting Recv.
	errc := make(chan error, 1)
	go func() { _, err := sub.Recv(); errc <- err }()
	sub.Close()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Fatalf("recv after close: %v", err)
	}
}

func equal(a, b []uint64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// -- TLS and tokens ---------------------------------------------------------------------------

func writePEM(t *testing.T, path, kind string, der []byte) {
	t.Helper()
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: kind, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
}

// selfSigned makes a certificate for 127.0.0.1 and localhost; returns its pool, cert and key files.
func selfSigned(t *testing.T) (*x509.CertPool, string, string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "virtualdom test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, DNSNames: []string{"localhost"},
		KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign, IsCA: true,
		BasicConstraintsValid: true, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	writePEM(t, certFile, "CERTIFICATE", der)
	writePEM(t, keyFile, "PRIVATE KEY", keyDER)
	cert, _ := x509.ParseCertificate(der)
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return pool, certFile, keyFile
}

// hs256 mints a JWT signed with secret.
func hs256(t *testing.T, secret []byte, claims map[string]any) string {
	t.Helper()
	enc := base64.RawURLEncoding
	header, _ := json.Marshal(map[string]string{"alg": "HS256", "typ": "JWT"})
	body, err := json.Marshal(claims)
	if err != nil {
		t.Fatal(err)
	}
	signing := enc.EncodeToString(header) + "." + enc.EncodeToString(body)
	mac := hmac.New(sha256.New, secret)
	mac.Write([]byte(signing))
	return signing + "." + enc.EncodeToString(mac.Sum(nil))
}

func TestTLSAndPerCallToken(t *testing.T) {
	pool, certFile, keyFile := selfSigned(t)
	secret := []byte("a test secret of at least thirty-two bytes!")
	secretFile := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(secretFile, secret, 0o600); err != nil {
		t.Fatal(err)
	}
	gw := gwtest.Start(t, "", "--tls-cert", certFile, "--tls-key", keyFile, "--auth-hs256-secret-file", secretFile)
	ctx := ctxFor(t)
	exp := time.Now().Add(time.Hour).Unix()
	var mu sync.Mutex
	calls := 0
	token := func(context.Context) (string, error) {
		mu.Lock()
		calls++
		mu.Unlock()
		return hs256(t, secret, map[string]any{
			"sub": "gopher", "exp": exp, "vdom": map[string]any{"read": []string{""}, "write": []string{"go/"}},
		}), nil
	}
	tlsCfg := &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	c := dial(t, gw.Address, virtualdom.WithTLS(tlsCfg), virtualdom.WithToken(token))
	w, err := c.Write(ctx, "go/doc", virtualdom.Ops(set("ok", true)))
	if err != nil {
		t.Fatal(err)
	}
	if snap, err := c.Read(ctx, "go/doc"); err != nil || snap.Version != w.Version {
		t.Fatalf("read back: %+v %v", snap, err)
	}
	// The token's subject is the change's actor.
	sub, err := c.Subscribe(ctx, virtualdom.Document("go/doc"), virtualdom.FromVersion(0))
	if err != nil {
		t.Fatal(err)
	}
	if ch := recvChange(t, sub); ch.Actor != "gopher" {
		t.Fatalf("actor %q", ch.Actor)
	}
	sub.Close()
	if _, err := c.Write(ctx, "other/doc", virtualdom.Ops(set("ok", true))); virtualdom.CodeOf(err) != codes.PermissionDenied {
		t.Fatalf("write outside the grant: %v", err)
	}
	mu.Lock()
	if calls < 3 {
		t.Fatalf("the token source was asked %d times for 3 calls", calls)
	}
	mu.Unlock()
	anonymous := dial(t, gw.Address, virtualdom.WithTLS(tlsCfg), virtualdom.WithRetry(virtualdom.NoRetries()))
	if _, err := anonymous.Read(ctx, "go/doc"); virtualdom.CodeOf(err) != codes.Unauthenticated {
		t.Fatalf("no token: %v", err)
	}
	plain := dial(t, gw.Address, virtualdom.WithRetry(virtualdom.NoRetries()))
	if _, err := plain.Read(ctx, "go/doc"); virtualdom.CodeOf(err) != codes.Unavailable {
		t.Fatalf("plaintext to a TLS gateway: %v", err)
	}
	if _, err := virtualdom.Dial("gw.example:443", virtualdom.WithToken(virtualdom.StaticToken("x"))); err == nil {
		t.Fatal("a token over plaintext to a remote host was accepted")
	}
}
