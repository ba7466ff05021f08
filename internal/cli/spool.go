package cli

import (
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/url"
	"os/user"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
	"unicode"
	"unicode/utf8"

	caddycmd "github.com/caddyserver/caddy/v2/cmd"
	"github.com/hookguard/caddy-webhook-guard/internal/spoolapi"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// `caddy webhook-guard spool ...`: the spool's admin API
// (admin.api.webhook_guard, /webhook_guard/spool) from the command line, as
// `caddy reload` and `caddy stop` reach the admin endpoint.

// cliSpoolPath is the admin API path of the spool.
const cliSpoolPath = "/webhook_guard/spool"

// cliMaxAdminAnswer bounds how much of an admin API answer is read.
const cliMaxAdminAnswer = 256 << 20

// cliShownError is how many characters of an event's last error the list
// shows.
const cliShownError = 60

// cliSpoolLong is the help of `caddy webhook-guard spool`.
const cliSpoolLong = `
Shows and steers the spool of a running Caddy through its admin API
(/webhook_guard/spool): the events a webhook_guard handler with a spool block
acknowledged and is delivering, with retries, to its backend.

  caddy webhook-guard spool list [--state pending|dead|discarded] [--scope <s>]
                                 [--event-id <id>] [--limit <n>] [--after <next>] [--json]
  caddy webhook-guard spool show <id> [--json]
  caddy webhook-guard spool retry <id>              deliver one event now
  caddy webhook-guard spool retry --state dead      deliver every dead event now
  caddy webhook-guard spool discard <id>            set one event aside, undelivered
                                                    (kept, retryable, until its id
                                                    is forgotten)
  caddy webhook-guard spool forget --provider <p> --event-id <id> [--scope <s>]
                                                    forget an event id: the
                                                    provider's resend is delivered
  caddy webhook-guard spool pause --scope <s>       hold deliveries; keep accepting
  caddy webhook-guard spool resume --scope <s>

The admin endpoint is the --address given; else the one of the --config file
(with --adapter); else Caddy's default, localhost:2019 or $CADDY_ADMIN. The
same rules as 'caddy stop'.

Credential headers (Authorization, X-Api-Key, Cookie, signatures, secrets,
tokens, keys) come redacted from the admin API.

Exit status: 0 on success, 1 on any error.
`

// newSpoolCommand is `caddy webhook-guard spool`.
func newSpoolCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "spool list|show|retry|discard|forget|pause|resume [flags]",
		Short: "Lists, shows, retries and discards spooled events; pauses and resumes delivery",
		Long:  cliSpoolLong,
	}
	cmd.AddCommand(
		newSpoolSubcommand("list [--state pending|dead|discarded] [--scope <s>] [--event-id <id>] [--limit <n>] [--after <next>] [--json]",
			"Lists the spooled events, newest first, a page at a time", cliSpoolArgs(0, 0), cmdSpoolList, "state", "scope", "event-id", "limit", "after", "json"),
		newSpoolSubcommand("show <id> [--scope <s>] [--json]",
			"Shows one event: its request's headers (credentials redacted) and body", cliSpoolArgs(1, 1), cmdSpoolShow, "scope", "json"),
		newSpoolSubcommand("retry (<id> | --state dead|discarded|pending) [--scope <s>]",
			"Delivers one event, or every event in a state, now", cliSpoolArgs(0, 1), cmdSpoolRetry, "state", "scope"),
		newSpoolSubcommand("discard <id> [--scope <s>]",
			"Sets one event aside, undelivered: kept and retryable until its id is forgotten (logged by Caddy)", cliSpoolArgs(1, 1), cmdSpoolDiscard, "scope"),
		newSpoolSubcommand("forget --provider <p> --event-id <id> [--scope <s>]",
			"Forgets an event id, so that the provider's resend of it is delivered (logged by Caddy)", cliSpoolArgs(0, 0), cmdSpoolForget, "provider", "event-id", "scope"),
		newSpoolSubcommand("pause --scope <s>",
			"Holds the deliveries of a scope; events are still accepted and spooled", cliSpoolArgs(0, 0), cmdSpoolPause, "scope"),
		newSpoolSubcommand("resume --scope <s>",
			"Releases the deliveries pause held", cliSpoolArgs(0, 0), cmdSpoolResume, "scope"),
	)
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		if len(args) == 0 {
			return cmd.Help()
		}
		return fmt.Errorf("unknown spool subcommand %q: use list, show, retry, discard, forget, pause or resume", args[0])
	}
	return cmd
}

