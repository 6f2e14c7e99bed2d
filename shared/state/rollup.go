package state

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/to"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/bloberror"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/container"

	"github.com/redis-migrate/redis-migrate/shared/copier"
	"github.com/redis-migrate/redis-migrate/shared/plan"
)

// Status that scales: a copy's batches are grouped by the plan step that cut them, and a step
// whose every batch has a result is rolled up into one small blob. A fresh status then reads one
// listing of the steps, one listing of the rollups and, for the steps still in flight only, one
// listing of their results: its cost grows with the work in flight, not with all batches ever
// done (a 1-billion-key migration has about 5,000 steps of 200,000 keys and 2,000,000 batches).
//
//	<id>/steps/<shard>/<step>.json    the batches one plan step cut, keys included; written
//	                                  create-if-absent before any of them is sent, so every
//	                                  delivery (and a resume) sends the same batches
//	<id>/rollup/<shard>/<step>.json   the step's totals, written create-if-absent once every batch
//	                                  of the step and every big-key batch they sent off has a
//	                                  result; counts in metadata
//
// Results are create-if-absent and never change, and a step's set of batches is fixed by its
// manifest, so every roller that finds a step complete computes the same totals: the first
// rollup written stands and the others are dropped, whoever wrote it and however often a batch
// was delivered.

// StepManifest is what one plan step of a copy cut.
type StepManifest struct {
	Key     string       `json:"key"`  // the shard key (ShardKey)
	Step    int          `json:"step"` // the step number
	Cursor  plan.Cursor  `json:"cursor"`
	Next    plan.Cursor  `json:"next"`
	Scanned int          `json:"scanned"`
	Batches []plan.Batch `json:"batches"`
	// Prefix starts the id of every batch of the step and of every big-key batch they send off,
	// so the step's results are one listing.
	Prefix    string    `json:"prefix"`
	CreatedAt time.Time `json:"createdAt"`
}

// StepRollup is a finished step's totals.
type StepRollup struct {
	Key          string        `json:"key"`
	Step         int           `json:"step"`
	Prefix       string        `json:"prefix"`
	Batches      int64         `json:"batches"` // results rolled up, big-key batches included
	Spawned      int64         `json:"spawned"` // big-key batches the step's batches sent off
	DeadLettered int64         `json:"deadLettered"`
	Result       copier.Result `json:"result"`
	Failures     []Failure     `json:"failures,omitempty"` // the first MaxFailuresShown
	DeadLetters  []DeadLetter  `json:"deadLetters,omitempty"`
	FinishedAt   time.Time     `json:"finishedAt"` // the latest result's
	RolledAt     time.Time     `json:"rolledAt"`
}

// StepCounts says how far the rollup has got, in status.
type StepCounts struct {
	Recorded int `json:"recorded"` // plan steps with a manifest
	RolledUp int `json:"rolledUp"` // of them, finished and rolled up
	InFlight int `json:"inFlight"` // recorded - rolledUp: listed result by result
}

func stepsPrefix(id string) string  { return id + "/steps/" }
func rollupPrefix(id string) string { return id + "/rollup/" }
func stepName(id, key string, step int) string {
	return fmt.Sprintf("%s%s/%d.json", stepsPrefix(id), key, step)
}
func rollupName(id, key string, step int) string {
	return fmt.Sprintf("%s%s/%d.json", rollupPrefix(id), key, step)
}

// stepPrefix is the longest common prefix of the batch ids, cut after its last '-': plan.Step
// names batches <shard>-c<cursor>-<n>, big-key batches add -big-<i>.
func stepPrefix(batches []plan.Batch) string {
	if len(batches) == 0 {
		return ""
	}
	p := batches[0].ID
	for _, b := range batches[1:] {
		for !strings.HasPrefix(b.ID, p) {
			p = p[:len(p)-1]
		}
	}
	if i := strings.LastIndex(p, "-"); i >= 0 {
		p = p[:i+1]
	}
	return p
}

