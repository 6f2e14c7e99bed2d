package functions

import (
	"errors"
	"strings"
	"testing"
)

// Request bodies that say something other than what they mean are refused, naming the field:
// unknown or mis-cased key types, and a JSON key given twice at any level.
func TestRequestDecodersRefuseAmbiguousInput(t *testing.T) {
	start := `{"source":{"setting":"SOURCE_REDIS"},"target":{"setting":"TARGET_REDIS"}`
	imp := `{"blob":"rdb-imports/dump.rdb","target":{"setting":"TARGET_REDIS"}`
	for _, c := range []struct {
		name  string
		parse func([]byte) error
		body  string
		field string
		msg   string
	}{
		{"start type rubbish", parseStart, start + `,"type":"rubbish"}`, "type", "want one of string, list, set, zset, hash, stream"},
		{"start type String", parseStart, start + `,"type":"String"}`, "type", `lower-case: "string"`},
		{"start top-level duplicate", parseStart, start + `,"type":"hash","type":"string"}`, "type", "duplicate field"},
		{"start nested duplicate", parseStart, `{"source":{"setting":"SOURCE_REDIS","setting":"OTHER"},"target":{"setting":"TARGET_REDIS"}}`, "source.setting", "duplicate field"},
		{"start entra duplicate", parseStart, `{"source":{"setting":"SOURCE_REDIS"},"target":{"host":"x.redis.azure.net:10000","entra":{"objectId":"a","objectId":"b"}}}`, "target.entra.objectId", "duplicate field"},
		{"start duplicate source", parseStart, `{"source":{"setting":"A"},"target":{"setting":"TARGET_REDIS"},"source":{"setting":"B"}}`, "source", "duplicate field"},
		{"import duplicate", parseImport, imp + `,"existing":"fail","existing":"replace"}`, "existing", "duplicate field"},
		{"import blob duplicate", parseImport, `{"blob":{"container":"rdb-imports","name":"a","name":"b"},"target":{"setting":"TARGET_REDIS"}}`, "blob.name", "duplicate field"},
		{"verify duplicate", parseVerify, `{"sample":5,"sample":10}`, "sample", "duplicate field"},
	} {
		err := c.parse([]byte(c.body))
		var fe *fieldError
		if !errors.As(err, &fe) || fe.field != c.field || !strings.Contains(fe.msg, c.msg) {
			t.Errorf("%s: got %v; want field %q with %q", c.name, err, c.field, c.msg)
		}
	}
	// Valid types and bodies without duplicates still pass these checks.
	for _, typ := range []string{"string", "list", "set", "zset", "hash", "stream"} {
		if err := parseStart([]byte(start + `,"type":"` + typ + `"}`)); err != nil {
			t.Errorf("type %s: %v", typ, err)
		}
	}
	if err := checkDuplicateKeys([]byte(`{"a":[{"x":1},{"x":2}],"b":{"x":1},"x":[1,[2,{"x":3}]]}`)); err != nil {
		t.Errorf("same key in different objects: %v", err)
	}
}

func parseStart(b []byte) error  { _, err := parseStartRequest(b); return err }
func parseImport(b []byte) error { _, err := parseImportRequest(b); return err }
func parseVerify(b []byte) error { _, err := parseVerifyRequest(b); return err }

// The HTTP request decoders take any body: a request or an error of one line, never a panic;
// whatever they accept has no duplicated key.
func fuzzRequest(f *testing.F, parse func([]byte) error, seeds ...string) {
	for _, s := range seeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		err := parse(body)
		if err != nil {
			if strings.Contains(err.Error(), "\n") {
				t.Fatalf("error of several lines: %q", err)
			}
			return
		}
		if len(strings.TrimSpace(string(body))) > 0 {
			if derr := checkDuplicateKeys(body); derr != nil {
				t.Fatalf("accepted a body with a duplicated key: %v", derr)
			}
		}
	})
}

func FuzzStartRequest(f *testing.F) {
	fuzzRequest(f, parseStart,
		`{"source":{"setting":"SOURCE_REDIS"},"target":{"setting":"TARGET_REDIS"}}`,
		`{"id":"m-1","source":{"setting":"SOURCE_REDIS"},"target":{"host":"x.redis.azure.net:10000","entra":{"objectId":"o","clientId":"c"}},"match":"a*","type":"hash","existing":"skip","dbMap":"0:0,1:0","dbPrefix":"1:one:","allowDbMerge":false,"batchKeys":100,"bigKeyBytes":-1}`,
		`{"source":{"url":"redis://:pw@127.0.0.1:1"},"target":{"setting":"T_REDIS","topology":"cluster"}}`,
		`{"source":{"setting":"A"},"source":{"setting":"B"}}`, `[]`, `{"type":"String"}`, `{"batchKeys":1e99}`)
}

func FuzzImportRequest(f *testing.F) {
	fuzzRequest(f, parseImport,
		`{"blob":"rdb-imports/dump.rdb","target":{"setting":"TARGET_REDIS"}}`,
		`{"id":"i-1","blob":{"container":"rdb-imports","name":"a/b.rdb"},"target":{"setting":"TARGET_REDIS"},"existing":"replace","dbMap":"0:0","dbPrefix":"0:x:","match":"*","functions":"load","modules":"skip","skipChecksum":true}`,
		`{"id":"i-1"}`, `{"blob":7}`, `{"blob":"rdb-imports/../x"}`)
}

func FuzzVerifyRequest(f *testing.F) {
	fuzzRequest(f, parseVerify, ``, `{}`, `{"sample":100}`, `{"full":true,"ttlToleranceMs":2000}`, `{"sample":-1}`)
}

// maxSourceOps is checked at kickoff and reaches the migration's options; copy invocations pace
// themselves to their share.
func TestStartRequestMaxSourceOps(t *testing.T) {
	ok := `{"source":{"setting":"S"},"target":{"setting":"T"}`
	for _, bad := range []string{`,"maxSourceOps":-1}`, `,"maxSourceOps":50}`} {
		if err := parseStart([]byte(ok + bad)); err == nil || !strings.Contains(err.Error(), "maxSourceOps") {
			t.Errorf("%s: %v", bad, err)
		}
	}
	r, err := parseStartRequest([]byte(ok + `,"maxSourceOps":8000}`))
	if err != nil || r.MaxSourceOps != 8000 {
		t.Fatalf("%+v %v", r, err)
	}
	if p := sourcePacer(8000); p == nil {
		t.Fatal("no pacer")
	}
}