// cliSpoolArgs checks that a subcommand has between least and most
// positional arguments, event ids. It runs in RunE rather than as cobra's
// Args, so that the error is followed by the usage (Caddy's root command
// silences cobra's).
func cliSpoolArgs(least, most int) func(args []string) error {
	return func(args []string) error {
		switch {
		case len(args) >= least && len(args) <= most:
			return nil
		case most == 0:
			return cliUsagef("arguments", "%d given, but this takes flags only", len(args))
		case least == most:
			return cliUsagef("<id>", "want one event id, the number the list shows; %d given", len(args))
		}
		return cliUsagef("<id>", "want at most one event id; %d given", len(args))
	}
}

// cliSpoolFlags are the flags a spool subcommand may have, besides the
// admin address ones every one has.
var cliSpoolFlags = map[string]func(*pflag.FlagSet){
	"state":    func(fs *pflag.FlagSet) { fs.String("state", "", "Only events in `state` pending, dead or discarded") },
	"event-id": func(fs *pflag.FlagSet) { fs.String("event-id", "", "Only the events with the provider's event `id`") },
	"provider": func(fs *pflag.FlagSet) { fs.String("provider", "", "The `provider` (ivy, stripe, ...)") },
	"limit":    func(fs *pflag.FlagSet) { fs.Int("limit", 0, "At most `n` events (default 100, at most 1000)") },
	"after": func(fs *pflag.FlagSet) {
		fs.String("after", "", "The page after the one that printed `next` (its cursor), or the events below an event id")
	},
	"scope": func(fs *pflag.FlagSet) {
		fs.String("scope", "", "Only events of the handler `scope` (by default the provider name)")
	},
	"json": func(fs *pflag.FlagSet) { fs.Bool("json", false, "Print the admin API's JSON answer as it is") },
}

// newSpoolSubcommand is one `caddy webhook-guard spool <use>` command.
func newSpoolSubcommand(use, short string, args func([]string) error, run func(cliSpoolRun) error, flags ...string) *cobra.Command {
	cmd := &cobra.Command{
		Use:                   use,
		Short:                 short,
		Args:                  cobra.ArbitraryArgs,
		DisableFlagsInUseLine: true,
	}
	fs := cmd.Flags()
	fs.SortFlags = false
	for _, f := range flags {
		cliSpoolFlags[f](fs)
	}
	fs.String("address", "", "The `address` of Caddy's admin endpoint, if not the default or the --config file's")
	fs.StringP("config", "c", "", "Configuration `file` to read the admin address from, if --address is not used")
	fs.StringP("adapter", "a", "", "Config adapter `name` for --config")
	cmd.SetFlagErrorFunc(flagErrorWithUsage)
	cmd.RunE = func(c *cobra.Command, _ []string) error {
		fl := caddycmd.Flags{FlagSet: c.Flags()}
		err := args(fl.Args())
		if err == nil {
			err = run(cliSpoolRun{flags: fl, args: fl.Args(), stdout: c.OutOrStdout()})
		}
		return cliFail(c, err)
	}
	return cmd
}

// cliSpoolRun is one run of a spool subcommand: its flags, positional
// arguments and output.
type cliSpoolRun struct {
	flags  caddycmd.Flags
	args   []string
	stdout io.Writer
}

// query returns the given flags as a query string, "?..." or "" (a flag
// event-id is the parameter event_id). A state other than pending, dead or
// discarded is a usage error.
func (c cliSpoolRun) query(names ...string) (string, error) {
	q := url.Values{}
	for _, name := range names {
		if c.flags.Lookup(name) == nil || !c.flags.Changed(name) {
			continue
		}
		v := c.flags.String(name)
		if name == "limit" {
			v = strconv.Itoa(c.flags.Int(name))
		}
		switch {
		case v == "":
			return "", cliUsagef("--"+name, "is empty")
		case name == "state" && v != spoolapi.StatePending && v != spoolapi.StateDead && v != spoolapi.StateDiscarded:
			return "", cliUsagef("--state", "%q: want pending, dead or discarded", v)
		case name == "limit" && (c.flags.Int(name) < 1 || c.flags.Int(name) > 1000):
			return "", cliUsagef("--limit", "%s: want 1 to 1000", v)
		}
		q.Set(strings.ReplaceAll(name, "-", "_"), v)
	}
	if len(q) == 0 {
		return "", nil
	}
	return "?" + q.Encode(), nil
}

