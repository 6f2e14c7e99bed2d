package functions

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strconv"
)

// checkDuplicateKeys refuses a JSON document in which any object, at any depth, names the same
// key twice: encoding/json keeps the last one silently, so {"type":"hash","type":"string"}
// would run with a value the sender may not have meant. The error names the key by its path.
func checkDuplicateKeys(data []byte) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	return walkDup(dec, "")
}

// walkDup reads one JSON value from dec; path is where it sits ("" for the document).
func walkDup(dec *json.Decoder, path string) error {
	tok, err := dec.Token()
	if err != nil {
		return fieldErrf("", "invalid JSON: %v", err)
	}
	d, ok := tok.(json.Delim)
	if !ok {
		return nil
	}
	switch d {
	case '{':
		seen := map[string]bool{}
		for dec.More() {
			kt, err := dec.Token()
			if err != nil {
				return fieldErrf("", "invalid JSON: %v", err)
			}
			k, _ := kt.(string)
			p := k
			if path != "" {
				p = path + "." + k
			}
			if seen[k] {
				return fieldErrf(p, "duplicate field %q in the request (JSON keys must be unique)", p)
			}
			seen[k] = true
			if err := walkDup(dec, p); err != nil {
				return err
			}
		}
	case '[':
		for i := 0; dec.More(); i++ {
			if err := walkDup(dec, path+"["+strconv.Itoa(i)+"]"); err != nil {
				return err
			}
		}
	default:
		return fieldErrf("", "invalid JSON: unexpected %v", fmt.Sprint(d))
	}
	if _, err := dec.Token(); err != nil { // the closing delimiter
		return fieldErrf("", "invalid JSON: %v", err)
	}
	return nil
}
