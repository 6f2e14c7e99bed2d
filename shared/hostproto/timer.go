package hostproto

import (
	"encoding/json"
	"fmt"
	"time"
)

// TimerInfo is a timer trigger invocation: the host sends the TimerInfo object nested in Data
// ({"Schedule":{"AdjustForDST":true},"ScheduleStatus":{...}|null,"IsPastDue":false}); the
// schedule status is null when the schedule is not monitored (sub-minute schedules, or
// useMonitor false).
type TimerInfo struct {
	IsPastDue      bool            `json:"IsPastDue"`
	ScheduleStatus *ScheduleStatus `json:"ScheduleStatus"`
}

// ScheduleStatus is the monitored schedule's last and next occurrence.
type ScheduleStatus struct {
	Last        time.Time `json:"Last"`
	Next        time.Time `json:"Next"`
	LastUpdated time.Time `json:"LastUpdated"`
}

// Timer decodes a timer trigger invocation whose binding is named binding. The value may also
// arrive as a JSON string holding the object (the docs' shape for other workers).
func (inv *Invocation) Timer(binding string) (*TimerInfo, error) {
	if err := inv.OversizeError(); err != nil {
		return nil, err
	}
	s, ok := Unwrap(lookup(inv.Data, binding))
	if !ok {
		return nil, fmt.Errorf("invocation has no Data.%s", binding)
	}
	var raw map[string]json.RawMessage
	if err := json.Unmarshal([]byte(s), &raw); err != nil {
		return nil, fmt.Errorf("Data.%s is not a timer object: %v", binding, err)
	}
	t := &TimerInfo{}
	if v := lookup(raw, "IsPastDue"); v != nil {
		if b, ok := Unwrap(v); ok {
			t.IsPastDue = b == "true" || b == "True"
		}
	}
	if st := Object(raw, "ScheduleStatus"); st != nil {
		ss := &ScheduleStatus{}
		for name, dst := range map[string]*time.Time{"Last": &ss.Last, "Next": &ss.Next, "LastUpdated": &ss.LastUpdated} {
			if v := String(st, name); v != "" {
				if at, err := time.Parse(time.RFC3339Nano, v); err == nil {
					*dst = at
				}
			}
		}
		t.ScheduleStatus = ss
	}
	return t, nil
}
