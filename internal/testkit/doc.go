// Package testkit is the integration-test kit of caddy-webhook-guard: it runs a real Caddy
// binary built from ./cmd/caddy as a subprocess, a real upstream HTTP server that records what
// reaches it, HTTP clients bound to chosen loopback source addresses, and the payment
// providers' official npm libraries (through Node.js) as independent signers and verifiers.
//
// Everything listens on loopback, on ports picked at run time. Waits are bounded and driven by
// events or by polling with a deadline, never by fixed sleeps. The kit never prints a secret:
// the Caddyfiles it is given are not logged, and the Node.js helper scrubs the secret from
// anything it reports.
//
// Under `go test -short` (the fast tier) every helper that builds or runs Caddy, starts
// redis-server or runs Node.js skips the test (SkipIfShort), so a test using the kit needs no
// check of its own.
//
// A typical test:
//
//	up := testkit.StartUpstream(t)
//	c := testkit.StartCaddy(t, testkit.GlobalOptions("")+`
//	:{HTTP} {
//		reverse_proxy `+up.Addr()+`
//	}`)
//	status, _, _ := testkit.Post(t, testkit.ClientFrom("127.0.0.2"), c.URL("/hook"), nil, body)
package testkit
