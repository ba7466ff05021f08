package integration

import (
	"encoding/hex"
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/hookguard/caddy-webhook-guard/internal/testkit"
)

// signSlack returns the headers Slack sends with body, per its documentation:
// X-Slack-Request-Timestamp and X-Slack-Signature "v0=" + hex HMAC-SHA256 of "v0:{ts}:{body}".
func signSlack(secret string, body []byte) http.Header {
	ts := strconv.FormatInt(time.Now().Unix(), 10)
	return headers("Content-Type", "application/json", "X-Slack-Request-Timestamp", ts,
		"X-Slack-Signature", "v0="+hex.EncodeToString(hmacSHA256([]byte(secret), []byte("v0:"+ts+":"), body)))
}

// TestSlackURLVerification: Slack's url_verification (signed, sent when an Events API URL is set)
// needs its challenge echoed in the answer. On a spool route the guard answers it itself, verified
// (200, text/plain, the challenge; was "200 spooled" without it), and neither stores nor delivers
// it; so it does where `events` would drop it. On a reverse_proxy route that forwards its type it
// is forwarded as before and the backend's answer is Slack's. A forged one is 401.
func TestSlackURLVerification(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs Caddy")
	}
	up := testkit.StartUpstream(t)
	backend := newSpoolBackend(t)
	backend.start()
	secret := newSecret(t, "slack_")
	g := startGuard(t, globalOptions()+site(
		spoolRoute("/slack-spool", "slack {\n secret {env.SLACK}\n scope spooled\n spool {\n  to http://"+backend.addr+"\n }\n}"),
		guardRoute("/slack-proxy", "slack {\n secret {env.SLACK}\n scope proxied\n}", up.Addr(), ""),
		guardRoute("/slack-filtered", "slack {\n secret {env.SLACK}\n scope filtered\n events app_mention\n}", up.Addr(), ""),
	), map[string]string{"SLACK": secret})

	verification := func(challenge string) []byte {
		return []byte(`{"token":"Jhj5dZrVaK7ZwHHjRyZWjbDl","challenge":"` + challenge + `","type":"url_verification"}`)
	}
	answered := func(t *testing.T, path string) {
		t.Helper()
		sg := g.sub(t)
		challenge := "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P" + randomHex(t, 4)
		body := verification(challenge)
		before, mark := up.Count(), g.LogMark()
		resp := sg.post(path, signSlack(secret, body), body)
		expectStatus(t, path, resp, http.StatusOK)
		if string(resp.Body) != challenge || resp.Header.Get("Content-Type") != "text/plain; charset=utf-8" ||
			resp.Header.Get("Webhook-Guard-Outcome") != "handshake" {
			t.Errorf("%s: answer %q (Content-Type %q, outcome %q), want the challenge %q as text/plain",
				path, resp.Body, resp.Header.Get("Content-Type"), resp.Header.Get("Webhook-Guard-Outcome"), challenge)
		}
		expectNotForwarded(t, path, up, before)
		sg.expectLog(mark, logWant{Msg: "webhook handshake answered", Provider: "slack", Outcome: "handshake", Type: "url_verification", Status: 200})
		if n := len(sg.guardLogs(mark, logWant{Outcome: "spooled"})); n != 0 {
			t.Errorf("%s: the url_verification was spooled (%d log lines)", path, n)
		}
	}

	t.Run("spool route answers", func(t *testing.T) {
		answered(t, "/slack-spool")
		// An event on the same route is spooled and delivered, and it is the only delivery: the
		// url_verification answered before it was never stored.
		sg := g.sub(t)
		eventID := newID(t, "Ev")
		body := []byte(`{"type":"event_callback","event_id":"` + eventID + `","event":{"type":"app_mention","text":"hi"}}`)
		expectDropped(t, "event_callback", sg.post("/slack-spool", signSlack(secret, body), body), "spooled")
		got := backend.waitArrival(eventID)
		if string(got.body) != string(body) {
			t.Errorf("delivered body %q", got.body)
		}
		if all := backend.arrivals(); len(all) != 1 {
			t.Errorf("the backend received %d requests, want only the event", len(all))
		}
	})

	t.Run("events filter answers", func(t *testing.T) { answered(t, "/slack-filtered") })

	t.Run("reverse_proxy route forwards", func(t *testing.T) {
		sg := g.sub(t)
		body := verification("challenge-for-the-backend")
		before := up.Count()
		resp := sg.post("/slack-proxy", signSlack(secret, body), body)
		expectStatus(t, "forwarded url_verification", resp, http.StatusOK)
		expectForwarded(t, "forwarded url_verification", up, before, body)
		if o := resp.Header.Get("Webhook-Guard-Outcome"); o != "" {
			t.Errorf("forwarded url_verification: outcome %q", o)
		}
	})

	t.Run("forged", func(t *testing.T) {
		sg := g.sub(t)
		body := verification("forged-challenge")
		resp := sg.post("/slack-spool", signSlack("not-the-secret", body), body)
		expectStatus(t, "forged url_verification", resp, http.StatusUnauthorized)
		if string(resp.Body) == "forged-challenge" {
			t.Error("a forged url_verification got its challenge back")
		}
	})
}
