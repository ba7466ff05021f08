package cli

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	caddycmd "github.com/caddyserver/caddy/v2/cmd"

	"github.com/hookguard/caddy-webhook-guard/internal/testkit"
	"github.com/hookguard/caddy-webhook-guard/verify"
)

// cliSecretValue is in every test secret, so that a leak is easy to find.
const cliSecretValue = "s3cr3t-cli-value"

// cliCase is one way of signing: the flags given to the command and the
// configuration a guard verifies it with.
type cliCase struct {
	provider string
	secret   string
	args     []string      // more flags
	guard    verify.Config // the receiving guard's configuration
}

// cliCases covers every registered provider, some in several variants.
func cliCases(t *testing.T) map[string]cliCase {
	t.Helper()
	pub, priv, err := ed25519.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	whsec := "whsec_" + base64.StdEncoding.EncodeToString([]byte(cliSecretValue+"-standard"))
	whsk := "whsk_" + base64.StdEncoding.EncodeToString(priv.Seed())
	hmacArgs := []string{"--hmac-header", "X-Signature", "--hmac-prefix", "sha256=", "--hmac-timestamp-header", "X-Timestamp",
		"--hmac-signed", "{timestamp}.{body}", "--hmac-event-id", "header:X-Event-Id"}
	hmacOpts := verify.HMACOptions{Header: "X-Signature", Prefix: "sha256=", TimestampHeader: "X-Timestamp",
		Signed: "{timestamp}.{body}", EventID: "header:X-Event-Id"}
	cases := map[string]cliCase{
		"standard":         {provider: "standard", secret: whsec, guard: verify.Config{Secrets: []string{whsec}}},
		"standard-ed25519": {provider: "standard", secret: whsk, guard: verify.Config{PublicKeys: []string{"whpk_" + base64.StdEncoding.EncodeToString(pub)}}},
		"stripe":           {provider: "stripe", secret: "whsec_" + cliSecretValue, guard: verify.Config{Secrets: []string{"whsec_" + cliSecretValue}}},
		"ivpay":            {provider: "ivpay", secret: cliSecretValue, guard: verify.Config{APIKeys: []string{cliSecretValue}}},
		"hmac":             {provider: "hmac", secret: cliSecretValue, args: hmacArgs, guard: verify.Config{Secrets: []string{cliSecretValue}, HMAC: hmacOpts}},
		"hmac-sha512-base64": {provider: "hmac", secret: cliSecretValue,
			args:  []string{"--hmac-header", "X-Sig", "--hmac-algorithm", "sha512", "--hmac-encoding", "base64"},
			guard: verify.Config{Secrets: []string{cliSecretValue}, HMAC: verify.HMACOptions{Header: "X-Sig", Algorithm: "sha512", Encoding: "base64"}}},
	}
	covered := map[string]bool{}
	for _, c := range cases {
		covered[c.provider] = true
	}
	for _, name := range verify.Names() {
		if !covered[name] { // ivy, github, shopify, slack, and any scheme added later
			cases[name] = cliCase{provider: name, secret: cliSecretValue, guard: verify.Config{Secrets: []string{cliSecretValue}}}
		}
	}
	return cases
}

func (c cliCase) flags(more ...string) []string {
	return append(append([]string{"--provider", c.provider, "--secret", c.secret}, c.args...), more...)
}

// verifier is the module's own verifier for the case's guard configuration.
func (c cliCase) verifier(t *testing.T) verify.Verifier {
	t.Helper()
	s, ok := verify.Lookup(c.provider)
	if !ok {
		t.Fatalf("no scheme %q", c.provider)
	}
	v, err := s.New(c.guard)
	if err != nil {
		t.Fatalf("%s verifier: %v", c.provider, err)
	}
	return v
}

// runCLI parses args as the flags of sub ("sign" or "send") and runs the
// subcommand as its cobra RunE does, with env's stdin and environment; it
// returns what was written to stdout and stderr.
func runCLI(t *testing.T, sub string, env cliEnv, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	cmd, run := newSignCommand(), cmdSign
	if sub == "send" {
		cmd, run = newSendCommand(), cmdSend
	}
	if err := cmd.Flags().Parse(args); err != nil {
		return "", "", err
	}
	var out, errOut bytes.Buffer
	env.stdout, env.stderr = &out, &errOut
	if env.stdin == nil {
		env.stdin = strings.NewReader("")
	}
	if env.getenv == nil {
		env.getenv = func(string) string { return "" }
	}
	err = run(caddycmd.Flags{FlagSet: cmd.Flags()}, env)
	return out.String(), errOut.String(), err
}

