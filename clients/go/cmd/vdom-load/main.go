// Command vdom-load is a load generator built on the Go client: what a Go service gets from a
// gateway. It prints one JSON object with the figures (benchmarks/load/go_client.py runs it
// beside ghz).
//
//	vdom-load --address HOST:PORT --call write --concurrency 64 --duration 2s [--nodes 64]
//	vdom-load --address HOST:PORT --call read  --concurrency 64 --duration 2s [--read-node ID]
//	vdom-load --address HOST:PORT --call subscribe --events 20000
//
// write: small WriteDiffs (set f = k) round-robin over --nodes documents; read: ReadSnapshot of
// a document written once; subscribe: writes --events changes to one document (not timed),
// then times one subscription replaying them from version 0 (events/s).
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"sort"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"

	virtualdom "github.com/virtualdom/virtualdom/clients/go"
)

type result struct {
	Call        string  `json:"call"`
	Concurrency int     `json:"concurrency,omitempty"`
	Connections int     `json:"connections,omitempty"`
	Calls       int64   `json:"calls,omitempty"`
	Events      int64   `json:"events,omitempty"`
	Seconds     float64 `json:"seconds"`
	Rate        float64 `json:"rate"`
	P50ms       float64 `json:"p50_ms,omitempty"`
	P99ms       float64 `json:"p99_ms,omitempty"`
	ClientCPU   float64 `json:"client_cpu_s"`
}

func main() {
	address := flag.String("address", "127.0.0.1:50051", "the gateway")
	call := flag.String("call", "write", "write, read or subscribe")
	concurrency := flag.Int("concurrency", 64, "workers making calls")
	connections := flag.Int("connections", 1, "HTTP/2 connections (one Client each), shared round-robin by the workers")
	duration := flag.Duration("duration", 2*time.Second, "how long to make calls (write, read)")
	nodes := flag.Int("nodes", 1, "documents the writes go to")
	events := flag.Int("events", 20000, "changes replayed by the subscribe call")
	requestIDs := flag.Bool("request-ids", false, "give writes request ids (the client's default; off to match ghz)")
	prefix := flag.String("prefix", "bench/go", "document id prefix")
	readNode := flag.String("read-node", "", "the document the read call reads (default: one it writes first)")
	flag.Parse()
	clients := make([]*virtualdom.Client, *connections)
	for i := range clients {
		c, err := virtualdom.Dial(*address, virtualdom.WithRetry(virtualdom.NoRetries()))
		check(err)
		defer func() { _ = c.Close() }()
		clients[i] = c
	}
	ctx := context.Background()
	var res result
	switch *call {
	case "write":
		res = unary(ctx, clients, *concurrency, *duration, func(ctx context.Context, c *virtualdom.Client, k int64) error {
			opts := []virtualdom.WriteOption{}
			if !*requestIDs {
				opts = append(opts, virtualdom.WithoutRequestID())
			}
			node := fmt.Sprintf("%s/w%d", *prefix, k%int64(*nodes))
			_, err := c.Write(ctx, node, virtualdom.Ops(bson.M{"op": "set", "path": "f", "value": k}), opts...)
			return err
		})
	case "read":
		node := *readNode
		if node == "" {
			node = *prefix + "/read"
			_, err := clients[0].Write(ctx, node, virtualdom.Ops(bson.M{"op": "set", "path": "f", "value": "x"}))
			check(err)
		}
		res = unary(ctx, clients, *concurrency, *duration, func(ctx context.Context, c *virtualdom.Client, _ int64) error {
			_, err := c.Read(ctx, node)
			return err
		})
	case "subscribe":
		res = subscribe(ctx, clients, *concurrency, *prefix+"/sub", *events)
	default:
		check(errors.New("--call is write, read or subscribe"))
	}
	res.Call, res.Connections = *call, *connections
	res.ClientCPU = cpuSeconds()
	check(json.NewEncoder(os.Stdout).Encode(res))
}

// unary runs fn from `workers` goroutines for d; any failed call fails the run.
func unary(ctx context.Context, clients []*virtualdom.Client, workers int, d time.Duration,
	fn func(context.Context, *virtualdom.Client, int64) error) result {
	var next atomic.Int64
	var mu sync.Mutex
	var latencies []time.Duration
	var firstErr error
	deadline := time.Now().Add(d)
	start := time.Now()
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func(c *virtualdom.Client) {
			defer wg.Done()
			mine := make([]time.Duration, 0, 4096)
			for time.Now().Before(deadline) {
				t0 := time.Now()
				if err := fn(ctx, c, next.Add(1)); err != nil {
					mu.Lock()
					firstErr = errors.Join(firstErr, err)
					mu.Unlock()
					return
				}
				mine = append(mine, time.Since(t0))
			}
			mu.Lock()
			latencies = append(latencies, mine...)
			mu.Unlock()
		}(clients[w%len(clients)])
	}
	wg.Wait()
	elapsed := time.Since(start).Seconds()
	check(firstErr)
	sort.Slice(latencies, func(i, j int) bool { return latencies[i] < latencies[j] })
	pct := func(p float64) float64 {
		if len(latencies) == 0 {
			return 0
		}
		return float64(latencies[int(p*float64(len(latencies)-1))]) / 1e6
	}
	n := int64(len(latencies))
	return result{Concurrency: workers, Calls: n, Seconds: elapsed, Rate: float64(n) / elapsed,
		P50ms: pct(0.50), P99ms: pct(0.99)}
}

func subscribe(ctx context.Context, clients []*virtualdom.Client, workers int, node string, events int) result {
	// Fill the document (not timed): `workers` writers, `events` changes in all.
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func(c *virtualdom.Client) {
			defer wg.Done()
			for k := next.Add(1); k <= int64(events); k = next.Add(1) {
				if _, err := c.Write(ctx, node, virtualdom.Ops(bson.M{"op": "set", "path": "f", "value": k}),
					virtualdom.WithoutRequestID()); err != nil {
					errs <- err
					return
				}
			}
		}(clients[w%len(clients)])
	}
	wg.Wait()
	close(errs)
	check(<-errs)
	start := time.Now()
	sub, err := clients[0].Subscribe(ctx, virtualdom.Document(node), virtualdom.FromVersion(0))
	check(err)
	defer sub.Close()
	var got int64
	for got < int64(events) {
		ev, err := sub.Recv()
		check(err)
		if ev.Change != nil {
			got++
		}
	}
	elapsed := time.Since(start).Seconds()
	return result{Events: got, Seconds: elapsed, Rate: float64(got) / elapsed}
}

func cpuSeconds() float64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()).Seconds()
}

func check(err error) {
	if err != nil {
		fmt.Fprintln(os.Stderr, "vdom-load:", err)
		os.Exit(1)
	}
}
