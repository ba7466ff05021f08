package testkit

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// CaddyBinaryEnv names the environment variable that, when set to the path of a Caddy binary,
// makes CaddyBinary use that binary instead of building ./cmd/caddy.
const CaddyBinaryEnv = "WEBHOOK_GUARD_CADDY"

// Bounds of the Caddy helpers. They are variables so that a slow machine can raise them from a
// TestMain; tests must not lower them to make a check pass faster.
var (
	// BuildTimeout bounds `go build ./cmd/caddy`.
	BuildTimeout = 10 * time.Minute
	// StartTimeout bounds how long StartCaddy waits for Caddy to become ready.
	StartTimeout = 20 * time.Second
	// StopTimeout bounds how long Stop waits after SIGINT before it kills Caddy.
	StopTimeout = 5 * time.Second
	// LogWaitTimeout bounds WaitLog and WaitLogSince.
	LogWaitTimeout = 10 * time.Second
	// AdminTimeout bounds one request to Caddy's admin endpoint (a reload included).
	AdminTimeout = 30 * time.Second
	// CommandTimeout bounds one `caddy adapt` or `caddy validate` run.
	CommandTimeout = time.Minute
)

// The placeholders that StartCaddy, Reload, Adapt and Validate replace in a Caddyfile.
const (
	// AdminPlaceholder is replaced by the admin listener address, "127.0.0.1:<port>".
	AdminPlaceholder = "{ADMIN}"
	// HTTPPlaceholder is replaced by the HTTP port number, "<port>".
	HTTPPlaceholder = "{HTTP}"
)

// The fixed values Adapt and Validate substitute for the placeholders: nothing listens while a
// Caddyfile is only adapted, and fixed values keep the adapted JSON comparable between runs.
const (
	// AdaptAdminAddr replaces AdminPlaceholder in Adapt and Validate.
	AdaptAdminAddr = "127.0.0.1:2999"
	// AdaptHTTPPort replaces HTTPPlaceholder in Adapt and Validate.
	AdaptHTTPPort = 9080
)

// tailLines is how many lines of Caddy's output a failure report shows.
const tailLines = 50

var (
	buildOnce sync.Once
	buildPath string
	buildErr  error
)

// buildDirPrefix starts the name of the temporary folders the Caddy binary is built into; the
// process id follows, so that folders left by finished test processes can be removed.
const buildDirPrefix = "webhook-guard-caddy-"

// CaddyBinary returns the path of a Caddy binary that includes this module. Unless the
// environment variable WEBHOOK_GUARD_CADDY names one, it builds ./cmd/caddy from the module
// root, once per test process, into a temporary folder under os.TempDir() that outlives the
// test (folders left by test processes that have ended are removed at the next build). A failed
// build fails the test with the compiler's output. Under `go test -short` it skips the test:
// every test that runs Caddy (StartCaddy, Adapt, Validate) goes through here, so the fast tier
// never builds or starts Caddy.
func CaddyBinary(t testing.TB) string {
	t.Helper()
	SkipIfShort(t, "builds and runs Caddy")
	if p := os.Getenv(CaddyBinaryEnv); p != "" {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatalf("%s: %v", CaddyBinaryEnv, err)
		}
		if fi.IsDir() || fi.Mode()&0o111 == 0 {
			t.Fatalf("%s=%s is not an executable file", CaddyBinaryEnv, p)
		}
		return p
	}
	buildOnce.Do(func() { buildPath, buildErr = buildCaddy() })
	if buildErr != nil {
		t.Fatalf("building Caddy: %v", buildErr)
	}
	return buildPath
}

func buildCaddy() (string, error) {
	root, err := ModuleRoot()
	if err != nil {
		return "", err
	}
	removeStaleBuilds()
	dir, err := os.MkdirTemp("", buildDirPrefix+strconv.Itoa(os.Getpid())+"-")
	if err != nil {
		return "", err
	}
	bin := filepath.Join(dir, "caddy")
	ctx, cancel := context.WithTimeout(context.Background(), BuildTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, "./cmd/caddy")
	cmd.Dir = root
	out, err := cmd.CombinedOutput()
	if err != nil {
		_ = os.RemoveAll(dir)
		if ctx.Err() != nil {
			err = fmt.Errorf("%w (after %v)", ctx.Err(), BuildTimeout)
		}
		return "", fmt.Errorf("go build ./cmd/caddy in %s: %v\n%s", root, err, out)
	}
	return bin, nil
}

