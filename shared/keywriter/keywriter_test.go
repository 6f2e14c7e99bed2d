package keywriter

import "testing"

func TestTempKeySharesTheSlot(t *testing.T) {
	for _, k := range []string{"plain", "{tag}x", "a}b", "a{b", "{}x", "user:{42}:profile", "\x00\xff binary"} {
		if Slot(TempKey(k)) != Slot(k) {
			t.Errorf("TempKey(%q) is in slot %d, key in %d", k, Slot(TempKey(k)), Slot(k))
		}
	}
	// Known values from the Redis Cluster specification.
	if Slot("123456789") != 0x31C3%16384 || Slot("foo") != 12182 {
		t.Errorf("crc16 slots wrong: %d %d", Slot("123456789"), Slot("foo"))
	}
}
