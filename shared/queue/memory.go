package queue

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"
)

// DeadLetterQueue is the name of a queue's dead-letter sub-queue, as Service Bus spells it in a
// trigger's queueName.
func DeadLetterQueue(name string) string { return name + "/$DeadLetterQueue" }

// MemoryOptions configure the in-memory queue.
type MemoryOptions struct {
	// MaxDeliveryCount is how many deliveries a message gets before it is dead-lettered, like a
	// Service Bus queue's MaxDeliveryCount. Default 10.
	MaxDeliveryCount int
	// DuplicateWindow drops a message whose ID was sent within the window, like Service Bus
	// duplicate detection. Default 1 hour (the queues' PT1H); negative turns detection off.
	DuplicateWindow time.Duration
}

// Delivery is one delivery of a message to a receiver.
type Delivery struct {
	Queue string
	Message
	DeliveryCount              int
	SequenceNumber             int64
	EnqueuedTime               time.Time
	LockToken                  string
	DeadLetterReason           string
	DeadLetterErrorDescription string
}

// Memory is a Sender with Service Bus semantics that matter to the function app: at-least-once
// delivery with peek-lock, DeliveryCount, redelivery on abandon, dead-lettering after
// MaxDeliveryCount into <queue>/$DeadLetterQueue, and duplicate detection by message ID. It
// serves the local host harness; nothing is persisted.
type Memory struct {
	opts MemoryOptions

	mu       sync.Mutex
	cond     *sync.Cond
	queues   map[string][]*Delivery
	inflight map[string]*Delivery // by lock token
	seen     map[string]map[string]time.Time
	seq      int64
	sent     map[string]int64 // messages accepted per queue (duplicates excluded)
	dropped  map[string]int64 // duplicates dropped per queue
	closed   bool
}

// NewMemory returns an empty in-memory queue set.
func NewMemory(o MemoryOptions) *Memory {
	if o.MaxDeliveryCount <= 0 {
		o.MaxDeliveryCount = 10
	}
	if o.DuplicateWindow == 0 {
		o.DuplicateWindow = time.Hour
	}
	m := &Memory{opts: o, queues: map[string][]*Delivery{}, inflight: map[string]*Delivery{},
		seen: map[string]map[string]time.Time{}, sent: map[string]int64{}, dropped: map[string]int64{}}
	m.cond = sync.NewCond(&m.mu)
	return m
}

// MaxDeliveryCount is the configured maximum.
func (m *Memory) MaxDeliveryCount() int { return m.opts.MaxDeliveryCount }

// Send enqueues msgs, dropping those whose ID was seen within the duplicate window.
func (m *Memory) Send(ctx context.Context, queueName string, msgs []Message) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return errors.New("queue closed")
	}
	now := time.Now()
	for _, msg := range msgs {
		if msg.ID != "" && m.opts.DuplicateWindow > 0 {
			seen := m.seen[queueName]
			if seen == nil {
				seen = map[string]time.Time{}
				m.seen[queueName] = seen
			}
			if at, dup := seen[msg.ID]; dup && now.Sub(at) < m.opts.DuplicateWindow {
				m.dropped[queueName]++
				continue
			}
			seen[msg.ID] = now
		}
		m.enqueueLocked(queueName, &Delivery{Queue: queueName, Message: cloneMessage(msg), EnqueuedTime: now.UTC()}, false)
		m.sent[queueName]++
	}
	return nil
}

func cloneMessage(msg Message) Message {
	c := Message{ID: msg.ID, Body: append([]byte(nil), msg.Body...)}
	if msg.Properties != nil {
		c.Properties = make(map[string]any, len(msg.Properties))
		for k, v := range msg.Properties {
			c.Properties[k] = v
		}
	}
	return c
}

func (m *Memory) enqueueLocked(q string, d *Delivery, front bool) {
	m.seq++
	if d.SequenceNumber == 0 {
		d.SequenceNumber = m.seq
	}
	if front {
		m.queues[q] = append([]*Delivery{d}, m.queues[q]...)
	} else {
		m.queues[q] = append(m.queues[q], d)
	}
	m.cond.Broadcast()
}

