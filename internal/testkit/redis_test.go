package testkit

import (
	"strings"
	"testing"
	"time"
)

func TestRedisServerStopStart(t *testing.T) {
	s := StartRedis(t)
	if !strings.HasPrefix(s.Addr, "127.0.0.1:") || s.URL() != "redis://"+s.Addr+"/0" {
		t.Fatalf("Addr %q URL %q", s.Addr, s.URL())
	}
	if err := redisPing(s.Addr, ""); err != nil {
		t.Fatalf("PING: %v", err)
	}
	addr := s.Addr
	s.Stop()
	s.Stop() // stopping twice is fine
	if err := redisPing(addr, ""); err == nil {
		t.Fatalf("PING answered after Stop")
	}
	s.Start()
	if s.Addr != addr {
		t.Fatalf("restarted on %s, want %s", s.Addr, addr)
	}
	if err := redisPing(s.Addr, ""); err != nil {
		t.Fatalf("PING after Start: %v", err)
	}
}

func TestRedisServerPassword(t *testing.T) {
	s := StartRedisWith(t, RedisOptions{Password: "p@ss:w/rd"})
	if err := redisPing(s.Addr, "p@ss:w/rd"); err != nil {
		t.Fatalf("PING with the password: %v", err)
	}
	if err := redisPing(s.Addr, ""); err == nil || !strings.Contains(err.Error(), "NOAUTH") {
		t.Fatalf("PING without the password: %v, want NOAUTH", err)
	}
	if want := "redis://:p%40ss%3Aw%2Frd@" + s.Addr + "/0"; s.URL() != want {
		t.Fatalf("URL %q, want %q", s.URL(), want)
	}
}

// A sentinel watches a primary with a replica and promotes the replica
// when the primary is killed.
func TestSentinelFailover(t *testing.T) {
	o := RedisOptions{Valkey: true, AppendFsync: "everysec"}
	primary := StartRedisWith(t, o)
	ro := o
	host, port, _ := strings.Cut(primary.Addr, ":")
	ro.Args = []string{"--replicaof", host, port}
	replica := StartRedisWith(t, ro)
	replica.WaitReplicaInSync()
	sentinel := StartSentinel(t, "mymaster", primary, 500*time.Millisecond, o)
	sentinel.WaitSentinelPrimary("mymaster", primary.Addr, 1)
	primary.Kill()
	sentinel.WaitSentinelPrimary("mymaster", replica.Addr, 0)
	if !strings.Contains(replica.CLI("INFO", "replication"), "role:master") {
		t.Fatal("the replica was not promoted")
	}
}

// Three nodes make one cluster, whose slots are all served.
func TestCluster(t *testing.T) {
	nodes := StartCluster(t, 3, RedisOptions{AppendFsync: "always"})
	if got := nodes[0].CLI("CLUSTER", "INFO"); !strings.Contains(got, "cluster_known_nodes:3") || !strings.Contains(got, "cluster_slots_ok:16384") {
		t.Fatalf("CLUSTER INFO:\n%s", got)
	}
}
