package functions

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/redis-migrate/redis-migrate/shared/changefeed"
	"github.com/redis-migrate/redis-migrate/shared/changefeed/psyncfeed"
	"github.com/redis-migrate/redis-migrate/shared/queue"
	"github.com/redis-migrate/redis-migrate/shared/redact"
	"github.com/redis-migrate/redis-migrate/shared/state"
)

// States of an online migration, beside the copy's (planning, copying, failed).
const (
	StateSyncing     = "syncing"      // the copy is complete; chains apply changes
	StateCuttingOver = "cutting-over" // a cutover waits for the chains or verifies
	StateConsistent  = "consistent"   // the cutover's verification passed; the target matched as of cutover.asOf
	StateStopped     = "stopped"      // POST .../stop ended the chains
)

// OnlineStatus is GET /api/migrations/{id} for an online migration: the copy's status, the
// online state, and one entry per sync chain.
type OnlineStatus struct {
	*state.Status
	State     string      `json:"state"`
	CopyState string      `json:"copyState"`
	Online    *OnlineInfo `json:"online"`
}

// OnlineInfo is the sync side of an online migration's status.
type OnlineInfo struct {
	Feed          string `json:"feed"`
	StopRequested bool   `json:"stopRequested,omitempty"`
	// LagMs is the worst chain's lag (-1: some chain has no applied barrier yet); CaughtUp says
	// every chain has its copy done, no gap open and a lag under 2 s.
	LagMs       int64          `json:"lagMs"`
	PendingKeys int            `json:"pendingKeys"`
	GapsOpen    int            `json:"gapsOpen"`
	CaughtUp    bool           `json:"caughtUp"`
	Shards      []ChainStatus  `json:"shards"`
	Cutover     *state.Cutover `json:"cutover,omitempty"`
}

// ChainStatus is one source master's sync chain.
type ChainStatus struct {
	Chain string `json:"chain"`
	Addr  string `json:"addr"`
	Feed  string `json:"feed"`
	// State: waiting-for-copy (capturing, applying once the copy is complete), applying,
	// handing-over (released, the next invocation takes over), stalled, stopped.
	State            string    `json:"state"`
	Generation       int       `json:"generation"`
	Invocation       int       `json:"invocation"`
	LagMs            int64     `json:"lagMs"` // from the newest applied barrier; -1: none yet
	AppliedAsOf      time.Time `json:"appliedAsOf"`
	PendingKeys      int       `json:"pendingKeys"`
	AppliedPerSecond float64   `json:"appliedPerSecond"`
	KeysApplied      int64     `json:"keysApplied"`
	OpenGaps         int       `json:"openGaps"`
	GapReason        string    `json:"gapReason,omitempty"`
	Gaps             int64     `json:"gaps"`
	RepairsDone      int64     `json:"repairsDone"`
	Handovers        int64     `json:"handovers"`
	Takeovers        int64     `json:"takeovers"`
	Restarts         int       `json:"restarts"`
	LastCheckpoint   time.Time `json:"lastCheckpoint"`
	// StalledAt is the last checkpoint of the generation the latest restart replaced.
	StalledAt *time.Time `json:"stalledAt,omitempty"`
	// Psync is where a psync chain stands in its master's replication stream.
	Psync *PsyncStatus `json:"psync,omitempty"`
	// Repair is the repair pass in progress (over the plan and copy queues); LastRepair the
	// last one finished.
	Repair     *RepairStatus     `json:"repair,omitempty"`
	LastRepair *state.RepairDone `json:"lastRepair,omitempty"`
}

// PsyncStatus is a psync chain's replication position.
type PsyncStatus struct {
	ReplID string `json:"replId"`
	// Offset: every change of the stream up to it is applied or pending; the next invocation
	// continues from it. MasterOffset is the master's offset at the last barrier, LagBytes the
	// difference (how far the chain's link was behind the master then).
	Offset       int64 `json:"offset"`
	MasterOffset int64 `json:"masterOffset"`
	LagBytes     int64 `json:"lagBytes"`
	// Continues: links the master continued from the saved position; FullResyncs: links it
	// could not (the backlog no longer held it), each a gap and a repair pass.
	Continues   int64 `json:"continues"`
	FullResyncs int64 `json:"fullResyncs"`
}

func psyncStatus(c *state.SyncChain) *PsyncStatus {
	if c.Feed != "psync" {
		return nil
	}
	ps := &PsyncStatus{MasterOffset: c.MasterOffset, Continues: c.Continues, FullResyncs: c.FullResyncs, Offset: -1}
	if p, err := psyncfeed.DecodePosition(changefeed.Position(c.Position)); err == nil {
		ps.ReplID, ps.Offset = p.ReplID, p.Offset
		ps.LagBytes = max(0, c.MasterOffset-p.Offset)
	}
	return ps
}