// CreateStep writes a step's manifest unless one exists, and returns the manifest that stands
// (created reports whether it is m). A replayed or concurrent delivery of the step gets the
// first one's batches, so the batches a step sends never depend on which delivery ran it.
func (s *Store) CreateStep(ctx context.Context, id string, m *StepManifest) (*StepManifest, bool, error) {
	m.Prefix = stepPrefix(m.Batches)
	if m.CreatedAt.IsZero() {
		m.CreatedAt = time.Now().UTC()
	}
	n := func(v int64) *string { return to.Ptr(strconv.FormatInt(v, 10)) }
	meta := map[string]*string{"key": to.Ptr(m.Key), "step": n(int64(m.Step)), "batches": n(int64(len(m.Batches))),
		"scanned": n(int64(m.Scanned)), "prefix": to.Ptr(m.Prefix)}
	if len(m.Batches) > 0 {
		meta["last"] = to.Ptr(m.Batches[len(m.Batches)-1].ID)
	}
	_, err := s.putJSON(ctx, stepName(id, m.Key, m.Step), m, meta, createOnly())
	if err == nil {
		return m, true, nil
	}
	if err != ErrExists {
		return nil, false, err
	}
	got, err := s.GetStep(ctx, id, m.Key, m.Step)
	return got, false, err
}

// GetStep reads a step's manifest; ErrNotFound if the step was never cut.
func (s *Store) GetStep(ctx context.Context, id, key string, step int) (*StepManifest, error) {
	var m StepManifest
	if _, err := s.getJSON(ctx, stepName(id, key, step), &m); err != nil {
		return nil, err
	}
	return &m, nil
}

// stepMeta is a listed manifest.
type stepMeta struct {
	key     string
	step    int
	prefix  string
	batches int64
	last    string // the id of the step's last batch
}

func (m stepMeta) id() string { return m.key + "/" + strconv.Itoa(m.step) }

// listSteps lists the manifests of a migration: one request per 5,000 steps.
func (s *Store) listSteps(ctx context.Context, id string) ([]stepMeta, error) {
	var out []stepMeta
	err := s.listAll(ctx, stepsPrefix(id), func(rest string, md metadata) {
		key, step, ok := parseStepRest(rest)
		if !ok {
			return
		}
		p := ""
		if v := md["prefix"]; v != nil {
			p = *v
		}
		out = append(out, stepMeta{key: key, step: step, prefix: p, batches: md.num("batches")})
	})
	sort.Slice(out, func(i, j int) bool {
		if out[i].key != out[j].key {
			return out[i].key < out[j].key
		}
		return out[i].step < out[j].step
	})
	return out, err
}

// parseStepRest splits "<shard>/<step>.json".
func parseStepRest(rest string) (string, int, bool) {
	key, file, ok := strings.Cut(rest, "/")
	if !ok {
		return "", 0, false
	}
	step, err := strconv.Atoi(strings.TrimSuffix(file, ".json"))
	return key, step, err == nil
}

// stepSum is what the results of one step add up to.
type stepSum struct {
	res                          copier.Result
	parents, bigs, spawned, dead int64
	finished                     int64    // unix ms of the latest result
	failing                      []string // batches with failures or dead-lettered, in name order
	rolled                       bool     // found complete and rolled up by this reader
}

func (t *stepSum) add(r resultSummary) {
	t.res.Add(r.res)
	if strings.Contains(r.batch, "-big-") {
		t.bigs++
	} else {
		t.parents++
	}
	t.spawned += r.spawned
	if r.dead {
		t.dead++
	}
	t.finished = max(t.finished, r.finished)
	if (r.res.Failed > 0 || r.dead) && len(t.failing) < MaxFailuresShown {
		t.failing = append(t.failing, r.batch)
	}
}

