package verify

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"maps"
	"math/big"
	"mime"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// Header names of every registered scheme, by role, for FuzzVerify.
var (
	fuzzSignatureHeaders = []string{"X-Ivy-Signature", "X-API-KEY", "webhook-signature", "svix-signature", "Stripe-Signature", "X-Hub-Signature-256", "X-Shopify-Hmac-Sha256", "Shopify-Hmac-Sha256", "X-Slack-Signature", "X-Signature"}
	fuzzTimestampHeaders = []string{"webhook-timestamp", "svix-timestamp", "X-Slack-Request-Timestamp", "X-Timestamp"}
	fuzzIDHeaders        = []string{"webhook-id", "svix-id", "X-GitHub-Delivery", "X-Shopify-Webhook-Id", "Shopify-Webhook-Id", "X-Request-Id"}
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
			case err == nil && (ev.ID == "" || ev.ReplayID == ""):
				t.Fatalf("%s: verified event without an id or a replay id", name)
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

// FuzzRepeatedHeaders signs a delivery with every scheme, then gives one of
// the headers it reads a second value: it must be refused, whatever the
// value, and a second name of Shopify's with another value as well.
func FuzzRepeatedHeaders(f *testing.F) {
	f.Add([]byte(`{"id":"evt_1","type":"t"}`), "evt_1", "", uint8(0))
	f.Add([]byte(`{"payment_id":"p","status":"PAID"}`), "", "same", uint8(1))
	f.Add([]byte("token=x"), "d", "\x00", uint8(2))
	f.Add([]byte{}, "x", "v1,AAAA", uint8(255))
	verifiers := fuzzVerifiers(f)
	f.Fuzz(func(t *testing.T, body []byte, id, extra string, which uint8) {
		if id == "" {
			id = "evt_1" // hmac signs the id header: it needs a value
		}
		for name, v := range verifiers {
			h, err := v.(Signer).Sign(body, id, testNow)
			if err != nil {
				t.Fatalf("%s: Sign: %v", name, err)
			}
			names := slices.Sorted(maps.Keys(h))
			header := names[int(which)%len(names)]
			h.Add(header, extra)
			ev, err := v.Verify(h, body, testNow)
			if ReasonOf(err) != ReasonSignature || !strings.Contains(err.Error(), "given 2 times") {
				t.Fatalf("%s: %s given twice: %+v, %v", name, header, ev, err)
			}
		}
		sh := verifiers["shopify"]
		h, _ := sh.(Signer).Sign(body, id, testNow)
		if extra != h.Get("X-Shopify-Hmac-Sha256") {
			h.Set("Shopify-Hmac-Sha256", extra)
			if _, err := sh.Verify(h, body, testNow); err == nil {
				t.Fatal("shopify: two signature headers with different values accepted")
			}
		}
	})
}

// FuzzTimestamp checks checkTimestamp on any header text, clock (seconds and
// nanoseconds) and tolerance: it never panics, and accepts exactly the
// positive unix times no more than the tolerance from now at full precision.
func FuzzTimestamp(f *testing.F) {
	for _, raw := range []string{"1700000000", "0", "-1", "999999999999", "4611686018427387904", "9223372036854775807", "+1", "", " 1", "1e3", "0x10", "1699999700"} {
		f.Add(raw, int64(1700000000), uint32(250_000_000), int64(300*time.Second))
	}
	f.Add("1", int64(1700000000), uint32(0), int64(1<<62))
	f.Add("1", int64(-1<<62), uint32(999_999_999), int64(1<<33))
	f.Add("1", int64(-1<<63+1), uint32(0), int64(1<<63-1))
	f.Add("999999999999", int64(-1<<63), uint32(1), int64(1<<63-1))
	f.Fuzz(func(t *testing.T, raw string, nowSecs int64, nowNanos uint32, tolNanos int64) {
		if tolNanos < 0 {
			return // a tolerance is a positive duration
		}
		nowNanos %= uint32(time.Second)
		now := time.Unix(nowSecs, int64(nowNanos))
		tol := time.Duration(tolNanos)
		ts, err := checkTimestamp(raw, now, tol)
		secs, perr := strconv.ParseInt(raw, 10, 64)
		within := false
		if perr == nil && secs > 0 && len(raw) <= 12 {
			// |now - secs| <= tol, exactly, in nanoseconds.
			age := new(big.Int).Mul(new(big.Int).Sub(big.NewInt(nowSecs), big.NewInt(secs)), big.NewInt(int64(time.Second)))
			age.Add(age, big.NewInt(int64(nowNanos)))
			within = age.CmpAbs(big.NewInt(tolNanos)) <= 0
		}
		if err != nil {
			var e *Error
			if !errors.As(err, &e) || e.Reason != ReasonTimestamp && e.Reason != ReasonSignature {
				t.Fatalf("%q: error %v", raw, err)
			}
			if within {
				t.Fatalf("%q refused at %d.%09d with tolerance %v: %v", raw, nowSecs, nowNanos, tol, err)
			}
			return
		}
		if !within || !ts.Equal(time.Unix(secs, 0)) {
			t.Fatalf("%q accepted as %v at %d.%09d with tolerance %v", raw, ts, nowSecs, nowNanos, tol)
		}
	})
}

// FuzzStandardSecret checks that a whsec_ secret loads exactly when its rest
// is base64, padded or not, and that no error message holds the secret.
func FuzzStandardSecret(f *testing.F) {
	for _, s := range []string{"MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=", "", "=", "!!", " ", "QQ", "QQ==", "QQ="} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, rest string) {
		secret := "whsec_" + rest
		_, err := newStandard(Config{Secrets: []string{secret}})
		key, derr := base64.StdEncoding.DecodeString(rest)
		if derr != nil {
			key, derr = base64.RawStdEncoding.DecodeString(rest)
		}
		if decodes := derr == nil && len(key) > 0; (err == nil) != decodes {
			t.Fatalf("%q: loads %v, decodes padded or not %v (%v)", secret, err == nil, decodes, err)
		}
		// The message is one of two fixed texts: nothing of the secret in it.
		if err != nil && err.Error() != "secret: value #1 has nothing after its prefix" &&
			err.Error() != "secret: value #1 is not a whsec_<base64> Standard Webhooks secret" {
			t.Fatalf("message %q", err)
		}
	})
}

