package redisconn

import (
	"context"
	"fmt"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"

	"github.com/redis-migrate/redis-migrate/shared/config"
	"github.com/redis-migrate/redis-migrate/shared/redact"
)

// EntraScope is the token scope of Azure Managed Redis / Azure Cache for Redis.
const EntraScope = "https://redis.azure.com/.default"

// EntraCredentials returns a credentials function that authenticates with an Entra ID token:
// user name = the identity's object id (the URL's user part), password = the token. azidentity
// caches the token and refreshes it before it expires; each new connection asks again.
func EntraCredentials(ep *config.Endpoint) (CredentialsFunc, error) {
	cred, err := entraTokenCredential(ep)
	if err != nil {
		return nil, err
	}
	return TokenCredentials(cred, ep.Username), nil
}

func entraTokenCredential(ep *config.Endpoint) (azcore.TokenCredential, error) {
	if ep.Username == "" {
		return nil, fmt.Errorf("auth=entra needs the identity's object id as the URL's user name (rediss://<object-id>@host:10000?auth=entra)")
	}
	var cred azcore.TokenCredential
	var err error
	if ep.ClientID != "" {
		cred, err = azidentity.NewManagedIdentityCredential(&azidentity.ManagedIdentityCredentialOptions{ID: azidentity.ClientID(ep.ClientID)})
	} else {
		cred, err = azidentity.NewDefaultAzureCredential(nil)
	}
	if err != nil {
		return nil, fmt.Errorf("Entra ID credential: %s", redact.Error(err))
	}
	return cred, nil
}

// TokenCredentials adapts any azcore token credential to go-redis's credentials provider.
func TokenCredentials(cred azcore.TokenCredential, objectID string) CredentialsFunc {
	return func(ctx context.Context) (string, string, error) {
		tok, err := cred.GetToken(ctx, policy.TokenRequestOptions{Scopes: []string{EntraScope}})
		if err != nil {
			return "", "", fmt.Errorf("getting an Entra ID token for Redis: %s", redact.Error(err))
		}
		redact.Register(tok.Token)
		return objectID, tok.Token, nil
	}
}
