package cli

import (
	"bytes"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	caddycmd "github.com/caddyserver/caddy/v2/cmd"

	"github.com/hookguard/caddy-webhook-guard/verify"
)

// TestSendTypeForEveryProvider: the event type the guard reads (the
// module's own verifier) is the provider's default without --type, and
// --type's value with it; --unique keeps it in every new event.
func TestSendTypeForEveryProvider(t *testing.T) {
	for name, c := range cliCases(t) {
		t.Run(name, func(t *testing.T) {
			def := cliTypeOf(c.provider).def
			if def == "" {
				t.Fatalf("%s has no default type in cliEventTypes", c.provider)
			}
			for _, tc := range []struct {
				args []string
				want string
			}{
				{nil, def},
				{[]string{"--type", "charge.refunded"}, "charge.refunded"},
				{[]string{"--type", "orders/paid & <more>", "--count", "2", "--unique"}, "orders/paid & <more>"},
			} {
				g := startCLIGuardServer(t, c.verifier(t))
				out, _, err := runCLI(t, "send", cliEnv{}, c.flags(append([]string{"--to", g.URL}, tc.args...)...)...)
				if err != nil {
					t.Fatalf("%q: %v\n%s", tc.args, err, out)
				}
				reqs, bodies := g.received()
				if len(reqs) == 0 {
					t.Fatalf("%q: nothing received", tc.args)
				}
				for i, r := range reqs {
					ev, err := c.verifier(t).Verify(r.Header, bodies[i], time.Now())
					if err != nil || ev.Type != tc.want {
						t.Errorf("%q: request %d: the guard reads type %q (%v), want %q\nbody %s", tc.args, i+1, ev.Type, err, tc.want, bodies[i])
					}
				}
			}
		})
	}
}

// TestTypeHeaderProviders: github and shopify carry the type in a header,
// with a body file too, and sign prints it; for the others --type with
// --body is refused, the type being the file's.
func TestTypeHeaderProviders(t *testing.T) {
	bodyFile := writeCLIBodyFile(t, cliBody)
	cases := cliCases(t)
	for provider, header := range map[string]string{"github": "X-Github-Event", "shopify": "X-Shopify-Topic"} {
		c := cases[provider]
		out, _, err := runCLI(t, "sign", cliEnv{}, c.flags("--body", bodyFile)...)
		if err != nil {
			t.Fatal(err)
		}
		if got := parseCLIHeaderLines(t, out).Get(header); got != cliTypeOf(provider).def {
			t.Errorf("%s sign: %s %q, want the default %q", provider, header, got, cliTypeOf(provider).def)
		}
		g := startCLIGuardServer(t, c.verifier(t))
		if out, _, err := runCLI(t, "send", cliEnv{}, c.flags("--to", g.URL, "--body", bodyFile, "--type", "pull_request")...); err != nil {
			t.Fatalf("%s send: %v\n%s", provider, err, out)
		}
		reqs, bodies := g.received()
		if len(reqs) != 1 || reqs[0].Header.Get(header) != "pull_request" || !bytes.Equal(bodies[0], cliBody) {
			t.Errorf("%s send --body --type: %d requests, %s %q", provider, len(reqs), header, reqs[0].Header.Get(header))
		}
	}
	for _, provider := range []string{"ivy", "stripe", "ivpay", "standard"} {
		_, _, err := runCLI(t, "send", cliEnv{}, cases[provider].flags("--to", "http://127.0.0.1:1", "--body", bodyFile, "--type", "x")...)
		if ue := (*cliUsageError)(nil); !errors.As(err, &ue) || ue.flag != "--type" {
			t.Errorf("%s: --type with --body: %v, want a usage error naming --type", provider, err)
		}
	}
	for _, bad := range []string{"", "a\nb", "a\x1b[31m"} {
		_, _, err := runCLI(t, "send", cliEnv{}, cases["github"].flags("--to", "http://127.0.0.1:1", "--type", bad)...)
		if ue := (*cliUsageError)(nil); !errors.As(err, &ue) || ue.flag != "--type" {
			t.Errorf("--type %q: %v, want a usage error naming --type", bad, err)
		}
	}
}

