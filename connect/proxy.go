package main

import (
	"context"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// HealthPath answers 200 while the tool accepts connections and 503 otherwise; it is outside
// the studio's prefix, so the hub's proxy never routes to it (the kubelet's probe does).
const HealthPath = "/_connect/health"

// Activity records when bytes last moved between a client and the tool.
type Activity struct{ last atomic.Int64 }

func (a *Activity) Touch() { a.last.Store(time.Now().UnixNano()) }

// Last is the time of the last activity, zero before any.
func (a *Activity) Last() time.Time {
	if nanos := a.last.Load(); nanos != 0 {
		return time.Unix(0, nanos)
	}
	return time.Time{}
}

// touchConn marks activity whenever data crosses a connection to the tool (requests,
// responses, and WebSocket frames alike).
type touchConn struct {
	net.Conn
	activity *Activity
}

func (c touchConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if n > 0 {
		c.activity.Touch()
	}
	return n, err
}

func (c touchConn) Write(p []byte) (int, error) {
	c.activity.Touch()
	return c.Conn.Write(p)
}

// ReadFrom sends a request body (an upload) to the tool in large writes: net/http copies
// bodies with 32 KiB reads and writes unless the connection reads for itself.
func (c touchConn) ReadFrom(r io.Reader) (int64, error) {
	buffer := copyBuffers{}.Get()
	defer copyBuffers{}.Put(buffer)
	return io.CopyBuffer(struct{ io.Writer }{c}, r, buffer)
}

// Proxy forwards requests under the studio's prefix to the tool, stripping the prefix or
// passing it as configured, streaming bodies both ways and upgrading WebSockets.
type Proxy struct {
	cfg      *Config
	ready    atomic.Bool
	version  atomic.Value // the hub's version, answered as X-JupyterHub-Version
	activity *Activity
	reverse  *httputil.ReverseProxy
	segments int // path segments in the prefix, e.g. 3 for /user/ann/rna/
	external string
	// toolAddress is host:port of the tool
	toolAddress string
}

func NewProxy(cfg *Config, activity *Activity) *Proxy {
	p := &Proxy{cfg: cfg, activity: activity, segments: strings.Count(cfg.Prefix, "/") - 1}
	p.external, _ = url.PathUnescape(cfg.Prefix)
	p.toolAddress = net.JoinHostPort(cfg.ToolHost, strconv.Itoa(cfg.ToolPort))
	target := &url.URL{Scheme: "http", Host: p.toolAddress}
	dialer := &net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}
	transport := &http.Transport{
		Proxy: nil,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			conn, err := dialer.DialContext(ctx, network, addr)
			if err != nil {
				return nil, err
			}
			return touchConn{conn, activity}, nil
		},
		MaxIdleConns:        256,
		MaxIdleConnsPerHost: 256,
		IdleConnTimeout:     90 * time.Second,
		DisableCompression:  true,
	}
	p.reverse = &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(target)
			pr.Out.Host = pr.In.Host // tools check Origin against Host (WebSockets)
			pr.Out.URL.Path, pr.Out.URL.RawPath = p.toolPath(pr.In.URL)
			for _, name := range []string{"X-Forwarded-For", "X-Forwarded-Host", "X-Forwarded-Proto"} {
				if values := pr.In.Header.Values(name); len(values) > 0 {
					pr.Out.Header[name] = values
				}
			}
			if client, _, err := net.SplitHostPort(pr.In.RemoteAddr); err == nil {
				hops := append(pr.In.Header.Values("X-Forwarded-For"), client)
				pr.Out.Header.Set("X-Forwarded-For", strings.Join(hops, ", "))
			}
			if pr.Out.Header.Get("X-Forwarded-Proto") == "" {
				pr.Out.Header.Set("X-Forwarded-Proto", "http")
			}
			if pr.Out.Header.Get("X-Forwarded-Host") == "" {
				pr.Out.Header.Set("X-Forwarded-Host", pr.In.Host)
			}
			pr.Out.Header.Del("X-Forwarded-Prefix") // only ours
			if cfg.StripPrefix {
				pr.Out.Header.Set("X-Forwarded-Prefix", strings.TrimSuffix(cfg.Prefix, "/"))
			}
		},
		Transport: newToolClient(p.toolAddress, activity, transport),
		// Bodies of unknown length (chunked, server-sent events, logs) are flushed at once
		// by ReverseProxy; bodies with a Content-Length flush as the buffer fills.
		FlushInterval:  0,
		BufferPool:     copyBuffers{},
		ModifyResponse: p.modifyResponse,
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			log.Printf("the tool did not answer %s %s: %v", r.Method, r.URL.Path, err)
			page(w, http.StatusBadGateway, "The tool is not answering",
				"The tool in this studio did not answer on port "+strconv.Itoa(cfg.ToolPort)+".")
		},
	}
	return p
}