// removeStaleBuilds deletes the build folders of test processes that no longer run.
func removeStaleBuilds() {
	tmp := os.TempDir()
	entries, err := os.ReadDir(tmp)
	if err != nil {
		return
	}
	for _, e := range entries {
		name := e.Name()
		if !e.IsDir() || !strings.HasPrefix(name, buildDirPrefix) {
			continue
		}
		pidText, _, ok := strings.Cut(strings.TrimPrefix(name, buildDirPrefix), "-")
		pid, err := strconv.Atoi(pidText)
		if !ok || err != nil || pid <= 0 || pid == os.Getpid() || processAlive(pid) {
			continue
		}
		_ = os.RemoveAll(filepath.Join(tmp, name))
	}
}

// ModuleRoot returns the folder holding go.mod, found by walking up from the working
// directory (a test's working directory is its package folder).
func ModuleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if fi, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil && !fi.IsDir() {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no go.mod in the working directory or above it")
		}
		dir = parent
	}
}

// FreePort returns a TCP port on 127.0.0.1 that was free when it was picked.
func FreePort(t testing.TB) int {
	t.Helper()
	ports, err := freePorts(1)
	if err != nil {
		t.Fatalf("picking a free port: %v", err)
	}
	return ports[0]
}

// pickPorts picks Caddy's ports; a test swaps it to see StartCaddy recover from a taken port.
var pickPorts = freePorts

