package rdb

import "encoding/binary"

// Stream listpack entry flags (t_stream.c).
const (
	streamFlagDeleted    = 1
	streamFlagSameFields = 2
)

type streamState struct {
	ver          int
	nodesLeft    uint64
	lp           *listpack
	lpOff        int64
	master       StreamID
	masterFields [][]byte
	nodeLive     int64
	nodeDeleted  int64
	seenLive     int64
	seenDeleted  int64
	entries      []StreamEntry
	lim          partLimit
	first        StreamID
	haveFirst    bool
	meta         *Stream
}

func (d *decoder) newStreamState(t byte) (*streamState, error) {
	ver := 1
	switch t {
	case TypeCodeStreamListpacks2:
		ver = 2
	case TypeCodeStreamListpacks3:
		ver = 3
	case TypeCodeStreamListpacks4:
		ver = 4
	}
	s := &streamState{ver: ver, lim: d.newLimit()}
	var err error
	if s.nodesLeft, err = d.readLength("stream listpack count"); err != nil {
		return nil, err
	}
	return s, nil
}

// lpInt reads the next listpack element of the current node as an integer.
func (s *streamState) lpInt(what string) (int64, error) {
	e, ok, err := s.lp.next()
	if err != nil {
		return 0, err
	}
	if !ok {
		return 0, errAt(s.lpOff, ErrCorrupt, "stream listpack ends before %s", what)
	}
	v, ok := e.int64()
	if !ok {
		return 0, errAt(s.lpOff, ErrCorrupt, "stream listpack %s %q is not an integer", what, e.bytes())
	}
	return v, nil
}

func (s *streamState) lpStr(what string) ([]byte, error) {
	e, ok, err := s.lp.next()
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, errAt(s.lpOff, ErrCorrupt, "stream listpack ends before %s", what)
	}
	return e.bytes(), nil
}

// lpCount reads a non-negative count that cannot exceed the node's size.
func (s *streamState) lpCount(what string) (int, error) {
	v, err := s.lpInt(what)
	if err != nil {
		return 0, err
	}
	if v < 0 || v > int64(len(s.lp.b)) {
		return 0, errAt(s.lpOff, ErrCorrupt, "stream listpack %s %d out of range", what, v)
	}
	return int(v), nil
}

func (s *streamState) openNode(d *decoder) error {
	off := d.off()
	key, err := d.readString("stream node key")
	if err != nil {
		return err
	}
	if len(key) != 16 {
		return errAt(off, ErrCorrupt, "stream node key is %d bytes, expected 16", len(key))
	}
	s.master = StreamID{binary.BigEndian.Uint64(key), binary.BigEndian.Uint64(key[8:])}
	s.lpOff = d.off()
	it, n, err := d.readBlob(blobListpack, 1, "stream listpack")
	if err != nil {
		return err
	}
	if n == 0 {
		return errAt(s.lpOff, ErrCorrupt, "empty listpack in stream")
	}
	s.lp = it.(*listpack)
	if s.nodeLive, err = s.lpInt("master entry count"); err != nil {
		return err
	}
	if s.nodeDeleted, err = s.lpInt("master deleted count"); err != nil {
		return err
	}
	nf, err := s.lpCount("master field count")
	if err != nil {
		return err
	}
	s.masterFields = make([][]byte, 0, min(nf, 256)) // nf is untrusted
	for i := 0; i < nf; i++ {
		f, err := s.lpStr("master field")
		if err != nil {
			return err
		}
		s.masterFields = append(s.masterFields, f)
	}
	zero, err := s.lpInt("master entry terminator")
	if err != nil {
		return err
	}
	if zero != 0 {
		return errAt(s.lpOff, ErrCorrupt, "stream master entry terminator is %d, expected 0", zero)
	}
	s.seenLive, s.seenDeleted = 0, 0
	return nil
}

