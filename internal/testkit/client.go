package testkit

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"testing"
	"time"
)

// ClientTimeout bounds each request of a client made by ClientFrom.
var ClientTimeout = 15 * time.Second

// ClientFrom returns an HTTP client whose connections leave from sourceIP, such as "127.0.0.2"
// (on Linux all of 127.0.0.0/8 is loopback and needs no setup), so a test can play a webhook
// source with a given address. "" leaves the choice to the system. The client opens a new
// connection for every request (no keep-alive), ignores proxy settings from the environment,
// follows no redirect, and gives up after ClientTimeout. It panics if sourceIP is not an IP
// address.
func ClientFrom(sourceIP string) *http.Client {
	dialer := &net.Dialer{Timeout: 5 * time.Second}
	if sourceIP != "" {
		ip := net.ParseIP(sourceIP)
		if ip == nil {
			panic(fmt.Sprintf("testkit.ClientFrom: %q is not an IP address", sourceIP))
		}
		dialer.LocalAddr = &net.TCPAddr{IP: ip}
	}
	return &http.Client{
		Timeout: ClientTimeout,
		Transport: &http.Transport{
			Proxy:               nil,
			DialContext:         dialer.DialContext,
			DisableKeepAlives:   true,
			DisableCompression:  true,
			ForceAttemptHTTP2:   false,
			TLSHandshakeTimeout: 5 * time.Second,
		},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

// Response is an HTTP response read in full.
type Response struct {
	// Status is the status code.
	Status int
	// Header holds the response headers.
	Header http.Header
	// Body holds the response body.
	Body []byte
}

// Send sends one request with client c and reads the whole response. The body is sent with its
// exact length (no chunking; nil sends none). Header values are copied as they are, keys
// included (so a lowercase key goes out lowercase); a "Host" entry sets the request's Host.
// Unlike Post, it does not need a testing.TB, so it may be called from any goroutine.
func Send(c *http.Client, method, url string, h http.Header, body []byte) (Response, error) {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		return Response{}, err
	}
	for k, vs := range h {
		if http.CanonicalHeaderKey(k) == "Host" {
			if len(vs) > 0 {
				req.Host = vs[0]
			}
			continue
		}
		req.Header[k] = append([]string(nil), vs...)
	}
	resp, err := c.Do(req)
	if err != nil {
		return Response{}, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return Response{}, fmt.Errorf("reading the response body: %w", err)
	}
	return Response{Status: resp.StatusCode, Header: resp.Header, Body: b}, nil
}

// TryPost is Send with method POST.
func TryPost(c *http.Client, url string, h http.Header, body []byte) (Response, error) {
	return Send(c, http.MethodPost, url, h, body)
}

// Post POSTs body to url with client c and headers h (see Send) and returns the response's
// status, headers and body. A transport error fails the test, so Post must be called from the
// test's goroutine: other goroutines use TryPost.
func Post(t testing.TB, c *http.Client, url string, h http.Header, body []byte) (status int, respHeader http.Header, respBody []byte) {
	t.Helper()
	resp, err := TryPost(c, url, h, body)
	if err != nil {
		t.Fatalf("POST %s: %v", url, err)
	}
	return resp.Status, resp.Header, resp.Body
}
