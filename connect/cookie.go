package main

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"strconv"
	"strings"
	"time"
)

// signer signs cookie values with HMAC-SHA256 and a timestamp, so a cookie cannot be forged,
// moved to another cookie name, or used after maxAge.
type signer struct {
	key []byte
	now func() time.Time
}

func newSigner(secret string) *signer {
	sum := sha256.Sum256([]byte("studio-connect cookie key\x00" + secret))
	return &signer{key: sum[:], now: time.Now}
}

func (s *signer) mac(name, payload string) string {
	h := hmac.New(sha256.New, s.key)
	h.Write([]byte(name + "\x00" + payload))
	return base64.RawURLEncoding.EncodeToString(h.Sum(nil))
}

// Sign returns the cookie value holding value for the cookie called name.
func (s *signer) Sign(name, value string) string {
	payload := strconv.FormatInt(s.now().Unix(), 10) + "|" + base64.RawURLEncoding.EncodeToString([]byte(value))
	return payload + "|" + s.mac(name, payload)
}

// Verify returns the value of a cookie signed by Sign for name, or false when the signature
// does not match or the cookie is older than maxAge.
func (s *signer) Verify(name, cookie string, maxAge time.Duration) (string, bool) {
	cut := strings.LastIndexByte(cookie, '|')
	if cut < 0 {
		return "", false
	}
	payload, mac := cookie[:cut], cookie[cut+1:]
	if !hmac.Equal([]byte(mac), []byte(s.mac(name, payload))) {
		return "", false
	}
	stamp, encoded, ok := strings.Cut(payload, "|")
	issued, err := strconv.ParseInt(stamp, 10, 64)
	if !ok || err != nil || s.now().Sub(time.Unix(issued, 0)) > maxAge {
		return "", false
	}
	value, err := base64.RawURLEncoding.DecodeString(encoded)
	if err != nil {
		return "", false
	}
	return string(value), true
}