// nextEntry decodes one entry of the current node; ok is false at its end.
func (s *streamState) nextEntry() (StreamEntry, bool, bool, error) {
	if !s.lp.more() {
		if s.seenLive != s.nodeLive || s.seenDeleted != s.nodeDeleted {
			return StreamEntry{}, false, false, errAt(s.lpOff, ErrCorrupt,
				"stream node declares %d live/%d deleted entries, found %d/%d",
				s.nodeLive, s.nodeDeleted, s.seenLive, s.seenDeleted)
		}
		return StreamEntry{}, false, false, nil
	}
	flags, err := s.lpInt("entry flags")
	if err != nil {
		return StreamEntry{}, false, false, err
	}
	msd, err := s.lpInt("entry ms delta")
	if err != nil {
		return StreamEntry{}, false, false, err
	}
	seqd, err := s.lpInt("entry seq delta")
	if err != nil {
		return StreamEntry{}, false, false, err
	}
	// Deltas are stored as signed 64-bit values; wrapping addition restores
	// the ID exactly as the C code does.
	e := StreamEntry{ID: StreamID{s.master.Ms + uint64(msd), s.master.Seq + uint64(seqd)}}
	var nf int
	if flags&streamFlagSameFields != 0 {
		nf = len(s.masterFields)
		e.Fields = make([][]byte, 0, 2*nf) // bounded: master fields were read
		for i := 0; i < nf; i++ {
			v, err := s.lpStr("entry value")
			if err != nil {
				return StreamEntry{}, false, false, err
			}
			e.Fields = append(e.Fields, s.masterFields[i], v)
		}
	} else {
		if nf, err = s.lpCount("entry field count"); err != nil {
			return StreamEntry{}, false, false, err
		}
		e.Fields = make([][]byte, 0, min(2*nf, 256)) // nf is untrusted
		for i := 0; i < 2*nf; i++ {
			v, err := s.lpStr("entry field")
			if err != nil {
				return StreamEntry{}, false, false, err
			}
			e.Fields = append(e.Fields, v)
		}
	}
	lpCount, err := s.lpInt("entry lp-count")
	if err != nil {
		return StreamEntry{}, false, false, err
	}
	want := int64(nf) + 3
	if flags&streamFlagSameFields == 0 {
		want = 2*int64(nf) + 4
	}
	if lpCount != want {
		return StreamEntry{}, false, false, errAt(s.lpOff, ErrCorrupt, "stream entry lp-count %d, expected %d", lpCount, want)
	}
	deleted := flags&streamFlagDeleted != 0
	if deleted {
		s.seenDeleted++
	} else {
		s.seenLive++
	}
	return e, true, deleted, nil
}

func (s *streamState) fill(d *decoder) (bool, error) {
	for !s.lim.full() {
		if s.lp != nil {
			e, ok, deleted, err := s.nextEntry()
			if err != nil {
				return false, err
			}
			if ok {
				if deleted {
					continue
				}
				if !s.haveFirst {
					s.first, s.haveFirst = e.ID, true
				}
				size := 16
				for _, f := range e.Fields {
					size += len(f)
				}
				s.entries = append(s.entries, e)
				s.lim.add(size)
				continue
			}
			s.lp = nil
		}
		if s.nodesLeft == 0 {
			m, err := s.readMeta(d)
			if err != nil {
				return false, err
			}
			s.meta = m
			return true, nil
		}
		s.nodesLeft--
		if err := s.openNode(d); err != nil {
			return false, err
		}
	}
	return false, nil
}

// readMeta reads everything after the listpacks: length, IDs, consumer
// groups and (v4) the IDMP table.
func (s *streamState) readMeta(d *decoder) (*Stream, error) {
	m := &Stream{HasMeta: true}
	var err error
	if m.Length, err = d.readLength("stream length"); err != nil {
		return nil, err
	}
	if m.LastID, err = d.readLenID("stream last id"); err != nil {
		return nil, err
	}
	if s.ver >= 2 {
		if m.FirstID, err = d.readLenID("stream first id"); err != nil {
			return nil, err
		}
		if m.MaxDeletedID, err = d.readLenID("stream max deleted id"); err != nil {
			return nil, err
		}
		if m.EntriesAdded, err = d.readLength("stream entries added"); err != nil {
			return nil, err
		}
	} else {
		// Older formats lack these; derive them the way a loading server does.
		m.FirstID = s.first
		m.EntriesAdded = m.Length
	}
	ngroups, err := d.readLength("stream group count")
	if err != nil {
		return nil, err
	}
	m.Groups = make([]StreamGroup, 0, d.prealloc(ngroups))
	for ; ngroups > 0; ngroups-- {
		g, err := s.readGroup(d)
		if err != nil {
			return nil, err
		}
		m.Groups = append(m.Groups, g)
	}
	if s.ver >= 4 {
		if m.IDMP, err = readIDMP(d); err != nil {
			return nil, err
		}
	}
	return m, nil
}

