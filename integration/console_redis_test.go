package integration

import (
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"testing"

	"github.com/hookguard/caddy-webhook-guard/internal/testkit"
)

// TestConsoleOverRedisSpool: two Caddy instances spool into one Redis, each with its own
// console. An event spooled by instance 0 is listed, with its body, by instance 1's console in
// a real browser; Pause clicked there pauses the scope for the fleet (instance 0's admin API
// says so) and Resume clicked in instance 0's console lets the event through to the backend.
func TestConsoleOverRedisSpool(t *testing.T) {
	testkit.SkipIfShort(t, "runs two Caddy instances, redis-server and Chromium")
	srv := testkit.StartRedisWith(t, testkit.RedisOptions{AppendFsync: "always"})
	backend := startFleetBackend(t)
	backend.setStatus(http.StatusServiceUnavailable) // the event stays pending
	key := newSecret(t, "ivpay_console_redis_")
	password := newSecret(t, "ops-")
	auth := basicAuth("ops", password)
	store := fleetRedisStore("2s")
	consoles := make([]string, 2)
	gs := make([]*guard, 2)
	for n := range gs {
		port := testkit.FreePort(t)
		consoles[n] = "http://127.0.0.1:" + strconv.Itoa(port)
		cfg := fleetConfig(n, store, backend.url()) + fmt.Sprintf(`:%d {
	basic_auth {
		ops %s
	}
	route {
		webhook_guard_console {
			actions retry discard pause
		}
	}
}
`, port, hashPassword(t, password))
		gs[n] = startGuard(t, cfg, map[string]string{"IVPAY_KEY": key, "REDIS_URL": srv.URL()}, password, auth)
		spoolSecrets(gs[n])
	}
	ev := fleetSpool(t, gs[0], key, "pay_console_redis")
	r := &consoleRig{t: t, g: gs[1], key: key}
	r.b = testkit.StartBrowser(t)
	r.as(auth)

	r.page(consoles[1] + "/events?q=" + ev.id)
	rows := eval[string](r, `Array.from(document.querySelectorAll("table.events tbody tr")).map(r => r.innerText).join("|")`)
	if strings.Count(rows, "|") != 0 || !strings.Contains(rows, ev.id) || !strings.Contains(rows, "pending") {
		t.Fatalf("instance 1's console lists %q, want the one pending event %s spooled by instance 0", rows, ev.id)
	}
	r.follow(clickOn(`table.events a[href*="events/"]`))
	body := eval[string](r, `document.querySelector("pre.body").textContent`)
	if !strings.Contains(body, strings.TrimSuffix(ev.id, "/paid")) {
		t.Errorf("event page body %q, want the spooled body", body)
	}
	if html := r.html(); strings.Contains(html, key) {
		t.Error("the event page shows the API key")
	}

	r.page(consoles[1] + "/")
	r.click(`button[data-action="pause"][data-scope="ivpay"]`)
	r.act("paused", clickOn("#confirm-yes"))
	if status, answer := gs[0].AdminGet(t, "/webhook_guard/spool"); status != http.StatusOK || !strings.Contains(string(answer), `"paused":["ivpay"]`) {
		t.Fatalf("instance 0 after Pause in instance 1's console: %d %s", status, answer)
	}
	backend.setStatus(http.StatusOK)
	r.page(consoles[0] + "/")
	r.act("resumed", clickOn(`button[data-action="resume"][data-scope="ivpay"]`))
	backend.waitAccepted(ev.id)
}