// pending counts the step's batches without a result, its big-key batches included.
func (t *stepSum) pending(batches int64) int64 {
	return max(0, batches-t.parents) + max(0, t.spawned-t.bigs)
}

// complete: every batch of the manifest and every big-key batch they sent off has a result.
func (t *stepSum) complete(batches int64) bool {
	return t.parents >= batches && t.bigs >= t.spawned
}

// sumStep lists the results of one step (one request for up to 5,000 of them).
func (s *Store) sumStep(ctx context.Context, id string, m stepMeta) (*stepSum, error) {
	t := &stepSum{}
	if m.batches == 0 {
		return t, nil
	}
	var rs []resultSummary
	err := s.listMeta(ctx, resultPrefix(id)+m.prefix, func(rest string, md metadata) {
		rs = append(rs, summaryOf(m.prefix+rest, md))
	})
	if err != nil {
		return nil, err
	}
	sort.Slice(rs, func(i, j int) bool { return rs[i].batch < rs[j].batch })
	for _, r := range rs {
		t.add(r)
	}
	return t, nil
}

// RollStep rolls a step up if every one of its batches has a result; it reports whether the step
// is rolled up (now or before). Any number of callers may race: the first rollup written stands,
// and it is the same whoever wrote it. CopyBatch calls it after recording a result; status and
// resume call it for the steps they find complete.
//
// It is cheap while the step is far from done: the manifest's metadata is cached (it never
// changes), and as long as the step's last batch (the last one sent, so about the last one
// copied) has no result, the step is not complete and nothing is listed.
func (s *Store) RollStep(ctx context.Context, id, key string, step int) (bool, error) {
	m, err := s.stepInfo(ctx, id, key, step)
	if err == ErrNotFound {
		return false, nil // no manifest: the step was never cut
	}
	if err != nil {
		return false, err
	}
	if m.last != "" {
		if ok, err := s.exists(ctx, resultName(id, m.last)); err != nil || !ok {
			return false, err
		}
	}
	if ok, err := s.exists(ctx, rollupName(id, key, step)); err != nil || ok {
		return ok, err
	}
	t, err := s.sumStep(ctx, id, m)
	if err != nil {
		return false, err
	}
	if !t.complete(m.batches) {
		return false, nil
	}
	return true, s.writeRollup(ctx, id, m, t)
}

// stepInfo reads a manifest's metadata, from the cache when it can.
func (s *Store) stepInfo(ctx context.Context, id, key string, step int) (stepMeta, error) {
	name := stepName(id, key, step)
	s.mu.Lock()
	m, ok := s.steps[name]
	s.mu.Unlock()
	if ok {
		return m, nil
	}
	md, err := s.props(ctx, name)
	if err != nil {
		return stepMeta{}, err
	}
	m = stepMeta{key: key, step: step, batches: md.num("batches")}
	if v := md["prefix"]; v != nil {
		m.prefix = *v
	}
	if v := md["last"]; v != nil {
		m.last = *v
	}
	s.mu.Lock()
	if s.steps == nil || len(s.steps) >= 4096 {
		s.steps = map[string]stepMeta{}
	}
	s.steps[name] = m
	s.mu.Unlock()
	return m, nil
}