// RepairStatus is a chain's repair pass in progress, as its holder last recorded it.
type RepairStatus struct {
	Pass          int               `json:"pass"`
	Reason        string            `json:"reason"`
	StartedAt     time.Time         `json:"startedAt"`
	ShardsPlanned int               `json:"shardsPlanned"`
	ShardsTotal   int               `json:"shardsTotal"`
	Batches       state.BatchCounts `json:"batches"`
	KeysDiffering int64             `json:"keysDiffering"`
	KeysApplied   int64             `json:"keysApplied"`
	// Blocked says why the pass cannot complete (dead-lettered batches, a failed plan step):
	// POST .../resume sends that work again.
	Blocked string `json:"blocked,omitempty"`
}

func (a *App) chainStalled(c *state.SyncChain, on *state.Online, now time.Time) bool {
	return !c.Stopped && !on.StopRequested && now.Sub(c.CheckpointAt) > 2*a.syncLease() && (c.Holder == "" || now.After(c.LeaseUntil))
}

// onlineStatus builds the status of an online migration and drives what status drives: a
// stalled chain is restarted (a new generation with a repair pass), a waiting cutover starts its
// verification once every chain has caught up past it, a verifying one gets its verdict.
// by names the caller in the log (MigrationStatus, SyncWatchdog).
func (a *App) onlineStatus(ctx context.Context, id string, st *state.Status, by string) (*OnlineStatus, error) {
	on, err := a.store.GetOnline(ctx, id)
	if err != nil {
		return nil, err
	}
	now := time.Now()
	chains := make([]*state.SyncChain, 0, len(on.Chains))
	// found: the chains this call found stalled, with their last checkpoint. They are reported
	// stalled even though restarted now: that is what the caller needs to see once.
	found := map[string]time.Time{}
	for _, name := range on.Chains {
		c, err := a.store.GetChain(ctx, id, name)
		if err != nil {
			return nil, err
		}
		if a.chainStalled(c, on, now) {
			found[name] = c.CheckpointAt
			if rc, err := a.restartChain(ctx, id, c, by); err != nil {
				a.logf("%s: %s: restarting chain %s: %s", by, id, name, redact.Error(err))
			} else {
				c = rc
			}
		}
		chains = append(chains, c)
	}
	copyDone := st.State == state.StateCompleted || st.State == state.StateCompletedWithFailures
	info := &OnlineInfo{Feed: on.Feed, StopRequested: on.StopRequested, Cutover: on.Cutover}
	caught := copyDone && len(chains) > 0
	allStopped := len(chains) > 0
	var gapsTotal int64
	var oldest time.Time
	for _, c := range chains {
		cs := ChainStatus{Chain: c.Chain, Addr: c.Addr, Feed: c.Feed, Generation: c.Gen, Invocation: c.Seq, LagMs: -1, AppliedAsOf: c.AppliedAsOf,
			PendingKeys: c.PendingKeys, AppliedPerSecond: c.AppliedPerSec, KeysApplied: c.Applied, GapReason: c.GapReason, Gaps: c.Gaps,
			RepairsDone: c.Repairs, Handovers: c.Handovers, Takeovers: c.Takeovers, Restarts: c.Restarts, LastCheckpoint: c.CheckpointAt,
			Psync: psyncStatus(c)}
		if !c.AppliedAsOf.IsZero() {
			cs.LagMs = max(0, now.Sub(c.AppliedAsOf).Milliseconds())
		}
		if c.GapOpen {
			cs.OpenGaps = 1
			info.GapsOpen++
		}
		if !c.StalledAt.IsZero() {
			t := c.StalledAt
			cs.StalledAt = &t
		}
		if p := c.Repair; p != nil {
			cs.Repair = &RepairStatus{Pass: p.Pass, Reason: p.Reason, StartedAt: p.StartedAt, ShardsPlanned: p.ShardsPlanned,
				ShardsTotal: len(p.Keys), Batches: p.Batches, KeysDiffering: p.Differing, KeysApplied: p.Applied, Blocked: p.Blocked}
			if !c.GapOpen {
				cs.OpenGaps = 1 // never shown closed with a pass open
				info.GapsOpen++
			}
		}
		cs.LastRepair = c.LastRepair
		live := c.Holder != "" && now.Before(c.LeaseUntil)
		last, stalledNow := found[c.Chain]
		switch {
		case c.Stopped:
			cs.State = StateStopped
		case stalledNow:
			cs.State, cs.LastCheckpoint = "stalled", last
		case a.chainStalled(c, on, now):
			cs.State = "stalled"
		case !live:
			cs.State = "handing-over"
		case !c.CopyDone:
			cs.State = "waiting-for-copy"
		default:
			cs.State = "applying"
		}
		// A released chain is over once stop was asked, unless it handed over to a continuation
		// that will take the lease (and apply its pending keys) before it stops for good.
		handedOn := c.HandedTo >= 0 && now.Sub(c.CheckpointAt) <= 2*a.syncLease()
		if !c.Stopped && (live || handedOn || !on.StopRequested) {
			allStopped = false
		}
		info.PendingKeys += c.PendingKeys
		if cs.LagMs < 0 || info.LagMs < 0 {
			info.LagMs = -1
		} else {
			info.LagMs = max(info.LagMs, cs.LagMs)
		}
		caught = caught && c.CopyDone && !c.GapOpen && c.Repair == nil && cs.LagMs >= 0 && cs.LagMs < 2000 && cs.State != "stalled"
		gapsTotal += c.Gaps
		if oldest.IsZero() || c.AppliedAsOf.Before(oldest) {
			oldest = c.AppliedAsOf
		}
		info.Shards = append(info.Shards, cs)
	}
	info.CaughtUp = caught
	if on.Cutover != nil && (on.Cutover.State == state.CutoverWaiting || on.Cutover.State == state.CutoverVerifying) {
		if cut, err := a.driveCutover(ctx, id, on.Cutover, chains, st, gapsTotal); err != nil {
			a.logf("%s: %s: cutover: %s", by, id, redact.Error(err))
		} else if cut != nil {
			info.Cutover = cut
		}
	}
	out := &OnlineStatus{Status: st, CopyState: st.State, Online: info}
	switch {
	case st.State == state.StateFailed:
		out.State = st.State
	case allStopped && on.StopRequested:
		out.State = StateStopped
	case info.Cutover != nil && (info.Cutover.State == state.CutoverWaiting || info.Cutover.State == state.CutoverVerifying):
		out.State = StateCuttingOver
	case info.Cutover != nil && info.Cutover.State == state.CutoverConsistent && info.GapsOpen == 0:
		out.State = StateConsistent
	case copyDone:
		out.State = StateSyncing
	default:
		out.State = st.State // planning, copying (or stalled)
	}
	return out, nil
}