// eventURI is the admin route of the event named by the command's <id>
// argument, followed by suffix and the --scope parameter.
func (c cliSpoolRun) eventURI(suffix string) (string, error) {
	id, err := c.id()
	if err != nil {
		return "", err
	}
	q, err := c.query("scope")
	if err != nil {
		return "", err
	}
	return cliSpoolPath + "/" + strconv.FormatUint(id, 10) + suffix + q, nil
}

// id returns the event id argument, checked.
func (c cliSpoolRun) id() (uint64, error) {
	id, err := strconv.ParseUint(c.args[0], 10, 64)
	if err != nil {
		return 0, cliUsagef("<id>", "%q is not an event id: want the number the list shows", c.args[0])
	}
	return id, nil
}

// call sends method uri to the admin API and returns the answer's body.
func (c cliSpoolRun) call(method, uri string) ([]byte, error) {
	body, _, err := c.callAt(method, uri)
	return body, err
}

// callAt is call, and the admin address it reached.
func (c cliSpoolRun) callAt(method, uri string) ([]byte, string, error) {
	addr, err := caddycmd.DetermineAdminAPIAddress(c.flags.String("address"), nil, c.flags.String("config"), c.flags.String("adapter"))
	if err != nil {
		return nil, "", fmt.Errorf("finding the admin API's address: %v", err)
	}
	hdr := http.Header{}
	if u, err := user.Current(); err == nil && u.Username != "" {
		hdr.Set(cliOperatorHeader, u.Username)
	}
	resp, err := caddycmd.AdminAPIRequest(addr, method, uri, hdr, nil)
	if err != nil {
		return nil, addr, cliAdminError(addr, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, cliMaxAdminAnswer))
	if err != nil {
		return nil, addr, fmt.Errorf("admin API at %s: reading the answer: %v", addr, err)
	}
	return body, addr, nil
}

// cliOperatorHeader tells the admin API who runs the command (the root
// package's operatorHeader): kept with a discarded event, logged.
const cliOperatorHeader = "Webhook-Guard-Operator"

// cliAdminAnswer matches AdminAPIRequest's error for an error answer.
var cliAdminAnswer = regexp.MustCompile(`(?s)^caddy responded with error: HTTP (\d+): (.*)$`)

// cliAdminError rewords an error of caddycmd.AdminAPIRequest: the admin
// API's own message for an error answer, a hint when nothing answered.
func cliAdminError(addr string, err error) error {
	m := cliAdminAnswer.FindStringSubmatch(err.Error())
	if m == nil {
		return fmt.Errorf("reaching the admin API at %s: %v (is Caddy running with this admin address? see --address, --config)", addr, err)
	}
	msg := strings.TrimSpace(m[2])
	var answer struct {
		Error string `json:"error"`
	}
	if json.Unmarshal([]byte(msg), &answer) == nil && answer.Error != "" {
		msg = answer.Error
	}
	if m[1] == "404" && strings.Contains(msg, "404 page not found") {
		msg += " (this Caddy has no webhook_guard admin API: is it built with the module?)"
	}
	return fmt.Errorf("admin API at %s: HTTP %s: %s", addr, m[1], cliPrintable(msg, ""))
}