// Receive waits for a message on queueName and locks it; the caller must Complete, Abandon or
// DeadLetter it.
func (m *Memory) Receive(ctx context.Context, queueName string) (*Delivery, error) {
	stop := context.AfterFunc(ctx, func() {
		m.mu.Lock()
		m.cond.Broadcast()
		m.mu.Unlock()
	})
	defer stop()
	m.mu.Lock()
	defer m.mu.Unlock()
	for len(m.queues[queueName]) == 0 {
		if m.closed {
			return nil, errors.New("queue closed")
		}
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		m.cond.Wait()
	}
	d := m.queues[queueName][0]
	m.queues[queueName] = m.queues[queueName][1:]
	d.DeliveryCount++
	m.seq++
	d.LockToken = fmt.Sprintf("lock-%d", m.seq)
	m.inflight[d.LockToken] = d
	out := *d
	return &out, nil
}

// Complete removes a delivered message.
func (m *Memory) Complete(d *Delivery) {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.inflight, d.LockToken)
	m.cond.Broadcast()
}

// Abandon releases the lock: the message is delivered again at once (the host's Service Bus
// extension abandons a failed invocation without delay: MessageProcessor.
// CompleteProcessingMessageAsync), or dead-lettered with reason
// MaxDeliveryCountExceeded once it has had MaxDeliveryCount deliveries. A message of a
// dead-letter queue is always delivered again: Service Bus cannot dead-letter it a second time.
func (m *Memory) Abandon(d *Delivery, description string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	orig, ok := m.inflight[d.LockToken]
	if !ok {
		return
	}
	delete(m.inflight, d.LockToken)
	if orig.DeliveryCount >= m.opts.MaxDeliveryCount && !isDeadLetterQueue(orig.Queue) {
		m.deadLetterLocked(orig, "MaxDeliveryCountExceeded",
			fmt.Sprintf("Message could not be consumed after %d delivery attempts. %s", orig.DeliveryCount, description))
		return
	}
	m.enqueueLocked(orig.Queue, orig, true)
}

// DeadLetter moves a delivered message to its queue's dead-letter queue.
func (m *Memory) DeadLetter(d *Delivery, reason, description string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	orig, ok := m.inflight[d.LockToken]
	if !ok {
		return
	}
	delete(m.inflight, d.LockToken)
	m.deadLetterLocked(orig, reason, description)
}

func isDeadLetterQueue(q string) bool { return strings.HasSuffix(q, "/$DeadLetterQueue") }

func (m *Memory) deadLetterLocked(d *Delivery, reason, description string) {
	if isDeadLetterQueue(d.Queue) {
		m.enqueueLocked(d.Queue, d, true) // no dead-letter queue of a dead-letter queue
		return
	}
	dl := &Delivery{Queue: DeadLetterQueue(d.Queue), Message: d.Message, EnqueuedTime: d.EnqueuedTime,
		SequenceNumber: d.SequenceNumber, DeadLetterReason: reason, DeadLetterErrorDescription: description}
	m.enqueueLocked(dl.Queue, dl, false)
}

// Duplicate enqueues another copy of a delivered message, bypassing duplicate detection: what
// Service Bus does when a lock is lost while the receiver still works on the message.
func (m *Memory) Duplicate(d *Delivery) {
	m.mu.Lock()
	defer m.mu.Unlock()
	c := &Delivery{Queue: d.Queue, Message: cloneMessage(d.Message), EnqueuedTime: d.EnqueuedTime,
		SequenceNumber: d.SequenceNumber, DeliveryCount: d.DeliveryCount}
	m.enqueueLocked(d.Queue, c, false)
}

// Len is the number of messages waiting in a queue (not locked).
func (m *Memory) Len(queueName string) int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.queues[queueName])
}

// Peek returns copies of the messages waiting in a queue (for tests and diagnostics).
func (m *Memory) Peek(queueName string) []Delivery {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]Delivery, 0, len(m.queues[queueName]))
	for _, d := range m.queues[queueName] {
		out = append(out, *d)
	}
	return out
}

// Stats reports, per queue, messages accepted and duplicates dropped.
func (m *Memory) Stats(queueName string) (sent, duplicatesDropped int64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.sent[queueName], m.dropped[queueName]
}

// Idle reports whether no message waits in the given queues and none is locked anywhere.
func (m *Memory) Idle(queueNames ...string) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	if len(m.inflight) > 0 {
		return false
	}
	for _, q := range queueNames {
		if len(m.queues[q]) > 0 {
			return false
		}
	}
	return true
}

// Close is the Sender's Close: the function app closing its sender does not stop the queues.
func (m *Memory) Close(context.Context) error { return nil }

// Shutdown stops every receiver.
func (m *Memory) Shutdown() {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.closed = true
	m.cond.Broadcast()
}