// writeRollup writes a complete step's totals (create-if-absent), with the names of its first
// failed keys and dead-lettered batches so status need not read the results again.
func (s *Store) writeRollup(ctx context.Context, id string, m stepMeta, t *stepSum) error {
	r := StepRollup{Key: m.key, Step: m.step, Prefix: m.prefix, Batches: t.parents + t.bigs, Spawned: t.spawned,
		DeadLettered: t.dead, Result: t.res, RolledAt: time.Now().UTC()}
	r.Result.Failures = nil
	if t.finished > 0 {
		r.FinishedAt = time.UnixMilli(t.finished).UTC()
	}
	full, err := s.readResults(ctx, id, t.failing)
	if err != nil {
		return err
	}
	for _, br := range full {
		if br.DeadLettered && len(r.DeadLetters) < MaxFailuresShown {
			r.DeadLetters = append(r.DeadLetters, DeadLetter{Batch: br.Batch, Keys: br.Keys, Reason: br.Reason})
		}
		for _, f := range br.Result.Failures {
			if len(r.Failures) >= MaxFailuresShown {
				break
			}
			r.Failures = append(r.Failures, Failure{Batch: br.Batch, Key: f.Key, Reason: f.Reason})
		}
	}
	n := func(v int64) *string { return to.Ptr(strconv.FormatInt(v, 10)) }
	meta := map[string]*string{
		"batches": n(r.Batches), "spawned": n(r.Spawned), "dead": n(r.DeadLettered), "finished": n(t.finished),
		"copied": n(t.res.Copied), "skipped": n(t.res.Skipped), "missing": n(t.res.Missing), "expired": n(t.res.Expired),
		"failed": n(t.res.Failed), "fallback": n(t.res.Fallback), "bytes": n(t.res.Bytes), "big": n(t.res.Big),
	}
	if _, err := s.putJSON(ctx, rollupName(id, m.key, m.step), r, meta, createOnly()); err != nil && err != ErrExists {
		return err
	}
	return nil
}

// readResults reads the named results in parallel, in order.
func (s *Store) readResults(ctx context.Context, id string, batches []string) ([]*BatchResult, error) {
	full := make([]*BatchResult, len(batches))
	errs := make([]error, len(batches))
	var wg sync.WaitGroup
	for i, b := range batches {
		wg.Add(1)
		go func() {
			defer wg.Done()
			full[i], errs[i] = s.GetResult(ctx, id, b)
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return nil, err
		}
	}
	return full, nil
}

// rollupMeta is a listed rollup.
type rollupMeta struct {
	name                          string // blob name, to read failures from
	res                           copier.Result
	batches, spawned, dead, final int64
}

func (s *Store) listRollups(ctx context.Context, id string) (map[string]rollupMeta, error) {
	out := map[string]rollupMeta{}
	err := s.listAll(ctx, rollupPrefix(id), func(rest string, md metadata) {
		key, step, ok := parseStepRest(rest)
		if !ok {
			return
		}
		out[stepMeta{key: key, step: step}.id()] = rollupMeta{name: rollupPrefix(id) + rest, res: resultOf(md),
			batches: md.num("batches"), spawned: md.num("spawned"), dead: md.num("dead"), final: md.num("finished")}
	})
	return out, err
}

// totals is what status needs of a copy's batch results.
type totals struct {
	res        copier.Result
	done, dead int64
	spawned    int64
	lastFinish int64
	// pending is exact when steps is set: the batches of the recorded steps without a result
	// (a big-key batch recorded before its parent does not make up for the parent).
	pending int64
	steps   *StepCounts
	failing []failRef
}

// failRef names where failed keys are to be read: a batch result or a step rollup.
type failRef struct{ batch, rollup string }