// parseCLIHeaderLines reads sign's output back, checking it is sorted.
func parseCLIHeaderLines(t *testing.T, out string) http.Header {
	t.Helper()
	if !strings.HasSuffix(out, "\n") {
		t.Fatalf("output does not end with a newline: %q", out)
	}
	h := http.Header{}
	var names []string
	for line := range strings.Lines(out) {
		name, value, ok := strings.Cut(strings.TrimSuffix(line, "\n"), ": ")
		if !ok || name == "" || value == "" {
			t.Fatalf("line %q is not 'Name: value'", line)
		}
		h.Add(name, value)
		names = append(names, name)
	}
	if !slices.IsSorted(names) {
		t.Errorf("header lines not sorted by name: %v", names)
	}
	return h
}

// writeCLIBodyFile writes b to a new file of the test's temporary folder.
func writeCLIBodyFile(t *testing.T, b []byte) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "body.json")
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// cliBody is a body with bytes a careless signer would alter.
var cliBody = []byte("{\"id\":\"evt_cli_1\",\"type\":\"payment.succeeded\",\"note\":\"é€ 😀 \\u00e9\"}\n")

func TestSignVerifiesForEveryProvider(t *testing.T) {
	ts := time.Now().Add(-2 * time.Hour).Unix() // far from now: a sign at now would not verify
	bodyFile := writeCLIBodyFile(t, cliBody)
	for name, c := range cliCases(t) {
		t.Run(name, func(t *testing.T) {
			args := c.flags("--body", bodyFile, "--timestamp", strconv.FormatInt(ts, 10))
			out, stderr, err := runCLI(t, "sign", cliEnv{}, args...)
			if err != nil {
				t.Fatalf("sign: %v", err)
			}
			if stderr != "" {
				t.Errorf("stderr with --body: %q", stderr)
			}
			if c.provider != "ivpay" && strings.Contains(out, cliSecretValue) {
				t.Errorf("the output contains the secret:\n%s", out)
			}
			h := parseCLIHeaderLines(t, out)
			v := c.verifier(t)
			at := time.Unix(ts, 0)
			ev, err := v.Verify(h, cliBody, at)
			if err != nil {
				t.Fatalf("the module's verifier refuses sign's headers: %v\n%s", err, out)
			}
			if ev.ID == "" {
				t.Error("no event id")
			}
			tampered := bytes.Replace(cliBody, []byte("evt_cli_1"), []byte("evt_cli_2"), 1)
			if _, err := v.Verify(h, tampered, at); err == nil && c.provider != "ivpay" {
				t.Error("a tampered body verifies")
			}
			if s, _ := verify.Lookup(c.provider); s.Timestamped {
				if _, err := v.Verify(h, cliBody, at.Add(time.Hour)); verify.ReasonOf(err) != verify.ReasonTimestamp {
					t.Errorf("--timestamp not signed: an hour later, Verify says %v", err)
				}
			}

			// Stable: the same flags with the same --id print the same lines.
			if s, _ := verify.Lookup(c.provider); s.DeliveryIDHeader != "" || c.provider == "hmac" && slices.Contains(c.args, "--hmac-event-id") {
				args = append(args, "--id", "msg_fixed_1")
				first, _, err := runCLI(t, "sign", cliEnv{}, args...)
				if err != nil {
					t.Fatal(err)
				}
				second, _, _ := runCLI(t, "sign", cliEnv{}, args...)
				if first != second {
					t.Errorf("output not stable:\n%s\n%s", first, second)
				}
				if ev, err := v.Verify(parseCLIHeaderLines(t, first), cliBody, at); err != nil || ev.ID != "msg_fixed_1" {
					t.Errorf("with --id msg_fixed_1: event %q, %v", ev.ID, err)
				}
			} else if again, _, _ := runCLI(t, "sign", cliEnv{}, args...); again != out {
				t.Errorf("output not stable:\n%s\n%s", out, again)
			}
		})
	}
}

