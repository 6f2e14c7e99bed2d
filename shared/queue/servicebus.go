package queue

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"
	"github.com/Azure/azure-sdk-for-go/sdk/messaging/azservicebus"

	"github.com/redis-migrate/redis-migrate/shared/redact"
)

// ErrMessageTooLarge is returned (wrapped) when one message alone exceeds what the queue's link
// accepts; no batching can help, so the caller must make the message smaller.
var ErrMessageTooLarge = errors.New("message too large for the queue")

// ServiceBusOptions tune a ServiceBus sender. The zero value uses the SDK defaults.
type ServiceBusOptions struct {
	// Client is passed to azservicebus (retry policy, TLS, web sockets); nil = defaults.
	Client *azservicebus.ClientOptions
	// MaxBatchBytes caps each batch below the link's maximum; 0 = the link's maximum.
	MaxBatchBytes uint64
}

// ServiceBus is a Sender over Azure Service Bus. One AMQP sender per queue is opened on first
// use and kept until Close.
type ServiceBus struct {
	client *azservicebus.Client
	opts   ServiceBusOptions

	mu      sync.Mutex
	senders map[string]*azservicebus.Sender
	closed  bool
}

var _ Sender = (*ServiceBus)(nil)

// NewServiceBusFromConnectionString connects with a namespace connection string
// (Endpoint=sb://...;SharedAccessKeyName=...;SharedAccessKey=...), or with
// UseDevelopmentEmulator=true for plain AMQP to a local emulator. The key is registered with
// redact before anything can fail, so no error or log line ever shows it.
func NewServiceBusFromConnectionString(connectionString string, opts *ServiceBusOptions) (*ServiceBus, error) {
	registerConnectionStringSecrets(connectionString)
	if !strings.Contains(strings.ToLower(connectionString), "endpoint=") {
		// Likely a setting holding something else entirely; never echo it.
		return nil, errors.New("service bus: connection string has no Endpoint=")
	}
	o := options(opts)
	client, err := azservicebus.NewClientFromConnectionString(connectionString, o.Client)
	if err != nil {
		return nil, redacted("service bus: connection string", err)
	}
	return &ServiceBus{client: client, opts: o, senders: map[string]*azservicebus.Sender{}}, nil
}

// NewServiceBusWithCredential connects to namespace (e.g. "myns.servicebus.windows.net"; a
// bare "myns" gets the public-cloud suffix) with an Entra ID credential.
func NewServiceBusWithCredential(namespace string, cred azcore.TokenCredential, opts *ServiceBusOptions) (*ServiceBus, error) {
	fqdn := NamespaceHost(namespace)
	if fqdn == "" {
		return nil, errors.New("service bus: empty namespace")
	}
	o := options(opts)
	client, err := azservicebus.NewClient(fqdn, cred, o.Client)
	if err != nil {
		return nil, redacted("service bus: namespace "+fqdn, err)
	}
	return &ServiceBus{client: client, opts: o, senders: map[string]*azservicebus.Sender{}}, nil
}

// NewServiceBusWithIdentity connects to namespace as the app's identity: a managed identity
// when managedIdentity is true or clientID names a user-assigned one (the Functions settings
// <conn>__credential=managedidentity and <conn>__clientId), DefaultAzureCredential otherwise
// (developer logins, workload identity, environment variables, then managed identity).
func NewServiceBusWithIdentity(namespace, clientID string, managedIdentity bool, opts *ServiceBusOptions) (*ServiceBus, error) {
	cred, err := IdentityCredential(clientID, managedIdentity)
	if err != nil {
		return nil, err
	}
	return NewServiceBusWithCredential(namespace, cred, opts)
}

// IdentityCredential picks the Entra ID credential as NewServiceBusWithIdentity describes.
func IdentityCredential(clientID string, managedIdentity bool) (azcore.TokenCredential, error) {
	var (
		cred azcore.TokenCredential
		err  error
	)
	if managedIdentity || clientID != "" {
		o := &azidentity.ManagedIdentityCredentialOptions{}
		if clientID != "" {
			o.ID = azidentity.ClientID(clientID)
		}
		cred, err = azidentity.NewManagedIdentityCredential(o)
	} else {
		cred, err = azidentity.NewDefaultAzureCredential(nil)
	}
	if err != nil {
		return nil, redacted("service bus: credential", err)
	}
	return cred, nil
}

// NewServiceBusFromSettings builds the sender from app settings the way the Functions host
// reads a Service Bus connection named name: the setting itself holds a connection string, or
// name__fullyQualifiedNamespace (plus optional name__credential and name__clientId) selects
// identity-based access. getenv is os.Getenv or a lookup over local.settings.json values.
func NewServiceBusFromSettings(getenv func(string) string, name string, opts *ServiceBusOptions) (*ServiceBus, error) {
	if cs := getenv(name); cs != "" {
		return NewServiceBusFromConnectionString(cs, opts)
	}
	if ns := getenv(name + "__fullyQualifiedNamespace"); ns != "" {
		mi := strings.EqualFold(getenv(name+"__credential"), "managedidentity")
		return NewServiceBusWithIdentity(ns, getenv(name+"__clientId"), mi, opts)
	}
	return nil, fmt.Errorf("service bus: neither %s nor %s__fullyQualifiedNamespace is set", name, name)
}

