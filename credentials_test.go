package webhookguard

import (
	"bytes"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

const testIVPAYKey = "ivpay-unit-test-key-0123"

// headerStub is a next handler that keeps the request headers it received
// and answers status, or returns err.
type headerStub struct {
	got    []http.Header
	err    error
	status int
}

func (s *headerStub) ServeHTTP(w http.ResponseWriter, r *http.Request) error {
	s.got = append(s.got, r.Header.Clone())
	if s.err != nil {
		return s.err
	}
	w.WriteHeader(max(s.status, http.StatusOK))
	return nil
}

func ivpayHandler(t *testing.T, forward bool) *Handler {
	h, _ := guard(t, &Handler{Provider: "ivpay", APIKeys: []string{testIVPAYKey}, AllowIPs: []string{"127.0.0.1"},
		DedupeOff: true, ForwardCredentials: forward})
	return h
}

// TestVerifiedKeyNotForwarded: the verified X-API-KEY is removed from the
// forwarded request unless forward_credentials keeps it.
func TestVerifiedKeyNotForwarded(t *testing.T) {
	for _, forward := range []bool{false, true} {
		h := ivpayHandler(t, forward)
		next := &headerStub{}
		w, err := send(t, h, next, http.MethodPost, "127.0.0.1:4000", http.Header{"X-Api-Key": {testIVPAYKey}}, `{"payment_id":"p1","status":"paid"}`)
		if err != nil || w.Code != http.StatusOK || len(next.got) != 1 {
			t.Fatalf("forward_credentials=%v: status %d, error %v, %d forwarded", forward, w.Code, err, len(next.got))
		}
		if got := next.got[0].Get("X-Api-Key"); (got == testIVPAYKey) != forward {
			t.Errorf("forward_credentials=%v: the upstream got X-API-KEY %q", forward, got)
		}
	}
}

// TestCredentialRequestErrorsAnswered: the refusal or failure of a request
// carrying an API key is answered by the guard (Caddy's server would log the
// key with the error), with the error's status; other errors are returned to
// Caddy as before.
func TestCredentialRequestErrorsAnswered(t *testing.T) {
	h := ivpayHandler(t, false)
	upstreamDown := &headerStub{err: caddyhttp.Error(http.StatusBadGateway, errors.New("dial tcp: connection refused"))}
	cases := []struct {
		name   string
		next   *headerStub
		remote string
		key    string
		want   int
	}{
		{"upstream down", upstreamDown, "127.0.0.1:4000", testIVPAYKey, http.StatusBadGateway},
		{"wrong key", &headerStub{}, "127.0.0.1:4000", testIVPAYKey + "x", http.StatusUnauthorized},
		{"source not allowed", &headerStub{}, "127.0.0.2:4000", testIVPAYKey, http.StatusForbidden},
	}
	for _, c := range cases {
		w, err := send(t, h, c.next, http.MethodPost, c.remote, http.Header{"X-Api-Key": {c.key}}, `{"payment_id":"p2","status":"paid"}`)
		if err != nil {
			t.Errorf("%s: the error reached Caddy: %v", c.name, err)
		}
		if w.Code != c.want {
			t.Errorf("%s: status %d, want %d", c.name, w.Code, c.want)
		}
	}
	// Without a key there is nothing to hide: Caddy gets the error.
	_, err := send(t, h, &headerStub{}, http.MethodPost, "127.0.0.1:4000", nil, `{}`)
	var he caddyhttp.HandlerError
	if !errors.As(err, &he) || he.StatusCode != http.StatusUnauthorized {
		t.Errorf("no key: error %v, want a 401 handler error", err)
	}
	// Outside Caddy's server (no server in the context) the error is returned.
	req := httptest.NewRequest(http.MethodPost, "http://shop.example/hooks", strings.NewReader("{}"))
	req.Header.Set("X-Api-Key", "wrong")
	if err := h.ServeHTTP(httptest.NewRecorder(), req, &headerStub{}); err == nil {
		t.Error("no server: the error was swallowed")
	}
}

// TestRestoreBodyDropsTrailersAndExpect: the forwarded request has the
// verified body with its length, no trailers and no Expect.
func TestRestoreBodyDropsTrailersAndExpect(t *testing.T) {
	r := httptest.NewRequest(http.MethodPost, "http://shop.example/hooks", nil)
	r.TransferEncoding = []string{"chunked"}
	r.ContentLength = -1
	r.Trailer = http.Header{"X-Ivy-Signature": {"00"}}
	r.Header.Set("Trailer", "X-Ivy-Signature")
	r.Header.Set("Expect", "100-continue")
	restoreBody(r, []byte("body"))
	b, _ := io.ReadAll(r.Body)
	if !bytes.Equal(b, []byte("body")) || r.ContentLength != 4 || r.TransferEncoding != nil || r.Header.Get("Content-Length") != "4" {
		t.Errorf("body %q, length %d, transfer encoding %v", b, r.ContentLength, r.TransferEncoding)
	}
	if r.Trailer != nil || r.Header.Get("Trailer") != "" || r.Header.Get("Expect") != "" {
		t.Errorf("trailer %v, Trailer %q, Expect %q", r.Trailer, r.Header.Get("Trailer"), r.Header.Get("Expect"))
	}
}

// TestLooseTrustedProxiesWarnedOnce: a request from a trusted proxy on a
// server without trusted_proxies_strict makes a handler with an allow-list
// warn, once; strict servers and handlers without an allow-list do not.
func TestLooseTrustedProxiesWarnedOnce(t *testing.T) {
	for _, c := range []struct {
		name   string
		strict int
		allow  []string
		want   int
	}{
		{"not strict", 0, []string{"127.0.0.1"}, 1},
		{"strict", 1, []string{"127.0.0.1"}, 0},
		{"no allow-list", 0, []string{"any"}, 0},
	} {
		h, logs := guard(t, &Handler{Provider: "ivy", Secrets: []string{testIvySecret}, AllowIPs: c.allow, DedupeOff: true})
		for range 3 {
			req := httptest.NewRequest(http.MethodPost, "http://shop.example/hooks", strings.NewReader("{}"))
			req.RemoteAddr = "127.0.0.1:4000"
			w := httptest.NewRecorder()
			req = caddyhttp.PrepareRequest(req, caddy.NewReplacer(), w, &caddyhttp.Server{TrustedProxiesStrict: c.strict})
			caddyhttp.SetVar(req.Context(), caddyhttp.TrustedProxyVarKey, true)
			_ = h.ServeHTTP(w, req, &headerStub{})
		}
		n := 0
		for _, e := range logs.All() {
			if strings.Contains(e.Message, "without trusted_proxies_strict") {
				n++
			}
		}
		if n != c.want {
			t.Errorf("%s: %d warnings, want %d", c.name, n, c.want)
		}
	}
}