func TestSignGeneratedBodyAndStdin(t *testing.T) {
	c := cliCases(t)["standard"]
	out1, body1, err := runCLI(t, "sign", cliEnv{}, c.flags()...)
	if err != nil {
		t.Fatal(err)
	}
	out2, body2, _ := runCLI(t, "sign", cliEnv{}, c.flags()...)
	generated := func(stderr string) []byte {
		t.Helper()
		lines := strings.Split(strings.TrimSpace(stderr), "\n")
		body := []byte(lines[len(lines)-1])
		if !bytes.HasPrefix(body, []byte(`{"id":"evt_`)) || !bytes.HasSuffix(body, []byte(`","type":"test.event"}`)) {
			t.Fatalf("generated body not printed on stderr: %q", stderr)
		}
		return body
	}
	b1, b2 := generated(body1), generated(body2)
	if bytes.Equal(b1, b2) {
		t.Error("two runs generated the same event")
	}
	h1, h2 := parseCLIHeaderLines(t, out1), parseCLIHeaderLines(t, out2)
	if !strings.HasPrefix(h1.Get("Webhook-Id"), "msg_") || h1.Get("Webhook-Id") == h2.Get("Webhook-Id") {
		t.Errorf("webhook-id not a fresh msg_ id: %q, %q", h1.Get("Webhook-Id"), h2.Get("Webhook-Id"))
	}
	if _, err := c.verifier(t).Verify(h1, b1, time.Now()); err != nil {
		t.Errorf("the generated body does not verify: %v", err)
	}

	// ivpay's generated body is a payment.
	_, stderr, err := runCLI(t, "sign", cliEnv{}, cliCases(t)["ivpay"].flags()...)
	if err != nil || !strings.Contains(stderr, `{"payment_id":"`) || !strings.Contains(stderr, `","status":"PAID"}`) {
		t.Errorf("ivpay generated body: %q, %v", stderr, err)
	}

	// --body - reads stdin, byte for byte.
	ivy := cliCases(t)["ivy"]
	out, _, err := runCLI(t, "sign", cliEnv{stdin: bytes.NewReader(cliBody), stdinRedirected: true}, ivy.flags("--body", "-")...)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ivy.verifier(t).Verify(parseCLIHeaderLines(t, out), cliBody, time.Now()); err != nil {
		t.Errorf("the body read from stdin does not verify: %v", err)
	}

	// --secret-env reads the secret from the environment.
	env := cliEnv{getenv: func(name string) string {
		if name == "IVY_SECRET" {
			return ivy.secret
		}
		return ""
	}}
	bodyFile := writeCLIBodyFile(t, cliBody)
	fromEnv, _, err := runCLI(t, "sign", env, "--provider", "ivy", "--secret-env", "IVY_SECRET", "--body", bodyFile)
	if err != nil {
		t.Fatal(err)
	}
	fromFlag, _, _ := runCLI(t, "sign", cliEnv{}, ivy.flags("--body", bodyFile)...)
	if fromEnv != fromFlag {
		t.Errorf("--secret-env signs otherwise than --secret:\n%s\n%s", fromEnv, fromFlag)
	}
}

// cliGuardServer is a stand-in for a guard: it verifies with the module's
// verifier, answers 401 with the reason to what does not verify, and tells
// a first delivery of an event from a duplicate.
type cliGuardServer struct {
	*httptest.Server
	mu       sync.Mutex
	seen     map[string]int
	requests []*http.Request
	bodies   [][]byte
}

func startCLIGuardServer(t *testing.T, v verify.Verifier) *cliGuardServer {
	t.Helper()
	g := &cliGuardServer{seen: map[string]int{}}
	g.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		g.mu.Lock()
		defer g.mu.Unlock()
		g.requests = append(g.requests, r)
		g.bodies = append(g.bodies, body)
		ev, err := v.Verify(r.Header, body, time.Now())
		if err != nil {
			http.Error(w, "refused: "+err.Error(), http.StatusUnauthorized)
			return
		}
		g.seen[ev.ID]++
		if g.seen[ev.ID] > 1 {
			fmt.Fprintf(w, "duplicate %s\n", ev.ID)
			return
		}
		fmt.Fprintf(w, "  accepted %s\n\n", ev.ID)
	}))
	t.Cleanup(g.Close)
	return g
}

// events counts the deliveries of each verified event.
func (g *cliGuardServer) events() map[string]int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return maps.Clone(g.seen)
}

