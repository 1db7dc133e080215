package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeHub is a minimal JupyterHub API: OAuth authorize and token, /user and activity.
type fakeHub struct {
	*httptest.Server
	mu       sync.Mutex
	users    map[string]*HubUser // access token -> user
	codes    map[string]string   // code -> access token
	activity []map[string]any
	lookups  int
}

func newFakeHub(t *testing.T) *fakeHub {
	h := &fakeHub{users: map[string]*HubUser{}, codes: map[string]string{}}
	mux := http.NewServeMux()
	// The "browser" is logged in as the user named in the login query parameter.
	mux.HandleFunc("/hub/api/oauth2/authorize", func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		token := "token-" + q.Get("as")
		code := "code-" + q.Get("as")
		h.mu.Lock()
		h.codes[code] = token
		h.mu.Unlock()
		http.Redirect(w, r, q.Get("redirect_uri")+"?code="+code+"&state="+url.QueryEscape(q.Get("state")), http.StatusFound)
	})
	mux.HandleFunc("/hub/api/oauth2/token", func(w http.ResponseWriter, r *http.Request) {
		r.ParseForm()
		h.mu.Lock()
		token, ok := h.codes[r.PostForm.Get("code")]
		h.mu.Unlock()
		if !ok || r.PostForm.Get("client_secret") != "server-token" || r.PostForm.Get("client_id") != "jupyterhub-user-ann-rna" {
			http.Error(w, "bad code", http.StatusBadRequest)
			return
		}
		json.NewEncoder(w).Encode(map[string]string{"access_token": token, "token_type": "Bearer"})
	})
	mux.HandleFunc("/hub/api/user", func(w http.ResponseWriter, r *http.Request) {
		h.mu.Lock()
		defer h.mu.Unlock()
		h.lookups++
		user, ok := h.users[strings.TrimPrefix(r.Header.Get("Authorization"), "token ")]
		if !ok {
			http.Error(w, "no", http.StatusForbidden)
			return
		}
		json.NewEncoder(w).Encode(user)
	})
	mux.HandleFunc("/hub/api/", func(w http.ResponseWriter, r *http.Request) {
		json.NewEncoder(w).Encode(map[string]string{"version": "5.5.0"})
	})
	mux.HandleFunc("/hub/api/users/ann/activity", func(w http.ResponseWriter, r *http.Request) {
		var body map[string]any
		json.NewDecoder(r.Body).Decode(&body)
		if r.Header.Get("Authorization") != "token server-token" {
			http.Error(w, "no", http.StatusForbidden)
			return
		}
		h.mu.Lock()
		h.activity = append(h.activity, body)
		h.mu.Unlock()
	})
	h.Server = httptest.NewServer(mux)
	t.Cleanup(h.Close)
	for _, u := range []struct{ name, scope string }{
		{"ann", "access:servers!server=ann/rna"}, {"ben", "access:servers!user=ann"},
		{"admin", "access:servers"}, {"oz", "access:servers!server=oz/x"},
	} {
		h.users["token-"+u.name] = &HubUser{Name: u.name, Kind: "user", Scopes: []string{"read:users:name!user=" + u.name, u.scope}}
	}
	return h
}

func testEnv(hub *fakeHub, toolPort int, extra map[string]string) func(string) string {
	env := map[string]string{
		"JUPYTERHUB_API_TOKEN":           "server-token",
		"JUPYTERHUB_CLIENT_ID":           "jupyterhub-user-ann-rna",
		"JUPYTERHUB_API_URL":             hub.URL + "/hub/api",
		"JUPYTERHUB_OAUTH_CALLBACK_URL":  "/user/ann/rna/oauth_callback",
		"JUPYTERHUB_OAUTH_ACCESS_SCOPES": `["access:servers!server=ann/rna", "access:servers!user=ann"]`,
		"JUPYTERHUB_SERVICE_PREFIX":      "/user/ann/rna/",
		"JUPYTERHUB_SERVICE_URL":         "http://0.0.0.0:8888/user/ann/rna/",
		"JUPYTERHUB_USER":                "ann",
		"JUPYTERHUB_SERVER_NAME":         "rna",
		"JUPYTERHUB_HOST":                hub.URL,
		"CONNECT_TOOL_PORT":              strconv.Itoa(toolPort),
	}
	for k, v := range extra {
		env[k] = v
	}
	return func(name string) string { return env[name] }
}

