package testkit

import (
	"bytes"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"
)

// kitBody holds every byte value and multi-byte UTF-8, to prove nothing is re-encoded.
func kitBody() []byte {
	b := make([]byte, 0, 300)
	for i := range 256 {
		b = append(b, byte(i))
	}
	return append(b, "é€😀\r\n"...)
}

func TestCaddyForwardsBodyByteForByte(t *testing.T) {
	up := StartUpstream(t)
	c := StartCaddy(t, GlobalOptions("")+`
:{HTTP} {
	reverse_proxy `+up.Addr()+` {
		header_up X-Source-IP {remote_host}
		header_up X-Kit-Env {env.KIT_ENV_VALUE}
	}
}
`, "KIT_ENV_VALUE=kit-env-value-7f3a")

	body := kitBody()
	h := http.Header{"Content-Type": {"application/octet-stream"}, "webhook-id": {"msg_kit"}}
	status, _, respBody := Post(t, ClientFrom("127.0.0.2"), c.URL("/hook?x=1"), h, body)
	if status != http.StatusOK || string(respBody) != "upstream 200" {
		t.Fatalf("status %d, body %q; want 200 from the upstream", status, respBody)
	}
	reqs := up.Requests()
	if len(reqs) != 1 {
		t.Fatalf("upstream saw %d requests, want 1", len(reqs))
	}
	r := reqs[0]
	if !bytes.Equal(r.Body, body) {
		t.Errorf("body changed on the way:\n got %x\nwant %x", r.Body, body)
	}
	if r.ContentLength != int64(len(body)) {
		t.Errorf("Content-Length %d, want %d", r.ContentLength, len(body))
	}
	if r.Method != http.MethodPost || r.Path != "/hook" || r.RawQuery != "x=1" {
		t.Errorf("got %s %s?%s, want POST /hook?x=1", r.Method, r.Path, r.RawQuery)
	}
	if got := r.Header.Get("X-Source-IP"); got != "127.0.0.2" {
		t.Errorf("Caddy saw the client as %q, want 127.0.0.2", got)
	}
	if got := r.Header.Get("Webhook-Id"); got != "msg_kit" {
		t.Errorf("webhook-id %q, want msg_kit", got)
	}
	if got := r.Header.Get("X-Kit-Env"); got != "kit-env-value-7f3a" {
		t.Errorf("X-Kit-Env %q: the env given to StartCaddy did not reach Caddy", got)
	}
	if strings.Contains(c.LogsText(), "kit-env-value-7f3a") {
		t.Errorf("Caddy's output contains the value of an env variable")
	}
	if len(c.Logs()) == 0 {
		t.Errorf("no JSON log line parsed from Caddy's output")
	}
	for _, e := range c.Logs() {
		if e.Level == "" || e.Raw == "" {
			t.Errorf("log entry without level or raw text: %+v", e)
		}
	}
}

func TestClientFromBindsSourceAddress(t *testing.T) {
	up := StartUpstream(t)
	for _, ip := range []string{"127.0.0.2", "127.0.0.3"} {
		if status, _, _ := Post(t, ClientFrom(ip), up.URL("/direct"), nil, []byte("x")); status != http.StatusOK {
			t.Fatalf("status %d", status)
		}
	}
	reqs := up.Requests()
	for i, want := range []string{"127.0.0.2", "127.0.0.3"} {
		host, _, err := net.SplitHostPort(reqs[i].RemoteAddr)
		if err != nil || host != want {
			t.Errorf("request %d came from %q, want %s", i, reqs[i].RemoteAddr, want)
		}
	}
}

