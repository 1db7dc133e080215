package main

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"html"
	"log"
	"net/http"
	"net/url"
	"strings"
	"time"
)

const (
	sessionMaxAge = 14 * 24 * time.Hour // as the hub's OAuth tokens
	stateMaxAge   = 10 * time.Minute    // as HubOAuth's state cookie
	// UserHeader tells the tool who is connected; any value a client sends is removed.
	UserHeader = "X-Forwarded-User"
)

// Auth logs browsers in with JupyterHub OAuth (as HubOAuth in jupyterhub-singleuser does) and
// lets a request through only when its token holds one of the studio's access scopes.
type Auth struct {
	cfg          *Config
	hub          *Hub
	signer       *signer
	cookieName   string
	stateCookie  string
	callbackPath string
}

func NewAuth(cfg *Config, hub *Hub) *Auth {
	callback, _ := url.Parse(cfg.CallbackURL) // checked by LoadConfig
	name := cookieSafe(cfg.ClientID)
	return &Auth{
		cfg:          cfg,
		hub:          hub,
		signer:       newSigner(cfg.APIToken),
		cookieName:   name,
		stateCookie:  name + "-oauth-state",
		callbackPath: callback.Path,
	}
}

// cookieSafe keeps the characters a cookie name may hold.
func cookieSafe(name string) string {
	return strings.Map(func(r rune) rune {
		if r < 128 && (r == '-' || r == '_' || r == '.' || 'a' <= r && r <= 'z' || 'A' <= r && r <= 'Z' || '0' <= r && r <= '9') {
			return r
		}
		return '_'
	}, name)
}

// Wrap returns a handler that serves the OAuth callback and passes authorized requests to next,
// with the user's name in UserHeader and the studio's own cookies and token removed.
func (a *Auth) Wrap(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		r.Header.Del(UserHeader)
		if r.URL.Path == a.callbackPath {
			a.callback(w, r)
			return
		}
		user, fromHeader, err := a.user(r)
		switch {
		case errors.Is(err, errUnauthorized) && !fromHeader:
			a.clearCookie(w, r, a.cookieName)
			a.login(w, r)
			return
		case errors.Is(err, errUnauthorized):
			page(w, http.StatusForbidden, "Not allowed", "The hub did not accept this token.")
			return
		case err != nil:
			log.Printf("cannot check a token with the hub: %v", err)
			page(w, http.StatusBadGateway, "The hub is not answering", "Try again in a moment.")
			return
		case user == nil:
			a.login(w, r)
			return
		}
		if !a.admits(w, user) {
			return
		}
		stripCredentials(r, fromHeader, a.cookieName, a.stateCookie)
		r.Header.Set(UserHeader, user.Name)
		next.ServeHTTP(w, r)
	})
}

// user finds who sends the request: the hub user of an "Authorization: token …" header (API
// clients), else of the signed session cookie (browsers). A header token the hub does not
// know may be the tool's own: with a session cookie, the cookie decides and the header goes
// on to the tool. fromHeader tells which one answered; no credentials give a nil user.
func (a *Auth) user(r *http.Request) (user *HubUser, fromHeader bool, err error) {
	session := ""
	if cookie, err := r.Cookie(a.cookieName); err == nil {
		session, _ = a.signer.Verify(a.cookieName, cookie.Value, sessionMaxAge)
	}
	if token := headerToken(r); token != "" {
		user, err := a.hub.UserForToken(r.Context(), token)
		if err == nil || !errors.Is(err, errUnauthorized) || session == "" {
			return user, true, err
		}
	}
	if session == "" {
		return nil, false, nil
	}
	user, err = a.hub.UserForToken(r.Context(), session)
	return user, false, err
}

func headerToken(r *http.Request) string {
	scheme, token, ok := strings.Cut(r.Header.Get("Authorization"), " ")
	if !ok || !strings.EqualFold(scheme, "token") {
		return ""
	}
	return strings.TrimSpace(token)
}

// login sends a browser to the hub's authorize page, remembering the page it asked for in a
// signed state cookie; other clients get 401.
func (a *Auth) login(w http.ResponseWriter, r *http.Request) {
	if (r.Method != http.MethodGet && r.Method != http.MethodHead) || isUpgrade(r) {
		w.Header().Set("WWW-Authenticate", "token")
		page(w, http.StatusUnauthorized, "Log in first", "Open the studio in your browser to log in.")
		return
	}
	state := randomToken()
	next := r.URL.RequestURI()
	value, _ := json.Marshal([2]string{state, next})
	a.setCookie(w, r, a.stateCookie, a.signer.Sign(a.stateCookie, string(value)), int(stateMaxAge.Seconds()))
	query := url.Values{
		"client_id":     {a.cfg.ClientID},
		"redirect_uri":  {a.cfg.CallbackURL},
		"response_type": {"code"},
		"state":         {state},
	}
	http.Redirect(w, r, a.cfg.AuthorizeURL+"?"+query.Encode(), http.StatusFound)
}