// studio runs a tool and studio-connect in front of it; it returns the proxy's URL.
type studio struct {
	url      string
	hub      *fakeHub
	tool     *httptest.Server
	proxy    *Proxy
	activity *Activity
	cfg      *Config
}

func newStudio(t *testing.T, tool http.Handler, extra map[string]string) *studio {
	hub := newFakeHub(t)
	toolServer := httptest.NewServer(tool)
	t.Cleanup(toolServer.Close)
	toolPort, _ := strconv.Atoi(toolServer.URL[strings.LastIndex(toolServer.URL, ":")+1:])
	cfg, err := LoadConfig(testEnv(hub, toolPort, extra))
	if err != nil {
		t.Fatal(err)
	}
	activity := &Activity{}
	proxy := NewProxy(cfg, activity)
	proxy.ready.Store(true)
	front := httptest.NewServer(Router(cfg, proxy, NewAuth(cfg, NewHub(cfg)).Wrap(proxy)))
	t.Cleanup(front.Close)
	return &studio{url: front.URL, hub: hub, tool: toolServer, proxy: proxy, activity: activity, cfg: cfg}
}

// browser logs in as user through the OAuth redirects and returns its client.
func (s *studio) browser(t *testing.T, user string) *http.Client {
	jar, _ := cookiejar.New(nil)
	client := &http.Client{Jar: jar, CheckRedirect: func(req *http.Request, via []*http.Request) error {
		if strings.HasSuffix(req.URL.Path, "/oauth2/authorize") {
			q := req.URL.Query()
			q.Set("as", user)
			req.URL.RawQuery = q.Encode()
		}
		if strings.HasPrefix(req.URL.Path, "/user/") && req.URL.Host != strings.TrimPrefix(s.url, "http://") {
			req.URL.Host = strings.TrimPrefix(s.url, "http://") // the hub's proxy routes /user/ to us
		}
		return nil
	}}
	return client
}

func echoPath(w http.ResponseWriter, r *http.Request) {
	fmt.Fprintf(w, "path=%s user=%s cookie=%q auth=%q prefix=%s", r.URL.Path, r.Header.Get(UserHeader),
		r.Header.Get("Cookie"), r.Header.Get("Authorization"), r.Header.Get("X-Forwarded-Prefix"))
}

