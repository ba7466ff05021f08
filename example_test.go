package webhookguard

import (
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
)

// TestExampleKeepsToItself: Caddyfile.example, which a new user runs first,
// keeps its ledger in one file of its own, outside Caddy's data directory
// (where a real Caddy keeps its certificates and ledger), says so in a
// comment, and listens on loopback only.
func TestExampleKeepsToItself(t *testing.T) {
	text, err := os.ReadFile("Caddyfile.example")
	if err != nil {
		t.Fatal(err)
	}
	out, _, err := caddyconfig.GetAdapter("caddyfile").Adapt(text, nil)
	if err != nil {
		t.Fatal(err)
	}
	var cfg struct {
		Admin struct {
			Listen string `json:"listen"`
		} `json:"admin"`
		Apps struct {
			HTTP struct {
				Servers map[string]struct {
					Listen []string `json:"listen"`
				} `json:"servers"`
			} `json:"http"`
		} `json:"apps"`
	}
	if err := json.Unmarshal(out, &cfg); err != nil {
		t.Fatal(err)
	}

	loopback := func(hostport string) bool {
		host, _, err := net.SplitHostPort(hostport)
		if err != nil {
			return false
		}
		ip := net.ParseIP(host)
		return host == "localhost" || ip != nil && ip.IsLoopback()
	}
	if !loopback(cfg.Admin.Listen) {
		t.Errorf("admin endpoint listens on %q, not loopback", cfg.Admin.Listen)
	}
	if len(cfg.Apps.HTTP.Servers) == 0 {
		t.Fatal("no servers")
	}
	for name, srv := range cfg.Apps.HTTP.Servers {
		for _, addr := range srv.Listen {
			if !loopback(strings.TrimPrefix(addr, "tcp/")) {
				t.Errorf("server %s listens on %q, not loopback", name, addr)
			}
		}
	}

	// Every guard's store: a file, the same one, absolute, outside Caddy's
	// data directory, named in a comment.
	var stores []map[string]any
	var walk func(any)
	walk = func(v any) {
		switch v := v.(type) {
		case map[string]any:
			if v["handler"] == "webhook_guard" {
				s, _ := v["store"].(map[string]any)
				stores = append(stores, s)
			}
			for _, e := range v {
				walk(e)
			}
		case []any:
			for _, e := range v {
				walk(e)
			}
		}
	}
	var generic any
	if err := json.Unmarshal(out, &generic); err != nil {
		t.Fatal(err)
	}
	walk(generic)
	if len(stores) < 6 {
		t.Fatalf("found %d webhook_guard handlers, want one per provider route", len(stores))
	}
	path, _ := stores[0]["path"].(string)
	for i, s := range stores {
		if s["type"] != "file" || s["path"] != path {
			t.Errorf("handler %d: store %v, want {type: file, path: %q} as the first handler's", i+1, s, path)
		}
	}
	data := filepath.Clean(caddy.AppDataDir())
	switch {
	case !filepath.IsAbs(path):
		t.Errorf("ledger path %q is not absolute (a relative one depends on the working directory)", path)
	case strings.HasPrefix(filepath.Clean(path), data+string(filepath.Separator)):
		t.Errorf("ledger path %q is in Caddy's data directory %s", path, data)
	}
	var comment bool
	for line := range strings.Lines(string(text)) {
		if strings.HasPrefix(strings.TrimSpace(line), "#") && strings.Contains(line, path) {
			comment = true
		}
	}
	if !comment {
		t.Errorf("no comment names the demo's ledger file %s", path)
	}
}