// restartChain starts a new generation of a stalled chain: its first invocation opens a gap, so
// the shard gets a repair pass. The change is conditional, so concurrent status calls and
// watchdog runs restart it once.
func (a *App) restartChain(ctx context.Context, id string, old *state.SyncChain, by string) (*state.SyncChain, error) {
	restarted := false
	c, err := a.store.UpdateChain(ctx, id, old.Chain, func(c *state.SyncChain) (bool, error) {
		restarted = false
		on := &state.Online{}
		if c.Gen != old.Gen || !a.chainStalled(c, on, time.Now()) {
			return false, nil
		}
		c.StalledAt = c.CheckpointAt
		c.Gen++
		c.Seq, c.Holder, c.NextCapturing, c.HandedTo = -1, "", -1, -1
		c.GapOpen = true
		c.GapReason = fmt.Sprintf("restarted after a stall (last checkpoint %s): changes may have been missed; a repair pass follows",
			c.StalledAt.UTC().Format(time.RFC3339))
		c.Restarts++
		c.CheckpointAt = time.Now().UTC()
		restarted = true
		return true, nil
	})
	if err != nil || !restarted {
		return c, err
	}
	if err := a.sender.Send(ctx, queue.Sync, []queue.Message{a.syncMsg(id, c.Chain, c.Gen, 0)}); err != nil {
		return c, err
	}
	a.logf("%s: %s: chain %s stalled (last checkpoint %s): restarted as generation %d with a repair pass",
		by, id, c.Chain, c.StalledAt.Format(time.RFC3339), c.Gen)
	return c, nil
}

