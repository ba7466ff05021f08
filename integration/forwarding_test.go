package integration

import (
	"bufio"
	"bytes"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hookguard/caddy-webhook-guard/internal/testkit"
)

// rawDeadline bounds every read and write of the raw client of TestExpectContinueOnce.
const rawDeadline = 10 * time.Second

// TestTrailersNotForwarded sends a signed ivy event chunked, with a trailer X-Ivy-Signature: 00
// that nobody verified: the upstream receives the verified body with its Content-Length (so no
// trailer can follow it), and only the verified signature header.
func TestTrailersNotForwarded(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs Caddy")
	}
	up := testkit.StartUpstream(t)
	secret := newSecret(t, "ivy_trailer_")
	g := startGuard(t, globalOptions()+site(
		guardRoute("/ivy", "ivy {\n secret {env.IVY_SECRET}\n allow_ips 127.0.0.1\n}", up.Addr(), ""),
	), map[string]string{"IVY_SECRET": secret})

	id := newID(t, "evt_trailer_")
	body := eventBody(id, "payment.succeeded")
	sig := signIvy(secret, body).Get("X-Ivy-Signature")
	req, err := http.NewRequest(http.MethodPost, g.URL("/ivy"), io.NopCloser(bytes.NewReader(body)))
	if err != nil {
		t.Fatal(err)
	}
	req.ContentLength = -1 // chunked, so that a trailer can follow
	req.Header.Set("X-Ivy-Signature", sig)
	req.Trailer = http.Header{"X-Ivy-Signature": {"00"}, "X-Extra-Trailer": {"unverified"}}
	before := up.Count()
	resp, err := loopbackClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	answer, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	g.record(testkit.Response{Status: resp.StatusCode, Header: resp.Header, Body: answer})
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d, want 200 (body %q)", resp.StatusCode, answer)
	}
	rec := expectForwarded(t, "chunked with a trailer", up, before, body)
	if got := rec.Header.Values("X-Ivy-Signature"); len(got) != 1 || got[0] != sig {
		t.Errorf("the upstream received X-Ivy-Signature %q, want only the verified one", got)
	}
	for _, name := range []string{"Trailer", "X-Extra-Trailer"} {
		if v := rec.Header.Values(name); len(v) > 0 {
			t.Errorf("the upstream received %s: %q", name, v)
		}
	}
}

// TestExpectContinueOnce sends a signed ivy event with Expect: 100-continue over a raw TCP
// connection and counts the interim answers: exactly one 100 Continue (Caddy's, when the guard
// reads the body), then the upstream's 200; the upstream receives no Expect header.
func TestExpectContinueOnce(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs Caddy")
	}
	up := testkit.StartUpstream(t)
	secret := newSecret(t, "ivy_expect_")
	g := startGuard(t, globalOptions()+site(
		guardRoute("/ivy", "ivy {\n secret {env.IVY_SECRET}\n allow_ips 127.0.0.1\n}", up.Addr(), ""),
	), map[string]string{"IVY_SECRET": secret})

	id := newID(t, "evt_expect_")
	body := eventBody(id, "payment.succeeded")
	conn, err := net.DialTimeout("tcp", "127.0.0.1:"+strconv.Itoa(g.HTTPPort()), rawDeadline)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if err := conn.SetDeadline(time.Now().Add(rawDeadline)); err != nil {
		t.Fatal(err)
	}
	head := "POST /ivy HTTP/1.1\r\n" +
		"Host: 127.0.0.1:" + strconv.Itoa(g.HTTPPort()) + "\r\n" +
		"Content-Type: application/json\r\n" +
		"Content-Length: " + strconv.Itoa(len(body)) + "\r\n" +
		"X-Ivy-Signature: " + signIvy(secret, body).Get("X-Ivy-Signature") + "\r\n" +
		"Expect: 100-continue\r\n" +
		"Connection: close\r\n\r\n"
	if _, err := io.WriteString(conn, head); err != nil {
		t.Fatal(err)
	}
	// A client waits for the 100 Continue before sending the body.
	br := bufio.NewReader(conn)
	first, err := readResponseHead(br)
	if err != nil {
		t.Fatalf("reading the interim answer: %v", err)
	}
	if !strings.HasPrefix(first, "HTTP/1.1 100 ") {
		t.Fatalf("first answer %q, want 100 Continue", firstLine(first))
	}
	before := up.Count()
	if _, err := conn.Write(body); err != nil {
		t.Fatal(err)
	}
	rest, err := io.ReadAll(br) // Connection: close: everything up to the end
	if err != nil {
		t.Fatalf("reading the answer: %v", err)
	}
	all := first + string(rest)
	g.record(testkit.Response{Body: []byte(all)})
	if n := strings.Count(all, " 100 Continue\r\n"); n != 1 {
		t.Errorf("the client received %d 100 Continue answers, want 1:\n%s", n, all)
	}
	if !strings.HasPrefix(string(rest), "HTTP/1.1 200 ") {
		t.Errorf("final answer %q, want 200", firstLine(string(rest)))
	}
	rec := expectForwarded(t, "Expect: 100-continue", up, before, body)
	if v := rec.Header.Values("Expect"); len(v) > 0 {
		t.Errorf("the upstream received Expect: %q", v)
	}
}

// readResponseHead reads one response's status line and headers, up to the empty line.
func readResponseHead(br *bufio.Reader) (string, error) {
	var b strings.Builder
	for {
		line, err := br.ReadString('\n')
		b.WriteString(line)
		if err != nil {
			return b.String(), err
		}
		if line == "\r\n" {
			return b.String(), nil
		}
	}
}

// firstLine is text's first line.
func firstLine(text string) string {
	line, _, _ := strings.Cut(text, "\r\n")
	return line
}
