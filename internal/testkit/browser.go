package testkit

import (
	"context"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// ChromiumEnv names the environment variable that, when set to the path of a Chromium (or
// Chrome) binary, makes StartBrowser use it instead of Debian's /usr/bin/chromium.
const ChromiumEnv = "WEBHOOK_GUARD_CHROMIUM"

// BrowserTimeout bounds one Browser.Do or BrowserRun (a navigation and its waits included).
var BrowserTimeout = 30 * time.Second

// Browser is a headless Chromium, started by StartBrowser, with one tab driven over the
// DevTools protocol (github.com/chromedp/chromedp, through a pipe: no debugging port).
type Browser struct {
	ctx context.Context // the tab's chromedp context
}

// chromiumPath finds the browser: ChromiumEnv, Debian's chromium, or one on the PATH.
func chromiumPath() string {
	if p := os.Getenv(ChromiumEnv); p != "" {
		return p
	}
	for _, name := range []string{"/usr/bin/chromium", "chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	return ""
}

// StartBrowser starts a headless Chromium with a fresh profile in the test's temporary
// folder, no sandbox, no GPU and nothing fetched in the background (this machine's network
// is closed), and opens a tab; both end with the test. hostRules, when given, are Chromium's
// --host-resolver-rules ("MAP evil.test 127.0.0.1, ..."): the names a test gives to loopback
// addresses, as DNS would (a DNS rebinding, another site). Under `go test -short` it skips the
// test; without a browser it skips it too, except in CI (CI=true), where it fails it.
func StartBrowser(t testing.TB, hostRules ...string) *Browser {
	t.Helper()
	SkipIfShort(t, "runs Chromium")
	path := chromiumPath()
	if path == "" {
		if os.Getenv("CI") == "true" {
			t.Fatalf("no Chromium found (apt-get install chromium, or set %s)", ChromiumEnv)
		}
		t.Skipf("no Chromium found (apt-get install chromium, or set %s)", ChromiumEnv)
	}
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(path),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-extensions", true),
		chromedp.Flag("disable-default-apps", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.Flag("disable-features", "Translate,OptimizationHints,MediaRouter"),
		chromedp.Flag("password-store", "basic"),
		chromedp.Flag("use-mock-keychain", true),
		chromedp.Flag("hide-scrollbars", true),
		chromedp.Flag("force-color-profile", "srgb"),
		chromedp.Flag("lang", "en-US"),
		chromedp.WindowSize(1280, 900),
	}
	if len(hostRules) > 0 {
		opts = append(opts, chromedp.Flag("host-resolver-rules", strings.Join(hostRules, ", ")))
	}
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelTab := chromedp.NewContext(allocCtx, chromedp.WithLogf(t.Logf))
	t.Cleanup(func() {
		cancelTab()
		cancelAlloc() // waits for the browser process to end
	})
	// The first run starts the browser and opens the tab, for as long as ctx lives: it must
	// get ctx itself, not a context with a deadline, which would end the browser with it.
	started := make(chan error, 1)
	go func() { started <- chromedp.Do(ctx) }()
	select {
	case err := <-started:
		if err != nil {
			t.Fatalf("starting %s: %v", path, err)
		}
	case <-time.After(BrowserTimeout):
		cancelTab()
		t.Fatalf("starting %s: no tab within %v", path, BrowserTimeout)
	}
	return &Browser{ctx: ctx}
}

// Context is the tab's chromedp context, for chromedp.Do and chromedp.Run (bound them).
func (b *Browser) Context() context.Context { return b.ctx }

// Do runs steps in the tab, in order, within BrowserTimeout; an error fails the test.
func (b *Browser) Do(t testing.TB, steps ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, BrowserTimeout)
	defer cancel()
	if err := chromedp.Do(ctx, steps...); err != nil {
		t.Fatalf("browser: %v", err)
	}
}

// BrowserRun runs one action in b's tab within BrowserTimeout and returns its value; an error
// fails the test.
func BrowserRun[T any](t testing.TB, b *Browser, a chromedp.Action[T]) T {
	t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, BrowserTimeout)
	defer cancel()
	v, err := chromedp.Run(ctx, a)
	if err != nil {
		t.Fatalf("browser: %v", err)
	}
	return v
}
