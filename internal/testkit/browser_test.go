package testkit

import (
	"net"
	"net/http"
	"strconv"
	"testing"

	"github.com/chromedp/chromedp"
)

// TestBrowserReadsAPageAndMapsNames: the browser loads a page from a loopback server, runs its
// script, and reaches it by a name that host rules map to 127.0.0.1 (the Host is that name).
func TestBrowserReadsAPageAndMapsNames(t *testing.T) {
	hosts := make(chan string, 4)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hosts <- r.Host
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		_, _ = w.Write([]byte(`<!doctype html><title>kit</title><p id="p">static</p><script>document.getElementById("p").textContent = "scripted";</script>`))
	})}
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(func() { _ = srv.Close() })
	port := strconv.Itoa(l.Addr().(*net.TCPAddr).Port)

	b := StartBrowser(t, "MAP kit.test 127.0.0.1")
	resp, err := chromedp.RunResponse(b.Context(), chromedp.Navigate("http://kit.test:"+port+"/"))
	if err != nil || resp.Status != http.StatusOK {
		t.Fatalf("navigate: %v %v", resp, err)
	}
	if got := <-hosts; got != "kit.test:"+port {
		t.Errorf("Host %q, want kit.test:%s", got, port)
	}
	if text := BrowserRun(t, b, chromedp.Evaluate[string](`document.getElementById("p").textContent`)); text != "scripted" {
		t.Errorf("text %q: the page's script did not run", text)
	}
	if png := BrowserRun(t, b, chromedp.FullScreenshot(100)); len(png) < 100 || string(png[1:4]) != "PNG" {
		t.Errorf("screenshot of %d bytes is not a PNG", len(png))
	}
}
