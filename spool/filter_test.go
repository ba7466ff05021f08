package spool

import "testing"

// TestFilterText: the console's search selects by event id, type or last
// error (any ASCII case) or by the record's id, and nothing else.
func TestFilterText(t *testing.T) {
	rec := &Record{ID: 42, Scope: "ivy", State: Dead, EventID: "evt_ABC123", EventType: "payment.Succeeded", LastError: "status 503"}
	for _, tc := range []struct {
		text string
		want bool
	}{
		{"evt_abc123", true},
		{"ABC", true},
		{"succeeded", true},
		{"status 5", true},
		{"42", true},
		{"4", false}, // a part of the id is not the id
		{"ivy", false},
		{"dead", false},
		{"evt_abc1234", false},
		{"", true},
	} {
		if got := (Filter{Text: tc.text}).Match(rec); got != tc.want {
			t.Errorf("Text %q: match %v, want %v", tc.text, got, tc.want)
		}
	}
	if (Filter{Text: "abc", State: Pending}).Match(rec) {
		t.Error("Text ignores the other fields of the filter")
	}
}
