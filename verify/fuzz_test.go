package verify

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"net/http"
	"slices"
	"strings"
	"testing"
)

// Header names of every registered scheme, by role, for FuzzVerify.
var (
	fuzzSignatureHeaders = []string{"X-Ivy-Signature", "X-API-KEY", "webhook-signature", "svix-signature", "Stripe-Signature", "X-Hub-Signature-256", "X-Shopify-Hmac-Sha256", "X-Slack-Signature", "X-Signature"}
	fuzzTimestampHeaders = []string{"webhook-timestamp", "svix-timestamp", "X-Slack-Request-Timestamp", "X-Timestamp"}
	fuzzIDHeaders        = []string{"webhook-id", "svix-id", "X-GitHub-Delivery", "X-Shopify-Webhook-Id", "X-Request-Id"}
)

// fuzzVerifiers are every registered scheme built from everySchemeConfig,
// plus standard signing with Ed25519.
func fuzzVerifiers(t testing.TB) map[string]Verifier {
	vs := map[string]Verifier{}
	for _, name := range Names() {
		vs[name] = newScheme(t, name, everySchemeConfig())
	}
	vs["standard-v1a"] = newScheme(t, "standard", Config{Secrets: []string{testSigningKey}})
	return vs
}

// FuzzVerify runs every scheme on arbitrary header values and bodies: no
// panic, failures are *Error, a success has an event id; and whatever the
// body and id, each scheme verifies what it signs and refuses it once the
// body changes.
func FuzzVerify(f *testing.F) {
	f.Add("", "", "", []byte(""))
	f.Add("v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=", "1614265330", "msg_p5jXN8AQM9LWM0D4loKWxJek", []byte(`{"test": 2432232314}`))
	f.Add("v1a,hnO3f9T8Ytu9HwrXslvumlUpqtNVqkhqw/enGzPCXe5BdqzCInXqYXFymVJaA7AZdpXwVLPo3mNl8EM+m7TBAg==", "1700000000", "x", []byte("{}"))
	f.Add("t=1700000000,v1=3c5817089d739023dd6190f70a3757e04f7a2fd8b5dab12c2e000f51970dccff,v0=00", "1700000000", "evt", []byte(`{"id":"evt_1","type":"x"}`))
	f.Add("sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17", "", "d1", []byte("Hello, World!"))
	f.Add("v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503", "1531420618", "", []byte("token=x"))
	f.Add("47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=", "-1", "\x00", []byte{0xff, 0xfe})
	f.Add("sha256=, ,sha256=zz,", "99999999999999999999", " ", []byte(`{"id":{"nested":[1,2]},"type":7,"event_id":null}`))
	verifiers := fuzzVerifiers(f)
	f.Fuzz(func(t *testing.T, sig, ts, id string, body []byte) {
		h := http.Header{}
		for _, n := range fuzzSignatureHeaders {
			h.Set(n, sig)
		}
		for _, n := range fuzzTimestampHeaders {
			h.Set(n, ts)
		}
		for _, n := range fuzzIDHeaders {
			h.Set(n, id)
		}
		for name, v := range verifiers {
			ev, err := v.Verify(h, body, testNow)
			var e *Error
			switch {
			case err != nil && !errors.As(err, &e):
				t.Fatalf("%s: error %v is a %T, want *Error", name, err, err)
			case err != nil && ev != (Event{}):
				t.Fatalf("%s: refused delivery returned event %+v", name, ev)
			case err == nil && ev.ID == "":
				t.Fatalf("%s: verified event without an id", name)
			}

			signed, err := v.(Signer).Sign(body, id, testNow)
			if err != nil {
				if name == "hmac" && id == "" {
					continue // the signed X-Request-Id has no value
				}
				t.Fatalf("%s: Sign: %v", name, err)
			}
			if _, err := v.Verify(signed, body, testNow); err != nil {
				t.Fatalf("%s: own signature refused: %v", name, err)
			}
			if name == "ivpay" {
				continue // a static key does not cover the body
			}
			tampered := append(bytes.Clone(body), 'x')
			if _, err := v.Verify(signed, tampered, testNow); err == nil {
				t.Fatalf("%s: tampered body accepted", name)
			}
		}
	})
}

// FuzzStandardSignatures checks ParseStandardSignatures on arbitrary
// webhook-signature headers, and standard's Verify with both v1 and v1a keys.
func FuzzStandardSignatures(f *testing.F) {
	f.Add("v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=")
	f.Add("v1,Ceo5qEr07ixe2NLpvHk3FH9bwy/WavXrAFQ/9tdO6mc= v2,Ceo5qEr07ixe2NLpvHk3FH9bwy/WavXrAFQ/9tdO6mc= v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=")
	f.Add("v1a,hnO3f9T8Ytu9HwrXslvumlUpqtNVqkhqw/enGzPCXe5BdqzCInXqYXFymVJaA7AZdpXwVLPo3mNl8EM+m7TBAg==")
	f.Add("v1a,hnO3f9T8Ytu9HwrXslvumlUpqtNVqkhqw/enGzPCXe5BdqzCInXqYXFymVJaA7AZdpXwVLPo3mNl8EM+m7TBAg== v1,AAAA")
	f.Add("v1, v1a, ,, v1,,, v1a,AQID\tv1,dawfeoifkpqwoekfpqoekf")
	f.Add("")
	both := newScheme(f, "standard", Config{Secrets: []string{"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"}, PublicKeys: []string{testPublicKey}})
	f.Fuzz(func(t *testing.T, header string) {
		for _, version := range []string{"v1", "v1a"} {
			got := ParseStandardSignatures(header, version)
			entries := 0
			for _, field := range strings.Fields(header) {
				b64, ok := strings.CutPrefix(field, version+",")
				if !ok {
					continue
				}
				entries++
				// Every canonical, non-empty entry is returned.
				if sig, err := base64.StdEncoding.Strict().DecodeString(b64); err == nil && len(sig) > 0 {
					if !slices.ContainsFunc(got, func(g []byte) bool { return bytes.Equal(g, sig) }) {
						t.Fatalf("%s: entry %q of %q not returned", version, field, header)
					}
				}
			}
			// Nothing else is.
			if len(got) > entries {
				t.Fatalf("%s: %d signatures from %d entries of %q", version, len(got), entries, header)
			}
			for _, sig := range got {
				if len(sig) == 0 {
					t.Fatalf("%s: empty signature from %q", version, header)
				}
			}
		}
		h := standardHeader(header)
		if _, err := both.Verify(h, []byte(standardBody), standardNow); err != nil {
			var e *Error
			if !errors.As(err, &e) {
				t.Fatalf("error %v is a %T", err, err)
			}
		}
	})
}

