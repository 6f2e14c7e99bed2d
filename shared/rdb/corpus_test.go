package rdb

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
)

// corpusDir is the shared acceptance corpus, relative to this package.
const corpusDir = "../../../shared/rdb-corpus"

func needCorpus(t testing.TB) {
	t.Helper()
	if _, err := os.Stat(filepath.Join(corpusDir, "_decoded")); err != nil {
		if os.Getenv("REQUIRE_CORPUS") == "1" {
			t.Fatalf("RDB corpus required (REQUIRE_CORPUS=1) but not found: %v", err)
		}
		t.Skip("RDB corpus not present:", err)
	}
}

// corpusFiles lists corpus files that have a reference decode, relative to
// corpusDir.
func corpusFiles(t testing.TB) []string {
	needCorpus(t)
	var out []string
	root := filepath.Join(corpusDir, "_decoded")
	err := filepath.Walk(root, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		if !fi.IsDir() && strings.HasSuffix(p, ".json") {
			rel, _ := filepath.Rel(root, p)
			out = append(out, strings.TrimSuffix(rel, ".json"))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(out)
	return out
}

// ---- reference JSON ----

// fixNonFinite turns the bare NaN/Infinity tokens Python writes into
// strings encoding/json accepts.
func fixNonFinite(b []byte) []byte {
	var out bytes.Buffer
	inStr, esc := false, false
	for i := 0; i < len(b); i++ {
		c := b[i]
		if inStr {
			out.WriteByte(c)
			switch {
			case esc:
				esc = false
			case c == '\\':
				esc = true
			case c == '"':
				inStr = false
			}
			continue
		}
		switch {
		case c == '"':
			inStr = true
		case bytes.HasPrefix(b[i:], []byte("-Infinity")):
			out.WriteString(`"\u0000-inf"`)
			i += len("-Infinity") - 1
			continue
		case bytes.HasPrefix(b[i:], []byte("Infinity")):
			out.WriteString(`"\u0000+inf"`)
			i += len("Infinity") - 1
			continue
		case bytes.HasPrefix(b[i:], []byte("NaN")):
			out.WriteString(`"\u0000nan"`)
			i += len("NaN") - 1
			continue
		}
		out.WriteByte(c)
	}
	return out.Bytes()
}

type refFile struct {
	Info map[string]any   `json:"info"`
	Keys []map[string]any `json:"keys"`
}

func loadRef(t testing.TB, rel string) *refFile {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(corpusDir, "_decoded", rel+".json"))
	if err != nil {
		t.Fatal(err)
	}
	dec := json.NewDecoder(bytes.NewReader(fixNonFinite(b)))
	dec.UseNumber()
	var r refFile
	if err := dec.Decode(&r); err != nil {
		t.Fatalf("%s: %v", rel, err)
	}
	return &r
}

// refBytes decodes a reference string ("hex:..." for binary data).
func refBytes(v any) []byte {
	s, _ := v.(string)
	if strings.HasPrefix(s, "hex:") {
		b, err := hex.DecodeString(s[4:])
		if err == nil {
			return b
		}
	}
	return []byte(s)
}

func refFloat(v any) float64 {
	switch x := v.(type) {
	case json.Number:
		f, _ := x.Float64()
		return f
	case string:
		switch x {
		case "\x00-inf":
			return math.Inf(-1)
		case "\x00+inf":
			return math.Inf(1)
		case "\x00nan":
			return math.NaN()
		}
	}
	return math.NaN()
}

func refInt(v any) int64 {
	if n, ok := v.(json.Number); ok {
		i, err := n.Int64()
		if err == nil {
			return i
		}
		u, _ := strconv.ParseUint(string(n), 10, 64)
		return int64(u)
	}
	return math.MinInt64
}

// ---- decoding a file ----

type gotKey struct {
	e      Entry // first part (Value replaced by the assembled value)
	value  Value
	parts  int
	offset int64
}

type gotFile struct {
	version   int
	valkey    bool
	keys      []gotKey
	aux       []*Entry
	moduleAux []*Entry
	functions []*Entry
	slots     []*Entry
	empty     int
	offsets   []int64 // entry start offsets (resume points)
}

func elemCount(v Value) int {
	switch x := v.(type) {
	case *List:
		return len(x.Items)
	case *Set:
		return len(x.Members)
	case *ZSet:
		return len(x.Members)
	case *Hash:
		return len(x.Fields)
	case *Stream:
		return len(x.Entries)
	}
	return 1
}

// mergeValue appends part src to the assembled value dst.
func mergeValue(dst, src Value) (Value, error) {
	switch d := dst.(type) {
	case *String:
		d.Data = append(d.Data, src.(*String).Data...)
	case *List:
		d.Items = append(d.Items, src.(*List).Items...)
	case *Set:
		d.Members = append(d.Members, src.(*Set).Members...)
	case *ZSet:
		d.Members = append(d.Members, src.(*ZSet).Members...)
	case *Hash:
		d.Fields = append(d.Fields, src.(*Hash).Fields...)
	case *Stream:
		s := src.(*Stream)
		if d.HasMeta {
			return nil, fmt.Errorf("stream part after the metadata part")
		}
		entries := append(d.Entries, s.Entries...)
		if s.HasMeta {
			*d = *s
		}
		d.Entries = entries
	default:
		return nil, fmt.Errorf("type %T delivered in parts", dst)
	}
	return dst, nil
}

func cloneValue(v Value) Value {
	switch x := v.(type) {
	case *String:
		c := *x
		c.Data = append([]byte{}, x.Data...)
		return &c
	case *List:
		return &List{Items: append([][]byte{}, x.Items...)}
	case *Set:
		return &Set{Members: append([][]byte{}, x.Members...)}
	case *ZSet:
		return &ZSet{Members: append([]ZMember{}, x.Members...)}
	case *Hash:
		return &Hash{Fields: append([]HashField{}, x.Fields...)}
	case *Stream:
		c := *x
		c.Entries = append([]StreamEntry{}, x.Entries...)
		return &c
	}
	return v
}

// readFile decodes a whole file, checking the part protocol and Raw on the
// way.
func readFile(t testing.TB, r io.Reader, opts Options, check bool) (*gotFile, error) {
	rd, err := NewReader(r, opts)
	if err != nil {
		return nil, err
	}
	return drain(t, rd, opts, check)
}

func drain(t testing.TB, rd *Reader, opts Options, check bool) (*gotFile, error) {
	g := &gotFile{version: rd.Version(), valkey: rd.IsValkey()}
	o := opts.withDefaults()
	var cur *gotKey
	for {
		e, err := rd.Next()
		if err == io.EOF {
			if cur != nil {
				return g, fmt.Errorf("EOF inside a parted value")
			}
			g.empty = rd.EmptySkipped()
			return g, nil
		}
		if err != nil {
			return g, err
		}
		if cur == nil || e.Part == 0 {
			g.offsets = append(g.offsets, e.Offset)
		}
		switch e.Kind {
		case KindKey:
			if check {
				n := elemCount(e.Value)
				if e.Type != TypeString && e.Type != TypeModule && n > o.ChunkElements {
					t.Errorf("part of %d elements exceeds ChunkElements %d", n, o.ChunkElements)
				}
				if !e.Last && n == 0 {
					t.Errorf("key %q: empty non-final part %d", e.Key, e.Part)
				}
				if e.Raw != nil && (e.Part != 0 || !e.Last) {
					t.Errorf("key %q: Raw on a split value", e.Key)
				}
			}
			if e.Part == 0 {
				if cur != nil {
					return g, fmt.Errorf("key %q started before %q ended", e.Key, cur.e.Key)
				}
				cur = &gotKey{e: *e, value: cloneValue(e.Value), parts: 1, offset: e.Offset}
			} else {
				if cur == nil || e.Part != cur.parts || !bytes.Equal(e.Key, cur.e.Key) || e.Offset != cur.offset {
					return g, fmt.Errorf("bad part sequence at key %q part %d", e.Key, e.Part)
				}
				if cur.value, err = mergeValue(cur.value, e.Value); err != nil {
					return g, err
				}
				cur.parts++
			}
			if e.Last {
				if check && cur.parts == 1 && e.Raw != nil {
					checkRaw(t, e, rd.Version())
				}
				g.keys = append(g.keys, *cur)
				cur = nil
			}
		case KindAux:
			g.aux = append(g.aux, e)
		case KindModuleAux:
			g.moduleAux = append(g.moduleAux, e)
		case KindFunction:
			g.functions = append(g.functions, e)
		case KindSlotInfo, KindSlotImport:
			g.slots = append(g.slots, e)
		}
	}
}

// checkRaw verifies that Entry.Raw framed as a DUMP payload decodes to the
// same value (the RESTORE fast path relies on it).
func checkRaw(t testing.TB, e *Entry, version int) {
	t.Helper()
	p := BuildDump(e.TypeByte, e.Raw, uint16(version))
	de, _, err := DecodeDump(p)
	if err != nil {
		t.Errorf("key %q: Raw does not decode as DUMP: %v", e.Key, err)
		return
	}
	if msg := diffValues(e.Value, de.Value); msg != "" {
		t.Errorf("key %q: Raw decodes differently: %s", e.Key, msg)
	}
}

// ---- comparing ----

type cmp struct {
	errs []string
}

func (c *cmp) f(format string, args ...any) {
	if len(c.errs) < 20 {
		c.errs = append(c.errs, fmt.Sprintf(format, args...))
	}
}

func sameFloat(a, b float64) bool {
	return a == b || math.IsNaN(a) && math.IsNaN(b)
}

func compareValue(c *cmp, key string, typ string, ref any, v Value) {
	switch typ {
	case "string":
		s, ok := v.(*String)
		if !ok || !bytes.Equal(s.Data, refBytes(ref)) {
			c.f("%s: string value differs", key)
		}
	case "list", "set":
		arr, _ := ref.([]any)
		var items [][]byte
		if l, ok := v.(*List); ok {
			items = l.Items
		} else if s, ok := v.(*Set); ok {
			items = s.Members
		}
		if len(arr) != len(items) {
			c.f("%s: %d items, reference %d", key, len(items), len(arr))
			return
		}
		want := make([][]byte, len(arr))
		for i := range arr {
			want[i] = refBytes(arr[i])
		}
		if typ == "set" {
			// The reference lists set members sorted; order carries no meaning.
			items = append([][]byte{}, items...)
			sort.Slice(items, func(i, j int) bool { return bytes.Compare(items[i], items[j]) < 0 })
			sort.Slice(want, func(i, j int) bool { return bytes.Compare(want[i], want[j]) < 0 })
		}
		for i := range want {
			if !bytes.Equal(items[i], want[i]) {
				c.f("%s: item %d = %q, reference %q", key, i, items[i], want[i])
				return
			}
		}
	case "zset":
		arr, _ := ref.([]any)
		z, _ := v.(*ZSet)
		if z == nil || len(arr) != len(z.Members) {
			c.f("%s: zset size differs", key)
			return
		}
		for i, a := range arr {
			pair, _ := a.([]any)
			if len(pair) != 2 || !bytes.Equal(z.Members[i].Member, refBytes(pair[0])) || !sameFloat(z.Members[i].Score, refFloat(pair[1])) {
				c.f("%s: member %d = %q/%v, reference %v", key, i, z.Members[i].Member, z.Members[i].Score, a)
				return
			}
		}
	case "hash":
		obj, _ := ref.(map[string]any)
		h, _ := v.(*Hash)
		if h == nil || len(obj) != len(h.Fields) {
			c.f("%s: hash size differs", key)
			return
		}
		for _, f := range h.Fields {
			rv, ok := obj[string(f.Field)]
			if !ok {
				// JSON object keys may be hex-encoded too.
				rv, ok = obj["hex:"+hex.EncodeToString(f.Field)]
			}
			if !ok {
				c.f("%s: field %q missing from reference", key, f.Field)
				continue
			}
			var want []byte
			var exp int64
			if m, isMap := rv.(map[string]any); isMap {
				want, exp = refBytes(m["value"]), refInt(m["expire_ms"])
			} else {
				want = refBytes(rv)
			}
			if !bytes.Equal(want, f.Value) || exp != f.ExpireAtMs {
				c.f("%s: field %q = %q ttl %d, reference %q ttl %d", key, f.Field, f.Value, f.ExpireAtMs, want, exp)
			}
		}
	case "stream":
		compareStream(c, key, ref, v)
	case "module":
		obj, _ := ref.(map[string]any)
		m, _ := v.(*Module)
		if m == nil {
			c.f("%s: not a module", key)
			return
		}
		compareModule(c, key, obj, m)
	default:
		c.f("%s: unknown reference type %s", key, typ)
	}
}

func compareModule(c *cmp, key string, obj map[string]any, m *Module) {
	if m.Name != obj["module"] || int64(m.EncVer) != refInt(obj["encver"]) {
		c.f("%s: module %s/%d, reference %v/%v", key, m.Name, m.EncVer, obj["module"], obj["encver"])
	}
	ops, err := m.Ops()
	if err != nil {
		c.f("%s: module ops: %v", key, err)
		return
	}
	data, _ := obj["data"].([]any)
	if len(data) != len(ops) {
		c.f("%s: %d module ops, reference %d", key, len(ops), len(data))
		return
	}
	for i, d := range data {
		pair, _ := d.([]any)
		kind, _ := pair[0].(string)
		op := ops[i]
		ok := false
		switch kind {
		case "int":
			ok = (op.Code == ModuleOpSInt || op.Code == ModuleOpUInt) && int64(op.Int) == refInt(pair[1])
		case "str":
			ok = op.Code == ModuleOpString && bytes.Equal(op.Str, refBytes(pair[1]))
		case "float", "double":
			ok = (op.Code == ModuleOpFloat || op.Code == ModuleOpDouble) && sameFloat(op.Float, refFloat(pair[1]))
		}
		if !ok {
			c.f("%s: module op %d = %+v, reference %v", key, i, op, d)
		}
	}
}

func compareStream(c *cmp, key string, ref any, v Value) {
	obj, _ := ref.(map[string]any)
	s, _ := v.(*Stream)
	if s == nil || !s.HasMeta {
		c.f("%s: stream without metadata", key)
		return
	}
	entries, _ := obj["entries"].([]any)
	if len(entries) != len(s.Entries) {
		c.f("%s: %d entries, reference %d", key, len(s.Entries), len(entries))
		return
	}
	for i, re := range entries {
		pair, _ := re.([]any)
		e := s.Entries[i]
		fields, _ := pair[1].(map[string]any)
		got := map[string]string{}
		for j := 0; j+1 < len(e.Fields); j += 2 {
			got[string(e.Fields[j])] = string(e.Fields[j+1])
		}
		if pair[0] != e.ID.String() || len(got) != len(fields) {
			c.f("%s: entry %d = %s (%d fields), reference %v", key, i, e.ID, len(got), pair)
			continue
		}
		for f, rv := range fields {
			if got[string(refBytes(f))] != string(refBytes(rv)) {
				c.f("%s: entry %s field %s differs", key, e.ID, f)
			}
		}
	}
	meta, _ := obj["meta"].(map[string]any)
	if refInt(meta["length"]) != int64(s.Length) || meta["last_id"] != s.LastID.String() {
		c.f("%s: length/last id %d/%s, reference %v/%v", key, s.Length, s.LastID, meta["length"], meta["last_id"])
	}
	if v, ok := meta["first_id"]; ok && v != s.FirstID.String() {
		c.f("%s: first id %s, reference %v", key, s.FirstID, v)
	}
	if v, ok := meta["max_deleted_id"]; ok && v != s.MaxDeletedID.String() {
		c.f("%s: max deleted id %s, reference %v", key, s.MaxDeletedID, v)
	}
	if v, ok := meta["entries_added"]; ok && refInt(v) != int64(s.EntriesAdded) {
		c.f("%s: entries added %d, reference %v", key, s.EntriesAdded, v)
	}
	groups, _ := meta["groups"].([]any)
	if len(groups) != len(s.Groups) {
		c.f("%s: %d groups, reference %d", key, len(s.Groups), len(groups))
		return
	}
	for i, rg := range groups {
		gm, _ := rg.(map[string]any)
		g := s.Groups[i]
		if !bytes.Equal(g.Name, refBytes(gm["name"])) || gm["last_id"] != g.LastID.String() {
			c.f("%s: group %d = %q/%s, reference %v/%v", key, i, g.Name, g.LastID, gm["name"], gm["last_id"])
		}
		if v, ok := gm["entries_read"]; ok && refInt(v) != g.EntriesRead {
			c.f("%s: group %q entries read %d, reference %v", key, g.Name, g.EntriesRead, v)
		}
		pel, _ := gm["pel"].([]any)
		if len(pel) != len(g.PEL) {
			c.f("%s: group %q PEL %d, reference %d", key, g.Name, len(g.PEL), len(pel))
			continue
		}
		for j, rp := range pel {
			p, _ := rp.([]any)
			ge := g.PEL[j]
			if p[0] != ge.ID.String() || refInt(p[1]) != ge.DeliveryTime || refInt(p[2]) != int64(ge.DeliveryCount) {
				c.f("%s: PEL %d = %+v, reference %v", key, j, ge, p)
			}
		}
		cons, _ := gm["consumers"].([]any)
		if len(cons) != len(g.Consumers) {
			c.f("%s: group %q has %d consumers, reference %d", key, g.Name, len(g.Consumers), len(cons))
			continue
		}
		for j, rc := range cons {
			cm, _ := rc.(map[string]any)
			gc := g.Consumers[j]
			if !bytes.Equal(gc.Name, refBytes(cm["name"])) || refInt(cm["seen_time"]) != gc.SeenTime {
				c.f("%s: consumer %d = %q/%d, reference %v", key, j, gc.Name, gc.SeenTime, cm)
			}
			if v, ok := cm["active_time"]; ok && refInt(v) != gc.ActiveTime {
				c.f("%s: consumer %q active time %d, reference %v", key, gc.Name, gc.ActiveTime, v)
			}
			var own []string
			for _, p := range g.PEL {
				if bytes.Equal(p.Consumer, gc.Name) {
					own = append(own, p.ID.String())
				}
			}
			rpel, _ := cm["pel"].([]any)
			if fmt.Sprint(own) != fmt.Sprint(rpel) && !(len(own) == 0 && len(rpel) == 0) {
				c.f("%s: consumer %q PEL %v, reference %v", key, gc.Name, own, rpel)
			}
		}
	}
	if ri, ok := meta["idmp"].(map[string]any); ok {
		x := s.IDMP
		if x == nil {
			c.f("%s: IDMP missing", key)
			return
		}
		if refInt(ri["duration"]) != int64(x.Duration) || refInt(ri["max_entries"]) != int64(x.MaxEntries) ||
			refInt(ri["iids_added"]) != int64(x.IIDsAdded) || refInt(ri["iids_duplicates"]) != int64(x.IIDsDuplicates) {
			c.f("%s: IDMP header %+v, reference %v", key, *x, ri)
		}
		prods, _ := ri["producers"].([]any)
		if len(prods) != len(x.Producers) {
			c.f("%s: %d IDMP producers, reference %d", key, len(x.Producers), len(prods))
			return
		}
		for i, rp := range prods {
			pm, _ := rp.(map[string]any)
			p := x.Producers[i]
			var ents []string
			for _, e := range p.Entries {
				ents = append(ents, string(e.IID)+"@"+e.ID.String())
			}
			var rents []string
			res, _ := pm["entries"].([]any)
			for _, re := range res {
				pair, _ := re.([]any)
				rents = append(rents, fmt.Sprint(pair[0])+"@"+fmt.Sprint(pair[1]))
			}
			if !bytes.Equal(p.PID, refBytes(pm["pid"])) || fmt.Sprint(ents) != fmt.Sprint(rents) {
				c.f("%s: IDMP producer %d = %q %v, reference %v", key, i, p.PID, ents, pm)
			}
		}
	} else if s.IDMP != nil && len(s.IDMP.Producers) > 0 {
		c.f("%s: unexpected IDMP producers", key)
	}
}

func isEmptyRef(typ string, ref any) bool {
	switch typ {
	case "list", "set", "zset":
		a, _ := ref.([]any)
		return len(a) == 0
	case "hash":
		m, _ := ref.(map[string]any)
		return len(m) == 0
	}
	return false
}

// compareFile checks everything the reference decode states.
func compareFile(ref *refFile, g *gotFile) []string {
	c := &cmp{}
	if v := refInt(ref.Info["version"]); v != int64(g.version) {
		c.f("version %d, reference %d", g.version, v)
	}
	if len(ref.Keys) != len(g.keys) {
		c.f("%d keys, reference %d", len(g.keys), len(ref.Keys))
	}
	for i := 0; i < len(ref.Keys) && i < len(g.keys); i++ {
		rk, gk := ref.Keys[i], g.keys[i]
		key := string(gk.e.Key)
		if !bytes.Equal(gk.e.Key, refBytes(rk["key"])) {
			c.f("key %d = %q, reference %q", i, gk.e.Key, refBytes(rk["key"]))
			continue
		}
		if refInt(rk["db"]) != int64(gk.e.DB) {
			c.f("%s: db %d, reference %v", key, gk.e.DB, rk["db"])
		}
		typ, _ := rk["type"].(string)
		if typ != gk.e.Type.String() {
			c.f("%s: type %s, reference %s", key, gk.e.Type, typ)
			continue
		}
		if rt, _ := rk["rdbtype"].(string); strings.TrimSuffix(rt, "(valkey)") != TypeName(gk.e.TypeByte, g.valkey) {
			c.f("%s: rdb type %s, reference %s", key, TypeName(gk.e.TypeByte, g.valkey), rt)
		}
		var exp int64
		if v, ok := rk["expire_ms"]; ok {
			exp = refInt(v)
		}
		if exp != gk.e.ExpireAtMs {
			c.f("%s: expire %d, reference %d", key, gk.e.ExpireAtMs, exp)
		}
		idle, freq := int64(-1), int64(-1)
		if v, ok := rk["idle"]; ok {
			idle = refInt(v)
		}
		if v, ok := rk["freq"]; ok {
			freq = refInt(v)
		}
		if idle != gk.e.Idle || freq != int64(gk.e.Freq) {
			c.f("%s: idle/freq %d/%d, reference %d/%d", key, gk.e.Idle, gk.e.Freq, idle, freq)
		}
		if isEmptyRef(typ, rk["value"]) != gk.e.Empty {
			c.f("%s: Empty flag %v", key, gk.e.Empty)
		}
		compareValue(c, key, typ, rk["value"], gk.value)
	}
	// AUX fields.
	refAux, _ := ref.Info["aux"].(map[string]any)
	gotAux := map[string]string{}
	for _, a := range g.aux {
		gotAux[string(a.AuxKey)] = string(a.AuxValue)
	}
	if len(refAux) != len(gotAux) {
		c.f("%d aux fields, reference %d", len(gotAux), len(refAux))
	}
	for k, v := range refAux {
		if gv, ok := gotAux[string(refBytes(k))]; !ok || gv != string(refBytes(v)) {
			c.f("aux %s = %q, reference %q", k, gv, refBytes(v))
		}
	}
	// Functions.
	rf, _ := ref.Info["functions"].([]any)
	if len(rf) != len(g.functions) {
		c.f("%d functions, reference %d", len(g.functions), len(rf))
	} else {
		for i := range rf {
			if !bytes.Equal(refBytes(rf[i]), g.functions[i].Function) {
				c.f("function %d differs", i)
			}
		}
	}
	// Module AUX.
	rm, _ := ref.Info["module_aux"].([]any)
	if len(rm) != len(g.moduleAux) {
		c.f("%d module aux, reference %d", len(g.moduleAux), len(rm))
	} else {
		for i := range rm {
			obj, _ := rm[i].(map[string]any)
			e := g.moduleAux[i]
			if refInt(obj["when"]) != int64(e.ModuleWhen) {
				c.f("module aux %d when %d, reference %v", i, e.ModuleWhen, obj["when"])
			}
			compareModule(c, "module-aux", obj, e.Module)
		}
	}
	// Slot info / slot import.
	rs, _ := ref.Info["slot_info"].([]any)
	if len(rs) != len(g.slots) {
		c.f("%d slot entries, reference %d", len(g.slots), len(rs))
	} else {
		for i := range rs {
			e := g.slots[i]
			var got string
			if e.Kind == KindSlotInfo {
				got = fmt.Sprint([]uint64{e.Slot, e.SlotSize, e.SlotExpiresSize})
			} else {
				var rr [][]uint64
				for _, r := range e.SlotRanges {
					rr = append(rr, []uint64{r.Start, r.End})
				}
				got = fmt.Sprint(map[string]any{"slot_import_job": string(e.SlotImportJob), "ranges": rr})
			}
			want := fmt.Sprint(rs[i])
			if got != want {
				c.f("slot entry %d = %s, reference %s", i, got, want)
			}
		}
	}
	return c.errs
}

// ---- the test ----

// negative lists files that must fail, with the error they must produce.
var negative = map[string]struct {
	kind error
	text string
}{
	"redis-redis/tests/assets/corrupt_ziplist.rdb":      {ErrCorrupt, "ziplist"},
	"valkey-io-valkey/tests/assets/corrupt_ziplist.rdb": {ErrCorrupt, "ziplist"},
	"redis-librdb/test/dumps/future_v19.rdb":            {ErrUnsupported, "unsupported RDB version 99"},
	"redis-librdb/test/dumps/invalid_chksum_v8.rdb":     {ErrChecksum, "CRC64 mismatch"},
}

var chunkConfigs = []Options{
	{ReturnEmpty: true},
	{ReturnEmpty: true, ChunkElements: 1},
	{ReturnEmpty: true, ChunkElements: 3, ChunkBytes: 100},
}

func TestCorpus(t *testing.T) {
	files := corpusFiles(t)
	if len(files) < 150 {
		t.Fatalf("only %d reference decodes found", len(files))
	}
	matched := 0
	for _, rel := range files {
		ok := t.Run(rel, func(t *testing.T) {
			data, err := os.ReadFile(filepath.Join(corpusDir, rel))
			if err != nil {
				t.Fatal(err)
			}
			ref := loadRef(t, rel)
			skip := false
			if neg, isNeg := negative[rel]; isNeg {
				_, err := readFile(t, bytes.NewReader(data), Options{}, true)
				if err == nil || !errors.Is(err, neg.kind) || !strings.Contains(err.Error(), neg.text) {
					t.Fatalf("want %v error containing %q, got %v", neg.kind, neg.text, err)
				}
				t.Logf("rejected as expected: %v", err)
				if neg.kind != ErrChecksum {
					return
				}
				skip = true // invalid_chksum_v8 must parse without the check
			}
			for ci, opts := range chunkConfigs {
				opts.SkipChecksum = skip
				g, err := readFile(t, bytes.NewReader(data), opts, true)
				if err != nil {
					t.Fatalf("config %d: %v", ci, err)
				}
				if errs := compareFile(ref, g); len(errs) > 0 {
					t.Fatalf("config %d mismatches reference:\n  %s", ci, strings.Join(errs, "\n  "))
				}
				if ci == 0 {
					checkDefaultSkipsEmpty(t, data, skip, g)
					checkResume(t, data, skip, g)
				}
			}
		})
		if ok {
			matched++
		}
	}
	t.Logf("corpus: %d/%d files decoded and matched their reference decode (or failed as documented)", matched, len(files))
}

// checkDefaultSkipsEmpty: without ReturnEmpty, empty collections are not
// returned but counted.
func checkDefaultSkipsEmpty(t *testing.T, data []byte, skip bool, all *gotFile) {
	g, err := readFile(t, bytes.NewReader(data), Options{SkipChecksum: skip}, false)
	if err != nil {
		t.Fatal(err)
	}
	empty := 0
	for _, k := range all.keys {
		if k.e.Empty {
			empty++
		}
	}
	if g.empty != empty || len(g.keys) != len(all.keys)-empty {
		t.Fatalf("default options: %d keys, %d empty skipped; want %d and %d", len(g.keys), g.empty, len(all.keys)-empty, empty)
	}
	if empty > 0 {
		t.Logf("%d empty collections skipped", empty)
	}
}

// checkResume restarts the reader at every entry offset and compares the
// remaining keys.
func checkResume(t *testing.T, data []byte, skip bool, all *gotFile) {
	rd, err := NewReader(bytes.NewReader(data), Options{SkipChecksum: skip})
	if err != nil {
		t.Fatal(err)
	}
	db := map[int64]int{}
	for {
		off := rd.Offset()
		e, err := rd.Next()
		if err != nil {
			break
		}
		if _, ok := db[e.Offset]; !ok {
			if e.Kind == KindSelectDB {
				db[off] = rd.DB() // resuming at SELECTDB re-reads it anyway
			} else {
				db[e.Offset] = e.DB
			}
		}
	}
	for i, off := range all.offsets {
		if i%3 != 0 && i != len(all.offsets)-1 {
			continue // a sample keeps the test fast on big files
		}
		r2, err := NewReaderAt(bytes.NewReader(data[off:]), off, all.version, all.valkey, db[off], Options{ReturnEmpty: true})
		if err != nil {
			t.Fatal(err)
		}
		g, err := drain(t, r2, Options{ReturnEmpty: true}, false)
		if err != nil {
			t.Fatalf("resume at %d: %v", off, err)
		}
		// The resumed run must end with the same keys as the full run.
		if len(g.keys) > len(all.keys) {
			t.Fatalf("resume at %d: %d keys, more than %d", off, len(g.keys), len(all.keys))
		}
		tail := all.keys[len(all.keys)-len(g.keys):]
		for j := range g.keys {
			if !bytes.Equal(g.keys[j].e.Key, tail[j].e.Key) || g.keys[j].e.DB != tail[j].e.DB || g.keys[j].offset != tail[j].offset {
				t.Fatalf("resume at %d: key %d = %q db %d, want %q db %d", off, j, g.keys[j].e.Key, g.keys[j].e.DB, tail[j].e.Key, tail[j].e.DB)
			}
			if msg := diffValues(g.keys[j].value, tail[j].value); msg != "" {
				t.Fatalf("resume at %d: key %q: %s", off, tail[j].e.Key, msg)
			}
		}
		if k := len(all.keys) - len(g.keys); k > 0 && all.keys[k-1].offset >= off {
			t.Fatalf("resume at %d lost keys", off)
		}
	}
}

// diffValues compares two decoded values.
func diffValues(a, b Value) string {
	if a == nil || b == nil {
		return fmt.Sprintf("nil value %v %v", a, b)
	}
	if TypeOf(a) != TypeOf(b) {
		return fmt.Sprintf("type %s vs %s", TypeOf(a), TypeOf(b))
	}
	na, nb := normalize(a), normalize(b)
	if na != nb {
		if len(na) > 300 {
			na, nb = na[:300], nb[:min(300, len(nb))]
		}
		return fmt.Sprintf("value %s\n vs %s", na, nb)
	}
	return ""
}

// normalize renders a value canonically (hash field order kept).
func normalize(v Value) string {
	var b strings.Builder
	switch x := v.(type) {
	case *String:
		fmt.Fprintf(&b, "%q", x.Data)
	case *List:
		fmt.Fprintf(&b, "%q", x.Items)
	case *Set:
		fmt.Fprintf(&b, "%q", x.Members)
	case *ZSet:
		for _, m := range x.Members {
			if math.IsNaN(m.Score) {
				fmt.Fprintf(&b, "%q=NaN,", m.Member) // NaN payloads are not preserved
			} else {
				fmt.Fprintf(&b, "%q=%v,", m.Member, math.Float64bits(m.Score))
			}
		}
	case *Hash:
		for _, f := range x.Fields {
			fmt.Fprintf(&b, "%q=%q@%d,", f.Field, f.Value, f.ExpireAtMs)
		}
	case *Stream:
		c := *x
		for _, e := range x.Entries {
			fmt.Fprintf(&b, "%s%q,", e.ID, e.Fields)
		}
		c.Entries = nil
		fmt.Fprintf(&b, "|%d %s %s %s %d", c.Length, c.LastID, c.FirstID, c.MaxDeletedID, c.EntriesAdded)
		for _, g := range c.Groups {
			fmt.Fprintf(&b, "|%q %s %d", g.Name, g.LastID, g.EntriesRead)
			for _, c := range g.Consumers {
				fmt.Fprintf(&b, " c=%q/%d/%d", c.Name, c.SeenTime, c.ActiveTime)
			}
			for _, p := range g.PEL {
				fmt.Fprintf(&b, " %s/%d/%d/%q", p.ID, p.DeliveryTime, p.DeliveryCount, p.Consumer)
			}
		}
	case *Module:
		fmt.Fprintf(&b, "%d %q", x.ID, x.Raw)
	}
	return b.String()
}