func (s *streamState) readGroup(d *decoder) (StreamGroup, error) {
	var g StreamGroup
	var err error
	if g.Name, err = d.readString("stream group name"); err != nil {
		return g, err
	}
	if g.LastID, err = d.readLenID("stream group last id"); err != nil {
		return g, err
	}
	g.EntriesRead = -1
	if s.ver >= 2 {
		v, err := d.readLength("stream group entries read")
		if err != nil {
			return g, err
		}
		g.EntriesRead = int64(v) // -1 (unknown) is stored as 2^64-1
	}
	npel, err := d.readLength("stream PEL size")
	if err != nil {
		return g, err
	}
	g.PEL = make([]PendingEntry, 0, d.prealloc(npel))
	index := make(map[StreamID]int, d.prealloc(npel))
	for ; npel > 0; npel-- {
		off := d.off()
		var p PendingEntry
		if p.ID, err = d.readRawID("stream PEL id"); err != nil {
			return g, err
		}
		if p.DeliveryTime, err = d.readMillis("stream PEL delivery time"); err != nil {
			return g, err
		}
		if p.DeliveryCount, err = d.readLength("stream PEL delivery count"); err != nil {
			return g, err
		}
		if _, dup := index[p.ID]; dup {
			return g, errAt(off, ErrCorrupt, "duplicate PEL entry %s in group %q", p.ID, g.Name)
		}
		index[p.ID] = len(g.PEL)
		g.PEL = append(g.PEL, p)
	}
	ncons, err := d.readLength("stream consumer count")
	if err != nil {
		return g, err
	}
	g.Consumers = make([]StreamConsumer, 0, d.prealloc(ncons))
	for ; ncons > 0; ncons-- {
		var c StreamConsumer
		if c.Name, err = d.readString("stream consumer name"); err != nil {
			return g, err
		}
		if c.SeenTime, err = d.readMillis("stream consumer seen time"); err != nil {
			return g, err
		}
		c.ActiveTime = c.SeenTime
		if s.ver >= 3 {
			if c.ActiveTime, err = d.readMillis("stream consumer active time"); err != nil {
				return g, err
			}
		}
		n, err := d.readLength("stream consumer PEL size")
		if err != nil {
			return g, err
		}
		for ; n > 0; n-- {
			off := d.off()
			id, err := d.readRawID("stream consumer PEL id")
			if err != nil {
				return g, err
			}
			i, ok := index[id]
			if !ok {
				return g, errAt(off, ErrCorrupt, "consumer %q PEL entry %s missing from group PEL", c.Name, id)
			}
			if g.PEL[i].Consumer != nil {
				return g, errAt(off, ErrCorrupt, "PEL entry %s owned by two consumers", id)
			}
			g.PEL[i].Consumer = c.Name
		}
		g.Consumers = append(g.Consumers, c)
	}
	return g, nil
}

func readIDMP(d *decoder) (*StreamIDMP, error) {
	x := &StreamIDMP{}
	var err error
	if x.Duration, err = d.readLength("stream IDMP duration"); err != nil {
		return nil, err
	}
	if x.MaxEntries, err = d.readLength("stream IDMP max entries"); err != nil {
		return nil, err
	}
	np, err := d.readLength("stream IDMP producer count")
	if err != nil {
		return nil, err
	}
	x.Producers = make([]IDMPProducer, 0, d.prealloc(np))
	for ; np > 0; np-- {
		var p IDMPProducer
		if p.PID, err = d.readString("stream IDMP producer id"); err != nil {
			return nil, err
		}
		n, err := d.readLength("stream IDMP entry count")
		if err != nil {
			return nil, err
		}
		p.Entries = make([]IDMPEntry, 0, d.prealloc(n))
		for ; n > 0; n-- {
			var e IDMPEntry
			if e.IID, err = d.readString("stream IDMP iid"); err != nil {
				return nil, err
			}
			if e.ID, err = d.readLenID("stream IDMP entry id"); err != nil {
				return nil, err
			}
			p.Entries = append(p.Entries, e)
		}
		x.Producers = append(x.Producers, p)
	}
	if x.IIDsAdded, err = d.readLength("stream IDMP iids added"); err != nil {
		return nil, err
	}
	if x.IIDsDuplicates, err = d.readLength("stream IDMP iids duplicates"); err != nil {
		return nil, err
	}
	return x, nil
}

func (s *streamState) take() Value {
	v := &Stream{Entries: s.entries}
	if s.meta != nil {
		m := *s.meta
		m.Entries = s.entries
		v = &m
		s.meta = nil
	}
	s.entries = nil
	s.lim.reset()
	return v
}

func (s *streamState) total() uint64    { return s.lim.total }
func (s *streamState) collection() bool { return false }
