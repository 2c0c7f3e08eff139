// Command crosswriter is the Go writer of tests/gateway/test_cross_language.py: it edits one
// document concurrently with a TypeScript writer and a Python session, then prints the
// snapshot it reads once every writer's changes are in.
//
//	crosswriter ADDRESS NODE NAME COUNT TOTAL
//
// It prints "ready", waits for a line on stdin (the start signal, so all writers run at once),
// makes COUNT writes as actor NAME (a splice into "text", an inc of "n", a set of the field
// NAME), follows the document until its version is TOTAL, and prints the snapshot as hex.
package main

import (
	"bufio"
	"context"
	"encoding/hex"
	"fmt"
	"os"
	"strconv"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"

	virtualdom "github.com/virtualdom/virtualdom/clients/go"
)

func main() {
	if len(os.Args) != 6 {
		fmt.Fprintln(os.Stderr, "usage: crosswriter ADDRESS NODE NAME COUNT TOTAL")
		os.Exit(2)
	}
	address, node, name := os.Args[1], os.Args[2], os.Args[3]
	count, _ := strconv.Atoi(os.Args[4])
	total, _ := strconv.ParseUint(os.Args[5], 10, 64)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	c, err := virtualdom.Dial(address)
	check(err)
	defer func() { _ = c.Close() }()
	fmt.Println("ready")
	_, err = bufio.NewReader(os.Stdin).ReadString('\n')
	check(err)
	for i := 0; i < count; i++ {
		_, err := c.Write(ctx, node, virtualdom.Ops(
			bson.M{"op": "splice", "path": "text", "index": 0, "insert": fmt.Sprintf("%s%d;", name, i)},
			bson.M{"op": "inc", "path": "n", "by": 1},
			bson.M{"op": "set", "path": name, "value": int32(i)},
		), virtualdom.WithActor(name))
		check(err)
	}
	sub, err := c.Subscribe(ctx, virtualdom.Document(node), virtualdom.FromVersion(0))
	check(err)
	for {
		ev, err := sub.Recv()
		check(err)
		if ev.Change != nil && ev.Change.Version >= total {
			break
		}
	}
	sub.Close()
	snap, err := c.Read(ctx, node, virtualdom.AtVersion(total))
	check(err)
	fmt.Println(hex.EncodeToString(snap.Raw))
}

func check(err error) {
	if err != nil {
		fmt.Fprintln(os.Stderr, "crosswriter:", err)
		os.Exit(1)
	}
}