// docsEventsLists finds the events lists of the documentation's examples:
// each `webhook_guard <provider> { ... events a b ... }` Caddyfile block, and
// each JSON handler with "provider" and "events".
func docsEventsLists(t *testing.T) map[string][][]string {
	t.Helper()
	files := []string{"../../README.md", "../../Caddyfile.example"}
	docs, err := filepath.Glob("../../docs/*.md")
	if err != nil || len(docs) == 0 {
		t.Fatalf("no docs/*.md: %v", err)
	}
	files = append(files, docs...)
	open := regexp.MustCompile(`^\s*webhook_guard\s+(\w+)\s*\{\s*$`)
	events := regexp.MustCompile(`^\s*events\s+(.+?)\s*$`)
	jsonProvider := regexp.MustCompile(`"provider":\s*"(\w+)"`)
	jsonEvents := regexp.MustCompile(`"events":\s*\[([^\]]*)\]`)
	lists := map[string][][]string{}
	for _, file := range files {
		data, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		provider := ""
		for _, line := range strings.Split(string(data), "\n") {
			if m := open.FindStringSubmatch(line); m != nil {
				provider = m[1]
				continue
			}
			if strings.TrimSpace(line) == "}" {
				provider = ""
			}
			if m := events.FindStringSubmatch(line); m != nil && provider != "" {
				types, _, _ := strings.Cut(m[1], "#")
				lists[provider] = append(lists[provider], strings.Fields(types))
			}
		}
		for _, handler := range strings.Split(string(data), `"handler"`) {
			p, e := jsonProvider.FindStringSubmatch(handler), jsonEvents.FindStringSubmatch(handler)
			if p == nil || e == nil {
				continue
			}
			var types []string
			for _, q := range strings.Split(e[1], ",") {
				types = append(types, strings.Trim(strings.TrimSpace(q), `"`))
			}
			lists[p[1]] = append(lists[p[1]], types)
		}
	}
	return lists
}

// TestSendDefaultTypesPassTheDocsEvents: a send without --type to a guard
// configured as a documented example with `events` is forwarded, not
// answered ignored_type.
func TestSendDefaultTypesPassTheDocsEvents(t *testing.T) {
	lists := docsEventsLists(t)
	for _, must := range []string{"stripe", "github", "ivy"} {
		if len(lists[must]) == 0 {
			t.Fatalf("no documented events example of %s found (scan broken?): %v", must, lists)
		}
	}
	for provider, examples := range lists {
		if _, ok := verify.Lookup(provider); !ok {
			t.Errorf("docs: events example of unknown provider %q", provider)
			continue
		}
		def := cliTypeOf(provider).def
		for _, types := range examples {
			if !slices.Contains(types, def) {
				t.Errorf("%s: the default --type %q is not in the documented example `events %s`", provider, def, strings.Join(types, " "))
			}
		}
	}
}

// TestSendOutcomeText: the guard's Webhook-Guard-Outcome is shown after the
// status line; a spooled event is "spooled", not "not forwarded".
func TestSendOutcomeText(t *testing.T) {
	c := cliCases(t)["ivy"]
	for outcome, want := range map[string]string{
		"spooled":      "HTTP/1.1 200 OK (spooled: stored; the guard delivers it to the backend)\n",
		"duplicate":    "HTTP/1.1 200 OK (duplicate, not forwarded)\n",
		"ignored_type": "HTTP/1.1 200 OK (ignored_type, not forwarded)\n",
		"":             "HTTP/1.1 200 OK\n",
	} {
		guard := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if outcome != "" {
				w.Header().Set(outcomeHeader, outcome)
			}
		}))
		out, _, err := runCLI(t, "send", cliEnv{}, c.flags("--to", guard.URL)...)
		guard.Close()
		if err != nil || !strings.HasSuffix(out, ": "+want) {
			t.Errorf("outcome %q: %v, output %q, want it to end with %q", outcome, err, out, want)
		}
		if outcome == "spooled" && strings.Contains(out, "not forwarded") {
			t.Errorf("a spooled event is said not forwarded: %q", out)
		}
	}
}

