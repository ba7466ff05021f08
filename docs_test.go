package webhookguard

import (
	"errors"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"unicode"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"

	"github.com/hookguard/caddy-webhook-guard/verify"
)

// The documentation the docs tests read: the README, every page under docs/
// and the runnable example.
var (
	docPages        = []string{"README.md", "docs/*.md"}
	docReference    = "docs/reference.md"
	docProviders    = "docs/providers.md"
	docExampleFiles = []string{"Caddyfile.example"}
)

// docSnippet is one ```caddyfile block of a Markdown page.
type docSnippet struct {
	where string // file:line of the opening fence
	text  string
}

// caddyfileFence opens a Caddyfile block; only blocks marked caddyfile are
// checked, so a syntax summary goes in a plain ``` block.
var caddyfileFence = regexp.MustCompile("^\\s*```caddyfile\\s*$")

// docSnippets extracts every ```caddyfile block of the documentation.
func docSnippets(t *testing.T) []docSnippet {
	t.Helper()
	var files []string
	for _, pattern := range docPages {
		m, err := filepath.Glob(pattern)
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, m...)
	}
	var out []docSnippet
	for _, file := range files {
		data, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		lines := strings.Split(string(data), "\n")
		for i := 0; i < len(lines); i++ {
			if !caddyfileFence.MatchString(lines[i]) {
				continue
			}
			start := i + 1
			indent := lines[i][:len(lines[i])-len(strings.TrimLeft(lines[i], " \t"))]
			var body []string
			for i++; i < len(lines) && strings.TrimSpace(lines[i]) != "```"; i++ {
				body = append(body, strings.TrimPrefix(lines[i], indent))
			}
			if i == len(lines) {
				t.Fatalf("%s:%d: a ```caddyfile block is never closed", file, start)
			}
			out = append(out, docSnippet{where: fmt.Sprintf("%s:%d", file, start), text: strings.Join(body, "\n") + "\n"})
		}
	}
	for _, file := range docExampleFiles {
		data, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, docSnippet{where: file, text: string(data)})
	}
	return out
}

// knownDirectiveAsSite is the adapter's error for a snippet that starts with
// a directive: a fragment, to be wrapped in a site block.
const knownDirectiveAsSite = "but it is a known directive; directives must appear in a site block"

// adaptDocSnippet adapts a snippet as `caddy adapt` would; a fragment (a
// handle block, a lone webhook_guard or log directive) is wrapped in a site
// block first.
func adaptDocSnippet(text string) (wrapped bool, warnings []caddyconfig.Warning, err error) {
	adapter := caddyconfig.GetAdapter("caddyfile")
	_, warnings, err = adapter.Adapt([]byte(text), nil)
	if err != nil && strings.Contains(err.Error(), knownDirectiveAsSite) {
		wrapped = true
		site := "http://localhost:8080 {\n" + text + "}\n"
		_, warnings, err = adapter.Adapt([]byte(site), nil)
	}
	return wrapped, warnings, err
}

// TestDocsCaddyfileSnippetsAdapt adapts every ```caddyfile block of the README
// and docs/, and Caddyfile.example, in process with the Caddyfile adapter (no
// Caddy binary), so a documented snippet that stops adapting fails the fast
// tier. A snippet's own formatting is checked with caddy fmt's rules.
func TestDocsCaddyfileSnippetsAdapt(t *testing.T) {
	snippets := docSnippets(t)
	if len(snippets) < 10 {
		t.Fatalf("found only %d Caddyfile snippets in %v and %v: is the fence still ```caddyfile?", len(snippets), docPages, docExampleFiles)
	}
	for _, s := range snippets {
		t.Run(s.where, func(t *testing.T) {
			// No {env.*} is set: a snippet must adapt without its secrets, as
			// `caddy adapt` does in CI and image builds.
			wrapped, warnings, err := adaptDocSnippet(s.text)
			if err != nil {
				t.Fatalf("%s: this Caddyfile snippet does not adapt (wrapped in a site block: %v): %v\n%s", s.where, wrapped, err, s.text)
			}
			for _, w := range warnings {
				if strings.Contains(w.Message, "input is not formatted") {
					continue // the snippet itself is checked below, not its wrapping
				}
				t.Errorf("%s: adapting warns: %s", s.where, w.String())
			}
			if w, different := caddyfile.FormattingDifference(s.where, []byte(s.text)); different {
				t.Errorf("%s: not formatted as caddy fmt would: %s", s.where, w.String())
			}
		})
	}
}