// NamespaceHost normalizes a namespace given as a name, host or sb:// URL to its host name.
func NamespaceHost(namespace string) string {
	ns := strings.TrimSpace(namespace)
	ns = strings.TrimPrefix(ns, "sb://")
	ns = strings.TrimPrefix(ns, "https://")
	ns = strings.TrimSuffix(ns, "/")
	if ns != "" && !strings.Contains(ns, ".") && !strings.Contains(ns, ":") {
		ns += ".servicebus.windows.net"
	}
	return ns
}

func options(opts *ServiceBusOptions) ServiceBusOptions {
	if opts == nil {
		return ServiceBusOptions{}
	}
	return *opts
}

// registerConnectionStringSecrets hands every credential in a connection string to redact.
func registerConnectionStringSecrets(cs string) {
	for _, part := range strings.Split(cs, ";") {
		k, v, ok := strings.Cut(part, "=")
		if !ok {
			continue
		}
		switch strings.ToLower(strings.TrimSpace(k)) {
		case "sharedaccesskey", "sharedaccesssignature":
			redact.Register(strings.TrimSpace(v))
		}
	}
}

// Send packs msgs into as few batches as the link's size limit allows and sends them in order.
// On error some batches may already be sent; sending the same messages again is safe because
// each MessageId is deterministic and the queue drops duplicates.
func (s *ServiceBus) Send(ctx context.Context, queueName string, msgs []Message) error {
	if len(msgs) == 0 {
		return nil
	}
	for i := range msgs {
		if msgs[i].ID == "" {
			return fmt.Errorf("service bus: message %d for queue %q has no ID (duplicate detection needs one)", i, queueName)
		}
		if len(msgs[i].ID) > 128 {
			return fmt.Errorf("service bus: message id %.40q... is longer than the 128 characters Service Bus allows", msgs[i].ID)
		}
	}
	snd, err := s.sender(queueName)
	if err != nil {
		return err
	}
	sent := 0
	var batch *azservicebus.MessageBatch
	newBatch := func() error {
		var bo *azservicebus.MessageBatchOptions
		if s.opts.MaxBatchBytes > 0 {
			bo = &azservicebus.MessageBatchOptions{MaxBytes: s.opts.MaxBatchBytes}
		}
		b, err := snd.NewMessageBatch(ctx, bo)
		if err != nil {
			return redacted(fmt.Sprintf("service bus: queue %q: new batch", queueName), err)
		}
		batch = b
		return nil
	}
	flush := func() error {
		n := int(batch.NumMessages())
		if err := snd.SendMessageBatch(ctx, batch, nil); err != nil {
			return redacted(fmt.Sprintf("service bus: queue %q: sent %d of %d messages, then", queueName, sent, len(msgs)), err)
		}
		sent += n
		return nil
	}
	if err := newBatch(); err != nil {
		return err
	}
	for i := range msgs {
		m := toServiceBus(&msgs[i])
		err := batch.AddMessage(m, nil)
		if errors.Is(err, azservicebus.ErrMessageTooLarge) && batch.NumMessages() > 0 {
			// The batch is full: send it and retry the message in a fresh one.
			if err := flush(); err != nil {
				return err
			}
			if err := newBatch(); err != nil {
				return err
			}
			err = batch.AddMessage(m, nil)
		}
		if errors.Is(err, azservicebus.ErrMessageTooLarge) {
			return fmt.Errorf("service bus: queue %q: message %q (%d body bytes) exceeds the queue's message size limit even alone: %w",
				queueName, msgs[i].ID, len(msgs[i].Body), ErrMessageTooLarge)
		}
		if err != nil {
			return redacted(fmt.Sprintf("service bus: queue %q: message %q", queueName, msgs[i].ID), err)
		}
	}
	if batch.NumMessages() > 0 {
		return flush()
	}
	return nil
}

func toServiceBus(m *Message) *azservicebus.Message {
	id, ct := m.ID, "application/json"
	return &azservicebus.Message{
		MessageID:             &id,
		ContentType:           &ct,
		Body:                  m.Body,
		ApplicationProperties: m.Properties,
	}
}

// sender returns the cached AMQP sender for a queue, opening it on first use.
func (s *ServiceBus) sender(queueName string) (*azservicebus.Sender, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, errors.New("service bus: sender is closed")
	}
	if snd := s.senders[queueName]; snd != nil {
		return snd, nil
	}
	snd, err := s.client.NewSender(queueName, nil)
	if err != nil {
		return nil, redacted(fmt.Sprintf("service bus: queue %q", queueName), err)
	}
	s.senders[queueName] = snd
	return snd, nil
}

// Close closes every queue sender and the connection. It is safe to call more than once.
func (s *ServiceBus) Close(ctx context.Context) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	senders := s.senders
	s.senders = nil
	s.mu.Unlock()
	var errs []error
	for name, snd := range senders {
		if err := snd.Close(ctx); err != nil {
			errs = append(errs, redacted(fmt.Sprintf("service bus: close queue %q", name), err))
		}
	}
	if err := s.client.Close(ctx); err != nil {
		errs = append(errs, redacted("service bus: close", err))
	}
	return errors.Join(errs...)
}

// redactedError carries an SDK error whose text has been through redact. It still unwraps to
// the original so callers can test for context.Canceled or *azservicebus.Error codes.
type redactedError struct {
	msg string
	err error
}

func (e *redactedError) Error() string { return e.msg }
func (e *redactedError) Unwrap() error { return e.err }

func redacted(prefix string, err error) error {
	return &redactedError{msg: redact.String(prefix + ": " + err.Error()), err: err}
}
