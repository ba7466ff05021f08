package testkit

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// SkipRedisEnv is the environment variable that skips, rather than fails,
// the tests that need redis-server when it is set to 1.
const SkipRedisEnv = "WEBHOOK_GUARD_SKIP_REDIS"

// redisReadyTimeout bounds how long a starting redis-server may take to
// answer PING.
const redisReadyTimeout = 10 * time.Second

// redisStopTimeout bounds how long a stopping redis-server may take to exit
// after SIGTERM before it is killed.
const redisStopTimeout = 5 * time.Second

// RedisOptions configures a test redis-server.
type RedisOptions struct {
	// Password, when set, is required of clients (requirepass) and appears
	// in URL.
	Password string
	// Valkey runs valkey-server (Valkey 8: it has WAITAOF) instead of
	// redis-server (Debian 12's Redis 7.0: it has not).
	Valkey bool
	// AppendFsync, when set ("always", "everysec" or "no"), turns the
	// append-only file on with that fsync policy; by default persistence is
	// off (no append-only file, no snapshots).
	AppendFsync string
	// Args are extra redis-server arguments, such as "--maxmemory", "1mb".
	Args []string
}

// ValkeyBinary is the Valkey server StartRedisWith runs for
// RedisOptions.Valkey.
const ValkeyBinary = "valkey-server"

// redisBinary finds the server o asks for, or fails (or skips, with
// WEBHOOK_GUARD_SKIP_REDIS=1) t saying how to install it.
func redisBinary(t testing.TB, o RedisOptions) string {
	t.Helper()
	SkipIfShort(t, "starts redis-server")
	if os.Getenv(SkipRedisEnv) == "1" {
		t.Skipf("%s=1: skipping a test that needs redis-server", SkipRedisEnv)
	}
	name, install := "redis-server", "apt-get install -y redis-server"
	if o.Valkey {
		name, install = ValkeyBinary, "apt-get install -y -t bookworm-backports valkey-server (Debian 12: add the bookworm-backports suite)"
	}
	bin, err := exec.LookPath(name)
	if err != nil {
		t.Fatalf("%s is not installed (%v): run `%s` "+
			"(CI installs it), or set %s=1 to skip the Redis tests", name, err, install, SkipRedisEnv)
	}
	return bin
}

// RedisServer is a redis-server process started for one test: bound to
// 127.0.0.1 on a free port, with persistence off and its own data
// directory. It is killed when the test ends.
type RedisServer struct {
	// Addr is the server's host:port.
	Addr string
	// Password is the requirepass password, empty when none.
	Password string

	t    testing.TB
	bin  string
	dir  string
	args []string
	// sentinel: the process is a sentinel, whose configuration file
	// (written in dir, which it rewrites) comes first.
	sentinel string
	// cli is the command-line client of the same flavour (redis-cli or
	// valkey-cli).
	cli string

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{} // closed when cmd has exited
	log  *redisLog
}

// StartRedis starts a redis-server for t and waits until it answers PING.
// See StartRedisWith.
func StartRedis(t testing.TB) *RedisServer {
	t.Helper()
	return StartRedisWith(t, RedisOptions{})
}

// StartRedisWith starts a redis-server for t with o and waits until it
// answers PING; t.Cleanup stops it. If redis-server is not installed the test
// fails, saying how to install it; if the environment variable
// WEBHOOK_GUARD_SKIP_REDIS is 1 the test is skipped instead (whether or not
// redis-server is installed). Under `go test -short` the test is skipped.
func StartRedisWith(t testing.TB, o RedisOptions) *RedisServer {
	t.Helper()
	bin := redisBinary(t, o)
	s := &RedisServer{Password: o.Password, t: t, bin: bin, dir: t.TempDir(), cli: cliOf(o)}
	if o.AppendFsync != "" {
		s.args = append(s.args, "--appendonly", "yes", "--appendfsync", o.AppendFsync)
	}
	s.args = append(s.args, o.Args...)
	t.Cleanup(s.cleanup)

	// The port comes from the kernel and is released before redis-server
	// binds it, so another process may take it in between: try again then.
	var lastErr error
	for range 3 {
		port, err := redisFreePort()
		if err != nil {
			t.Fatalf("testkit: no free port for redis-server: %v", err)
		}
		s.Addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		if lastErr = s.start(); lastErr == nil {
			return s
		}
	}
	t.Fatalf("testkit: %v", lastErr)
	return nil
}