// TestDocsSnippetTestFailsOnABrokenSnippet keeps the test above honest: a
// misspelt option, a fragment with an unknown directive and a missing brace
// all fail to adapt.
func TestDocsSnippetTestFailsOnABrokenSnippet(t *testing.T) {
	for _, broken := range []string{
		"webhook_guard ivy {\n\tsekret {env.DOCS_TEST_SECRET}\n}\n",
		"handle /hooks/ivy {\n\twebhook_gaurd ivy {\n\t\tsecret x\n\t}\n}\n",
		"webhook_guard ivy {\n\tsecret {env.DOCS_TEST_SECRET}\n",
		"webhook_guard ivy {\n\tstore memory { max_events 10; lease 30s }\n\tsecret {env.DOCS_TEST_SECRET}\n}\n",
	} {
		if _, _, err := adaptDocSnippet(broken); err == nil {
			t.Errorf("adapted without error:\n%s", broken)
		}
	}
	if wrapped, _, err := adaptDocSnippet("webhook_guard ivy {\n\tsecret {env.DOCS_TEST_SECRET}\n}\n"); err != nil || !wrapped {
		t.Errorf("a lone directive: wrapped %v, err %v", wrapped, err)
	}
}

// TestDocsReferenceCoversOptions fails when the code has a Caddyfile
// subdirective or a JSON field that docs/reference.md does not name (in
// backquotes), so the reference cannot fall behind the code. Subdirectives
// are read from the source: the string cases of every unmarshal* /
// UnmarshalCaddyfile function in the module. JSON fields are read by
// reflection from every registered module in the webhook_guard namespaces.
func TestDocsReferenceCoversOptions(t *testing.T) {
	ref, err := os.ReadFile(docReference)
	if err != nil {
		t.Fatal(err)
	}
	// A JSON field must appear on its own in backquotes (`max_events`); a
	// subdirective may also start a backquoted form (`max_body <size>`).
	named := func(name string) bool { return strings.Contains(string(ref), "`"+name+"`") }
	documented := func(name string) bool {
		return named(name) || regexp.MustCompile("`"+regexp.QuoteMeta(name)+`[ \[<{]`).Match(ref)
	}

	subdirectives := caddyfileSubdirectives(t)
	for _, must := range []string{"secret", "store", "lease", "header"} {
		if !slices.Contains(subdirectives, must) {
			t.Fatalf("the source scan found no %q among %v: has the parser moved?", must, subdirectives)
		}
	}
	for _, name := range subdirectives {
		if !documented(name) {
			t.Errorf("Caddyfile subdirective or value %q (in the parser) is not documented in %s", name, docReference)
		}
	}

	fields := map[string][]string{} // JSON field → module IDs
	for _, id := range caddy.Modules() {
		if !strings.HasPrefix(id, "http.handlers.webhook_guard") && !strings.HasPrefix(id, "admin.api.webhook_guard") {
			continue
		}
		info, err := caddy.GetModule(id)
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range jsonFields(reflect.TypeOf(info.New())) {
			fields[f] = append(fields[f], id)
		}
	}
	for _, must := range []string{"provider", "secrets", "store"} {
		if _, ok := fields[must]; !ok {
			t.Fatalf("no JSON field %q found in the webhook_guard modules: %v", must, fields)
		}
	}
	for f, ids := range fields {
		if !named(f) {
			t.Errorf("JSON field %q of %v is not documented in %s", f, ids, docReference)
		}
	}

	for _, file := range []string{docReference, docProviders} {
		page, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range verify.Names() {
			if !strings.Contains(string(page), "`"+p+"`") {
				t.Errorf("provider %q is not documented in %s", p, file)
			}
		}
	}
}

// jsonFields lists the JSON names of a config struct's exported fields,
// nested structs included.
func jsonFields(typ reflect.Type) []string {
	var out []string
	seen := map[reflect.Type]bool{}
	var walk func(reflect.Type)
	walk = func(typ reflect.Type) {
		for typ.Kind() == reflect.Pointer || typ.Kind() == reflect.Slice || typ.Kind() == reflect.Map || typ.Kind() == reflect.Array {
			typ = typ.Elem()
		}
		if typ.Kind() != reflect.Struct || seen[typ] || typ.PkgPath() == "time" {
			return
		}
		seen[typ] = true
		for i := range typ.NumField() {
			f := typ.Field(i)
			if !f.IsExported() {
				continue
			}
			name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
			if name == "-" {
				continue
			}
			if name == "" && f.Anonymous {
				walk(f.Type)
				continue
			}
			if name == "" {
				name = f.Name
			}
			out = append(out, name)
			walk(f.Type)
		}
	}
	walk(typ)
	return out
}