// callback finishes the login: checks the state against the state cookie (CSRF), trades the
// code for a token, checks the user may open the studio, and sets the session cookie.
func (a *Auth) callback(w http.ResponseWriter, r *http.Request) {
	query := r.URL.Query()
	if problem := query.Get("error"); problem != "" {
		page(w, http.StatusForbidden, "Login refused", problem+": "+query.Get("error_description"))
		return
	}
	var saved [2]string
	cookie, err := r.Cookie(a.stateCookie)
	if err == nil {
		raw, ok := a.signer.Verify(a.stateCookie, cookie.Value, stateMaxAge)
		if !ok || json.Unmarshal([]byte(raw), &saved) != nil {
			saved = [2]string{}
		}
	}
	if saved[0] == "" || query.Get("state") != saved[0] || query.Get("code") == "" {
		page(w, http.StatusBadRequest, "Login expired",
			"The login state does not match this browser. Open the studio again.")
		return
	}
	a.clearCookie(w, r, a.stateCookie)
	token, err := a.hub.TokenForCode(r.Context(), query.Get("code"))
	if err != nil {
		log.Printf("OAuth code exchange failed: %v", err)
		page(w, http.StatusForbidden, "Login failed", "The hub did not accept the login code.")
		return
	}
	user, err := a.hub.UserForToken(r.Context(), token)
	if err != nil {
		log.Printf("cannot read the user of a new token: %v", err)
		page(w, http.StatusForbidden, "Login failed", "The hub did not accept the new token.")
		return
	}
	if !a.admits(w, user) {
		return
	}
	a.setCookie(w, r, a.cookieName, a.signer.Sign(a.cookieName, token), 0)
	next := saved[1]
	if !strings.HasPrefix(next, a.cfg.Prefix) || strings.HasPrefix(next, "//") {
		next = a.cfg.Prefix
	}
	http.Redirect(w, r, next, http.StatusFound)
}

// admits reports whether the user's token holds one of the studio's access scopes, and
// answers 403 when it does not.
func (a *Auth) admits(w http.ResponseWriter, user *HubUser) bool {
	if allowedBy(a.cfg.AccessScopes, user.Scopes) {
		return true
	}
	log.Printf("refused %s %q: no scope among %v", user.Kind, user.Name, a.cfg.AccessScopes)
	page(w, http.StatusForbidden, "Not your studio",
		fmt.Sprintf("%s may not open this studio: it is private, or not shared with you.", user.Name))
	return false
}

func (a *Auth) setCookie(w http.ResponseWriter, r *http.Request, name, value string, maxAge int) {
	http.SetCookie(w, &http.Cookie{
		Name: name, Value: value, Path: a.cfg.Prefix, MaxAge: maxAge,
		HttpOnly: true, Secure: browserHTTPS(r), SameSite: http.SameSiteLaxMode,
	})
}

func (a *Auth) clearCookie(w http.ResponseWriter, r *http.Request, name string) {
	a.setCookie(w, r, name, "", -1)
}

// stripCredentials removes the studio's cookies and (hubHeader) the hub token header, so the
// tool never sees a visitor's hub token.
func stripCredentials(r *http.Request, hubHeader bool, names ...string) {
	if hubHeader {
		r.Header.Del("Authorization")
	}
	cookies := r.Cookies()
	if len(cookies) == 0 {
		return
	}
	kept := make([]string, 0, len(cookies))
	for _, c := range cookies {
		drop := false
		for _, name := range names {
			drop = drop || c.Name == name
		}
		if !drop {
			kept = append(kept, c.Name+"="+c.Value)
		}
	}
	r.Header.Del("Cookie")
	if len(kept) > 0 {
		r.Header.Set("Cookie", strings.Join(kept, "; "))
	}
}

func browserHTTPS(r *http.Request) bool {
	proto, _, _ := strings.Cut(r.Header.Get("X-Forwarded-Proto"), ",")
	return r.TLS != nil || strings.EqualFold(strings.TrimSpace(proto), "https")
}

func isUpgrade(r *http.Request) bool {
	return strings.Contains(strings.ToLower(r.Header.Get("Connection")), "upgrade")
}

func randomToken() string {
	buf := make([]byte, 24)
	if _, err := rand.Read(buf); err != nil {
		panic(err)
	}
	return base64.RawURLEncoding.EncodeToString(buf)
}

// page writes a small HTML page; text is escaped.
func page(w http.ResponseWriter, status int, title, text string) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	fmt.Fprintf(w, "<!doctype html><title>%s</title><h1>%s</h1><p>%s</p>\n",
		html.EscapeString(title), html.EscapeString(title), html.EscapeString(text))
}
