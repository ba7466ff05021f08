package console

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// The chart's geometry, in SVG user units (the SVG scales to its box).
const (
	chartWidth  = 720
	chartHeight = 220
	chartLeft   = 44 // room for the y labels
	chartRight  = 8
	chartTop    = 10
	chartBottom = 26 // room for the x labels
)

// chart is the SVG chart of outcomes per minute over the last hour, drawn on
// the server: a stacked bar per minute, one colour per outcome.
type chart struct {
	Width, Height int
	// Plot box.
	Left, Top, Right, Bottom int
	Bars                     []chartBar
	Ticks                    []chartTick
	Legend                   []legendItem
	// Total is how many outcomes the hour holds; Summary says it in words
	// for screen readers.
	Total   int
	Summary string
}

// chartBar is one outcome's part of a minute's bar.
type chartBar struct {
	X, Y, W, H string
	Class      string
	Label      string
}

// chartTick is a label of an axis.
type chartTick struct {
	X, Y   string
	Text   string
	Anchor string
	// Line: a horizontal grid line at Y.
	Line bool
}

// legendItem is an outcome of the hour and its count.
type legendItem struct {
	Outcome string
	Class   string
	Count   int
}

// outcomeOrder is the order of the known outcomes in a bar (from the
// bottom) and in the legend; other outcomes follow by name.
var outcomeOrder = []string{
	"forwarded", "spooled", "duplicate", "ignored_type", "probe", "in_flight",
	"invalid_signature", "stale_timestamp", "ip_denied", "too_large", "bad_method", "bad_request", "early_data",
	"upstream_failed", "no_upstream", "store_unavailable", "store_full",
}

// outcomeClass is the CSS class of an outcome's colour: o-<outcome> for the
// known ones (the stylesheet has them), o-other else.
func outcomeClass(outcome string) string {
	if slices.Contains(outcomeOrder, outcome) {
		return "o-" + strings.ReplaceAll(outcome, "_", "-")
	}
	return "o-other"
}

// newChart draws the counts of chartMinutes minutes, oldest first.
func newChart(minutes [chartMinutes]map[string]int) chart {
	c := chart{
		Width: chartWidth, Height: chartHeight,
		Left: chartLeft, Top: chartTop, Right: chartWidth - chartRight, Bottom: chartHeight - chartBottom,
	}
	totals := map[string]int{}
	peak := 0
	for _, m := range minutes {
		sum := 0
		for o, n := range m {
			totals[o] += n
			sum += n
		}
		peak = max(peak, sum)
		c.Total += sum
	}
	order := outcomesOf(totals)
	for _, o := range order {
		c.Legend = append(c.Legend, legendItem{Outcome: o, Class: outcomeClass(o), Count: totals[o]})
	}
	top := niceCeil(peak)
	plotW := float64(c.Right - c.Left)
	plotH := float64(c.Bottom - c.Top)
	slot := plotW / chartMinutes
	for i, m := range minutes {
		y := float64(c.Bottom)
		ago := chartMinutes - 1 - i
		for _, o := range order {
			n := m[o]
			if n == 0 {
				continue
			}
			h := float64(n) / float64(top) * plotH
			y -= h
			when := "this minute"
			if ago > 0 {
				when = strconv.Itoa(ago) + " min ago"
			}
			c.Bars = append(c.Bars, chartBar{
				X: num(float64(c.Left) + float64(i)*slot + 1), Y: num(y), W: num(slot - 2), H: num(h),
				Class: outcomeClass(o), Label: fmt.Sprintf("%s: %d %s", when, n, o),
			})
		}
	}
	for _, v := range []int{0, top / 2, top} {
		if v == top/2 && (top < 2 || top%2 != 0) {
			continue
		}
		y := float64(c.Bottom) - float64(v)/float64(top)*plotH
		c.Ticks = append(c.Ticks, chartTick{X: num(float64(c.Left - 6)), Y: num(y + 4), Text: strconv.Itoa(v), Anchor: "end", Line: true})
	}
	for _, t := range []struct {
		ago    int
		text   string
		anchor string
	}{{60, "60 min ago", "start"}, {30, "30 min ago", "middle"}, {0, "now", "end"}} {
		x := float64(c.Left) + plotW*float64(chartMinutes-t.ago)/chartMinutes
		c.Ticks = append(c.Ticks, chartTick{X: num(x), Y: num(float64(chartHeight - 8)), Text: t.text, Anchor: t.anchor})
	}
	c.Summary = summary(c.Total, c.Legend)
	return c
}

// outcomesOf orders the outcomes that have counts.
func outcomesOf(totals map[string]int) []string {
	var known, other []string
	for _, o := range outcomeOrder {
		if totals[o] > 0 {
			known = append(known, o)
		}
	}
	for o, n := range totals {
		if n > 0 && !slices.Contains(outcomeOrder, o) {
			other = append(other, o)
		}
	}
	slices.Sort(other)
	return append(known, other...)
}

// niceCeil is the y axis's top: at least v, at least 1, one of 1, 2, 5
// times a power of ten.
func niceCeil(v int) int {
	if v <= 1 {
		return 1
	}
	for p := 1; ; p *= 10 {
		for _, m := range []int{1, 2, 5} {
			if m*p >= v {
				return m * p
			}
		}
	}
}

// num writes a coordinate with at most one decimal.
func num(v float64) string {
	return strconv.FormatFloat(float64(int(v*10+0.5))/10, 'f', -1, 64)
}

// summary says what the chart shows, for screen readers and the caption.
func summary(total int, legend []legendItem) string {
	if total == 0 {
		return "No outcomes in the last hour."
	}
	parts := make([]string, len(legend))
	for i, l := range legend {
		parts[i] = fmt.Sprintf("%s %d", l.Outcome, l.Count)
	}
	return fmt.Sprintf("%d outcomes in the last hour: %s.", total, strings.Join(parts, ", "))
}