func TestUpstreamStatusesAndBlock(t *testing.T) {
	up := StartUpstream(t)
	c := StartCaddy(t, GlobalOptions("")+`
:{HTTP} {
	reverse_proxy `+up.Addr()+`
}
`)
	client := ClientFrom("127.0.0.1")

	up.RespondWith(503, 202)
	for i, want := range []int{503, 202, 200} {
		status, hdr, _ := Post(t, client, c.URL("/s"), nil, []byte(strconv.Itoa(i)))
		if status != want {
			t.Errorf("request %d: status %d, want %d", i, status, want)
		}
		if got := hdr.Get("X-Upstream-Seq"); got != strconv.Itoa(i+1) {
			t.Errorf("request %d: X-Upstream-Seq %q", i, got)
		}
	}
	for range 3 {
		up.WaitArrival(t)
	}
	up.Reset()
	if up.Count() != 0 {
		t.Fatalf("Count %d after Reset", up.Count())
	}

	release := up.Block()
	done := make(chan Response, 1)
	errs := make(chan error, 1)
	go func() {
		resp, err := TryPost(client, c.URL("/held"), nil, []byte("held"))
		if err != nil {
			errs <- err
			return
		}
		done <- resp
	}()
	rec := up.WaitArrival(t)
	if rec.Path != "/held" || string(rec.Body) != "held" || up.Count() != 1 {
		t.Fatalf("arrival %+v, count %d", rec, up.Count())
	}
	select {
	case resp := <-done:
		t.Fatalf("a held request was answered: %d", resp.Status)
	default:
	}
	release()
	timer := time.NewTimer(10 * time.Second)
	defer timer.Stop()
	select {
	case resp := <-done:
		if resp.Status != http.StatusOK {
			t.Errorf("released request: status %d", resp.Status)
		}
	case err := <-errs:
		t.Fatalf("released request: %v", err)
	case <-timer.C:
		t.Fatal("released request not answered within 10s")
	}
	release() // harmless twice
}