// freePorts picks n distinct free loopback ports, holding each until all are picked.
func freePorts(n int) ([]int, error) {
	ports := make([]int, 0, n)
	for i := 0; i < n; i++ {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		defer l.Close()
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// GlobalOptions returns a Caddyfile global options block for tests: the admin endpoint on
// {ADMIN}, HTTP on port {HTTP} bound to 127.0.0.1 (default_bind), no automatic HTTPS, no
// autosaved config, and JSON logs on stderr at Caddy's default level (INFO). extra is placed
// inside the block as it is; write `debug` in it for DEBUG logs (not a second `log` block).
// Sites then listen with `:{HTTP} { ... }`.
func GlobalOptions(extra string) string {
	block := "{\n" +
		"\tadmin " + AdminPlaceholder + "\n" +
		"\thttp_port " + HTTPPlaceholder + "\n" +
		"\tauto_https off\n" +
		"\tpersist_config off\n" +
		"\tdefault_bind 127.0.0.1\n" +
		"\tlog {\n\t\toutput stderr\n\t\tformat json\n\t}\n"
	if extra = strings.TrimSpace(extra); extra != "" {
		block += "\t" + extra + "\n"
	}
	return block + "}\n"
}

// LogEntry is one JSON log line Caddy printed.
type LogEntry struct {
	// Level is the "level" field: "debug", "info", "warn", "error", ...
	Level string
	// Logger is the "logger" field, e.g. "http.handlers.webhook_guard".
	Logger string
	// Msg is the "msg" field.
	Msg string
	// Fields holds every other field of the line ("ts" included). Treat it as read-only.
	Fields map[string]any
	// Raw is the line as printed.
	Raw string
}

// Field returns the named field as a string: strings as they are, other values formatted with
// fmt ("" when the field is absent).
func (e LogEntry) Field(name string) string {
	v, ok := e.Fields[name]
	if !ok || v == nil {
		return ""
	}
	if s, ok := v.(string); ok {
		return s
	}
	return fmt.Sprint(v)
}

// Caddy is a running Caddy subprocess started by StartCaddy.
type Caddy struct {
	cmd       *exec.Cmd
	adminAddr string
	httpPort  int
	admin     *http.Client

	exited  chan struct{} // closed once the process has exited and its output is read
	waitErr error         // set before exited is closed

	mu        sync.Mutex
	text      bytes.Buffer // everything printed, stdout and stderr
	lines     []string
	entries   []LogEntry
	changed   chan struct{} // closed and replaced whenever a line arrives or the process exits
	tailShown bool          // the output tail was already put in a failure message

	stopOnce sync.Once
	dir      string // Caddy's working folder, with its data directory in data/
}

// StartCaddy writes caddyfile to a temporary folder, with {ADMIN} and {HTTP} replaced by free
// loopback ports it picks, and runs `caddy run --config <file> --adapter caddyfile` with the
// binary from CaddyBinary. env adds "NAME=value" entries to the inherited environment (for
// {env.NAME} secrets); Caddy's data and config folders are redirected into the test's
// temporary folder. It returns once the admin endpoint answers GET /config/ (which Caddy
// serves only after the configuration is running) and, when the Caddyfile uses {HTTP} for a
// site, the HTTP port accepts connections. It fails the test, with Caddy's output, if Caddy
// exits or is not ready within StartTimeout. Caddy is stopped when the test ends; if the test
// failed, the last lines of its output are logged.
func StartCaddy(t testing.TB, caddyfile string, env ...string) *Caddy {
	t.Helper()
	return StartCaddyIn(t, t.TempDir(), caddyfile, env...)
}

// StartCaddyIn is StartCaddy with Caddy's folders (its data directory: the replay ledger, the
// spool) in dir, so that a test can stop or kill Caddy and start it again on the same data.
func StartCaddyIn(t testing.TB, dir, caddyfile string, env ...string) *Caddy {
	t.Helper()
	bin := CaddyBinary(t)
	needHTTP := strings.Count(caddyfile, HTTPPlaceholder) > strings.Count(caddyfile, "http_port "+HTTPPlaceholder)
	for attempt := 1; ; attempt++ {
		c := launchCaddy(t, bin, dir, caddyfile, env)
		err := c.waitReady(needHTTP)
		if err == nil {
			return c
		}
		// Another process may have taken a picked port between the pick and Caddy's bind.
		if attempt < startAttempts && c.exitErr() != nil && strings.Contains(c.LogsText(), "address already in use") {
			c.mu.Lock()
			c.tailShown = true // this attempt's output says nothing about the test
			c.mu.Unlock()
			continue
		}
		c.failWithTail(t, "Caddy did not become ready: %v", err)
	}
}

// startAttempts bounds how often StartCaddy picks new ports when one was taken meanwhile.
const startAttempts = 3

// launchCaddy starts the Caddy process on newly picked ports and registers its stop.
func launchCaddy(t testing.TB, bin, dir, caddyfile string, env []string) *Caddy {
	t.Helper()
	ports, err := pickPorts(2)
	if err != nil {
		t.Fatalf("picking free ports for Caddy: %v", err)
	}
	c := &Caddy{
		adminAddr: "127.0.0.1:" + strconv.Itoa(ports[0]),
		httpPort:  ports[1],
		exited:    make(chan struct{}),
		changed:   make(chan struct{}),
		admin: &http.Client{
			Timeout:   AdminTimeout,
			Transport: &http.Transport{Proxy: nil, DisableKeepAlives: true},
		},
	}
	c.dir = dir
	file := filepath.Join(dir, "Caddyfile")
	if err := os.WriteFile(file, []byte(c.substitute(caddyfile)), 0o600); err != nil {
		t.Fatalf("writing the Caddyfile: %v", err)
	}

	c.cmd = exec.Command(bin, "run", "--config", file, "--adapter", "caddyfile")
	c.cmd.Dir = dir
	c.cmd.Env = caddyEnv(dir, env)
	c.cmd.Stdout = &lineWriter{c: c}
	c.cmd.Stderr = &lineWriter{c: c}
	c.cmd.WaitDelay = 2 * time.Second
	setProcAttrs(c.cmd)
	if err := c.cmd.Start(); err != nil {
		t.Fatalf("starting Caddy: %v", err)
	}
	go c.wait()
	// Registered after t.TempDir, so it runs before the folder is removed.
	t.Cleanup(func() {
		c.Stop()
		c.mu.Lock()
		shown := c.tailShown
		c.mu.Unlock()
		if t.Failed() && !shown {
			t.Logf("last lines of Caddy's output (admin %s, http %d):\n%s", c.adminAddr, c.httpPort, c.tail(tailLines))
		}
	})
	return c
}

// caddyEnv is the inherited environment, with Caddy's folders inside dir, then extra.
func caddyEnv(dir string, extra []string) []string {
	env := os.Environ()
	env = append(env,
		"XDG_DATA_HOME="+filepath.Join(dir, "data"),
		"XDG_CONFIG_HOME="+filepath.Join(dir, "config"),
	)
	return append(env, extra...)
}

func (c *Caddy) substitute(caddyfile string) string {
	return strings.NewReplacer(
		AdminPlaceholder, c.adminAddr,
		HTTPPlaceholder, strconv.Itoa(c.httpPort),
	).Replace(caddyfile)
}

func (c *Caddy) wait() {
	err := c.cmd.Wait()
	c.mu.Lock()
	c.waitErr = err
	close(c.exited)
	c.notifyLocked()
	c.mu.Unlock()
}

func (c *Caddy) waitReady(needHTTP bool) error {
	deadline := time.NewTimer(StartTimeout)
	defer deadline.Stop()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	probe := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{Proxy: nil, DisableKeepAlives: true}}
	var last error
	for {
		select {
		case <-c.exited:
			return fmt.Errorf("caddy exited: %v", c.exitErr())
		default:
		}
		last = c.probe(probe, needHTTP)
		if last == nil {
			return nil
		}
		select {
		case <-c.exited:
			return fmt.Errorf("caddy exited: %v", c.exitErr())
		case <-deadline.C:
			return fmt.Errorf("not ready within %v: %v", StartTimeout, last)
		case <-tick.C:
		}
	}
}

func (c *Caddy) probe(client *http.Client, needHTTP bool) error {
	resp, err := client.Get(c.AdminURL() + "/config/")
	if err != nil {
		return err
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("admin GET /config/: status %d", resp.StatusCode)
	}
	if needHTTP {
		conn, err := net.DialTimeout("tcp", "127.0.0.1:"+strconv.Itoa(c.httpPort), time.Second)
		if err != nil {
			return err
		}
		conn.Close()
	}
	return nil
}

func (c *Caddy) exitErr() error {
	select {
	case <-c.exited:
		c.mu.Lock()
		defer c.mu.Unlock()
		if c.waitErr == nil {
			return errors.New("exit status 0")
		}
		return c.waitErr
	default:
		return nil
	}
}

// failWithTail fails the test with the message and the tail of Caddy's output.
func (c *Caddy) failWithTail(t testing.TB, format string, args ...any) {
	t.Helper()
	c.mu.Lock()
	c.tailShown = true
	c.mu.Unlock()
	t.Fatalf("%s\n--- last lines of Caddy's output ---\n%s", fmt.Sprintf(format, args...), c.tail(tailLines))
}

// URL returns the URL of path on Caddy's HTTP port: http://127.0.0.1:<port><path>.
func (c *Caddy) URL(path string) string {
	if path != "" && !strings.HasPrefix(path, "/") {
		path = "/" + path
	}
	return "http://127.0.0.1:" + strconv.Itoa(c.httpPort) + path
}

// AdminURL returns the base URL of the admin endpoint, http://127.0.0.1:<port>, without a
// trailing slash.
func (c *Caddy) AdminURL() string { return "http://" + c.adminAddr }

// AdminAddr returns the admin endpoint's address, 127.0.0.1:<port>.
func (c *Caddy) AdminAddr() string { return c.adminAddr }

// HTTPPort returns the port number that replaced {HTTP}.
func (c *Caddy) HTTPPort() int { return c.httpPort }

// Exited returns a channel closed when the Caddy process has exited.
func (c *Caddy) Exited() <-chan struct{} { return c.exited }

// AdminGet sends GET path (such as "/config/" or "/metrics") to the admin endpoint and returns
// the status and body. A transport error fails the test.
func (c *Caddy) AdminGet(t testing.TB, path string) (int, []byte) {
	t.Helper()
	resp, err := c.admin.Get(c.AdminURL() + path)
	if err != nil {
		c.failWithTail(t, "admin GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("admin GET %s: reading the body: %v", path, err)
	}
	return resp.StatusCode, body
}

// Reload replaces Caddy's configuration with caddyfile (its {ADMIN} and {HTTP} replaced by the
// same ports as at start) by POSTing it to the admin endpoint's /load with Content-Type
// text/caddyfile. The load is synchronous: when Reload returns, the new configuration serves.
// A status other than 200 fails the test with the response body.
func (c *Caddy) Reload(t testing.TB, caddyfile string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, c.AdminURL()+"/load", strings.NewReader(c.substitute(caddyfile)))
	if err != nil {
		t.Fatalf("reload: %v", err)
	}
	req.Header.Set("Content-Type", "text/caddyfile")
	resp, err := c.admin.Do(req)
	if err != nil {
		c.failWithTail(t, "reload: POST /load: %v", err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		c.failWithTail(t, "reload: POST /load: status %d: %s", resp.StatusCode, bytes.TrimSpace(body))
	}
}

// Logs returns every JSON log line Caddy has printed so far, in order.
func (c *Caddy) Logs() []LogEntry {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]LogEntry(nil), c.entries...)
}