// runSendCommand runs `send` through its cobra command, as Caddy does, with
// the test's streams; it returns stdout, stderr and the error.
func runSendCommand(t *testing.T, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	saved := processEnv
	processEnv = func() cliEnv { return cliEnv{stdin: strings.NewReader(""), getenv: func(string) string { return "" }} }
	t.Cleanup(func() { processEnv = saved })
	cmd := newSendCommand()
	var out, errOut bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(&errOut)
	cmd.SetArgs(args)
	err = cmd.Execute()
	return out.String(), errOut.String(), err
}

// TestSendFailureIsASentence: a failed send ends with one plain line on
// stderr, not a log line, and fails (exit status 1 in Caddy).
func TestSendFailureIsASentence(t *testing.T) {
	c := cliCases(t)["ivy"]
	refusing := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "refused: signature does not match", http.StatusUnauthorized)
	}))
	t.Cleanup(refusing.Close)
	for _, tc := range []struct {
		args []string
		last string
	}{
		{[]string{"--to", refusing.URL}, "send: the request was not answered 2xx (the answer is above)"},
		{[]string{"--to", refusing.URL, "--count", "3"}, "send: 3 of 3 requests were not answered 2xx (the answers are above)"},
		{nil, "send: --to: required: the URL to POST to"},
	} {
		out, stderr, err := runSendCommand(t, c.flags(tc.args...)...)
		if err == nil {
			t.Errorf("%q: no error", tc.args)
		}
		lines := strings.Split(strings.TrimSuffix(stderr, "\n"), "\n")
		if !strings.HasSuffix(stderr, "\n") || lines[len(lines)-1] != tc.last {
			t.Errorf("%q: stderr ends %q, want the line %q\nstdout:\n%s", tc.args, lines[len(lines)-1], tc.last, out)
		}
		if strings.Contains(stderr, `"level"`) || strings.Contains(stderr, `"msg"`) {
			t.Errorf("%q: a log line on stderr:\n%s", tc.args, stderr)
		}
		if strings.Count(stderr, tc.last) != 1 {
			t.Errorf("%q: the error is printed %d times:\n%s", tc.args, strings.Count(stderr, tc.last), stderr)
		}
	}
	// A 1-in-N failure agrees in number.
	n := 0
	flaky := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if n++; n == 2 {
			w.WriteHeader(http.StatusBadGateway)
		}
	}))
	t.Cleanup(flaky.Close)
	if _, stderr, _ := runSendCommand(t, c.flags("--to", flaky.URL, "--count", "3")...); !strings.HasSuffix(stderr, "send: 1 of 3 requests was not answered 2xx (the answers are above)\n") {
		t.Errorf("1 of 3 refused: stderr %q", stderr)
	}
}

// TestSpoolFailureIsASentence: the spool subcommands report errors the
// same way.
func TestSpoolFailureIsASentence(t *testing.T) {
	a := newCannedAdmin(t, nil)
	_, stderr, err := runSpool(t, "show", "7", "--address", a.addr)
	if err == nil || !strings.HasPrefix(stderr, "show: admin API at "+a.addr+": HTTP 404: ") || strings.Count(stderr, "\n") != 1 {
		t.Errorf("show of a missing event: %v, stderr %q", err, stderr)
	}
}

// docsSendLines returns the `caddy webhook-guard send` command lines of the
// README and docs/ (continuation lines joined), as words.
func docsSendLines(t *testing.T) map[string][]string {
	t.Helper()
	files, err := filepath.Glob("../../docs/*.md")
	if err != nil {
		t.Fatal(err)
	}
	lines := map[string][]string{}
	for _, file := range append(files, "../../README.md") {
		data, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		text := strings.ReplaceAll(string(data), "\\\n", " ")
		for i, line := range strings.Split(text, "\n") {
			line = strings.TrimSpace(line)
			line = strings.TrimPrefix(line, "./")
			if !strings.HasPrefix(line, "caddy webhook-guard send ") {
				continue
			}
			words, err := shellWords(line)
			if err != nil {
				t.Errorf("%s: %q: %v", file, line, err)
				continue
			}
			lines[fmt.Sprintf("%s:%d", filepath.Base(file), i+1)] = words[3:]
		}
	}
	return lines
}