// received returns the requests and their bodies, in order.
func (g *cliGuardServer) received() ([]*http.Request, [][]byte) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return slices.Clone(g.requests), slices.Clone(g.bodies)
}

func TestSendCountIsOneEventUnlessUnique(t *testing.T) {
	for name, c := range cliCases(t) {
		t.Run(name, func(t *testing.T) {
			g := startCLIGuardServer(t, c.verifier(t))
			out, _, err := runCLI(t, "send", cliEnv{}, c.flags("--to", g.URL+"/hook", "--count", "3")...)
			if err != nil {
				t.Fatalf("send: %v\n%s", err, out)
			}
			events := g.events()
			reqs, _ := g.received()
			if len(reqs) != 3 || len(events) != 1 {
				t.Fatalf("3 copies of one event expected, got %d requests, events %v\n%s", len(reqs), events, out)
			}
			var id string
			for id = range events {
			}
			want := fmt.Sprintf("[1/3] event %s: HTTP/1.1 200 OK\n  accepted %s\n[2/3] event %[1]s: HTTP/1.1 200 OK\n  duplicate %[1]s\n[3/3] event %[1]s: HTTP/1.1 200 OK\n  duplicate %[1]s\n", id, id)
			if out != want {
				t.Errorf("output:\n%s\nwant:\n%s", out, want)
			}
			r := reqs[0]
			if r.Method != http.MethodPost || r.URL.Path != "/hook" || r.Header.Get("Content-Type") != "application/json" {
				t.Errorf("request: %s %s, Content-Type %q", r.Method, r.URL.Path, r.Header.Get("Content-Type"))
			}
			if c.provider != "ivpay" && strings.Contains(out, cliSecretValue) {
				t.Errorf("the output contains the secret")
			}

			g2 := startCLIGuardServer(t, c.verifier(t))
			out, _, err = runCLI(t, "send", cliEnv{}, c.flags("--to", g2.URL, "--count", "3", "--unique")...)
			if err != nil {
				t.Fatalf("send --unique: %v\n%s", err, out)
			}
			if events := g2.events(); len(events) != 3 || strings.Contains(out, "duplicate") {
				t.Errorf("--unique: 3 events expected, got %v\n%s", events, out)
			}
		})
	}
}

func TestSendUniqueWithBodyChangesTheDeliveryID(t *testing.T) {
	bodyFile := writeCLIBodyFile(t, cliBody)
	c := cliCases(t)["github"]
	g := startCLIGuardServer(t, c.verifier(t))
	out, _, err := runCLI(t, "send", cliEnv{}, c.flags("--to", g.URL, "--count", "2", "--unique", "--body", bodyFile)...)
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	_, bodies := g.received()
	if len(g.events()) != 2 || len(bodies) != 2 || !bytes.Equal(bodies[0], cliBody) || !bytes.Equal(bodies[1], cliBody) {
		t.Errorf("2 events with the given body expected, got %v", g.events())
	}
}

func TestSendHeadersAndRefusals(t *testing.T) {
	c := cliCases(t)["ivy"]
	g := startCLIGuardServer(t, c.verifier(t))
	out, _, err := runCLI(t, "send", cliEnv{}, c.flags("--to", g.URL,
		"--header", "Content-Type: application/cloudevents+json",
		"--header", "X-Extra: a, b",
		"--header", "x-extra: c",
		"--header", "Host: hooks.example")...)
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	reqs, _ := g.received()
	r := reqs[0]
	if got := r.Header.Get("Content-Type"); got != "application/cloudevents+json" {
		t.Errorf("Content-Type %q", got)
	}
	if got := r.Header.Values("X-Extra"); !slices.Equal(got, []string{"a, b", "c"}) {
		t.Errorf("X-Extra %q", got)
	}
	if r.Host != "hooks.example" {
		t.Errorf("Host %q", r.Host)
	}

	// A replaced signature is refused: the answer is printed and the
	// command fails.
	out, _, err = runCLI(t, "send", cliEnv{}, c.flags("--to", g.URL, "--count", "2", "--header", "X-Ivy-Signature: "+strings.Repeat("0", 64))...)
	if err == nil || !strings.Contains(err.Error(), "2 of 2 requests were not answered 2xx") {
		t.Errorf("error %v", err)
	}
	if !strings.Contains(out, "[1/2]") || !strings.Contains(out, ": HTTP/1.1 401 Unauthorized\n  refused: signature does not match any of 1 secret\n[2/2]") {
		t.Errorf("output:\n%s", out)
	}

	// A failed request stops the command.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := "http://" + l.Addr().String()
	l.Close()
	out, _, err = runCLI(t, "send", cliEnv{}, c.flags("--to", closed, "--count", "3")...)
	if err == nil || !strings.HasPrefix(err.Error(), "request 1 of 3 failed: ") || out != "" {
		t.Errorf("to a closed port: %v, %q", err, out)
	}
}