// LogMark returns the number of JSON log lines printed so far, for WaitLogSince.
func (c *Caddy) LogMark() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.entries)
}

// LogsText returns everything Caddy has printed so far on stdout and stderr, JSON or not, for
// asserting that a secret never appears.
func (c *Caddy) LogsText() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.text.String()
}

// WaitLog returns the first JSON log line, among those printed so far and those to come, for
// which pred is true. It fails the test if none is printed within LogWaitTimeout or if Caddy
// exits first. pred must not call the Caddy's methods.
func (c *Caddy) WaitLog(t testing.TB, pred func(LogEntry) bool) LogEntry {
	t.Helper()
	return c.WaitLogSince(t, 0, pred)
}

// WaitLogSince is WaitLog restricted to the lines after the first mark ones (see LogMark).
func (c *Caddy) WaitLogSince(t testing.TB, mark int, pred func(LogEntry) bool) LogEntry {
	t.Helper()
	deadline := time.NewTimer(LogWaitTimeout)
	defer deadline.Stop()
	next := mark
	for {
		c.mu.Lock()
		// Entries are only appended, never changed: the snapshot can be read unlocked.
		snapshot := c.entries[min(next, len(c.entries)):]
		changed := c.changed
		c.mu.Unlock()
		for _, e := range snapshot {
			if pred(e) {
				return e
			}
		}
		next += len(snapshot)
		select {
		case <-c.exited:
			// The output is complete once exited is closed: one last scan, then fail.
			c.mu.Lock()
			rest := c.entries[min(next, len(c.entries)):]
			c.mu.Unlock()
			for _, e := range rest {
				if pred(e) {
					return e
				}
			}
			c.failWithTail(t, "no matching Caddy log line: Caddy exited (%v)", c.exitErr())
		case <-deadline.C:
			c.failWithTail(t, "no matching Caddy log line within %v", LogWaitTimeout)
		case <-changed:
		}
	}
}

