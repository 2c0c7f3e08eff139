package virtualdom

import (
	"context"
	"net"
	"strings"

	"google.golang.org/grpc/credentials"
)

// TokenSource returns the bearer token (a JWT) for one call; it is asked before every call,
// so it can refresh an expiring token.
type TokenSource func(ctx context.Context) (string, error)

// StaticToken is a TokenSource that always returns token.
func StaticToken(token string) TokenSource {
	return func(context.Context) (string, error) { return token, nil }
}

// bearer sends "authorization: Bearer <token>" on every call (gRPC per-RPC credentials).
type bearer struct {
	source TokenSource
	// secure: the channel is TLS. gRPC refuses per-RPC credentials that require transport
	// security on a plaintext channel; a token over plaintext is allowed only to a loopback
	// target (a local gateway), as in the Python client.
	secure bool
}

func (b bearer) GetRequestMetadata(ctx context.Context, _ ...string) (map[string]string, error) {
	token, err := b.source(ctx)
	if err != nil {
		return nil, err
	}
	return map[string]string{"authorization": "Bearer " + token}, nil
}

func (b bearer) RequireTransportSecurity() bool { return b.secure }

var _ credentials.PerRPCCredentials = bearer{}

// loopback reports whether a target (host:port, or dns:///host:port, ...) names this host.
func loopback(target string) bool {
	if i := strings.Index(target, "///"); i >= 0 {
		target = target[i+3:]
	}
	host, _, err := net.SplitHostPort(target)
	if err != nil {
		host = target
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
