package testkit

import (
	"errors"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync"
	"testing"
	"time"
)

// ArrivalTimeout bounds WaitArrival.
var ArrivalTimeout = 10 * time.Second

// arrivalBuffer is how many unread arrivals Arrived keeps before it drops the oldest unread.
const arrivalBuffer = 1024

// Recorded is one request as the upstream received it.
type Recorded struct {
	// Seq numbers the requests from 1 in order of arrival (Reset starts again at 1).
	Seq int
	// Method is the request method.
	Method string
	// Path is the URL path, RawQuery the query string without "?".
	Path, RawQuery string
	// Host is the Host header as received.
	Host string
	// Header holds the request headers.
	Header http.Header
	// Body holds the exact bytes of the body.
	Body []byte
	// BodyErr is the error met while reading the body, "" if none.
	BodyErr string
	// ContentLength is the request's declared length (-1 when unknown).
	ContentLength int64
	// RemoteAddr is the peer's address, ip:port.
	RemoteAddr string
	// Status is the status the upstream answered (or will answer, while the request is held);
	// 0 for a request answered by an Answer (AnswerWith).
	Status int
}

// Answer answers one request in place of the upstream's usual answer (see AnswerWith), as an
// http.Handler would: it may write anything, hijack the connection, or reset it. The request's
// body has been read and recorded already.
type Answer func(w http.ResponseWriter, r *http.Request)

// ResetAfter is an Answer that sends status and the first part of a longer body, then resets
// the connection (RST): the upstream's answer breaks after its status line. The Content-Length
// announced is twice the part sent.
func ResetAfter(status int, part string) Answer {
	return func(w http.ResponseWriter, r *http.Request) {
		conn, buf, err := http.NewResponseController(w).Hijack()
		if err != nil {
			panic("testkit.ResetAfter: " + err.Error())
		}
		defer conn.Close()
		head := "HTTP/1.1 " + strconv.Itoa(status) + " " + http.StatusText(status) + "\r\n" +
			"Content-Type: text/plain; charset=utf-8\r\n" +
			"Content-Length: " + strconv.Itoa(2*len(part)) + "\r\n\r\n"
		_, _ = buf.WriteString(head + part)
		_ = buf.Flush()
		if tc, ok := conn.(*net.TCPConn); ok {
			_ = tc.SetLinger(0) // close with RST
		}
	}
}

// Upstream is a recording HTTP server on 127.0.0.1, started by StartUpstream. Each request's
// body is read in full and recorded before the upstream answers, with the next status queued by
// RespondWith (200 when the queue is empty), an "X-Upstream-Seq" header carrying Recorded.Seq,
// and the body "upstream <status>". It is safe for concurrent use.
type Upstream struct {
	srv      *http.Server
	addr     string
	arrivals chan Recorded
	closed   chan struct{}

	mu        sync.Mutex
	requests  []Recorded
	statuses  []int
	answers   []Answer
	gate      chan struct{} // non-nil while Block holds new arrivals
	gates     []func()      // every release func handed out, for cleanup
	closeOnce sync.Once
}

// StartUpstream starts an Upstream on a free port of 127.0.0.1. It is closed when the test
// ends, after every held request is released.
func StartUpstream(t testing.TB) *Upstream {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("upstream: listen: %v", err)
	}
	u := &Upstream{
		addr:     l.Addr().String(),
		arrivals: make(chan Recorded, arrivalBuffer),
		closed:   make(chan struct{}),
	}
	u.srv = &http.Server{Handler: http.HandlerFunc(u.serve), ReadHeaderTimeout: 10 * time.Second}
	go func() {
		if err := u.srv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
			t.Errorf("upstream: serve: %v", err)
		}
	}()
	t.Cleanup(u.Close)
	return u
}

