package webhookguard

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// caddyLogMessages are log messages of Caddy itself that the docs quote,
// with the directory of Caddy's module where they are logged; the test
// looks them up there rather than in this module.
var caddyLogMessages = map[string]string{
	"upstream roundtrip": "modules/caddyhttp/reverseproxy",
}

// TestDocsLogMessagesAreLogged: every log message the README and docs/
// quote (see docLogMessages for how a page quotes one) is the message of a
// zap call somewhere in the module's Go sources, or one of Caddy's own in
// caddyLogMessages, found in Caddy's source.
func TestDocsLogMessagesAreLogged(t *testing.T) {
	c := moduleCode(t)
	if len(c.messages) < 10 || c.loggedBy("webhook refused") == "" {
		t.Fatalf("the source scan found %d log messages, without \"webhook refused\": has the logging moved?", len(c.messages))
	}
	quoted := 0
	for _, file := range docFiles(t) {
		data, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		quoted += len(docLogMessages(file, string(data)))
		for _, q := range docLogMessages(file, string(data)) {
			if c.loggedBy(q.text) != "" {
				continue
			}
			if dir, ok := caddyLogMessages[q.text]; ok {
				if !caddyLogs(t, dir, q.text) {
					t.Errorf("%s: Caddy's log message %q is not logged in Caddy's %s", q.where, q.text, dir)
				}
				continue
			}
			t.Errorf("%s: log message %q is not logged by any zap call in the Go sources", q.where, q.text)
		}
	}
	if quoted < 20 {
		t.Fatalf("found only %d quoted log messages in the docs: has the convention changed?", quoted)
	}
}

// caddyLogs reports whether Caddy's source, in dir of its module, logs msg.
func caddyLogs(t *testing.T, dir, msg string) bool {
	t.Helper()
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", "github.com/caddyserver/caddy/v2").Output()
	if err != nil {
		t.Fatalf("finding Caddy's source: %v", err)
	}
	c, err := readModuleCode(filepath.Join(strings.TrimSpace(string(out)), dir))
	if err != nil {
		t.Fatal(err)
	}
	return c.loggedBy(msg) != ""
}
