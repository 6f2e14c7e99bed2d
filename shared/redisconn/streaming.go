package redisconn

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/redis/go-redis/v9/auth"

	"github.com/redis-migrate/redis-migrate/shared/redact"
)

// StreamingTokens re-authenticates open connections before their Entra ID token expires: it
// implements go-redis's StreamingCredentialsProvider, so go-redis sends AUTH with the new token
// on every pooled connection, and it tells other long-lived users (a pub/sub subscription, which
// cannot re-AUTH while subscribed) to reconnect in time.
type StreamingTokens struct {
	cred     azcore.TokenCredential
	objectID string

	mu        sync.Mutex
	cur       auth.Credentials
	expires   time.Time
	listeners map[auth.CredentialsListener]struct{}
	refreshed []func()
	stop      chan struct{}
	started   bool
}

// NewStreamingTokens builds the provider; the first token is fetched on first use.
func NewStreamingTokens(cred azcore.TokenCredential, objectID string) *StreamingTokens {
	return &StreamingTokens{cred: cred, objectID: objectID, listeners: map[auth.CredentialsListener]struct{}{}, stop: make(chan struct{})}
}

func (s *StreamingTokens) fetch() (auth.Credentials, time.Time, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	tok, err := s.cred.GetToken(ctx, policy.TokenRequestOptions{Scopes: []string{EntraScope}})
	if err != nil {
		return nil, time.Time{}, fmt.Errorf("getting an Entra ID token for Redis: %s", redact.Error(err))
	}
	redact.Register(tok.Token)
	return auth.NewBasicCredentials(s.objectID, tok.Token), tok.ExpiresOn, nil
}

// Subscribe implements auth.StreamingCredentialsProvider.
func (s *StreamingTokens) Subscribe(l auth.CredentialsListener) (auth.Credentials, auth.UnsubscribeFunc, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cur == nil {
		c, exp, err := s.fetch()
		if err != nil {
			return nil, nil, err
		}
		s.cur, s.expires = c, exp
	}
	if !s.started {
		s.started = true
		go s.loop()
	}
	s.listeners[l] = struct{}{}
	return s.cur, func() error {
		s.mu.Lock()
		delete(s.listeners, l)
		s.mu.Unlock()
		return nil
	}, nil
}

// Current returns the user name and the current token (fetching the first one).
func (s *StreamingTokens) Current() (string, string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cur == nil {
		c, exp, err := s.fetch()
		if err != nil {
			return "", "", err
		}
		s.cur, s.expires = c, exp
	}
	u, p := s.cur.BasicAuth()
	return u, p, nil
}

// OnRefresh registers f, called after each new token (after the listeners re-authenticated).
func (s *StreamingTokens) OnRefresh(f func()) {
	s.mu.Lock()
	s.refreshed = append(s.refreshed, f)
	s.mu.Unlock()
}

// Expires is when the current token expires (zero before the first).
func (s *StreamingTokens) Expires() time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.expires
}

// refreshIn: well before expiry: at 3/4 of the remaining lifetime, at least 500ms from now.
func refreshIn(expires time.Time) time.Duration {
	left := time.Until(expires)
	return max(500*time.Millisecond, left*3/4)
}

func (s *StreamingTokens) loop() {
	for {
		s.mu.Lock()
		wait := refreshIn(s.expires)
		s.mu.Unlock()
		select {
		case <-s.stop:
			return
		case <-time.After(wait):
		}
		c, exp, err := s.fetch()
		s.mu.Lock()
		ls := make([]auth.CredentialsListener, 0, len(s.listeners))
		for l := range s.listeners {
			ls = append(ls, l)
		}
		if err == nil {
			s.cur, s.expires = c, exp
		} else {
			s.expires = time.Now().Add(2 * time.Second) // try again soon
		}
		hooks := append([]func(){}, s.refreshed...)
		s.mu.Unlock()
		for _, l := range ls {
			if err != nil {
				l.OnError(err)
			} else {
				l.OnNext(c)
			}
		}
		if err == nil {
			for _, h := range hooks {
				h()
			}
		}
	}
}

// Close stops refreshing.
func (s *StreamingTokens) Close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	select {
	case <-s.stop:
	default:
		close(s.stop)
	}
}
