package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	caddycmd "github.com/caddyserver/caddy/v2/cmd"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/hookguard/caddy-webhook-guard/verify"
)

// `caddy webhook-guard sign|send`: a provider's side of a webhook, signed by
// the same code the handler verifies with, to try a guard without the
// provider. The cobra wiring is thin; parseCLIOptions, signHeaders and
// sendEvents do the work and are tested without a process.
func init() {
	caddycmd.RegisterCommand(caddycmd.Command{
		Name:  "webhook-guard",
		Usage: "sign|send --provider <name> (--secret <s> | --secret-env <NAME>) [--type <type>] [flags] | spool list|show|retry|discard|forget|pause|resume [flags] | ledger inspect <path>",
		Short: "Signs test webhooks as a provider would, and sends them; steers the spool",
		Long: `
Signs webhook deliveries the way a provider does, with the same code the
webhook_guard handler verifies them with, so that a guard can be tried and
tested without the provider.

  caddy webhook-guard sign   prints the headers the provider would send
  caddy webhook-guard send   signs and POSTs deliveries to a URL
  caddy webhook-guard spool  lists, shows, retries, discards spooled events,
                             forgets ids, pauses and resumes delivery (admin API)
  caddy webhook-guard ledger inspect <path>
                             reads a ledger file offline, read only

Providers: ` + strings.Join(verify.Names(), ", ") + `.

Run 'caddy webhook-guard sign --help', 'caddy webhook-guard send --help' or
'caddy webhook-guard spool --help' for their flags.
`,
		CobraFunc: func(cmd *cobra.Command) {
			cmd.AddCommand(newSignCommand(), newSendCommand(), newSpoolCommand(), newLedgerCommand())
			cmd.RunE = func(cmd *cobra.Command, args []string) error {
				if len(args) == 0 {
					return cmd.Help()
				}
				// Not quoted back: a misplaced argument may be a secret.
				return errors.New("unknown subcommand: use sign, send, spool or ledger")
			}
		},
	})
}

// cliSendTimeout bounds each request of `send`.
const cliSendTimeout = 30 * time.Second

// cliMaxAnswer is how much of an answer's body `send` reads, and
// cliShownAnswer how much of it, trimmed, it prints.
const (
	cliMaxAnswer   = 64 << 10
	cliShownAnswer = 2000
)

// cliSignLong is the help of `caddy webhook-guard sign`.
var cliSignLong = `
Prints the headers that --provider would send with a body, signed with the
secret: one "Name: value" a line, sorted by name, so the output is stable.

The body is the file given with --body, or stdin with --body -. Without
--body it is a generated test event, {"id":"evt_<random>","type":"<type>"}
(for ivpay {"payment_id":"<random hex>","status":"PAID"}), printed on stderr.
Stdin is read only with --body -: when stdin is redirected without it, the
command stops rather than guess which body was meant.

--type is the event type: the generated body's "type" (ivpay: "status"), or
for github and shopify, whose type is a header, X-GitHub-Event or
X-Shopify-Topic (with --body too). The default is one the documentation's
own events examples take:
` + cliTypeDefaults() + `
With --body, the type of the body-typed providers is the one in the file.

The secret is given with --secret <value> or, to keep it out of shell
history and the process list, with --secret-env <NAME>, the name of an
environment variable holding it. It is never printed, except that for ivpay
the X-API-KEY header is the key itself.
  ivpay      the secret is the API key
  standard   whsec_<base64> signs v1 (HMAC-SHA256), whsk_<base64> signs v1a (Ed25519)
  hmac       also needs --hmac-header; the other --hmac-* flags as configured

--id is the delivery id of the providers that send one: webhook-id
(standard, default msg_<random>), X-GitHub-Delivery and X-Shopify-Webhook-Id
(default a random UUID), and the header of --hmac-event-id header:<Name>
(default msg_<random>). The other providers take the event id from the body;
--id is refused for them.

--timestamp signs another time than now (unix seconds), for the schemes that
sign one: standard, stripe, slack, hmac with --hmac-timestamp-header.

For example, handing the headers to curl:

  $ caddy webhook-guard sign --provider stripe --secret-env STRIPE_SECRET --body event.json |
  >   curl -H @- -H 'Content-Type: application/json' --data-binary @event.json http://localhost/hook

Exit status: 0 on success, 1 on any error, a usage error included.
`

