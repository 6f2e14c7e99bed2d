package importer

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/redis-migrate/redis-migrate/shared/rdb"
	"github.com/redis-migrate/redis-migrate/shared/redact"
	"github.com/redis-migrate/redis-migrate/shared/redisconn"
	"github.com/redis-migrate/redis-migrate/shared/verify"
)

// Verify re-reads the file and checks every key it imported (same db map, prefixes and match)
// against the target: present, same type, same value digest (computed from the file here and
// inside the target there), same TTL. Keys whose TTL passes meanwhile are not checked.
func Verify(ctx context.Context, r io.Reader, dst *redisconn.Conn, o Options) (*verify.Report, error) {
	vo := verify.Options{DBMap: o.DBMap, PresenceOnly: o.Existing == "skip"}.WithDefaults()
	if o.DBMap.Target == nil {
		o.DBMap = vo.DBMap
	}
	start := time.Now()
	rep := &verify.Report{Mode: "full, against the file"}
	rd, err := rdb.NewReader(r, rdb.Options{SkipChecksum: o.SkipChecksum})
	if err != nil {
		return nil, err
	}
	type want struct {
		key   string
		state verify.KeyState
	}
	pending := map[int][]want{}
	flush := func(tdb int) error {
		ws := pending[tdb]
		if len(ws) == 0 {
			return nil
		}
		keys := make([]string, len(ws))
		for i, w := range ws {
			keys[i] = w.key
		}
		got, err := verify.ReadStates(ctx, dst, dst.Keys(tdb), keys, vo.ChunkSize)
		if err != nil {
			return fmt.Errorf("reading target: %s", redact.Error(err))
		}
		for i, w := range ws {
			rep.Compare(w.key, w.state, got[i], vo)
		}
		pending[tdb] = ws[:0]
		return nil
	}
	var vd *verify.ValueDigest
	now := time.Now().UnixMilli()
	liveParts := 0 // parts of the current value with something left after field expiry
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
		if e.Part == 0 {
			vd = verify.NewValueDigest(e.Type, vo.ChunkSize)
			liveParts = 0
		}
		v := e.Value
		if h, ok := v.(*rdb.Hash); ok {
			// Expired fields were left out by the import, as by a loading server.
			if h = liveFields(h, now); len(h.Fields) == 0 {
				v = nil
			} else {
				v = h
			}
		}
		if v != nil {
			vd.Add(v)
			liveParts++
		}
		if !e.Last {
			continue
		}
		if liveParts == 0 {
			rep.GoneSource++ // a hash whose fields all expired: not imported
			continue
		}
		if e.ExpireAtMs > 0 && e.ExpireAtMs <= time.Now().UnixMilli()+vo.TTLTolerance.Milliseconds() {
			rep.GoneSource++ // expired (or about to) in the target too: nothing to compare
			continue
		}
		st := verify.KeyState{Type: e.Type.String(), ExpireAt: e.ExpireAtMs, Digest: vd.Sum()}
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
			got, err := verify.ReadStates(ctx, dst, dst.Keys(tdb), []string{o.DBMap.Prefix[e.DB] + string(e.Key)}, vo.ChunkSize)
			if err != nil {
				return rep, err
			}
			st.Type = got[0].Type
			if st.Type == "none" {
				st.Type = "module"
			}
			rep.Compare(o.DBMap.Prefix[e.DB]+string(e.Key), st, got[0], vo2)
			continue
		}
		pending[tdb] = append(pending[tdb], want{o.DBMap.Prefix[e.DB] + string(e.Key), st})
		if len(pending[tdb]) >= 200 {
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
	rep.Seconds = time.Since(start).Seconds()
	return rep, nil
}
