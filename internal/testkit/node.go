package testkit

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"
)

// SkipNodeEnv names the environment variable that, set to "1", makes the tests that need
// Node.js skip instead of failing when node or npm is not installed.
const SkipNodeEnv = "WEBHOOK_GUARD_SKIP_NODE"

// The libraries NodeSign and NodeVerify drive, each the provider's official npm package
// (versions pinned in internal/testkit/node/package.json).
const (
	// LibStandardWebhooks is the "standardwebhooks" package: webhook-id, webhook-timestamp,
	// webhook-signature.
	LibStandardWebhooks = "standardwebhooks"
	// LibSvix is the "svix" package: svix-id, svix-timestamp, svix-signature.
	LibSvix = "svix"
	// LibStripe is the "stripe" package: Stripe-Signature.
	LibStripe = "stripe"
	// LibGitHub is the "@octokit/webhooks-methods" package: X-Hub-Signature-256 (and
	// X-GitHub-Delivery, set by the kit to the event id).
	LibGitHub = "github"
)

// Bounds of the Node.js helpers.
var (
	// NpmTimeout bounds `npm ci`.
	NpmTimeout = 5 * time.Minute
	// NodeTimeout bounds one run of sign.js.
	NodeTimeout = 30 * time.Second
)

var (
	nodeOnce sync.Once
	nodeErr  error
)

// NodeDir returns the folder holding sign.js, package.json and package-lock.json.
func NodeDir() (string, error) {
	if _, file, _, ok := runtime.Caller(0); ok {
		dir := filepath.Join(filepath.Dir(file), "node")
		if _, err := os.Stat(filepath.Join(dir, "sign.js")); err == nil {
			return dir, nil
		}
	}
	root, err := ModuleRoot()
	if err != nil {
		return "", err
	}
	dir := filepath.Join(root, "internal", "testkit", "node")
	if _, err := os.Stat(filepath.Join(dir, "sign.js")); err != nil {
		return "", fmt.Errorf("no sign.js in %s: %w", dir, err)
	}
	return dir, nil
}

// EnsureNodeModules makes sure the pinned npm packages are installed: once per test process,
// when internal/testkit/node/node_modules is missing or does not match package-lock.json, it
// runs `npm ci --no-audit --no-fund` there (under a file lock, so that test processes running
// side by side do not install at the same time). Without `node` or `npm` on the PATH the test
// fails with "install nodejs and npm", unless WEBHOOK_GUARD_SKIP_NODE=1 is in the environment:
// the test is then skipped instead. With node and npm installed the tests run whatever that
// variable says. Under `go test -short` the test is skipped (NodeSign and NodeVerify call this
// first, so they skip too).
func EnsureNodeModules(t testing.TB) {
	t.Helper()
	SkipIfShort(t, "runs Node.js")
	for _, tool := range []string{"node", "npm"} {
		if _, err := exec.LookPath(tool); err != nil {
			if os.Getenv(SkipNodeEnv) == "1" {
				t.Skipf("%s not found on the PATH and %s=1: skipping a test that needs Node.js", tool, SkipNodeEnv)
			}
			t.Fatalf("%s not found on the PATH: install nodejs and npm (or set %s=1 to skip the tests that need them)", tool, SkipNodeEnv)
		}
	}
	nodeOnce.Do(func() { nodeErr = installNodeModules() })
	if nodeErr != nil {
		t.Fatalf("installing the npm packages: %v", nodeErr)
	}
}

func installNodeModules() error {
	dir, err := NodeDir()
	if err != nil {
		return err
	}
	if fresh, _ := nodeModulesFresh(dir); fresh {
		return nil
	}
	sum := sha256.Sum256([]byte(dir))
	unlock, err := lockFile(filepath.Join(os.TempDir(), "webhook-guard-npm-"+hex.EncodeToString(sum[:8])+".lock"))
	if err != nil {
		return fmt.Errorf("locking the npm install: %w", err)
	}
	defer unlock()
	if fresh, _ := nodeModulesFresh(dir); fresh { // another process installed meanwhile
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), NpmTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "npm", "ci", "--no-audit", "--no-fund")
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		if ctx.Err() != nil {
			err = fmt.Errorf("%w (after %v)", ctx.Err(), NpmTimeout)
		}
		return fmt.Errorf("npm ci in %s: %v\n%s", dir, err, out)
	}
	if fresh, why := nodeModulesFresh(dir); !fresh {
		return fmt.Errorf("npm ci in %s succeeded but node_modules still does not match package-lock.json: %s", dir, why)
	}
	return nil
}