// URL is the redis:// URL of the server, database 0, with the password
// when there is one.
func (s *RedisServer) URL() string {
	u := url.URL{Scheme: "redis", Host: s.Addr, Path: "/0"}
	if s.Password != "" {
		u.User = url.UserPassword("", s.Password)
	}
	return u.String()
}

// Stop stops the server (SIGTERM, then SIGKILL if it has not exited in
// time) and waits for it to exit. Clients then see it as down. Stopping a
// stopped server does nothing. Call it from the test goroutine.
func (s *RedisServer) Stop() {
	s.t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.stopLocked(); err != nil {
		s.t.Fatalf("testkit: %v", err)
	}
}

// Kill ends the server with SIGKILL, as a crash would (no final fsync, no
// snapshot), and waits for it to exit. Call it from the test goroutine.
func (s *RedisServer) Kill() {
	s.t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil {
		return
	}
	cmd, done := s.cmd, s.done
	s.cmd, s.done = nil, nil
	_ = cmd.Process.Kill()
	select {
	case <-done:
	case <-time.After(redisStopTimeout):
		s.t.Fatalf("testkit: redis-server on %s (pid %d) did not exit after SIGKILL", s.Addr, cmd.Process.Pid)
	}
}

// Dir is the server's data directory (its append-only file, when
// AppendFsync is set).
func (s *RedisServer) Dir() string { return s.dir }

// Start starts a stopped server again on the same port with the same data
// directory, and waits until it answers PING. Without AppendFsync
// persistence is off, so it starts empty; with it, the server loads its
// append-only file. Call it from the test goroutine.
func (s *RedisServer) Start() {
	s.t.Helper()
	if err := s.start(); err != nil {
		s.t.Fatalf("testkit: %v", err)
	}
}

// start launches redis-server and waits for it to answer PING.
func (s *RedisServer) start() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd != nil {
		return fmt.Errorf("redis-server on %s is already running", s.Addr)
	}
	_, port, _ := net.SplitHostPort(s.Addr)
	var args []string
	if s.sentinel != "" {
		conf := filepath.Join(s.dir, "sentinel.conf")
		if _, err := os.Stat(conf); err != nil { // a restart keeps what the sentinel learnt
			if err := os.WriteFile(conf, []byte(s.sentinel), 0o600); err != nil {
				return err
			}
		}
		args = append(args, conf, "--sentinel")
	}
	args = append(args,
		"--port", port,
		"--bind", "127.0.0.1",
		"--dir", s.dir,
		"--daemonize", "no",
	)
	if s.sentinel == "" {
		args = append(args, "--save", "", "--appendonly", "no")
	}
	if s.Password != "" {
		args = append(args, "--requirepass", s.Password)
	}
	args = append(args, s.args...)
	cmd := exec.Command(s.bin, args...)
	cmd.Dir = s.dir
	s.log = &redisLog{}
	cmd.Stdout, cmd.Stderr = s.log, s.log
	setParentDeathSignal(cmd)
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("starting redis-server: %w", err)
	}
	done := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(done)
	}()
	s.cmd, s.done = cmd, done

	if err := redisWaitReady(s.Addr, s.Password, done); err != nil {
		_ = s.stopLocked()
		return fmt.Errorf("redis-server on %s did not become ready: %w\n%s", s.Addr, err, s.log.tail(2048))
	}
	return nil
}

// stopLocked stops the process; s.mu is held.
func (s *RedisServer) stopLocked() error {
	if s.cmd == nil {
		return nil
	}
	cmd, done := s.cmd, s.done
	s.cmd, s.done = nil, nil
	_ = cmd.Process.Signal(os.Interrupt)
	select {
	case <-done:
		return nil
	case <-time.After(redisStopTimeout):
	}
	_ = cmd.Process.Kill()
	select {
	case <-done:
		return nil
	case <-time.After(redisStopTimeout):
		return fmt.Errorf("redis-server on %s (pid %d) did not exit", s.Addr, cmd.Process.Pid)
	}
}

// cleanup stops the server when the test ends, and shows its log if the
// test failed.
func (s *RedisServer) cleanup() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.t.Failed() && s.log != nil {
		s.t.Logf("redis-server %s log (tail):\n%s", s.Addr, s.log.tail(4096))
	}
	if err := s.stopLocked(); err != nil {
		s.t.Errorf("testkit: %v", err)
	}
}

