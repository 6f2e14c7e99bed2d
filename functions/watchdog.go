package functions

import (
	"context"
	"errors"
	"fmt"

	"github.com/redis-migrate/redis-migrate/shared/hostproto"
	"github.com/redis-migrate/redis-migrate/shared/redact"
	"github.com/redis-migrate/redis-migrate/shared/state"
)

// SyncWatchdog is a timer function: a chain that died (a crashed invocation, a lost or
// dead-lettered continuation) is otherwise restarted only when someone asks for the status.
// On its schedule it does for every running online migration what a status call does
// (onlineStatus): restart stalled chains, move a waiting or verifying cutover on. The running
// online migrations come from the running index in the state container, one small listing.

// SettingSyncWatchdogSchedule is the NCRONTAB schedule (6 fields, with seconds) of SyncWatchdog,
// resolved by the host from the function.json's %SYNC_WATCHDOG_SCHEDULE%. The host does not
// index a function whose %SETTING% has no value, so infra/main.bicep sets it (every 30 s).
const SettingSyncWatchdogSchedule = "SYNC_WATCHDOG_SCHEDULE"

// DefaultSyncWatchdogSchedule is the schedule infra/main.bicep and local.settings.example.json set.
const DefaultSyncWatchdogSchedule = "*/30 * * * * *"

const timerBinding = "timer"

func init() { registerTrigger("SyncWatchdog", func(a *App) triggerFunc { return a.syncWatchdog }) }

func (a *App) syncWatchdog(ctx context.Context, inv *hostproto.Invocation, reply *hostproto.Reply) (bool, error) {
	if _, err := inv.Timer(timerBinding); err != nil {
		return false, err
	}
	ids, err := a.store.RunningOnline(ctx)
	if err != nil {
		return true, err
	}
	var failed []error
	for _, id := range ids {
		if err := a.watchOnline(ctx, id); err != nil {
			failed = append(failed, fmt.Errorf("%s: %s", id, redact.Error(err)))
		}
	}
	reply.Log("SyncWatchdog: %d running online migrations checked", len(ids))
	return len(failed) > 0, errors.Join(failed...)
}

// watchOnline is one migration's status, computed as GET /api/migrations/{id} does (one code
// path: the same restarts and cutover steps); a stopped or deleted one leaves the index.
func (a *App) watchOnline(ctx context.Context, id string) error {
	st, err := a.store.Status(ctx, id)
	if errors.Is(err, state.ErrNotFound) {
		return a.store.UnmarkOnlineRunning(ctx, id)
	}
	if err != nil {
		return err
	}
	ost, err := a.onlineStatus(ctx, id, st, "SyncWatchdog")
	if errors.Is(err, state.ErrNotFound) {
		return a.store.UnmarkOnlineRunning(ctx, id)
	}
	if err != nil {
		return err
	}
	if ost.State == StateStopped {
		a.logf("SyncWatchdog: %s: stopped; no longer watched", id)
		return a.store.UnmarkOnlineRunning(ctx, id)
	}
	return nil
}
