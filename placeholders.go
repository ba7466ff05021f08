package webhookguard

import (
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"go.uber.org/zap"

	"github.com/hookguard/caddy-webhook-guard/verify"
)

// Secrets given as placeholders ({env.NAME}, {file./path}) are resolved only
// at provisioning, as caddy-dns/cloudflare resolves its token: `caddy adapt`
// and `caddy validate --adapter caddyfile` in CI or an image build need no
// production secret, and the adapted JSON holds the placeholder, never the
// value. At adapt time the Caddyfile is still checked for literal mistakes
// (an empty or blank secret, a malformed literal key, bad hmac options),
// each reported with its line; a placeholder entry is replaced there by a
// sample valid for every scheme, so that the rest can be checked.

// placeholderSamples stand in, at adapt time, for the entries of each secret
// option that are placeholders: a value every scheme accepts for it.
var placeholderSamples = map[string]string{
	"secret":     "whsec_" + base64.StdEncoding.EncodeToString([]byte(strings.Repeat("k", 32))),
	"api_key":    "adapt-time-sample-api-key",
	"public_key": "whpk_" + base64.StdEncoding.EncodeToString([]byte(strings.Repeat("p", 32))),
	// sign_upstream takes a Standard Webhooks secret, as the secret sample is.
	"sign_upstream": "whsec_" + base64.StdEncoding.EncodeToString([]byte(strings.Repeat("k", 32))),
}

// hasPlaceholder reports whether v holds a {...} placeholder, which is left
// to provisioning.
func hasPlaceholder(v string) bool {
	found := false
	repl := caddy.NewEmptyReplacer()
	repl.Map(func(string) (any, bool) {
		found = true
		return "", true
	})
	repl.ReplaceKnown(v, "")
	return found
}

// adaptConfig is the scheme configuration checked at adapt time: literal
// secrets as written (an empty or blank one is an error naming its entry),
// placeholder entries replaced by samples, nothing resolved.
func (h *Handler) adaptConfig() (verify.Config, error) {
	cfg := verify.Config{Tolerance: time.Duration(h.Tolerance)}
	if cfg.Tolerance == 0 {
		cfg.Tolerance = verify.DefaultTolerance
	}
	var err error
	if cfg.Secrets, err = literalSecrets("secret", h.Secrets); err != nil {
		return cfg, err
	}
	if cfg.APIKeys, err = literalSecrets("api_key", h.APIKeys); err != nil {
		return cfg, err
	}
	if cfg.PublicKeys, err = literalSecrets("public_key", h.PublicKeys); err != nil {
		return cfg, err
	}
	if h.HMAC != nil {
		cfg.HMAC = *h.HMAC
	}
	// The literal values, to be kept out of error texts.
	for _, list := range [][]string{h.Secrets, h.APIKeys, h.SignUpstream} {
		for _, v := range list {
			if !hasPlaceholder(v) {
				h.secrets = append(h.secrets, v)
			}
		}
	}
	return cfg, nil
}

// literalSecrets returns values with every placeholder entry replaced by the
// option's sample, refusing an empty or blank literal entry.
func literalSecrets(option string, values []string) ([]string, error) {
	out := make([]string, 0, len(values))
	for i, v := range values {
		switch {
		case hasPlaceholder(v):
			out = append(out, placeholderSamples[option])
		case strings.TrimSpace(v) == "":
			return nil, &entryError{Option: option, Index: i, Msg: fmt.Sprintf("%s #%d %s", option, i+1, blankWhat(v))}
		default:
			out = append(out, v)
		}
	}
	return out, nil
}

// blankWhat says what is wrong with a blank value.
func blankWhat(v string) string {
	if v == "" {
		return "is empty"
	}
	return "is only whitespace"
}

// withPlaceholders adds to a scheme's configuration error the placeholders
// its option's values came from (their names, never their values), so that
// a malformed secret from {env.NAME} says where to look.
func (h *Handler) withPlaceholders(err error) error {
	var ce *verify.ConfigError
	if !errors.As(err, &ce) {
		return err
	}
	values := map[string][]string{"secret": h.Secrets, "api_key": h.APIKeys, "public_key": h.PublicKeys, "sign_upstream": h.SignUpstream}[ce.Option]
	var names []string
	for i, v := range values {
		if hasPlaceholder(v) {
			names = append(names, fmt.Sprintf("#%d is %s", i+1, placeholderName(v)))
		}
	}
	if len(names) == 0 {
		return err
	}
	return fmt.Errorf("%w (%s %s)", err, ce.Option, strings.Join(names, ", "))
}

// secretOptions are the options whose argument is a secret.
var secretOptions = []string{"secret", "api_key", "sign_upstream"}

// warnEnvSubstitution warns, as Caddy's adapter warnings are printed, when
// the argument of a secret option came from a {$NAME} substitution: Caddy
// substitutes it before parsing, so the secret is written into the adapted
// JSON (the admin API's GET /config/, the autosave file). The Caddyfile
// token does not keep its original text, so the option's line is read from
// the token's file, and taken as the source only when expanding its {$...}
// as Caddy does gives the parsed value. When the file cannot be read (a
// Caddyfile given on stdin or to the admin API) there is no warning.
func (h *Handler) warnEnvSubstitution(at map[string][]caddyfile.Token) {
	values := map[string][]string{"secret": h.Secrets, "api_key": h.APIKeys, "sign_upstream": h.SignUpstream}
	files := map[string][]string{}
	for _, option := range secretOptions {
		for i, tok := range at[option] {
			if i >= len(values[option]) {
				break
			}
			fileLines, ok := files[tok.File]
			if !ok {
				if data, err := os.ReadFile(tok.File); err == nil {
					fileLines = strings.Split(string(data), "\n")
				}
				files[tok.File] = fileLines
			}
			if tok.Line < 1 || tok.Line > len(fileLines) {
				continue
			}
			raw := fileLines[tok.Line-1]
			value := values[option][i]
			if !strings.Contains(raw, "{$") || value == "" || strings.Contains(raw, value) ||
				!strings.Contains(expandEnv(raw), value) {
				continue
			}
			caddy.Log().Named("caddyfile").Warn(
				"webhook_guard "+h.Provider+": "+option+" comes from a {$...} substitution, so its value is written into the adapted JSON config "+
					"(admin API GET /config/, autosave.json); use {env.NAME} or {file./path}, resolved only at provisioning",
				zap.String("file", tok.File), zap.Int("line", tok.Line))
		}
	}
}

// expandEnv substitutes {$NAME} and {$NAME:default} in line as the
// Caddyfile parser does before tokenizing.
func expandEnv(line string) string {
	var b strings.Builder
	for {
		start := strings.Index(line, "{$")
		if start < 0 {
			break
		}
		end := strings.Index(line[start+2:], "}")
		if end < 0 {
			break
		}
		name, def, hasDefault := strings.Cut(line[start+2:start+2+end], ":")
		v, found := os.LookupEnv(name)
		if !found && hasDefault {
			v = def
		}
		b.WriteString(line[:start])
		b.WriteString(v)
		line = line[start+2+end+1:]
	}
	b.WriteString(line)
	return b.String()
}