// redisFreePort asks the kernel for a free loopback TCP port.
func redisFreePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	port := l.Addr().(*net.TCPAddr).Port
	return port, l.Close()
}

// redisWaitReady polls the server with PING (after AUTH when password is
// set) until it answers PONG, the process exits, or redisReadyTimeout
// passes.
func redisWaitReady(addr, password string, exited <-chan struct{}) error {
	deadline := time.Now().Add(redisReadyTimeout)
	pause := 2 * time.Millisecond
	var lastErr error
	for time.Now().Before(deadline) {
		select {
		case <-exited:
			return errors.New("redis-server exited")
		default:
		}
		if lastErr = redisPing(addr, password); lastErr == nil {
			return nil
		}
		select {
		case <-exited:
			return errors.New("redis-server exited")
		case <-time.After(pause):
		}
		pause = min(2*pause, 100*time.Millisecond)
	}
	return fmt.Errorf("no PONG within %v: %v", redisReadyTimeout, lastErr)
}

// redisPing sends AUTH (when password is set) and PING over a new connection
// and expects +PONG.
func redisPing(addr, password string) error {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	if err := c.SetDeadline(time.Now().Add(time.Second)); err != nil {
		return err
	}
	var req bytes.Buffer
	if password != "" {
		redisWriteCommand(&req, "AUTH", password)
	}
	redisWriteCommand(&req, "PING")
	if _, err := c.Write(req.Bytes()); err != nil {
		return err
	}
	r := bufio.NewReader(c)
	if password != "" {
		if line, err := r.ReadString('\n'); err != nil {
			return err
		} else if !strings.HasPrefix(line, "+OK") {
			return fmt.Errorf("AUTH: %s", strings.TrimSpace(line))
		}
	}
	line, err := r.ReadString('\n')
	if err != nil {
		return err
	}
	if !strings.HasPrefix(line, "+PONG") {
		return fmt.Errorf("PING: %s", strings.TrimSpace(line))
	}
	return nil
}

// redisWriteCommand appends a command as a RESP array of bulk strings.
func redisWriteCommand(b *bytes.Buffer, args ...string) {
	fmt.Fprintf(b, "*%d\r\n", len(args))
	for _, a := range args {
		fmt.Fprintf(b, "$%d\r\n%s\r\n", len(a), a)
	}
}

// redisLog collects a process's output; it is written by the exec
// package's copying goroutines and read by the test.
type redisLog struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *redisLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

// tail returns the last n bytes written.
func (l *redisLog) tail(n int) string {
	l.mu.Lock()
	defer l.mu.Unlock()
	b := l.b.Bytes()
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}

// cliOf is the command-line client of the server o runs.
func cliOf(o RedisOptions) string {
	if o.Valkey {
		return "valkey-cli"
	}
	return "redis-cli"
}

// redisSetupTimeout bounds the setup of a cluster or a sentinel's view of
// its primary.
const redisSetupTimeout = 30 * time.Second

// CLI runs the server's command-line client (redis-cli or valkey-cli)
// against it with args and returns its output; an error fails the test.
func (s *RedisServer) CLI(args ...string) string {
	s.t.Helper()
	_, port, _ := net.SplitHostPort(s.Addr)
	out, err := runRedisCLI(s.cli, append([]string{"-h", "127.0.0.1", "-p", port}, args...)...)
	if err != nil {
		s.t.Fatalf("testkit: %s %s: %v\n%s", s.cli, strings.Join(args, " "), err, out)
	}
	return strings.TrimSpace(out)
}

// runRedisCLI runs a command-line client, bounded.
func runRedisCLI(cli string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), redisSetupTimeout)
	defer cancel()
	out, err := exec.CommandContext(ctx, cli, args...).CombinedOutput()
	return string(out), err
}

