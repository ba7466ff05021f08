package webhookguard

import (
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
)

// The docs name log messages and metrics; these tests hold them to the code.
// The code side is read from the source of every non-test .go file of the
// module (whatever its package), so that the check follows code that moves.

// codeFacts is what the Go sources log, register and spell.
type codeFacts struct {
	// messages are the log messages: the message argument of every zap call
	// (Debug, Info, Warn, Error, DPanic, Panic, Fatal, their w forms, Check
	// and Log), and the message field of struct literals of a type with a
	// message (or msg) field and a zap level field, which is how the outcome
	// table hands its messages to logger.Check.
	messages []codeText
	// metrics are the registered metric names: Namespace_Subsystem_Name of
	// every *Opts literal, prometheus.BuildFQName calls and NewDesc names.
	metrics map[string]bool
	// literals holds every string literal, for label values.
	literals map[string]bool
}

// codeText is a string built in code: literal parts and, between them,
// parts only known at run time (a variable, a %v).
type codeText struct {
	parts []string // literal text; a nil-able hole is codeHole
	where string   // file:line
}

// codeHole stands for a part of a codeText known only at run time.
const codeHole = "\x00"

// regexp matches what the text can be at run time.
func (c codeText) regexp() *regexp.Regexp {
	var b strings.Builder
	b.WriteString("^")
	for _, p := range c.parts {
		if p == codeHole {
			b.WriteString(".*")
		} else {
			b.WriteString(regexp.QuoteMeta(p))
		}
	}
	b.WriteString("$")
	return regexp.MustCompile(b.String())
}

// template is the text with its run-time parts as codeHole.
func (c codeText) template() string { return strings.Join(c.parts, "") }

// literal reports whether some part of the text is written in the code.
func (c codeText) literal() bool {
	return slices.ContainsFunc(c.parts, func(p string) bool { return p != codeHole && strings.TrimSpace(p) != "" })
}

var (
	codeFactsOnce sync.Once
	codeFactsVal  *codeFacts
	codeFactsErr  error
)

// moduleCode reads the module's Go sources once per test binary.
func moduleCode(t *testing.T) *codeFacts {
	t.Helper()
	codeFactsOnce.Do(func() { codeFactsVal, codeFactsErr = readModuleCode(".") })
	if codeFactsErr != nil {
		t.Fatal(codeFactsErr)
	}
	return codeFactsVal
}

