package main

import "strings"

// allowedBy reports whether the token's scopes grant any of the required access scopes, with
// JupyterHub's filter rules: an unfiltered scope covers every filter, `!user=ann` covers
// `!server=ann/<name>`. Group filters are not resolved (as in jupyterhub.services.auth, which
// has no database to look group membership up in).
func allowedBy(required, have []string) bool {
	held := make(map[string]bool, len(have))
	for _, scope := range have {
		held[scope] = true
	}
	for _, scope := range required {
		if held[scope] {
			return true
		}
		base, filter, filtered := strings.Cut(scope, "!")
		if !filtered {
			continue
		}
		if held[base] {
			return true
		}
		kind, value, _ := strings.Cut(filter, "=")
		if kind == "server" {
			owner, _, _ := strings.Cut(value, "/")
			if held[base+"!user="+owner] {
				return true
			}
		}
	}
	return false
}
