// Verify a Sesame-Assertion header (an EdDSA JWT) with Go's standard library
// only (Go 1.18+):
//
//	go run verify.go https://app.example.com/.sesame/jwks.json https://app.example.com "$TOKEN"
//
// On success prints the claims as one line of JSON and exits 0; otherwise
// prints why to stderr and exits 1. In a web app, cache the JWKS and refetch
// it only when a token names a kid you have not seen.
package main

import (
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strings"
	"time"
)

const leewaySeconds = 30 // clock skew tolerated on exp

// decodePart decodes one base64url part of the token as JSON into v.
func decodePart(part string, v any) error {
	raw, err := base64.RawURLEncoding.DecodeString(part)
	if err == nil {
		err = json.Unmarshal(raw, v)
	}
	return err
}

// verify returns the token's claims as one line of JSON, or why it is invalid.
func verify(jwksURL, audience, token string) ([]byte, error) {
	parts := strings.Split(token, ".")
	var header struct{ Alg, Kid string } // encoding/json matches "alg", "kid"
	if len(parts) != 3 || decodePart(parts[0], &header) != nil {
		return nil, errors.New("not a JWT (header.payload.signature)")
	}
	// The algorithm is fixed here, never taken from the token.
	if header.Alg != "EdDSA" || header.Kid == "" {
		return nil, fmt.Errorf("want alg EdDSA and a kid, got alg %q kid %q", header.Alg, header.Kid)
	}

	// Fetch the JWKS and pick the Ed25519 key the token names.
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Get(jwksURL)
	if err != nil {
		return nil, fmt.Errorf("JWKS fetch: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("JWKS fetch: HTTP %d", resp.StatusCode)
	}
	var jwks struct {
		Keys []struct{ Kty, Crv, Kid, X string }
	}
	if err := json.NewDecoder(resp.Body).Decode(&jwks); err != nil {
		return nil, fmt.Errorf("JWKS: %w", err)
	}
	var pub ed25519.PublicKey
	for _, k := range jwks.Keys {
		if k.Kid == header.Kid && k.Kty == "OKP" && k.Crv == "Ed25519" {
			pub, _ = base64.RawURLEncoding.DecodeString(k.X)
		}
	}
	if len(pub) != ed25519.PublicKeySize {
		return nil, fmt.Errorf("no Ed25519 key %q in the JWKS", header.Kid)
	}

	// Ed25519 signs the ASCII text "header.payload".
	sig, err := base64.RawURLEncoding.DecodeString(parts[2])
	if err != nil || !ed25519.Verify(pub, []byte(parts[0]+"."+parts[1]), sig) {
		return nil, errors.New("bad signature")
	}

	// Only now trust the claims. Sesame sets iss and aud to the site's URL;
	// aud may be a string or an array of strings.
	var claims map[string]any
	if err := decodePart(parts[1], &claims); err != nil {
		return nil, fmt.Errorf("claims: %w", err)
	}
	if claims["iss"] != audience {
		return nil, fmt.Errorf("iss is %v, not %s", claims["iss"], audience)
	}
	audOK := claims["aud"] == audience
	if list, isList := claims["aud"].([]any); isList {
		for _, a := range list {
			audOK = audOK || a == audience
		}
	}
	if !audOK {
		return nil, fmt.Errorf("aud %v lacks %s", claims["aud"], audience)
	}
	exp, ok := claims["exp"].(float64)
	if !ok || exp+leewaySeconds <= float64(time.Now().Unix()) {
		return nil, errors.New("the token has expired (or has no exp)")
	}
	return json.Marshal(claims)
}

func main() {
	if len(os.Args) != 4 {
		fmt.Fprintln(os.Stderr, "usage: go run verify.go JWKS_URL AUDIENCE TOKEN")
		os.Exit(1)
	}
	claims, err := verify(os.Args[1], os.Args[2], os.Args[3])
	if err != nil {
		fmt.Fprintln(os.Stderr, "invalid assertion:", err)
		os.Exit(1)
	}
	fmt.Println(string(claims))
}