// Stop stops Caddy: SIGINT, then a kill if it has not exited within StopTimeout. It returns
// once the process has exited and its output is read. Calling it again does nothing.
func (c *Caddy) Stop() {
	c.stopOnce.Do(func() {
		select {
		case <-c.exited:
			return
		default:
		}
		_ = c.cmd.Process.Signal(os.Interrupt)
		timer := time.NewTimer(StopTimeout)
		defer timer.Stop()
		select {
		case <-c.exited:
			return
		case <-timer.C:
		}
		_ = c.cmd.Process.Kill()
		<-c.exited // Wait returns promptly after a kill (WaitDelay bounds the pipes).
	})
}

// Kill ends Caddy with SIGKILL, as a crash or an OOM kill would: no cleanup, no flush. It
// returns once the process has exited and its output is read.
func (c *Caddy) Kill() {
	c.stopOnce.Do(func() {
		select {
		case <-c.exited:
			return
		default:
		}
		_ = c.cmd.Process.Kill()
		<-c.exited
	})
}

// Signal sends sig to the Caddy process: SIGSTOP and SIGCONT to freeze and
// thaw it as a starved or suspended process would be.
func (c *Caddy) Signal(sig os.Signal) error {
	return c.cmd.Process.Signal(sig)
}

// Dir is the folder Caddy runs in; its data directory is Dir()/data. StartCaddyIn with the same
// folder starts a Caddy on the same data.
func (c *Caddy) Dir() string { return c.dir }

// DataDir is Caddy's data directory ($XDG_DATA_HOME/caddy).
func (c *Caddy) DataDir() string { return filepath.Join(c.dir, "data", "caddy") }

// tail returns the last n lines of Caddy's output.
func (c *Caddy) tail(n int) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	lines := c.lines
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	if len(lines) == 0 {
		return "(no output)"
	}
	return strings.Join(lines, "\n")
}

func (c *Caddy) notifyLocked() {
	close(c.changed)
	c.changed = make(chan struct{})
}

func (c *Caddy) addLineLocked(line string) {
	c.lines = append(c.lines, line)
	trimmed := strings.TrimSpace(line)
	if !strings.HasPrefix(trimmed, "{") {
		return
	}
	var m map[string]any
	if err := json.Unmarshal([]byte(trimmed), &m); err != nil {
		return
	}
	e := LogEntry{Raw: line, Fields: m}
	e.Level, _ = m["level"].(string)
	e.Logger, _ = m["logger"].(string)
	e.Msg, _ = m["msg"].(string)
	delete(m, "level")
	delete(m, "logger")
	delete(m, "msg")
	c.entries = append(c.entries, e)
}

// lineWriter receives one of Caddy's output streams and splits it into lines.
type lineWriter struct {
	c       *Caddy
	partial []byte
}