// copyBuffers lends 256 KiB buffers for copying bodies (fewer system calls than the 32 KiB
// default on large downloads and uploads).
type copyBuffers struct{}

var bufferPool = sync.Pool{New: func() any { b := make([]byte, 256<<10); return &b }}

func (copyBuffers) Get() []byte  { return *(bufferPool.Get().(*[]byte)) }
func (copyBuffers) Put(b []byte) { bufferPool.Put(&b) }

// toolPath is the path the tool sees: the request's path without the prefix (strip), or as is.
func (p *Proxy) toolPath(u *url.URL) (string, string) {
	if !p.cfg.StripPrefix {
		return u.Path, u.RawPath
	}
	escaped := u.EscapedPath()
	parts := strings.SplitN(escaped, "/", p.segments+2)
	rest := "/"
	if len(parts) == p.segments+2 {
		rest += parts[p.segments+1]
	}
	path, err := url.PathUnescape(rest)
	if err != nil {
		return rest, ""
	}
	return path, rest // net/url uses RawPath only when it encodes Path
}

// modifyResponse rewrites the tool's redirects and arms splicing for a large body.
func (p *Proxy) modifyResponse(resp *http.Response) error {
	if body, ok := resp.Body.(*toolBody); ok {
		body.armSplice(resp)
	}
	return p.rewriteLocation(resp)
}

// rewriteLocation keeps the tool's redirects inside the studio when the prefix is stripped.
func (p *Proxy) rewriteLocation(resp *http.Response) error {
	location := resp.Header.Get("Location")
	if !p.cfg.StripPrefix || location == "" {
		return nil
	}
	target, err := url.Parse(location)
	if err != nil {
		return nil
	}
	local := target.Host == "" || target.Host == resp.Request.Host
	if local && strings.HasPrefix(target.Path, "/") && !strings.HasPrefix(target.Path, p.external) {
		target.Path = strings.TrimSuffix(p.external, "/") + target.Path
		target.RawPath = ""
		resp.Header.Set("Location", target.String())
	}
	return nil
}

// ServeHTTP refuses cross-origin WebSockets and forwards everything else to the tool.
func (p *Proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if isUpgrade(r) && !sameOrigin(r) {
		page(w, http.StatusForbidden, "Cross-origin WebSocket refused",
			"The page that opened this WebSocket is not served by this hub.")
		return
	}
	p.reverse.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), clientWriterKey{}, w)))
}

// sameOrigin reports whether a WebSocket's Origin (when a browser sent one) is this host.
func sameOrigin(r *http.Request) bool {
	origin := r.Header.Get("Origin")
	if origin == "" {
		return true
	}
	parsed, err := url.Parse(origin)
	if err != nil {
		return false
	}
	host := r.Header.Get("X-Forwarded-Host")
	if host == "" {
		host = r.Host
	}
	host, _, _ = strings.Cut(host, ",")
	return strings.EqualFold(parsed.Host, strings.TrimSpace(host))
}

// Router answers 503 to everything until the tool listens (the hub's wait for the server
// retries on 5xx), then sends the health path to health, paths under the prefix to the
// authenticated proxy, the prefix without its slash to the prefix, and the rest to 404.
func Router(cfg *Config, p *Proxy, authed http.Handler) http.Handler {
	external, _ := url.PathUnescape(cfg.Prefix)
	waiting := "Waiting for the tool to listen on port " + strconv.Itoa(cfg.ToolPort) + "."
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if version, ok := p.version.Load().(string); ok {
			// the hub checks a server's version header when it comes up, as with singleuser
			w.Header().Set("X-JupyterHub-Version", version)
		}
		switch {
		case !p.ready.Load():
			w.Header().Set("Retry-After", "1")
			page(w, http.StatusServiceUnavailable, "Starting", waiting)
		case r.URL.Path == HealthPath:
			conn, err := net.DialTimeout("tcp", p.toolAddress, time.Second)
			if err != nil {
				http.Error(w, "the tool does not answer on port "+strconv.Itoa(cfg.ToolPort), http.StatusServiceUnavailable)
				return
			}
			conn.Close()
			w.Header().Set("Content-Type", "application/json")
			w.Write([]byte(`{"status":"ok"}` + "\n"))
		case strings.HasPrefix(r.URL.Path, external):
			authed.ServeHTTP(w, r)
		case r.URL.Path+"/" == external:
			http.Redirect(w, r, cfg.Prefix, http.StatusFound)
		default:
			http.NotFound(w, r)
		}
	})
}
