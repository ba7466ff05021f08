package webhookguard

import (
	"context"
	"encoding/base64"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/hookguard/caddy-webhook-guard/verify"
)

// upstreamSecret is a valid sign_upstream secret of the unit tests.
var upstreamSecret = "whsec_" + base64.StdEncoding.EncodeToString([]byte("upstream-signing-key-of-32-bytes"))

// TestSignUpstreamCaddyfile: literal sign_upstream mistakes fail the
// Caddyfile with the line of the entry at fault and without the value;
// placeholders are left to provisioning.
func TestSignUpstreamCaddyfile(t *testing.T) {
	short := "whsec_" + base64.StdEncoding.EncodeToString([]byte("too-short"))
	for block, want := range map[string]string{
		"sign_upstream " + upstreamSecret:                                             "",
		"sign_upstream {env.UPSTREAM_SIGNING_SECRET}":                                 "",
		"sign_upstream {file./run/secrets/upstream}\nsign_upstream " + upstreamSecret: "",
		"sign_upstream " + upstreamSecret + "\nsign_upstream " + short:                "sign_upstream: value #2 is a key of 9 bytes: give at least 16 random bytes",
		"sign_upstream whsec_***":                                                     "sign_upstream: value #1 is not a whsec_<base64> Standard Webhooks secret",
		"sign_upstream " + testPublicKeyForUnits:                                      "sign_upstream: value #1 is an Ed25519 key",
		`sign_upstream " "`:                                                           "sign_upstream #1 is only whitespace",
		"sign_upstream":                                                               "wrong argument count",
	} {
		d := caddyfile.NewTestDispenser("webhook_guard ivy {\nsecret s3cr3t-value\n" + block + "\n}")
		err := new(Handler).UnmarshalCaddyfile(d)
		if want == "" {
			if err != nil {
				t.Errorf("%q: %v", block, err)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: error %v, want %q", block, err, want)
			continue
		}
		line := 3 + strings.Count(block, "\n")
		if !strings.HasSuffix(err.Error(), "Testfile:"+strconv.Itoa(line)) {
			t.Errorf("%q: error %v, want line %d", block, err, line)
		}
		if strings.Contains(err.Error(), strings.TrimPrefix(short, "whsec_")) || strings.Contains(err.Error(), "***") && !strings.Contains(block, "***") {
			t.Errorf("%q: the error holds the value: %v", block, err)
		}
	}
}

// testPublicKeyForUnits is a whpk_ key (32 bytes), not a sign_upstream secret.
var testPublicKeyForUnits = "whpk_" + base64.StdEncoding.EncodeToString([]byte(strings.Repeat("p", 32)))

// TestSignUpstreamProvision: JSON mistakes and unset placeholders name
// sign_upstream, never the value.
func TestSignUpstreamProvision(t *testing.T) {
	t.Setenv("WEBHOOK_GUARD_UNIT_UPSTREAM", "whsec_"+base64.StdEncoding.EncodeToString([]byte("short")))
	t.Setenv("WEBHOOK_GUARD_UNIT_UNSET", "")
	for _, c := range []struct {
		values []string
		want   string
	}{
		{[]string{"{env.WEBHOOK_GUARD_UNIT_UPSTREAM}"}, `sign_upstream: value #1 is a key of 5 bytes: give at least 16 random bytes (e.g. whsec_ and the output of ` + "`openssl rand -base64 32`" + `) (sign_upstream #1 is "{env.WEBHOOK_GUARD_UNIT_UPSTREAM}")`},
		{[]string{upstreamSecret, "{env.WEBHOOK_GUARD_UNIT_UNSET}"}, `sign_upstream #2 "{env.WEBHOOK_GUARD_UNIT_UNSET}" resolved to an empty value`},
		{[]string{"not base64!"}, "sign_upstream: value #1 is not a whsec_<base64> Standard Webhooks secret"},
	} {
		h := Handler{Provider: "ivy", Secrets: []string{"s3cr3t-value"}, DedupeOff: true, SignUpstream: c.values}
		ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
		err := h.Provision(ctx)
		h.Cleanup()
		cancel()
		if err == nil || err.Error() != c.want && !strings.Contains(err.Error(), c.want) {
			t.Errorf("%q: error %v, want %q", c.values, err, c.want)
		}
		if err != nil && strings.Contains(err.Error(), base64.StdEncoding.EncodeToString([]byte("short"))) {
			t.Errorf("%q: the error holds the secret: %v", c.values, err)
		}
	}
}

// recordingStub is the next handler: it records the headers and body it got
// and answers 200.
type recordingStub struct {
	header http.Header
	body   string
}

func (s *recordingStub) ServeHTTP(w http.ResponseWriter, r *http.Request) error {
	s.header = r.Header.Clone()
	b, err := io.ReadAll(r.Body)
	s.body = string(b)
	w.WriteHeader(http.StatusOK)
	return err
}

var _ caddyhttp.Handler = (*recordingStub)(nil)

// TestSignUpstreamForwarded: on the reverse_proxy path the forwarded
// request carries webhook-* headers that verify under the sign_upstream
// secret, with the event's id and the guard's clock; a standard provider's
// own webhook-* headers are replaced.
func TestSignUpstreamForwarded(t *testing.T) {
	provider := "whsec_" + base64.StdEncoding.EncodeToString([]byte("the-provider-secret-32-bytes-lng"))
	h, _ := guard(t, &Handler{Provider: "standard", Secrets: []string{provider}, SignUpstream: []string{upstreamSecret}, AllowIPs: []string{"any"}, StoreRaw: memoryStore(4242)})
	signer, err := verify.NewSigner("standard", verify.Config{Secrets: []string{provider}})
	if err != nil {
		t.Fatal(err)
	}
	body := `{"id":"evt_up","type":"invoice.paid"}`
	sent := now()
	ph, err := signer.Sign([]byte(body), "msg_provider_1", sent)
	if err != nil {
		t.Fatal(err)
	}
	stub := &recordingStub{}
	w, err := send(t, h, stub, http.MethodPost, "203.0.113.9:1", ph, body)
	if got := statusOfResult(w, err); got != http.StatusOK {
		t.Fatalf("status %d", got)
	}
	if stub.body != body {
		t.Fatalf("forwarded body %q", stub.body)
	}
	for _, name := range []string{"Webhook-Id", "Webhook-Timestamp", "Webhook-Signature"} {
		if len(stub.header[name]) != 1 {
			t.Fatalf("%s forwarded %d times: %v", name, len(stub.header[name]), stub.header)
		}
	}
	if stub.header.Get("Webhook-Signature") == ph.Get("Webhook-Signature") || stub.header.Get("Webhook-Id") != "msg_provider_1" {
		t.Fatalf("forwarded headers %v: want the guard's signature over the provider's id", stub.header)
	}
	v, _ := verify.Lookup("standard")
	backend, err := v.New(verify.Config{Secrets: []string{upstreamSecret}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := backend.Verify(stub.header, []byte(body), sent); err != nil {
		t.Fatalf("the backend's Standard Webhooks check: %v", err)
	}
}