func TestSendDoesNotFollowRedirects(t *testing.T) {
	c := cliCases(t)["ivy"]
	g := startCLIGuardServer(t, c.verifier(t))
	redirect := httptest.NewServer(http.RedirectHandler(g.URL, http.StatusTemporaryRedirect))
	t.Cleanup(redirect.Close)
	out, _, err := runCLI(t, "send", cliEnv{}, c.flags("--to", redirect.URL)...)
	if reqs, _ := g.received(); err == nil || !strings.Contains(out, "307 Temporary Redirect") || len(reqs) != 0 {
		t.Errorf("redirect followed or not reported: %v\n%s", err, out)
	}
}

func TestTrimAnswer(t *testing.T) {
	long := strings.Repeat("é", cliShownAnswer)
	got := cliTrimAnswer([]byte(" \n" + long + "\n"))
	if !strings.HasSuffix(got, "…") || !utf8.ValidString(got) || len(got) > cliShownAnswer+len("…") {
		t.Errorf("long answer trimmed to %d bytes", len(got))
	}
	if got := cliTrimAnswer([]byte{0xff, 0xfe}); got != "(2 bytes, not text)" {
		t.Errorf("binary answer: %q", got)
	}
}

func TestBadFlagsAreUsageErrors(t *testing.T) {
	bodyFile := writeCLIBodyFile(t, cliBody)
	ivy := []string{"--provider", "ivy", "--secret", cliSecretValue}
	env := func(name string) string {
		if name == "BAD_STANDARD" {
			return cliSecretValue + "!!"
		}
		return ""
	}
	tests := []struct {
		sub      string
		args     []string
		redirect bool // stdin is redirected
		flag     string
	}{
		{"sign", nil, false, "--provider"},
		{"sign", []string{"--provider", "nope", "--secret", cliSecretValue}, false, "--provider"},
		{"sign", []string{"--provider", "ivy"}, false, "--secret"},
		{"sign", []string{"--provider", "ivy", "--secret", ""}, false, "--secret"},
		{"sign", []string{"--provider", "ivy", "--secret", cliSecretValue, "--secret", cliSecretValue + "2"}, false, "--secret"},
		{"sign", []string{"--provider", "ivy", "--secret", cliSecretValue, "--secret-env", "X"}, false, "--secret"},
		{"sign", []string{"--provider", "ivy", "--secret-env", "UNSET"}, false, "--secret-env"},
		{"sign", []string{"--provider", "ivy", "--secret-env", cliSecretValue}, false, "--secret-env"},
		{"sign", []string{"--provider", "standard", "--secret", cliSecretValue + "!!"}, false, "--secret"},
		{"sign", []string{"--provider", "standard", "--secret-env", "BAD_STANDARD"}, false, "--secret-env"},
		{"sign", append(ivy, "--hmac-header", "X-Sig"), false, "--hmac-header"},
		{"sign", []string{"--provider", "hmac", "--secret", cliSecretValue}, false, "--hmac-header"},
		{"sign", []string{"--provider", "hmac", "--secret", cliSecretValue, "--hmac-header", "X-Sig", "--hmac-algorithm", "md5"}, false, "--hmac-algorithm"},
		{"sign", []string{"--provider", "hmac", "--secret", cliSecretValue, "--hmac-header", "X-Sig", "--hmac-signed", "{header.X-Other}{body}"}, false, "--hmac-signed"},
		{"sign", []string{"--provider", "hmac", "--secret", cliSecretValue, "--hmac-header", "X-Sig", "--id", "x"}, false, "--id"},
		{"sign", append(ivy, "--id", "evt_1"), false, "--id"},
		{"sign", []string{"--provider", "github", "--secret", cliSecretValue, "--id", ""}, false, "--id"},
		{"sign", append(ivy, "--body", filepath.Join(t.TempDir(), "missing.json")), false, "--body"},
		{"sign", append(ivy, "--body", ""), false, "--body"},
		{"sign", append(ivy, "--body", bodyFile, "--body", "-"), false, "--body"},
		{"sign", append(ivy, "--body", bodyFile), true, "--body"},
		{"sign", ivy, true, "--body"},
		{"sign", append(ivy, "--timestamp", "0"), false, "--timestamp"},
		{"sign", append(ivy, "--timestamp", "1700000000000"), false, "--timestamp"},
		{"send", ivy, false, "--to"},
		{"send", append(ivy, "--to", "ftp://example.com/"), false, "--to"},
		{"send", append(ivy, "--to", "localhost:8080/hook"), false, "--to"},
		{"send", append(ivy, "--to", "http://127.0.0.1:1", "--count", "0"), false, "--count"},
		{"send", append(ivy, "--to", "http://127.0.0.1:1", "--count", "-2"), false, "--count"},
		{"send", []string{"--provider", "github", "--secret", cliSecretValue, "--to", "http://127.0.0.1:1", "--unique", "--id", "x"}, false, "--unique"},
		{"send", append(ivy, "--to", "http://127.0.0.1:1", "--unique", "--body", bodyFile), false, "--unique"},
		{"send", append(ivy, "--to", "http://127.0.0.1:1", "--header", "Authorization "+cliSecretValue), false, "--header"},
		{"send", append(ivy, "--to", "http://127.0.0.1:1", "--header", ": "+cliSecretValue), false, "--header"},
	}
	for _, tt := range tests {
		t.Run(tt.sub+" "+strings.Join(tt.args, " "), func(t *testing.T) {
			out, stderr, err := runCLI(t, tt.sub, cliEnv{stdin: strings.NewReader("{}"), stdinRedirected: tt.redirect, getenv: env}, tt.args...)
			var ue *cliUsageError
			if !errors.As(err, &ue) {
				t.Fatalf("want a usage error naming %s, got %v", tt.flag, err)
			}
			if ue.flag != tt.flag || !strings.HasPrefix(err.Error(), tt.flag+": ") {
				t.Errorf("error %q names %s, want %s", err, ue.flag, tt.flag)
			}
			if strings.Contains(err.Error(), cliSecretValue) || strings.Contains(out+stderr, cliSecretValue) {
				t.Errorf("the secret is echoed: %q", err)
			}
			if out != "" {
				t.Errorf("output despite the error: %q", out)
			}
		})
	}
}

