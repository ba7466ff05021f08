package verify

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"
)

const slackSecret = "8f742231b10e8888abcd99yyyzzz85a5"

func slackHeader(secret string, ts int64, body []byte) http.Header {
	t := strconv.FormatInt(ts, 10)
	mac := hmac.New(sha256.New, []byte(secret))
	mac.Write([]byte("v0:" + t + ":"))
	mac.Write(body)
	h := http.Header{}
	h.Set("X-Slack-Request-Timestamp", t)
	h.Set("X-Slack-Signature", "v0="+hex.EncodeToString(mac.Sum(nil)))
	return h
}

func TestSlack(t *testing.T) {
	body := []byte(`{"token":"x","team_id":"T1","type":"event_callback","event_id":"Ev08MFMKH6","event":{"type":"app_mention","text":"hi"}}`)
	v := newScheme(t, "slack", Config{Secrets: []string{slackSecret}})
	h := slackHeader(slackSecret, testNow.Unix(), body)

	t.Run("valid Events API", func(t *testing.T) {
		ev := wantValid(t, v, h, body, testNow)
		if ev.ID != "Ev08MFMKH6" || ev.Type != "app_mention" || !ev.Timestamp.Equal(testNow) {
			t.Errorf("event = %+v", ev)
		}
	})
	t.Run("url_verification", func(t *testing.T) {
		b := []byte(`{"token":"x","challenge":"c","type":"url_verification"}`)
		ev := wantValid(t, v, slackHeader(slackSecret, testNow.Unix(), b), b, testNow)
		if ev.ID != BodyDigestID(b) || ev.Type != "url_verification" {
			t.Errorf("event = %+v", ev)
		}
	})
	t.Run("slash command form body", func(t *testing.T) {
		b := []byte("token=x&command=%2Fweather&trigger_id=13345224609.738474920.8088930838d88f008e0")
		ev := wantValid(t, v, slackHeader(slackSecret, testNow.Unix(), b), b, testNow)
		if ev.ID != BodyDigestID(b) || ev.Type != "" {
			t.Errorf("event = %+v", ev)
		}
	})
	t.Run("retry keeps the event id", func(t *testing.T) {
		later := testNow.Add(time.Minute)
		ev := wantValid(t, v, slackHeader(slackSecret, later.Unix(), body), body, later)
		if ev.ID != "Ev08MFMKH6" {
			t.Errorf("id = %q", ev.ID)
		}
	})
	t.Run("signed by Sign", func(t *testing.T) {
		got := signWith(t, v, body, "", testNow)
		if got.Get("X-Slack-Signature") != h.Get("X-Slack-Signature") || got.Get("X-Slack-Request-Timestamp") != h.Get("X-Slack-Request-Timestamp") {
			t.Errorf("Sign = %v, want %v", got, h)
		}
	})
	t.Run("tampered body", func(t *testing.T) {
		wantInvalid(t, v, h, append([]byte(nil), body[:len(body)-1]...), testNow, ReasonSignature, slackSecret)
	})
	t.Run("timestamp moved", func(t *testing.T) {
		wantInvalid(t, v, withHeader(h, "X-Slack-Request-Timestamp", strconv.FormatInt(testNow.Unix()+1, 10)), body, testNow, ReasonSignature, slackSecret)
	})
	t.Run("wrong secret", func(t *testing.T) {
		other := newScheme(t, "slack", Config{Secrets: []string{"8f742231b10e8888abcd99yyyzzz85a6"}})
		wantInvalid(t, other, h, body, testNow, ReasonSignature, slackSecret, "8f742231b10e8888abcd99yyyzzz85a6")
	})
	t.Run("rotation: second secret matches", func(t *testing.T) {
		rot := newScheme(t, "slack", Config{Secrets: []string{"old-secret", slackSecret}})
		wantValid(t, rot, h, body, testNow)
	})
	t.Run("missing signature", func(t *testing.T) {
		wantInvalid(t, v, withHeader(h, "X-Slack-Signature", ""), body, testNow, ReasonSignature, slackSecret)
	})
	t.Run("missing timestamp", func(t *testing.T) {
		msg := wantInvalid(t, v, withHeader(h, "X-Slack-Request-Timestamp", ""), body, testNow, ReasonSignature, slackSecret)
		if msg != "X-Slack-Request-Timestamp header missing" {
			t.Errorf("message = %q", msg)
		}
	})
	sig := h.Get("X-Slack-Signature")
	for _, bad := range []string{
		sig[len("v0="):],
		"v1=" + sig[len("v0="):],
		"v0=" + sig[len("v0=")+2:],
		"v0=" + sig[len("v0="):len(sig)-1] + "g",
		"v0=",
	} {
		t.Run("malformed "+bad, func(t *testing.T) {
			wantInvalid(t, v, withHeader(h, "X-Slack-Signature", bad), body, testNow, ReasonSignature, slackSecret)
		})
	}
	t.Run("malformed timestamp", func(t *testing.T) {
		wantInvalid(t, v, withHeader(h, "X-Slack-Request-Timestamp", "1700000000.5"), body, testNow, ReasonSignature, slackSecret)
	})
	t.Run("stale", func(t *testing.T) {
		wantInvalid(t, v, h, body, testNow.Add(6*time.Minute), ReasonTimestamp, slackSecret)
	})
	t.Run("future", func(t *testing.T) {
		wantInvalid(t, v, h, body, testNow.Add(-6*time.Minute), ReasonTimestamp, slackSecret)
	})
	t.Run("config", func(t *testing.T) {
		_, err := slackPreset.build(Config{})
		wantConfigError(t, err, "secret")
	})
}

