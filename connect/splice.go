package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"
)

// SpliceMin is the smallest response body that is spliced: moved from the tool's socket to
// the client's inside the kernel instead of being copied through the proxy. The client's
// connection closes after such a response (it is taken over to splice into), which costs a
// new connection only after a megabyte or more.
const SpliceMin = 1 << 20

// spliceChunk bounds one splice, so activity is recorded during a long download.
const spliceChunk = 16 << 20

// clientWriterKey carries the client's ResponseWriter from Proxy.ServeHTTP to the tool's
// response body, which takes the connection over when it splices.
type clientWriterKey struct{}

// toolClient sends bodiless GET requests to the tool over keep-alive connections of its own,
// so a large response body can be spliced from the tool's socket. Other requests (bodies,
// upgrades, HEAD) go to fallback.
type toolClient struct {
	address  string
	activity *Activity
	fallback http.RoundTripper
	dialer   net.Dialer
	idle     chan *toolConn
}

func newToolClient(address string, activity *Activity, fallback http.RoundTripper) *toolClient {
	return &toolClient{
		address: address, activity: activity, fallback: fallback,
		dialer: net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second},
		idle:   make(chan *toolConn, 64),
	}
}

// toolConn is one connection to the tool and its reader.
type toolConn struct {
	tcp *net.TCPConn
	br  *bufio.Reader
}

func (c *toolClient) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.Method != http.MethodGet || (req.Body != nil && req.Body != http.NoBody) ||
		req.Header.Get("Upgrade") != "" {
		return c.fallback.RoundTrip(req)
	}
	for attempt := 0; ; attempt++ {
		conn, reused, err := c.get(req.Context())
		if err != nil {
			return nil, err
		}
		stop := context.AfterFunc(req.Context(), func() { conn.tcp.SetDeadline(time.Unix(1, 0)) })
		resp, err := c.exchange(conn, req)
		if err == nil {
			resp.Body = &toolBody{client: c, conn: conn, body: resp.Body, stop: stop,
				length: resp.ContentLength, reusable: !resp.Close && !req.Close}
			return resp, nil
		}
		stop()
		conn.tcp.Close()
		// An idle connection the tool has closed in the meantime fails before any answer;
		// a GET may be sent again, once, on a new connection (as net/http's Transport does).
		if !reused || attempt > 0 || req.Context().Err() != nil {
			return nil, err
		}
	}
}

// exchange writes the request and reads the response's header, skipping 1xx answers.
func (c *toolClient) exchange(conn *toolConn, req *http.Request) (*http.Response, error) {
	c.activity.Touch()
	if err := req.Write(conn.tcp); err != nil {
		return nil, err
	}
	for {
		resp, err := http.ReadResponse(conn.br, req)
		if err != nil {
			return nil, err
		}
		c.activity.Touch()
		switch {
		case resp.StatusCode == http.StatusSwitchingProtocols:
			return nil, errors.New("the tool switched protocols on a request without Upgrade")
		case resp.StatusCode >= 200:
			return resp, nil
		}
	}
}

func (c *toolClient) get(ctx context.Context) (*toolConn, bool, error) {
	select {
	case conn := <-c.idle:
		return conn, true, nil
	default:
	}
	raw, err := c.dialer.DialContext(ctx, "tcp", c.address)
	if err != nil {
		return nil, false, err
	}
	tcp, ok := raw.(*net.TCPConn)
	if !ok {
		raw.Close()
		return nil, false, fmt.Errorf("the tool's connection is a %T, not TCP", raw)
	}
	return &toolConn{tcp: tcp, br: bufio.NewReaderSize(tcp, 64<<10)}, false, nil
}

func (c *toolClient) put(conn *toolConn) {
	select {
	case c.idle <- conn:
	default:
		conn.tcp.Close()
	}
}

// toolBody is a response body from the tool. Read copies it as any body, or, once
// armSplice has chosen the client's connection, splices all of it there in its first call.
// The tool's connection goes back to the pool when the body ended cleanly.
type toolBody struct {
	client   *toolClient
	conn     *toolConn
	body     io.ReadCloser
	stop     func() bool // ends the request's cancellation hook; false once it fired
	length   int64
	reusable bool
	spliceTo http.ResponseWriter
	done     bool
}

// armSplice chooses splicing for a large body of known length when the client's connection
// can be taken over, and tells the client that the connection closes after it.
func (b *toolBody) armSplice(resp *http.Response) {
	w, ok := resp.Request.Context().Value(clientWriterKey{}).(http.ResponseWriter)
	if !ok || b.length < SpliceMin || len(resp.TransferEncoding) > 0 || resp.Request.ProtoMajor > 1 {
		return
	}
	b.spliceTo = w
	resp.Header.Set("Connection", "close")
}

func (b *toolBody) Read(p []byte) (int, error) {
	if b.done {
		return 0, io.EOF
	}
	if w := b.spliceTo; w != nil {
		b.spliceTo = nil
		client, _, err := http.NewResponseController(w).Hijack()
		if err == nil {
			defer client.Close()
			err = b.splice(client)
			b.finish(err == nil)
			if err == nil {
				err = io.EOF
			}
			return 0, err
		}
		// not hijackable: copy as any other body
	}
	n, err := b.body.Read(p)
	if n > 0 {
		b.client.activity.Touch()
	}
	if err == io.EOF {
		b.finish(true)
	}
	return n, err
}

// splice sends the body to the client: what the tool's reader holds already, then the rest
// from socket to socket (net.TCPConn.ReadFrom splices a limited TCP reader on Linux).
func (b *toolBody) splice(client net.Conn) error {
	remaining := b.length
	held, err := io.CopyN(client, b.conn.br, min(int64(b.conn.br.Buffered()), remaining))
	remaining -= held
	for err == nil && remaining > 0 {
		var moved int64
		moved, err = io.CopyN(client, b.conn.tcp, min(remaining, spliceChunk))
		remaining -= moved
		b.client.activity.Touch()
	}
	return err
}

// Close ends the body; the tool's connection is closed unless the body was read to its end
// (draining the rest of a large or endless body is not worth keeping the connection).
func (b *toolBody) Close() error {
	b.finish(false)
	return nil
}

func (b *toolBody) finish(complete bool) {
	if b.done {
		return
	}
	b.done = true
	if b.stop() && complete && b.reusable {
		b.client.put(b.conn)
		return
	}
	b.conn.tcp.Close()
}