func get(t *testing.T, client *http.Client, target string) (int, string) {
	resp, err := client.Get(target)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

func TestLoginAccessMatrix(t *testing.T) {
	s := newStudio(t, http.HandlerFunc(echoPath), nil)
	for user, want := range map[string]int{"ann": 200, "ben": 200, "admin": 200, "oz": 403} {
		status, body := get(t, s.browser(t, user), s.url+"/user/ann/rna/files/a.txt?x=1")
		if status != want {
			t.Errorf("%s: got %d, want %d: %s", user, status, want, body)
		}
		if want == 200 && body != `path=/files/a.txt user=`+user+` cookie="" auth="" prefix=/user/ann/rna` {
			t.Errorf("%s: the tool saw %s", user, body)
		}
	}
}

func TestAnonymousIsSentToTheHubAndAPIClientsGet401(t *testing.T) {
	s := newStudio(t, http.HandlerFunc(echoPath), nil)
	client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := client.Get(s.url + "/user/ann/rna/page")
	if err != nil {
		t.Fatal(err)
	}
	location, _ := url.Parse(resp.Header.Get("Location"))
	if resp.StatusCode != 302 || location.Path != "/hub/api/oauth2/authorize" ||
		location.Query().Get("client_id") != "jupyterhub-user-ann-rna" || location.Query().Get("state") == "" ||
		location.Query().Get("redirect_uri") != "/user/ann/rna/oauth_callback" {
		t.Fatalf("got %d to %s", resp.StatusCode, location)
	}
	post, _ := client.Post(s.url+"/user/ann/rna/api", "text/plain", strings.NewReader("x"))
	if post.StatusCode != 401 {
		t.Fatalf("POST without login: got %d", post.StatusCode)
	}
}

func TestCallbackRefusesAForeignState(t *testing.T) {
	s := newStudio(t, http.HandlerFunc(echoPath), nil)
	s.hub.codes["code-ann"] = "token-ann"
	status, _ := get(t, http.DefaultClient, s.url+"/user/ann/rna/oauth_callback?code=code-ann&state=forged")
	if status != 400 {
		t.Fatalf("a callback without the state cookie got %d", status)
	}
}

func TestTokenHeaderAndCache(t *testing.T) {
	s := newStudio(t, http.HandlerFunc(echoPath), nil)
	for i := 0; i < 3; i++ {
		req, _ := http.NewRequest("GET", s.url+"/user/ann/rna/api", nil)
		req.Header.Set("Authorization", "token token-ben")
		resp, _ := http.DefaultClient.Do(req)
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 || !strings.Contains(string(body), `user=ben cookie="" auth=""`) {
			t.Fatalf("got %d %s", resp.StatusCode, body)
		}
	}
	if s.hub.lookups != 1 {
		t.Fatalf("the hub was asked %d times for one token; the cache should answer", s.hub.lookups)
	}
	for i := 0; i < 2; i++ {
		req, _ := http.NewRequest("GET", s.url+"/user/ann/rna/api", nil)
		req.Header.Set("Authorization", "token nonsense")
		resp, _ := http.DefaultClient.Do(req)
		if resp.StatusCode != 403 {
			t.Fatalf("an unknown token got %d", resp.StatusCode)
		}
	}
	if s.hub.lookups != 2 {
		t.Fatalf("a refused token was asked about %d times; it should be cached", s.hub.lookups-1)
	}
}

func TestAToolsOwnTokenHeaderPassesWithASession(t *testing.T) {
	s := newStudio(t, http.HandlerFunc(echoPath), nil)
	browser := s.browser(t, "ben")
	if status, _ := get(t, browser, s.url+"/user/ann/rna/"); status != 200 {
		t.Fatalf("login: %d", status)
	}
	req, _ := http.NewRequest("GET", s.url+"/user/ann/rna/api", nil)
	req.Header.Set("Authorization", "token the-tools-own")
	resp, err := browser.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || !strings.Contains(string(body), `user=ben cookie="" auth="token the-tools-own"`) {
		t.Fatalf("got %d %s", resp.StatusCode, body)
	}
}

func TestForgedCookieIsNotAccepted(t *testing.T) {
	s := newStudio(t, http.HandlerFunc(echoPath), nil)
	other := newSigner("another secret")
	req, _ := http.NewRequest("GET", s.url+"/user/ann/rna/x", nil)
	req.AddCookie(&http.Cookie{Name: "jupyterhub-user-ann-rna", Value: other.Sign("jupyterhub-user-ann-rna", "token-ann")})
	resp, _ := (&http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}).Do(req)
	if resp.StatusCode != 302 {
		t.Fatalf("a cookie signed with another key got %d", resp.StatusCode)
	}
}

func TestPassKeepsThePrefixAndStripRewritesRedirects(t *testing.T) {
	tool := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/go" {
			http.Redirect(w, r, "/landed", http.StatusFound)
			return
		}
		echoPath(w, r)
	})
	pass := newStudio(t, tool, map[string]string{"CONNECT_BASE_PATH": "pass"})
	req, _ := http.NewRequest("GET", pass.url+"/user/ann/rna/a%2Fb/c", nil)
	req.Header.Set("X-Forwarded-Prefix", "/spoofed")
	req.Header.Set("Authorization", "token token-ann")
	resp, _ := http.DefaultClient.Do(req)
	body, _ := io.ReadAll(resp.Body)
	if !strings.HasPrefix(string(body), "path=/user/ann/rna/a/b/c ") || !strings.HasSuffix(string(body), "prefix=") {
		t.Fatalf("pass: %s", body)
	}
	strip := newStudio(t, tool, nil)
	if _, body := get(t, strip.browser(t, "ann"), strip.url+"/user/ann/rna/go"); !strings.HasPrefix(body, "path=/landed ") {
		t.Fatalf("strip: the redirect left the studio: %s", body)
	}
}

