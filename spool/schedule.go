package spool

import (
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Schedule is the delay before the attempt after the nth failed one: its nth
// entry, the last one repeated. Each delay gets ±20 % jitter, so that events
// refused together do not come back together.
type Schedule []time.Duration

// DefaultSchedule is the retry schedule when a spool names none:
// 5s 30s 2m 10m 30m 1h 2h, then every 2 hours.
var DefaultSchedule = Schedule{5 * time.Second, 30 * time.Second, 2 * time.Minute, 10 * time.Minute, 30 * time.Minute, time.Hour, 2 * time.Hour}

// jitterShare is the jitter's share of a delay.
const jitterShare = 0.2

// Check refuses an empty schedule and delays under a second.
func (s Schedule) Check() error {
	if len(s) == 0 {
		return fmt.Errorf("backoff: at least one delay")
	}
	for _, d := range s {
		if d < time.Second {
			return fmt.Errorf("backoff: delays must be at least 1s, got %v", d)
		}
	}
	return nil
}

// Delay is the delay before the attempt after the nth failed one (1-based),
// with jitter in [-1, 1] scaling it by ±20 %.
func (s Schedule) Delay(attempt int, jitter float64) time.Duration {
	if len(s) == 0 {
		s = DefaultSchedule
	}
	base := s[len(s)-1]
	if attempt >= 1 && attempt <= len(s) {
		base = s[attempt-1]
	}
	return base + time.Duration(float64(base)*jitterShare*max(-1, min(1, jitter)))
}

// MaxRetryAfter caps the Retry-After a backend may ask for.
const MaxRetryAfter = 24 * time.Hour

// ParseRetryAfter reads a Retry-After header value: delay-seconds or an
// HTTP date (RFC 9110 10.2.3), as a delay from now (0 for a date in the
// past), capped at MaxRetryAfter; ok false when v is empty or malformed.
func ParseRetryAfter(v string, now time.Time) (time.Duration, bool) {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0, false
	}
	if n, err := strconv.ParseUint(v, 10, 64); err == nil {
		if n > uint64(MaxRetryAfter/time.Second) {
			return MaxRetryAfter, true
		}
		return time.Duration(n) * time.Second, true
	}
	t, err := http.ParseTime(v)
	if err != nil {
		return 0, false
	}
	return min(max(t.Sub(now), 0), MaxRetryAfter), true
}

// Attempt is the result of one delivery attempt.
type Attempt struct {
	// Status is the backend's status, 0 when it did not answer.
	Status int
	// RetryAfter is the delay the backend asked for (Retry-After): the
	// next attempt is not before it, nor before the schedule's.
	RetryAfter time.Duration
	// Answer is the start of the backend's answer (at most MaxAnswer
	// bytes), kept in the error of a refused attempt.
	Answer string
	// Err is why there was no answer (connection, TLS, timeout), or why an
	// answer does not count as delivered.
	Err error
}

// MaxAnswer is how much of a backend's answer a failed attempt keeps.
const MaxAnswer = 512

// Delivered says the backend accepted the event (2xx).
func (a Attempt) Delivered() bool { return a.Err == nil && a.Status >= 200 && a.Status < 300 }

// Reason is why the attempt failed, for last_error: "status 503: <start of
// the answer>" or the error, at most 1 KiB.
func (a Attempt) Reason() string {
	var s string
	switch {
	case a.Err != nil && a.Status != 0:
		s = "status " + strconv.Itoa(a.Status) + ": " + a.Err.Error()
	case a.Err != nil:
		s = a.Err.Error()
	case a.Answer != "":
		s = "status " + strconv.Itoa(a.Status) + ": " + a.Answer
	default:
		s = "status " + strconv.Itoa(a.Status)
	}
	if len(s) > 2*MaxAnswer {
		s = s[:2*MaxAnswer]
	}
	return s
}