// cliSendLong is the help of `caddy webhook-guard send`.
const cliSendLong = `
Signs a body as --provider would and POSTs it to --to, --count times, one
request after the other, and prints for each the event id the guard will see,
the status line of its answer and the answer's body (trimmed, indented):

  [1/2] event evt_3f9c0a2b71d4e5f60718293a: HTTP/1.1 200 OK
  [2/2] event evt_3f9c0a2b71d4e5f60718293a: HTTP/1.1 200 OK (duplicate, not forwarded)

The part in parentheses is the guard's Webhook-Guard-Outcome header: why it
acknowledged the event without forwarding it (duplicate, ignored_type,
probe), or "spooled": stored, and the guard delivers it itself.

--body, --type, --secret, --secret-env, --id, --timestamp and the --hmac-*
flags are as for 'caddy webhook-guard sign --help'. Each request is signed as it is
sent, with a fresh timestamp unless --timestamp is given, as a provider signs
a retry again.

With --count N and without --unique, the N copies are the SAME event (same
body, same delivery id): a guard forwards the first and acknowledges the
others as duplicates. With --unique each copy is a new event: a new id in the
generated body and a new delivery id. With --body, --unique changes only the
delivery id, so it is refused for providers whose event id is in the body.

Requests carry Content-Type: application/json and User-Agent:
caddy-webhook-guard. --header 'Name: value' (repeatable) adds a header or
replaces every header of that name, the signed ones included (to try a bad
signature); 'Host: name' sets the Host. Redirects are not followed; each
request times out after 30s.

Exit status: 0 when every request was answered 2xx; 1 otherwise (a usage
error, a failed request, or another answer), with a line on stderr that says
which.
`

// newSignCommand is `caddy webhook-guard sign`.
func newSignCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:                   "sign --provider <name> (--secret <s> | --secret-env <NAME>) [--body <file>|-] [--type <type>] [--id <id>] [--timestamp <unix>] [--hmac-* ...]",
		Short:                 "Prints the headers a provider would send with a body",
		Long:                  cliSignLong,
		Args:                  cliNoArguments,
		DisableFlagsInUseLine: true,
	}
	addEventFlags(cmd.Flags())
	addHMACFlags(cmd.Flags())
	cmd.SetFlagErrorFunc(flagErrorWithUsage)
	cmd.RunE = cliRunE(cmd, cmdSign)
	return cmd
}

// newSendCommand is `caddy webhook-guard send`.
func newSendCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:                   "send --provider <name> (--secret <s> | --secret-env <NAME>) --to <url> [--body <file>|-] [--type <type>] [--count <n>] [--unique] [--id <id>] [--timestamp <unix>] [--header 'Name: value']... [--hmac-* ...]",
		Short:                 "Signs and POSTs webhooks as a provider would",
		Long:                  cliSendLong,
		Args:                  cliNoArguments,
		DisableFlagsInUseLine: true,
	}
	fs := cmd.Flags()
	fs.Var(new(cliString), "to", "`URL` to POST to (required)")
	addEventFlags(fs)
	fs.Int("count", 1, "Send `N` requests, one after the other")
	fs.Bool("unique", false, "Make each request a new event (by default every copy is the same event)")
	fs.StringArray("header", nil, "Extra header `'Name: value'`, repeatable; replaces the headers of that name")
	addHMACFlags(fs)
	cmd.SetFlagErrorFunc(flagErrorWithUsage)
	cmd.RunE = cliRunE(cmd, cmdSend)
	return cmd
}

// addEventFlags defines the flags sign and send share, but --hmac-*.
func addEventFlags(fs *pflag.FlagSet) {
	fs.SortFlags = false
	fs.Var(new(cliString), "provider", "Provider `name`: "+strings.Join(verify.Names(), ", ")+" (required)")
	fs.Var(new(cliString), "secret", "The signing `secret` (ivpay: the API key); it shows in shell history and ps, prefer --secret-env")
	fs.Var(new(cliString), "secret-env", "`NAME` of an environment variable holding the secret, which keeps it out of shell history")
	fs.Var(new(cliString), "body", "Body `file`, sent byte for byte, or - for stdin (default: a generated test event)")
	fs.Var(new(cliString), "id", "Delivery `id`: webhook-id, X-GitHub-Delivery, X-Shopify-Webhook-Id, the --hmac-event-id header (default: random)")
	fs.Var(new(cliString), "type", "Event `type`: the generated body's type (ivpay: status), or X-GitHub-Event / X-Shopify-Topic (default: see --help)")
	fs.Int64("timestamp", 0, "Time to sign, in `unix` seconds (default: now)")
}

