package spool

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// A listing across spools pages through the events of several spools (one
// per ledger file or Redis) as through one list, newest first. Each page
// reads up to its limit of events (and one more, to know whether there are
// more) from each spool after that spool's own place, merges them and keeps
// the newest limit; its cursor records, for
// each spool, the id of the last of its events shown (or that none was
// shown yet, or that every one was). Ids are per spool: they may collide
// across spools, so a cursor is only meaningful with the spools it was made
// with, and with the filter it was made with (a spool done with one filter
// is not done with another): it carries a digest of the spools' names
// (Options.Name) and of the filter. A plain id, as an operator types it,
// lists the events below it in every spool.

// Listed is an event of a listing across spools, with its spool.
type Listed struct {
	// Spool is the spool that holds the event.
	Spool *Spool
	Record
}

// Listing is one page of a listing across spools.
type Listing struct {
	// Events are the page's events, newest first: by ReceivedAt, then by
	// id, then by the spool's place among the spools (sorted by name). The
	// page holds the newest events of each spool in the spool's own order
	// (by id): where its ids and times disagree (events received at once,
	// clocks of several instances), an event may be on the page after the
	// one its time would put it on; none is left out or shown twice. With
	// one spool they are in the spool's order.
	Events []Listed
	// Next is the cursor of the next page, "" when every spool's events
	// have been listed.
	Next string
	// Failed holds the errors of the spools that could not be listed:
	// their events are missing from the page, and Next resumes them where
	// this page began.
	Failed []error
}

// ErrSpoolsChanged is a cursor made while other spools were loaded (a
// config reload added, removed or changed a store since the first page),
// or with another filter.
var ErrSpoolsChanged = errors.New("the spools (a config reload) or the filters (state, scope, event_id, search) changed since the first page: list again from the first page")

// ErrBadCursor is a cursor that no listing made.
var ErrBadCursor = errors.New("not a cursor a listing gave: pass the next of the page before as it is")

// MaxCursorSpools is the most spools a listing pages across.
const MaxCursorSpools = 128

// cursorVersion starts every cursor of several spools.
const cursorVersion = "c1."

// cursorDigestLen is the length of the cursor's digest of the spools, in
// hex digits.
const cursorDigestLen = 16

// MaxCursorLen bounds the length of a cursor: its version, its digest and,
// for each spool, a place (a dot and at most 20 digits).
const MaxCursorLen = len(cursorVersion) + cursorDigestLen + MaxCursorSpools*(1+20)

// place is where a spool's listing resumes: after the event with id after
// (0: from its newest event), or nowhere when done.
type place struct {
	after uint64
	done  bool
}

// ListAcross returns one page of at most limit events (Page.Size applies
// the default and the bounds) that f selects in spools, merged newest
// first, and the cursor of the next page. after is "" for the first page,
// else the Next of the page before, or an event id (the events below it in
// every spool); a cursor of other spools or another filter is
// ErrSpoolsChanged, anything else that is not a cursor ErrBadCursor.
func ListAcross(ctx context.Context, spools []*Spool, f Filter, limit int, after string) (Listing, error) {
	if len(spools) > MaxCursorSpools {
		return Listing{}, fmt.Errorf("spool: %d spools are loaded, more than the %d a listing pages across", len(spools), MaxCursorSpools)
	}
	size := Page{Limit: limit}.Size()
	// One more than the page holds, where the bound allows: a spool whose
	// events all fit is then known to be done, and a page that ends the
	// listing has no next (an empty page after it).
	fetch := Page{Limit: size + 1}.Size()
	order, digest := spoolOrder(spools, f)
	places, err := readCursor(after, len(spools), digest)
	if err != nil {
		return Listing{}, err
	}
	var out Listing
	// pages[i] are the events of the i-th spool in order (see spoolOrder)
	// after its place, newest (highest id) first; taken[i] how many of
	// them are on the page.
	pages := make([][]Record, len(spools))
	taken := make([]int, len(spools))
	failed := make([]bool, len(spools))
	for i, sp := range order {
		if places[i].done {
			continue
		}
		recs, err := sp.List(ctx, f, Page{Limit: fetch, After: places[i].after})
		if err != nil {
			out.Failed = append(out.Failed, err)
			failed[i] = true
			continue
		}
		pages[i] = recs
	}
	// Merge the heads: the page takes a run of each spool's listing, in its
	// own order, so that its place is the id of the last of them shown,
	// whatever the clocks made of ReceivedAt.
	type shown struct {
		Listed
		rank int // the spool's place in order
	}
	var picked []shown
	for len(picked) < size {
		best := -1
		for i := range pages {
			if taken[i] == len(pages[i]) {
				continue
			}
			if best < 0 || newer(&pages[i][taken[i]], &pages[best][taken[best]]) {
				best = i
			}
		}
		if best < 0 {
			break
		}
		picked = append(picked, shown{Listed{Spool: order[best], Record: pages[best][taken[best]]}, best})
		taken[best]++
	}
	if len(spools) > 1 {
		// Shown newest first even where a spool's ids and times disagree.
		slices.SortStableFunc(picked, func(x, y shown) int {
			return cmp.Or(y.ReceivedAt.Compare(x.ReceivedAt), cmp.Compare(y.ID, x.ID), cmp.Compare(x.rank, y.rank))
		})
	}
	for _, p := range picked {
		out.Events = append(out.Events, p.Listed)
	}
	next := make([]place, len(spools))
	more := false
	for i := range next {
		switch {
		case places[i].done:
			next[i] = places[i]
		case failed[i]:
			next[i] = places[i]
			more = true
		case taken[i] == len(pages[i]) && len(pages[i]) < fetch:
			next[i] = place{done: true}
		case taken[i] > 0:
			next[i] = place{after: pages[i][taken[i]-1].ID}
			more = true
		default:
			next[i] = places[i]
			more = true
		}
	}
	if more && len(out.Failed) < len(spools) {
		out.Next = formatCursor(digest, next)
	}
	return out, nil
}

