package verify

import (
	"crypto/hmac"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/base64"
	"encoding/hex"
	"hash"
	"net/http"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"
)

const hmacSecret = "30291a20-0bd1-4267-9b0f-e6e7b123c0bf"

func rawMAC(newHash func() hash.Hash, secret, msg string) []byte {
	mac := hmac.New(newHash, []byte(secret))
	mac.Write([]byte(msg))
	return mac.Sum(nil)
}

func hmacConfig(o HMACOptions, secrets ...string) Config {
	if len(secrets) == 0 {
		secrets = []string{hmacSecret}
	}
	return Config{Secrets: secrets, HMAC: o}
}

func TestHMACAlgorithmsAndEncodings(t *testing.T) {
	body := `{"id":"evt_9","type":"charge:created"}`
	for _, alg := range []struct {
		name    string
		newHash func() hash.Hash
	}{{"", sha256.New}, {"sha1", sha1.New}, {"sha256", sha256.New}, {"SHA512", sha512.New}} {
		for _, enc := range []string{"", "hex", "base64"} {
			for _, prefix := range []string{"", "sha=", "Signature "} {
				t.Run(alg.name+"/"+enc+"/"+prefix, func(t *testing.T) {
					v := newScheme(t, "hmac", hmacConfig(HMACOptions{Header: "X-Sig", Algorithm: alg.name, Encoding: enc, Prefix: prefix}))
					mac := rawMAC(alg.newHash, hmacSecret, body)
					sig := hex.EncodeToString(mac)
					if enc == "base64" {
						sig = base64.StdEncoding.EncodeToString(mac)
					}
					h := http.Header{"X-Sig": {prefix + sig}}
					ev := wantValid(t, v, h, []byte(body), testNow)
					if ev.ID != BodyDigestID([]byte(body)) || ev.Type != "charge:created" || !ev.Timestamp.IsZero() {
						t.Errorf("event = %+v", ev)
					}
					if got := signWith(t, v, []byte(body), "", time.Time{}); got.Get("X-Sig") != prefix+sig {
						t.Errorf("Sign = %q, want %q", got.Get("X-Sig"), prefix+sig)
					}
					if prefix != "" {
						wantInvalid(t, v, http.Header{"X-Sig": {sig}}, []byte(body), testNow, ReasonSignature, hmacSecret)
					}
					wantInvalid(t, v, h, []byte(body+" "), testNow, ReasonSignature, hmacSecret)
				})
			}
		}
	}
}

func TestHMAC(t *testing.T) {
	body := []byte(`{"id":"evt_9","type":"charge:created","data":{"object":{"id":"ch_1","n":42},"list":[{"id":"a"},{"id":7}]}}`)
	opts := HMACOptions{Header: "X-CC-Webhook-Signature"}
	v := newScheme(t, "hmac", hmacConfig(opts))
	sig := hex.EncodeToString(rawMAC(sha256.New, hmacSecret, string(body)))
	h := http.Header{"X-Cc-Webhook-Signature": {sig}}

	t.Run("valid", func(t *testing.T) {
		wantValid(t, v, h, body, testNow)
	})
	t.Run("tampered body", func(t *testing.T) {
		wantInvalid(t, v, h, body[1:], testNow, ReasonSignature, hmacSecret)
	})
	t.Run("wrong secret", func(t *testing.T) {
		other := newScheme(t, "hmac", hmacConfig(opts, "another-secret"))
		wantInvalid(t, other, h, body, testNow, ReasonSignature, hmacSecret, "another-secret")
	})
	t.Run("rotation: second secret matches", func(t *testing.T) {
		rot := newScheme(t, "hmac", hmacConfig(opts, "old-secret", hmacSecret))
		wantValid(t, rot, h, body, testNow)
	})
	t.Run("several signatures", func(t *testing.T) {
		zero := hex.EncodeToString(make([]byte, 32))
		wantValid(t, v, http.Header{"X-Cc-Webhook-Signature": {zero + ", " + sig}}, body, testNow)
		// Repeated header lines are refused: the upstream may read another.
		msg := wantInvalid(t, v, http.Header{"X-Cc-Webhook-Signature": {zero, sig}}, body, testNow, ReasonSignature, hmacSecret)
		if msg != "header X-Cc-Webhook-Signature given 2 times" {
			t.Errorf("message = %q", msg)
		}
		wantValid(t, v, http.Header{"X-Cc-Webhook-Signature": {"junk," + sig}}, body, testNow)
		wantInvalid(t, v, http.Header{"X-Cc-Webhook-Signature": {zero + "," + zero}}, body, testNow, ReasonSignature, hmacSecret)
	})
	t.Run("missing header", func(t *testing.T) {
		msg := wantInvalid(t, v, http.Header{}, body, testNow, ReasonSignature, hmacSecret)
		if msg != "X-Cc-Webhook-Signature header missing" {
			t.Errorf("message = %q", msg)
		}
	})
	for _, bad := range []string{"", "zz", sig[:62], sig + "00", base64.StdEncoding.EncodeToString(rawMAC(sha256.New, hmacSecret, string(body)))} {
		t.Run("malformed "+bad, func(t *testing.T) {
			msg := wantInvalid(t, v, http.Header{"X-Cc-Webhook-Signature": {bad}}, body, testNow, ReasonSignature, hmacSecret)
			if bad != "" && msg != "X-Cc-Webhook-Signature has no well-formed hex SHA-256 digest" {
				t.Errorf("message = %q", msg)
			}
		})
	}

	for _, tc := range []struct {
		eventID string
		want    string
	}{
		{"json:id", "evt_9"},
		{"json:data.object.id", "ch_1"},
		{"json:data.object.n", "42"},
		{"json:data.list.0.id", "a"},
		{"json:data.list.1.id", "7"},
		{"json:data.list.2.id", BodyDigestID(body)},
		{"json:data.list.x", BodyDigestID(body)},
		{"json:data.object", BodyDigestID(body)},
		{"json:nope.id", BodyDigestID(body)},
		{"json:id.more", BodyDigestID(body)},
		{"header:X-Event-Id", "hdr_1"},
		{"header:X-Absent", BodyDigestID(body)},
		{"", BodyDigestID(body)},
	} {
		t.Run("event id "+tc.eventID, func(t *testing.T) {
			o := opts
			o.EventID = tc.eventID
			v := newScheme(t, "hmac", hmacConfig(o))
			hh := withHeader(h, "x-event-id", "hdr_1")
			if ev := wantValid(t, v, hh, body, testNow); ev.ID != tc.want || ev.Type != "charge:created" {
				t.Errorf("event = %+v, want id %q", ev, tc.want)
			}
		})
	}
	t.Run("Sign sets the event id header", func(t *testing.T) {
		o := opts
		o.EventID = "header:X-Event-Id"
		v := newScheme(t, "hmac", hmacConfig(o))
		got := signWith(t, v, body, "hdr_2", testNow)
		if ev := wantValid(t, v, got, body, testNow); ev.ID != "hdr_2" {
			t.Errorf("id = %q", ev.ID)
		}
	})
}

