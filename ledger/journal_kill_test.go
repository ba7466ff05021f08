package ledger

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/hookguard/caddy-webhook-guard/dedupe"
	"github.com/hookguard/caddy-webhook-guard/dedupe/dedupetest"
	"github.com/hookguard/caddy-webhook-guard/spool"
)

// killChildEnv makes the test binary a process that commits ids and spools
// events into the ledger at path, printing each once acknowledged, and
// kills itself (SIGKILL) the n-th time it reaches the journal's crash point:
// its value is "path|point|n".
const killChildEnv = "LEDGER_TEST_KILL_CHILD"

func init() {
	if v := os.Getenv(killChildEnv); v != "" {
		runKillChild(v)
		os.Exit(3) // the child dies of SIGKILL, never here
	}
}

// runKillChild is the process TestJournalKillPoints kills.
func runKillChild(spec string) {
	parts := strings.Split(spec, "|")
	path, point := parts[0], parts[1]
	n, _ := strconv.ParseInt(parts[2], 10, 64)
	var hits atomic.Int64
	crashPoint = func(p string) {
		if p == point && hits.Add(1) == n {
			_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
			select {} // SIGKILL is not handled: this goroutine never runs on
		}
	}
	s, err := Open(Config{Path: path, CheckpointEvery: 5 * time.Millisecond, SegmentSize: 2 << 20})
	if err != nil {
		fmt.Fprintln(os.Stderr, "child:", err)
		os.Exit(2)
	}
	var mu sync.Mutex
	out := bufio.NewWriter(os.Stdout)
	ctx := context.Background()
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := 0; ; i++ {
				key := dedupe.Key("kill", "ivy", strconv.Itoa(g)+"_"+strconv.Itoa(i))
				line := "c " + key
				if i%3 == 0 {
					rec := &spool.Record{Scope: "kill", Provider: "ivy", EventID: key, ReceivedAt: time.Now(), Method: "POST", Body: []byte("body of " + key)}
					if _, err := s.Ingest(ctx, key, rec, time.Hour); err != nil {
						fmt.Fprintln(os.Stderr, "child:", err)
						os.Exit(2)
					}
					line = "s " + key + " " + strconv.FormatUint(rec.ID, 10)
				} else {
					c, err := s.Claim(ctx, key, time.Minute)
					if err == nil {
						err = s.Commit(ctx, c, time.Hour)
					}
					if err != nil {
						fmt.Fprintln(os.Stderr, "child:", err)
						os.Exit(2)
					}
				}
				mu.Lock()
				fmt.Fprintln(out, line)
				out.Flush()
				mu.Unlock()
			}
		})
	}
	wg.Wait()
}

// TestJournalKillPoints kills (SIGKILL) a process committing ids and
// spooling events at each point of the journal's write path — before and
// after the group's write, after its sync, inside a checkpoint's
// transaction and after its commit — at the 1st, 20th and 200th time it
// gets there. The ledger reopened holds every id and event acknowledged,
// passes bbolt's check, and opens again after a clean close.
func TestJournalKillPoints(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: skipping a test that runs and kills child processes")
	}
	for _, point := range []string{"before-write", "after-write", "after-sync", "checkpoint-before-commit", "checkpoint-after-commit"} {
		for _, n := range []int{1, 20, 200} {
			t.Run(point+"/"+strconv.Itoa(n), func(t *testing.T) {
				path := filepath.Join(t.TempDir(), "ledger.db")
				cmd := exec.Command(os.Args[0], "-test.run=^$")
				cmd.Env = append(os.Environ(), killChildEnv+"="+path+"|"+point+"|"+strconv.Itoa(n))
				var stderr bytes.Buffer
				cmd.Stderr = &stderr
				stdout, err := cmd.StdoutPipe()
				if err != nil {
					t.Fatal(err)
				}
				if err := cmd.Start(); err != nil {
					t.Fatal(err)
				}
				var acked []string
				lines := bufio.NewScanner(stdout)
				for lines.Scan() {
					acked = append(acked, lines.Text())
				}
				err = cmd.Wait()
				if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
					t.Fatalf("child did not die of SIGKILL at %s: %v; stderr: %s", point, err, stderr.String())
				}
				// The checks claim once the replay filter is built.
				built := make(chan *replayFilter, 1)
				s, err := Open(Config{Path: path, filterBuilt: built})
				if err != nil {
					t.Fatalf("reopen after SIGKILL at %s: %v", point, err)
				}
				<-built
				check := func(s *Ledger) {
					t.Helper()
					ctx := context.Background()
					for _, line := range acked {
						f := strings.Fields(line)
						dedupetest.MustClaim(t, s, f[1], time.Minute, dedupe.Delivered)
						if f[0] == "s" {
							seq, _ := strconv.ParseUint(f[2], 10, 64)
							rec, ok, err := s.Get(ctx, seq)
							if err != nil || !ok || string(rec.Body) != "body of "+f[1] {
								t.Fatalf("spooled %s (seq %d) after SIGKILL at %s: %v %v %q", f[1], seq, point, ok, err, rec.Body)
							}
						}
					}
				}
				check(s)
				if err := s.Close(); err != nil {
					t.Fatal(err)
				}
				checkLedger(t, path)
				if s, err = Open(Config{Path: path, filterBuilt: built}); err != nil {
					t.Fatalf("reopen after a clean close: %v", err)
				}
				<-built
				check(s)
				_ = s.Close()
				t.Logf("%d operations acknowledged before SIGKILL at %s #%d, all there after reopening", len(acked), point, n)
			})
		}
	}
}