// batchTotals adds up a copy's results. A migration with step manifests is counted from its
// rollups and the results of its steps in flight (rolling up those it finds complete); one
// without (results recorded directly, as the state tests do) by one listing of every result.
func (s *Store) batchTotals(ctx context.Context, id string) (*totals, error) {
	var steps []stepMeta
	var rolled map[string]rollupMeta
	var stepErr, rollErr error
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); steps, stepErr = s.listSteps(ctx, id) }()
	go func() { defer wg.Done(); rolled, rollErr = s.listRollups(ctx, id) }()
	wg.Wait()
	if stepErr != nil {
		return nil, stepErr
	}
	if rollErr != nil {
		return nil, rollErr
	}
	t := &totals{}
	if len(steps) == 0 {
		results, err := s.listResults(ctx, id)
		if err != nil {
			return nil, err
		}
		for _, r := range results {
			t.res.Add(r.res)
			t.done++
			t.spawned += r.spawned
			if r.dead {
				t.dead++
			}
			if (r.res.Failed > 0 || r.dead) && len(t.failing) < MaxFailuresShown {
				t.failing = append(t.failing, failRef{batch: r.batch})
			}
			t.lastFinish = max(t.lastFinish, r.finished)
		}
		return t, nil
	}
	t.steps = &StepCounts{Recorded: len(steps)}
	var inflight []stepMeta
	for _, m := range steps {
		if _, ok := rolled[m.id()]; !ok {
			inflight = append(inflight, m)
		}
	}
	sums := make([]*stepSum, len(inflight))
	errs := make([]error, len(inflight))
	sem := make(chan struct{}, 32)
	for i, m := range inflight {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			sum, err := s.sumStep(ctx, id, m)
			if err == nil && sum.complete(m.batches) {
				// Found complete (its last batch's roll did not run, or a crash stopped it): roll
				// it up now, so the next status does not list it again.
				if err = s.writeRollup(ctx, id, m, sum); err == nil {
					sum.rolled = true
				}
			}
			sums[i], errs[i] = sum, err
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return nil, err
		}
	}
	// In step order, so the failures listed are the first ones.
	j := 0
	for _, m := range steps {
		if r, ok := rolled[m.id()]; ok {
			t.steps.RolledUp++
			t.res.Add(r.res)
			t.done += r.batches
			t.dead += r.dead
			t.spawned += r.spawned
			t.lastFinish = max(t.lastFinish, r.final)
			if (r.res.Failed > 0 || r.dead > 0) && len(t.failing) < MaxFailuresShown {
				t.failing = append(t.failing, failRef{rollup: r.name})
			}
			continue
		}
		sum := sums[j]
		j++
		if sum.rolled {
			t.steps.RolledUp++
		}
		t.res.Add(sum.res)
		t.done += sum.parents + sum.bigs
		t.dead += sum.dead
		t.spawned += sum.spawned
		t.pending += sum.pending(m.batches)
		t.lastFinish = max(t.lastFinish, sum.finished)
		for _, b := range sum.failing {
			if len(t.failing) < MaxFailuresShown {
				t.failing = append(t.failing, failRef{batch: b})
			}
		}
	}
	t.steps.InFlight = t.steps.Recorded - t.steps.RolledUp
	return t, nil
}

// BigBatchID names the batch that copies key i of batch in chunks.
func BigBatchID(batch string, i int) string { return fmt.Sprintf("%s-big-%d", batch, i) }

// props reads a blob's metadata; ErrNotFound if there is no blob.
func (s *Store) props(ctx context.Context, name string) (metadata, error) {
	p, err := s.c.NewBlobClient(name).GetProperties(ctx, nil)
	if err != nil {
		var re *azcore.ResponseError
		if bloberror.HasCode(err, bloberror.BlobNotFound) || (errors.As(err, &re) && re.StatusCode == 404) {
			return nil, ErrNotFound
		}
		return nil, fmt.Errorf("reading %s: %s", name, describe(err))
	}
	return lowerKeys(p.Metadata), nil
}

// listAll is listMeta over every blob under prefix, sub-folders included; fn gets the name
// without prefix.
func (s *Store) listAll(ctx context.Context, prefix string, fn func(rest string, md metadata)) error {
	pager := s.c.NewListBlobsFlatPager(&container.ListBlobsFlatOptions{
		Prefix: to.Ptr(prefix), Include: container.ListBlobsInclude{Metadata: true},
	})
	for pager.More() {
		page, err := pager.NextPage(ctx)
		if err != nil {
			return fmt.Errorf("listing %s: %s", prefix, describe(err))
		}
		for _, it := range page.Segment.BlobItems {
			if it.Name != nil {
				fn(strings.TrimPrefix(*it.Name, prefix), lowerKeys(it.Metadata))
			}
		}
	}
	return nil
}

