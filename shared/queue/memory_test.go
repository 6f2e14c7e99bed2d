package queue

import (
	"context"
	"testing"
	"time"
)

func TestMemoryRedeliveryDeadLetterAndDuplicates(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	m := NewMemory(MemoryOptions{MaxDeliveryCount: 3})
	if err := m.Send(ctx, Copy, []Message{{ID: "b1", Body: []byte(`{}`)}, {ID: "b1", Body: []byte(`{}`)}, {ID: "b2"}}); err != nil {
		t.Fatal(err)
	}
	if sent, dup := m.Stats(Copy); sent != 2 || dup != 1 {
		t.Fatalf("sent %d dropped %d", sent, dup)
	}
	for want := 1; want <= 3; want++ {
		d, err := m.Receive(ctx, Copy)
		if err != nil {
			t.Fatal(err)
		}
		if d.ID != "b1" || d.DeliveryCount != want {
			t.Fatalf("delivery %d: %+v", want, d)
		}
		m.Abandon(d, "boom")
	}
	dl, err := m.Receive(ctx, DeadLetterQueue(Copy))
	if err != nil {
		t.Fatal(err)
	}
	if dl.ID != "b1" || dl.DeadLetterReason != "MaxDeliveryCountExceeded" {
		t.Fatalf("dead letter %+v", dl)
	}
	m.Complete(dl)
	d, _ := m.Receive(ctx, Copy)
	m.Duplicate(d)
	m.Complete(d)
	again, _ := m.Receive(ctx, Copy)
	if again.ID != "b2" {
		t.Fatalf("duplicate %+v", again)
	}
	m.Complete(again)
	if !m.Idle(Copy, DeadLetterQueue(Copy)) {
		t.Fatal("not idle")
	}
}