// driveCutover moves a cutover on: once every chain applied a barrier after the request with
// no gap open, a full verification runs over the queues; its verdict makes the cutover
// consistent (as of the barrier time T) or failed.
func (a *App) driveCutover(ctx context.Context, id string, cut *state.Cutover, chains []*state.SyncChain, st *state.Status, gaps int64) (*state.Cutover, error) {
	switch cut.State {
	case state.CutoverWaiting:
		var T time.Time
		for _, c := range chains {
			if !c.CopyDone || c.GapOpen || c.Repair != nil || c.Stopped || !c.AppliedAsOf.After(cut.RequestedAt) {
				return cut, nil
			}
			if T.IsZero() || c.AppliedAsOf.Before(T) {
				T = c.AppliedAsOf
			}
		}
		claimed := false
		on, err := a.store.UpdateOnline(ctx, id, func(o *state.Online) (bool, error) {
			claimed = false
			if o.Cutover == nil || o.Cutover.RequestedAt != cut.RequestedAt || o.Cutover.State != state.CutoverWaiting {
				return false, nil
			}
			o.Cutover.State, o.Cutover.AsOf, o.Cutover.CaughtUpAt, o.Cutover.GapsAtCatchUp = state.CutoverVerifying, T, time.Now().UTC(), gaps
			claimed = true
			return true, nil
		})
		if err != nil || !claimed {
			return on.Cutover, err
		}
		full := true
		run, _, err := a.startVerify(ctx, id, &VerifyRequest{Full: &full})
		return a.updateCutover(ctx, id, cut.RequestedAt, func(c *state.Cutover) {
			if err != nil {
				c.State, c.Error, c.FinishedAt = state.CutoverFailed, "the verification could not start: "+redact.Error(err), time.Now().UTC()
				return
			}
			c.VerifyRun = run.ID
		})
	case state.CutoverVerifying:
		v := st.Verify
		if cut.VerifyRun == "" || v == nil || v.Run != cut.VerifyRun || !v.Final() {
			return cut, nil
		}
		open := 0
		for _, c := range chains {
			if c.GapOpen || c.Repair != nil {
				open++
			}
		}
		return a.updateCutover(ctx, id, cut.RequestedAt, func(c *state.Cutover) {
			c.FinishedAt = time.Now().UTC()
			switch {
			case v.State != state.VerifyPassed:
				c.State = state.CutoverFailed
				c.Error = fmt.Sprintf("verification %s %s: %d keys differ%s; stop the writes (or use pauseWritesSeconds) and cut over again",
					v.Run, v.State, v.Keys.Differing(), map[bool]string{true: " (" + v.Error + ")", false: ""}[v.Error != ""])
			case open > 0 || gaps != c.GapsAtCatchUp:
				c.State = state.CutoverFailed
				c.Error = "a gap opened during the verification: changes may have been missed; cut over again once status shows no gap"
			default:
				c.State = state.CutoverConsistent
			}
		})
	}
	return cut, nil
}

func (a *App) updateCutover(ctx context.Context, id string, requested time.Time, fn func(*state.Cutover)) (*state.Cutover, error) {
	on, err := a.store.UpdateOnline(ctx, id, func(o *state.Online) (bool, error) {
		if o.Cutover == nil || !o.Cutover.RequestedAt.Equal(requested) {
			return false, nil
		}
		fn(o.Cutover)
		return true, nil
	})
	if err != nil {
		return nil, err
	}
	return on.Cutover, nil
}

// CutoverRequest is the optional body of POST /api/migrations/{id}/cutover.
type CutoverRequest struct {
	PauseWritesSeconds int `json:"pauseWritesSeconds,omitempty"`
}

// CutoverResponse is the 202 body.
type CutoverResponse struct {
	ID           string    `json:"id"`
	StatusURL    string    `json:"statusUrl"`
	State        string    `json:"state"`
	RequestedAt  time.Time `json:"requestedAt"`
	WritesPaused bool      `json:"writesPaused"`
}

// onlineMigration reads an online migration for a request, answering the refusal itself.
func (a *App) onlineMigration(w http.ResponseWriter, r *http.Request) (*state.Migration, bool) {
	id := r.PathValue("id")
	if a.store == nil || a.sender == nil {
		writeError(w, http.StatusServiceUnavailable, "the function app has no state storage or queue configured (AzureWebJobsStorage, ServiceBusConnection)", "")
		return nil, false
	}
	if !state.ValidID(id) {
		writeError(w, http.StatusNotFound, fmt.Sprintf("no migration %q", id), "id")
		return nil, false
	}
	mig, err := a.store.GetMigration(r.Context(), id)
	if errors.Is(err, state.ErrNotFound) {
		writeError(w, http.StatusNotFound, fmt.Sprintf("no migration %q", id), "id")
		return nil, false
	}
	if err != nil {
		writeError(w, http.StatusInternalServerError, redact.Error(err), "")
		return nil, false
	}
	if mig.Mode != "online" {
		writeError(w, http.StatusConflict, fmt.Sprintf("migration %s is not an online migration (start one with \"mode\":\"online\")", id), "id")
		return nil, false
	}
	return mig, true
}