// FuzzSlackProbe checks that an unsigned Slack delivery is a probe exactly
// when it is a small form with ssl_check=1 and one token, and is otherwise
// refused.
func FuzzSlackProbe(f *testing.F) {
	for _, b := range []string{"ssl_check=1&token=x", "token=x&ssl_check=1", "ssl_check=1", "ssl_check=1&token=x&a=b", "ssl_check=1&token=%zz", "ssl_check=1;token=x", ""} {
		f.Add([]byte(b), "application/x-www-form-urlencoded")
	}
	f.Add([]byte("ssl_check=1&token=x"), "application/json")
	f.Add([]byte("ssl_check=1&token=x"), "APPLICATION/X-WWW-FORM-URLENCODED; charset=utf-8")
	v := newScheme(f, "slack", everySchemeConfig())
	f.Fuzz(func(t *testing.T, body []byte, contentType string) {
		h := http.Header{"Content-Type": {contentType}}
		_, err := v.Verify(h, body, testNow)
		if err == nil {
			t.Fatal("an unsigned delivery passed")
		}
		media, _, merr := mime.ParseMediaType(contentType)
		form, ferr := url.ParseQuery(string(body))
		want := len(body) <= maxSlackProbe && merr == nil && media == "application/x-www-form-urlencoded" &&
			ferr == nil && len(form) == 2 && slices.Equal(form["ssl_check"], []string{"1"}) && len(form["token"]) == 1
		if got := ReasonOf(err) == ReasonProbe; got != want {
			t.Fatalf("%q (%q): probe %v, want %v (%v)", body, contentType, got, want, err)
		}
	})
}

// FuzzSlackHandshake checks slackHandshake on any body: it never panics, and
// answers only a url_verification with a non-empty challenge of at most
// maxSlackChallenge bytes, as text/plain.
func FuzzSlackHandshake(f *testing.F) {
	for _, b := range []string{`{"type":"url_verification","challenge":"c"}`, `{"type":"url_verification","challenge":"\ud83d\ude00"}`,
		`{"type":"url_verification","challenge":1}`, `{"type":"url_verification"`, `[]`, ``} {
		f.Add([]byte(b))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		_, typ := slackFields(body)
		ctype, answer, ok := slackHandshake(Event{Type: typ}, body)
		if !ok {
			return
		}
		if typ != "url_verification" || len(answer) == 0 || len(answer) > maxSlackChallenge || ctype != "text/plain; charset=utf-8" {
			t.Fatalf("%q: answered %q %q (type %q)", body, ctype, answer, typ)
		}
	})
}
