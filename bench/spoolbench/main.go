// Command spoolbench is the helper of bench/spool.sh, the spool's benchmark.
//
//	spoolbench up [-listen 127.0.0.1:0] [-hold]
//
// is the backend the spool delivers to: it prints its address on stdout,
// reads each request's body and answers 200, and keeps the figures of the
// deliveries: how many, how many distinct Webhook-Guard-Event-Id values
// (the difference is redeliveries), and the times of the first and the last
// (Unix nanoseconds, taken by this process as each request arrives).
// GET /__stats returns them as one line:
//
//	count=<n> distinct=<n> first_ns=<t> last_ns=<t> held=<n>
//
// With -hold it answers nothing: each request is held until its client goes
// away (counted as held, not as a delivery). A spool pointed at it with a
// long timeout has its few attempts in flight hang, and makes no other, while
// it is filled.
//
//	spoolbench fill -url <url> -n <count> [-c 32] [-size 1024] [-provider ivy] -secret-env <NAME>
//
// sends n new events, signed with the secret in $NAME, c at a time over
// keep-alive connections, and fails unless every one is answered 200 with
// Webhook-Guard-Outcome: spooled.
package main

import (
	"bytes"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hookguard/caddy-webhook-guard/verify"
)

func main() {
	log.SetFlags(0)
	log.SetPrefix("spoolbench: ")
	if len(os.Args) < 2 {
		log.Fatal("usage: spoolbench up|fill [flags]")
	}
	switch os.Args[1] {
	case "up":
		up(os.Args[2:])
	case "fill":
		fill(os.Args[2:])
	default:
		log.Fatalf("unknown command %q: want up or fill", os.Args[1])
	}
}

// upstream is the state of `spoolbench up`.
type upstream struct {
	hold bool

	mu          sync.Mutex
	count, held int64
	ids         map[string]struct{}
	first, last int64
}

func up(args []string) {
	fs := flag.NewFlagSet("up", flag.ExitOnError)
	listen := fs.String("listen", "127.0.0.1:0", "address to listen on (loopback)")
	hold := fs.Bool("hold", false, "answer nothing: hold each request until its client goes away")
	_ = fs.Parse(args)

	u := &upstream{hold: *hold, ids: map[string]struct{}{}}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /__stats", u.stats)
	mux.HandleFunc("/", u.serve)
	l, err := net.Listen("tcp", *listen)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Fprintln(os.Stdout, l.Addr().String())
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 5 * time.Minute}
	log.Fatal(srv.Serve(l))
}

func (u *upstream) serve(w http.ResponseWriter, r *http.Request) {
	arrived := time.Now().UnixNano()
	if u.hold {
		u.mu.Lock()
		u.held++
		u.mu.Unlock()
		<-r.Context().Done()
		return
	}
	if _, err := io.Copy(io.Discard, r.Body); err != nil {
		http.Error(w, "body: "+err.Error(), http.StatusBadRequest)
		return
	}
	id := r.Header.Get("Webhook-Guard-Event-Id")
	u.mu.Lock()
	u.count++
	u.ids[id] = struct{}{}
	if u.first == 0 {
		u.first = arrived
	}
	u.last = max(u.last, arrived)
	u.mu.Unlock()
	w.Header().Set("Content-Type", "text/plain")
	w.Header().Set("Content-Length", "2")
	w.WriteHeader(http.StatusOK)
	_, _ = io.WriteString(w, "ok")
}

func (u *upstream) stats(w http.ResponseWriter, _ *http.Request) {
	u.mu.Lock()
	line := fmt.Sprintf("count=%d distinct=%d first_ns=%d last_ns=%d held=%d\n", u.count, len(u.ids), u.first, u.last, u.held)
	u.mu.Unlock()
	_, _ = io.WriteString(w, line)
}

func fill(args []string) {
	fs := flag.NewFlagSet("fill", flag.ExitOnError)
	url := fs.String("url", "", "the guarded route, http://127.0.0.1:<port>/<path> (required)")
	n := fs.Int("n", 100000, "events to send")
	c := fs.Int("c", 32, "requests in flight")
	size := fs.Int("size", 1024, "body size in bytes")
	provider := fs.String("provider", "ivy", "signing scheme")
	secretEnv := fs.String("secret-env", "", "environment variable holding the secret (required)")
	_ = fs.Parse(args)
	secret := os.Getenv(*secretEnv)
	if *url == "" || secret == "" {
		log.Fatal("fill: -url and a non-empty -secret-env are required")
	}
	signer, err := verify.NewSigner(*provider, verify.Config{Secrets: []string{secret}})
	if err != nil {
		log.Fatalf("fill: %v", err)
	}
	client := &http.Client{
		Timeout:   time.Minute,
		Transport: &http.Transport{Proxy: nil, MaxIdleConnsPerHost: *c, DisableCompression: true},
	}
	tag := strconv.FormatInt(time.Now().UnixNano(), 36)
	var next, spooled atomic.Int64
	var failures atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	for range *c {
		wg.Go(func() {
			for {
				i := next.Add(1) - 1
				if i >= int64(*n) {
					return
				}
				id := fmt.Sprintf("evt_fill_%s_%09d", tag, i)
				head := `{"id":"` + id + `","type":"payment.succeeded","data":{"pad":"`
				body := []byte(head + strings.Repeat("x", max(*size-len(head)-4, 0)) + `"}}`)
				h, err := signer.Sign(body, id, time.Now())
				if err != nil {
					log.Fatalf("fill: signing: %v", err)
				}
				req, err := http.NewRequest(http.MethodPost, *url, bytes.NewReader(body))
				if err != nil {
					log.Fatalf("fill: %v", err)
				}
				for k, vs := range h {
					req.Header[k] = vs
				}
				req.Header.Set("Content-Type", "application/json")
				resp, err := client.Do(req)
				if err != nil {
					if failures.Add(1) <= 5 {
						log.Printf("fill: event %s: %v", id, err)
					}
					continue
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				_ = resp.Body.Close()
				if resp.StatusCode != http.StatusOK || resp.Header.Get("Webhook-Guard-Outcome") != "spooled" {
					if failures.Add(1) <= 5 {
						log.Printf("fill: event %s: %d %q", id, resp.StatusCode, resp.Header.Get("Webhook-Guard-Outcome"))
					}
					continue
				}
				spooled.Add(1)
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	fmt.Printf("spooled=%d failures=%d seconds=%.1f rps=%.0f\n", spooled.Load(), failures.Load(), elapsed.Seconds(), float64(spooled.Load())/elapsed.Seconds())
	if failures.Load() > 0 {
		os.Exit(1)
	}
}