// readModuleCode parses every non-test .go file under root, skipping
// testdata, node_modules and hidden directories.
func readModuleCode(root string) (*codeFacts, error) {
	fset := token.NewFileSet()
	var files []*ast.File
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if path != root && (d.Name() == "testdata" || d.Name() == "node_modules" || strings.HasPrefix(d.Name(), ".")) {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		f, err := parser.ParseFile(fset, path, nil, parser.SkipObjectResolution)
		if err != nil {
			return err
		}
		files = append(files, f)
		return nil
	})
	if err != nil {
		return nil, err
	}
	c := &codeFacts{metrics: map[string]bool{}, literals: map[string]bool{}}

	// String constants, by name (a name defined twice keeps both values
	// unknown rather than guessing).
	consts := map[string]string{}
	ambiguous := map[string]bool{}
	// Struct types with a message field: its name and position.
	type msgField struct {
		name  string
		index int
	}
	messageFields := map[string]msgField{}
	for _, f := range files {
		ast.Inspect(f, func(n ast.Node) bool {
			gd, ok := n.(*ast.GenDecl) // at top level or in a function
			if !ok {
				return true
			}
			for _, spec := range gd.Specs {
				switch s := spec.(type) {
				case *ast.ValueSpec:
					if gd.Tok != token.CONST {
						continue
					}
					for i, name := range s.Names {
						if i < len(s.Values) {
							if lit, ok := s.Values[i].(*ast.BasicLit); ok && lit.Kind == token.STRING {
								v, _ := strconv.Unquote(lit.Value)
								if old, dup := consts[name.Name]; dup && old != v {
									ambiguous[name.Name] = true
								}
								consts[name.Name] = v
							}
						}
					}
				case *ast.TypeSpec:
					st, ok := s.Type.(*ast.StructType)
					if !ok {
						continue
					}
					// A log line's facts: a message and a zap level.
					i, hasLevel := 0, false
					var mf *msgField
					for _, field := range st.Fields.List {
						if sel, ok := field.Type.(*ast.SelectorExpr); ok && sel.Sel.Name == "Level" {
							hasLevel = true
						}
						if len(field.Names) == 0 {
							i++
							continue
						}
						for _, n := range field.Names {
							if l := strings.ToLower(n.Name); l == "message" || l == "msg" {
								mf = &msgField{n.Name, i}
							}
							i++
						}
					}
					if mf != nil && hasLevel {
						messageFields[s.Name.Name] = *mf
					}
				}
			}
			return true
		})
	}

	// text evaluates a string expression as far as the source tells.
	var text func(ast.Expr) []string
	text = func(e ast.Expr) []string {
		switch e := e.(type) {
		case *ast.BasicLit:
			if e.Kind == token.STRING {
				v, _ := strconv.Unquote(e.Value)
				return []string{v}
			}
		case *ast.ParenExpr:
			return text(e.X)
		case *ast.Ident:
			if v, ok := consts[e.Name]; ok && !ambiguous[e.Name] {
				return []string{v}
			}
		case *ast.SelectorExpr:
			if v, ok := consts[e.Sel.Name]; ok && !ambiguous[e.Sel.Name] {
				return []string{v}
			}
		case *ast.BinaryExpr:
			if e.Op == token.ADD {
				return append(text(e.X), text(e.Y)...)
			}
		case *ast.CallExpr:
			// fmt.Sprintf("... %s ...", ...): the verbs are holes.
			if sel, ok := e.Fun.(*ast.SelectorExpr); ok && sel.Sel.Name == "Sprintf" && len(e.Args) > 0 {
				return formatText(text(e.Args[0]))
			}
		}
		return []string{codeHole}
	}
	add := func(fset *token.FileSet, pos token.Pos, parts []string) {
		ct := codeText{parts: parts, where: fset.Position(pos).String()}
		if ct.literal() {
			c.messages = append(c.messages, ct)
		}
	}
	name := func(e ast.Expr) (string, bool) {
		parts := text(e)
		if slices.Contains(parts, codeHole) {
			return "", false
		}
		return strings.Join(parts, ""), true
	}
	fqName := func(parts ...string) string {
		var nonEmpty []string
		for _, p := range parts {
			if p != "" {
				nonEmpty = append(nonEmpty, p)
			}
		}
		return strings.Join(nonEmpty, "_")
	}
	// zap's methods (*zap.Logger's, and the sugared logger's key-value
	// forms) → the index of their message argument. fmt-style forms are
	// left out: Errorf is also fmt's and testing's.
	logMethods := map[string]int{"Check": 1, "Log": 1}
	for _, m := range []string{"Debug", "Info", "Warn", "Error", "DPanic", "Panic", "Fatal"} {
		logMethods[m], logMethods[m+"w"] = 0, 0
	}

	for _, f := range files {
		ast.Inspect(f, func(n ast.Node) bool {
			switch n := n.(type) {
			case *ast.BasicLit:
				if n.Kind == token.STRING {
					v, _ := strconv.Unquote(n.Value)
					c.literals[v] = true
				}
			case *ast.CallExpr:
				sel, ok := n.Fun.(*ast.SelectorExpr)
				if !ok {
					return true
				}
				if pkg, ok := sel.X.(*ast.Ident); ok && (pkg.Name == "log" || pkg.Name == "fmt") {
					return true // the standard library's, not zap's
				}
				if i, ok := logMethods[sel.Sel.Name]; ok && len(n.Args) > i {
					add(fset, n.Pos(), text(n.Args[i]))
				}
				switch sel.Sel.Name {
				case "BuildFQName":
					if len(n.Args) == 3 {
						ns, ok1 := name(n.Args[0])
						sub, ok2 := name(n.Args[1])
						nm, ok3 := name(n.Args[2])
						if ok1 && ok2 && ok3 {
							c.metrics[fqName(ns, sub, nm)] = true
						}
					}
				case "NewDesc":
					if len(n.Args) > 0 {
						if nm, ok := name(n.Args[0]); ok {
							c.metrics[nm] = true
						}
					}
				}
			case *ast.CompositeLit:
				typeName := func(e ast.Expr) string {
					switch e := e.(type) {
					case *ast.Ident:
						return e.Name
					case *ast.SelectorExpr:
						return e.Sel.Name
					}
					return ""
				}
				// A metric's options: Namespace, Subsystem, Name.
				if strings.HasSuffix(typeName(n.Type), "Opts") {
					fields := map[string]string{}
					known := true
					for _, el := range n.Elts {
						kv, ok := el.(*ast.KeyValueExpr)
						if !ok {
							continue
						}
						key, _ := kv.Key.(*ast.Ident)
						if key == nil {
							continue
						}
						switch key.Name {
						case "Namespace", "Subsystem", "Name":
							v, ok := name(kv.Value)
							known = known && ok
							fields[key.Name] = v
						}
					}
					if known && fields["Name"] != "" {
						c.metrics[fqName(fields["Namespace"], fields["Subsystem"], fields["Name"])] = true
					}
				}
				// A struct literal of a type with a message field, written
				// or elided in a map or slice literal.
				structLit := func(lit *ast.CompositeLit, typ string) {
					mf, ok := messageFields[typ]
					if !ok {
						return
					}
					for i, el := range lit.Elts {
						if kv, ok := el.(*ast.KeyValueExpr); ok {
							if key, _ := kv.Key.(*ast.Ident); key != nil && key.Name == mf.name {
								add(fset, kv.Pos(), text(kv.Value))
							}
						} else if i == mf.index {
							add(fset, el.Pos(), text(el))
						}
					}
				}
				structLit(n, typeName(n.Type))
				var elem ast.Expr
				switch t := n.Type.(type) {
				case *ast.MapType:
					elem = t.Value
				case *ast.ArrayType:
					elem = t.Elt
				}
				if elem != nil {
					for _, el := range n.Elts {
						if kv, ok := el.(*ast.KeyValueExpr); ok {
							el = kv.Value
						}
						if lit, ok := el.(*ast.CompositeLit); ok && lit.Type == nil {
							structLit(lit, typeName(elem))
						}
					}
				}
			}
			return true
		})
	}
	return c, nil
}