// FuzzStripeSignature checks ParseStripeSignature on arbitrary headers.
func FuzzStripeSignature(f *testing.F) {
	f.Add("t=1614265330,v1=3c5817089d739023dd6190f70a3757e04f7a2fd8b5dab12c2e000f51970dccff")
	f.Add("t=1,v1=00,v1=3c5817089d739023dd6190f70a3757e04f7a2fd8b5dab12c2e000f51970dccff,v0=ab")
	f.Add("t=1,t=2")
	f.Add(",,,=,t=")
	f.Add("t==,v1===")
	f.Add("")
	f.Fuzz(func(t *testing.T, header string) {
		ts, v1, ok := ParseStripeSignature(header)
		if !ok {
			if ts != "" || v1 != nil {
				t.Fatalf("not ok but returned %q, %d signatures", ts, len(v1))
			}
			return
		}
		if ts == "" || !strings.Contains(header, "t="+ts) {
			t.Fatalf("timestamp %q is not from %q", ts, header)
		}
		for _, sig := range v1 {
			if len(sig) != 32 || !strings.Contains(strings.ToLower(header), "v1="+hex.EncodeToString(sig)) {
				t.Fatalf("signature %x is not a v1 entry of %q", sig, header)
			}
		}
	})
}

// FuzzHMACTemplate checks ParseSignedTemplate: a parsed template renders
// back to itself (header names may change case), parses again to the same
// parts, and builds an hmac scheme exactly when it signs the body.
func FuzzHMACTemplate(f *testing.F) {
	for _, s := range []string{"{body}", "{timestamp}.{body}", "v0:{timestamp}:{body}", "{header.X-Id}|{body}}", "{", "{}", "{header.}", "}{{body}", "{BODY}", "", "plain"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, tmpl string) {
		parts, err := ParseSignedTemplate(tmpl)
		if err != nil {
			if parts != nil {
				t.Fatalf("error %v with parts %+v", err, parts)
			}
			return
		}
		var b strings.Builder
		hasBody := false
		for i, p := range parts {
			switch p.Kind {
			case SignedLiteral:
				if p.Text == "" || i > 0 && parts[i-1].Kind == SignedLiteral {
					t.Fatalf("empty or split literal in %+v", parts)
				}
				b.WriteString(p.Text)
			case SignedBody:
				hasBody = true
				b.WriteString("{body}")
			case SignedTimestamp:
				b.WriteString("{timestamp}")
			case SignedHeader:
				if !isToken(p.Text) {
					t.Fatalf("header part %q is not a header name", p.Text)
				}
				b.WriteString("{header." + p.Text + "}")
			default:
				t.Fatalf("unknown kind %d", p.Kind)
			}
		}
		if !strings.EqualFold(b.String(), tmpl) {
			t.Fatalf("%q renders back as %q", tmpl, b.String())
		}
		if again, err := ParseSignedTemplate(b.String()); err != nil || len(again) != len(parts) {
			t.Fatalf("rendering %q parses as %+v, %v", b.String(), again, err)
		}
		_, err = newHMAC(Config{Secrets: []string{"s"}, HMAC: HMACOptions{Header: "X-Sig", TimestampHeader: "X-Ts", Signed: tmpl}})
		if (err == nil) != hasBody {
			t.Fatalf("template %q with body %v: %v", tmpl, hasBody, err)
		}
	})
}

// FuzzPrefixedHex checks decodeMAC, the "sha256=<hex>" / "v0=<hex>" decoder
// of github, slack and hmac (and its base64 mode, for shopify and hmac).
func FuzzPrefixedHex(f *testing.F) {
	f.Add("sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17", "sha256=")
	f.Add("v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503", "v0=")
	f.Add("757107EA0EB2509FC211221CCE984B8A37570B6D7586C22C46F4379C8B043E17", "")
	f.Add("sha256=", "sha256=")
	f.Add("sha256=zz", "sha256")
	f.Add("47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=", "")
	f.Add("47DEQpj8HBSa-_TImW-5JCeuQeRkm5NMpJWZG3hSuFU", "")
	f.Fuzz(func(t *testing.T, value, prefix string) {
		if mac, ok := decodeMAC(value, prefix, hexMAC, 32); ok {
			if len(mac) != 32 || !strings.EqualFold(value, prefix+hex.EncodeToString(mac)) {
				t.Fatalf("hex: %q with prefix %q decoded to %x", value, prefix, mac)
			}
		}
		if mac, ok := decodeMAC(value, prefix, base64MAC, 32); ok {
			if len(mac) != 32 || !strings.HasPrefix(value, prefix) {
				t.Fatalf("base64: %q with prefix %q decoded to %x", value, prefix, mac)
			}
		}
	})
}
