package spool

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"
)

// listStore is a Store that lists recs (any order) and does nothing else.
type listStore struct {
	Store
	recs  []Record
	err   error
	pages []Page // the pages asked
}

func (s *listStore) List(_ context.Context, f Filter, p Page) ([]Record, error) {
	s.pages = append(s.pages, p)
	if s.err != nil {
		return nil, s.err
	}
	recs := slices.SortedFunc(slices.Values(s.recs), func(x, y Record) int { return cmp.Compare(y.ID, x.ID) })
	var out []Record
	for _, r := range recs {
		if f.Match(&r) && (p.After == 0 || r.ID < p.After) && len(out) < p.Size() {
			out = append(out, r)
		}
	}
	return out, nil
}

var listBase = time.Date(2026, 11, 30, 22, 0, 0, 0, time.UTC)

// listSpool is a spool named name over a listStore holding one pending
// event per id, received at the given second after listBase.
func listSpool(name string, ids []uint64, seconds []int) (*Spool, *listStore) {
	st := &listStore{}
	for i, id := range ids {
		st.recs = append(st.recs, Record{ID: id, Scope: "s", EventID: fmt.Sprintf("%s/%d", name, id), State: Pending,
			ReceivedAt: listBase.Add(time.Duration(seconds[i]) * time.Second)})
	}
	return New(st, Options{Name: name}), st
}

// walk lists every page of spools at limit and returns the events in the
// order shown, failing on a page over limit or an error.
func walk(t *testing.T, spools []*Spool, limit int) []Listed {
	t.Helper()
	var all []Listed
	after := ""
	for n := 0; ; n++ {
		if n > 100 {
			t.Fatal("more than 100 pages")
		}
		l, err := ListAcross(context.Background(), spools, Filter{}, limit, after)
		if err != nil || len(l.Failed) > 0 {
			t.Fatalf("page %d (after %q): %v %v", n, after, err, l.Failed)
		}
		if len(l.Events) > limit {
			t.Fatalf("page %d: %d events, limit %d", n, len(l.Events), limit)
		}
		all = append(all, l.Events...)
		if l.Next == "" {
			return all
		}
		if len(l.Next) > MaxCursorLen {
			t.Fatalf("cursor of %d bytes", len(l.Next))
		}
		after = l.Next
	}
}

// TestListAcrossPages: two and three spools with interleaved received_at,
// colliding ids and ties, walked page by page at limits 1 to 4 and more
// than they hold: every event once, in order, no next at the end.
func TestListAcrossPages(t *testing.T) {
	a, _ := listSpool("ledger /a.db", []uint64{1, 2, 3, 4, 5, 6}, []int{1, 4, 4, 9, 12, 20})
	b, _ := listSpool("ledger /b.db", []uint64{1, 2, 3, 7}, []int{2, 4, 10, 12})
	c, _ := listSpool("redis r:6379 db 0 prefix p", []uint64{1, 2, 3, 4, 5}, []int{4, 5, 11, 12, 30})
	for _, spools := range [][]*Spool{{a, b}, {b, a}, {a, b, c}, {c, a, b}} {
		// The expected order: received_at, id, then the spools by name.
		var want []string
		var all []Listed
		for _, sp := range spools {
			for _, r := range sp.Store().(*listStore).recs {
				all = append(all, Listed{sp, r})
			}
		}
		slices.SortFunc(all, func(x, y Listed) int {
			return cmp.Or(y.ReceivedAt.Compare(x.ReceivedAt), cmp.Compare(y.ID, x.ID), strings.Compare(x.Spool.Name(), y.Spool.Name()))
		})
		for _, e := range all {
			want = append(want, e.EventID)
		}
		for _, limit := range []int{1, 2, 3, 4, 100} {
			var got []string
			for _, e := range walk(t, spools, limit) {
				got = append(got, e.EventID)
			}
			if !slices.Equal(got, want) {
				t.Errorf("%d spools, limit %d:\n got %v\nwant %v", len(spools), limit, got, want)
			}
		}
	}
}

// TestListAcrossNonMonotone: when a spool's ids do not follow its
// received_at (clocks of several instances on one Redis), every event is
// still listed once: a page takes a run of each spool's own order.
func TestListAcrossNonMonotone(t *testing.T) {
	a, _ := listSpool("a", []uint64{1, 2, 3, 4, 5}, []int{50, 10, 40, 20, 30})
	b, _ := listSpool("b", []uint64{1, 2, 3}, []int{35, 5, 45})
	for limit := 1; limit <= 4; limit++ {
		got := walk(t, []*Spool{a, b}, limit)
		seen := map[string]int{}
		for _, e := range got {
			seen[e.EventID]++
		}
		if len(got) != 8 || len(seen) != 8 {
			t.Errorf("limit %d: %d events listed, %d distinct, want 8", limit, len(got), len(seen))
		}
	}
}

