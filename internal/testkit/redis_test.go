package testkit

import (
	"strings"
	"testing"
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
