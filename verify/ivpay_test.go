package verify

import "testing"

// The replay id an operator's forget computes from an IVPAY event id is the
// one the guard keyed the event on, for a callback with a payment_id (the
// event id "<payment_id>/<status>") and without one (a body digest).
func TestIVPAYReplayIDOfEventID(t *testing.T) {
	scheme, _ := Lookup("ivpay")
	for _, body := range []string{
		`{"payment_id":"pay_1","status":"PAID"}`,
		`{"payment_id":"a/b","status":"PAID"}`,
		`{"payment_id":12345,"status":"EXPIRED"}`,
		`{"status":"PAID"}`,
	} {
		ev := ivpayEvent([]byte(body))
		got, ok := scheme.ReplayIDOf(ev.ID)
		if !ok || got != ev.ReplayID {
			t.Errorf("%s: ReplayIDOf(%q) = %q %v, want %q", body, ev.ID, got, ok, ev.ReplayID)
		}
	}
	for _, name := range []string{"github", "shopify"} {
		s, _ := Lookup(name)
		if _, ok := s.ReplayIDOf("0f3b2a1c-1111-4222-8333-944455556666"); ok {
			t.Errorf("%s: a replay id from an unsigned delivery id", name)
		}
	}
	for _, name := range []string{"ivy", "stripe", "standard", "slack"} {
		s, _ := Lookup(name)
		if got, ok := s.ReplayIDOf("evt_1"); !ok || got != "evt_1" {
			t.Errorf("%s: ReplayIDOf(evt_1) = %q %v", name, got, ok)
		}
	}
}