// TestListAcrossOneSpool: with one spool too, the cursor names the spool
// and the filter, so a reload that replaced the store, or another filter,
// is refused rather than applied; a plain id, as an operator types it, is
// taken as after.
func TestListAcrossOneSpool(t *testing.T) {
	sp, st := listSpool("ledger /var/lib/x.db", []uint64{3, 5, 7}, []int{1, 2, 3})
	ctx := context.Background()
	l, err := ListAcross(ctx, []*Spool{sp}, Filter{}, 2, "")
	if err != nil || len(l.Events) != 2 || l.Events[0].ID != 7 || l.Events[1].ID != 5 || !strings.HasPrefix(l.Next, "c1.") || !strings.HasSuffix(l.Next, ".5") {
		t.Fatalf("first page: %+v %v", l, err)
	}
	next := l.Next
	l, err = ListAcross(ctx, []*Spool{sp}, Filter{}, 2, next)
	if err != nil || len(l.Events) != 1 || l.Events[0].ID != 3 || l.Next != "" {
		t.Fatalf("second page: %+v %v", l, err)
	}
	if l, err = ListAcross(ctx, []*Spool{sp}, Filter{}, 2, "5"); err != nil || len(l.Events) != 1 || l.Events[0].ID != 3 || l.Next != "" {
		t.Fatalf("after=5: %+v %v", l, err)
	}
	if want := []Page{{3, 0}, {3, 5}, {3, 5}}; !slices.Equal(st.pages, want) { // one more than a page: is there more?
		t.Errorf("pages asked %v, want %v", st.pages, want)
	}
	other, _ := listSpool("ledger /var/lib/y.db", []uint64{3, 5, 7}, []int{1, 2, 3})
	if _, err := ListAcross(ctx, []*Spool{other}, Filter{}, 2, next); !errors.Is(err, ErrSpoolsChanged) {
		t.Errorf("the next of another spool: %v, want ErrSpoolsChanged", err)
	}
	for _, f := range []Filter{{State: Dead}, {Scope: "s"}, {EventID: "e"}, {Text: "e"}} {
		if _, err := ListAcross(ctx, []*Spool{sp}, f, 2, next); !errors.Is(err, ErrSpoolsChanged) {
			t.Errorf("the next of no filter, with filter %+v: %v, want ErrSpoolsChanged", f, err)
		}
	}
	// A full page that ends the listing names no next (no empty page
	// after it).
	l, err = ListAcross(ctx, []*Spool{sp}, Filter{}, 3, "")
	if err != nil || len(l.Events) != 3 || l.Next != "" {
		t.Fatalf("limit 3: %+v %v", l, err)
	}
	// At the largest page the spool is asked for no more than it.
	if _, err = ListAcross(ctx, []*Spool{sp}, Filter{}, MaxLimit, ""); err != nil || st.pages[len(st.pages)-1] != (Page{MaxLimit, 0}) {
		t.Fatalf("limit %d: pages asked %v, %v", MaxLimit, st.pages, err)
	}
}

// TestListAcrossCursorOfOtherSpools: a cursor applies only to the spools it
// was made with, whatever their order; anything else is refused.
func TestListAcrossCursorOfOtherSpools(t *testing.T) {
	ctx := context.Background()
	a, _ := listSpool("ledger /a.db", []uint64{1, 2, 3}, []int{1, 2, 3})
	b, _ := listSpool("ledger /b.db", []uint64{1, 2, 3}, []int{4, 5, 6})
	c, _ := listSpool("redis 127.0.0.1:6379 db 0 prefix webhook_guard:", []uint64{1}, []int{7})
	b2, _ := listSpool("ledger /b2.db", []uint64{1, 2, 3}, []int{4, 5, 6})
	l, err := ListAcross(ctx, []*Spool{a, b}, Filter{}, 2, "")
	if err != nil || l.Next == "" || !strings.HasPrefix(l.Next, "c1.") {
		t.Fatalf("first page: %+v %v", l, err)
	}
	if _, err := ListAcross(ctx, []*Spool{b, a}, Filter{}, 2, l.Next); err != nil {
		t.Errorf("the same spools in another order: %v", err)
	}
	for name, spools := range map[string][]*Spool{
		"one more": {a, b, c}, "one fewer": {a}, "one replaced": {a, b2}, "the same spool twice": {a, a},
	} {
		if _, err := ListAcross(ctx, spools, Filter{}, 2, l.Next); !errors.Is(err, ErrSpoolsChanged) {
			t.Errorf("%s: %v, want ErrSpoolsChanged", name, err)
		}
	}
	// A plain id lists the events below it in every spool.
	if l, err := ListAcross(ctx, []*Spool{a, b}, Filter{}, 10, "3"); err != nil || len(l.Events) != 4 || l.Next != "" {
		t.Errorf("a plain id with two spools: %+v %v", l, err)
	}
	if _, err := ListAcross(ctx, nil, Filter{}, 2, l.Next); !errors.Is(err, ErrSpoolsChanged) {
		t.Errorf("no spool left: %v", err)
	}
	if l, err := ListAcross(ctx, nil, Filter{}, 2, "3"); err != nil || len(l.Events) != 0 || l.Next != "" {
		t.Errorf("no spool, after a plain id: %+v %v", l, err)
	}
	for _, bad := range []string{"x", "-1", "3.5", "c1", "c1.", "c1.0123456789abcdef", "c1.0123456789abcde.1.2", "c1.0123456789ABCDEF.1.2",
		"c1.0123456789abcdef.01.2", "c1.0123456789abcdef.1..2", "c1.0123456789abcdef.1.y", "c1.0123456789abcdef.+1.2",
		"c1.0123456789abcdef.18446744073709551616.1", "c2.0123456789abcdef.1.2", " c1.0123456789abcdef.1.2",
		"c1.0123456789abcdef" + strings.Repeat(".1", MaxCursorSpools+1), strings.Repeat("9", MaxCursorLen+1)} {
		for _, spools := range [][]*Spool{nil, {a}, {a, b}} {
			if _, err := ListAcross(ctx, spools, Filter{}, 2, bad); !errors.Is(err, ErrBadCursor) {
				t.Errorf("%d spools, after %.40q: %v, want ErrBadCursor", len(spools), bad, err)
			}
		}
	}
}

