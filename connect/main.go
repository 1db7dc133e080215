// Command studio-connect is the authenticating proxy in front of a web tool in a studio's pod.
//
// It listens where the hub expects the single-user server (JUPYTERHUB_SERVICE_URL), logs users
// in with JupyterHub OAuth as jupyterhub-singleuser does, and forwards HTTP and WebSockets to
// the tool on CONNECT_TOOL_PORT. See docs/tools.md.
package main

import (
	"context"
	"errors"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"
)

// version is set at build time (-ldflags "-X main.version=…").
var version = "dev"

func main() {
	log.SetFlags(log.LstdFlags | log.LUTC)
	log.SetPrefix("studio-connect: ")
	if len(os.Args) > 1 {
		if os.Args[1] == "--version" || os.Args[1] == "version" {
			fmt.Println("studio-connect", version)
			return
		}
		fail(fmt.Errorf("takes no arguments (got %q); it reads the JUPYTERHUB_* and CONNECT_* environment variables", os.Args[1:]))
	}
	cfg, err := LoadConfig(os.Getenv)
	if err != nil {
		fail(err)
	}
	if err := run(cfg); err != nil {
		fail(err)
	}
}

// fail prints the reason as the last line of output, which becomes the container's
// termination message (terminationMessagePolicy: FallbackToLogsOnError), and exits 1.
func fail(err error) {
	log.Print(err)
	os.Exit(1)
}

func run(cfg *Config) error {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	activity := &Activity{}
	hub := NewHub(cfg)
	proxy := NewProxy(cfg, activity)
	server := &http.Server{
		Handler:           Router(cfg, proxy, NewAuth(cfg, hub).Wrap(proxy)),
		ReadHeaderTimeout: 30 * time.Second,
		IdleTimeout:       5 * time.Minute,
		ErrorLog:          log.Default(),
	}
	listener, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return fmt.Errorf("cannot listen on %s (JUPYTERHUB_SERVICE_URL): %w", cfg.Listen, err)
	}
	served := make(chan error, 1)
	go func() { served <- server.Serve(listener) }()
	log.Printf("%s listening on %s for %s, tool on port %d (base path: %s)", version, cfg.Listen,
		cfg.Prefix, cfg.ToolPort, map[bool]string{true: "strip", false: "pass"}[cfg.StripPrefix])

	versionKnown := make(chan struct{})
	go func() { // the hub reads the version header when the server comes up
		defer close(versionKnown)
		ask, cancel := context.WithTimeout(ctx, 15*time.Second)
		defer cancel()
		if version, err := hub.Version(ask); err == nil {
			proxy.version.Store(version)
		} else {
			log.Printf("cannot read the hub's version: %v", err)
		}
	}()
	toolUp := make(chan error, 1)
	go func() { toolUp <- waitForTool(ctx, cfg) }()
	select {
	case err := <-toolUp:
		if errors.Is(err, context.Canceled) {
			return nil // SIGTERM before the tool was up
		}
		if err != nil {
			return err
		}
		<-versionKnown
		proxy.ready.Store(true)
	case err := <-served:
		return err
	}
	go reportActivity(ctx, hub, activity, cfg.ActivityEvery)

	select {
	case err := <-served:
		return err
	case <-ctx.Done():
	}
	log.Print("SIGTERM: closing connections (the tool gets its own SIGTERM from Kubernetes)")
	shutdown, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := server.Shutdown(shutdown); err != nil && !errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	return nil
}

// waitForTool returns once the tool accepts connections, or an error after cfg.ToolWait.
func waitForTool(ctx context.Context, cfg *Config) error {
	address := net.JoinHostPort(cfg.ToolHost, strconv.Itoa(cfg.ToolPort))
	start := time.Now()
	log.Printf("waiting for the tool to listen on port %d", cfg.ToolPort)
	nextLog := start.Add(10 * time.Second)
	for {
		conn, err := net.DialTimeout("tcp", address, time.Second)
		if err == nil {
			conn.Close()
			log.Printf("the tool listens on port %d (after %.1f s)", cfg.ToolPort, time.Since(start).Seconds())
			return nil
		}
		if time.Since(start) >= cfg.ToolWait {
			return fmt.Errorf("the tool never listened on port %d (CONNECT_TOOL_PORT) within %.0f s; "+
				"start it with that port, on 127.0.0.1 or 0.0.0.0", cfg.ToolPort, cfg.ToolWait.Seconds())
		}
		if time.Now().After(nextLog) {
			log.Printf("still waiting for the tool to listen on port %d (%.0f s)", cfg.ToolPort, time.Since(start).Seconds())
			nextLog = nextLog.Add(10 * time.Second)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// reportActivity posts the last activity to the hub every interval, when there was any since
// the last report (jupyterhub-singleuser does the same for notebook activity).
func reportActivity(ctx context.Context, hub *Hub, activity *Activity, every time.Duration) {
	if every <= 0 {
		return
	}
	var reported time.Time
	ticker := time.NewTicker(every)
	defer ticker.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
		}
		last := activity.Last()
		if !last.After(reported) {
			continue
		}
		call, cancel := context.WithTimeout(ctx, 15*time.Second)
		err := hub.ReportActivity(call, last)
		cancel()
		if err != nil {
			log.Printf("cannot report activity to the hub: %v", err)
			continue
		}
		reported = last
	}
}