// formatVerb is a fmt verb in a format string.
var formatVerb = regexp.MustCompile(`%[-+# 0]*[0-9*]*(\.[0-9*]*)?[a-zA-Z%]`)

// formatText turns the verbs of a format's literal parts into holes.
func formatText(parts []string) []string {
	var out []string
	for _, p := range parts {
		if p == codeHole {
			out = append(out, p)
			continue
		}
		last := 0
		for _, m := range formatVerb.FindAllStringIndex(p, -1) {
			out = append(out, p[last:m[0]])
			if p[m[0]:m[1]] == "%%" {
				out = append(out, "%")
			} else {
				out = append(out, codeHole)
			}
			last = m[1]
		}
		out = append(out, p[last:])
	}
	return out
}

// loggedBy returns where the code logs a message the docs quote, or "".
// The docs may shorten a message with "..." (or "…"), which stands for any
// text, as a run-time part of the code's message does.
func (c *codeFacts) loggedBy(quoted string) string {
	var b strings.Builder
	b.WriteString("^")
	for i, piece := range regexp.MustCompile(`\.\.\.|…`).Split(quoted, -1) {
		if i > 0 {
			b.WriteString(".*")
		}
		b.WriteString(regexp.QuoteMeta(piece))
	}
	b.WriteString("$")
	docRE := regexp.MustCompile(b.String())
	for _, m := range c.messages {
		if m.regexp().MatchString(quoted) || docRE.MatchString(m.template()) {
			return m.where
		}
	}
	return ""
}

