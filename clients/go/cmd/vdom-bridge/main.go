// Command vdom-bridge mirrors every document under a prefix of a virtualdom gateway into a local
// git repository: one canonical Extended JSON file per document, one commit per change (the
// actor as author, the version in the message). Killed and restarted, it resumes exactly where
// HEAD says it stopped. See package bridge.
//
//	vdom-bridge --address 127.0.0.1:50051 --prefix notes/ --repo ./notes-mirror
//
// It prints one line per commit: "<kind> <version> <node id as a JSON string>", kind being
// change, snapshot or resync.
package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"

	virtualdom "github.com/virtualdom/virtualdom/clients/go"
	"github.com/virtualdom/virtualdom/clients/go/bridge"
)

func main() {
	address := flag.String("address", "127.0.0.1:50051", "the gateway's host:port")
	prefix := flag.String("prefix", "", "mirror the documents whose id starts with this")
	dir := flag.String("repo", "", "the git repository to mirror into (created if missing)")
	caFile := flag.String("tls-ca", "", "connect over TLS, trusting these CA certificates (PEM)")
	useTLS := flag.Bool("tls", false, "connect over TLS with the system's CAs")
	tokenFile := flag.String("token-file", "", "send the JWT in this file with every call (re-read each call)")
	flag.Parse()
	if *dir == "" {
		fmt.Fprintln(os.Stderr, "vdom-bridge: --repo is required")
		os.Exit(2)
	}
	var opts []virtualdom.Option
	if *caFile != "" || *useTLS {
		cfg := &tls.Config{MinVersion: tls.VersionTLS12}
		if *caFile != "" {
			pem, err := os.ReadFile(*caFile)
			if err != nil {
				fail(err)
			}
			cfg.RootCAs = x509.NewCertPool()
			if !cfg.RootCAs.AppendCertsFromPEM(pem) {
				fail(fmt.Errorf("no certificate in %s", *caFile))
			}
		}
		opts = append(opts, virtualdom.WithTLS(cfg))
	}
	if *tokenFile != "" {
		opts = append(opts, virtualdom.WithToken(func(context.Context) (string, error) {
			b, err := os.ReadFile(*tokenFile)
			return strings.TrimSpace(string(b)), err
		}))
	}
	client, err := virtualdom.Dial(*address, opts...)
	if err != nil {
		fail(err)
	}
	defer func() { _ = client.Close() }()
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	b := &bridge.Bridge{
		Client: client, Prefix: *prefix, Dir: *dir,
		OnCommit: func(node string, version uint64, kind string) {
			name, _ := json.Marshal(node)
			fmt.Printf("%s %d %s\n", kind, version, name)
		},
	}
	// Run returns only when it fails or the signal cancelled it.
	if err := b.Run(ctx); !errors.Is(err, context.Canceled) {
		fail(err)
	}
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "vdom-bridge:", err)
	os.Exit(1)
}
