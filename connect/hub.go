package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"
)

// HubUser is the part of the Hub's /api/user model that studio-connect reads.
type HubUser struct {
	Name   string   `json:"name"`
	Kind   string   `json:"kind"`
	Scopes []string `json:"scopes"`
}

// errUnauthorized means the Hub did not accept a token (expired, revoked or unknown).
var errUnauthorized = errors.New("the hub did not accept the token")

// Hub talks to the JupyterHub API with the server's own token.
type Hub struct {
	cfg    *Config
	client *http.Client
	cache  *tokenCache
}

func NewHub(cfg *Config) *Hub {
	transport := &http.Transport{Proxy: nil, MaxIdleConnsPerHost: 4, IdleConnTimeout: time.Minute}
	return &Hub{
		cfg:    cfg,
		client: &http.Client{Transport: transport, Timeout: 15 * time.Second},
		cache:  newTokenCache(cfg.AuthCache, 4096),
	}
}

func (h *Hub) do(ctx context.Context, method, target, token string, body io.Reader, kind string, into any) error {
	req, err := http.NewRequestWithContext(ctx, method, target, body)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "token "+token)
	req.Header.Set("Accept", "application/json")
	if kind != "" {
		req.Header.Set("Content-Type", kind)
	}
	resp, err := h.client.Do(req)
	if err != nil {
		return fmt.Errorf("the hub API at %s is unreachable: %w", h.cfg.APIURL, err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	switch {
	case resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusForbidden:
		return errUnauthorized
	case resp.StatusCode >= 300:
		return fmt.Errorf("%s %s answered %d: %s", method, target, resp.StatusCode, strings.TrimSpace(string(data)))
	case into == nil:
		return nil
	}
	return json.Unmarshal(data, into)
}

// Version asks the hub for its version (GET /hub/api/, no token needed).
func (h *Hub) Version(ctx context.Context) (string, error) {
	var reply struct {
		Version string `json:"version"`
	}
	err := h.do(ctx, http.MethodGet, h.cfg.APIURL+"/", h.cfg.APIToken, nil, "", &reply)
	return reply.Version, err
}

// TokenForCode finishes the OAuth login: it trades the code for the user's access token.
func (h *Hub) TokenForCode(ctx context.Context, code string) (string, error) {
	form := url.Values{
		"client_id":     {h.cfg.ClientID},
		"client_secret": {h.cfg.APIToken},
		"grant_type":    {"authorization_code"},
		"code":          {code},
		"redirect_uri":  {h.cfg.CallbackURL},
	}
	var reply struct {
		AccessToken string `json:"access_token"`
	}
	err := h.do(ctx, http.MethodPost, h.cfg.APIURL+"/oauth2/token", h.cfg.APIToken,
		strings.NewReader(form.Encode()), "application/x-www-form-urlencoded", &reply)
	if err == nil && reply.AccessToken == "" {
		err = errors.New("the hub's token reply has no access_token")
	}
	return reply.AccessToken, err
}

// UserForToken returns the user (and the token's scopes) a token belongs to, from the cache
// while its entry is younger than the cache age.
// Tokens the hub refused are remembered as long, so a tool's own "token" header does not
// cost a hub request each time.
func (h *Hub) UserForToken(ctx context.Context, token string) (*HubUser, error) {
	if user, found := h.cache.get(token); found {
		if user == nil {
			return nil, errUnauthorized
		}
		return user, nil
	}
	var user HubUser
	err := h.do(ctx, http.MethodGet, h.cfg.APIURL+"/user", token, nil, "", &user)
	if errors.Is(err, errUnauthorized) {
		h.cache.put(token, nil)
	}
	if err != nil {
		return nil, err
	}
	h.cache.put(token, &user)
	return &user, nil
}

// ReportActivity tells the hub when the studio was last used (as jupyterhub-singleuser does).
func (h *Hub) ReportActivity(ctx context.Context, when time.Time) error {
	stamp := when.UTC().Format("2006-01-02T15:04:05.000000Z")
	body, _ := json.Marshal(map[string]any{
		"servers":       map[string]any{h.cfg.ServerName: map[string]string{"last_activity": stamp}},
		"last_activity": stamp,
	})
	return h.do(ctx, http.MethodPost, h.cfg.ActivityURL, h.cfg.APIToken, bytes.NewReader(body),
		"application/json", nil)
}

// tokenCache keeps user models (nil for refused tokens) by token for maxAge, holding at most
// limit entries.
type tokenCache struct {
	mu      sync.Mutex
	maxAge  time.Duration
	limit   int
	entries map[string]cached
	now     func() time.Time
}

type cached struct {
	user    *HubUser
	expires time.Time
}

func newTokenCache(maxAge time.Duration, limit int) *tokenCache {
	return &tokenCache{maxAge: maxAge, limit: limit, entries: map[string]cached{}, now: time.Now}
}

// get returns the cached user (nil: the hub refused the token) and whether there is one.
func (c *tokenCache) get(token string) (*HubUser, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	entry, ok := c.entries[token]
	if !ok || c.now().After(entry.expires) {
		delete(c.entries, token)
		return nil, false
	}
	return entry.user, true
}

func (c *tokenCache) put(token string, user *HubUser) {
	if c.maxAge <= 0 {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	now := c.now()
	if len(c.entries) >= c.limit {
		for key, entry := range c.entries {
			if now.After(entry.expires) {
				delete(c.entries, key)
			}
		}
		for key := range c.entries { // still full: drop arbitrary entries
			if len(c.entries) < c.limit {
				break
			}
			delete(c.entries, key)
		}
	}
	c.entries[token] = cached{user: user, expires: now.Add(c.maxAge)}
}
