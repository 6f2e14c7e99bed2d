package rdb

import "errors"

// Raw values (Options.RawValues). A value the importer sends as its own bytes does not need Go
// values, only its end and the certainty that it is well formed. The walk below mirrors the
// decoders of values.go step by step: the same reads, the same checks (lengths, LZF streams,
// blob structure, zset scores), the same errors at the same offsets, and the same part limits,
// so a value comes raw exactly when decoding would deliver it whole with Raw. Any other value
// (one in parts, one too big for Raw, an empty one asked for with ReturnEmpty) is rewound to its
// first byte and decoded as without the option.

// errSplit: the value does not come whole with Raw; rewind and decode it.
var errSplit = errors.New("rdb: value does not come whole")

// rawSlack lets the capture of a walked value run past ChunkBytes by the few header bytes read
// between two budget checks, so a rewind still finds every byte of the value.
const rawSlack = 1024

// scratchMax bounds the LZF scratch buffer kept from one value to the next.
const scratchMax = 1 << 20

// walkable reports whether values of type code t are walked rather than decoded: every plain
// encoding of strings, lists, sets, sorted sets and hashes. Streams, modules and hashes with
// field TTLs are always decoded.
func walkable(t byte) bool {
	switch t {
	case TypeCodeString, TypeCodeList, TypeCodeSet, TypeCodeZSet, TypeCodeHash, TypeCodeZSet2,
		TypeCodeHashZipmap, TypeCodeListZiplist, TypeCodeSetIntset, TypeCodeZSetZiplist, TypeCodeHashZiplist,
		TypeCodeListQuicklist, TypeCodeHashListpack, TypeCodeZSetListpack, TypeCodeListQuicklist2, TypeCodeSetListpack:
		return true
	}
	return false
}

// walker walks one value, counting its elements and their decoded sizes as the decoders do.
type walker struct {
	d     *decoder
	start int64 // the value's first byte
	lim   partLimit
}

// walkValue consumes a value of type t that starts at start. It returns the number of elements
// and whether the type is a collection (an empty one is skipped), or errSplit.
func (d *decoder) walkValue(t byte, start int64) (total uint64, collection bool, err error) {
	w := walker{d: d, start: start, lim: d.newLimit()}
	collection = true
	switch t {
	case TypeCodeString:
		collection = false
		err = w.stringValue()
	case TypeCodeList:
		err = w.plain("list length", "list item")
	case TypeCodeSet:
		err = w.plain("set size", "set member")
	case TypeCodeZSet, TypeCodeZSet2:
		err = w.zset(t == TypeCodeZSet2)
	case TypeCodeHash:
		err = w.hash()
	case TypeCodeListZiplist:
		err = w.seqBlob(blobZiplist, "list ziplist")
	case TypeCodeSetIntset:
		err = w.seqBlob(blobIntset, "set intset")
	case TypeCodeSetListpack:
		err = w.seqBlob(blobListpack, "set listpack")
	case TypeCodeZSetZiplist:
		err = w.pairBlob(blobZiplist, "zset ziplist", true)
	case TypeCodeZSetListpack:
		err = w.pairBlob(blobListpack, "zset listpack", true)
	case TypeCodeHashZipmap:
		err = w.pairBlob(blobZipmap, "hash zipmap", false)
	case TypeCodeHashZiplist:
		err = w.pairBlob(blobZiplist, "hash ziplist", false)
	case TypeCodeHashListpack:
		err = w.pairBlob(blobListpack, "hash listpack", false)
	case TypeCodeListQuicklist, TypeCodeListQuicklist2:
		err = w.quicklist(t == TypeCodeListQuicklist2)
	default:
		err = errSplit
	}
	if err == nil && d.off()-start > int64(d.opts.ChunkBytes) {
		err = errSplit // decoding would deliver it without Raw
	}
	if !collection {
		return 1, false, err
	}
	return w.lim.total, true, err
}

// budget stops the walk before n more bytes would take the value past ChunkBytes, the most a
// value with Raw can have.
func (w *walker) budget(n uint64) error {
	if uint64(w.d.off()-w.start)+n > uint64(w.d.opts.ChunkBytes) {
		return errSplit
	}
	return nil
}

// stringValue mirrors newStringState and stringState.fill.
func (w *walker) stringValue() error {
	d := w.d
	off := d.off()
	n, enc, err := d.readLen("string value")
	if err != nil {
		return err
	}
	if enc {
		_, err := w.encoded(off, n, "string value")
		return err
	}
	if n > uint64(d.opts.ChunkBytes) {
		return errSplit // streamed in parts
	}
	if err := d.checkSize(off, "string value", n); err != nil {
		return err
	}
	if err := w.budget(n); err != nil {
		return err
	}
	return d.in.discard(int64(n), "string value")
}

