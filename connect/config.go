package main

import (
	"encoding/json"
	"fmt"
	"net"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"
)

// Config is everything studio-connect reads from its environment: the JUPYTERHUB_* variables a
// spawner gives every single-user server, plus the CONNECT_* variables of the tool.
type Config struct {
	APIToken      string   // JUPYTERHUB_API_TOKEN: the server's token, also the OAuth client secret
	ClientID      string   // JUPYTERHUB_CLIENT_ID
	APIURL        string   // JUPYTERHUB_API_URL, e.g. http://hub:8081/hub/api
	CallbackURL   string   // JUPYTERHUB_OAUTH_CALLBACK_URL, e.g. /user/ann/rna/oauth_callback
	AccessScopes  []string // JUPYTERHUB_OAUTH_ACCESS_SCOPES: any one of them opens the studio
	Prefix        string   // JUPYTERHUB_SERVICE_PREFIX, e.g. /user/ann/rna/
	AuthorizeURL  string   // JUPYTERHUB_HOST + JUPYTERHUB_BASE_URL + hub/api/oauth2/authorize
	ActivityURL   string   // JUPYTERHUB_ACTIVITY_URL
	User          string   // JUPYTERHUB_USER
	ServerName    string   // JUPYTERHUB_SERVER_NAME ("" for the default server)
	Listen        string   // host:port from JUPYTERHUB_SERVICE_URL (where the hub expects us)
	ToolPort      int      // CONNECT_TOOL_PORT
	ToolHost      string   // CONNECT_TOOL_HOST, default 127.0.0.1
	StripPrefix   bool     // CONNECT_BASE_PATH: strip (the tool serves at /) or pass
	ToolWait      time.Duration
	ActivityEvery time.Duration
	AuthCache     time.Duration
}

// requiredEnv lists the variables without which no user could log in.
var requiredEnv = []string{
	"JUPYTERHUB_API_TOKEN", "JUPYTERHUB_CLIENT_ID", "JUPYTERHUB_API_URL",
	"JUPYTERHUB_OAUTH_CALLBACK_URL", "JUPYTERHUB_SERVICE_PREFIX", "JUPYTERHUB_SERVICE_URL",
	"JUPYTERHUB_USER", "CONNECT_TOOL_PORT",
}

// LoadConfig reads the configuration from getenv, naming the variable in every error.
func LoadConfig(getenv func(string) string) (*Config, error) {
	for _, name := range requiredEnv {
		if getenv(name) == "" {
			return nil, fmt.Errorf("%s is not set; the spawner sets it for every studio", name)
		}
	}
	c := &Config{
		APIToken:    getenv("JUPYTERHUB_API_TOKEN"),
		ClientID:    getenv("JUPYTERHUB_CLIENT_ID"),
		APIURL:      strings.TrimRight(getenv("JUPYTERHUB_API_URL"), "/"),
		CallbackURL: getenv("JUPYTERHUB_OAUTH_CALLBACK_URL"),
		Prefix:      getenv("JUPYTERHUB_SERVICE_PREFIX"),
		User:        getenv("JUPYTERHUB_USER"),
		ServerName:  getenv("JUPYTERHUB_SERVER_NAME"),
		ToolHost:    or(getenv("CONNECT_TOOL_HOST"), "127.0.0.1"),
	}
	if !strings.HasPrefix(c.Prefix, "/") || !strings.HasSuffix(c.Prefix, "/") {
		return nil, fmt.Errorf("JUPYTERHUB_SERVICE_PREFIX %q must start and end with '/'", c.Prefix)
	}
	callback, err := url.Parse(c.CallbackURL)
	if err != nil || !strings.HasPrefix(callback.Path, c.Prefix) {
		return nil, fmt.Errorf("JUPYTERHUB_OAUTH_CALLBACK_URL %q must be a URL under %s",
			c.CallbackURL, c.Prefix)
	}
	service, err := url.Parse(getenv("JUPYTERHUB_SERVICE_URL"))
	if err != nil || service.Port() == "" {
		return nil, fmt.Errorf("JUPYTERHUB_SERVICE_URL %q must be a URL with a port",
			getenv("JUPYTERHUB_SERVICE_URL"))
	}
	host := service.Hostname()
	if host == "0.0.0.0" || host == "::" || host == "*" {
		host = ""
	}
	c.Listen = net.JoinHostPort(host, service.Port())
	if c.ToolPort, err = port(getenv("CONNECT_TOOL_PORT")); err != nil {
		return nil, fmt.Errorf("CONNECT_TOOL_PORT: %w", err)
	}
	if strconv.Itoa(c.ToolPort) == service.Port() {
		return nil, fmt.Errorf("CONNECT_TOOL_PORT %d is the port of JUPYTERHUB_SERVICE_URL; "+
			"the tool needs a port of its own", c.ToolPort)
	}
	switch getenv("CONNECT_BASE_PATH") {
	case "", "strip":
		c.StripPrefix = true
	case "pass":
	default:
		return nil, fmt.Errorf("CONNECT_BASE_PATH %q must be strip or pass", getenv("CONNECT_BASE_PATH"))
	}
	if c.AccessScopes, err = accessScopes(getenv("JUPYTERHUB_OAUTH_ACCESS_SCOPES"), c); err != nil {
		return nil, err
	}
	base := or(getenv("JUPYTERHUB_BASE_URL"), "/")
	if !strings.HasSuffix(base, "/") {
		base += "/"
	}
	c.AuthorizeURL = getenv("JUPYTERHUB_HOST") + base + "hub/api/oauth2/authorize"
	c.ActivityURL = or(getenv("JUPYTERHUB_ACTIVITY_URL"),
		c.APIURL+"/users/"+url.PathEscape(c.User)+"/activity")
	durations := []struct {
		name  string
		value string
		into  *time.Duration
	}{
		{"CONNECT_TOOL_WAIT_SECONDS", or(getenv("CONNECT_TOOL_WAIT_SECONDS"), "300"), &c.ToolWait},
		{"JUPYTERHUB_ACTIVITY_INTERVAL", or(getenv("JUPYTERHUB_ACTIVITY_INTERVAL"), "300"), &c.ActivityEvery},
		{"CONNECT_AUTH_CACHE_SECONDS", or(getenv("CONNECT_AUTH_CACHE_SECONDS"), "300"), &c.AuthCache},
	}
	for _, d := range durations {
		seconds, err := strconv.ParseFloat(d.value, 64)
		if err != nil || seconds < 0 || seconds > 86400*7 {
			return nil, fmt.Errorf("%s %q must be a number of seconds from 0 to 604800", d.name, d.value)
		}
		*d.into = time.Duration(seconds * float64(time.Second))
	}
	return c, nil
}

// accessScopes parses the JSON list the hub gives; without one, the owner's server scope.
func accessScopes(raw string, c *Config) ([]string, error) {
	if raw == "" {
		return []string{"access:servers!server=" + c.User + "/" + c.ServerName}, nil
	}
	var scopes []string
	if err := json.Unmarshal([]byte(raw), &scopes); err != nil || len(scopes) == 0 {
		return nil, fmt.Errorf("JUPYTERHUB_OAUTH_ACCESS_SCOPES %q must be a JSON list of scopes", raw)
	}
	return scopes, nil
}

func port(value string) (int, error) {
	n, err := strconv.Atoi(value)
	if err != nil || n < 1 || n > 65535 {
		return 0, fmt.Errorf("%q is not a port number from 1 to 65535", value)
	}
	return n, nil
}

func or(value, fallback string) string {
	if value == "" {
		return fallback
	}
	return value
}

// Env is os.Getenv, named for tests.
var Env = os.Getenv
