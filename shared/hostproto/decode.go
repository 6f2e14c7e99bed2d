package hostproto

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"
)

// MaxValueBytes bounds one Data or Metadata value held in memory. A larger value (a Service Bus
// Premium message of up to 100 MB arrives base64 or JSON-escaped, and bigger) is read past as a
// stream, never held, and named in Invocation.Oversize; the handler must then fail the
// invocation (non-2xx), never complete it unread.
const MaxValueBytes = 128 << 20

// maxKeyBytes bounds a member name.
const maxKeyBytes = 64 << 10

// ErrOversize is wrapped by the error of an accessor whose value was too large to keep.
var ErrOversize = errors.New("value larger than the handler keeps")

// Decode reads an invocation, streaming: memory is bounded by MaxValueBytes per value whatever
// the body's size.
func Decode(r io.Reader) (*Invocation, error) { return DecodeLimit(r, MaxValueBytes) }

// DecodeLimit is Decode with another per-value bound.
func DecodeLimit(r io.Reader, limit int) (*Invocation, error) {
	s := &scanner{r: bufio.NewReaderSize(r, 64<<10), limit: limit}
	inv := &Invocation{Data: map[string]json.RawMessage{}, Metadata: map[string]json.RawMessage{}, limit: limit}
	if err := s.top(inv); err != nil {
		return nil, fmt.Errorf("invocation is not {\"Data\":{...},\"Metadata\":{...}}: %v", err)
	}
	return inv, nil
}

// OversizeError describes the values read past, for the invocation's error.
func (inv *Invocation) OversizeError() error {
	if len(inv.Oversize) == 0 {
		return nil
	}
	names := make([]string, 0, len(inv.Oversize))
	for n := range inv.Oversize {
		names = append(names, n)
	}
	sort.Strings(names)
	parts := make([]string, len(names))
	for i, n := range names {
		parts[i] = fmt.Sprintf("%s is %d bytes", n, inv.Oversize[n])
	}
	return fmt.Errorf("invocation not read: %s, over the %d bytes a value may have: %w", strings.Join(parts, ", "), inv.limit, ErrOversize)
}

type scanner struct {
	r     *bufio.Reader
	limit int
	off   int64
}

func (s *scanner) byte() (byte, error) {
	b, err := s.r.ReadByte()
	if err == io.EOF {
		return 0, fmt.Errorf("unexpected end at byte %d", s.off)
	}
	if err != nil {
		return 0, err
	}
	s.off++
	return b, nil
}

func (s *scanner) ws() (byte, error) {
	for {
		b, err := s.byte()
		if err != nil {
			return 0, err
		}
		if b != ' ' && b != '\t' && b != '\n' && b != '\r' {
			return b, nil
		}
	}
}

func (s *scanner) want(b byte, what string) error {
	got, err := s.ws()
	if err != nil {
		return err
	}
	if got != b {
		return fmt.Errorf("want %s at byte %d, got %q", what, s.off, got)
	}
	return nil
}

// object reads the members of an object whose '{' has been read, calling member for each name;
// member reads the value (its first byte given).
func (s *scanner) object(member func(name string, first byte) error) error {
	b, err := s.ws()
	if err != nil {
		return err
	}
	if b == '}' {
		return nil
	}
	for {
		if b != '"' {
			return fmt.Errorf("want a member name at byte %d", s.off)
		}
		var key bytes.Buffer
		key.WriteByte('"')
		if _, _, err := s.str(&key, maxKeyBytes); err != nil {
			return err
		}
		var name string
		if key.Len() > maxKeyBytes || json.Unmarshal(key.Bytes(), &name) != nil {
			return fmt.Errorf("bad member name at byte %d", s.off)
		}
		if err := s.want(':', "':'"); err != nil {
			return err
		}
		first, err := s.ws()
		if err != nil {
			return err
		}
		if err := member(name, first); err != nil {
			return err
		}
		if b, err = s.ws(); err != nil {
			return err
		}
		switch b {
		case '}':
			return nil
		case ',':
			if b, err = s.ws(); err != nil {
				return err
			}
		default:
			return fmt.Errorf("want ',' or '}' at byte %d", s.off)
		}
	}
}

