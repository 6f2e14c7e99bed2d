package hostharness

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/redis-migrate/redis-migrate/shared/hostproto"
)

// Timer triggers, as the host's timer extension runs them: the schedule is an NCRONTAB
// expression of six fields ({second} {minute} {hour} {day} {month} {day-of-week}, in UTC: the
// harness does not model WEBSITE_TIME_ZONE), after %SETTING% resolution. One function's runs
// never overlap: the next occurrence is computed after a run ends, so occurrences missed
// during a long run are skipped. The invocation is POST /<Function> with the TimerInfo object
// nested in Data (the host's JObject.FromObject of it): {"Schedule":{"AdjustForDST":true},
// "ScheduleStatus":...,"IsPastDue":false}, ScheduleStatus null unless the schedule is
// monitored (useMonitor, by default only for schedules a minute or more apart); Metadata has
// only "sys" (the binding's TimerTrigger entry ends in "trigger" and is dropped).

// cronSchedule is a parsed NCRONTAB expression: the allowed values of each field.
type cronSchedule struct {
	text                                    string
	second, minute, hour, day, month, wkday []bool
}

var cronNames = map[int]map[string]int{
	4: {"JAN": 1, "FEB": 2, "MAR": 3, "APR": 4, "MAY": 5, "JUN": 6, "JUL": 7, "AUG": 8, "SEP": 9, "OCT": 10, "NOV": 11, "DEC": 12},
	5: {"SUN": 0, "MON": 1, "TUE": 2, "WED": 3, "THU": 4, "FRI": 5, "SAT": 6},
}

// parseCron parses a six-field NCRONTAB expression. Day and day-of-week must both match.
func parseCron(expr string) (*cronSchedule, error) {
	fields := strings.Fields(expr)
	if len(fields) != 6 {
		if strings.Count(expr, ":") == 2 {
			return nil, fmt.Errorf("%q is a TimeSpan schedule (App Service plans only); use NCRONTAB with six fields", expr)
		}
		return nil, fmt.Errorf("%q: want six NCRONTAB fields ({second} {minute} {hour} {day} {month} {day-of-week}), got %d", expr, len(fields))
	}
	bounds := [6][2]int{{0, 59}, {0, 59}, {0, 23}, {1, 31}, {1, 12}, {0, 7}}
	var sets [6][]bool
	for i, f := range fields {
		set, err := parseCronField(f, bounds[i][0], bounds[i][1], cronNames[i])
		if err != nil {
			return nil, fmt.Errorf("%q field %d (%s): %v", expr, i+1, f, err)
		}
		sets[i] = set
	}
	if sets[5][7] { // 7 is Sunday too
		sets[5][0] = true
	}
	return &cronSchedule{text: expr, second: sets[0], minute: sets[1], hour: sets[2], day: sets[3], month: sets[4], wkday: sets[5]}, nil
}

func parseCronField(f string, lo, hi int, names map[string]int) ([]bool, error) {
	set := make([]bool, hi+1)
	num := func(s string) (int, error) {
		if n, ok := names[strings.ToUpper(s)]; ok {
			return n, nil
		}
		n, err := strconv.Atoi(s)
		if err != nil || n < lo || n > hi {
			return 0, fmt.Errorf("%q is not a value in %d-%d", s, lo, hi)
		}
		return n, nil
	}
	for _, item := range strings.Split(f, ",") {
		rng, stepText, hasStep := strings.Cut(item, "/")
		step := 1
		if hasStep {
			n, err := strconv.Atoi(stepText)
			if err != nil || n < 1 {
				return nil, fmt.Errorf("step %q", stepText)
			}
			step = n
		}
		from, to := lo, hi
		switch {
		case rng == "*":
		case strings.Contains(rng, "-"):
			a, b, _ := strings.Cut(rng, "-")
			var err error
			if from, err = num(a); err != nil {
				return nil, err
			}
			if to, err = num(b); err != nil {
				return nil, err
			}
			if to < from {
				return nil, fmt.Errorf("range %q runs backwards", rng)
			}
		default:
			n, err := num(rng)
			if err != nil {
				return nil, err
			}
			from = n
			if !hasStep {
				to = n
			}
		}
		for v := from; v <= to; v += step {
			set[v] = true
		}
	}
	return set, nil
}