// encoded mirrors readEncoded and returns the decoded length.
func (w *walker) encoded(off int64, kind uint64, what string) (int, error) {
	d := w.d
	switch kind {
	case 0:
		b, err := d.in.readByte(what)
		return decLen(int64(int8(b))), err
	case 1, 2:
		p, err := d.in.readN(2*int(kind), what)
		if err != nil {
			return 0, err
		}
		if kind == 1 {
			return decLen(int64(int16(uint16(p[0]) | uint16(p[1])<<8))), nil
		}
		return decLen(int64(int32(uint32(p[0]) | uint32(p[1])<<8 | uint32(p[2])<<16 | uint32(p[3])<<24))), nil
	case 3:
		clen, ulen, err := d.readLZFLengths(off, what)
		if err != nil {
			return 0, err
		}
		if err := w.budget(clen); err != nil {
			return 0, err
		}
		c, err := d.in.view(int64(clen), what)
		if err != nil {
			return 0, err
		}
		if err := lzfRun(nil, c, int(ulen)); err != nil {
			return 0, errAt(off, ErrCorrupt, "%s: LZF: %v", what, err)
		}
		return int(ulen), nil
	}
	return 0, errAt(off, ErrCorrupt, "%s: unknown string encoding %d", what, kind)
}

// str mirrors readString and returns the decoded length.
func (w *walker) str(what string) (int, error) {
	d := w.d
	off := d.off()
	n, enc, err := d.readLen(what)
	if err != nil {
		return 0, err
	}
	if enc {
		return w.encoded(off, n, what)
	}
	if err := d.checkSize(off, what, n); err != nil {
		return 0, err
	}
	if err := w.budget(n); err != nil {
		return 0, err
	}
	return int(n), d.in.discard(int64(n), what)
}

// blob mirrors readBlob and the decoders' loops over its elements in one pass: visit is called
// for each element in order until it returns an event (errSplit, or an error decoding raises
// while it takes elements). The blob is still walked to its end, and its own errors come first,
// as decoding checks a blob whole before it takes any element.
func (w *walker) blob(kind blobKind, group int, what string, visit func(i int, e elem) error) error {
	d := w.d
	off := d.off()
	n, enc, err := d.readLen(what)
	if err != nil {
		return err
	}
	var b []byte
	switch {
	case enc && n == 3:
		clen, ulen, err := d.readLZFLengths(off, what)
		if err != nil {
			return err
		}
		if err := w.budget(clen); err != nil {
			return err
		}
		c, err := d.in.view(int64(clen), what)
		if err != nil {
			return err
		}
		b = d.lzfScratch(int(ulen))
		if err := lzfRun(b, c, int(ulen)); err != nil {
			return errAt(off, ErrCorrupt, "%s: LZF: %v", what, err)
		}
	case enc:
		if b, err = d.readEncoded(off, n, what); err != nil {
			return err
		}
	default:
		if err := d.checkSize(off, what, n); err != nil {
			return err
		}
		if err := w.budget(n); err != nil {
			return err
		}
		if b, err = d.in.view(int64(n), what); err != nil {
			return err
		}
	}
	it, declared, err := newBlobIter(kind, b, off)
	if err != nil {
		return err
	}
	count := 0
	var event error
	for {
		e, ok, err := it.next()
		if err != nil {
			return err
		}
		if !ok {
			break
		}
		if event == nil {
			event = visit(count, e)
		}
		count++
	}
	if err := blobDone(kind, b, off, group, it, declared, count); err != nil {
		return err
	}
	return event
}

// element counts one element of a single-element blob.
func (w *walker) element(_ int, e elem) error {
	if w.lim.full() {
		return errSplit // decoding would end the part before it
	}
	w.lim.add(e.blen())
	return nil
}

// lzfScratch is an n-byte buffer for an LZF blob that is checked and then dropped.
func (d *decoder) lzfScratch(n int) []byte {
	if n > scratchMax {
		return make([]byte, n)
	}
	if cap(d.scratch) < n {
		d.scratch = make([]byte, n)
	}
	return d.scratch[:n]
}

// counted reads the element count of a LIST, SET, ZSET or HASH; a count above the part limit
// means the value comes in parts, known before walking any of it.
func (w *walker) counted(what string) (uint64, error) {
	n, err := w.d.readLength(what)
	if err == nil && n > uint64(w.d.opts.ChunkElements) {
		err = errSplit
	}
	return n, err
}

// plain mirrors listState/setState for LIST and SET: a count, then strings.
func (w *walker) plain(countWhat, what string) error {
	remaining, err := w.counted(countWhat)
	if err != nil {
		return err
	}
	for !w.lim.full() {
		if remaining == 0 {
			return nil
		}
		remaining--
		n, err := w.str(what)
		if err != nil {
			return err
		}
		w.lim.add(n)
	}
	return split(remaining == 0)
}