// addHMACFlags defines the --hmac-* flags, the options of the hmac scheme.
func addHMACFlags(fs *pflag.FlagSet) {
	fs.Var(new(cliString), "hmac-header", "hmac: the signature `header` (required with --provider hmac)")
	fs.Var(new(cliString), "hmac-algorithm", "hmac: the `algorithm`, sha1, sha256 (default) or sha512")
	fs.Var(new(cliString), "hmac-encoding", "hmac: the `encoding` of the digest, hex (default) or base64")
	fs.Var(new(cliString), "hmac-prefix", "hmac: `text` before the digest, e.g. sha256=")
	fs.Var(new(cliString), "hmac-timestamp-header", "hmac: `header` carrying the unix timestamp")
	fs.Var(new(cliString), "hmac-signed", "hmac: `template` of the signed message of {body}, {timestamp}, {header.NAME} (default {body})")
	fs.Var(new(cliString), "hmac-event-id", "hmac: `where` the event id is, header:<Name> or json:<path>")
}

// cliString is a string flag that counts how often it was given, so that a
// repeated flag is refused rather than the last value silently winning. Its
// Set never fails: pflag would quote the value, a secret maybe, in the error.
type cliString struct {
	value string
	times int
}

func (s *cliString) String() string { return s.value }
func (s *cliString) Type() string   { return "string" }
func (s *cliString) Set(v string) error {
	s.value = v
	s.times++
	return nil
}

// cliNoArguments refuses positional arguments without quoting them (cobra's
// NoArgs does): `--provider ivy mysecret` must not print the secret.
func cliNoArguments(_ *cobra.Command, args []string) error {
	if len(args) > 0 {
		return cliUsagef("arguments", "%d given, but everything is a flag (--body <file> for the body)", len(args))
	}
	return nil
}

// flagErrorWithUsage prints the usage with a flag parsing error, which the
// root command's SilenceUsage would otherwise leave bare, and drops the
// parts of pflag's message that quote a whole argument: a mistyped
// -secret=<value> would otherwise print the secret.
func flagErrorWithUsage(cmd *cobra.Command, err error) error {
	fmt.Fprint(cmd.ErrOrStderr(), cmd.UsageString())
	msg := err.Error()
	switch {
	case strings.HasPrefix(msg, "unknown shorthand flag: "):
		msg, _, _ = strings.Cut(msg, " in -")
	case strings.HasPrefix(msg, "bad flag syntax"):
		msg = "bad flag syntax"
	default:
		return err
	}
	return errors.New(msg + " (flags are --name value or --name=value)")
}

// cliEnv is what a subcommand reads and writes besides its flags.
type cliEnv struct {
	stdin io.Reader
	// stdinRedirected is true when stdin is a pipe or a non-empty file: it
	// holds a body that only --body - may take.
	stdinRedirected bool
	stdout, stderr  io.Writer
	getenv          func(string) string
}

// processEnv is the environment cobra's commands run with, osCLIEnv; tests
// swap it.
var processEnv = osCLIEnv

// osCLIEnv is the process's own stdin, stdout, stderr and environment.
func osCLIEnv() cliEnv {
	redirected := false
	if fi, err := os.Stdin.Stat(); err == nil {
		m := fi.Mode()
		redirected = m&os.ModeNamedPipe != 0 || (m.IsRegular() && fi.Size() > 0)
	}
	return cliEnv{stdin: os.Stdin, stdinRedirected: redirected, stdout: os.Stdout, stderr: os.Stderr, getenv: os.Getenv}
}

// cliRunE adapts run to cobra: it runs with the command's output streams
// and reports a failure with cliFail.
func cliRunE(cmd *cobra.Command, run func(caddycmd.Flags, cliEnv) error) func(*cobra.Command, []string) error {
	return func(c *cobra.Command, _ []string) error {
		env := processEnv()
		env.stdout, env.stderr = c.OutOrStdout(), c.ErrOrStderr()
		return cliFail(c, run(caddycmd.Flags{FlagSet: c.Flags()}, env))
	}
}