// docQuote is a log message or metric name quoted by a page, with its place.
type docQuote struct {
	text  string
	where string
}

// docLevel is a log level as the docs write it.
const docLevel = `(?:DEBUG|INFO|WARN|ERROR)`

var (
	// A backquoted message followed by its level in parentheses:
	// `webhook spooled` (INFO, ...).
	docInlineMessage = regexp.MustCompile("`([^`]+)`\\s*\\(" + docLevel + `\b`)
	// A level, maybe "line(s)", then a message in backquotes or double
	// quotes: ERROR `spooled webhook is dead`, the WARN lines "webhook refused".
	docLevelMessage = regexp.MustCompile(docLevel + "(?:\\s+lines?)?\\s+(?:`([^`]+)`|\"([^\"]+)\")")
	// A JSON log line's message, "msg":"webhook refused", and a jq filter's,
	// .msg == "webhook refused".
	docJSONMessage = regexp.MustCompile(`"msg":\s*"([^"]+)"|\.msg\s*==\s*"([^"]+)"`)
	// A backquoted span.
	docCode = regexp.MustCompile("`([^`]+)`")
)

// docLogMessages finds the log messages a page quotes, the convention the
// docs follow: in the `msg` column of a Markdown table whose header has
// one; backquoted and followed by a level in parentheses ("`webhook
// spooled` (INFO, ..."); after a level, maybe with "line(s)", in backquotes
// or double quotes ("ERROR `spooled webhook is dead`", "the WARN lines
// \"webhook refused\""); as the "msg" of a JSON log line or of a jq filter
// (.msg == "..."). A quote may run over a line break.
func docLogMessages(file, text string) []docQuote {
	var out []docQuote
	lineOf := func(offset int) string {
		return fmt.Sprintf("%s:%d", file, strings.Count(text[:offset], "\n")+1)
	}
	msgColumn := -1
	offset := 0
	for line := range strings.Lines(text) {
		trimmed := strings.TrimSpace(line)
		if strings.HasPrefix(trimmed, "|") {
			cells := markdownCells(trimmed)
			switch {
			case slices.ContainsFunc(cells, isMsgHeader):
				msgColumn = slices.IndexFunc(cells, isMsgHeader)
			case msgColumn >= 0 && msgColumn < len(cells) && !strings.HasPrefix(cells[msgColumn], "---"):
				for _, m := range docCode.FindAllStringSubmatch(cells[msgColumn], -1) {
					out = append(out, docQuote{m[1], lineOf(offset)})
				}
			}
		} else {
			msgColumn = -1
		}
		offset += len(line)
	}
	flat := strings.ReplaceAll(text, "\n", " ") // same offsets, quotes across lines
	for _, re := range []*regexp.Regexp{docInlineMessage, docLevelMessage, docJSONMessage} {
		for _, m := range re.FindAllStringSubmatchIndex(flat, -1) {
			for g := 2; g+1 < len(m); g += 2 {
				if m[g] >= 0 {
					quoted := strings.Join(strings.Fields(flat[m[g]:m[g+1]]), " ")
					out = append(out, docQuote{quoted, lineOf(m[g])})
				}
			}
		}
	}
	return out
}

// isMsgHeader reports whether a table header cell names the log message.
func isMsgHeader(cell string) bool { return cell == "`msg`" || cell == "msg" }

// markdownCells splits a table row into its trimmed cells; "\|" stays in
// its cell.
func markdownCells(row string) []string {
	row = strings.Trim(row, "|")
	var cells []string
	var cell strings.Builder
	for i := 0; i < len(row); i++ {
		switch {
		case row[i] == '\\' && i+1 < len(row) && row[i+1] == '|':
			cell.WriteByte('|')
			i++
		case row[i] == '|':
			cells = append(cells, strings.TrimSpace(cell.String()))
			cell.Reset()
		default:
			cell.WriteByte(row[i])
		}
	}
	return append(cells, strings.TrimSpace(cell.String()))
}

