// Command caddy is a Caddy build with the standard modules and webhook_guard,
// for running the module without xcaddy: go build ./cmd/caddy.
package main

import (
	caddycmd "github.com/caddyserver/caddy/v2/cmd"

	// The standard Caddy modules.
	_ "github.com/caddyserver/caddy/v2/modules/standard"
)

func main() {
	caddycmd.Main()
}
