package webhookguard

import (
	"github.com/caddyserver/caddy/v2"

	"github.com/hookguard/caddy-webhook-guard/verify"
)

// provisionSignUpstream resolves the sign_upstream secrets ({env.NAME},
// {file./path}) and builds the signer of what the guard forwards. The
// resolved secrets join the handler's redaction list; an error names the
// option and the entry's placeholder, never its value.
func (h *Handler) provisionSignUpstream() error {
	if len(h.SignUpstream) == 0 {
		return nil
	}
	secrets, err := resolveSecrets(caddy.NewReplacer(), "sign_upstream", h.SignUpstream)
	if err != nil {
		return err
	}
	h.secrets = append(h.secrets, secrets...)
	if h.upstreamSigner, err = verify.NewUpstreamSigner(secrets); err != nil {
		return h.scrub(h.withPlaceholders(err))
	}
	return nil
}

// checkSignUpstream checks the literal sign_upstream secrets at adapt time,
// placeholders replaced by a valid sample (see adaptConfig).
func (h *Handler) checkSignUpstream() error {
	if len(h.SignUpstream) == 0 {
		return nil
	}
	secrets, err := literalSecrets("sign_upstream", h.SignUpstream)
	if err != nil {
		return err
	}
	_, err = verify.NewUpstreamSigner(secrets)
	return err
}