// docMetricName is a name of this module's metrics in the docs; a name
// followed by * is a pattern, not a name.
var docMetricName = regexp.MustCompile(`caddy_webhook_guard_[a-z0-9_]*[a-z0-9]\b(?:[^*]|$)`)

// docMetricSelector is a metric with label matchers: name{...}.
var docMetricSelector = regexp.MustCompile(`(caddy_webhook_guard_[a-z0-9_]*[a-z0-9])\{([^}]*)\}`)

// docLabelMatcher is one label matcher: label="value", =~, != or !~.
var docLabelMatcher = regexp.MustCompile(`([a-z_]+)\s*(=~|!~|!=|=)\s*"([^"]*)"`)

// docMetricNames finds the metric names a page uses.
func docMetricNames(file, text string) []docQuote {
	var out []docQuote
	for i, line := range strings.Split(text, "\n") {
		for _, m := range docMetricName.FindAllStringSubmatch(line, -1) {
			name := strings.TrimRightFunc(m[0], func(r rune) bool { return !(r == '_' || 'a' <= r && r <= 'z' || '0' <= r && r <= '9') })
			out = append(out, docQuote{name, fmt.Sprintf("%s:%d", file, i+1)})
		}
	}
	return out
}

// docLabelValues finds the label values a page matches metrics on (each
// alternative of a regexp matcher a|b), leaving out templating variables and
// real regular expressions.
func docLabelValues(file, text string) []docQuote {
	var out []docQuote
	for i, line := range strings.Split(text, "\n") {
		line = strings.ReplaceAll(line, `\|`, "|")
		for _, sel := range docMetricSelector.FindAllStringSubmatch(line, -1) {
			for _, m := range docLabelMatcher.FindAllStringSubmatch(sel[2], -1) {
				for _, v := range strings.Split(m[3], "|") {
					if v == "" || strings.ContainsAny(v, `$.*+?()[]{}\`) {
						continue
					}
					out = append(out, docQuote{m[1] + "=" + v, fmt.Sprintf("%s:%d", file, i+1)})
				}
			}
		}
	}
	return out
}

// registered reports whether the code registers the metric, a histogram's
// _bucket, _sum and _count series included.
func (c *codeFacts) registered(name string) bool {
	if c.metrics[name] {
		return true
	}
	for _, suffix := range []string{"_bucket", "_sum", "_count"} {
		if base, ok := strings.CutSuffix(name, suffix); ok && c.metrics[base] {
			return true
		}
	}
	return false
}

// forthcomingMetrics are metrics the docs may name before the code registers
// them (none now). A name here is tolerated while missing; remove it once the
// code has it.
var forthcomingMetrics = map[string]bool{}

// docFiles are the pages whose log messages and metric names are checked:
// the README, every page under docs/ and its alert rules and dashboard.
func docFiles(t *testing.T) []string {
	t.Helper()
	var files []string
	for _, pattern := range []string{"README.md", "docs/*.md", "docs/*.yml", "docs/*.json"} {
		m, err := filepath.Glob(pattern)
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, m...)
	}
	return files
}

// badLogQuotes returns the log messages text quotes that no zap call in the
// code logs, one line each.
func badLogQuotes(c *codeFacts, file, text string) []string {
	var bad []string
	for _, q := range docLogMessages(file, text) {
		if c.loggedBy(q.text) == "" {
			bad = append(bad, fmt.Sprintf("%s: log message %q is not logged by any zap call in the Go sources", q.where, q.text))
		}
	}
	return bad
}

// badMetricQuotes returns the metric names and label values text uses that
// the code does not register or spell, one line each.
func badMetricQuotes(t *testing.T, c *codeFacts, file, text string) []string {
	var bad []string
	for _, q := range docMetricNames(file, text) {
		switch {
		case c.registered(q.text):
		case forthcomingMetrics[q.text]:
			t.Logf("%s: metric %s is not registered yet (forthcomingMetrics)", q.where, q.text)
		default:
			bad = append(bad, fmt.Sprintf("%s: metric %s is not registered by the code (registered: %s)", q.where, q.text, strings.Join(sortedKeys(c.metrics), ", ")))
		}
	}
	for _, q := range docLabelValues(file, text) {
		label, value, _ := strings.Cut(q.text, "=")
		if !c.literals[value] {
			bad = append(bad, fmt.Sprintf("%s: label %s=%q: no string literal %q in the Go sources", q.where, label, value, value))
		}
	}
	return bad
}

func sortedKeys(m map[string]bool) []string {
	var keys []string
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// TestDocsMetricNamesAreRegistered: every caddy_webhook_guard_* name in the
// README, docs/, the alert rules and the dashboard is a metric the code
// registers, and every label value they match on is spelt in the code.
func TestDocsMetricNamesAreRegistered(t *testing.T) {
	c := moduleCode(t)
	for _, must := range []string{"caddy_webhook_guard_events_total", "caddy_webhook_guard_spool_events"} {
		if !c.metrics[must] {
			t.Fatalf("the source scan did not find metric %s among %v: have the metrics moved?", must, sortedKeys(c.metrics))
		}
	}
	for _, file := range docFiles(t) {
		data, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		for _, bad := range badMetricQuotes(t, c, file, string(data)) {
			t.Error(bad)
		}
	}
}

// TestDocsChecksCatchWrongNames keeps the two tests above honest: the line
// operations.md had (naming a message the code never logs), a misspelt
// metric and an outcome that does not exist are caught; right ones are not.
func TestDocsChecksCatchWrongNames(t *testing.T) {
	c := moduleCode(t)
	old := "**Log lines** (logger `http.handlers.webhook_guard`): `webhook spooled` (INFO,\n" +
		"one per event stored), `spooled webhook delivery attempt` (WARN for a failed\n" +
		"attempt with `result`, `status`, `error`; DEBUG for a delivered one), and\n" +
		"`spooled webhook is dead` (ERROR, with `scope`, `event_id`, `attempts`,\n"
	bad := badLogQuotes(c, "old.md", old)
	if len(bad) != 1 || !strings.Contains(bad[0], `"spooled webhook delivery attempt"`) || !strings.HasPrefix(bad[0], "old.md:2: ") {
		t.Errorf("the wrong message of the old operations.md: %q", bad)
	}
	for _, text := range []string{
		"| level | `msg` | when |\n|---|---|---|\n| WARN | `webhook refusd` | x |\n",
		`{"level":"warn","msg":"webhook refusd"}`,
		`look for the ERROR line "replay store: delivered event forgotten"`,
	} {
		if bad := badLogQuotes(c, "t.md", text); len(bad) != 1 {
			t.Errorf("%q: %q, want one wrong message", text, bad)
		}
	}
	for _, text := range []string{
		"| level | `msg` | when |\n|---|---|---|\n| WARN | `webhook refused` | x |\n| WARN | `replay store nearly full: ...` | y |\n",
		"`webhook spooled` (INFO, one per event)",
	} {
		if bad := badLogQuotes(c, "t.md", text); len(bad) != 0 {
			t.Errorf("%q: %q, want none", text, bad)
		}
	}

	for text, want := range map[string]int{
		"`caddy_webhook_guard_events_totl`":                                       1,
		`increase(caddy_webhook_guard_events_total{outcome="store_ful"}[5m]) > 0`: 1,
		`caddy_webhook_guard_events_total{outcome=~"forwarded\|upstream_faild"}`:  1,
		`rate(caddy_webhook_guard_verify_seconds_bucket[5m])`:                     0,
		`caddy_webhook_guard_events_total{provider=~"$provider"}`:                 0,
		`caddy_webhook_guard_spool_paused`:                                        0,
		"caddy_webhook_guard_* (every metric)":                                    0,
	} {
		if bad := badMetricQuotes(t, c, "t.md", text); len(bad) != want {
			t.Errorf("%q: %q, want %d", text, bad, want)
		}
	}
}