func TestMistypedFlagsDoNotEchoTheSecret(t *testing.T) {
	for _, args := range [][]string{
		{"-secret=" + cliSecretValue},
		{"--provider", "ivy", "-s" + cliSecretValue},
		{"---secret=" + cliSecretValue},
	} {
		cmd := newSignCommand()
		var usage bytes.Buffer
		cmd.SetErr(&usage)
		err := cmd.ParseFlags(args)
		if err != nil {
			err = cmd.FlagErrorFunc()(cmd, err) // as cobra's execute does
		}
		if err == nil || strings.Contains(err.Error(), cliSecretValue) {
			t.Errorf("%q: error %v", args, err)
		}
		if !strings.Contains(usage.String(), "Usage:") {
			t.Errorf("%q: no usage printed", args)
		}
	}
	cmd := newSendCommand()
	if err := cmd.Args(cmd, []string{cliSecretValue}); err == nil || strings.Contains(err.Error(), cliSecretValue) {
		t.Errorf("a positional argument: error %v", err)
	}
}

// TestCaddyBinary runs the subcommand as a user does, in a Caddy built from
// ./cmd/caddy.
func TestCaddyBinary(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs Caddy")
	}
	bin := testkit.CaddyBinary(t)
	run := func(args ...string) (stdout, stderr string, code int) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, bin, args...)
		var out, errOut bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &errOut
		err := cmd.Run()
		var exit *exec.ExitError
		switch {
		case errors.As(err, &exit):
			code = exit.ExitCode()
		case err != nil:
			t.Fatalf("%s %v: %v", bin, args, err)
		}
		return out.String(), errOut.String(), code
	}

	bodyFile := writeCLIBodyFile(t, cliBody)
	mac := hmac.New(sha256.New, []byte("x"))
	mac.Write(cliBody)
	out, stderr, code := run("webhook-guard", "sign", "--provider", "ivy", "--secret", "x", "--body", bodyFile)
	if want := "X-Ivy-Signature: " + hex.EncodeToString(mac.Sum(nil)) + "\n"; code != 0 || out != want {
		t.Errorf("sign: exit %d, output %q, want %q\n%s", code, out, want, stderr)
	}

	out, stderr, code = run("webhook-guard", "sign")
	if code == 0 || out != "" || !strings.Contains(stderr, "Usage:") || !strings.Contains(stderr, "--provider: required") {
		t.Errorf("sign without flags: exit %d, stdout %q, stderr:\n%s", code, out, stderr)
	}
	_, stderr, code = run("webhook-guard", "sign", "--provider", "ivy", "--secret", cliSecretValue, "--no-such-flag")
	if code == 0 || !strings.Contains(stderr, "unknown flag: --no-such-flag") || strings.Contains(stderr, cliSecretValue) {
		t.Errorf("unknown flag: exit %d, stderr:\n%s", code, stderr)
	}
	for _, args := range [][]string{
		{"--provider", "ivy", "-secret=" + cliSecretValue},
		{"--provider", "ivy", cliSecretValue},
		{"--provider", "ivy", "--secret-env", cliSecretValue},
	} {
		out, stderr, code := run(append([]string{"webhook-guard", "sign"}, args...)...)
		if code == 0 || out != "" || strings.Contains(stderr, cliSecretValue) {
			t.Errorf("%q: exit %d, stdout %q, stderr:\n%s", args, code, out, stderr)
		}
	}
	out, _, code = run("webhook-guard", "--help")
	if code != 0 || !strings.Contains(out, "sign ") || !strings.Contains(out, "send ") {
		t.Errorf("webhook-guard --help: exit %d\n%s", code, out)
	}

	c := cliCases(t)["stripe"]
	g := startCLIGuardServer(t, c.verifier(t))
	out, stderr, code = run(append([]string{"webhook-guard", "send", "--to", g.URL, "--count", "2"}, c.flags()...)...)
	if code != 0 || strings.Count(out, ": HTTP/1.1 200 OK\n") != 2 || !strings.Contains(out, "  accepted evt_") || !strings.Contains(out, "  duplicate evt_") {
		t.Errorf("send: exit %d\n%s\n%s", code, out, stderr)
	}
	out, stderr, code = run("webhook-guard", "send", "--provider", "stripe", "--secret", "whsec_wrong", "--to", g.URL)
	if code != 1 || !strings.Contains(out, "HTTP/1.1 401 Unauthorized\n  refused: ") {
		t.Errorf("send with the wrong secret: exit %d\n%s", code, out)
	}
	// The summary is a plain line, not Caddy's log line of a command error.
	if stderr != "send: the request was not answered 2xx (the answer is above)\n" {
		t.Errorf("send with the wrong secret: stderr %q", stderr)
	}
}

