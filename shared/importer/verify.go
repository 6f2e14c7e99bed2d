package importer

import (
	"context"
	"fmt"
	"io"
	"sort"
	"sync"
	"time"

	"github.com/redis-migrate/redis-migrate/shared/rdb"
	"github.com/redis-migrate/redis-migrate/shared/redisconn"
	"github.com/redis-migrate/redis-migrate/shared/verify"
)

// verifyWorkers check batches of the file's keys against the target at once.
const verifyWorkers = 4

// maxNamedKeys bounds the key names kept (8 bytes each) to name keys found only in the target.
const maxNamedKeys = 4 << 20

// verifyBatch is how many keys one check of the target reads.
const verifyBatch = 256

// Verify re-reads the file and checks every key it imported (same db map, prefixes and match)
// against the target: present, same type, same value, same TTL; then it looks for keys that
// exist only in the target. Values are compared by the target's DUMP payload against the
// file's own value bytes (what the import RESTOREd), decoded and compared as data where the
// bytes differ (a target that re-encodes), and by digests (computed from the file here and
// inside the target there) for values the file holds in parts, streams and big keys. Keys whose
// TTL passes meanwhile are not checked.
func Verify(ctx context.Context, r io.Reader, dst *redisconn.Conn, o Options) (*verify.Report, error) {
	vo := verify.Options{DBMap: o.DBMap, PresenceOnly: o.Existing == "skip", Compare: o.VerifyCompare,
		AllowExtra: o.Existing != "" && o.Existing != "fail", SizeFromExpected: o.WroteAll}.WithDefaults()
	if o.DBMap.Target == nil {
		o.DBMap = vo.DBMap
	}
	start := time.Now()
	rep := &verify.Report{Mode: "full, against the file", ExtraAllowed: vo.AllowExtra}
	// Values compared by their bytes are not decoded (RawValues); the others are decoded for
	// their digests. The import's own read checked the CRC64; a file changed since then shows as
	// values that differ, so this read does not compute it again.
	rd, err := rdb.NewReader(r, rdb.Options{SkipChecksum: true, RawValues: true, ReuseEntries: true})
	if err != nil {
		return nil, err
	}
	ver := rd.Version()
	pending := map[int][]verify.Expected{}
	found := map[int]int64{}
	sets := map[int]*verify.KeySet{}
	// Batches are checked by a few workers while the file is read on: reading and the target's
	// round trips overlap.
	type job struct {
		tdb   int
		items []verify.Expected
	}
	jobs := make(chan job, verifyWorkers)
	var mu sync.Mutex
	var checkErr error
	var wg sync.WaitGroup
	for i := 0; i < verifyWorkers; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range jobs {
				var part verify.Report
				n, err := verify.CheckExpected(ctx, dst, j.tdb, j.items, vo, &part)
				mu.Lock()
				found[j.tdb] += n
				rep.Merge(&part, vo.MaxReported)
				if err != nil && checkErr == nil {
					checkErr = err
				}
				mu.Unlock()
			}
		}()
	}
	gone := func() {
		mu.Lock()
		rep.GoneSource++
		mu.Unlock()
	}
	failed := func() error {
		mu.Lock()
		defer mu.Unlock()
		return checkErr
	}
	flush := func(tdb int) error {
		ws := pending[tdb]
		if len(ws) == 0 {
			return failed()
		}
		pending[tdb] = nil
		select {
		case jobs <- job{tdb, ws}:
		case <-ctx.Done():
			return ctx.Err()
		}
		return failed()
	}
	finish := func() error {
		close(jobs)
		wg.Wait()
		return checkErr
	}
	defer func() {
		if jobs != nil {
			close(jobs)
			wg.Wait()
		}
	}()
	var vd *verify.ValueDigest
	now := time.Now().UnixMilli()
	liveParts := 0 // parts of the current value with something left after field expiry
	var body []byte
	for {
		e, err := rd.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return rep, err
		}
		if e.Kind != rdb.KindKey {
			continue
		}
		tdb, mapped := o.DBMap.Target[e.DB]
		if !mapped || (o.Match != "" && !verify.Glob(o.Match, string(e.Key))) {
			continue
		}
		tkey := o.DBMap.Prefix[e.DB] + string(e.Key)
		if e.Part == 0 {
			if sets[tdb] == nil {
				sets[tdb] = verify.NewKeySet(maxNamedKeys)
			}
			sets[tdb].Add(tkey)
			vd, body = nil, nil
			liveParts = 0
		}
		// A value the file holds whole in an encoding every target type code shares is compared
		// by its bytes (or decoded); others by digest, built here part by part.
		whole := e.Part == 0 && e.Last && e.Raw != nil && e.TypeByte < 22 && e.Type != rdb.TypeStream && e.Type != rdb.TypeModule
		v := e.Value
		live := true // something of the value is left to import
		if h, ok := v.(*rdb.Hash); ok {
			// Expired fields were left out by the import, as by a loading server.
			if h = liveFields(h, now); len(h.Fields) == 0 {
				live = false
			} else {
				v = h
			}
		}
		if live {
			liveParts++
		}
		switch {
		case whole && live:
			body = e.Body()
		case live:
			if v == nil { // left raw by the reader, yet not compared by its bytes
				if v, err = rd.Decode(e); err != nil {
					return rep, err
				}
			}
			if vd == nil {
				vd = verify.NewValueDigest(e.Type, vo.ChunkSize)
			}
			vd.Add(v)
		}
		if !e.Last {
			continue
		}
		if liveParts == 0 {
			gone() // a hash whose fields all expired: not imported
			continue
		}
		if e.ExpireAtMs > 0 && e.ExpireAtMs <= time.Now().UnixMilli()+vo.TTLTolerance.Milliseconds() {
			gone() // expired (or about to) in the target too: nothing to compare
			continue
		}
		st := verify.KeyState{Type: e.Type.String(), ExpireAt: e.ExpireAtMs}
		if vd != nil {
			st.Digest = vd.Sum()
		}
		if e.ExpireAtMs == 0 {
			st.ExpireAt = -1
		}
		if e.Type == rdb.TypeModule && o.Modules == ModulesSkip {
			continue // left out on purpose when the target lacks the module
		}
		if e.Type == rdb.TypeModule {
			st.Type, st.Digest = "", "" // a module's type name and value: presence only
			vo2 := vo
			vo2.PresenceOnly = true
			got, err := verify.ReadStates(ctx, dst, dst.Keys(tdb), []string{tkey}, vo.ChunkSize)
			if err != nil {
				return rep, err
			}
			st.Type = got[0].Type
			mu.Lock()
			if st.Type == "none" {
				st.Type = "module"
			} else {
				found[tdb]++
			}
			rep.Compare(tkey, st, got[0], vo2)
			mu.Unlock()
			continue
		}
		if pending[tdb] == nil {
			pending[tdb] = make([]verify.Expected, 0, verifyBatch) // not grown by doubling
		}
		pending[tdb] = append(pending[tdb], verify.Expected{Key: tkey, State: st, Body: body, RDBVersion: ver})
		body = nil
		if len(pending[tdb]) >= verifyBatch {
			if err := flush(tdb); err != nil {
				return rep, err
			}
		}
	}
	for tdb := range pending {
		if err := flush(tdb); err != nil {
			return rep, err
		}
	}
	err = finish()
	jobs = nil
	if err != nil {
		return rep, err
	}
	// Keys only in the target: per target db, with the prefixes of the source dbs mapped to it.
	prefixes := map[int][]string{}
	for _, db := range o.DBMap.Sources() {
		tdb := o.DBMap.Target[db]
		prefixes[tdb] = append(prefixes[tdb], o.DBMap.Prefix[db])
	}
	tdbs := make([]int, 0, len(prefixes))
	for tdb := range prefixes {
		tdbs = append(tdbs, tdb)
	}
	sort.Ints(tdbs)
	for _, tdb := range tdbs {
		set := sets[tdb]
		if set == nil {
			set = verify.NewKeySet(0)
		}
		if err := verify.ExtraInTarget(ctx, dst, tdb, found[tdb], set, prefixes[tdb], verify.Options{Match: o.Match, MaxReported: vo.MaxReported}, rep); err != nil {
			return rep, fmt.Errorf("looking for keys only in the target: %w", err)
		}
	}
	rep.ExtraChecked = true
	rep.Seconds = time.Since(start).Seconds()
	return rep, nil
}
