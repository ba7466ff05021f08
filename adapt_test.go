package webhookguard

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/caddyserver/caddy/v2/caddytest"
)

// TestCaddyfileAdapt checks testdata/caddyfile_adapt/*.caddyfiletest as Caddy
// core does: a Caddyfile, a line of dashes, then either the expected JSON or
// a substring of the expected error (which names the option and the line).
// UPDATE_ADAPT=1 fills in an empty expected JSON from the adapter's output.
func TestCaddyfileAdapt(t *testing.T) {
	t.Setenv("WEBHOOK_GUARD_TEST_SECRET", "adapt-secret-value")
	t.Setenv("WEBHOOK_GUARD_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
	files, err := filepath.Glob("testdata/caddyfile_adapt/*.caddyfiletest")
	if err != nil || len(files) == 0 {
		t.Fatalf("no adapt fixtures: %v", err)
	}
	for _, file := range files {
		t.Run(strings.TrimSuffix(filepath.Base(file), ".caddyfiletest"), func(t *testing.T) {
			data, err := os.ReadFile(file)
			if err != nil {
				t.Fatal(err)
			}
			caddyfileText, expected, ok := strings.Cut(string(data), "----------")
			if !ok {
				t.Fatal("fixture has no ---------- separator")
			}
			caddyfileText = strings.TrimSpace(caddyfileText) + "\n"
			expected = strings.TrimSpace(expected)

			if expected == "" && os.Getenv("UPDATE_ADAPT") == "1" {
				out, _, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(caddyfileText), nil)
				if err != nil {
					t.Fatal(err)
				}
				var pretty bytes.Buffer
				json.Indent(&pretty, out, "", "\t")
				os.WriteFile(file, []byte(caddyfileText+"----------\n"+pretty.String()+"\n"), 0o644)
				return
			}
			if strings.HasPrefix(expected, "{") {
				if !caddytest.CompareAdapt(t, file, caddyfileText, "caddyfile", expected) {
					t.Error("adapted JSON differs")
				}
				return
			}
			_, _, err = caddyconfig.GetAdapter("caddyfile").Adapt([]byte(caddyfileText), nil)
			if err == nil {
				t.Fatalf("adapting succeeded, want an error containing %q", expected)
			}
			if !strings.Contains(err.Error(), expected) {
				t.Fatalf("error:\n%v\nwant it to contain:\n%s", err, expected)
			}
			if strings.Contains(err.Error(), "adapt-secret-value") {
				t.Fatal("error contains a secret")
			}
		})
	}
}
