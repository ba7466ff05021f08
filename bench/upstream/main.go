// Command upstream is the benchmark's upstream: a minimal HTTP server on
// loopback that reads each request's body, answers 200 "ok" with
// keep-alives, and counts what it answered. GET /__count returns the count
// (itself not counted), so bench/run.sh can check every event that should
// have been forwarded was.
package main

import (
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"strconv"
	"sync/atomic"
	"time"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:0", "address to listen on (loopback)")
	flag.Parse()

	var count atomic.Int64
	mux := http.NewServeMux()
	mux.HandleFunc("GET /__count", func(w http.ResponseWriter, _ *http.Request) {
		_, _ = io.WriteString(w, strconv.FormatInt(count.Load(), 10))
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		count.Add(1)
		w.Header().Set("Content-Type", "text/plain")
		w.Header().Set("Content-Length", "2")
		w.WriteHeader(http.StatusOK)
		_, _ = io.WriteString(w, "ok")
	})

	l, err := net.Listen("tcp", *listen)
	if err != nil {
		log.Fatal(err)
	}
	// The address goes on stdout, for the script to read.
	fmt.Fprintln(os.Stdout, l.Addr().String())
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 5 * time.Minute}
	log.Fatal(srv.Serve(l))
}