func TestHMACTimestampAndTemplate(t *testing.T) {
	body := []byte(`{"id":"evt_1"}`)
	opts := HMACOptions{
		Header:          "X-Signature",
		Prefix:          "v1=",
		TimestampHeader: "X-Timestamp",
		Signed:          "v1:{timestamp}:{header.X-Request-Id}:{body}",
		EventID:         "header:X-Request-Id",
	}
	v := newScheme(t, "hmac", hmacConfig(opts))
	ts := strconv.FormatInt(testNow.Unix(), 10)
	h := http.Header{}
	h.Set("X-Timestamp", ts)
	h.Set("X-Request-Id", "req_1")
	h.Set("X-Signature", "v1="+hex.EncodeToString(rawMAC(sha256.New, hmacSecret, "v1:"+ts+":req_1:"+string(body))))

	t.Run("valid", func(t *testing.T) {
		ev := wantValid(t, v, h, body, testNow)
		if ev.ID != "req_1" || !ev.Timestamp.Equal(testNow) {
			t.Errorf("event = %+v", ev)
		}
	})
	t.Run("signed by Sign", func(t *testing.T) {
		got := signWith(t, v, body, "req_1", testNow)
		if !reflect.DeepEqual(got, h) {
			t.Errorf("Sign = %v, want %v", got, h)
		}
	})
	t.Run("Sign without the signed header's value", func(t *testing.T) {
		_, err := v.(Signer).Sign(body, "", testNow)
		wantConfigError(t, err, "signed")
	})
	t.Run("signed header changed", func(t *testing.T) {
		wantInvalid(t, v, withHeader(h, "X-Request-Id", "req_2"), body, testNow, ReasonSignature, hmacSecret)
	})
	t.Run("signed header missing", func(t *testing.T) {
		msg := wantInvalid(t, v, withHeader(h, "X-Request-Id", ""), body, testNow, ReasonSignature, hmacSecret)
		if msg != "X-Request-Id header missing (it is signed)" {
			t.Errorf("message = %q", msg)
		}
	})
	t.Run("timestamp changed", func(t *testing.T) {
		wantInvalid(t, v, withHeader(h, "X-Timestamp", strconv.FormatInt(testNow.Unix()-1, 10)), body, testNow, ReasonSignature, hmacSecret)
	})
	t.Run("timestamp missing", func(t *testing.T) {
		msg := wantInvalid(t, v, withHeader(h, "X-Timestamp", ""), body, testNow, ReasonSignature, hmacSecret)
		if msg != "X-Timestamp header missing" {
			t.Errorf("message = %q", msg)
		}
	})
	t.Run("timestamp malformed", func(t *testing.T) {
		wantInvalid(t, v, withHeader(h, "X-Timestamp", "yesterday"), body, testNow, ReasonSignature, hmacSecret)
	})
	t.Run("stale", func(t *testing.T) {
		wantInvalid(t, v, h, body, testNow.Add(5*time.Minute+time.Second), ReasonTimestamp, hmacSecret)
	})
	t.Run("future", func(t *testing.T) {
		wantInvalid(t, v, h, body, testNow.Add(-5*time.Minute-time.Second), ReasonTimestamp, hmacSecret)
	})
	t.Run("timestamp header checked without {timestamp}", func(t *testing.T) {
		o := opts
		o.Signed = ""
		o.EventID = ""
		v := newScheme(t, "hmac", hmacConfig(o))
		hh := withHeader(h, "X-Signature", "v1="+hex.EncodeToString(rawMAC(sha256.New, hmacSecret, string(body))))
		wantValid(t, v, hh, body, testNow)
		wantInvalid(t, v, hh, body, testNow.Add(time.Hour), ReasonTimestamp, hmacSecret)
	})
}