// cliFail reports err, if any, as one plain line on stderr ("send: 2 of 2
// requests were not answered 2xx ..."), after the usage for a usage error,
// and returns it so that Caddy exits with status 1. It does not go through
// caddycmd.WrapCommandFuncForCobra, which would print the error as a log
// line (JSON when stderr is not a terminal).
func cliFail(c *cobra.Command, err error) error {
	if err == nil {
		return nil
	}
	if ue := (*cliUsageError)(nil); errors.As(err, &ue) {
		fmt.Fprint(c.ErrOrStderr(), c.UsageString())
	}
	fmt.Fprintf(c.ErrOrStderr(), "%s: %v\n", c.Name(), err)
	c.SilenceErrors = true // printed above; cobra would print it again
	c.SilenceUsage = true
	return err
}

// cliUsageError is a bad or missing flag. Its message names the flag and
// never contains the secret.
type cliUsageError struct {
	flag string
	msg  string
}

func (e *cliUsageError) Error() string { return e.flag + ": " + e.msg }

// cliUsagef returns a *cliUsageError about flag.
func cliUsagef(flag, format string, args ...any) error {
	return &cliUsageError{flag: flag, msg: fmt.Sprintf(format, args...)}
}

// cliOptions is a parsed command line of sign or send.
type cliOptions struct {
	provider  string
	config    verify.Config
	secretEnv bool // the secret came from --secret-env, so errors name that flag

	body          []byte
	generatedBody bool   // body is the generated test event (regenerated by --unique)
	eventType     string // the generated body's type, or the type header's value
	typeHeader    string // github, shopify: the header that carries eventType
	id            string // delivery id, "" for providers that send none
	newID         func() string
	timestamp     time.Time // zero: the time of signing

	// send only
	to      *url.URL
	count   int
	unique  bool
	headers http.Header // --header values, canonical names
	host    string      // --header 'Host: ...'
}

// cliHMACFlags maps the --hmac-* flags onto verify.HMACOptions fields.
var cliHMACFlags = []struct {
	flag  string
	field func(*verify.HMACOptions) *string
}{
	{"hmac-header", func(o *verify.HMACOptions) *string { return &o.Header }},
	{"hmac-algorithm", func(o *verify.HMACOptions) *string { return &o.Algorithm }},
	{"hmac-encoding", func(o *verify.HMACOptions) *string { return &o.Encoding }},
	{"hmac-prefix", func(o *verify.HMACOptions) *string { return &o.Prefix }},
	{"hmac-timestamp-header", func(o *verify.HMACOptions) *string { return &o.TimestampHeader }},
	{"hmac-signed", func(o *verify.HMACOptions) *string { return &o.Signed }},
	{"hmac-event-id", func(o *verify.HMACOptions) *string { return &o.EventID }},
}

// cliConfigFlags names the flag behind each verify.ConfigError option.
var cliConfigFlags = map[string]string{
	"provider":         "--provider",
	"secret":           "--secret",
	"api_key":          "--secret",
	"public_key":       "--secret",
	"header":           "--hmac-header",
	"algorithm":        "--hmac-algorithm",
	"encoding":         "--hmac-encoding",
	"prefix":           "--hmac-prefix",
	"timestamp_header": "--hmac-timestamp-header",
	"signed":           "--hmac-signed",
	"event_id":         "--hmac-event-id",
}