// lockPackage is the part of a package-lock.json entry that identifies what is installed.
type lockPackage struct {
	Version   string `json:"version"`
	Integrity string `json:"integrity"`
	Optional  bool   `json:"optional"`
	Dev       bool   `json:"dev"`
}

// nodeModulesFresh reports whether node_modules holds every package of package-lock.json at
// the locked version, by comparing with the record npm keeps in node_modules/.package-lock.json.
func nodeModulesFresh(dir string) (bool, string) {
	read := func(path string) (map[string]lockPackage, error) {
		b, err := os.ReadFile(path)
		if err != nil {
			return nil, err
		}
		var lock struct {
			Packages map[string]lockPackage `json:"packages"`
		}
		if err := json.Unmarshal(b, &lock); err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		return lock.Packages, nil
	}
	want, err := read(filepath.Join(dir, "package-lock.json"))
	if err != nil {
		return false, err.Error()
	}
	have, err := read(filepath.Join(dir, "node_modules", ".package-lock.json"))
	if err != nil {
		return false, err.Error()
	}
	for name, w := range want {
		if name == "" || w.Optional {
			continue
		}
		h, ok := have[name]
		if !ok {
			return false, name + " is not installed"
		}
		if h.Version != w.Version || h.Integrity != w.Integrity {
			return false, fmt.Sprintf("%s is %s, locked at %s", name, h.Version, w.Version)
		}
		if _, err := os.Stat(filepath.Join(dir, filepath.FromSlash(name), "package.json")); err != nil {
			return false, name + " is missing from node_modules"
		}
	}
	return true, ""
}

// nodeRequest is what sign.js reads on stdin.
type nodeRequest struct {
	Op        string            `json:"op"`
	Lib       string            `json:"lib"`
	Secret    string            `json:"secret"`
	Body      []byte            `json:"body"` // base64 in JSON: the exact bytes pass through
	ID        string            `json:"id,omitempty"`
	Timestamp int64             `json:"timestamp,omitempty"`
	Headers   map[string]string `json:"headers,omitempty"`
	Now       int64             `json:"now,omitempty"`
}

// nodeAnswer is what sign.js writes on stdout.
type nodeAnswer struct {
	Headers map[string]string `json:"headers"`
	OK      bool              `json:"ok"`
	Error   string            `json:"error"`
}

// runNode runs sign.js on req. Its error is about the run itself (a malformed request, a body
// the library cannot take, a crash), never a verification failure, and never contains the
// secret.
func runNode(req nodeRequest) (nodeAnswer, error) {
	dir, err := NodeDir()
	if err != nil {
		return nodeAnswer{}, err
	}
	in, err := json.Marshal(req)
	if err != nil {
		return nodeAnswer{}, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), NodeTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "node", "sign.js")
	cmd.Dir = dir
	cmd.Stdin = bytes.NewReader(in)
	var stdout, stderr bytes.Buffer
	cmd.Stdout = &stdout
	cmd.Stderr = &stderr
	cmd.WaitDelay = 2 * time.Second
	if err := cmd.Run(); err != nil {
		if ctx.Err() != nil {
			err = fmt.Errorf("%w (after %v)", ctx.Err(), NodeTimeout)
		}
		return nodeAnswer{}, fmt.Errorf("node sign.js (%s %s): %v: %s", req.Op, req.Lib, err, scrubSecret(strings.TrimSpace(stderr.String()), req.Secret))
	}
	var ans nodeAnswer
	if err := json.Unmarshal(stdout.Bytes(), &ans); err != nil {
		return nodeAnswer{}, fmt.Errorf("node sign.js (%s %s): unreadable answer: %v", req.Op, req.Lib, err)
	}
	ans.Error = scrubSecret(ans.Error, req.Secret)
	return ans, nil
}

