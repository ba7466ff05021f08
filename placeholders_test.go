package webhookguard

import (
	"context"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
)

// TestPlaceholderSecretsCheckedAtProvision: a secret given as a placeholder
// passes the Caddyfile (nothing is resolved there) and is checked when the
// handler is provisioned, with an error naming the option and the
// placeholder, never the value.
func TestPlaceholderSecretsCheckedAtProvision(t *testing.T) {
	t.Setenv("WG_EDGES_UNSET", "")
	t.Setenv("WG_EDGES_BLANK", "  \t ")
	t.Setenv("WG_EDGES_MALFORMED", "not-a-whsec-value-s3cr3t")
	cases := []struct {
		provider, caddyfileBlock string
		want                     []string
	}{
		{"ivy", "secret {env.WG_EDGES_UNSET}", []string{`secret #1 "{env.WG_EDGES_UNSET}" resolved to an empty value`}},
		{"ivy", "secret literal-one\nsecret {env.WG_EDGES_BLANK}", []string{`secret #2 "{env.WG_EDGES_BLANK}" resolved to only whitespace`}},
		{"ivpay", "api_key {file./nonexistent/wg-edges-key}", []string{`api_key #1 "{file./nonexistent/wg-edges-key}" resolved to an empty value`}},
		{"standard", "secret {env.WG_EDGES_MALFORMED}", []string{"secret: value #1 is not a whsec_", `#1 is "{env.WG_EDGES_MALFORMED}"`}},
	}
	for _, c := range cases {
		h := new(Handler)
		d := caddyfile.NewTestDispenser("webhook_guard " + c.provider + " {\n" + c.caddyfileBlock + "\n}")
		if err := h.UnmarshalCaddyfile(d); err != nil {
			t.Errorf("%s: the Caddyfile must pass without resolving the placeholder: %v", c.caddyfileBlock, err)
			continue
		}
		ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
		err := h.Provision(ctx)
		h.Cleanup()
		cancel()
		if err == nil {
			t.Errorf("%s: provisioning succeeded", c.caddyfileBlock)
			continue
		}
		for _, want := range c.want {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("%s: error %q, want it to contain %q", c.caddyfileBlock, err, want)
			}
		}
		if strings.Contains(err.Error(), "s3cr3t") {
			t.Errorf("the error shows the secret: %v", err)
		}
	}
}

// TestLiteralSecretMistakesAtAdapt: a blank literal secret is refused by the
// Caddyfile with its line, whatever the placeholders beside it.
func TestLiteralSecretMistakesAtAdapt(t *testing.T) {
	for block, want := range map[string]string{
		"secret {env.WG_EDGES_UNSET}\nsecret \" \"": "secret #2 is only whitespace, at Testfile:3",
		"api_key \"\"": "api_key #1 is empty, at Testfile:2",
		"secret {env.WG_EDGES_UNSET}\nsecret \"\"": "secret #2 is empty, at Testfile:3",
	} {
		provider := "ivy"
		if strings.HasPrefix(block, "api_key") {
			provider = "ivpay"
		}
		d := caddyfile.NewTestDispenser("webhook_guard " + provider + " {\n" + block + "\n}")
		err := new(Handler).UnmarshalCaddyfile(d)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: error %v, want %q", block, err, want)
		}
	}
}

// TestExpandEnv expands {$NAME} and {$NAME:default} as the Caddyfile
// parser does.
func TestExpandEnv(t *testing.T) {
	t.Setenv("WG_EDGES_SET", "value")
	for in, want := range map[string]string{
		"secret {$WG_EDGES_SET}":                  "secret value",
		"secret {$WG_EDGES_UNSET_X:dflt}":         "secret dflt",
		"secret {$WG_EDGES_UNSET_X}":              "secret ",
		"secret a{$WG_EDGES_SET}b{$WG_EDGES_SET}": "secret avaluebvalue",
		"secret {env.WG_EDGES_SET}":               "secret {env.WG_EDGES_SET}",
		"secret {$unterminated":                   "secret {$unterminated",
	} {
		if got := expandEnv(in); got != want {
			t.Errorf("expandEnv(%q) = %q, want %q", in, got, want)
		}
	}
}
