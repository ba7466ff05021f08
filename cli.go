package webhookguard

// The `caddy webhook-guard` command (sign, send, spool) lives in
// internal/cli and registers itself in its init; importing it here puts it
// in every Caddy built with this module (xcaddy --with, cmd/caddy).
import _ "github.com/hookguard/caddy-webhook-guard/internal/cli"
