package cli

import (
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/hookguard/caddy-webhook-guard/ledger"
)

// cliLedgerLong is the help of `caddy webhook-guard ledger`.
const cliLedgerLong = `
Reads a ledger file offline: for when Caddy is down, or its config does not
load, or to look at a copy of a ledger.

  caddy webhook-guard ledger inspect <path> [--events <n>] [--json]

It never writes to the file or its journal and never waits for its lock.
Beside a running Caddy, which holds the file, or when the journal beside it
has records not yet applied (after a crash), it reads a copy of both taken at
that moment, with the journal applied to the copy (a consistent copy: it
copies again when a segment changes during the copy); that needs the size of
the file and its journal in free space under $TMPDIR.

It prints the ids remembered (delivered, accepted by the spool, expired and
not yet swept), the spool's events by scope and state, the paused scopes, and
the newest events (--events, default 20). Event ids are stored as digests, so
remembered ids are counted, not listed; spooled events are listed with their
provider event id. Headers and bodies are not printed: the admin API's
'caddy webhook-guard spool show' shows them, credentials redacted.
`

// newLedgerCommand is `caddy webhook-guard ledger`.
func newLedgerCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "ledger inspect <path> [--events <n>] [--json]",
		Short: "Reads a ledger file offline, read only, beside a running Caddy too",
		Long:  cliLedgerLong,
	}
	inspect := &cobra.Command{
		Use:                   "inspect <path> [--events <n>] [--json]",
		Short:                 "Prints what a ledger holds: ids, spooled events by state, paused scopes",
		Long:                  cliLedgerLong,
		Args:                  cobra.ArbitraryArgs,
		DisableFlagsInUseLine: true,
	}
	fs := inspect.Flags()
	fs.Int("events", 20, "List the `n` newest spooled events (0: none)")
	fs.Bool("json", false, "Print the report as JSON")
	inspect.SetFlagErrorFunc(flagErrorWithUsage)
	inspect.RunE = func(c *cobra.Command, args []string) error {
		return cliFail(c, cmdLedgerInspect(c, args))
	}
	cmd.AddCommand(inspect)
	cmd.RunE = func(c *cobra.Command, args []string) error {
		if len(args) == 0 {
			return c.Help()
		}
		return cliFail(c, fmt.Errorf("unknown ledger subcommand %q: use inspect", args[0]))
	}
	return cmd
}

// cmdLedgerInspect is `caddy webhook-guard ledger inspect <path>`.
func cmdLedgerInspect(c *cobra.Command, args []string) error {
	if len(args) != 1 {
		return cliUsagef("<path>", "want the ledger file's path; %d given", len(args))
	}
	n, _ := c.Flags().GetInt("events")
	if n < 0 || n > 100_000 {
		return cliUsagef("--events", "%d: want 0 to 100000", n)
	}
	r, err := ledger.Inspect(args[0], n)
	if err != nil {
		return err
	}
	if asJSON, _ := c.Flags().GetBool("json"); asJSON {
		enc := json.NewEncoder(c.OutOrStdout())
		enc.SetIndent("", "  ")
		return enc.Encode(r)
	}
	return writeLedgerReport(c.OutOrStdout(), r)
}

// writeLedgerReport prints r for a terminal.
func writeLedgerReport(w io.Writer, r *ledger.Report) error {
	var b strings.Builder
	fmt.Fprintf(&b, "ledger %s (%d bytes, schema %d)\n", cliPrintable(r.Path, ""), r.Size, r.Schema)
	if r.Snapshot {
		fmt.Fprintf(&b, "read from a copy taken at %s (the file is held by a running Caddy, or its journal had records to apply)\n", r.At.UTC().Format(time.RFC3339))
	}
	fmt.Fprintf(&b, "ids remembered: %d delivered, %d accepted by the spool; %d expired, not yet swept\n", r.Delivered, r.Accepted, r.Expired)
	if len(r.Paused) > 0 {
		scopes := make([]string, len(r.Paused))
		for i, p := range r.Paused {
			scopes[i] = cliPrintable(p, "")
		}
		fmt.Fprintf(&b, "PAUSED: %s\n", strings.Join(scopes, ", "))
	}
	if len(r.Counts) == 0 {
		b.WriteString("spool: empty\n")
	} else {
		tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "SCOPE\tPENDING\tDEAD\tDISCARDED\tOLDEST_PENDING")
		for _, scope := range slices.Sorted(maps.Keys(r.Counts)) {
			c := r.Counts[scope]
			oldest := "-"
			if !c.OldestPending.IsZero() {
				oldest = cliTime(&c.OldestPending)
			}
			fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%s\n", cliCell(scope), c.Pending, c.Dead, c.Discarded, oldest)
		}
		tw.Flush()
	}
	if len(r.Events) > 0 {
		b.WriteString("\n")
		tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "ID\tSCOPE\tPROVIDER\tEVENT_ID\tSTATE\tATTEMPTS\tRECEIVED\tLAST_ERROR")
		for _, e := range r.Events {
			fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%d\t%s\t%s\n", e.ID, cliCell(e.Scope), cliCell(e.Provider), cliCell(e.EventID),
				cliCell(string(e.State)), e.Attempts, cliTime(&e.ReceivedAt), cliCell(cliShorten(e.LastError, cliShownError)))
		}
		tw.Flush()
	}
	_, err := io.WriteString(w, b.String())
	return err
}