// scrubSecret removes the secret, and the key part of a "whsec_" secret, from text.
func scrubSecret(text, secret string) string {
	for _, s := range []string{secret, strings.TrimPrefix(secret, "whsec_")} {
		if len(s) >= 4 {
			text = strings.ReplaceAll(text, s, "[secret]")
		}
	}
	return text
}

// NodeSign signs body with lib's official npm package and returns the headers a provider
// would send: for LibStandardWebhooks and LibSvix, id and ts (unix seconds) go into the
// *-id and *-timestamp headers and the library's Webhook.sign(id, new Date(ts*1000), body)
// gives the *-signature header; for LibStripe, stripe.webhooks.generateTestHeaderString with
// the payload, secret and ts gives Stripe-Signature (id is unused: Stripe's event id is the
// body's "id"); for LibGitHub, @octokit/webhooks-methods sign(secret, body) gives
// X-Hub-Signature-256 and id becomes X-GitHub-Delivery. ts 0 means now.
//
// These libraries take the payload as a string: body must be valid UTF-8 (any characters,
// "é€😀" included, pass through exactly), otherwise the test fails rather than sign other bytes.
// NodeSign calls EnsureNodeModules first.
func NodeSign(t testing.TB, lib, secret string, body []byte, id string, ts int64) http.Header {
	t.Helper()
	EnsureNodeModules(t)
	if ts == 0 {
		ts = time.Now().Unix()
	}
	ans, err := runNode(nodeRequest{Op: "sign", Lib: lib, Secret: secret, Body: nonNil(body), ID: id, Timestamp: ts})
	if err != nil {
		t.Fatalf("NodeSign: %v", err)
	}
	if len(ans.Headers) == 0 {
		t.Fatalf("NodeSign (%s): the library produced no headers", lib)
	}
	h := make(http.Header, len(ans.Headers))
	for k, v := range ans.Headers {
		h.Set(k, v)
	}
	return h
}

// NodeVerify checks the signature headers h over body with lib's official npm package, as a
// receiver using that library would: Webhook.verify for LibStandardWebhooks and LibSvix (5
// minutes of tolerance, both ways), stripe.webhooks.constructEvent with the default tolerance
// of 300 s for LibStripe (the verification step alone when the body is not JSON), and
// @octokit/webhooks-methods verify for LibGitHub. now is the verifier's clock in unix
// seconds (0: the real clock); LibGitHub has no timestamp. It returns nil when the library
// accepts the request and its reason otherwise; a failure to run the library fails the test.
// Header names are matched case-insensitively; repeated values are joined with ", " as
// Node.js's HTTP server joins them. NodeVerify calls EnsureNodeModules first.
func NodeVerify(t testing.TB, lib, secret string, h http.Header, body []byte, now int64) error {
	t.Helper()
	EnsureNodeModules(t)
	headers := make(map[string]string, len(h))
	for k, vs := range h {
		name := strings.ToLower(k)
		for _, v := range vs {
			if prev, ok := headers[name]; ok {
				headers[name] = prev + ", " + v
			} else {
				headers[name] = v
			}
		}
	}
	ans, err := runNode(nodeRequest{Op: "verify", Lib: lib, Secret: secret, Body: nonNil(body), Headers: headers, Now: now})
	if err != nil {
		t.Fatalf("NodeVerify: %v", err)
	}
	if ans.OK {
		return nil
	}
	if ans.Error == "" {
		ans.Error = "rejected"
	}
	return errors.New(lib + ": " + ans.Error)
}

// nonNil makes a nil body an empty one, so that it is sent as "" rather than null.
func nonNil(b []byte) []byte {
	if b == nil {
		return []byte{}
	}
	return b
}