func TestOutsideThePrefixAndHealth(t *testing.T) {
	s := newStudio(t, http.HandlerFunc(echoPath), nil)
	version, err := NewHub(s.cfg).Version(t.Context())
	s.proxy.version.Store(version)
	if resp, _ := http.Get(s.url + HealthPath); err != nil || resp.Header.Get("X-JupyterHub-Version") != "5.5.0" {
		t.Fatalf("the hub's version is not answered: %v", err)
	}
	if status, _ := get(t, http.DefaultClient, s.url+"/user/ben/x/"); status != 404 {
		t.Fatalf("another prefix got %d", status)
	}
	if status, body := get(t, http.DefaultClient, s.url+HealthPath); status != 200 || !strings.Contains(body, "ok") {
		t.Fatalf("health: %d %s", status, body)
	}
	s.tool.Close()
	if status, body := get(t, http.DefaultClient, s.url+HealthPath); status != 503 || !strings.Contains(body, "does not answer") {
		t.Fatalf("health with the tool gone: %d %s", status, body)
	}
	s.proxy.ready.Store(false)
	for _, path := range []string{HealthPath, "/user/ann/rna/"} {
		if status, body := get(t, http.DefaultClient, s.url+path); status != 503 || !strings.Contains(body, "port") {
			t.Fatalf("%s before the tool listens: %d %s", path, status, body)
		}
	}
}

func TestStreamingIsNotBuffered(t *testing.T) {
	release := make(chan struct{})
	tool := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte("first\n"))
		w.(http.Flusher).Flush()
		<-release
		w.Write([]byte("second\n"))
	})
	s := newStudio(t, tool, nil)
	resp := getAsAnn(t, s.url+"/user/ann/rna/stream")
	line, _ := bufio.NewReader(resp.Body).ReadString('\n')
	close(release)
	if line != "first\n" {
		t.Fatalf("got %q before the tool finished", line)
	}
}

func TestWebSocketUpgradeRoundTripAndOrigin(t *testing.T) {
	tool := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		conn, rw, _ := w.(http.Hijacker).Hijack()
		defer conn.Close()
		rw.WriteString("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
		rw.Flush()
		line, _ := rw.ReadString('\n')
		rw.WriteString("echo:" + line)
		rw.Flush()
	})
	s := newStudio(t, tool, nil)
	host := strings.TrimPrefix(s.url, "http://")
	dial := func(origin string) (string, *bufio.Reader, net.Conn) {
		conn, err := net.Dial("tcp", host)
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(conn, "GET /user/ann/rna/ws HTTP/1.1\r\nHost: %s\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"+
			"Origin: %s\r\nAuthorization: token token-ann\r\n\r\n", host, origin)
		reader := bufio.NewReader(conn)
		status, _ := reader.ReadString('\n')
		return status, reader, conn
	}
	status, reader, conn := dial("http://" + host)
	defer conn.Close()
	if !strings.Contains(status, "101") {
		t.Fatalf("upgrade: %s", status)
	}
	for line, _ := reader.ReadString('\n'); line != "\r\n"; line, _ = reader.ReadString('\n') {
	}
	before := s.activity.Last()
	fmt.Fprint(conn, "hello\n")
	if reply, _ := reader.ReadString('\n'); reply != "echo:hello\n" {
		t.Fatalf("round trip: %q", reply)
	}
	if !s.activity.Last().After(before) {
		t.Fatal("WebSocket traffic did not count as activity")
	}
	if status, _, other := dial("http://evil.example"); !strings.Contains(status, "403") {
		t.Fatalf("cross-origin upgrade: %s", status)
	} else {
		other.Close()
	}
}