// zset mirrors zsetState for ZSET (text scores) and ZSET_2 (binary scores).
func (w *walker) zset(binary bool) error {
	d := w.d
	remaining, err := w.counted("zset size")
	if err != nil {
		return err
	}
	for !w.lim.full() {
		if remaining == 0 {
			return nil
		}
		remaining--
		n, err := w.str("zset member")
		if err != nil {
			return err
		}
		if binary {
			_, err = d.readBinaryDouble("zset score")
		} else {
			_, err = d.readTextDouble("zset score")
		}
		if err != nil {
			return err
		}
		w.lim.add(n + 8)
	}
	return split(remaining == 0)
}

// hash mirrors hashState for HASH.
func (w *walker) hash() error {
	remaining, err := w.counted("hash size")
	if err != nil {
		return err
	}
	for !w.lim.full() {
		if remaining == 0 {
			return nil
		}
		remaining--
		nf, err := w.str("hash field")
		if err != nil {
			return err
		}
		nv, err := w.str("hash value")
		if err != nil {
			return err
		}
		w.lim.add(nf + nv)
	}
	return split(remaining == 0)
}

// seqBlob mirrors listState/setState over one blob of single elements.
func (w *walker) seqBlob(kind blobKind, what string) error {
	return w.blob(kind, 1, what, w.element)
}

// pairBlob mirrors zsetState (member, score) and hashState (field, value) over one blob.
func (w *walker) pairBlob(kind blobKind, what string, zset bool) error {
	var first elem
	return w.blob(kind, 2, what, func(i int, e elem) error {
		if i%2 == 0 {
			if w.lim.full() {
				return errSplit
			}
			first = e
			return nil
		}
		if !zset {
			w.lim.add(first.blen() + e.blen())
			return nil
		}
		if !e.isInt && !plainDecimal(e.s) {
			if _, ok := parseScore(e.s); !ok {
				return errAt(w.d.off(), ErrCorrupt, "zset score %q is not a number", e.s)
			}
		}
		w.lim.add(first.blen() + 8)
		return nil
	})
}

// quicklist mirrors listState for QUICKLIST (ziplist nodes) and QUICKLIST_2 (plain or listpack
// nodes).
func (w *walker) quicklist(v2 bool) error {
	d := w.d
	remaining, err := d.readLength("list length")
	if err != nil {
		return err
	}
	for !w.lim.full() {
		if remaining == 0 {
			return nil
		}
		remaining--
		if !v2 {
			if err := w.blob(blobZiplist, 1, "quicklist node", w.element); err != nil {
				return err
			}
			continue
		}
		off := d.off()
		c, err := d.readLength("quicklist container")
		if err != nil {
			return err
		}
		switch c {
		case 1:
			n, err := w.str("quicklist plain node")
			if err != nil {
				return err
			}
			w.lim.add(n)
		case 2:
			if err := w.blob(blobListpack, 1, "quicklist node", w.element); err != nil {
				return err
			}
		default:
			return errAt(off, ErrCorrupt, "quicklist container %d is neither plain (1) nor packed (2)", c)
		}
	}
	return split(remaining == 0) // the last node's elements are all taken
}

// split is the end of a walk whose part filled up: whole when nothing is left, else errSplit.
func split(done bool) error {
	if done {
		return nil
	}
	return errSplit
}

// plainDecimal reports b is [-]digits[.digits][e[+-]digits] with a digit before or after the
// point: what Redis writes for a score, and always something parseScore accepts (so the walk
// need not parse it; anything else goes to parseScore).
func plainDecimal(b []byte) bool {
	i := 0
	if i < len(b) && b[i] == '-' {
		i++
	}
	digits := 0
	for i < len(b) && b[i] >= '0' && b[i] <= '9' {
		i, digits = i+1, digits+1
	}
	if i < len(b) && b[i] == '.' {
		i++
		for i < len(b) && b[i] >= '0' && b[i] <= '9' {
			i, digits = i+1, digits+1
		}
	}
	if digits == 0 {
		return false
	}
	if i < len(b) && (b[i] == 'e' || b[i] == 'E') {
		i++
		if i < len(b) && (b[i] == '+' || b[i] == '-') {
			i++
		}
		exp := 0
		for i < len(b) && b[i] >= '0' && b[i] <= '9' {
			i, exp = i+1, exp+1
		}
		if exp == 0 {
			return false
		}
	}
	return i == len(b)
}

// decLen is the length of v in decimal, as strconv.AppendInt writes it.
func decLen(v int64) int {
	n := 1
	u := uint64(v)
	if v < 0 {
		n, u = 2, -u
	}
	for u >= 10 {
		u /= 10
		n++
	}
	return n
}
