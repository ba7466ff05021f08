package webhookguard

import (
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/caddyserver/caddy/v2"
)

// resolveSecrets resolves the {env.NAME} and {file./path} placeholders of a
// list of secrets once, at provisioning. An empty or blank result is a
// configuration error naming the option, the entry and its placeholder,
// never the value.
func resolveSecrets(repl *caddy.Replacer, option string, values []string) ([]string, error) {
	out := make([]string, 0, len(values))
	for i, v := range values {
		resolved := repl.ReplaceKnown(v, "")
		if strings.TrimSpace(resolved) == "" {
			what := blankWhat(v)
			if hasPlaceholder(v) {
				what = fmt.Sprintf("%s resolved to an empty value (unset variable or unreadable file?)", placeholderName(v))
				if resolved != "" {
					what = fmt.Sprintf("%s resolved to only whitespace", placeholderName(v))
				}
			}
			return nil, &entryError{Option: option, Index: i, Msg: fmt.Sprintf("%s #%d %s", option, i+1, what)}
		}
		out = append(out, resolved)
	}
	return out, nil
}

// placeholderName shows which placeholder a secret came from, which is safe
// to print: only its name, never a literal secret.
func placeholderName(v string) string {
	if strings.HasPrefix(v, "{") && strings.HasSuffix(v, "}") && !strings.ContainsAny(v[1:len(v)-1], "{}") {
		return strconv.Quote(v)
	}
	return "its placeholder"
}

// redact removes every configured secret and key from s: a last line of
// defence for error texts that echo input.
func (h *Handler) redact(s string) string {
	for _, secret := range h.secrets {
		if secret != "" && strings.Contains(s, secret) {
			s = strings.ReplaceAll(s, secret, "[REDACTED]")
		}
	}
	return s
}

// scrub redacts an error's text.
func (h *Handler) scrub(err error) error {
	if err == nil {
		return nil
	}
	return errors.New(h.redact(err.Error()))
}

// entryError is a mistake in one entry of a repeatable option.
type entryError struct {
	Option string
	Index  int // 0-based
	Msg    string
}

func (e *entryError) Error() string { return e.Msg }