// parseCLIOptions reads and checks the flags of sign (sending false) or send.
// Every mistake is a *cliUsageError naming the flag.
func parseCLIOptions(fs caddycmd.Flags, sending bool, env cliEnv) (cliOptions, error) {
	var o cliOptions
	var repeated []string
	fs.VisitAll(func(f *pflag.Flag) {
		if s, ok := f.Value.(*cliString); ok && s.times > 1 {
			repeated = append(repeated, "--"+f.Name)
		}
	})
	if len(repeated) > 0 {
		return o, cliUsagef(repeated[0], "given more than once")
	}

	o.provider = fs.String("provider")
	if o.provider == "" {
		return o, cliUsagef("--provider", "required, one of: %s", strings.Join(verify.Names(), ", "))
	}
	if _, ok := verify.Lookup(o.provider); !ok {
		return o, cliUsagef("--provider", "unknown provider %q, want one of: %s", o.provider, strings.Join(verify.Names(), ", "))
	}

	secret, err := cliSecret(fs, env)
	if err != nil {
		return o, err
	}
	o.secretEnv = fs.Changed("secret-env")
	if scheme, _ := verify.Lookup(o.provider); scheme.KeyOption == verify.KeyOptionAPIKey {
		o.config.APIKeys = []string{secret}
	} else {
		o.config.Secrets = []string{secret}
	}
	for _, hf := range cliHMACFlags {
		if !fs.Changed(hf.flag) {
			continue
		}
		if o.provider != "hmac" {
			return o, cliUsagef("--"+hf.flag, "only with --provider hmac")
		}
		*hf.field(&o.config.HMAC) = fs.String(hf.flag)
	}
	if _, err := o.signer(); err != nil {
		return o, err
	}

	if err := o.parseType(fs); err != nil {
		return o, err
	}
	if err := o.readBody(fs, env); err != nil {
		return o, err
	}
	if err := o.parseID(fs); err != nil {
		return o, err
	}
	if fs.Changed("timestamp") {
		secs, _ := fs.GetInt64("timestamp")
		switch {
		case secs <= 0:
			return o, cliUsagef("--timestamp", "must be a unix time in seconds, above 0")
		case secs > 99_999_999_999:
			return o, cliUsagef("--timestamp", "%d is not in seconds (milliseconds?)", secs)
		}
		o.timestamp = time.Unix(secs, 0)
	}
	if !sending {
		return o, nil
	}
	return o, o.parseSendFlags(fs)
}

// cliSecret returns the secret from --secret or the variable --secret-env
// names. Its errors never contain the secret.
func cliSecret(fs caddycmd.Flags, env cliEnv) (string, error) {
	given, fromEnv := fs.Changed("secret"), fs.Changed("secret-env")
	switch {
	case given && fromEnv:
		return "", cliUsagef("--secret", "give --secret or --secret-env, not both")
	case fromEnv:
		name := fs.String("secret-env")
		if name == "" {
			return "", cliUsagef("--secret-env", "needs the name of an environment variable")
		}
		secret := env.getenv(name)
		if secret == "" && !cliEnvName(name) {
			// Not quoted back: it may be the secret given to the wrong flag.
			return "", cliUsagef("--secret-env", "takes the NAME of an environment variable, and none is set by the name given")
		}
		if secret == "" {
			return "", cliUsagef("--secret-env", "environment variable %s is unset or empty", name)
		}
		return secret, nil
	case given:
		secret := fs.String("secret")
		if secret == "" {
			return "", cliUsagef("--secret", "is empty")
		}
		return secret, nil
	}
	return "", cliUsagef("--secret", "required (or --secret-env <NAME>)")
}

// cliEnvName reports whether s looks like a conventional environment variable
// name (SECRET_2): upper case letters, digits and underscores.
func cliEnvName(s string) bool {
	if s == "" || len(s) > 64 || '0' <= s[0] && s[0] <= '9' {
		return false
	}
	for _, c := range []byte(s) {
		if !('A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '_') {
			return false
		}
	}
	return true
}

// signer builds the provider's signer, turning a configuration error into a
// usage error that names the flag at fault.
func (o cliOptions) signer() (verify.Signer, error) {
	s, err := verify.NewSigner(o.provider, o.config)
	return s, o.flagError(err)
}

// flagError turns a *verify.ConfigError into a *cliUsageError; other errors
// are returned as they are.
func (o cliOptions) flagError(err error) error {
	var ce *verify.ConfigError
	if !errors.As(err, &ce) {
		return err
	}
	flag, ok := cliConfigFlags[ce.Option]
	if !ok {
		flag = "--" + strings.ReplaceAll(ce.Option, "_", "-")
	}
	if flag == "--secret" && o.secretEnv {
		flag = "--secret-env"
	}
	// A command line has one secret: "value #1 is not ..." reads "is not ...".
	return cliUsagef(flag, "%s", strings.TrimPrefix(ce.Msg, "value #1 "))
}

// readBody sets the body from --body, or generates the test event.
func (o *cliOptions) readBody(fs caddycmd.Flags, env cliEnv) error {
	path := fs.String("body")
	if fs.Changed("body") && path == "" {
		return cliUsagef("--body", "needs a file, or - for stdin")
	}
	if env.stdinRedirected && path != "-" {
		return cliUsagef("--body", "stdin is redirected but --body is not -: give --body - to use stdin as the body, or do not redirect stdin")
	}
	var err error
	switch path {
	case "":
		o.body, o.generatedBody = o.testEvent(), true
		return nil
	case "-":
		o.body, err = io.ReadAll(env.stdin)
		if err != nil {
			return cliUsagef("--body", "reading stdin: %v", err)
		}
	default:
		o.body, err = os.ReadFile(path)
		if err != nil {
			return cliUsagef("--body", "%v", err)
		}
	}
	return nil
}