// newer says whether x comes before y in a listing: received later, or at
// the same time with a higher id. The caller breaks a full tie by the
// spools' order.
func newer(x, y *Record) bool {
	return cmp.Or(y.ReceivedAt.Compare(x.ReceivedAt), cmp.Compare(y.ID, x.ID)) < 0
}

// spoolOrder returns spools sorted by name (spools of one name in the order
// given) and the digest of their names in that order and of f, which a
// cursor carries: the same spools, reloaded or restarted, and the same
// filter give the same digest.
func spoolOrder(spools []*Spool, f Filter) ([]*Spool, string) {
	type named struct {
		sp   *Spool
		name string
		nth  int // among the spools of the same name
	}
	all := make([]named, len(spools))
	seen := map[string]int{}
	for i, sp := range spools {
		all[i] = named{sp, sp.Name(), seen[sp.Name()]}
		seen[sp.Name()]++
	}
	slices.SortStableFunc(all, func(x, y named) int { return cmp.Or(strings.Compare(x.name, y.name), cmp.Compare(x.nth, y.nth)) })
	h := sha256.New()
	order := make([]*Spool, len(all))
	for i, n := range all {
		order[i] = n.sp
		fmt.Fprintf(h, "%d:%s\x00%d\x00", len(n.name), n.name, n.nth)
	}
	fmt.Fprintf(h, "filter\x00%d:%s\x00%d:%s\x00%d:%s\x00%d:%s", len(f.State), f.State, len(f.Scope), f.Scope, len(f.EventID), f.EventID, len(f.Text), f.Text)
	return order, hex.EncodeToString(h.Sum(nil))[:cursorDigestLen]
}

// readCursor returns the places of n spools, of digest, that after says
// (all at their newest when after is "").
func readCursor(after string, n int, digest string) ([]place, error) {
	places := make([]place, n)
	if after == "" {
		return places, nil
	}
	if id, err := strconv.ParseUint(after, 10, 64); err == nil {
		for i := range places {
			places[i].after = id
		}
		return places, nil
	}
	got, gotPlaces, err := parseCursor(after)
	if err != nil {
		return nil, err
	}
	if got != digest || len(gotPlaces) != n {
		return nil, ErrSpoolsChanged
	}
	return gotPlaces, nil
}

// formatCursor is the cursor of places of the spools of digest:
// "c1.<digest>" and, for each spool in order, "." and its place: the id its
// listing resumes after, "0" when it has not begun, "x" when it is done.
func formatCursor(digest string, places []place) string {
	var b strings.Builder
	b.WriteString(cursorVersion + digest)
	for _, p := range places {
		b.WriteByte('.')
		switch {
		case p.done:
			b.WriteByte('x')
		default:
			b.WriteString(strconv.FormatUint(p.after, 10))
		}
	}
	return b.String()
}

// parseCursor reads a cursor formatCursor made: its digest and places. It
// takes only what formatCursor writes (a place's id in decimal without
// leading zeros), at most MaxCursorLen bytes and MaxCursorSpools places.
func parseCursor(s string) (digest string, places []place, err error) {
	if len(s) > MaxCursorLen {
		return "", nil, ErrBadCursor
	}
	rest, ok := strings.CutPrefix(s, cursorVersion)
	if !ok {
		return "", nil, ErrBadCursor
	}
	digest, rest, ok = strings.Cut(rest, ".")
	if !ok || len(digest) != cursorDigestLen || strings.Trim(digest, "0123456789abcdef") != "" {
		return "", nil, ErrBadCursor
	}
	for part := range strings.SplitSeq(rest, ".") {
		if len(places) == MaxCursorSpools {
			return "", nil, ErrBadCursor
		}
		if part == "x" {
			places = append(places, place{done: true})
			continue
		}
		id, err := strconv.ParseUint(part, 10, 64)
		if err != nil || strconv.FormatUint(id, 10) != part {
			return "", nil, ErrBadCursor
		}
		places = append(places, place{after: id})
	}
	return digest, places, nil
}