// caddyfileSubdirectives reads the module's Caddyfile parsers from source:
// in every function whose name starts with unmarshal or Unmarshal, the
// string literals of switch cases (`case "secret":`) and of comparisons in
// them (`case opt == "lease":`).
func caddyfileSubdirectives(t *testing.T) []string {
	t.Helper()
	var names []string
	fset := token.NewFileSet()
	err := filepath.WalkDir(".", func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			switch d.Name() {
			case "testdata", "node_modules", "bench", "testkit":
				return filepath.SkipDir
			}
			if strings.HasPrefix(d.Name(), ".") && path != "." {
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
		for _, decl := range f.Decls {
			fn, ok := decl.(*ast.FuncDecl)
			if !ok || fn.Body == nil || !strings.HasPrefix(strings.ToLower(fn.Name.Name), "unmarshal") {
				continue
			}
			ast.Inspect(fn.Body, func(n ast.Node) bool {
				cc, ok := n.(*ast.CaseClause)
				if !ok {
					return true
				}
				for _, e := range cc.List {
					ast.Inspect(e, func(n ast.Node) bool {
						if lit, ok := n.(*ast.BasicLit); ok && lit.Kind == token.STRING {
							if s, err := strconv.Unquote(lit.Value); err == nil && s != "" {
								names = append(names, s)
							}
						}
						return true
					})
				}
				return true
			})
		}
		return nil
	})
	if err != nil && !errors.Is(err, fs.SkipDir) {
		t.Fatal(err)
	}
	slices.Sort(names)
	return slices.Compact(names)
}

// markdownLink is an inline Markdown link; the target ends at the first
// space or closing parenthesis.
var markdownLink = regexp.MustCompile(`\]\(([^)\s]+)\)`)

// TestDocsLinksResolve checks every relative link of the README and docs/:
// the file exists and, with a #fragment into a Markdown page, the page has a
// heading with that GitHub anchor.
func TestDocsLinksResolve(t *testing.T) {
	var files []string
	for _, pattern := range append([]string{"*.md"}, docPages...) {
		m, err := filepath.Glob(pattern)
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, m...)
	}
	slices.Sort(files)
	files = slices.Compact(files)
	checked := 0
	for _, file := range files {
		data, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range markdownLink.FindAllStringSubmatch(string(data), -1) {
			target := m[1]
			if strings.Contains(target, "://") || strings.HasPrefix(target, "mailto:") {
				continue
			}
			path, fragment, _ := strings.Cut(target, "#")
			dest := file
			if path != "" {
				dest = filepath.Join(filepath.Dir(file), path)
			}
			if _, err := os.Stat(dest); err != nil {
				t.Errorf("%s: link %q: %v", file, target, err)
				continue
			}
			checked++
			if fragment == "" || !strings.HasSuffix(dest, ".md") {
				continue
			}
			if !slices.Contains(markdownAnchors(t, dest), fragment) {
				t.Errorf("%s: link %q: %s has no heading with anchor #%s", file, target, dest, fragment)
			}
		}
	}
	if checked < 10 {
		t.Fatalf("checked only %d links", checked)
	}
}

// markdownAnchors lists the anchors GitHub gives a page's headings: lower
// case, punctuation but - and _ removed, spaces turned into -.
func markdownAnchors(t *testing.T, file string) []string {
	t.Helper()
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	var anchors []string
	inFence := false
	for _, line := range strings.Split(string(data), "\n") {
		if strings.HasPrefix(strings.TrimSpace(line), "```") {
			inFence = !inFence
		}
		if inFence || !strings.HasPrefix(line, "#") {
			continue
		}
		heading := strings.ToLower(strings.TrimSpace(strings.TrimLeft(line, "#")))
		var b strings.Builder
		for _, r := range heading {
			switch {
			case r == ' ':
				b.WriteRune('-')
			case r == '-' || r == '_' || unicode.IsLetter(r) || unicode.IsDigit(r):
				b.WriteRune(r)
			}
		}
		anchors = append(anchors, b.String())
	}
	return anchors
}
