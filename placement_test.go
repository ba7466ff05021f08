package webhookguard

import (
	"bufio"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
)

// validateCaddyfile adapts a Caddyfile and provisions it as `caddy validate`
// does, in process, with Caddy's data in a temporary folder and every log
// line of the module (DEBUG and up) written as JSON to a file. It returns
// those log lines and the validation error.
func validateCaddyfile(t *testing.T, caddyfile string) ([]map[string]any, error) {
	t.Helper()
	t.Setenv("XDG_DATA_HOME", t.TempDir())
	t.Setenv("XDG_CONFIG_HOME", t.TempDir())
	adapted, warnings, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(caddyfile), nil)
	if err != nil {
		t.Fatalf("adapt: %v", err)
	}
	if len(warnings) > 0 {
		t.Fatalf("adapt warnings: %v", warnings)
	}
	var cfg caddy.Config
	if err := json.Unmarshal(adapted, &cfg); err != nil {
		t.Fatal(err)
	}
	logFile := filepath.Join(t.TempDir(), "caddy.log")
	// A log of the module's own (not the default log, which Caddy would
	// then redirect for the whole test process).
	cfg.Logging = &caddy.Logging{Logs: map[string]*caddy.CustomLog{"webhook_guard": {
		BaseLog: caddy.BaseLog{
			WriterRaw:  json.RawMessage(`{"output":"file","filename":` + jsonString(logFile) + `}`),
			EncoderRaw: json.RawMessage(`{"format":"json"}`),
			Level:      "DEBUG",
		},
		Include: []string{"http.handlers.webhook_guard"},
	}}}
	err = caddy.Validate(&cfg)
	f, openErr := os.Open(logFile)
	if openErr != nil {
		return nil, err
	}
	defer f.Close()
	var lines []map[string]any
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var m map[string]any
		if json.Unmarshal(sc.Bytes(), &m) == nil {
			lines = append(lines, m)
		}
	}
	return lines, err
}

func jsonString(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

// An unset {env.*} secret fails the load naming the handler's Caddyfile
// line and route, and the placeholder (never a value).
func TestProvisionErrorNamesLineAndRoute(t *testing.T) {
	t.Setenv("WG_PLACEMENT_UNSET", "")
	_, err := validateCaddyfile(t, `:8080 {
	handle /hooks/ivy {
		webhook_guard ivy {
			secret {env.WG_PLACEMENT_UNSET}
			store memory
		}
		reverse_proxy 127.0.0.1:9
	}
	handle /other {
		respond "other"
	}
}
`)
	want := `webhook_guard ivy at Caddyfile:3 (route: path /hooks/ivy): secret #1 "{env.WG_PLACEMENT_UNSET}" resolved to an empty value`
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("error %v\nwant it to contain %q", err, want)
	}
}

// Two literal-secret handlers of one provider and scope with no secret in
// common: the error tells them apart by line and route.
func TestScopeConflictNamesBothHandlers(t *testing.T) {
	_, err := validateCaddyfile(t, `shop.example:8080 {
	handle /a {
		webhook_guard ivy {
			secret literal-secret-of-route-a
			store memory
		}
		reverse_proxy 127.0.0.1:9
	}
	handle /b {
		webhook_guard ivy {
			secret literal-secret-of-route-b
			store memory
		}
		reverse_proxy 127.0.0.1:9
	}
}
`)
	if err == nil {
		t.Fatal("the conflict loaded")
	}
	for _, want := range []string{
		"webhook_guard ivy at Caddyfile:3 (route: host shop.example, path /a; secret given literally, 25 characters)",
		"webhook_guard ivy at Caddyfile:10 (route: host shop.example, path /b; secret given literally, 25 characters)",
		`remember events under the same scope "ivy"`,
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %v\nwant it to contain %q", err, want)
		}
	}
	if strings.Count(err.Error(), "webhook_guard ivy at") != 2 {
		t.Errorf("the error names a handler more than once: %v", err)
	}
	if strings.Contains(err.Error(), "literal-secret-of-route") {
		t.Errorf("the error shows a secret: %v", err)
	}
}

// neverRunsWarnings are the warnings of spool guards whose route goes on.
func neverRunsWarnings(lines []map[string]any) []map[string]any {
	var out []map[string]any
	for _, l := range lines {
		if l["level"] == "warn" && strings.Contains(l["msg"].(string), "never runs") {
			out = append(out, l)
		}
	}
	return out
}

// A spool guard answers every request itself: what follows it in its route
// never runs, and the load warns, naming the guard's line and what never
// runs. Nothing is warned when nothing follows, or when what follows is
// reached by requests the guard does not match.
func TestSpoolGuardWarnsOfWhatNeverRuns(t *testing.T) {
	spool := func(indent string) string { return "spool {\n" + indent + "\tto http://127.0.0.1:9\n" + indent + "}" }
	cases := []struct {
		name, caddyfile string
		declared        string
		neverRuns       []string
	}{
		{"reverse_proxy after the guard in a handle block", `:8080 {
	handle /hooks/ivy {
		webhook_guard ivy {
			secret ivy-secret-value
			` + spool("\t\t\t") + `
		}
		reverse_proxy 127.0.0.1:9
	}
	handle {
		respond "other"
	}
}
`, "Caddyfile:3", []string{"reverse_proxy"}},
		{"a handle block after a guard with the same matcher, in one route", `:8080 {
	webhook_guard /hooks/ivy ivy {
		secret ivy-secret-value
		` + spool("\t\t") + `
	}
	handle /hooks/ivy {
		header X-Seen yes
		reverse_proxy 127.0.0.1:9
	}
}
`, "Caddyfile:2", []string{"headers", "reverse_proxy"}},
		{"a route block", `:8080 {
	route /hooks/ivy {
		webhook_guard ivy {
			secret ivy-secret-value
			` + spool("\t\t\t") + `
		}
		respond "never"
	}
}
`, "Caddyfile:3", []string{"static_response"}},
		{"nothing after the guard", `:8080 {
	handle /hooks/ivy {
		webhook_guard ivy {
			secret ivy-secret-value
			` + spool("\t\t\t") + `
		}
	}
	handle {
		respond "other"
	}
}
`, "", nil},
		{"a guard with a matcher: what follows runs for other requests", `:8080 {
	route {
		webhook_guard /hooks/ivy ivy {
			secret ivy-secret-value
			` + spool("\t\t\t") + `
		}
		respond "other paths"
	}
}
`, "", nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			lines, err := validateCaddyfile(t, c.caddyfile)
			if err != nil {
				t.Fatalf("validate: %v", err)
			}
			warned := neverRunsWarnings(lines)
			if c.neverRuns == nil {
				if len(warned) != 0 {
					t.Fatalf("warned %v, want nothing", warned)
				}
				return
			}
			if len(warned) != 1 {
				t.Fatalf("%d warnings, want 1 (logs: %v)", len(warned), lines)
			}
			w := warned[0]
			if w["declared_at"] != c.declared || !strings.HasPrefix(w["handler"].(string), "webhook_guard ivy at "+c.declared) {
				t.Errorf("warning %v, want it to name %s", w, c.declared)
			}
			got, _ := json.Marshal(w["never_runs"])
			want, _ := json.Marshal(c.neverRuns)
			if string(got) != string(want) {
				t.Errorf("never_runs %s, want %s", got, want)
			}
			if strings.Contains(w["msg"].(string), "ivy-secret-value") {
				t.Error("the warning shows the secret")
			}
		})
	}
}