func TestHMACConfig(t *testing.T) {
	for _, tc := range []struct {
		name   string
		cfg    Config
		option string
	}{
		{"no secret", Config{HMAC: HMACOptions{Header: "X-Sig"}}, "secret"},
		{"no header", hmacConfig(HMACOptions{}), "header"},
		{"bad header", hmacConfig(HMACOptions{Header: "X Sig"}), "header"},
		{"algorithm", hmacConfig(HMACOptions{Header: "X-Sig", Algorithm: "md5"}), "algorithm"},
		{"encoding", hmacConfig(HMACOptions{Header: "X-Sig", Encoding: "base32"}), "encoding"},
		{"timestamp header", hmacConfig(HMACOptions{Header: "X-Sig", TimestampHeader: "X:Ts"}), "timestamp_header"},
		{"unknown placeholder", hmacConfig(HMACOptions{Header: "X-Sig", Signed: "{body}{nonce}"}), "signed"},
		{"unclosed", hmacConfig(HMACOptions{Header: "X-Sig", Signed: "{body}.{timestamp"}), "signed"},
		{"timestamp without header", hmacConfig(HMACOptions{Header: "X-Sig", Signed: "{timestamp}.{body}"}), "signed"},
		{"no body", hmacConfig(HMACOptions{Header: "X-Sig", TimestampHeader: "X-Ts", Signed: "{timestamp}"}), "signed"},
		{"empty header placeholder", hmacConfig(HMACOptions{Header: "X-Sig", Signed: "{header.}{body}"}), "signed"},
		{"event id form", hmacConfig(HMACOptions{Header: "X-Sig", EventID: "id"}), "event_id"},
		{"event id source", hmacConfig(HMACOptions{Header: "X-Sig", EventID: "query:id"}), "event_id"},
		{"event id empty header", hmacConfig(HMACOptions{Header: "X-Sig", EventID: "header:"}), "event_id"},
		{"event id empty path segment", hmacConfig(HMACOptions{Header: "X-Sig", EventID: "json:data..id"}), "event_id"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := newHMAC(tc.cfg)
			ce := wantConfigError(t, err, tc.option)
			if strings.Contains(ce.Error(), hmacSecret) {
				t.Errorf("message %q contains the secret", ce)
			}
		})
	}
}

func TestParseSignedTemplate(t *testing.T) {
	lit := func(s string) SignedPart { return SignedPart{Kind: SignedLiteral, Text: s} }
	body := SignedPart{Kind: SignedBody}
	ts := SignedPart{Kind: SignedTimestamp}
	hdr := func(s string) SignedPart { return SignedPart{Kind: SignedHeader, Text: s} }
	for _, tc := range []struct {
		tmpl string
		want []SignedPart
	}{
		{"{body}", []SignedPart{body}},
		{"{timestamp}.{body}", []SignedPart{ts, lit("."), body}},
		{"v0:{timestamp}:{body}", []SignedPart{lit("v0:"), ts, lit(":"), body}},
		{"{header.x-request-id}{body}}", []SignedPart{hdr("X-Request-Id"), body, lit("}")}},
		{"literal only", []SignedPart{lit("literal only")}},
		{"}{body}", []SignedPart{lit("}"), body}},
	} {
		got, err := ParseSignedTemplate(tc.tmpl)
		if err != nil || !reflect.DeepEqual(got, tc.want) {
			t.Errorf("ParseSignedTemplate(%q) = %+v, %v; want %+v", tc.tmpl, got, err, tc.want)
		}
	}
	for _, bad := range []string{"", "{", "{body", "{}", "{Body}", "{{body}}", "{header.}", "{header.a b}", "{body}{x}"} {
		if got, err := ParseSignedTemplate(bad); err == nil {
			t.Errorf("ParseSignedTemplate(%q) = %+v, want an error", bad, got)
		}
	}
}
