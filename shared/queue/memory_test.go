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

// Duplicate detection spans the queues' window (PT1H): a resend with the same MessageId is
// accepted once; and a message of a dead-letter queue that fails is delivered again, never moved
// to a dead-letter queue of its own (Service Bus has none).
func TestMemoryDuplicateWindowAndDeadLetterRedelivery(t *testing.T) {
	ctx := context.Background()
	m := NewMemory(MemoryOptions{MaxDeliveryCount: 2})
	if m.opts.DuplicateWindow != time.Hour {
		t.Fatalf("duplicate window %v, want 1h", m.opts.DuplicateWindow)
	}
	for i := 0; i < 3; i++ {
		if err := m.Send(ctx, "copy", []Message{{ID: "mig.b1", Body: []byte(`{}`)}}); err != nil {
			t.Fatal(err)
		}
	}
	if sent, dropped := m.Stats("copy"); sent != 1 || dropped != 2 || m.Len("copy") != 1 {
		t.Fatalf("sent %d dropped %d len %d", sent, dropped, m.Len("copy"))
	}
	for i := 0; i < 2; i++ {
		d, err := m.Receive(ctx, "copy")
		if err != nil {
			t.Fatal(err)
		}
		m.Abandon(d, "failed")
	}
	dlq := DeadLetterQueue("copy")
	if m.Len(dlq) != 1 {
		t.Fatalf("dead-letter queue holds %d", m.Len(dlq))
	}
	for i := 1; i <= 5; i++ {
		d, err := m.Receive(ctx, dlq)
		if err != nil {
			t.Fatal(err)
		}
		if d.DeliveryCount != i || d.DeadLetterReason != "MaxDeliveryCountExceeded" {
			t.Fatalf("delivery %d: %+v", i, d)
		}
		m.Abandon(d, "dead-letter function failed")
		if m.Len(dlq) != 1 || m.Len(DeadLetterQueue(dlq)) != 0 {
			t.Fatalf("after %d failures: dlq %d, dlq of dlq %d", i, m.Len(dlq), m.Len(DeadLetterQueue(dlq)))
		}
	}
}