func (s *scanner) top(inv *Invocation) error {
	if err := s.want('{', "'{'"); err != nil {
		return err
	}
	return s.object(func(name string, first byte) error {
		var into map[string]json.RawMessage
		prefix := ""
		switch {
		case strings.EqualFold(name, "Data"):
			into, prefix = inv.Data, "Data."
		case strings.EqualFold(name, "Metadata"):
			into, prefix = inv.Metadata, "Metadata."
		}
		if into == nil || first != '{' {
			_, _, err := s.value(first, nil, 0) // another member, or null: read past
			return err
		}
		return s.object(func(member string, first byte) error {
			var buf bytes.Buffer
			size, kept, err := s.value(first, &buf, s.limit)
			if err != nil {
				return err
			}
			if !kept {
				if inv.Oversize == nil {
					inv.Oversize = map[string]int64{}
				}
				inv.Oversize[prefix+member] = size
				return nil
			}
			if !json.Valid(buf.Bytes()) {
				return fmt.Errorf("%s%s is not valid JSON", prefix, member)
			}
			into[member] = json.RawMessage(buf.Bytes())
			return nil
		})
	})
}

// keep appends b to buf while it stays within limit.
type keeper struct {
	buf   *bytes.Buffer
	limit int
	size  int64
	over  bool
}

func (k *keeper) add(b byte) {
	k.size++
	if k.buf == nil || k.over {
		return
	}
	if k.buf.Len() >= k.limit {
		k.over = true
		k.buf.Reset()
		return
	}
	k.buf.WriteByte(b)
}

// str reads a string whose opening quote has been read (and written to buf by the caller).
func (s *scanner) str(buf *bytes.Buffer, limit int) (int64, bool, error) {
	k := &keeper{buf: buf, limit: limit, size: 1}
	return s.strInto(k)
}

func (s *scanner) strInto(k *keeper) (int64, bool, error) {
	for {
		b, err := s.byte()
		if err != nil {
			return k.size, false, err
		}
		k.add(b)
		switch b {
		case '\\':
			e, err := s.byte()
			if err != nil {
				return k.size, false, err
			}
			k.add(e)
		case '"':
			return k.size, !k.over, nil
		}
	}
}

// value reads one JSON value whose first byte is first, keeping it in buf (nil: keep nothing)
// up to limit bytes. It returns the value's size and whether it was kept whole.
func (s *scanner) value(first byte, buf *bytes.Buffer, limit int) (int64, bool, error) {
	k := &keeper{buf: buf, limit: limit}
	k.add(first)
	switch first {
	case '"':
		return s.strInto(k)
	case '{', '[':
		depth := 1
		for depth > 0 {
			b, err := s.byte()
			if err != nil {
				return k.size, false, err
			}
			k.add(b)
			switch b {
			case '"':
				if _, _, err := s.strInto(k); err != nil {
					return k.size, false, err
				}
			case '{', '[':
				depth++
			case '}', ']':
				depth--
			}
		}
		return k.size, !k.over, nil
	}
	if !(first == '-' || first >= '0' && first <= '9' || first == 't' || first == 'f' || first == 'n') {
		return k.size, false, fmt.Errorf("unexpected %q at byte %d", first, s.off)
	}
	for {
		b, err := s.r.ReadByte()
		if err == io.EOF {
			return k.size, !k.over, nil
		}
		if err != nil {
			return k.size, false, err
		}
		if strings.IndexByte(",}] \t\r\n", b) >= 0 {
			_ = s.r.UnreadByte()
			return k.size, !k.over, nil
		}
		s.off++
		k.add(b)
	}
}