// shellWords splits a command line as a shell would, for the quoting the
// docs use: '...', "..." and spaces.
func shellWords(line string) ([]string, error) {
	var words []string
	var word strings.Builder
	inWord := false
	var quote rune
	for _, r := range line {
		switch {
		case quote != 0 && r == quote:
			quote = 0
		case quote != 0:
			word.WriteRune(r)
		case r == '\'' || r == '"':
			quote, inWord = r, true
		case r == ' ' || r == '\t':
			if inWord {
				words = append(words, word.String())
				word.Reset()
				inWord = false
			}
		default:
			word.WriteRune(r)
			inWord = true
		}
	}
	if quote != 0 {
		return nil, errors.New("unclosed quote")
	}
	if inWord {
		words = append(words, word.String())
	}
	return words, nil
}

// TestDocsSendLines runs every documented `caddy webhook-guard send` line,
// --to pointed at a stand-in guard that verifies with the line's own
// configuration and a secret in the variable it names: each is accepted by
// the command, verifies, and its type is one the provider's documented
// events examples take.
func TestDocsSendLines(t *testing.T) {
	lines := docsSendLines(t)
	if len(lines) < 9 {
		t.Fatalf("found %d send lines in the docs, want one per provider block of providers.md and the README's: %v", len(lines), lines)
	}
	events := docsEventsLists(t)
	secrets := map[string]string{
		"standard": "whsec_c2VjcmV0LWZvci10aGUtZG9jcy10ZXN0", "stripe": "whsec_docs_test",
	}
	for where, words := range lines {
		t.Run(where, func(t *testing.T) {
			provider := ""
			if i := slices.Index(words, "--provider"); i >= 0 && i+1 < len(words) {
				provider = words[i+1]
			}
			secret := secrets[provider]
			if secret == "" {
				secret = "docs-test-secret"
			}
			env := cliEnv{getenv: func(string) string { return secret }}
			// A parse of the line with --to replaced, to build the verifier
			// the stand-in guard uses: the line's own configuration.
			args := slices.Clone(words)
			for i := range args[:len(args)-1] {
				if args[i] == "--to" {
					args[i+1] = "http://127.0.0.1:1/hook"
				}
			}
			cmd := newSendCommand()
			if err := cmd.Flags().Parse(args); err != nil {
				t.Fatalf("%q: %v", words, err)
			}
			opts, err := parseCLIOptions(caddycmd.Flags{FlagSet: cmd.Flags()}, true, env)
			if err != nil {
				t.Fatalf("%q: %v", words, err)
			}
			scheme, _ := verify.Lookup(opts.provider)
			v, err := scheme.New(opts.config)
			if err != nil {
				t.Fatal(err)
			}
			g := startCLIGuardServer(t, v)
			for i := range args[:len(args)-1] {
				if args[i] == "--to" {
					args[i+1] = g.URL + "/hook"
				}
			}
			out, _, err := runCLI(t, "send", env, args...)
			if err != nil || !strings.Contains(out, ": HTTP/1.1 200 OK\n  accepted ") {
				t.Fatalf("%q: %v\n%s", words, err, out)
			}
			reqs, bodies := g.received()
			ev, err := v.Verify(reqs[0].Header, bodies[0], time.Now())
			if err != nil {
				t.Fatal(err)
			}
			for _, types := range events[opts.provider] {
				if !slices.Contains(types, ev.Type) {
					t.Errorf("%q sends type %q, which the documented `events %s` ignores", words, ev.Type, strings.Join(types, " "))
				}
			}
		})
	}
}