// cmdSpoolList is `caddy webhook-guard spool list`.
func cmdSpoolList(c cliSpoolRun) error {
	q, err := c.query("state", "scope", "event-id", "limit", "after")
	if err != nil {
		return err
	}
	body, addr, err := c.callAt(http.MethodGet, cliSpoolPath+q)
	if err != nil {
		return err
	}
	if c.flags.Bool("json") {
		_, err := c.stdout.Write(body)
		return err
	}
	var list spoolapi.List
	if err := json.Unmarshal(body, &list); err != nil {
		return fmt.Errorf("reading the admin API's list: %v", err)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "spool of the Caddy at %s\n", cliPrintable(addr, ""))
	if len(list.Paused) > 0 {
		scopes := make([]string, len(list.Paused))
		for i, p := range list.Paused {
			scopes[i] = cliPrintable(p, "")
		}
		fmt.Fprintf(&b, "PAUSED: %s (nothing of it is delivered until: caddy webhook-guard spool resume --scope ...)\n", strings.Join(scopes, ", "))
	}
	if len(list.Events) == 0 {
		b.WriteString("no spooled events" + cliFilterText(c.flags) + "\n")
		_, err := io.WriteString(c.stdout, b.String())
		return err
	}
	tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tSCOPE\tPROVIDER\tEVENT_ID\tSTATE\tATTEMPTS\tNEXT_ATTEMPT\tLAST_ERROR")
	for _, e := range list.Events {
		state := e.State
		switch {
		case e.Paused && e.State == spoolapi.StatePending:
			state += " (paused)"
		case e.Waiting != "":
			state += " (waiting)"
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%d\t%s\t%s\n", e.ID, cliCell(e.Scope), cliCell(e.Provider), cliCell(e.EventID),
			cliCell(state), e.Attempts, cliTime(e.NextAttemptAt), cliCell(cliShorten(e.LastError, cliShownError)))
	}
	tw.Flush()
	if list.Next != "" {
		fmt.Fprintf(&b, "more: caddy webhook-guard spool list --after %s%s\n", cliQuote(list.Next), cliRepeatFlags(c.flags))
	}
	_, err = io.WriteString(c.stdout, b.String())
	return err
}

// cliRepeatFlags is the list's filters and limit as flags, for the next
// page's command line.
func cliRepeatFlags(fl caddycmd.Flags) string {
	var b strings.Builder
	for _, name := range []string{"state", "scope", "event-id", "limit"} {
		if fl.Lookup(name) == nil || !fl.Changed(name) {
			continue
		}
		v := fl.String(name)
		if name == "limit" {
			v = strconv.Itoa(fl.Int(name))
		}
		b.WriteString(" --" + name + " " + cliQuote(v))
	}
	return b.String()
}

// cliQuote quotes v for a shell when it needs it.
func cliQuote(v string) string {
	if v != "" && strings.IndexFunc(v, func(r rune) bool {
		return !(r == '-' || r == '_' || r == '.' || r == ':' || unicode.IsLetter(r) || unicode.IsDigit(r))
	}) < 0 {
		return v
	}
	return "'" + strings.ReplaceAll(cliPrintable(v, ""), "'", `'\''`) + "'"
}

// cliFilterText describes list's filters: " (state dead, scope ivpay)".
func cliFilterText(fl caddycmd.Flags) string {
	var parts []string
	for _, name := range []string{"state", "scope", "event-id"} {
		if fl.Lookup(name) == nil {
			continue
		}
		if v := fl.String(name); v != "" {
			parts = append(parts, name+" "+cliPrintable(v, ""))
		}
	}
	if len(parts) == 0 {
		return ""
	}
	return " (" + strings.Join(parts, ", ") + ")"
}

// cmdSpoolShow is `caddy webhook-guard spool show <id>`.
func cmdSpoolShow(c cliSpoolRun) error {
	uri, err := c.eventURI("")
	if err != nil {
		return err
	}
	body, err := c.call(http.MethodGet, uri)
	if err != nil {
		return err
	}
	if c.flags.Bool("json") {
		_, err := c.stdout.Write(body)
		return err
	}
	var e spoolapi.EventDetail
	if err := json.Unmarshal(body, &e); err != nil {
		return fmt.Errorf("reading the admin API's event: %v", err)
	}
	return cliWriteEvent(c.stdout, e)
}