// TestListAcrossFailedSpool: a spool that cannot be read is left out of
// the page and resumed where it was by the next.
func TestListAcrossFailedSpool(t *testing.T) {
	ctx := context.Background()
	a, _ := listSpool("a", []uint64{1, 2, 3}, []int{1, 3, 5})
	b, bs := listSpool("b", []uint64{1, 2, 3}, []int{2, 4, 6})
	l, err := ListAcross(ctx, []*Spool{a, b}, Filter{}, 2, "")
	if err != nil || len(l.Events) != 2 || l.Events[0].Spool != b || l.Events[1].Spool != a {
		t.Fatalf("first page: %+v %v", l, err)
	}
	bs.err = errors.New("redis down")
	l2, err := ListAcross(ctx, []*Spool{a, b}, Filter{}, 2, l.Next)
	if err != nil || len(l2.Failed) != 1 || len(l2.Events) != 2 || l2.Events[0].ID != 2 || l2.Events[1].ID != 1 || l2.Next == "" {
		t.Fatalf("b failing: %+v %v", l2, err)
	}
	bs.err = nil
	l3, err := ListAcross(ctx, []*Spool{a, b}, Filter{}, 2, l2.Next)
	if err != nil || len(l3.Events) != 2 || l3.Events[0].Spool != b || l3.Events[0].ID != 2 || l3.Events[1].ID != 1 || l3.Next != "" {
		t.Fatalf("b back, the last page: %+v %v", l3, err)
	}
	// Every spool failing: no next.
	bs.err = errors.New("redis down")
	if l, err := ListAcross(ctx, []*Spool{b}, Filter{}, 2, ""); err != nil || len(l.Failed) != 1 || l.Next != "" {
		t.Errorf("one spool failing: %+v %v", l, err)
	}
}

// FuzzParseCursor: a cursor is refused or read back exactly as formatCursor
// writes it, within the bounds, and ListAcross never panics on one.
func FuzzParseCursor(f *testing.F) {
	for _, s := range []string{"", "12", "c1.0123456789abcdef.1.x.0", "c1.0123456789abcdef.18446744073709551615", "c1.0123456789abcdef.", "c1..1", "c1.0123456789abcdef.01"} {
		f.Add(s)
	}
	a, as := listSpool("a", []uint64{1, 2}, []int{1, 2})
	b, bs := listSpool("b", []uint64{1, 2}, []int{1, 2})
	f.Fuzz(func(t *testing.T, s string) {
		as.pages, bs.pages = nil, nil
		digest, places, err := parseCursor(s)
		if err == nil {
			if len(s) > MaxCursorLen || len(places) > MaxCursorSpools || len(places) == 0 {
				t.Fatalf("%q: %d places accepted", s, len(places))
			}
			if back := formatCursor(digest, places); back != s {
				t.Fatalf("%q read back as %q", s, back)
			}
		} else if !errors.Is(err, ErrBadCursor) {
			t.Fatalf("%q: %v", s, err)
		}
		for _, spools := range [][]*Spool{{a}, {a, b}} {
			l, err := ListAcross(context.Background(), spools, Filter{}, 1, s)
			if err == nil && len(l.Events) > 1 {
				t.Fatalf("%q: %d events", s, len(l.Events))
			}
			if err != nil && !errors.Is(err, ErrBadCursor) && !errors.Is(err, ErrSpoolsChanged) {
				t.Fatalf("%q: %v", s, err)
			}
		}
	})
}
