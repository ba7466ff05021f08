// Package cli is the `caddy webhook-guard` command: sign and send, a
// provider's side of a webhook, and spool, which steers a running guard's
// spool through Caddy's admin API. The module's root package imports it for
// its side effect, registering the command in every Caddy built with the
// module; cli itself never imports the root package.
package cli

import "time"

// now is the clock of sign and send, swapped in tests.
var now = time.Now

// outcomeHeader is the header in which a guard tells the sender why it
// acknowledged an event without forwarding it. It is the handler's wire
// name (the root package's outcomeHeader), repeated here because cli does
// not import the handler.
const outcomeHeader = "Webhook-Guard-Outcome"