// cliEventType is where a provider's event type is and what send gives it
// by default.
type cliEventType struct {
	// header carries the type (github, shopify); "" when it is a body field.
	header string
	// field is the generated body's field that holds the type.
	field string
	// def is the default type: one the documentation's events examples (a
	// README, docs/ or Caddyfile.example block of that provider) take, so
	// that a send to a guard configured as documented is forwarded.
	def string
}

// cliEventTypes are the providers' event types, as their verifiers read
// them (docs/providers.md, "event type"). A provider not listed has its
// type in the body's "type", and the scheme's test event as it is.
var cliEventTypes = map[string]cliEventType{
	"github":   {header: "X-GitHub-Event", def: "push"},
	"shopify":  {header: "X-Shopify-Topic", def: "orders/create"},
	"hmac":     {field: "type", def: "test.event"},
	"ivpay":    {field: "status", def: "PAID"},
	"ivy":      {field: "type", def: "order_updated"},
	"slack":    {field: "type", def: "test.event"},
	"standard": {field: "type", def: "test.event"},
	"stripe":   {field: "type", def: "payment_intent.succeeded"},
}

// cliTypeOf returns the event type facts of provider.
func cliTypeOf(provider string) cliEventType {
	if t, ok := cliEventTypes[provider]; ok {
		return t
	}
	return cliEventType{field: "type"}
}

// cliTypeDefaults lists the default types for the help text.
func cliTypeDefaults() string {
	var b strings.Builder
	for _, name := range slices.Sorted(maps.Keys(cliEventTypes)) {
		t := cliEventTypes[name]
		where := "body " + t.field
		if t.header != "" {
			where = t.header
		}
		fmt.Fprintf(&b, "  %-9s %-25s (%s)\n", name, t.def, where)
	}
	return b.String()
}

// parseType reads --type, or takes the provider's default. It needs the
// --body flag: a body file fixes the type of body-typed providers.
func (o *cliOptions) parseType(fs caddycmd.Flags) error {
	t := cliTypeOf(o.provider)
	o.typeHeader, o.eventType = t.header, t.def
	if !fs.Changed("type") {
		return nil
	}
	typ := fs.String("type")
	switch {
	case typ == "":
		return cliUsagef("--type", "is empty")
	case strings.ContainsFunc(typ, func(r rune) bool { return r < ' ' || r == 0x7f }):
		return cliUsagef("--type", "has a control character")
	case t.header == "" && fs.String("body") != "":
		return cliUsagef("--type", "sets the generated body's %q; with --body the type is the one in your body", t.field)
	}
	o.eventType = typ
	return nil
}

// testEvent is the generated body, the scheme's test event (a new event each
// time) with the type of --type or the provider's default.
func (o *cliOptions) testEvent() []byte {
	scheme, _ := verify.Lookup(o.provider)
	body := scheme.TestEvent()
	t := cliTypeOf(o.provider)
	if t.header != "" || o.eventType == "" {
		return body
	}
	var fields map[string]any
	if err := json.Unmarshal(body, &fields); err != nil {
		return body // not an object: the scheme's own, untyped
	}
	fields[t.field] = o.eventType
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(fields); err != nil {
		return body
	}
	return bytes.TrimSuffix(b.Bytes(), []byte("\n"))
}

// parseID sets the delivery id from --id or a new one, for the providers
// that send one (the scheme's DeliveryIDHeader, or hmac's event_id header);
// --id is refused for the others.
func (o *cliOptions) parseID(fs caddycmd.Flags) error {
	scheme, _ := verify.Lookup(o.provider)
	if scheme.DeliveryIDHeader != "" || o.provider == "hmac" && strings.HasPrefix(o.config.HMAC.EventID, "header:") {
		o.newID = scheme.NewDeliveryID
	}
	if !fs.Changed("id") {
		if o.newID != nil {
			o.id = o.newID()
		}
		return nil
	}
	if o.newID == nil {
		if o.provider == "hmac" {
			return cliUsagef("--id", "needs --hmac-event-id header:<Name>, the header it goes into")
		}
		return cliUsagef("--id", "%s sends no delivery id: its event id is in the body", o.provider)
	}
	o.id = fs.String("id")
	if o.id == "" {
		return cliUsagef("--id", "is empty")
	}
	return nil
}

