package verify_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/redis-migrate/redis-migrate/shared/testenv"
	"github.com/redis-migrate/redis-migrate/shared/verify"
)

// A target that goes away while a verification runs ends the run with its error (marked
// transient, so the copy's closing verification retries it), sample and full alike, even with
// one worker: the worker's failure used to leave the feeder blocked on a
// job nobody would take (a copy's closing verification hung while a cluster source restarted).
func TestRunEndsWhenTheWorkersFail(t *testing.T) {
	src, dst := testenv.StartRedis(t), testenv.StartRedis(t)
	if err := testenv.FillBulk(ctx, src.Client(t, 0), "s:", 5000, 3); err != nil {
		t.Fatal(err)
	}
	sc, dc := open(t, src.URL()), open(t, dst.URL())
	dst.Kill()
	for _, o := range []verify.Options{{Sample: 5000, Workers: 1}, {Workers: 1}} {
		done := make(chan error, 1)
		rctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
		go func() { _, err := verify.Run(rctx, sc, dc, o); done <- err }()
		select {
		case err := <-done:
			var re *verify.ReadError
			if err == nil || !errors.As(err, &re) || !re.Transient {
				t.Errorf("sample %d: want the target's error, marked transient (a caller may retry), got %v", o.Sample, err)
			}
			t.Logf("sample %d: %v", o.Sample, err)
		case <-time.After(time.Minute):
			t.Fatalf("sample %d: the verification hung with its worker gone", o.Sample)
		}
		cancel()
	}
}
