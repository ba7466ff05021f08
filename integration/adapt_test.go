package integration

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/hookguard/caddy-webhook-guard/internal/testkit"
)

// adaptSecretEnv names variables no test environment sets.
const (
	adaptSecretEnv = "WG_EDGES_ADAPT_IVY_SECRET"
	adaptKeyEnv    = "WG_EDGES_ADAPT_IVPAY_KEY"
)

// TestAdaptWithoutProductionSecrets adapts and validates a Caddyfile whose secrets are {env.*}
// and {file.*} placeholders, as CI or an image build would, without them: `caddy adapt` succeeds
// and keeps the placeholders in the JSON; `caddy validate` (which provisions) fails naming the
// option and the placeholder, and passes once they are there. A literal mistake still fails at
// adapt with its line.
func TestAdaptWithoutProductionSecrets(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs Caddy")
	}
	keyFile := filepath.Join(t.TempDir(), "ivpay-key")
	caddyfile := testkit.GlobalOptions("") + site(
		guardRoute("/ivy", "ivy {\n secret {env."+adaptSecretEnv+"}\n}", "127.0.0.1:9", ""),
		guardRoute("/ivpay", "ivpay {\n api_key {file."+keyFile+"}\n}", "127.0.0.1:9", ""),
	)
	out, errOut := testkit.Adapt(t, caddyfile)
	if errOut != "" {
		t.Fatalf("caddy adapt without the secrets failed:\n%s", errOut)
	}
	for _, placeholder := range []string{"{env." + adaptSecretEnv + "}", "{file." + keyFile + "}"} {
		if !strings.Contains(out, placeholder) {
			t.Errorf("the adapted JSON lacks %s", placeholder)
		}
	}

	// Routes are sorted by path length: /ivpay's guard is provisioned first.
	errOut = unquoteLog(testkit.Validate(t, caddyfile))
	if want := `api_key #1 "{file.` + keyFile + `}" resolved to an empty value`; !strings.Contains(errOut, want) {
		t.Errorf("caddy validate without the key file: want an error containing %q, got:\n%s", want, errOut)
	}
	secret, key := newSecret(t, "ivy_adapt_"), newSecret(t, "ivpay_adapt_")
	if err := os.WriteFile(keyFile, []byte(key+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	errOut = unquoteLog(testkit.Validate(t, caddyfile))
	if want := `secret #1 "{env.` + adaptSecretEnv + `}" resolved to an empty value`; !strings.Contains(errOut, want) {
		t.Errorf("caddy validate without the secret: want an error containing %q, got:\n%s", want, errOut)
	}
	errOut = unquoteLog(testkit.Validate(t, caddyfile, adaptSecretEnv+"=   "))
	if want := `secret #1 "{env.` + adaptSecretEnv + `}" resolved to only whitespace`; !strings.Contains(errOut, want) {
		t.Errorf("caddy validate with a blank secret: want an error containing %q, got:\n%s", want, errOut)
	}
	if errOut := testkit.Validate(t, caddyfile, adaptSecretEnv+"="+secret); errOut != "" {
		t.Errorf("caddy validate with the secrets failed:\n%s", errOut)
	}

	literal := testkit.GlobalOptions("") + site(
		guardRoute("/ivy", "ivy {\n secret {env."+adaptSecretEnv+"}\n secret \"  \"\n}", "127.0.0.1:9", ""),
	)
	if _, errOut := testkit.Adapt(t, literal); !strings.Contains(errOut, "secret #2 is only whitespace, at ") {
		t.Errorf("a blank literal secret: want an adapt error with its line, got:\n%s", errOut)
	}
}

// unquoteLog undoes the JSON escaping of quotes in Caddy's log output.
func unquoteLog(out string) string { return strings.ReplaceAll(out, `\"`, `"`) }

// TestAdaptWarnsOfEnvSubstitution adapts `secret {$NAME}` and `api_key {$NAME}` with the
// variables set: the adapted JSON holds the values, so `caddy adapt` warns, with the file and the
// line of each, as Caddy prints its adapter warnings, without the values; `secret {env.NAME}`
// is not warned about.
func TestAdaptWarnsOfEnvSubstitution(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs Caddy")
	}
	secret, key := newSecret(t, "ivy_subst_"), newSecret(t, "ivpay_subst_")
	caddyfile := testkit.GlobalOptions("") + site(
		guardRoute("/ivy", "ivy {\n secret {$"+adaptSecretEnv+"}\n}", "127.0.0.1:9", ""),
		guardRoute("/ivpay", "ivpay {\n api_key {$"+adaptKeyEnv+"}\n}", "127.0.0.1:9", ""),
		guardRoute("/env", "ivy {\n secret {env."+adaptSecretEnv+"}\n}", "127.0.0.1:9", ""),
	)
	text := strings.NewReplacer(testkit.AdminPlaceholder, testkit.AdaptAdminAddr,
		testkit.HTTPPlaceholder, strconv.Itoa(testkit.AdaptHTTPPort)).Replace(caddyfile)
	dir := t.TempDir()
	file := filepath.Join(dir, "Caddyfile")
	if err := os.WriteFile(file, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), testkit.CommandTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, testkit.CaddyBinary(t), "adapt", "--config", file, "--adapter", "caddyfile")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "XDG_DATA_HOME="+dir, "XDG_CONFIG_HOME="+dir,
		adaptSecretEnv+"="+secret, adaptKeyEnv+"="+key)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("caddy adapt: %v\n%s", err, stderr.String())
	}
	if !strings.Contains(stdout.String(), secret) {
		t.Fatal("the adapted JSON lacks the substituted secret: the warning would be wrong")
	}

	wantLines := map[string]int{}
	for i, line := range strings.Split(text, "\n") {
		switch strings.TrimSpace(line) {
		case "secret {$" + adaptSecretEnv + "}":
			wantLines["secret"] = i + 1
		case "api_key {$" + adaptKeyEnv + "}":
			wantLines["api_key"] = i + 1
		}
	}
	got := map[string]int{}
	for _, line := range strings.Split(stderr.String(), "\n") {
		var entry struct {
			Level, Logger, Msg, File string
			Line                     int
		}
		if json.Unmarshal([]byte(line), &entry) != nil || !strings.Contains(entry.Msg, "{$...} substitution") {
			continue
		}
		if entry.Level != "warn" || entry.File != file {
			t.Errorf("warning %s: want level warn and file %s", line, file)
		}
		for option := range wantLines {
			if strings.Contains(entry.Msg, ": "+option+" comes from") {
				got[option] = entry.Line
			}
		}
	}
	for option, line := range wantLines {
		if got[option] != line {
			t.Errorf("%s: warned at line %d, want %d\n%s", option, got[option], line, stderr.String())
		}
	}
	if n := strings.Count(stderr.String(), "{$...} substitution"); n != 2 {
		t.Errorf("%d warnings, want 2 (none for {env.*}):\n%s", n, stderr.String())
	}
	if strings.Contains(stderr.String(), secret) || strings.Contains(stderr.String(), key) {
		t.Error("the warnings print a secret")
	}
}