// parseSendFlags reads the flags only send has.
func (o *cliOptions) parseSendFlags(fs caddycmd.Flags) error {
	to := fs.String("to")
	if to == "" {
		return cliUsagef("--to", "required: the URL to POST to")
	}
	u, err := url.Parse(to)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return cliUsagef("--to", "want an http:// or https:// URL")
	}
	o.to = u

	o.count, _ = fs.GetInt("count")
	if o.count < 1 {
		return cliUsagef("--count", "must be at least 1")
	}
	o.unique, _ = fs.GetBool("unique")
	if o.unique && fs.Changed("id") {
		return cliUsagef("--unique", "gives each copy a new id: not with --id")
	}
	if o.unique && !o.generatedBody && o.newID == nil {
		return cliUsagef("--unique", "%s takes the event id from the body, which --body fixes: send distinct bodies instead", o.provider)
	}

	lines, _ := fs.GetStringArray("header")
	o.headers = http.Header{}
	for i, line := range lines {
		name, value, ok := strings.Cut(line, ":")
		name, value = strings.TrimSpace(name), strings.TrimSpace(value)
		if !ok || !cliHeaderName(name) {
			// The value is not quoted back: it may be a credential.
			return cliUsagef("--header", "#%d is not 'Name: value'", i+1)
		}
		if http.CanonicalHeaderKey(name) == "Host" {
			o.host = value
			continue
		}
		o.headers.Add(name, value)
	}
	return nil
}

// cliHeaderName reports whether s is an HTTP token, as header names are.
func cliHeaderName(s string) bool {
	if s == "" {
		return false
	}
	for _, c := range []byte(s) {
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0) {
			return false
		}
	}
	return true
}

// signHeaders returns the headers the provider would send with opts.body.
func signHeaders(opts cliOptions) (http.Header, error) {
	s, err := opts.signer()
	if err != nil {
		return nil, err
	}
	return opts.sign(s)
}

// sign signs opts.body with s, at opts.timestamp or now.
func (o cliOptions) sign(s verify.Signer) (http.Header, error) {
	at := o.timestamp
	if at.IsZero() {
		at = now()
	}
	return o.signAt(s, at)
}

// signAt signs opts.body with s at time at, and sets the type header of
// the providers that send one.
func (o cliOptions) signAt(s verify.Signer, at time.Time) (http.Header, error) {
	h, err := s.Sign(o.body, o.id, at)
	if err != nil {
		return nil, o.flagError(err)
	}
	if o.typeHeader != "" && o.eventType != "" {
		h.Set(o.typeHeader, o.eventType)
	}
	return h, nil
}