func TestActivityReachesTheHub(t *testing.T) {
	s := newStudio(t, http.HandlerFunc(echoPath), nil)
	hub := NewHub(s.cfg)
	when := time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC)
	if err := hub.ReportActivity(t.Context(), when); err != nil {
		t.Fatal(err)
	}
	got, _ := json.Marshal(s.hub.activity)
	want := `[{"last_activity":"2026-11-27T10:00:00.000000Z","servers":{"rna":{"last_activity":"2026-11-27T10:00:00.000000Z"}}}]`
	if string(got) != want {
		t.Fatalf("activity body %s", got)
	}
}

func TestScopes(t *testing.T) {
	required := []string{"access:servers!server=ann/rna", "access:servers!user=ann"}
	cases := map[string]bool{
		"access:servers!server=ann/rna":   true,
		"access:servers!user=ann":         true,
		"access:servers":                  true,
		"access:servers!server=ann/other": false,
		"access:servers!user=ben":         false,
		"access:servers!group=genomics":   false,
		"read:servers!server=ann/rna":     false,
	}
	for scope, want := range cases {
		if got := allowedBy(required, []string{scope}); got != want {
			t.Errorf("%s: got %v", scope, got)
		}
	}
}

func TestCookieSigning(t *testing.T) {
	s := newSigner("secret")
	value := s.Sign("a", "token|with|bars")
	if got, ok := s.Verify("a", value, time.Hour); !ok || got != "token|with|bars" {
		t.Fatalf("round trip: %q %v", got, ok)
	}
	if _, ok := s.Verify("b", value, time.Hour); ok {
		t.Fatal("a cookie moved to another name verified")
	}
	if _, ok := s.Verify("a", value[:len(value)-2]+"xx", time.Hour); ok {
		t.Fatal("a tampered cookie verified")
	}
	s.now = func() time.Time { return time.Now().Add(2 * time.Hour) }
	if _, ok := s.Verify("a", value, time.Hour); ok {
		t.Fatal("an expired cookie verified")
	}
}

func TestConfigErrorsNameTheVariable(t *testing.T) {
	hub := newFakeHub(t)
	cases := map[string]map[string]string{
		"CONNECT_TOOL_PORT":              {"CONNECT_TOOL_PORT": "99999"},
		"CONNECT_BASE_PATH":              {"CONNECT_BASE_PATH": "sometimes"},
		"JUPYTERHUB_SERVICE_PREFIX":      {"JUPYTERHUB_SERVICE_PREFIX": "user/ann"},
		"JUPYTERHUB_OAUTH_ACCESS_SCOPES": {"JUPYTERHUB_OAUTH_ACCESS_SCOPES": "not json"},
		"CONNECT_TOOL_WAIT_SECONDS":      {"CONNECT_TOOL_WAIT_SECONDS": "-1"},
		"the port of":                    {"CONNECT_TOOL_PORT": "8888"},
		"JUPYTERHUB_API_TOKEN":           {"JUPYTERHUB_API_TOKEN": ""},
	}
	for want, extra := range cases {
		_, err := LoadConfig(testEnv(hub, 9000, extra))
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%v: got %v", extra, err)
		}
	}
	cfg, err := LoadConfig(testEnv(hub, 9000, nil))
	if err != nil || cfg.Listen != ":8888" || !cfg.StripPrefix || cfg.AuthorizeURL != hub.URL+"/hub/api/oauth2/authorize" {
		t.Fatalf("defaults: %+v %v", cfg, err)
	}
}

func TestWaitForToolGivesUp(t *testing.T) {
	listener, _ := net.Listen("tcp", "127.0.0.1:0")
	port := listener.Addr().(*net.TCPAddr).Port
	listener.Close()
	cfg := &Config{ToolHost: "127.0.0.1", ToolPort: port, ToolWait: 300 * time.Millisecond}
	err := waitForTool(t.Context(), cfg)
	if err == nil || !strings.Contains(err.Error(), fmt.Sprintf("never listened on port %d", port)) {
		t.Fatalf("got %v", err)
	}
}
