// Command caddy is a Caddy build with the standard modules and webhook_guard,
// for running the module without xcaddy: go build ./cmd/caddy.
package main

import (
	caddycmd "github.com/caddyserver/caddy/v2/cmd"

	// The standard Caddy modules.
	_ "github.com/caddyserver/caddy/v2/modules/standard"

	// The webhook_guard handler and its `caddy webhook-guard` command.
	_ "github.com/hookguard/caddy-webhook-guard"
)

func main() {
	caddycmd.Main()
}