// cliWriteHeaders writes h as "Name: value" lines sorted by name, the
// values of one name in their order.
func cliWriteHeaders(w io.Writer, h http.Header) error {
	var b strings.Builder
	for _, name := range slices.Sorted(maps.Keys(h)) {
		for _, v := range h[name] {
			b.WriteString(name + ": " + v + "\n")
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// cmdSign is `caddy webhook-guard sign`.
func cmdSign(fs caddycmd.Flags, env cliEnv) error {
	opts, err := parseCLIOptions(fs, false, env)
	if err != nil {
		return err
	}
	h, err := signHeaders(opts)
	if err != nil {
		return err
	}
	if opts.generatedBody {
		fmt.Fprintf(env.stderr, "signed this generated body (give --body to sign your own bytes):\n%s\n", opts.body)
	}
	return cliWriteHeaders(env.stdout, h)
}

// cmdSend is `caddy webhook-guard send`.
func cmdSend(fs caddycmd.Flags, env cliEnv) error {
	opts, err := parseCLIOptions(fs, true, env)
	if err != nil {
		return err
	}
	return sendEvents(context.Background(), opts, env.stdout)
}

// sendEvents signs and POSTs opts.count requests to opts.to, one after the
// other, and writes to out, for each, the event id, the answer's status line
// and its trimmed body. It stops at the first request that fails; it returns
// an error too when an answer was not 2xx.
func sendEvents(ctx context.Context, opts cliOptions, out io.Writer) error {
	s, err := opts.signer()
	if err != nil {
		return err
	}
	client := &http.Client{
		Timeout:       cliSendTimeout,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	defer client.CloseIdleConnections()

	refused := 0
	for i := 1; i <= opts.count; i++ {
		if i > 1 && opts.unique {
			if opts.generatedBody {
				opts.body = opts.testEvent()
			}
			if opts.newID != nil {
				opts.id = opts.newID()
			}
		}
		at := opts.timestamp
		if at.IsZero() {
			at = now()
		}
		signed, err := opts.signAt(s, at)
		if err != nil {
			return err
		}
		ans, err := cliPost(ctx, client, opts, signed)
		if err != nil {
			return fmt.Errorf("request %d of %d failed: %w", i, opts.count, err)
		}
		event := ""
		if id := cliEventID(s, signed, opts.body, at); id != "" {
			event = " event " + id
		}
		fmt.Fprintf(out, "[%d/%d]%s: %s\n", i, opts.count, event, ans.status)
		if ans.body != "" {
			fmt.Fprintf(out, "  %s\n", strings.ReplaceAll(ans.body, "\n", "\n  "))
		}
		if ans.code < 200 || ans.code > 299 {
			refused++
		}
	}
	switch {
	case refused == 0:
		return nil
	case opts.count == 1:
		return errors.New("the request was not answered 2xx (the answer is above)")
	case refused == 1:
		return fmt.Errorf("1 of %d requests was not answered 2xx (the answers are above)", opts.count)
	}
	return fmt.Errorf("%d of %d requests were not answered 2xx (the answers are above)", refused, opts.count)
}

// cliAnswer is what the guard answered one request.
type cliAnswer struct {
	code   int
	status string // "HTTP/1.1 200 OK"
	body   string // trimmed
}

// cliPost sends one signed request.
func cliPost(ctx context.Context, client *http.Client, opts cliOptions, signed http.Header) (cliAnswer, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, opts.to.String(), bytes.NewReader(opts.body))
	if err != nil {
		return cliAnswer{}, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "caddy-webhook-guard")
	for name, values := range signed {
		req.Header[name] = values
	}
	for name, values := range opts.headers {
		req.Header[name] = values
	}
	if opts.host != "" {
		req.Host = opts.host
	}
	resp, err := client.Do(req)
	if err != nil {
		return cliAnswer{}, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, cliMaxAnswer))
	if err != nil {
		return cliAnswer{}, fmt.Errorf("reading the answer: %w", err)
	}
	status := resp.Proto + " " + resp.Status + cliOutcomeText(resp.Header.Get(outcomeHeader))
	return cliAnswer{code: resp.StatusCode, status: status, body: cliTrimAnswer(body)}, nil
}

// outcomeSpooled is the outcome of an event the guard stored to deliver it
// itself (the root package's outcomeSpooled).
const outcomeSpooled = "spooled"

// cliOutcomeText tells what a guard's Webhook-Guard-Outcome means, after an
// answer's status line: " (duplicate, not forwarded)", " (spooled: ...)",
// or "" without the header.
func cliOutcomeText(outcome string) string {
	switch outcome {
	case "":
		return ""
	case outcomeSpooled:
		return " (spooled: stored; the guard delivers it to the backend)"
	}
	return " (" + cliPrintable(outcome, "") + ", not forwarded)"
}

// cliTrimAnswer makes an answer's body printable: trimmed of surrounding space
// and cut after cliShownAnswer bytes.
func cliTrimAnswer(body []byte) string {
	text := strings.TrimSpace(string(body))
	if !utf8.ValidString(text) {
		return "(" + strconv.Itoa(len(body)) + " bytes, not text)"
	}
	if len(text) <= cliShownAnswer {
		return text
	}
	cut := cliShownAnswer
	for cut > 0 && !utf8.RuneStart(text[cut]) {
		cut--
	}
	return text[:cut] + "…"
}

// cliEventID is the event id the guard will see, from the provider's own
// verifier at the signing time at, or "" when it cannot tell.
func cliEventID(s verify.Signer, h http.Header, body []byte, at time.Time) string {
	v, ok := s.(verify.Verifier)
	if !ok {
		return ""
	}
	ev, err := v.Verify(h, body, at)
	if err != nil {
		return ""
	}
	return ev.ID
}
