package main

import (
	"bytes"
	"crypto/sha256"
	"io"
	"net/http"
	"strconv"
	"sync"
	"testing"
	"time"
)

// payload is n deterministic bytes that are not all alike (a shifted byte would show).
func payload(n int) []byte {
	data := make([]byte, n)
	for i := range data {
		data[i] = byte(i*7 + i/4093)
	}
	return data
}

// connTool serves /big?n=N (with Content-Length), /chunked?n=N (without) and /small, and
// records the client address of each request (one per connection from the proxy).
type connTool struct {
	mu      sync.Mutex
	remotes []string
}

func (c *connTool) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	c.mu.Lock()
	c.remotes = append(c.remotes, r.RemoteAddr)
	c.mu.Unlock()
	n, _ := strconv.Atoi(r.URL.Query().Get("n"))
	switch r.URL.Path {
	case "/big":
		w.Header().Set("Content-Length", strconv.Itoa(n))
		w.Write(payload(n))
	case "/chunked":
		w.(http.Flusher).Flush() // no Content-Length: chunked
		w.Write(payload(n))
	case "/upload":
		body, _ := io.ReadAll(r.Body)
		w.Write([]byte(strconv.Itoa(len(body))))
	default:
		w.Write([]byte("ok"))
	}
}

func (c *connTool) remote(i int) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.remotes[i]
}

// getAsAnn sends a GET with ann's API token (the studio's owner).
func getAsAnn(t *testing.T, target string) *http.Response {
	t.Helper()
	req, _ := http.NewRequest("GET", target, nil)
	req.Header.Set("Authorization", "token token-ann")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	return resp
}

func download(t *testing.T, target string) (*http.Response, []byte) {
	t.Helper()
	resp := getAsAnn(t, target)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, body
}

func TestLargeBodyIsSplicedIntactAndTheToolConnectionIsKept(t *testing.T) {
	tool := &connTool{}
	s := newStudio(t, tool, nil)
	size := 5<<20 + 123
	want := sha256.Sum256(payload(size))
	for i := range 2 {
		resp, body := download(t, s.url+"/user/ann/rna/big?n="+strconv.Itoa(size))
		if resp.StatusCode != 200 || len(body) != size || sha256.Sum256(body) != want {
			t.Fatalf("download %d: %d, %d bytes, intact %v", i, resp.StatusCode, len(body), sha256.Sum256(body) == want)
		}
		if !resp.Close {
			t.Fatalf("a spliced response should close the client's connection")
		}
	}
	if tool.remote(0) != tool.remote(1) {
		t.Fatalf("the tool's connection was not reused after a spliced body: %s, %s", tool.remote(0), tool.remote(1))
	}
	if s.activity.Last().IsZero() {
		t.Fatal("a spliced download is activity")
	}
}

func TestSmallAndChunkedBodiesAreCopiedOnKeepAlive(t *testing.T) {
	tool := &connTool{}
	s := newStudio(t, tool, nil)
	for _, c := range []struct {
		path string
		size int
	}{{"big", SpliceMin - 1}, {"chunked", 3 << 20}, {"small", 0}} {
		resp, body := download(t, s.url+"/user/ann/rna/"+c.path+"?n="+strconv.Itoa(c.size))
		if resp.Close || (c.size > 0 && !bytes.Equal(body, payload(c.size))) {
			t.Fatalf("%s: close %v, %d bytes", c.path, resp.Close, len(body))
		}
	}
	if tool.remote(0) != tool.remote(2) {
		t.Fatal("the tool's connection was not kept across small and chunked bodies")
	}
}

func TestAnIdleConnectionTheToolClosedIsRetried(t *testing.T) {
	tool := &connTool{}
	s := newStudio(t, tool, nil)
	download(t, s.url+"/user/ann/rna/small")
	s.tool.CloseClientConnections() // the tool drops the idle keep-alive connection
	if resp, body := download(t, s.url+"/user/ann/rna/small"); resp.StatusCode != 200 || string(body) != "ok" {
		t.Fatalf("after the tool closed an idle connection: %d %s", resp.StatusCode, body)
	}
}

func TestRequestsWithBodiesAndHeadGoThroughTheTransport(t *testing.T) {
	tool := &connTool{}
	s := newStudio(t, tool, nil)
	req, _ := http.NewRequest("POST", s.url+"/user/ann/rna/upload", bytes.NewReader(payload(3<<20)))
	req.Header.Set("Authorization", "token token-ann")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	if string(body) != strconv.Itoa(3<<20) {
		t.Fatalf("upload: the tool got %s bytes", body)
	}
	head, _ := http.NewRequest("HEAD", s.url+"/user/ann/rna/big?n=2000000", nil)
	head.Header.Set("Authorization", "token token-ann")
	resp, err = http.DefaultClient.Do(head)
	if err != nil || resp.ContentLength != 2000000 {
		t.Fatalf("HEAD: %v, length %d", err, resp.ContentLength)
	}
}

func TestAClientLeavingMidSpliceReleasesTheTool(t *testing.T) {
	finished := make(chan error, 1)
	tool := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", strconv.Itoa(1<<40))
		chunk := payload(1 << 20)
		for {
			if _, err := w.Write(chunk); err != nil {
				finished <- err
				return
			}
		}
	})
	s := newStudio(t, tool, nil)
	resp := getAsAnn(t, s.url+"/user/ann/rna/endless")
	io.CopyN(io.Discard, resp.Body, 4<<20)
	resp.Body.Close()
	select {
	case <-finished:
	case <-time.After(10 * time.Second):
		t.Fatal("the tool is still writing 10 s after the client left")
	}
}
