// Command gen pre-signs unique webhook events for the load benchmark, so that
// signing costs the load generator nothing and every request wrk sends is a
// new event (the guard would answer a repeated one as a duplicate without
// forwarding it).
//
// The events file, read by bench/events.lua, is text:
//
//	WGBENCH1 <provider> <body size> <count>
//	<body head>            the body up to the event id
//	<body tail>            the body after the event id
//	<id>\t<Name: value>\t<Name: value>...   one line per event
//
// Every body is head + id + tail, exactly <body size> bytes; the header lines
// are the provider's signature headers for that body. The secret is read
// from the environment variable named by -secret-env and never written.
package main

import (
	"bufio"
	"bytes"
	"flag"
	"fmt"
	"log"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/hookguard/caddy-webhook-guard/verify"
)

func main() {
	provider := flag.String("provider", "ivy", "signing scheme (ivy, standard, ...)")
	size := flag.Int("size", 1024, "body size in bytes")
	count := flag.Int("count", 100000, "number of unique events")
	out := flag.String("out", "", "events file to write (required)")
	secretEnv := flag.String("secret-env", "", "name of the environment variable holding the secret (required)")
	flag.Parse()
	if *out == "" || *secretEnv == "" {
		flag.Usage()
		os.Exit(2)
	}
	secret := os.Getenv(*secretEnv)
	if secret == "" {
		log.Fatalf("gen: $%s is empty", *secretEnv)
	}
	signer, err := verify.NewSigner(*provider, verify.Config{Secrets: []string{secret}})
	if err != nil {
		log.Fatalf("gen: %v", err)
	}

	now := time.Now()
	// A run tag keeps ids unique across runs; the counter is zero-padded so
	// every body has the same size.
	tag := strconv.FormatInt(now.UnixNano(), 36)
	idOf := func(i int) string { return fmt.Sprintf("evt_%s_%09d", tag, i) }
	head := `{"id":"`
	tail0 := `","type":"payment.succeeded","created":` + strconv.FormatInt(now.Unix(), 10) +
		`,"data":{"object":{"amount":4200,"currency":"eur","pad":"`
	tail1 := `"}}}`
	pad := *size - len(head) - len(idOf(0)) - len(tail0) - len(tail1)
	if pad < 0 {
		log.Fatalf("gen: -size %d is too small (at least %d)", *size, *size-pad)
	}
	tail := tail0 + strings.Repeat("x", pad) + tail1

	f, err := os.Create(*out)
	if err != nil {
		log.Fatalf("gen: %v", err)
	}
	w := bufio.NewWriterSize(f, 1<<20)
	fmt.Fprintf(w, "WGBENCH1 %s %d %d\n%s\n%s\n", *provider, *size, *count, head, tail)
	body := make([]byte, 0, *size)
	for i := range *count {
		id := idOf(i)
		body = append(append(append(body[:0], head...), id...), tail...)
		h, err := signer.Sign(body, id, now)
		if err != nil {
			log.Fatalf("gen: signing: %v", err)
		}
		names := make([]string, 0, len(h))
		for k := range h {
			names = append(names, k)
		}
		sort.Strings(names)
		var line bytes.Buffer
		line.WriteString(id)
		for _, k := range names {
			for _, v := range h[k] {
				if strings.ContainsAny(v, "\t\r\n") {
					log.Fatalf("gen: header %s has a control character", k)
				}
				line.WriteString("\t" + k + ": " + v)
			}
		}
		line.WriteByte('\n')
		if _, err := w.Write(line.Bytes()); err != nil {
			log.Fatalf("gen: %v", err)
		}
	}
	if err := w.Flush(); err != nil {
		log.Fatalf("gen: %v", err)
	}
	if err := f.Close(); err != nil {
		log.Fatalf("gen: %v", err)
	}
}