// resultOf reads the counts of a result's or a rollup's metadata.
func resultOf(md metadata) copier.Result {
	return copier.Result{Copied: md.num("copied"), Skipped: md.num("skipped"), Missing: md.num("missing"),
		Expired: md.num("expired"), Failed: md.num("failed"), Fallback: md.num("fallback"), Bytes: md.num("bytes"), Big: md.num("big")}
}

func summaryOf(batch string, md metadata) resultSummary {
	return resultSummary{batch: batch, res: resultOf(md), dead: md.has("deadlettered"), finished: md.num("finished"), spawned: md.num("spawned")}
}

// MissingWork is what a resume must send again: the batches (with their step) that have no
// result, and the big-key batches a recorded batch sent off that have none.
type MissingWork struct {
	Batches []MissingBatch
	Steps   int // steps looked at (not rolled up)
}

// MissingBatch is one batch without a result; Big lists the positions of its keys whose big-key
// batches have no result (the batch itself has one then).
type MissingBatch struct {
	Key   string
	Step  int
	Batch plan.Batch
	Big   []int
}

// Missing finds the work of a copy that has no result, step by step (rolling up the steps it
// finds complete). Steps are read only when not rolled up.
func (s *Store) Missing(ctx context.Context, id string) (*MissingWork, error) {
	steps, err := s.listSteps(ctx, id)
	if err != nil {
		return nil, err
	}
	rolled, err := s.listRollups(ctx, id)
	if err != nil {
		return nil, err
	}
	var todo []stepMeta
	for _, m := range steps {
		if _, ok := rolled[m.id()]; !ok {
			todo = append(todo, m)
		}
	}
	// Steps in parallel (each is a listing and, if incomplete, its manifest), results in step order.
	found := make([][]MissingBatch, len(todo))
	errs := make([]error, len(todo))
	sem := make(chan struct{}, 16)
	var wg sync.WaitGroup
	for i, m := range todo {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			found[i], errs[i] = s.missingOfStep(ctx, id, m)
		}()
	}
	wg.Wait()
	out := &MissingWork{Steps: len(todo)}
	for i := range todo {
		if errs[i] != nil {
			return nil, errs[i]
		}
		out.Batches = append(out.Batches, found[i]...)
	}
	return out, nil
}

// missingOfStep is Missing for one step that is not rolled up (it rolls it up if complete).
func (s *Store) missingOfStep(ctx context.Context, id string, m stepMeta) ([]MissingBatch, error) {
	sum, err := s.sumStep(ctx, id, m)
	if err != nil {
		return nil, err
	}
	if sum.complete(m.batches) {
		return nil, s.writeRollup(ctx, id, m, sum)
	}
	man, err := s.GetStep(ctx, id, m.key, m.step)
	if err != nil {
		return nil, err
	}
	have := map[string]bool{}
	spawned := map[string]int64{}
	if err := s.listMeta(ctx, resultPrefix(id)+man.Prefix, func(rest string, md metadata) {
		r := summaryOf(man.Prefix+rest, md)
		have[r.batch] = true
		spawned[r.batch] = r.spawned
	}); err != nil {
		return nil, err
	}
	var out []MissingBatch
	for _, b := range man.Batches {
		if !have[b.ID] {
			out = append(out, MissingBatch{Key: m.key, Step: m.step, Batch: b})
			continue
		}
		if spawned[b.ID] == 0 {
			continue
		}
		pos, err := s.SpawnedBig(ctx, id, b.ID)
		if err != nil {
			return nil, err
		}
		var big []int
		for _, i := range pos {
			if !have[BigBatchID(b.ID, i)] {
				big = append(big, i)
			}
		}
		if len(big) > 0 {
			out = append(out, MissingBatch{Key: m.key, Step: m.step, Batch: b, Big: big})
		}
	}
	return out, nil
}