// next is the first occurrence strictly after t (UTC, whole seconds).
func (c *cronSchedule) next(t time.Time) (time.Time, bool) {
	t = t.UTC().Truncate(time.Second).Add(time.Second)
	for i := 0; i < 1_000_000; i++ {
		switch {
		case !c.month[int(t.Month())]:
			t = time.Date(t.Year(), t.Month()+1, 1, 0, 0, 0, 0, time.UTC)
		case !c.day[t.Day()] || !c.wkday[int(t.Weekday())]:
			t = time.Date(t.Year(), t.Month(), t.Day()+1, 0, 0, 0, 0, time.UTC)
		case !c.hour[t.Hour()]:
			t = time.Date(t.Year(), t.Month(), t.Day(), t.Hour()+1, 0, 0, 0, time.UTC)
		case !c.minute[t.Minute()]:
			t = time.Date(t.Year(), t.Month(), t.Day(), t.Hour(), t.Minute()+1, 0, 0, time.UTC)
		case !c.second[t.Second()]:
			t = t.Add(time.Second)
		default:
			return t, true
		}
	}
	return time.Time{}, false // e.g. 31 February
}

// monitored is the host's useMonitor: the binding's value, else on for schedules whose
// occurrences are a minute or more apart.
func (f *function) monitored() bool {
	if b, ok := f.trigger["useMonitor"].(bool); ok {
		return b
	}
	a, ok1 := f.schedule.next(time.Now())
	b, ok2 := f.schedule.next(a)
	return ok1 && ok2 && b.Sub(a) >= time.Minute
}

// runTimer invokes a timer function on its schedule until ctx ends.
func (h *Harness) runTimer(ctx context.Context, f *function) {
	defer h.wg.Done()
	if b, _ := f.trigger["runOnStartup"].(bool); b {
		h.timerRun(ctx, f, "startup")
	}
	for {
		at, ok := f.schedule.next(time.Now())
		if !ok {
			h.logf("%s: schedule %q never occurs", f.name, f.schedule.text)
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Until(at)):
		}
		h.timerRun(ctx, f, "schedule")
	}
}

func (h *Harness) timerRun(ctx context.Context, f *function, why string) {
	status, logs, err := h.invokeTimer(ctx, f)
	for _, l := range logs {
		h.logf("%s: %s", f.name, l)
	}
	if err != nil || status/100 != 2 {
		// A failed timer run is logged; the next occurrence runs as scheduled (no retry policy).
		h.logf("%s: timer run (%s) failed: status %d %v", f.name, why, status, err)
	}
}

// RunTimer runs a timer function now, as the host's admin API (POST /admin/functions/<name>)
// does, outside its schedule; it returns the handler's HTTP status.
func (h *Harness) RunTimer(ctx context.Context, name string) (int, error) {
	for _, f := range h.functions {
		if f.name == name && f.kind == "timerTrigger" {
			if f.timerErr != nil {
				return 0, fmt.Errorf("%s is not running: %v", name, f.timerErr)
			}
			status, _, err := h.invokeTimer(ctx, f)
			return status, err
		}
	}
	return 0, fmt.Errorf("no timer function %s", name)
}

func (h *Harness) invokeTimer(ctx context.Context, f *function) (int, []string, error) {
	w, err := h.current(ctx)
	if err != nil {
		return 0, nil, err
	}
	h.counted(f.name)
	var status any // null: not monitored
	if f.monitored() {
		now := time.Now().UTC()
		next, _ := f.schedule.next(now)
		h.cmu.Lock()
		last := f.lastRun
		f.lastRun = now
		h.cmu.Unlock()
		status = map[string]any{"Last": last.Format(time.RFC3339), "Next": next.Format(time.RFC3339), "LastUpdated": now.Format(time.RFC3339)}
	}
	info := map[string]any{"Schedule": map[string]any{"AdjustForDST": true}, "ScheduleStatus": status, "IsPastDue": false}
	payload, _ := json.Marshal(map[string]any{
		"Data":     map[string]any{f.bindingIn: info},
		"Metadata": map[string]json.RawMessage{"sys": hostproto.HostObject(sysMetadata(f.name))},
	})
	return h.postInvocation(ctx, w, f, payload)
}
