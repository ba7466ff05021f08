package webhookguard

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

// The alert rules and the Grafana dashboard shipped in docs/. Their metric
// names and label values are checked against the code with the rest of the
// docs (TestDocsMetricNamesAreRegistered); these tests check their form,
// and their PromQL with promtool when it is installed (Debian's prometheus
// package; .ci/run installs it).

const (
	alertRulesFile = "docs/alerts.yml"
	alertTestsFile = "testdata/alerts/alerts_test.yml"
	dashboardFile  = "docs/grafana-dashboard.json"
)

// promtool returns the path of promtool, or "" when it is not installed.
func promtool(t *testing.T, file string) string {
	t.Helper()
	path, err := exec.LookPath("promtool")
	if err != nil {
		t.Logf("promtool not on PATH (apt-get install prometheus): %s is parsed, not checked by promtool", file)
		return ""
	}
	return path
}

// runPromtool runs promtool with args and fails the test with its output if
// it fails.
func runPromtool(t *testing.T, bin string, args ...string) {
	t.Helper()
	out, err := exec.Command(bin, args...).CombinedOutput()
	if err != nil {
		t.Errorf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// alertRules is the part of a Prometheus rule file the checks read.
type alertRules struct {
	Groups []struct {
		Name  string `yaml:"name"`
		Rules []struct {
			Alert       string            `yaml:"alert"`
			Record      string            `yaml:"record"`
			Expr        string            `yaml:"expr"`
			For         string            `yaml:"for"`
			Labels      map[string]string `yaml:"labels"`
			Annotations map[string]string `yaml:"annotations"`
		} `yaml:"rules"`
	} `yaml:"groups"`
}

// TestAlertRules: docs/alerts.yml is a valid rule file (promtool check
// rules) whose alerts fire as testdata/alerts/alerts_test.yml expects
// (promtool test rules); without promtool, it parses as YAML into alerting
// rules with balanced expressions. Either way each alert has a severity, a
// summary and a unique name, and the alerts the docs promise are there.
func TestAlertRules(t *testing.T) {
	if bin := promtool(t, alertRulesFile); bin != "" {
		runPromtool(t, bin, "check", "rules", alertRulesFile)
		runPromtool(t, bin, "test", "rules", alertTestsFile)
	}
	data, err := os.ReadFile(alertRulesFile)
	if err != nil {
		t.Fatal(err)
	}
	var rules alertRules
	dec := yaml.NewDecoder(strings.NewReader(string(data)))
	dec.KnownFields(true)
	if err := dec.Decode(&rules); err != nil {
		t.Fatalf("%s: %v", alertRulesFile, err)
	}
	var names []string
	for _, g := range rules.Groups {
		for _, r := range g.Rules {
			if r.Alert == "" || r.Record != "" {
				t.Errorf("group %s: a rule that is not an alert: %+v", g.Name, r)
				continue
			}
			names = append(names, r.Alert)
			if sev := r.Labels["severity"]; sev != "warning" && sev != "critical" {
				t.Errorf("%s: severity %q, want warning or critical", r.Alert, sev)
			}
			if r.Annotations["summary"] == "" || r.Annotations["description"] == "" {
				t.Errorf("%s: no summary or description", r.Alert)
			}
			if err := balanced(r.Expr); err != "" {
				t.Errorf("%s: expr %s: %s", r.Alert, r.Expr, err)
			}
			if !strings.Contains(r.Expr, "caddy_webhook_guard_") {
				t.Errorf("%s: expr uses none of the module's metrics: %s", r.Alert, r.Expr)
			}
			if rb, ok := r.Annotations["runbook"]; ok {
				page, anchor, _ := strings.Cut(rb, "#")
				if !strings.HasPrefix(page, "docs/") || !slices.Contains(markdownAnchors(t, page), anchor) {
					t.Errorf("%s: runbook %q: no heading #%s in %s", r.Alert, rb, anchor, page)
				}
			}
		}
	}
	for _, must := range []string{
		"WebhookGuardDeadEvents", "WebhookGuardSpoolBacklog", "WebhookGuardStoreFull", "WebhookGuardStoreUnavailable",
		"WebhookGuardInvalidSignatures", "WebhookGuardSpoolDeliveryFailing", "WebhookGuardUpstreamFailing",
		"WebhookGuardCommitRetriesLost", "WebhookGuardSpoolPaused",
	} {
		if !slices.Contains(names, must) {
			t.Errorf("no alert %s in %s", must, alertRulesFile)
		}
	}
	sorted := slices.Clone(names)
	slices.Sort(sorted)
	if len(slices.Compact(sorted)) != len(names) {
		t.Errorf("alert names not unique: %v", names)
	}

	// Every alert of the file has a unit test.
	tests, err := os.ReadFile(alertTestsFile)
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range names {
		if !strings.Contains(string(tests), "alertname: "+name+"\n") {
			t.Errorf("alert %s has no test in %s", name, alertTestsFile)
		}
	}
}

// balanced reports unbalanced brackets or quotes in a PromQL expression.
func balanced(expr string) string {
	var stack []rune
	pairs := map[rune]rune{')': '(', ']': '[', '}': '{'}
	inQuote := false
	for _, r := range expr {
		switch {
		case r == '"':
			inQuote = !inQuote
		case inQuote:
		case r == '(' || r == '[' || r == '{':
			stack = append(stack, r)
		case pairs[r] != 0:
			if len(stack) == 0 || stack[len(stack)-1] != pairs[r] {
				return "unbalanced " + string(r)
			}
			stack = stack[:len(stack)-1]
		}
	}
	if inQuote || len(stack) > 0 {
		return "unclosed quote or bracket"
	}
	return ""
}

// grafanaDashboard is the part of a dashboard the checks read.
type grafanaDashboard struct {
	Title      string `json:"title"`
	UID        string `json:"uid"`
	Templating struct {
		List []struct {
			Name string `json:"name"`
			Type string `json:"type"`
		} `json:"list"`
	} `json:"templating"`
	Panels []grafanaPanel `json:"panels"`
}

type grafanaPanel struct {
	ID         int    `json:"id"`
	Type       string `json:"type"`
	Title      string `json:"title"`
	Datasource *struct {
		Type string `json:"type"`
		UID  string `json:"uid"`
	} `json:"datasource"`
	GridPos struct{ H, W, X, Y int } `json:"gridPos"`
	Targets []struct {
		RefID string `json:"refId"`
		Expr  string `json:"expr"`
	} `json:"targets"`
}

// grafanaVariable is a dashboard variable in a query: $name or ${name}.
var grafanaVariable = regexp.MustCompile(`\$\{?(\w+)\}?`)

// TestGrafanaDashboard: docs/grafana-dashboard.json is valid JSON with a
// title and uid, panels with unique ids that fit the 24-column grid, each
// querying the Prometheus datasource variable; every variable a query uses
// is defined or Grafana's own; with promtool, every query (variables
// replaced) is valid PromQL.
func TestGrafanaDashboard(t *testing.T) {
	data, err := os.ReadFile(dashboardFile)
	if err != nil {
		t.Fatal(err)
	}
	if !json.Valid(data) {
		t.Fatalf("%s is not valid JSON", dashboardFile)
	}
	var d grafanaDashboard
	if err := json.Unmarshal(data, &d); err != nil {
		t.Fatal(err)
	}
	if d.Title == "" || d.UID == "" {
		t.Errorf("title %q, uid %q", d.Title, d.UID)
	}
	defined := map[string]bool{"__rate_interval": true, "__interval": true, "__range": true}
	for _, v := range d.Templating.List {
		defined[v.Name] = true
	}
	if !defined["datasource"] {
		t.Error("no datasource variable: the dashboard would be tied to one Prometheus")
	}
	ids := map[int]bool{}
	var exprs []string
	for _, p := range d.Panels {
		if ids[p.ID] {
			t.Errorf("panel id %d twice", p.ID)
		}
		ids[p.ID] = true
		if g := p.GridPos; g.W < 1 || g.X < 0 || g.X+g.W > 24 || g.H < 1 {
			t.Errorf("panel %q: gridPos %+v outside the 24-column grid", p.Title, g)
		}
		if p.Type == "row" {
			continue
		}
		if p.Datasource == nil || p.Datasource.UID != "${datasource}" || len(p.Targets) == 0 {
			t.Errorf("panel %q: datasource %+v, %d queries", p.Title, p.Datasource, len(p.Targets))
		}
		for _, q := range p.Targets {
			if q.RefID == "" || !strings.Contains(q.Expr, "caddy_webhook_guard_") {
				t.Errorf("panel %q: query %q (refId %q) uses none of the module's metrics", p.Title, q.Expr, q.RefID)
			}
			if err := balanced(q.Expr); err != "" {
				t.Errorf("panel %q: %s: %s", p.Title, q.Expr, err)
			}
			for _, m := range grafanaVariable.FindAllStringSubmatch(q.Expr, -1) {
				if !defined[m[1]] {
					t.Errorf("panel %q: variable $%s is not defined", p.Title, m[1])
				}
			}
			exprs = append(exprs, q.Expr)
		}
	}
	if len(exprs) < 10 {
		t.Fatalf("only %d queries", len(exprs))
	}

	bin := promtool(t, dashboardFile)
	if bin == "" {
		return
	}
	// The queries as recording rules, for promtool's PromQL parser.
	var b strings.Builder
	b.WriteString("groups:\n  - name: dashboard\n    rules:\n")
	for i, e := range exprs {
		e = strings.NewReplacer("$__rate_interval", "5m", "$__interval", "1m", "$__range", "6h").Replace(e)
		e = grafanaVariable.ReplaceAllString(e, ".*")
		quoted, _ := json.Marshal(e)
		b.WriteString("      - record: dashboard:query_" + string(rune('a'+i/26)) + string(rune('a'+i%26)) + "\n        expr: " + string(quoted) + "\n")
	}
	file := filepath.Join(t.TempDir(), "dashboard-rules.yml")
	if err := os.WriteFile(file, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	runPromtool(t, bin, "check", "rules", file)
}
