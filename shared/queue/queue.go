// Package queue is how the planner hands work to the copiers: Azure Service Bus in the function
// app, an in-memory queue in the CLI and the local host harness, behind one small interface.
package queue

import "context"

// Queue names used by the function app.
const (
	Plan = "plan"
	Copy = "copy"
	// Imports receives BlobCreated events of the imports container (through an Event Grid
	// subscription) and the import messages ImportRdb and POST /api/imports send.
	Imports = "imports"
	// Sync is reserved for the online mode's SyncShard.
	Sync = "sync"
)

// Message is one queue message. ID becomes the Service Bus MessageId, so duplicate detection
// drops a batch that a replayed plan step sends again.
type Message struct {
	ID         string
	Body       []byte         // JSON
	Properties map[string]any // application properties: migration id, message kind
}

// Sender sends messages to a named queue.
type Sender interface {
	Send(ctx context.Context, queueName string, msgs []Message) error
	Close(ctx context.Context) error
}