// TestSlackHandshake: the slack scheme recognises a verified url_verification
// and answers its challenge as text/plain; anything else, or a challenge that
// is not a short JSON string, is not a handshake. No other scheme has one.
func TestSlackHandshake(t *testing.T) {
	v := newScheme(t, "slack", Config{Secrets: []string{slackSecret}})
	s, _ := Lookup("slack")
	for _, c := range []struct {
		body, answer string // answer "" when not a handshake
	}{
		{`{"token":"Jhj5dZrVaK7ZwHHjRyZWjbDl","challenge":"3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P","type":"url_verification"}`, "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P"},
		{`{"type":"url_verification","challenge":"a\u00e9b"}`, "aéb"},
		{`{"type":"url_verification"}`, ""},
		{`{"type":"url_verification","challenge":""}`, ""},
		{`{"type":"url_verification","challenge":42}`, ""},
		{`{"type":"url_verification","challenge":null}`, ""},
		{`{"type":"url_verification","challenge":"` + strings.Repeat("c", 1025) + `"}`, ""},
		{`{"Type":"url_verification","challenge":"c"}`, ""}, // not as Slack writes it
		{`{"type":"event_callback","challenge":"c","event":{"type":"url_verification"}}`, ""},
		{`{"type":"app_rate_limited","challenge":"c"}`, ""},
	} {
		body := []byte(c.body)
		ev, err := v.Verify(slackHeader(slackSecret, testNow.Unix(), body), body, testNow)
		if err != nil {
			t.Fatalf("%s: %v", c.body, err)
		}
		ctype, answer, ok := s.Handshake(ev, body)
		switch {
		case c.answer == "" && ok:
			t.Errorf("%.60s: answered %q", c.body, answer)
		case c.answer != "" && (!ok || string(answer) != c.answer || ctype != "text/plain; charset=utf-8"):
			t.Errorf("%.60s: %q %q %v, want %q", c.body, ctype, answer, ok, c.answer)
		}
	}
	for _, name := range Names() {
		if other, _ := Lookup(name); name != "slack" && other.Handshake != nil {
			t.Errorf("%s has a handshake", name)
		}
	}
}