// StartSentinel starts a sentinel (the server binary with --sentinel, as
// redis-sentinel is) watching primary under masterName, with a quorum of
// one and a primary judged down after downAfter. t.Cleanup stops it.
func StartSentinel(t testing.TB, masterName string, primary *RedisServer, downAfter time.Duration, o RedisOptions) *RedisServer {
	t.Helper()
	bin := redisBinary(t, o)
	host, port, _ := net.SplitHostPort(primary.Addr)
	conf := fmt.Sprintf("sentinel monitor %s %s %s 1\n"+
		"sentinel down-after-milliseconds %s %d\n"+
		"sentinel failover-timeout %s 10000\n"+
		"sentinel parallel-syncs %s 1\n",
		masterName, host, port, masterName, downAfter.Milliseconds(), masterName, masterName)
	if primary.Password != "" {
		conf += fmt.Sprintf("sentinel auth-pass %s %s\n", masterName, primary.Password)
	}
	s := &RedisServer{Password: o.Password, t: t, bin: bin, dir: t.TempDir(), sentinel: conf, cli: cliOf(o)}
	if o.Password != "" {
		s.sentinel += "requirepass " + o.Password + "\n"
	}
	t.Cleanup(s.cleanup)
	var lastErr error
	for range 3 {
		p, err := redisFreePort()
		if err != nil {
			t.Fatalf("testkit: no free port for a sentinel: %v", err)
		}
		s.Addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(p))
		if lastErr = s.start(); lastErr == nil {
			return s
		}
	}
	t.Fatalf("testkit: %v", lastErr)
	return nil
}

// SentinelPrimary asks the sentinel where the primary of masterName is
// (SENTINEL GET-MASTER-ADDR-BY-NAME) and returns its host:port.
func (s *RedisServer) SentinelPrimary(masterName string) string {
	s.t.Helper()
	lines := strings.Fields(s.CLI("SENTINEL", "GET-MASTER-ADDR-BY-NAME", masterName))
	if len(lines) != 2 {
		s.t.Fatalf("testkit: sentinel %s: no primary for %s: %q", s.Addr, masterName, lines)
	}
	return net.JoinHostPort(lines[0], lines[1])
}

// WaitSentinelPrimary waits (bounded) until the sentinel names addr as the
// primary of masterName and sees at least replicas replicas of it.
func (s *RedisServer) WaitSentinelPrimary(masterName, addr string, replicas int) {
	s.t.Helper()
	deadline := time.Now().Add(redisSetupTimeout)
	for {
		if s.SentinelPrimary(masterName) == addr {
			n := 0
			for _, l := range strings.Split(s.CLI("SENTINEL", "REPLICAS", masterName), "\n") {
				if strings.TrimSpace(l) == "flags" {
					n++
				}
			}
			if n >= replicas {
				return
			}
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("testkit: sentinel %s does not name %s the primary of %s with %d replicas within %v", s.Addr, addr, masterName, replicas, redisSetupTimeout)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// WaitReplicaInSync waits (bounded) until the server, a replica, reports
// its link to the primary up.
func (s *RedisServer) WaitReplicaInSync() {
	s.t.Helper()
	deadline := time.Now().Add(redisSetupTimeout)
	for !strings.Contains(s.CLI("INFO", "replication"), "master_link_status:up") {
		if time.Now().After(deadline) {
			s.t.Fatalf("testkit: replica %s not in sync within %v", s.Addr, redisSetupTimeout)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// StartCluster starts n servers with cluster mode on, makes them one
// Redis Cluster of n primaries (the client's --cluster create) and waits
// until every node says the cluster is ok. t.Cleanup stops them.
func StartCluster(t testing.TB, n int, o RedisOptions) []*RedisServer {
	t.Helper()
	var nodes []*RedisServer
	var addrs []string
	for range n {
		no := o
		no.Args = append(append([]string(nil), o.Args...), "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf", "--cluster-node-timeout", "2000")
		srv := StartRedisWith(t, no)
		nodes = append(nodes, srv)
		addrs = append(addrs, srv.Addr)
	}
	args := append(append([]string{"--cluster", "create"}, addrs...), "--cluster-yes")
	if out, err := runRedisCLI(cliOf(o), args...); err != nil {
		t.Fatalf("testkit: %s %s: %v\n%s", cliOf(o), strings.Join(args, " "), err, out)
	}
	deadline := time.Now().Add(redisSetupTimeout)
	for _, node := range nodes {
		for !strings.Contains(node.CLI("CLUSTER", "INFO"), "cluster_state:ok") {
			if time.Now().After(deadline) {
				t.Fatalf("testkit: cluster node %s not ok within %v", node.Addr, redisSetupTimeout)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	return nodes
}