// cliWriteEvent prints one event: its fields, a blank line, its request's
// headers sorted by name, a blank line, and its body.
func cliWriteEvent(w io.Writer, e spoolapi.EventDetail) error {
	var b strings.Builder
	tw := tabwriter.NewWriter(&b, 0, 0, 1, ' ', 0)
	for _, f := range [][2]string{
		{"id", strconv.FormatUint(e.ID, 10)},
		{"scope", e.Scope},
		{"provider", e.Provider},
		{"event_id", e.EventID},
		{"event_type", e.EventType},
		{"state", e.State},
		{"attempts", strconv.Itoa(e.Attempts)},
		{"received_at", cliTime(e.ReceivedAt)},
		{"next_attempt_at", cliTime(e.NextAttemptAt)},
		{"last_error", e.LastError},
		{"waiting", e.Waiting},
		{"discarded", cliDiscarded(e.Event)},
		{"method", e.Method},
		{"path", e.Path},
		{"query", e.Query},
		{"client_ip", e.ClientIP},
	} {
		if f[1] == "" && (f[0] == "waiting" || f[0] == "discarded") {
			continue
		}
		fmt.Fprintf(tw, "%s:\t%s\n", f[0], cliPrintable(f[1], ""))
	}
	tw.Flush()
	if len(e.History) > 0 {
		b.WriteString("\nattempts:\n")
		for i, a := range e.History {
			status := "-"
			if a.Status != 0 {
				status = strconv.Itoa(a.Status)
			}
			fmt.Fprintf(&b, "  %d  %s  %dms  %s  %s\n", i+1, a.At.UTC().Format(time.RFC3339), a.DurationMS, status, cliPrintable(cliShorten(a.Error, 200), ""))
		}
	}
	b.WriteString("\n")
	for _, name := range slices.Sorted(maps.Keys(e.Headers)) {
		for _, v := range e.Headers[name] {
			b.WriteString(cliPrintable(name, "") + ": " + cliPrintable(v, "\t") + "\n")
		}
	}
	b.WriteString("\n")
	switch {
	case e.Body != nil:
		b.WriteString(cliPrintable(*e.Body, "\t\n"))
		if !strings.HasSuffix(*e.Body, "\n") {
			b.WriteString("\n")
		}
	case e.BodyBase64 != nil:
		n := base64Len(*e.BodyBase64)
		b.WriteString("(" + strconv.Itoa(n) + " bytes, not UTF-8: base64)\n" + *e.BodyBase64 + "\n")
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// cliDiscarded says when and by whom a discarded event was discarded.
func cliDiscarded(e spoolapi.Event) string {
	if e.DiscardedAt == nil {
		return ""
	}
	return cliTime(e.DiscardedAt) + " by " + e.DiscardedBy
}

// base64Len is the length of the bytes standard base64 text s encodes.
func base64Len(s string) int {
	return len(s)/4*3 - strings.Count(s[max(len(s)-2, 0):], "=")
}

// cmdSpoolRetry is `caddy webhook-guard spool retry <id>|--state <s>`.
func cmdSpoolRetry(c cliSpoolRun) error {
	var uri string
	if len(c.args) == 1 {
		if c.flags.Changed("state") {
			return cliUsagef("--state", "retries every event in a state: not with an <id>")
		}
		var err error
		if uri, err = c.eventURI("/retry"); err != nil {
			return err
		}
	} else {
		if !c.flags.Changed("state") {
			return cliUsagef("--state", "give an event <id>, or --state dead (or discarded, or pending) to retry every event in that state")
		}
		q, err := c.query("state", "scope")
		if err != nil {
			return err
		}
		uri = cliSpoolPath + "/retry" + q
	}
	body, err := c.call(http.MethodPost, uri)
	if err != nil {
		return err
	}
	var answer struct {
		Retried *int     `json:"retried"`
		Paused  []string `json:"paused"`
	}
	if err := json.Unmarshal(body, &answer); err != nil || answer.Retried == nil {
		return fmt.Errorf("reading the admin API's answer %q: want {\"retried\": n}", cliShorten(string(body), 200))
	}
	said := cliCount(*answer.Retried, "event") + " due for delivery now"
	if len(answer.Paused) > 0 {
		scopes := make([]string, len(answer.Paused))
		for i, p := range answer.Paused {
			scopes[i] = cliPrintable(p, "")
		}
		said += "; but scope " + strings.Join(scopes, ", ") + " is paused: nothing of it is delivered until it is resumed"
	}
	_, err = fmt.Fprintln(c.stdout, said)
	return err
}

// cliCount is n and the noun, plural unless n is 1: "1 attempt", "25
// attempts", "0 events".
func cliCount(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return strconv.Itoa(n) + " " + noun + "s"
}

// cmdSpoolDiscard is `caddy webhook-guard spool discard <id>`.
func cmdSpoolDiscard(c cliSpoolRun) error {
	uri, err := c.eventURI("")
	if err != nil {
		return err
	}
	body, err := c.call(http.MethodDelete, uri)
	if err != nil {
		return err
	}
	var answer struct {
		Discarded *spoolapi.EventDetail `json:"discarded"`
	}
	if err := json.Unmarshal(body, &answer); err != nil || answer.Discarded == nil {
		return fmt.Errorf("reading the admin API's answer %q: want {\"discarded\": {...}}", cliShorten(string(body), 200))
	}
	e := answer.Discarded
	_, err = fmt.Fprintf(c.stdout, "discarded event %d (scope %s, %s event %s, after %s): it will not be delivered; it is kept until its id is forgotten, and `spool retry %d` undoes this\n",
		e.ID, cliPrintable(e.Scope, ""), cliPrintable(e.Provider, ""), cliPrintable(e.EventID, ""), cliCount(e.Attempts, "attempt"), e.ID)
	return err
}

// cmdSpoolForget is `caddy webhook-guard spool forget`.
func cmdSpoolForget(c cliSpoolRun) error {
	for _, name := range []string{"provider", "event-id"} {
		if !c.flags.Changed(name) {
			return cliUsagef("--"+name, "required: forget --provider <p> --event-id <id> [--scope <s>]")
		}
	}
	q, err := c.query("scope", "provider", "event-id")
	if err != nil {
		return err
	}
	body, err := c.call(http.MethodPost, cliSpoolPath+"/forget"+q)
	if err != nil {
		return err
	}
	var answer struct {
		Forgotten *bool `json:"forgotten"`
	}
	if err := json.Unmarshal(body, &answer); err != nil || answer.Forgotten == nil {
		return fmt.Errorf("reading the admin API's answer %q: want {\"forgotten\": true|false}", cliShorten(string(body), 200))
	}
	said := "forgot event %s: the provider's resend of it will be delivered\n"
	if !*answer.Forgotten {
		said = "event %s was not remembered (never seen, or its window ended): a resend of it is delivered anyway\n"
	}
	_, err = fmt.Fprintf(c.stdout, said, cliPrintable(c.flags.String("event-id"), ""))
	return err
}

// cmdSpoolPause is `caddy webhook-guard spool pause --scope <s>`.
func cmdSpoolPause(c cliSpoolRun) error { return cliSpoolPause(c, true) }

// cmdSpoolResume is `caddy webhook-guard spool resume --scope <s>`.
func cmdSpoolResume(c cliSpoolRun) error { return cliSpoolPause(c, false) }

// cliSpoolPause pauses or resumes the deliveries of --scope.
func cliSpoolPause(c cliSpoolRun, pause bool) error {
	if !c.flags.Changed("scope") {
		return cliUsagef("--scope", "required: the handler scope whose deliveries to hold or release")
	}
	q, err := c.query("scope")
	if err != nil {
		return err
	}
	action, said := "/resume", "resumed: due events are delivered again"
	if pause {
		action, said = "/pause", "paused: events are still accepted and spooled, none is delivered until resume"
	}
	if _, err := c.call(http.MethodPost, cliSpoolPath+action+q); err != nil {
		return err
	}
	_, err = fmt.Fprintf(c.stdout, "deliveries of scope %s %s\n", cliPrintable(c.flags.String("scope"), ""), said)
	return err
}

// cliTime formats an admin API time for the terminal: RFC 3339 in UTC to
// the second, or "-" for none.
func cliTime(t *time.Time) string {
	if t == nil || t.IsZero() {
		return "-"
	}
	return t.UTC().Format(time.RFC3339)
}

// cliCell is s fit for a table cell: printable, "-" when empty.
func cliCell(s string) string {
	if s == "" {
		return "-"
	}
	return cliPrintable(s, "")
}

// cliShorten cuts s after n runes, marking the cut with "…", and puts it on
// one line.
func cliShorten(s string, n int) string {
	s = strings.Join(strings.Fields(s), " ")
	if utf8.RuneCountInString(s) <= n {
		return s
	}
	return string([]rune(s)[:n]) + "…"
}

// cliPrintable escapes what a terminal would interpret in s, text that came
// from webhook senders: control and other unprintable characters (escape
// sequences, bidi overrides) and invalid UTF-8 become \x.. or \u....,
// except the characters in keep.
func cliPrintable(s, keep string) string {
	safe := func(r rune) bool { return unicode.IsPrint(r) || strings.ContainsRune(keep, r) }
	clean := true
	for i, r := range s {
		if r == utf8.RuneError {
			if _, size := utf8.DecodeRuneInString(s[i:]); size == 1 {
				clean = false
				break
			}
		}
		if !safe(r) {
			clean = false
			break
		}
	}
	if clean {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			fmt.Fprintf(&b, `\x%02x`, s[i])
		case safe(r):
			b.WriteString(s[i : i+size])
		case r < 0x80:
			fmt.Fprintf(&b, `\x%02x`, r)
		default:
			fmt.Fprintf(&b, `\u%04x`, r)
		}
		i += size
	}
	return b.String()
}