func (w *lineWriter) Write(p []byte) (int, error) {
	c := w.c
	c.mu.Lock()
	defer c.mu.Unlock()
	c.text.Write(p)
	w.partial = append(w.partial, p...)
	added := false
	for {
		i := bytes.IndexByte(w.partial, '\n')
		if i < 0 {
			break
		}
		c.addLineLocked(strings.TrimSuffix(string(w.partial[:i]), "\r"))
		w.partial = w.partial[i+1:]
		added = true
	}
	if len(w.partial) == 0 {
		w.partial = nil
	}
	if added {
		c.notifyLocked()
	}
	return len(p), nil
}

// Adapt runs `caddy adapt --config <file> --adapter caddyfile` on caddyfile, its {ADMIN} and
// {HTTP} replaced by AdaptAdminAddr and AdaptHTTPPort, with env added to the environment. It
// returns the adapted JSON on success, or "" and Caddy's error output on failure, for
// configuration-error tests. Adapting does not provision modules: use Validate for errors
// that only Provision or Validate find.
func Adapt(t testing.TB, caddyfile string, env ...string) (jsonConfig string, errOutput string) {
	t.Helper()
	stdout, stderr, err := runCaddyCommand(t, "adapt", caddyfile, env)
	if err != nil {
		return "", strings.TrimSpace(stderr + "\n" + stdout)
	}
	return stdout, ""
}

// Validate runs `caddy validate --config <file> --adapter caddyfile`, which adapts and also
// provisions and validates every module, on caddyfile (placeholders as for Adapt) with env
// added to the environment. It returns "" when the configuration is valid, else Caddy's error
// output.
func Validate(t testing.TB, caddyfile string, env ...string) string {
	t.Helper()
	stdout, stderr, err := runCaddyCommand(t, "validate", caddyfile, env)
	if err != nil {
		return strings.TrimSpace(stderr + "\n" + stdout)
	}
	return ""
}

// ValidateIn is Validate with Caddy's folders in dir (see StartCaddyIn): it provisions the
// configuration against that data directory, e.g. a ledger file another Caddy holds.
func ValidateIn(t testing.TB, dir, caddyfile string, env ...string) string {
	t.Helper()
	stdout, stderr, err := runCaddyCommandIn(t, "validate", dir, caddyfile, env)
	if err != nil {
		return strings.TrimSpace(stderr + "\n" + stdout)
	}
	return ""
}

// RunFailsIn runs `caddy run` on caddyfile with Caddy's folders in dir, and expects it to
// fail to load and exit: it returns Caddy's output. A Caddy that starts instead fails the test
// once CommandTimeout has passed.
func RunFailsIn(t testing.TB, dir, caddyfile string, env ...string) string {
	t.Helper()
	stdout, stderr, err := runCaddyCommandIn(t, "run", dir, caddyfile, env)
	if err == nil {
		t.Fatalf("caddy run exited without an error:\n%s", stderr)
	}
	return strings.TrimSpace(stderr + "\n" + stdout)
}

func runCaddyCommand(t testing.TB, sub, caddyfile string, env []string) (string, string, error) {
	t.Helper()
	return runCaddyCommandIn(t, sub, t.TempDir(), caddyfile, env)
}

func runCaddyCommandIn(t testing.TB, sub, dir, caddyfile string, env []string) (string, string, error) {
	t.Helper()
	bin := CaddyBinary(t)
	file := filepath.Join(dir, "Caddyfile."+sub)
	text := strings.NewReplacer(AdminPlaceholder, AdaptAdminAddr, HTTPPlaceholder, strconv.Itoa(AdaptHTTPPort)).Replace(caddyfile)
	if err := os.WriteFile(file, []byte(text), 0o600); err != nil {
		t.Fatalf("writing the Caddyfile: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), CommandTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, sub, "--config", file, "--adapter", "caddyfile")
	cmd.Dir = dir
	cmd.Env = caddyEnv(dir, env)
	var stdout, stderr bytes.Buffer
	cmd.Stdout = &stdout
	cmd.Stderr = &stderr
	cmd.WaitDelay = 2 * time.Second
	err := cmd.Run()
	if ctx.Err() != nil {
		t.Fatalf("caddy %s did not finish within %v:\n%s", sub, CommandTimeout, stderr.String())
	}
	var exitErr *exec.ExitError
	if err != nil && !errors.As(err, &exitErr) {
		t.Fatalf("running caddy %s: %v", sub, err)
	}
	return stdout.String(), stderr.String(), err
}