// TestSignVerifiesWithOfficialLibraries checks sign's headers with the
// providers' own npm libraries, which this project did not write.
func TestSignVerifiesWithOfficialLibraries(t *testing.T) {
	if testing.Short() {
		t.Skip("runs Node.js")
	}
	cases := cliCases(t)
	ts := time.Now().Add(-2 * time.Hour).Unix() // far from now: a sign at now would not verify
	bodyFile := writeCLIBodyFile(t, cliBody)
	for lib, c := range map[string]cliCase{
		testkit.LibStandardWebhooks: cases["standard"],
		testkit.LibStripe:           cases["stripe"],
		testkit.LibGitHub:           cases["github"],
	} {
		t.Run(lib, func(t *testing.T) {
			out, _, err := runCLI(t, "sign", cliEnv{}, c.flags("--body", bodyFile, "--timestamp", strconv.FormatInt(ts, 10))...)
			if err != nil {
				t.Fatal(err)
			}
			h := parseCLIHeaderLines(t, out)
			if err := testkit.NodeVerify(t, lib, c.secret, h, cliBody, ts); err != nil {
				t.Errorf("the official library refuses sign's headers: %v\n%s", err, out)
			}
			tampered := bytes.Replace(cliBody, []byte("evt_cli_1"), []byte("evt_cli_2"), 1)
			if err := testkit.NodeVerify(t, lib, c.secret, h, tampered, ts); err == nil {
				t.Error("the official library accepts a tampered body")
			}
		})
	}
}