func TestReloadAndWaitLog(t *testing.T) {
	site := func(text string, status int) string {
		return GlobalOptions("") + fmt.Sprintf(":{HTTP} {\n\trespond %q %d\n}\n", text, status)
	}
	c := StartCaddy(t, site("one", 200))
	client := ClientFrom("")
	get := func() Response {
		t.Helper()
		resp, err := Send(client, http.MethodGet, c.URL("/"), nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		return resp
	}
	if r := get(); r.Status != 200 || string(r.Body) != "one" {
		t.Fatalf("before reload: %d %q", r.Status, r.Body)
	}

	mark := c.LogMark()
	c.Reload(t, site("two", 201))
	if r := get(); r.Status != 201 || string(r.Body) != "two" {
		t.Fatalf("after reload: %d %q", r.Status, r.Body)
	}
	e := c.WaitLogSince(t, mark, func(e LogEntry) bool {
		return e.Logger == "admin.api" && e.Msg == "received request" && e.Field("uri") == "/load"
	})
	if e.Field("method") != http.MethodPost {
		t.Errorf("load logged with method %q", e.Field("method"))
	}
	code, cfg := c.AdminGet(t, "/config/")
	if code != 200 || !bytes.Contains(cfg, []byte(`"two"`)) {
		t.Errorf("GET /config/: %d %s", code, cfg)
	}

	c.Stop()
	c.Stop()
	select {
	case <-c.Exited():
	default:
		t.Fatal("Stop returned before Caddy exited")
	}
	c.WaitLog(t, func(e LogEntry) bool { return e.Msg == "shutdown complete" })
}

func TestAdaptAndValidate(t *testing.T) {
	cfg, errOut := Adapt(t, GlobalOptions("")+":{HTTP} {\n\trespond \"x\"\n}\n")
	if errOut != "" || !strings.Contains(cfg, `"127.0.0.1:9080"`) || !strings.Contains(cfg, `"listen":"127.0.0.1:2999"`) {
		t.Errorf("Adapt: error %q, config %s", errOut, cfg)
	}
	cfg, errOut = Adapt(t, GlobalOptions("")+":{HTTP} {\n\tno_such_directive\n}\n")
	if cfg != "" || !strings.Contains(errOut, "unrecognized directive: no_such_directive") {
		t.Errorf("Adapt of a bad directive: config %q, error %q", cfg, errOut)
	}
	if out := Validate(t, GlobalOptions("")+":{HTTP} {\n\trespond \"x\"\n}\n"); out != "" {
		t.Errorf("Validate of a good config: %s", out)
	}
	// A regexp that adapts but does not compile is found only when modules are provisioned.
	out := Validate(t, GlobalOptions("")+":{HTTP} {\n\t@m path_regexp [\n\trespond @m \"x\"\n}\n")
	if !strings.Contains(out, "error parsing regexp") {
		t.Errorf("Validate of a bad regexp: %q", out)
	}
}

func randomText(t *testing.T, n int) string {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

func hmacSHA256(key, msg []byte) []byte {
	m := hmac.New(sha256.New, key)
	m.Write(msg)
	return m.Sum(nil)
}

// standardSignature computes a Standard Webhooks v1 signature per the specification:
// base64(HMAC-SHA256(key, "{id}.{timestamp}.{body}")), key = base64-decoded secret after "whsec_".
func standardSignature(t *testing.T, secret, id string, ts int64, body []byte) string {
	t.Helper()
	key, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(secret, "whsec_"))
	if err != nil {
		t.Fatalf("secret is not base64 after whsec_: %v", err)
	}
	msg := append([]byte(id+"."+strconv.FormatInt(ts, 10)+"."), body...)
	return "v1," + base64.StdEncoding.EncodeToString(hmacSHA256(key, msg))
}

func TestNodeSignersAgreeWithSpecs(t *testing.T) {
	EnsureNodeModules(t)
	body := []byte(`{"id":"evt_kit_1","type":"payment.succeeded","note":"é€😀"}`)
	keyBytes := make([]byte, 32)
	if _, err := rand.Read(keyBytes); err != nil {
		t.Fatal(err)
	}
	standardSecret := "whsec_" + base64.StdEncoding.EncodeToString(keyBytes)
	stripeSecret := "whsec_" + randomText(t, 16)
	githubSecret := randomText(t, 16)
	ts := time.Now().Unix()
	id := "msg_" + randomText(t, 8)

	tampered := bytes.Replace(body, []byte("é"), []byte("e"), 1)
	cases := []struct {
		lib, secret string
		timed       bool
		goCheck     func(h http.Header) error
	}{
		{LibStandardWebhooks, standardSecret, true, func(h http.Header) error {
			return expect(h, "Webhook-Signature", standardSignature(t, standardSecret, id, ts, body),
				"Webhook-Id", id, "Webhook-Timestamp", strconv.FormatInt(ts, 10))
		}},
		{LibSvix, standardSecret, true, func(h http.Header) error {
			return expect(h, "Svix-Signature", standardSignature(t, standardSecret, id, ts, body),
				"Svix-Id", id, "Svix-Timestamp", strconv.FormatInt(ts, 10))
		}},
		{LibStripe, stripeSecret, true, func(h http.Header) error {
			mac := hmacSHA256([]byte(stripeSecret), append([]byte(strconv.FormatInt(ts, 10)+"."), body...))
			return expect(h, "Stripe-Signature", "t="+strconv.FormatInt(ts, 10)+",v1="+hex.EncodeToString(mac))
		}},
		{LibGitHub, githubSecret, false, func(h http.Header) error {
			return expect(h, "X-Hub-Signature-256", "sha256="+hex.EncodeToString(hmacSHA256([]byte(githubSecret), body)),
				"X-GitHub-Delivery", id)
		}},
	}
	for _, tc := range cases {
		t.Run(tc.lib, func(t *testing.T) {
			h := NodeSign(t, tc.lib, tc.secret, body, id, ts)
			if err := tc.goCheck(h); err != nil {
				t.Errorf("the library's signature differs from the spec computed in Go: %v", err)
			}
			if err := NodeVerify(t, tc.lib, tc.secret, h, body, ts); err != nil {
				t.Errorf("the library rejects its own signature: %v", err)
			}
			if err := NodeVerify(t, tc.lib, tc.secret, h, body, 0); err != nil {
				t.Errorf("the library rejects its own signature on the real clock: %v", err)
			}
			err := NodeVerify(t, tc.lib, tc.secret, h, tampered, ts)
			if err == nil {
				t.Errorf("a tampered body verified")
			} else if strings.Contains(err.Error(), tc.secret) {
				t.Errorf("the verification error contains the secret")
			}
			wrong := tc.secret[:len(tc.secret)-4] + "AAA="
			if err := NodeVerify(t, tc.lib, wrong, h, body, ts); err == nil {
				t.Errorf("a wrong secret verified")
			}
			if tc.timed {
				if err := NodeVerify(t, tc.lib, tc.secret, h, body, ts+3600); err == nil {
					t.Errorf("an hour-old signature verified")
				}
			}
		})
	}

	// The other way round: a signature made in Go, per the spec, passes the official library.
	goID := "msg_go_" + randomText(t, 4)
	h := http.Header{}
	h.Set("webhook-id", goID)
	h.Set("webhook-timestamp", strconv.FormatInt(ts, 10))
	h.Set("webhook-signature", "v1,bm90IGEgc2lnbmF0dXJl "+standardSignature(t, standardSecret, goID, ts, body))
	if err := NodeVerify(t, LibStandardWebhooks, standardSecret, h, body, ts); err != nil {
		t.Errorf("standardwebhooks rejects a Go signature: %v", err)
	}
}

// expect checks pairs of header name and wanted value.
func expect(h http.Header, pairs ...string) error {
	for i := 0; i+1 < len(pairs); i += 2 {
		if got := h.Get(pairs[i]); got != pairs[i+1] {
			return fmt.Errorf("%s = %q, want %q", pairs[i], got, pairs[i+1])
		}
	}
	return nil
}

func TestNodeRefusesBodiesItCannotSignExactly(t *testing.T) {
	EnsureNodeModules(t)
	secret := "whsec_" + base64.StdEncoding.EncodeToString([]byte("kit-secret-not-utf8-check-0123456"))
	_, err := runNode(nodeRequest{Op: "sign", Lib: LibStandardWebhooks, Secret: secret, Body: []byte{'{', 0xff, '}'}, ID: "m", Timestamp: 1})
	if err == nil || !strings.Contains(err.Error(), "not valid UTF-8") {
		t.Fatalf("signing invalid UTF-8: %v", err)
	}
	if strings.Contains(err.Error(), secret) || strings.Contains(err.Error(), strings.TrimPrefix(secret, "whsec_")) {
		t.Fatal("the error contains the secret")
	}
}

// fatalRecorder stands in for the test in calls expected to fail: Fatalf records the message
// and ends the goroutine, as the real one does; everything else goes to the real test.
type fatalRecorder struct {
	testing.TB
	msg string
}

func (f *fatalRecorder) Fatalf(format string, args ...any) {
	f.msg = fmt.Sprintf(format, args...)
	runtime.Goexit()
}

// expectFatal runs fn with a fatalRecorder and returns the message it failed with.
func expectFatal(t *testing.T, fn func(tb testing.TB)) string {
	t.Helper()
	f := &fatalRecorder{TB: t}
	done := make(chan struct{})
	go func() {
		defer close(done)
		fn(f)
	}()
	<-done
	if f.msg == "" {
		t.Fatal("the call did not fail")
	}
	return f.msg
}

func TestFailuresCarryCaddysWords(t *testing.T) {
	// expectFatal's recorder passes a skip to t from another goroutine: skip here instead.
	SkipIfShort(t, "builds and runs Caddy")
	msg := expectFatal(t, func(tb testing.TB) {
		StartCaddy(tb, GlobalOptions("")+":{HTTP} {\n\t@m path_regexp [\n\trespond @m \"x\"\n}\n")
	})
	if !strings.Contains(msg, "caddy exited") || !strings.Contains(msg, "error parsing regexp") {
		t.Errorf("StartCaddy of a config that cannot run failed with: %s", msg)
	}

	c := StartCaddy(t, GlobalOptions("")+":{HTTP} {\n\trespond \"x\"\n}\n")
	msg = expectFatal(t, func(tb testing.TB) {
		c.Reload(tb, GlobalOptions("")+":{HTTP} {\n\tno_such_directive\n}\n")
	})
	if !strings.Contains(msg, "status 400") || !strings.Contains(msg, "no_such_directive") {
		t.Errorf("a failed reload reported: %s", msg)
	}
	t.Logf("a failed reload reports:\n%s", msg)

	saved := LogWaitTimeout
	LogWaitTimeout = 300 * time.Millisecond // only to see the timeout path fail
	msg = expectFatal(t, func(tb testing.TB) {
		c.WaitLog(tb, func(e LogEntry) bool { return e.Msg == "no such message" })
	})
	LogWaitTimeout = saved
	if !strings.Contains(msg, "no matching Caddy log line within 300ms") {
		t.Errorf("WaitLog timing out reported: %s", msg)
	}
	c.Stop()
	msg = expectFatal(t, func(tb testing.TB) {
		c.WaitLog(tb, func(e LogEntry) bool { return e.Msg == "no such message" })
	})
	if !strings.Contains(msg, "Caddy exited") {
		t.Errorf("WaitLog after exit reported: %s", msg)
	}
}

func TestStartCaddyRetriesWhenAPortWasTaken(t *testing.T) {
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	calls := 0
	pickPorts = func(n int) ([]int, error) {
		calls++
		ports, err := freePorts(n)
		if calls == 1 && err == nil {
			ports[0] = taken.Addr().(*net.TCPAddr).Port // the admin port is in use
		}
		return ports, err
	}
	defer func() { pickPorts = freePorts }()

	c := StartCaddy(t, GlobalOptions("")+":{HTTP} {\n\trespond \"x\"\n}\n")
	if calls != 2 || c.AdminAddr() == taken.Addr().String() {
		t.Fatalf("picked ports %d times, admin on %s", calls, c.AdminAddr())
	}
	if status, _, body := Post(t, ClientFrom(""), c.URL("/"), nil, nil); status != 200 || string(body) != "x" {
		t.Fatalf("%d %q", status, body)
	}
}

// TestUpstreamAnswerWith: a queued Answer replaces the usual answer of one request (recorded
// with Status 0), then the usual answers resume; ResetAfter sends its status and part of the
// body, then the read of the rest fails.
func TestUpstreamAnswerWith(t *testing.T) {
	up := StartUpstream(t)
	up.AnswerWith(ResetAfter(http.StatusOK, "partial"))
	client := &http.Client{Timeout: ClientTimeout, Transport: &http.Transport{Proxy: nil}}
	resp, err := client.Post(up.URL("/cut"), "text/plain", strings.NewReader("one"))
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || string(body) != "partial" || err == nil {
		t.Fatalf("cut answer: %d %q, read error %v; want 200 \"partial\" and an error", resp.StatusCode, body, err)
	}
	resp, err = client.Post(up.URL("/after"), "text/plain", strings.NewReader("two"))
	if err != nil {
		t.Fatal(err)
	}
	body, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || string(body) != "upstream 200" {
		t.Fatalf("next answer: %d %q, want the usual 200", resp.StatusCode, body)
	}
	reqs := up.Requests()
	if len(reqs) != 2 || reqs[0].Status != 0 || string(reqs[0].Body) != "one" || reqs[1].Status != 200 {
		t.Fatalf("recorded %+v", reqs)
	}
}