func (u *Upstream) serve(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	rec := Recorded{
		Method:        r.Method,
		Path:          r.URL.Path,
		RawQuery:      r.URL.RawQuery,
		Host:          r.Host,
		Header:        r.Header.Clone(),
		Body:          body,
		ContentLength: r.ContentLength,
		RemoteAddr:    r.RemoteAddr,
		Status:        http.StatusOK,
	}
	if err != nil {
		rec.BodyErr = err.Error()
	}

	u.mu.Lock()
	var answer Answer
	switch {
	case len(u.answers) > 0:
		answer = u.answers[0]
		u.answers = u.answers[1:]
		rec.Status = 0
	case len(u.statuses) > 0:
		rec.Status = u.statuses[0]
		u.statuses = u.statuses[1:]
	}
	rec.Seq = len(u.requests) + 1
	u.requests = append(u.requests, rec)
	gate := u.gate
	u.mu.Unlock()

	u.signalArrival(rec)
	if gate != nil {
		select {
		case <-gate:
		case <-r.Context().Done():
		case <-u.closed:
		}
	}
	if answer != nil {
		answer(w, r)
		return
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("X-Upstream-Seq", strconv.Itoa(rec.Seq))
	w.WriteHeader(rec.Status)
	_, _ = io.WriteString(w, "upstream "+strconv.Itoa(rec.Status))
}

// signalArrival hands rec to Arrived without ever blocking the handler: when the buffer is
// full, the oldest unread arrival is dropped to make room.
func (u *Upstream) signalArrival(rec Recorded) {
	for range 2 {
		select {
		case u.arrivals <- rec:
			return
		default:
		}
		select {
		case <-u.arrivals:
		default:
		}
	}
}

// Addr returns the upstream's address, 127.0.0.1:<port>, as reverse_proxy takes it.
func (u *Upstream) Addr() string { return u.addr }

// URL returns http://<Addr> followed by path.
func (u *Upstream) URL(path string) string { return "http://" + u.addr + path }

// RespondWith queues statuses: the next requests are answered with them, in order of arrival,
// and the requests after those with 200 again. Calls append to the queue.
func (u *Upstream) RespondWith(statuses ...int) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.statuses = append(u.statuses, statuses...)
}

// AnswerWith queues custom answers: the next requests are answered by them, in order of
// arrival (before any status queued by RespondWith), and the requests after those as usual.
// Calls append to the queue.
func (u *Upstream) AnswerWith(answers ...Answer) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.answers = append(u.answers, answers...)
}

// Block makes the requests that arrive from now on wait, recorded but unanswered, until the
// returned release function is called (or the client goes away, or the upstream closes).
// Requests already held by an earlier Block stay held until that Block's release. Calling
// release more than once is harmless; the upstream releases everything when the test ends.
// Use Arrived or WaitArrival to learn that a request is being held.
func (u *Upstream) Block() (release func()) {
	gate := make(chan struct{})
	var once sync.Once
	release = func() {
		once.Do(func() {
			u.mu.Lock()
			if u.gate == gate {
				u.gate = nil
			}
			u.mu.Unlock()
			close(gate)
		})
	}
	u.mu.Lock()
	u.gate = gate
	u.gates = append(u.gates, release)
	u.mu.Unlock()
	return release
}

// Arrived returns a channel that receives every request, as recorded, the moment it has
// arrived and before the handler waits on a Block. It buffers up to 1024 unread arrivals and
// then drops the oldest; Reset empties it.
func (u *Upstream) Arrived() <-chan Recorded { return u.arrivals }

// WaitArrival returns the next request from Arrived, failing the test if none arrives within
// ArrivalTimeout.
func (u *Upstream) WaitArrival(t testing.TB) Recorded {
	t.Helper()
	timer := time.NewTimer(ArrivalTimeout)
	defer timer.Stop()
	select {
	case rec := <-u.arrivals:
		return rec
	case <-timer.C:
		t.Fatalf("upstream: no request arrived within %v (%d so far)", ArrivalTimeout, u.Count())
		return Recorded{}
	}
}

// Count returns how many requests have arrived since the start or the last Reset.
func (u *Upstream) Count() int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return len(u.requests)
}

// Requests returns the recorded requests in order of arrival. The caller may modify the
// result.
func (u *Upstream) Requests() []Recorded {
	u.mu.Lock()
	defer u.mu.Unlock()
	out := make([]Recorded, len(u.requests))
	for i, r := range u.requests {
		r.Header = r.Header.Clone()
		r.Body = append([]byte(nil), r.Body...)
		out[i] = r
	}
	return out
}

// Reset forgets the recorded requests, the queued statuses and answers, and empties Arrived.
// It does not release held requests.
func (u *Upstream) Reset() {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.requests = nil
	u.statuses = nil
	u.answers = nil
	for {
		select {
		case <-u.arrivals:
		default:
			return
		}
	}
}

// Close releases every held request and closes the server and its connections, so that later
// requests find the port closed (reverse_proxy then answers 502). Calling it again does
// nothing.
func (u *Upstream) Close() {
	u.closeOnce.Do(func() {
		u.mu.Lock()
		gates := u.gates
		u.mu.Unlock()
		for _, release := range gates {
			release()
		}
		close(u.closed)
		_ = u.srv.Close()
	})
}