// migrationCutover is POST /api/migrations/{id}/cutover.
func (a *App) migrationCutover(w http.ResponseWriter, r *http.Request) {
	body, ok := readBody(w, r)
	if !ok {
		return
	}
	var req CutoverRequest
	if len(trimSpace(body)) > 0 {
		whole, _, err := parseObject(body, "", []string{"pauseWritesSeconds"})
		if err == nil {
			err = decodeStrict(whole, &req, "")
		}
		if err == nil && (req.PauseWritesSeconds < 0 || req.PauseWritesSeconds > 300) {
			err = fieldErrf("pauseWritesSeconds", "pauseWritesSeconds %d: want 1..300", req.PauseWritesSeconds)
		}
		if err != nil {
			a.requestErrorOf("MigrationCutover", w, err)
			return
		}
	}
	mig, ok := a.onlineMigration(w, r)
	if !ok {
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 60*time.Second)
	defer cancel()
	id := mig.ID
	st, err := a.store.ComputeStatus(ctx, id)
	if err != nil {
		writeError(w, http.StatusInternalServerError, redact.Error(err), "")
		return
	}
	if st.State != state.StateCompleted && st.State != state.StateCompletedWithFailures {
		writeError(w, http.StatusConflict, fmt.Sprintf("migration %s is still %s: cut over once the copy is complete and status shows the shards syncing", id, st.State), "")
		return
	}
	if req.PauseWritesSeconds > 0 {
		src, err := a.conns.get(ctx, mig, "source")
		if err != nil {
			writeError(w, http.StatusServiceUnavailable, "source: "+redact.Error(err), "source")
			return
		}
		for _, m := range src.Masters() {
			if err := src.Node(m, 0).Do(ctx, "CLIENT", "PAUSE", req.PauseWritesSeconds*1000, "WRITE").Err(); err != nil {
				writeError(w, http.StatusConflict, fmt.Sprintf("pauseWritesSeconds: source %s refuses CLIENT PAUSE ... WRITE (%s): it needs Redis 6.2+ and the CLIENT command allowed; stop the application's writes yourself and cut over without pauseWritesSeconds",
					m, redact.Error(err)), "pauseWritesSeconds")
				return
			}
		}
	}
	now := time.Now().UTC()
	refused := ""
	if _, err := a.store.UpdateOnline(ctx, id, func(o *state.Online) (bool, error) {
		refused = ""
		switch {
		case o.StopRequested:
			refused = "the migration was stopped"
			return false, nil
		case o.Cutover != nil && (o.Cutover.State == state.CutoverWaiting || o.Cutover.State == state.CutoverVerifying):
			refused = "a cutover is in progress (state " + o.Cutover.State + ")"
			return false, nil
		}
		o.Cutovers++
		o.Cutover = &state.Cutover{State: state.CutoverWaiting, RequestedAt: now, PauseWritesSeconds: req.PauseWritesSeconds}
		return true, nil
	}); err != nil {
		writeError(w, http.StatusInternalServerError, redact.Error(err), "")
		return
	}
	if refused != "" {
		writeError(w, http.StatusConflict, fmt.Sprintf("migration %s: %s", id, refused), "")
		return
	}
	a.logf("MigrationCutover: %s: cutover requested (writes paused for %ds)", id, req.PauseWritesSeconds)
	loc := statusURL(r, id)
	w.Header().Set("Location", loc)
	writeJSON(w, http.StatusAccepted, CutoverResponse{ID: id, StatusURL: loc, State: StateCuttingOver, RequestedAt: now, WritesPaused: req.PauseWritesSeconds > 0})
}

// StopResponse is the 202 body of POST /api/migrations/{id}/stop.
type StopResponse struct {
	ID        string `json:"id"`
	StatusURL string `json:"statusUrl"`
	State     string `json:"state"`
}

// migrationStop is POST /api/migrations/{id}/stop: every chain applies what it has pending (for
// a few seconds at most), releases its lease and sends no continuation.
func (a *App) migrationStop(w http.ResponseWriter, r *http.Request) {
	mig, ok := a.onlineMigration(w, r)
	if !ok {
		return
	}
	if _, err := a.store.UpdateOnline(r.Context(), mig.ID, func(o *state.Online) (bool, error) {
		if o.StopRequested {
			return false, nil
		}
		o.StopRequested, o.StopAt = true, time.Now().UTC()
		return true, nil
	}); err != nil {
		writeError(w, http.StatusInternalServerError, redact.Error(err), "")
		return
	}
	a.logf("MigrationStop: %s: stop requested", mig.ID)
	loc := statusURL(r, mig.ID)
	w.Header().Set("Location", loc)
	writeJSON(w, http.StatusAccepted, StopResponse{ID: mig.ID, StatusURL: loc, State: "stopping"})
}
